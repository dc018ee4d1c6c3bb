/**
 * PURE: the one model of what runs and what boots next on a cOS host (RAUC's bootchooser, as a function).
 *
 * Inputs are the on-disk facts (read by bootchooser.ts): where the kernel says it booted from, the identity of the
 * running image (its filesystem UUID, recorded once per boot), each slot image's identity, label and state.yaml
 * record, and the three GRUB environment blocks cOS's grub.cfg reads. Outputs: which slot holds the running image,
 * which GRUB entry (and so which slot) the next boot runs and why, whether that is a staged upgrade, which slot is
 * the fallback, and what each action may do. status, upgrade, rollback, mark and the daemon all call deriveBootState;
 * nothing else interprets GRUB variables.
 *
 * GRUB is evaluated the way the cOS grub.cfg (cos-layout.md 4.2) and grub_boot_assessment (4.5) do: load
 * grub_oem_env then grubenv (the user's env overrides), a one-shot `next_entry` wins and skips boot assessment,
 * else `saved_entry` (empty: entry 0, `cos`); then, when boot assessment is enabled and no one-shot was taken, a
 * tentative boot falls back to `fallback` with `upgrade_failure` on its cmdline, else tentative is set. An entry
 * whose image is missing fails inside GRUB and the `fallback` list ("0 1 2" unless default_fallback) is walked.
 */
import type { BootedFrom, SlotName } from '../model/host.ts';
import type { ImageEntry } from '../model/state.ts';

import { DEFAULT_TRIES, nextTries, TRIES_VAR, type AssessmentScript } from './boot-assessment.ts';

export type GrubEntry = 'cos' | 'fallback' | 'recovery';
export type AbSlot = 'active' | 'passive';

/** The GRUB menu entry ids of cos-layout.md 4.2 and the slot each boots. */
export const ENTRY_OF: Record<SlotName, GrubEntry> = { active: 'cos', passive: 'fallback', recovery: 'recovery' };
export const SLOT_OF: Record<GrubEntry, SlotName> = { cos: 'active', fallback: 'passive', recovery: 'recovery' };
const ENTRY_ORDER: readonly GrubEntry[] = ['cos', 'fallback', 'recovery'];

/** The variables cOS's GRUB reads, by file. Missing file = empty map. */
export interface GrubEnvs {
  /** COS_STATE /grub_oem_env (default_menu_entry). */
  oem: ReadonlyMap<string, string>;
  /** COS_OEM /grubenv, i.e. /oem/grubenv (next_entry, saved_entry, default_fallback, enable_boot_assessment_always). */
  user: ReadonlyMap<string, string>;
  /** COS_STATE /boot_assessment (enable_boot_assessment, boot_assessment_tentative). */
  assessment: ReadonlyMap<string, string>;
}

export interface SlotFacts {
  /** The image file is there. */
  present: boolean;
  /** Identity of the filesystem inside (ext2 UUID, or squashfs:<mkfs time>:<bytes>); null when unreadable. */
  id: string | null;
  /** Filesystem label (null for squashfs or unreadable). */
  label: string | null;
  /** The slot's state.yaml record, if any. */
  record: ImageEntry | null;
}

export interface HostFacts {
  /** From /proc/cmdline. */
  bootedFrom: BootedFrom;
  /** `upgrade_failure` on the cmdline or /run/cos/upgrade_failure. */
  upgradeFailure: boolean;
  /** Identity of the running image (recorded at the first look in this boot); null when unknown. */
  runningId: string | null;
  /**
   * Identity of the image that failed boot assessment: with upgrade_failure, the image active.img held when this boot
   * began (GRUB fell back from it). Null otherwise or when unknown.
   */
  failedId?: string | null;
  /**
   * Identities the agent saw running in a boot (its first look in each boot appends the running image's identity to
   * /usr/local/.cos-agent/booted-images on COS_PERSISTENT): an image that booted, whatever its record still says.
   */
  bootedIds?: readonly string[];
  slots: Record<SlotName, SlotFacts>;
  grub: GrubEnvs;
  /**
   * Whose COS_STATE/grub_boot_assessment GRUB sources (host/boot-assessment.ts): the agent's (N tries), cOS's (one
   * try) or none. Absent: cOS's, as on every cOS host.
   */
  assessmentScript?: AssessmentScript;
  /** Labels GRUB's entries expect (COS_ACTIVE, COS_PASSIVE). */
  labels: { active: string; passive: string };
}

