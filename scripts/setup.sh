#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine (run as root), then the npm packages.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  e2fsprogs dosfstools mtools squashfs-tools grub-common docker-registry skopeo umoci dbus util-linux fdisk gdisk
  zstd gzip attr kmod ca-certificates apache2-utils openssl polkitd systemd git tmux prometheus-node-exporter rsync podman runc
  qemu-system-x86 qemu-utils ovmf grub-efi-amd64-bin busybox-static debootstrap cpio zsh groff-base
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian docker-registry package starts a system service on :5000; tests run their own on 127.0.0.1.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi
# Loop devices: make sure the driver is there and a few nodes exist (containers may start with none).
modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || mknod -m 660 /dev/loop-control c 10 237 || true
for i in $(seq 0 15); do [ -e /dev/loop$i ] || mknod -m 660 /dev/loop$i b 7 $i || true; done

if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "setup: ready (node $(node_modules/.bin/node --version))"
