/**
 * The agent's effective configuration, resolved from the cOS / elemental config sources (spec cos-layout.md 2.2,
 * 3.1–3.3, 9). Pure data: produced by src/config/resolve.ts, read by everything else.
 */

/** Where an upgrade payload comes from. `oci` covers elemental's `docker:` and `oci:` schemes (both pull an OCI image). */
export type ImageSourceKind = 'oci' | 'channel' | 'dir' | 'file';

/**
 * One upgrade source.
 * - `ref`: the bare value: an image reference (`reg.example/os:1.2`), a luet package (`system/cos`) or an absolute path.
 * - `uri`: the canonical scheme form `oci:<ref>`, `channel:<pkg>`, `dir:<path>`, `file:<path>`. elemental's state.yaml
 *   writes `docker://<ref>` / `dir:///<path>` instead; src/host/state-file.ts `imageSourceToStateUri` converts.
 */
export interface ImageSource {
  readonly kind: ImageSourceKind;
  readonly ref: string;
  readonly uri: string;
}

/** Filesystem labels (spec 1.1). All but `grub` are configurable through the `*_LABEL` keys. */
export interface Labels {
  /** COS_STATE: partition holding active.img / passive.img. */
  state: string;
  /** COS_ACTIVE: label inside active.img. */
  active: string;
  /** COS_PASSIVE: label inside passive.img. */
  passive: string;
  /** COS_RECOVERY: the recovery partition. */
  recovery: string;
  /** COS_SYSTEM: label inside recovery.img (img-flavour recovery). */
  system: string;
  /** COS_OEM. */
  oem: string;
  /** COS_PERSISTENT. */
  persistent: string;
  /** COS_GRUB: the ESP; hard-coded in cOS, never configurable. */
  grub: string;
}

/** Legacy cosign settings (`COSIGN*` env keys, elemental `cosign` / `cosign-key`; spec 7). */
export interface CosignConfig {
  /** `COSIGN` / `cosign:`: the host asked for cosign verification of OCI sources (elemental default false). */
  enabled: boolean;
  /** `COSIGN_PUBLIC_KEY_LOCATION` / `cosign-key`, split on commas. File paths (spec sigstore.md: no URLs/KMS). */
  publicKeyLocations: string[];
  /** `COSIGN_EXPERIMENTAL`: keyless. Parsed as a boolean (so `0` = key mode, as /etc/cos/config documents). */
  experimental: boolean;
  /** `COSIGN_REPOSITORY`: the repository holding the signatures, when not the image's own. */
  repository?: string;
}

/** The effective configuration. Every field has an entry in `origins` (dotted path -> where the value came from). */
export interface AgentConfig {
  /** Source for active-system upgrades; absent when nothing configures one (elemental would fall back to `channel:system/cos`). */
  upgradeSource?: ImageSource;
  /** Source for recovery upgrades: `RECOVERY_IMAGE` / `upgrade.recovery-system.uri`, else the upgrade source. */
  recoverySource?: ImageSource;
  /** G3 `upgrade.recovery` / CLI `--recovery`: the upgrade targets the recovery image. */
  upgradeRecovery: boolean;
  /** `CHANNEL_UPGRADES`: bare `UPGRADE_IMAGE`/`RECOVERY_IMAGE` values are luet packages (default false, as elemental). */
  channelUpgrades: boolean;
  /**
   * `DEFAULT_IMAGE_SIZE` / `upgrade.system.size`, MiB; null when unset: a new slot image is then as big as the image
   * file it replaces (3072 MiB, elemental's `ImgSize`, when there is none), grown to fit the rootfs either way.
   */
  imageSizeMiB: number | null;
  /**
   * `BOOT_ASSESSMENT_TRIES` / `boot-assessment-tries` (cos-agent's own key): boots of a new active GRUB allows before
   * it falls back to passive (1..9, default 3; cOS gives one).
   */
  bootAssessmentTries: number;
  /** `upgrade.recovery-system.size`, MiB; absent = `imageSizeMiB`. */
  recoveryImageSizeMiB?: number;
  /** `upgrade.system.fs` (ext2|ext3|ext4); absent = ext2 as elemental. */
  systemFs?: string;
  /** `upgrade.recovery-system.fs` (squashfs|ext2|ext3|ext4); absent = keep the current recovery flavour. */
  recoveryFs?: string;
  /** `GRUB_ENTRY_NAME` / `upgrade.grub-entry-name`. */
  grubEntryName?: string;
  labels: Labels;
  /** Signature verification required (default true). */
  verify: boolean;
  /** When `verify` is false: the origin that turned it off, e.g. `/etc/cos/config:12 (NO_VERIFY)`. */
  verifyDisabledBy?: string;
  cosign: CosignConfig;
  /** `CLOUD_INIT_PATHS` / `cloud-init-paths`: extra yip dirs, in addition to /system/oem, /oem, /usr/local/cloud-config. */
  cloudInitPaths: string[];
  /** `strict`: hook (yip stage) errors are fatal. */
  strict: boolean;
  /** `reboot`: reboot after a successful upgrade. */
  reboot: boolean;
  /** `poweroff`: power off after a successful upgrade. */
  poweroff: boolean;
  /** `squash-compression`: mksquashfs compression options for squashfs recovery images. */
  squashCompression?: string[];
  /**
   * Where each effective value came from, keyed by field path (`upgradeSource`, `labels.state`, `cosign.enabled`…):
   * `default`, `<file>:<line> (<KEY>)`, `env (ELEMENTAL_X)`, `flag (<override>)`, or for the recovery fallback
   * `fallback to upgradeSource: <origin>`.
   */
  origins: Record<string, string>;
}

/** Explicit values from the caller (CLI flags / D-Bus options). Highest precedence. Leave a field undefined when not given. */
export interface ConfigOverrides {
  /** A source URI (`oci:`, `docker:`, `channel:`, `dir:`, `file:`) or a bare OCI reference. Applies to the upgrade target. */
  image?: string;
  /** true disables verification; false explicitly requires it (even if a config file disabled it). */
  noVerify?: boolean;
  imageSizeMiB?: number;
  /** Target the recovery image. */
  recovery?: boolean;
}

/** Built-in label defaults (spec 1.1; `EC@v0.0.15:pkg/constants`). */
export const DEFAULT_LABELS: Readonly<Labels> = Object.freeze({
  state: 'COS_STATE',
  active: 'COS_ACTIVE',
  passive: 'COS_PASSIVE',
  recovery: 'COS_RECOVERY',
  system: 'COS_SYSTEM',
  oem: 'COS_OEM',
  persistent: 'COS_PERSISTENT',
  grub: 'COS_GRUB',
});

/** elemental `ImgSize` (MiB): the size of a new slot image when nothing sets one and there is no image to replace. */
export const DEFAULT_IMAGE_SIZE_MIB = 3072;
