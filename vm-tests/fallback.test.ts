/**
 * The real agent across real boots: boot assessment's N tries ending in GRUB's fallback, and `cosctl rollback`
 * (one-shot, then --permanent). The guest is agent.test.ts's (the package tarball unpacked at /, the Dockerfile
 * snippet's units enabled, COS_OEM at /oem, COS_PERSISTENT at /usr/local, the agent's grub_boot_assessment on
 * COS_STATE), but its two slot images differ (buildCosDisk's `slotFiles`, `passiveUuid`), and its reporter units
 * (lib/fallback.ts) report every boot: which image runs and what GRUB left (`boot`), at shutdown what the health check
 * did (`shutdown`), and, when the boot gets that far, the health check unit, the step the host wrote onto COS_OEM
 * (/vmtest-step: `cosctl rollback [--permanent]`), `cosctl status --json`, then power-off.
 *
 * A guest reboot under -no-reboot ends qemu; the test boots the same raw disk again, which is a reboot (a fresh OVMF
 * variable store each time; the disk carries all state). Each boot has a hard timeout. Assertions are on the agent's
 * JSON (the status document), systemd's unit properties, and the env blocks and image labels/UUIDs the host reads
 * from the disk image between boots: never on prose.
 *
 * 3. A new image that fails a required health check: active.img has /etc/cos-agent/check/required.d/50-app (exit 1),
 *    passive.img is the good old image. Armed with 2 tries (cos_agent_tries=2 as an upgrade arms it). Boot 1 (active,
 *    2 -> 1): the check fails, the try is not the last: no mark, reboot. Boot 2 (active, tentative): fails, marked bad,
 *    reboot. Boot 3: GRUB falls back to passive with upgrade_failure; status names the failed upgrade.
 * 5. `cosctl rollback` one-shot and --permanent: active.img holds image A, passive.img image B (os-release VERSION and
 *    filesystem UUID differ). Boot 1 (A): one-shot rollback. Boot 2 (B, from passive, once): rollback --permanent
 *    swaps the files. Boot 3: the default entry runs B, now in active.img; the labels inside the images are swapped.
 */
import './lib/timing.ts';
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { cloneDisk, type CosDisk } from './lib/disk.ts';
import { slotImageIdentity, writeStep, type Step } from './lib/fallback.ts';
import { A_VERSION, B_VERSION, FALLBACK_NEW_VERSION as NEW_VERSION, FALLBACK_OLD_VERSION as OLD_VERSION, FALLBACK_PASSIVE_UUID as PASSIVE_UUID, fallbackScenarioDisks } from './lib/fallback-disks.ts';
import { OEM_GRUBENV, readGrubEnv, STATE_BOOT_ASSESSMENT, writeGrubEnv } from './lib/grubenv.ts';
import { killAllVms, logDir } from './lib/qemu.ts';
import { BOOT_TIMEOUT_MS, bootOnce, obj, statusOf, type Boot, type Json } from './lib/boots.ts';

/** More boots than a scenario needs: a guest that reboots once too often shows as a boot too many, not a hang. */
const MAX_BOOTS = 4;


let diskFail: CosDisk;
let diskAB: CosDisk;
let setupSeconds = 0;

test.before(async (t) => {
  t.timeout(40 * 60_000, 'building the package and two cOS disks (debootstrap on a cold cache)');
  const t0 = Date.now();
  // Built (or found in the cache) by vm-tests/lib/prebuild.ts while the other tests ran, as a cold CI run goes.
  const built = await fallbackScenarioDisks((l: string) => t.log(l));
  diskFail = built.diskFail;
  diskAB = built.diskAB;
  setupSeconds = (Date.now() - t0) / 1000;
  t.log(`package ${path.basename(built.pkg.path)} (${built.pkg.built ?? 'up to date'}); disks ${diskFail.key} (failing active) and ${diskAB.key} (A/B) ready after ${setupSeconds.toFixed(1)} s`);
});

test.after.always(() => {
  killAllVms();
});


/**
 * The health check unit failed. Its Result is `exit-code` (cosctl exits 60, HEALTH_CHECK_FAILED) when cosctl is gone
 * before the reboot it asked for stops the unit, or `signal` (SIGTERM) when the stop job reaches it first: cosctl
 * calls `systemctl reboot` and only then exits, so which one wins is a race (both seen here).
 */
