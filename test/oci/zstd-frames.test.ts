import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createZstdCompress, zstdCompressSync } from 'node:zlib';
import { createZstdFramesDecompress, type ZstdFramesOptions } from '../../src/oci/zstd-frames.ts';

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/** Runs `zstd` with `args`, `input` on stdin; resolves to stdout, rejects (with stderr) on a non-zero exit. */
function zstd(args: readonly string[], input: Buffer | Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = spawn('zstd', ['-q', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (b: Buffer) => out.push(b));
    p.stderr.on('data', (b: Buffer) => err.push(b));
    p.stdin.on('error', () => undefined); // zstd -d may stop reading a bad input early
    p.on('error', reject);
    p.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`zstd ${args.join(' ')} exited ${code}: ${Buffer.concat(err).toString().trim()}`));
    });
    if (Buffer.isBuffer(input)) p.stdin.end(input);
    else input.pipe(p.stdin);
  });
}

/** What `zstd -dc` makes of `blob`. */
const reference = (blob: Buffer): Promise<Buffer> => zstd(['-dc'], blob);

/** `blob` cut into chunks of the given sizes (cycled), or whole. */
function cut(blob: Buffer, sizes: readonly number[] = []): Buffer[] {
  if (sizes.length === 0) return [blob];
  const parts: Buffer[] = [];
  for (let off = 0, i = 0; off < blob.length; i++) {
    const n = sizes[i % sizes.length] as number;
    parts.push(blob.subarray(off, off + n));
    off += n;
  }
  return parts;
}

/** Decompresses `parts` (written in order) with the stream under test. */
async function decompress(parts: readonly Buffer[], opts: ZstdFramesOptions = {}): Promise<Buffer> {
  const d = createZstdFramesDecompress(opts);
  Readable.from(parts, { objectMode: false }).pipe(d);
  const out: Buffer[] = [];
  for await (const c of d) out.push(c as Buffer);
  return Buffer.concat(out);
}

/** The error the stream under test fails with. */
async function failure(t: ExecutionContext, parts: readonly Buffer[]): Promise<Error & { code?: string; cause?: unknown }> {
  const e = await t.throwsAsync(decompress(parts));
  if (e instanceof Error) return e;
  return t.fail('expected an Error');
}

/** Decompresses with the stream under test and checks the result byte for byte against `zstd -dc` and `expected`. */
async function same(t: ExecutionContext, blob: Buffer, expected: Buffer, sizes: readonly number[] = []): Promise<void> {
  const ref = await reference(blob);
  t.true(ref.equals(expected), 'zstd -dc gives the expected content');
  const got = await decompress(cut(blob, sizes));
  t.is(got.length, ref.length);
  t.true(got.equals(ref), 'byte for byte what zstd -dc gives');
}

/** A skippable frame (magic 0x184D2A5<nibble>) carrying `data`. */
function skippable(nibble: number, data: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a50 + nibble, 0);
  h.writeUInt32LE(data.length, 4);
  return Buffer.concat([h, data]);
}

/** Frame_Header_Descriptor facts of the zstd frame at the start of `frame`. */
function descriptor(frame: Buffer): { contentSize: boolean; checksum: boolean } {
  const fhd = frame[4] as number;
  return { contentSize: fhd >> 6 !== 0 || (fhd & 0x20) !== 0, checksum: (fhd & 0x04) !== 0 };
}

/** The block types (0 raw, 1 RLE, 2 compressed) of the zstd frame at the start of `frame`, walked independently. */
function blockTypes(frame: Buffer): number[] {
  const fhd = frame[4] as number;
  const single = (fhd & 0x20) !== 0;
  const fcs = fhd >> 6;
  let off = 5 + (single ? 0 : 1) + ([0, 1, 2, 4][fhd & 3] as number) + (fcs === 0 ? (single ? 1 : 0) : ([0, 2, 4, 8][fcs] as number));
  const types: number[] = [];
  for (;;) {
    const bh = frame.readUIntLE(off, 3);
    const type = (bh >> 1) & 3;
    types.push(type);
    off += 3 + (type === 1 ? 1 : bh >>> 3);
    if ((bh & 1) !== 0) return types;
  }
}