export type NextReason = 'one-shot' | 'default' | 'saved-entry' | 'boot-assessment' | 'grub-fallback';

export interface NextBoot {
  /** The GRUB entry that boots. */
  entry: GrubEntry;
  /** The slot it boots (null: no entry can boot). */
  slot: SlotName | null;
  /** Chosen by a one-shot `next_entry` (cleared by GRUB when taken). */
  oneShot: boolean;
  reason: NextReason;
  /** The boot gets `upgrade_failure` on its cmdline (boot assessment fell back). */
  upgradeFailure: boolean;
}

export interface BootState {
  /** The slot whose image is the running system (null: the running image is in no slot, or booted live). */
  running: SlotName | null;
  /** What GRUB boots next, evaluated from the env blocks and the images on disk. */
  next: NextBoot;
  /** What GRUB boots by default once a pending one-shot is used (the boot after next). */
  afterOneShot: NextBoot | null;
  /** The slot GRUB boots next when it holds an image other than the running one that never booted (an upgrade). */
  staged: SlotName | null;
  /** The A/B slot a rollback boots: the other image that booted before, or the running one when an upgrade is staged. */
  rollback: SlotName | null;
  /** Whether each A/B slot holds an image known to have booted successfully (a fallback that booted before). */
  bootedBefore: Record<AbSlot, boolean>;
  /** Whether each A/B slot holds an image that was tried and failed (boot assessment fell back from it, mark-bad). */
  failed: Record<AbSlot, boolean>;
  /**
   * Boot assessment: armed (enabled), the next boot of active is its last try (tentative: after it, the fallback), and
   * the boots of active left before the fallback (null when not armed; 0 once tentative: the next boot falls back).
   */
  assessment: { enabled: boolean; tentative: boolean; triesLeft: number | null };
  /** A pending one-shot choice (`next_entry`). */
  oneShot: GrubEntry | null;
}

const yes = (m: ReadonlyMap<string, string>, k: string): boolean => m.get(k) === 'yes';

function toEntry(v: string | undefined): GrubEntry | null {
  if (v === undefined || v === '') return null;
  if (v === 'cos' || v === 'fallback' || v === 'recovery') return v;
  if (/^\d+$/.test(v)) return ENTRY_ORDER[Number(v)] ?? null;
  return null;
}

/**
 * GRUB can start the entry: its image file is there (`loopback` fails inside GRUB otherwise, and GRUB walks its
 * fallback list). A present image whose label is not the one the entry's cmdline names (`root=LABEL=`) still starts,
 * and then fails in the initrd: see labelMatches.
 */
export function entryBootable(facts: Pick<HostFacts, 'slots' | 'labels'>, entry: GrubEntry): boolean {
  return facts.slots[SLOT_OF[entry]].present;
}

/** The slot's image carries the label its GRUB entry's cmdline names (squashfs and unknown labels pass). */
export function labelMatches(facts: Pick<HostFacts, 'slots' | 'labels'>, slot: SlotName): boolean {
  const s = facts.slots[slot];
  if (slot === 'active') return s.label === null || s.label === facts.labels.active;
  if (slot === 'passive') return s.label === null || s.label === facts.labels.passive;
  return true;
}

/**
 * PURE: what one boot does in GRUB with these env blocks: the entry it boots, and the env writes GRUB itself makes
 * (clearing a taken next_entry, setting boot_assessment_tentative). `assessmentInstalled`: grub_boot_assessment is
 * sourced (it is on every cOS host; tests may evaluate without it).
 */
