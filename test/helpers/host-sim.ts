/**
 * Test helper: an in-memory cOS host driven by the agent's PURE host model, for the state-machine test
 * (test/host/boot-model.state.test.ts).
 *
 * The world: COS_STATE's cOS/ directory as names -> inodes, each inode an image {uuid, label, version, digest,
 * healthy}; COS_RECOVERY's recovery.img; the three GRUB env blocks (COS_OEM /grubenv, missing until first written, as
 * on a fresh install; COS_STATE /grub_oem_env and /boot_assessment); COS_STATE's state.yaml; what runs (inode,
 * bootedFrom, upgrade_failure); and the ground truth the agent cannot see: which images ever booted.
 *
 * The actions call the same pure functions in the same order as the real actions (src/actions/upgrade/upgrade.ts
 * steps 4-16, src/actions/rollback.ts, src/actions/mark.ts), on HostFacts built from the world the way
 * src/host/bootchooser.ts readHost builds them. A reboot is NOT evaluated with the model: it runs the real cOS grub.cfg
 * through the independent interpreter of test/helpers/grub-script.ts; an image that is unhealthy, or whose label is
 * not the `root=LABEL=` of its cmdline, panics (panic=5) and GRUB runs again. A boot that reaches userspace runs
 * cOS's own boot.before stage of 08_boot_assessment.yaml (clear both sentinels when the cmdline names active.img).
 */
import {
  applyWrites,
  decideMark,
  decidePermanentRollback,
  decideRollback,
  deriveBootState,
  failedDigests,
  grubVerbs,
  permanentRollbackWrites,
  recordFor,
  systemUpgradeWrites,
  type BootState,
  type GrubWrites,
  type HostFacts,
  type SlotFacts,
} from '../../src/host/boot-model.ts';
import { alreadyStaged, planUpgrade, swapSteps, TRANSITION_FILES, upgradeSwitchSteps, type SwitchStep } from '../../src/actions/upgrade/plan.ts';
import { emptyState, formatStateDate, markOnBoot, rotateOnUpgrade, swapOnRollback } from '../../src/host/state-file.ts';
import { DEFAULT_LABELS } from '../../src/model/config.ts';
import type { BootedFrom, SlotName } from '../../src/model/host.ts';
import type { ImageEntry, InstallState } from '../../src/model/state.ts';
import { boot as grubBoot, cosAssessmentFiles, cosDisk, envOf, readCmdline, type GrubBoot, type GrubFile, type GrubWorld } from './grub-script.ts';
import { bootAssessmentScript, GRUBCUSTOM_HOOK } from '../../src/host/boot-assessment.ts';

const LABELS = DEFAULT_LABELS;

export interface Inode {
  uuid: string;
  label: string;
  version: string;
  digest: string;
  healthy: boolean;
}

export interface World {
  /** COS_STATE, relative names ("cOS/active.img") -> inode number. */
  names: Map<string, number>;
  inodes: Map<number, Inode>;
  /** The inode of COS_RECOVERY cOS/recovery.img. */
  recovery: number;
  /** COS_OEM /grubenv (null: the file does not exist). */
  grubenv: Map<string, string> | null;
  /** COS_STATE /grub_oem_env. */
  oemEnv: Map<string, string>;
  /** COS_STATE /boot_assessment. */
  assessment: Map<string, string>;
  /** COS_STATE /grub_boot_assessment is the agent's (N tries; installBootAssessment), not cOS's (one try). */
  agentScript: boolean;
  /** COS_STATE state.yaml. */
  state: InstallState;
  /** The inode of the running image. */
  running: number;
  bootedFrom: BootedFrom;
  upgradeFailure: boolean;
  /**
   * What active.img held when this boot was first looked at (bootchooser.ts records it in /run/cos-agent/booted.json at
   * the first readHost of a boot, before any action changes anything): with upgrade_failure, the image that failed.
   */
  bootActiveId: string | null;
  /** Ground truth: the uuids of images that ever booted to userspace. */
  booted: Set<string>;
  /**
   * What the agent remembers (bootchooser.ts /usr/local/.cos-agent/booted-images): the running image's uuid, appended at
   * its first look in each boot that reached userspace (cosd starts on every boot). Starts empty on a fresh host.
   */
  agentBooted: string[];
  nextIno: number;
  clock: number;
}

