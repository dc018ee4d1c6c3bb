/**
 * CleanupStack: undo jobs run last-in first-out; onError/onSuccess jobs only on their path; every job runs even when
 * an earlier one fails; failures come back as errors naming the job (never thrown).
 */
import test from 'ava';
import { CleanupStack } from '../../src/sys/cleanup.ts';

test('jobs run in reverse order of their push, each once', async (t) => {
  const ran: string[] = [];
  const c = new CleanupStack();
  c.push('unmount', () => void ran.push('unmount'));
  c.push('detach loop', async () => {
    await new Promise((resolve) => setImmediate(resolve));
    ran.push('detach loop');
  });
  c.push('release lock', () => void ran.push('release lock'));
  t.deepEqual(await c.run(false), []);
  t.deepEqual(ran, ['release lock', 'detach loop', 'unmount']);
  t.deepEqual(await c.run(false), [], 'the stack is empty after a run');
  t.is(ran.length, 3);
});

test('an async job is awaited before the next one starts', async (t) => {
  const ran: string[] = [];
  const c = new CleanupStack();
  c.push('first pushed', () => void ran.push('first pushed'));
  c.push('slow', async () => {
    await new Promise((resolve) => setTimeout(resolve, 20));
    ran.push('slow done');
  });
  await c.run(false);
  t.deepEqual(ran, ['slow done', 'first pushed']);
});

test('pushOnError jobs run only when the action failed, pushOnSuccess only when it succeeded, push always', async (t) => {
  const build = (ran: string[]): CleanupStack => {
    const c = new CleanupStack();
    c.push('always-1', () => void ran.push('always-1'));
    c.pushOnError('remove transition', () => void ran.push('remove transition'));
    c.pushOnSuccess('commit', () => void ran.push('commit'));
    c.push('always-2', () => void ran.push('always-2'));
    return c;
  };
  const failed: string[] = [];
  await build(failed).run(true);
  t.deepEqual(failed, ['always-2', 'remove transition', 'always-1']);
  const ok: string[] = [];
  await build(ok).run(false);
  t.deepEqual(ok, ['always-2', 'commit', 'always-1']);
});

test('every job runs even when earlier ones fail; the failures are returned in run order, naming the job, with the cause', async (t) => {
  const ran: string[] = [];
  const c = new CleanupStack();
  const boom = new Error('device busy');
  c.push('unmount /run/cos/state', () => {
    ran.push('unmount');
    throw boom;
  });
  c.pushOnError('remove transition', async () => {
    ran.push('remove');
    await Promise.resolve();
    throw 'a string, not an Error'; // eslint-disable-line no-throw-literal
  });
  c.push('release lock', () => void ran.push('release'));
  const errors = await c.run(true);
  t.deepEqual(ran, ['release', 'remove', 'unmount'], 'nothing skipped after a failure');
  t.deepEqual(errors.map((e) => e.message), [
    'cleanup: remove transition: a string, not an Error',
    'cleanup: unmount /run/cos/state: device busy',
  ]);
  t.true(errors.every((e) => e instanceof Error));
  t.is(errors[1]?.cause, boom);
});

test('run never throws, even when every job fails', async (t) => {
  const c = new CleanupStack();
  c.push('a', () => Promise.reject(new Error('a failed')));
  c.push('b', () => {
    throw new Error('b failed');
  });
  const errors = await c.run(false);
  t.is(errors.length, 2);
});

test('a job pushed while the stack runs (by another job) runs too, before the older ones', async (t) => {
  const ran: string[] = [];
  const c = new CleanupStack();
  c.push('outer', () => void ran.push('outer'));
  c.push('pushes more', () => {
    ran.push('pushes more');
    c.push('late', () => void ran.push('late'));
  });
  await c.run(false);
  t.deepEqual(ran, ['pushes more', 'late', 'outer']);
});
