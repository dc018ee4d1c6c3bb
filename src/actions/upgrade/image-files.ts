/**
 * Files and directories of the new image, touched only inside its root (issue 9: hostile images). image-path.ts
 * decides, from lstat answers, where a path leads inside the image; this module does the I/O:
 *
 * - readImageFile: a bounded read of one regular file, resolved inside the image (absolute links from the image root,
 *   `..` clamped at it, at most MAX_LINKS links). Only a regular file on the image's own filesystem is read: it is
 *   opened O_NOFOLLOW|O_NONBLOCK at its resolved real path (a FIFO swapped in cannot block the open, a symlink swapped
 *   in fails it) and checked again with fstat; FIFOs, devices, sockets and directories are refused without opening;
 *   at most `maxBytes` are read.
 * - readImageOsRelease: /etc/os-release, else /usr/lib/os-release when (and only when) it is missing, as systemd does.
 * - ensureImageDir / verifiedImageDir: a directory the agent creates or mounts on, checked component by component
 *   with lstat before acting (planImageDir), created with mkdir (which never follows a link), its mode set through a
 *   descriptor opened O_DIRECTORY|O_NOFOLLOW.
 */
import fs from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../model/errors.ts';
import type { Logger } from '../../sys/log.ts';
import { followInImage, planImageDir, type ImageLookup, type ImageNode } from './image-path.ts';

/** os-release is a few hundred bytes; anything over this is not read. */
export const OS_RELEASE_MAX_BYTES: number = 64 * 1024;

/** Where systemd looks for os-release, in order (os-release(5)). */
export const OS_RELEASE_FILES: readonly string[] = ['etc/os-release', 'usr/lib/os-release'];

const show = (s: string): string => JSON.stringify(s);

function typeOf(st: fs.Stats): string {
  if (st.isFIFO()) return 'FIFO';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  if (st.isSocket()) return 'socket';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symbolic link';
  return 'regular file';
}

/** lstat of a path below `root`, as image-path.ts wants it (never follows a symlink). */
export function imageLookup(root: string): ImageLookup {
  return (parts) => {
    const p = parts.length === 0 ? root : path.join(root, ...parts);
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(p, { throwIfNoEntry: false });
    } catch (e) {
      // ENOTDIR and the like: nothing there to follow.
      if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') return { kind: 'missing' };
      throw e;
    }
    if (st === undefined) return { kind: 'missing' };
    if (st.isDirectory()) return { kind: 'dir' };
    if (st.isFile()) return { kind: 'file' };
    if (st.isSymbolicLink()) return { kind: 'symlink', target: fs.readlinkSync(p, 'utf8') };
    return { kind: 'other', type: typeOf(st) } satisfies ImageNode;
  };
}

export type ImageFile =
  /** `real`: the path below the root it was read from (differs from the one asked for when links led there). */
  | { readonly kind: 'ok'; readonly data: Buffer; readonly real: string }
  /** Not there (a dangling link counts as missing, as ENOENT would). */
  | { readonly kind: 'missing' }
  /** There, but not read: `reason` says why ("is a FIFO", "is larger than ..."). */
  | { readonly kind: 'refused'; readonly reason: string };

const O_READ_SAFE = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY; // libuv adds O_CLOEXEC

/**
 * Read the regular file `rel` of the image rooted at `root`, resolved inside it, at most `maxBytes` bytes (more is
 * refused, never read). Never blocks on a FIFO or device and never follows a link out of the image. I/O errors other
 * than "not there" are refusals too (the caller decides what a refusal means).
 */
export async function readImageFile(root: string, rel: string, maxBytes: number): Promise<ImageFile> {
  let where;
  try {
    where = followInImage(rel, imageLookup(root));
  } catch (e) {
    // An lstat or readlink that failed on the way (EACCES, ENAMETOOLONG): not read.
    return { kind: 'refused', reason: `could not be resolved: ${(e as NodeJS.ErrnoException).code ?? (e instanceof Error ? e.message : String(e))}` };
  }
  if (!where.ok) {
    return { kind: 'refused', reason: where.reason === 'loop' ? `has too many levels of symbolic links (at ${show(where.at)})` : `leads through ${show(where.at)}, which is not a directory` };
  }
  const real = where.parts.join('/');
  const via = real !== rel ? ` (resolved inside the image to ${show(real)})` : '';
  if (where.node.kind === 'missing') return { kind: 'missing' };
  if (where.node.kind === 'dir') return { kind: 'refused', reason: `is a directory${via}` };
  if (where.node.kind === 'other') return { kind: 'refused', reason: `is a ${where.node.type}${via}: only regular files are read` };
  let fh;
  try {
    fh = await open(path.join(root, ...where.parts), O_READ_SAFE);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'refused', reason: `could not be opened${via}: ${code ?? (e instanceof Error ? e.message : String(e))}` };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { kind: 'refused', reason: `is a ${typeOf(st)}${via}: only regular files are read` };
    // Defence in depth: nothing mounted inside the tree (a chroot bind left behind) may stand in for the image's file.
    const rootDev = fs.lstatSync(root).dev;
    if (st.dev !== rootDev) return { kind: 'refused', reason: `is not on the image's filesystem${via}` };
    if (st.size > maxBytes) return { kind: 'refused', reason: `is ${st.size} bytes${via}, more than the ${maxBytes} read at most` };
    // The size may change under us: read at most maxBytes + 1 to tell "too large" from "exactly the limit".
    const buf = Buffer.alloc(Math.min(maxBytes + 1, Math.max(st.size, 0) + 1));
    let got = 0;
    for (;;) {
      if (got === buf.length) break;
      const { bytesRead } = await fh.read(buf, got, buf.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got > maxBytes) return { kind: 'refused', reason: `is more than ${maxBytes} bytes${via}` };
    return { kind: 'ok', data: buf.subarray(0, got), real };
  } catch (e) {
    return { kind: 'refused', reason: `could not be read${via}: ${(e as NodeJS.ErrnoException).code ?? (e instanceof Error ? e.message : String(e))}` };
  } finally {
    await fh.close();
  }
}

