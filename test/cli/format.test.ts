import test from 'ava';
import { parse } from 'yaml';
import { renderStatus } from '../../src/cli/format.ts';
import { renderStatusYaml } from '../../src/cli/format-yaml.ts';
import { HOST_API_VERSION, HOST_KIND, type HostStatusDocument, type SlotStatus } from '../../src/model/host.ts';

const slot = (name: SlotStatus['slot'], over: Partial<SlotStatus> = {}): SlotStatus => ({
  slot: name, file: `cOS/${name}.img`, present: true, label: `COS_${name.toUpperCase()}`, fs: 'ext2', size: 1024, uuid: null, record: 'none',
  image: null, imageDigest: null, version: '1.0', timestamp: null, verification: 'unknown', ...over,
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

test('the human view marks the running slot and the staged one, and flags unverified images', (t) => {
  const out = renderStatus(doc(), 'human');
  t.regex(out, /^● passive/m);
  t.regex(out, /^\+ active .*UNVERIFIED.*staged: runs after reboot/m);
  t.regex(out, /digest abababababab/);
  t.regex(out, /signature verification OFF/);
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
  d.status.lastUpgrade = {
    transaction: 'tx', result: 'failure', target: 'system', image: 'r/os:3', imageDigest: null, code: 'REFERENCE_INVALID',
    error: `invalid image reference "${'b'.repeat(2 << 20)}"\x1b[31m`, rotated: false, startedAt: '2026-01-01T00:00:00Z', finishedAt: '2026-01-01T00:00:01Z',
  };
  const out = renderStatus(d, 'human');
  t.false(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/.test(out), 'no raw control character');
  t.true(out.length < 16 << 10, `${out.length} characters`);
  t.regex(out, /^Upgrade source: reg\/os:\\x1b\]0;pwned\\x07a+\[\.\.\. \d+ characters left out \.\.\.\]a+/m);
  t.regex(out, /r\/os:1\\x1b\[2J/);
  t.regex(out, /version 1\.0\\x07/);
  t.regex(out, /^Last upgrade: failure .*: invalid image reference "b+\[\.\.\. \d+ characters left out \.\.\.\]b+"\\x1b\[31m$/m);
});
