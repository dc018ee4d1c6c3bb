/**
 * A `dir:` source (elemental's `--system dir:PATH`), staged by the real cosctl into the real active.img: the slot has
 * the tree entry for entry (the listing the OCI path is compared with umoci's by), its record says where it came from
 * and that no signature applies, and a policy can refuse it.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createCosHost, type CosHost } from '../helpers/cos-host.ts';
import { buildLayout, makeTar, type TarEntry } from '../helpers/oci-layout.ts';
import { osTree } from '../helpers/os-image.ts';
import { listing } from '../helpers/tree-listing.ts';
import { cosctl } from '../helpers/cosctl.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import type { HostStatusDocument } from '../../src/model/host.ts';

const exec = promisify(execFile);
const T1 = new Date('2023-05-06T07:08:09Z');
/** Dirs the agent creates or re-modes in every image (cos-layout.md 2.5 step 7), plus mkfs's lost+found. */
const AGENT_OWNED = new Set(['.', 'lost+found', 'run', 'dev', 'boot', 'usr/local', 'oem', 'proc', 'sys', 'tmp']);
const keep = (line: string): boolean => {
  const rel = line.startsWith('xattrs ') ? line.slice(7, line.indexOf(':')) : line.slice(0, line.indexOf(' '));
  return !AGENT_OWNED.has(rel) && !rel.startsWith('lost+found');
};

