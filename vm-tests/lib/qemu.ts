/**
 * VM-test helper: boot a disk under QEMU the way vm-boot.md measured it works on this machine: TCG only (KVM here is
 * nested PVM and cannot run a stock kernel), q35, OVMF (Debian's ovmf package: OVMF_CODE_4M.fd read-only plus a
 * private copy of OVMF_VARS_4M.fd per boot), the disk on virtio-blk with bootindex=0, serial console captured to a log
 * file (each line stamped with seconds since qemu start), QEMU user networking (the guest reaches the host's
 * 127.0.0.1 at 10.0.2.2), `-no-reboot` (a guest reboot or panic ends the VM), and a HARD timeout after which qemu is
 * killed. Optionally qemu is SIGKILLed as soon as a serial line contains a marker (a power cut at a chosen point).
 *
 * Guests report results as single-line JSON after a marker (`COSVM-RESULT {...}`); `markerJson()` extracts those
 * objects and nothing else. `bootReport()` formats the log path and the last 80 lines for an assertion message; logs
 * are kept under `<cache>/logs` (or $COS_AGENT_VM_LOGS) after the test's temp dir is gone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, readdir, rm, stat } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as sleep } from 'node:timers/promises';
import { cacheDir, tryLock } from './cache.ts';
import { run } from './exec.ts';

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
export const RESULT_MARKER = 'COSVM-RESULT';

export interface BootOptions {
  /** Raw (or qcow2) disk image. With `overlay`, it is left untouched. */
  disk: string;
  /** Scratch dir for the OVMF VARS copy and the qcow2 overlay (the caller removes it). */
  workDir: string;
  /** Log file name stem (default "boot"); a timestamp and a counter are added. */
  name?: string;
  /** Boot through a fresh qcow2 overlay on `disk` (writes land in the overlay). Default false. */
  overlay?: boolean;
  /** Hard limit for the whole boot: qemu is SIGKILLed after it. */
  timeoutMs: number;
  /** SIGKILL qemu as soon as a serial line contains this string (or matches this RegExp). */
  killAtMarker?: string | RegExp;
  /**
   * Freeze qemu (SIGSTOP) as soon as a serial line matches `match`, run `handle` (e.g. copy the raw disk: a power cut
   * at that moment, taken as a snapshot; every write qemu completed is in the file, and a flush the guest waited for
   * was an fdatasync), then let it go on (SIGCONT). Lines are handled one after the other.
   */
  freezeAtMarker?: { match: string | RegExp; handle: (line: string) => Promise<void> };
  memMiB?: number;
  smp?: number;
  /** Default true: virtio-net with QEMU user networking (guest 10.0.2.15, host 10.0.2.2). */
  network?: boolean;
  /** host 127.0.0.1:hostPort -> guest guestPort (TCP). */
  hostForwards?: ReadonlyArray<{ hostPort: number; guestPort: number }>;
  /** Extra qemu arguments. */
  extraArgs?: readonly string[];
}

export interface BootResult {
  /** Kept after the test; printed by bootReport(). */
  logPath: string;
  /** The disk qemu ran on: opts.disk, or the qcow2 overlay (in workDir) with `overlay`. */
  disk: string;
  /** The serial console, ANSI escapes and CRs removed, one line per console line (no timestamps). */
  serial: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** The line that matched killAtMarker, when qemu was killed for it. */
  killedAtMarker: string | null;
  /** Why the harness killed a boot that could not go on (e.g. 'GRUB prompt'), else null. */
  aborted: string | null;
  durationMs: number;
  /** Every COSVM-RESULT object, in order. */
  results: Array<Record<string, unknown>>;
  /** When each of `results` was printed: ms since qemu started (same order). */
  resultTimesMs: number[];
  /** qemu's stderr (also in the log). */
  stderr: string;
}

export function logDir(): string {
  return process.env['COS_AGENT_VM_LOGS'] || path.join(cacheDir(), 'logs');
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** Kills every qemu this process started that is still running (for test teardown). */
export function killAllVms(): void {
  for (const c of live) c.kill('SIGKILL');
}

/**
 * At most $COS_AGENT_VM_PARALLEL (default 2, the number of cores here) VMs run at once across all test processes:
 * one pid lock file per slot under <cache>/vm-slots. Waiting for a slot does not count against a boot's timeout.
 */
export async function acquireVmSlot(): Promise<() => Promise<void>> {
  const slots = Math.max(1, Number(process.env['COS_AGENT_VM_PARALLEL'] ?? '2') || 2);
  const dir = path.join(cacheDir(), 'vm-slots');
  await mkdir(dir, { recursive: true });
  for (;;) {
    for (let i = 0; i < slots; i++) {
      const release = await tryLock(path.join(dir, `slot-${i}.lock`));
      if (release) return release;
    }
    await sleep(250);
  }
}

let counter = 0;
const MAX_LOGS = 200;

async function pruneLogs(dir: string): Promise<void> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.log'));
  if (files.length <= MAX_LOGS) return;
  const withTime = await Promise.all(files.map(async (f) => ({ f, t: (await stat(path.join(dir, f))).mtimeMs })));
  withTime.sort((a, b) => a.t - b.t);
  for (const { f } of withTime.slice(0, files.length - MAX_LOGS)) await rm(path.join(dir, f), { force: true });
}

