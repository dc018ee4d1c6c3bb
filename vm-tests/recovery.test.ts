/**
 * Scenario 6: recovery. Boot the recovery entry (the squashfs live system on COS_RECOVERY), stage active from there,
 * boot it, upgrade the recovery squashfs, and boot the new recovery.
 *
 * The disk and the signed derivative image are the upgrade scenarios' (lib/upgrade-image.ts; the guest's
 * /etc/cos/config asks for uncompressed squashfs images, as the disk builder makes them, because xz takes many minutes
 * under TCG). GRUB's recovery entry is chosen as a user picks it from the menu, with a one-shot
 * `next_entry=recovery` in /oem/grubenv (written on the raw disk between boots).
 *
 * Boot 1 (recovery, cosvm-1.0): `cosctl upgrade --recovery` is refused with NOT_SUPPORTED (exit 5): the recovery
 * squashfs is the running system, and the running OS never leaves its slot (the brief's first rule; elemental would
 * replace the running file, cos-layout.md 2.7); `cosctl upgrade --image <v2>` through cosd stages active from
 * recovery (2.8). Status: booted from recovery, the recovery slot untouched, active.img holds the new image, GRUB
 * boots it next. Boot 2 (the default entry): the new active boots, its checks pass, and from there
 * `cosctl upgrade --recovery --image <v2>` builds a new recovery squashfs in the guest. Boot 3 (next_entry=recovery
 * again): the new recovery squashfs boots (cosvm-2.0), and its status agrees.
 */
import './lib/timing.ts';
import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { BOOT_TIMEOUT_MS, bootOnce, obj, statusOf, type Boot } from './lib/boots.ts';
import { cloneDisk } from './lib/disk.ts';
import { upgradeStep, writeStep } from './lib/fallback.ts';
import { OEM_GRUBENV, readGrubEnv, writeGrubEnv } from './lib/grubenv.ts';
import { logDir } from './lib/qemu.ts';
import { NEW_VERSION, OLD_VERSION, useUpgradeScenario } from './lib/upgrade-image.ts';

const RECOVERY_IMG = '/run/initramfs/live/cOS/recovery.squashfs';

const scenario = useUpgradeScenario(test);

