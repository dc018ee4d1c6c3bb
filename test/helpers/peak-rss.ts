/**
 * Test helper: run a program and measure its peak resident set size (the kernel's max RSS of the process, as
 * getrusage(RUSAGE_CHILDREN).ru_maxrss reports it for waited-for children: the largest of the program and of the
 * descendants it waited for, in KiB).
 *
 * Node cannot read a child's rusage, and polling /proc/<pid>/status (VmHWM) misses the last moments before exit;
 * so the program runs under a tiny python3 wrapper (python3 is on every machine here) that waits for it and writes
 * the peak to file descriptor 3, a pipe of its own: the program's stdout and stderr stay exactly its own (the
 * wrapper closes fd 3 for the program, subprocess' close_fds default). The exit code is the program's; a program
 * ended by a signal is reported with that signal.
 *
 *   const r = await cosctlPeak(host, ['upgrade', '--no-verify', '--image', ref]);
 *   r.code, r.stderr, r.peakKb
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import type { CosHost } from './cos-host.ts';
import { cosctlInvocation, type CliResult } from './cosctl.ts';

const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** Runs argv[1:], then writes "<peak KiB> <returncode> <wall ms>" to fd 3 and exits with the child's code (128+N for signal N). */
const WRAPPER = [
  'import os, resource, subprocess, sys, time',
  't0 = time.monotonic()',
  'r = subprocess.run(sys.argv[1:])',
  'ms = (time.monotonic() - t0) * 1000',
  'peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss',
  "os.write(3, ('%d %d %.3f\\n' % (peak, r.returncode, ms)).encode())",
  'sys.exit(r.returncode if r.returncode >= 0 else 128 - r.returncode)',
].join('\n');

export interface PeakResult extends CliResult {
  /** The peak RSS of the program (and of the descendants it waited for), KiB. */
  peakKb: number;
  /**
   * Wall time of the program itself, ms: from the wrapper's spawn of it to its exit, as the wrapper's monotonic clock
   * reads it (the wrapper's own start, about 40 ms of python3, is not the program's).
   */
  ms: number;
}

export interface PeakOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Bytes to write to the program's stdin (else it reads EOF). */
  input?: Buffer | string;
  /** Kill the wrapper and the program (SIGKILL to its process group) after this many ms. Default 5 minutes. */
  timeoutMs?: number;
}

const signalName = (n: number): NodeJS.Signals | null =>
  (Object.entries(constants.signals).find(([, v]) => v === n)?.[0] as NodeJS.Signals | undefined) ?? null;

/** Run `argv` (an argv array, no shell) under the wrapper; resolves with its output, exit code and peak RSS. */
export function runWithPeakRss(argv: readonly string[], opts: PeakOptions = {}): Promise<PeakResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, ['-c', WRAPPER, ...argv], {
      env: opts.env ?? process.env,
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      detached: true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const report: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    const fd3 = child.stdio[3] as NodeJS.ReadableStream;
    fd3.on('data', (b: Buffer) => report.push(b));
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(opts.input ?? '');
    const timer = setTimeout(() => {
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        // gone already
      }
    }, opts.timeoutMs ?? 300_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const [peak, rc, ms] = Buffer.concat(report).toString('utf8').trim().split(' ').map(Number);
      if (peak === undefined || Number.isNaN(peak) || rc === undefined || Number.isNaN(rc) || ms === undefined || Number.isNaN(ms)) {
        reject(new Error(`the peak-RSS wrapper reported nothing (exit ${code}, signal ${signal}): ${Buffer.concat(err).toString('utf8').slice(-2000)}`));
        return;
      }
      resolve({
        code: rc < 0 ? 128 - rc : rc,
        signal: rc < 0 ? signalName(-rc) : null,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        peakKb: peak,
        ms,
      });
    });
  });
}

/**
 * The real cosctl (bin/cosctl.js on the pinned Node) against `host`, as test/helpers/cosctl.ts cosctl() runs it
 * (same argv, environment and test seams; `uid` through setpriv with the small environment), under the wrapper.
 */
export function cosctlPeak(host: CosHost, args: readonly string[], env: Record<string, string> = {}, opts: { uid?: number; input?: string } = {}): Promise<PeakResult> {
  const { argv, env: childEnv, cwd } = cosctlInvocation(host, args, env, opts.uid);
  return runWithPeakRss(argv, { env: childEnv, ...(cwd !== undefined ? { cwd } : {}), ...(opts.input !== undefined ? { input: opts.input } : {}) });
}

/** The peak RSS so far of a running process (VmHWM of /proc/<pid>/status), KiB; undefined when it is gone. */
export async function vmHwmKb(pid: number): Promise<number | undefined> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  return m?.[1] !== undefined ? Number(m[1]) : undefined;
}
