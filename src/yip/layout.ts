/**
 * The `layout` plugin as cOS's elemental (v0.0.15) runs it (yip.md 3.19): the disk is `device.label`'s (the disk
 * holding the filesystem with that label) or `device.path`; `expand_partition` grows the last partition to `size`
 * MiB (0: to the end of the disk) and its ext2/3/4 filesystem with it; each of `add_partitions` whose filesystem label
 * does not exist yet is appended after the last partition, 1 MiB aligned (`size` MiB, 0: the rest of the disk), named
 * `pLabel`, and formatted with `filesystem` (default ext4, elemental's LinuxFs; `-` leaves it unformatted) labelled
 * `fsLabel`. GPT only. The tools: sfdisk --json (reading), sgdisk (writing), partx (the kernel's view), mkfs.*,
 * e2fsck and resize2fs, run through the `exec` the caller gives (src/sys spawns).
 *
 * Deviation from elemental v0.0.15: every listed partition is created (elemental returns after the first one it
 * creates in a step).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { YipStep } from './schema.ts';

import type { ToolExec } from './tool.ts';

export type LayoutExec = ToolExec;

interface Table {
  label: string;
  device: string;
  lastlba: number;
  sectorsize: number;
  partitions: Array<{ node: string; start: number; size: number; name?: string }>;
}

const MiB = 1024 * 1024;

async function readTable(exec: LayoutExec, disk: string): Promise<Table> {
  const out = await exec(['sfdisk', '--json', disk]);
  const t = (JSON.parse(out.stdout) as { partitiontable?: Table }).partitiontable;
  if (t === undefined) throw new Error(`${disk}: sfdisk found no partition table`);
  if (t.label !== 'gpt') throw new Error(`${disk}: the partition table is ${t.label}; layout handles GPT only`);
  return { ...t, partitions: [...(t.partitions ?? [])].sort((a, b) => a.start - b.start) };
}

const partNumber = (disk: string, node: string): number => Number(node.slice(disk.length).replace(/^p/, ''));

/** The node of partition `n` of `disk` (/dev/sda3, /dev/loop0p3, /dev/nvme0n1p3), once the kernel has it. */
async function partitionNode(disk: string, n: number): Promise<string> {
  const node = `${disk}${/\d$/.test(disk) ? 'p' : ''}${n}`;
  for (let i = 0; i < 50 && !existsSync(node); i++) await sleep(100);
  if (!existsSync(node)) throw new Error(`${node} did not appear after the partition table changed`);
  return node;
}

/** The device holding the filesystem labelled `label`, or null (blkid -L exits 2 when there is none). */
async function deviceByLabel(exec: LayoutExec, label: string): Promise<string | null> {
  const r = await exec(['blkid', '-L', label], { okExitCodes: [2] });
  const dev = r.stdout.trim();
  return r.exitCode === 0 && dev !== '' ? dev : null;
}

function mounted(node: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[0] === node);
}

function mkfsArgv(fs: string, label: string, node: string): string[] {
  if (/^ext[234]$/.test(fs)) return [`mkfs.${fs}`, '-F', '-L', label, node];
  if (fs === 'vfat' || fs === 'fat') return ['mkfs.vfat', '-n', label, node];
  if (fs === 'xfs' || fs === 'btrfs') return [`mkfs.${fs}`, '-f', '-L', label, node];
  return [`mkfs.${fs}`, '-L', label, node];
}

