/**
 * A seeded, replayable state-machine test of the host model (src/host/boot-model.ts with plan.ts and state-file.ts),
 * in memory: test/helpers/host-sim.ts runs upgrades, rollbacks, marks and failed/cancelled upgrades with the same pure
 * functions in the same order as the real actions, and reboots through the real cOS grub.cfg in the independent GRUB
 * interpreter (test/helpers/grub-script.ts), never through evaluateGrub.
 *
 * Invariants, after every step:
 *  (a) the running image is one of the slot files (and the model's `running` names that slot);
 *  (b) what deriveBootState says boots next is what GRUB boots next (and, after a pending one-shot, the boot after);
 *  (c) assuming every image that never booted fails, rebooting still ends in an image that booted;
 *  (d) `staged` holds an image that never booted; `rollback` holds one that booted or runs;
 * plus: a refused, failed or cancelled action, or an upgrade with nothing to do, changes nothing; no reboot bricks.
 *
 * Replay a seed: `SEED=123 ava test/host/boot-model.state.test.ts` (the trace is logged), or
 * `node -e "import('./test/helpers/host-sim.ts').then((m) => console.log(m.replay(123).trace.join('\n')))"`.
 * A failure message gives the seed, its starting host and the action list as a literal for `runActions`.
 */
import test, { type ExecutionContext } from 'ava';
import {
  actionsLiteral,
  actionText,
  applyAction,
  checkInvariants,
  cloneSimWorld,
  grubPass,
  newWorld,
  readHost,
  replay,
  runActions,
  slotIno,
  snapshot,
  variantFor,
  type Action,
  type RunResult,
  type Violation,
  type World,
} from '../helpers/host-sim.ts';

const SEQUENCES = 600;
const STEPS = 30;
const only = process.env['SEED'] !== undefined && process.env['SEED'] !== '' ? Number(process.env['SEED']) : null;
const seeds = only !== null ? [only] : Array.from({ length: SEQUENCES }, (_, i) => i + 1);

let runs: Array<{ seed: number; result: RunResult }> | undefined;
const allRuns = (): Array<{ seed: number; result: RunResult }> => (runs ??= seeds.map((seed) => ({ seed, result: replay(seed, STEPS) })));

/** The shortest reproducer of an invariant among all seeds, as a replayable message (null: never violated). */
function reproducer(invariants: readonly Violation['invariant'][]): { message: string; seeds: number } | null {
  const hits = allRuns().flatMap(({ seed, result }) => result.violations.filter((v) => invariants.includes(v.invariant)).map((v) => ({ seed, result, v })));
  if (hits.length === 0) return null;
  const best = hits.reduce((a, b) => (b.v.step < a.v.step ? b : a));
  const seedsHit = new Set(hits.map((h) => h.seed)).size;
  const message = [
    `invariant (${best.v.invariant}) violated in ${seedsHit} of ${allRuns().length} sequences; shortest: seed ${best.seed} (host ${variantFor(best.seed)}), after step ${best.v.step + 1}:`,
    `  ${best.v.message}`,
    ...best.result.trace.slice(0, best.v.step + 1).map((l) => `  ${l}`),
    `  replay: SEED=${best.seed} ava test/host/boot-model.state.test.ts, or runActions(${actionsLiteral(best.result.actions, best.v.step)}, initialWorld('${variantFor(best.seed)}'))`,
  ].join('\n');
  return { message, seeds: seedsHit };
}

