/**
 * Label discovery probes each block device once per host read, on a cOS host on loop devices (candidates: the 5
 * partitions of its disk, AGENT_TEST_DISK): a status read looks up COS_STATE, COS_RECOVERY and COS_OEM, cosd's start
 * adds the recovery of an interrupted run and /oem/grubenv, an action recovers then reads the host; each of them makes
 * ONE probe pass (one `blkid -p` per partition), not one per lookup. An upgrade makes three: its recovery, its reads
 * before the transition image is attached, and the read-back after the switch. Counted through the runner's onCommand seam and
 * cosd's debug "run" lines: counts, not times (the times are in the report of the change and `npm run bench`).
 */
import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { hostStatus } from '../../src/actions/status.ts';
import { rollback } from '../../src/actions/rollback.ts';
import { upgrade } from '../../src/actions/upgrade/upgrade.ts';
import { NoHooks } from '../../src/host/hooks.ts';
import type { AgentDeps } from '../../src/host/deps.ts';
import { silentLogger } from '../../src/sys/log.ts';
import { SysRoot } from '../../src/sys/root.ts';
import { SpawnRunner } from '../../src/sys/runner.ts';
import type { CosHost } from '../helpers/cos-host.ts';
import { testHost } from '../helpers/cosctl.ts';
import { startBus, startCosd } from '../helpers/dbus.ts';

/** Deps on the host whose runner records every argv it runs (and runs it). */
function countingDeps(host: CosHost): { deps: AgentDeps; spawned: string[][] } {
  const spawned: string[][] = [];
  const deps: AgentDeps = {
    root: new SysRoot(host.root),
    runner: new SpawnRunner({ onCommand: (argv) => spawned.push([...argv]) }),
    log: silentLogger,
    hooks: new NoHooks(),
    env: { ...process.env, ...host.env },
    now: () => new Date(),
    testDisk: host.loop,
  };
  return { deps, spawned };
}

/** The devices `blkid -p` probed, sorted (one entry per probe). */
const probed = (spawned: readonly (readonly string[])[]): string[] =>
  spawned.filter((a) => a[0] === 'blkid').map((a) => a[a.length - 1] as string).sort();

const partitions = (host: CosHost): string[] => Object.values(host.devices).sort();

/** "blkid 5, debugfs 6, ..." for t.log. */
const tally = (spawned: readonly (readonly string[])[]): string => {
  const m = new Map<string, number>();
  for (const a of spawned) m.set(a[0] as string, (m.get(a[0] as string) ?? 0) + 1);
  return `${spawned.length} spawns: ${[...m].map(([k, v]) => `${k} ${v}`).join(', ')}`;
};

test.serial('one status read (cosctl status) probes each partition once, for its three label lookups', async (t) => {
  const host = await testHost(t);
  const { deps, spawned } = countingDeps(host);
  const doc = await hostStatus(deps);
  t.is(doc.status.booted?.slot, 'active');
  t.is(doc.status.slots.recovery.present, true, 'COS_RECOVERY found (and mounted read-only) from the same pass');
  t.deepEqual(probed(spawned), partitions(host), 'one blkid per partition');
  t.log(`status read: ${tally(spawned)}`);
});

test.serial('cosd start-up (recovery of an interrupted run, /oem/grubenv, the first status read) probes each partition once', async (t) => {
  const bus = await startBus();
  t.teardown(() => bus.stop());
  const host = await testHost(t);
  const cosd = await startCosd(bus, host, { COS_LOG_LEVEL: 'debug' });
  t.teardown(() => cosd.stop());
  const ready = cosd.logs.findIndex((l) => l.msg === 'ready');
  t.true(ready > 0);
  const runs = cosd.logs.slice(0, ready).filter((l) => l.msg === 'run').map((l) => l['argv'] as string[]);
  t.true(cosd.logs.slice(0, ready).some((l) => l.msg === 'on the bus'));
  t.deepEqual(probed(runs), partitions(host), 'one blkid per partition for the whole start');
  t.log(`cosd start-up: ${tally(runs)}`);
});

test.serial('an action (rollback: recovery of an interrupted run, then a writable host read) probes each partition once', async (t) => {
  const host = await testHost(t);
  const { deps, spawned } = countingDeps(host);
  const out = await rollback(deps);
  t.is(out.nextEntry, 'fallback');
  t.deepEqual(probed(spawned), partitions(host));
  // The status read after it is a new read: a new pass (devices may have come or gone since).
  const before = spawned.length;
  await hostStatus(deps);
  t.deepEqual(probed(spawned.slice(before)), partitions(host));
  t.log(`rollback: ${tally(spawned.slice(0, before))}`);
});

test.serial('an upgrade probes each partition three times: recovery of an interrupted run, the reads before its transition image exists (read-host to plan, one pass), and the read-back after the switch', async (t) => {
  const host = await testHost(t);
  const tree = await mkdtemp(path.join(tmpdir(), 'probe-tree-'));
  t.teardown(() => rm(tree, { recursive: true, force: true }));
  await mkdir(path.join(tree, 'etc'), { recursive: true });
  await writeFile(path.join(tree, 'etc/os-release'), 'NAME="probe"\nVERSION="2.0.0"\n');
  const { deps, spawned } = countingDeps(host);
  const out = await upgrade(deps, { image: `dir:${tree}` });
  t.is(out.version, '2.0.0');
  const parts = partitions(host);
  t.deepEqual(probed(spawned), [...parts, ...parts, ...parts].sort(), 'three passes, not one per lookup');
  t.log(`upgrade (dir: source): ${tally(spawned)}`);
});
