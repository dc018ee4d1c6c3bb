import test from 'ava';
import { readFile } from 'node:fs/promises';
import { parseBlkidExport, parseBlockDevices, toBlockDevice, unescapeBlkidValue } from '../../src/partitions/blkid.ts';

const fixture = (name: string): Promise<string> => readFile(new URL(`../fixtures/partitions/${name}`, import.meta.url), 'utf8');

test('cache-mode export output of a cOS-like disk gives one device per block, with labels, types and GPT names', async (t) => {
  const devices = parseBlockDevices(await fixture('blkid-export.txt'));
  t.deepEqual(
    devices.map((d) => d.device),
    ['/dev/loop0p2', '/dev/loop0p3', '/dev/loop0p1', '/dev/loop0p4', '/dev/loop0p5'],
  );
  t.deepEqual(devices[0], {
    device: '/dev/loop0p2',
    label: 'COS_OEM',
    fstype: 'ext4',
    uuid: 'dd29d4f3-0b15-4713-b7a9-b36f64afa440',
    partlabel: 'oem',
  });
  t.is(devices[2]?.fstype, 'vfat');
  t.is(devices[2]?.label, 'COS_GRUB');
  t.is(devices[2]?.uuid, 'FAE6-A348');
});

test('a backslash-escaped label (space and dollar) is unescaped', async (t) => {
  const devices = parseBlockDevices(await fixture('blkid-export.txt'));
  t.is(devices[1]?.label, 'my label$x');
  t.is(unescapeBlkidValue('a\\ b\\"c\\\\d'), 'a b"c\\d');
});

test('a partition without a filesystem has no label, type or uuid but keeps its GPT name', async (t) => {
  const devices = parseBlockDevices(await fixture('blkid-export.txt'));
  t.deepEqual(devices[4], { device: '/dev/loop0p5', partlabel: 'persistent' });
});

test('low-level probe output (-p) takes the GPT name from PART_ENTRY_NAME and ignores LABEL_FATBOOT', async (t) => {
  const [rec] = parseBlkidExport(await fixture('blkid-probe-vfat.txt'));
  t.truthy(rec);
  t.is(rec?.['PART_ENTRY_NUMBER'], '1');
  t.deepEqual(toBlockDevice(rec ?? {}), {
    device: '/dev/loop0p1',
    label: 'COS_GRUB',
    fstype: 'vfat',
    uuid: 'FAE6-A348',
    partlabel: 'efi',
  });
});

test('a new DEVNAME starts a new device even without a blank line, and CRLF line ends are tolerated', (t) => {
  const devices = parseBlockDevices('DEVNAME=/dev/a\r\nLABEL=A\r\nDEVNAME=/dev/b\nTYPE=ext2\n');
  t.deepEqual(devices, [{ device: '/dev/a', label: 'A' }, { device: '/dev/b', fstype: 'ext2' }]);
});

test('empty output gives no devices, and a record without DEVNAME uses the fallback device', (t) => {
  t.deepEqual(parseBlockDevices(''), []);
  t.deepEqual(parseBlockDevices('\n\n'), []);
  const [rec] = parseBlkidExport('LABEL=COS_ACTIVE\nTYPE=ext2\n');
  t.deepEqual(toBlockDevice(rec ?? {}, '/tmp/active.img'), { device: '/tmp/active.img', label: 'COS_ACTIVE', fstype: 'ext2' });
});

test('a value containing "=" keeps everything after the first "="', (t) => {
  const [rec] = parseBlkidExport('DEVNAME=/dev/x\nLABEL=a=b\n');
  t.is(rec?.['LABEL'], 'a=b');
});
