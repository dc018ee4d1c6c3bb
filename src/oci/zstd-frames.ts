/**
 * A streaming zstd decompressor for multi-frame input.
 *
 * RFC 8878 (section 3.1) allows a zstd stream to be any sequence of frames: zstd frames (their decompressed contents
 * are concatenated) and skippable frames (ignored). `zstd -d` decodes them all, and zstd:chunked OCI layers are made
 * of many frames. Node's `zlib.createZstdDecompress()` stops after the first frame and silently drops the rest, so
 * this stream finds the frame boundaries itself and feeds each zstd frame, in order, to a fresh
 * `zlib.createZstdDecompress()`, passing its output on.
 *
 * Only frame and block *headers* are parsed here (to know where a frame ends); all decoding (entropy, sequences,
 * checksums, window limits) is zlib's, and its errors are this stream's errors (with the offset of the failing frame
 * appended to the message; the zlib error is the `cause`, its `code` and `errno` are kept).
 *
 * Backpressure holds both ways: a frame's output is pushed as zlib produces it, the inner decompressor is paused
 * when push() says stop and resumed on _read(), and a write is acknowledged only once the inner decompressor has
 * taken its bytes (drained), or, at a frame end, once that frame's output has all been pushed. A frame that inflates
 * to gigabytes therefore never sits in memory beyond the high-water marks.
 *
 * Errors (as zstd -d refuses the same inputs):
 * - bytes where a frame should start that are no frame magic (garbage between frames, trailing garbage after the
 *   last frame): `zstd: bad frame magic 0x........ at offset N ...`;
 * - input that ends inside a frame (or inside a frame magic): `truncated zstd frame at offset N ...`, N being where
 *   that frame starts; the message says where in the frame the input ended;
 * - a block of the reserved type 3: `zstd: reserved block type 3 ...`;
 * - an empty input: `zstd: empty input (no zstd frame)`. `zstd -d` fails on an empty input ("unexpected end of
 *   file") and so does zlib, so this does too. An input of skippable frames only is valid and yields no output (as
 *   with `zstd -d`).
 */
import { Duplex } from 'node:stream';
import zlib from 'node:zlib';

const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MAGIC = 0x184d2a50;
const SKIPPABLE_MASK = 0xfffffff0;
/** The zstd frame magic as it appears in the stream (little-endian). */
const ZSTD_MAGIC_BYTES = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
/** The first skippable frame magic (its first byte may be 0x50..0x5f). */
const SKIPPABLE_MAGIC_BYTES = Buffer.from([0x50, 0x2a, 0x4d, 0x18]);

/** Where the scanner is in the input. */
type Phase =
  | 'magic' // between frames: reading a frame's 4-byte magic
  | 'skip-size' // skippable frame: reading its 4-byte Frame_Size
  | 'skip-body' // skippable frame: skipping its user data
  | 'descriptor' // zstd frame: the Frame_Header_Descriptor byte
  | 'header' // zstd frame: the rest of the frame header (window descriptor, dictionary id, content size)
  | 'block-header' // zstd frame: a 3-byte block header
  | 'block-body' // zstd frame: a block's content
  | 'checksum'; // zstd frame: the 4-byte Content_Checksum

const ZSTD_PHASES: ReadonlySet<Phase> = new Set<Phase>(['descriptor', 'header', 'block-header', 'block-body', 'checksum']);

const DICTIONARY_ID_BYTES = [0, 1, 2, 4] as const;
const CONTENT_SIZE_BYTES = [0, 2, 4, 8] as const;

const hex8 = (n: number): string => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
const hexBytes = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(' ');

/**
 * Walks the compressed input, tracking frame boundaries (RFC 8878 3.1.1 and 3.1.2), chunk by chunk. It stops after
 * the magic of a zstd frame (event 'start') and right after the last byte of a zstd frame (event 'end'), so each
 * advance() covers bytes of one kind: inside one zstd frame (after its magic), or not.
 */
export class ZstdFrameScanner {
  /** Absolute offset of the next byte to be consumed. */
  offset = 0;
  /** Offset where the current (or last) frame starts. */
  frameStart = 0;
  /** zstd frames (not skippable ones) seen so far. */
  frames = 0;
  phase: Phase = 'magic';
  /** What the last advance() stopped at, if anything. */
  event: 'start' | 'end' | null = null;
  /** Bytes of a multi-byte field (magic, skippable size, block header) collected so far. */
  private readonly field = Buffer.alloc(4);
  private have = 0;
  /** Bytes still to be skipped in the header/block-body/checksum/skip-body phases. */
  private remaining = 0;
  private lastBlock = false;
  private hasChecksum = false;
  private blockStart = 0;

  /** True while inside a zstd frame after its magic (those bytes go to the frame's decompressor). */
  get inZstdFrame(): boolean {
    return ZSTD_PHASES.has(this.phase);
  }