type Block = { raw: Buffer } | { rle: number; size: number };

/**
 * A hand-made zstd frame (RFC 8878 3.1.1) of raw and RLE blocks, so every header layout can be had: Dictionary_ID
 * field of 0/1/2/4 bytes (value 0: no dictionary), Frame_Content_Size of 0/1/2/4/8 bytes, single segment or a window
 * descriptor. No checksum (it needs XXH64).
 */
function handmade(opts: { fcsFlag: 0 | 1 | 2 | 3; single: boolean; didFlag: 0 | 1 | 2 | 3; blocks: readonly Block[] }): { frame: Buffer; content: Buffer } {
  const content = Buffer.concat(opts.blocks.map((b) => ('raw' in b ? b.raw : Buffer.alloc(b.size, b.rle))));
  const parts: Buffer[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, (opts.fcsFlag << 6) | (opts.single ? 0x20 : 0) | opts.didFlag])];
  if (!opts.single) parts.push(Buffer.from([(17 - 10) << 3])); // a 128 KiB window
  parts.push(Buffer.alloc([0, 1, 2, 4][opts.didFlag] as number)); // Dictionary_ID 0
  const size = content.length;
  if (opts.fcsFlag === 0 && opts.single) parts.push(Buffer.from([size]));
  if (opts.fcsFlag === 1) parts.push(Buffer.from([(size - 256) & 0xff, (size - 256) >> 8]));
  if (opts.fcsFlag === 2) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(size);
    parts.push(b);
  }
  if (opts.fcsFlag === 3) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(size));
    parts.push(b);
  }
  opts.blocks.forEach((b, i) => {
    const last = i === opts.blocks.length - 1 ? 1 : 0;
    const header = Buffer.alloc(3);
    if ('raw' in b) {
      header.writeUIntLE((b.raw.length << 3) | last, 0, 3);
      parts.push(header, b.raw);
    } else {
      header.writeUIntLE((b.size << 3) | (1 << 1) | last, 0, 3);
      parts.push(header, Buffer.from([b.rle]));
    }
  });
  return { frame: Buffer.concat(parts), content };
}

