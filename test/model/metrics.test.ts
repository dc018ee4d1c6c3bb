/**
 * renderMetrics (src/model/metrics.ts): the exact exposition text for an upgrade on trial (booted from passive, the
 * upgrade in active boots next), label escaping, the families left out when a value is unknown, and bounded label sets. node_exporter's own parsing of this text is test/integration/metrics.test.ts.
 */
import test from 'ava';
import { escapeLabelValue, metricFamilies, renderMetrics, type MetricsInput } from '../../src/model/metrics.ts';
import { HOST_API_VERSION, HOST_KIND, type HostStatusDocument, type SlotName, type SlotStatus } from '../../src/model/host.ts';

const slot = (name: SlotName, over: Partial<SlotStatus> = {}): SlotStatus => ({
  slot: name, file: `cOS/${name}.img`, present: true, label: null, fs: 'ext2', size: 1, uuid: null, record: 'own',
  image: null, imageDigest: null, version: null, timestamp: null, verification: 'unknown', signedBy: null, ...over,
});

function doc(over: Partial<HostStatusDocument['status']> = {}): HostStatusDocument {
  const active = slot('active', { image: 'docker://reg.example/cos/os:v2', imageDigest: 'sha256:aaaa', version: '2.0.0', verification: 'verified' });
  const passive = slot('passive', { image: 'docker://reg.example/cos/os:v1', imageDigest: 'sha256:bbbb', version: '1.0.0', verification: 'skipped' });
  const recovery = slot('recovery', { present: false });
  return {
    apiVersion: HOST_API_VERSION, kind: HOST_KIND, metadata: { name: 'host' },
    spec: { image: { image: 'reg.example/cos/os:v2', transport: 'registry' }, verify: true },
    status: {
      bootedFrom: 'passive', upgradeFailure: false, booted: passive, staged: active, rollback: null,
      slots: { active, passive, recovery },
      nextBoot: { entry: 'cos', oneShot: false, slot: 'active', reason: 'default', upgradeFailure: false },
      bootAssessment: { enabled: true, tentative: false, triesLeft: 3 },
      lastUpgrade: {
        transaction: 'tx-1', result: 'success', target: 'system', image: 'reg.example/cos/os:v2', imageDigest: 'sha256:aaaa', code: null, error: null,
        rotated: true, startedAt: '2026-12-05T10:00:00.000Z', finishedAt: '2026-12-05T10:01:30.500Z',
      },
      failedUpgrade: null,
      ...over,
    },
  };
}

const input = (over: Partial<MetricsInput> = {}): MetricsInput => ({
  agentVersion: '0.1.0', status: doc(), statusReadOk: true, updateAvailable: false,
  lastCheck: { ok: false, code: 'REGISTRY_UNREACHABLE', startedAt: '2026-12-05T11:00:00.000Z', finishedAt: '2026-12-05T11:00:02.250Z' },
  ...over,
});

test('a staged upgrade on trial: the exact exposition text', (t) => {
  t.is(renderMetrics(input()), `# HELP cos_agent_info The cos-agent version that wrote these metrics.
# TYPE cos_agent_info gauge
cos_agent_info{version="0.1.0"} 1
# HELP cos_agent_status_read_ok Whether the last read of the host status succeeded (0: the values below are from the last read that did).
# TYPE cos_agent_status_read_ok gauge
cos_agent_status_read_ok 1
# HELP cos_agent_booted_slot The slot the running system booted from (1 for that slot).
# TYPE cos_agent_booted_slot gauge
cos_agent_booted_slot{slot="active"} 0
cos_agent_booted_slot{slot="passive"} 1
cos_agent_booted_slot{slot="recovery"} 0
cos_agent_booted_slot{slot="live"} 0
cos_agent_booted_slot{slot="unknown"} 0
# HELP cos_agent_image_info The image of the booted, staged (boots next, when not the booted one) and rollback slots.
# TYPE cos_agent_image_info gauge
cos_agent_image_info{role="booted",slot="passive",version="1.0.0",image="docker://reg.example/cos/os:v1",digest="sha256:bbbb",verification="skipped"} 1
cos_agent_image_info{role="staged",slot="active",version="2.0.0",image="docker://reg.example/cos/os:v2",digest="sha256:aaaa",verification="verified"} 1
# HELP cos_agent_slot_info The image each slot holds (absent for an empty slot).
# TYPE cos_agent_slot_info gauge
cos_agent_slot_info{slot="active",version="2.0.0",image="docker://reg.example/cos/os:v2",digest="sha256:aaaa",verification="verified"} 1
cos_agent_slot_info{slot="passive",version="1.0.0",image="docker://reg.example/cos/os:v1",digest="sha256:bbbb",verification="skipped"} 1
# HELP cos_agent_slot_present Whether the slot holds an image file.
# TYPE cos_agent_slot_present gauge
cos_agent_slot_present{slot="active"} 1
cos_agent_slot_present{slot="passive"} 1
cos_agent_slot_present{slot="recovery"} 0
# HELP cos_agent_slot_verified Whether the slot's image had its signature verified when it was staged.
# TYPE cos_agent_slot_verified gauge
cos_agent_slot_verified{slot="active"} 1
cos_agent_slot_verified{slot="passive"} 0
cos_agent_slot_verified{slot="recovery"} 0
# HELP cos_agent_next_boot_slot The slot GRUB boots next (1 for that slot; none: no entry can boot).
# TYPE cos_agent_next_boot_slot gauge
cos_agent_next_boot_slot{slot="active"} 1
cos_agent_next_boot_slot{slot="passive"} 0
cos_agent_next_boot_slot{slot="recovery"} 0
cos_agent_next_boot_slot{slot="none"} 0
# HELP cos_agent_next_boot_one_shot Whether the next boot is a one-shot choice (a rollback to try once).
# TYPE cos_agent_next_boot_one_shot gauge
cos_agent_next_boot_one_shot 0
# HELP cos_agent_verification_required Whether upgrades must carry a verified signature.
# TYPE cos_agent_verification_required gauge
cos_agent_verification_required 1
# HELP cos_agent_boot_assessment_armed Whether boot assessment is armed (an upgrade is on trial).
# TYPE cos_agent_boot_assessment_armed gauge
cos_agent_boot_assessment_armed 1
# HELP cos_agent_boot_assessment_tries_left Boots of the upgraded active slot left before GRUB falls back.
# TYPE cos_agent_boot_assessment_tries_left gauge
cos_agent_boot_assessment_tries_left 3
# HELP cos_agent_upgrade_failure Whether this boot is a fallback: the last upgrade failed boot assessment (upgrade_failure).
# TYPE cos_agent_upgrade_failure gauge
cos_agent_upgrade_failure 0
# HELP cos_agent_update_available Whether the last check found a new image for the configured source.
# TYPE cos_agent_update_available gauge
cos_agent_update_available 0
# HELP cos_agent_last_upgrade_success Whether the last upgrade succeeded.
# TYPE cos_agent_last_upgrade_success gauge
cos_agent_last_upgrade_success 1
# HELP cos_agent_last_upgrade_timestamp_seconds When the last upgrade finished (Unix time).
# TYPE cos_agent_last_upgrade_timestamp_seconds gauge
cos_agent_last_upgrade_timestamp_seconds 1796464890.500
# HELP cos_agent_last_upgrade_duration_seconds How long the last upgrade took.
# TYPE cos_agent_last_upgrade_duration_seconds gauge
cos_agent_last_upgrade_duration_seconds 90.500
# HELP cos_agent_last_check_success Whether the last check succeeded.
# TYPE cos_agent_last_check_success gauge
cos_agent_last_check_success 0
# HELP cos_agent_last_check_timestamp_seconds When the last check finished (Unix time).
# TYPE cos_agent_last_check_timestamp_seconds gauge
cos_agent_last_check_timestamp_seconds 1796468402.250
# HELP cos_agent_last_check_duration_seconds How long the last check took.
# TYPE cos_agent_last_check_duration_seconds gauge
cos_agent_last_check_duration_seconds 2.250
# HELP cos_agent_last_check_error The error code of the last check, when it failed.
# TYPE cos_agent_last_check_error gauge
cos_agent_last_check_error{code="REGISTRY_UNREACHABLE"} 1
`);
});

