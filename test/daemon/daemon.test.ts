import test from 'ava';
import { slotSummaries, summarizeConfig } from '../../src/daemon/daemon.ts';
import { HOST_API_VERSION, HOST_KIND, type HostStatusDocument, type SlotName, type SlotStatus } from '../../src/model/host.ts';
import { DEFAULT_LABELS, type AgentConfig } from '../../src/model/config.ts';

function slot(name: SlotName, over: Partial<SlotStatus> = {}): SlotStatus {
  return {
    slot: name, file: `cOS/${name}.img`, present: true, label: null, fs: 'ext2', size: 1024, uuid: null, record: 'none', image: null, imageDigest: null,
    version: null, timestamp: null, verification: 'unknown', signedBy: null, ...over,
  };
}

function doc(status: Partial<HostStatusDocument['status']> = {}): HostStatusDocument {
  const slots = { active: slot('active'), passive: slot('passive'), recovery: slot('recovery') };
  return {
    apiVersion: HOST_API_VERSION,
    kind: HOST_KIND,
    metadata: { name: 'h' },
    spec: { image: null, verify: true },
    status: {
      bootedFrom: 'active', upgradeFailure: false, booted: slots.active, staged: null, rollback: slots.passive, slots,
      nextBoot: { entry: 'cos', oneShot: false, slot: 'active', reason: 'default', upgradeFailure: false }, bootAssessment: { enabled: false, tentative: false, triesLeft: null }, lastUpgrade: null, failedUpgrade: null, ...status,
    },
  };
}

test('a healthy host: every present slot is good; unknown values become empty strings and 0', (t) => {
  const s = slotSummaries(doc());
  t.deepEqual(s.active, { image: '', digest: '', version: '', label: '', file: 'cOS/active.img', present: true, fs: 'ext2', size: 1024, timestamp: '', verification: 'unknown', state: 'good' });
  t.is(s.passive.state, 'good');
  t.is(s.recovery.state, 'good');
});

test('active is tentative while boot assessment is armed or under way, and when an upgrade is staged', (t) => {
  t.is(slotSummaries(doc({ bootAssessment: { enabled: true, tentative: false, triesLeft: 1 } })).active.state, 'tentative');
  t.is(slotSummaries(doc({ bootAssessment: { enabled: true, tentative: true, triesLeft: 0 } })).active.state, 'tentative');
  const staged = doc();
  staged.status.staged = staged.status.slots.active;
  t.is(slotSummaries(staged).active.state, 'tentative');
});

test('after a fallback (upgrade_failure) active is bad, unless a new image has been staged into it since', (t) => {
  t.is(slotSummaries(doc({ upgradeFailure: true, bootedFrom: 'passive' })).active.state, 'bad');
  const restaged = doc({ upgradeFailure: true, bootedFrom: 'passive' });
  restaged.status.staged = restaged.status.slots.active;
  t.is(slotSummaries(restaged).active.state, 'tentative');
  t.is(slotSummaries(restaged).passive.state, 'good');
});

test('a missing image file is absent, whatever boot assessment says', (t) => {
  const d = doc({ upgradeFailure: true });
  d.status.slots.passive = slot('passive', { present: false, fs: null, size: null });
  d.status.slots.active = slot('active', { present: false });
  t.is(slotSummaries(d).passive.state, 'absent');
  t.is(slotSummaries(d).active.state, 'absent');
});

test('the config summary carries the effective settings and key paths, nothing else', (t) => {
  const config: AgentConfig = {
    upgradeSource: { kind: 'oci', ref: 'reg/os:v2', uri: 'oci:reg/os:v2' },
    upgradeRecovery: false, channelUpgrades: false, imageSizeMiB: 3072, bootAssessmentTries: 3, labels: { ...DEFAULT_LABELS }, verify: false,
    verifyDisabledBy: '/etc/cos/config:3 (NO_VERIFY)',
    cosign: { enabled: true, publicKeyLocations: ['/etc/cos/key.pub'], experimental: false, repository: 'reg/sigs' },
    cloudInitPaths: [], strict: true, reboot: true, poweroff: false, origins: { upgradeSource: '/etc/cos-upgrade-image:1 (UPGRADE_IMAGE)' },
  };
  const s = summarizeConfig(config, '/srv/host');
  t.deepEqual(s, {
    root: '/srv/host',
    upgradeImage: 'oci:reg/os:v2', recoveryImage: '', verify: false, verifyDisabledBy: '/etc/cos/config:3 (NO_VERIFY)', channelUpgrades: false,
    imageSizeMiB: 3072, strict: true, reboot: true, poweroff: false, cosign: true, cosignKeyless: false, cosignRepository: 'reg/sigs',
    cosignKeys: ['/etc/cos/key.pub'], labels: { ...DEFAULT_LABELS },
  });
});

test('GetStatus that failed at start (a broken config, no watcher to reload it) is retried on the next call', async (t) => {
  const { mkdtemp, mkdir, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const path = await import('node:path');
  const { AgentDaemon } = await import('../../src/daemon/daemon.ts');
  const { SysRoot } = await import('../../src/sys/root.ts');
  const { SpawnRunner } = await import('../../src/sys/runner.ts');
  const { silentLogger } = await import('../../src/sys/log.ts');
  const { NoHooks } = await import('../../src/host/hooks.ts');
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-daemon-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'etc/cos'), { recursive: true });
  await writeFile(path.join(dir, 'etc/cos/config'), 'this line is not KEY=value\n');
  const daemon = new AgentDaemon({
    agent: {
      root: new SysRoot(dir), runner: new SpawnRunner(), log: silentLogger, hooks: new NoHooks(), env: { HOME: dir },
      now: () => new Date(), testDisk: '/dev/cos-test-no-such-disk',
    },
    reboot: () => Promise.resolve('skipped'),
  });
  await daemon.start();
  await t.throwsAsync(daemon.statusJson(), { code: 'CONFIG_INVALID' });
  await writeFile(path.join(dir, 'etc/cos/config'), 'DEFAULT_IMAGE_SIZE=48\n');
  const doc = JSON.parse(await daemon.statusJson()) as HostStatusDocument;
  t.is(doc.apiVersion, HOST_API_VERSION);
  t.is(doc.kind, HOST_KIND);
});

test('an unset DEFAULT_IMAGE_SIZE shows as imageSizeMiB 0 in the config summary (the slot is sized like the image it replaces)', async (t) => {
  const { resolveConfig } = await import('../../src/config/resolve.ts');
  const config = resolveConfig([]);
  t.is(config.imageSizeMiB, null);
  t.is(summarizeConfig(config).imageSizeMiB, 0);
});
