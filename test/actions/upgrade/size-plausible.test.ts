/**
 * The size metadata of a layer is believed only when its format can have written it for the layer's compressed size
 * (issue 9, lying sizes): gzip never inflates more than 1032 times, zstd never more than 32768 times, a gzip member
 * never shrinks its input by more than deflateBound, a zstd frame never by more than its block headers.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { GZIP_MAX_RATIO, ZSTD_MAX_RATIO, gzipIsize, zstdContentSize } from '../../../src/actions/upgrade/size.ts';

const isize = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

test('gzip at its best real ratio is believed; an ISIZE past 1032 times the compressed size is not', (t) => {
  const data = Buffer.alloc(50_000_000);
  const gz = gzipSync(data, { level: 9 });
  t.true(data.length / gz.length > 1000, `zlib reaches ${(data.length / gz.length).toFixed(1)}x`);
  t.is(gzipIsize(gz.subarray(-4), gz.length), data.length);
  t.is(gzipIsize(isize(GZIP_MAX_RATIO * 1000), 1000), GZIP_MAX_RATIO * 1000, 'exactly the bound');
  t.is(gzipIsize(isize(GZIP_MAX_RATIO * 1000 + 1), 1000), undefined, 'one byte over');
  t.is(gzipIsize(isize(0xffff_ffff), 300), undefined, 'a tiny layer claiming 4 GiB');
});

test('an ISIZE below what one gzip member of this size holds: a wrap past 4 GiB only for a layer of 4 GiB or more', (t) => {
  // 10 MiB of gzip whose trailer says 1 KiB: several members (the last one small), or a lie; a wrap would say 4 GiB.
  t.is(gzipIsize(isize(1024), 10 * 1024 * 1024), undefined);
  const members = Buffer.concat([gzipSync(randomBytes(200_000)), gzipSync(Buffer.from('tail'))]);
  t.is(gzipIsize(members.subarray(-4), members.length), undefined, 'two members, the last one tiny');
  t.is(gzipIsize(isize(0), 5 * 1024 * 1024), undefined, 'the empty last member of an eStargz layer');
  // From 4 GiB of compressed data up, the size must have wrapped.
  t.is(gzipIsize(isize(10), 5_000_000_000), 2 * 2 ** 32 + 10);
  t.is(gzipIsize(isize(10), 2 ** 32), 2 ** 32 + 10);
  // A small ISIZE in a small member is possible (a long file name in the header): believed.
  t.is(gzipIsize(isize(10), 300), 10);
});

test('zstd: the frame content size is believed within 32768 times the blob and when the frame can span it', (t) => {
  const data = Buffer.alloc(20_000_000, 'a');
  const zs = zstdCompressSync(data);
  t.true(data.length / zs.length > 20_000, `zstd reaches ${(data.length / zs.length).toFixed(0)}x`);
  t.is(zstdContentSize(zs.subarray(0, 18), zs.length), data.length);
  const random = randomBytes(1_000_000);
  const rz = zstdCompressSync(random);
  t.true(rz.length > random.length, 'incompressible: a little larger');
  t.is(zstdContentSize(rz.subarray(0, 18), rz.length), random.length);
  t.is(zstdContentSize(rz.subarray(0, 18)), random.length, 'without the blob size: unchecked, as before');
});

test('zstd: a content size over 32768 times the blob, or a first frame smaller than the blob, is no estimate', (t) => {
  // A single-segment header with an 8-byte Frame_Content_Size of 2^40 in a 100-byte blob.
  const head = Buffer.alloc(18);
  head.writeUInt32LE(0xfd2fb528, 0);
  head[4] = 0b1110_0000;
  head.writeBigUInt64LE(2n ** 40n, 5);
  t.is(zstdContentSize(head, 100), undefined);
  t.is(zstdContentSize(head), 2 ** 40);
  t.true(2 ** 40 > ZSTD_MAX_RATIO * 100);
  // Two frames: the first one's size is not the blob's.
  const frames = Buffer.concat([zstdCompressSync(Buffer.from('first frame')), zstdCompressSync(randomBytes(100_000))]);
  t.is(zstdContentSize(frames.subarray(0, 18), frames.length), undefined);
});
