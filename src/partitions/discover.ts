/**
 * Finding block devices by filesystem label. udev hosts have /dev/disk/by-label; hosts without udev (containers, CI)
 * do not, and there `blkid -p` (low-level probe, no cache) on each candidate device is the reliable source. One probe
 * pass (probeCandidates) answers every label lookup of a host read (discoverOnce); the decisions are in labels.ts.
 */
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError, CommandError } from '../model/errors.ts';
import type { Runner } from '../sys/runner.ts';
import { parseBlkidExport, toBlockDevice, type BlockDevice } from './blkid.ts';
import {
  ambiguousMessage,
  devicesWithLabel,
  notFoundMessage,
  NO_SUCH_DEVICE,
  pickRunning,
  uniqueCandidates,
  unreadableLinkTarget,
  type DeviceProbe,
  type ProbeFailure,
  type RunningFacts,
} from './labels.ts';
import { findMountOf, readMounts } from './mount.ts';

export type { BlockDevice } from './blkid.ts';
export type { DeviceProbe } from './labels.ts';

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
 * One probe pass: `blkid -p` on every candidate (default: every device in /proc/partitions), each device once (a node
 * and a symlink to it are one device), at most PROBE_CONCURRENCY at a time. A candidate that cannot be probed is
 * recorded as a failure, not thrown.
 */
export async function probeCandidates(runner: Runner, opts: { candidates?: readonly string[]; devDir?: string } = {}): Promise<DeviceProbe> {
  const given = opts.candidates ?? (await listBlockDevices(opts.devDir ?? '/dev'));
  const { candidates, resolved } = uniqueCandidates(given, await Promise.all(given.map(resolveOr)));
  const failed: Array<ProbeFailure | undefined> = new Array<ProbeFailure | undefined>(candidates.length);
  const probed = await mapLimited(candidates.map((d, i) => [d, i] as const), PROBE_CONCURRENCY, async ([dev, i]) => {
    try {
      return await probeDevice(runner, dev);
    } catch (err) {
      const why =
        err instanceof CommandError
          ? err.stderrTail.trim().split('\n').pop() || `exit ${err.exitCode}`
          : err instanceof AgentError && err.code === 'DEVICE_NOT_FOUND'
            ? NO_SUCH_DEVICE
            : String(err);
      failed[i] = { device: dev, why };
      return undefined;
    }
  });
  return {
    candidates,
    resolved,
    devices: probed.filter((d): d is BlockDevice => d !== undefined),
    failures: failed.filter((f): f is ProbeFailure => f !== undefined),
    scoped: opts.candidates !== undefined,
  };
}

/**
 * The device carrying filesystem label `label`, from one probe pass (probeCandidates). udev's /dev/disk/by-label link
 * names only one device even when two carry the label (a second cOS disk, install media), so it is not trusted alone:
 * it is used only for a candidate blkid could not read. Several devices with the label: the one the running system
 * uses is taken (labels.ts pickRunning, on the mount table as it is now), else AgentError('DEVICE_AMBIGUOUS') naming
 * them. None -> AgentError('DEVICE_NOT_FOUND').
 */
export async function deviceWithLabel(probe: DeviceProbe, label: string, opts: { devDir?: string } = {}): Promise<BlockDevice> {
  const matches = devicesWithLabel(probe, label);
  if (matches.length === 1) return matches[0] as BlockDevice;
  if (matches.length > 1) {
    const running = pickRunning(await runningFacts(matches));
    if (running !== undefined) return running;
    throw new AgentError('DEVICE_AMBIGUOUS', ambiguousMessage(label, matches));
  }
  // Nothing readable carries it: udev's link, when it names a candidate blkid could not read, is believed.
  const target = await realpath(path.join(opts.devDir ?? '/dev', 'disk', 'by-label', encodeByLabelName(label))).catch(() => undefined);
  const unreadable = unreadableLinkTarget(probe, target);
  if (unreadable !== undefined) return { device: unreadable, label };
  throw new AgentError('DEVICE_NOT_FOUND', notFoundMessage(probe, label));
}

/**
 * The device carrying filesystem label `label`, found by a blkid probe of every candidate (default: every device in
 * /proc/partitions): one probe pass (probeCandidates), then deviceWithLabel. Several lookups of one host read share a
 * pass through discoverOnce instead.
 */
export async function findDeviceByLabel(
  runner: Runner,
  label: string,
  opts: { candidates?: readonly string[]; devDir?: string } = {},
): Promise<BlockDevice> {
  return deviceWithLabel(await probeCandidates(runner, opts), label, opts.devDir !== undefined ? { devDir: opts.devDir } : {});
}

/** Label lookups answered from one probe pass. */
export interface DeviceDiscovery {
  /** deviceWithLabel on the pass (made by the first lookup; rejects as the pass did when it failed). */
  find(label: string): Promise<BlockDevice>;
}

/**
 * Label lookups sharing one probe pass: `probe` runs on the first lookup (concurrent ones wait for it), and every
 * lookup resolves its label from that pass. The mount facts (which of several devices runs) are read at each lookup.
 * Meant for the span of one host read: a device attached or relabelled later is not seen by it.
 */
export function discoverOnce(probe: () => Promise<DeviceProbe>, opts: { devDir?: string } = {}): DeviceDiscovery {
  let pass: Promise<DeviceProbe> | undefined;
  return {
    find: async (label) => deviceWithLabel(await (pass ??= probe()), label, opts),
  };
}

/** Whether each of several devices carrying a label is mounted, or on a disk that holds a mounted filesystem. */
async function runningFacts(matches: readonly BlockDevice[]): Promise<RunningFacts[]> {
  const mounts = await readMounts();
  const mounted = matches.map((d) => findMountOf(d.device, mounts) !== undefined);
  // The disks holding a mounted filesystem matter only when none of the devices is mounted.
  const usedDisks = new Set<string>();
  if (!mounted.includes(true)) {
    for (const m of mounts) {
      if (m.majorMinor === undefined) continue;
      const disk = await parentDisk(`/sys/dev/block/${m.majorMinor}`);
      if (disk !== undefined) usedDisks.add(disk);
    }
  }
  const facts: RunningFacts[] = [];
  for (const [i, d] of matches.entries()) {
    const disk = usedDisks.size === 0 ? undefined : await parentDisk(`/sys/class/block/${path.basename(await resolveOr(d.device))}`);
    facts.push({ device: d, mounted: mounted[i] === true, onUsedDisk: disk !== undefined && usedDisks.has(disk) });
  }
  return facts;
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
