/**
 * Finding block devices by filesystem label. udev hosts have /dev/disk/by-label; hosts without udev (containers, CI)
 * do not, and there `blkid -p` (low-level probe, no cache) on each candidate device is the reliable source.
 */
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError, CommandError } from '../model/errors.ts';
import type { Runner } from '../sys/runner.ts';
import { parseBlkidExport, toBlockDevice, type BlockDevice } from './blkid.ts';
import { findMountOf, readMounts } from './mount.ts';

export type { BlockDevice } from './blkid.ts';

/** How many blkid probes run at once. */
const PROBE_CONCURRENCY = 4;

/** Names of /proc/partitions ("vda", "loop0", "loop0p1"), in table order. */
export function parseProcPartitions(text: string): string[] {
  const names: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length === 4 && /^\d+$/.test(f[0] ?? '') && /^\d+$/.test(f[1] ?? '') && f[3] !== undefined) names.push(f[3]);
  }
  return names;
}

/** Every block device the kernel lists in /proc/partitions, as device paths under `devDir` (default /dev). */
export async function listBlockDevices(devDir = '/dev'): Promise<string[]> {
  const text = await readFile('/proc/partitions', 'utf8');
  return parseProcPartitions(text).map((n) => path.join(devDir, n));
}

/** udev's encoding of a label in /dev/disk/by-label names: unsafe ASCII as \xNN, valid UTF-8 kept. */
export function encodeByLabelName(label: string): string {
  let out = '';
  for (const ch of label) {
    const code = ch.codePointAt(0) ?? 0;
    out += code >= 0x80 || /[0-9A-Za-z#+\-.:=@_]/.test(ch) ? ch : `\\x${code.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/**
 * Low-level probe of one device: `blkid -p -o export <dev>`. undefined when blkid finds nothing (exit 2, silent).
 * A missing device throws AgentError('DEVICE_NOT_FOUND'); a device blkid cannot read (exit 2 with an error, or any
 * other failure) throws the CommandError.
 */
export async function probeDevice(runner: Runner, device: string): Promise<BlockDevice | undefined> {
  const present = await stat(device).then(
    () => true,
    () => false,
  );
  if (!present) throw new AgentError('DEVICE_NOT_FOUND', `${device} does not exist`);
  const argv = ['blkid', '-p', '-o', 'export', device];
  const res = await runner.run({ argv, description: `probing ${device}`, okExitCodes: [2] });
  if (res.exitCode === 2) {
    if (res.stderr.trim() === '') return undefined;
    throw new CommandError(`probing ${device}`, argv, { exitCode: 2, signal: null, stderrTail: res.stderr });
  }
  const rec = parseBlkidExport(res.stdout)[0];
  return rec === undefined ? undefined : toBlockDevice(rec, device);
}

async function resolveOr(p: string): Promise<string> {
  try {
    return await realpath(p);
  } catch {
    return path.normalize(p);
  }
}

async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * The device carrying filesystem label `label`, found by a blkid probe of every candidate (default: every device in
 * /proc/partitions). udev's /dev/disk/by-label link names only one device even when two carry the label (a second
 * cOS disk, install media), so it is not trusted alone: it is used only for a device blkid cannot read.
 * Several devices with the label: the one the running system uses is taken (see pickRunning), else
 * AgentError('DEVICE_AMBIGUOUS') naming them. None -> AgentError('DEVICE_NOT_FOUND').
 */
export async function findDeviceByLabel(
  runner: Runner,
  label: string,
  opts: { candidates?: readonly string[]; devDir?: string } = {},
): Promise<BlockDevice> {
  const devDir = opts.devDir ?? '/dev';
  const given = opts.candidates ?? (await listBlockDevices(devDir));
  // The same device named twice (a node and a symlink to it) must not look like two devices with the label.
  const resolved = await Promise.all(given.map(resolveOr));
  const candidates = given.filter((_d, i) => resolved.indexOf(resolved[i] as string) === i);

  const failures: Array<{ device: string; why: string }> = [];
  const probed = await mapLimited(candidates, PROBE_CONCURRENCY, async (dev) => {
    try {
      return await probeDevice(runner, dev);
    } catch (err) {
      const why =
        err instanceof CommandError
          ? err.stderrTail.trim().split('\n').pop() || `exit ${err.exitCode}`
          : err instanceof AgentError && err.code === 'DEVICE_NOT_FOUND'
            ? 'no such device'
            : String(err);
      failures.push({ device: dev, why });
      return undefined;
    }
  });
  const matches = probed.filter((d): d is BlockDevice => d !== undefined && d.label === label);
  if (matches.length === 1) return matches[0] as BlockDevice;
  if (matches.length > 1) {
    const running = await pickRunning(matches);
    if (running !== undefined) return running;
    throw new AgentError(
      'DEVICE_AMBIGUOUS',
      `several block devices carry the label ${label}: ${matches.map((d) => d.device).join(', ')}, and none of them is the one the running system uses`,
    );
  }
  // Nothing readable carries it: udev's link, when it names a candidate blkid could not read, is believed.
  const target = await realpath(path.join(devDir, 'disk', 'by-label', encodeByLabelName(label))).catch(() => undefined);
  const unreadable = failures.find((f) => f.why !== 'no such device' && resolveOrSync(f.device, resolved, given) === target);
  if (target !== undefined && unreadable !== undefined) return { device: unreadable.device, label };
  const scope = opts.candidates ? `among ${candidates.join(', ') || 'no candidates'}` : `among the ${candidates.length} block devices`;
  const unprobed = failures.length > 0 ? `; could not probe ${failures.map((f) => `${f.device} (${f.why})`).join(', ')}` : '';
  throw new AgentError('DEVICE_NOT_FOUND', `no block device carries the label ${label} (${scope}${unprobed})`);
}

/** The resolved path of `device`, one of `given` (resolved in the same order). */
function resolveOrSync(device: string, resolved: readonly string[], given: readonly string[]): string | undefined {
  return resolved[given.indexOf(device)];
}

/**
 * Of several devices carrying one label, the one the running system uses: the only one mounted, else the only one on
 * a disk that holds a mounted filesystem (the disk the system booted from: its initrd mounted COS_STATE, COS_OEM and
 * COS_PERSISTENT there). undefined when that does not single one out.
 */
async function pickRunning(matches: readonly BlockDevice[]): Promise<BlockDevice | undefined> {
  const mounts = await readMounts();
  const mounted = matches.filter((d) => findMountOf(d.device, mounts) !== undefined);
  if (mounted.length === 1) return mounted[0];
  if (mounted.length > 1) return undefined;
  const usedDisks = new Set<string>();
  for (const m of mounts) {
    if (m.majorMinor === undefined) continue;
    const disk = await parentDisk(`/sys/dev/block/${m.majorMinor}`);
    if (disk !== undefined) usedDisks.add(disk);
  }
  const onUsed: BlockDevice[] = [];
  for (const d of matches) {
    const disk = await parentDisk(`/sys/class/block/${path.basename(await resolveOr(d.device))}`);
    if (disk !== undefined && usedDisks.has(disk)) onUsed.push(d);
  }
  return onUsed.length === 1 ? onUsed[0] : undefined;
}

/** The whole disk a sysfs block entry belongs to (itself when it is not a partition); undefined without sysfs. */
async function parentDisk(sysEntry: string): Promise<string | undefined> {
  const real = await realpath(sysEntry).catch(() => undefined);
  if (real === undefined) return undefined;
  const isPartition = await stat(path.join(real, 'partition')).then(() => true, () => false);
  return path.basename(isPartition ? path.dirname(real) : real);
}

/** Partitions of a whole disk ('/dev/loop3' -> ['/dev/loop3p1', ...]), by partition number, from sysfs. */
export async function diskPartitions(disk: string): Promise<string[]> {
  const real = await resolveOr(disk);
  const name = path.basename(real);
  const devDir = path.dirname(real);
  const sysfs = await stat('/sys/class/block').then(
    () => true,
    () => false,
  );
  if (!sysfs) {
    // No sysfs: /proc/partitions naming (sda -> sda1, loop0 -> loop0p1, nvme0n1 -> nvme0n1p1).
    const names = parseProcPartitions(await readFile('/proc/partitions', 'utf8'));
    if (!names.includes(name)) throw new AgentError('DEVICE_NOT_FOUND', `${disk} is not a block device the kernel knows`);
    const re = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}p?(\\d+)$`);
    return names
      .filter((n) => re.test(n))
      .sort((a, b) => Number(re.exec(a)?.[1]) - Number(re.exec(b)?.[1]))
      .map((n) => path.join(devDir, n));
  }
  if (await stat(`/sys/class/block/${name}/partition`).then(() => true, () => false)) {
    throw new AgentError('DEVICE_NOT_FOUND', `${disk} is a partition, not a whole disk`);
  }
  let entries: string[];
  try {
    entries = await readdir(`/sys/block/${name}`);
  } catch (err) {
    throw new AgentError('DEVICE_NOT_FOUND', `${disk} is not a whole-disk block device`, { cause: err });
  }
  const parts: { name: string; n: number }[] = [];
  for (const e of entries) {
    if (!e.startsWith(name)) continue;
    const num = await readFile(`/sys/block/${name}/${e}/partition`, 'utf8').catch(() => undefined);
    if (num !== undefined) parts.push({ name: e, n: Number(num.trim()) });
  }
  return parts.sort((a, b) => a.n - b.n).map((p) => path.join(devDir, p.name));
}

/** True when `p` is a block device node. */
export async function isBlockDevice(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isBlockDevice(),
    () => false,
  );
}
