/**
 * A pulled image, staged by the real cosctl into the real active.img, has exactly the files, links, modes, owners,
 * mtimes, xattrs and whiteout results of `umoci raw unpack` of the same image.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createCosHost } from '../helpers/cos-host.ts';
import { startRegistry } from '../helpers/registry.ts';
import { buildLayout, makeTar, type TarEntry } from '../helpers/oci-layout.ts';
import { listing } from '../helpers/tree-listing.ts';
import { cosctl } from '../helpers/cosctl.ts';

const exec = promisify(execFile);
const T1 = new Date('2023-05-06T07:08:09Z');
const T2 = new Date('2024-01-02T03:04:05Z');
/** Dirs the agent creates or re-moded in every image (cos-layout.md 2.5 step 7), plus mkfs's lost+found. */
const AGENT_OWNED = new Set(['.', 'lost+found', 'run', 'dev', 'boot', 'usr/local', 'oem', 'proc', 'sys', 'tmp']);

test('the staged active image matches umoci raw unpack of the same image, entry for entry', async (t) => {
  const work = await mkdtemp(path.join(tmpdir(), 'pulled-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const reg = await startRegistry();
  t.teardown(() => reg.stop());

  const skeleton: TarEntry[] = ['run/', 'dev/', 'boot/', 'usr/', 'usr/local/', 'oem/', 'proc/', 'sys/', 'tmp/'].map((name) => ({ name, mtime: T1 }));
  const layer1: TarEntry[] = [
    ...skeleton,
    { name: 'etc/', mtime: T2 },
    { name: 'etc/os-release', content: 'NAME="cOS"\nVERSION="3.0.0"\nGRUB_ENTRY_NAME="cOS 3.0.0"\n', mtime: T1 },
    { name: 'etc/shadow', content: 'root:*:1::::::\n', mode: 0o640, gid: 42, mtime: T1 },
    { name: 'etc/gone', content: 'removed by layer 2', mtime: T1 },
    { name: 'usr/bin/', mtime: T1 },
    { name: 'usr/bin/sudo', content: 'sudo', mode: 0o4755, mtime: T1 },
    { name: 'usr/bin/ping', content: 'ping', mode: 0o755, mtime: T1, pax: { 'SCHILY.xattr.user.purpose': 'net' } },
    { name: 'usr/bin/ping6', type: 'link', linkname: 'usr/bin/ping' },
    { name: 'usr/lib/', mtime: T1 },
    { name: 'usr/lib/libc.so.6', content: Buffer.alloc(200_000, 7), mtime: T1 },
    { name: 'usr/lib/libc.so', type: 'symlink', linkname: 'libc.so.6', mtime: T1 },
    { name: 'lib', type: 'symlink', linkname: 'usr/lib', mtime: T1 },
    { name: 'bin', type: 'symlink', linkname: '/usr/bin', mtime: T1 },
    { name: 'home/', mtime: T1 },
    { name: 'home/cos/', mode: 0o700, uid: 1000, gid: 1000, mtime: T1 },
    { name: 'home/cos/.profile', content: 'export X=1\n', uid: 1000, gid: 1000, mtime: T1 },
    { name: 'var/', mtime: T1 },
    { name: 'var/cache/', mtime: T2 },
    { name: 'var/cache/old', content: 'old', mtime: T1 },
    { name: 'var/spool/', mtime: T1 },
    { name: 'var/spool/fifo', type: 'fifo', mode: 0o600, mtime: T1 },
    { name: 'var/spool/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666, mtime: T1 },
  ];
  const layer2: TarEntry[] = [
    { name: 'etc/.wh.gone' },
    { name: 'var/cache/.wh..wh..opq' },
    { name: 'var/cache/new', content: 'new', mtime: T2 },
    { name: 'lib/x86_64-linux-gnu/', mtime: T2 },
    { name: 'lib/x86_64-linux-gnu/libz.so.1', content: 'zlib', mtime: T2 },
    { name: 'etc/shadow', content: 'root:$6$x:1::::::\n', mode: 0o600, mtime: T2 },
  ];
  const layout = path.join(work, 'layout');
  await buildLayout(layout, 'v3', { layers: [{ tar: await makeTar(layer1) }, { tar: await makeTar(layer2) }] });
  await reg.push(layout, 'v3', 'cos/rich:v3');

  const byUmoci = path.join(work, 'umoci');
  await exec('umoci', ['raw', 'unpack', '--image', `${layout}:v3`, byUmoci]);

  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/rich:v3`]);
  t.is(r.code, 0, r.stderr);

  const mnt = path.join(work, 'active');
  await mkdir(mnt);
  await exec('mount', ['-o', 'loop,ro', host.statePath('cOS/active.img'), mnt]);
  t.teardown(async () => { await exec('umount', ['-d', mnt]).catch(() => {}); });

  const keep = (line: string): boolean => {
    const rel = line.startsWith('xattrs ') ? line.slice(7, line.indexOf(':')) : line.slice(0, line.indexOf(' '));
    return !AGENT_OWNED.has(rel) && !rel.startsWith('lost+found');
  };
  const ours = (await listing(mnt)).filter(keep);
  const theirs = (await listing(byUmoci)).filter(keep);
  t.deepEqual(ours, theirs);
  const joined = ours.join('\n');
  for (const needle of ['usr/bin/sudo mode=4755', 'same inode: usr/bin/ping usr/bin/ping6', 'char 1,3', 'fifo', 'user.purpose=0x6e6574',
    'usr/lib/x86_64-linux-gnu/libz.so.1', 'home/cos mode=0700 uid=1000 gid=1000', 'var/cache/new', 'etc/shadow mode=0600']) {
    t.true(joined.includes(needle), needle);
  }
  t.false(joined.includes('etc/gone'));
  t.false(joined.includes('var/cache/old'));
});
