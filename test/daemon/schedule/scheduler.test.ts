/**
 * The Scheduler (scheduler.ts): policies, random delays, inhibitors and the maintenance window under a ManualClock,
 * and the timers it holds on the real clock.
 */
import test from 'ava';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseAgentSettings } from '../../../src/config/agent-settings.ts';
import { ManualClock } from '../../../src/daemon/schedule/clock.ts';
import { Scheduler, type SchedulerEvent } from '../../../src/daemon/schedule/scheduler.ts';
import { overridesLayer, resolveConfig } from '../../../src/config/resolve.ts';
import type { AgentConfig } from '../../../src/model/config.ts';
import type { AgentSettings, AutomaticRequest, CheckReport } from '../../../src/model/schedule.ts';
import { SysRoot } from '../../../src/sys/root.ts';

const at = (iso: string): Date => new Date(iso);

// ---------------------------------------------------------------------------------------------------------------
// scheduler under a test clock

function settings(yaml: string): AgentSettings {
  return parseAgentSettings(yaml, 'agent.yaml');
}

function agentConfig(image?: string): AgentConfig {
  return resolveConfig(image === undefined ? [] : [overridesLayer({ image })]);
}

interface Rig {
  root: SysRoot;
  clock: ManualClock;
  scheduler: Scheduler;
  calls: string[];
  events: SchedulerEvent[];
  /** What the next checks answer. */
  report: CheckReport;
  /** Make the next request of this action fail. */
  failNext?: AutomaticRequest['action'];
  /** Runs inside the next upgrade. */
  duringUpgrade?: () => Promise<void>;
  /** Runs before every request; may throw (e.g. an error with code BUSY). */
  busyCheck?: () => void;
}

async function rig(
  t: { teardown(fn: () => Promise<void> | void): void },
  yaml: string,
  opts: { start?: string; random?: () => number; stat?: (path: string) => Promise<unknown> } = {},
): Promise<Rig> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-agent-sched-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = new SysRoot(dir);
  const clock = new ManualClock(at(opts.start ?? '2026-06-01T00:00:00Z')); // a Monday
  const r = { root, clock, calls: [] as string[], events: [] as SchedulerEvent[], report: { updateAvailable: false } as CheckReport } as Rig;
  r.scheduler = new Scheduler({
    root,
    settings: settings(yaml),
    clock,
    random: opts.random ?? ((): number => 0),
    ...(opts.stat !== undefined ? { stat: opts.stat } : {}),
    onEvent: (e) => r.events.push(e),
    runAutomatic: async (req) => {
      r.calls.push(`${clock.now().toISOString().slice(0, 16)} ${req.action} ${req.trigger}${req.digest ? ` ${req.digest}` : ''}`);
      if (r.failNext === req.action) {
        r.failNext = undefined;
        throw new Error(`${req.action} failed`);
      }
      r.busyCheck?.();
      if (req.action === 'upgrade' && r.duringUpgrade) await r.duringUpgrade();
      return req.action === 'check' ? r.report : undefined;
    },
  });
  t.teardown(() => r.scheduler.stop());
  return r;
}

async function advanceTo(r: Rig, iso: string): Promise<void> {
  await r.clock.advanceTo(at(iso));
  await r.scheduler.settled();
}

test('a scheduled check fires on its cron tick under a test clock, and not before', async (t) => {
  const r = await rig(t, 'schedule: "0 3 * * *"\nrandomDelay: 0\npolicy: check\n');
  r.scheduler.start();
  t.is(r.scheduler.nextRun?.toISOString(), '2026-06-01T03:00:00.000Z');
  await advanceTo(r, '2026-06-01T02:59:59Z');
  t.deepEqual(r.calls, []);
  await advanceTo(r, '2026-06-01T03:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T03:00 check schedule']);
  await advanceTo(r, '2026-06-03T12:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T03:00 check schedule', '2026-06-02T03:00 check schedule', '2026-06-03T03:00 check schedule']);
});

