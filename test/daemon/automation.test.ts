/**
 * The glue of config watching and the update schedule (src/daemon/automation.ts), in process: a real AgentDaemon, a
 * real ConfigWatcher on a temp root (inotify), the Scheduler on a ManualClock (or the system clock where timers are
 * counted), and for jobs a cOS host on loop devices with a real docker-registry on 127.0.0.1.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { AgentDaemon } from '../../src/daemon/daemon.ts';
import { Automation, testClockFromEnv } from '../../src/daemon/automation.ts';
import { ManualClock } from '../../src/daemon/schedule/clock.ts';
import type { TransactionRecord } from '../../src/daemon/transactions.ts';
import { NoHooks } from '../../src/host/hooks.ts';
import { AgentError } from '../../src/model/errors.ts';
import { createLogger } from '../../src/sys/log.ts';
import { SysRoot } from '../../src/sys/root.ts';
import { SpawnRunner } from '../../src/sys/runner.ts';
import { createCosHost, type CosHost } from '../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { imageCat } from '../helpers/cosctl.ts';

/** The registry, started by the first test that needs it (not in a before hook: the timer test runs without it). */
let started: Promise<{ reg: TestRegistry; v2: string; v3: string }> | undefined;
function registry(): Promise<{ reg: TestRegistry; v2: string; v3: string }> {
  started ??= (async () => {
    const reg = await startRegistry();
    return { reg, v2: await pushOsImage(reg, 'cos/os:v2', '2.0.0'), v3: await pushOsImage(reg, 'cos/os:v3', '3.0.0') };
  })();
  return started;
}
test.after.always(async () => {
  if (started) await (await started).reg.stop();
});

/** Monday 2025-01-06 02:00 UTC: the default schedule (daily 03:00 UTC) is an hour away. */
const START = new Date('2025-01-06T02:00:00Z');
const AT_THREE = new Date('2025-01-06T03:00:00Z');

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

interface Rig {
  root: SysRoot;
  daemon: AgentDaemon;
  automation: Automation;
  clock: ManualClock | undefined;
  logs: LogLine[];
  reboots: number;
  /** Write a host file by rename, as yip and editors do. */
  write(hostPath: string, text: string): Promise<void>;
  /** The first log line (seen or to come) matching `pred`, bounded. */
  log(pred: (l: LogLine) => boolean, what: string): Promise<LogLine>;
  /** The n-th (1-based) log line with message `msg`, seen or to come, bounded. */
  nth(msg: string, n: number): Promise<LogLine>;
  /** The first finished job (seen or to come) matching `pred`, bounded. */
  job(pred: (r: TransactionRecord) => boolean, what: string): Promise<TransactionRecord>;
  finished: TransactionRecord[];
}

/** Resolve when `pred` holds, re-checked on each `kick`; rejects after `ms`. */
function eventually<T>(what: string, find: () => T | undefined, kicks: Set<() => void>, ms = 60_000): Promise<T> {
  const now = find();
  if (now !== undefined) return Promise.resolve(now);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      kicks.delete(kick);
      reject(new Error(`gave up waiting for ${what}`));
    }, ms);
    const kick = (): void => {
      const v = find();
      if (v === undefined) return;
      clearTimeout(timer);
      kicks.delete(kick);
      resolve(v);
    };
    kicks.add(kick);
  });
}

/**
 * A daemon with its automation on `host` (a cOS host) or on a bare temp root. `clock: 'system'` uses node-cron and
 * setTimeout; otherwise a ManualClock at START. The random delay is 0 unless `random` is given.
 */