export type Action =
  | { op: 'upgrade'; version: string; force: boolean; healthy: boolean }
  | { op: 'upgrade-fail'; at: 'resolve' | 'staging' }
  | { op: 'cancel'; at: 'download' | 'seal' }
  | { op: 'rollback' }
  | { op: 'rollback-permanent' }
  | { op: 'mark-good' }
  | { op: 'mark-bad' }
  | { op: 'reboot' };

export function actionText(a: Action): string {
  switch (a.op) {
    case 'upgrade':
      return `upgrade${a.force ? ' --force' : ''} ${a.version}${a.healthy ? '' : ' (unhealthy)'}`;
    case 'upgrade-fail':
      return `upgrade (fails at ${a.at})`;
    case 'cancel':
      return `upgrade (cancelled at ${a.at})`;
    default:
      return a.op.replace('-permanent', ' --permanent');
  }
}

/** A fresh host as test/helpers/cos-host.ts builds it: booted from active, no state.yaml, no /oem/grubenv. */
export function newWorld(): World {
  const inodes = new Map<number, Inode>([
    [1, { uuid: 'uuid-1', label: LABELS.active, version: '0.8.10', digest: 'sha256:install-0.8.10', healthy: true }],
    [2, { uuid: 'uuid-2', label: LABELS.passive, version: '0.8.9', digest: 'sha256:install-0.8.9', healthy: true }],
    [3, { uuid: 'uuid-3', label: LABELS.system, version: '0.8.8', digest: 'sha256:install-0.8.8', healthy: true }],
  ]);
  return {
    names: new Map([['cOS/active.img', 1], ['cOS/passive.img', 2]]),
    inodes,
    recovery: 3,
    grubenv: null,
    oemEnv: new Map([['default_menu_entry', 'cOS']]),
    assessment: new Map(),
    agentScript: false,
    state: emptyState(),
    running: 1,
    bootedFrom: 'active',
    upgradeFailure: false,
    bootActiveId: 'uuid-1',
    booted: new Set(['uuid-1', 'uuid-2', 'uuid-3']),
    agentBooted: ['uuid-1'],
    nextIno: 4,
    clock: Date.UTC(2026, 0, 1),
  };
}

export function cloneSimWorld(w: World): World {
  return {
    ...w,
    names: new Map(w.names),
    inodes: new Map([...w.inodes].map(([k, v]) => [k, { ...v }])),
    grubenv: w.grubenv === null ? null : new Map(w.grubenv),
    oemEnv: new Map(w.oemEnv),
    assessment: new Map(w.assessment),
    state: structuredClone(w.state),
    booted: new Set(w.booted),
    agentBooted: [...w.agentBooted],
  };
}

/** Everything the host has on disk and in memory, as comparable text (inodes only as far as they are named). */
export function snapshot(w: World): string {
  const named = [...new Set([...w.names.values(), w.recovery, w.running])].sort((a, b) => a - b);
  return JSON.stringify({
    names: [...w.names].sort(),
    inodes: named.map((i) => [i, w.inodes.get(i)]),
    grubenv: w.grubenv === null ? null : [...w.grubenv],
    oemEnv: [...w.oemEnv],
    assessment: [...w.assessment],
    agentScript: w.agentScript,
    state: w.state,
    running: w.running,
    bootedFrom: w.bootedFrom,
    upgradeFailure: w.upgradeFailure,
    bootActiveId: w.bootActiveId,
  });
}