test('a scheduled run refused with BUSY (a user\'s job was running) runs once that job has finished, not tomorrow', async (t) => {
  const r = await rig(t, 'schedule: "0 3 * * *"\nrandomDelay: 0\npolicy: check\n');
  let busy = true;
  // The daemon answers BUSY while the user's job runs.
  r.scheduler.start();
  r.busyCheck = (): void => {
    if (busy) throw Object.assign(new Error('busy: upgrade transaction 1 is running'), { code: 'BUSY' });
  };
  await advanceTo(r, '2026-06-01T03:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T03:00 check schedule']);
  t.like(r.events.find((e) => e.type === 'failed'), { request: { action: 'check', trigger: 'schedule' } });
  busy = false;
  r.scheduler.onJobFinished();
  await r.scheduler.settled();
  t.deepEqual(r.calls, ['2026-06-01T03:00 check schedule', '2026-06-01T03:00 check schedule'], 'run again when the user\'s job ended');
  r.scheduler.onJobFinished();
  await r.scheduler.settled();
  t.is(r.calls.length, 2, 'only once');
});

test('the schedule is evaluated in the configured time zone', async (t) => {
  const r = await rig(t, 'schedule: "0 3 * * *"\ntimeZone: Europe/Berlin\nrandomDelay: 0\n');
  r.scheduler.start();
  await advanceTo(r, '2026-06-02T00:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T01:00 check schedule'], '03:00 CEST');
});

test('under policy check an available update is only reported, never upgraded', async (t) => {
  const r = await rig(t, 'randomDelay: 0\npolicy: check\n');
  r.report = { updateAvailable: true, image: 'reg/os:1', digest: 'sha256:aa' };
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T03:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T03:00 check schedule']);
  t.like(r.events.find((e) => e.type === 'update-available'), { trigger: 'schedule', image: 'reg/os:1', digest: 'sha256:aa' });
});

test('the random delay comes from the injected random function and runs on the injected timer', async (t) => {
  const r = await rig(t, 'schedule: "0 3 * * *"\nrandomDelay: 2h\n', { random: () => 0.25 });
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T03:00:00Z');
  t.deepEqual(r.calls, [], 'nothing at the tick itself');
  t.deepEqual(r.clock.pending().timers.map((d) => d.toISOString()), ['2026-06-01T03:30:00.000Z'], 'one delay timer: 0.25 x 2h');
  t.true(r.scheduler.state.delayPending);
  t.like(r.events.find((e) => e.type === 'tick'), { delayMs: 30 * 60_000 });
  await advanceTo(r, '2026-06-01T03:29:59Z');
  t.deepEqual(r.calls, []);
  await advanceTo(r, '2026-06-01T03:30:00Z');
  t.deepEqual(r.calls, ['2026-06-01T03:30 check schedule']);
  t.deepEqual(r.clock.pending().timers, [], 'the delay timer is gone after its run');
});

test('the idle scheduler holds exactly its cron task and no timer; policy none holds nothing; stop clears everything', async (t) => {
  const r = await rig(t, 'schedule: "15 4 * * *"\nrandomDelay: 1h\npolicy: apply\nwindow:\n  start: "05:00"\n  length: 1h\n', { random: () => 0.5 });
  t.deepEqual(r.clock.pending(), { crons: [], timers: [] }, 'nothing before start');
  r.scheduler.start();
  r.scheduler.start();
  t.deepEqual(r.clock.pending(), { crons: [{ expression: '15 4 * * *', timeZone: 'UTC' }], timers: [] });
  await advanceTo(r, '2026-06-01T04:15:00Z');
  t.is(r.clock.pending().timers.length, 1, 'between the tick and its run: the delay timer');
  await advanceTo(r, '2026-06-01T04:45:00Z');
  t.deepEqual(r.clock.pending(), { crons: [{ expression: '15 4 * * *', timeZone: 'UTC' }], timers: [] }, 'idle again after the run');
  t.deepEqual(r.scheduler.state, { cron: true, delayPending: false, rebootWindow: null, running: false });

  await advanceTo(r, '2026-06-02T04:15:00Z');
  t.is(r.clock.pending().timers.length, 1);
  r.scheduler.stop();
  t.deepEqual(r.clock.pending(), { crons: [], timers: [] }, 'stop clears the cron task and the pending delay');
  await advanceTo(r, '2026-06-04T00:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T04:45 check schedule'], 'nothing runs after stop');

  const none = await rig(t, 'policy: none\n');
  none.scheduler.start();
  t.deepEqual(none.clock.pending(), { crons: [], timers: [] });
  t.is(none.scheduler.nextRun, null);
  t.like(none.events.at(-1), { type: 'disarmed', reason: 'policy-none' });
});

