/**
 * Issue 8, defects 1-4, on a cOS host on loop devices through the real cosctl: the running OS never leaves a slot,
 * what status says boots next is what GRUB boots, staged state comes from the disk, and what happens after the point
 * of no return is recorded or surfaced. Each asserts on disk bytes and on the status document.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { open, readFile, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import type { CosHost } from '../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { cosctl, cosStatus, testHost, grubList, imageCat, mountOptions } from '../helpers/cosctl.ts';
import type { HostStatusDocument } from '../../src/model/host.ts';

const run = promisify(execFile);
let reg: TestRegistry;
const digests: Record<string, string> = {};

test.before(async () => {
  reg = await startRegistry();
  digests.v1 = await pushOsImage(reg, 'cos/os:v1', '1.0.0');
  digests.v2 = await pushOsImage(reg, 'cos/os:v2', '2.0.0');
});
test.after.always(async () => {
  await reg?.stop();
});

const withHost = testHost;
const status = (host: CosHost): Promise<HostStatusDocument> => cosStatus(host);

const ino = async (host: CosHost, f: string): Promise<number> => (await stat(host.statePath(f))).ino;
const oemEnv = (host: CosHost): Promise<Map<string, string>> => grubList(`${host.root}/oem/grubenv`).catch(() => new Map());
const upgrade = (host: CosHost, tag: string, ...extra: string[]): ReturnType<typeof cosctl> =>
  cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:${tag}`, ...extra]);

test.serial('#1 two upgrades before a reboot: the second replaces active only; the running image stays in passive and is the fallback', async (t) => {
  const host = await withHost(t);
  const running = await ino(host, 'cOS/active.img');
  t.is((await upgrade(host, 'v2')).code, 0);
  t.is(await ino(host, 'cOS/passive.img'), running, 'the first upgrade rotated the running image to passive');

  const second = await upgrade(host, 'v1', '--force');
  t.is(second.code, 0, second.stderr);
  t.regex(second.stdout, /Passive kept: passive holds the running image/);
  t.is(await ino(host, 'cOS/passive.img'), running, 'the running image was not rotated away');
  t.regex(await imageCat(host.statePath('cOS/passive.img'), '/etc/os-release'), /VERSION="0\.8\.10"/);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="1\.0\.0"/);

  // state.yaml: passive is the running image (it booted: good), active the never-booted v1 (staged).
  const state = parseYaml(await readFile(host.statePath('state.yaml'), 'utf8')) as { state: Record<string, Record<string, unknown>> };
  t.is(state.state.active?.digest, digests.v1);
  t.is(state.state.active?.['upgrade-result'], 'staged');
  t.is(state.state.passive?.['upgrade-result'], 'good');
  t.not(state.state.passive?.digest, digests.v2, 'passive is not recorded as the never-booted v2');

  const doc = await status(host);
  t.is(doc.status.booted?.slot, 'passive');
  t.is(doc.status.booted?.version, '0.8.10');
  t.is(doc.status.staged?.slot, 'active');
  t.is(doc.status.staged?.imageDigest, digests.v1);
  t.is(doc.status.rollback?.slot, 'passive', 'a rollback (or a failed boot) runs the running image again');
  t.like(doc.status.nextBoot, { entry: 'cos', slot: 'active', oneShot: false });
  t.deepEqual(doc.status.bootAssessment, { enabled: true, tentative: false, triesLeft: 3 }, 'armed (3 tries): a failed v1 falls back to the running image');
});

test.serial('#2 a pending one-shot rollback does not outlive a later upgrade, nor a permanent rollback', async (t) => {
  const host = await withHost(t);
  t.is((await cosctl(host, ['rollback'])).code, 0);
  t.is((await oemEnv(host)).get('next_entry'), 'fallback');

  const r = await upgrade(host, 'v2');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /Reboot to run it\./);
  t.false((await oemEnv(host)).has('next_entry'), 'the upgrade replaced the pending one-shot choice');
  const doc = await status(host);
  t.like(doc.status.nextBoot, { entry: 'cos', slot: 'active', oneShot: false, reason: 'default' });
  t.is(doc.status.staged?.imageDigest, digests.v2);

  // A one-shot rollback after the upgrade discards the staged upgrade for the next boot: the running image boots.
  t.is((await cosctl(host, ['rollback'])).code, 0);
  const rolled = await status(host);
  t.is(rolled.status.staged, null, 'a one-shot rollback clears staged');
  t.like(rolled.status.nextBoot, { entry: 'fallback', slot: 'passive', oneShot: true });
  t.is(rolled.status.booted?.slot, 'passive');
});

test.serial('#2 a permanent rollback replaces a pending one-shot choice', async (t) => {
  const host = await withHost(t);
  const [active, passive] = [await ino(host, 'cOS/active.img'), await ino(host, 'cOS/passive.img')];
  t.is((await cosctl(host, ['rollback'])).code, 0);
  const r = await cosctl(host, ['rollback', '--permanent']);
  t.is(r.code, 0, r.stderr);
  t.false((await oemEnv(host)).has('next_entry'));
  t.is(await ino(host, 'cOS/active.img'), passive);
  t.is(await ino(host, 'cOS/passive.img'), active);
  const doc = await status(host);
  t.like(doc.status.nextBoot, { entry: 'cos', slot: 'active', oneShot: false });
  t.is(doc.status.booted?.slot, 'passive', 'the running image (the former active) is in passive now');
  t.is(doc.status.booted?.version, '0.8.10');

  // And an upgrade after it keeps the running image (now passive) and replaces active.
  t.is((await upgrade(host, 'v2')).code, 0);
  t.is(await ino(host, 'cOS/passive.img'), active);
  t.like((await status(host)).status.nextBoot, { slot: 'active', oneShot: false });
});

test.serial('#3 a failed attempt does not erase a staged upgrade from status', async (t) => {
  const host = await withHost(t);
  t.is((await upgrade(host, 'v2')).code, 0);
  const before = await status(host);
  for (const [tag, code] of [['missing', 12], ['v2!', 10]] as const) {
    const r = await upgrade(host, tag);
    t.is(r.code, code, r.stderr);
    const doc = await status(host);
    t.is(doc.status.staged?.slot, 'active', `after a failed ${tag}`);
    t.is(doc.status.staged?.imageDigest, digests.v2);
    t.is(doc.status.booted?.slot, 'passive', 'the never-booted image is not reported as running');
    t.is(doc.status.booted?.version, '0.8.10');
    t.deepEqual(doc.status.nextBoot, before.status.nextBoot);
    t.is(doc.status.lastUpgrade?.result, 'failure', 'the failed attempt is still the last upgrade on record');
  }
});

test.serial('#4 a GRUB variable that cannot be written after the switch is a warning, and status says truthfully what boots next', async (t) => {
  const host = await withHost(t);
  t.is((await cosctl(host, ['rollback'])).code, 0);
  const grubenv = `${host.root}/oem/grubenv`;
  await run('chattr', ['+i', grubenv]);
  t.teardown(() => run('chattr', ['-i', grubenv]).then(() => undefined, () => undefined));

  const r = await upgrade(host, 'v2');
  t.is(r.code, 0, 'the slot is switched: the upgrade succeeded');
  t.regex(r.stderr, /cosctl: warning: setting the GRUB variables .*grubenv/);
  t.regex(r.stdout, /The next boot does NOT run it: GRUB boots passive next/);
  t.notRegex(r.stdout, /Reboot to run it/);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);

  const doc = await status(host);
  t.like(doc.status.nextBoot, { entry: 'fallback', slot: 'passive', oneShot: true, then: { entry: 'cos', slot: 'active' } });
  t.is(doc.status.staged, null, 'the next boot is not the new image');
  t.is(doc.status.lastUpgrade?.result, 'success');
  t.true((doc.status.lastUpgrade?.warnings ?? []).some((w) => /grubenv/.test(w)));
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));
});

test.serial('#4 a state.yaml that cannot be written after the switch: status derives the slots from the images', async (t) => {
  const host = await withHost(t);
  t.is((await upgrade(host, 'v1')).code, 0);
  const file = host.statePath('state.yaml');
  await run('mount', ['-o', 'remount,rw', `${host.root}/run/initramfs/cos-state`]);
  await run('chattr', ['+i', file]);
  await run('mount', ['-o', 'remount,ro', `${host.root}/run/initramfs/cos-state`]);
  t.teardown(async () => {
    await run('mount', ['-o', 'remount,rw', `${host.root}/run/initramfs/cos-state`]).catch(() => undefined);
    await run('chattr', ['-i', file]).catch(() => undefined);
  });
  const recorded = await readFile(file, 'utf8');

  const r = await upgrade(host, 'v2', '--force');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /cosctl: warning: recording the slots in .*state\.yaml/);
  t.is(await readFile(file, 'utf8'), recorded, 'the record still names v1 for active');

  const doc = await status(host);
  const active = doc.status.slots.active;
  t.is(active.record, 'unknown', 'the record of active names another image');
  t.is(active.imageDigest, null, 'the stale digest (v1) is not shown for the v2 image');
  t.is(active.version, '2.0.0', 'read from the image itself');
  t.is(doc.status.slots.passive.record, 'own');
  t.is(doc.status.booted?.slot, 'passive');
  t.is(doc.status.booted?.version, '0.8.10');
  t.is(doc.status.staged?.slot, 'active', 'an image the records do not know never booted');
});

test.serial('#4 COS_STATE that cannot go back read-only after the upgrade: the upgrade stands and says so', async (t) => {
  const host = await withHost(t);
  const mnt = `${host.root}/run/initramfs/cos-state`;
  // Hold a file open for writing on COS_STATE as soon as the upgrade has it read-write: remount ro then fails (EBUSY).
  const child = upgrade(host, 'v2');
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  const deadline = Date.now() + 60_000;
  while (fh === undefined && Date.now() < deadline) {
    if ((await mountOptions(mnt)).includes('rw')) fh = await open(`${mnt}/held-open`, 'w');
    else await new Promise((res) => setTimeout(res, 20));
  }
  t.truthy(fh, 'COS_STATE went read-write during the upgrade');
  const r = await child;
  await fh?.close();
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /cosctl: warning: .*read-only/);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  const doc = await status(host);
  t.is(doc.status.lastUpgrade?.result, 'success');
  t.true((doc.status.lastUpgrade?.warnings ?? []).some((w) => /read-only/.test(w)), 'the record carries the warning');
  await run('rm', ['-f', `${mnt}/held-open`]);
  await run('mount', ['-o', 'remount,ro', mnt]);
});
