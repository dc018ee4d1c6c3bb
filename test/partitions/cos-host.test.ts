import test, { type ExecutionContext } from 'ava';
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../src/model/errors.ts';
import {
  attachLoop,
  diskPartitions,
  findDeviceByLabel,
  findMountAt,
  findMountOf,
  isReadOnly,
  isSquashfs,
  loopBackingFile,
  mkfsExt2,
  mount,
  probeLabel,
  readMounts,
  remount,
  syncFs,
} from '../../src/partitions/index.ts';
import { createCosHost, type CosHost, type CosHostOptions, type CosLabel } from '../helpers/cos-host.ts';
import { runner, sh } from './_util.ts';

const LABELS: readonly CosLabel[] = ['COS_GRUB', 'COS_OEM', 'COS_STATE', 'COS_RECOVERY', 'COS_PERSISTENT'];

async function host(t: ExecutionContext, opts: CosHostOptions = {}): Promise<CosHost> {
  const h = await createCosHost(opts);
  t.teardown(() => h.close());
  return h;
}

const grubEnv = async (file: string): Promise<string[]> =>
  (await sh(['grub-editenv', file, 'list'])).split('\n').filter((l) => l !== '');

/** A file inside an ext2 image, read without mounting it. */
const catInImage = (img: string, file: string): Promise<string> => sh(['debugfs', '-R', `cat ${file}`, img]);

async function assertClosedClean(t: ExecutionContext, h: CosHost): Promise<void> {
  await h.close();
  t.deepEqual(await h.leaks(), { mounts: [], loops: [] });
  const backing = await loopBackingFile(h.loop);
  t.true(backing === undefined || backing !== h.disk, `${h.loop} is still attached to ${h.disk}`);
  await t.throwsAsync(stat(h.root), { code: 'ENOENT' });
}

const variants = [
  { booted: 'active', recovery: 'img' },
  { booted: 'active', recovery: 'squashfs' },
  { booted: 'passive', recovery: 'img' },
  { booted: 'passive', recovery: 'squashfs' },
  { booted: 'recovery', recovery: 'img' },
  { booted: 'recovery', recovery: 'squashfs' },
] as const;

