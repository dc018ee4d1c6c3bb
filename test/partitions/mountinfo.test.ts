import test from 'ava';
import { readFile } from 'node:fs/promises';
import { findMountAt, isReadOnly, parseMountInfo, unescapeMountField, type MountInfo } from '../../src/partitions/mountinfo.ts';

const fixture = (): Promise<string> => readFile(new URL('../fixtures/partitions/mountinfo.txt', import.meta.url), 'utf8');

test('every line of a captured mountinfo is parsed with ids, device number, fs type, source and options', async (t) => {
  const text = await fixture();
  const mounts = parseMountInfo(text);
  t.is(mounts.length, text.trim().split('\n').length);
  const rootfs = mounts.find((m) => m.mountPoint === '/');
  t.deepEqual(rootfs, {
    id: 27,
    parent: 1,
    majorMinor: '254:0',
    root: '/',
    mountPoint: '/',
    options: ['rw', 'relatime'],
    optionalFields: [],
    fstype: 'ext4',
    source: '/dev/vda',
    superOptions: ['rw', 'discard', 'resv_strict', 'resuid=65534', 'resgid=65534'],
  });
});

test('octal escapes in mount points and sources are decoded (\\040 space, \\134 backslash)', async (t) => {
  const mounts = parseMountInfo(await fixture());
  const spaced = mounts.find((m) => m.id === 42);
  t.is(spaced?.mountPoint, '/tmp/tmp.uAw9d83Gg8/sp ace');
  t.is(spaced?.source, 'tmp fs');
  const back = mounts.find((m) => m.id === 44);
  t.is(back?.mountPoint, '/tmp/tmp.uAw9d83Gg8/back\\slash');
  t.is(back?.source, '/dev/loop0p4');
  t.is(unescapeMountField('a\\011b\\012c'), 'a\tb\nc');
});

test('optional fields (shared:N) are kept apart and do not shift the fs type and source', async (t) => {
  const mounts = parseMountInfo(await fixture());
  const bind = mounts.find((m) => m.id === 43);
  t.deepEqual(bind?.optionalFields, ['shared:1']);
  t.is(bind?.fstype, 'tmpfs');
  t.deepEqual(bind?.superOptions, ['rw', 'size=1024k']);
  const many = parseMountInfo('50 27 0:40 /sub /mnt/x rw shared:3 master:1 propagate_from:1 - ext4 /dev/sda1 rw\n');
  t.deepEqual(many[0]?.optionalFields, ['shared:3', 'master:1', 'propagate_from:1']);
  t.is(many[0]?.root, '/sub');
  t.is(many[0]?.source, '/dev/sda1');
});

test('read-only mounts are recognised from the per-mount options', async (t) => {
  const mounts = parseMountInfo(await fixture());
  t.true(isReadOnly(mounts.find((m) => m.id === 44) as MountInfo));
  t.false(isReadOnly(mounts.find((m) => m.id === 27) as MountInfo));
});

test('blank and malformed lines are skipped', (t) => {
  const mounts = parseMountInfo('\ngarbage line\n22 27 0:21 / /proc rw,relatime - proc proc rw\n1 2 3\n');
  t.is(mounts.length, 1);
  t.is(mounts[0]?.mountPoint, '/proc');
});

test('findMountAt returns the visible (last) mount of stacked mounts on one point', (t) => {
  const mounts = parseMountInfo(
    '60 27 7:0 / /mnt rw - ext4 /dev/loop0 rw\n61 60 0:50 / /mnt rw - tmpfs tmpfs rw\n62 27 0:51 / /other rw - tmpfs t rw\n',
  );
  t.is(findMountAt('/mnt', mounts)?.id, 61);
  t.is(findMountAt('/nowhere', mounts), undefined);
});