test('from the recovery entry: stage active (the recovery upgrade of the running recovery image is refused); from the new active: upgrade the recovery squashfs; both boot the new image', async (t) => {
  const { disk, v2, setupSeconds } = scenario();
  t.timeout(3 * BOOT_TIMEOUT_MS + 900_000);
  const t0 = Date.now();
  const work = await mkdtemp(path.join(tmpdir(), 'cosvm-recovery-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const image = await cloneDisk(disk.path, path.join(work, 'disk.img'));

  // boot 1: the recovery entry; a recovery upgrade (refused: it runs from that image), then the system upgrade
  await writeGrubEnv(image, { next_entry: 'recovery' }, OEM_GRUBENV);
  await writeStep(image, [upgradeStep(v2.guestRef, { recovery: true }), upgradeStep(v2.guestRef)]);
  const b1 = await bootOnce(t, image, work, 'recovery', 1, { timeoutMs: BOOT_TIMEOUT_MS + 900_000 });
  const ups1 = b1.vm.results.filter((r) => r['kind'] === 'cosctl');
  const show = (ups: Array<Record<string, unknown>>): string => ups.map((u) => `${String(u['args'])}: exit ${String(u['exit'])}\n${String(u['stdout'])}\n${String(u['stderr'])}`).join('\n');
  t.is(b1.grub['selected_entry'], 'recovery', `GRUB's one-shot entry\n${JSON.stringify(b1.grub)}`);
  t.is(b1.boot['img'], RECOVERY_IMG, `the recovery squashfs runs\n${b1.diag}`);
  t.is(b1.boot['version'], OLD_VERSION, b1.diag);
  t.deepEqual(ups1.map((u) => [u['args'], u['exit']]), [[`upgrade --image ${v2.guestRef} --recovery`, 5], [`upgrade --image ${v2.guestRef}`, 0]], `from recovery: the recovery upgrade refused (NOT_SUPPORTED, exit 5), the system upgrade done\n${show(ups1)}\n${b1.diag}`);
  t.regex(String(ups1[0]?.['stderr'] ?? ''), /recovery/, 'the refusal names the reason');
  t.is(b1.kind.get('status')?.['exit'], 0, b1.diag);
  const s1 = statusOf(b1);
  t.is(s1['bootedFrom'], 'recovery', JSON.stringify(s1));
  t.like(obj(obj(s1['slots'])['recovery']), { version: OLD_VERSION, fs: 'squashfs' }, `the running recovery image stays in its slot\n${JSON.stringify(obj(s1['slots'])['recovery'])}`);
  t.like(obj(obj(s1['slots'])['active']), { version: NEW_VERSION, fs: 'ext2', imageDigest: v2.digest, verification: 'verified', label: 'COS_ACTIVE' }, `active.img holds the new image\n${JSON.stringify(obj(s1['slots'])['active'])}`);
  t.like(obj(s1['nextBoot']), { entry: 'cos', slot: 'active', oneShot: false }, `GRUB boots the new active next\n${JSON.stringify(s1['nextBoot'])}`);
  t.is((await readGrubEnv(image, OEM_GRUBENV))['next_entry'] ?? '', '', 'GRUB consumed the one-shot entry');
  if (ups1[1]?.['exit'] !== 0) return;

  // boot 2: the default entry boots the active image staged from recovery; from there, the recovery upgrade
  await writeStep(image, upgradeStep(v2.guestRef, { recovery: true }));
  const b2 = await bootOnce(t, image, work, 'recovery', 2, { timeoutMs: BOOT_TIMEOUT_MS + 900_000 });
  const ups2 = b2.vm.results.filter((r) => r['kind'] === 'cosctl');
  t.is(b2.boot['label'], 'COS_ACTIVE', b2.diag);
  t.is(b2.boot['version'], NEW_VERSION, `the active image staged from recovery boots\n${b2.diag}`);
  t.is(obj(b2.kind.get('healthcheck')?.['healthcheck'])['result'], 'success', b2.diag);
  t.deepEqual(ups2.map((u) => [u['args'], u['exit']]), [[`upgrade --image ${v2.guestRef} --recovery`, 0]], `the recovery upgrade from active\n${show(ups2)}\n${b2.diag}`);
  const s2 = statusOf(b2);
  t.is(s2['bootedFrom'], 'active', JSON.stringify(s2));
  t.like(obj(s2['booted']), { slot: 'active', version: NEW_VERSION, imageDigest: v2.digest }, JSON.stringify(s2['booted']));
  t.like(obj(obj(s2['slots'])['recovery']), { version: NEW_VERSION, fs: 'squashfs', imageDigest: v2.digest, verification: 'verified' }, `recovery.squashfs holds the new image\n${JSON.stringify(obj(s2['slots'])['recovery'])}`);
  t.like(obj(s2['nextBoot']), { entry: 'cos', slot: 'active' }, JSON.stringify(s2['nextBoot']));
  t.is(obj(b2.kind.get('done'))['failed'], '', b2.diag);
  if (ups2[0]?.['exit'] !== 0) return;

  // boot 3: the recovery entry again: the new squashfs boots
  await writeStep(image, 'report');
  await writeGrubEnv(image, { next_entry: 'recovery' }, OEM_GRUBENV);
  const b3: Boot = await bootOnce(t, image, work, 'recovery', 3);
  t.is(b3.grub['selected_entry'], 'recovery', JSON.stringify(b3.grub));
  t.is(b3.boot['img'], RECOVERY_IMG, b3.diag);
  t.is(b3.boot['version'], NEW_VERSION, `the upgraded recovery squashfs boots\n${b3.diag}`);
  const s3 = statusOf(b3);
  t.is(s3['bootedFrom'], 'recovery', JSON.stringify(s3));
  t.like(obj(obj(s3['slots'])['recovery']), { version: NEW_VERSION, imageDigest: v2.digest }, JSON.stringify(obj(s3['slots'])['recovery']));
  t.like(obj(s3['nextBoot']), { entry: 'cos', slot: 'active' }, JSON.stringify(s3['nextBoot']));
  t.is(obj(b3.kind.get('done'))['failed'], '', b3.diag);

  const upgrades = [...ups1, ...ups2];
  const wall = (Date.now() - t0) / 1000;
  const boots = [b1, b2, b3];
  t.log(`scenario wall ${wall.toFixed(1)} s (+ setup ${setupSeconds.toFixed(1)} s); boots ${boots.map((b) => (b.vm.durationMs / 1000).toFixed(1)).join(' + ')} s; upgrades (recovery refused, system from recovery, recovery from active) ${upgrades.map((u) => (Number(u['uptime']) - Number(u['startUptime'])).toFixed(1)).join(' s, ')} s; host load ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  await mkdir(logDir(), { recursive: true });
  await writeFile(path.join(logDir(), 'recovery-summary.json'), `${JSON.stringify({ scenario: 'recovery', wallSeconds: wall, setupSeconds, boots: boots.map((b) => ({ boot: b.n, seconds: b.vm.durationMs / 1000, img: b.boot['img'], version: b.boot['version'], log: b.vm.logPath })), upgradeSeconds: upgrades.map((u) => Number(u['uptime']) - Number(u['startUptime'])) }, null, 2)}\n`);
});
