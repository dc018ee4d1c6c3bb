import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseSuperblock, readImageIdentity } from '../../src/partitions/superblock.ts';

const run = promisify(execFile);

test('the identity of an ext2 image is the UUID and label blkid reports; a rename or hard link keeps it', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sb-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const img = path.join(dir, 'a.img');
  await run('truncate', ['-s', '8M', img]);
  await run('mkfs.ext2', ['-q', '-F', '-L', 'COS_ACTIVE', img]);
  const { stdout } = await run('blkid', ['-p', '-s', 'UUID', '-o', 'value', img]);
  t.deepEqual(await readImageIdentity(img), { fs: 'ext2', id: stdout.trim(), label: 'COS_ACTIVE' });
  await run('tune2fs', ['-L', 'COS_PASSIVE', img]);
  await run('mv', [img, path.join(dir, 'b.img')]);
  t.deepEqual(await readImageIdentity(path.join(dir, 'b.img')), { fs: 'ext2', id: stdout.trim(), label: 'COS_PASSIVE' });
  t.is(await readImageIdentity(img), undefined, 'a missing file has no identity');
});

test('a squashfs image is identified by its mkfs time and size; anything else has none', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sb-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'tree'));
  await writeFile(path.join(dir, 'tree/f'), 'x');
  await run('mksquashfs', [path.join(dir, 'tree'), path.join(dir, 'r.squashfs'), '-quiet', '-noappend', '-mkfs-time', '1700000000']);
  const id = await readImageIdentity(path.join(dir, 'r.squashfs'));
  t.is(id?.fs, 'squashfs');
  t.regex(id?.id ?? '', /^squashfs:1700000000:\d+$/);
  t.deepEqual(parseSuperblock(Buffer.alloc(2048)), { fs: null, id: null, label: null });
  t.deepEqual(parseSuperblock(Buffer.from('short')), { fs: null, id: null, label: null });
});
