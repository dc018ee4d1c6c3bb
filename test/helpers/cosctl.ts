/** Test helper: runs the real cosctl (bin/cosctl.js on the pinned Node) against a cOS host fixture. */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createCosHost, type CosHost, type CosHostOptions } from './cos-host.ts';
import type { HostStatusDocument } from '../../src/model/host.ts';

const BIN = fileURLToPath(new URL('../../bin/cosctl.js', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The signal that ended cosctl (a crash test's SIGKILL), else null. */
  signal: NodeJS.Signals | null;
}

export interface CosctlOptions {
  /**
   * Run cosctl as this uid (gid the same, no supplementary groups) through `setpriv`, with the small environment
   * asUser() in test/helpers/dbus.ts gives its callers (PATH, HOME=/nonexistent, cwd /) plus the host's test seams
   * and `env`: nothing of the root test process leaks in.
   */
  uid?: number;
  /**
   * Run cosctl under a pseudo-terminal (util-linux `script -qfec CMD /dev/null`, each argument shell-quoted), so
   * its stdout is a TTY. Everything it writes (stderr too) arrives on `stdout`, with the terminal's CRLF line ends;
   * `code` is cosctl's own exit code (`script -e`).
   */
  tty?: boolean;
}

/** A shell word that stands for `s` exactly (single quotes; an embedded quote closes, escapes and reopens). */
function shellQuote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

/**
 * How the tests run the real cosctl on `host`: argv (bin/cosctl.js on the pinned Node, through setpriv with a small
 * environment when `uid` is given), environment (the host's test seams, a short registry backoff) and cwd.
 */
export function cosctlInvocation(host: CosHost, args: readonly string[], env: Record<string, string> = {}, uid?: number): { argv: string[]; env: Record<string, string | undefined>; cwd: string | undefined } {
  const argv = [process.execPath, BIN, '--root', host.root, ...args];
  if (uid === undefined) return { argv, env: { ...process.env, ...host.env, HOME: host.root, AGENT_TEST_REGISTRY_RETRY_MS: '20', ...env }, cwd: undefined };
  return {
    argv: ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', ...argv],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent', ...host.env, AGENT_TEST_REGISTRY_RETRY_MS: '20', ...env },
    cwd: '/',
  };
}

export function cosctl(host: CosHost, args: readonly string[], env: Record<string, string> = {}, opts: CosctlOptions = {}): Promise<CliResult> {
  const inv = cosctlInvocation(host, args, env, opts.uid);
  let argv = inv.argv;
  let childEnv = inv.env;
  const cwd = inv.cwd;
  if (opts.tty === true) {
    argv = ['script', '-qfec', argv.map(shellQuote).join(' '), '/dev/null'];
    childEnv = { ...childEnv, SHELL: '/bin/sh' };
  }
  const [file, ...rest] = argv as [string, ...string[]];
  return new Promise((resolve) => {
    const child = execFile(file, rest, {
      env: childEnv,
      maxBuffer: 16 << 20,
      ...(cwd !== undefined ? { cwd } : {}),
    }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      const signal = err ? ((err as { signal?: NodeJS.Signals | null }).signal ?? null) : null;
      resolve({ code, stdout, stderr, signal });
    });
    // Under a pty, `script` forwards its stdin to the terminal: give it none (EOF) rather than an open pipe.
    if (opts.tty === true) child.stdin?.end();
  });
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** `cat` a file inside an ext2 image without mounting it (debugfs). */
export function imageCat(image: string, file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('debugfs', ['-R', `cat ${file}`, image], { maxBuffer: 16 << 20 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
}

/** The filesystem label of an image file (blkid probing). */
export function imageLabel(image: string): Promise<string> {
  return new Promise((resolve) => {
    execFile('blkid', ['-p', '-s', 'LABEL', '-o', 'value', image], (err, stdout) => resolve(err ? '' : stdout.trim()));
  });
}

/** `grub-editenv FILE list` as a map. */
export function grubList(file: string): Promise<Map<string, string>> {
  return new Promise((resolve, reject) => {
    execFile('grub-editenv', [file, 'list'], (err, stdout) => {
      if (err) return reject(err);
      const m = new Map<string, string>();
      for (const line of stdout.split('\n')) {
        const i = line.indexOf('=');
        if (i > 0) m.set(line.slice(0, i), line.slice(i + 1));
      }
      resolve(m);
    });
  });
}

/** Mount options of the mount at `dir` (from /proc/self/mountinfo via findmnt). */
export function mountOptions(dir: string): Promise<string[]> {
  return new Promise((resolve) => {
    execFile('findmnt', ['-n', '-o', 'OPTIONS', '--mountpoint', dir], (err, stdout) => resolve(err ? [] : stdout.trim().split(',')));
  });
}

/** `cosctl status --json` on the host, parsed; a failing status throws with its stderr. */
export async function cosStatus(host: CosHost, env: Record<string, string> = {}): Promise<HostStatusDocument> {
  const r = await cosctl(host, ['status', '--json'], env);
  if (r.code !== 0) throw new Error(`status failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as HostStatusDocument;
}

/** The small slot images the integration tests stage (DEFAULT_IMAGE_SIZE=48 in /etc/cos/config). */
export const SMALL_SLOTS: Record<string, string> = { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' };

/** A cOS host with SMALL_SLOTS (plus `opts.files`), closed when the test ends. */
export async function testHost(t: { teardown: (fn: () => Promise<void>) => void }, opts: CosHostOptions = {}): Promise<CosHost> {
  const host = await createCosHost({ ...opts, files: { ...SMALL_SLOTS, ...opts.files } });
  t.teardown(() => host.close());
  return host;
}

/** What a refused upgrade must leave as it was: the slot files, their bytes and labels, the GRUB blocks, COS_STATE ro. */
export interface SlotSnapshot { files: string[]; active: string; passive: string; labels: string[]; grub: string[]; ro: boolean }

export async function slotSnapshot(host: CosHost): Promise<SlotSnapshot> {
  return {
    files: (await readdir(host.statePath('cOS'))).sort(),
    active: await sha256File(host.statePath('cOS/active.img')),
    passive: await sha256File(host.statePath('cOS/passive.img')),
    labels: [await imageLabel(host.statePath('cOS/active.img')), await imageLabel(host.statePath('cOS/passive.img'))],
    grub: [await sha256File(host.statePath('grub_oem_env')), await sha256File(host.statePath('boot_assessment'))],
    ro: (await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'),
  };
}

/** COS_STATE is mounted read-only at /run/initramfs/cos-state: rw just for `fn`, as GRUB's save_env or cOS's boot stage would write it. */
export async function withStateRw<T>(host: CosHost, fn: () => Promise<T>): Promise<T> {
  const mnt = path.join(host.root, 'run/initramfs/cos-state');
  await promisify(execFile)('mount', ['-o', 'remount,rw', mnt]);
  try {
    return await fn();
  } finally {
    await promisify(execFile)('mount', ['-o', 'remount,ro', mnt]);
  }
}
