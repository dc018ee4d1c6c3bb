/**
 * The pure side of label discovery (src/partitions/labels.ts), and discoverOnce (src/partitions/discover.ts) with a
 * runner that answers `blkid -p` from a table, over plain files standing in for devices: however many labels one host
 * read looks up, each candidate is probed once, and every answer (one device, several, none, unreadable) is the one a
 * pass of its own would give.
 */
import test from 'ava';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { AgentError, CommandError } from '../../src/model/errors.ts';
import {
  ambiguousMessage,
  devicesWithLabel,
  discoverOnce,
  findDeviceByLabel,
  notFoundMessage,
  pickRunning,
  probeCandidates,
  uniqueCandidates,
  unreadableLinkTarget,
  type BlockDevice,
  type DeviceProbe,
} from '../../src/partitions/index.ts';
import type { Command, CommandResult, Runner } from '../../src/sys/runner.ts';

const dev = (device: string, label?: string): BlockDevice => ({ device, ...(label !== undefined ? { label } : {}) });
const probe = (p: Partial<DeviceProbe>): DeviceProbe => ({ candidates: [], resolved: [], devices: [], failures: [], scoped: true, ...p });

test('uniqueCandidates keeps the first name of each device (a node and a symlink to it are one device)', (t) => {
  t.deepEqual(uniqueCandidates(['/dev/a', '/x/link-to-a', '/dev/b', '/dev/a'], ['/dev/a', '/dev/a', '/dev/b', '/dev/a']), {
    candidates: ['/dev/a', '/dev/b'],
    resolved: ['/dev/a', '/dev/b'],
  });
  t.deepEqual(uniqueCandidates([], []), { candidates: [], resolved: [] });
});

test('devicesWithLabel: the probed devices carrying the label, in candidate order', (t) => {
  const p = probe({ devices: [dev('/dev/a', 'COS_STATE'), dev('/dev/b', 'COS_OEM'), dev('/dev/c'), dev('/dev/d', 'COS_STATE')] });
  t.deepEqual(devicesWithLabel(p, 'COS_STATE').map((d) => d.device), ['/dev/a', '/dev/d']);
  t.deepEqual(devicesWithLabel(p, 'COS_OEM').map((d) => d.device), ['/dev/b']);
  t.deepEqual(devicesWithLabel(p, 'COS_NOWHERE'), []);
});

test('pickRunning: the only mounted one; else the only one on a used disk; else none', (t) => {
  const a = dev('/dev/a', 'L');
  const b = dev('/dev/b', 'L');
  t.is(pickRunning([{ device: a, mounted: false, onUsedDisk: true }, { device: b, mounted: true, onUsedDisk: false }]), b, 'mounted wins over a used disk');
  t.is(pickRunning([{ device: a, mounted: true, onUsedDisk: true }, { device: b, mounted: true, onUsedDisk: true }]), undefined, 'two mounted: ambiguous');
  t.is(pickRunning([{ device: a, mounted: false, onUsedDisk: true }, { device: b, mounted: false, onUsedDisk: false }]), a);
  t.is(pickRunning([{ device: a, mounted: false, onUsedDisk: true }, { device: b, mounted: false, onUsedDisk: true }]), undefined, 'both on used disks');
  t.is(pickRunning([{ device: a, mounted: false, onUsedDisk: false }, { device: b, mounted: false, onUsedDisk: false }]), undefined);
});

test('unreadableLinkTarget: a by-label link is believed only for a candidate blkid could not read (not a missing one)', (t) => {
  const p = probe({
    candidates: ['/dev/a', '/dev/b', '/dev/c'],
    resolved: ['/dev/a', '/dev/real-b', '/dev/c'],
    failures: [{ device: '/dev/b', why: 'Permission denied' }, { device: '/dev/c', why: 'no such device' }],
  });
  t.is(unreadableLinkTarget(p, '/dev/real-b'), '/dev/b');
  t.is(unreadableLinkTarget(p, '/dev/c'), undefined, 'a device that does not exist is never believed');
  t.is(unreadableLinkTarget(p, '/dev/a'), undefined, 'a device blkid read is not taken from the link');
  t.is(unreadableLinkTarget(p, undefined), undefined);
});

