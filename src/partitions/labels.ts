/**
 * PURE: finding a filesystem label in one probe pass of the candidate block devices (discover.ts probes them, once
 * per host read, and gathers the mount and disk facts; the decisions are here). No I/O.
 */
import type { BlockDevice } from './blkid.ts';

/** A candidate blkid could not probe, and why (the last line of its error, or 'no such device'). */
export interface ProbeFailure {
  readonly device: string;
  readonly why: string;
}

/** The why of a candidate that does not exist (never believed through a by-label link). */
export const NO_SUCH_DEVICE = 'no such device';

/**
 * One probe pass: what blkid found on every candidate device. Every label lookup of one host read is answered from
 * the same pass (discover.ts DeviceDiscovery), so each device is probed once however many labels are looked up.
 */
export interface DeviceProbe {
  /** Each candidate once (a node and a symlink to it are one device), in the order given. */
  readonly candidates: readonly string[];
  /** The resolved path of each candidate (same order). */
  readonly resolved: readonly string[];
  /** What the probe found on each candidate that carries a signature, in candidate order. */
  readonly devices: readonly BlockDevice[];
  /** The candidates that could not be probed, in candidate order. */
  readonly failures: readonly ProbeFailure[];
  /** The candidates were given (a test disk's partitions) rather than every device of /proc/partitions. */
  readonly scoped: boolean;
}

/** Of `given` and their resolved paths (same order), each device once: the first name of each resolved path. */
export function uniqueCandidates(given: readonly string[], resolved: readonly string[]): { candidates: string[]; resolved: string[] } {
  const candidates: string[] = [];
  const kept: string[] = [];
  given.forEach((d, i) => {
    const r = resolved[i] as string;
    if (resolved.indexOf(r) !== i) return;
    candidates.push(d);
    kept.push(r);
  });
  return { candidates, resolved: kept };
}

/** The probed devices carrying `label`, in candidate order. */
export function devicesWithLabel(probe: DeviceProbe, label: string): BlockDevice[] {
  return probe.devices.filter((d) => d.label === label);
}

/** What the running system does with one of several devices carrying a label. */
export interface RunningFacts {
  readonly device: BlockDevice;
  /** It is mounted. */
  readonly mounted: boolean;
  /** It is on a disk that holds a mounted filesystem (the disk the system booted from). */
  readonly onUsedDisk: boolean;
}

/**
 * Of several devices carrying one label, the one the running system uses: the only one mounted, else (none mounted)
 * the only one on a disk that holds a mounted filesystem (its initrd mounted COS_STATE, COS_OEM and COS_PERSISTENT
 * there). undefined when that does not single one out.
 */
export function pickRunning(matches: readonly RunningFacts[]): BlockDevice | undefined {
  const mounted = matches.filter((m) => m.mounted);
  if (mounted.length === 1) return mounted[0]?.device;
  if (mounted.length > 1) return undefined;
  const onUsed = matches.filter((m) => m.onUsedDisk);
  return onUsed.length === 1 ? onUsed[0]?.device : undefined;
}

/**
 * No probed device carries the label: the candidate udev's by-label link points to (`linkTarget`, resolved), when
 * blkid could not read it (a device that does not exist is never believed). undefined otherwise.
 */
export function unreadableLinkTarget(probe: DeviceProbe, linkTarget: string | undefined): string | undefined {
  if (linkTarget === undefined) return undefined;
  return probe.failures.find((f) => f.why !== NO_SUCH_DEVICE && probe.resolved[probe.candidates.indexOf(f.device)] === linkTarget)?.device;
}

/** The DEVICE_AMBIGUOUS message: several devices carry `label` and none is the one the running system uses. */
export function ambiguousMessage(label: string, matches: readonly BlockDevice[]): string {
  return `several block devices carry the label ${label}: ${matches.map((d) => d.device).join(', ')}, and none of them is the one the running system uses`;
}

/** The DEVICE_NOT_FOUND message: where the label was looked for, and which candidates could not be probed. */
export function notFoundMessage(probe: DeviceProbe, label: string): string {
  const scope = probe.scoped ? `among ${probe.candidates.join(', ') || 'no candidates'}` : `among the ${probe.candidates.length} block devices`;
  const unprobed = probe.failures.length > 0 ? `; could not probe ${probe.failures.map((f) => `${f.device} (${f.why})`).join(', ')}` : '';
  return `no block device carries the label ${label} (${scope}${unprobed})`;
}
