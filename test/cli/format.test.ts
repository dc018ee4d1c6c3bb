import test from 'ava';
import { parse } from 'yaml';
import { renderStatus } from '../../src/cli/format.ts';
import { renderStatusYaml } from '../../src/cli/format-yaml.ts';
import { HOST_API_VERSION, HOST_KIND, type HostStatusDocument, type SlotStatus } from '../../src/model/host.ts';

const slot = (name: SlotStatus['slot'], over: Partial<SlotStatus> = {}): SlotStatus => ({
  slot: name, file: `cOS/${name}.img`, present: true, label: `COS_${name.toUpperCase()}`, fs: 'ext2', size: 1024, uuid: null, record: 'none',
  image: null, imageDigest: null, version: '1.0', timestamp: null, verification: 'unknown', signedBy: null, ...over,
});

function doc(): HostStatusDocument {
  const active = slot('active', { image: 'docker://r/os:2', imageDigest: `sha256:${'ab'.repeat(32)}`, version: '2.0', verification: 'skipped' });
  const passive = slot('passive');
  return {
    apiVersion: HOST_API_VERSION, kind: HOST_KIND, metadata: { name: 'h' },
    spec: { image: { image: 'r/os:2', transport: 'registry' }, verify: false },
    status: {
      bootedFrom: 'active', upgradeFailure: false, booted: passive, staged: active, rollback: passive,
      slots: { active, passive, recovery: slot('recovery', { label: 'COS_SYSTEM' }) },
      nextBoot: { entry: 'cos', oneShot: false, slot: 'active', reason: 'default', upgradeFailure: false }, bootAssessment: { enabled: true, tentative: false, triesLeft: 1 }, lastUpgrade: null, failedUpgrade: null,
    },
  };
}

test('the human view: labelled blocks for the running, staged and recovery images (bootc style), what boots next and why, a legend, 80 columns', (t) => {
  const d = doc();
  d.status.slots.active.signedBy = null;
  const out = renderStatus(d, 'human');
  t.regex(out, /^  ● Booted image: unknown image \(no record of it\)\n {9}Version: 1\.0\n {10}Digest: -\n {12}Slot: passive \(cOS\/passive\.img, COS_PASSIVE, ext2\)\n {7}Signature: unknown/m);
  t.regex(out, /^  \+ Staged image: r\/os:2\n {9}Version: 2\.0\n {10}Digest: sha256:abababababab\n {12}Slot: active \(cOS\/active\.img, COS_ACTIVE, ext2\)\n {7}Signature: UNVERIFIED/m);
  t.regex(out, /^  Recovery image: /m);
  t.regex(out, /^Next boot: active: the default entry$/m, 'a slot name and why, not a GRUB menu id');
  t.regex(out, /signature verification OFF/);
  t.regex(out, /^● runs now   \+ boots next \(staged\)$/m, 'a legend for the marks');
  t.true(out.split('\n').every((l) => l.length <= 80), out);
});

test('the human view says who signed a verified image, digests shortened, wrapped to 80 columns; one spelling of a reference', (t) => {
  const d = doc();
  d.status.slots.active = { ...d.status.slots.active, image: 'docker://reg.example/os:2', verification: 'verified', signedBy: `key /etc/cos-agent/keys/demo.pub signed sha256:${'ab'.repeat(32)} [simple-signing]` };
  d.status.staged = d.status.slots.active;
  d.spec.image = { image: 'reg.example/os:2', transport: 'registry' };
  const out = renderStatus(d, 'human');
  t.regex(out, /Signature: verified: key \/etc\/cos-agent\/keys\/demo\.pub signed\n {18}sha256:abababababab \[simple-signing\]/);
  t.regex(out, /Staged image: reg\.example\/os:2\n/);
  t.regex(out, /^Upgrade source: reg\.example\/os:2( \(signature verification OFF\))?$/m);
  t.false(out.includes('docker://'), 'the same spelling as the upgrade source');
  t.true(out.split('\n').every((l) => l.length <= 80), out);
});

