/**
 * VM-test helper: the real agent in the guest, installed the way a derivative OS image installs it
 * (packaging/Dockerfile.snippet): the package tarball `dist/cos-agent-<version>-linux-amd64.tar.gz` unpacked at /
 * (the rootfs `extraTarballs` hook), then the units the snippet's `RUN systemctl enable ...` line names enabled with
 * `systemctl --root=<tree> enable` (the `enableUnits` hook).
 *
 * - `agentPackage()`: the tarball, built first (`bash scripts/build.sh`, then `node scripts/package.ts`, argv only)
 *   when dist/ has none or when it is older than any of its inputs (src/, packaging/, systemd/, bin/, the build and
 *   package scripts, package.json, README.md). The disk's cache key covers the tarball by its sha256 (rootfsKey), so
 *   a changed agent rebuilds the image and an unchanged rebuild (the package is deterministic) does not.
 * - `COS_FSTAB`: COS_OEM at /oem and COS_PERSISTENT at /usr/local, as on a cOS host (cos-layout.md); COS_STATE is
 *   mounted read-only at /run/initramfs/cos-state by the initrd, where the agent finds it (access.ts hostMountOf).
 * - `agentReporter()`: two guest units. `cosvm-env-before.service` copies COS_STATE/boot_assessment (the env block
 *   as GRUB left it, read before cosd and the health check run) into /run/cosvm/env-before.json.
 *   `cosvm-agent-report.service` (after multi-user.target, cosd.service and cos-agent-healthcheck.service) prints
 *   one `COSVM-RESULT {"kind":...}` line per fact on ttyS0, then powers off:
 *     env-before   {vars}: the env block before the agent ran
 *     cosd         is-active, MainPID, ExecMainStartTimestampMonotonic, ActiveEnterTimestampMonotonic (µs), ...
 *     rss          VmRSS / VmHWM (kB) of cosd's MainPID, sampled once cosd has been active for SETTLE_SECONDS
 *     node-baseline how long `/usr/lib/cos-agent/node -e 0` takes in the guest (for scale: TCG is slow)
 *     status       `cosctl status --json`: exit code, stdout (the document, as a string), stderr
 *     healthcheck  cos-agent-healthcheck.service Result, ExecMainStatus, ActiveState, its journal (-o cat)
 *     yip          what the cos-setup units' stages did: hostname, the user cosvm (passwd, group, authorized_keys),
 *                  /etc/cosvm-from-oem, vm.swappiness, /run/cosvm-network-stage, the units' results and journal
 *     idle         cosd switched to --idle-exit 3 (a runtime drop-in): it leaves (Result, exit status), the wake timer it
 *                  armed (next elapse, the unit's command, /run/cos-agent/wake.json), a GetStatus that activates it
 *                  (exit, latency, new MainPID), it leaves again, and a config write starts it (cos-agent-config.path)
 *     cosd-journal `journalctl -u cosd -o json --output-fields=MESSAGE` (the last 200 entries: the lines with their
 *                  monotonic timestamps, for the start-up breakdown; `parseJournalJson()` parses them)
 *     done         the failed units, uptime
 *   Everything the guest reports is data; the host parses JSON only.
 */
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cacheDir, fileHash, tryLock } from './cache.ts';
import { run } from './exec.ts';
import type { GuestFile, GuestUnit } from './rootfs.ts';
import type { CosDiskOptions } from './disk.ts';
import { bootAssessmentScript } from '../../src/host/boot-assessment.ts';

export const REPO: string = path.resolve(import.meta.dirname, '../..');

/** What the package is built from: a file newer than the tarball makes it stale. */
export const PACKAGE_INPUTS: readonly string[] = [
  'src', 'packaging', 'systemd', 'bin', 'scripts/build.sh', 'scripts/build.ts', 'scripts/package.ts', 'package.json', 'README.md',
];

async function newestMtime(p: string): Promise<number> {
  const st = await stat(p).catch(() => undefined);
  if (st === undefined) return 0;
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const e of await readdir(p, { recursive: true, withFileTypes: true })) {
    const s = await stat(path.join(e.parentPath, e.name)).catch(() => undefined);
    if (s !== undefined && s.mtimeMs > newest) newest = s.mtimeMs;
  }
  return newest;
}

