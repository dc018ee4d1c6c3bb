/**
 * Crash injection at every named step of an upgrade (issue 9): the real cosctl kills itself with SIGKILL, as a power
 * cut would stop it, as each step of UPGRADE_STEPS starts (AGENT_TEST_CRASH_AT=step:NAME) and half-way through the
 * pull (pull:50%: a half-unpacked tree), for a system upgrade, a recovery upgrade to an img and to a squashfs.
 * (The steps inside the slot switch itself, and the swap of `rollback --permanent`, are in crash.test.ts.)
 *
 * After each crash:
 *   - both GRUB entries boot per the on-disk state: active.img and passive.img carry their labels and pass e2fsck,
 *     the recovery image is intact, and GRUB, which replays no ext4 journal, reads the slot images, the GRUB env
 *     blocks and the recovery image as the kernel does (helpers/grub-view.ts: what a power cut there would leave);
 *   - once the journal is written (commit-switch and later), boot assessment is armed for the new active already, so a
 *     reboot right there boots it tentatively, with the fallback behind it;
 *   - the next run finishes (or discards) what the crash left: no mount, loop device, transition or journal file,
 *     scratch tree or read-write COS_STATE remains, the records name the images in the slots, the running image is in
 *     a slot, and the upgrade succeeds: the slot holds the new version.
 * The count of points survived is the count of these tests that pass (the README's reliability section).
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { CosHost } from '../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { cosctl, cosStatus, grubList, imageCat, imageLabel, mountOptions, testHost } from '../helpers/cosctl.ts';
import { startBus, startCosd } from '../helpers/dbus.ts';
import { grubSeesKernel, grubSeesRecovery } from '../helpers/grub-view.ts';

const run = promisify(execFile);
let reg: TestRegistry;

test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/os:v1', '1.0.0');
  // A second, incompressible 4 MiB layer: the pull reports its bytes in many chunks, so pull:50% stops mid-layer.
  await pushOsImage(reg, 'cos/os:v2', '2.0.0', { extraLayers: [[{ name: 'usr/lib/payload.bin', content: randomBytes(4 << 20) }]] });
});
test.after.always(async () => {
  await reg?.stop();
});

const image = (tag: string): string => `${reg.host}/cos/os:${tag}`;

/** UPGRADE_STEPS of src/actions/upgrade/upgrade.ts, in order (a step renamed or added there fails the first test). */
const SYSTEM_POINTS = [
  'step:config', 'step:lock', 'step:recover', 'step:record-start', 'step:read-host', 'step:resolve', 'step:already-staged', 'step:estimate',
  'step:verify', 'step:mount-slot-partition', 'step:plan', 'step:clean-leftovers', 'step:prepare-transition',
  'step:skeleton', 'step:hook:before-upgrade', 'step:pull', 'pull:50%', 'step:hook:after-upgrade-chroot',
  'step:read-os-release', 'step:hook:after-upgrade', 'step:seal', 'step:commit-switch', 'step:grub', 'step:record-state',
  'step:read-back',
] as const;
/** Points from which the switch is committed (its journal written): the next run finishes it. */
const COMMITTED = new Set(['step:grub', 'step:record-state', 'step:read-back']);
/**
 * The recovery upgrade runs the same steps (no GRUB step, no journal); its points are those where what is on
 * COS_RECOVERY / COS_PERSISTENT differs: the transition prepared, half pulled, pulled with the binds made, sealed,
 * about to switch, switched and not yet recorded.
 */
const RECOVERY_POINTS = [
  'step:skeleton', 'pull:50%', 'step:hook:after-upgrade-chroot', 'step:seal', 'step:commit-switch', 'step:record-state',
] as const;

test('the crash points name every step of the upgrade, in order (a run reports them through --verbose)', async (t) => {
  const host = await testHost(t);
  const r = await cosctl(host, ['--verbose', 'upgrade', '--no-verify', '--image', image('v1')]);
  t.is(r.code, 0, r.stderr);
  const steps = [...r.stderr.matchAll(/ step=([a-z:-]+)/g)].map((m) => `step:${m[1]}`);
  t.deepEqual(steps, SYSTEM_POINTS.filter((p) => p.startsWith('step:')));
});

/** Killed at `point`: it must die of SIGKILL, not finish. */
async function crashAt(t: ExecutionContext, host: CosHost, args: string[], point: string): Promise<void> {
  const r = await cosctl(host, args, { AGENT_TEST_CRASH_AT: point });
  t.is(r.signal ?? null, 'SIGKILL', `${args.join(' ')} was killed at ${point} (code ${r.code}, stderr: ${r.stderr.slice(-300)})`);
}

