/**
 * Scenario 2: an upgrade through the daemon inside the guest, to a new signed derivative image, then a reboot into it.
 *
 * The guest is the fallback scenarios' (lib/fallback.ts reporter units, the package tarball unpacked at /, the
 * Dockerfile snippet's units, the agent's grub_boot_assessment) and trusts the VM tests' key (lib/upgrade-image.ts:
 * /etc/cos-agent/policy.yaml + the public key; verification is on). The host runs the registry on 127.0.0.1; the guest
 * reaches it as 10.0.2.2:<port> through QEMU user networking and marks it insecure in /etc/containers/registries.conf.
 * The new image is a derivative built like packaging/Dockerfile.snippet says (umoci: the guest root filesystem as the
 * base, ADD the package tarball, RUN systemctl enable), with os-release VERSION cosvm-2.0, pushed and signed (cosign
 * legacy .sig tag) by the host.
 *
 * Boot 1 (cosvm-1.0 from active): `cosctl upgrade --image 10.0.2.2:<port>/cos/os:v2` through cosd; status says the
 * new image is staged in active, verified, boot assessment armed with 3 tries; an orderly reboot.
 * Boot 2: GRUB counts the first try down and boots the new active; the health check passes and marks the boot good
 * (disarmed on disk); status shows the history: the new image in active (image, digest, verified), the old one in
 * passive as the rollback, lastUpgrade a success.
 *
 * Logged and written to <logs>/upgrade-summary.json (npm run bench reads it): the time from `cosctl upgrade` to the
 * new active's multi-user.target, split into resolve+verify, download (streamed download and unpack), staging (seal,
 * switch, GRUB, records) and reboot (cosctl returned → orderly shutdown → firmware, GRUB, kernel → multi-user).
 */
import './lib/timing.ts';
import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseJournalJson, upgradePhases } from './lib/agent.ts';
import { BOOT_TIMEOUT_MS, bootOnce, multiUserSeconds, obj, statusOf, type Boot } from './lib/boots.ts';
import { cloneDisk } from './lib/disk.ts';
import { slotImageIdentity, upgradeStep, writeStep } from './lib/fallback.ts';
import { readGrubEnv, STATE_BOOT_ASSESSMENT } from './lib/grubenv.ts';
import { logDir } from './lib/qemu.ts';
import { NEW_VERSION, OLD_VERSION, useUpgradeScenario } from './lib/upgrade-image.ts';

const scenario = useUpgradeScenario(test);

