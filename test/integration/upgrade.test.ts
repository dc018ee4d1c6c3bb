/**
 * The upgrade path end to end: the real cosctl, a real docker-registry on 127.0.0.1, a cOS disk on loop devices.
 */
import test from 'ava';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { CosHost } from '../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { cosctl, cosStatus, testHost, grubList, imageCat, imageLabel, mountOptions, sha256File } from '../helpers/cosctl.ts';
import type { HostStatusDocument } from '../../src/model/host.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';

let reg: TestRegistry;
const digests: Record<string, string> = {};

test.before(async () => {
  reg = await startRegistry();
  digests.v1 = await pushOsImage(reg, 'cos/os:v1', '1.0.0');
  digests.v2 = await pushOsImage(reg, 'cos/os:v2', '2.0.0', { compression: 'zstd' });
  digests.big = await pushOsImage(reg, 'cos/big:v1', '2.1.0', {
    extraLayers: [[{ name: 'usr/share/blob', content: (await import('node:crypto')).randomBytes(24 * 1024 * 1024) }]],
  });
});
test.after.always(async () => {
  await reg?.stop();
});

const withHost = testHost;
const status = (host: CosHost): Promise<HostStatusDocument> => cosStatus(host);

test.serial('when booted from active, an upgrade rotates active to passive, labels both, arms GRUB and records state', async (t) => {
  const host = await withHost(t);
  const baseline = await host.leaks();
  const oldActive = (await stat(host.statePath('cOS/active.img'))).ino;

  const r = await cosctl(host, ['upgrade', '--image', `${reg.host}/cos/os:v2`, '--no-verify']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /Upgraded active slot/);

  // Rotation: the old active's file (same inode: moved, not copied) is now passive; labels follow the names.
  t.is((await stat(host.statePath('cOS/passive.img'))).ino, oldActive);
  t.is(await imageLabel(host.statePath('cOS/active.img')), 'COS_ACTIVE');
  t.is(await imageLabel(host.statePath('cOS/passive.img')), 'COS_PASSIVE');
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  t.regex(await imageCat(host.statePath('cOS/passive.img'), '/etc/cos-slot-version'), /active 0\.8\.10/);
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img']);

  // GRUB: rebranded from the new image, boot assessment armed with tentative cleared.
  t.is((await grubList(host.statePath('grub_oem_env'))).get('default_menu_entry'), 'cOS 2.0.0');
  const assess = await grubList(host.statePath('boot_assessment'));
  t.is(assess.get('enable_boot_assessment'), 'yes');
  t.is(assess.get('boot_assessment_tentative'), '');

  // state.yaml in elemental's format, plus our fields inside image entries.
  const state = parseYaml(await readFile(host.statePath('state.yaml'), 'utf8')) as Record<string, Record<string, Record<string, unknown>>>;
  t.is(state.state?.active?.source, `docker://${reg.host}/cos/os:v2`);
  t.is(state.state?.active?.digest, digests.v2);
  t.is(state.state?.active?.label, 'COS_ACTIVE');
  t.is(state.state?.active?.verification, 'skipped');

  // COS_STATE is read-only again, and nothing the agent mounted or attached is left.
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));
  t.deepEqual(await host.leaks(), baseline);

  const doc = await status(host);
  t.is(doc.apiVersion, 'io.costoolkit.agent/v1');
  t.is(doc.kind, 'CosHost');
  t.is(doc.status.bootedFrom, 'active');
  t.is(doc.status.slots.active.version, '2.0.0');
  t.is(doc.status.slots.active.imageDigest, digests.v2);
  t.is(doc.status.slots.active.label, 'COS_ACTIVE');
  t.is(doc.status.slots.active.verification, 'skipped');
  t.is(doc.status.staged?.slot, 'active');
  t.is(doc.status.booted?.slot, 'passive', 'the running OS now lives in passive.img');
  t.is(doc.status.lastUpgrade?.result, 'success');
  t.is(doc.status.lastUpgrade?.imageDigest, digests.v2);
  t.true(doc.status.bootAssessment.enabled);
});

test.serial('when booted from passive, an upgrade replaces only active and keeps passive, the last known good', async (t) => {
  const host = await withHost(t, { booted: 'passive' });
  const passive = await sha256File(host.statePath('cOS/passive.img'));
  const r = await cosctl(host, ['upgrade', '--image', `${reg.host}/cos/os:v1`, '--no-verify']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /Passive kept/);
  t.is(await sha256File(host.statePath('cOS/passive.img')), passive);
  t.is(await imageLabel(host.statePath('cOS/passive.img')), 'COS_PASSIVE');
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="1\.0\.0"/);
  t.is(await imageLabel(host.statePath('cOS/active.img')), 'COS_ACTIVE');
});