/** Run the step's layout; every failure is an Error naming what failed (the executor records it). */
export async function runLayout(exec: LayoutExec, layout: YipStep['layout'], warn: (w: string) => void): Promise<void> {
  let disk: string;
  if (layout.device.label.trim() !== '') {
    const part = await deviceByLabel(exec, layout.device.label.trim());
    if (part === null) throw new Error(`disk not found: no filesystem labelled ${layout.device.label.trim()}`);
    const parent = (await exec(['lsblk', '--nodeps', '--noheadings', '--output', 'PKNAME', part])).stdout.trim();
    disk = parent !== '' ? `/dev/${parent}` : part;
  } else if (layout.device.path.trim() !== '') {
    disk = layout.device.path.trim();
  } else {
    warn('layout: no target device defined, nothing to do');
    return;
  }
  if (!existsSync(disk) || !statSync(disk).isBlockDevice()) throw new Error(`target disk not found: ${disk} is not a block device`);

  if (layout.expand_partition !== null) {
    // The backup GPT header to the end of the disk first (a disk image written smaller than the disk has it inside).
    await exec(['sgdisk', '--move-second-header', disk]);
    const table = await readTable(exec, disk);
    const last = table.partitions[table.partitions.length - 1];
    if (last === undefined) throw new Error(`${disk}: no partition to expand`);
    const n = partNumber(disk, last.node);
    const sectors = layout.expand_partition.size > 0 ? Math.floor((layout.expand_partition.size * MiB) / table.sectorsize) : table.lastlba - last.start + 1;
    if (last.start + sectors - 1 > table.lastlba) throw new Error(`${disk}: partition ${n} cannot grow to ${layout.expand_partition.size} MiB: the disk ends first`);
    if (sectors < last.size) throw new Error(`${disk}: partition ${n} is ${Math.floor((last.size * table.sectorsize) / MiB)} MiB; expand_partition does not shrink it to ${layout.expand_partition.size} MiB`);
    // sfdisk keeps the partition's start, type, UUID and name; only its size changes.
    await exec(['sfdisk', '--no-reread', '--no-tell-kernel', '-N', String(n), disk], { stdin: `, ${sectors}\n` });
    await exec(['partx', '--update', '--nr', String(n), disk], { okExitCodes: [1] });
    const node = await partitionNode(disk, n);
    const type = (await exec(['blkid', '-o', 'value', '-s', 'TYPE', node], { okExitCodes: [2] })).stdout.trim();
    if (/^ext[234]$/.test(type)) {
      if (!mounted(node)) await exec(['e2fsck', '-f', '-y', node], { okExitCodes: [1] });
      await exec(['resize2fs', node]);
    } else if (type !== '') {
      throw new Error(`${node}: partition grown, but growing a ${type} filesystem is not supported here (ext2/3/4 are)`);
    }
  }

  for (const part of layout.add_partitions) {
    if (part.fsLabel !== '' && (await deviceByLabel(exec, part.fsLabel)) !== null) {
      warn(`layout: a filesystem labelled ${part.fsLabel} exists, partition not added`);
      continue;
    }
    const fs = part.filesystem !== '' ? part.filesystem : 'ext4';
    const table = await readTable(exec, disk);
    const align = Math.floor(MiB / table.sectorsize);
    const lastEnd = table.partitions.reduce((end, p) => Math.max(end, p.start + p.size - 1), 0);
    const start = Math.max(align, Math.ceil((lastEnd + 1) / align) * align);
    const end = part.size > 0 ? start + Math.floor((part.size * MiB) / table.sectorsize) - 1 : table.lastlba;
    if (end > table.lastlba || start > table.lastlba) throw new Error(`${disk}: no room for ${part.size > 0 ? `${part.size} MiB` : 'a partition'} after the last partition`);
    const used = new Set(table.partitions.map((p) => partNumber(disk, p.node)));
    let n = 1;
    while (used.has(n)) n++;
    await exec(['sgdisk', `--new=${n}:${start}:${end}`, `--change-name=${n}:${part.pLabel}`, `--typecode=${n}:8300`, disk]);
    await exec(['partx', '--update', disk], { okExitCodes: [1] });
    await exec(['partx', '--add', '--nr', String(n), disk], { okExitCodes: [1] });
    const node = await partitionNode(disk, n);
    if (fs !== '-' && fs !== 'none' && fs !== 'noformat') await exec(mkfsArgv(fs, part.fsLabel, node));
  }
}
