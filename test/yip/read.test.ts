import test from 'ava';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readBytesSync, readTextSync } from '../../src/yip/read.ts';

async function dir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const d = await mkdtemp(path.join(tmpdir(), 'yip-read-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}

test('a file is read whole, whatever its size against the first buffer (empty, small, 1 MiB + 1 byte)', async (t) => {
  const d = await dir(t);
  for (const size of [0, 1, 4095, 4096, 4097, 1024 * 1024 + 1]) {
    const bytes = Buffer.alloc(size, 0x61 + (size % 26));
    await writeFile(path.join(d, `f${size}`), bytes);
    t.true(readBytesSync(path.join(d, `f${size}`), 4 * 1024 * 1024).equals(bytes), `size ${size}`);
  }
});

test('a procfs file (fstat says 0 bytes) is read to its end', (t) => {
  const text = readTextSync('/proc/self/status');
  t.true(text.length > 100);
  t.regex(text, /^Name:/);
  t.regex(text, /\nPid:\s+\d+/);
});

test('over max bytes is an error naming the file; a link to /dev/zero or a FIFO is not read', async (t) => {
  const d = await dir(t);
  await writeFile(path.join(d, 'big'), Buffer.alloc(10_001));
  t.is(readBytesSync(path.join(d, 'big'), 10_001).length, 10_001);
  t.throws(() => readBytesSync(path.join(d, 'big'), 10_000), { message: `${path.join(d, 'big')} is over 10000 bytes` });
  t.throws(() => readBytesSync(path.join(d, 'big'), 10_000, { name: 'the config' }), { message: 'the config is over 10000 bytes' });
  await symlink('/dev/zero', path.join(d, 'zero'));
  t.throws(() => readBytesSync(path.join(d, 'zero'), 10), { message: /is not a regular file/ });
  t.throws(() => readBytesSync(path.join(d, 'zero'), 10, { noFollow: true }), { code: 'ELOOP' });
  // A FIFO without a writer neither hangs nor is read.
  execFileSync('mkfifo', [path.join(d, 'fifo')]);
  t.throws(() => readBytesSync(path.join(d, 'fifo'), 10), { message: /is not a regular file/ });
});
