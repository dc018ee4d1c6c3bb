/**
 * VM-test helper: read and write a GRUB environment block that lives in a file on an ext2/3/4 partition of a raw disk
 * image, without mounting anything (vm-boot.md section 3): `sfdisk -J` gives the partition offsets, the ext superblock
 * read at the partition's offset gives its label and block size, `debugfs -R "bmap <file> 0" disk?offset=N` gives
 * the file's data block, the 1024 bytes are copied out, edited with `grub-editenv`, and written back in place. This
 * is exactly what GRUB's own save_env does (rewrite the existing block in place), so the file never moves.
 *
 * Raw images only (a qcow2 overlay has to be converted first).
 */
import { open, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run } from './exec.ts';

export const ENV_BLOCK_SIZE = 1024;

export interface DiskPartition {
  /** 1-based partition number. */
  number: number;
  /** GPT partition name. */
  name: string;
  /** Filesystem label (ext2/3/4 or vfat), '' when none could be read. */
  label: string;
  /** Byte offset and size in the disk image. */
  offset: number;
  size: number;
}

export interface EnvLocation {
  /** Filesystem label of the partition (COS_OEM, COS_STATE, ...). */
  label: string;
  /** Path of the env file from the partition's root. */
  file: string;
}

/** The user env block /oem/grubenv (next_entry, saved_entry, extra_cmdline, ...). */
export const OEM_GRUBENV: EnvLocation = { label: 'COS_OEM', file: '/grubenv' };
/** COS_STATE /grub_oem_env (default_menu_entry). */
export const STATE_OEM_ENV: EnvLocation = { label: 'COS_STATE', file: '/grub_oem_env' };
/** COS_STATE /boot_assessment (enable_boot_assessment, boot_assessment_tentative). */
export const STATE_BOOT_ASSESSMENT: EnvLocation = { label: 'COS_STATE', file: '/boot_assessment' };

async function readAt(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

async function writeAt(file: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return (nul >= 0 ? b.subarray(0, nul) : b).toString('latin1').trim();
}

/** The filesystem label at `offset`: ext2/3/4 (s_volume_name) or FAT32/FAT16 (BPB volume label); '' otherwise. */
export async function fsLabelAt(disk: string, offset: number): Promise<string> {
  const sb = await readAt(disk, offset + 1024, 1024);
  if (sb.length >= 136 && sb.readUInt16LE(56) === 0xef53) return cString(sb.subarray(120, 136));
  const boot = await readAt(disk, offset, 512);
  if (boot.length === 512 && boot.readUInt16LE(510) === 0xaa55) {
    if (boot.subarray(82, 87).toString('latin1') === 'FAT32') return cString(boot.subarray(71, 82));
    if (boot.subarray(54, 57).toString('latin1') === 'FAT') return cString(boot.subarray(43, 54));
  }
  return '';
}

/** The GPT partitions of a raw disk image, with their filesystem labels. */
export async function diskPartitions(disk: string): Promise<DiskPartition[]> {
  const json = JSON.parse((await run(['sfdisk', '-J', disk])).stdout) as {
    partitiontable: { sectorsize?: number; partitions: Array<{ node: string; start: number; size: number; name?: string }> };
  };
  const ss = json.partitiontable.sectorsize ?? 512;
  const out: DiskPartition[] = [];
  for (const p of json.partitiontable.partitions) {
    const number = Number(/(\d+)$/.exec(p.node)?.[1] ?? '0');
    const offset = p.start * ss;
    out.push({ number, name: p.name ?? '', label: await fsLabelAt(disk, offset), offset, size: p.size * ss });
  }
  return out;
}

export async function partitionByLabel(disk: string, label: string): Promise<DiskPartition> {
  const parts = await diskPartitions(disk);
  const p = parts.find((x) => x.label === label);
  if (!p) throw new Error(`${disk}: no partition with filesystem label ${label} (have: ${parts.map((x) => x.label || x.name).join(', ')})`);
  return p;
}

/** Byte offset of the (single-block) env file's data inside the disk image. */
export async function envBlockOffset(disk: string, loc: EnvLocation): Promise<number> {
  const part = await partitionByLabel(disk, loc.label);
  const sb = await readAt(disk, part.offset + 1024, 1024);
  if (sb.length < 1024 || sb.readUInt16LE(56) !== 0xef53) throw new Error(`${disk}: ${loc.label} is not ext2/3/4`);
  const blockSize = 1024 << sb.readUInt32LE(24);
  const image = `${disk}?offset=${part.offset}`;
  const stat = (await run(['debugfs', '-c', '-R', `stat ${loc.file}`, image])).stdout;
  const size = Number(/Size:\s*(\d+)/.exec(stat)?.[1] ?? 'NaN');
  if (size !== ENV_BLOCK_SIZE) throw new Error(`${loc.label}${loc.file}: not a ${ENV_BLOCK_SIZE}-byte env block (debugfs stat: ${stat.split('\n')[0] ?? ''} size ${size})`);
  const block = Number((await run(['debugfs', '-c', '-R', `bmap ${loc.file} 0`, image])).stdout.trim());
  if (!Number.isInteger(block) || block <= 0) throw new Error(`${loc.label}${loc.file}: no data block (inline or sparse?)`);
  return part.offset + block * blockSize;
}

function parseList(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return env;
}

async function withBlock<T>(disk: string, loc: EnvLocation, fn: (file: string, offset: number) => Promise<T>): Promise<T> {
  const offset = await envBlockOffset(disk, loc);
  const dir = await mkdtemp(path.join(tmpdir(), 'cosvm-env-'));
  try {
    const file = path.join(dir, 'grubenv');
    const block = await readAt(disk, offset, ENV_BLOCK_SIZE);
    if (!block.subarray(0, 24).equals(Buffer.from('# GRUB Environment Block'))) {
      throw new Error(`${loc.label}${loc.file}: no GRUB env block header at byte ${offset} of ${disk}`);
    }
    await writeFile(file, block);
    return await fn(file, offset);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** All variables of the env block (`grub-editenv list`). A variable GRUB saved empty reads as ''. */
export async function readGrubEnv(disk: string, loc: EnvLocation = OEM_GRUBENV): Promise<Record<string, string>> {
  return withBlock(disk, loc, async (file) => parseList((await run(['grub-editenv', file, 'list'])).stdout));
}

/**
 * Sets (string value, '' included) or unsets (null) variables in the env block in place; returns the new content.
 */
export async function writeGrubEnv(
  disk: string,
  vars: Readonly<Record<string, string | null>>,
  loc: EnvLocation = OEM_GRUBENV,
): Promise<Record<string, string>> {
  return withBlock(disk, loc, async (file, offset) => {
    const sets = Object.entries(vars).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`);
    const unsets = Object.entries(vars).filter(([, v]) => v === null).map(([k]) => k);
    if (sets.length > 0) await run(['grub-editenv', file, 'set', ...sets]);
    if (unsets.length > 0) await run(['grub-editenv', file, 'unset', ...unsets]);
    const block = await readFile(file);
    if (block.length !== ENV_BLOCK_SIZE) throw new Error(`env block grew to ${block.length} bytes (too many variables?)`);
    await writeAt(disk, offset, block);
    return parseList((await run(['grub-editenv', file, 'list'])).stdout);
  });
}