export function slotIno(w: World, slot: SlotName): number | undefined {
  return slot === 'recovery' ? w.recovery : w.names.get(`cOS/${slot}.img`);
}

/** HostFacts as bootchooser.ts readHost reads them on such a host. */
export function factsOf(w: World): HostFacts {
  const slot = (name: SlotName): SlotFacts => {
    const ino = slotIno(w, name);
    const inode = ino === undefined ? undefined : w.inodes.get(ino);
    const record = name === 'recovery' ? null : (w.state.partitions['state']?.images[name] ?? null);
    return { present: inode !== undefined, id: inode?.uuid ?? null, label: inode?.label ?? null, record };
  };
  return {
    bootedFrom: w.bootedFrom,
    upgradeFailure: w.upgradeFailure,
    runningId: w.inodes.get(w.running)?.uuid ?? null,
    failedId: w.upgradeFailure ? w.bootActiveId : null,
    bootedIds: [...w.agentBooted],
    slots: { active: slot('active'), passive: slot('passive'), recovery: slot('recovery') },
    grub: { oem: new Map(w.oemEnv), user: new Map(w.grubenv ?? []), assessment: new Map(w.assessment) },
    assessmentScript: w.agentScript ? 'agent' : 'cos',
    labels: { active: LABELS.active, passive: LABELS.passive },
  };
}

export function readHost(w: World): { facts: HostFacts; state: BootState } {
  const facts = factsOf(w);
  return { facts, state: deriveBootState(facts) };
}

/** bootchooser.ts applyGrubWrites: grubenv (created when missing), then grub_oem_env, then boot_assessment. */
function applyGrubWrites(w: World, writes: GrubWrites): void {
  if (writes.user !== undefined && Object.keys(writes.user).length > 0) w.grubenv = applyWrites(w.grubenv ?? new Map(), writes.user);
  if (writes.oem !== undefined && Object.keys(writes.oem).length > 0) w.oemEnv = applyWrites(w.oemEnv, writes.oem);
  if (writes.assessment !== undefined && Object.keys(writes.assessment).length > 0) w.assessment = applyWrites(w.assessment, writes.assessment);
}

/** switch.ts applySwitchSteps on the names. */
function applyStep(w: World, step: SwitchStep): void {
  if (step.op === 'label') {
    const ino = w.names.get(step.file);
    if (ino === undefined) throw new Error(`label: no ${step.file}`);
    (w.inodes.get(ino) as Inode).label = step.label;
  } else {
    const ino = w.names.get(step.from);
    if (ino === undefined) throw new Error(`${step.op}: no ${step.from}`);
    if (step.op === 'rename') w.names.delete(step.from);
    w.names.set(step.to, ino);
  }
}

const tick = (w: World): string => {
  w.clock += 60_000;
  return formatStateDate(new Date(w.clock));
};

class Refused extends Error {}