test('the not-found and ambiguous messages name the label, the candidates and what could not be probed', (t) => {
  const scoped = probe({ candidates: ['/dev/a', '/dev/b'], failures: [{ device: '/dev/b', why: 'no such device' }] });
  t.is(notFoundMessage(scoped, 'COS_X'), 'no block device carries the label COS_X (among /dev/a, /dev/b; could not probe /dev/b (no such device))');
  t.is(notFoundMessage(probe({ candidates: [] }), 'COS_X'), 'no block device carries the label COS_X (among no candidates)');
  t.is(notFoundMessage(probe({ candidates: ['/dev/a', '/dev/b', '/dev/c'], scoped: false }), 'COS_X'), 'no block device carries the label COS_X (among the 3 block devices)');
  t.is(ambiguousMessage('COS_X', [dev('/dev/a'), dev('/dev/b')]), 'several block devices carry the label COS_X: /dev/a, /dev/b, and none of them is the one the running system uses');
});

/** Plain files standing in for block devices (probeDevice only needs them to exist), and a blkid answering from `table`. */
async function fakeDevices(t: ExecutionContext, table: Record<string, string | { fail: string }>): Promise<{ dir: string; devs: Record<string, string>; runner: Runner; probes: string[] }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'labels-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const devs: Record<string, string> = {};
  for (const name of Object.keys(table)) {
    devs[name] = path.join(dir, name);
    await writeFile(devs[name] as string, '');
  }
  const probes: string[] = [];
  const runner: Runner = {
    run(cmd: Command): Promise<CommandResult> {
      const device = cmd.argv[cmd.argv.length - 1] as string;
      t.deepEqual(cmd.argv.slice(0, -1), ['blkid', '-p', '-o', 'export'], 'only blkid probes run');
      probes.push(path.basename(device));
      const entry = table[path.basename(device)];
      if (entry === undefined) return Promise.resolve({ exitCode: 2, stdout: '', stderr: '' });
      if (typeof entry !== 'string') return Promise.resolve({ exitCode: 2, stdout: '', stderr: entry.fail });
      return Promise.resolve({ exitCode: 0, stdout: `DEVNAME=${device}\nLABEL=${entry}\nTYPE=ext4\n`, stderr: '' });
    },
  };
  return { dir, devs, runner, probes };
}

test('discoverOnce: the lookups of one read share one probe pass: each candidate probed once, each label answered as alone', async (t) => {
  const { devs, runner, probes } = await fakeDevices(t, { p1: 'COS_GRUB', p2: 'COS_OEM', p3: 'COS_STATE', p4: 'COS_RECOVERY', p5: 'COS_PERSISTENT', blank: '' });
  const candidates = Object.values(devs);
  let passes = 0;
  const discovery = discoverOnce(() => {
    passes++;
    return probeCandidates(runner, { candidates });
  });
  // Concurrent and later lookups alike.
  const [state, oem] = await Promise.all([discovery.find('COS_STATE'), discovery.find('COS_OEM')]);
  const recovery = await discovery.find('COS_RECOVERY');
  const missing = await t.throwsAsync(discovery.find('COS_NOWHERE'), { instanceOf: AgentError });
  t.is(state.device, devs.p3);
  t.is(oem.device, devs.p2);
  t.is(recovery.device, devs.p4);
  t.is(missing?.code, 'DEVICE_NOT_FOUND');
  t.is(passes, 1);
  t.deepEqual([...probes].sort(), ['blank', 'p1', 'p2', 'p3', 'p4', 'p5'], 'each candidate probed once, for four lookups');

  // The same answers as a pass of its own per lookup (findDeviceByLabel), which probes everything every time.
  probes.length = 0;
  t.is((await findDeviceByLabel(runner, 'COS_STATE', { candidates })).device, devs.p3);
  t.is((await findDeviceByLabel(runner, 'COS_OEM', { candidates })).device, devs.p2);
  t.is(probes.length, 12);
});

