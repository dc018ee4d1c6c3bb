/**
 * Mounting and unmounting through the Runner (`mount`, `umount`), reading the mount table, and finding where a block
 * device is mounted.
 */
import { realpathSync, statSync } from 'node:fs';
import { mkdir, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, CommandError } from '../model/errors.ts';
import type { Runner } from '../sys/runner.ts';
import { attachLoop, loopBackingFile, waitForDetach } from './loop.ts';
import { parseMountInfo, type MountInfo } from './mountinfo.ts';
import { onceCloser } from './once.ts';

export interface Mount {
  readonly target: string;
  /** Unmount (retrying once when busy). Idempotent. */
  close(): Promise<void>;
  /**
   * Image mounts (mountImage) only, after close(): resolves once the filesystem is mounted nowhere, its loop device
   * detached, so nothing will write to the image any more. A mount namespace made while it was mounted (`unshare
   * --mount` with private propagation, a container) keeps its own copy of the mount, which our unmount does not
   * reach: the filesystem stays live there, and when that namespace ends it writes its superblock back over whatever
   * was done to the image since (a label, an fsck). Throws MOUNT_FAILED naming the processes that hold it.
   */
  released?(opts?: { timeoutMs?: number }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** How long released() waits for the loop device of an unmounted image to detach (a probe may hold it a moment). */
const RELEASE_TIMEOUT_MS = 10_000;

/** Delay before the single retry of a busy unmount. */
const BUSY_RETRY_MS = 300;

function tail(err: unknown): string {
  if (err instanceof CommandError) return err.stderrTail.trim().split('\n').slice(-3).join(' | ');
  return err instanceof Error ? err.message : String(err);
}

function isBusy(err: unknown): boolean {
  return err instanceof CommandError && /busy/i.test(err.stderrTail);
}

function isNotMounted(err: unknown): boolean {
  return err instanceof CommandError && /not mounted|no mount point specified/i.test(err.stderrTail);
}

/** Run `umount target`; one retry after a short delay when the target is busy. "not mounted" counts as done. */
export async function unmount(runner: Runner, target: string, opts: { lazy?: boolean } = {}): Promise<void> {
  const argv = ['umount', ...(opts.lazy ? ['-l'] : []), target];
  for (let attempt = 0; ; attempt++) {
    try {
      await runner.run({ argv, description: `unmounting ${target}` });
      return;
    } catch (err) {
      if (isNotMounted(err)) return;
      if (attempt === 0 && isBusy(err)) {
        await sleep(BUSY_RETRY_MS);
        continue;
      }
      throw new AgentError('MOUNT_FAILED', `unmounting ${target} failed: ${tail(err)}`, { cause: err });
    }
  }
}

function makeMount(target: string, close: () => Promise<void>): Mount {
  return { target, close, [Symbol.asyncDispose]: close };
}

/** `mount [-t fstype] [-o options] source target`. Failure -> AgentError('MOUNT_FAILED') naming source and target. */
export async function mount(
  runner: Runner,
  source: string,
  target: string,
  opts: { fstype?: string; options?: readonly string[]; mkdir?: boolean } = {},
): Promise<Mount> {
  if (opts.mkdir) await mkdir(target, { recursive: true });
  const argv = ['mount'];
  if (opts.fstype !== undefined) argv.push('-t', opts.fstype);
  if (opts.options !== undefined && opts.options.length > 0) argv.push('-o', opts.options.join(','));
  argv.push(source, target);
  try {
    await runner.run({ argv, description: `mounting ${source} on ${target}` });
  } catch (err) {
    throw new AgentError('MOUNT_FAILED', `mounting ${source} on ${target} failed: ${tail(err)}`, { cause: err });
  }
  return makeMount(target, onceCloser(() => unmount(runner, target)));
}

/** `mount -o remount,<mode> target`. Failure -> AgentError('MOUNT_FAILED'). */
export async function remount(runner: Runner, target: string, mode: 'ro' | 'rw'): Promise<void> {
  try {
    await runner.run({ argv: ['mount', '-o', `remount,${mode}`, target], description: `remounting ${target} ${mode}` });
  } catch (err) {
    throw new AgentError('MOUNT_FAILED', `remounting ${target} ${mode} failed: ${tail(err)}`, { cause: err });
  }
}

/** Attach `file` to a loop device and mount it at `target`; close() unmounts and detaches. */
export async function mountImage(
  runner: Runner,
  file: string,
  target: string,
  opts: { readOnly?: boolean; fstype?: string } = {},
): Promise<Mount> {
  const loop = await attachLoop(runner, file, { readOnly: opts.readOnly ?? false });
  let m: Mount;
  try {
    const mountOpts: { fstype?: string; options?: readonly string[] } = { options: opts.readOnly ? ['ro'] : [] };
    if (opts.fstype !== undefined) mountOpts.fstype = opts.fstype;
    m = await mount(runner, loop.device, target, mountOpts);
  } catch (err) {
    await loop.close().catch(() => {});
    throw err;
  }
  const backing = await loopBackingFile(loop.device).catch(() => undefined);
  const closed = makeMount(
    target,
    onceCloser(async () => {
      await m.close();
      await loop.close();
    }),
  );
  return {
    ...closed,
    async released(opts = {}) {
      if (await waitForDetach(loop.device, backing, opts.timeoutMs ?? RELEASE_TIMEOUT_MS)) return;
      const holders = await mountHolders(loop.device);
      throw new AgentError('MOUNT_FAILED', `${file} is still in use through ${loop.device} after it was unmounted` +
        (holders.length > 0
          ? `: mounted in the mount namespace of ${holders.slice(0, 5).map((h) => `pid ${h.pid} (${h.comm})`).join(', ')}${holders.length > 5 ? ` and ${holders.length - 5} more` : ''}, made while it was mounted here; the image is not sealed, since that mount would write over it later`
          : ' (held open); the image is not sealed'));
    },
  };
}

/**
 * Processes whose mount namespace has `device` mounted (from every /proc/PID/mountinfo): one per namespace, the
 * lowest pid. Unreadable entries (a process gone meanwhile) are skipped.
 */
export async function mountHolders(device: string): Promise<Array<{ pid: number; comm: string }>> {
  let id: string;
  try {
    const st = statSync(device);
    id = `${Math.floor(st.rdev / 256) & 0xfff}:${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}`;
  } catch {
    return [];
  }
  const seen = new Map<string, { pid: number; comm: string }>();
  const pids = (await readdir('/proc').catch(() => [] as string[])).filter((n) => /^\d+$/.test(n)).map(Number).sort((a, b) => a - b);
  for (const pid of pids) {
    const info = await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => '');
    if (!parseMountInfo(info).some((m) => m.majorMinor === id || m.source === device)) continue;
    const ns = await readlink(`/proc/${pid}/ns/mnt`).catch(() => String(pid));
    if (seen.has(ns)) continue;
    seen.set(ns, { pid, comm: (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim() });
  }
  return [...seen.values()];
}

/** The mount table of this process (/proc/self/mountinfo). */
export async function readMounts(): Promise<MountInfo[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

function deviceNumber(p: string): string | undefined {
  try {
    const st = statSync(p, { bigint: true });
    if (!st.isBlockDevice()) return undefined;
    const dev = st.rdev;
    const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
    const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
    return `${major}:${minor}`;
  } catch {
    return undefined;
  }
}

function resolve(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return path.normalize(p);
  }
}

/**
 * Where `device` is mounted: matched by the mount source after resolving symlinks (/dev/disk/by-label/X ->
 * /dev/loop0p4), or by major:minor when `device` is a block device node. A mount of the whole filesystem (root "/")
 * is preferred over bind mounts of a subdirectory; among equals, the first (oldest) mount wins.
 */
export function findMountOf(device: string, mounts: readonly MountInfo[]): MountInfo | undefined {
  const wanted = resolve(device);
  const devno = deviceNumber(wanted);
  const matches = mounts.filter((m) => {
    if (m.source === device || m.source === wanted) return true;
    if (m.source.startsWith('/') && resolve(m.source) === wanted) return true;
    return devno !== undefined && m.majorMinor === devno;
  });
  return matches.find((m) => m.root === '/') ?? matches[0];
}
