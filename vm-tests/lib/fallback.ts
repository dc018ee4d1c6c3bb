/**
 * VM-test helper for the multi-boot agent scenarios (fallback.test.ts): guest units that report every boot, the
 * per-boot "step" the host writes onto COS_OEM, and host-side readers for the slot images inside COS_STATE.
 *
 * Guest side (`fallbackReporter()`), everything printed as `COSVM-RESULT {"kind":...}` lines on ttyS0:
 * - `cosvm-fb-boot.service` (after local-fs.target, before cosd and the health check; RemainAfterExit, stopped at
 *   shutdown after both):
 *     start: `boot`     {label, img, version (os-release VERSION of the running image), cmdline, upgradeFailure
 *                        (upgrade_failure on the cmdline), step (/oem/vmtest-step), assessment (COS_STATE/boot_assessment
 *                        as GRUB left it), grubenv (/oem/grubenv as GRUB left it), bootId}
 *     stop:  `shutdown` {shutdownTarget (the reboot/poweroff target systemd is going to), healthcheck {active, result,
 *                        execMainStatus, journal}, cosdJournal}: what a boot that reboots by itself (a failed health
 *                        check) leaves; a `systemctl poweroff --force` skips it.
 * - `cosvm-fb-report.service` (after multi-user.target, cosd.service and cos-agent-healthcheck.service): the health
 *   check unit's result (`healthcheck`), then the step: `rollback` runs `cosctl rollback`, `rollback-permanent` runs
 *   `cosctl rollback --permanent` (`cosctl` {args, exit, stdout, stderr}), anything else nothing; then
 *   `cosctl status --json` (`status` {exit, stdout (the document, as a string), stderr}), `done` {failed units,
 *   multi-user.target, cosd's journal (-o cat, the last 150 lines)}, sync, `systemctl poweroff --force`.
 *   A boot whose health check reboots never gets here (the reboot cancels the unit's start job).
 *
 * Host side: `writeOemFile()` puts the step file on COS_OEM of a raw disk image (debugfs -w at the partition's
 * offset; the VM must not be running), `slotImageIdentity()` reads the filesystem label and UUID of
 * cOS/active.img or cOS/passive.img inside COS_STATE (`debugfs bmap` of the file's first block, then
 * `blkid -p --offset` on the disk image).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run } from './exec.ts';
import { partitionByLabel } from './grubenv.ts';
import type { GuestFile, GuestUnit } from './rootfs.ts';

/** COS_OEM file (mounted at /oem in the guest) that tells the reporter what to do in the next boot. */
export const STEP_FILE = '/vmtest-step';
/**
 * What the reporter does in the next boot: nothing but report, `cosctl rollback [--permanent]`, or an upgrade (see
 * upgradeStep()). One line in /oem/vmtest-step: the verb, then key=value words.
 */
export type Step = 'report' | 'check' | 'rollback' | 'rollback-permanent' | `upgrade ${string}`;

export interface UpgradeStepOptions {
  /** `cosctl upgrade --recovery`. */
  recovery?: boolean;
  /** `cosctl upgrade --force`: stage even when the slot already holds the digest. */
  force?: boolean;
  /** AGENT_TEST_PAUSE_AT for cosd in this boot (set in systemd's manager environment before cosd starts): cosd
   * prints `COS-AGENT-TEST-PAUSED <point>` on ttyS0 at each point and blocks, for the host to cut the power. */
  pauseAt?: string | readonly string[];
  /** AGENT_TEST_PAUSE_SECONDS: block that long at each point, then go on (for the host to take a snapshot). */
  pauseSeconds?: number;
}

/** The step line of `cosctl upgrade --image <ref>` through cosd (the guest marks the ref's registry insecure). */
export function upgradeStep(ref: string, opts: UpgradeStepOptions = {}): Step {
  const pause = opts.pauseAt === undefined ? undefined : typeof opts.pauseAt === 'string' ? opts.pauseAt : opts.pauseAt.join(',');
  for (const v of [ref, pause ?? '', String(opts.pauseSeconds ?? '')]) if (!/^[\w.:/@%+,-]*$/.test(v)) throw new Error(`upgradeStep: unexpected characters in ${v}`);
  return `upgrade image=${ref}${opts.recovery ? ' recovery=1' : ''}${opts.force ? ' force=1' : ''}${pause !== undefined ? ` pause=${pause}` : ''}${opts.pauseSeconds !== undefined ? ` pausefor=${opts.pauseSeconds}` : ''}`;
}

