/**
 * Paths inside the root prefix (yip.md: every file a cloud-config names is under the root): each symlink is followed
 * inside the root, an absolute link restarting at the root, `..` stopping there. With `--root DIR` (or the chroot of
 * an image being upgraded to) nothing outside DIR is reached through a link.
 */
import { lstatSync, readlinkSync } from 'node:fs';
import type { SysRoot } from '../sys/root.ts';

const MAX_LINKS = 40;

/**
 * The real host path of `hostPath` inside the root: every symlink followed inside it. With `found`, whether the path
 * exists is set there too (what an lstat of the result would say, without doing it again).
 */
export function resolveInRootSync(root: SysRoot, hostPath: string, found?: { exists: boolean }): string {
  const parts = hostPath.split('/').filter((p) => p !== '' && p !== '.');
  const done: string[] = [];
  let links = 0;
  // What the lstat of the last name said (null: the path ends in `..` or is the root, so it was not looked at).
  let last: { exists: boolean } | null = null;
  while (parts.length > 0) {
    const part = parts.shift() as string;
    if (part === '..') {
      done.pop();
      last = null;
      continue;
    }
    const here = root.path(`/${[...done, part].join('/')}`);
    // Synchronous: a few microseconds each, where a thread-pool round trip per path component made the engine's
    // own time grow with the host's load (bench/yip.ts).
    const st = lstatSync(here, { throwIfNoEntry: false });
    last = { exists: st !== undefined };
    if (st?.isSymbolicLink() === true) {
      if (++links > MAX_LINKS) throw new Error(`too many symlinks resolving ${hostPath}`);
      const target = readlinkSync(here);
      if (target.startsWith('/')) done.length = 0;
      parts.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
      continue;
    }
    done.push(part);
  }
  const real = root.path(`/${done.join('/')}`);
  if (found !== undefined) found.exists = last?.exists ?? lstatSync(real, { throwIfNoEntry: false }) !== undefined;
  return real;
}

/** resolveInRootSync as a promise (a link loop rejects). */
export function resolveInRoot(root: SysRoot, hostPath: string): Promise<string> {
  try {
    return Promise.resolve(resolveInRootSync(root, hostPath));
  } catch (e) {
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
}

/**
 * `hostPath` resolved inside the root when its parent's real path is known already (`parentReal`, from
 * resolveInRootSync of the parent): one lstat of the last name instead of one per component; a link there is
 * followed through resolveInRootSync as always.
 */
export function resolveChildSync(root: SysRoot, parentReal: string, hostPath: string): string {
  const base = hostPath.slice(hostPath.lastIndexOf('/') + 1);
  if (base === '' || base === '.' || base === '..') return resolveInRootSync(root, hostPath);
  const candidate = parentReal.endsWith('/') ? `${parentReal}${base}` : `${parentReal}/${base}`;
  return lstatSync(candidate, { throwIfNoEntry: false })?.isSymbolicLink() === true ? resolveInRootSync(root, hostPath) : candidate;
}
