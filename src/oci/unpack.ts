/**
 * Applies one OCI/Docker image layer (a compressed tar changeset) to a directory, streaming: the layer is
 * decompressed (zlib gunzip / zstd, or plain tar) and parsed (tar-stream) as it arrives, and every entry is written
 * straight into the target. Nothing is staged on disk.
 *
 * Semantics follow umoci's `raw unpack` (layer/tar_extract.go) and containerd's applier:
 * - An entry replaces what a lower layer left at its path (removed first, whatever its type), except a directory over
 *   a directory, which is merged (its metadata replaced, its content kept).
 * - Metadata: owner (lchown), mode incl. setuid/setgid/sticky (after the chown, which clears them), mtime/atime
 *   (lutimes), xattrs from PAX `SCHILY.xattr.*` records (binary-exact, all of a layer's in one
 *   `setfattr -h --restore=-` run at its end, after every chown, so `security.capability` survives). Hardlinks take no
 *   metadata of their own. Directory times are set at the end of the layer; a directory whose content this layer
 *   changes without listing it gets its previous times back (as umoci does).
 * - Whiteouts: `.wh.<name>` removes `<name>`, `.wh..wh..opq` empties its directory; neither removes what this same
 *   layer added (umoci's "upper paths"), so their order inside the layer does not matter. They are never created.
 * - Safety: see safe-path.ts. Every path operated on is `<target>/<real dirs>/<base>` where each real dir was checked
 *   to be a directory (not a symlink) below the target, and the final component is never followed.
 *
 * Node cannot create device nodes/fifos or set xattrs: those go through the Runner (`mknod`, `setfattr`).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { AgentError } from '../model/errors.ts';
import type { Runner } from '../sys/runner.ts';
import { createZstdFramesDecompress } from './zstd-frames.ts';
import {
  normaliseEntryName,
  parsePaxRecords,
  parseWhiteout,
  paxXattrs,
  resolveInRoot,
  xattrRestoreScript,
  type NodeKind,
  type XattrSet,
} from './safe-path.ts';

export interface UnpackOptions {
  /** Used only for what Node cannot do: `setfattr -h --restore=-` (once per layer) and `mknod` (devices, fifos). */
  runner: Runner;
  /** Progress: called with the total number of compressed bytes consumed so far in this layer (monotonic). */
  onBytes?: (compressedBytes: number) => void;
  /** Aborting rejects promptly with AgentError('STAGE_FAILED') named 'AbortError'. */
  signal?: AbortSignal;
}

export interface UnpackStats {
  /** Tar entries applied (PAX/GNU long-name headers are not entries). */
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  /** Character and block devices, and fifos. */
  devices: number;
  /** Whiteout entries (plain and opaque). */
  whiteouts: number;
  /** Bytes of regular-file content written. */
  bytesWritten: number;
}

export type LayerCompression = 'gzip' | 'zstd' | 'none';

const MEDIA_TYPES: ReadonlyMap<string, LayerCompression> = new Map<string, LayerCompression>([
  ['application/vnd.oci.image.layer.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.v1.tar+zstd', 'zstd'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+zstd', 'zstd'],
  ['application/vnd.docker.image.rootfs.diff.tar', 'none'],
  ['application/vnd.docker.image.rootfs.diff.tar.gzip', 'gzip'],
  ['application/vnd.docker.image.rootfs.diff.tar.zstd', 'zstd'],
  ['application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', 'gzip'],
]);

/** The compression a layer media type announces; AgentError('UNPACK_FAILED') naming an unknown media type. */
export function layerCompression(mediaType: string): LayerCompression {
  const bare = (mediaType.split(';')[0] ?? '').trim().toLowerCase();
  const c = MEDIA_TYPES.get(bare);
  if (c === undefined) throw new AgentError('UNPACK_FAILED', `unsupported layer media type ${JSON.stringify(mediaType)}`);
  return c;
}

/** What the first bytes of a blob look like: gzip (1f 8b), zstd (frame or skippable frame magic), else tar. */
export function sniffCompression(head: Buffer): LayerCompression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4) {
    const m = head.readUInt32LE(0);
    if (m === 0xfd2fb528 || (m & 0xfffffff0) === 0x184d2a50) return 'zstd';
  }
  return 'none';
}