export interface AgentPackage {
  path: string;
  sha256: string;
  version: string;
  /** Why it was (re)built, or null when dist/ had an up-to-date tarball. */
  built: string | null;
  seconds: number;
}

/** The package tarball, (re)built when missing or stale. Serialised across test processes by a lock in the cache. */
export async function agentPackage(log: (line: string) => void = () => {}): Promise<AgentPackage> {
  const t0 = Date.now();
  const { version } = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
  if (process.arch !== 'x64') throw new Error(`the VM guest is amd64; this is ${process.arch}`);
  const tarball = path.join(REPO, 'dist', `cos-agent-${version}-linux-amd64.tar.gz`);
  await mkdir(cacheDir(), { recursive: true });
  const lockFile = path.join(cacheDir(), 'agent-package.lock');
  let release: (() => Promise<void>) | null = null;
  while ((release = await tryLock(lockFile)) === null) await sleep(500);
  let built: string | null = null;
  try {
    const have = await stat(tarball).catch(() => undefined);
    let newest = 0;
    for (const p of PACKAGE_INPUTS) newest = Math.max(newest, await newestMtime(path.join(REPO, p)));
    if (have === undefined) built = 'dist/ has no tarball';
    else if (have.mtimeMs < newest) built = `the tarball is older than its inputs (by ${((newest - have.mtimeMs) / 1000).toFixed(0)} s)`;
    if (built !== null) {
      log(`vm-agent: building the package: ${built}`);
      await run(['bash', path.join(REPO, 'scripts/build.sh')], { cwd: REPO, timeoutMs: 10 * 60_000 });
      const out = await run([process.execPath, path.join(REPO, 'scripts/package.ts')], { cwd: REPO, timeoutMs: 10 * 60_000 });
      log(`vm-agent: ${out.stdout.trim().split('\n')[0] ?? ''}`);
    }
  } finally {
    await release();
  }
  return { path: tarball, sha256: await fileHash(tarball), version, built, seconds: (Date.now() - t0) / 1000 };
}

/**
 * The units packaging/Dockerfile.snippet's `RUN systemctl enable ...` line enables. Without `yipStages`, the
 * cos-setup-* units (the yip stages) are left disabled: only the agent scenario's guest carries cloud-config for
 * them, and in every other scenario they would add three cosctl starts to each of some 25 boots (about 10 s each
 * under TCG), which the VM suite's 20-minute budget cannot pay for nothing.
 */
export async function dockerfileEnabledUnits(opts: { yipStages?: boolean } = {}): Promise<string[]> {
  const text = await readFile(path.join(REPO, 'packaging/Dockerfile.snippet'), 'utf8');
  const line = text.split('\n').find((l) => /^RUN\s+systemctl\s+enable\s/.test(l));
  if (line === undefined) throw new Error('packaging/Dockerfile.snippet has no `RUN systemctl enable ...` line');
  const units = line.replace(/^RUN\s+systemctl\s+enable\s+/, '').trim().split(/\s+/);
  if (units.some((u) => !/^[\w@.-]+$/.test(u))) throw new Error(`unexpected RUN line in packaging/Dockerfile.snippet: ${line}`);
  return opts.yipStages === true ? units : units.filter((u) => !u.startsWith('cos-setup-'));
}

/** /etc/fstab of the guest: the cOS mounts the agent uses besides COS_STATE (which the initrd mounts). */
export const COS_FSTAB: string = `# cos-agent VM test guest: the initrd mounts / (overlay on the slot image) and COS_STATE (read-only, at
# /run/initramfs/cos-state); the rest as on a cOS host (cos-layout.md)
LABEL=COS_OEM        /oem        ext4  defaults  0 0
LABEL=COS_PERSISTENT /usr/local  ext4  defaults  0 0
`;

/** Seconds cosd has been active before its RSS is read. */
export const SETTLE_SECONDS: number = 5;

const JSON_HELPERS = `j() { local s=\${1//\\\\/\\\\\\\\}; s=\${s//\\"/\\\\\\"}; s=\${s//$'\\n'/\\\\n}; s=\${s//$'\\t'/\\\\t}; s=\${s//$'\\r'/\\\\r}; s=$(printf %s "$s" | tr -d '\\000-\\010\\013\\014\\016-\\037'); printf '"%s"' "$s"; }
num() { if [[ $1 =~ ^-?[0-9]+$ ]]; then printf %s "$1"; else printf null; fi; }
`;