test('while an inhibitor file exists the tick is skipped and logged; without it the next tick runs', async (t) => {
  const r = await rig(t, 'randomDelay: 0\n');
  const inhibit = r.root.path('/run/cos-agent/inhibit');
  await mkdir(path.dirname(inhibit), { recursive: true });
  await writeFile(inhibit, '');
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T03:00:00Z');
  t.deepEqual(r.calls, []);
  t.like(r.events.find((e) => e.type === 'skipped'), { type: 'skipped', trigger: 'schedule', reason: 'inhibited', file: '/run/cos-agent/inhibit' });
  await rm(inhibit);
  await advanceTo(r, '2026-06-02T03:00:00Z');
  t.deepEqual(r.calls, ['2026-06-02T03:00 check schedule']);
});

test('the inhibitor list comes from the settings', async (t) => {
  const r = await rig(t, 'randomDelay: 0\ninhibitors: [/var/lib/maintenance.lock]\n');
  await mkdir(r.root.path('/run/cos-agent'), { recursive: true });
  await writeFile(r.root.path('/run/cos-agent/inhibit'), '');
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T03:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T03:00 check schedule'], 'a default path no longer inhibits');
  await mkdir(r.root.path('/var/lib'), { recursive: true });
  await writeFile(r.root.path('/var/lib/maintenance.lock'), '');
  await advanceTo(r, '2026-06-02T03:00:00Z');
  t.is(r.calls.length, 1);
});

test('an inhibitor that cannot be checked (a symlink loop: ELOOP) holds the run back, naming the file and why; once fixed the next tick runs', async (t) => {
  const r = await rig(t, 'randomDelay: 0\n');
  const inhibit = r.root.path('/run/cos-agent/inhibit');
  await mkdir(path.dirname(inhibit), { recursive: true });
  await symlink('inhibit', inhibit); // points at itself: stat fails with ELOOP, a real error that is not "absent"
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T03:00:00Z');
  t.deepEqual(r.calls, [], 'fail closed: an inhibitor that may exist is not taken for an absent one');
  t.like(r.events.find((e) => e.type === 'skipped'), { type: 'skipped', trigger: 'schedule', reason: 'inhibitor-unreadable', file: '/run/cos-agent/inhibit', code: 'ELOOP' });
  const skipped = r.events.find((e) => e.type === 'skipped' && e.reason === 'inhibitor-unreadable');
  t.regex(skipped !== undefined && 'message' in skipped ? skipped.message : '', /ELOOP/);
  await rm(inhibit);
  await advanceTo(r, '2026-06-02T03:00:00Z');
  t.deepEqual(r.calls, ['2026-06-02T03:00 check schedule']);
});

test('an inhibitor path under a regular file (ENOTDIR) is absent: the run goes ahead', async (t) => {
  const r = await rig(t, 'randomDelay: 0\ninhibitors: [/etc/cos-agent/inhibit]\n');
  await mkdir(r.root.path('/etc'), { recursive: true });
  await writeFile(r.root.path('/etc/cos-agent'), 'a file, not a directory\n');
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T03:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T03:00 check schedule']);
  t.is(r.events.find((e) => e.type === 'skipped'), undefined);
});

test('an inhibitor the stat seam cannot read (EACCES) holds back the run and, under apply, the reboot', async (t) => {
  let denied = false;
  const r = await rig(t, 'randomDelay: 0\npolicy: apply\n', {
    stat: (p) => (denied ? Promise.reject(Object.assign(new Error(`EACCES: permission denied, stat '${p}'`), { code: 'EACCES' })) : Promise.reject(Object.assign(new Error('ENOENT'), { code: 'ENOENT' }))),
  });
  denied = true;
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T03:00:00Z');
  t.deepEqual(r.calls, []);
  t.like(r.events.find((e) => e.type === 'skipped'), { reason: 'inhibitor-unreadable', file: '/run/cos-agent/inhibit', code: 'EACCES' });

  // Readable again for the check and the upgrade; unreadable right before the reboot: the reboot waits.
  denied = false;
  r.report = { updateAvailable: true, digest: 'sha256:ee' };
  r.duringUpgrade = (): Promise<void> => {
    denied = true;
    return Promise.resolve();
  };
  await advanceTo(r, '2026-06-02T03:00:00Z');
  t.deepEqual(r.calls, ['2026-06-02T03:00 check schedule', '2026-06-02T03:00 upgrade schedule sha256:ee'], 'no reboot');
  t.is(r.events.filter((e) => e.type === 'skipped' && e.reason === 'inhibitor-unreadable').length, 2);
});

