import test from 'ava';
import { parseCmdline, splitCmdline } from '../../src/host/cmdline.ts';

// Command lines as cOS bootargs.cfg / grub_live.cfg render them (spec cos-layout.md 1.4, 3.4, 4.4), with the trailing
// newline /proc/cmdline has.
const ACTIVE =
  'BOOT_IMAGE=(loop0)/boot/vmlinuz console=tty1 console=ttyS0 root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img panic=5 security=selinux selinux=1 rd.neednet=1 rd.cos.oemlabel=COS_OEM rd.emergency=reboot rd.shell=0 systemd.crash_reboot systemd.crash_shell=0\n';
const PASSIVE_AFTER_FAILURE =
  'BOOT_IMAGE=(loop0)/boot/vmlinuz console=tty1 console=ttyS0 root=LABEL=COS_PASSIVE cos-img/filename=/cOS/passive.img panic=5 security=selinux selinux=1 rd.neednet=1 rd.cos.oemlabel=COS_OEM upgrade_failure\n';
const RECOVERY_SQUASH =
  'BOOT_IMAGE=(loop0)/boot/vmlinuz console=tty1 console=ttyS0 root=live:LABEL=COS_RECOVERY rd.live.dir=/ rd.live.squashimg=/cOS/recovery.squashfs panic=5 rd.neednet=1 rd.cos.oemlabel=COS_OEM\n';
const RECOVERY_IMG =
  'BOOT_IMAGE=(loop0)/boot/vmlinuz console=tty1 console=ttyS0 root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.img panic=5 security=selinux selinux=1 rd.neednet=1 rd.cos.oemlabel=COS_OEM\n';
const LIVE = 'BOOT_IMAGE=/boot/kernel.xz cdroot root=live:CDLABEL=COS_LIVE rd.live.dir=/ rd.live.squashimg=rootfs.squashfs console=tty1 rd.cos.disable\n';
// toolkit v1.0 bootargs: root is the STATE partition, the file name says which image.
const V1_ACTIVE = 'BOOT_IMAGE=/boot/vmlinuz console=tty1 root=LABEL=COS_STATE cos-img/filename=/cOS/active.img panic=5 rd.cos.mount=LABEL=COS_OEM:/oem\n';

test('when booted from active.img, bootedFrom is active and there is no upgrade failure', (t) => {
  const b = parseCmdline(ACTIVE);
  t.is(b.bootedFrom, 'active');
  t.is(b.recoveryFlavour, undefined);
  t.false(b.upgradeFailure);
  t.is(b.tokens.get('root'), 'LABEL=COS_ACTIVE');
  t.is(b.tokens.get('rd.shell'), '0');
  t.is(b.tokens.get('systemd.crash_reboot'), true);
});

test('when the fallback entry booted passive.img with upgrade_failure, both are reported', (t) => {
  const b = parseCmdline(PASSIVE_AFTER_FAILURE);
  t.is(b.bootedFrom, 'passive');
  t.true(b.upgradeFailure);
});

test('when booted from squashfs recovery, bootedFrom is recovery with the squashfs flavour', (t) => {
  t.like(parseCmdline(RECOVERY_SQUASH), { bootedFrom: 'recovery', recoveryFlavour: 'squashfs', upgradeFailure: false });
});

test('when booted from img recovery, bootedFrom is recovery with the img flavour', (t) => {
  t.like(parseCmdline(RECOVERY_IMG), { bootedFrom: 'recovery', recoveryFlavour: 'img' });
});

test('when booted from the live ISO, bootedFrom is live', (t) => {
  t.is(parseCmdline(LIVE).bootedFrom, 'live');
  t.is(parseCmdline('root=live:CDLABEL=COS_LIVE rd.live.dir=/').bootedFrom, 'live');
  t.is(parseCmdline('cdroot quiet').bootedFrom, 'live');
});

test('when toolkit v1.0 bootargs put the STATE label in root=, the image file name decides', (t) => {
  t.is(parseCmdline(V1_ACTIVE).bootedFrom, 'active');
  t.is(parseCmdline(V1_ACTIVE.replace('active.img', 'passive.img')).bootedFrom, 'passive');
  t.is(parseCmdline('root=LABEL=COS_STATE').bootedFrom, 'unknown');
});