/** The upgrade action (upgrade.ts steps 4-16), system target, --no-verify. Returns what happened. */
function upgrade(w: World, a: { version: string; force: boolean; healthy: boolean }, fail: { at: 'resolve' | 'staging' | 'download' | 'seal' } | null): string {
  // 4. The host model before anything changes.
  const before = readHost(w);
  const upgradeFailure = before.facts.upgradeFailure;
  // 5. Resolve the tag.
  if (fail?.at === 'resolve') throw new Refused('resolving the tag failed (manifest unknown)');
  const digest = `sha256:${a.version}`;
  // 5a. An image that failed here is not staged again unless forced; nothing to do when active holds the digest.
  if (!a.force) {
    if (failedDigests(before.facts).includes(digest)) throw new Refused(`refused: ${digest} failed boot assessment on this host (IMAGE_FAILED_BEFORE)`);
    const entry = recordFor(before.facts, 'active').record;
    const unchanged = alreadyStaged({
      target: 'system',
      digests: [digest],
      slot: { digest: entry?.digest ?? entry?.sourceMetadata?.digest ?? null, present: before.facts.slots.active.present, verification: entry?.verification ?? null },
      bootedFrom: before.facts.bootedFrom,
      upgradeFailure,
      verificationRequired: false,
      force: false,
      nextSlot: before.state.next.slot,
    });
    if (unchanged !== null) return `unchanged: ${unchanged}`;
  }
  // 6-7. COS_STATE rw, the model again, the plan.
  const host = readHost(w);
  const plan = planUpgrade({ target: 'system', bootState: host.state, bootedFrom: before.facts.bootedFrom, upgradeFailure, recoveryFlavour: 'img', labels: LABELS });
  // 8. Leftovers (transition files only: a *.next name is never removed blindly).
  for (const f of TRANSITION_FILES) w.names.delete(f);
  // 9. The transition image, neutrally labelled.
  const ino = w.nextIno++;
  w.inodes.set(ino, { uuid: `uuid-${ino}`, label: 'COS_TRANSITION', version: a.version, digest, healthy: a.healthy });
  w.names.set(plan.transitionFile, ino);
  const cleanup = (): void => {
    w.names.delete(plan.transitionFile);
    for (const f of ['cOS/passive.next', 'cOS/active.next']) w.names.delete(f);
  };
  // 10-13. Pull, hooks, seal: may fail or be cancelled.
  if (fail !== null) {
    cleanup();
    throw new Refused(`failed at ${fail.at}: nothing switched`);
  }
  // 14. The switch.
  const haveActive = w.names.has('cOS/active.img');
  const rotatedId = host.facts.slots.active.id;
  for (const step of upgradeSwitchSteps(plan, LABELS, { active: haveActive })) applyStep(w, step);
  // 15. GRUB (the agent's boot-assessment script installed first, as commitSwitch does).
  w.agentScript = true;
  applyGrubWrites(w, systemUpgradeWrites(host.facts, `cOS ${a.version}`));
  // 16. state.yaml.
  const date = tick(w);
  const entry: ImageEntry = {
    source: `docker://registry.test/cos/os:${a.version}`,
    sourceMetadata: { digest, size: 1000 },
    label: LABELS.active,
    fs: 'ext2',
    digest,
    uuid: `uuid-${ino}`,
    date,
    version: a.version,
    verification: 'skipped',
    verificationDetail: 'disabled by --no-verify',
    upgradeResult: 'staged',
  };
  w.state = rotateOnUpgrade(w.state, {
    target: 'active',
    keepPassive: !(plan.rotate && haveActive),
    newImage: entry,
    date,
    labels: LABELS,
    rotatedId,
    rotatedBooted: host.state.running === 'active',
  });
  // The cleanup stack after the commit: the transition image is gone (renamed); the switch names are kept.
  w.names.delete(plan.transitionFile);
  return `staged ino ${ino} in active (${plan.rotate && haveActive ? 'rotated' : `passive kept: ${plan.keepPassiveReason ?? ''}`})`;
}

function rollback(w: World): string {
  const host = readHost(w);
  const d = decideRollback(host.state);
  if ('refused' in d) throw new Refused(`refused: ${d.refused}`);
  applyGrubWrites(w, grubVerbs.setOneShot(d.entry));
  return `next_entry=${d.entry}`;
}

function rollbackPermanent(w: World): string {
  const host = readHost(w);
  const d = decidePermanentRollback(host.state);
  if ('refused' in d) throw new Refused(`refused: ${d.refused}`);
  for (const f of ['cOS/active.img', 'cOS/passive.img']) if (!w.names.has(f)) throw new Refused(`refused: ${f} is missing`);
  for (const step of swapSteps(LABELS)) applyStep(w, step);
  applyGrubWrites(w, permanentRollbackWrites(host.facts));
  if (w.state.partitions['state'] !== undefined) w.state = swapOnRollback(w.state, LABELS);
  return 'swapped';
}

