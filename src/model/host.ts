/**
 * The versioned status document of `cosctl status` (and later of D-Bus GetStatus), in the shape of bootc's
 * BootcHost (apiVersion, kind, spec, status{booted, staged, rollback}) plus cOS's three named slots.
 */

export const HOST_API_VERSION = 'io.costoolkit.agent/v1';
export const HOST_KIND = 'CosHost';

export type SlotName = 'active' | 'passive' | 'recovery';
export type BootedFrom = 'active' | 'passive' | 'recovery' | 'live' | 'unknown';
/** not-applicable: a `dir:` source, a local tree that no registry signature covers. */
export type Verification = 'verified' | 'skipped' | 'not-applicable' | 'unknown';

/** What is known of one slot's OS image. */
export interface SlotStatus {
  /** Slot name. */
  slot: SlotName;
  /** Image file relative to its partition ("cOS/active.img"). */
  file: string;
  /** Whether the file exists. */
  present: boolean;
  /** Filesystem label inside the image (COS_ACTIVE, COS_PASSIVE, COS_SYSTEM); null for squashfs. */
  label: string | null;
  /** ext2 or squashfs. */
  fs: 'ext2' | 'squashfs' | null;
  /** Size of the image file in bytes. */
  size: number | null;
  /** The image's identity: its filesystem UUID (ext2), or `squashfs:<mkfs time>:<bytes>`; null when unreadable. */
  uuid: string | null;
  /**
   * How the state.yaml record relates to the image: `own` (the slot's record describes it), `moved` (another slot's
   * record does), `unknown` (records name other images: image, digest and verification are not known), `none`.
   */
  record: 'own' | 'moved' | 'unknown' | 'none';
  /** Source URI as recorded in state.yaml ("docker://reg/img:tag"). */
  image: string | null;
  /** Digest of the image manifest it was staged from. */
  imageDigest: string | null;
  /** VERSION from the image's os-release, as recorded at staging. */
  version: string | null;
  /** When it was staged (ISO 8601). */
  timestamp: string | null;
  /** Whether its signature was verified when staged. */
  verification: Verification;
  /** Who signed it, as verified when staged (the record's verification detail); null when not verified or unknown. */
  signedBy: string | null;
}

export interface UpgradeResult {
  /** Transaction id. */
  transaction: string;
  result: 'success' | 'failure';
  target: 'system' | 'recovery';
  image: string | null;
  imageDigest: string | null;
  /** Error code (ErrorCode) on failure. */
  code: string | null;
  error: string | null;
  /** Whether the old active moved to passive (system upgrades). */
  rotated: boolean;
  /** The failure was a cancel (the caller aborted the upgrade). Absent in records of older versions: not a cancel. */
  cancelled?: boolean;
  /** What went wrong after the point of no return (the slot is switched; these say what is not as it should be). */
  warnings?: string[];
  /**
   * The run was cut (power cut, crash, SIGKILL) at this step (an UPGRADE_STEPS name) and the next run of the agent
   * found it: undone before the switch (result failure, code INTERRUPTED), finished after it (result success).
   */
  interruptedAt?: string;
  startedAt: string;
  finishedAt: string;
}

export interface HostStatusDocument {
  apiVersion: typeof HOST_API_VERSION;
  kind: typeof HOST_KIND;
  metadata: { name: string };
  spec: {
    /** The configured upgrade source, if any. */
    image: { image: string; transport: 'registry' | 'channel' | 'dir' | 'file' } | null;
    /** Whether signatures are required. */
    verify: boolean;
  };
  status: {
    /** Which slot the running system booted from (from /proc/cmdline). */
    bootedFrom: BootedFrom;
    /** The last upgrade was rolled back by boot assessment (upgrade_failure). */
    upgradeFailure: boolean;
    /** bootc-style views: the booted slot, the slot GRUB boots next if that differs, and the rollback slot. */
    booted: SlotStatus | null;
    staged: SlotStatus | null;
    rollback: SlotStatus | null;
    slots: Record<SlotName, SlotStatus>;
    /**
     * What GRUB boots next, evaluated from its env blocks and the images as the cOS grub.cfg does: the entry, the slot
     * it boots (null: none can boot), whether a one-shot choice takes it, why, whether boot assessment falls back
     * (upgrade_failure), and after a one-shot, what boots the time after.
     */
    nextBoot: {
      entry: string;
      oneShot: boolean;
      slot: SlotName | null;
      reason: 'one-shot' | 'default' | 'saved-entry' | 'boot-assessment' | 'grub-fallback';
      upgradeFailure: boolean;
      then?: { entry: string; slot: SlotName | null };
    };
    /** Boot assessment (host/boot-model.ts assessmentState): armed, last try, boots of active left (null: not armed). */
    bootAssessment: { enabled: boolean; tentative: boolean; triesLeft: number | null };
    lastUpgrade: UpgradeResult | null;
    /**
     * This boot is a fallback (upgrade_failure): the upgrade that failed boot assessment, as its slot's record names
     * it, and the tries it was given (null: not armed by the agent). Null otherwise.
     */
    failedUpgrade: { slot: 'active' | 'passive'; image: string | null; digest: string | null; version: string | null; uuid: string | null; triesUsed: number | null } | null;
    /**
     * Only when a user other than root read the host without cosd: what it could not read, each naming the part and
     * why (host/bootchooser.ts). The rest is what could be read.
     */
    unreadable?: Array<{ of: 'state' | 'recovery' | 'oem' | SlotName; name: string; why: string }>;
  };
}