/** Decompressed chunks handed to the tar parser: large ones, to keep per-chunk overhead low. */
const CHUNK = 256 * 1024;
/** How far decompression (on the libuv threadpool) may run ahead of the entries being written, per stage. */
const LOOKAHEAD = 1024 * 1024;

function errnoOf(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function abortError(signal: AbortSignal): AgentError {
  const err = new AgentError('STAGE_FAILED', 'unpacking the layer was aborted', { cause: signal.reason });
  err.name = 'AbortError';
  return err;
}

/** An error while applying entry `name`: unsafe/failed errors pass through, anything else becomes UNPACK_FAILED. */
function entryError(name: string, e: unknown): AgentError {
  if (e instanceof AgentError && (e.code === 'UNPACK_UNSAFE' || e.code === 'UNPACK_FAILED')) return e;
  if (e instanceof AgentError && e.name === 'AbortError') return e;
  // The cause first and bounded: an entry name (and the path Node's errno message repeats) may be thousands of bytes,
  // and a message trimmed in its middle must not lose what was wrong.
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const message = shortPaths(messageOf(e));
  const why = typeof code === 'string' && /^E[A-Z]+$/.test(code) && !message.startsWith(code) ? `${code}: ${message}` : message;
  return new AgentError('UNPACK_FAILED', `applying tar entry ${JSON.stringify(shorten(name))} failed: ${why}`, { cause: e });
}

/** A name of at most 160 characters: its head and tail, with how much was left out. */
function shorten(name: string, max = 160): string {
  if (name.length <= max) return name;
  const keep = Math.floor((max - 32) / 2);
  return `${name.slice(0, keep)}…(${name.length - 2 * keep} characters)…${name.slice(-keep)}`;
}

/** Quoted paths inside a message (Node's errno messages: mkdir '…') shortened like names. */
function shortPaths(message: string): string {
  return message.replace(/'([^']{161,})'/g, (_m, p: string) => `'${shorten(p)}'`);
}

/** The content stream of one tar entry (a streamx Readable from tar-stream). */
interface EntryData {
  on(event: 'data', fn: (chunk: Buffer) => void): unknown;
  on(event: 'end' | 'close', fn: () => void): unknown;
  on(event: 'error', fn: (e: unknown) => void): unknown;
  resume(): unknown;
  destroy(): unknown;
}

type Times = readonly [atime: number, mtime: number];

interface EntryHeader {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  atime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  xattrs: Array<[string, Buffer]>;
}

const O_CREATE_NEW = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW; // libuv adds O_CLOEXEC