/** A deterministic PRNG (mulberry32), for reproducible chunkings. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const text = (n: number, seed: string): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => `${seed} line ${i}\n`).join(''));

// ---------------------------------------------------------------------------------------------------------------
// Frames

test('one frame is decompressed whole, whole or in 1-byte chunks', async (t) => {
  const content = text(2000, 'one');
  const blob = zstdCompressSync(content);
  await same(t, blob, content);
  t.true((await decompress(cut(blob, [1]))).equals(content));
});

test('zlib itself stops after the first frame (the bug this stream is for)', async (t) => {
  const { zstdDecompressSync } = await import('node:zlib');
  const blob = Buffer.concat([zstdCompressSync(Buffer.from('hello ')), zstdCompressSync(Buffer.from('world'))]);
  t.is(zstdDecompressSync(blob).toString(), 'hello ', 'if zlib learns multiple frames, this stream could go');
  t.is((await decompress([blob])).toString(), 'hello world');
});

test('two frames and five frames are decompressed in order, whatever the chunking', async (t) => {
  const two = [text(500, 'first'), text(700, 'second')];
  const twoBlob = Buffer.concat(two.map((c) => zstdCompressSync(c)));
  await same(t, twoBlob, Buffer.concat(two));
  await same(t, twoBlob, Buffer.concat(two), [7, 1, 300]);

  const five = [text(10, 'a'), randomBytes(5000), Buffer.alloc(0), text(3000, 'd'), Buffer.alloc(200_000, 0x61)];
  const frames = await Promise.all(five.map((c, i) => (i % 2 === 0 ? Promise.resolve(zstdCompressSync(c)) : zstd(['-c', `-${i + 1}`], c))));
  const fiveBlob = Buffer.concat(frames);
  await same(t, fiveBlob, Buffer.concat(five));
  const rnd = prng(5);
  for (let round = 0; round < 5; round++) {
    const sizes = Array.from({ length: 50 }, () => 1 + Math.floor(rnd() * 4000));
    t.true((await decompress(cut(fiveBlob, sizes))).equals(Buffer.concat(five)), `chunking ${round}`);
  }
});

test('skippable frames before, between and after zstd frames produce nothing (every magic 0x184D2A50..5F)', async (t) => {
  const a = text(100, 'a');
  const b = text(100, 'b');
  const blob = Buffer.concat([
    skippable(0x0, Buffer.from('metadata before')),
    skippable(0x7, Buffer.alloc(0)),
    zstdCompressSync(a),
    skippable(0xa, randomBytes(70_000)),
    zstdCompressSync(b),
    skippable(0xf, Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), // a zstd magic inside skipped data is skipped
  ]);
  await same(t, blob, Buffer.concat([a, b]));
  t.true((await decompress(cut(blob, [1, 2, 3, 5, 8, 13]))).equals(Buffer.concat([a, b])));
  for (let nibble = 0; nibble < 16; nibble++) {
    const one = Buffer.concat([zstdCompressSync(a), skippable(nibble, Buffer.from([nibble]))]);
    t.true((await decompress([one])).equals(a), `0x184d2a5${nibble.toString(16)}`);
  }
});

test('an input of skippable frames only is empty content (as zstd -dc has it); an empty input is an error (as zstd -d has it)', async (t) => {
  const blob = Buffer.concat([skippable(1, Buffer.from('x')), skippable(2, Buffer.alloc(0))]);
  await same(t, blob, Buffer.alloc(0));
  await t.throwsAsync(reference(Buffer.alloc(0)), { message: /unexpected end of file/ });
  const e = await failure(t, []);
  t.is(e.message, 'zstd: empty input (no zstd frame)');
});

test('frames with and without Frame_Content_Size (zstd --no-content-size, stdin, zlib streaming) are decompressed', async (t) => {
  const content = text(20_000, 'size');
  const withSize = zstdCompressSync(content);
  const noSize = await zstd(['-c', '--no-content-size'], content);
  const fromStdin = await zstd(['-c'], Readable.from([content.subarray(0, 1000), content.subarray(1000)]));
  const zlibStream = Buffer.concat(await Readable.from([content]).pipe(createZstdCompress()).toArray());
  t.true(descriptor(withSize).contentSize);
  t.false(descriptor(noSize).contentSize);
  const blob = Buffer.concat([withSize, noSize, fromStdin, zlibStream]);
  await same(t, blob, Buffer.concat([content, content, content, content]), [4096]);
});

test('frames with and without a content checksum (zstd --check / --no-check) are decompressed', async (t) => {
  const content = text(5000, 'check');
  const check = await zstd(['-c', '--check'], content);
  const noCheck = await zstd(['-c', '--no-check'], content);
  t.true(descriptor(check).checksum);
  t.false(descriptor(noCheck).checksum);
  const blob = Buffer.concat([check, noCheck, check]);
  await same(t, blob, Buffer.concat([content, content, content]));
  // The checksum split from its frame: the stream must wait for all 4 bytes before the next frame.
  await same(t, blob, Buffer.concat([content, content, content]), [check.length - 2, 3, 1, noCheck.length]);
});

test('every frame header layout (dictionary id 0/1/2/4 bytes, content size 0/1/2/4/8 bytes, single segment or not)', async (t) => {
  const frames: Buffer[] = [];
  const contents: Buffer[] = [];
  for (const didFlag of [0, 1, 2, 3] as const) {
    for (const [fcsFlag, single] of [[0, false], [0, true], [1, false], [1, true], [2, false], [2, true], [3, false], [3, true]] as const) {
      // A 1-byte Frame_Content_Size (flag 0, single segment) holds at most 255; a 2-byte one holds 256 + 0..65535.
      const rawLen = fcsFlag === 0 && single ? 100 : 300;
      const blocks: Block[] = fcsFlag === 0 && single
        ? [{ raw: randomBytes(rawLen) }, { rle: 0x41, size: 20 }]
        : [{ raw: Buffer.alloc(0) }, { raw: randomBytes(rawLen) }, { rle: 0x42, size: 40 }, { raw: Buffer.from('end') }];
      const { frame, content } = handmade({ fcsFlag, single, didFlag, blocks });
      frames.push(frame);
      contents.push(content);
      t.true((await decompress(cut(frame, [1]))).equals(content), `did ${didFlag} fcs ${fcsFlag} single ${single}`);
    }
  }
  await same(t, Buffer.concat(frames), Buffer.concat(contents), [3]);
  // An empty frame: one empty last raw block.
  const empty = handmade({ fcsFlag: 0, single: false, didFlag: 0, blocks: [{ raw: Buffer.alloc(0) }] });
  await same(t, Buffer.concat([empty.frame, frames[0] as Buffer, empty.frame]), contents[0] as Buffer);
});

test('every split point of a small multi-frame input, and 1-byte chunks, give the same content', async (t) => {
  const contents = [text(20, 'x'), Buffer.from('y'), text(15, 'z')];
  const blob = Buffer.concat([
    zstdCompressSync(contents[0] as Buffer),
    skippable(3, Buffer.from('sk')),
    await zstd(['-c', '--check'], contents[1] as Buffer),
    await zstd(['-c', '--no-check', '--no-content-size'], contents[2] as Buffer),
  ]);
  const expected = Buffer.concat(contents);
  await same(t, blob, expected);
  t.true((await decompress(cut(blob, [1]))).equals(expected), '1-byte chunks');
  for (let i = 1; i < blob.length; i++) {
    const got = await decompress([blob.subarray(0, i), blob.subarray(i)]);
    t.true(got.equals(expected), `split at ${i}`);
  }
  // Three chunks, around every boundary.
  for (let i = 1; i < blob.length - 1; i++) {
    const got = await decompress([blob.subarray(0, i), blob.subarray(i, i + 1), blob.subarray(i + 1)]);
    t.true(got.equals(expected), `1 byte at ${i}`);
  }
});

test('frames of raw blocks (zstd -1 of random data) and RLE blocks (runs of one byte) are decompressed', async (t) => {
  const random = randomBytes(400_000);
  const runs = Buffer.concat([Buffer.alloc(300_000, 0x7a), Buffer.alloc(262_144, 0x00), Buffer.from('tail')]);
  const rawFrame = await zstd(['-c', '-1'], random);
  const rleFrame = await zstd(['-c', '-1'], runs);
  t.true(blockTypes(rawFrame).includes(0), `raw blocks in ${blockTypes(rawFrame).join(',')}`);
  t.true(blockTypes(rleFrame).includes(1), `RLE blocks in ${blockTypes(rleFrame).join(',')}`);
  const blob = Buffer.concat([rawFrame, rleFrame, rawFrame]);
  const expected = Buffer.concat([random, runs, random]);
  await same(t, blob, expected);
  const rnd = prng(11);
  const sizes = Array.from({ length: 200 }, () => 1 + Math.floor(rnd() * 9000));
  t.true((await decompress(cut(blob, sizes))).equals(expected));
  // Around the RLE blocks' 4-byte block header + body, byte by byte.
  t.true((await decompress(cut(rleFrame, [1]))).equals(runs));
});

// ---------------------------------------------------------------------------------------------------------------
// Errors

test('a truncated input is an error naming the offset of the frame cut short, and where it was cut', async (t) => {
  const a = zstdCompressSync(text(50, 'a'));
  const b = await zstd(['-c', '--check'], text(3000, 'b'));
  const blob = Buffer.concat([a, b]);
  const cases: [number, RegExp][] = [
    [a.length + 2, new RegExp(`^truncated zstd frame at offset ${a.length}: the input ends at offset ${a.length + 2}, 2 byte\\(s\\) into a frame magic$`)],
    [a.length + 5, new RegExp(`^truncated zstd frame at offset ${a.length}: the input ends at offset ${a.length + 5}, inside the frame header$`)],
    [blob.length - 100, new RegExp(`^truncated zstd frame at offset ${a.length}: the input ends at offset ${blob.length - 100}, \\d+ byte\\(s\\) short of the end of the block at offset \\d+$`)],
    [blob.length - 1, new RegExp(`^truncated zstd frame at offset ${a.length}: the input ends at offset ${blob.length - 1}, 1 byte\\(s\\) short of the end of the content checksum$`)],
    [a.length - 1, /^truncated zstd frame at offset 0: the input ends at offset \d+, /],
    [3, /^truncated zstd frame at offset 0: the input ends at offset 3, 3 byte\(s\) into a frame magic$/],
  ];
  for (const [length, message] of cases) {
    const cutBlob = blob.subarray(0, length);
    await t.throwsAsync(reference(cutBlob), undefined, `zstd -d refuses ${length} bytes too`);
    t.regex((await failure(t, [cutBlob])).message, message);
    t.regex((await failure(t, cut(cutBlob, [1]))).message, message, '1-byte chunks');
  }
  const skip = skippable(1, Buffer.from('abcdef'));
  t.regex((await failure(t, [Buffer.concat([a, skip.subarray(0, 10)])])).message, new RegExp(`^truncated zstd frame at offset ${a.length}: .*inside a skippable frame$`));
});

test('garbage between frames, and trailing bytes after the last frame, are errors naming the bytes and the offset', async (t) => {
  const a = zstdCompressSync(text(50, 'a'));
  const garbage = Buffer.concat([a, Buffer.from('GARBAGE!'), a]);
  await t.throwsAsync(reference(garbage));
  const e1 = await failure(t, [garbage]);
  t.is(e1.message, `zstd: bad frame magic 0x42524147 at offset ${a.length}: neither a zstd frame (0xfd2fb528) nor a skippable frame (0x184d2a5?), after 1 zstd frame(s) (garbage between or after frames)`);
  t.is((await failure(t, cut(garbage, [1]))).message, e1.message, '1-byte chunks');

  const trailing = Buffer.concat([a, Buffer.from([0, 0, 0, 0, 0])]);
  await t.throwsAsync(reference(trailing));
  t.regex((await failure(t, [trailing])).message, new RegExp(`^zstd: bad frame magic 0x00000000 at offset ${a.length}: `));

  const short = Buffer.concat([a, Buffer.from('xy')]);
  await t.throwsAsync(reference(short));
  t.is((await failure(t, [short])).message, `zstd: bad frame magic at offset ${a.length}: the 2 trailing byte(s) 78 79 after 1 zstd frame(s) are not a frame`);

  // Not a frame at all, from the start.
  t.regex((await failure(t, [Buffer.from('hello world')])).message, /^zstd: bad frame magic 0x6c6c6568 at offset 0: neither a zstd frame/);
});

test('a block of the reserved type 3 is an error naming it', async (t) => {
  const { frame } = handmade({ fcsFlag: 0, single: false, didFlag: 0, blocks: [{ raw: Buffer.from('abc') }, { raw: Buffer.from('def') }] });
  const bad = Buffer.from(frame);
  const second = 6 + 3 + 3; // magic+FHD, window descriptor, first block header, 'abc'
  bad[second] = (bad[second] as number) | 0x06;
  await t.throwsAsync(reference(bad));
  const e = await failure(t, [Buffer.concat([zstdCompressSync(Buffer.from('x')), bad])]);
  t.regex(e.message, /^zstd: reserved block type 3 in the block at offset \d+ \(zstd frame at offset \d+\): corrupt zstd data$/);
});

test('corrupt data inside a frame, and a checksum mismatch, are zlib\'s errors (code kept, frame offset named)', async (t) => {
  const content = text(20_000, 'corrupt');
  const good = await zstd(['-c', '--check'], content);
  const first = zstdCompressSync(Buffer.from('first'));

  const corrupt = Buffer.from(good);
  for (let i = 40; i < 80; i++) corrupt[i] = (corrupt[i] as number) ^ 0x5a;
  await t.throwsAsync(reference(Buffer.concat([first, corrupt])));
  const e1 = await failure(t, [Buffer.concat([first, corrupt])]);
  t.regex(e1.message, new RegExp(` \\(in the zstd frame at offset ${first.length}\\)$`));
  t.regex(e1.code ?? '', /^ZSTD_error_/);
  t.true(e1.cause instanceof Error && e1.message.startsWith((e1.cause as Error).message));

  const badSum = Buffer.from(good);
  badSum.writeUInt32LE(badSum.readUInt32LE(badSum.length - 4) ^ 0xffffffff, badSum.length - 4);
  await t.throwsAsync(reference(badSum), { message: /checksum|Restored data/i });
  const e2 = await failure(t, [Buffer.concat([first, badSum, first])]);
  t.is(e2.code, 'ZSTD_error_checksum_wrong');
  t.regex(e2.message, new RegExp(`checksum.* \\(in the zstd frame at offset ${first.length}\\)$`));

  // A reserved Frame_Header_Descriptor bit: zlib refuses the frame.
  const reserved = Buffer.from(good);
  reserved[4] = (reserved[4] as number) | 0x08;
  const e3 = await failure(t, [reserved]);
  t.is(e3.code, 'ZSTD_error_frameParameter_unsupported');
});

// ---------------------------------------------------------------------------------------------------------------
// Backpressure and memory

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** 1 GiB of zeros in one zstd frame (from stdin: no content size), after a small frame. */
async function bomb(): Promise<{ blob: Buffer; prefix: Buffer }> {
  const zeros = Buffer.alloc(4 * MiB);
  let sent = 0;
  const source = new Readable({
    read() {
      if (sent >= GiB) {
        this.push(null);
        return;
      }
      sent += zeros.length;
      this.push(zeros);
    },
  });
  const prefix = Buffer.from('before the bomb\n');
  const blob = Buffer.concat([zstdCompressSync(prefix), await zstd(['-c', '-1'], source)]);
  return { blob, prefix };
}