async function rig(
  t: ExecutionContext,
  opts: { host?: CosHost; files?: Record<string, string>; clock?: 'manual' | 'system'; random?: () => number } = {},
): Promise<Rig> {
  let rootDir = opts.host?.root;
  if (rootDir === undefined) {
    rootDir = await mkdtemp(path.join(tmpdir(), 'cos-automation-'));
    const dir = rootDir;
    t.teardown(() => rm(dir, { recursive: true, force: true }));
  }
  const root = new SysRoot(rootDir);
  const write = async (hostPath: string, text: string): Promise<void> => {
    const file = root.path(hostPath);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(`${file}.tmp`, text);
    await rename(`${file}.tmp`, file);
  };
  await mkdir(root.path('/etc'), { recursive: true });
  for (const [p, text] of Object.entries(opts.files ?? {})) await write(p, text);

  const kicks = new Set<() => void>();
  const kick = (): void => {
    for (const k of [...kicks]) k();
  };
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') logs.push(JSON.parse(line) as LogLine);
      kick();
      done();
    },
  });
  const log = createLogger({ level: 'debug', destination: sink });
  const clock = opts.clock === 'system' ? undefined : new ManualClock(START);
  const state = { reboots: 0 };
  const daemon: AgentDaemon = new AgentDaemon({
    agent: {
      root,
      runner: new SpawnRunner(),
      log,
      hooks: new NoHooks(),
      env: { HOME: rootDir },
      now: () => new Date(),
      testDisk: opts.host?.loop ?? '/dev/cos-test-no-such-disk',
      registry: { retryBaseMs: 20 },
    },
    reboot: () => {
      state.reboots++;
      return Promise.resolve('rebooting');
    },
    reloadConfig: (): Promise<void> => automation.reload(),
  });
  const automation: Automation = new Automation({
    root,
    daemon,
    log,
    env: {},
    ...(clock !== undefined ? { clock } : {}),
    random: opts.random ?? (() => 0),
  });
  const finished: TransactionRecord[] = [];
  daemon.subscribe({
    finished: (rec) => {
      finished.push(rec);
      kick();
    },
  });
  await daemon.start();
  automation.start();
  t.teardown(async () => {
    automation.stop();
    await daemon.stop();
  });
  return {
    root,
    daemon,
    automation,
    clock,
    logs,
    get reboots() {
      return state.reboots;
    },
    write,
    log: (pred, what) => eventually(what, () => logs.find(pred), kicks),
    nth: (msg, n) => eventually(`log line ${n} "${msg}"`, () => logs.filter((l) => l.msg === msg)[n - 1], kicks),
    job: (pred, what) => eventually(what, () => finished.find(pred), kicks),
    finished,
  };
}

async function cosHost(t: ExecutionContext, files: (reg: TestRegistry) => Record<string, string>): Promise<{ host: CosHost; reg: TestRegistry; v2: string; v3: string }> {
  const r = await registry();
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\nNO_VERIFY=true\n', ...files(r.reg) } });
  t.teardown(() => host.close());
  return { host, ...r };
}

// --- the timer budget (system clock: runs before the concurrent tests) --------------------------------------------

