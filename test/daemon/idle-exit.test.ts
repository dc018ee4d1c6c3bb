/**
 * cosd --idle-exit, for real: the daemon on a private dbus-daemon leaves when nothing calls it, no job runs and no
 * caller is connected; a connected caller keeps it; a schedule it cannot hand to systemd keeps it resident (with a
 * warning); a schedule it can (the AGENT_TEST_WAKE_ARGV seam standing in for systemd-run) is armed for the next run,
 * and the cosd that timer starts runs that tick; an image changed while it was away runs the policy; and the bus starts
 * it again on the next call (D-Bus activation through a service file), as often as needed.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectAgent } from '../../src/dbus/client.ts';
import { installActivation, POLICY_FILE, startBus, startCosd, type TestBus } from '../helpers/dbus.ts';

const NO_DISK = { AGENT_TEST_DISK: '/dev/cos-test-no-such-disk' };

async function bareRoot(t: ExecutionContext, agentYaml?: string): Promise<string> {
  const root = await mkdtemp(path.join(tmpdir(), 'cosd-idle-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  if (agentYaml !== undefined) {
    await mkdir(path.join(root, 'etc/cos-agent'), { recursive: true });
    await writeFile(path.join(root, 'etc/cos-agent/agent.yaml'), agentYaml);
  }
  return root;
}

async function bus(t: ExecutionContext, servicedir?: string): Promise<TestBus> {
  const b = await startBus(servicedir !== undefined ? { servicedir } : {});
  t.teardown(() => b.stop());
  return b;
}

/** Resolves with the exit code if cosd exits within `ms`, else 'running'. */
async function exitWithin(proc: { exited(): Promise<number | null> }, ms: number): Promise<number | null | 'running'> {
  return Promise.race([proc.exited(), sleep(ms).then(() => 'running' as const)]);
}

test('with nothing scheduled and nobody calling, cosd leaves after its idle period (exit 0), saying why', async (t) => {
  const b = await bus(t);
  const root = await bareRoot(t, 'policy: none\n');
  const proc = await startCosd(b, { root, env: NO_DISK }, {}, ['--idle-exit', '1']);
  t.teardown(() => proc.stop());
  t.is(await exitWithin(proc, 15_000), 0);
  const left = proc.logs.find((l) => l.msg.startsWith('idle: leaving'));
  t.truthy(left, proc.logs.map((l) => l.msg).join('\n'));
  t.is(left?.idleSeconds, 1);
  t.truthy(proc.logs.find((l) => l.msg === 'stopped'));
});

test('a caller that stays connected keeps cosd; each call restarts the period; once the caller is gone, cosd leaves', async (t) => {
  const b = await bus(t);
  const root = await bareRoot(t, 'policy: none\n');
  const proc = await startCosd(b, { root, env: NO_DISK }, {}, ['--idle-exit', '1']);
  t.teardown(() => proc.stop());
  const client = await connectAgent({ env: { DBUS_SYSTEM_BUS_ADDRESS: b.address } });
  if (client === null) throw new Error('no client');
  await client.getStatus();
  t.is(await exitWithin(proc, 3_500), 'running', 'a connected caller keeps it');
  await client.close();
  t.is(await exitWithin(proc, 10_000), 0);
  // And a daemon with --idle-exit 0 stays, whatever the time.
  const resident = await startCosd(b, { root, env: NO_DISK }, {}, ['--idle-exit', '0']);
  t.teardown(() => resident.stop());
  t.is(await exitWithin(resident, 2_500), 'running');
  t.is(resident.logs.find((l) => l.msg.startsWith('idle')), undefined);
});

test('a schedule that cannot be handed to systemd (another root, no systemd) keeps cosd resident, with one warning', async (t) => {
  const b = await bus(t);
  const root = await bareRoot(t);
  const proc = await startCosd(b, { root, env: NO_DISK }, {}, ['--idle-exit', '1']);
  t.teardown(() => proc.stop());
  const warning = await proc.waitForLog((l) => l.msg === 'staying resident: the schedule cannot be handed to a systemd timer');
  t.is(warning.level, 40);
  t.is(warning.code, 'NOT_SUPPORTED');
  t.is(await exitWithin(proc, 2_500), 'running');
  t.is(proc.logs.filter((l) => l.msg.startsWith('staying resident')).length, 1);
});

