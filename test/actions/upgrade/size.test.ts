import test from 'ava';
import { randomBytes } from 'node:crypto';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { mkdtemp, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipIsize, imageFileBytes, probeRange, rootfsMiB, slotBaseMiB, slotSize, zstdContentSize } from '../../../src/actions/upgrade/size.ts';
import { resolveConfig } from '../../../src/config/resolve.ts';

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

const MiB = 1024 * 1024;

test('with no size configured the base is the size of the image being replaced, not 3072 MiB', (t) => {
  t.is(resolveConfig([]).imageSizeMiB, null, 'DEFAULT_IMAGE_SIZE unset is told apart from a set value');
  t.is(slotBaseMiB(null, 96 * MiB), 96);
  t.is(slotBaseMiB(undefined, 96 * MiB), 96);
  t.is(slotBaseMiB(null, 96 * MiB + 1), 97, 'rounded up to whole MiB');
  // A 512 MiB COS_STATE holding two 96 MiB images has room for a third: the slot stays 96 MiB.
  t.deepEqual(slotSize(slotBaseMiB(null, 96 * MiB), 20 * MiB), { sizeMiB: 96, estimateBytes: 20 * MiB, grown: false });
});

test('a configured size wins over the image being replaced; no image and no setting gives elemental\'s 3072 MiB', (t) => {
  t.is(slotBaseMiB(48, 96 * MiB), 48);
  t.is(slotBaseMiB(4096, 96 * MiB), 4096);
  t.is(slotBaseMiB(null, null), 3072);
  t.is(slotBaseMiB(null, 0), 3072, 'an empty file sizes nothing');
});

test('the base sized like the replaced image still grows to fit a bigger rootfs', (t) => {
  const s = slotSize(slotBaseMiB(null, 32 * MiB), 100 * MiB);
  t.true(s.grown);
  t.is(s.sizeMiB, rootfsMiB(100 * MiB) as number);
  t.is(rootfsMiB(100 * MiB), Math.ceil(100 * 1.2) + 32);
  t.is(rootfsMiB(null), null);
});

test('imageFileBytes: the apparent size of a (sparse) image file; null when there is none; other errors are thrown', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-size-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const img = path.join(dir, 'active.img');
  await writeFile(img, '');
  await truncate(img, 96 * MiB);
  t.is(await imageFileBytes(img), 96 * MiB);
  t.is(await imageFileBytes(path.join(dir, 'missing.img')), null);
  t.is(await imageFileBytes(path.join(img, 'below-a-file')), null, 'ENOTDIR is absent');
  await symlink('loop', path.join(dir, 'loop'));
  await t.throwsAsync(imageFileBytes(path.join(dir, 'loop')), { code: 'ELOOP' });
});