test('an error of the automatic run itself (not of a request) is reported as run-failed, and the scheduler goes on', async (t) => {
  // The random source breaks while the run defers its reboot to the window: nothing a request would report.
  let broken = false;
  const r = await rig(t, 'randomDelay: 1h\npolicy: apply\nwindow:\n  start: "05:00"\n  length: 1h\n', {
    random: () => {
      if (broken) throw new Error('no entropy');
      return 0;
    },
  });
  r.report = { updateAvailable: true, digest: 'sha256:dd' };
  r.scheduler.start();
  broken = true;
  await r.scheduler.runNow();
  t.deepEqual(r.calls, ['2026-06-01T00:00 check schedule', '2026-06-01T00:00 upgrade schedule sha256:dd']);
  const failed = r.events.find((e) => e.type === 'run-failed');
  t.like(failed, { type: 'run-failed', trigger: 'schedule' });
  t.is(failed !== undefined && 'error' in failed ? (failed.error as Error).message : '', 'no entropy');
  t.false(r.scheduler.state.running);

  broken = false;
  await r.scheduler.runNow();
  t.like(r.events.at(-1), { type: 'reboot-deferred' });
  t.is(r.scheduler.state.rebootWindow?.toISOString(), '2026-06-01T05:00:00.000Z');
});

test('under policy stage an available update is upgraded to without reboot, once per digest', async (t) => {
  const r = await rig(t, 'randomDelay: 0\npolicy: stage\nwindow:\n  start: "12:00"\n  length: 1h\n');
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T03:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T03:00 check schedule'], 'no update, no upgrade');
  r.report = { updateAvailable: true, digest: 'sha256:bb' };
  await advanceTo(r, '2026-06-02T03:00:00Z');
  t.deepEqual(r.calls.slice(1), ['2026-06-02T03:00 check schedule', '2026-06-02T03:00 upgrade schedule sha256:bb'], 'outside the window too');
  await advanceTo(r, '2026-06-03T03:00:00Z');
  t.deepEqual(r.calls.slice(3), ['2026-06-03T03:00 check schedule'], 'the same digest is not staged twice');
  t.deepEqual(r.clock.pending().timers, [], 'stage never waits for a window');
});

test('under policy apply the reboot happens right after the upgrade when inside the window', async (t) => {
  const r = await rig(t, 'schedule: "30 2 * * *"\nrandomDelay: 0\npolicy: apply\nwindow:\n  start: "02:00"\n  length: 2h\n');
  r.report = { updateAvailable: true, digest: 'sha256:cc' };
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T02:30:00Z');
  t.deepEqual(r.calls, ['2026-06-01T02:30 check schedule', '2026-06-01T02:30 upgrade schedule sha256:cc', '2026-06-01T02:30 reboot schedule']);
  t.deepEqual(r.clock.pending().timers, []);
});

test('under policy apply outside the window the upgrade is staged and the reboot waits for the window opening (plus jitter), after a fresh check', async (t) => {
  const r = await rig(t, 'schedule: "0 10 * * *"\nrandomDelay: 1h\npolicy: apply\nwindow:\n  days: [sat]\n  start: "02:00"\n  length: 2h\n', { random: () => 0.5 });
  r.report = { updateAvailable: true, digest: 'sha256:dd' };
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T10:30:00Z'); // Monday
  t.deepEqual(r.calls, ['2026-06-01T10:30 check schedule', '2026-06-01T10:30 upgrade schedule sha256:dd'], 'no reboot outside the window');
  t.is(r.scheduler.state.rebootWindow?.toISOString(), '2026-06-06T02:30:00.000Z', 'Saturday 02:00 + 0.5 x min(1h, 2h)');
  t.like(r.events.find((e) => e.type === 'reboot-deferred'), { until: at('2026-06-06T02:30:00Z') });

  r.report = { updateAvailable: false, digest: 'sha256:dd' };
  await advanceTo(r, '2026-06-06T02:29:00Z');
  t.false(r.calls.some((c) => c.includes('reboot')), 'daily checks meanwhile do not reboot');
  await advanceTo(r, '2026-06-06T02:30:00Z');
  t.deepEqual(r.calls.slice(-2), ['2026-06-06T02:30 check window', '2026-06-06T02:30 reboot window']);
  t.is(r.scheduler.state.rebootWindow, null);
  t.deepEqual(r.clock.pending().timers, []);
});