function num(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

/** tar-stream's header plus what it ignores in PAX records (uid, gid, mtime, atime, xattrs as raw bytes). */
function toEntryHeader(h: tar.Header, pax: ReadonlyMap<string, Buffer> | null): EntryHeader {
  const mtimeHdr = h.mtime instanceof Date ? h.mtime.getTime() / 1000 : Date.now() / 1000;
  const paxNum = (k: string): number | undefined => {
    const v = pax?.get(k);
    if (v === undefined) return undefined;
    const n = Number(v.toString('latin1'));
    return Number.isFinite(n) ? n : undefined;
  };
  const mtime = paxNum('mtime') ?? mtimeHdr;
  return {
    name: h.name,
    type: String(h.type),
    mode: num(h.mode, 0o644) & 0o7777,
    uid: paxNum('uid') ?? num(h.uid, 0),
    gid: paxNum('gid') ?? num(h.gid, 0),
    size: num(h.size, 0),
    mtime,
    atime: paxNum('atime') ?? mtime,
    linkname: typeof h.linkname === 'string' ? h.linkname : '',
    devmajor: num(h.devmajor, 0),
    devminor: num(h.devminor, 0),
    xattrs: pax ? paxXattrs(pax) : [],
  };
}

const dirnameRel = (rel: string): string => {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
};
const joinRel = (dir: string, base: string): string => (dir === '' ? base : `${dir}/${base}`);
const under = (key: string, rel: string): boolean => key === rel || key.startsWith(`${rel}/`);

function deleteUnder<V>(m: Map<string, V> | Set<string>, rel: string): void {
  for (const k of m.keys()) if (under(k, rel)) m.delete(k);
}

/** The state of one layer being applied. */
class Applier {
  readonly stats: UnpackStats = { entries: 0, files: 0, dirs: 0, symlinks: 0, hardlinks: 0, devices: 0, whiteouts: 0, bytesWritten: 0 };
  private readonly prefix: string;
  /** Entry directory path (as named in the tar, normalised) -> real directory below the root. */
  private readonly dirCache = new Map<string, string>([['', '']]);
  /** Real paths below the root known to be directories (not symlinks). */
  private readonly knownDirs = new Set<string>(['']);
  /** Real paths created by this layer, and their ancestors: whiteouts never remove them. */
  private readonly upper = new Set<string>();
  /** Directory times from this layer's headers, set at its end. */
  private readonly dirTimes = new Map<string, Times>();
  /** Previous times of directories whose content this layer changed (restored at the end unless listed). */
  private readonly restoreTimes = new Map<string, Times>();
  private readonly seenDirs = new Set<string>();
  /** Pending xattrs per real path, applied in one setfattr run at the end. */
  private readonly xattrs = new Map<string, Array<[string, Buffer]>>();
  private readonly lookupFn: (parts: readonly string[]) => NodeKind;
  private readonly root: string;
  private readonly runner: Runner;
  private readonly signal: AbortSignal | undefined;

  constructor(root: string, runner: Runner, signal: AbortSignal | undefined) {
    this.root = root;
    this.runner = runner;
    this.signal = signal;
    this.prefix = root.endsWith('/') ? root : `${root}/`;
    this.lookupFn = (parts) => this.lookup(parts);
  }

  private abs(rel: string): string {
    return rel === '' ? this.root : this.prefix + rel;
  }

  private lookup(parts: readonly string[]): NodeKind {
    const rel = parts.join('/');
    if (this.knownDirs.has(rel)) return { kind: 'dir' };
    const p = this.abs(rel);
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (st === undefined) return { kind: 'missing' };
    if (st.isDirectory()) {
      this.knownDirs.add(rel);
      return { kind: 'dir' };
    }
    if (st.isSymbolicLink()) return { kind: 'symlink', target: fs.readlinkSync(p) };
    return { kind: 'other' };
  }

  /**
   * The real directory (below the root) for the entry directory `logical`, following symlinks inside the root.
   * Missing directories are created (0755, like umoci's MkdirAll) when `create`, else the result is null.
   */
  private resolveDir(logical: readonly string[], create: boolean, what: string): string | null {
    const key = logical.join('/');
    const hit = this.dirCache.get(key);
    if (hit !== undefined) return hit;
    const parent = this.resolveDir(logical.slice(0, -1), create, what);
    if (parent === null) return null;
    const r = resolveInRoot(parent === '' ? [] : parent.split('/'), [logical[logical.length - 1] as string], this.lookupFn, what);
    if (r.missingFrom >= 0) {
      if (!create) return null;
      for (let i = r.missingFrom; i < r.parts.length; i++) {
        const rel = r.parts.slice(0, i + 1).join('/');
        this.touch(dirnameRel(rel));
        fs.mkdirSync(this.abs(rel), 0o755);
        this.knownDirs.add(rel);
        this.seenDirs.add(rel);
        this.markUpper(rel);
      }
    }
    const real = r.parts.join('/');
    this.dirCache.set(key, real);
    return real;
  }

  /** This layer changes the content of directory `rel`: remember its times to restore them unless it is listed. */
  private touch(rel: string): void {
    if (this.seenDirs.has(rel)) return;
    this.seenDirs.add(rel);
    if (this.dirTimes.has(rel)) return;
    const st = fs.lstatSync(this.abs(rel));
    this.restoreTimes.set(rel, [st.atimeMs / 1000, st.mtimeMs / 1000]);
  }

  private markUpper(rel: string): void {
    let r = rel;
    while (r !== '' && !this.upper.has(r)) {
      this.upper.add(r);
      r = dirnameRel(r);
    }
  }

  /** Remove whatever is at `rel` (recursively), forgetting everything cached about it. */
  private remove(rel: string): void {
    const p = this.abs(rel);
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (st === undefined) return;
    if (st.isDirectory()) {
      fs.rmSync(p, { recursive: true, force: true });
      deleteUnder(this.knownDirs, rel);
      for (const [k, v] of this.dirCache) if (under(v, rel)) this.dirCache.delete(k);
      deleteUnder(this.dirTimes, rel);
      deleteUnder(this.restoreTimes, rel);
      deleteUnder(this.seenDirs, rel);
      deleteUnder(this.xattrs, rel);
      return;
    }
    fs.unlinkSync(p);
    this.xattrs.delete(rel);
    if (st.isSymbolicLink()) {
      // Cached directory resolutions may have gone through this link.
      this.dirCache.clear();
      this.dirCache.set('', '');
    }
  }

  /** Apply one entry. `data` is its content stream (consumed here). */
  async apply(h: EntryHeader, data: EntryData): Promise<void> {
    this.stats.entries++;
    const parts = normaliseEntryName(h.name);
    const what = `tar entry ${JSON.stringify(h.name)}`;
    if (parts.length === 0) {
      if (h.type !== 'directory') throw new AgentError('UNPACK_UNSAFE', `${what} would replace the root of the target with a ${h.type}`);
      await this.drain(h, data);
      this.stats.dirs++;
      this.metadata('', h, true);
      this.dirTimes.set('', [h.atime, h.mtime]);
      this.seenDirs.add('');
      return;
    }
    const base = parts[parts.length - 1] as string;
    const dirParts = parts.slice(0, -1);
    const wh = parseWhiteout(base, h.name);
    if (wh !== null) {
      await this.drain(h, data);
      this.stats.whiteouts++;
      if (wh.kind !== 'meta') this.whiteout(dirParts, wh.kind === 'opaque' ? null : wh.name, what);
      return;
    }
    const dir = this.resolveDir(dirParts, true, what) as string;
    this.touch(dir);
    const rel = joinRel(dir, base);
    const p = this.abs(rel);
    switch (h.type) {
      case 'file':
      case 'contiguous-file':
        await this.file(rel, p, h, data);
        this.stats.files++;
        break;
      case 'directory': {
        await this.drain(h, data);
        try {
          fs.mkdirSync(p, 0o700);
        } catch (e) {
          if (errnoOf(e) !== 'EEXIST') throw e;
          const st = fs.lstatSync(p);
          if (!st.isDirectory()) {
            this.remove(rel);
            fs.mkdirSync(p, 0o700);
          }
        }
        this.knownDirs.add(rel);
        this.dirCache.set(parts.join('/'), rel);
        this.seenDirs.add(rel);
        this.restoreTimes.delete(rel);
        this.metadata(rel, h, true);
        this.dirTimes.set(rel, [h.atime, h.mtime]);
        this.stats.dirs++;
        break;
      }
      case 'symlink': {
        await this.drain(h, data);
        const target = h.linkname;
        if (target === '') throw new AgentError('UNPACK_FAILED', `${what}: symlink with an empty target`);
        this.create(rel, () => fs.symlinkSync(target, p));
        fs.lchownSync(p, h.uid, h.gid);
        fs.lutimesSync(p, h.atime, h.mtime);
        this.setXattrs(rel, h);
        this.stats.symlinks++;
        break;
      }
      case 'link': {
        await this.drain(h, data);
        const linkParts = normaliseEntryName(h.linkname, `hardlink target of ${what}:`);
        if (linkParts.length === 0) throw new AgentError('UNPACK_FAILED', `${what}: hardlink to the root directory`);
        const linkDir = this.resolveDir(linkParts.slice(0, -1), false, what);
        const linkRel = linkDir === null ? null : joinRel(linkDir, linkParts[linkParts.length - 1] as string);
        if (linkRel === null || fs.lstatSync(this.abs(linkRel), { throwIfNoEntry: false }) === undefined) {
          throw new AgentError('UNPACK_FAILED', `${what}: hardlink target ${JSON.stringify(h.linkname)} does not exist`);
        }
        if (linkRel !== rel) this.create(rel, () => fs.linkSync(this.abs(linkRel), p));
        this.stats.hardlinks++;
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        await this.drain(h, data);
        const argv =
          h.type === 'fifo'
            ? ['mknod', p, 'p']
            : ['mknod', p, h.type === 'character-device' ? 'c' : 'b', String(h.devmajor), String(h.devminor)];
        this.remove(rel);
        this.xattrs.delete(rel);
        await this.runner.run({ argv, description: `creating ${h.type} ${JSON.stringify(h.name)}` });
        this.checkAbort();
        this.metadata(rel, h, false);
        fs.lutimesSync(p, h.atime, h.mtime);
        this.stats.devices++;
        break;
      }
      default:
        throw new AgentError('UNPACK_FAILED', `${what}: unsupported tar entry type ${JSON.stringify(h.type)}`);
    }
    this.markUpper(rel);
  }

  /** Run `make` to create a new node at rel; if something is there, remove it first and retry once. */
  private create(rel: string, make: () => void): void {
    this.xattrs.delete(rel);
    try {
      make();
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw e;
      this.remove(rel);
      make();
    }
  }

  private checkAbort(): void {
    if (this.signal?.aborted === true) throw abortError(this.signal);
  }

  /** Owner then mode (chown clears setuid/setgid) on a path that is not a symlink; xattrs queued. */
  private metadata(rel: string, h: EntryHeader, isDir: boolean): void {
    const p = this.abs(rel);
    fs.lchownSync(p, h.uid, h.gid);
    fs.chmodSync(p, h.mode);
    if (isDir) this.xattrs.delete(rel);
    this.setXattrs(rel, h);
  }

  private setXattrs(rel: string, h: EntryHeader): void {
    if (h.xattrs.length > 0) this.xattrs.set(rel, h.xattrs);
  }

  private async file(rel: string, p: string, h: EntryHeader, data: EntryData): Promise<void> {
    let fd = -1;
    this.create(rel, () => {
      fd = fs.openSync(p, O_CREATE_NEW, h.mode & 0o777);
    });
    try {
      if (h.size > 0) {
        await new Promise<void>((resolve, reject) => {
          let ended = false;
          data.on('data', (chunk: Buffer) => {
            try {
              let off = 0;
              while (off < chunk.length) off += fs.writeSync(fd, chunk, off, chunk.length - off);
              this.stats.bytesWritten += chunk.length;
            } catch (e) {
              reject(e);
              data.destroy();
            }
          });
          data.on('end', () => {
            ended = true;
            resolve();
          });
          data.on('error', reject);
          data.on('close', () => {
            if (!ended) reject(new Error('the layer stream ended inside the file'));
          });
        });
      }
      fs.fchownSync(fd, h.uid, h.gid);
      fs.fchmodSync(fd, h.mode);
      fs.futimesSync(fd, h.atime, h.mtime);
    } finally {
      fs.closeSync(fd);
    }
    this.setXattrs(rel, h);
  }

  /** Consume the content of a non-file entry (normally empty). */
  private async drain(h: EntryHeader, data: EntryData): Promise<void> {
    if (h.size <= 0 || h.type === 'directory') return;
    await new Promise<void>((resolve, reject) => {
      data.on('end', resolve);
      data.on('error', reject);
      data.resume();
    });
  }

  /** `.wh.<name>` (name) or `.wh..wh..opq` (null) in entry directory `dirParts`. */
  private whiteout(dirParts: readonly string[], name: string | null, what: string): void {
    const dir = this.resolveDir(dirParts, false, what);
    if (dir === null) return;
    const rel = name === null ? dir : joinRel(dir, name);
    const st = fs.lstatSync(this.abs(rel), { throwIfNoEntry: false });
    if (st === undefined) return;
    this.touch(dir);
    if (name === null) {
      if (st.isDirectory()) for (const child of fs.readdirSync(this.abs(rel))) this.removeLower(joinRel(rel, child));
    } else {
      this.removeLower(rel);
    }
  }

  /** Remove rel unless this layer created it; in a directory this layer created, remove what lower layers put. */
  private removeLower(rel: string): void {
    if (!this.upper.has(rel)) {
      this.remove(rel);
      return;
    }
    const p = this.abs(rel);
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (st?.isDirectory() === true) {
      this.touch(rel);
      for (const child of fs.readdirSync(p)) this.removeLower(joinRel(rel, child));
    }
  }

  /** End of layer: all xattrs in one setfattr run, then directory times. */
  async finish(): Promise<void> {
    if (this.xattrs.size > 0) {
      const sets: XattrSet[] = [];
      for (const [rel, attrs] of this.xattrs) sets.push({ path: this.abs(rel), attrs });
      try {
        await this.runner.run({
          argv: ['setfattr', '-h', '--restore=-'],
          stdin: xattrRestoreScript(sets),
          description: `setting the extended attributes of ${sets.length} layer entries`,
        });
      } catch (e) {
        throw new AgentError('UNPACK_FAILED', `setting extended attributes of the layer failed: ${messageOf(e)}`, { cause: e });
      }
      this.checkAbort();
    }
    const times = new Map<string, Times>(this.restoreTimes);
    for (const [rel, t] of this.dirTimes) times.set(rel, t);
    for (const [rel, [atime, mtime]] of times) {
      try {
        fs.lutimesSync(this.abs(rel), atime, mtime);
      } catch (e) {
        throw new AgentError('UNPACK_FAILED', `setting the times of directory ${JSON.stringify(rel === '' ? '.' : rel)} failed: ${messageOf(e)}`, { cause: e });
      }
    }
  }
}

/** The private parts of tar-stream 3.2's Extract we hook to get PAX records as raw bytes (it decodes them as UTF-8). */
interface ExtractInternals {
  _decodeLongHeader?: (buf: Buffer) => unknown;
  _header?: { type?: string | null } | null;
}

/**
 * Decompress (gzip, zstd or plain tar: chosen by media type, and confirmed by magic bytes) and apply one layer to
 * `target` (an existing dir, e.g. a mounted ext2 image), streaming: no temp copy of the layer or the rootfs on disk.
 * Layers must be applied in order (whiteouts refer to lower layers).
 *
 * Errors: unknown media type, wrong magic, corrupt compression or tar, or an entry that cannot be applied ->
 * AgentError('UNPACK_FAILED') naming it; an unsafe entry -> 'UNPACK_UNSAFE'; an error of `compressed` itself is
 * rethrown as is when it is an AgentError (e.g. DIGEST_MISMATCH), else wrapped as UNPACK_FAILED; abort ->
 * 'STAGE_FAILED' named AbortError. On any failure `compressed` is destroyed, and the target is left half-applied.
 */
export async function applyLayer(compressed: Readable, mediaType: string, target: string, opts: UnpackOptions): Promise<UnpackStats> {
  const { signal } = opts;
  let compression: LayerCompression;
  try {
    compression = layerCompression(mediaType);
    if (signal?.aborted === true) throw abortError(signal);
    const root = path.resolve(target);
    const st = fs.statSync(root, { throwIfNoEntry: false });
    if (st?.isDirectory() !== true) throw new AgentError('UNPACK_FAILED', `unpack target ${JSON.stringify(target)} is not an existing directory`);
  } catch (e) {
    compressed.destroy();
    throw e;
  }
  const applier = new Applier(path.resolve(target), opts.runner, signal);
  await new Promise<void>((resolve, reject) => {
    let failed = false;
    const extract = tar.extract({ highWaterMark: LOOKAHEAD });
    const decompressor =
      compression === 'gzip'
        ? zlib.createGunzip({ chunkSize: CHUNK, readableHighWaterMark: LOOKAHEAD } as zlib.ZlibOptions)
        : compression === 'zstd'
          ? createZstdFramesDecompress({ chunkSize: CHUNK, readableHighWaterMark: LOOKAHEAD }) // every frame, not just the first
          : null;
    const onAbort = (): void => fail(abortError(signal as AbortSignal));
    const cleanup = (): void => {
      signal?.removeEventListener('abort', onAbort);
    };
    function fail(err: AgentError): void {
      if (failed) return;
      failed = true;
      cleanup();
      compressed.destroy();
      decompressor?.destroy();
      extract.destroy(err);
      reject(err);
    }
    signal?.addEventListener('abort', onAbort, { once: true });

    // Raw PAX records, keyed to the entry that follows them.
    const internals = extract as unknown as ExtractInternals;
    const decodeLong = internals._decodeLongHeader;
    if (typeof decodeLong !== 'function') {
      fail(new AgentError('UNPACK_FAILED', 'the installed tar-stream has no _decodeLongHeader (PAX records cannot be read raw)'));
      return;
    }
    let globalPax: Map<string, Buffer> | null = null;
    let localPax: Map<string, Buffer> | null = null;
    internals._decodeLongHeader = function (this: ExtractInternals, buf: Buffer): unknown {
      const type = this._header?.type;
      if (type === 'pax-header') localPax = new Map([...(globalPax ?? []), ...parsePaxRecords(buf)]);
      else if (type === 'pax-global-header') globalPax = parsePaxRecords(buf);
      return decodeLong.call(this, buf);
    };

    // The entry being applied: a tar without end-of-archive blocks can finish before its last entry is applied.
    let inflight: Promise<void> = Promise.resolve();
    extract.on('entry', (header, stream, next) => {
      const pax = localPax;
      localPax = null;
      let h: EntryHeader;
      try {
        h = toEntryHeader(header, pax);
      } catch (e) {
        fail(entryError(header.name, e));
        return;
      }
      inflight = applier.apply(h, stream as unknown as EntryData).then(
        () => {
          if (!failed) next();
        },
        (e: unknown) => fail(entryError(h.name, e)),
      );
    });
    extract.on('error', (e: unknown) => fail(e instanceof AgentError ? e : new AgentError('UNPACK_FAILED', `reading the layer tar failed: ${messageOf(e)}`, { cause: e })));
    extract.on('finish', () => {
      if (failed) return;
      inflight.then(async () => {
        if (!failed) await applier.finish();
      }).then(
        () => {
          if (failed) return;
          failed = true; // settled
          cleanup();
          resolve();
        },
        (e: unknown) => fail(e instanceof AgentError ? e : new AgentError('UNPACK_FAILED', messageOf(e), { cause: e })),
      );
    });

    const sink: { write(chunk: Buffer): boolean; end(chunk?: Buffer): unknown } = decompressor ?? { write: (c) => extract.write(c), end: () => extract.end(undefined) };
    if (decompressor !== null) {
      decompressor.on('data', (chunk: Buffer) => {
        if (!extract.write(chunk)) decompressor.pause();
      });
      extract.on('drain', () => decompressor.resume());
      decompressor.on('end', () => extract.end(undefined));
      decompressor.on('error', (e: Error) => fail(new AgentError('UNPACK_FAILED', `decompressing the ${compression} layer failed: ${e.message}`, { cause: e })));
    } else {
      extract.on('drain', () => compressed.resume());
    }

    let total = 0;
    let head: Buffer | null = Buffer.alloc(0);
    const checkMagic = (bytes: Buffer, atEnd: boolean): boolean => {
      const found = sniffCompression(bytes);
      if (found === compression) return true;
      if (atEnd && bytes.length === 0 && compression === 'none') return true;
      fail(new AgentError('UNPACK_FAILED', `layer with media type ${JSON.stringify(mediaType)} is not ${compression === 'none' ? 'an uncompressed tar' : compression} (it looks like ${bytes.length === 0 ? 'an empty blob' : found === 'none' ? 'uncompressed data' : found})`));
      return false;
    };
    const feed = (chunk: Buffer): void => {
      if (!sink.write(chunk)) compressed.pause();
    };
    compressed.on('data', (chunk: Buffer) => {
      if (failed) return;
      total += chunk.length;
      opts.onBytes?.(total);
      if (head !== null) {
        head = Buffer.concat([head, chunk]);
        if (head.length < 4) return;
        const buffered = head;
        head = null;
        if (!checkMagic(buffered, false)) return;
        feed(buffered);
        return;
      }
      feed(chunk);
    });
    if (decompressor !== null) decompressor.on('drain', () => compressed.resume());
    compressed.on('end', () => {
      if (failed) return;
      if (head !== null) {
        const buffered = head;
        head = null;
        if (!checkMagic(buffered, true)) return;
        if (buffered.length > 0) sink.write(buffered);
      }
      sink.end();
    });
    compressed.on('error', (e: unknown) =>
      fail(e instanceof AgentError ? e : new AgentError('UNPACK_FAILED', `reading the layer failed: ${messageOf(e)}`, { cause: e })),
    );
  });
  return applier.stats;
}