const ANSI = /\x1b(\[[0-9;?=<>]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78DEHMc])/g;

function cleanLine(s: string): string {
  return s.replace(ANSI, '').replace(/\r/g, '');
}

export function qemuArgs(opts: BootOptions, disk: string, vars: string): string[] {
  const fmt = disk.endsWith('.qcow2') ? 'qcow2' : 'raw';
  const args = [
    '-machine', 'q35', '-accel', 'tcg',
    '-m', String(opts.memMiB ?? 1024), '-smp', String(opts.smp ?? 1),
    '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
    '-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
    '-drive', `if=pflash,format=raw,unit=1,file=${vars}`,
    '-drive', `if=none,id=d0,format=${fmt},file=${disk}`,
    '-device', 'virtio-blk-pci,drive=d0,bootindex=0',
  ];
  if (opts.network ?? true) {
    const fwd = (opts.hostForwards ?? []).map((f) => `,hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.guestPort}`).join('');
    // romfile= : no iPXE option ROM, which OVMF would otherwise load and start (seconds under TCG)
    args.push('-netdev', `user,id=n0${fwd}`, '-device', 'virtio-net-pci,netdev=n0,romfile=');
  } else {
    args.push('-nic', 'none');
  }
  args.push(...(opts.extraArgs ?? []));
  return args;
}

/** Boots `opts.disk` and resolves when qemu is gone (powered off, rebooted, killed at the marker, or timed out). */
export async function bootVm(opts: BootOptions): Promise<BootResult> {
  await mkdir(opts.workDir, { recursive: true });
  const logs = logDir();
  await mkdir(logs, { recursive: true });
  await pruneLogs(logs).catch(() => undefined);
  const stem = `${opts.name ?? 'boot'}-${new Date().toISOString().replace(/[:.]/g, '-')}-${process.pid}-${++counter}`;
  const logPath = path.join(logs, `${stem}.log`);
  const vars = path.join(opts.workDir, `${stem}.vars.fd`);
  await copyFile(OVMF_VARS, vars);
  let disk = path.resolve(opts.disk);
  if (opts.overlay) {
    const ov = path.join(opts.workDir, `${stem}.qcow2`);
    await run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', disk, '-F', disk.endsWith('.qcow2') ? 'qcow2' : 'raw', ov]);
    disk = ov;
  }
  const args = qemuArgs(opts, disk, vars);
  const release = await acquireVmSlot();
  try {
    return { ...(await runQemu(opts, args, logPath)), disk };
  } finally {
    await release();
  }
}