test('the schedule goes to the wake timer before cosd leaves; the cosd it starts runs that tick; an image changed meanwhile runs the policy', async (t) => {
  const b = await bus(t);
  const root = await bareRoot(t, 'policy: check\nschedule: "0 3 * * *"\nrandomDelay: 0s\n');
  const armed = path.join(root, 'armed-for');
  const seam = JSON.stringify(['sh', '-c', 'printf %s "$1" > "$0"', armed]);
  const proc = await startCosd(b, { root, env: NO_DISK }, { AGENT_TEST_WAKE_ARGV: seam, AGENT_TEST_CLOCK: 'manual:2025-01-06T12:00:00Z' }, ['--idle-exit', '1']);
  t.teardown(() => proc.stop());
  t.is(await exitWithin(proc, 15_000), 0);
  t.is(await readFile(armed, 'utf8'), '2025-01-07T03:00:00.000Z');
  t.deepEqual(JSON.parse(await readFile(path.join(root, 'run/cos-agent/wake.json'), 'utf8')), { at: '2025-01-07T03:00:00.000Z' });
  t.is(proc.logs.find((l) => l.msg.startsWith('idle: leaving'))?.wake, '2025-01-07T03:00:00.000Z');

  // The timer starts cosd at 03:00: it runs the tick it was armed for (a check of no image: it fails, and is logged).
  const woken = await startCosd(b, { root, env: NO_DISK }, { AGENT_TEST_WAKE_ARGV: seam, AGENT_TEST_CLOCK: 'manual:2025-01-07T03:00:00Z' }, ['--idle-exit', '0']);
  t.teardown(() => woken.stop());
  const started = await woken.waitForLog((l) => l.msg === 'started for a scheduled run');
  t.is(started.at, '2025-01-07T03:00:00.000Z');
  await woken.waitForLog((l) => l.msg === 'scheduled run due');
  t.false(existsSync(path.join(root, 'run/cos-agent/wake.json')), 'the wake is served once');
  await woken.stop();

  // A config change while cosd was away (the path unit starts it): the new image runs the policy at once.
  await mkdir(path.join(root, 'etc'), { recursive: true });
  await writeFile(path.join(root, 'etc/cos-upgrade-image'), 'UPGRADE_IMAGE=127.0.0.1:1/cos/one:v1\n');
  const first = await startCosd(b, { root, env: NO_DISK }, { AGENT_TEST_CLOCK: 'manual:2025-01-07T12:00:00Z' }, ['--idle-exit', '0']);
  t.is(first.logs.find((l) => l.msg === 'the configured image changed while cosd was not running'), undefined, 'the first image ever seen is no change');
  await first.stop();
  await writeFile(path.join(root, 'etc/cos-upgrade-image'), 'UPGRADE_IMAGE=127.0.0.1:1/cos/two:v2\n');
  const second = await startCosd(b, { root, env: NO_DISK }, { AGENT_TEST_CLOCK: 'manual:2025-01-07T12:00:00Z' }, ['--idle-exit', '0']);
  t.teardown(() => second.stop());
  const changed = await second.waitForLog((l) => l.msg === 'the configured image changed while cosd was not running');
  t.is(changed.before, 'oci:127.0.0.1:1/cos/one:v1');
  t.is(changed.upgradeImage, 'oci:127.0.0.1:1/cos/two:v2');
  await second.waitForLog((l) => l.msg === 'automatic job started' && l.kind === 'check');
});

test('D-Bus activation: a call starts cosd through its service file; it leaves when idle; the next call starts it again', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cosd-activation-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = await bareRoot(t, 'policy: none\n');
  const services = path.join(dir, 'services');
  await mkdir(services);
  const b = await bus(t, services);
  const { log } = await installActivation(b, { dir, servicedir: services, root, args: ['--idle-exit', '1'] });
  t.true((await readFile(POLICY_FILE, 'utf8')).includes('io.costoolkit.Agent1'));
  const pids: number[] = [];
  for (const round of [1, 2]) {
    const client = await connectAgent({ env: { DBUS_SYSTEM_BUS_ADDRESS: b.address } });
    if (client === null) throw new Error('cosd is neither running nor activatable');
    t.false(await client.daemonRunning(), `round ${round}: not running before the call`);
    const t0 = performance.now();
    const status = await client.getStatus();
    t.log(`round ${round}: GetStatus that activated cosd answered in ${(performance.now() - t0).toFixed(0)} ms`);
    t.is(typeof status, 'object');
    t.true(await client.daemonRunning());
    await client.close();
    // Gone again after its idle period.
    const deadline = Date.now() + 15_000;
    let gone = false;
    while (!gone && Date.now() < deadline) {
      await sleep(250);
      const probe = await connectAgent({ env: { DBUS_SYSTEM_BUS_ADDRESS: b.address } });
      gone = probe !== null && !(await probe.daemonRunning());
      await probe?.close();
    }
    t.true(gone, `round ${round}: cosd left after its idle period`);
    const lines = (await readFile(log, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { msg: string; pid?: number });
    pids.push(lines.filter((l) => l.msg === 'starting').at(-1)?.pid ?? 0);
    t.is(lines.filter((l) => l.msg.startsWith('idle: leaving')).length, round);
  }
  t.is(new Set(pids).size, 2, 'two activations, two processes');
});
