/**
 * The `layout` plugin on a real loop disk (sgdisk, sfdisk, partx, mkfs, resize2fs): the disk under test is always
 * named by its path (another cOS disk may be attached to this machine); labels are unique per test run.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { SpawnRunner } from '../../src/sys/runner.ts';
import { runLayout, type LayoutExec } from '../../src/yip/layout.ts';
import type { YipStep } from '../../src/yip/schema.ts';

const sh = promisify(execFile);
const MiB = 1024 * 1024;
const runner = new SpawnRunner();
const exec: LayoutExec = async (argv, o = {}) => {
  const r = await runner.run({ argv, description: argv.join(' '), ...(o.okExitCodes !== undefined ? { okExitCodes: o.okExitCodes } : {}), ...(o.stdin !== undefined ? { stdin: o.stdin } : {}) });
  return { exitCode: r.exitCode, stdout: r.stdout };
};

interface Part { node: string; start: number; size: number; name?: string; uuid: string }

async function table(disk: string): Promise<{ lastlba: number; partitions: Part[] }> {
  const { stdout } = await sh('sfdisk', ['--json', disk]);
  return (JSON.parse(stdout) as { partitiontable: { lastlba: number; partitions: Part[] } }).partitiontable;
}

async function blkid(node: string, tag: string): Promise<string> {
  return (await sh('blkid', ['-o', 'value', '-s', tag, node]).catch(() => ({ stdout: '' }))).stdout.trim();
}

/** A GPT disk of `imageMiB` with one ext4 partition of 16 MiB, attached as a loop device of `diskMiB` (a disk image
 * written onto a bigger disk: the backup GPT header is inside the disk). */
async function loopDisk(t: { teardown(fn: () => Promise<void>): void }, imageMiB: number, diskMiB: number): Promise<{ disk: string; label: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'yip-layout-'));
  const file = path.join(dir, 'disk.img');
  await writeFile(file, '');
  await truncate(file, imageMiB * MiB);
  await sh('sgdisk', ['--new=1:2048:+16M', '--change-name=1:COS_OEM', '--typecode=1:8300', file]);
  await truncate(file, diskMiB * MiB);
  const disk = (await sh('losetup', ['--find', '--show', '--partscan', file])).stdout.trim();
  t.teardown(async () => {
    await sh('losetup', ['-d', disk]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });
  const label = `T${randomBytes(4).toString('hex')}`;
  await sh('partx', ['--update', disk]).catch(() => undefined);
  await sh('mkfs.ext4', ['-q', '-F', '-L', label, `${disk}p1`]);
  return { disk, label };
}

const layout = (l: Partial<YipStep['layout']>): YipStep['layout'] => ({ device: { path: '', label: '' }, expand_partition: null, add_partitions: [], ...l });

test.serial('expand_partition grows the last partition (start, name, UUID kept) and its ext4; add_partitions appends aligned, named, formatted ones; a second run adds nothing', async (t) => {
  const { disk, label } = await loopDisk(t, 64, 160);
  const before = await table(disk);
  const p2 = `T${randomBytes(4).toString('hex')}`;
  const warnings: string[] = [];
  const step = layout({
    device: { path: disk, label: '' },
    expand_partition: { size: 48 },
    add_partitions: [
      { fsLabel: p2, pLabel: 'persistent', size: 32, filesystem: 'ext4' },
      { fsLabel: '', pLabel: 'raw', size: 0, filesystem: '-' },
    ],
  });
  await runLayout(exec, step, (w) => warnings.push(w));
  const after = await table(disk);
  const [one, two, three] = after.partitions;
  t.is(after.partitions.length, 3);
  t.like(one, { start: before.partitions[0]?.start, size: (48 * MiB) / 512, name: 'COS_OEM', uuid: before.partitions[0]?.uuid });
  t.like(two, { start: 2048 + (48 * MiB) / 512, size: (32 * MiB) / 512, name: 'persistent' });
  t.is(((two?.start ?? 0) * 512) % MiB, 0, '1 MiB aligned');
  t.like(three, { name: 'raw' });
  t.is((three?.start ?? 0) + (three?.size ?? 0) - 1, after.lastlba, 'size 0: to the end of the disk (the backup GPT moved to its end)');
  t.true(after.lastlba > (64 * MiB) / 512, 'the disk was used beyond the image it was written from');
  const { stdout } = await sh('dumpe2fs', ['-h', `${disk}p1`]);
  const blocks = Number(/Block count:\s+(\d+)/.exec(stdout)?.[1]);
  const blockSize = Number(/Block size:\s+(\d+)/.exec(stdout)?.[1]);
  t.is(blocks * blockSize, 48 * MiB, 'the ext4 of the last partition grew with it');
  t.is(await blkid(`${disk}p1`, 'LABEL'), label);
  t.is(await blkid(`${disk}p2`, 'LABEL'), p2);
  t.is(await blkid(`${disk}p2`, 'TYPE'), 'ext4');
  t.is(await blkid(`${disk}p3`, 'TYPE'), '', '"-": not formatted');
  t.deepEqual(warnings, []);

  const again: string[] = [];
  await runLayout(exec, layout({ device: { path: disk, label: '' }, add_partitions: [{ fsLabel: p2, pLabel: 'persistent', size: 32, filesystem: 'ext4' }] }), (w) => again.push(w));
  t.is((await table(disk)).partitions.length, 3);
  t.deepEqual(again, [`layout: a filesystem labelled ${p2} exists, partition not added`]);
});

test.serial('errors name what is wrong: no such device, no room, a shrink, a missing label; no device: a warning', async (t) => {
  const { disk } = await loopDisk(t, 64, 64);
  await t.throwsAsync(runLayout(exec, layout({ device: { path: '/dev/cos-test-no-such-disk', label: '' }, expand_partition: { size: 0 } }), () => {}), { message: 'target disk not found: /dev/cos-test-no-such-disk is not a block device' });
  await t.throwsAsync(runLayout(exec, layout({ device: { path: disk, label: '' }, add_partitions: [{ fsLabel: '', pLabel: 'big', size: 200, filesystem: '-' }] }), () => {}), { message: `${disk}: no room for 200 MiB after the last partition` });
  await t.throwsAsync(runLayout(exec, layout({ device: { path: disk, label: '' }, expand_partition: { size: 8 } }), () => {}), { message: `${disk}: partition 1 is 16 MiB; expand_partition does not shrink it to 8 MiB` });
  await t.throwsAsync(runLayout(exec, layout({ device: { path: '', label: `T${randomBytes(6).toString('hex')}` } }), () => {}), { message: /^disk not found: no filesystem labelled T[0-9a-f]{12}$/ });
  const warnings: string[] = [];
  await runLayout(exec, layout({}), (w) => warnings.push(w));
  t.deepEqual(warnings, ['layout: no target device defined, nothing to do']);
});