/** Both GRUB entries find an image with their label that passes fsck (a committed journal is finished next run). */
async function entriesBoot(t: ExecutionContext, host: CosHost, what: string): Promise<void> {
  await grubSeesKernel(t, host, what);
  const names = await readdir(host.statePath('cOS'));
  t.true(names.includes('active.img') && names.includes('passive.img'), `${what}: both slot files (${names.join(' ')})`);
  t.is(await imageLabel(host.statePath('cOS/active.img')), 'COS_ACTIVE', `${what}: the default entry's image`);
  if (!names.includes('switch.journal')) t.is(await imageLabel(host.statePath('cOS/passive.img')), 'COS_PASSIVE', `${what}: the fallback's image`);
  for (const f of ['cOS/active.img', 'cOS/passive.img']) await run('e2fsck', ['-fn', host.statePath(f)]);
}

/** Nothing left, COS_STATE read-only, records agree with the images, the running image in its slot. */
async function healthy(t: ExecutionContext, host: CosHost, baseline: Awaited<ReturnType<CosHost['leaks']>>, what: string): Promise<void> {
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img'], `${what}: only the slot images`);
  t.deepEqual(await host.leaks(), baseline, `${what}: no mount or loop device left`);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'), `${what}: COS_STATE read-only`);
  t.false(await stat(`${host.root}/usr/local/.cos-agent/recovery-tree`).then(() => true, () => false), `${what}: no scratch tree`);
  const doc = await cosStatus(host);
  t.is(doc.status.booted?.version, '0.8.10', `${what}: the running image is in a slot`);
  for (const s of ['active', 'passive'] as const) t.not(doc.status.slots[s].record, 'unknown', `${what}: the record of ${s} names its image`);
}

for (const point of SYSTEM_POINTS) {
  test.serial(`a system upgrade killed at ${point}: both entries boot, the next run cleans up and upgrades`, async (t) => {
    const host = await testHost(t);
    const baseline = await host.leaks();
    const args = ['upgrade', '--no-verify', '--image', image('v2')];
    await crashAt(t, host, args, point);
    await entriesBoot(t, host, `after the crash at ${point}`);
    const assessment = await grubList(host.statePath('boot_assessment')).catch(() => new Map<string, string>());
    if (COMMITTED.has(point) || point === 'step:commit-switch') {
      // commit-switch starts before the journal: only the committed points are sure to have the switch done.
      if (COMMITTED.has(point)) {
        t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/, 'the new image is active');
        t.is(assessment.get('enable_boot_assessment'), 'yes', 'and its next boot is assessed, before any GRUB step ran');
      }
    } else {
      t.not(assessment.get('enable_boot_assessment'), 'yes', 'nothing armed before the commit');
      t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="0\.8\.10"/, 'active is untouched');
    }

    const next = await cosctl(host, args);
    t.is(next.code, 0, `the next run at ${point}: ${next.stderr}`);
    t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/, 'the new image is active');
    t.regex(await imageCat(host.statePath('cOS/passive.img'), '/etc/os-release'), /VERSION="0\.8\.10"/, 'the running image is the fallback');
    t.is((await grubList(host.statePath('boot_assessment'))).get('enable_boot_assessment'), 'yes', 'its first boot is assessed');
    const doc = await cosStatus(host);
    t.is(doc.status.nextBoot.slot, 'active', 'GRUB boots the new image next');
    await healthy(t, host, baseline, `after the crash at ${point} and the next run`);
  });
}

for (const flavour of ['img', 'squashfs'] as const) {
  for (const point of RECOVERY_POINTS) {
    test.serial(`a recovery upgrade (${flavour}) killed at ${point}: the recovery image stays whole, the next run cleans up and upgrades`, async (t) => {
      // COS_RECOVERY sized (144 MiB: 4 KiB blocks leave less free than 1 KiB ones did), as on a real host, for the recovery image plus a transition image of the slot size (48 MiB
      // here, plus margin): killed after the switch but before the records, the next run cannot tell the slot already
      // holds the image (a recovery upgrade has no journal) and stages it again next to it.
      const host = await testHost(t, { recovery: flavour, recoveryMiB: 144 });
      const baseline = await host.leaks();
      const file = flavour === 'img' ? 'recovery.img' : 'recovery.squashfs';
      const args = ['upgrade', '--recovery', '--no-verify', '--image', image('v2')];
      await crashAt(t, host, args, point);
      await grubSeesRecovery(t, host, file, `after the crash at ${point}`);
      const left = await host.peek('COS_RECOVERY', async (dir) => (await readdir(`${dir}/cOS`)).sort());
      t.true(left.includes(file), `the recovery image has its name after the crash (${left.join(' ')})`);
      const recovery = (): Promise<string> => host.peek('COS_RECOVERY', (dir) => flavour === 'img'
        ? imageCat(`${dir}/cOS/${file}`, '/etc/os-release')
        : run('unsquashfs', ['-cat', `${dir}/cOS/${file}`, 'etc/os-release']).then((r) => r.stdout));
      t.regex(await recovery(), /VERSION="(0\.8\.8|2\.0\.0)"/, 'and it is a whole image, old or new');
      await entriesBoot(t, host, `after the crash at ${point}`);

      const next = await cosctl(host, args);
      t.is(next.code, 0, `the next run at ${point}: ${next.stderr}`);
      t.deepEqual(await host.peek('COS_RECOVERY', async (dir) => (await readdir(`${dir}/cOS`)).sort()), [file], 'only the recovery image on COS_RECOVERY');
      t.regex(await recovery(), /VERSION="2\.0\.0"/, 'the recovery slot holds the new image');
      await healthy(t, host, baseline, `after the crash at ${point} and the next run`);
    });
  }
}