for (const v of variants) {
  test(`a host booted from ${v.booted} with ${v.recovery} recovery has the cOS layout, mounts and cmdline, and closes without leaks`, async (t) => {
    const h = await host(t, { booted: v.booted, recovery: v.recovery });
    t.deepEqual(h.env, { AGENT_TEST_DISK: h.loop });

    // Labels and GPT names, found the way the agent finds them.
    const parts = await diskPartitions(h.loop);
    t.deepEqual(parts, [1, 2, 3, 4, 5].map((n) => `${h.loop}p${n}`));
    const partNames: Record<CosLabel, string> = { COS_GRUB: 'efi', COS_OEM: 'oem', COS_STATE: 'state', COS_RECOVERY: 'recovery', COS_PERSISTENT: 'persistent' };
    for (const label of LABELS) {
      const dev = await findDeviceByLabel(runner, label, { candidates: parts });
      t.is(dev.device, h.devices[label], label);
      t.is(dev.fstype, label === 'COS_GRUB' ? 'vfat' : 'ext4', label);
      t.is(dev.partlabel, partNames[label], label);
    }
    t.regex(await sh(['mdir', '-i', h.devices.COS_GRUB, '-b', '::/EFI/BOOT']), /bootx64\.efi/i);

    // Mounts as a booted host sees them.
    const mounts = await readMounts();
    const at = (p: string) => findMountAt(path.join(h.root, p), mounts);
    const oem = at('/oem');
    t.is(oem?.source, h.devices.COS_OEM);
    t.false(oem !== undefined && isReadOnly(oem));
    if (v.booted === 'recovery') {
      t.is(at('/usr/local'), undefined, 'no persistent in recovery');
      t.is(findMountOf(h.devices.COS_STATE, mounts), undefined, 'COS_STATE not mounted in recovery');
      const where = v.recovery === 'img' ? '/run/initramfs/cos-state' : '/run/initramfs/live';
      const rec = at(where);
      t.is(rec?.source, h.devices.COS_RECOVERY);
      t.true(rec !== undefined && isReadOnly(rec));
      t.throws(() => h.statePath('cOS/active.img'));
      await t.notThrowsAsync(stat(path.join(h.root, '/run/cos/recovery_mode')));
    } else {
      const state = at('/run/initramfs/cos-state');
      t.is(state?.source, h.devices.COS_STATE);
      t.true(state !== undefined && isReadOnly(state));
      const persistent = at('/usr/local');
      t.is(persistent?.source, h.devices.COS_PERSISTENT);
      t.false(persistent !== undefined && isReadOnly(persistent));
      t.is(h.statePath('cOS/active.img'), path.join(h.root, 'run/initramfs/cos-state/cOS/active.img'));
    }

    // COS_STATE content: images with their labels and os-release, GRUB env blocks, grub.cfg.
    await h.peek('COS_STATE', async (state) => {
      t.is(await probeLabel(runner, path.join(state, 'cOS/active.img')), 'COS_ACTIVE');
      t.is(await probeLabel(runner, path.join(state, 'cOS/passive.img')), 'COS_PASSIVE');
      t.is((await stat(path.join(state, 'cOS/active.img'))).size, 32 * 1024 * 1024);
      const osr = await catInImage(path.join(state, 'cOS/active.img'), '/etc/os-release');
      t.regex(osr, /^VERSION="0\.8\.10"$/m);
      t.regex(osr, /^GRUB_ENTRY_NAME="cOS 0\.8\.10"$/m);
      t.is(await catInImage(path.join(state, 'cOS/passive.img'), '/etc/cos-slot-version'), 'passive 0.8.9\n');
      t.deepEqual(await grubEnv(path.join(state, 'grub_oem_env')), ['default_menu_entry=cOS']);
      t.deepEqual(await grubEnv(path.join(state, 'boot_assessment')), []);
      const cfg = await readFile(path.join(state, 'grub2/grub.cfg'), 'utf8');
      for (const id of ['cos', 'fallback', 'recovery']) t.regex(cfg, new RegExp(`--id ${id} \\{`));
    });
    await h.peek('COS_RECOVERY', async (rec) => {
      if (v.recovery === 'img') {
        t.is(await probeLabel(runner, path.join(rec, 'cOS/recovery.img')), 'COS_SYSTEM');
        t.regex(await catInImage(path.join(rec, 'cOS/recovery.img'), '/etc/os-release'), /^VERSION="0\.8\.8"$/m);
        t.false(await isSquashfs(path.join(rec, 'cOS/recovery.squashfs')));
      } else {
        t.true(await isSquashfs(path.join(rec, 'cOS/recovery.squashfs')));
        t.regex(await sh(['unsquashfs', '-cat', path.join(rec, 'cOS/recovery.squashfs'), 'etc/os-release']), /^VERSION="0\.8\.8"$/m);
        await t.throwsAsync(stat(path.join(rec, 'cOS/recovery.img')), { code: 'ENOENT' });
      }
    });

    // Host files.
    const cmdline = await readFile(path.join(h.root, 'proc/cmdline'), 'utf8');
    t.true(cmdline.startsWith('BOOT_IMAGE=(loop0)/boot/vmlinuz console=tty1'));
    t.true(cmdline.endsWith('\n'));
    const expected = {
      active: 'root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img',
      passive: 'root=LABEL=COS_PASSIVE cos-img/filename=/cOS/passive.img',
      recovery: v.recovery === 'img'
        ? 'root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.img'
        : 'root=live:LABEL=COS_RECOVERY rd.live.dir=/ rd.live.squashimg=/cOS/recovery.squashfs',
    }[v.booted];
    t.true(cmdline.includes(` ${expected} panic=5 `), cmdline);
    t.false(cmdline.includes('upgrade_failure'));
    t.regex(await readFile(path.join(h.root, 'etc/os-release'), 'utf8'), new RegExp(`VERSION="${h.versions[v.booted].replace(/\./g, '\\.')}"`));
    t.true((await stat(path.join(h.root, 'run/cos'))).isDirectory());

    await assertClosedClean(t, h);
  });
}

test('two hosts at once have the same labels on different disks and are found and closed independently', async (t) => {
  const [a, b] = await Promise.all([host(t), host(t, { booted: 'passive' })]);
  t.not(a.loop, b.loop);
  const stateA = await findDeviceByLabel(runner, 'COS_STATE', { candidates: await diskPartitions(a.loop) });
  const stateB = await findDeviceByLabel(runner, 'COS_STATE', { candidates: await diskPartitions(b.loop) });
  t.is(stateA.device, a.devices.COS_STATE);
  t.is(stateB.device, b.devices.COS_STATE);
  t.not(stateA.uuid, stateB.uuid);
  // Without narrowing, the label is ambiguous: exactly why the agent gets AGENT_TEST_DISK.
  const err = await t.throwsAsync(findDeviceByLabel(runner, 'COS_STATE', { candidates: [...(await diskPartitions(a.loop)), ...(await diskPartitions(b.loop))] }));
  t.is((err as AgentError).code, 'DEVICE_AMBIGUOUS');

  await assertClosedClean(t, a);
  const mounts = await readMounts();
  t.is(findMountAt(path.join(b.root, 'run/initramfs/cos-state'), mounts)?.source, b.devices.COS_STATE);
  t.is(await probeLabel(runner, b.statePath('cOS/passive.img')), 'COS_PASSIVE');
  await assertClosedClean(t, b);
});

