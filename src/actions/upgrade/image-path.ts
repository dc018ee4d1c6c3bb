/**
 * PURE: paths inside the new image, resolved the way the image sees them and never the way the host does (issue 9).
 * The agent runs on the host, so the kernel resolves an absolute symlink in the image (`proc -> /proc`,
 * `etc/os-release -> /usr/lib/os-release`) against the HOST's root. Everything here resolves inside the image root
 * instead, from what an injected `lookup` (an lstat of one path below the root, never following) says; image-files.ts
 * does the I/O.
 *
 * - followInImage: reading a file. Every symlink is followed (the last component too) INSIDE the root: an absolute
 *   target restarts at the image root, `..` stops at it (like securejoin / openat2 RESOLVE_IN_ROOT), and more than
 *   MAX_LINKS links is a loop. The result is the real path below the root, whose components are all directories, and
 *   what is there (never a symlink).
 * - planImageDir: a directory the agent creates or mounts on (skeleton dirs, chroot bind targets). No component may
 *   be a symlink, so mkdir and mount never follow one:
 *   - a missing component is created (from there on);
 *   - every component but the last must already be a real directory when it exists: a symlink there (`usr ->
 *     /host/dir` for usr/local) or a file is UNPACK_UNSAFE naming it (replacing it would throw away the content the
 *     image keeps behind it);
 *   - the last component must be a real directory. A symlink that leads nowhere in the image (dangling, a loop such
 *     as `proc -> /proc`, or out of it: `proc -> /host/dir`, which the image cannot have meant for a mount point) is
 *     replaced by a real directory; a symlink to a directory of the image (`proc -> /etc`) is UNPACK_UNSAFE, since
 *     replacing it would change what the image means and following it would mount somewhere else than asked; a file,
 *     FIFO, device or socket is UNPACK_UNSAFE.
 */
import { AgentError } from '../../model/errors.ts';
import { MAX_LINKS } from '../../oci/safe-path.ts';

/** What is at one path below the image root, as lstat says (a symlink is not followed). */
export type ImageNode =
  | { readonly kind: 'dir' }
  | { readonly kind: 'file' }
  | { readonly kind: 'missing' }
  | { readonly kind: 'symlink'; readonly target: string }
  /** A FIFO, character device, block device or socket: `type` names it in messages. */
  | { readonly kind: 'other'; readonly type: string };

/** What is at `parts` (components below the image root; `[]` is the root itself). */
export type ImageLookup = (parts: readonly string[]) => ImageNode;

const show = (s: string): string => JSON.stringify(s);

/** The components of a relative path or link target: empty and `.` components dropped, `..` kept. */
export function splitImagePath(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}

export type Followed =
  | {
    readonly ok: true;
    /** The real path below the root: every component but the last is a directory, none is a symlink. */
    readonly parts: readonly string[];
    /** What is there (missing when any component along the way is missing). */
    readonly node: Exclude<ImageNode, { kind: 'symlink' }>;
    /** How many symlinks were followed. */
    readonly links: number;
  }
  | {
    readonly ok: false;
    /** `loop`: more than the allowed number of links (ELOOP); `not-a-directory`: a file on the way (ENOTDIR). */
    readonly reason: 'loop' | 'not-a-directory';
    /** The path below the root where it stopped. */
    readonly at: string;
  };

/**
 * Resolve `rel` (relative to the image root; a leading `/` means the same) inside the image: every symlink followed,
 * absolute targets from the image root, `..` clamped at it, at most `maxLinks` links. Never throws.
 */
export function followInImage(rel: string, lookup: ImageLookup, maxLinks: number = MAX_LINKS): Followed {
  const cur: string[] = [];
  // Pending components, the next one last (a link's target is pushed in front cheaply).
  const pending = splitImagePath(rel).reverse();
  let links = 0;
  let node: Exclude<ImageNode, { kind: 'symlink' }> = { kind: 'dir' };
  while (pending.length > 0) {
    const c = pending.pop() as string;
    if (c === '..') {
      // The parent of a directory met on the way: a directory (the root's parent is the root).
      cur.pop();
      node = { kind: 'dir' };
      continue;
    }
    cur.push(c);
    const found = lookup(cur);
    if (found.kind === 'symlink') {
      if (++links > maxLinks) return { ok: false, reason: 'loop', at: cur.join('/') };
      cur.pop();
      if (found.target.startsWith('/')) cur.length = 0;
      const target = splitImagePath(found.target);
      for (let i = target.length - 1; i >= 0; i--) pending.push(target[i] as string);
      node = { kind: 'dir' };
      continue;
    }
    node = found;
    if (pending.length === 0) break;
    if (found.kind === 'missing') return { ok: true, parts: cur, node: found, links };
    if (found.kind !== 'dir') return { ok: false, reason: 'not-a-directory', at: cur.join('/') };
  }
  return { ok: true, parts: cur, node, links };
}

export type DirPlan =
  /** Every component is a real directory. */
  | { readonly action: 'ok'; readonly parts: readonly string[] }
  /** Components from index `from` on are missing: create them (mkdir never follows, their parents are real). */
  | { readonly action: 'create'; readonly parts: readonly string[]; readonly from: number }
  /** The last component is a symlink leading nowhere in the image (`target`): remove it, create a directory. */
  | { readonly action: 'replace'; readonly parts: readonly string[]; readonly target: string };

/**
 * What to do so that `rel` (a fixed relative path like `usr/local`, without `..`) is a real directory of the image
 * with no symlink on the way; see the file comment. Throws AgentError('UNPACK_UNSAFE') naming the entry when the
 * image has something there that must not be followed nor replaced.
 */
export function planImageDir(rel: string, lookup: ImageLookup, maxLinks: number = MAX_LINKS): DirPlan {
  const parts = splitImagePath(rel);
  if (parts.includes('..')) throw new Error(`planImageDir wants a path without "..", got ${show(rel)}`);
  for (let i = 0; i < parts.length; i++) {
    const at = parts.slice(0, i + 1);
    const entry = at.join('/');
    const last = i === parts.length - 1;
    const node = lookup(at);
    switch (node.kind) {
      case 'dir':
        continue;
      case 'missing':
        return { action: 'create', parts, from: i };
      case 'symlink': {
        const link = `the image's ${show(entry)} is a symbolic link to ${show(node.target)}`;
        if (!last) {
          throw new AgentError('UNPACK_UNSAFE', `${link}: ${show(rel)} must be a directory inside the image, and it is not followed out of it`);
        }
        // Where the link leads inside the image (an absolute target from the image root, `..` clamped).
        const where = followInImage(node.target.startsWith('/') ? node.target : [...at.slice(0, -1), node.target].join('/'), lookup, maxLinks);
        if (where.ok && where.node.kind === 'dir') {
          throw new AgentError('UNPACK_UNSAFE', `${link} (the image's directory ${show(where.parts.join('/') || '/')}): ${show(rel)} is a mount point and must be a real directory, not a link`);
        }
        return { action: 'replace', parts, target: node.target };
      }
      case 'file':
      case 'other': {
        const what = node.kind === 'file' ? 'a regular file' : `a ${node.type}`;
        throw new AgentError('UNPACK_UNSAFE', `the image's ${show(entry)} is ${what}: ${show(rel)} must be a directory inside the image`);
      }
    }
  }
  return { action: 'ok', parts };
}
