/**
 * The versioned status document of `cosctl status` (and later of D-Bus GetStatus), in the shape of bootc's
 * BootcHost (apiVersion, kind, spec, status{booted, staged, rollback}) plus cOS's three named slots.
 */

export const HOST_API_VERSION = 'io.costoolkit.agent/v1';
export const HOST_KIND = 'CosHost';

export type SlotName = 'active' | 'passive' | 'recovery';
export type BootedFrom = 'active' | 'passive' | 'recovery' | 'live' | 'unknown';
export type Verification = 'verified' | 'skipped' | 'unknown';

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
    nextBoot: { entry: string; oneShot: boolean };
    bootAssessment: { enabled: boolean; tentative: boolean };
    lastUpgrade: UpgradeResult | null;
  };
}