test('options set the image versions and size, the upgrade_failure token and extra host files', async (t) => {
  const h = await host(t, {
    versions: { active: '1.0.0', passive: '0.9.0', recovery: '0.5.0' },
    imageMiB: 20,
    upgradeFailure: true,
    files: { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE=registry.local/cos:v2\n' },
  });
  const active = h.statePath('cOS/active.img');
  t.is((await stat(active)).size, 20 * 1024 * 1024);
  t.regex(await catInImage(active, '/etc/os-release'), /^GRUB_ENTRY_NAME="cOS 1\.0\.0"$/m);
  t.is(await catInImage(h.statePath('cOS/passive.img'), '/etc/cos-slot-version'), 'passive 0.9.0\n');
  t.regex(await readFile(path.join(h.root, 'etc/os-release'), 'utf8'), /^VERSION="1\.0\.0"$/m);
  const cmdline = await readFile(path.join(h.root, 'proc/cmdline'), 'utf8');
  t.true(cmdline.trimEnd().endsWith(' upgrade_failure'));
  await t.notThrowsAsync(stat(path.join(h.root, 'run/cos/upgrade_failure')));
  t.is(await readFile(path.join(h.root, 'etc/cos-upgrade-image'), 'utf8'), 'UPGRADE_IMAGE=registry.local/cos:v2\n');
});

test('files written under /oem land on the COS_OEM partition', async (t) => {
  const h = await host(t, { files: { '/oem/99_custom.yaml': 'name: x\n' } });
  const mounts = await readMounts();
  t.is(findMountOf(h.devices.COS_OEM, mounts)?.mountPoint, path.join(h.root, 'oem'));
  await syncFs(path.join(h.root, 'oem/99_custom.yaml'));
  await sh(['blockdev', '--flushbufs', h.devices.COS_OEM]);
  t.is(await sh(['debugfs', '-R', 'cat /99_custom.yaml', h.devices.COS_OEM]), 'name: x\n');
});

test('leaks() lists the host own mounts and disk loop while it is open', async (t) => {
  const h = await host(t);
  const leaks = await h.leaks();
  t.deepEqual(
    [...leaks.mounts].sort(),
    ['/oem', '/run/initramfs/cos-state', '/usr/local'].map((p) => path.join(h.root, p)).sort(),
  );
  t.deepEqual(leaks.loops, [`${h.loop} (${h.disk})`]);
});

test('close() also removes what an agent left behind: a rw remount, a mounted transition image and a stray loop', async (t) => {
  const h = await host(t);
  const stateDir = path.join(h.root, 'run/initramfs/cos-state');
  await remount(runner, stateDir, 'rw');
  const transition = h.statePath('cOS/transition.img');
  await mkfsExt2(runner, transition, { label: 'COS_TRANSITION', sizeMiB: 8 });
  const loop = await attachLoop(runner, transition);
  const mnt = path.join(h.root, 'usr/local/elemental-upgrade');
  await mount(runner, loop.device, mnt, { mkdir: true });
  await writeFile(path.join(mnt, 'busy'), 'x');
  const stray = await attachLoop(runner, h.statePath('cOS/passive.img'), { readOnly: true });
  t.is((await h.leaks()).loops.length, 3);

  await assertClosedClean(t, h);
  const tmp = path.dirname(h.root);
  for (const dev of [loop.device, stray.device]) {
    t.false((await loopBackingFile(dev))?.startsWith(tmp) ?? false, `${dev} still attached`);
  }
});

test('peek mounts an unmounted partition read-only for the callback only', async (t) => {
  const h = await host(t, { booted: 'recovery' });
  const seen = await h.peek('COS_STATE', async (dir) => {
    const m = findMountAt(dir, await readMounts());
    t.true(m !== undefined && isReadOnly(m));
    return (await stat(path.join(dir, 'cOS/active.img'))).isFile();
  });
  t.true(seen);
  t.deepEqual(
    (await h.leaks()).mounts.filter((p) => p.includes('peek-')),
    [],
  );
});

test('close() is idempotent', async (t) => {
  const h = await host(t);
  await Promise.all([h.close(), h.close()]);
  await h.close();
  t.deepEqual(await h.leaks(), { mounts: [], loops: [] });
});