test.serial('a 1 GiB bomb frame read by a slow consumer is streamed in bounded memory (no frame output held whole)', async (t) => {
  const { blob, prefix } = await bomb();
  t.true(blob.length < 200 * 1024, `${blob.length} compressed bytes`);
  const zeros = Buffer.alloc(1 * MiB);
  const before = process.memoryUsage();
  let peakRss = before.rss;
  let peakArrayBuffers = before.arrayBuffers;
  let total = 0;
  let allZeros = true;
  let chunks = 0;
  const d = createZstdFramesDecompress({ chunkSize: 256 * 1024, readableHighWaterMark: MiB });
  const sink = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _enc, cb) {
      const body = total === 0 ? chunk.subarray(prefix.length) : chunk;
      if (total === 0 && !chunk.subarray(0, prefix.length).equals(prefix)) allZeros = false;
      for (let off = 0; off < body.length; off += zeros.length) {
        const part = body.subarray(off, off + zeros.length);
        if (!part.equals(zeros.subarray(0, part.length))) allZeros = false;
      }
      total += chunk.length;
      if (++chunks % 16 === 0) {
        const m = process.memoryUsage();
        peakRss = Math.max(peakRss, m.rss);
        peakArrayBuffers = Math.max(peakArrayBuffers, m.arrayBuffers);
      }
      // A slow consumer: every chunk waits a turn of the event loop, every 8th a timer.
      if (chunks % 8 === 0) setTimeout(cb, 1);
      else setImmediate(cb);
    },
  });
  await new Promise<void>((resolve, reject) => {
    sink.on('finish', resolve);
    sink.on('error', reject);
    d.on('error', reject);
    d.pipe(sink);
    Readable.from(cut(blob, [4096]), { objectMode: false }).pipe(d);
  });
  const after = process.memoryUsage();
  const rssGrowth = (peakRss - before.rss) / MiB;
  const abGrowth = (peakArrayBuffers - before.arrayBuffers) / MiB;
  t.log(
    `bomb: ${blob.length} compressed bytes -> ${total} bytes in ${chunks} chunks; rss ${(before.rss / MiB).toFixed(1)} MiB before, peak ${(peakRss / MiB).toFixed(1)} MiB (+${rssGrowth.toFixed(1)}), ${(after.rss / MiB).toFixed(1)} MiB after; arrayBuffers ${(before.arrayBuffers / MiB).toFixed(1)} MiB before, peak ${(peakArrayBuffers / MiB).toFixed(1)} MiB (+${abGrowth.toFixed(1)})`,
  );
  t.is(total, GiB + prefix.length);
  t.true(allZeros);
  t.true(rssGrowth < 200, `rss grew by ${rssGrowth.toFixed(1)} MiB`);
  t.true(abGrowth < 200, `arrayBuffers grew by ${abGrowth.toFixed(1)} MiB`);
});

