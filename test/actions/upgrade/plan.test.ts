import test from 'ava';
import { alreadyStaged, planUpgrade, swapSteps, upgradeSwitchSteps, type SwitchStep } from '../../../src/actions/upgrade/plan.ts';
import type { Labels } from '../../../src/model/config.ts';
import { decideRollback, deriveBootState } from '../../../src/host/boot-model.ts';
import { hostFacts } from '../../helpers/host-facts.ts';

const labels: Labels = {
  state: 'COS_STATE', active: 'COS_ACTIVE', passive: 'COS_PASSIVE', recovery: 'COS_RECOVERY',
  system: 'COS_SYSTEM', oem: 'COS_OEM', persistent: 'COS_PERSISTENT', grub: 'COS_GRUB',
};

/** A model of COS_STATE: names -> inodes, inodes -> (label, content). */
interface Fs { names: Map<string, number>; inodes: Map<number, { label: string; os: string }> }

function apply(fs: Fs, step: SwitchStep): void {
  if (step.op === 'link') {
    const ino = fs.names.get(step.from);
    if (ino === undefined) throw new Error(`link: no ${step.from}`);
    fs.names.set(step.to, ino);
  } else if (step.op === 'rename') {
    const ino = fs.names.get(step.from);
    if (ino === undefined) throw new Error(`rename: no ${step.from}`);
    fs.names.delete(step.from);
    fs.names.set(step.to, ino);
  } else {
    const ino = fs.names.get(step.file);
    if (ino === undefined) throw new Error(`label: no ${step.file}`);
    (fs.inodes.get(ino) as { label: string }).label = step.label;
  }
}

/** Which OS each GRUB entry boots right now (null: that entry fails). Booting needs the file and the label. */
function bootable(fs: Fs): { cos: string | null; fallback: string | null } {
  const entry = (file: string, label: string): string | null => {
    const ino = fs.names.get(file);
    if (ino === undefined) return null;
    const i = fs.inodes.get(ino) as { label: string; os: string };
    return i.label === label ? i.os : null;
  };
  return { cos: entry('cOS/active.img', 'COS_ACTIVE'), fallback: entry('cOS/passive.img', 'COS_PASSIVE') };
}

/** The host model of a host with no upgrade staged: the running image is in the slot the kernel booted. */
function running(slot: 'active' | 'passive' | 'recovery'): { running: 'active' | 'passive' | 'recovery'; bootedBefore: { active: boolean; passive: boolean } } {
  return { running: slot, bootedBefore: { active: true, passive: true } };
}

function host(): Fs {
  return {
    names: new Map([['cOS/active.img', 1], ['cOS/passive.img', 2], ['cOS/transition.img', 3]]),
    inodes: new Map([[1, { label: 'COS_ACTIVE', os: 'A' }], [2, { label: 'COS_PASSIVE', os: 'P' }], [3, { label: 'COS_TRANSITION', os: 'N' }]]),
  };
}

test('when booted from active, the upgrade rotates active to passive', (t) => {
  const plan = planUpgrade({ target: 'system', bootedFrom: 'active', upgradeFailure: false, recoveryFlavour: 'img', labels, bootState: running('active') });
  t.true(plan.rotate);
  t.is(plan.finalFile, 'cOS/active.img');
  t.is(plan.label, 'COS_ACTIVE');
  t.is(plan.partitionLabel, 'COS_STATE');
});

test('when booted from passive or after upgrade_failure, passive (the last known good) is kept', (t) => {
  const fromPassive = planUpgrade({ target: 'system', bootedFrom: 'passive', upgradeFailure: false, recoveryFlavour: 'img', labels, bootState: running('passive') });
  t.false(fromPassive.rotate);
  t.regex(fromPassive.keepPassiveReason ?? '', /passive/);
  // upgrade_failure is on the fallback entry's cmdline: the host runs passive.
  const afterFailure = planUpgrade({ target: 'system', bootedFrom: 'passive', upgradeFailure: true, recoveryFlavour: 'img', labels, bootState: running('passive') });
  t.false(afterFailure.rotate);
  t.is(afterFailure.keepPassiveReason, 'the last upgrade failed boot assessment: keeping passive');
  // From recovery with upgrade_failure left over, neither A/B image runs: passive, the last known good, is kept.
  const fromRecovery = planUpgrade({ target: 'system', bootedFrom: 'recovery', upgradeFailure: true, recoveryFlavour: 'img', labels, bootState: running('recovery') });
  t.false(fromRecovery.rotate);
});

test('the running image is never replaced: in active it rotates to passive even with a stray upgrade_failure sentinel', (t) => {
  const plan = planUpgrade({ target: 'system', bootedFrom: 'active', upgradeFailure: true, recoveryFlavour: 'img', labels, bootState: running('active') });
  t.true(plan.rotate);
});