test.serial('a system upgrade killed twice in staging (half-unpacked, then sealing), then a clean run', async (t) => {
  const host = await testHost(t);
  const baseline = await host.leaks();
  const args = ['upgrade', '--no-verify', '--image', image('v2')];
  await crashAt(t, host, args, 'pull:50%');
  await crashAt(t, host, args, 'step:seal');
  await entriesBoot(t, host, 'after two crashes');
  const next = await cosctl(host, args);
  t.is(next.code, 0, next.stderr);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  await healthy(t, host, baseline, 'after two crashes and a clean run');
});

test.serial('three crashes in a row (half-unpacked, then mid-switch, then before the GRUB writes), then a clean run', async (t) => {
  const host = await testHost(t);
  const baseline = await host.leaks();
  const args = ['upgrade', '--no-verify', '--image', image('v2')];
  await crashAt(t, host, args, 'pull:50%');
  await crashAt(t, host, args, 'switch:2');
  await entriesBoot(t, host, 'after two crashes');
  // The third run finishes the second's switch first; it then has v2 in active already and nothing to stage, so it is
  // forced to stage again, and is killed before its own GRUB writes.
  await crashAt(t, host, [...args, '--force'], 'step:grub');
  await entriesBoot(t, host, 'after three crashes');
  t.is((await grubList(host.statePath('boot_assessment'))).get('enable_boot_assessment'), 'yes', 'armed before each switch');
  const next = await cosctl(host, args);
  t.is(next.code, 0, next.stderr);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  await healthy(t, host, baseline, 'after three crashes and a clean run');
});


/**
 * The record of an upgrade a power cut stopped: cosd's start (which recovers under the lock, as every action does)
 * finds the running-upgrade marker and records it as the last upgrade, so status says the upgrade was interrupted
 * (before the switch: a failure with code INTERRUPTED, the slots as they were) or finished it (after the commit: a
 * success that names the step it was cut at), never the record of an older upgrade as if nothing had happened.
 */
for (const [point, expected] of [
  ['step:pull', { result: 'failure', code: 'INTERRUPTED', interruptedAt: 'pull', active: '0.8.10' }],
  ['step:grub', { result: 'success', code: null, interruptedAt: 'grub', active: '2.0.0' }],
] as const) {
  test.serial(`an upgrade killed at ${point}: cosd's start records it as interrupted (${expected.result}), and status shows it`, async (t) => {
    const host = await testHost(t);
    const args = ['upgrade', '--no-verify', '--image', image('v2')];
    await crashAt(t, host, args, point);
    const markers = ['run/cos-agent/upgrade-running.json', 'usr/local/.cos-agent/upgrade-running.json'];
    const present = async (): Promise<boolean[]> => Promise.all(markers.map((m) => stat(`${host.root}/${m}`).then(() => true, () => false)));
    t.deepEqual(await present(), [true, true], 'the killed run left its running marker (this boot and COS_PERSISTENT)');

    const bus = await startBus();
    t.teardown(() => bus.stop());
    const cosd = await startCosd(bus, host);
    t.teardown(async () => { await cosd.stop(); });
    const doc = await cosStatus(host);
    const last = doc.status.lastUpgrade;
    t.like(last ?? {}, { result: expected.result, code: expected.code, interruptedAt: expected.interruptedAt, target: 'system', image: image('v2') }, JSON.stringify(last));
    if (expected.result === 'failure') t.regex(last?.error ?? '', /interrupted \(power cut or crash\) at step pull, before its slot switch/);
    else t.regex((last?.warnings ?? []).join('\n'), /after its slot switch was committed: the next run of the agent finished it/);
    t.regex(last?.imageDigest ?? '', /^sha256:[0-9a-f]{64}$/, 'the digest it had resolved');
    t.is(doc.status.slots.active.version, expected.active, 'status shows the slots as they are');
    t.deepEqual(await present(), [false, false], 'the marker is gone once recorded');
    await cosd.stop();

    // the next upgrade: after the undone one, a real upgrade recorded as itself; after the finished one, nothing to
    // stage (the image is in active), and the record stays the finished upgrade's
    const next = await cosctl(host, args);
    t.is(next.code, 0, next.stderr);
    const after = (await cosStatus(host)).status.lastUpgrade;
    if (expected.result === 'failure') {
      t.like(after ?? {}, { result: 'success', interruptedAt: undefined }, JSON.stringify(after));
      t.not(after?.transaction, last?.transaction);
    } else {
      t.is(after?.transaction, last?.transaction, JSON.stringify(after));
    }
    t.deepEqual(await present(), [false, false], 'a finished run leaves no marker');
  });
}