const HELPERS: string = `j() { local s=\${1//\\\\/\\\\\\\\}; s=\${s//\\"/\\\\\\"}; s=\${s//$'\\n'/\\\\n}; s=\${s//$'\\t'/\\\\t}; s=\${s//$'\\r'/\\\\r}; s=$(printf %s "$s" | tr -d '\\000-\\010\\013\\014\\016-\\037'); printf '"%s"' "$s"; }
num() { if [[ $1 =~ ^-?[0-9]+$ ]]; then printf %s "$1"; else printf null; fi; }
emit() { printf '\\nCOSVM-RESULT %s\\n' "$1" > /dev/ttyS0; }
show() { systemctl show "$1" -p "$2" --value; }
up() { cut -d' ' -f1 /proc/uptime; }
# an env block (GRUB's key=value lines) as a JSON object; null when the file is missing
envjson() {
  [ -f "$1" ] || { printf null; return; }
  local vars= line
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '#'*|'') continue;; *=*) vars="$vars\${vars:+,}$(j "\${line%%=*}"):$(j "\${line#*=}")";; esac
  done < "$1"
  printf '{%s}' "$vars"
}
hcjson() {
  local hc=cos-agent-healthcheck.service
  printf '{"active":%s,"result":%s,"execMainStatus":%s,"journal":%s}' "$(j "$(systemctl is-active $hc)")" "$(j "$(show $hc Result)")" \\
    "$(num "$(show $hc ExecMainStatus)")" "$(j "$(journalctl -u $hc -o cat --no-pager | tail -n 60)")"
}
`;

export const BOOT_SCRIPT: string = `#!/bin/bash
# cos-agent VM tests (fallback.test.ts): which image this boot runs and what GRUB left (start), and at shutdown what
# the health check did (stop).
exec 2>/dev/null
${HELPERS}
if [ "$1" = start ]; then
  dmesg -n 1
  lower=$(findmnt -n -o SOURCE /run/rootfsbase)
  label=$(blkid -p -o value -s LABEL "$lower")
  img=$(losetup -n -O BACK-FILE "$lower")
  version=$(. /usr/lib/os-release; printf %s "$VERSION")
  cmdline=$(cat /proc/cmdline)
  uf=false; for x in $cmdline; do [ "$x" = upgrade_failure ] && uf=true; done
  mkdir -p /run/cosvm
  # this boot's step(s): the file's, or a step the host passed with qemu's -fw_cfg (opt/cosvm/step), which replaces
  # it: how a test picks the step of a boot of a disk it must not write (a power-cut snapshot, whose ext4 journals are
  # still to replay)
  modprobe qemu_fw_cfg
  fw=/sys/firmware/qemu_fw_cfg/by_name/opt/cosvm/step/raw
  if [ -r "$fw" ]; then cat "$fw" > /run/cosvm/step; else cat /oem${STEP_FILE} > /run/cosvm/step 2>/dev/null; fi
  step=$(cat /run/cosvm/step)
  for w in $step; do
    case $w in
      pause=*) systemctl set-environment "AGENT_TEST_PAUSE_AT=\${w#pause=}" AGENT_TEST_PAUSE_NOTIFY=/dev/ttyS0;;
      pausefor=*) systemctl set-environment "AGENT_TEST_PAUSE_SECONDS=\${w#pausefor=}";;
    esac
  done
  emit "{\\"kind\\":\\"boot\\",\\"label\\":$(j "$label"),\\"img\\":$(j "$img"),\\"version\\":$(j "$version"),\\"upgradeFailure\\":$uf,\\"step\\":$(j "$step"),\\"assessment\\":$(envjson /run/initramfs/cos-state/boot_assessment),\\"grubenv\\":$(envjson /oem/grubenv),\\"cos\\":$(j "$(ls -A /run/initramfs/cos-state/cOS | paste -sd' ')"),\\"cmdline\\":$(j "$cmdline"),\\"bootId\\":$(j "$(cat /proc/sys/kernel/random/boot_id)"),\\"uptime\\":$(up)}"
else
  target=$(systemctl list-jobs --no-legend --plain 2>/dev/null | awk '{print $2}' | grep -E '^(reboot|poweroff|halt|kexec)\\.target$' | head -n 1)
  emit "{\\"kind\\":\\"shutdown\\",\\"shutdownTarget\\":$(j "$target"),\\"healthcheck\\":$(hcjson),\\"cosdJournal\\":$(j "$(journalctl -u cosd.service -o cat --no-pager | tail -n 80)"),\\"uptime\\":$(up)}"
fi
exit 0
`;