test('unknown values leave their families out instead of reporting 0: no upgrade, no check, no UpdateAvailable, not armed', (t) => {
  const names = metricFamilies(input({
    status: doc({ lastUpgrade: null, bootAssessment: { enabled: false, tentative: false, triesLeft: null } }), updateAvailable: null, lastCheck: null,
  })).map((f) => f.name);
  for (const gone of ['cos_agent_last_upgrade_success', 'cos_agent_last_check_success', 'cos_agent_update_available', 'cos_agent_boot_assessment_tries_left']) {
    t.false(names.includes(gone), gone);
  }
  t.true(names.includes('cos_agent_boot_assessment_armed'));
});

test('a failed status read: status_read_ok 0, the other values those of the last read', (t) => {
  const text = renderMetrics(input({ statusReadOk: false }));
  t.regex(text, /^cos_agent_status_read_ok 0$/m);
  t.regex(text, /^cos_agent_booted_slot\{slot="passive"\} 1$/m);
});

test('a boot-assessment fallback and a failed upgrade: upgrade_failure 1, the error code as the only label', (t) => {
  const text = renderMetrics(input({
    status: doc({
      upgradeFailure: true,
      lastUpgrade: { ...doc().status.lastUpgrade!, result: 'failure', code: 'VERIFY_FAILED', error: 'no signature' },
    }),
  }));
  t.regex(text, /^cos_agent_upgrade_failure 1$/m);
  t.regex(text, /^cos_agent_last_upgrade_success 0$/m);
  t.regex(text, /^cos_agent_last_upgrade_error\{code="VERIFY_FAILED"\} 1$/m);
  t.notRegex(text, /no signature/, 'messages are never labels');
});

test('label values are escaped as the exposition format wants; a hostile image reference cannot add a line or a label', (t) => {
  t.is(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  const hostile = slot('active', { image: 'x"} 1\ncos_agent_info{version="evil', version: '1\\2' });
  const text = renderMetrics(input({ status: doc({ staged: hostile, slots: { active: hostile, passive: doc().status.slots.passive, recovery: doc().status.slots.recovery } }) }));
  t.false(text.split('\n').some((l) => l.startsWith('cos_agent_info{version="evil')), 'no injected sample line');
  t.regex(text, /image="x\\"\} 1\\ncos_agent_info\{version=\\"evil"/);
});

test('bounded cardinality: every label but the info metrics\' comes from a fixed set; at most one info row per role and per slot', (t) => {
  const fams = metricFamilies(input());
  for (const f of fams) {
    const info = f.name.endsWith('_info');
    for (const s of f.samples) {
      for (const k of Object.keys(s.labels ?? {})) {
        if (info) continue;
        t.true(['slot', 'code'].includes(k), `${f.name} has only fixed labels (${k})`);
      }
    }
  }
  const roles = fams.find((f) => f.name === 'cos_agent_image_info')!.samples.map((s) => s.labels!.role);
  t.deepEqual(roles, [...new Set(roles)]);
  t.true(fams.every((f) => !f.name.endsWith('_info') || f.samples.every((s) => s.value === 1)));
});
