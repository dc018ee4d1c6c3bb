/**
 * The real agent across real boots (4): a new image that never reaches userspace. Its initrd panics the kernel
 * (lib/panic.ts: /init prints `COSVM-PANIC {json}` and exits, "Attempted to kill init"), so no health check and no
 * agent ever run in it: only GRUB's countdown and the kernel's `panic=5` (the agent's grub_boot_assessment puts it on
 * active's cmdline through extra_active_cmdline) bring the host back, and the old image, booted as the fallback, has
 * to tell what happened.
 *
 * The disk is fallback.test.ts's kind (the package tarball unpacked at /, the Dockerfile snippet's units, COS_OEM at
 * /oem, the agent's grub_boot_assessment on COS_STATE, lib/fallback.ts's reporter units), with active.img the new
 * image (os-release VERSION cosvm-new-2.0, /boot/initrd the panicking one) and passive.img the old one (cosvm-old-1.0,
 * a filesystem UUID of its own). Armed as an upgrade arms it (the agent's own grubVerbs.arm) with 3 tries, the
 * agent's default: boots 1..3 run active and panic (GRUB saves 2, 1, then tentative), boot 4 is GRUB's fallback to
 * passive with upgrade_failure, where `cosctl status --json` names the failed upgrade with triesUsed 3.
 *
 * A reboot ends qemu (-no-reboot): the test boots the same raw disk again. Each boot has a hard timeout. Assertions are
 * on data only: the panicking initrd's marker JSON, the COSVM-GRUB lines, the guest units' COSVM-RESULT JSON (none at
 * all in a panicking boot), and COS_STATE/boot_assessment read from the raw disk after every boot; never on the
 * kernel's prose. Times are logged, not asserted.
 */
import './lib/timing.ts';
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { grubVerbs } from '../src/host/boot-model.ts';
import { agentDiskOptions, agentPackage, dockerfileEnabledUnits } from './lib/agent.ts';
import { BOOT_TIMEOUT_MS, bootOnce, obj, statusOf, type Boot, type Json } from './lib/boots.ts';
import { buildCosDisk, cloneDisk, type CosDisk } from './lib/disk.ts';
import { fallbackReporter, osRelease, slotImageIdentity, writeStep } from './lib/fallback.ts';
import { readGrubEnv, STATE_BOOT_ASSESSMENT, writeGrubEnv } from './lib/grubenv.ts';
import { PANIC_MARKER, panicInitrd } from './lib/panic.ts';
import { killAllVms, logDir, markerJson } from './lib/qemu.ts';

/**
 * The tries armed: 3, the agent's default (DEFAULT_TRIES, as greenboot). Scenario 3 covers 2; 3 runs GRUB's countdown
 * through two branches (3 -> 2, 2 -> 1) before the last try, and a panicking boot costs only ~15-30 s.
 */
const TRIES = 3;
/**
 * A panicking boot ends itself in ~15-30 s (OVMF, GRUB, kernel, the marker, panic=5): a hard limit well above. The
 * fallback boot runs Debian, cosd, the health check and cosctl status (fallback.test.ts: 90-130 s): lib/boots.ts's
 * BOOT_TIMEOUT_MS.
 */
const PANIC_BOOT_TIMEOUT_MS = 180_000;
/** One boot more than the scenario needs: a countdown one too long shows as a boot too many, not a hang. */
const MAX_BOOTS = TRIES + 2;

const NEW_VERSION = 'cosvm-new-2.0';
const OLD_VERSION = 'cosvm-old-1.0';
const PASSIVE_UUID = '5e1f0b0b-0000-4000-8000-00000000b0b1';

let disk: CosDisk;
let setupSeconds = 0;

test.before(async (t) => {
  t.timeout(40 * 60_000, 'building the package and the cOS disk (debootstrap on a cold cache)');
  const t0 = Date.now();
  const pkg = await agentPackage((l) => t.log(l));
  const enabled = await dockerfileEnabledUnits();
  const initrd = await panicInitrd();
  disk = await buildCosDisk({
    ...agentDiskOptions(pkg.path, enabled, fallbackReporter()),
    passiveUuid: PASSIVE_UUID,
    slotFiles: {
      active: [{ path: '/boot/initrd', content: initrd }, { path: '/usr/lib/os-release', content: osRelease(NEW_VERSION) }],
      passive: [{ path: '/usr/lib/os-release', content: osRelease(OLD_VERSION) }],
    },
  });
  setupSeconds = (Date.now() - t0) / 1000;
  t.log(`package ${path.basename(pkg.path)} (${pkg.built ?? 'up to date'}); panicking initrd ${initrd.length} bytes; disk ${disk.key} ready after ${setupSeconds.toFixed(1)} s`);
});