export const REPORT_SCRIPT: string = `#!/bin/bash
# cos-agent VM tests (fallback.test.ts): the health check's result, this boot's step (/oem${STEP_FILE}), the status
# document, then power off.
exec 2>/dev/null
${HELPERS}
emit "{\\"kind\\":\\"healthcheck\\",\\"healthcheck\\":$(hcjson),\\"multiUserUs\\":$(num "$(show multi-user.target ActiveEnterTimestampMonotonic)"),\\"uptime\\":$(up)}"
# the status and COS_STATE/cOS once cosd has started (and cleaned up after a power cut), and cosd's mounts
statusBefore() {
  local out rc
  out=$(timeout 120 cosctl status --json 2>/run/cosvm-status.err); rc=$?
  emit "{\\"kind\\":\\"status-before\\",\\"exit\\":$rc,\\"stdout\\":$(j "$out"),\\"stderr\\":$(j "$(tail -c 4000 /run/cosvm-status.err)"),\\"cos\\":$(j "$(ls -A /run/initramfs/cos-state/cOS | paste -sd' ')"),\\"agentMounts\\":$(j "$(findmnt -n -o TARGET -R /run/cos-agent/mnt 2>/dev/null | paste -sd' ')"),\\"uptime\\":$(up)}"
}
after=poweroff
# one step per line, in order (on fd 3: the commands below must not read the step file as their stdin)
while IFS= read -r -u 3 step || [ -n "$step" ]; do
args=
case $step in
  rollback) args=rollback;;
  rollback-permanent) args="rollback --permanent";;
  'upgrade '*)
    image=; recovery=; force=
    for w in $step; do
      case $w in image=*) image=\${w#image=};; recovery=1) recovery=1;; force=1) force=1;; esac
    done
    # the registry on the host (10.0.2.2:<port>) speaks plain HTTP: insecure in registries.conf, as a site would mark
    # its own registry
    mkdir -p /etc/containers
    printf '[[registry]]\\nlocation = "%s"\\ninsecure = true\\n' "\${image%%/*}" > /etc/containers/registries.conf
    args="upgrade --image $image\${recovery:+ --recovery}\${force:+ --force}"
    after=reboot
    statusBefore;;
  check) statusBefore;;
esac

if [ -n "$args" ]; then
  t0=$(up)
  out=$(timeout 1500 cosctl $args 2>/run/cosvm-cosctl.err); rc=$?
  emit "{\\"kind\\":\\"cosctl\\",\\"args\\":$(j "$args"),\\"exit\\":$rc,\\"stdout\\":$(j "$out"),\\"stderr\\":$(j "$(tail -c 4000 /run/cosvm-cosctl.err)"),\\"startUptime\\":$t0,\\"uptime\\":$(up)}"
  if [ "$after" = reboot ]; then
    emit "{\\"kind\\":\\"cosd-journal\\",\\"json\\":$(j "$(journalctl -u cosd.service -o json --output-fields=MESSAGE --no-pager | tail -n 400)")}"
  fi
fi
done 3< /run/cosvm/step
out=$(timeout 120 cosctl status --json 2>/run/cosvm-status.err); rc=$?
emit "{\\"kind\\":\\"status\\",\\"exit\\":$rc,\\"stdout\\":$(j "$out"),\\"stderr\\":$(j "$(tail -c 4000 /run/cosvm-status.err)"),\\"uptime\\":$(up)}"
failed=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | paste -sd' ')
emit "{\\"kind\\":\\"done\\",\\"target\\":$(j "$(systemctl is-active multi-user.target)"),\\"failed\\":$(j "$failed"),\\"cosdJournal\\":$(j "$(journalctl -u cosd.service -o cat --no-pager | tail -n 150)"),\\"uptime\\":$(up)}"
sync
# after an upgrade an orderly reboot, as a user would (qemu's -no-reboot ends the VM: the test boots the disk again)
if [ "$after" = reboot ]; then systemctl reboot --no-block; else systemctl poweroff --force --no-block; fi
`;