function mark(w: World, good: boolean): string {
  const host = readHost(w);
  const d = decideMark(host.state, good);
  if ('refused' in d) throw new Refused(`refused: ${d.refused}`);
  const { slot } = d;
  const changed = d.writes !== null;
  if (d.writes !== null) {
    w.agentScript = true;
    applyGrubWrites(w, d.writes);
  }
  if (slot !== null) {
    const id = host.facts.slots[slot].id;
    if (w.state.partitions['state'] !== undefined || id !== null) w.state = markOnBoot(w.state, slot, good ? 'good' : 'failed', id);
  }
  return `${slot ?? 'no slot'} marked ${good ? 'good' : 'failed'}${changed ? ', assessment changed' : ''}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Booting through the GRUB interpreter

/** The world as GRUB sees the disk (image tags are inode numbers). */
export function grubWorld(w: World): GrubWorld {
  const oem = new Map<string, GrubFile>();
  if (w.grubenv !== null) oem.set('/grubenv', { env: new Map(w.grubenv) });
  const state = new Map<string, GrubFile>([
    ['/grub_oem_env', { env: new Map(w.oemEnv) }],
    ['/boot_assessment', { env: new Map(w.assessment) }],
    ...(w.agentScript
      ? ([['/grubcustom', { text: GRUBCUSTOM_HOOK }], ['/grub_boot_assessment', { text: bootAssessmentScript() }]] as Array<[string, GrubFile]>)
      : cosAssessmentFiles()),
  ]);
  for (const [name, ino] of w.names) state.set(`/${name}`, { image: { label: (w.inodes.get(ino) as Inode).label, tag: ino } });
  const recovery = new Map<string, GrubFile>([['/cOS/recovery.img', { image: { label: (w.inodes.get(w.recovery) as Inode).label, tag: w.recovery } }]]);
  return cosDisk(oem, state, recovery);
}

/** One GRUB pass on the world: GRUB's own save_env writes land in the world. */
export function grubPass(w: World): GrubBoot {
  const gw = grubWorld(w);
  const r = grubBoot(gw);
  const user = envOf(gw, 'COS_OEM', '/grubenv');
  w.grubenv = user === undefined ? null : new Map(user);
  w.oemEnv = new Map(envOf(gw, 'COS_STATE', '/grub_oem_env'));
  w.assessment = new Map(envOf(gw, 'COS_STATE', '/boot_assessment'));
  return r;
}

export interface BootTry {
  entry: string | null;
  ino: number | null;
  outcome: 'booted' | 'panic' | 'wrong-label' | 'no-entry';
  upgradeFailure: boolean;
}

export const MAX_BOOT_TRIES = 6;

/**
 * Reboot until an image reaches userspace (bounded). `healthy` decides whether an image's kernel and userspace come up.
 * Returns the tries; the last one is `booted` unless the host is bricked.
 */
export function reboot(w: World, healthy: (ino: number) => boolean = (ino) => (w.inodes.get(ino) as Inode).healthy): BootTry[] {
  const tries: BootTry[] = [];
  for (let i = 0; i < MAX_BOOT_TRIES; i++) {
    const r = grubPass(w);
    if (r.entry === null || r.cmdline === null || r.image === null) {
      tries.push({ entry: null, ino: null, outcome: 'no-entry', upgradeFailure: false });
      return tries;
    }
    const ino = r.image.tag as number;
    const inode = w.inodes.get(ino) as Inode;
    const c = readCmdline(r.cmdline);
    if (c.rootLabel !== null && inode.label !== c.rootLabel) {
      tries.push({ entry: r.entry, ino, outcome: 'wrong-label', upgradeFailure: c.upgradeFailure });
      continue;
    }
    if (!healthy(ino)) {
      tries.push({ entry: r.entry, ino, outcome: 'panic', upgradeFailure: c.upgradeFailure });
      continue;
    }
    tries.push({ entry: r.entry, ino, outcome: 'booted', upgradeFailure: c.upgradeFailure });
    w.running = ino;
    const file = c.imgFile ?? c.squashImg ?? '';
    w.bootedFrom = file.endsWith('/active.img') ? 'active' : file.endsWith('/passive.img') ? 'passive' : /\/recovery\.(img|squashfs)$/.test(file) ? 'recovery' : 'unknown';
    w.upgradeFailure = c.upgradeFailure;
    const active = w.names.get('cOS/active.img');
    w.bootActiveId = active === undefined ? null : (w.inodes.get(active) as Inode).uuid;
    w.booted.add(inode.uuid);
    w.agentBooted = [...w.agentBooted.filter((u) => u !== inode.uuid), inode.uuid].slice(-16);
    // cOS 08_boot_assessment boot.before: a boot of active.img clears both sentinels.
    if (r.cmdline.includes('active.img')) {
      w.assessment = applyWrites(w.assessment, { enable_boot_assessment: '', boot_assessment_tentative: '' });
    }
    return tries;
  }
  return tries;
}

export const tryText = (b: BootTry): string => `${b.entry ?? '-'}${b.ino !== null ? `(ino ${b.ino})` : ''}:${b.outcome}${b.upgradeFailure ? '+upgrade_failure' : ''}`;

// ---------------------------------------------------------------------------------------------------------------
// Invariants

export interface Violation {
  invariant: 'a' | 'b' | 'b-then' | 'c' | 'd-staged' | 'd-rollback' | 'unchanged' | 'bricked' | 'crash';
  message: string;
}

export function checkInvariants(w: World): Violation[] {
  const out: Violation[] = [];
  const { state } = readHost(w);
  const ino = (slot: SlotName | null): number | undefined => (slot === null ? undefined : slotIno(w, slot));
  const uuid = (i: number | undefined): string | undefined => (i === undefined ? undefined : w.inodes.get(i)?.uuid);

  // (a) The running image is one of the slot files, and the model says which.
  const holders = (['active', 'passive', 'recovery'] as const).filter((s) => slotIno(w, s) === w.running);
  if (holders.length === 0) out.push({ invariant: 'a', message: `the running image (ino ${w.running}) is in no slot file: ${JSON.stringify([...w.names])}` });
  else if (state.running === null || !holders.includes(state.running as never)) {
    out.push({ invariant: 'a', message: `the running image is in ${holders.join('/')}, the model says running=${String(state.running)}` });
  }

  // (b) What the model says boots next is what GRUB boots next (first choice, before any failure).
  const dry = cloneSimWorld(w);
  const first = grubPass(dry);
  const grubIno = first.image === null ? undefined : (first.image.tag as number);
  const modelIno = ino(state.next.slot);
  const grubUf = first.cmdline !== null && readCmdline(first.cmdline).upgradeFailure;
  if (grubIno !== modelIno || first.entry !== (state.next.slot === null ? null : state.next.entry) || grubUf !== state.next.upgradeFailure) {
    out.push({
      invariant: 'b',
      message: `model: next ${state.next.entry} -> ${String(state.next.slot)} (ino ${String(modelIno)}, upgrade_failure ${state.next.upgradeFailure}, ${state.next.reason}); GRUB: ${String(first.entry)} (ino ${String(grubIno)}, upgrade_failure ${grubUf}, tried ${first.tried.join(',')})`,
    });
  } else if (state.afterOneShot !== null) {
    // The boot after a one-shot (GRUB runs again, e.g. after the one-shot image panicked).
    const then = grubPass(dry);
    const thenIno = then.image === null ? undefined : (then.image.tag as number);
    if (thenIno !== ino(state.afterOneShot.slot) || then.entry !== (state.afterOneShot.slot === null ? null : state.afterOneShot.entry)) {
      out.push({ invariant: 'b-then', message: `model: after the one-shot ${state.afterOneShot.entry} -> ${String(state.afterOneShot.slot)}; GRUB: ${String(then.entry)} (ino ${String(thenIno)})` });
    }
  }

  // (c) Assume every image that never booted fails: rebooting must still end in one that did.
  const pessimist = cloneSimWorld(w);
  const tries = reboot(pessimist, (i) => w.booted.has((w.inodes.get(i) as Inode).uuid));
  const last = tries[tries.length - 1];
  if (last?.outcome !== 'booted') out.push({ invariant: 'c', message: `if every never-booted image fails, no boot succeeds: ${tries.map(tryText).join(' ')}` });

  // (d) staged holds an image that never booted; rollback one that booted or runs.
  if (state.staged !== null) {
    const s = ino(state.staged);
    if (s === w.running || (uuid(s) !== undefined && w.booted.has(uuid(s) as string))) {
      out.push({ invariant: 'd-staged', message: `staged=${state.staged} (ino ${String(s)}) holds an image that ${s === w.running ? 'is running' : 'booted before'}` });
    }
  }
  if (state.rollback !== null) {
    const r = ino(state.rollback);
    if (r === undefined || (r !== w.running && !w.booted.has(uuid(r) as string))) {
      out.push({ invariant: 'd-rollback', message: `rollback=${state.rollback} (ino ${String(r)}) holds an image that never booted` });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Running sequences

export function applyAction(w: World, a: Action): { text: string; violations: Violation[] } {
  const before = snapshot(w);
  const unchanged = (text: string): { text: string; violations: Violation[] } => {
    const after = snapshot(w);
    return { text, violations: after === before ? [] : [{ invariant: 'unchanged', message: `${actionText(a)} (${text}) changed the host:\n  before ${before}\n  after  ${after}` }] };
  };
  try {
    switch (a.op) {
      case 'upgrade': {
        const text = upgrade(w, a, null);
        return text.startsWith('unchanged') ? unchanged(text) : { text, violations: [] };
      }
      case 'upgrade-fail':
        return { text: upgrade(w, { version: 'missing', force: false, healthy: true }, { at: a.at }), violations: [] };
      case 'cancel':
        return { text: upgrade(w, { version: '9.9', force: true, healthy: true }, { at: a.at }), violations: [] };
      case 'rollback':
        return { text: rollback(w), violations: [] };
      case 'rollback-permanent':
        return { text: rollbackPermanent(w), violations: [] };
      case 'mark-good':
        return { text: mark(w, true), violations: [] };
      case 'mark-bad':
        return { text: mark(w, false), violations: [] };
      case 'reboot': {
        const tries = reboot(w);
        const text = tries.map(tryText).join(' ');
        if (tries[tries.length - 1]?.outcome !== 'booted') return { text, violations: [{ invariant: 'bricked', message: `no image boots: ${text}` }] };
        return { text, violations: [] };
      }
    }
  } catch (e) {
    if (e instanceof Refused) return unchanged(e.message);
    return { text: 'threw', violations: [{ invariant: 'crash', message: `${actionText(a)} threw: ${(e as Error).stack ?? String(e)}` }] };
  }
}

export interface StepViolation extends Violation {
  /** 0-based index of the action after which it was seen (-1: the initial state). */
  step: number;
}

export interface RunResult {
  actions: Action[];
  /** One line per step: the action, what it did. */
  trace: string[];
  /** The first violation of each invariant, in the order seen (the run goes on after one, unless a crash or brick). */
  violations: StepViolation[];
  world: World;
}

export function runActions(actions: readonly Action[], world: World = newWorld()): RunResult {
  const trace: string[] = [];
  const violations: StepViolation[] = [];
  const record = (vs: Violation[], step: number): void => {
    for (const v of vs) if (!violations.some((x) => x.invariant === v.invariant)) violations.push({ ...v, step });
  };
  record(checkInvariants(world), -1);
  for (const [i, a] of actions.entries()) {
    const r = applyAction(world, a);
    trace.push(`${i + 1}. ${actionText(a)} -> ${r.text}`);
    record([...r.violations, ...checkInvariants(world)], i);
    if (r.violations.some((v) => v.invariant === 'crash' || v.invariant === 'bricked')) break;
  }
  return { actions: [...actions], trace, violations, world };
}

/** The action list up to a step, as a replayable literal. */
export function actionsLiteral(actions: readonly Action[], step: number): string {
  return JSON.stringify(actions.slice(0, step + 1));
}

/** mulberry32: a small seeded PRNG in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WEIGHTS: ReadonlyArray<readonly [Action['op'] | 'upgrade-force', number]> = [
  ['upgrade', 26],
  ['upgrade-force', 8],
  ['reboot', 26],
  ['rollback', 8],
  ['rollback-permanent', 6],
  ['mark-good', 7],
  ['mark-bad', 6],
  ['upgrade-fail', 5],
  ['cancel', 5],
];
const VERSIONS = ['1.0', '2.0', '3.0'];

/** The actions of a seed: drawn from the PRNG alone, so a seed always means the same list. */
export function actionsFor(seed: number, steps: number): Action[] {
  const rnd = mulberry32(seed);
  const total = WEIGHTS.reduce((s, [, w]) => s + w, 0);
  const out: Action[] = [];
  for (let i = 0; i < steps; i++) {
    let x = rnd() * total;
    let op: Action['op'] | 'upgrade-force' = 'reboot';
    for (const [name, weight] of WEIGHTS) {
      if (x < weight) {
        op = name;
        break;
      }
      x -= weight;
    }
    const version = VERSIONS[Math.floor(rnd() * VERSIONS.length)] as string;
    const healthy = rnd() < 0.7;
    const half = rnd() < 0.5;
    if (op === 'upgrade' || op === 'upgrade-force') out.push({ op: 'upgrade', version, force: op === 'upgrade-force', healthy });
    else if (op === 'upgrade-fail') out.push({ op, at: half ? 'resolve' : 'staging' });
    else if (op === 'cancel') out.push({ op, at: half ? 'download' : 'seal' });
    else out.push({ op } as Action);
  }
  return out;
}

export type Variant = 'fresh' | 'elemental' | 'from-passive';
export const VARIANTS: readonly Variant[] = ['fresh', 'elemental', 'from-passive'];

/**
 * The host a seed starts from: `fresh` (cos-host.ts: no state.yaml, no /oem/grubenv), `elemental` (state.yaml as
 * elemental writes it: records without the agent's uuid/digest, and an empty /oem/grubenv), `from-passive` (fresh, but
 * booted from passive.img, as after a manual one-shot).
 */
export function initialWorld(variant: Variant): World {
  const w = newWorld();
  if (variant === 'elemental') {
    w.grubenv = new Map();
    w.state = {
      date: '2025-06-01T10:00:00Z',
      partitions: {
        state: {
          label: LABELS.state,
          images: {
            active: { source: 'docker://quay.io/costoolkit/releases-green:cos-system-0.8.10', label: LABELS.active, fs: 'ext2' },
            passive: { source: 'docker://quay.io/costoolkit/releases-green:cos-system-0.8.9', label: LABELS.passive, fs: 'ext2' },
          },
        },
        recovery: { label: LABELS.recovery, images: { recovery: { source: 'docker://quay.io/costoolkit/releases-green:cos-system-0.8.8', label: LABELS.system, fs: 'ext2' } } },
      },
    };
  }
  if (variant === 'from-passive') {
    w.running = 2;
    w.bootedFrom = 'passive';
  }
  return w;
}

/** The starting host of a seed. */
export const variantFor = (seed: number): Variant => VARIANTS[seed % VARIANTS.length] as Variant;

/** Replay one seed: the actions, the trace and the first violation of each invariant. */
export function replay(seed: number, steps = 30): RunResult {
  return runActions(actionsFor(seed, steps), initialWorld(variantFor(seed)));
}
