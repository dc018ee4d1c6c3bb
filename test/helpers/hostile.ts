/**
 * Test helper: what a hostile image or input must leave untouched on a cOS host fixture (shared by
 * test/integration/hostile-image.test.ts and test/integration/hostile-corpus.test.ts):
 *   - a canary tree in the host's root (`<root>/canary`: a file, a directory with a file, an os-release with the
 *     host's own data), compared entry by entry (path, type, mode, size, mtime, content hash, link target);
 *   - the host's /etc;
 *   - the mount table (/proc/self/mountinfo), without the scratch mounts of other tests running at the same time;
 *   - host.leaks() (mounts and loop devices left under the host's temp dir);
 *   - the slots: both images' bytes and labels, the GRUB blocks, COS_STATE read-only.
 */
import { cacheDir } from '../../vm-tests/lib/cache.ts';
import type { ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { CosHost } from './cos-host.ts';
import { imageLabel, mountOptions, sha256File } from './cosctl.ts';
import { parseMountInfo } from '../../src/partitions/mountinfo.ts';

export interface Baseline {
  canary: string[];
  hostEtc: string[];
  mounts: string[];
  leaks: { mounts: string[]; loops: string[] };
  slots: string[];
}

/** Every entry below `dir`: path, type, mode, size, mtime and (files) content hash; symlink targets. */
export async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const p = path.join(dir, rel);
    const st = await lstat(p);
    let what = `${rel} mode=${(st.mode & 0o177777).toString(8)} size=${st.size} mtime=${st.mtimeMs}`;
    if (st.isFile()) what += ` sha256=${createHash('sha256').update(await readFile(p)).digest('hex')}`;
    if (st.isSymbolicLink()) what += ` -> ${await readlink(p)}`;
    out.push(what);
    if (st.isDirectory()) for (const e of (await readdir(p)).sort()) await walk(path.join(rel, e));
  };
  await walk('.');
  return out;
}

/**
 * The mount table (/proc/self/mountinfo: mount point, fs root, source, type, options), without the scratch mounts
 * of other tests running at the same time (under the temp dir, outside this host's own).
 */
export async function mountTable(host: CosHost): Promise<string[]> {
  const mine = path.dirname(host.root);
  const tmp = tmpdir();
  // The VM suite's cache builds run beside these tests (scripts/test.sh prebuilds): debootstrap mounts /proc in its
  // chroot there. Not this host's either.
  const vmCache = `${cacheDir()}/`;
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'))
    .filter((m) => !(m.mountPoint.startsWith(`${tmp}/`) && !(m.mountPoint === mine || m.mountPoint.startsWith(`${mine}/`))))
    .filter((m) => !m.mountPoint.startsWith(vmCache))
    .map((m) => `${m.mountPoint} ${m.root} ${m.source} ${m.fstype} ${m.options.join(',')}`)
    .sort();
}

/** Both slot images (files, bytes, labels), the GRUB blocks and whether COS_STATE is read-only, as lines. */
export async function slots(host: CosHost): Promise<string[]> {
  return [
    ...(await readdir(host.statePath('cOS'))).sort(),
    await sha256File(host.statePath('cOS/active.img')),
    await sha256File(host.statePath('cOS/passive.img')),
    await imageLabel(host.statePath('cOS/active.img')),
    await imageLabel(host.statePath('cOS/passive.img')),
    await sha256File(host.statePath('grub_oem_env')),
    await sha256File(host.statePath('boot_assessment')),
    (await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro') ? 'COS_STATE ro' : 'COS_STATE rw',
  ];
}

/** The canary dir in the host's root: a file, a directory with a file, an os-release with the host's own data. */
export async function plantCanaries(host: CosHost): Promise<string> {
  const canary = path.join(host.root, 'canary');
  await mkdir(path.join(canary, 'existing-dir'), { recursive: true });
  await writeFile(path.join(canary, 'keep'), 'untouched\n');
  await writeFile(path.join(canary, 'existing-dir/keep'), 'untouched\n');
  await writeFile(path.join(canary, 'os-release'), 'NAME="host"\nVERSION="HOST-LEAK"\nGRUB_ENTRY_NAME="HOST-LEAK"\n');
  return canary;
}

export async function baseline(host: CosHost, canary: string): Promise<Baseline> {
  return {
    canary: await tree(canary),
    hostEtc: await tree(path.join(host.root, 'etc')),
    mounts: await mountTable(host),
    leaks: await host.leaks(),
    slots: await slots(host),
  };
}

/** Nothing outside the image was touched: canaries, the host's /etc, the mount table, no mount or loop left. */
export async function untouched(t: ExecutionContext, host: CosHost, canary: string, before: Baseline): Promise<void> {
  t.deepEqual(await tree(canary), before.canary, 'the canaries in the host root are untouched (nothing created, changed or removed)');
  t.deepEqual(await tree(path.join(host.root, 'etc')), before.hostEtc, "the host's /etc is untouched");
  t.deepEqual(await mountTable(host), before.mounts, '/proc/self/mountinfo is as it was');
  t.deepEqual(await host.leaks(), before.leaks, 'no mount or loop device left behind');
}
