import test from 'ava';
import { mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { overwriteFileSync } from '../../src/yip/write.ts';

test('overwriteFileSync has os.WriteFile\'s effect: new files 0666 & ~umask, old ones rewritten in place, cut to the new length', async (t) => {
  const d = await mkdtemp(path.join(tmpdir(), 'yip-write-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  const f = path.join(d, 'f');
  const old = process.umask(0o022);
  try {
    overwriteFileSync(f, 'a long first content\n');
    t.is((await stat(f)).mode & 0o777, 0o644);
  } finally {
    process.umask(old);
  }
  const ino = (await stat(f)).ino;
  overwriteFileSync(f, 'short\n');
  t.is(await readFile(f, 'utf8'), 'short\n');
  t.is((await stat(f)).ino, ino, 'the same inode (hard links and open readers see the new bytes, as with O_TRUNC)');
  overwriteFileSync(f, Buffer.from([0, 1, 2]));
  t.deepEqual([...await readFile(f)], [0, 1, 2]);
  overwriteFileSync(f, '');
  t.is((await stat(f)).size, 0);
  // A link in the last place is followed, as os.WriteFile does (callers resolve links inside the root first).
  await writeFile(path.join(d, 'target'), 'x'.repeat(100));
  await symlink('target', path.join(d, 'link'));
  overwriteFileSync(path.join(d, 'link'), 'via link');
  t.is(await readFile(path.join(d, 'target'), 'utf8'), 'via link');
  t.throws(() => overwriteFileSync(path.join(d, 'missing/dir/f'), 'x'), { code: 'ENOENT' });
});