  /** Consumes `buf` from `pos` until its end or an event; returns the position after the last consumed byte. */
  advance(buf: Buffer, pos: number): number {
    this.event = null;
    while (pos < buf.length) {
      switch (this.phase) {
        case 'magic': {
          if (this.have === 0) this.frameStart = this.offset;
          pos = this.collect(buf, pos, 4);
          if (this.have < 4) break;
          this.have = 0;
          const magic = this.field.readUInt32LE(0);
          if (magic === ZSTD_MAGIC) {
            this.frames++;
            this.phase = 'descriptor';
            this.event = 'start';
            return pos;
          }
          if (((magic & SKIPPABLE_MASK) >>> 0) === SKIPPABLE_MAGIC) {
            this.phase = 'skip-size';
            break;
          }
          throw new Error(
            `zstd: bad frame magic ${hex8(magic)} at offset ${this.frameStart}: neither a zstd frame (${hex8(ZSTD_MAGIC)}) nor a skippable frame (0x184d2a5?)${this.frameStart > 0 ? `, after ${this.frames} zstd frame(s) (garbage between or after frames)` : ''}`,
          );
        }
        case 'skip-size':
          pos = this.collect(buf, pos, 4);
          if (this.have < 4) break;
          this.have = 0;
          this.remaining = this.field.readUInt32LE(0);
          this.phase = 'skip-body';
          if (this.remaining === 0) this.phase = 'magic';
          break;
        case 'skip-body':
          pos = this.skip(buf, pos);
          if (this.remaining === 0) this.phase = 'magic';
          break;
        case 'descriptor': {
          const fhd = buf[pos++] as number;
          this.offset++;
          const singleSegment = (fhd & 0x20) !== 0;
          const fcsFlag = fhd >> 6;
          this.hasChecksum = (fhd & 0x04) !== 0;
          this.remaining =
            (singleSegment ? 0 : 1) + DICTIONARY_ID_BYTES[fhd & 0x03]! + (fcsFlag === 0 ? (singleSegment ? 1 : 0) : CONTENT_SIZE_BYTES[fcsFlag]!);
          this.phase = 'header';
          if (this.remaining === 0) this.phase = 'block-header';
          break;
        }
        case 'header':
          pos = this.skip(buf, pos);
          if (this.remaining === 0) this.phase = 'block-header';
          break;
        case 'block-header': {
          if (this.have === 0) this.blockStart = this.offset;
          pos = this.collect(buf, pos, 3);
          if (this.have < 3) break;
          this.have = 0;
          const bh = this.field.readUIntLE(0, 3);
          this.lastBlock = (bh & 1) !== 0;
          const type = (bh >> 1) & 3;
          const size = bh >>> 3;
          if (type === 3) {
            throw new Error(`zstd: reserved block type 3 in the block at offset ${this.blockStart} (zstd frame at offset ${this.frameStart}): corrupt zstd data`);
          }
          this.remaining = type === 1 ? 1 : size; // RLE: one byte, repeated Block_Size times; raw/compressed: Block_Size bytes
          this.phase = 'block-body';
          if (this.remaining === 0 && this.blockDone()) return pos;
          break;
        }
        case 'block-body':
          pos = this.skip(buf, pos);
          if (this.remaining === 0 && this.blockDone()) return pos;
          break;
        case 'checksum':
          pos = this.skip(buf, pos);
          if (this.remaining === 0) {
            this.frameDone();
            return pos;
          }
          break;
      }
    }
    return pos;
  }

  /** At the end of the input: an Error if it ends inside a frame or a frame magic, or is empty; else null. */
  finish(): Error | null {
    if (this.offset === 0) return new Error('zstd: empty input (no zstd frame)');
    const at = `truncated zstd frame at offset ${this.frameStart}: the input ends at offset ${this.offset}`;
    switch (this.phase) {
      case 'magic': {
        if (this.have === 0) return null;
        const partial = this.field.subarray(0, this.have);
        const zstdPrefix = ZSTD_MAGIC_BYTES.subarray(0, this.have).equals(partial);
        const skippablePrefix = (partial[0]! & 0xf0) === 0x50 && SKIPPABLE_MAGIC_BYTES.subarray(1, this.have).equals(partial.subarray(1));
        if (zstdPrefix || skippablePrefix) return new Error(`${at}, ${this.have} byte(s) into a frame magic`);
        return new Error(
          `zstd: bad frame magic at offset ${this.frameStart}: the ${this.have} trailing byte(s) ${hexBytes(partial)} after ${this.frames} zstd frame(s) are not a frame`,
        );
      }
      case 'skip-size':
      case 'skip-body':
        return new Error(`${at}, inside a skippable frame`);
      case 'descriptor':
      case 'header':
        return new Error(`${at}, inside the frame header`);
      case 'block-header':
        return new Error(`${at}, inside a block header`);
      case 'block-body':
        return new Error(`${at}, ${this.remaining} byte(s) short of the end of the block at offset ${this.blockStart}`);
      case 'checksum':
        return new Error(`${at}, ${this.remaining} byte(s) short of the end of the content checksum`);
    }
  }

