import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { mkdir, open, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../src/model/errors.ts';
import type { Command, CommandResult, Runner } from '../../src/sys/runner.ts';
import {
  findMountAt,
  findMountOf,
  isReadOnly,
  listLoopDevices,
  mkfsExt2,
  mount,
  mountImage,
  parseMountInfo,
  readMounts,
  remount,
} from '../../src/partitions/index.ts';
import { labelledLoop, runner, sh, tempDir, uniqueLabel } from './_util.ts';

const mountedAt = async (target: string) => findMountAt(target, await readMounts());

test('mount() mounts with type and options, and close() unmounts, idempotently', async (t) => {
  const dir = await tempDir(t);
  const target = path.join(dir, 'a', 'b');
  const m = await mount(runner, 'tmpfs', target, { fstype: 'tmpfs', options: ['size=1m', 'mode=0700'], mkdir: true });
  t.teardown(() => m.close());
  t.is(m.target, target);
  const info = await mountedAt(target);
  t.is(info?.fstype, 'tmpfs');
  t.true(info?.superOptions.includes('size=1024k'));
  t.true(info?.superOptions.includes('mode=700'));
  await Promise.all([m.close(), m.close()]);
  await m.close();
  t.is(await mountedAt(target), undefined);
});

test('a failing mount throws MOUNT_FAILED naming the source and the target', async (t) => {
  const dir = await tempDir(t);
  const junk = path.join(dir, 'junk.img');
  await writeFile(junk, Buffer.alloc(1 << 20));
  const target = path.join(dir, 'mnt');
  const err = await t.throwsAsync(mount(runner, junk, target, { fstype: 'ext4', mkdir: true }), { instanceOf: AgentError });
  t.is(err?.code, 'MOUNT_FAILED');
  t.true(err?.message.includes(junk));
  t.true(err?.message.includes(target));
});

test('close() of a mount that someone else already unmounted succeeds', async (t) => {
  const dir = await tempDir(t);
  const target = path.join(dir, 'gone');
  const m = await mount(runner, 'tmpfs', target, { fstype: 'tmpfs', mkdir: true });
  await sh(['umount', target]);
  await t.notThrowsAsync(m.close());
});

/** The real runner, with a hook run after each failed command (to release a busy mount between attempts). */
class HookedRunner implements Runner {
  readonly commands: string[][] = [];
  onFailure: ((cmd: Command) => Promise<void>) | undefined;
  async run(cmd: Command): Promise<CommandResult> {
    this.commands.push([...cmd.argv]);
    try {
      return await runner.run(cmd);
    } catch (err) {
      await this.onFailure?.(cmd);
      throw err;
    }
  }
}

test('an unmount that is busy is retried once, and succeeds when the mount was released meanwhile', async (t) => {
  const dir = await tempDir(t);
  const target = path.join(dir, 'busy');
  const hooked = new HookedRunner();
  const m = await mount(hooked, 'tmpfs', target, { fstype: 'tmpfs', mkdir: true });
  t.teardown(() => m.close());
  const fh = await open(path.join(target, 'held'), 'w');
  hooked.onFailure = async () => {
    hooked.onFailure = undefined;
    await fh.close();
  };
  await m.close();
  t.is(hooked.commands.filter((c) => c[0] === 'umount').length, 2);
  t.is(await mountedAt(target), undefined);
});

test('an unmount that stays busy throws MOUNT_FAILED naming the target, and close() can be retried later', async (t) => {
  const dir = await tempDir(t);
  const target = path.join(dir, 'stuck');
  const m = await mount(runner, 'tmpfs', target, { fstype: 'tmpfs', mkdir: true });
  const fh = await open(path.join(target, 'held'), 'w');
  t.teardown(async () => {
    await fh.close().catch(() => {});
    await m.close();
  });
  const err = await t.throwsAsync(m.close(), { instanceOf: AgentError });
  t.is(err?.code, 'MOUNT_FAILED');
  t.true(err?.message.includes(target));
  t.truthy(await mountedAt(target));
  await fh.close();
  await m.close();
  t.is(await mountedAt(target), undefined);
});

test('mountImage attaches and mounts an ext2 image; remount switches ro and rw; close undoes both', async (t) => {
  const dir = await tempDir(t);
  const img = path.join(dir, 'active.img');
  await mkfsExt2(runner, img, { label: 'COS_ACTIVE', sizeMiB: 8 });
  const target = path.join(dir, 'mnt');
  await mkdir(target);
  const m = await mountImage(runner, img, target);
  t.teardown(() => m.close());
  const info = await mountedAt(target);
  t.is(info?.fstype, 'ext2');
  t.regex(info?.source ?? '', /^\/dev\/loop\d+$/);
  t.false(isReadOnly(info as NonNullable<typeof info>));
  await writeFile(path.join(target, 'x'), 'x');

  await remount(runner, target, 'ro');
  t.true(isReadOnly((await mountedAt(target)) as NonNullable<typeof info>));
  await t.throwsAsync(writeFile(path.join(target, 'y'), 'y'), { code: 'EROFS' });
  await remount(runner, target, 'rw');
  await writeFile(path.join(target, 'y'), 'y');

  await m.close();
  t.is(await mountedAt(target), undefined);
  t.false((await listLoopDevices()).some((l) => l.backingFile.startsWith(img)));
});

// Serial: the namespace it makes copies the mounts of every test running at that moment.
test.serial('an image mount copied into another mount namespace: released() names the process holding it, and resolves once it is gone', async (t) => {
  const dir = await tempDir(t);
  const img = path.join(dir, 'transition.img');
  await mkfsExt2(runner, img, { label: 'COS_TRANSITION', sizeMiB: 8 });
  const target = path.join(dir, 'mnt');
  await mkdir(target);
  const m = await mountImage(runner, img, target);
  t.teardown(() => m.close());
  // As `unshare --mount --propagation private` (the polkit tests do it) copies every mount of the moment.
  const holder = spawn('unshare', ['--mount', '--propagation', 'private', 'sleep', '60'], { stdio: 'ignore' });
  t.teardown(() => holder.kill('SIGKILL'));
  for (let i = 0; i < 100; i++) {
    const info = await readFile(`/proc/${holder.pid}/mountinfo`, 'utf8').catch(() => '');
    if (info.includes(` ${target} `)) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  await m.close();
  t.is(await mountedAt(target), undefined, 'unmounted here');
  const err = await t.throwsAsync(m.released!({ timeoutMs: 500 }));
  t.true(err instanceof AgentError && err.code === 'MOUNT_FAILED', String(err));
  t.regex(err?.message ?? '', new RegExp(`${img.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is still in use through /dev/loop\\d+ after it was unmounted: mounted in the mount namespace of pid ${holder.pid} \\(sleep\\)`));
  holder.kill('SIGKILL');
  await once(holder, 'exit');
  await m.released!({ timeoutMs: 5000 });
  t.false((await listLoopDevices()).some((l) => l.backingFile.startsWith(img)), 'the loop device is gone');
});

test('mountImage read-only mounts ro on a read-only loop device', async (t) => {
  const dir = await tempDir(t);
  const img = path.join(dir, 'ro.img');
  await mkfsExt2(runner, img, { label: 'COS_PASSIVE', sizeMiB: 8 });
  const target = path.join(dir, 'mnt');
  await mkdir(target);
  await using m = await mountImage(runner, img, target, { readOnly: true, fstype: 'ext2' });
  const info = await mountedAt(m.target);
  t.true(info !== undefined && isReadOnly(info));
});

test('mountImage detaches its loop device again when the mount fails', async (t) => {
  const dir = await tempDir(t);
  const junk = path.join(dir, 'junk.img');
  await writeFile(junk, Buffer.alloc(1 << 20));
  const target = path.join(dir, 'mnt');
  await mkdir(target);
  const err = await t.throwsAsync(mountImage(runner, junk, target, { fstype: 'ext2' }));
  t.is((err as AgentError).code, 'MOUNT_FAILED');
  t.false((await listLoopDevices()).some((l) => l.backingFile === junk));
});

test('remount of something that is not a mount point throws MOUNT_FAILED naming it', async (t) => {
  const dir = await tempDir(t);
  const err = await t.throwsAsync(remount(runner, dir, 'rw'));
  t.is((err as AgentError).code, 'MOUNT_FAILED');
  t.true(err?.message.includes(dir));
});

test('findMountOf finds a mounted device by its path, a symlink to it, and another node with its major:minor', async (t) => {
  const dir = await tempDir(t);
  const loop = await labelledLoop(t, dir, uniqueLabel());
  const target = path.join(dir, 'mnt');
  const m = await mount(runner, loop.device, target, { options: ['ro'], mkdir: true });
  t.teardown(() => m.close());
  const mounts = await readMounts();
  t.is(findMountOf(loop.device, mounts)?.mountPoint, target);
  const link = path.join(dir, 'by-label-link');
  await symlink(loop.device, link);
  t.is(findMountOf(link, mounts)?.mountPoint, target);
  const devno = (await sh(['stat', '-c', '%t %T', loop.device])).trim().split(' ').map((h) => String(parseInt(h, 16)));
  const node = path.join(dir, 'other-node');
  await sh(['mknod', node, 'b', devno[0] ?? '', devno[1] ?? '']);
  t.is(findMountOf(node, mounts)?.mountPoint, target);
  t.is(findMountOf('/dev/nonexistent-device', mounts), undefined);
});

test('findMountOf prefers a mount of the whole filesystem over a bind mount of a subdirectory', (t) => {
  const mounts = parseMountInfo(
    [
      '70 27 259:3 /sub /mnt/bind rw - ext4 /dev/fake-disk-p3 rw',
      '71 27 259:3 / /mnt/whole ro - ext4 /dev/fake-disk-p3 ro',
      '72 27 259:4 / /mnt/other rw - ext4 /dev/fake-disk-p4 rw',
    ].join('\n'),
  );
  t.is(findMountOf('/dev/fake-disk-p3', mounts)?.mountPoint, '/mnt/whole');
  t.is(findMountOf('/dev/fake-disk-p4', mounts)?.mountPoint, '/mnt/other');
});