export function evaluateGrub(
  facts: Pick<HostFacts, 'slots' | 'labels' | 'grub' | 'assessmentScript'>,
  assessmentInstalled = true,
): { next: NextBoot; writes: { user: Record<string, string>; assessment: Record<string, string> } } {
  const env = new Map<string, string>([...facts.grub.oem, ...facts.grub.user]);
  const writes = { user: {} as Record<string, string>, assessment: {} as Record<string, string> };
  let entry: GrubEntry;
  let reason: NextReason;
  let selected = false;
  const oneShotRaw = env.get('next_entry');
  if (oneShotRaw !== undefined && oneShotRaw !== '') {
    entry = toEntry(oneShotRaw) ?? 'cos';
    selected = true;
    reason = 'one-shot';
    writes.user['next_entry'] = '';
  } else {
    const saved = toEntry(env.get('saved_entry'));
    entry = saved ?? 'cos';
    reason = saved !== null && saved !== 'cos' ? 'saved-entry' : 'default';
  }
  let upgradeFailure = false;
  const script = assessmentInstalled ? (facts.assessmentScript ?? 'cos') : 'none';
  if (script !== 'none') {
    for (const [k, v] of facts.grub.assessment) env.set(k, v);
    if ((yes(env, 'enable_boot_assessment') || yes(env, 'enable_boot_assessment_always')) && !selected) {
      if (yes(env, 'boot_assessment_tentative')) {
        entry = 'fallback';
        reason = 'boot-assessment';
        upgradeFailure = true;
      } else {
        // The agent's script counts down boot_assessment_tries first; cOS's (and the agent's last try) sets tentative.
        const next = script === 'agent' ? nextTries(env.get(TRIES_VAR)) : null;
        if (next !== null) writes.assessment[TRIES_VAR] = next;
        else writes.assessment['boot_assessment_tentative'] = 'yes';
      }
    }
  }
  // GRUB's own fallback: an entry that fails inside GRUB (missing image, wrong label) hands over to the list.
  if (!entryBootable(facts, entry)) {
    const list = (env.get('default_fallback') || '0 1 2').split(/\s+/).map(toEntry).filter((e): e is GrubEntry => e !== null);
    const alt = list.find((e) => e !== entry && entryBootable(facts, e));
    if (alt === undefined) return { next: { entry, slot: null, oneShot: selected, reason, upgradeFailure }, writes };
    return { next: { entry: alt, slot: SLOT_OF[alt], oneShot: selected, reason: 'grub-fallback', upgradeFailure: upgradeFailure && alt === 'fallback' }, writes };
  }
  return { next: { entry, slot: SLOT_OF[entry], oneShot: selected, reason, upgradeFailure: upgradeFailure && entry === 'fallback' }, writes };
}

/**
 * PURE: the record that describes the image in a slot. Records name their image by filesystem UUID (`uuid`); one that
 * names another image is stale (a crash between a switch and its record, an edit) and is never trusted over the image:
 * the record of that identity is looked up among all slots' records. Records without a UUID (written by elemental or
 * an older agent) are taken as they are.
 *  - `own`: the slot's own record names this image (or names no image: legacy);
 *  - `moved`: another slot's record names this image (e.g. a swap whose records were not yet rewritten);
 *  - `unknown`: records name images, but none this one (an image staged whose record was never written);
 *  - `none`: no record for the slot at all.
 */
export function recordFor(facts: Pick<HostFacts, 'slots'>, slot: SlotName): { record: ImageEntry | null; match: 'own' | 'moved' | 'unknown' | 'none' } {
  const s = facts.slots[slot];
  const own = s.record;
  if (own !== null && (own.uuid === undefined || s.id === null || own.uuid === s.id)) return { record: own, match: 'own' };
  if (s.id !== null) {
    for (const other of ['active', 'passive', 'recovery'] as const) {
      const r = facts.slots[other].record;
      if (other !== slot && r !== null && r.uuid === s.id) return { record: r, match: 'moved' };
    }
  }
  return own === null ? { record: null, match: 'none' } : { record: null, match: 'unknown' };
}

/**
 * PURE: the slot holding the running image. By identity first (the UUID survives the renames of a switch); when
 * both A/B slots carry it (a fresh install copies active.img to passive.img), the one the kernel booted. Without a
 * known identity, the slot named on the cmdline.
 */
