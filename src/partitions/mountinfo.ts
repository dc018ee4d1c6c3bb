/**
 * PURE parsing of /proc/<pid>/mountinfo (proc(5)). No I/O.
 *
 *   36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 *   (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)     (10)         (11)
 *
 * The kernel escapes space, tab, newline and backslash in paths as octal `\040 \011 \012 \134`.
 */

export interface MountInfo {
  id: number;
  parent: number;
  mountPoint: string;
  /** Root of the mount inside its filesystem ("/" unless a bind mount of a subdirectory). */
  root: string;
  fstype: string;
  /** Mount source ("/dev/loop0p4", "tmpfs", ...). */
  source: string;
  /** Per-mount options (ro/rw, relatime, ...). */
  options: string[];
  /** Per-superblock options. */
  superOptions: string[];
  /** "major:minor" of the filesystem (st_dev of its files). */
  majorMinor?: string;
  /** Optional fields such as "shared:1", "master:2". */
  optionalFields?: string[];
}

/** Decode the kernel's octal escapes (`\040` -> space). */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

function splitOptions(s: string | undefined): string[] {
  if (s === undefined || s === '') return [];
  return s.split(',').map(unescapeMountField);
}

/** Parse mountinfo text. Malformed lines are skipped (the kernel never produces them). */
export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    if (sep < 0 || fields.length < sep + 3) continue;
    const [idS, parentS, majorMinor, root, mountPoint, options] = fields;
    const id = Number(idS);
    const parent = Number(parentS);
    if (!Number.isInteger(id) || !Number.isInteger(parent) || root === undefined || mountPoint === undefined) continue;
    const info: MountInfo = {
      id,
      parent,
      mountPoint: unescapeMountField(mountPoint),
      root: unescapeMountField(root),
      fstype: unescapeMountField(fields[sep + 1] ?? ''),
      source: unescapeMountField(fields[sep + 2] ?? ''),
      options: splitOptions(options),
      superOptions: splitOptions(fields[sep + 3]),
      optionalFields: fields.slice(6, sep),
    };
    if (majorMinor !== undefined) info.majorMinor = majorMinor;
    out.push(info);
  }
  return out;
}

/** True when the mount is read-only (per-mount "ro" flag). */
export function isReadOnly(m: Pick<MountInfo, 'options'>): boolean {
  return m.options.includes('ro');
}

/**
 * The mount whose mount point is `target` (exact path, already normalised). When several are stacked on the same
 * point, the last one (the visible one) wins.
 */
export function findMountAt(target: string, mounts: readonly MountInfo[]): MountInfo | undefined {
  let found: MountInfo | undefined;
  for (const m of mounts) if (m.mountPoint === target) found = m;
  return found;
}
