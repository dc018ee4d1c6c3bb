import test from 'ava';
import {
  decideMarkBad,
  decideMarkGood,
  decidePermanentRollback,
  decideRollback,
  decideSystemUpgrade,
  deriveBootState,
  evaluateGrub,
  recordFor,
  runningSlot,
  systemUpgradeWrites,
} from '../../src/host/boot-model.ts';
import { hostFacts } from '../helpers/host-facts.ts';

test('the running slot is found by identity, not by file name: after a rotation the booted image is in passive', (t) => {
  // Booted from active.img; an upgrade since moved that image (uuid-active) to passive.img.
  const f = hostFacts({
    bootedFrom: 'active',
    running: null,
    slots: { active: { id: 'uuid-new', result: 'staged' }, passive: { id: 'uuid-old' } },
  });
  f.runningId = 'uuid-old';
  t.is(runningSlot(f), 'passive');
  const s = deriveBootState(f);
  t.is(s.running, 'passive');
  t.is(s.staged, 'active');
  t.is(s.rollback, 'passive', 'a rollback boots the running image instead of the staged one');
  t.deepEqual(s.bootedBefore, { active: false, passive: true });
});

test('when both slots carry the running UUID (a fresh install copies active.img), the booted slot wins; without an identity, the cmdline does', (t) => {
  const both = hostFacts({ bootedFrom: 'passive', slots: { active: { id: 'same' }, passive: { id: 'same' } } });
  both.runningId = 'same';
  t.is(runningSlot(both), 'passive');
  t.is(runningSlot(hostFacts({ bootedFrom: 'passive', running: null })), 'passive');
  t.is(runningSlot({ ...hostFacts({ bootedFrom: 'active' }), runningId: 'in-no-slot' }), null, 'the running image in no slot is reported, not guessed');
  t.is(runningSlot(hostFacts({ bootedFrom: 'live' })), null);
});