export function runningSlot(facts: Pick<HostFacts, 'bootedFrom' | 'runningId' | 'slots'>): SlotName | null {
  const { bootedFrom, runningId, slots } = facts;
  if (bootedFrom === 'live' || bootedFrom === 'unknown') return null;
  if (runningId === null) return slots[bootedFrom].present ? bootedFrom : null;
  const holders = (['active', 'passive', 'recovery'] as const).filter((s) => slots[s].present && slots[s].id === runningId);
  if (holders.includes(bootedFrom)) return bootedFrom;
  return holders[0] ?? null;
}

/**
 * PURE: the upgrade boot assessment fell back from, in this boot (upgrade_failure): the slot holding the image that
 * failed, its record, and the tries it was given (null when not armed by the agent). Null when this boot is not a
 * fallback, or the failed image is no longer in a slot.
 */
export function failedUpgrade(facts: HostFacts): { slot: AbSlot; record: ImageEntry | null; id: string | null; triesUsed: number | null } | null {
  if (!facts.upgradeFailure) return null;
  const armed = facts.grub.assessment.get(ARMED_TRIES);
  const triesUsed = armed !== undefined && /^[1-9]$/.test(armed) ? Number(armed) : null;
  const slot = (['active', 'passive'] as const).find((s) => facts.slots[s].present && facts.failedId != null && facts.slots[s].id === facts.failedId)
    ?? (facts.failedId == null && facts.slots.active.present ? 'active' : undefined);
  if (slot === undefined) return null;
  return { slot, record: recordFor(facts, slot).record, id: facts.slots[slot].id, triesUsed };
}

/**
 * PURE: the digests of images that failed on this host and are still known: the one boot assessment fell back from
 * in this boot, and any A/B slot whose record says failed (mark-bad, or a health check's last try). An upgrade to one
 * of them is refused unless forced: it would boot-loop into the same failure.
 */
export function failedDigests(facts: HostFacts): string[] {
  const out = new Set<string>();
  const digestOf = (r: ImageEntry | null): string | null => r?.digest ?? r?.sourceMetadata?.digest ?? null;
  const f = failedUpgrade(facts);
  const fd = f === null ? null : digestOf(f.record);
  if (fd !== null) out.add(fd);
  for (const s of ['active', 'passive'] as const) {
    const { record } = recordFor(facts, s);
    const d = digestOf(record);
    if (record?.upgradeResult === 'failed' && d !== null) out.add(d);
  }
  return [...out];
}

/** PURE: boot assessment as GRUB's script will act on it at the next boot of active. */
export function assessmentState(facts: Pick<HostFacts, 'grub' | 'assessmentScript'>): BootState['assessment'] {
  const a = facts.grub.assessment;
  const enabled = yes(a, 'enable_boot_assessment') || yes(facts.grub.user, 'enable_boot_assessment_always');
  const tentative = yes(a, 'boot_assessment_tentative');
  if (!enabled || (facts.assessmentScript ?? 'cos') === 'none') return { enabled, tentative, triesLeft: null };
  if (tentative) return { enabled, tentative, triesLeft: 0 };
  const next = (facts.assessmentScript ?? 'cos') === 'agent' ? nextTries(a.get(TRIES_VAR)) : null;
  return { enabled, tentative, triesLeft: next === null ? 1 : Number(next) + 1 };
}

