import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../src/model/errors.ts';
import { attachLoop, listLoopDevices, loopBackingFile, loopBackingIdentity } from '../../src/partitions/index.ts';
import { runner, sh, tempDir } from './_util.ts';

async function imageFile(dir: string, name: string, size = '4M'): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, '');
  await sh(['truncate', '-s', size, file]);
  return file;
}

const sysfs = (device: string, rel: string): Promise<string> =>
  readFile(`/sys/block/${path.basename(device)}/${rel}`, 'utf8').then((s) => s.trim());

test('attachLoop attaches the file read-write and close() detaches it', async (t) => {
  const dir = await tempDir(t);
  const file = await imageFile(dir, 'a.img');
  const loop = await attachLoop(runner, file);
  t.teardown(() => loop.close());
  t.regex(loop.device, /^\/dev\/loop\d+$/);
  t.is(loop.file, file);
  t.is(await loopBackingFile(loop.device), file);
  t.is(await sysfs(loop.device, 'ro'), '0');
  t.true((await listLoopDevices()).some((l) => l.device === loop.device && l.backingFile === file));
  await loop.close();
  t.not(await loopBackingFile(loop.device), file, 'detached (the number may already serve another test)');
});

test('read-only and partscan options reach the kernel', async (t) => {
  const dir = await tempDir(t);
  const file = await imageFile(dir, 'b.img');
  const loop = await attachLoop(runner, file, { readOnly: true, partscan: true });
  t.teardown(() => loop.close());
  t.is(await sysfs(loop.device, 'ro'), '1');
  t.is(await sysfs(loop.device, 'loop/partscan'), '1');
});

test('close() is idempotent, also when called concurrently', async (t) => {
  const dir = await tempDir(t);
  const loop = await attachLoop(runner, await imageFile(dir, 'c.img'));
  t.teardown(() => loop.close());
  await Promise.all([loop.close(), loop.close()]);
  await loop.close();
  t.false((await loopBackingFile(loop.device))?.startsWith(dir) ?? false, 'detached');
});

test('await using detaches the loop device at the end of the scope', async (t) => {
  const dir = await tempDir(t);
  const file = await imageFile(dir, 'd.img');
  let device = '';
  {
    await using loop = await attachLoop(runner, file);
    device = loop.device;
    t.is(await loopBackingFile(device), file);
  }
  t.not(await loopBackingFile(device), file, 'detached');
});

test('close() leaves alone a loop number that was detached externally and reused for another file', async (t) => {
  const dir = await tempDir(t);
  const other = await imageFile(dir, 'other.img');
  // Another test may grab the freed number first: then try again with a new device.
  for (let attempt = 1; ; attempt++) {
    const mine = await attachLoop(runner, await imageFile(dir, `mine${attempt}.img`));
    t.teardown(() => mine.close());
    await sh(['losetup', '-d', mine.device]);
    const reused = await sh(['losetup', mine.device, other]).then(() => true, () => false);
    if (!reused) {
      if (attempt < 5) continue;
      t.fail(`could not reattach ${mine.device} in 5 attempts`);
      return;
    }
    t.teardown(() => sh(['losetup', '-d', mine.device]).then(() => undefined, () => undefined));
    await mine.close();
    t.is(await loopBackingFile(mine.device), other);
    return;
  }
});

test('close() still detaches after the backing file was renamed (identity is the inode, not the path)', async (t) => {
  const dir = await tempDir(t);
  const file = await imageFile(dir, 'active.img');
  const loop = await attachLoop(runner, file);
  t.teardown(() => loop.close());
  const before = await loopBackingIdentity(runner, loop.device);
  await sh(['mv', file, path.join(dir, 'passive.img')]);
  t.is(await loopBackingIdentity(runner, loop.device), before);
  await loop.close();
  t.not(await loopBackingFile(loop.device), path.join(dir, 'passive.img'), 'detached');
});

test('attaching a missing file throws MOUNT_FAILED naming the file', async (t) => {
  const dir = await tempDir(t);
  const missing = path.join(dir, 'missing.img');
  const err = await t.throwsAsync(attachLoop(runner, missing), { instanceOf: AgentError });
  t.is(err?.code, 'MOUNT_FAILED');
  t.true(err?.message.includes(missing));
});
