#!/usr/bin/env bash
# Installs cosd's system-integration files into DESTDIR (a staging root for a package build, or / on a host):
#
#   systemd/cosd.service                  -> DESTDIR/usr/lib/systemd/system/cosd.service
#   systemd/cos-agent-healthcheck.service -> DESTDIR/usr/lib/systemd/system/cos-agent-healthcheck.service
#   systemd/cos-agent-config.path         -> DESTDIR/usr/lib/systemd/system/cos-agent-config.path (starts an idle-exited
#                                            cosd when a config file changes)
#   systemd/cos-setup-{fs,boot,network,reconcile}.service, systemd/cos-setup-reconcile.timer
#                                          -> DESTDIR/usr/lib/systemd/system/ (the yip runtime stages, cOS's units)
#   packaging/io.costoolkit.Agent1.conf    -> DESTDIR/usr/share/dbus-1/system.d/io.costoolkit.Agent1.conf
#   packaging/io.costoolkit.Agent1.service -> DESTDIR/usr/share/dbus-1/system-services/io.costoolkit.Agent1.service
#   src/dbus/interface.xml                 -> DESTDIR/usr/share/dbus-1/interfaces/io.costoolkit.Agent1.xml
#   packaging/io.costoolkit.agent1.policy  -> DESTDIR/usr/share/polkit-1/actions/io.costoolkit.agent1.policy
#   packaging/io.costoolkit.Agent1.polkit.conf
#                                          -> DESTDIR/usr/share/doc/cos-agent/examples/io.costoolkit.Agent1.polkit.conf
#                                             (opt-in bus drop-in for polkit delegation: an example, NOT put into
#                                             system.d; the administrator copies it there to delegate)
#   README.md                              -> DESTDIR/usr/share/doc/cos-agent/README.md
#   packaging/suc-upgrade                  -> DESTDIR/usr/sbin/suc-upgrade (0755: SUC's upgrade job, a flock around
#                                             cosctl suc-upgrade)
#   packaging/check/required.d/00-cosd-running
#                                          -> DESTDIR/usr/lib/cos-agent/check/required.d/00-cosd-running (0755: the
#                                             shipped required health check), and the empty
#                                             DESTDIR/usr/lib/cos-agent/check/wanted.d
#
# Files get mode 0644 (the health check 0755), the directories the script creates or passes through under DESTDIR get 0755 (DESTDIR itself
# is created if missing but its mode is left alone). Owners are whoever runs it (root, or fakeroot in a package
# build). Idempotent: a second run leaves the same tree.
#
# NOT installed here: the program itself (the dist/ bundles, the Node.js runtime) and the launchers /usr/sbin/cosd
# (which the unit's ExecStart= names) and /usr/bin/cosctl. scripts/package.ts (`npm run package`) runs this script
# into its staging tree and adds those, making the tarball a derivative image unpacks at /.
#
# Usage: packaging/install.sh DESTDIR
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 DESTDIR" >&2
  exit 2
fi

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# "/" and "dir/" both work: strip one trailing slash so paths below read DESTDIR/usr/..., not DESTDIR//usr/...
dest=${1%/}
umask 022
if [ -n "$dest" ]; then mkdir -p -- "$dest"; fi

# mkdir_0755 REL: every component of REL (relative to DESTDIR) exists as a directory with mode 0755.
mkdir_0755() {
  local path="$dest" part
  local IFS=/
  for part in $1; do
    path="$path/$part"
    install -d -m 0755 -- "$path"
  done
}

# put SRC REL: SRC (relative to the repository) becomes DESTDIR/REL with mode 0644.
put() {
  mkdir_0755 "$(dirname -- "$2")"
  install -m 0644 -- "$repo/$1" "$dest/$2"
}

put systemd/cosd.service                   usr/lib/systemd/system/cosd.service
put systemd/cos-agent-healthcheck.service  usr/lib/systemd/system/cos-agent-healthcheck.service
put systemd/cos-agent-config.path          usr/lib/systemd/system/cos-agent-config.path
for unit in cos-setup-fs.service cos-setup-boot.service cos-setup-network.service cos-setup-reconcile.service cos-setup-reconcile.timer; do
  put "systemd/$unit" "usr/lib/systemd/system/$unit"
done
put packaging/io.costoolkit.Agent1.conf    usr/share/dbus-1/system.d/io.costoolkit.Agent1.conf
put packaging/io.costoolkit.Agent1.service usr/share/dbus-1/system-services/io.costoolkit.Agent1.service
put src/dbus/interface.xml                 usr/share/dbus-1/interfaces/io.costoolkit.Agent1.xml
put packaging/io.costoolkit.agent1.policy  usr/share/polkit-1/actions/io.costoolkit.agent1.policy
put packaging/io.costoolkit.Agent1.polkit.conf usr/share/doc/cos-agent/examples/io.costoolkit.Agent1.polkit.conf
put README.md                              usr/share/doc/cos-agent/README.md
# cosctl's man page and shell completions, generated from its command table (npm run gen-cli-docs).
put packaging/cosctl.1                     usr/share/man/man1/cosctl.1
put packaging/cosctl.bash-completion       usr/share/bash-completion/completions/cosctl
put packaging/_cosctl                      usr/share/zsh/vendor-completions/_cosctl
# Health checks (cosctl health-check): the vendor directories, and the one check the package ships.
mkdir_0755 usr/lib/cos-agent/check/wanted.d
put packaging/check/required.d/00-cosd-running usr/lib/cos-agent/check/required.d/00-cosd-running
chmod 0755 -- "$dest/usr/lib/cos-agent/check/required.d/00-cosd-running"
# SUC's upgrade job (elemental-operator's ManagedOSImage default command): flock, then cosctl suc-upgrade.
put packaging/suc-upgrade                  usr/sbin/suc-upgrade
chmod 0755 -- "$dest/usr/sbin/suc-upgrade"
