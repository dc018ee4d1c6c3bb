import test from 'ava';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../src/model/errors.ts';
import {
  attachLoop,
  diskPartitions,
  encodeByLabelName,
  findDeviceByLabel,
  listBlockDevices,
  parseProcPartitions,
  probeDevice,
} from '../../src/partitions/index.ts';
import { ensurePartitionNodes } from '../helpers/cos-host.ts';
import { labelledLoop, runner, sh, tempDir, uniqueLabel } from './_util.ts';

test('parseProcPartitions lists the device names of /proc/partitions in order', (t) => {
  const text = 'major minor  #blocks  name\n\n   7        0     409600 loop0\n 259        0      16384 loop0p1\n 254        0  268435456 vda\n';
  t.deepEqual(parseProcPartitions(text), ['loop0', 'loop0p1', 'vda']);
});

test('labels are encoded like udev names them in /dev/disk/by-label', (t) => {
  t.is(encodeByLabelName('COS_STATE'), 'COS_STATE');
  t.is(encodeByLabelName('my label/x'), 'my\\x20label\\x2fx');
  t.is(encodeByLabelName('é-1.2:a=b@c#d+e'), 'é-1.2:a=b@c#d+e');
});

test('a label is found by probing the given candidates, with type, uuid and the device path', async (t) => {
  const dir = await tempDir(t);
  const label = uniqueLabel();
  const a = await labelledLoop(t, dir, uniqueLabel());
  const b = await labelledLoop(t, dir, label);
  const dev = await findDeviceByLabel(runner, label, { candidates: [a.device, b.device] });
  t.is(dev.device, b.device);
  t.is(dev.label, label);
  t.is(dev.fstype, 'ext4');
  t.regex(dev.uuid ?? '', /^[0-9a-f-]{36}$/);
});

test('without candidates, every block device of /proc/partitions is probed', async (t) => {
  const dir = await tempDir(t);
  const label = uniqueLabel();
  const loop = await labelledLoop(t, dir, label);
  t.true((await listBlockDevices()).includes(loop.device));
  const dev = await findDeviceByLabel(runner, label);
  t.is(dev.device, loop.device);
});

test('when no candidate carries the label, it throws DEVICE_NOT_FOUND naming the label', async (t) => {
  const dir = await tempDir(t);
  const a = await labelledLoop(t, dir, uniqueLabel());
  const unformatted = await labelledLoop(t, dir, '');
  const err = await t.throwsAsync(findDeviceByLabel(runner, 'COS_NOWHERE', { candidates: [a.device, unformatted.device] }), {
    instanceOf: AgentError,
  });
  t.is(err?.code, 'DEVICE_NOT_FOUND');
  t.regex(err?.message ?? '', /COS_NOWHERE/);
  t.regex(err?.message ?? '', new RegExp(a.device));
});

test('a candidate that cannot be probed is skipped and named in the not-found message', async (t) => {
  const err = await t.throwsAsync(findDeviceByLabel(runner, 'COS_NOWHERE', { candidates: ['/dev/does-not-exist'] }));
  t.is((err as AgentError).code, 'DEVICE_NOT_FOUND');
  t.regex(err?.message ?? '', /could not probe \/dev\/does-not-exist/);
});

test('when two candidates carry the same label, it throws DEVICE_AMBIGUOUS naming both devices', async (t) => {
  const dir = await tempDir(t);
  const label = uniqueLabel();
  const a = await labelledLoop(t, dir, label);
  const b = await labelledLoop(t, dir, label);
  const err = await t.throwsAsync(findDeviceByLabel(runner, label, { candidates: [a.device, b.device] }));
  t.is((err as AgentError).code, 'DEVICE_AMBIGUOUS');
  t.regex(err?.message ?? '', new RegExp(`${a.device}.*${b.device}`));
  t.regex(err?.message ?? '', new RegExp(label));
});

test('a /dev/disk/by-label link is not trusted alone: udev names one device, a second one with the label is found and the label is ambiguous', async (t) => {
  const dir = await tempDir(t);
  const label = uniqueLabel();
  const linked = await labelledLoop(t, dir, label);
  const other = await labelledLoop(t, dir, label);
  const devDir = path.join(dir, 'dev');
  await mkdir(path.join(devDir, 'disk/by-label'), { recursive: true });
  await symlink(linked.device, path.join(devDir, 'disk/by-label', label));
  const err = await t.throwsAsync(findDeviceByLabel(runner, label, { devDir, candidates: [linked.device, other.device] }));
  t.is((err as AgentError).code, 'DEVICE_AMBIGUOUS');
  t.regex(err?.message ?? '', new RegExp(`${linked.device}.*${other.device}`));
});