test('under policy apply the reboot at the window opening happens even when that check fails', async (t) => {
  const r = await rig(t, 'schedule: "0 12 * * *"\nrandomDelay: 0\npolicy: apply\nwindow:\n  start: "22:00"\n  length: 1h\n');
  r.report = { updateAvailable: true, digest: 'sha256:12' };
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T12:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T12:00 check schedule', '2026-06-01T12:00 upgrade schedule sha256:12']);
  r.failNext = 'check';
  await advanceTo(r, '2026-06-01T22:00:00Z');
  t.deepEqual(r.calls.slice(2), ['2026-06-01T22:00 check window', '2026-06-01T22:00 reboot window']);
  t.like(r.events.find((e) => e.type === 'failed'), { request: { action: 'check', trigger: 'window' } });
});

test('under policy apply a reboot the check reports as pending (after a daemon restart) waits for the window too', async (t) => {
  const r = await rig(t, 'schedule: "0 12 * * *"\nrandomDelay: 0\npolicy: apply\nwindow:\n  start: "23:00"\n  length: 2h\n');
  r.report = { updateAvailable: false, rebootPending: true };
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T12:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T12:00 check schedule']);
  t.is(r.scheduler.state.rebootWindow?.toISOString(), '2026-06-01T23:00:00.000Z');
  await advanceTo(r, '2026-06-01T23:00:00Z');
  t.deepEqual(r.calls.slice(1), ['2026-06-01T23:00 check window', '2026-06-01T23:00 reboot window']);
});

test('under policy apply an inhibitor that appears during the upgrade blocks the reboot, which waits for the next window', async (t) => {
  const r = await rig(t, 'schedule: "30 2 * * *"\nrandomDelay: 0\npolicy: apply\nwindow:\n  start: "02:00"\n  length: 2h\n');
  r.report = { updateAvailable: true, digest: 'sha256:ee' };
  r.duringUpgrade = async (): Promise<void> => {
    await mkdir(r.root.path('/etc/cos-agent'), { recursive: true });
    await writeFile(r.root.path('/etc/cos-agent/inhibit'), '');
  };
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T02:30:00Z');
  t.deepEqual(r.calls, ['2026-06-01T02:30 check schedule', '2026-06-01T02:30 upgrade schedule sha256:ee']);
  t.like(r.events.find((e) => e.type === 'skipped'), { reason: 'inhibited', file: '/etc/cos-agent/inhibit' });
  t.is(r.scheduler.state.rebootWindow?.toISOString(), '2026-06-02T02:00:00.000Z');
});

test('a failed request is reported and the scheduler goes on; a tick during a run is skipped as busy', async (t) => {
  const r = await rig(t, 'schedule: "* * * * *"\nrandomDelay: 0\npolicy: stage\n');
  r.failNext = 'check';
  r.scheduler.start();
  await advanceTo(r, '2026-06-01T00:01:00Z');
  t.like(r.events.find((e) => e.type === 'failed'), { request: { action: 'check', trigger: 'schedule' } });
  r.report = { updateAvailable: true, digest: 'sha256:ff' };
  r.duringUpgrade = async (): Promise<void> => {
    t.true(r.scheduler.state.running);
    await r.clock.advance(60_000); // the 00:03 tick falls into the running upgrade
  };
  await advanceTo(r, '2026-06-01T00:02:00Z');
  t.like(r.events.find((e) => e.type === 'skipped'), { type: 'skipped', trigger: 'schedule', reason: 'busy' });
  t.deepEqual(r.calls, ['2026-06-01T00:01 check schedule', '2026-06-01T00:02 check schedule', '2026-06-01T00:02 upgrade schedule sha256:ff']);
  t.is(r.clock.now().toISOString(), '2026-06-01T00:03:00.000Z');
  r.duringUpgrade = undefined;
  r.report = { updateAvailable: false };
  await advanceTo(r, '2026-06-01T00:04:00Z');
  t.deepEqual(r.calls.slice(3), ['2026-06-01T00:04 check schedule'], 'the next tick after the run works again');
});