test('a recovery upgrade targets the flavour on disk and never touches passive or GRUB', (t) => {
  const squash = planUpgrade({ target: 'recovery', bootedFrom: 'active', upgradeFailure: false, recoveryFlavour: 'squashfs', labels, bootState: running('active') });
  t.is(squash.finalFile, 'cOS/recovery.squashfs');
  t.is(squash.transitionFile, 'cOS/transition.squashfs');
  t.is(squash.label, null);
  t.false(squash.rotate);
  t.false(squash.updateGrub);
  const img = planUpgrade({ target: 'recovery', bootedFrom: 'recovery', upgradeFailure: false, recoveryFlavour: 'img', labels, bootState: running('recovery') });
  t.is(img.finalFile, 'cOS/recovery.img');
  t.is(img.label, 'COS_SYSTEM');
  t.is(img.partitionLabel, 'COS_RECOVERY');
});

test('during a rotating switch, both GRUB entries boot a complete OS after every single step', (t) => {
  const plan = planUpgrade({ target: 'system', bootedFrom: 'active', upgradeFailure: false, recoveryFlavour: 'img', labels, bootState: running('active') });
  const fs = host();
  const seen: Array<{ cos: string | null; fallback: string | null }> = [bootable(fs)];
  for (const step of upgradeSwitchSteps(plan, labels, { active: true })) {
    apply(fs, step);
    const b = bootable(fs);
    t.not(b.cos, null, `default entry broken after ${JSON.stringify(step)}`);
    t.not(b.fallback, null, `fallback entry broken after ${JSON.stringify(step)}`);
    seen.push(b);
  }
  t.deepEqual(seen.at(-1), { cos: 'N', fallback: 'A' });
  t.deepEqual([...fs.names.keys()].sort(), ['cOS/active.img', 'cOS/passive.img']);
});

test('when passive is kept, the switch is one atomic rename over active.img and passive is untouched', (t) => {
  const plan = planUpgrade({ target: 'system', bootedFrom: 'passive', upgradeFailure: false, recoveryFlavour: 'img', labels, bootState: running('passive') });
  const fs = host();
  for (const step of upgradeSwitchSteps(plan, labels, { active: true })) {
    apply(fs, step);
    t.not(bootable(fs).fallback, null);
    t.not(bootable(fs).cos, null);
  }
  t.deepEqual(bootable(fs), { cos: 'N', fallback: 'P' });
});

test('a permanent rollback keeps the default entry bootable after every step and ends swapped', (t) => {
  const fs = host();
  fs.names.delete('cOS/transition.img');
  for (const step of swapSteps(labels)) {
    apply(fs, step);
    t.not(bootable(fs).cos, null, `default entry broken after ${JSON.stringify(step)}`);
  }
  t.deepEqual(bootable(fs), { cos: 'P', fallback: 'A' });
  t.deepEqual([...fs.names.keys()].sort(), ['cOS/active.img', 'cOS/passive.img']);
});

test('a one-shot rollback boots the other A/B slot', (t) => {
  const entry = (bootedFrom: 'active' | 'passive' | 'recovery'): unknown => decideRollback(deriveBootState(hostFacts({ bootedFrom })));
  t.deepEqual(entry('active'), { entry: 'fallback' });
  t.deepEqual(entry('passive'), { entry: 'cos' });
  t.deepEqual(entry('recovery'), { entry: 'cos' });
});

// --- already staged ---------------------------------------------------------------------------------------------

const SAME = {
  target: 'system' as const,
  digests: ['sha256:aa', 'sha256:index'],
  slot: { digest: 'sha256:aa', present: true, verification: 'verified' },
  bootedFrom: 'active' as const,
  upgradeFailure: false,
  verificationRequired: true,
  force: false,
};

test('an upgrade to the digest the booted active slot holds has nothing to do, and says why', (t) => {
  t.is(alreadyStaged(SAME), 'the active slot already holds sha256:aa');
  t.is(alreadyStaged({ ...SAME, slot: { ...SAME.slot, digest: 'sha256:index' } }), 'the active slot already holds sha256:index', 'the index digest counts');
  t.is(alreadyStaged({ ...SAME, target: 'recovery', bootedFrom: 'passive' }), 'the recovery slot already holds sha256:aa');
  t.is(alreadyStaged({ ...SAME, verificationRequired: false, slot: { ...SAME.slot, verification: 'skipped' } }), 'the active slot already holds sha256:aa');
});

test('force, another digest, a missing or unrecorded slot, a slot under repair or an unverified copy: the upgrade runs', (t) => {
  t.is(alreadyStaged({ ...SAME, force: true }), null);
  t.is(alreadyStaged({ ...SAME, digests: ['sha256:bb'] }), null);
  t.is(alreadyStaged({ ...SAME, slot: { ...SAME.slot, present: false } }), null);
  t.is(alreadyStaged({ ...SAME, slot: { ...SAME.slot, digest: null } }), null);
  t.is(alreadyStaged({ ...SAME, bootedFrom: 'passive' }), null);
  t.is(alreadyStaged({ ...SAME, bootedFrom: 'recovery' }), null);
  t.is(alreadyStaged({ ...SAME, upgradeFailure: true }), null);
  t.is(alreadyStaged({ ...SAME, slot: { ...SAME.slot, verification: 'skipped' } }), null);
  t.is(alreadyStaged({ ...SAME, slot: { ...SAME.slot, verification: null } }), null);
});