test('an upgrade through cosd in the guest to a new signed derivative, a reboot into it, the boot marked good', async (t) => {
  const { disk, v2, setupSeconds } = scenario();
  t.timeout(3 * BOOT_TIMEOUT_MS + 600_000);
  const t0 = Date.now();
  const work = await mkdtemp(path.join(tmpdir(), 'cosvm-upgrade-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const image = await cloneDisk(disk.path, path.join(work, 'disk.img'));
  const before = { active: await slotImageIdentity(image, '/cOS/active.img'), passive: await slotImageIdentity(image, '/cOS/passive.img') };

  // boot 1: the upgrade, through cosd, verified with the key the image trusts; then an orderly reboot
  await writeStep(image, upgradeStep(v2.guestRef));
  const b1 = await bootOnce(t, image, work, 'upgrade', 1, { timeoutMs: BOOT_TIMEOUT_MS + 600_000 });
  const armed = await readGrubEnv(image, STATE_BOOT_ASSESSMENT);
  const mid = { active: await slotImageIdentity(image, '/cOS/active.img'), passive: await slotImageIdentity(image, '/cOS/passive.img') };
  // boot 2: the new image
  await writeStep(image, 'report');
  let b2: Boot | undefined;
  if (b1.kind.has('cosctl') && b1.kind.get('cosctl')?.['exit'] === 0) b2 = await bootOnce(t, image, work, 'upgrade', 2);
  const after = await readGrubEnv(image, STATE_BOOT_ASSESSMENT);

  t.is(b1.boot['label'], 'COS_ACTIVE', b1.diag);
  t.is(b1.boot['version'], OLD_VERSION, b1.diag);
  const up = obj(b1.kind.get('cosctl'));
  t.is(up['exit'], 0, `cosctl upgrade in the guest\n${b1.diag}`);
  t.is(b1.kind.get('status')?.['exit'], 0, b1.diag);
  const s1 = statusOf(b1);
  t.is(s1['bootedFrom'], 'active', JSON.stringify(s1));
  t.like(obj(obj(s1['slots'])['active']), { version: NEW_VERSION, imageDigest: v2.digest, verification: 'verified', label: 'COS_ACTIVE' }, `the new image staged in active\n${JSON.stringify(obj(s1['slots'])['active'])}`);
  t.like(obj(obj(s1['slots'])['passive']), { version: OLD_VERSION, uuid: before.active.uuid, label: 'COS_PASSIVE' }, `the running image moved to passive\n${JSON.stringify(obj(s1['slots'])['passive'])}`);
  t.is(obj(s1['staged'])['slot'], 'active', JSON.stringify(s1['staged']));
  t.is(obj(s1['booted'])['slot'], 'passive', `the running image is in passive.img now\n${JSON.stringify(s1['booted'])}`);
  t.like(obj(s1['nextBoot']), { entry: 'cos', slot: 'active', oneShot: false, upgradeFailure: false }, JSON.stringify(s1['nextBoot']));
  t.deepEqual(s1['bootAssessment'], { enabled: true, tentative: false, triesLeft: 3 }, JSON.stringify(s1['bootAssessment']));
  t.like(obj(s1['lastUpgrade']), { result: 'success', target: 'system', imageDigest: v2.digest }, JSON.stringify(s1['lastUpgrade']));
  t.is(b1.kind.get('shutdown')?.['shutdownTarget'], 'reboot.target', `an orderly reboot after the upgrade\n${b1.diag}`);
  t.like(armed, { enable_boot_assessment: 'yes', cos_agent_tries: '3' }, `armed on disk after the upgrade\n${JSON.stringify(armed)}`);
  t.deepEqual(mid.passive, { label: 'COS_PASSIVE', uuid: before.active.uuid }, 'the old active.img is passive.img now');
  t.is(mid.active.label, 'COS_ACTIVE');
  t.not(mid.active.uuid, before.active.uuid);
  t.not(mid.active.uuid, before.passive.uuid);

  if (b2 === undefined) {
    t.fail(`no second boot: the upgrade failed\n${b1.diag}`);
    return;
  }
  t.is(b2.boot['label'], 'COS_ACTIVE', b2.diag);
  t.is(b2.boot['version'], NEW_VERSION, `the new image runs\n${b2.diag}`);
  t.like(obj(b2.boot['assessment']), { enable_boot_assessment: 'yes', boot_assessment_tries: '2', cos_agent_tries: '3' }, `GRUB counted the first try down\n${b2.diag}`);
  const hc = obj(b2.kind.get('healthcheck')?.['healthcheck']);
  t.is(hc['result'], 'success', `the health check of the new image\n${b2.diag}`);
  t.is(b2.kind.get('status')?.['exit'], 0, b2.diag);
  const s2 = statusOf(b2);
  t.is(s2['bootedFrom'], 'active', JSON.stringify(s2));
  t.like(obj(s2['booted']), { slot: 'active', version: NEW_VERSION, imageDigest: v2.digest }, JSON.stringify(s2['booted']));
  t.like(obj(obj(s2['slots'])['active']), { version: NEW_VERSION, imageDigest: v2.digest, verification: 'verified', uuid: mid.active.uuid, image: `docker://${v2.guestRef}` }, JSON.stringify(obj(s2['slots'])['active']));
  t.like(obj(obj(s2['slots'])['passive']), { version: OLD_VERSION, uuid: before.active.uuid }, JSON.stringify(obj(s2['slots'])['passive']));
  t.is(obj(s2['rollback'])['slot'], 'passive', `the old image is the rollback\n${JSON.stringify(s2['rollback'])}`);
  t.is(s2['staged'], null, JSON.stringify(s2['staged']));
  t.is(s2['failedUpgrade'], null, JSON.stringify(s2['failedUpgrade']));
  t.like(obj(s2['lastUpgrade']), { result: 'success', imageDigest: v2.digest }, `the outcome persisted across the reboot\n${JSON.stringify(s2['lastUpgrade'])}`);
  t.like(obj(s2['nextBoot']), { entry: 'cos', slot: 'active', oneShot: false }, JSON.stringify(s2['nextBoot']));
  t.is(obj(b2.kind.get('done'))['failed'], '', b2.diag);
  t.is(after['enable_boot_assessment'] ?? '', '', `marked good: assessment disarmed on disk\n${JSON.stringify(after)}`);
  t.not(after['boot_assessment_tentative'], 'yes', JSON.stringify(after));

  // the time from `cosctl upgrade` to the new active's multi-user.target
  const phases = upgradePhases(parseJournalJson(String(b1.kind.get('cosd-journal')?.['json'] ?? '')));
  const cosctlSeconds = Number(up['uptime']) - Number(up['startUptime']);
  const shutdown = (b1.vm.durationMs - (b1.at.get('cosctl') ?? Number.NaN)) / 1000;
  const bootToMultiUser = multiUserSeconds(b2);
  const split = { ...phases, cosctl: cosctlSeconds, reboot: shutdown + bootToMultiUser, shutdown, bootToMultiUser, total: cosctlSeconds + shutdown + bootToMultiUser };
  t.log(`cosctl upgrade -> new active's multi-user.target: ${split.total.toFixed(1)} s = cosctl ${cosctlSeconds.toFixed(1)} s (resolve+verify ${phases.resolveVerify?.toFixed(1)} s, download+unpack ${phases.download?.toFixed(1)} s, staging ${phases.staging?.toFixed(1)} s) + reboot ${split.reboot.toFixed(1)} s (shutdown ${shutdown.toFixed(1)} s, firmware to multi-user ${bootToMultiUser.toFixed(1)} s); host load ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  for (const [k, v] of Object.entries(phases)) t.true(v !== null && v >= 0, `phase ${k} found in cosd's journal: ${String(v)}`);
  t.true(bootToMultiUser > 0, `multi-user.target of boot 2 at ${bootToMultiUser} s`);
  const wall = (Date.now() - t0) / 1000;
  t.log(`scenario wall ${wall.toFixed(1)} s (+ setup ${setupSeconds.toFixed(1)} s); boots ${(b1.vm.durationMs / 1000).toFixed(1)} + ${(b2.vm.durationMs / 1000).toFixed(1)} s`);
  await mkdir(logDir(), { recursive: true });
  await writeFile(path.join(logDir(), 'upgrade-summary.json'), `${JSON.stringify({ scenario: 'upgrade through cosd, reboot', wallSeconds: wall, setupSeconds, digest: v2.digest, split, boots: [b1, b2].map((b) => ({ boot: b.n, seconds: b.vm.durationMs / 1000, label: b.boot['label'], version: b.boot['version'], log: b.vm.logPath })), cosctlStdout: up['stdout'], hostLoad: loadavg() }, null, 2)}\n`);
});