test.serial('after a failed boot assessment (upgrade_failure), passive is kept as well', async (t) => {
  // GRUB adds upgrade_failure to the fallback entry only: the host runs passive.
  const host = await withHost(t, { booted: 'passive', upgradeFailure: true });
  const passive = await sha256File(host.statePath('cOS/passive.img'));
  const r = await cosctl(host, ['upgrade', '--image', `${reg.host}/cos/os:v1`, '--no-verify']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /Passive kept: the last upgrade failed boot assessment/);
  t.is(await sha256File(host.statePath('cOS/passive.img')), passive);
  t.true((await status(host)).status.upgradeFailure);
});

test.serial('an upgrade_failure sentinel while active runs the system never replaces the running image: active rotates to passive', async (t) => {
  // Inconsistent on a real host (upgrade_failure is on the fallback's cmdline only), but /run/cos/upgrade_failure can
  // be left by hand: the running image is never overwritten; it becomes the fallback.
  const host = await withHost(t, { upgradeFailure: true });
  const running = (await stat(host.statePath('cOS/active.img'))).ino;
  const r = await cosctl(host, ['upgrade', '--image', `${reg.host}/cos/os:v1`, '--no-verify']);
  t.is(r.code, 0, r.stderr);
  t.is((await stat(host.statePath('cOS/passive.img'))).ino, running);
});

test.serial('the image comes from /etc/cos-upgrade-image when no --image is given (CHANNEL_UPGRADES=false)', async (t) => {
  const host = await withHost(t, {
    files: { '/etc/cos-upgrade-image': `CHANNEL_UPGRADES="false"\nNO_VERIFY="true"\nUPGRADE_IMAGE="${reg.host}/cos/os:v2"` },
  });
  const r = await cosctl(host, ['upgrade']);
  t.is(r.code, 0, r.stderr);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  const doc = await status(host);
  t.is(doc.spec.image?.image, `${reg.host}/cos/os:v2`);
  t.false(doc.spec.verify);
});

for (const flavour of ['img', 'squashfs'] as const) {
  test.serial(`a recovery upgrade replaces the ${flavour} recovery image and leaves active and passive alone`, async (t) => {
    const host = await withHost(t, { recovery: flavour });
    // before: no record names the recovery image; status reads its version from the image itself (ext2 or squashfs)
    const before = await status(host);
    t.like(before.status.slots.recovery, { record: 'none', version: '0.8.8', fs: flavour === 'img' ? 'ext2' : 'squashfs' }, JSON.stringify(before.status.slots.recovery));
    const active = await sha256File(host.statePath('cOS/active.img'));
    const passive = await sha256File(host.statePath('cOS/passive.img'));
    const r = await cosctl(host, ['upgrade', '--recovery', '--image', `${reg.host}/cos/os:v2`, '--no-verify']);
    t.is(r.code, 0, r.stderr);
    t.is(await sha256File(host.statePath('cOS/active.img')), active);
    t.is(await sha256File(host.statePath('cOS/passive.img')), passive);
    await host.peek('COS_RECOVERY', async (dir) => {
      const files = (await readdir(`${dir}/cOS`)).sort();
      if (flavour === 'img') {
        t.deepEqual(files, ['recovery.img']);
        t.is(await imageLabel(`${dir}/cOS/recovery.img`), 'COS_SYSTEM');
        t.regex(await imageCat(`${dir}/cOS/recovery.img`, '/etc/os-release'), /VERSION="2\.0\.0"/);
      } else {
        t.deepEqual(files, ['recovery.squashfs']);
        const magic = (await readFile(`${dir}/cOS/recovery.squashfs`)).subarray(0, 4).toString('latin1');
        t.is(magic, 'hsqs');
      }
      const state = parseYaml(await readFile(`${dir}/state.yaml`, 'utf8')) as Record<string, Record<string, Record<string, unknown>>>;
      t.is(state.recovery?.recovery?.digest, digests.v2);
    });
    const doc = await status(host);
    t.is(doc.status.slots.recovery.version, '2.0.0');
    t.is(doc.status.slots.recovery.fs, flavour === 'img' ? 'ext2' : 'squashfs');
    // A recovery upgrade does not touch GRUB's default entry.
    t.is((await grubList(host.statePath('grub_oem_env'))).get('default_menu_entry'), 'cOS');
  });
}