export const ENV_BEFORE_SCRIPT: string = `#!/bin/bash
# cos-agent VM tests: COS_STATE/boot_assessment as GRUB left it, before cosd and the health check run.
${JSON_HELPERS}
f=/run/initramfs/cos-state/boot_assessment
vars=
if [ -f "$f" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '#'*|'') continue;; *=*) vars="$vars\${vars:+,}$(j "\${line%%=*}"):$(j "\${line#*=}")";; esac
  done < "$f"
  present=true
else
  present=false
fi
mkdir -p /run/cosvm
printf '{"kind":"env-before","present":%s,"vars":{%s},"uptime":%s}\\n' "$present" "$vars" "$(cut -d' ' -f1 /proc/uptime)" > /run/cosvm/env-before.json
`;

export const REPORT_SCRIPT: string = `#!/bin/bash
# cos-agent VM tests: report cosd, its status document and the boot health check on ttyS0, then power off.
exec 2>/dev/null
dmesg -n 1
${JSON_HELPERS}
emit() { printf '\\nCOSVM-RESULT %s\\n' "$1" > /dev/ttyS0; }
show() { systemctl show "$1" -p "$2" --value; }
up() { cut -d' ' -f1 /proc/uptime; }
us_now() { awk '{printf "%d", $1 * 1000000}' /proc/uptime; }

[ -f /run/cosvm/env-before.json ] && emit "$(cat /run/cosvm/env-before.json)"

# (a) cosd under systemd
cosd_fact() {
  printf '{"kind":"cosd","active":%s,"subState":%s,"result":%s,"mainPid":%s,"execMainStartUs":%s,"activeEnterUs":%s,"inactiveExitUs":%s,"nRestarts":%s,"userspaceStartUs":%s,"uptime":%s}' \\
    "$(j "$(systemctl is-active cosd.service)")" "$(j "$(show cosd.service SubState)")" "$(j "$(show cosd.service Result)")" \\
    "$(num "$(show cosd.service MainPID)")" "$(num "$(show cosd.service ExecMainStartTimestampMonotonic)")" \\
    "$(num "$(show cosd.service ActiveEnterTimestampMonotonic)")" "$(num "$(show cosd.service InactiveExitTimestampMonotonic)")" \\
    "$(num "$(show cosd.service NRestarts)")" "$(num "$(systemctl show -p UserspaceTimestampMonotonic --value)")" "$(up)"
}
emit "$(cosd_fact)"

# (b) idle RSS, once cosd has been active for ${SETTLE_SECONDS} s
pid=$(show cosd.service MainPID)
enter=$(show cosd.service ActiveEnterTimestampMonotonic)
if [[ $enter =~ ^[0-9]+$ ]] && [ "$enter" -gt 0 ]; then
  for i in $(seq 1 120); do [ "$(us_now)" -ge $((enter + ${SETTLE_SECONDS} * 1000000)) ] && break; sleep 0.5; done
fi
samples=
for i in 1 2 3; do
  kb=$(awk '$1=="VmRSS:"{print $2}' "/proc/$pid/status")
  samples="$samples\${samples:+,}$(num "$kb")"
  [ $i -lt 3 ] && sleep 1
done
hwm=$(awk '$1=="VmHWM:"{print $2}' "/proc/$pid/status")
emit "{\\"kind\\":\\"rss\\",\\"pid\\":$(num "$pid"),\\"vmRssKb\\":[$samples],\\"vmHwmKb\\":$(num "$hwm"),\\"sinceActiveUs\\":$(num $(( $(us_now) - \${enter:-0} ))),\\"uptime\\":$(up)}"

# for scale: a bare start of the package's Node runtime in this guest, now
t0=$(us_now); /usr/lib/cos-agent/node -e 0; rc=$?; t1=$(us_now)
emit "{\\"kind\\":\\"node-baseline\\",\\"exit\\":$rc,\\"us\\":$((t1 - t0))}"

# (c) the status document
t0=$(us_now)
out=$(timeout 120 cosctl status --json 2>/run/cosvm/status.err); rc=$?
t1=$(us_now)
emit "{\\"kind\\":\\"status\\",\\"exit\\":$rc,\\"us\\":$((t1 - t0)),\\"stdout\\":$(j "$out"),\\"stderr\\":$(j "$(tail -c 4000 /run/cosvm/status.err)")}"

# (d) the health check unit
hc=cos-agent-healthcheck.service
emit "{\\"kind\\":\\"healthcheck\\",\\"active\\":$(j "$(systemctl is-active $hc)"),\\"result\\":$(j "$(show $hc Result)"),\\"execMainStatus\\":$(num "$(show $hc ExecMainStatus)"),\\"execMainStartUs\\":$(num "$(show $hc ExecMainStartTimestampMonotonic)"),\\"execMainExitUs\\":$(num "$(show $hc ExecMainExitTimestampMonotonic)"),\\"journal\\":$(j "$(journalctl -u $hc -o cat --no-pager | tail -n 100)")}"

# (e) the yip stages the agent ran from the cos-setup units (cloud-config of the scenario that has some; else empty)
yip_units=$(for u in cos-setup-fs cos-setup-boot cos-setup-network; do printf '%s %s %s %s\\n' "$u" "$(show $u.service ActiveState)" "$(show $u.service Result)" "$(show $u.service ExecMainStatus)"; done)
emit "{\\"kind\\":\\"yip\\",\\"hostname\\":$(j "$(hostname)"),\\"etcHostname\\":$(j "$(cat /etc/hostname)"),\\"passwd\\":$(j "$(getent passwd cosvm)"),\\"group\\":$(j "$(getent group cosvm)"),\\"keys\\":$(j "$(cat /home/cosvm/.ssh/authorized_keys)"),\\"keysStat\\":$(j "$(stat -c '%U %G %a' /home/cosvm/.ssh/authorized_keys)"),\\"oemFile\\":$(j "$(cat /etc/cosvm-from-oem)"),\\"oemFileStat\\":$(j "$(stat -c '%U %a' /etc/cosvm-from-oem)"),\\"swappiness\\":$(j "$(cat /proc/sys/vm/swappiness)"),\\"network\\":$(j "$(cat /run/cosvm-network-stage)"),\\"units\\":$(j "$yip_units"),\\"journal\\":$(j "$(journalctl -u cos-setup-fs -u cos-setup-boot -u cos-setup-network -o cat --no-pager | tail -n 60)")}"

# (g) idle exit (the shipped default is 60 s; the scenario's cosd was resident): cosd with a 3 s idle period leaves,
# hands the schedule to cos-agent-wake.timer, comes back on a call (bus activation through systemd) and on a config
# change (cos-agent-config.path)
wait_state() { for i in $(seq 1 360); do [ "$(systemctl is-active cosd.service)" = "$1" ] && return 0; sleep 0.5; done; return 1; }
mkdir -p /run/systemd/system/cosd.service.d
printf '[Service]\\nExecStart=\\nExecStart=/usr/sbin/cosd --idle-exit 3\\n' > /run/systemd/system/cosd.service.d/90-cosvm-idle.conf
systemctl daemon-reload
systemctl restart cosd.service
pid1=$(show cosd.service MainPID)
t0=$(us_now); wait_state inactive; left_us=$(( $(us_now) - t0 ))
left="$(systemctl is-active cosd.service) $(show cosd.service Result) $(show cosd.service ExecMainStatus)"
wake_next=$(systemctl show cos-agent-wake.timer -p NextElapseUSecRealtime --value)
wake_active=$(systemctl is-active cos-agent-wake.timer)
wake_unit=$(systemctl show cos-agent-wake.service -p ExecStart --value)
wake_record=$(cat /run/cos-agent/wake.json)
t0=$(us_now)
busctl --system --quiet --timeout=120 call io.costoolkit.Agent1 /io/costoolkit/Agent1 io.costoolkit.Agent1 GetStatus; call_rc=$?
call_us=$(( $(us_now) - t0 ))
called="$(systemctl is-active cosd.service)"; pid2=$(show cosd.service MainPID)
wait_state inactive
again=$(systemctl is-active cosd.service)
path_active=$(systemctl is-active cos-agent-config.path)
mkdir -p /etc/cos-agent
t0=$(us_now)
printf 'policy: check\\n' > /etc/cos-agent/agent.yaml
wait_state active; path_us=$(( $(us_now) - t0 ))
by_path=$(systemctl is-active cosd.service); pid3=$(show cosd.service MainPID)
emit "{\\"kind\\":\\"idle\\",\\"pid1\\":$(num "$pid1"),\\"leftUs\\":$(num "$left_us"),\\"left\\":$(j "$left"),\\"wakeNext\\":$(j "$wake_next"),\\"wakeActive\\":$(j "$wake_active"),\\"wakeUnit\\":$(j "$wake_unit"),\\"wakeRecord\\":$(j "$wake_record"),\\"callExit\\":$(num "$call_rc"),\\"callUs\\":$(num "$call_us"),\\"called\\":$(j "$called"),\\"pid2\\":$(num "$pid2"),\\"again\\":$(j "$again"),\\"pathActive\\":$(j "$path_active"),\\"byPath\\":$(j "$by_path"),\\"pathUs\\":$(num "$path_us"),\\"pid3\\":$(num "$pid3"),\\"now\\":$(j "$(date -u +%FT%TZ)")}"

# where the boot's time went (diagnostics for the VM suite's budget): the slowest services
# (systemd-analyze answers only once the boot finished, after this unit: each service's start and end, monotonic us)
emit "{\\"kind\\":\\"analyze\\",\\"units\\":$(j "$(systemctl show -p Id -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic -p ExecMainExitTimestampMonotonic '*.service' 2>/dev/null)")}"

emit "{\\"kind\\":\\"cosd-journal\\",\\"json\\":$(j "$(journalctl -u cosd.service -o json --output-fields=MESSAGE,PRIORITY --no-pager | tail -n 200)")}"

failed=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | paste -sd' ')
emit "{\\"kind\\":\\"done\\",\\"target\\":$(j "$(systemctl is-active multi-user.target)"),\\"failed\\":$(j "$failed"),\\"mounts\\":$(j "$(findmnt -n -o TARGET,SOURCE,OPTIONS /oem; findmnt -n -o TARGET,SOURCE,OPTIONS /usr/local; findmnt -n -o TARGET,SOURCE,OPTIONS /run/initramfs/cos-state)"),\\"uptime\\":$(up)}"
sync
@POWEROFF@
`;