export interface ImageOsRelease {
  /** The text read (null: none could be read). */
  text: string | null;
  /** Which file it came from, or the one refused (null: neither exists). */
  file: string | null;
  /** Why an os-release that exists was not read (the version of the image is then unknown). */
  warnings: string[];
}

/**
 * The image's os-release: etc/os-release, or usr/lib/os-release when etc/os-release does not exist (a dangling link
 * counts as missing), as systemd reads it; both inside the image. One that exists but is not a regular file, is too
 * large, loops or cannot be read is not read (a warning says why), and usr/lib/os-release is not tried in its place.
 */
export async function readImageOsRelease(root: string): Promise<ImageOsRelease> {
  for (const rel of OS_RELEASE_FILES) {
    const r = await readImageFile(root, rel, OS_RELEASE_MAX_BYTES);
    if (r.kind === 'missing') continue;
    if (r.kind === 'refused') {
      return { text: null, file: rel, warnings: [`the new image's /${rel} ${r.reason}: not read, so the image's version and GRUB entry name are unknown`] };
    }
    return { text: r.data.toString('utf8'), file: rel, warnings: [] };
  }
  return { text: null, file: null, warnings: [] };
}

function chmodNoFollow(dir: string, mode: number): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  try {
    fs.fchmodSync(fd, mode);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Make `rel` a real directory of the image at `root` without ever following a symlink (planImageDir decides; its
 * UNPACK_UNSAFE refusals are thrown). Missing components are created (the new ones get `mode`, their parents 0755);
 * a dangling or escaping symlink in the last place is replaced by a directory (logged). `chmodExisting`: also set
 * `mode` when the directory was already there. Returns the absolute path, every component of it a real directory.
 */
export function ensureImageDir(root: string, rel: string, opts: { mode: number; chmodExisting?: boolean; log?: Logger }): string {
  const lookup = imageLookup(root);
  const plan = planImageDir(rel, lookup);
  const abs = path.join(root, ...plan.parts);
  if (plan.action === 'ok') {
    if (opts.chmodExisting === true) chmodNoFollow(abs, opts.mode);
    return abs;
  }
  let from = plan.parts.length - 1;
  if (plan.action === 'replace') {
    opts.log?.warn({ entry: rel, target: plan.target }, 'the new image has a symbolic link where a directory belongs (a mount point): replaced by a directory');
    // unlink removes the link itself; its parents were checked to be real directories.
    fs.unlinkSync(abs);
  } else {
    from = plan.from;
  }
  for (let i = from; i < plan.parts.length; i++) {
    const p = path.join(root, ...plan.parts.slice(0, i + 1));
    fs.mkdirSync(p, 0o755);
    chmodNoFollow(p, i === plan.parts.length - 1 ? opts.mode : 0o755);
  }
  return verifiedImageDir(root, rel);
}

/**
 * The absolute path of `rel` in the image at `root` after checking, component by component with lstat, that every
 * one is a real directory (nothing is created or replaced): what a mount may be given. Throws UNPACK_UNSAFE otherwise.
 */
export function verifiedImageDir(root: string, rel: string): string {
  const plan = planImageDir(rel, imageLookup(root));
  if (plan.action !== 'ok') {
    // planImageDir refuses what must not be followed; a missing or replaceable entry here means it changed under us.
    const entry = plan.action === 'create' ? plan.parts.slice(0, plan.from + 1).join('/') : rel;
    throw new AgentError('UNPACK_UNSAFE', `the image's ${show(entry)} is no longer a directory: nothing is mounted on ${show(rel)}`);
  }
  return path.join(root, ...plan.parts);
}