test.serial('booted from recovery, a system upgrade mounts COS_STATE itself and unmounts it afterwards', async (t) => {
  const host = await withHost(t, { booted: 'recovery' });
  const baseline = await host.leaks();
  const r = await cosctl(host, ['upgrade', '--image', `${reg.host}/cos/os:v2`, '--no-verify']);
  t.is(r.code, 0, r.stderr);
  await host.peek('COS_STATE', async (dir) => {
    t.regex(await imageCat(`${dir}/cOS/active.img`, '/etc/os-release'), /VERSION="2\.0\.0"/);
    t.regex(await imageCat(`${dir}/cOS/passive.img`, '/etc/cos-slot-version'), /active 0\.8\.10/);
  });
  t.deepEqual(await host.leaks(), baseline);
});

test.serial('a one-shot rollback sets next_entry in /oem/grubenv (created when missing) to the other slot', async (t) => {
  const host = await withHost(t);
  const r = await cosctl(host, ['rollback']);
  t.is(r.code, 0, r.stderr);
  t.is((await grubList(`${host.root}/oem/grubenv`)).get('next_entry'), 'fallback');
  const doc = await status(host);
  t.deepEqual(doc.status.nextBoot, { entry: 'fallback', oneShot: true, slot: 'passive', reason: 'one-shot', upgradeFailure: false, then: { entry: 'cos', slot: 'active' } });

  const fromPassive = await withHost(t, { booted: 'passive' });
  t.is((await cosctl(fromPassive, ['rollback'])).code, 0);
  t.is((await grubList(`${fromPassive.root}/oem/grubenv`)).get('next_entry'), 'cos');
});

test.serial('a permanent rollback swaps active and passive, labels included, and COS_STATE ends read-only', async (t) => {
  const host = await withHost(t);
  const baseline = await host.leaks();
  const active = await sha256File(host.statePath('cOS/active.img'));
  const passive = await sha256File(host.statePath('cOS/passive.img'));
  const r = await cosctl(host, ['rollback', '--permanent']);
  t.is(r.code, 0, r.stderr);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/cos-slot-version'), /passive 0\.8\.9/);
  t.is(await imageLabel(host.statePath('cOS/active.img')), 'COS_ACTIVE');
  t.is(await imageLabel(host.statePath('cOS/passive.img')), 'COS_PASSIVE');
  t.regex(await imageCat(host.statePath('cOS/passive.img'), '/etc/cos-slot-version'), /active 0\.8\.10/);
  t.not(await sha256File(host.statePath('cOS/active.img')), active, 'labels changed the superblocks');
  t.not(await sha256File(host.statePath('cOS/passive.img')), passive);
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img']);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));
  t.deepEqual(await host.leaks(), baseline);
});