test.after.always(() => {
  killAllVms();
});

/** A boot of lib/boots.ts's kind, with the panicking initrd's marker. */
interface PanicBoot extends Boot {
  /** The panicking initrd's marker objects. */
  panic: Json[];
  /** Seconds from qemu start to the panic marker (the harness's stamp in the serial log), null without a marker. */
  panicAt: number | null;
}

/** The harness's stamp (`[  12.345] `, seconds since qemu start) of the first log line holding `tag`. */
async function stampOf(logPath: string, tag: string): Promise<number | null> {
  const line = (await readFile(logPath, 'utf8')).split('\n').find((l) => l.includes(tag));
  const m = line === undefined ? null : /^\[\s*([\d.]+)\]/.exec(line);
  return m?.[1] === undefined ? null : Number(m[1]);
}

/** lib/boots.ts's bootOnce, plus the panic marker, its stamp, and this scenario's own log line. */
async function panicBoot(t: ExecutionContext, image: string, work: string, n: number, timeoutMs: number): Promise<PanicBoot> {
  const b = await bootOnce(t, image, work, 'panic', n, { timeoutMs, log: false });
  const { vm, kind, boot } = b;
  const panic = markerJson(vm.serial, PANIC_MARKER);
  const panicAt = panic.length > 0 ? await stampOf(vm.logPath, `${PANIC_MARKER} {`) : null;
  const seconds = vm.durationMs / 1000;
  const ends = vm.timedOut ? 'HARD TIMEOUT' : vm.aborted !== null ? `aborted (${vm.aborted})` : kind.has('done') ? 'reporter power-off' : panic.length > 0 ? `panic reboot (marker at ${panicAt?.toFixed(1) ?? '?'} s, qemu gone ${panicAt === null ? '?' : (seconds - panicAt).toFixed(1)} s later)` : 'no report';
  t.log(`panic boot ${n}: ${seconds.toFixed(1)} s, ${panic.length > 0 ? 'initrd panic' : `${String(boot['label'] ?? '?')} (${String(boot['version'] ?? '?')})`}, ends: ${ends}, qemu exit ${vm.exitCode}; ${vm.logPath}`);
  return { ...b, panic, panicAt };
}

