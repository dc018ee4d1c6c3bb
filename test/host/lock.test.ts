/**
 * The host lock (one upgrade or rollback at a time): an exclusive file holding the owner's pid and what it does. A
 * live holder is refused with BUSY naming it; a lock left by a process that is gone is taken over.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { acquireLock } from '../../src/host/lock.ts';
import { AgentError } from '../../src/model/errors.ts';

async function lockFile(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-lock-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, 'run/cos-agent/upgrade.lock');
}

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  const pid = child.pid as number;
  await new Promise((resolve) => child.once('exit', resolve));
  return pid;
}

test('the lock file holds the pid and what holds it; its directory is created', async (t) => {
  const file = await lockFile(t);
  const lock = await acquireLock(file, 'upgrade tx-1');
  t.is(lock.path, file);
  t.is(await readFile(file, 'utf8'), `${process.pid}\nupgrade tx-1\n`);
  await lock.release();
});

test('a second acquire while the lock is held fails with BUSY naming the holder, its pid and the lock', async (t) => {
  const file = await lockFile(t);
  const lock = await acquireLock(file, 'upgrade tx-1');
  const err = await t.throwsAsync(acquireLock(file, 'rollback'), { instanceOf: AgentError });
  t.is(err?.code, 'BUSY');
  t.true(err?.message.includes('upgrade tx-1'), err?.message);
  t.true(err?.message.includes(`pid ${process.pid}`), err?.message);
  t.true(err?.message.includes(file), err?.message);
  t.is(await readFile(file, 'utf8'), `${process.pid}\nupgrade tx-1\n`, 'the holder\'s lock is untouched');
  await lock.release();
});

test('release removes the file, so the next acquire succeeds; a second release is harmless', async (t) => {
  const file = await lockFile(t);
  const first = await acquireLock(file, 'upgrade tx-1');
  await first.release();
  await t.throwsAsync(stat(file), { code: 'ENOENT' });
  const second = await acquireLock(file, 'rollback --permanent');
  t.is(await readFile(file, 'utf8'), `${process.pid}\nrollback --permanent\n`);
  await first.release(); // already released: must not remove the new holder's lock
  t.is(await readFile(file, 'utf8'), `${process.pid}\nrollback --permanent\n`);
  await second.release();
});

test('a stale lock left by a process that is gone is taken over', async (t) => {
  const file = await lockFile(t);
  await acquireLock(file, 'placeholder').then((l) => l.release()); // creates the directory
  const pid = await deadPid();
  await writeFile(file, `${pid}\nupgrade of a crashed run\n`);
  const lock = await acquireLock(file, 'upgrade tx-2');
  t.is(await readFile(file, 'utf8'), `${process.pid}\nupgrade tx-2\n`);
  await lock.release();
});

test('a lock held by another live process is refused, naming that process', async (t) => {
  const file = await lockFile(t);
  await acquireLock(file, 'placeholder').then((l) => l.release());
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  t.teardown(() => {
    child.kill();
  });
  await writeFile(file, `${child.pid}\nupgrade in another cosctl\n`);
  const err = await t.throwsAsync(acquireLock(file, 'upgrade tx-3'), { instanceOf: AgentError });
  t.is(err?.code, 'BUSY');
  t.true(err?.message.includes(`upgrade in another cosctl, pid ${child.pid}`), err?.message);
});

test('a lock file without a pid is held while fresh (another process may be taking it), taken over once old; no temp names stay', async (t) => {
  const file = await lockFile(t);
  await acquireLock(file, 'placeholder').then((l) => l.release());
  await writeFile(file, '');
  const err = await t.throwsAsync(acquireLock(file, 'upgrade tx-4'), { instanceOf: AgentError });
  t.is(err?.code, 'BUSY');
  const old = new Date(Date.now() - 60_000);
  await utimes(file, old, old);
  const lock = await acquireLock(file, 'upgrade tx-4');
  t.is(await readFile(file, 'utf8'), `${process.pid}\nupgrade tx-4\n`);
  await lock.release();
  t.deepEqual(await readdir(path.dirname(file)), [], 'the private names used to link the lock into place are gone');
});

test('a stale lock found by many at once is taken over by exactly one of them; the others are BUSY, no name is left', async (t) => {
  const file = await lockFile(t);
  await acquireLock(file, 'placeholder').then((l) => l.release());
  for (let round = 0; round < 20; round++) {
    await writeFile(file, `${await deadPid()}\nupgrade of a crashed run\n`);
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_v, i) => acquireLock(file, `contender ${i}`)));
    const won = results.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof acquireLock>>> => r.status === 'fulfilled');
    t.is(won.length, 1, `round ${round}: one holder`);
    for (const r of results) if (r.status === 'rejected') t.is((r.reason as AgentError).code, 'BUSY');
    await won[0]?.value.release();
    t.deepEqual(await readdir(path.dirname(file)), [], `round ${round}: no lock, temp or stale name left`);
  }
});