function assertHealthFailed(t: ExecutionContext, hc: Json, diag: string): void {
  t.is(hc['active'], 'failed', `the health check unit failed\n${diag}`);
  t.true(hc['result'] === 'exit-code' || hc['result'] === 'signal', `the health check unit's Result: ${String(hc['result'])}\n${diag}`);
  t.not(hc['execMainStatus'], 0, diag);
}


test('a new image that fails a required health check: 2 tries, then GRUB falls back to passive with upgrade_failure', async (t) => {
  t.timeout(MAX_BOOTS * BOOT_TIMEOUT_MS + 300_000);
  const t0 = Date.now();
  const work = await mkdtemp(path.join(tmpdir(), 'cosvm-fallback-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const image = await cloneDisk(diskFail.path, path.join(work, 'disk.img'));
  const ids = { active: await slotImageIdentity(image, '/cOS/active.img'), passive: await slotImageIdentity(image, '/cOS/passive.img') };
  t.deepEqual(ids.passive, { label: 'COS_PASSIVE', uuid: PASSIVE_UUID });
  t.is(ids.active.label, 'COS_ACTIVE');
  t.not(ids.active.uuid, PASSIVE_UUID);

  // armed as an upgrade arms it (grubVerbs.arm(2)): the next boot of active is assessed, with 2 tries
  await writeGrubEnv(image, { enable_boot_assessment: 'yes', boot_assessment_tries: '2', cos_agent_tries: '2' }, STATE_BOOT_ASSESSMENT);
  await writeStep(image, 'report');

  const boots: Boot[] = [];
  const after: Array<Record<string, string>> = [];
  for (let n = 1; n <= MAX_BOOTS; n++) {
    const b = await bootOnce(t, image, work, 'fallback', n);
    boots.push(b);
    after.push(await readGrubEnv(image, STATE_BOOT_ASSESSMENT));
    // a boot that did not end by a guest shutdown or power-off (timeout, GRUB prompt) ends the scenario
    if (b.kind.has('done') || b.vm.timedOut || b.vm.aborted !== null || b.vm.exitCode !== 0) break;
  }
  const summary = boots.map((b, i) => ({ boot: b.n, seconds: b.vm.durationMs / 1000, label: b.boot['label'], version: b.boot['version'], assessmentSeenByGuest: b.boot['assessment'], shutdown: b.kind.get('shutdown')?.['shutdownTarget'] ?? null, healthcheck: obj(obj(b.kind.get('shutdown') ?? b.kind.get('healthcheck'))['healthcheck'])['result'] ?? null, assessmentOnDiskAfter: after[i], log: b.vm.logPath }));
  t.log(JSON.stringify(summary, null, 1));
  const all = boots.map((b) => b.diag).join('\n\n');
  t.is(boots.length, 3, `three boots: two failed tries of active, then the fallback\n${all}`);
  const [b1, b2, b3] = boots;
  if (b1 === undefined || b2 === undefined || b3 === undefined) return;

  // boot 1: active, the countdown 2 -> 1, the required check fails; not the last try: not marked, a reboot
  t.is(b1.boot['label'], 'COS_ACTIVE', b1.diag);
  t.is(b1.boot['version'], NEW_VERSION, b1.diag);
  t.is(b1.boot['upgradeFailure'], false, b1.diag);
  t.like(obj(b1.boot['assessment']), { enable_boot_assessment: 'yes', boot_assessment_tries: '1', cos_agent_tries: '2' }, `GRUB counted the first try down\n${b1.diag}`);
  t.not(obj(b1.boot['assessment'])['boot_assessment_tentative'], 'yes', b1.diag);
  const sd1 = obj(b1.kind.get('shutdown'));
  t.is(sd1['shutdownTarget'], 'reboot.target', `the health check rebooted the host\n${b1.diag}`);
  assertHealthFailed(t, obj(sd1['healthcheck']), b1.diag);
  t.false(b1.kind.has('status'), `the reporter never ran: the reboot came first\n${b1.diag}`);
  t.like(after[0] ?? {}, { enable_boot_assessment: 'yes', boot_assessment_tries: '1', cos_agent_tries: '2' }, `on disk after boot 1: still armed, one try left, not marked\n${JSON.stringify(after[0])}`);
  t.not((after[0] ?? {})['boot_assessment_tentative'], 'yes', JSON.stringify(after[0]));

  // boot 2: active, the last try (tentative), the check fails: marked bad, a reboot
  t.is(b2.boot['label'], 'COS_ACTIVE', b2.diag);
  t.is(b2.boot['version'], NEW_VERSION, b2.diag);
  t.like(obj(b2.boot['assessment']), { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes', cos_agent_tries: '2' }, `GRUB's last try of active\n${b2.diag}`);
  const sd2 = obj(b2.kind.get('shutdown'));
  t.is(sd2['shutdownTarget'], 'reboot.target', `the health check rebooted the host\n${b2.diag}`);
  assertHealthFailed(t, obj(sd2['healthcheck']), b2.diag);
  t.false(b2.kind.has('status'), b2.diag);
  t.like(after[1] ?? {}, { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes', cos_agent_tries: '2' }, `on disk after boot 2: the fallback is due\n${JSON.stringify(after[1])}`);

  // boot 3: GRUB falls back to passive with upgrade_failure; the agent names the failed upgrade
  t.is(b3.boot['label'], 'COS_PASSIVE', b3.diag);
  t.is(b3.boot['version'], OLD_VERSION, b3.diag);
  t.is(b3.boot['upgradeFailure'], true, `upgrade_failure on the fallback's cmdline\n${b3.diag}`);
  t.is(b3.kind.get('status')?.['exit'], 0, `cosctl status --json\n${b3.diag}`);
  const st = statusOf(b3);
  t.is(b3.status?.['kind'], 'CosHost', b3.diag);
  t.is(st['bootedFrom'], 'passive', `${JSON.stringify(st)}\n${b3.diag}`);
  t.is(obj(st['booted'])['slot'], 'passive', JSON.stringify(st['booted']));
  t.is(st['upgradeFailure'], true, JSON.stringify(st));
  const fu = obj(st['failedUpgrade']);
  t.is(fu['slot'], 'active', `status.failedUpgrade\n${JSON.stringify(st['failedUpgrade'])}`);
  t.is(fu['triesUsed'], 2, `status.failedUpgrade.triesUsed = cos_agent_tries\n${JSON.stringify(st['failedUpgrade'])}`);
  t.is(fu['version'], NEW_VERSION, JSON.stringify(st['failedUpgrade']));
  t.is(fu['uuid'], ids.active.uuid, JSON.stringify(st['failedUpgrade']));
  t.is(obj(obj(st['slots'])['passive'])['version'], OLD_VERSION, JSON.stringify(st['slots']));
  // the model: GRUB keeps falling back until the next upgrade; the failed image is no rollback target
  t.like(obj(st['nextBoot']), { entry: 'fallback', slot: 'passive', oneShot: false, upgradeFailure: true }, `status.nextBoot\n${JSON.stringify(st['nextBoot'])}`);
  t.deepEqual(st['bootAssessment'], { enabled: true, tentative: true, triesLeft: 0 }, JSON.stringify(st['bootAssessment']));
  t.is(st['rollback'], null, `status.rollback: the image that failed is not one to roll back to\n${JSON.stringify(st['rollback'])}`);
  // booted from passive, the health check passes (no 50-app here): reported, the boot is good
  const hc3 = obj(b3.kind.get('healthcheck')?.['healthcheck']);
  t.is(hc3['result'], 'success', `the health check of passive\n${b3.diag}`);
  t.is(hc3['execMainStatus'], 0, b3.diag);
  t.is(obj(b3.kind.get('done'))['failed'], '', `no failed units on passive\n${b3.diag}`);
  t.true(b3.vm.exitCode === 0 && !b3.vm.timedOut, `the guest powered off by itself\n${b3.report}`);
  // on disk after the fallback boot: what the agent left in COS_STATE/boot_assessment (logged; passive cannot disarm
  // an assessment of active, decideMarkGood)
  t.log(`COS_STATE/boot_assessment after the fallback boot: ${JSON.stringify(after[2])}; status.bootAssessment ${JSON.stringify(st['bootAssessment'])}; nextBoot ${JSON.stringify(st['nextBoot'])}`);
  t.is((after[2] ?? {})['cos_agent_tries'], '2', JSON.stringify(after[2]));

  const wall = (Date.now() - t0) / 1000;
  t.log(`scenario wall ${wall.toFixed(1)} s (+ setup ${setupSeconds.toFixed(1)} s); boots ${boots.map((b) => (b.vm.durationMs / 1000).toFixed(1)).join(' + ')} s; host load ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  await mkdir(logDir(), { recursive: true });
  await writeFile(path.join(logDir(), 'fallback-tries-summary.json'), `${JSON.stringify({ scenario: 'fallback after 2 tries', wallSeconds: wall, setupSeconds, boots: summary, status: st }, null, 2)}\n`);
});

test('cosctl rollback one-shot, then --permanent, across real boots', async (t) => {
  t.timeout(MAX_BOOTS * BOOT_TIMEOUT_MS + 300_000);
  const t0 = Date.now();
  const work = await mkdtemp(path.join(tmpdir(), 'cosvm-rollback-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const image = await cloneDisk(diskAB.path, path.join(work, 'disk.img'));
  const A = await slotImageIdentity(image, '/cOS/active.img');
  const B = await slotImageIdentity(image, '/cOS/passive.img');
  t.is(A.label, 'COS_ACTIVE');
  t.deepEqual(B, { label: 'COS_PASSIVE', uuid: PASSIVE_UUID });
  t.not(A.uuid, B.uuid);

  const steps: Step[] = ['rollback', 'rollback-permanent', 'report'];
  const boots: Boot[] = [];
  const oemAfter: Array<Record<string, string>> = [];
  for (const [i, step] of steps.entries()) {
    await writeStep(image, step);
    const b = await bootOnce(t, image, work, 'rollback', i + 1);
    boots.push(b);
    oemAfter.push(await readGrubEnv(image, OEM_GRUBENV));
    if (!b.kind.has('done') || b.vm.exitCode !== 0 || b.vm.timedOut) {
      t.fail(`boot ${i + 1} (step ${step}) did not report and power off\n${b.diag}`);
      return;
    }
  }
  const [b1, b2, b3] = boots;
  if (b1 === undefined || b2 === undefined || b3 === undefined) return;

  // boot 1: image A from active; the one-shot rollback makes GRUB boot passive next, once
  t.is(b1.boot['label'], 'COS_ACTIVE', b1.diag);
  t.is(b1.boot['version'], A_VERSION, b1.diag);
  t.is(b1.boot['step'], 'rollback', b1.diag);
  t.is(b1.kind.get('cosctl')?.['exit'], 0, `cosctl rollback\n${b1.diag}`);
  t.is(b1.kind.get('status')?.['exit'], 0, b1.diag);
  const s1 = statusOf(b1);
  t.is(s1['bootedFrom'], 'active', b1.diag);
  t.like(obj(s1['nextBoot']), { entry: 'fallback', oneShot: true, slot: 'passive' }, `status.nextBoot after the one-shot rollback\n${JSON.stringify(s1['nextBoot'])}`);
  t.is(obj(obj(s1['nextBoot'])['then'])['slot'], 'active', `and active again the time after\n${JSON.stringify(s1['nextBoot'])}`);
  t.is(obj(obj(s1['slots'])['passive'])['version'], B_VERSION, JSON.stringify(s1['slots']));
  t.is(obj(b1.kind.get('healthcheck')?.['healthcheck'])['result'], 'success', b1.diag);
  t.is((oemAfter[0] ?? {})['next_entry'], 'fallback', `/oem/grubenv on disk after boot 1\n${JSON.stringify(oemAfter[0])}`);

  // boot 2: GRUB took the one-shot: image B from passive; rollback --permanent swaps the image files
  t.is(b2.grub['selected_entry'], 'fallback', `GRUB's one-shot entry\n${JSON.stringify(b2.grub)}\n${b2.report}`);
  t.is(b2.boot['label'], 'COS_PASSIVE', b2.diag);
  t.is(b2.boot['version'], B_VERSION, b2.diag);
  t.is(b2.boot['upgradeFailure'], false, b2.diag);
  t.is(obj(b2.boot['grubenv'])['next_entry'], '', `GRUB cleared next_entry when it took it\n${JSON.stringify(b2.boot['grubenv'])}`);
  t.is(b2.kind.get('cosctl')?.['exit'], 0, `cosctl rollback --permanent\n${b2.diag}`);
  t.is(b2.kind.get('status')?.['exit'], 0, b2.diag);
  const s2 = statusOf(b2);
  t.is(s2['bootedFrom'], 'passive', `the cmdline of this boot still says passive\n${JSON.stringify(s2)}`);
  t.like(obj(s2['nextBoot']), { entry: 'cos', oneShot: false, slot: 'active' }, `status.nextBoot after the swap\n${JSON.stringify(s2['nextBoot'])}`);
  t.like(obj(obj(s2['slots'])['active']), { version: B_VERSION, uuid: B.uuid, label: 'COS_ACTIVE' }, `image B is in active.img now\n${JSON.stringify(obj(s2['slots'])['active'])}\n${b2.diag}`);
  t.like(obj(obj(s2['slots'])['passive']), { version: A_VERSION, uuid: A.uuid, label: 'COS_PASSIVE' }, `image A in passive.img\n${JSON.stringify(obj(s2['slots'])['passive'])}`);
  t.is(obj(b2.kind.get('healthcheck')?.['healthcheck'])['result'], 'success', b2.diag);
  const mid = { active: await slotImageIdentity(image, '/cOS/active.img'), passive: await slotImageIdentity(image, '/cOS/passive.img') };

  // boot 3: the default entry boots image B from active.img
  t.is(b3.grub['selected_entry'], '', `no one-shot entry left\n${JSON.stringify(b3.grub)}`);
  t.is(b3.boot['label'], 'COS_ACTIVE', b3.diag);
  t.is(b3.boot['version'], B_VERSION, b3.diag);
  t.is(b3.kind.get('status')?.['exit'], 0, b3.diag);
  const s3 = statusOf(b3);
  t.is(s3['bootedFrom'], 'active', JSON.stringify(s3));
  t.is(obj(s3['booted'])['slot'], 'active', JSON.stringify(s3['booted']));
  t.like(obj(obj(s3['slots'])['active']), { version: B_VERSION, uuid: B.uuid }, JSON.stringify(s3['slots']));
  t.like(obj(obj(s3['slots'])['passive']), { version: A_VERSION, uuid: A.uuid }, JSON.stringify(s3['slots']));
  t.like(obj(s3['nextBoot']), { entry: 'cos', oneShot: false, slot: 'active' }, JSON.stringify(s3['nextBoot']));
  t.is(obj(b3.kind.get('healthcheck')?.['healthcheck'])['result'], 'success', b3.diag);
  t.is(obj(b3.kind.get('done'))['failed'], '', b3.diag);

  // host side, after power-off: the labels inside the image files follow their names, the UUIDs moved with the images
  const end = { active: await slotImageIdentity(image, '/cOS/active.img'), passive: await slotImageIdentity(image, '/cOS/passive.img') };
  t.deepEqual(mid, { active: { label: 'COS_ACTIVE', uuid: B.uuid }, passive: { label: 'COS_PASSIVE', uuid: A.uuid } }, 'after the swap (boot 2)');
  t.deepEqual(end, { active: { label: 'COS_ACTIVE', uuid: B.uuid }, passive: { label: 'COS_PASSIVE', uuid: A.uuid } }, 'after boot 3');

  const wall = (Date.now() - t0) / 1000;
  const summary = boots.map((b, i) => ({ boot: b.n, step: steps[i], seconds: b.vm.durationMs / 1000, label: b.boot['label'], version: b.boot['version'], grub: b.grub, nextBoot: statusOf(b)['nextBoot'], oemGrubenvAfter: oemAfter[i], log: b.vm.logPath }));
  t.log(JSON.stringify(summary, null, 1));
  t.log(`scenario wall ${wall.toFixed(1)} s (+ setup ${setupSeconds.toFixed(1)} s); boots ${boots.map((b) => (b.vm.durationMs / 1000).toFixed(1)).join(' + ')} s; host load ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  await mkdir(logDir(), { recursive: true });
  await writeFile(path.join(logDir(), 'rollback-summary.json'), `${JSON.stringify({ scenario: 'rollback one-shot and permanent', wallSeconds: wall, setupSeconds, boots: summary, identities: { before: { A, B }, afterSwap: mid, end } }, null, 2)}\n`);
});