async function runQemu(opts: BootOptions, args: string[], logPath: string): Promise<Omit<BootResult, 'disk'>> {
  const log = createWriteStream(logPath);
  const t0 = Date.now();
  const stamp = (): string => `[${((Date.now() - t0) / 1000).toFixed(3).padStart(8)}] `;
  log.write(`# qemu-system-x86_64 ${args.join(' ')}\n`);
  const lines: string[] = [];
  const lineTimes: number[] = [];
  let partial = '';
  let stderr = '';
  let killedAtMarker: string | null = null;
  let timedOut = false;
  let aborted: string | null = null;

  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'], shell: false });
  live.add(child);
  const matches = (line: string): boolean =>
    opts.killAtMarker === undefined ? false : typeof opts.killAtMarker === 'string' ? line.includes(opts.killAtMarker) : opts.killAtMarker.test(line);
  let frozen: Promise<void> = Promise.resolve();
  const freeze = opts.freezeAtMarker;
  const onLine = (raw: string): void => {
    const line = cleanLine(raw);
    lines.push(line);
    lineTimes.push(Date.now() - t0);
    log.write(`${stamp()}${line}\n`);
    if (killedAtMarker === null && matches(line)) {
      killedAtMarker = line;
      child.kill('SIGKILL');
    }
    if (freeze !== undefined && (typeof freeze.match === 'string' ? line.includes(freeze.match) : freeze.match.test(line))) {
      child.kill('SIGSTOP');
      log.write(`${stamp()}# frozen (SIGSTOP) at this line\n`);
      frozen = frozen.then(async () => {
        try {
          await freeze.handle(line);
        } finally {
          log.write(`${stamp()}# thawed (SIGCONT)\n`);
          child.kill('SIGCONT');
        }
      });
    }
  };
  const decoder = new StringDecoder('utf8');
  child.stdout.on('data', (b: Buffer) => {
    const parts = (partial + decoder.write(b)).split('\n');
    partial = parts.pop() ?? '';
    for (const p of parts) onLine(p);
    // GRUB fell to its command line (a config error): nothing more will happen until the timeout
    if (aborted === null && /^(grub|grub rescue)> $/.test(cleanLine(partial))) {
      aborted = 'GRUB prompt';
      log.write(`${stamp()}${cleanLine(partial)}\n# ABORTED: GRUB prompt: killing qemu\n`);
      child.kill('SIGKILL');
    }
  });
  child.stderr.on('data', (b: Buffer) => {
    const s = b.toString('utf8');
    stderr += s;
    for (const l of s.split('\n').filter(Boolean)) log.write(`${stamp()}qemu-stderr: ${l}\n`);
  });
  const timer = setTimeout(() => {
    timedOut = true;
    log.write(`${stamp()}# HARD TIMEOUT after ${opts.timeoutMs} ms: killing qemu\n`);
    child.kill('SIGKILL');
  }, opts.timeoutMs);
  const { exitCode, signal } = await new Promise<{ exitCode: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, sig) => resolve({ exitCode: code, signal: sig }));
  }).finally(() => {
    clearTimeout(timer);
    live.delete(child);
  });
  // a handler still running when qemu ended (killed by the timeout while frozen): wait for it, and report its error
  await frozen;
  if (partial) {
    // an unterminated last line (power cut mid-line): logged, but not a complete line for markerJson()
    lines.push(cleanLine(partial));
    log.write(`${stamp()}${cleanLine(partial)}\n# (no newline at end of console output)\n`);
  }
  const durationMs = Date.now() - t0;
  log.write(`${stamp()}# qemu ended: exit=${exitCode} signal=${signal} timedOut=${timedOut} killedAtMarker=${killedAtMarker !== null}\n`);
  await new Promise<void>((resolve) => log.end(resolve));
  const serial = lines.join('\n') + (partial ? '' : '\n');
  const resultTimesMs = lines.flatMap((l, i) => (i < lineTimes.length ? markerJson(`${l}\n`, RESULT_MARKER).map(() => lineTimes[i] ?? 0) : []));
  return { logPath, serial, exitCode, signal, timedOut, killedAtMarker, aborted, durationMs, results: markerJson(serial, RESULT_MARKER), resultTimesMs, stderr };
}

/**
 * The JSON objects printed after `marker` on complete console lines (`<anything>MARKER {...}`), in order. Only
 * `MARKER {` starts a result; a line that starts one but does not hold a valid JSON object after the marker is an
 * error (it says which line); an unterminated last line (a VM killed mid-write) is ignored.
 */
export function markerJson(serial: string, marker: string): Array<Record<string, unknown>> {
  const complete = serial.endsWith('\n') ? serial : serial.slice(0, serial.lastIndexOf('\n') + 1);
  const out: Array<Record<string, unknown>> = [];
  const tag = `${marker} {`;
  for (const line of complete.split('\n')) {
    const at = line.indexOf(tag);
    if (at < 0) continue;
    const text = line.slice(at + marker.length + 1).trim();
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new Error(`${marker}: not JSON: ${JSON.stringify(line)} (${(e as Error).message})`, { cause: e });
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${marker}: not a JSON object: ${JSON.stringify(line)}`);
    out.push(value as Record<string, unknown>);
  }
  return out;
}

/** For assertion messages: how the boot ended, the log path and the last `n` console lines. */
export function bootReport(boot: BootResult, n = 80): string {
  const lines = boot.serial.replace(/\n$/, '').split('\n');
  const how = boot.aborted !== null ? `aborted: ${boot.aborted}` : boot.timedOut ? 'HARD TIMEOUT' : boot.killedAtMarker !== null ? `killed at marker: ${boot.killedAtMarker}` : `qemu exit=${boot.exitCode} signal=${boot.signal}`;
  return [
    `VM boot ended after ${(boot.durationMs / 1000).toFixed(1)} s (${how}); serial log: ${boot.logPath}`,
    `--- last ${Math.min(n, lines.length)} console lines ---`,
    ...lines.slice(-n),
    '--- end of console ---',
  ].join('\n');
}
