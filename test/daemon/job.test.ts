/**
 * The JobManager (src/daemon/job.ts) driven with fake actions: one job at a time (BUSY), cancel before and after the
 * point of no return, progress and operation announcements, error mapping, idle(). No root, no host.
 */
import test from 'ava';
import type { AgentDeps, Progress } from '../../src/host/deps.ts';
import { AgentError, CancelledError } from '../../src/model/errors.ts';
import type { UpgradeOptions, UpgradeOutcome } from '../../src/actions/upgrade/upgrade.ts';
import type { CheckOutcome } from '../../src/actions/check.ts';
import type { MarkOutcome } from '../../src/actions/mark.ts';
import {
  JobManager,
  RESULT_CANCELLED,
  RESULT_FAILED,
  RESULT_OK,
  type JobActions,
  type JobKind,
  type JobListener,
  type JobOutcome,
} from '../../src/daemon/job.ts';

const NOW = new Date('2026-06-01T10:00:00Z');
/** The job machinery only reads the clock; the fake actions ignore the rest. */
const DEPS = { now: () => NOW } as unknown as AgentDeps;

const UPGRADE_OUTCOME: UpgradeOutcome = {
  transaction: 'set-by-the-fake',
  target: 'system',
  image: 'registry.example/os:v2',
  digest: 'sha256:2222',
  version: '2',
  file: 'cOS/passive.img',
  rotated: true,
  keepPassiveReason: null,
  verification: 'skipped',
  verificationDetail: 'test',
  imageSizeMiB: 64,
  unchanged: null,
  warnings: [],
  nextBoot: null,
};
const CHECK_OUTCOME: CheckOutcome = { image: 'registry.example/os:v2', digest: 'sha256:2222', currentDigest: 'sha256:1111', updateAvailable: true };
const MARK_OUTCOME: MarkOutcome = { assessmentChanged: true, slot: 'active', warnings: [] };

type Event =
  | { type: 'operation'; op: string; transaction: string | null }
  | { type: 'progress'; operation: string; message: string; transaction: string }
  | { type: 'completed'; transaction: string; kind: JobKind; result: number; code: string | null; message: string | null; outcome: JobOutcome };

