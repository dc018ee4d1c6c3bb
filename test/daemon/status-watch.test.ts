import test from 'ava';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { STATUS_SOURCES, StatusWatcher } from '../../src/daemon/status-watch.ts';
import { SysRoot } from '../../src/sys/root.ts';

async function rootWith(dirs: readonly string[]): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-status-watch-'));
  for (const d of dirs) await mkdir(path.join(dir, d), { recursive: true });
  return dir;
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await sleep(10);
}

test('a write or rename of a status source calls back once, after the debounce; other names in those dirs do not', async (t) => {
  const dir = await rootWith(STATUS_SOURCES.map((s) => s.dir));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  let calls = 0;
  const w = new StatusWatcher(new SysRoot(dir), () => calls++, { debounceMs: 30 });
  t.teardown(() => w.stop());
  w.start();
  t.deepEqual(w.watchedDirs, STATUS_SOURCES.map((s) => s.dir));

  // cosd's own read-only mounts and temp files: ignored.
  await mkdir(path.join(dir, 'run/cos-agent/ro-abc123'));
  await writeFile(path.join(dir, 'run/initramfs/cos-state/cOS/transition.img'), '');
  await writeFile(path.join(dir, 'oem/other'), '');
  await sleep(150);
  t.is(calls, 0);

  // A burst (boot_assessment written in place, then grubenv replaced by rename) is one call.
  await writeFile(path.join(dir, 'run/initramfs/cos-state/boot_assessment'), 'x');
  await writeFile(path.join(dir, 'oem/.grubenv.tmp'), 'y');
  await rename(path.join(dir, 'oem/.grubenv.tmp'), path.join(dir, 'oem/grubenv'));
  await until(() => calls > 0);
  await sleep(100);
  t.is(calls, 1);

  await rename(path.join(dir, 'run/initramfs/cos-state/cOS/transition.img'), path.join(dir, 'run/initramfs/cos-state/cOS/active.img'));
  await until(() => calls > 1);
  t.is(calls, 2, 'a slot switch');
  await writeFile(path.join(dir, 'run/cos-agent/last-transaction.json'), '{}');
  await sleep(100);
  t.is(calls, 2, 'cosd\'s own job record is not a status source');
  await writeFile(path.join(dir, 'run/cos-agent/last-upgrade.json'), '{}');
  await until(() => calls > 2);
  t.is(calls, 3, 'an outcome recorded by an in-process cosctl');

  w.stop();
  t.deepEqual(w.watchedDirs, []);
  await writeFile(path.join(dir, 'run/initramfs/cos-state/state.yaml'), 'z');
  await sleep(100);
  t.is(calls, 3, 'nothing after stop');
});

test('directories a host does not have are skipped (booted from recovery: no COS_STATE mount)', async (t) => {
  const dir = await rootWith(['oem', 'run/cos-agent']);
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const w = new StatusWatcher(new SysRoot(dir), () => undefined);
  t.teardown(() => w.stop());
  w.start();
  t.deepEqual(w.watchedDirs, ['/oem', '/run/cos-agent']);
});

test('a source directory that is there but cannot be watched (ELOOP) is reported, not taken for an absent one', async (t) => {
  const dir = await rootWith(['run/cos-agent']);
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await symlink('oem', path.join(dir, 'oem')); // points at itself
  const errors: Array<{ dir: string; code: string | undefined }> = [];
  const w = new StatusWatcher(new SysRoot(dir), () => undefined, { onWatchError: (d, e) => errors.push({ dir: d, code: e.code }) });
  t.teardown(() => w.stop());
  w.start();
  t.deepEqual(w.watchedDirs, ['/run/cos-agent']);
  t.deepEqual(errors, [{ dir: '/oem', code: 'ELOOP' }], 'the missing COS_STATE and /run/cos dirs are no error');
});