/** Writes `parts` into `d` (then ends it), counting the writes acknowledged; reads `limit` bytes, then stops reading. */
async function readThenStop(d: ReturnType<typeof createZstdFramesDecompress>, parts: readonly Buffer[], limit: number): Promise<{ acked: () => number }> {
  let acked = 0;
  for (const p of parts) d.write(p, () => acked++);
  d.end();
  let read = 0;
  await new Promise<void>((resolve) => {
    const onData = (c: Buffer): void => {
      read += c.length;
      if (read >= limit) {
        d.off('data', onData);
        d.pause();
        resolve();
      }
    };
    d.on('data', onData);
  });
  await sleep(300);
  return { acked: () => acked };
}

test.serial('a consumer that stops reading stops the decompression: the output held stays near the high-water marks', async (t) => {
  const { blob } = await bomb();
  const d = createZstdFramesDecompress({ chunkSize: 256 * 1024, readableHighWaterMark: MiB });
  await readThenStop(d, cut(blob, [1024]), 8 * MiB);
  t.true(d.readableLength <= 2 * MiB, `${d.readableLength} bytes buffered`);
  // It can still be destroyed mid-frame (the inner decompressor with it), without an error.
  const closed = new Promise<void>((resolve) => d.on('close', resolve));
  let errored = false;
  d.on('error', () => { errored = true; });
  d.destroy();
  await closed;
  t.false(errored);
  t.true(d.destroyed);
});

test.serial('a consumer that stops reading stops the input too: writes are acknowledged only as the frame decoder takes them', async (t) => {
  // Raw blocks: the compressed frame is as large as its content, so input waiting is visible.
  const content = randomBytes(8 * MiB);
  const frame = await zstd(['-c', '-1'], content);
  const parts = cut(Buffer.concat([zstdCompressSync(Buffer.from('small first frame')), frame]), [16 * 1024]);
  const d = createZstdFramesDecompress({ chunkSize: 256 * 1024, readableHighWaterMark: MiB });
  const { acked } = await readThenStop(d, parts, MiB);
  const ackedBytes = parts.slice(0, acked()).reduce((n, p) => n + p.length, 0);
  t.log(`${acked()}/${parts.length} writes (${ackedBytes} bytes) acknowledged after reading 1 MiB`);
  t.true(acked() < parts.length, 'the input waits for the reader');
  t.true(ackedBytes < 5 * MiB, `${ackedBytes} bytes acknowledged: no more than the read-ahead`);
  d.destroy();
});