test('GRUB evaluation: default, one-shot, saved_entry, boot assessment, and the fallback list for a missing image', (t) => {
  t.like(evaluateGrub(hostFacts()).next, { entry: 'cos', slot: 'active', reason: 'default', oneShot: false });
  const oneShot = evaluateGrub(hostFacts({ user: { next_entry: 'fallback' }, assessment: { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes' } }));
  t.like(oneShot.next, { entry: 'fallback', slot: 'passive', oneShot: true, upgradeFailure: false }, 'a one-shot skips boot assessment');
  t.deepEqual(oneShot.writes.user, { next_entry: '' });
  t.like(evaluateGrub(hostFacts({ user: { saved_entry: '2' } })).next, { entry: 'recovery', reason: 'saved-entry' });
  const armed = evaluateGrub(hostFacts({ assessment: { enable_boot_assessment: 'yes', boot_assessment_tentative: '' } }));
  t.like(armed.next, { entry: 'cos', upgradeFailure: false });
  t.deepEqual(armed.writes.assessment, { boot_assessment_tentative: 'yes' });
  t.like(evaluateGrub(hostFacts({ assessment: { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes' } })).next,
    { entry: 'fallback', slot: 'passive', reason: 'boot-assessment', upgradeFailure: true });
  t.like(evaluateGrub(hostFacts({ user: { enable_boot_assessment_always: 'yes' }, assessment: { boot_assessment_tentative: 'yes' } })).next, { entry: 'fallback' });
  t.like(evaluateGrub(hostFacts({ slots: { active: { present: false } } })).next, { entry: 'fallback', slot: 'passive', reason: 'grub-fallback' });
  t.like(evaluateGrub(hostFacts({ user: { default_fallback: '2' }, slots: { active: { present: false } } })).next, { entry: 'recovery' });
  t.like(evaluateGrub(hostFacts({ slots: { active: { present: false }, passive: { present: false }, recovery: { present: false } } })).next, { slot: null });
  t.like(evaluateGrub(hostFacts({ oem: { next_entry: 'recovery' } })).next, { entry: 'recovery', oneShot: true }, 'grub_oem_env is loaded first, the user env overrides');
  t.like(evaluateGrub(hostFacts({ oem: { next_entry: 'recovery' }, user: { next_entry: 'fallback' } })).next, { entry: 'fallback' });
});

test('after a one-shot the model says what boots the time after', (t) => {
  const s = deriveBootState(hostFacts({ user: { next_entry: 'fallback' } }));
  t.like(s.next, { slot: 'passive', oneShot: true });
  t.like(s.afterOneShot, { slot: 'active', oneShot: false });
  t.is(s.oneShot, 'fallback');
});

test('records: own, moved (a swap not yet recorded), unknown (an image the records do not know), none', (t) => {
  const f = hostFacts({
    slots: {
      active: { id: 'B', record: { digest: 'sha256:a', uuid: 'A' } },
      passive: { id: 'A', record: { digest: 'sha256:p', uuid: 'P' } },
      recovery: { id: 'R', record: null },
    },
  });
  t.deepEqual(recordFor(f, 'passive'), { record: { digest: 'sha256:a', uuid: 'A' }, match: 'moved' });
  t.deepEqual(recordFor(f, 'active'), { record: null, match: 'unknown' });
  t.deepEqual(recordFor(f, 'recovery'), { record: null, match: 'none' });
  t.is(recordFor(hostFacts({ slots: { active: { record: { digest: 'sha256:legacy' } } } }), 'active').match, 'own', 'a record without uuid (elemental) is taken as it is');
});

test('a system upgrade rotates only when active holds the running image', (t) => {
  const d = (facts: ReturnType<typeof hostFacts>): unknown => decideSystemUpgrade(deriveBootState(facts), facts);
  t.like(d(hostFacts({ bootedFrom: 'active' })), { rotate: true });
  t.like(d(hostFacts({ bootedFrom: 'passive' })), { rotate: false });
  t.like(d(hostFacts({ bootedFrom: 'passive', upgradeFailure: true })), { rotate: false, keepPassiveReason: 'the last upgrade failed boot assessment: keeping passive' });
  const staged = hostFacts({ bootedFrom: 'active', slots: { active: { id: 'new', result: 'staged' }, passive: { id: 'old' } } });
  staged.runningId = 'old';
  t.like(d(staged), { rotate: false }, 'an earlier upgrade in this boot moved the running image to passive');
  t.like(d(hostFacts({ bootedFrom: 'recovery' })), { rotate: true }, 'from recovery, a booted active becomes the fallback');
  t.like(d(hostFacts({ bootedFrom: 'recovery', slots: { active: { result: 'staged' } } })), { rotate: false }, 'never a never-booted image as the fallback');
});

test('rollback, permanent rollback and marks are decided by the model', (t) => {
  const staged = hostFacts({ bootedFrom: 'active', slots: { active: { id: 'new', result: 'staged' }, passive: { id: 'old' } } });
  staged.runningId = 'old';
  const s = deriveBootState(staged);
  t.deepEqual(decideRollback(s), { entry: 'fallback' }, 'with an upgrade staged, rollback boots the running image');
  t.true('refused' in decidePermanentRollback(s), 'no swap that would make the never-booted image the fallback');
  t.deepEqual(decideMarkGood(s), { disarm: false, slot: 'passive' }, 'mark-good does not disarm the staged upgrade');
  t.true('refused' in decideMarkBad(s));

  const plain = deriveBootState(hostFacts());
  t.deepEqual(decidePermanentRollback(plain), { swap: true });
  t.deepEqual(decideMarkGood(plain), { disarm: true, slot: 'active' });
  t.deepEqual(decideMarkBad(plain), { ok: true });
  t.true('refused' in decideRollback(deriveBootState(hostFacts({ slots: { passive: { present: false } } }))));
});

test('the GRUB writes of an upgrade: a pending one-shot and a saved_entry elsewhere are dropped, assessment armed, menu rebranded', (t) => {
  t.deepEqual(systemUpgradeWrites(hostFacts({ user: { next_entry: 'fallback', saved_entry: 'fallback' } }), 'cOS 2'), {
    oem: { default_menu_entry: 'cOS 2' },
    user: { next_entry: null, saved_entry: null },
    assessment: { enable_boot_assessment: 'yes', boot_assessment_tentative: '', boot_assessment_tries: '3', cos_agent_tries: '3', cos_agent_assessment: 'yes' },
  });
  t.deepEqual(systemUpgradeWrites(hostFacts({ user: { saved_entry: 'cos' } }), null).user, undefined, 'nothing to write to /oem/grubenv');
});

test("elemental's records carry no identity: an active it staged (boot assessment armed, never tried) did not boot, so it is neither the fallback nor swapped in", (t) => {
  const legacy = { digest: 'sha256:x' };
  // Elemental upgraded (active = new, never booted; passive = the running image), then the host was rebooted into passive.
  const f = hostFacts({
    bootedFrom: 'passive',
    slots: { active: { record: legacy }, passive: { record: legacy } },
    assessment: { enable_boot_assessment: 'yes' },
  });
  const s = deriveBootState(f);
  t.deepEqual(s.bootedBefore, { active: false, passive: true });
  const swap = decidePermanentRollback(s);
  t.true('refused' in swap && /never booted/.test(swap.refused), 'no swap that makes it the fallback');
  // Booted from recovery: the upgrade replaces active and keeps passive (the image that booted).
  const fromRecovery = deriveBootState(hostFacts({ bootedFrom: 'recovery', slots: { active: { record: legacy }, passive: { record: legacy } }, assessment: { enable_boot_assessment: 'yes' } }));
  t.false(decideSystemUpgrade(fromRecovery, { bootedFrom: 'recovery', upgradeFailure: false }).rotate);
  // Once active was tried (tentative) or the sentinel is cleared by its boot, the record is taken as it is.
  t.true(deriveBootState(hostFacts({ bootedFrom: 'passive', slots: { active: { record: legacy }, passive: { record: legacy } } })).bootedBefore.active);
  // Armed by the agent (a swap keeps assessment armed for an image that booted): the sentinel is not elemental's.
  t.true(deriveBootState(hostFacts({ bootedFrom: 'passive', slots: { active: { record: legacy }, passive: { record: legacy } }, assessment: { enable_boot_assessment: 'yes', cos_agent_assessment: 'yes' } })).bootedBefore.active);
});