test('when a reload changes the configured image, the policy runs at once without the random delay', async (t) => {
  const r = await rig(t, 'randomDelay: 2h\npolicy: stage\n', { random: () => 0.9 });
  r.scheduler.start();
  const agent = settings('randomDelay: 2h\npolicy: stage\n');
  const v1 = { config: agentConfig('oci:reg/os:1'), agent };
  r.scheduler.onConfigChanged(undefined, v1);
  await r.scheduler.settled();
  t.deepEqual(r.calls, [], 'the first load is no change');
  r.scheduler.onConfigChanged(v1, { config: agentConfig('oci:reg/os:1'), agent });
  await r.scheduler.settled();
  t.deepEqual(r.calls, [], 'same image, nothing to do');
  r.report = { updateAvailable: true, digest: 'sha256:11' };
  r.scheduler.onConfigChanged(v1, { config: agentConfig('oci:reg/os:2'), agent });
  await r.scheduler.settled();
  t.deepEqual(r.calls, ['2026-06-01T00:00 check image-changed', '2026-06-01T00:00 upgrade image-changed sha256:11']);

  const c = await rig(t, 'policy: check\n');
  c.scheduler.start();
  c.report = { updateAvailable: true, digest: 'sha256:22' };
  c.scheduler.onConfigChanged({ config: agentConfig() }, { config: agentConfig('oci:reg/os:3'), agent: settings('policy: check\n') });
  await c.scheduler.settled();
  t.deepEqual(c.calls, ['2026-06-01T00:00 check image-changed'], 'check only reports');
  t.like(c.events.find((e) => e.type === 'update-available'), { trigger: 'image-changed', digest: 'sha256:22' });
});

test('a reload with a new schedule or policy re-arms the cron task; policy none disarms it', async (t) => {
  const r = await rig(t, 'schedule: "0 3 * * *"\nrandomDelay: 0\n');
  r.scheduler.start();
  const config = agentConfig('oci:reg/os:1');
  const first = { config, agent: r.scheduler.settings };
  const second = { config, agent: settings('schedule: "0 5 * * *"\ntimeZone: Asia/Tokyo\nrandomDelay: 0\n') };
  r.scheduler.onConfigChanged(first, second);
  t.deepEqual(r.clock.pending().crons, [{ expression: '0 5 * * *', timeZone: 'Asia/Tokyo' }]);
  await advanceTo(r, '2026-06-02T00:00:00Z');
  t.deepEqual(r.calls, ['2026-06-01T20:00 check schedule'], '05:00 in Tokyo, not 03:00 UTC');
  r.scheduler.onConfigChanged(second, { config, agent: settings('policy: none\n') });
  t.deepEqual(r.clock.pending(), { crons: [], timers: [] });
  await advanceTo(r, '2026-06-05T00:00:00Z');
  t.is(r.calls.length, 1);
});

test('a check run by someone else that finds a newer digest starts an upgrade under stage, once, and nothing under check', async (t) => {
  const r = await rig(t, 'policy: stage\n');
  r.scheduler.start();
  r.scheduler.onCheckResult({ updateAvailable: false, digest: 'sha256:00' });
  r.scheduler.onCheckResult({ updateAvailable: true, digest: 'sha256:33', image: 'reg/os:3' });
  await r.scheduler.settled();
  r.scheduler.onCheckResult({ updateAvailable: true, digest: 'sha256:33', image: 'reg/os:3' });
  await r.scheduler.settled();
  t.deepEqual(r.calls, ['2026-06-01T00:00 upgrade update-available sha256:33']);

  const c = await rig(t, 'policy: check\n');
  c.scheduler.start();
  c.scheduler.onCheckResult({ updateAvailable: true, digest: 'sha256:44' });
  await c.scheduler.settled();
  t.deepEqual(c.calls, []);
  t.like(c.events.find((e) => e.type === 'update-available'), { digest: 'sha256:44' });
});

// ---------------------------------------------------------------------------------------------------------------
// the real clock

test.serial('on the real clock the idle scheduler adds exactly one timer (the cron task) and stop removes it', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-agent-sched-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const count = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = count();
  const events: SchedulerEvent[] = [];
  const s = new Scheduler({ root: new SysRoot(dir), settings: settings('schedule: "0 3 * * *"\n'), runAutomatic: () => undefined, onEvent: (e) => events.push(e) });
  t.teardown(() => s.stop());
  s.start();
  // node-cron computes the next run in the cron helper process; armed is reported once it answered
  await until(() => events.some((e) => e.type === 'armed'));
  t.is(count() - before, 1);
  const next = s.nextRun;
  t.truthy(next);
  t.is(next?.getUTCHours(), 3);
  t.is(next?.getUTCMinutes(), 0);
  t.true((next?.getTime() ?? 0) > Date.now());
  t.true((next?.getTime() ?? 0) - Date.now() <= 86_400_000);
  t.like(events.find((e) => e.type === 'armed'), { schedule: '0 3 * * *', timeZone: 'UTC', policy: 'check', nextRun: next });
  s.stop();
  t.is(count() - before, 0);
  t.is(s.nextRun, null);
});

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 600 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
  if (!cond()) throw new Error('condition not met within 15 s');
}