test('a new image whose initrd panics: 3 tries, each a kernel panic and reboot, then GRUB falls back to passive with upgrade_failure', async (t) => {
  t.timeout(TRIES * PANIC_BOOT_TIMEOUT_MS + 2 * BOOT_TIMEOUT_MS + 300_000);
  const t0 = Date.now();
  const work = await mkdtemp(path.join(tmpdir(), 'cosvm-panic-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const image = await cloneDisk(disk.path, path.join(work, 'disk.img'));
  const ids = { active: await slotImageIdentity(image, '/cOS/active.img'), passive: await slotImageIdentity(image, '/cOS/passive.img') };
  t.deepEqual(ids.passive, { label: 'COS_PASSIVE', uuid: PASSIVE_UUID });
  t.is(ids.active.label, 'COS_ACTIVE');
  t.not(ids.active.uuid, PASSIVE_UUID);

  // armed exactly as an upgrade arms it: the agent's own writes for COS_STATE/boot_assessment
  const armed = await writeGrubEnv(image, grubVerbs.arm(TRIES).assessment ?? {}, STATE_BOOT_ASSESSMENT);
  t.like(armed, { enable_boot_assessment: 'yes', boot_assessment_tries: String(TRIES), cos_agent_tries: String(TRIES) }, JSON.stringify(armed));
  t.not(armed['boot_assessment_tentative'], 'yes', JSON.stringify(armed));
  await writeStep(image, 'report');

  const boots: PanicBoot[] = [];
  const after: Array<Record<string, string>> = [];
  for (let n = 1; n <= MAX_BOOTS; n++) {
    const b = await panicBoot(t, image, work, n, n <= TRIES ? PANIC_BOOT_TIMEOUT_MS : BOOT_TIMEOUT_MS);
    boots.push(b);
    after.push(await readGrubEnv(image, STATE_BOOT_ASSESSMENT));
    // a boot that reached the reporter, or did not end by itself (timeout, GRUB prompt, qemu error), ends the scenario
    if (b.kind.has('done') || b.vm.timedOut || b.vm.aborted !== null || b.vm.exitCode !== 0) break;
  }
  const summary = boots.map((b, i) => ({
    boot: b.n,
    seconds: b.vm.durationMs / 1000,
    ran: b.panic.length > 0 ? 'initrd panic' : (b.boot['label'] ?? null),
    version: b.boot['version'] ?? null,
    panicMarkerAtSeconds: b.panicAt,
    panicCmdline: b.panic[0]?.['cmdline'] ?? null,
    guestResults: b.vm.results.map((r) => r['kind']),
    grub: b.grub,
    qemuExit: b.vm.exitCode,
    timedOut: b.vm.timedOut,
    assessmentOnDiskAfter: after[i],
    log: b.vm.logPath,
  }));
  t.log(JSON.stringify(summary, null, 1));
  // written before the assertions, so a failed run leaves it too
  const wall = (Date.now() - t0) / 1000;
  const lastBoot = boots.at(-1);
  const lastStatus = lastBoot === undefined ? null : statusOf(lastBoot);
  t.log(`scenario wall ${wall.toFixed(1)} s (+ setup ${setupSeconds.toFixed(1)} s); boots ${boots.map((b) => (b.vm.durationMs / 1000).toFixed(1)).join(' + ')} s; host load ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  await mkdir(logDir(), { recursive: true });
  await writeFile(path.join(logDir(), 'panic-fallback-summary.json'), `${JSON.stringify({ scenario: `initrd panic, fallback after ${TRIES} tries`, wallSeconds: wall, setupSeconds, boots: summary, status: lastStatus }, null, 2)}\n`);
  const all = boots.map((b) => b.diag).join('\n\n');
  t.is(boots.length, TRIES + 1, `${TRIES} panicking tries of active, then the fallback\n${all}`);

  // boots 1..TRIES: GRUB boots active (the default entry, no one-shot), its initrd panics, panic=5 reboots
  for (const [i, b] of boots.slice(0, TRIES).entries()) {
    const n = i + 1;
    const what = `boot ${n} (try ${n} of ${TRIES})`;
    t.is(b.grub['selected_entry'], '', `${what}: no one-shot entry\n${JSON.stringify(b.grub)}\n${b.report}`);
    t.is(b.panic.length, 1, `${what}: the panicking initrd ran (one ${PANIC_MARKER} line)\n${b.report}`);
    const p = obj(b.panic[0]);
    t.is(p['initrd'], 'panic', b.report);
    const cmdline = String(p['cmdline'] ?? '').split(/\s+/);
    for (const want of ['root=LABEL=COS_ACTIVE', 'cos-img/filename=/cOS/active.img', 'panic=5', 'rd.emergency=reboot', 'systemd.crash_reboot']) {
      t.true(cmdline.includes(want), `${what}: active's cmdline with extra_active_cmdline has ${want}\n${cmdline.join(' ')}`);
    }
    t.false(cmdline.includes('upgrade_failure'), `${what}: not the fallback\n${cmdline.join(' ')}`);
    t.deepEqual(b.vm.results, [], `${what}: never reached userspace: no COSVM-RESULT at all (no "boot")\n${b.report}`);
    t.false(/^COSVM-(INITRD|SWITCHROOT) /m.test(b.vm.serial), `${what}: the image's initrd is the panicking one, not the cOS-like one\n${b.report}`);
    t.false(b.vm.timedOut, `${what}: ended by the panic reboot, not the hard timeout\n${b.report}`);
    t.is(b.vm.aborted, null, b.report);
    t.is(b.vm.killedAtMarker, null, b.report);
    t.is(b.vm.exitCode, 0, `${what}: qemu left on the guest's reset (-no-reboot)\n${b.report}`);
    const env = after[i] ?? {};
    const envText = `COS_STATE/boot_assessment on disk after ${what}: ${JSON.stringify(env)}`;
    t.like(env, { enable_boot_assessment: 'yes', cos_agent_tries: String(TRIES) }, `still armed, nothing marked\n${envText}`);
    if (n < TRIES) {
      t.is(env['boot_assessment_tries'], String(TRIES - n), `GRUB counted down\n${envText}`);
      t.not(env['boot_assessment_tentative'], 'yes', `not yet the last try\n${envText}`);
    } else {
      t.is(env['boot_assessment_tentative'], 'yes', `the last try: GRUB saved tentative, the fallback is due\n${envText}`);
      t.is(env['boot_assessment_tries'], '1', envText);
    }
  }

  // boot TRIES + 1: GRUB falls back to passive with upgrade_failure; the agent there names the failed upgrade
  const fb = boots[TRIES];
  if (fb === undefined) return;
  t.is(fb.grub['selected_entry'], '', `the fallback is boot assessment's, not a one-shot\n${JSON.stringify(fb.grub)}`);
  t.deepEqual(fb.panic, [], fb.diag);
  t.is(fb.boot['label'], 'COS_PASSIVE', fb.diag);
  t.is(fb.boot['version'], OLD_VERSION, fb.diag);
  t.is(fb.boot['upgradeFailure'], true, `upgrade_failure on the fallback's cmdline\n${fb.diag}`);
  t.like(obj(fb.boot['assessment']), { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes', cos_agent_tries: String(TRIES) }, `the env block as GRUB left it\n${fb.diag}`);
  t.is(fb.kind.get('status')?.['exit'], 0, `cosctl status --json\n${fb.diag}`);
  const st = statusOf(fb);
  t.is(fb.status?.['kind'], 'CosHost', fb.diag);
  t.is(st['bootedFrom'], 'passive', `${JSON.stringify(st)}\n${fb.diag}`);
  t.is(obj(st['booted'])['slot'], 'passive', JSON.stringify(st['booted']));
  t.is(st['upgradeFailure'], true, JSON.stringify(st));
  const fu = obj(st['failedUpgrade']);
  const fuText = `status.failedUpgrade\n${JSON.stringify(st['failedUpgrade'])}`;
  t.is(fu['slot'], 'active', fuText);
  t.is(fu['version'], NEW_VERSION, fuText);
  t.is(fu['uuid'], ids.active.uuid, fuText);
  t.is(fu['triesUsed'], TRIES, `triesUsed = the tries armed (cos_agent_tries)\n${fuText}`);
  t.is(obj(obj(st['slots'])['passive'])['version'], OLD_VERSION, JSON.stringify(st['slots']));
  t.like(obj(st['nextBoot']), { entry: 'fallback', slot: 'passive', oneShot: false, upgradeFailure: true }, `status.nextBoot\n${JSON.stringify(st['nextBoot'])}`);
  t.deepEqual(st['bootAssessment'], { enabled: true, tentative: true, triesLeft: 0 }, JSON.stringify(st['bootAssessment']));
  t.is(st['rollback'], null, `status.rollback: the image that failed is not one to roll back to\n${JSON.stringify(st['rollback'])}`);
  const hc = obj(fb.kind.get('healthcheck')?.['healthcheck']);
  t.is(hc['result'], 'success', `the health check of passive\n${fb.diag}`);
  t.is(hc['execMainStatus'], 0, fb.diag);
  t.is(obj(fb.kind.get('done'))['failed'], '', `no failed units on passive\n${fb.diag}`);
  t.true(fb.vm.exitCode === 0 && !fb.vm.timedOut, `the guest powered off by itself\n${fb.report}`);
  const last = after[TRIES] ?? {};
  t.log(`COS_STATE/boot_assessment after the fallback boot: ${JSON.stringify(last)}; status.bootAssessment ${JSON.stringify(st['bootAssessment'])}; nextBoot ${JSON.stringify(st['nextBoot'])}; failedUpgrade ${JSON.stringify(st['failedUpgrade'])}`);
  t.is(last['cos_agent_tries'], String(TRIES), JSON.stringify(last));
});