test(`${seeds.length} seeded sequences of ${STEPS} steps run and cover every action`, (t) => {
  const ops = new Map<string, number>();
  let steps = 0;
  for (const { result } of allRuns()) {
    steps += result.trace.length;
    for (const a of result.actions.slice(0, result.trace.length)) {
      const op = a.op === 'upgrade' && a.force ? 'upgrade --force' : a.op;
      ops.set(op, (ops.get(op) ?? 0) + 1);
    }
  }
  if (only !== null) t.log(allRuns()[0]?.result.trace.join('\n'));
  t.log(`${allRuns().length} sequences, ${steps} steps: ${[...ops].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  t.is(steps, only !== null ? steps : SEQUENCES * STEPS, 'no sequence stopped early (a crash or a bricked host stops it)');
  for (const op of ['upgrade', 'upgrade --force', 'upgrade-fail', 'cancel', 'reboot', 'rollback', 'rollback-permanent', 'mark-good', 'mark-bad']) t.true((ops.get(op) ?? 0) > 0, op);
  // Every kind of outcome happens: staged with and without rotation, refusals, fallbacks with upgrade_failure.
  const all = allRuns().flatMap((r) => r.result.trace).join('\n');
  for (const re of [/\(rotated\)/, /passive kept/, /unchanged: /, /refused: /, /:panic/, /\+upgrade_failure/, /next_entry=cos/, /swapped/]) t.regex(all, re);
});

const INVARIANTS: ReadonlyArray<[string, Violation['invariant'][]]> = [
  ['(a) the running image stays in a slot file, and the model says which', ['a']],
  ['(b) what the model says boots next is what GRUB boots next', ['b', 'b-then']],
  ['(c) with every never-booted image failing, a reboot still ends in an image that booted', ['c']],
  ['(d) staged holds an image that never booted', ['d-staged']],
  ['(d) rollback holds an image that booted or runs', ['d-rollback']],
  ['refused, failed and cancelled actions and no-op upgrades change nothing; no action throws; no reboot bricks the host', ['unchanged', 'crash', 'bricked']],
];
for (const [title, invariants] of INVARIANTS) {
  test(`random sequences: ${title}`, (t) => {
    const r = reproducer(invariants);
    t.is(r, null, r?.message);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Named sequences

/** Run actions one by one on `w`, asserting every invariant after each; returns the step texts. */
function steps(t: ExecutionContext, w: World, actions: readonly Action[]): string[] {
  const out: string[] = [];
  for (const a of actions) {
    const r = applyAction(w, a);
    out.push(r.text);
    const v = [...r.violations, ...checkInvariants(w)];
    t.deepEqual(v, [], `after ${actionText(a)} -> ${r.text}`);
  }
  return out;
}

const up = (version: string, healthy = true, force = false): Action => ({ op: 'upgrade', version, force, healthy });
const REBOOT: Action = { op: 'reboot' };
/** The inode a slot file names (-1: missing). */
const ino = (w: World, slot: 'active' | 'passive'): number => slotIno(w, slot) ?? -1;
/** What GRUB boots next (a dry run on a copy): the inode and whether upgrade_failure is on the cmdline. */
const nextBoot = (w: World): { ino: number | null; entry: string | null; upgradeFailure: boolean } => {
  const r = grubPass(cloneSimWorld(w));
  return { ino: r.image === null ? null : (r.image.tag as number), entry: r.entry, upgradeFailure: (r.cmdline ?? '').split(' ').includes('upgrade_failure') };
};

test('two upgrades before a reboot keep the running image in passive', (t) => {
  const w = newWorld();
  const [first, second] = steps(t, w, [up('1.0'), up('2.0')]);
  t.regex(first ?? '', /rotated/);
  t.regex(second ?? '', /passive kept/);
  t.is(slotIno(w, 'passive'), 1, 'the running image (ino 1) is the fallback');
  t.is(w.inodes.get(slotIno(w, 'active') as number)?.version, '2.0');
  t.deepEqual([...w.names.keys()].sort(), ['cOS/active.img', 'cOS/passive.img']);
  const { state } = readHost(w);
  t.is(state.running, 'passive');
  t.is(state.staged, 'active');
  t.is(w.state.partitions['state']?.images['passive']?.upgradeResult, 'good', 'the rotated running image is recorded as good');
  steps(t, w, [REBOOT]);
  t.is(w.running, ino(w, 'active'));
  t.is(w.bootedFrom, 'active');
});

test('rollback then upgrade: the next boot is the new active', (t) => {
  const w = newWorld();
  steps(t, w, [{ op: 'rollback' }]);
  t.is(w.grubenv?.get('next_entry'), 'fallback');
  steps(t, w, [up('1.0')]);
  t.false(w.grubenv?.has('next_entry'), 'the pending one-shot is dropped');
  const active = ino(w, 'active');
  t.is(nextBoot(w).ino, active);
  t.is(readHost(w).state.next.slot, 'active');
  steps(t, w, [REBOOT]);
  t.is(w.running, active);
});

test('upgrade then rollback: the next boot is the running image and staged is null', (t) => {
  const w = newWorld();
  steps(t, w, [up('1.0'), { op: 'rollback' }]);
  const { state } = readHost(w);
  t.is(state.staged, null);
  t.is(state.next.slot, 'passive');
  t.is(nextBoot(w).ino, w.running);
  t.is(w.grubenv?.get('next_entry'), 'fallback');
  steps(t, w, [REBOOT]);
  t.is(w.running, 1);
  t.is(w.bootedFrom, 'passive');
  t.false(w.upgradeFailure);
});

test('rollback --permanent then upgrade: the swapped-in image runs from passive and is kept; the upgrade replaces active', (t) => {
  const w = newWorld();
  const [swap, upgraded] = steps(t, w, [{ op: 'rollback-permanent' }, up('1.0')]);
  t.is(swap, 'swapped');
  t.regex(upgraded ?? '', /passive kept/);
  t.is(slotIno(w, 'passive'), 1, 'the running image, moved to passive by the swap, stays');
  t.is(w.inodes.get(1)?.label, 'COS_PASSIVE');
  t.is(nextBoot(w).ino, ino(w, 'active'));
  steps(t, w, [REBOOT]);
  t.is(w.inodes.get(w.running)?.version, '1.0');
});

test('mark-good after an upgrade, before the reboot, keeps the staged upgrade armed: a bad upgrade still falls back', (t) => {
  const w = newWorld();
  const [, marked] = steps(t, w, [up('1.0', false), { op: 'mark-good' }]);
  t.is(marked, 'passive marked good');
  t.is(w.assessment.get('enable_boot_assessment'), 'yes');
  t.is(readHost(w).state.staged, 'active');
  const [rebooted] = steps(t, w, [REBOOT]);
  t.regex(rebooted ?? '', /^cos\(ino 4\):panic cos\(ino 4\):panic cos\(ino 4\):panic fallback\(ino 1\):booted\+upgrade_failure$/);
  t.is(w.running, 1);
  t.true(w.upgradeFailure);
});

test('upgrade, reboot into a bad image (its 3 tries, the default), fallback with upgrade_failure, upgrade again: passive is kept', (t) => {
  const w = newWorld();
  const [, fell] = steps(t, w, [up('1.0', false), REBOOT]);
  t.regex(fell ?? '', /^cos\(ino 4\):panic cos\(ino 4\):panic cos\(ino 4\):panic fallback\(ino 1\):booted\+upgrade_failure$/);
  t.is(w.bootedFrom, 'passive');
  t.true(w.upgradeFailure);
  t.is(nextBoot(w).entry, 'fallback', 'without an upgrade, GRUB keeps falling back (tentative stays set)');
  const [again] = steps(t, w, [up('2.0')]);
  t.regex(again ?? '', /passive kept: the last upgrade failed boot assessment/);
  t.is(slotIno(w, 'passive'), 1);
  t.is(w.assessment.get('boot_assessment_tentative'), '', 'tentative cleared when arming (kairos#4303)');
  t.deepEqual(nextBoot(w), { ino: slotIno(w, 'active') as number, entry: 'cos', upgradeFailure: false });
  steps(t, w, [REBOOT]);
  t.is(w.inodes.get(w.running)?.version, '2.0');
  t.false(w.upgradeFailure);
});

test('a failed upgrade and a cancelled one change nothing', (t) => {
  const w = newWorld();
  steps(t, w, [up('1.0'), REBOOT]);
  const before = snapshot(w);
  const texts = steps(t, w, [{ op: 'upgrade-fail', at: 'resolve' }, { op: 'upgrade-fail', at: 'staging' }, { op: 'cancel', at: 'download' }, { op: 'cancel', at: 'seal' }]);
  t.is(snapshot(w), before);
  t.deepEqual(texts.map((x) => x.split(':')[0]), ['resolving the tag failed (manifest unknown)', 'failed at staging', 'failed at download', 'failed at seal']);
  t.regex(steps(t, w, [up('1.0')])[0] ?? '', /^unchanged: the active slot already holds sha256:1\.0/);
  t.is(snapshot(w), before);
});

// ---------------------------------------------------------------------------------------------------------------
// Reproducers of the violations the random sequences find (shortest forms).

test('after a fallback (upgrade_failure), a permanent rollback then an upgrade never overwrites the running image', (t) => {
  // Found by the random sequences on the model before it knew which image boot assessment fell back from (failedId):
  // the swap moved the running image (ino 2, booted with upgrade_failure) into active.img, and the upgrade kept
  // passive "because the last upgrade failed" and replaced active: the running image left every slot, and the only
  // fallback was the image marked bad. Now the swap is refused (active failed); either way (a) must hold.
  const w = newWorld();
  const r = runActions([{ op: 'mark-bad' }, REBOOT, { op: 'rollback-permanent' }, up('1.0')], w);
  t.log(r.trace.join('\n'));
  t.regex(r.trace[1] ?? '', /^2\. reboot -> fallback\(ino 2\):booted\+upgrade_failure$/);
  t.deepEqual(r.violations, []);
  t.true([slotIno(w, 'active'), slotIno(w, 'passive')].includes(w.running), `running ino ${w.running}, slots ${JSON.stringify([...w.names])}`);
  t.is(w.inodes.get(slotIno(w, 'passive') ?? -1)?.uuid, 'uuid-2', 'the fallback is the running image, not the one marked bad');
});

test('after a fallback, a refused permanent rollback says active failed, not that a never-booted upgrade is staged', (t) => {
  const w = newWorld();
  const [, fell, refused] = steps(t, w, [{ op: 'mark-bad' }, REBOOT, { op: 'rollback-permanent' }]);
  t.regex(fell ?? '', /\+upgrade_failure$/);
  const { state } = readHost(w);
  t.is(state.staged, null, 'nothing is staged');
  t.true(state.failed.active, 'active holds the image boot assessment fell back from');
  t.true(w.booted.has('uuid-1'), 'and it booted before it was marked bad');
  t.regex(refused ?? '', /^refused: /);
  t.notRegex(refused ?? '', /never booted|staged/, 'the refusal names the wrong reason');
  // Its advice, `cosctl rollback`, is refused as well here (there is nothing to roll back to but the failed image).
  t.regex(steps(t, w, [{ op: 'rollback' }])[0] ?? '', /^refused: there is no other image to roll back to$/);
});

test('an image that booted is not reported as staged after a one-shot rollback booted the other slot', (t) => {
  const w = newWorld();
  const r = runActions([up('2.0'), REBOOT, { op: 'rollback' }, REBOOT], w);
  t.log(r.trace.join('\n'));
  // ino 4 (2.0) booted (step 2); after the one-shot into passive, its record still says `staged` and the model
  // reports it as a staged upgrade that never booted.
  t.true(w.booted.has('uuid-4'));
  t.is(readHost(w).state.staged, null, 'staged names active, whose image booted before');
});