function recorder(): { listener: JobListener; events: Event[]; errors: Array<AgentError | null> } {
  const events: Event[] = [];
  const errors: Array<AgentError | null> = [];
  const listener: JobListener = {
    operation: (op, transaction) => events.push({ type: 'operation', op, transaction }),
    progress: (p, transaction) => events.push({ type: 'progress', operation: p.operation, message: p.message, transaction }),
    completed: (transaction, kind, result, error, outcome) => {
      errors.push(error);
      events.push({ type: 'completed', transaction, kind, result, code: error?.code ?? null, message: error?.message ?? null, outcome });
    },
  };
  return { listener, events, errors };
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Actions that fail the test when called, overridden per test. */
function actions(over: Partial<JobActions> = {}): JobActions {
  const unexpected = (name: string) => async (): Promise<never> => {
    throw new Error(`unexpected call of ${name}`);
  };
  return { upgrade: unexpected('upgrade'), rollback: unexpected('rollback'), checkForUpdate: unexpected('checkForUpdate'), markBooted: unexpected('markBooted'), runStageAction: unexpected('runStageAction'), ...over };
}

/**
 * A fake upgrade that waits until the test finishes it. Like the real one it throws a CancelledError when its signal
 * is aborted; `got` holds what it was called with (the options carry onProgress and onCommit).
 */
function gatedUpgrade(): { upgrade: JobActions['upgrade']; got: { deps?: AgentDeps; opts?: UpgradeOptions }; finish: ReturnType<typeof deferred<UpgradeOutcome>> } {
  const got: { deps?: AgentDeps; opts?: UpgradeOptions } = {};
  const finish = deferred<UpgradeOutcome>();
  const upgrade: JobActions['upgrade'] = (deps, opts = {}) => {
    got.deps = deps;
    got.opts = opts;
    return new Promise<UpgradeOutcome>((resolve, reject) => {
      opts.signal?.addEventListener('abort', () => reject(new CancelledError()), { once: true });
      finish.promise.then(resolve, reject);
    });
  };
  return { upgrade, got, finish };
}

const progress = (operation: Progress['operation'], message: string): Progress => ({ operation, message, percent: 0, bytesDone: 0, bytesTotal: 0 });

test('a second request while a job runs is refused with BUSY naming the running kind and transaction; the running job goes on', async (t) => {
  const gate = gatedUpgrade();
  let checks = 0;
  const rec = recorder();
  const jobs = new JobManager(DEPS, rec.listener, actions({
    upgrade: gate.upgrade,
    checkForUpdate: async () => {
      checks++;
      return CHECK_OUTCOME;
    },
  }));
  const tx = jobs.upgrade({ image: 'registry.example/os:v2', noVerify: true });
  t.regex(tx, /^[0-9a-f-]{36}$/);
  t.deepEqual(jobs.running, { transaction: tx, kind: 'upgrade', startedAt: '2026-06-01T10:00:00.000Z' });
  // the action got the manager's deps, the caller's options and the job's transaction
  t.is(gate.got.deps, DEPS);
  t.like(gate.got.opts, { image: 'registry.example/os:v2', noVerify: true, transaction: tx });
  t.false(gate.got.opts?.signal?.aborted);

  for (const second of [() => jobs.check({}), () => jobs.upgrade({}), () => jobs.rollback({}), () => jobs.mark(true)]) {
    const err = t.throws(second, { instanceOf: AgentError });
    t.is(err?.code, 'BUSY');
    t.is(err?.message, `busy: upgrade transaction ${tx} is running`);
  }
  t.is(checks, 0, 'a refused request runs nothing');
  t.deepEqual(jobs.running, { transaction: tx, kind: 'upgrade', startedAt: '2026-06-01T10:00:00.000Z' });

  gate.finish.resolve(UPGRADE_OUTCOME);
  await jobs.idle();
  t.deepEqual(rec.events, [
    { type: 'operation', op: 'checking', transaction: tx },
    { type: 'operation', op: 'idle', transaction: null },
    { type: 'completed', transaction: tx, kind: 'upgrade', result: RESULT_OK, code: null, message: null, outcome: UPGRADE_OUTCOME },
  ]);
  t.is(jobs.running, null);

  // once it has finished the next request runs
  const next = jobs.check({ image: 'registry.example/os:v3' });
  t.not(next, tx);
  await jobs.idle();
  t.is(checks, 1);
  t.like(rec.events.at(-1), { type: 'completed', transaction: next, kind: 'check', result: RESULT_OK, outcome: CHECK_OUTCOME });
});

test('cancel() before the commit aborts the signal the upgrade got; the job completes cancelled, idle announced before completed', async (t) => {
  const gate = gatedUpgrade();
  const rec = recorder();
  const jobs = new JobManager(DEPS, rec.listener, actions({ upgrade: gate.upgrade }));
  const tx = jobs.upgrade({});
  const signal = gate.got.opts?.signal;
  t.false(signal?.aborted);

  t.true(jobs.cancel());
  t.true(signal?.aborted);
  t.true(signal?.reason instanceof AgentError);
  t.is((signal?.reason as AgentError).code, 'STAGE_FAILED');
  t.is((signal?.reason as AgentError).message, 'cancelled');
  await jobs.idle();

  t.deepEqual(rec.events, [
    { type: 'operation', op: 'checking', transaction: tx },
    { type: 'operation', op: 'idle', transaction: null },
    { type: 'completed', transaction: tx, kind: 'upgrade', result: RESULT_CANCELLED, code: 'STAGE_FAILED', message: 'upgrade cancelled', outcome: null },
  ]);
  t.true(rec.errors[0] instanceof CancelledError, 'the action\'s own AgentError is passed through');
  t.is(jobs.running, null);
  t.false(jobs.cancel(), 'nothing left to cancel');
});

test('cancel() after the upgrade reached its commit (onCommit) is refused: the signal stays untouched and the job completes OK', async (t) => {
  const gate = gatedUpgrade();
  const rec = recorder();
  const jobs = new JobManager(DEPS, rec.listener, actions({ upgrade: gate.upgrade }));
  const tx = jobs.upgrade({});
  t.is(typeof gate.got.opts?.onCommit, 'function');

  gate.got.opts?.onCommit?.();
  t.false(jobs.cancel());
  t.false(jobs.cancel(), 'still refused');
  t.false(gate.got.opts?.signal?.aborted);
  t.deepEqual(jobs.running?.transaction, tx);

  gate.finish.resolve(UPGRADE_OUTCOME);
  await jobs.idle();
  t.deepEqual(rec.events.at(-1), { type: 'completed', transaction: tx, kind: 'upgrade', result: RESULT_OK, code: null, message: null, outcome: UPGRADE_OUTCOME });
});

test('a job that says whether it was cancelled is believed over the signal: a cancel that reached a job process past its point of no return, then a failure, is FAILED, not CANCELLED', async (t) => {
  const rec = recorder();
  const failed = deferred<UpgradeOutcome>();
  const jobs = new JobManager(DEPS, rec.listener, actions({
    // as src/daemon/job-process.ts reports it: the job process's own verdict on the error
    upgrade: () => failed.promise,
  }));
  const tx = jobs.upgrade({});
  t.true(jobs.cancel(), 'the commit message has not arrived yet: the cancel is sent');
  failed.reject(Object.assign(new AgentError('STAGE_FAILED', 'switching slots: rename failed'), { cancelled: false }));
  await jobs.idle();
  t.like(rec.events.at(-1), { type: 'completed', transaction: tx, kind: 'upgrade', result: RESULT_FAILED, code: 'STAGE_FAILED' });

  const cancelled = deferred<UpgradeOutcome>();
  const jobs2 = new JobManager(DEPS, rec.listener, actions({ upgrade: () => cancelled.promise }));
  const tx2 = jobs2.upgrade({});
  cancelled.reject(Object.assign(new AgentError('STAGE_FAILED', 'cancelled (SIGTERM)'), { cancelled: true }));
  await jobs2.idle();
  t.like(rec.events.at(-1), { type: 'completed', transaction: tx2, result: RESULT_CANCELLED }, 'a cancel the job took itself (its SIGTERM) is CANCELLED though nobody called cancel() here');
});

test('cancel() with nothing running, or while a job other than an upgrade runs, returns false and changes nothing', async (t) => {
  const rec = recorder();
  const check = deferred<CheckOutcome>();
  const marks: boolean[] = [];
  const jobs = new JobManager(DEPS, rec.listener, actions({
    checkForUpdate: () => check.promise,
    markBooted: async (_deps, good) => {
      marks.push(good);
      return MARK_OUTCOME;
    },
  }));
  t.false(jobs.cancel());
  t.deepEqual(rec.events, []);

  const tx = jobs.check({ recovery: true });
  t.false(jobs.cancel());
  t.is(jobs.running?.kind, 'check');
  check.resolve(CHECK_OUTCOME);
  await jobs.idle();
  t.deepEqual(rec.events.at(-1), { type: 'completed', transaction: tx, kind: 'check', result: RESULT_OK, code: null, message: null, outcome: CHECK_OUTCOME });

  const bad = jobs.mark(false);
  t.false(jobs.cancel());
  await jobs.idle();
  t.deepEqual(marks, [false]);
  // a mark job opens with 'finalizing' (an upgrade or check with 'checking')
  t.deepEqual(rec.events.slice(-3), [
    { type: 'operation', op: 'finalizing', transaction: bad },
    { type: 'operation', op: 'idle', transaction: null },
    { type: 'completed', transaction: bad, kind: 'mark-bad', result: RESULT_OK, code: null, message: null, outcome: MARK_OUTCOME },
  ]);
});

test('progress reaches the listener in order, each change of operation announced once before its progress', async (t) => {
  const gate = gatedUpgrade();
  const rec = recorder();
  const jobs = new JobManager(DEPS, rec.listener, actions({ upgrade: gate.upgrade }));
  const tx = jobs.upgrade({});
  const report = gate.got.opts?.onProgress;
  if (report === undefined) return t.fail('the upgrade got no onProgress');
  report(progress('downloading', 'layer 1/2'));
  report(progress('downloading', 'layer 2/2'));
  report(progress('verifying', 'signature'));
  report(progress('staging', 'image'));
  report(progress('staging', 'label'));
  gate.finish.resolve(UPGRADE_OUTCOME);
  await jobs.idle();
  t.deepEqual(rec.events, [
    { type: 'operation', op: 'checking', transaction: tx },
    { type: 'operation', op: 'downloading', transaction: tx },
    { type: 'progress', operation: 'downloading', message: 'layer 1/2', transaction: tx },
    { type: 'progress', operation: 'downloading', message: 'layer 2/2', transaction: tx },
    { type: 'operation', op: 'verifying', transaction: tx },
    { type: 'progress', operation: 'verifying', message: 'signature', transaction: tx },
    { type: 'operation', op: 'staging', transaction: tx },
    { type: 'progress', operation: 'staging', message: 'image', transaction: tx },
    { type: 'progress', operation: 'staging', message: 'label', transaction: tx },
    { type: 'operation', op: 'idle', transaction: null },
    { type: 'completed', transaction: tx, kind: 'upgrade', result: RESULT_OK, code: null, message: null, outcome: UPGRADE_OUTCOME },
  ]);
});

test('an action throwing a plain Error fails the job with STAGE_FAILED and its message; an AgentError keeps its code', async (t) => {
  const rec = recorder();
  const boom = new Error('disk on fire');
  const jobs = new JobManager(DEPS, rec.listener, actions({
    rollback: async () => {
      throw boom;
    },
    markBooted: async () => {
      throw new AgentError('GRUBENV_CORRUPT', 'grubenv is corrupt');
    },
  }));
  const tx = jobs.rollback({ permanent: true });
  await jobs.idle();
  t.deepEqual(rec.events, [
    { type: 'operation', op: 'finalizing', transaction: tx },
    { type: 'operation', op: 'idle', transaction: null },
    { type: 'completed', transaction: tx, kind: 'rollback', result: RESULT_FAILED, code: 'STAGE_FAILED', message: 'disk on fire', outcome: null },
  ]);
  t.is(rec.errors[0]?.cause, boom);

  const good = jobs.mark(true);
  await jobs.idle();
  t.deepEqual(rec.events.at(-1), { type: 'completed', transaction: good, kind: 'mark-good', result: RESULT_FAILED, code: 'GRUBENV_CORRUPT', message: 'grubenv is corrupt', outcome: null });
});

test('idle() resolves only after the job has completed (listener told, no job running); with nothing running at once', async (t) => {
  const gate = gatedUpgrade();
  const rec = recorder();
  const jobs = new JobManager(DEPS, rec.listener, actions({ upgrade: gate.upgrade }));
  await jobs.idle();

  const tx = jobs.upgrade({});
  let idle = false;
  const waiting = jobs.idle().then(() => {
    idle = true;
  });
  await new Promise((r) => setImmediate(r));
  t.false(idle, 'still running');
  t.false(rec.events.some((e) => e.type === 'completed'));

  gate.finish.resolve(UPGRADE_OUTCOME);
  await waiting;
  t.true(idle);
  t.is(jobs.running, null);
  t.deepEqual(rec.events.filter((e) => e.type === 'completed').map((e) => e.type === 'completed' && [e.transaction, e.result]), [[tx, RESULT_OK]]);
});
