import test from 'ava';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { shellConsole } from '../../src/sys/console.ts';

test('sh -c: combined output, the exit code as a result, each script in a new shell, stdin empty', async (t) => {
  const c = shellConsole({ root: '/' });
  t.deepEqual(await c.run('echo out; echo err >&2; exit 3'), { exitCode: 3, output: 'out\nerr\n' });
  t.deepEqual(await c.run('X=1'), { exitCode: 0, output: '' });
  t.deepEqual(await c.run('echo "[$X]"; cat'), { exitCode: 0, output: '[]\n' }, 'no state shared; stdin is /dev/null');
});

test('with another root, the script runs chrooted into it and reads its files, not the host\'s', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'console-root-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'bin'), { recursive: true });
  await mkdir(path.join(dir, 'etc'), { recursive: true });
  await copyFile('/bin/busybox', path.join(dir, 'bin/busybox'));
  for (const tool of ['sh', 'cat']) await (await import('node:fs/promises')).symlink('busybox', path.join(dir, 'bin', tool));
  await writeFile(path.join(dir, 'etc/os-release'), 'ID=inside\n');
  const c = shellConsole({ root: dir, env: { PATH: '/bin' } });
  t.deepEqual(await c.run('cat /etc/os-release; test -e /work'), { exitCode: 1, output: 'ID=inside\n' });
});
