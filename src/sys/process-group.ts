/**
 * Run one program in a process group of its own, for programs the agent does not trust to end (health checks):
 *   - a deadline: at `timeoutMs` the whole group gets SIGTERM, `killGraceMs` later SIGKILL, so a check that forks
 *     children (or ignores SIGTERM) never outlives its deadline (greenboot-rs#83: a hung check blocked the rollback);
 *   - when the program itself exits, what it left running in its group is killed too (as systemd does with a
 *     oneshot unit's leftovers), and a leftover that escaped the group and still holds the output pipe does not keep
 *     the run waiting: the result is settled shortly after the program's exit;
 *   - bounded output: stdout and stderr interleaved as they arrive, only the last `outputBytes` kept;
 *   - never rejects: a program that cannot start (ENOENT, EACCES, ENOEXEC) is a result with `error`.
 * Argv only, no shell (like runner.ts, the other place that spawns).
 */
import { spawn } from 'node:child_process';

export interface GroupCommand {
  /** argv[0] is looked up on PATH unless it has a slash. */
  readonly argv: readonly string[];
  readonly timeoutMs: number;
  /** Bytes of output kept (the tail). */
  readonly outputBytes: number;
  /** Between SIGTERM and SIGKILL of the group on timeout; default 2 s. */
  readonly killGraceMs?: number;
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
}

export interface GroupResult {
  /** The program's exit code; null when a signal ended it or it never started. */
  readonly exitCode: number | null;
  /** The signal that ended it (SIGTERM/SIGKILL after a timeout, or any other), else null. */
  readonly signal: string | null;
  /** The deadline passed and the group was killed. */
  readonly timedOut: boolean;
  readonly durationMs: number;
  /** The last `outputBytes` of stdout and stderr, interleaved, decoded as UTF-8. */
  readonly output: string;
  /** More output was written than kept. */
  readonly outputTruncated: boolean;
  /** Why it could not start (spawn error), if so. */
  readonly error?: string;
}

/** After the program exits, how long its output pipes may stay open (held by an escaped leftover) before we stop reading. */
const DRAIN_MS = 500;

/** A byte ring: the last `limit` bytes written. */
class Tail {
  private chunks: Buffer[] = [];
  private size = 0;
  truncated = false;
  private readonly limit: number;
  constructor(limit: number) {
    this.limit = limit;
  }
  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
    while (this.size > this.limit && this.chunks.length > 0) {
      const first = this.chunks[0] as Buffer;
      const excess = this.size - this.limit;
      this.truncated = true;
      if (first.length <= excess) {
        this.chunks.shift();
        this.size -= first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.size -= excess;
      }
    }
  }
  text(): string {
    // A cut through a multi-byte character at the start decodes as U+FFFD: harmless in a log tail.
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is gone already.
  }
}

export function runInProcessGroup(cmd: GroupCommand): Promise<GroupResult> {
  const started = performance.now();
  const tail = new Tail(cmd.outputBytes);
  return new Promise((resolve) => {
    const [file, ...args] = cmd.argv;
    if (file === undefined) {
      resolve({ exitCode: null, signal: null, timedOut: false, durationMs: 0, output: '', outputTruncated: false, error: 'empty argv' });
      return;
    }
    // detached: setsid(2), so the child leads a new process group (and session) whose id is its pid.
    const child = spawn(file, args, {
      shell: false,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cmd.env ? { ...process.env, ...cmd.env } : process.env,
      ...(cmd.cwd !== undefined ? { cwd: cmd.cwd } : {}),
    });
    let timedOut = false;
    let settled = false;
    let spawnError: string | undefined;
    let exit: { code: number | null; signal: string | null } | null = null;
    const timers: NodeJS.Timeout[] = [];
    const onData = (b: Buffer): void => tail.push(b);
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);

    const settle = (): void => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      child.stdout.destroy();
      child.stderr.destroy();
      resolve({
        exitCode: exit?.code ?? null,
        signal: exit?.signal ?? null,
        timedOut,
        durationMs: Math.round(performance.now() - started),
        output: tail.text(),
        outputTruncated: tail.truncated,
        ...(spawnError !== undefined ? { error: spawnError } : {}),
      });
    };

    if (child.pid !== undefined) {
      const pid = child.pid;
      timers.push(setTimeout(() => {
        timedOut = true;
        killGroup(pid, 'SIGTERM');
        timers.push(setTimeout(() => killGroup(pid, 'SIGKILL'), cmd.killGraceMs ?? 2000));
      }, cmd.timeoutMs));
    }
    child.on('error', (e) => {
      spawnError = e.message;
      settle();
    });
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      // The deadline is for the program; it has ended (a pending SIGKILL after a timeout is moot too).
      for (const t of timers.splice(0)) clearTimeout(t);
      // Leftovers in its group die with it; the output already written is still read until the pipes close.
      if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
      timers.push(setTimeout(settle, DRAIN_MS));
    });
    child.on('close', settle);
  });
}