function timeouts(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

test.serial('on the real clock the idle daemon holds one timer, the daily cron task, plus its inotify watches; policy none holds no timer', async (t) => {
  const before = timeouts();
  const watchesBefore = process.getActiveResourcesInfo().filter((r) => r === 'FSEventWrap').length;
  const r = await rig(t, { clock: 'system', files: { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE=registry.example/cos/os:v2\n' } });
  t.deepEqual(r.automation.scheduler.state, { cron: true, delayPending: false, rebootWindow: null, running: false });
  // The next run comes from the cron helper process; "scheduled" is logged once it answered.
  t.like(await r.log((l) => l.msg === 'automatic updates scheduled', 'armed'), { policy: 'check', schedule: '0 3 * * *' });
  t.is(r.automation.scheduler.nextRun?.toISOString().slice(11), '03:00:00.000Z');
  t.is(timeouts() - before, 1, process.getActiveResourcesInfo().join(' '));
  t.true(process.getActiveResourcesInfo().filter((x) => x === 'FSEventWrap').length > watchesBefore);
  t.deepEqual(r.automation.watcher.watchedPaths, [r.root.path('/etc')]);

  await r.write('/etc/cos-agent/agent.yaml', 'policy: none\n');
  await r.log((l) => l.msg === 'automatic updates off (policy none)', 'the schedule to be disarmed');
  // The reload's debounce timer is gone once it ran: nothing is left but the watches.
  await r.log((l) => l.msg === 'configuration reloaded', 'the reload');
  t.is(timeouts() - before, 0, process.getActiveResourcesInfo().join(' '));
  t.false(r.automation.scheduler.state.cron);
  t.is(r.automation.scheduler.nextRun, null);

  r.automation.stop();
  await r.daemon.stop();
  t.deepEqual(r.automation.watcher.watchedPaths, [], 'stop closes the watches');
  t.false(r.automation.scheduler.state.cron);
});

// --- config watching ----------------------------------------------------------------------------------------------

test('the default policy arms one daily check at 03:00 UTC on the clock; a reload to policy none leaves no cron task and no timer', async (t) => {
  const r = await rig(t);
  const clock = r.clock as ManualClock;
  t.deepEqual(clock.pending(), { crons: [{ expression: '0 3 * * *', timeZone: 'UTC' }], timers: [] });
  t.is(r.automation.scheduler.settings.policy, 'check');
  t.like(await r.log((l) => l.msg === 'automatic updates scheduled', 'armed'), { policy: 'check', nextRun: AT_THREE.toISOString() });

  await r.write('/etc/cos-agent/agent.yaml', 'policy: none\n');
  await r.log((l) => l.msg === 'automatic updates off (policy none)', 'the schedule to be disarmed');
  t.deepEqual(clock.pending(), { crons: [], timers: [] });
  await clock.advanceTo(new Date('2025-01-13T02:00:00Z'));
  t.deepEqual(r.finished, [], 'a week passes and nothing runs');
});

test('an invalid agent.yaml is rejected: LastError names file and line, the previous schedule and config stay; a valid write clears LastError', async (t) => {
  const r = await rig(t, { files: { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE=registry.example/cos/os:v1\n' } });
  const file = r.root.path('/etc/cos-agent/agent.yaml');
  t.is(r.daemon.state.config?.upgradeImage, 'oci:registry.example/cos/os:v1');

  await r.write('/etc/cos-agent/agent.yaml', 'schedule: "0 4 * * *"\npolicy: sometimes\n');
  await r.nth('configuration rejected', 1);
  t.true(r.daemon.state.lastError.startsWith(`${file}:2 (policy)`), r.daemon.state.lastError);
  t.is(r.automation.scheduler.settings.schedule, '0 3 * * *', 'the previous schedule stays');
  t.deepEqual((r.clock as ManualClock).pending().crons, [{ expression: '0 3 * * *', timeZone: 'UTC' }]);

  // While agent.yaml is broken, a new UPGRADE_IMAGE waits too (one consistent snapshot); both apply once it is fixed.
  await r.write('/etc/cos-upgrade-image', 'UPGRADE_IMAGE=registry.example/cos/os:v2\n');
  await r.nth('configuration rejected', 2);
  t.is(r.daemon.state.config?.upgradeImage, 'oci:registry.example/cos/os:v1');

  await r.write('/etc/cos-agent/agent.yaml', 'schedule: "0 4 * * *"\npolicy: stage\n');
  await r.log((l) => l.msg === 'configuration reloaded', 'the reload');
  t.is(r.daemon.state.lastError, '');
  t.is(r.daemon.state.config?.upgradeImage, 'oci:registry.example/cos/os:v2');
  t.is(r.automation.scheduler.settings.policy, 'stage');
  t.deepEqual((r.clock as ManualClock).pending().crons, [{ expression: '0 4 * * *', timeZone: 'UTC' }]);
});

test('an inhibitor that cannot be checked (ELOOP) skips the scheduled run: logged as a warning naming the file and the error code', async (t) => {
  const r = await rig(t, { files: { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE=registry.example/cos/os:v1\n' } });
  await mkdir(r.root.path('/run/cos-agent'), { recursive: true });
  await symlink('inhibit', r.root.path('/run/cos-agent/inhibit'));
  await (r.clock as ManualClock).advanceTo(AT_THREE);
  t.deepEqual(r.finished, [], 'no job: the run failed closed');
  t.like(r.logs.find((l) => l.msg === 'automatic run skipped: an inhibitor cannot be checked'), {
    level: 40, trigger: 'schedule', reason: 'inhibitor-unreadable', file: '/run/cos-agent/inhibit', code: 'ELOOP',
  });
});

test('AGENT_TEST_CLOCK is inert when unset and strict when set: manual:<ISO instant> or a USAGE error', (t) => {
  t.is(testClockFromEnv(undefined), undefined);
  t.is(testClockFromEnv(''), undefined);
  t.is(testClockFromEnv('manual:2025-01-06T02:00:00Z')?.now().toISOString(), '2025-01-06T02:00:00.000Z');
  for (const bad of ['2025-01-06T02:00:00Z', 'manual:', 'manual:yesterday', 'system']) {
    const err = t.throws(() => testClockFromEnv(bad));
    t.true(err instanceof AgentError);
    t.is((err as AgentError).code, 'USAGE', bad);
    t.true(err?.message.includes('AGENT_TEST_CLOCK'));
  }
});

// --- jobs on a cOS host -------------------------------------------------------------------------------------------

test('a scheduled check fires when the clock passes 03:00: a real Check job runs and UpdateAvailable is set; a new UPGRADE_IMAGE is checked at once', async (t) => {
  const { host, reg, v2, v3 } = await cosHost(t, (reg) => ({ '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v2\n` }));
  const r = await rig(t, { host });
  const clock = r.clock as ManualClock;
  await clock.advanceTo(new Date('2025-01-06T02:59:00Z'));
  t.deepEqual(r.finished, [], 'nothing before the tick');

  await clock.advanceTo(new Date('2025-01-06T03:01:00Z'));
  t.is(r.finished.length, 1);
  const check = r.finished[0] as TransactionRecord;
  t.like(check, { kind: 'check', result: 0 });
  t.like(check.details, { image: `${reg.host}/cos/os:v2`, digest: v2, updateAvailable: true });
  t.true(r.daemon.state.updateAvailable);
  t.like(r.daemon.state.lastTransaction, { transaction: check.transaction });
  t.like(await r.log((l) => l.msg === 'automatic job started', 'the job log'), { transaction: check.transaction, kind: 'check', trigger: 'schedule', policy: 'check' });
  t.truthy(r.logs.find((l) => l.msg === 'update available' && l.digest === v2));
  t.is(r.finished.filter((j) => j.kind === 'upgrade').length, 0, 'policy check never upgrades');

  // A new image in the config: the policy runs at once, without waiting for the schedule.
  await r.write('/etc/cos-upgrade-image', `UPGRADE_IMAGE=${reg.host}/cos/os:v3\n`);
  const second = await r.job((j) => j.kind === 'check' && j.transaction !== check.transaction, 'the check of the new image');
  t.like(second.details, { image: `${reg.host}/cos/os:v3`, digest: v3, updateAvailable: true });
  t.like(r.logs.find((l) => l.msg === 'automatic job started' && l.transaction === second.transaction), { trigger: 'image-changed' });
  t.is(clock.now().toISOString(), '2025-01-06T03:01:00.000Z', 'the clock did not move');
});

test('under policy stage the scheduled run stages the new image into the slot and never reboots', async (t) => {
  const { host, v2 } = await cosHost(t, (reg) => ({
    '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v2\n`,
    '/etc/cos-agent/agent.yaml': 'policy: stage\n',
  }));
  const r = await rig(t, { host });
  await (r.clock as ManualClock).advanceTo(AT_THREE);
  t.deepEqual(r.finished.map((j) => [j.kind, j.result]), [['check', 0], ['upgrade', 0]]);
  t.like(r.finished[1]?.details, { digest: v2, reboot: false });
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  t.like(r.daemon.state.slots.active, { digest: v2, version: '2.0.0' });
  t.true(r.daemon.stagedUpgrade);
  t.is(r.reboots, 0);
  t.is(r.daemon.state.operation, 'idle');

  // The next day finds the same digest in the slot: a check, no second upgrade.
  await (r.clock as ManualClock).advanceTo(new Date('2025-01-07T03:00:00Z'));
  t.deepEqual(r.finished.map((j) => j.kind), ['check', 'upgrade', 'check']);
  t.like(r.finished[2]?.details, { digest: v2, currentDigest: v2, updateAvailable: false });
});

test('under policy apply inside the maintenance window the run stages, then reboots through the daemon\'s reboot path', async (t) => {
  const { host } = await cosHost(t, (reg) => ({
    '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v2\n`,
    '/etc/cos-agent/agent.yaml': 'policy: apply\nwindow:\n  start: "02:30"\n  length: 2h\n',
  }));
  const r = await rig(t, { host });
  await (r.clock as ManualClock).advanceTo(AT_THREE);
  t.deepEqual(r.finished.map((j) => [j.kind, j.result]), [['check', 0], ['upgrade', 0]]);
  t.is(r.reboots, 1);
  t.is(r.daemon.state.operation, 'rebooting');
  t.truthy(r.logs.find((l) => l.msg === 'automatic reboot into the staged upgrade'));
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
});

test('under policy stage a user Check of the configured image that finds an update starts the upgrade; a Check of another image does not', async (t) => {
  const { host, reg, v2, v3 } = await cosHost(t, (reg) => ({
    '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v2\n`,
    '/etc/cos-agent/agent.yaml': 'policy: stage\n',
  }));
  const h = await rig(t, { host });

  const other = await h.daemon.check({ image: `${reg.host}/cos/os:v3` });
  const otherRec = await h.job((j) => j.transaction === other, 'the check of another image');
  t.like(otherRec.details, { digest: v3, updateAvailable: true });
  t.false(h.automation.scheduler.state.running, 'nothing follows a check of an image that is not configured');

  const mine = await h.daemon.check({});
  const mineRec = await h.job((j) => j.transaction === mine, 'the user check');
  t.like(mineRec.details, { digest: v2, updateAvailable: true });
  const upgrade = await h.job((j) => j.kind === 'upgrade', 'the upgrade the policy started');
  t.like(upgrade, { result: 0 });
  t.like(upgrade.details, { digest: v2, reboot: false });
  t.like(h.logs.find((l) => l.msg === 'automatic job started' && l.transaction === upgrade.transaction), { kind: 'upgrade', trigger: 'update-available' });
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  t.is(h.reboots, 0);
});

test('an automatic check that fails is logged with its code, persisted like any job, and the schedule goes on', async (t) => {
  const { host } = await cosHost(t, (reg) => ({ '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/missing:v1\n` }));
  const r = await rig(t, { host });
  await (r.clock as ManualClock).advanceTo(AT_THREE);
  t.like(r.finished[0], { kind: 'check', result: 1, code: 'REGISTRY_NOT_FOUND' });
  t.like(await r.log((l) => l.msg === 'automatic request failed', 'the failure'), { action: 'check', trigger: 'schedule', code: 'REGISTRY_NOT_FOUND' });
  t.regex(r.daemon.state.lastError, /missing/);
  t.deepEqual((r.clock as ManualClock).pending().crons, [{ expression: '0 3 * * *', timeZone: 'UTC' }]);
});