export const BOOT_UNIT: string = `[Unit]
Description=cos-agent VM test: report which image boots (start) and the health check at shutdown (stop)
DefaultDependencies=no
After=local-fs.target
Before=cosd.service cos-agent-healthcheck.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/cosvm/fb-boot start
ExecStop=/usr/lib/cosvm/fb-boot stop

[Install]
WantedBy=multi-user.target
`;

export const REPORT_UNIT: string = `[Unit]
Description=cos-agent VM test: the health check, the step of this boot, the status document; then power off
After=multi-user.target cos-agent-healthcheck.service cosd.service
# a reporter that fails (a harness bug) powers the guest off instead of leaving the boot to its hard timeout
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/lib/cosvm/fb-report

[Install]
WantedBy=multi-user.target
`;

export function fallbackReporter(): { files: GuestFile[]; units: GuestUnit[] } {
  return {
    files: [
      { path: '/usr/lib/cosvm/fb-boot', content: BOOT_SCRIPT, mode: 0o755 },
      { path: '/usr/lib/cosvm/fb-report', content: REPORT_SCRIPT, mode: 0o755 },
    ],
    units: [
      { name: 'cosvm-fb-boot.service', content: BOOT_UNIT },
      { name: 'cosvm-fb-report.service', content: REPORT_UNIT },
    ],
  };
}

/** Debian 12's /usr/lib/os-release with VERSION (and PRETTY_NAME) naming a test image. */
export function osRelease(version: string): string {
  return `PRETTY_NAME="Debian GNU/Linux 12 (${version})"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="${version}"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
`;
}

/** Writes (replaces) `file` at the root of the ext partition `label` of a raw disk image, with debugfs -w. */
export async function writePartitionFile(disk: string, label: string, file: string, content: string): Promise<void> {
  if (!/^\/[\w.-]+$/.test(file)) throw new Error(`writePartitionFile: ${file}: a file at the partition's root`);
  const part = await partitionByLabel(disk, label);
  const dir = await mkdtemp(path.join(tmpdir(), 'cosvm-oemfile-'));
  try {
    const src = path.join(dir, 'f');
    await writeFile(src, content);
    await writeFile(path.join(dir, 'cmds'), `rm ${file}\nwrite ${src} ${file}\n`);
    const image = `${disk}?offset=${part.offset}`;
    await run(['debugfs', '-w', '-f', path.join(dir, 'cmds'), image]);
    const back = (await run(['debugfs', '-R', `cat ${file}`, image])).stdout;
    if (back !== content) throw new Error(`writePartitionFile: ${label}${file} reads back ${JSON.stringify(back)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The step(s) of the next boot (several run one after the other, e.g. a recovery upgrade, then a system one). */
export async function writeStep(disk: string, step: Step | readonly Step[]): Promise<void> {
  const steps: readonly Step[] = typeof step === 'string' ? [step] : step;
  await writePartitionFile(disk, 'COS_OEM', STEP_FILE, `${steps.join('\n')}\n`);
}

/** The filesystem label and UUID of a slot image file inside COS_STATE (e.g. `/cOS/active.img`), from the disk image. */
export async function slotImageIdentity(disk: string, file: string): Promise<{ label: string; uuid: string }> {
  const part = await partitionByLabel(disk, 'COS_STATE');
  const image = `${disk}?offset=${part.offset}`;
  const stats = (await run(['debugfs', '-c', '-R', 'stats', image])).stdout;
  const blockSize = Number(/Block size:\s*(\d+)/.exec(stats)?.[1] ?? 'NaN');
  // the inner superblock is at byte 1024 of the image, in the file's block 0 when COS_STATE's blocks are >= 2 KiB
  if (!(blockSize >= 2048)) throw new Error(`COS_STATE block size ${blockSize}: not supported here`);
  const block = Number((await run(['debugfs', '-c', '-R', `bmap ${file} 0`, image])).stdout.trim());
  if (!Number.isInteger(block) || block <= 0) throw new Error(`COS_STATE${file}: no first block (bmap: ${block})`);
  const offset = part.offset + block * blockSize;
  // blkid exits 2 when it finds nothing: an empty result then, and the caller's assertion says so
  const out = (await run(['blkid', '-p', '-o', 'export', '--offset', String(offset), disk], { okExitCodes: [2] })).stdout;
  const vars = Object.fromEntries(out.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  return { label: vars['LABEL'] ?? '', uuid: vars['UUID'] ?? '' };
}