test('discoverOnce: two devices with one label neither of which the running system uses is DEVICE_AMBIGUOUS on every lookup of it; other labels still resolve', async (t) => {
  const { devs, runner, probes } = await fakeDevices(t, { a3: 'COS_STATE', a2: 'COS_OEM', b3: 'COS_STATE' });
  const discovery = discoverOnce(() => probeCandidates(runner, { candidates: Object.values(devs) }));
  for (let i = 0; i < 2; i++) {
    const err = await t.throwsAsync(discovery.find('COS_STATE'), { instanceOf: AgentError });
    t.is(err?.code, 'DEVICE_AMBIGUOUS');
    t.regex(err?.message ?? '', new RegExp(`${devs.a3}.*${devs.b3}`));
  }
  t.is((await discovery.find('COS_OEM')).device, devs.a2);
  t.is(probes.length, 3);
});

test('discoverOnce: a candidate blkid cannot read is named in DEVICE_NOT_FOUND, and found through a by-label link to it', async (t) => {
  const { dir, devs, runner, probes } = await fakeDevices(t, { ok: 'COS_OEM', broken: { fail: 'error: /dev/broken: Input/output error\n' } });
  const devDir = path.join(dir, 'dev');
  await mkdir(path.join(devDir, 'disk/by-label'), { recursive: true });
  await symlink(devs.broken as string, path.join(devDir, 'disk/by-label/COS_STATE'));
  const discovery = discoverOnce(() => probeCandidates(runner, { candidates: Object.values(devs) }), { devDir });
  t.deepEqual(await discovery.find('COS_STATE'), { device: devs.broken, label: 'COS_STATE' });
  const err = await t.throwsAsync(discovery.find('COS_NOWHERE'), { instanceOf: AgentError });
  t.is(err?.code, 'DEVICE_NOT_FOUND');
  t.regex(err?.message ?? '', /could not probe .*broken \(error: \/dev\/broken: Input\/output error\)/);
  t.is(probes.length, 2);
});

test('discoverOnce: a pass that fails (no candidate list) fails every lookup of the read with its error, and is not retried within it', async (t) => {
  let passes = 0;
  const discovery = discoverOnce(() => {
    passes++;
    return Promise.reject(new AgentError('DEVICE_NOT_FOUND', '/dev/loop99 is not a whole-disk block device'));
  });
  for (const label of ['COS_STATE', 'COS_OEM']) {
    const err = await t.throwsAsync(discovery.find(label), { instanceOf: AgentError });
    t.regex(err?.message ?? '', /loop99/);
  }
  t.is(passes, 1);
});

test('probeCandidates records a blkid failure as the last line of its stderr, in candidate order, without throwing', async (t) => {
  const { devs, runner } = await fakeDevices(t, { x: { fail: 'warning\nerror: x: cannot read\n' }, y: 'Y' });
  const failing: Runner = {
    run: (cmd) => (path.basename(cmd.argv[cmd.argv.length - 1] as string) === 'y'
      ? Promise.reject(new CommandError('probing y', cmd.argv, { exitCode: 4, signal: null, stderrTail: '' }))
      : runner.run(cmd)),
  };
  const p = await probeCandidates(failing, { candidates: [devs.x as string, devs.y as string, path.join(path.dirname(devs.x as string), 'gone')] });
  t.deepEqual(p.devices, []);
  t.deepEqual(p.failures.map((f) => [path.basename(f.device), f.why]), [['x', 'error: x: cannot read'], ['y', 'exit 4'], ['gone', 'no such device']]);
  t.true(p.scoped);
});