export const ENV_BEFORE_UNIT: string = `[Unit]
Description=cos-agent VM test: COS_STATE/boot_assessment before the agent runs
DefaultDependencies=no
After=local-fs.target
Before=cosd.service cos-agent-healthcheck.service

[Service]
Type=oneshot
ExecStart=/usr/lib/cosvm/env-before

[Install]
WantedBy=multi-user.target
`;

export const REPORT_UNIT: string = `[Unit]
Description=cos-agent VM test: report cosd, its status and the health check on ttyS0, then power off
After=multi-user.target cos-agent-healthcheck.service cosd.service cos-setup-boot.service cos-setup-network.service

[Service]
Type=oneshot
ExecStart=/usr/lib/cosvm/agent-report

[Install]
WantedBy=multi-user.target
`;

/**
 * The guest's report units and scripts (under /usr/lib/cosvm: /usr/local is COS_PERSISTENT's mount point).
 * `poweroff`: 'fast' (default) = `systemctl poweroff --force`, 'clean' = an orderly `systemctl poweroff`.
 */
export function agentReporter(opts: { poweroff?: 'fast' | 'clean' } = {}): { files: GuestFile[]; units: GuestUnit[] } {
  const poweroff = (opts.poweroff ?? 'fast') === 'fast' ? 'systemctl poweroff --force --no-block' : 'systemctl poweroff --no-block';
  return {
    files: [
      { path: '/usr/lib/cosvm/env-before', content: ENV_BEFORE_SCRIPT, mode: 0o755 },
      { path: '/usr/lib/cosvm/agent-report', content: REPORT_SCRIPT.replace('@POWEROFF@', poweroff), mode: 0o755 },
    ],
    units: [
      { name: 'cosvm-env-before.service', content: ENV_BEFORE_UNIT },
      { name: 'cosvm-agent-report.service', content: REPORT_UNIT },
    ],
  };
}