  /** The block just ended: next block, checksum, or frame end (true: the frame ended). */
  private blockDone(): boolean {
    if (!this.lastBlock) {
      this.phase = 'block-header';
      return false;
    }
    if (this.hasChecksum) {
      this.remaining = 4;
      this.phase = 'checksum';
      return false;
    }
    this.frameDone();
    return true;
  }

  private frameDone(): void {
    this.phase = 'magic';
    this.event = 'end';
  }

  /** Appends bytes to `field` up to `want` bytes. */
  private collect(buf: Buffer, pos: number, want: number): number {
    const n = Math.min(want - this.have, buf.length - pos);
    buf.copy(this.field, this.have, pos, pos + n);
    this.have += n;
    this.offset += n;
    return pos + n;
  }

  /** Skips up to `remaining` bytes. */
  private skip(buf: Buffer, pos: number): number {
    const n = Math.min(this.remaining, buf.length - pos);
    this.remaining -= n;
    this.offset += n;
    return pos + n;
  }
}

/** Options of each frame's zlib decompressor, plus the high-water marks of this stream. */
export type ZstdFramesOptions = zlib.ZstdOptions & { readableHighWaterMark?: number; writableHighWaterMark?: number };

/** The multi-frame zstd decompressor (see the module comment). A Duplex: write compressed bytes, read the content. */
export class ZstdFramesDecompress extends Duplex {
  private readonly scanner = new ZstdFrameScanner();
  private readonly frameOptions: ZstdFramesOptions;
  /** The current frame's decompressor, until its 'end' (it stays set while its last output drains). */
  private inner: zlib.ZstdDecompress | null = null;

  constructor(opts: ZstdFramesOptions = {}) {
    super({
      ...(opts.readableHighWaterMark !== undefined ? { readableHighWaterMark: opts.readableHighWaterMark } : {}),
      ...(opts.writableHighWaterMark !== undefined ? { writableHighWaterMark: opts.writableHighWaterMark } : {}),
    });
    this.frameOptions = opts;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.feed(chunk, 0, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    // Every write was acknowledged only after its frames ended and drained: all output is pushed.
    const err = this.scanner.finish();
    if (err !== null) {
      cb(err);
      return;
    }
    this.push(null);
    cb();
  }

  override _read(): void {
    this.inner?.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const inner = this.inner;
    this.inner = null;
    inner?.destroy();
    cb(err);
  }

  /** Consumes `chunk` from `pos`, calling `cb` once all of it has been taken by the frames' decompressors. */
  private feed(chunk: Buffer, pos: number, cb: (err?: Error | null) => void): void {
    while (pos < chunk.length) {
      if (this.destroyed) return;
      const inFrame = this.scanner.inZstdFrame;
      let next: number;
      try {
        next = this.scanner.advance(chunk, pos);
      } catch (e) {
        cb(e as Error);
        return;
      }
      const inner = this.inner;
      let drained = true;
      if (inFrame && inner !== null && next > pos) drained = inner.write(chunk.subarray(pos, next));
      pos = next;
      const event = this.scanner.event;
      if (event === 'start') {
        this.startFrame();
      } else if (event === 'end' && inner !== null) {
        inner.once('end', () => {
          if (this.inner === inner) this.inner = null;
          this.feed(chunk, pos, cb);
        });
        inner.end();
        return;
      } else if (!drained && inner !== null) {
        inner.once('drain', () => this.feed(chunk, pos, cb));
        return;
      }
    }
    if (!this.destroyed) cb();
  }

  /** A zstd frame's magic was read: a fresh decompressor gets it, and the frame's bytes that follow. */
  private startFrame(): void {
    const frameStart = this.scanner.frameStart;
    // The same options for every frame (chunkSize, params, readableHighWaterMark); the input side is this stream's.
    const { writableHighWaterMark: _ours, ...frameOptions } = this.frameOptions;
    const inner = zlib.createZstdDecompress(frameOptions as zlib.ZstdOptions);
    this.inner = inner;
    inner.on('data', (out: Buffer) => {
      if (this.destroyed) return;
      if (!this.push(out)) inner.pause();
    });
    inner.on('error', (e: Error & { code?: string; errno?: number }) => {
      if (this.destroyed) return;
      const err = new Error(`${e.message} (in the zstd frame at offset ${frameStart})`, { cause: e }) as Error & { code?: string; errno?: number };
      if (e.code !== undefined) err.code = e.code;
      if (e.errno !== undefined) err.errno = e.errno;
      this.destroy(err);
    });
    inner.write(ZSTD_MAGIC_BYTES);
  }
}

/** A multi-frame zstd decompressor: each frame gets a fresh `zlib.createZstdDecompress(opts)`. */
export function createZstdFramesDecompress(opts: ZstdFramesOptions = {}): ZstdFramesDecompress {
  return new ZstdFramesDecompress(opts);
}