test('of two devices carrying the label, the one the running system has mounted is taken (a second cOS disk attached)', async (t) => {
  const dir = await tempDir(t);
  const label = uniqueLabel();
  const attached = await labelledLoop(t, dir, label);
  const running = await labelledLoop(t, dir, label);
  const mnt = path.join(dir, 'mnt');
  await mkdir(mnt);
  await sh(['mount', '-o', 'ro', running.device, mnt]);
  const dev = await findDeviceByLabel(runner, label, { candidates: [attached.device, running.device] });
  t.is(dev.device, running.device);
  await sh(['umount', mnt]);
  // Neither mounted (and both on disks without a mounted filesystem): ambiguous again.
  const err = await t.throwsAsync(findDeviceByLabel(runner, label, { candidates: [attached.device, running.device] }));
  t.is((err as AgentError).code, 'DEVICE_AMBIGUOUS');
});

test('a by-label link pointing outside the candidates is ignored and the candidates are probed', async (t) => {
  const dir = await tempDir(t);
  const label = uniqueLabel();
  const elsewhere = await labelledLoop(t, dir, label);
  const mine = await labelledLoop(t, dir, label);
  const devDir = path.join(dir, 'dev');
  await mkdir(path.join(devDir, 'disk/by-label'), { recursive: true });
  await symlink(elsewhere.device, path.join(devDir, 'disk/by-label', label));
  const dev = await findDeviceByLabel(runner, label, { devDir, candidates: [mine.device] });
  t.is(dev.device, mine.device);
});

test('a stale by-label link (device relabelled since) falls back to probing', async (t) => {
  const dir = await tempDir(t);
  const label = uniqueLabel();
  const relabelled = await labelledLoop(t, dir, uniqueLabel());
  const real = await labelledLoop(t, dir, label);
  const devDir = path.join(dir, 'dev');
  await mkdir(path.join(devDir, 'disk/by-label'), { recursive: true });
  await symlink(relabelled.device, path.join(devDir, 'disk/by-label', label));
  const dev = await findDeviceByLabel(runner, label, { devDir, candidates: [relabelled.device, real.device] });
  t.is(dev.device, real.device);
});

test('probeDevice returns undefined for a device without a filesystem', async (t) => {
  const dir = await tempDir(t);
  const blank = await labelledLoop(t, dir, '');
  await sh(['wipefs', '-a', '-q', blank.device]);
  t.is(await probeDevice(runner, blank.device), undefined);
});

test('diskPartitions lists the partitions of a GPT disk on a loop device, by number', async (t) => {
  const dir = await tempDir(t);
  const disk = path.join(dir, 'disk.img');
  await writeFile(disk, '');
  await sh(['truncate', '-s', '40M', disk]);
  await sh(['sfdisk', '-q', disk], 'label: gpt\nsize=8MiB, name=one\nsize=8MiB, name=two\nname=three\n');
  const loop = await attachLoop(runner, disk, { partscan: true });
  const made: string[] = [];
  t.teardown(async () => {
    await loop.close();
    for (const n of made) await sh(['rm', '-f', n]);
  });
  await ensurePartitionNodes(runner, loop.device, 3, made);
  const parts = await diskPartitions(loop.device);
  t.deepEqual(parts, [1, 2, 3].map((n) => `${loop.device}p${n}`));
  const probed = await probeDevice(runner, parts[1] as string);
  t.is(probed?.partlabel, 'two');
  const err = await t.throwsAsync(diskPartitions(parts[0] as string));
  t.is((err as AgentError).code, 'DEVICE_NOT_FOUND');
  t.regex(err?.message ?? '', /partition/);
});

test('diskPartitions of a whole disk without partitions is empty, and of a missing device throws DEVICE_NOT_FOUND', async (t) => {
  const dir = await tempDir(t);
  const loop = await labelledLoop(t, dir, uniqueLabel());
  t.deepEqual(await diskPartitions(loop.device), []);
  const err = await t.throwsAsync(diskPartitions('/dev/nonexistent-disk'));
  t.is((err as AgentError).code, 'DEVICE_NOT_FOUND');
  t.regex(err?.message ?? '', /nonexistent-disk/);
});

test('a device named twice among the candidates (node and symlink) is not reported as ambiguous', async (t) => {
  const dir = await tempDir(t);
  const label = uniqueLabel();
  const loop = await labelledLoop(t, dir, label);
  const link = path.join(dir, 'link');
  await symlink(loop.device, link);
  const dev = await findDeviceByLabel(runner, label, { candidates: [loop.device, link, loop.device] });
  t.is(dev.device, loop.device);
});