export interface JournalLine {
  /** CLOCK_MONOTONIC of the entry, µs (the same clock as systemd's *TimestampMonotonic properties). */
  monotonicUs: number;
  message: string;
  /** `msg` of a pino JSON line, else undefined. */
  msg?: string;
  /** The entry's syslog PRIORITY (journald took it from the line's <N> prefix). */
  priority?: number;
}

/** The entries of a `journalctl -o json` dump (one JSON object per line); lines that are not JSON are skipped. */
export function parseJournalJson(text: string): JournalLine[] {
  const out: JournalLine[] = [];
  for (const line of text.split('\n')) {
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    const raw = e['MESSAGE'];
    const message = typeof raw === 'string' ? raw : Array.isArray(raw) ? Buffer.from(raw as number[]).toString('utf8') : '';
    let msg: string | undefined;
    try {
      const p = JSON.parse(message) as Record<string, unknown>;
      if (typeof p['msg'] === 'string') msg = p['msg'];
    } catch {
      // systemd's own lines (Starting..., Started...)
    }
    const priority = Number(e['PRIORITY'] ?? Number.NaN);
    out.push({ monotonicUs: Number(e['__MONOTONIC_TIMESTAMP']), message, ...(msg !== undefined ? { msg } : {}), ...(Number.isInteger(priority) ? { priority } : {}) });
  }
  return out;
}

