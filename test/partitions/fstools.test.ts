import test from 'ava';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { AgentError } from '../../src/model/errors.ts';
import {
  defaultSquashCompression,
  fsckExt2,
  isSquashfs,
  mkfsExt2,
  mksquashfs,
  mount,
  preallocate,
  probeLabel,
  readExtFile,
  readSquashfsFile,
  setExt2Label,
} from '../../src/partitions/index.ts';
import { runner, sh, tempDir } from './_util.ts';

const MiB = 1024 * 1024;

async function tinyTmpfs(t: Parameters<typeof tempDir>[0], dir: string, size: string): Promise<string> {
  const target = path.join(dir, 'tiny');
  const m = await mount(runner, 'tmpfs', target, { fstype: 'tmpfs', options: [`size=${size}`], mkdir: true });
  t.teardown(() => m.close());
  return target;
}

test('mkfsExt2 with a size creates a sparse ext2 image with the label, which fsck finds clean', async (t) => {
  const dir = await tempDir(t);
  const img = path.join(dir, 'transition.img');
  await mkfsExt2(runner, img, { label: 'COS_ACTIVE', sizeMiB: 16 });
  const st = await stat(img);
  t.is(st.size, 16 * MiB);
  t.true(st.blocks * 512 < 16 * MiB, 'sparse');
  t.is(await probeLabel(runner, img), 'COS_ACTIVE');
  t.regex(await sh(['blkid', '-p', '-s', 'TYPE', '-o', 'value', img]), /^ext2\n$/);
  await t.notThrowsAsync(fsckExt2(runner, img));
});

test('mkfsExt2 formats a preallocated file in place and can populate it from a directory', async (t) => {
  const dir = await tempDir(t);
  const tree = path.join(dir, 'tree');
  await mkdir(path.join(tree, 'etc'), { recursive: true });
  await writeFile(path.join(tree, 'etc/os-release'), 'VERSION="1.2.3"\n');
  const img = path.join(dir, 'pre.img');
  await preallocate(runner, img, 12 * MiB);
  await mkfsExt2(runner, img, { label: 'COS_SYSTEM', fromDir: tree });
  t.is((await stat(img)).size, 12 * MiB);
  t.is(await probeLabel(runner, img), 'COS_SYSTEM');
  t.regex(await sh(['debugfs', '-R', 'cat /etc/os-release', img]), /VERSION="1.2.3"/);
});

test('formatting a preallocated file keeps every block allocated (no discard hole-punching)', async (t) => {
  const dir = await tempDir(t);
  const img = path.join(dir, 'transition.img');
  await preallocate(runner, img, 64 * MiB);
  await mkfsExt2(runner, img, { label: 'COS_TRANSITION' });
  const st = await stat(img);
  t.true(st.blocks * 512 >= 64 * MiB, `only ${st.blocks * 512} bytes allocated after mkfs`);
});

test('mkfsExt2 of a missing file without a size throws STAGE_FAILED naming the file', async (t) => {
  const dir = await tempDir(t);
  const img = path.join(dir, 'missing.img');
  const err = await t.throwsAsync(mkfsExt2(runner, img, { label: 'COS_ACTIVE' }), { instanceOf: AgentError });
  t.is(err?.code, 'STAGE_FAILED');
  t.true(err?.message.includes(img));
});

test('a label longer than 16 bytes is refused before any tool runs (mke2fs would truncate it)', async (t) => {
  const dir = await tempDir(t);
  const img = path.join(dir, 'x.img');
  const err = await t.throwsAsync(mkfsExt2(runner, img, { label: 'COS_ACTIVE_TOO_LONG', sizeMiB: 8 }), { instanceOf: AgentError });
  t.is(err?.code, 'CONFIG_INVALID');
  t.true(err?.message.includes('COS_ACTIVE_TOO_LONG'));
  await t.throwsAsync(stat(img), { code: 'ENOENT' });
  await t.throwsAsync(setExt2Label(runner, img, ''), { instanceOf: AgentError });
});

test('setExt2Label relabels an image (active -> passive rotation)', async (t) => {
  const dir = await tempDir(t);
  const img = path.join(dir, 'passive.img');
  await mkfsExt2(runner, img, { label: 'COS_ACTIVE', sizeMiB: 8 });
  await setExt2Label(runner, img, 'COS_PASSIVE');
  t.is(await probeLabel(runner, img), 'COS_PASSIVE');
});