/** A source tree with what a tree copy can lose: hard links, a FIFO, a device node, setuid, owners, an xattr, mtimes. */
async function sourceTree(work: string, version: string): Promise<string> {
  const entries: TarEntry[] = [
    ...osTree(version),
    { name: 'usr/bin/sudo', content: 'sudo', mode: 0o4755, mtime: T1 },
    { name: 'usr/bin/ping', content: 'ping', mode: 0o755, mtime: T1, pax: { 'SCHILY.xattr.user.purpose': 'net' } },
    { name: 'usr/bin/ping6', type: 'link', linkname: 'usr/bin/ping' },
    { name: 'home/', mtime: T1 },
    { name: 'home/cos/', mode: 0o700, uid: 1000, gid: 1000, mtime: T1 },
    { name: 'home/cos/.profile', content: 'export X=1\n', uid: 1000, gid: 1000, mtime: T1 },
    { name: 'var/spool/', mtime: T1 },
    { name: 'var/spool/fifo', type: 'fifo', mode: 0o600, mtime: T1 },
    { name: 'var/spool/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666, mtime: T1 },
  ];
  const layout = path.join(work, 'layout');
  await buildLayout(layout, 'v', { layers: [{ tar: await makeTar(entries) }] });
  const tree = path.join(work, 'tree');
  await exec('umoci', ['raw', 'unpack', '--image', `${layout}:v`, tree]);
  return tree;
}

async function withHost(t: import('ava').ExecutionContext): Promise<{ host: CosHost; work: string; baseline: Awaited<ReturnType<CosHost['leaks']>> }> {
  const work = await mkdtemp(path.join(tmpdir(), 'dir-source-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  // The host's own mounts and disk loop: what the agent leaves mounted or attached is anything beyond them.
  return { host, work, baseline: await host.leaks() };
}

async function activeListing(host: CosHost, work: string): Promise<string[]> {
  const mnt = path.join(work, 'active');
  await mkdir(mnt);
  await exec('mount', ['-o', 'loop,ro', host.statePath('cOS/active.img'), mnt]);
  try {
    return (await listing(mnt)).filter(keep);
  } finally {
    await exec('umount', ['-d', mnt]);
  }
}

test.serial('cosctl upgrade --source dir:PATH stages the tree entry for entry; status says no signature applies', async (t) => {
  const { host, work } = await withHost(t);
  const tree = await sourceTree(work, '2.0.0');
  const r = await cosctl(host, ['upgrade', '--source', `dir:${tree}`]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`Upgraded active slot to dir:${tree} version 2\\.0\\.0 \\[a local tree: no signature applies\\]`));

  const ours = await activeListing(host, work);
  t.deepEqual(ours, (await listing(tree)).filter(keep));
  const joined = ours.join('\n');
  for (const needle of ['usr/bin/sudo mode=4755', 'same inode: usr/bin/ping usr/bin/ping6', 'char 1,3', 'fifo', 'user.purpose=0x6e6574', 'home/cos mode=0700 uid=1000 gid=1000']) {
    t.true(joined.includes(needle), needle);
  }

  const doc = JSON.parse((await cosctl(host, ['status', '--json'])).stdout) as HostStatusDocument;
  const active = doc.status.slots.active;
  t.is(active.verification, 'not-applicable');
  t.is(active.version, '2.0.0');
  t.is(active.image, `dir://${tree}`, 'recorded in elemental\'s URI form');
  t.is(active.imageDigest, null, 'a local tree has no digest');
  t.is(doc.status.nextBoot.slot, 'active');
  const human = (await cosctl(host, ['status'])).stdout;
  t.regex(human, new RegExp(`dir:${tree}`));
  t.regex(human, /not applicable: dir source/);
  const state = await readFile(host.statePath('state.yaml'), 'utf8');
  t.regex(state, new RegExp(`source: dir://${tree}`));
  t.regex(state, /verification: not-applicable/);
  t.regex(state, /verification-detail: dir source/);
});

test.serial('dirSources: refuse in policy.yaml refuses a dir: source before anything is written', async (t) => {
  const { host, work, baseline } = await withHost(t);
  const tree = await sourceTree(work, '2.0.0');
  await mkdir(path.join(host.root, 'etc/cos-agent'), { recursive: true });
  await writeFile(path.join(host.root, 'etc/cos-agent/policy.yaml'), 'dirSources: refuse\n');
  const before = await host.grub('COS_STATE').crc('/cOS/active.img');
  const r = await cosctl(host, ['upgrade', '--image', `dir://${tree}`]);
  t.is(r.code, EXIT_CODES.VERIFY_FAILED.exit, r.stderr);
  t.regex(r.stderr, /policy\.yaml refuses dir: sources/);
  t.deepEqual(await host.grub('COS_STATE').crc('/cOS/active.img'), before, 'active.img untouched');
  t.deepEqual(await host.leaks(), baseline);

  await writeFile(path.join(host.root, 'etc/cos-agent/policy.yaml'), 'dirSources: sometimes\n');
  const bad = await cosctl(host, ['upgrade', '--image', `dir:${tree}`]);
  t.is(bad.code, EXIT_CODES.CONFIG_INVALID.exit, bad.stderr);
  t.regex(bad.stderr, /policy\.yaml.*dirSources.*must be allow or refuse/);
});

test.serial('bad dir: sources: a missing tree, a file, both --image and --source, check of a tree', async (t) => {
  const { host, work, baseline } = await withHost(t);
  const missing = await cosctl(host, ['upgrade', '--source', `dir:${work}/nope`]);
  t.is(missing.code, EXIT_CODES.CONFIG_INVALID.exit, missing.stderr);
  t.regex(missing.stderr, new RegExp(`dir source ${work}/nope: no such directory`));
  await writeFile(path.join(work, 'file'), 'x');
  const file = await cosctl(host, ['upgrade', '--source', `dir:${work}/file`]);
  t.is(file.code, EXIT_CODES.CONFIG_INVALID.exit, file.stderr);
  t.regex(file.stderr, /is not a directory/);
  const relative = await cosctl(host, ['upgrade', '--source', 'dir:tree']);
  t.is(relative.code, EXIT_CODES.REFERENCE_INVALID.exit, relative.stderr);
  const both = await cosctl(host, ['upgrade', '--source', `dir:${work}`, '--image', 'reg/x:1']);
  t.is(both.code, EXIT_CODES.USAGE.exit, both.stderr);
  t.is(both.stderr.trim().split('\n').length, 1, both.stderr);
  const check = await cosctl(host, ['--no-daemon', 'check', '--image', `dir:${work}`]);
  t.is(check.code, EXIT_CODES.NOT_SUPPORTED.exit, check.stderr);
  t.deepEqual(await host.leaks(), baseline);
});
