/**
 * PURE: what an upgrade or rollback will do, decided from where the host booted and what is on disk, before any
 * side effect. Crash safety of the switch lives here as an ordered list of filesystem steps (see switchSteps).
 */
import type { BootedFrom } from '../../model/host.ts';
import type { Labels } from '../../model/config.ts';
import { decideSystemUpgrade, type BootState } from '../../host/boot-model.ts';

export type UpgradeTarget = 'system' | 'recovery';
export type RecoveryFlavour = 'squashfs' | 'img';

export interface UpgradePlan {
  target: UpgradeTarget;
  /** Label of the partition that holds the slot (COS_STATE or COS_RECOVERY). */
  partitionLabel: string;
  /** Image file the new OS ends up in, relative to the partition root. */
  finalFile: string;
  /** Transition file, relative to the partition root. */
  transitionFile: string;
  fs: 'ext2' | 'squashfs';
  /** Filesystem label the new image must carry (null for squashfs, which has none). */
  label: string | null;
  /** Whether active.img moves to passive.img (false: passive, the last known good, is kept). */
  rotate: boolean;
  /** Why passive is kept, for the log and the status. */
  keepPassiveReason: string | null;
  /** Whether GRUB's default_menu_entry and boot assessment are updated. */
  updateGrub: boolean;
}

export function planUpgrade(input: {
  target: UpgradeTarget;
  /** The host model (host/boot-model.ts): which slot runs the system decides whether active rotates. */
  bootState: Pick<BootState, 'running' | 'bootedBefore'>;
  bootedFrom: BootedFrom;
  upgradeFailure: boolean;
  recoveryFlavour: RecoveryFlavour;
  labels: Labels;
}): UpgradePlan {
  const { labels } = input;
  if (input.target === 'recovery') {
    const squash = input.recoveryFlavour === 'squashfs';
    return {
      target: 'recovery',
      partitionLabel: labels.recovery,
      finalFile: squash ? 'cOS/recovery.squashfs' : 'cOS/recovery.img',
      transitionFile: squash ? 'cOS/transition.squashfs' : 'cOS/transition.img',
      fs: squash ? 'squashfs' : 'ext2',
      label: squash ? null : labels.system,
      rotate: false,
      keepPassiveReason: null,
      updateGrub: false,
    };
  }
  // The slot holding the running image is never overwritten or rotated away (boot-model.ts decideSystemUpgrade).
  const { rotate, keepPassiveReason } = decideSystemUpgrade(input.bootState, input);
  return {
    target: 'system',
    partitionLabel: labels.state,
    finalFile: 'cOS/active.img',
    transitionFile: 'cOS/transition.img',
    fs: 'ext2',
    label: labels.active,
    rotate,
    keepPassiveReason,
    updateGrub: true,
  };
}

/** One filesystem step of a slot switch, applied in order with an fsync of the directory after each. */
/**
 * PURE: whether an upgrade to `digests` (the resolved manifest digest, plus the index digest when the tag named an
 * index) has nothing to do, as `bootc upgrade` reports "no changes": the target slot's image file is there and its
 * recorded digest is one of them. A fresh copy is still staged when the slot is the one being repaired (booted from
 * passive or recovery, or after `upgrade_failure`: the active slot may hold the image that failed) and when
 * verification is required now but the slot's copy was staged unverified. `force` always stages.
 * Returns null when the upgrade must run, else the sentence saying why it need not.
 */
export function alreadyStaged(input: {
  target: UpgradeTarget;
  digests: readonly string[];
  slot: { digest: string | null; present: boolean; verification: string | null };
  bootedFrom: BootedFrom;
  upgradeFailure: boolean;
  verificationRequired: boolean;
  force: boolean;
  /** The slot GRUB boots next (host model); a system upgrade is only "done" when that is active. Default active. */
  nextSlot?: string | null;
}): string | null {
  const { slot } = input;
  if (input.force || !slot.present || slot.digest === null || !input.digests.includes(slot.digest)) return null;
  if (input.target === 'system' && (input.bootedFrom !== 'active' || input.upgradeFailure)) return null;
  if (input.target === 'system' && input.nextSlot !== undefined && input.nextSlot !== 'active') return null;
  if (input.verificationRequired && slot.verification !== 'verified') return null;
  return `the ${input.target === 'recovery' ? 'recovery' : 'active'} slot already holds ${slot.digest}`;
}

export type SwitchStep =
  | { op: 'link'; from: string; to: string }
  | { op: 'rename'; from: string; to: string }
  | { op: 'label'; file: string; label: string };

/**
 * The steps that put the transition image in place. Invariant, checked by test/actions/upgrade/plan.test.ts: after every
 * step, active.img exists and carries the active label, and passive.img (when it existed) carries the passive label,
 * so GRUB's default entry and its fallback both boot at every instant. The old active is first given a second name
 * (hardlink), relabelled only once active.img already names the new image, and then renamed over passive.img.
 */
export function upgradeSwitchSteps(plan: UpgradePlan, labels: Labels, have: { active: boolean }): SwitchStep[] {
  const steps: SwitchStep[] = [];
  if (plan.label !== null) steps.push({ op: 'label', file: plan.transitionFile, label: plan.label });
  if (plan.target === 'system' && plan.rotate && have.active) {
    steps.push({ op: 'link', from: 'cOS/active.img', to: 'cOS/passive.next' });
    steps.push({ op: 'rename', from: plan.transitionFile, to: plan.finalFile });
    steps.push({ op: 'label', file: 'cOS/passive.next', label: labels.passive });
    steps.push({ op: 'rename', from: 'cOS/passive.next', to: 'cOS/passive.img' });
  } else {
    steps.push({ op: 'rename', from: plan.transitionFile, to: plan.finalFile });
  }
  return steps;
}

/**
 * Steps of a permanent rollback (swap active and passive). The default entry (active.img, COS_ACTIVE) boots at every
 * instant; the fallback entry is unbootable only between relabelling the old passive and renaming the old active
 * over passive.img (a swap of labelled images without a copy cannot avoid that window on one of the two entries).
 */
export function swapSteps(labels: Labels): SwitchStep[] {
  return [
    { op: 'link', from: 'cOS/passive.img', to: 'cOS/active.next' },
    { op: 'link', from: 'cOS/active.img', to: 'cOS/passive.next' },
    { op: 'label', file: 'cOS/active.next', label: labels.active },
    { op: 'rename', from: 'cOS/active.next', to: 'cOS/active.img' },
    { op: 'label', file: 'cOS/passive.next', label: labels.passive },
    { op: 'rename', from: 'cOS/passive.next', to: 'cOS/passive.img' },
  ];
}

/** Transition images: what staging builds before the switch (leftovers of an interrupted run are removed). */
export const TRANSITION_FILES: readonly string[] = ['cOS/transition.img', 'cOS/transition.squashfs'];

/** The second names a switch gives images; one may be the only name of an image after a crash (never removed blindly). */
export const NEXT_NAMES: readonly string[] = ['cOS/passive.next', 'cOS/active.next'];