test('when only root=LABEL= is present, the label decides', (t) => {
  t.is(parseCmdline('root=LABEL=COS_ACTIVE').bootedFrom, 'active');
  t.is(parseCmdline('root=LABEL=COS_PASSIVE').bootedFrom, 'passive');
  t.like(parseCmdline('root=LABEL=COS_SYSTEM'), { bootedFrom: 'recovery', recoveryFlavour: 'img' });
  t.like(parseCmdline('root=/dev/disk/by-label/COS_PASSIVE ro'), { bootedFrom: 'passive' });
  const r = parseCmdline('root=LABEL=COS_RECOVERY');
  t.is(r.bootedFrom, 'recovery');
  t.is(r.recoveryFlavour, undefined);
  t.like(parseCmdline('root=LABEL=COS_RECOVERY rd.live.squashimg=/cOS/recovery.squashfs'), { recoveryFlavour: 'squashfs' });
});

test('when the host uses custom labels, they are honoured and the defaults no longer match', (t) => {
  const labels = { active: 'DERIV_ACTIVE', passive: 'DERIV_PASSIVE', system: 'DERIV_SYSTEM', recovery: 'DERIV_RECOVERY' };
  t.is(parseCmdline('root=LABEL=DERIV_ACTIVE', labels).bootedFrom, 'active');
  t.is(parseCmdline('root=LABEL=DERIV_PASSIVE', labels).bootedFrom, 'passive');
  t.like(parseCmdline('root=LABEL=DERIV_SYSTEM', labels), { bootedFrom: 'recovery', recoveryFlavour: 'img' });
  t.like(parseCmdline('root=live:LABEL=DERIV_RECOVERY rd.live.squashimg=/cOS/recovery.squashfs', labels), {
    bootedFrom: 'recovery',
    recoveryFlavour: 'squashfs',
  });
  t.is(parseCmdline('root=LABEL=COS_ACTIVE', labels).bootedFrom, 'unknown');
  t.is(parseCmdline('root=live:LABEL=COS_RECOVERY rd.live.squashimg=/cOS/recovery.squashfs', labels).bootedFrom, 'live');
});

test('when labels only share a prefix, they are not confused (no substring matching)', (t) => {
  t.is(parseCmdline('root=LABEL=COS_ACTIVE2').bootedFrom, 'unknown');
  t.is(parseCmdline('root=LABEL=MY_COS_SYSTEM').bootedFrom, 'unknown');
  t.false(parseCmdline('root=LABEL=COS_ACTIVE upgrade_failure_reported=1').upgradeFailure);
});

test('when nothing identifies the image, bootedFrom is unknown', (t) => {
  t.is(parseCmdline('').bootedFrom, 'unknown');
  t.is(parseCmdline('root=UUID=1234 quiet').bootedFrom, 'unknown');
  t.is(parseCmdline('root=/dev/sda2 cos-img/filename=/cOS/custom.img').bootedFrom, 'unknown');
});

test('when values are quoted, they are split and unquoted as the kernel does', (t) => {
  t.deepEqual(splitCmdline('a="b c" "d=e f" "g h" i=j"k l"m  n= o'), [
    ['a', 'b c'],
    ['d', 'e f'],
    ['g h', true],
    ['i', 'j"k l"m'],
    ['n', ''],
    ['o', true],
  ]);
  const b = parseCmdline('  root="LABEL=COS_PASSIVE"  cos-img/filename="/cOS/passive.img"\textra="x y"  \n');
  t.is(b.bootedFrom, 'passive');
  t.is(b.tokens.get('extra'), 'x y');
});

test('when a parameter repeats, the last occurrence wins', (t) => {
  const b = parseCmdline('root=LABEL=COS_PASSIVE cos-img/filename=/cOS/passive.img root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img');
  t.is(b.bootedFrom, 'active');
  t.is(b.tokens.get('root'), 'LABEL=COS_ACTIVE');
});