test('the human view of a one-shot rollback: the slot that boots once, why, and what boots after', (t) => {
  const d = doc();
  d.status.nextBoot = { entry: 'fallback', oneShot: true, slot: 'passive', reason: 'one-shot', upgradeFailure: false, then: { entry: 'cos', slot: 'active' } };
  const out = renderStatus(d, 'human');
  t.regex(out.replace(/\n +/g, ' '), /^Next boot: passive: once, as chosen with cosctl rollback \(next_entry\); the boot after runs active$/m);
  t.regex(out, /^Next boot: passive: once, as chosen with cosctl rollback \(next_entry\); the boot\n {11}after runs active$/m, 'wrapped under its value, within 80 columns');
  d.status.nextBoot = { entry: 'cos', oneShot: false, slot: null, reason: 'grub-fallback', upgradeFailure: false };
  t.regex(renderStatus(d, 'human'), /^Next boot: NOTHING BOOTABLE/m);
});

test('every slot\'s image is on the screen: after a one-shot rollback, the upgrade waiting in active has its own block', (t) => {
  const d = doc();
  // As the model has it after `cosctl rollback` with an upgrade staged: passive runs and boots once; nothing is
  // "staged" for the next boot, but active still holds the upgrade the boot after runs.
  d.status.staged = null;
  d.status.nextBoot = { entry: 'fallback', oneShot: true, slot: 'passive', reason: 'one-shot', upgradeFailure: false, then: { entry: 'cos', slot: 'active' } };
  const out = renderStatus(d, 'human');
  t.regex(out, /^ +Active image: r\/os:2\n {9}Version: 2\.0\n/m);
  t.is(out.match(/Slot: active \(/g)?.length, 1);
  t.notRegex(out, /Passive image:/, 'passive is shown already (booted, rollback)');
  t.true(out.split('\n').every((l) => l.length <= 80), out);
});

test('JSON and YAML carry the same document', (t) => {
  t.deepEqual(JSON.parse(renderStatus(doc(), 'json')), doc());
  t.deepEqual(parse(renderStatusYaml(doc())), doc());
});

test('YAML has no anchors or aliases, even where the document holds one object twice', (t) => {
  const d = doc();
  d.status.slots.passive = d.status.slots.active;
  const y = renderStatusYaml(d);
  t.notRegex(y, /(^|\s)[&*]a\d+\b/m, y);
  t.deepEqual(parse(y), JSON.parse(JSON.stringify(d)));
});

test('the human view shows outside text escaped and bounded: control bytes from a record or a config never reach the terminal', (t) => {
  const d = doc();
  d.spec.image = { image: `reg/os:\x1b]0;pwned\x07${'a'.repeat(1 << 20)}`, transport: 'registry' };
  d.status.slots.passive = slot('passive', { image: 'r/os:1\x1b[2J', version: '1.0\x07' });
  d.status.booted = d.status.slots.passive;
  d.status.rollback = d.status.slots.passive;
  d.status.lastUpgrade = {
    transaction: 'tx', result: 'failure', target: 'system', image: 'r/os:3', imageDigest: null, code: 'REFERENCE_INVALID',
    error: `invalid image reference "${'b'.repeat(2 << 20)}"\x1b[31m`, rotated: false, startedAt: '2026-01-01T00:00:00Z', finishedAt: '2026-01-01T00:00:01Z',
  };
  const out = renderStatus(d, 'human');
  t.false(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/.test(out), 'no raw control character');
  t.true(out.length < 16 << 10, `${out.length} characters`);
  t.regex(out, /^Upgrade source: reg\/os:\\x1b\]0;pwned\\x07a+\[\.\.\. \d+ characters left out \.\.\.\]a+/m);
  t.regex(out, /r\/os:1\\x1b\[2J/);
  t.regex(out, /Version: 1\.0\\x07/);
  t.regex(out.replace(/\n +/g, ' '), /^Last upgrade: failure .*: invalid image reference "b+\[\.\.\. \d+ characters left out \.\.\.\]b+"\\x1b\[31m$/m);
});
