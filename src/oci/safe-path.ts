/**
 * PURE helpers that keep a layer unpack inside its target directory (no I/O here; callers inject lookups).
 *
 * - Entry names are normalised lexically: a leading `./` is dropped, `.` and empty components vanish, `a/../b` is `b`.
 *   An absolute name (`/etc/x`), a name that leaves the root (`../x`, `a/../../x`) or one holding a NUL byte is refused
 *   with AgentError('UNPACK_UNSAFE') naming the entry.
 * - Directories along an entry's path are resolved like umoci/containerd's securejoin: a symlink met on the way is
 *   followed INSIDE the root (an absolute link target starts again at the root, `..` stops at the root), so
 *   `lib -> usr/lib` then `lib/x` lands in `usr/lib/x`, and `evil -> /` then `evil/etc/passwd` lands in the target's
 *   `etc/passwd`. More than MAX_LINKS links on one walk is a loop: UNPACK_UNSAFE.
 * - Whiteout names (`.wh.<name>`, `.wh..wh..opq`), PAX extended-header records (kept as raw bytes, since xattr
 *   values are binary) and the `setfattr --restore` script (every byte that could end a line or a field is
 *   \ooo-quoted, so no file name can inject a `# file:` line that points outside the target).
 */
import { AgentError } from '../model/errors.ts';

/** Linux follows at most 40 symlinks in one lookup (MAXSYMLINKS); we allow the same. */
export const MAX_LINKS = 40;

const show = (s: string): string => JSON.stringify(s);

/**
 * The components of a tar entry name relative to the layer root (`[]` is the root itself).
 * Throws AgentError('UNPACK_UNSAFE') for absolute names, names leaving the root and NUL bytes.
 */
export function normaliseEntryName(name: string, what = 'tar entry'): string[] {
  if (name.includes('\0')) throw new AgentError('UNPACK_UNSAFE', `${what} ${show(name)} contains a NUL byte`);
  if (name.startsWith('/')) throw new AgentError('UNPACK_UNSAFE', `${what} ${show(name)} is an absolute path`);
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) throw new AgentError('UNPACK_UNSAFE', `${what} ${show(name)} leaves the root of the layer`);
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out;
}

/** What a lookup found at a path (relative to the root) while resolving. */
export type NodeKind =
  | { readonly kind: 'dir' }
  | { readonly kind: 'missing' }
  | { readonly kind: 'symlink'; readonly target: string }
  | { readonly kind: 'other' };

export interface Resolved {
  /** The real path below the root, as components; every existing one is a directory, never a symlink. */
  readonly parts: string[];
  /** Index of the first component that does not exist yet (all later ones are missing too); -1 if all exist. */
  readonly missingFrom: number;
}

/**
 * Resolve `relative` (components, may hold `..`) against the real directory `start` (components below the root),
 * following every symlink met INSIDE the root, like securejoin: an absolute link target restarts at the root and
 * `..` never climbs above it. Each component must be a directory (or a symlink to one); a missing component is kept
 * as a plain name, so the caller can create it. `lookup` reports what is at a real path (parts below the root).
 * Throws AgentError('UNPACK_UNSAFE') on a symlink loop, AgentError('UNPACK_FAILED') when a component is not a
 * directory; both name `what` (the tar entry).
 */
export function resolveInRoot(
  start: readonly string[],
  relative: readonly string[],
  lookup: (parts: readonly string[]) => NodeKind,
  what: string,
): Resolved {
  const cur = [...start];
  let missingFrom = -1;
  // A stack of pending components, last element first in line (so a link's target can be pushed in front cheaply).
  const pending = [...relative].reverse();
  let links = 0;
  while (pending.length > 0) {
    const c = pending.pop() as string;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (cur.length > 0) cur.pop();
      if (missingFrom >= cur.length) missingFrom = -1;
      continue;
    }
    cur.push(c);
    if (missingFrom >= 0) continue;
    const node = lookup(cur);
    switch (node.kind) {
      case 'dir':
        break;
      case 'missing':
        missingFrom = cur.length - 1;
        break;
      case 'symlink': {
        if (++links > MAX_LINKS) {
          throw new AgentError('UNPACK_UNSAFE', `${what}: too many levels of symbolic links (ELOOP) at ${show(cur.join('/'))}`);
        }
        cur.pop();
        if (node.target.startsWith('/')) cur.length = 0;
        const linkParts = node.target.split('/');
        for (let i = linkParts.length - 1; i >= 0; i--) pending.push(linkParts[i] as string);
        break;
      }
      case 'other':
        throw new AgentError('UNPACK_FAILED', `${what}: ${show(cur.join('/'))} is not a directory (ENOTDIR)`);
    }
  }
  return { parts: cur, missingFrom };
}