test('probeLabel is undefined for a file without a filesystem, a filesystem without a label, and a squashfs', async (t) => {
  const dir = await tempDir(t);
  const blank = path.join(dir, 'blank.img');
  await writeFile(blank, Buffer.alloc(MiB));
  t.is(await probeLabel(runner, blank), undefined);
  const unlabelled = path.join(dir, 'unlabelled.img');
  await writeFile(unlabelled, '');
  await sh(['truncate', '-s', '8M', unlabelled]);
  await sh(['mkfs.ext2', '-q', '-F', unlabelled]);
  t.is(await probeLabel(runner, unlabelled), undefined);
  const tree = path.join(dir, 'tree');
  await mkdir(tree);
  await writeFile(path.join(tree, 'f'), 'f');
  const sq = path.join(dir, 'r.squashfs');
  await mksquashfs(runner, tree, sq, { compression: ['-comp', 'gzip'] });
  t.is(await probeLabel(runner, sq), undefined);
});

test('fsckExt2 on a corrupted image throws FSCK_FAILED naming the file, with e2fsck output', async (t) => {
  const dir = await tempDir(t);
  const img = path.join(dir, 'broken.img');
  await mkfsExt2(runner, img, { label: 'COS_ACTIVE', sizeMiB: 8 });
  await sh(['debugfs', '-w', '-R', 'clri <2>', img]); // wipe the root directory inode
  const err = await t.throwsAsync(fsckExt2(runner, img), { instanceOf: AgentError });
  t.is(err?.code, 'FSCK_FAILED');
  t.true(err?.message.includes(img));
  t.regex(err?.message ?? '', /\(exit \d+\)/);
  t.regex(err?.message ?? '', /Root inode not allocated/);
});

test('preallocate allocates real blocks (not sparse) of the requested size', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'transition.img');
  await preallocate(runner, file, 10 * MiB);
  const st = await stat(file);
  t.is(st.size, 10 * MiB);
  t.true(st.blocks * 512 >= 10 * MiB);
});

test('preallocate on a filesystem without room throws NO_SPACE naming the file and removes the file it created', async (t) => {
  const dir = await tempDir(t);
  const tiny = await tinyTmpfs(t, dir, '1m');
  const file = path.join(tiny, 'transition.img');
  const err = await t.throwsAsync(preallocate(runner, file, 4 * MiB), { instanceOf: AgentError });
  t.is(err?.code, 'NO_SPACE');
  t.true(err?.message.includes(file));
  t.regex(err?.message ?? '', /4194304 bytes needed \(\d+ bytes free\)/);
  await t.throwsAsync(stat(file), { code: 'ENOENT' });
});

test('preallocate of a non-positive size throws before running fallocate', async (t) => {
  const dir = await tempDir(t);
  const err = await t.throwsAsync(preallocate(runner, path.join(dir, 'x'), 0), { instanceOf: AgentError });
  t.is(err?.code, 'STAGE_FAILED');
});

test('mksquashfs builds with 1 MiB blocks and xz (BCJ filter) by default, replacing an existing file', async (t) => {
  const dir = await tempDir(t);
  const tree = path.join(dir, 'tree');
  await mkdir(path.join(tree, 'etc'), { recursive: true });
  await writeFile(path.join(tree, 'etc/os-release'), 'VERSION="2"\n');
  const out = path.join(dir, 'transition.squashfs');
  await writeFile(out, 'old content that -noappend must replace');
  await mksquashfs(runner, tree, out);
  t.true(await isSquashfs(out));
  const info = await sh(['unsquashfs', '-s', out]);
  t.regex(info, /Block size 1048576/);
  t.regex(info, /Compression xz/);
  t.regex(info, /Filters selected: (x86|arm)/);
  t.regex(await sh(['unsquashfs', '-cat', out, 'etc/os-release']), /VERSION="2"/);
});

test('mksquashfs compression options replace the default (like elemental -x)', async (t) => {
  const dir = await tempDir(t);
  const tree = path.join(dir, 'tree');
  await mkdir(tree);
  await writeFile(path.join(tree, 'f'), 'f');
  const out = path.join(dir, 'r.squashfs');
  await mksquashfs(runner, tree, out, { compression: ['-comp', 'gzip'] });
  t.regex(await sh(['unsquashfs', '-s', out]), /Compression gzip/);
});

test('mksquashfs into a full filesystem throws NO_SPACE naming the output', async (t) => {
  const dir = await tempDir(t);
  const tiny = await tinyTmpfs(t, dir, '1m');
  const tree = path.join(dir, 'tree');
  await mkdir(tree);
  await writeFile(path.join(tree, 'random'), randomBytes(3 * MiB));
  const out = path.join(tiny, 'transition.squashfs');
  const err = await t.throwsAsync(mksquashfs(runner, tree, out, { compression: ['-comp', 'gzip'] }), { instanceOf: AgentError });
  t.is(err?.code, 'NO_SPACE');
  t.true(err?.message.includes(out));
});

