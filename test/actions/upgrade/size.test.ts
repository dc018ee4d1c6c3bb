import test from 'ava';
import { randomBytes } from 'node:crypto';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { gzipIsize, probeRange, slotSize, zstdContentSize } from '../../../src/actions/upgrade/size.ts';

test('the gzip ISIZE trailer gives the uncompressed size, unwrapped past 4 GiB', (t) => {
  const data = Buffer.alloc(300_000, 'a');
  const gz = gzipSync(data);
  t.is(gzipIsize(gz.subarray(-4), gz.length), 300_000);
  const wrapped = Buffer.alloc(4);
  wrapped.writeUInt32LE(10);
  t.is(gzipIsize(wrapped, 5_000_000_000), 2 * 2 ** 32 + 10);
  t.is(gzipIsize(Buffer.alloc(2), 1), undefined);
  // Incompressible data: gzip output is a little larger than its input, which is not a wrap.
  const random = randomBytes(30_000_000);
  const rgz = gzipSync(random);
  t.true(rgz.length > random.length);
  t.is(gzipIsize(rgz.subarray(-4), rgz.length), random.length);
});

test('the zstd frame header gives the content size that Node writes', (t) => {
  for (const n of [0, 1, 255, 256, 300, 65_791, 70_000, 5_000_000]) {
    t.is(zstdContentSize(zstdCompressSync(Buffer.alloc(n, 'z')).subarray(0, 18)), n, `size ${n}`);
  }
  t.is(zstdContentSize(Buffer.from('not zstd at all')), undefined);
});

test('the slot grows only when the estimated rootfs would not fit the configured size', (t) => {
  t.deepEqual(slotSize(3072, 400 * 1024 * 1024), { sizeMiB: 3072, estimateBytes: 400 * 1024 * 1024, grown: false });
  const big = slotSize(16, 24 * 1024 * 1024);
  t.true(big.grown);
  t.is(big.sizeMiB, Math.ceil(24 * 1.2) + 32);
  t.deepEqual(slotSize(48, null), { sizeMiB: 48, estimateBytes: null, grown: false });
});

test('the probe reads the gzip trailer or the zstd head, nothing for plain tar', (t) => {
  t.deepEqual(probeRange('gzip', 1000), [996, 4]);
  t.deepEqual(probeRange('zstd', 1000), [0, 18]);
  t.is(probeRange('none', 1000), undefined);
});
