/**
 * VM-test helper: pieces of guest-side code tests add to the root filesystem through the rootfs hooks.
 *
 * `resultReporter()` is a systemd unit plus a bash script: once multi-user.target is reached it prints one line
 * `COSVM-RESULT {"unit":"multi-user",...}` on /dev/ttyS0 and powers the guest off. The JSON carries what the guest
 * itself saw: the fs label of the loop device under /run/rootfsbase (blkid), the image file and the partition the
 * initrd mounted, /proc/cmdline, failed units, and, when the cmdline has `cosvm.hostport=<port>`, the reply of a TCP
 * server the test runs on the host's 127.0.0.1 (reached as 10.0.2.2 through QEMU user networking), and `facts`: an
 * object of the files in /etc/cosvm/facts/ (name -> content), which tests can fill through the rootfs hooks.
 */
import type { GuestFile, GuestUnit } from './rootfs.ts';

export const RESULT_SCRIPT = `#!/bin/bash
# cos-agent VM tests: report what this boot looks like from inside, then power off.
exec 2>/dev/null
dmesg -n 1   # keep kernel messages off the console while the result line is written
j() { local s=\${1//\\\\/\\\\\\\\}; s=\${s//\\"/\\\\\\"}; s=\${s//$'\\n'/\\\\n}; s=\${s//$'\\t'/ }; printf '"%s"' "$s"; }
cmdline=$(cat /proc/cmdline)
lower=$(findmnt -n -o SOURCE /run/rootfsbase)
label=$(blkid -p -o value -s LABEL "$lower")
statedev=$(findmnt -n -o SOURCE /run/initramfs/cos-state)
livedev=$(findmnt -n -o SOURCE /run/initramfs/live)
img=$(losetup -n -O BACK-FILE "$lower")
target=$(systemctl is-active multi-user.target)
failed=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | paste -sd' ')
host=
port=; for x in $cmdline; do case $x in cosvm.hostport=*) port=\${x#*=};; esac; done
if [ -n "$port" ]; then
  for i in $(seq 1 60); do
    host=$(timeout 20 bash -c 'exec 3<>"/dev/tcp/10.0.2.2/$1" && printf "hello from %s\\n" "$2" >&3 && read -r -t 15 r <&3 && printf %s "$r"' _ "$port" "$label")
    [ -n "$host" ] && break
    sleep 0.5
  done
fi
facts=; for f in /etc/cosvm/facts/*; do
  [ -f "$f" ] || continue
  facts="$facts\${facts:+,}$(j "\${f##*/}"):$(j "$(cat "$f")")"
done
up=$(cut -d' ' -f1 /proc/uptime)
json="{\\"unit\\":\\"multi-user\\",\\"target\\":$(j "$target"),\\"label\\":$(j "$label"),\\"lower\\":$(j "$lower"),\\"img\\":$(j "$img"),\\"state\\":$(j "$statedev"),\\"live\\":$(j "$livedev"),\\"cmdline\\":$(j "$cmdline"),\\"failed\\":$(j "$failed"),\\"host\\":$(j "$host"),\\"facts\\":{$facts},\\"uptime\\":$up}"
printf '\\nCOSVM-RESULT %s\\n' "$json" > /dev/ttyS0
@POWEROFF@
`;

export const RESULT_UNIT = `[Unit]
Description=cos-agent VM test: report the boot on ttyS0 and power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/cosvm-result

[Install]
WantedBy=multi-user.target
`;

/**
 * The reporter's files and unit, for RootfsOptions. `poweroff`: 'fast' (default) = `systemctl poweroff --force`
 * (no orderly stop of every service; file systems are still synced and unmounted: saves about 10 s under TCG),
 * 'clean' = a normal `systemctl poweroff`.
 */
export function resultReporter(opts: { poweroff?: 'fast' | 'clean' } = {}): { files: GuestFile[]; units: GuestUnit[] } {
  const poweroff = (opts.poweroff ?? 'fast') === 'fast' ? 'systemctl poweroff --force --no-block' : 'systemctl poweroff --no-block';
  return {
    files: [{ path: '/usr/local/sbin/cosvm-result', content: RESULT_SCRIPT.replace('@POWEROFF@', poweroff), mode: 0o755 }],
    units: [{ name: 'cosvm-result.service', content: RESULT_UNIT }],
  };
}