test.serial('when the rootfs would not fit DEFAULT_IMAGE_SIZE, the slot image grows to fit it', async (t) => {
  const host = await withHost(t, { files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=16\n' } });
  const r = await cosctl(host, ['upgrade', '--image', `${reg.host}/cos/big:v1`, '--no-verify']);
  t.is(r.code, 0, r.stderr);
  const size = (await stat(host.statePath('cOS/active.img'))).size;
  t.true(size > 16 * 1024 * 1024 && size <= 64 * 1024 * 1024, `active.img is ${size} bytes`);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.1\.0"/);
});

test.serial('with DEFAULT_IMAGE_SIZE unset a slot image is as big as the one it replaces: a COS_STATE far below 3072 MiB takes the upgrade, active and recovery', async (t) => {
  const MiB = 1024 * 1024;
  // 40 MiB images on a 160 MiB COS_STATE: a third 40 MiB image fits, elemental's 3072 MiB never would.
  const host = await withHost(t, { imageMiB: 40, recoveryMiB: 128, files: { '/etc/cos/config': '# no DEFAULT_IMAGE_SIZE here\n' } });
  const r = await cosctl(host, ['upgrade', '--image', `${reg.host}/cos/os:v2`, '--no-verify']);
  t.is(r.code, 0, r.stderr);
  t.is((await stat(host.statePath('cOS/active.img'))).size, 40 * MiB, 'sized like the active.img it replaced');
  t.is((await stat(host.statePath('cOS/passive.img'))).size, 40 * MiB);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);

  const rec = await cosctl(host, ['upgrade', '--recovery', '--image', `${reg.host}/cos/os:v2`, '--no-verify']);
  t.is(rec.code, 0, rec.stderr);
  const size = await host.peek('COS_RECOVERY', async (dir) => (await stat(`${dir}/cOS/recovery.img`)).size);
  t.is(size, 40 * MiB, 'sized like the recovery.img it replaced');
});

test.serial('cosctl status renders human, JSON and YAML from one document', async (t) => {
  const host = await withHost(t);
  const human = await cosctl(host, ['status']);
  t.is(human.code, 0, human.stderr);
  t.regex(human.stdout, /Booted from: active/);
  t.regex(human.stdout, /Version: 0\.8\.10\n +Digest: .*\n +Slot: active \(cOS\/active\.img, COS_ACTIVE, ext2\)/);
  const yaml = await cosctl(host, ['status', '--yaml']);
  const json = await cosctl(host, ['status', '--json']);
  t.deepEqual(parseYaml(yaml.stdout), JSON.parse(json.stdout));
  const doc = JSON.parse(json.stdout) as HostStatusDocument;
  t.is(doc.status.slots.recovery.label, 'COS_SYSTEM');
  t.is(doc.status.slots.passive.present, true);
});

test.serial('cosctl check reports an update, then none once staged; it writes nothing', async (t) => {
  const host = await withHost(t);
  const before = await sha256File(host.statePath('cOS/active.img'));
  const first = await cosctl(host, ['--no-daemon', 'check', '--image', `${reg.host}/cos/os:v1`]);
  t.is(first.code, 0, first.stderr);
  t.regex(first.stdout, new RegExp(`Update available: .*@${digests.v1}`));
  t.is(await sha256File(host.statePath('cOS/active.img')), before);
  t.is((await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v1`])).code, 0);
  const second = await cosctl(host, ['--no-daemon', 'check', '--image', `${reg.host}/cos/os:v1`]);
  t.regex(second.stdout, /Up to date/);
});

test.serial('an upgrade to the digest the active slot already holds stages nothing and says so; --force stages it again', async (t) => {
  const host = await withHost(t);
  const image = `${reg.host}/cos/os:v1`;
  t.is((await cosctl(host, ['upgrade', '--no-verify', '--image', image])).code, 0);
  const files = async (): Promise<string[]> => Promise.all(['cOS/active.img', 'cOS/passive.img', 'state.yaml', 'grub_oem_env', 'boot_assessment'].map((f) => sha256File(host.statePath(f))));
  const before = await files();
  const activeIno = (await stat(host.statePath('cOS/active.img'))).ino;
  const passiveIno = (await stat(host.statePath('cOS/passive.img'))).ino;
  const lastUpgrade = (await status(host)).status.lastUpgrade;
  const baseline = await host.leaks();

  const again = await cosctl(host, ['upgrade', '--no-verify', '--image', image]);
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout.split('\n').filter((l) => !l.startsWith('[')).join('\n'), `Already up to date: the active slot already holds ${digests.v1} (${image}); nothing staged. Use --force to stage it again.\n`);
  t.deepEqual(await files(), before, 'slots, state.yaml and GRUB env untouched');
  t.deepEqual((await status(host)).status.lastUpgrade, lastUpgrade, 'the record of the last real upgrade stays');
  t.deepEqual(await host.leaks(), baseline);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));

  const forced = await cosctl(host, ['upgrade', '--no-verify', '--force', '--image', image]);
  t.is(forced.code, 0, forced.stderr);
  t.regex(forced.stdout, new RegExp(`Upgraded active slot to .*@${digests.v1}`));
  // The first upgrade moved the running image to passive; the forced one replaces the never-booted copy in active
  // and keeps passive, which holds the running OS (issue 8 #1: it is never rotated away before a reboot).
  t.is((await stat(host.statePath('cOS/passive.img'))).ino, passiveIno, 'forced: passive (the running image) kept');
  t.not((await stat(host.statePath('cOS/active.img'))).ino, activeIno, 'forced: a new copy in active');
  t.regex(await imageCat(host.statePath('cOS/passive.img'), '/etc/os-release'), /VERSION="0\.8\.10"/);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="1\.0\.0"/);
});

test.serial('the same digest is staged again when the slot is being repaired or its copy was not verified', async (t) => {
  const image = `${reg.host}/cos/os:v1`;
  // Booted from passive (the active slot may be the broken one): staged again.
  const passive = await withHost(t, { booted: 'passive' });
  t.is((await cosctl(passive, ['upgrade', '--no-verify', '--image', image])).code, 0);
  const a1 = (await stat(passive.statePath('cOS/active.img'))).ino;
  const r1 = await cosctl(passive, ['upgrade', '--no-verify', '--image', image]);
  t.is(r1.code, 0, r1.stderr);
  t.regex(r1.stdout, /Upgraded active slot/);
  t.not((await stat(passive.statePath('cOS/active.img'))).ino, a1);

  // Staged unverified, now verification is required (no policy on this host): the upgrade runs, and fails closed on
  // verification instead of reporting the unverified copy as up to date.
  const host = await withHost(t);
  t.is((await cosctl(host, ['upgrade', '--no-verify', '--image', image])).code, 0);
  const before = await sha256File(host.statePath('cOS/active.img'));
  const r2 = await cosctl(host, ['upgrade', '--image', image]);
  t.is(r2.code, EXIT_CODES.VERIFY_FAILED.exit, r2.stderr);
  t.regex(r2.stderr, /^cosctl: signature verification is on, but no public key or keyless identity is configured for 127\.0\.0\.1:\d+\/cos\/os: set COSIGN_PUBLIC_KEY_LOCATION in \/etc\/cos-upgrade-image, or give keys or identities in \/etc\/cos-agent\/policy\.yaml, or pass --no-verify/);
  t.notRegex(r2.stdout, /Already up to date/);
  t.is(await sha256File(host.statePath('cOS/active.img')), before);
});

test.serial('verification on with no key or identity fails before contacting the registry (nothing listens there), naming the fix; a missing key file is VERIFY_FAILED', async (t) => {
  const host = await withHost(t);
  const before = await sha256File(host.statePath('cOS/active.img'));
  // 127.0.0.1:9 (discard): nothing answers; a request would end in REGISTRY_UNREACHABLE after its retries.
  for (const args of [['upgrade', '--image', '127.0.0.1:9/cos/os:v2'], ['verify', '127.0.0.1:9/cos/os:v2']]) {
    const r = await cosctl(host, args);
    t.is(r.code, EXIT_CODES.VERIFY_FAILED.exit, `${args[0]}: ${r.stderr}`);
    t.regex(r.stderr, /no public key or keyless identity is configured for 127\.0\.0\.1:9\/cos\/os: set COSIGN_PUBLIC_KEY_LOCATION/);
    t.is(r.stderr.split('\n').length, 2, 'one line');
  }
  await writeFile(path.join(host.root, 'etc/cos-upgrade-image'), 'COSIGN_PUBLIC_KEY_LOCATION=/etc/cos-agent/keys/missing.pub\n');
  const missing = await cosctl(host, ['upgrade', '--image', '127.0.0.1:9/cos/os:v2']);
  t.is(missing.code, EXIT_CODES.VERIFY_FAILED.exit, missing.stderr);
  t.regex(missing.stderr, /missing\.pub: cannot read the public key \(from COSIGN_PUBLIC_KEY_LOCATION|missing\.pub: cannot read the public key/);
  t.is(await sha256File(host.statePath('cOS/active.img')), before);
});

test.serial('upgrade --reboot needs the daemon: refused up front without one', async (t) => {
  const host = await withHost(t);
  const before = await sha256File(host.statePath('cOS/active.img'));
  const r = await cosctl(host, ['--no-daemon', 'upgrade', '--no-verify', '--reboot', '--image', `${reg.host}/cos/os:v1`]);
  t.not(r.code, 0);
  t.regex(r.stderr, /--reboot needs the daemon/);
  t.is(await sha256File(host.statePath('cOS/active.img')), before);
});

test.serial('mark-bad arms boot assessment with tentative set (GRUB falls back next boot); mark-good disarms it', async (t) => {
  const host = await withHost(t);
  t.is((await cosctl(host, ['--no-daemon', 'mark-bad'])).code, 0);
  let assess = await grubList(host.statePath('boot_assessment'));
  t.deepEqual([assess.get('enable_boot_assessment'), assess.get('boot_assessment_tentative')], ['yes', 'yes']);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));
  t.is((await cosctl(host, ['--no-daemon', 'mark-good'])).code, 0);
  assess = await grubList(host.statePath('boot_assessment'));
  t.deepEqual([assess.get('enable_boot_assessment'), assess.get('boot_assessment_tentative')], ['', '']);
  const fromPassive = await withHost(t, { booted: 'passive' });
  const r = await cosctl(fromPassive, ['--no-daemon', 'mark-bad']);
  t.not(r.code, 0);
  t.regex(r.stderr, /only applies when booted from active/);
});

test.serial('cancel and status --watch need the daemon: a clear error without one', async (t) => {
  const host = await withHost(t);
  const r = await cosctl(host, ['--no-daemon', 'cancel']);
  t.regex(r.stderr, /cancel needs the daemon/);
  t.not(r.code, 0);
});