/**
 * cosd resident in the scenarios' guests (a drop-in over the shipped unit: `--idle-exit 0`). The scenarios report facts
 * of the boot's cosd process (MainPID, RSS, restarts) at moments a TCG boot does not pin down; the shipped default
 * (leave after 60 s idle) is tried by the agent scenario's report, which switches cosd to a short idle period.
 */
export const RESIDENT_COSD: GuestFile = {
  path: '/etc/systemd/system/cosd.service.d/50-cosvm-resident.conf',
  content: '# cos-agent VM tests: cosd stays resident (vm-tests/lib/agent.ts RESIDENT_COSD)\n[Service]\nExecStart=\nExecStart=/usr/sbin/cosd --idle-exit 0\n',
};

/**
 * The disk options of an agent scenario: the package tarball unpacked at / with the snippet's units enabled, the
 * guest's fstab (COS_OEM at /oem, COS_PERSISTENT at /usr/local), cosd resident (RESIDENT_COSD), the scenario's guest units, and the agent's N-tries
 * grub_boot_assessment where the disk builder puts cOS's (08_boot_assessment's after-install stage). `extraFiles` go
 * into the root filesystem after the rest (e.g. the trust of lib/upgrade-image.ts, an os-release VERSION).
 */
export function agentDiskOptions(pkgPath: string, enabled: readonly string[], reporter: { files: GuestFile[]; units: GuestUnit[] }, extraFiles: readonly GuestFile[] = []): CosDiskOptions {
  return {
    rootfs: {
      extraTarballs: [pkgPath],
      enableUnits: [...enabled],
      files: [...reporter.files, { path: '/etc/fstab', content: COS_FSTAB }, RESIDENT_COSD, ...extraFiles],
      units: reporter.units,
    },
    stateFiles: [{ path: 'grub_boot_assessment', text: bootAssessmentScript() }],
  };
}

/** Where an upgrade through cosd spent its time, from cosd's journal (seconds; null when a line is missing). */
export interface UpgradePhases {
  /** 'job started' → 'signature verified': config, lock, host read, resolve, the signature check. */
  resolveVerify: number | null;
  /** 'signature verified' → the last 'layer applied': the transition image prepared, every layer downloaded and
   * unpacked into it (streamed: download and unpack overlap). */
  download: number | null;
  /** The last 'layer applied' → 'job succeeded': hooks, seal (unmount, fsck, label), the slot switch, GRUB, records. */
  staging: number | null;
  /** 'job started' → 'job succeeded'. */
  total: number | null;
}

/** The phases of the last upgrade job in `lines` (parseJournalJson of cosd's journal). */
export function upgradePhases(lines: readonly JournalLine[]): UpgradePhases {
  const startIdx = lines.map((l) => l.msg).lastIndexOf('job started');
  const job = startIdx < 0 ? [] : lines.slice(startIdx);
  const first = (msg: string): number | undefined => job.find((l) => l.msg === msg)?.monotonicUs;
  const last = (msg: string): number | undefined => [...job].reverse().find((l) => l.msg === msg)?.monotonicUs;
  const span = (a: number | undefined, b: number | undefined): number | null => (a === undefined || b === undefined ? null : (b - a) / 1e6);
  const started = first('job started');
  const verified = first('signature verified');
  const applied = last('layer applied');
  const done = first('job succeeded');
  return { resolveVerify: span(started, verified), download: span(verified, applied), staging: span(applied, done), total: span(started, done) };
}