test('defaultSquashCompression picks the BCJ filter of the architecture', (t) => {
  t.deepEqual(defaultSquashCompression('x64'), ['-comp', 'xz', '-Xbcj', 'x86']);
  t.deepEqual(defaultSquashCompression('arm64'), ['-comp', 'xz', '-Xbcj', 'arm']);
  t.deepEqual(defaultSquashCompression('riscv64'), ['-comp', 'xz']);
});

test('isSquashfs checks the magic, not the name: an ext2 image named .squashfs is not one', async (t) => {
  const dir = await tempDir(t);
  const fake = path.join(dir, 'recovery.squashfs');
  await mkfsExt2(runner, fake, { label: 'COS_SYSTEM', sizeMiB: 8 });
  t.false(await isSquashfs(fake));
  t.false(await isSquashfs(path.join(dir, 'missing.squashfs')));
  const short = path.join(dir, 'short');
  await writeFile(short, 'hsq');
  t.false(await isSquashfs(short));
  const magicOnly = path.join(dir, 'magic');
  await writeFile(magicOnly, 'hsqs');
  t.true(await isSquashfs(magicOnly));
  t.is((await readFile(magicOnly, 'utf8')).length, 4);
});

test('readExtFile reads a small regular file of an unmounted image, and refuses (undefined) a FIFO, a link, a big file, a missing one', async (t) => {
  const dir = await tempDir(t);
  const tree = path.join(dir, 'tree');
  await mkdir(path.join(tree, 'etc'), { recursive: true });
  await writeFile(path.join(tree, 'etc/os-release'), 'VERSION="1.2"\n');
  await writeFile(path.join(tree, 'etc/big'), Buffer.alloc(100 * 1024, 0x61));
  await sh(['mkfifo', path.join(tree, 'etc/fifo')]);
  await sh(['ln', '-s', '/etc/os-release', path.join(tree, 'etc/link')]);
  const img = path.join(dir, 'img');
  await mkfsExt2(runner, img, { label: 'T', sizeMiB: 8, fromDir: tree });
  t.is(await readExtFile(runner, img, '/etc/os-release'), 'VERSION="1.2"\n');
  t.is(await readExtFile(runner, img, '/etc/fifo'), undefined);
  t.is(await readExtFile(runner, img, '/etc/link'), undefined);
  t.is(await readExtFile(runner, img, '/etc/big'), undefined, 'over 64 KiB: not read');
  t.is((await readExtFile(runner, img, '/etc/big', { maxBytes: 200 * 1024 }))?.length, 100 * 1024);
  t.is(await readExtFile(runner, img, '/etc/missing'), undefined);
});

test('readSquashfsFile reads a small regular file of a squashfs image, and refuses (undefined) a FIFO, a link, a big file, a missing one', async (t) => {
  const dir = await tempDir(t);
  const tree = path.join(dir, 'tree');
  await mkdir(path.join(tree, 'usr/lib'), { recursive: true });
  await mkdir(path.join(tree, 'etc'), { recursive: true });
  await writeFile(path.join(tree, 'usr/lib/os-release'), 'VERSION="2.0"\n');
  await sh(['ln', '-s', '../usr/lib/os-release', path.join(tree, 'etc/os-release')]);
  await writeFile(path.join(tree, 'etc/big'), Buffer.alloc(100 * 1024, 0x61));
  await sh(['mkfifo', path.join(tree, 'etc/fifo')]);
  const img = path.join(dir, 'recovery.squashfs');
  await sh(['mksquashfs', tree, img, '-quiet', '-noappend']);
  t.is(await readSquashfsFile(runner, img, '/usr/lib/os-release'), 'VERSION="2.0"\n');
  t.is(await readSquashfsFile(runner, img, '/etc/os-release'), undefined, 'a symlink is not followed');
  t.is(await readSquashfsFile(runner, img, '/etc/fifo'), undefined);
  t.is(await readSquashfsFile(runner, img, '/etc/big'), undefined, 'over 64 KiB: not read');
  t.is((await readSquashfsFile(runner, img, '/etc/big', { maxBytes: 200 * 1024 }))?.length, 100 * 1024);
  t.is(await readSquashfsFile(runner, img, '/etc/missing'), undefined);
  await t.throwsAsync(readSquashfsFile(runner, img, '/etc/*'), { message: /unsupported path/ });
});