export type Whiteout = { readonly kind: 'opaque' } | { readonly kind: 'remove'; readonly name: string } | { readonly kind: 'meta' };

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';

/**
 * Classify a base name: `.wh..wh..opq` is an opaque whiteout of its directory, other `.wh..wh.*` names are AUFS
 * metadata (ignored, as Docker/containerd do), `.wh.<name>` removes `<name>`, anything else is null.
 * `.wh.`, `.wh..` and `.wh...` would remove the directory or its parent: UNPACK_UNSAFE.
 */
export function parseWhiteout(base: string, entry: string): Whiteout | null {
  if (!base.startsWith(WHITEOUT_PREFIX)) return null;
  if (base === OPAQUE_WHITEOUT) return { kind: 'opaque' };
  if (base.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) return { kind: 'meta' };
  const name = base.slice(WHITEOUT_PREFIX.length);
  if (name === '' || name === '.' || name === '..') {
    throw new AgentError('UNPACK_UNSAFE', `whiteout ${show(entry)} names no file inside its directory`);
  }
  return { kind: 'remove', name };
}

/**
 * Parse a PAX extended header ("%d %s=%s\n" records). Values stay raw bytes (xattr values are binary); keys are
 * UTF-8. Parsing stops at the first malformed record, as tar-stream does.
 */
export function parsePaxRecords(buf: Uint8Array): Map<string, Buffer> {
  const data = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    const sp = data.indexOf(0x20, pos);
    if (sp < 0) break;
    const len = Number.parseInt(data.toString('latin1', pos, sp), 10);
    if (!Number.isSafeInteger(len) || len <= sp - pos + 1 || pos + len > data.length) break;
    const end = pos + len - 1; // the record ends with '\n'
    if (data[end] !== 0x0a) break;
    const eq = data.indexOf(0x3d, sp + 1);
    if (eq < 0 || eq >= end) break;
    out.set(data.toString('utf8', sp + 1, eq), Buffer.from(data.subarray(eq + 1, end)));
    pos += len;
  }
  return out;
}

export const PAX_XATTR_PREFIX = 'SCHILY.xattr.';

/** The extended attributes carried by PAX records (`SCHILY.xattr.<name>` = raw value), in record order. */
export function paxXattrs(records: ReadonlyMap<string, Buffer>): Array<[string, Buffer]> {
  const out: Array<[string, Buffer]> = [];
  for (const [k, v] of records) {
    if (k.startsWith(PAX_XATTR_PREFIX) && k.length > PAX_XATTR_PREFIX.length) out.push([k.slice(PAX_XATTR_PREFIX.length), v]);
  }
  return out;
}

/** Quote like attr's quote(): every byte outside printable ASCII, and `\` and `=`, becomes `\ooo`. */
export function quoteDumpField(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    if (b <= 0x20 || b >= 0x7f || b === 0x5c || b === 0x3d) out += `\\${b.toString(8).padStart(3, '0')}`;
    else out += String.fromCharCode(b);
  }
  return out;
}

export interface XattrSet {
  /** Absolute path of the file (already resolved inside the target). */
  readonly path: string;
  readonly attrs: ReadonlyArray<readonly [string, Buffer]>;
}

/**
 * A `setfattr --restore=-` script in `getfattr --dump -e hex` format: `# file: <path>` then `name=0x<hex>` lines
 * and a blank line per file. Paths and names are quoted so they cannot break a line; values are hex (binary-exact).
 */
export function xattrRestoreScript(sets: Iterable<XattrSet>): Buffer {
  const lines: string[] = [];
  for (const s of sets) {
    if (s.attrs.length === 0) continue;
    lines.push(`# file: ${quoteDumpField(s.path)}`);
    for (const [name, value] of s.attrs) lines.push(`${quoteDumpField(name)}=0x${value.toString('hex')}`);
    lines.push('');
  }
  return Buffer.from(lines.length > 0 ? `${lines.join('\n')}\n` : '', 'utf8');
}
