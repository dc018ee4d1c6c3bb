import test from 'ava';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freeBytes, mount, syncFs } from '../../src/partitions/index.ts';
import { runner, tempDir } from './_util.ts';

const MiB = 1024 * 1024;

test('freeBytes reports the free space of the filesystem holding the path, and drops when a file is written', async (t) => {
  const dir = await tempDir(t);
  const target = path.join(dir, 'fs');
  const m = await mount(runner, 'tmpfs', target, { fstype: 'tmpfs', options: ['size=4m'], mkdir: true });
  t.teardown(() => m.close());
  const before = await freeBytes(target);
  t.true(before > 3 * MiB && before <= 4 * MiB);
  await writeFile(path.join(target, 'f'), Buffer.alloc(2 * MiB, 1));
  const after = await freeBytes(path.join(target, 'f'));
  t.true(before - after >= 2 * MiB);
});

test('freeBytes of a missing path rejects with ENOENT', async (t) => {
  const dir = await tempDir(t);
  await t.throwsAsync(freeBytes(path.join(dir, 'missing')), { code: 'ENOENT' });
});

test('syncFs fsyncs a file and a directory, and rejects for a missing path', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'f');
  await writeFile(file, 'x');
  await t.notThrowsAsync(syncFs(file));
  await t.notThrowsAsync(syncFs(dir));
  await t.throwsAsync(syncFs(path.join(dir, 'missing')), { code: 'ENOENT' });
});
