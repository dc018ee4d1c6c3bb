/**
 * The install state file `state.yaml` (elemental ≥ v0.0.16 `InstallState`, spec cos-layout.md 2.10), written to the
 * roots of COS_STATE and COS_RECOVERY. elemental's YAML shape:
 *
 *   date: "2022-07-13T10:41:19Z"
 *   state:                       # partition (inline map: every key except `label` is an image)
 *     label: COS_STATE
 *     active: { source: docker://reg/os:1, source-metadata: { digest: sha256:…, size: 123 }, label: COS_ACTIVE, fs: ext2 }
 *     passive: { … }
 *   recovery: { label: COS_RECOVERY, recovery: { source: …, label: COS_SYSTEM, fs: squashfs } }
 *   oem: { label: COS_OEM }
 *   persistent: { label: COS_PERSISTENT }
 *
 * The agent's own fields live **inside image entries** only (`digest`, `date`, `version`, `verification`,
 * `verification-detail`, `upgrade-result`): elemental decodes an image entry into a struct and ignores unknown keys
 * there, whereas an extra top-level or partition-level key would be decoded as a partition / image and break it
 * (harvester#4526). Unknown keys found on read are kept in `extra` and written back unchanged.
 */

export type ImageSlotName = 'active' | 'passive' | 'recovery';
export type PartitionRole = 'state' | 'recovery' | 'oem' | 'persistent';

/** How the image's signature was handled when it was deployed. */
export type VerificationResult = 'verified' | 'skipped' | 'not-applicable';
/** `staged`: written, not yet booted; `good`: booted and marked good; `failed`: rolled back (upgrade_failure). */
export type UpgradeResult = 'staged' | 'good' | 'failed';

/** elemental `source-metadata` (for docker sources `{digest, size}`); other keys are kept as read. */
export interface SourceMetadata {
  digest?: string;
  size?: number;
  [key: string]: unknown;
}

export interface ImageEntry {
  /** elemental URI form: `docker://reg/img:tag`, `dir:///path`, `channel://system/cos`, `file:///path`. */
  source?: string;
  /** YAML `source-metadata`. */
  sourceMetadata?: SourceMetadata;
  /** Filesystem label inside the image (COS_ACTIVE, COS_PASSIVE, COS_SYSTEM). */
  label?: string;
  /** ext2 | squashfs … */
  fs?: string;
  /** cos-agent: manifest digest of the deployed image (`sha256:…`). elemental's own `source-metadata.digest` is separate. */
  digest?: string;
  /** cos-agent: filesystem UUID of the image (its identity across renames; elemental's copies share it). */
  uuid?: string;
  /** cos-agent: RFC 3339 time the image was deployed. */
  date?: string;
  /** cos-agent: VERSION from the image's os-release. */
  version?: string;
  /** cos-agent: signature verification outcome. */
  verification?: VerificationResult;
  /** cos-agent: YAML `verification-detail`, e.g. the key used or what disabled verification. */
  verificationDetail?: string;
  /** cos-agent: YAML `upgrade-result`. */
  upgradeResult?: UpgradeResult;
  /** Unknown keys, preserved on rewrite. */
  extra?: Record<string, unknown>;
}

export interface PartitionState {
  /** Filesystem label of the partition. */
  label?: string;
  /** Images on the partition by name (`active`, `passive` on state; `recovery` on recovery). */
  images: Partial<Record<string, ImageEntry>>;
  /** Non-mapping keys other than `label`, preserved on rewrite. */
  extra?: Record<string, unknown>;
}

export interface InstallState {
  /** RFC 3339, seconds precision (Go `time.RFC3339`). */
  date?: string;
  /** Partitions by role (`state`, `recovery`, `oem`, `persistent`, or any other mapping key found). */
  partitions: Partial<Record<string, PartitionState>>;
  /** Non-mapping top-level keys other than `date`, preserved on rewrite. */
  extra?: Record<string, unknown>;
}
