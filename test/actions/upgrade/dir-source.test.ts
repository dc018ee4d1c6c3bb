import test from 'ava';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { estimateTree, RUNNING_ROOT_SKIPPED } from '../../../src/actions/upgrade/dir-source.ts';

test('estimateTree: file bytes plus a block per directory, link and special file; the running root skips its mounts', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'dir-estimate-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'etc'));
  await writeFile(path.join(dir, 'etc/os-release'), 'x'.repeat(1000));
  await symlink('etc', path.join(dir, 'link'));
  for (const d of RUNNING_ROOT_SKIPPED) {
    await mkdir(path.join(dir, d, 'sub'), { recursive: true });
    await writeFile(path.join(dir, d, 'sub', 'big'), Buffer.alloc(100_000));
  }
  const dirs = 1 + RUNNING_ROOT_SKIPPED.length;
  t.is(await estimateTree({ dir, skipContentsOf: RUNNING_ROOT_SKIPPED }), 1000 + 4096 * (dirs + 1), 'contents of /host /proc /sys /dev /run not counted');
  t.is(await estimateTree({ dir, skipContentsOf: [] }), 1000 + 4096 * (dirs + 1 + RUNNING_ROOT_SKIPPED.length) + 100_000 * RUNNING_ROOT_SKIPPED.length);
});