/** PURE: one model of the host, derived from the facts. */
export function deriveBootState(facts: HostFacts): BootState {
  const running = runningSlot(facts);
  const { next } = evaluateGrub(facts);
  const oneShot = toEntry(facts.grub.user.get('next_entry') ?? facts.grub.oem.get('next_entry'));
  let afterOneShot: NextBoot | null = null;
  if (next.oneShot) {
    const user = new Map(facts.grub.user);
    user.set('next_entry', '');
    const oem = new Map(facts.grub.oem);
    oem.delete('next_entry');
    afterOneShot = evaluateGrub({ ...facts, grub: { ...facts.grub, user, oem } }).next;
  }
  // Failed: boot assessment fell back from it in this boot (upgrade_failure), or its record says so (mark-bad).
  const failedImage = (slot: AbSlot): boolean => {
    const s = facts.slots[slot];
    if (!s.present || running === slot) return false;
    if (facts.failedId != null && s.id === facts.failedId) return true;
    return recordFor(facts, slot).record?.upgradeResult === 'failed';
  };
  const failed = { active: failedImage('active'), passive: failedImage('passive') };
  // Known to have booted: the running image; an image whose record is `good` or has no result; an image nothing is
  // recorded for on a host whose records carry no identities (elemental's). Not: a failed image, an image the agent
  // staged that has not run since, an image the records do not know although they name images (staged, its record
  // never written), or an elemental-recorded active that elemental's boot assessment sentinel says was never tried.
  const armedUntried = yes(facts.grub.assessment, 'enable_boot_assessment') && !yes(facts.grub.assessment, 'boot_assessment_tentative')
    && !yes(facts.grub.assessment, AGENT_ASSESSMENT);
  const booted = (slot: AbSlot): boolean => {
    if (!facts.slots[slot].present) return false;
    if (running === slot) return true;
    if (failed[slot]) return false;
    const id = facts.slots[slot].id;
    if (id !== null && facts.bootedIds?.includes(id) === true) return true;
    const { record, match } = recordFor(facts, slot);
    if (match === 'unknown') return false;
    // A record without an identity (elemental's) proves nothing about its image; elemental's own sentinel does: it
    // arms boot assessment when it stages active, and the first boot of active clears it (08_boot_assessment.yaml).
    // Armed by elemental (not by the agent), never tried, and active not running: an upgrade that never booted.
    if (slot === 'active' && record !== null && record.uuid === undefined && armedUntried) return false;
    return record === null || record.upgradeResult !== 'staged';
  };
  const bootedBefore = { active: booted('active'), passive: booted('passive') };
  const unbootedUpgrade = (slot: SlotName | null): boolean =>
    (slot === 'active' || slot === 'passive') && slot !== running && facts.slots[slot].present && !bootedBefore[slot] && !failed[slot];
  const staged = unbootedUpgrade(next.slot) ? next.slot : null;
  let rollback: SlotName | null = null;
  if (unbootedUpgrade('active') && running !== 'active') {
    // An upgrade waits in active: rolling back means booting the running image instead.
    rollback = running === 'passive' ? 'passive' : bootedBefore.passive ? 'passive' : null;
  } else if (running === 'active') {
    rollback = bootedBefore.passive ? 'passive' : null;
  } else if (running === 'passive' || running === 'recovery') {
    // Back to active only when its image booted before (not the one boot assessment fell back from).
    rollback = bootedBefore.active ? 'active' : null;
  }
  return {
    running,
    next,
    afterOneShot,
    staged,
    rollback,
    bootedBefore,
    failed,
    assessment: assessmentState(facts),
    oneShot,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// What each action may do, decided here so the in-memory state machine and the real actions share one decision.

export interface SystemUpgradeDecision {
  /** active.img moves to passive.img (the running image, in active, becomes the fallback). */
  rotate: boolean;
  /** Why passive is kept, for the log and the outcome. */
  keepPassiveReason: string | null;
}

/**
 * PURE: how a system upgrade lays out the slots. The slot that holds the running image is never overwritten or
 * rotated away: when active holds it, it moves to passive (rotate); when passive holds it (booted from passive, after
 * a fallback, or after an earlier upgrade in this boot rotated it there), only active is replaced. Booted from
 * recovery (neither A/B slot runs), active is rotated unless it holds an image that never booted.
 */
export function decideSystemUpgrade(state: Pick<BootState, 'running' | 'bootedBefore'>, facts: Pick<HostFacts, 'bootedFrom' | 'upgradeFailure'>): SystemUpgradeDecision {
  // The running image never leaves a slot: when active holds it, it becomes the fallback (it booted: it is running).
  if (state.running === 'active') return { rotate: true, keepPassiveReason: null };
  // After a failed boot assessment passive is the last known good (cos-layout.md 4.5).
  if (facts.upgradeFailure) return { rotate: false, keepPassiveReason: 'the last upgrade failed boot assessment: keeping passive' };
  if (state.running === 'passive') {
    if (facts.bootedFrom === 'passive') return { rotate: false, keepPassiveReason: 'booted from passive: keeping it as the last known good' };
    return { rotate: false, keepPassiveReason: 'passive holds the running image (an upgrade is staged in active): replacing active only' };
  }
  if (!state.bootedBefore.active) {
    return { rotate: false, keepPassiveReason: 'active holds an image that never booted: replacing it, keeping passive' };
  }
  return { rotate: true, keepPassiveReason: null };
}

/** PURE: the one-shot choice a rollback makes, or why it cannot. */
export function decideRollback(state: BootState): { entry: GrubEntry } | { refused: string } {
  if (state.rollback === null) return { refused: 'there is no other image to roll back to' };
  return { entry: ENTRY_OF[state.rollback] };
}

/**
 * PURE: whether a permanent rollback (swap active.img and passive.img) keeps a fallback that booted before. It does
 * when both images booted; with an upgrade staged in active, the swap would make the never-booted image the fallback.
 */
export function decidePermanentRollback(state: BootState): { swap: true } | { refused: string } {
  if (state.running === null) return { refused: 'the running image is in no slot image: the slots are left as they are' };
  if (state.failed.active || state.failed.passive) {
    const slot = state.failed.active ? 'active' : 'passive';
    return { refused: `${slot}.img holds the image boot assessment fell back from (or marked bad): swapping would boot it by default; upgrade to a good image instead` };
  }
  if (state.staged !== null || (state.running === 'passive' && !state.bootedBefore.active)) {
    return { refused: 'an upgrade that never booted is staged in active.img: swapping would make it the fallback; run `cosctl rollback` (one-shot) to boot the running image next, or upgrade again' };
  }
  if (!state.bootedBefore.active || !state.bootedBefore.passive) {
    return { refused: 'both active.img and passive.img must hold images that booted before to swap them' };
  }
  return { swap: true };
}

/** PURE: mark-good disarms boot assessment only when the image under assessment (active) is the running one. */
export function decideMarkGood(state: BootState): { disarm: boolean; slot: AbSlot | null } {
  const slot = state.running === 'active' || state.running === 'passive' ? state.running : null;
  return { disarm: state.running === 'active', slot };
}

/** PURE: mark-bad makes the next boot fall back; it applies when active runs and passive booted before. */
export function decideMarkBad(state: BootState): { ok: true } | { refused: string } {
  if (state.running !== 'active') return { refused: `mark-bad only applies when booted from active (the running image is in ${state.running ?? 'no slot'}): GRUB falls back from active to passive` };
  if (!state.bootedBefore.passive) return { refused: 'passive holds no image that booted before: marking active bad would fall back to it' };
  return { ok: true };
}

// ---------------------------------------------------------------------------------------------------------------
// The bootchooser's verbs: the only writes of GRUB variables, as data (null removes a variable). bootchooser.ts
// applies them to the env blocks on disk; the state-machine test applies them in memory.

export interface GrubWrites {
  user?: Record<string, string | null>;
  oem?: Record<string, string | null>;
  assessment?: Record<string, string | null>;
}

/**
 * Set in COS_STATE/boot_assessment by every write of the agent's (GRUB ignores it): from then on an armed assessment
 * may be the agent's own (a swap keeps it armed for an image that booted), so elemental's sentinel no longer says
 * "staged, never tried" about a record without an identity (deriveBootState).
 */
export const AGENT_ASSESSMENT = 'cos_agent_assessment';
/** The tries an upgrade armed (GRUB ignores it; boot_assessment_tries counts down from it): "tries used" after a fallback. */
export const ARMED_TRIES = 'cos_agent_tries';

export const grubVerbs = {
  /** Boot `entry` once (GRUB clears next_entry when it takes it). */
  setOneShot: (entry: GrubEntry): GrubWrites => ({ user: { next_entry: entry } }),
  /** The next boot is GRUB's default again: drop a pending one-shot and a saved_entry that points elsewhere. */
  setPrimary: (facts: Pick<HostFacts, 'grub'>): GrubWrites => {
    const user: Record<string, string | null> = {};
    if (facts.grub.user.has('next_entry')) user['next_entry'] = null;
    const saved = toEntry(facts.grub.user.get('saved_entry'));
    if (saved !== null && saved !== 'cos') user['saved_entry'] = null;
    const oem: Record<string, string | null> = {};
    if (facts.grub.oem.has('next_entry')) oem['next_entry'] = null;
    return { ...(Object.keys(user).length > 0 ? { user } : {}), ...(Object.keys(oem).length > 0 ? { oem } : {}) };
  },
  /** Boot assessment armed for the next boot of active (tentative cleared: kairos#4303). */
  arm: (tries: number = DEFAULT_TRIES): GrubWrites => ({
    assessment: { enable_boot_assessment: 'yes', boot_assessment_tentative: '', [TRIES_VAR]: String(tries), [ARMED_TRIES]: String(tries), [AGENT_ASSESSMENT]: 'yes' },
  }),
  /** The running active image is good: boot assessment disarmed. */
  markGood: (): GrubWrites => ({ assessment: { enable_boot_assessment: '', boot_assessment_tentative: '', [TRIES_VAR]: '', [AGENT_ASSESSMENT]: 'yes' } }),
  /** The running active image is bad: the next boot falls back with upgrade_failure. */
  markBad: (): GrubWrites => ({ assessment: { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes', [AGENT_ASSESSMENT]: 'yes' } }),
  /** A fresh assessment cycle (after a permanent swap). */
  resetTentative: (): GrubWrites => ({ assessment: { boot_assessment_tentative: '', [AGENT_ASSESSMENT]: 'yes' } }),
  /** The menu's display name, from the new image's GRUB_ENTRY_NAME. */
  brand: (name: string | null): GrubWrites => ({ oem: { default_menu_entry: name } }),
};

/** PURE: merge verbs applied in order into one set of writes per file. */
export function mergeWrites(...all: GrubWrites[]): GrubWrites {
  const out: GrubWrites = {};
  for (const w of all) {
    for (const k of ['user', 'oem', 'assessment'] as const) {
      const v = w[k];
      if (v !== undefined) out[k] = { ...out[k], ...v };
    }
  }
  return out;
}

/** PURE: an env block with writes applied (null removes). */
export function applyWrites(env: ReadonlyMap<string, string>, w: Record<string, string | null> | undefined): Map<string, string> {
  const out = new Map(env);
  for (const [k, v] of Object.entries(w ?? {})) {
    if (v === null) out.delete(k);
    else out.set(k, v);
  }
  return out;
}

/** PURE: the GRUB writes of a successful system upgrade: the new active boots next, armed, under its name. */
export function systemUpgradeWrites(facts: Pick<HostFacts, 'grub'>, entryName: string | null, tries: number = DEFAULT_TRIES): GrubWrites {
  return mergeWrites(grubVerbs.brand(entryName), grubVerbs.setPrimary(facts), grubVerbs.arm(tries));
}

/** PURE: the GRUB writes of a permanent rollback: no pending choice, a fresh assessment cycle. */
export function permanentRollbackWrites(facts: Pick<HostFacts, 'grub'>): GrubWrites {
  return mergeWrites(grubVerbs.setPrimary(facts), grubVerbs.resetTentative());
}

/**
 * PURE: what mark-good / mark-bad does: the slot whose record changes, the GRUB writes (null: none), or why it is
 * refused. mark.ts and the state-machine test both act on this.
 */
export function decideMark(state: BootState, good: boolean): { slot: AbSlot | null; writes: GrubWrites | null } | { refused: string } {
  if (good) {
    const d = decideMarkGood(state);
    return { slot: d.slot, writes: d.disarm ? grubVerbs.markGood() : null };
  }
  const d = decideMarkBad(state);
  if ('refused' in d) return d;
  return { slot: 'active', writes: grubVerbs.markBad() };
}
