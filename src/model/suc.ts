/**
 * PURE: what SUC's upgrade job decides (/usr/sbin/suc-upgrade, the default command of elemental-operator's
 * ManagedOSImage plans; the reference is rancher/elemental's framework/files/usr/sbin/suc-upgrade):
 *
 * - the host shutting down (`systemctl is-system-running` says `stopping`): exit 1, SUC retries later;
 * - the image's /etc/os-release byte-equal to the host's: the upgrade is done (after the reboot), exit 0;
 * - without FORCE=true, an image that is not newer than the host (same IMAGE_REPO and an IMAGE_TAG that does not
 *   sort after the host's, as `sort -V` sorts): nothing to do, exit 0;
 * - else upgrade from the container's root (dir:/): UPGRADE_RECOVERY_ONLY=true the recovery slot alone (no reboot,
 *   exit 0), else the system (and with UPGRADE_RECOVERY=true the recovery slot too), then reboot the host and exit 1,
 *   so that SUC runs the job again after the reboot, where the versions match.
 */
export interface SucInput {
  /** `systemctl is-system-running`'s answer on the host ('' when it could not be asked). */
  systemState: string;
  /** The host's and the image's os-release, as bytes read (null: missing), and their fields as the shell reads them. */
  hostRelease: string | null;
  imageRelease: string | null;
  hostFields: ReadonlyMap<string, string>;
  imageFields: ReadonlyMap<string, string>;
  force: boolean;
  upgradeRecovery: boolean;
  upgradeRecoveryOnly: boolean;
}

export type SucDecision =
  | { action: 'retry-later'; exit: 1; reason: string }
  | { action: 'done'; exit: 0; reason: string; syncConfig: boolean }
  | { action: 'upgrade'; targets: ReadonlyArray<'system' | 'recovery'>; reboot: boolean; reason: string };

export function sucDecision(input: SucInput): SucDecision {
  if (input.systemState.trim() === 'stopping') return { action: 'retry-later', exit: 1, reason: 'the host is shutting down' };
  if (input.hostRelease !== null && input.imageRelease !== null && input.hostRelease === input.imageRelease) {
    return { action: 'done', exit: 0, reason: 'the host runs this release already', syncConfig: true };
  }
  if (!input.force) {
    const newer = isNewer(input.imageFields, input.hostFields);
    if (!newer.newer) return { action: 'done', exit: 0, reason: `${newer.why}; FORCE=true downgrades`, syncConfig: false };
  }
  if (input.upgradeRecoveryOnly) return { action: 'upgrade', targets: ['recovery'], reboot: false, reason: 'UPGRADE_RECOVERY_ONLY=true' };
  return { action: 'upgrade', targets: input.upgradeRecovery ? ['system', 'recovery'] : ['system'], reboot: true, reason: 'a newer release' };
}

/** The image is newer than the host: other repositories or an unknown host tag count as newer (the reference's rule). */
function isNewer(img: ReadonlyMap<string, string>, hst: ReadonlyMap<string, string>): { newer: boolean; why: string } {
  const [imgRepo, hostRepo] = [img.get('IMAGE_REPO') ?? '', hst.get('IMAGE_REPO') ?? ''];
  const [imgTag, hostTag] = [img.get('IMAGE_TAG') ?? '', hst.get('IMAGE_TAG') ?? ''];
  if (imgRepo !== hostRepo) return { newer: true, why: `another repository (${hostRepo || 'none'} -> ${imgRepo || 'none'})` };
  if (hostTag === '') return { newer: true, why: 'the host has no IMAGE_TAG' };
  if (hostTag === imgTag) return { newer: false, why: `the host has IMAGE_TAG ${hostTag} already` };
  return compareVersions(imgTag, hostTag) > 0
    ? { newer: true, why: `${imgTag} is newer than ${hostTag}` }
    : { newer: false, why: `the host's ${hostTag} is newer than ${imgTag}` };
}

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';
const isAlpha = (c: string | undefined): boolean => c !== undefined && /^[A-Za-z]$/.test(c);

/** The weight of a non-digit character in a version (dpkg's order: ~ before the end, letters before the rest). */
function order(c: string | undefined): number {
  if (c === undefined || isDigit(c)) return 0;
  if (isAlpha(c)) return c.charCodeAt(0);
  if (c === '~') return -1;
  return c.charCodeAt(0) + 256;
}

/** dpkg's version comparison (the core of GNU `sort -V`): runs of non-digits by order(), runs of digits by value. */
function verrevcmp(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let firstDiff = 0;
    while ((i < a.length && !isDigit(a[i])) || (j < b.length && !isDigit(b[j]))) {
      const ac = i < a.length ? order(a[i]) : 0;
      const bc = j < b.length ? order(b[j]) : 0;
      if (ac !== bc) return ac - bc;
      i++;
      j++;
    }
    while (a[i] === '0') i++;
    while (b[j] === '0') j++;
    while (isDigit(a[i]) && isDigit(b[j])) {
      if (firstDiff === 0) firstDiff = (a.charCodeAt(i) - b.charCodeAt(j));
      i++;
      j++;
    }
    if (isDigit(a[i])) return 1;
    if (isDigit(b[j])) return -1;
    if (firstDiff !== 0) return firstDiff;
  }
  return 0;
}

/** The file suffix GNU filevercmp sets aside: `(\.[A-Za-z~][A-Za-z0-9~]*)*$`. */
function suffixStart(s: string): number {
  const m = /(\.[A-Za-z~][A-Za-z0-9~]*)*$/.exec(s);
  return m === null ? s.length : m.index;
}

/**
 * GNU `sort -V` order of two version strings (filevercmp): without their file suffixes first, then whole; equal
 * under both, by bytes. Negative, zero or positive as a sorts before, with or after b.
 */
export function compareVersions(a: string, b: string): number {
  if (a === b) return 0;
  if (a === '') return -1;
  if (b === '') return 1;
  const pa = a.slice(0, suffixStart(a));
  const pb = b.slice(0, suffixStart(b));
  const r = pa === pb ? verrevcmp(a, b) : verrevcmp(pa, pb);
  if (r !== 0) return r;
  return a < b ? -1 : 1;
}
