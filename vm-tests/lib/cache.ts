/**
 * VM-test helper: the build cache. Every artefact (kernel tree, initrd, GRUB EFI binary, debootstrap tarball, disk
 * image) lives under one directory, named `<kind>-<hash of its inputs>`, so a second run finds and reuses it and a
 * changed input (including the source of the module that builds it) produces a new entry.
 *
 * Directory: $COS_AGENT_VM_CACHE, default /var/tmp/cos-agent-vm. Builds are atomic (built under a temporary name,
 * then renamed) and serialised per entry with a lock file holding the builder's pid, so parallel test files wait for
 * one build instead of racing; a lock left by a dead process is taken over.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from './exec.ts';

export function cacheDir(): string {
  return process.env['COS_AGENT_VM_CACHE'] || '/var/tmp/cos-agent-vm';
}

/** A short stable hash of JSON-able inputs (objects are hashed with sorted keys). */
export function hashKey(...parts: unknown[]): string {
  const h = createHash('sha256');
  const canon = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canon);
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  h.update(JSON.stringify(canon(parts)));
  return h.digest('hex').slice(0, 16);
}

/** sha256 (hex) of a file's content, streamed. */
export async function fileHash(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The text of a source file of this library (its URL), so a code change invalidates what it built. */
export function sourceOf(url: string | URL): string {
  return readFileSync(new URL(url), 'utf8');
}

/**
 * Removes a build tree: first unmounts whatever is still mounted below it (debootstrap mounts /proc and /sys in its
 * target and leaves them when it is killed), then deletes without crossing filesystems.
 */
export async function removeTree(tree: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '));
  for (const m of mounts.filter((x) => x === tree || x.startsWith(`${tree}/`)).reverse()) {
    await run(['umount', '-l', m]).catch(() => undefined);
  }
  await run(['rm', '-rf', '--one-file-system', tree]);
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes `file` as a pid lock (O_EXCL); a lock whose pid is dead is taken over. Returns its release, or null if held. */
export async function tryLock(file: string): Promise<(() => Promise<void>) | null> {
  for (;;) {
    try {
      const fh = await open(file, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return () => rm(file, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const owner = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(owner) && owner > 0 && !alive(owner)) {
      await rm(file, { force: true });
      continue;
    }
    return null;
  }
}

async function lock(file: string, waitMs: number): Promise<() => Promise<void>> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const release = await tryLock(file);
    if (release) return release;
    if (Date.now() > deadline) throw new Error(`cache: ${file} still held by another process after ${waitMs} ms`);
    await sleep(500);
  }
}

/** Entries not used (cached() touches them) for this long are removed whenever a new entry is built. */
export const MAX_UNUSED_DAYS = 3;

async function pruneCache(dir: string): Promise<void> {
  const cutoff = Date.now() - MAX_UNUSED_DAYS * 86_400_000;
  for (const name of await readdir(dir)) {
    const p = path.join(dir, name);
    // work trees and half-built entries of processes that died
    const pid = /^(?:build-disk|tree-debootstrap)-(\d+)$/.exec(name)?.[1] ?? /\.tmp-(\d+)(?:\.d|\.cpio|\.cfg)?$/.exec(name)?.[1];
    if (pid !== undefined) {
      if (!alive(Number(pid))) await removeTree(p);
      continue;
    }
    if (!/^(kernel|initrd|grub|debootstrap|disk)-/.test(name) || name.endsWith('.lock')) continue;
    const st = await stat(p).catch(() => null);
    if (!st || st.mtimeMs >= cutoff) continue;
    const release = await tryLock(`${p}.lock`);
    if (!release) continue;
    try {
      await removeTree(p);
      process.stderr.write(`vm-cache: pruned ${name} (unused for ${MAX_UNUSED_DAYS} days)\n`);
    } finally {
      await release();
    }
  }
}

export interface CachedOptions {
  /** How long to wait for another process building the same entry. Default 20 minutes. */
  waitMs?: number;
  /** Progress line sink (default: stderr). */
  log?: (line: string) => void;
}

/**
 * Returns `<cacheDir>/<name>`, building it first when absent: `build(tmp)` must create `tmp` (a file or a
 * directory); it is renamed to the final name only when build resolves.
 */
export async function cached(name: string, build: (tmp: string) => Promise<void>, opts: CachedOptions = {}): Promise<string> {
  const dir = cacheDir();
  const final = path.join(dir, name);
  const now = new Date();
  if (await exists(final)) {
    await utimes(final, now, now).catch(() => {});
    return final;
  }
  await mkdir(dir, { recursive: true });
  const release = await lock(`${final}.lock`, opts.waitMs ?? 20 * 60_000);
  try {
    if (await exists(final)) return final;
    const tmp = `${final}.tmp-${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
    const t0 = Date.now();
    log(`vm-cache: building ${name}`);
    try {
      await build(tmp);
      await rename(tmp, final);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
    log(`vm-cache: built ${name} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await pruneCache(dir).catch(() => undefined);
    return final;
  } finally {
    await release();
  }
}
