import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { AgentError } from '../../src/model/errors.ts';
import { applyLayer, layerCompression, type UnpackStats } from '../../src/oci/unpack.ts';
import { SpawnRunner, type Command, type CommandResult, type Runner } from '../../src/sys/runner.ts';
import { buildLayout, makeTar, type TarEntry } from '../helpers/oci-layout.ts';
import { listing, xattrsUnder } from '../helpers/tree-listing.ts';

const execFileP = promisify(execFile);
const GZ = 'application/vnd.oci.image.layer.v1.tar+gzip';
const ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
const TAR = 'application/vnd.oci.image.layer.v1.tar';
const DOCKER_GZ = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
const T0 = new Date('2021-02-03T04:05:06Z');
const T1 = new Date('2019-05-06T07:08:09Z');
const T2 = new Date('2018-01-01T00:00:00Z');

/** cap_net_raw+ep and cap_setuid,cap_net_raw+ep as `setcap` writes them (VFS_CAP_REVISION_2). */
const CAP_NET_RAW = Buffer.from('0100000200200000000000000000000000000000', 'hex');
const CAP_SETUID_NET_RAW = Buffer.from('0100000280200000000000000000000000000000', 'hex');

/** The real runner, recording every argv it runs. */
class RecordingRunner implements Runner {
  readonly argvs: string[][] = [];
  private readonly real = new SpawnRunner();
  run(cmd: Command): Promise<CommandResult> {
    this.argvs.push([...cmd.argv]);
    return this.real.run(cmd);
  }
}

interface Sandbox {
  base: string;
  target: string;
  sentinel: string;
}

/** base/target (the unpack target) next to base/sentinel (must never change). */
async function sandbox(t: ExecutionContext): Promise<Sandbox> {
  const base = await mkdtemp(path.join(os.tmpdir(), 'unpack-test-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const target = path.join(base, 'target');
  const sentinel = path.join(base, 'sentinel');
  await mkdir(target);
  await mkdir(path.join(sentinel, 'etc'), { recursive: true });
  await writeFile(path.join(sentinel, 'secret'), 'do not touch');
  await writeFile(path.join(sentinel, 'etc', 'passwd'), 'sentinel passwd');
  return { base, target, sentinel };
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A Readable handing out `buf` in chunks of the given sizes (then the rest). */
function chunked(buf: Buffer, sizes: readonly number[] = []): Readable {
  const parts: Buffer[] = [];
  let off = 0;
  for (const s of sizes) {
    if (off >= buf.length) break;
    parts.push(buf.subarray(off, off + s));
    off += s;
  }
  if (off < buf.length) parts.push(buf.subarray(off));
  return Readable.from(parts, { objectMode: false });
}

const compress = (tar: Buffer, mediaType: string): Buffer =>
  mediaType === ZSTD ? zstdCompressSync(tar) : mediaType === TAR || mediaType.endsWith('.diff.tar') ? tar : gzipSync(tar);

async function apply(target: string, entries: readonly TarEntry[] | Buffer, opts: { mediaType?: string; runner?: Runner } = {}): Promise<UnpackStats> {
  const mediaType = opts.mediaType ?? GZ;
  const tar = Buffer.isBuffer(entries) ? entries : await makeTar(entries);
  return applyLayer(chunked(compress(tar, mediaType)), mediaType, target, { runner: opts.runner ?? new SpawnRunner() });
}

async function rejection(t: ExecutionContext, p: Promise<unknown>): Promise<AgentError> {
  const e = await t.throwsAsync(p);
  if (e instanceof AgentError) return e;
  return t.fail(`expected an AgentError, got ${String(e)}`);
}

/** A tar whose PAX record `placeholder` value is replaced by raw bytes of the same length (tar-stream writes UTF-8). */
async function tarWithRawPax(entries: readonly TarEntry[], raw: ReadonlyMap<string, Buffer>): Promise<Buffer> {
  const tar = await makeTar(entries);
  for (const [placeholder, bytes] of raw) {
    const at = tar.indexOf(Buffer.from(placeholder));
    if (at < 0 || placeholder.length !== bytes.length) throw new Error(`placeholder ${placeholder} not found`);
    bytes.copy(tar, at);
  }
  return tar;
}

const st = (p: string) => lstat(p);
const ok = async (p: string): Promise<boolean> => lstat(p).then(() => true, () => false);

// ---------------------------------------------------------------------------------------------------------------
// Media types and decompression

test('layerCompression maps OCI and Docker layer media types, and refuses unknown ones with UNPACK_FAILED', (t) => {
  t.is(layerCompression(GZ), 'gzip');
  t.is(layerCompression(ZSTD), 'zstd');
  t.is(layerCompression(TAR), 'none');
  t.is(layerCompression(DOCKER_GZ), 'gzip');
  t.is(layerCompression('application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'), 'gzip');
  t.is(layerCompression('application/vnd.oci.image.layer.nondistributable.v1.tar+zstd'), 'zstd');
  const e = t.throws(() => layerCompression('application/vnd.example.layer+lz4'));
  t.true(e instanceof AgentError && e.code === 'UNPACK_FAILED' && e.message.includes('application/vnd.example.layer+lz4'));
});

for (const mediaType of [GZ, ZSTD, TAR, DOCKER_GZ, 'application/vnd.docker.image.rootfs.diff.tar']) {
  test(`a layer of media type ${mediaType} is decompressed and applied`, async (t) => {
    const { target } = await sandbox(t);
    const stats = await apply(target, [{ name: 'etc/' }, { name: 'etc/hostname', content: 'box\n' }], { mediaType });
    t.is(await readFile(path.join(target, 'etc/hostname'), 'utf8'), 'box\n');
    t.deepEqual(stats, { entries: 2, files: 1, dirs: 1, symlinks: 0, hardlinks: 0, devices: 0, whiteouts: 0, bytesWritten: 4 });
  });
}

test('an unknown media type is refused with UNPACK_FAILED naming it, and nothing is written', async (t) => {
  const { target } = await sandbox(t);
  const e = await rejection(t, apply(target, [{ name: 'x', content: 'x' }], { mediaType: 'application/x-rar' }));
  t.is(e.code, 'UNPACK_FAILED');
  t.true(e.message.includes('application/x-rar'));
  t.deepEqual(await readdir(target), []);
});

test('a gzip media type over data that is not gzip fails with UNPACK_FAILED (magic bytes checked)', async (t) => {
  const { target } = await sandbox(t);
  const tar = await makeTar([{ name: 'x', content: 'x' }]);
  const e = await rejection(t, applyLayer(chunked(tar), GZ, target, { runner: new SpawnRunner() }));
  t.is(e.code, 'UNPACK_FAILED');
  t.true(e.message.includes(GZ));
  const e2 = await rejection(t, applyLayer(chunked(zstdCompressSync(tar)), GZ, target, { runner: new SpawnRunner() }));
  t.regex(e2.message, /zstd/);
  const e3 = await rejection(t, applyLayer(chunked(gzipSync(tar)), TAR, target, { runner: new SpawnRunner() }));
  t.is(e3.code, 'UNPACK_FAILED');
  t.deepEqual(await readdir(target), []);
});

test('magic bytes split over one-byte chunks are still recognised', async (t) => {
  const { target } = await sandbox(t);
  const gz = gzipSync(await makeTar([{ name: 'a', content: 'b' }]));
  await applyLayer(chunked(gz, [1, 1, 1, 1, 1]), GZ, target, { runner: new SpawnRunner() });
  t.is(await readFile(path.join(target, 'a'), 'utf8'), 'b');
});

test('an empty blob with a gzip media type fails with UNPACK_FAILED', async (t) => {
  const { target } = await sandbox(t);
  const e = await rejection(t, applyLayer(chunked(Buffer.alloc(0)), GZ, target, { runner: new SpawnRunner() }));
  t.is(e.code, 'UNPACK_FAILED');
});

test('a corrupt gzip stream fails with UNPACK_FAILED', async (t) => {
  const { target } = await sandbox(t);
  const files: TarEntry[] = [];
  for (let i = 0; i < 20; i++) files.push({ name: `f${i}`, content: `${'text '.repeat(2000)}${i}` });
  const gz = gzipSync(await makeTar(files));
  const bad = Buffer.from(gz);
  for (let i = 100; i < 160; i++) bad[i] = (bad[i] as number) ^ 0x5a;
  const e = await rejection(t, applyLayer(chunked(bad), GZ, target, { runner: new SpawnRunner() }));
  t.is(e.code, 'UNPACK_FAILED');
  t.regex(e.message, /decompressing the gzip layer/);
});

test('a truncated gzip stream fails with UNPACK_FAILED', async (t) => {
  const { target } = await sandbox(t);
  const gz = gzipSync(await makeTar([{ name: 'big', content: randomBytes(200_000) }]));
  const e = await rejection(t, applyLayer(chunked(gz.subarray(0, gz.length - 5000)), GZ, target, { runner: new SpawnRunner() }));
  t.is(e.code, 'UNPACK_FAILED');
});

test('a zstd layer of two frames (and a skippable frame) is applied whole; cut inside its second frame it is UNPACK_FAILED naming the cut', async (t) => {
  const { target } = await sandbox(t);
  // Frame 1: complete entries without the end-of-archive blocks; frame 2: the rest of the tar (as zstd:chunked does).
  const first = await makeTar([{ name: 'etc/' }, { name: 'etc/frame-1', content: 'first frame\n' }]);
  const second = await makeTar([{ name: 'etc/frame-2', content: 'second frame\n' }, { name: 'usr/frame-2', content: randomBytes(300_000) }]);
  const head = first.subarray(0, first.length - 1024);
  const skippable = Buffer.from('502a4d1804000000cafef00d', 'hex');
  const blob = Buffer.concat([zstdCompressSync(head), skippable, zstdCompressSync(second)]);
  const stats = await applyLayer(chunked(blob, [1, 1, 1, 1, 7, 100]), ZSTD, target, { runner: new SpawnRunner() });
  t.is(await readFile(path.join(target, 'etc/frame-1'), 'utf8'), 'first frame\n');
  t.is(await readFile(path.join(target, 'etc/frame-2'), 'utf8'), 'second frame\n', 'the second frame\'s entries are applied too');
  t.is((await st(path.join(target, 'usr/frame-2'))).size, 300_000);
  t.is(stats.files, 3);

  const { target: target2 } = await sandbox(t);
  const firstLength = zstdCompressSync(head).length + skippable.length;
  const e = await rejection(t, applyLayer(chunked(blob.subarray(0, blob.length - 1000)), ZSTD, target2, { runner: new SpawnRunner() }));
  t.is(e.code, 'UNPACK_FAILED');
  t.regex(e.message, new RegExp(`^decompressing the zstd layer failed: truncated zstd frame at offset ${firstLength}: the input ends at offset ${blob.length - 1000}, `));
});

test('a tar that ends inside an entry fails with UNPACK_FAILED', async (t) => {
  const { target } = await sandbox(t);
  const tar = await makeTar([{ name: 'big', content: randomBytes(100_000) }]);
  const e = await rejection(t, applyLayer(chunked(gzipSync(tar.subarray(0, 50_000))), GZ, target, { runner: new SpawnRunner() }));
  t.is(e.code, 'UNPACK_FAILED');
});

test('gzip of something that is not a tar fails with UNPACK_FAILED', async (t) => {
  const { target } = await sandbox(t);
  const e = await rejection(t, applyLayer(chunked(gzipSync(randomBytes(4096))), GZ, target, { runner: new SpawnRunner() }));
  t.is(e.code, 'UNPACK_FAILED');
  t.regex(e.message, /tar/);
});

// ---------------------------------------------------------------------------------------------------------------
// Stream errors, abort, progress

test('when the layer stream errors mid-layer, that same error (DIGEST_MISMATCH) is rethrown and the stream destroyed', async (t) => {
  const { target } = await sandbox(t);
  const gz = gzipSync(await makeTar([{ name: 'a', content: randomBytes(300_000) }, { name: 'b', content: 'b' }]));
  const digestError = new AgentError('DIGEST_MISMATCH', 'sha256:abc: content does not hash to its digest');
  let pushed = false;
  const src = new Readable({
    read() {
      if (!pushed) {
        pushed = true;
        this.push(gz.subarray(0, gz.length >> 1));
      } else {
        this.destroy(digestError);
      }
    },
  });
  const e = await rejection(t, applyLayer(src, GZ, target, { runner: new SpawnRunner() }));
  t.is(e, digestError);
  t.is(e.code, 'DIGEST_MISMATCH');
  t.true(src.destroyed);
});

test('when the layer stream errors after delivering every byte, the layer is not reported as applied', async (t) => {
  const { target } = await sandbox(t);
  const gz = gzipSync(await makeTar([{ name: 'a', content: 'a' }]));
  const digestError = new AgentError('DIGEST_MISMATCH', 'digest mismatch at end of blob');
  let pushed = false;
  const src = new Readable({
    read() {
      if (!pushed) {
        pushed = true;
        this.push(gz);
      } else {
        setImmediate(() => this.destroy(digestError));
      }
    },
  });
  const e = await rejection(t, applyLayer(src, GZ, target, { runner: new SpawnRunner() }));
  t.is(e, digestError);
});

test('a non-agent error of the layer stream becomes UNPACK_FAILED with it as the cause', async (t) => {
  const { target } = await sandbox(t);
  const boom = new Error('ECONNRESET');
  const src = new Readable({
    read() {
      this.destroy(boom);
    },
  });
  const e = await rejection(t, applyLayer(src, GZ, target, { runner: new SpawnRunner() }));
  t.is(e.code, 'UNPACK_FAILED');
  t.is(e.cause, boom);
});

test('aborting mid-layer rejects with an AbortError STAGE_FAILED and destroys the layer stream', async (t) => {
  const { target } = await sandbox(t);
  const gz = gzipSync(await makeTar([{ name: 'a', content: randomBytes(300_000) }, { name: 'b', content: 'b' }]));
  const ac = new AbortController();
  // Hands out the first half, then never anything more (a stalled download).
  const src = new Readable({ read() {} });
  src.push(gz.subarray(0, gz.length >> 1));
  const p = applyLayer(src, GZ, target, {
    runner: new SpawnRunner(),
    signal: ac.signal,
    onBytes: () => setImmediate(() => ac.abort()),
  });
  const e = await rejection(t, p);
  t.is(e.code, 'STAGE_FAILED');
  t.is(e.name, 'AbortError');
  t.true(src.destroyed);
});

test('an already aborted signal rejects with STAGE_FAILED before writing anything', async (t) => {
  const { target } = await sandbox(t);
  const ac = new AbortController();
  ac.abort();
  const gz = gzipSync(await makeTar([{ name: 'a', content: 'a' }]));
  const e = await rejection(t, applyLayer(chunked(gz), GZ, target, { runner: new SpawnRunner(), signal: ac.signal }));
  t.is(e.code, 'STAGE_FAILED');
  t.deepEqual(await readdir(target), []);
});

test('onBytes reports the compressed bytes consumed so far, ending at the blob size', async (t) => {
  const { target } = await sandbox(t);
  const gz = gzipSync(await makeTar([{ name: 'a', content: randomBytes(100_000) }]));
  const seen: number[] = [];
  await applyLayer(chunked(gz, [10, 1000, 20000]), GZ, target, { runner: new SpawnRunner(), onBytes: (n) => seen.push(n) });
  t.true(seen.length >= 3);
  t.deepEqual([...seen].sort((a, b) => a - b), seen);
  t.is(seen.at(-1), gz.length);
});

test('a failing entry destroys the layer stream (the download stops)', async (t) => {
  const { target } = await sandbox(t);
  const gz = gzipSync(await makeTar([{ name: '../escape', content: 'x' }]));
  const src = new Readable({ read() {} });
  src.push(gz); // and never ends
  const e = await rejection(t, applyLayer(src, GZ, target, { runner: new SpawnRunner() }));
  t.is(e.code, 'UNPACK_UNSAFE');
  t.true(src.destroyed);
});

test('a target that does not exist fails with UNPACK_FAILED', async (t) => {
  const { base } = await sandbox(t);
  const e = await rejection(t, apply(path.join(base, 'nope'), [{ name: 'a', content: 'a' }]));
  t.is(e.code, 'UNPACK_FAILED');
  t.true(e.message.includes('nope'));
});

// ---------------------------------------------------------------------------------------------------------------
// Entry types and metadata

test('files, dirs, symlinks, hardlinks, fifos and devices are created with their mode, owner and mtime', async (t) => {
  const { target } = await sandbox(t);
  const stats = await apply(target, [
    { name: './', mode: 0o755, mtime: T2 },
    { name: './bin/', mode: 0o755, mtime: T0 },
    { name: './bin/su', content: 'su', mode: 0o4755, mtime: T1 },
    { name: './bin/sgid', content: 'sg', mode: 0o2711, uid: 0, gid: 42, mtime: T1 },
    { name: './bin/empty', content: '', mode: 0o600, mtime: T1 },
    { name: './tmp/', mode: 0o1777, mtime: T1 },
    { name: './home/', mtime: T1 },
    { name: './home/u/', mode: 0o750, uid: 1000, gid: 1000, mtime: T1 },
    { name: './home/u/notes', content: 'n', uid: 1000, gid: 1000, mtime: T0 },
    { name: './nobody', content: 'x', uid: 65534, gid: 65534, mode: 0o400, mtime: T0 },
    { name: './bin/sh', type: 'symlink', linkname: 'su', uid: 7, gid: 8, mtime: T1 },
    { name: './abs', type: 'symlink', linkname: '/bin/su', mtime: T1 },
    { name: './bin/su2', type: 'link', linkname: 'bin/su' },
    { name: './dev/', mtime: T1 },
    { name: './dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666, mtime: T1 },
    { name: './dev/loop9', type: 'block-device', devmajor: 7, devminor: 9, mode: 0o660, gid: 6, mtime: T1 },
    { name: './dev/fifo', type: 'fifo', mode: 0o620, uid: 5, mtime: T1 },
  ]);
  t.deepEqual(stats, { entries: 17, files: 5, dirs: 6, symlinks: 2, hardlinks: 1, devices: 3, whiteouts: 0, bytesWritten: 6 });
  const l = await listing(target);
  const s1 = T1.getTime() / 1000;
  const s0 = T0.getTime() / 1000;
  const s2 = T2.getTime() / 1000;
  t.deepEqual(l.filter((x) => !x.startsWith('xattrs')), [
    `. mode=0755 uid=0 gid=0 mtime=${s2} dir`,
    `abs mode=0777 uid=0 gid=0 mtime=${s1} symlink -> /bin/su`,
    `bin mode=0755 uid=0 gid=0 mtime=${s0} dir`,
    `bin/empty mode=0600 uid=0 gid=0 mtime=${s1} file size=0 sha256=${sha256(Buffer.alloc(0))}`,
    `bin/sgid mode=2711 uid=0 gid=42 mtime=${s1} file size=2 sha256=${sha256(Buffer.from('sg'))}`,
    `bin/sh mode=0777 uid=7 gid=8 mtime=${s1} symlink -> su`,
    `bin/su mode=4755 uid=0 gid=0 mtime=${s1} file size=2 sha256=${sha256(Buffer.from('su'))}`,
    `bin/su2 mode=4755 uid=0 gid=0 mtime=${s1} file size=2 sha256=${sha256(Buffer.from('su'))}`,
    `dev mode=0755 uid=0 gid=0 mtime=${s1} dir`,
    `dev/fifo mode=0620 uid=5 gid=0 mtime=${s1} fifo`,
    `dev/loop9 mode=0660 uid=0 gid=6 mtime=${s1} block 7,9`,
    `dev/null mode=0666 uid=0 gid=0 mtime=${s1} char 1,3`,
    `home mode=0755 uid=0 gid=0 mtime=${s1} dir`,
    `home/u mode=0750 uid=1000 gid=1000 mtime=${s1} dir`,
    `home/u/notes mode=0644 uid=1000 gid=1000 mtime=${s0} file size=1 sha256=${sha256(Buffer.from('n'))}`,
    `nobody mode=0400 uid=65534 gid=65534 mtime=${s0} file size=1 sha256=${sha256(Buffer.from('x'))}`,
    `tmp mode=1777 uid=0 gid=0 mtime=${s1} dir`,
    'same inode: bin/su bin/su2',
  ]);
});

test('xattrs from PAX records are applied byte-exact, security.capability included, in one setfattr run', async (t) => {
  const { target } = await sandbox(t);
  const runner = new RecordingRunner();
  const tar = await tarWithRawPax(
    [
      { name: 'bin/', pax: { 'SCHILY.xattr.user.dir': 'd' } },
      { name: 'bin/ping', content: 'ping', mode: 0o755, uid: 1000, pax: { 'SCHILY.xattr.security.capability': 'C'.repeat(20), 'SCHILY.xattr.user.foo': 'bar' } },
      { name: 'bin/bin', content: 'b', pax: { 'SCHILY.xattr.user.raw': 'R'.repeat(6) } },
      { name: 'bin/link', type: 'symlink', linkname: 'ping', pax: { 'SCHILY.xattr.trusted.onlink': 'L' } },
    ],
    new Map([
      ['C'.repeat(20), CAP_SETUID_NET_RAW],
      ['R'.repeat(6), Buffer.from([0x00, 0x80, 0xff, 0x0a, 0x3d, 0xc3])],
    ]),
  );
  await apply(target, tar, { runner });
  const x = await xattrsUnder(target);
  t.deepEqual(x.get('bin/ping')?.sort(), [`security.capability=0x${CAP_SETUID_NET_RAW.toString('hex')}`, 'user.foo=0x626172']);
  t.deepEqual(x.get('bin/bin'), ['user.raw=0x0080ff0a3dc3']);
  t.deepEqual(x.get('bin'), ['user.dir=0x64']);
  t.deepEqual(x.get('bin/link'), ['trusted.onlink=0x4c']);
  const { stdout } = await execFileP('getcap', [path.join(target, 'bin/ping')]);
  t.regex(stdout, /cap_setuid,cap_net_raw=ep/);
  t.is((await st(path.join(target, 'bin/ping'))).uid, 1000, 'the chown came before the capability');
  t.deepEqual(runner.argvs, [['setfattr', '-h', '--restore=-']]);
});

test('a layer made by GNU tar --xattrs (real capabilities and user xattrs) is applied with the same xattrs', async (t) => {
  const { base, target } = await sandbox(t);
  const src = path.join(base, 'src');
  await mkdir(path.join(src, 'bin'), { recursive: true });
  await writeFile(path.join(src, 'bin/ping'), 'ping');
  await writeFile(path.join(src, 'bin/other'), 'other');
  await execFileP('setcap', ['cap_setuid,cap_net_raw+ep', path.join(src, 'bin/ping')]);
  await execFileP('setfattr', ['-n', 'user.bin', '-v', '0x00ff7f80', path.join(src, 'bin/other')]);
  await execFileP('setfattr', ['-n', 'user.dir', '-v', 'd', path.join(src, 'bin')]);
  const layer = path.join(base, 'layer.tar');
  await execFileP('tar', ['--xattrs', '--xattrs-include=*', '--format=posix', '-C', src, '-cf', layer, '.']);
  await rm(src, { recursive: true });
  await mkdir(src);
  await execFileP('tar', ['--xattrs', '--xattrs-include=*', '-C', src, '-xf', layer]);
  await apply(target, await readFile(layer), { mediaType: TAR });
  const ours = await xattrsUnder(target);
  t.deepEqual(ours, await xattrsUnder(src));
  t.deepEqual(ours.get('bin/ping'), [`security.capability=0x${CAP_SETUID_NET_RAW.toString('hex')}`]);
  t.deepEqual(ours.get('bin/other'), ['user.bin=0x00ff7f80']);
  await rm(layer);
  await rm(src, { recursive: true });
});

test('a layer without xattrs runs no command at all', async (t) => {
  const { target } = await sandbox(t);
  const runner = new RecordingRunner();
  await apply(target, [{ name: 'a/' }, { name: 'a/b', content: 'c' }, { name: 'l', type: 'symlink', linkname: 'a' }], { runner });
  t.deepEqual(runner.argvs, []);
});

test('directory mtimes are set after their content, at the end of the layer', async (t) => {
  const { target } = await sandbox(t);
  await apply(target, [
    { name: 'd/', mtime: T2 },
    { name: 'd/e/', mtime: T1 },
    { name: 'd/e/f', content: 'f', mtime: T0 },
    { name: 'd/g', type: 'symlink', linkname: 'e', mtime: T0 },
    { name: 'd/h', type: 'fifo', mtime: T0 },
  ]);
  t.is((await st(path.join(target, 'd'))).mtime.getTime(), T2.getTime());
  t.is((await st(path.join(target, 'd/e'))).mtime.getTime(), T1.getTime());
});

test('a directory a later layer changes without listing it keeps its mtime (as umoci)', async (t) => {
  const { target } = await sandbox(t);
  await apply(target, [{ name: 'etc/', mtime: T2 }, { name: 'etc/old', content: 'o' }, { name: 'etc/gone', content: 'g' }]);
  await apply(target, [{ name: 'etc/new', content: 'n', mtime: T0 }, { name: 'etc/.wh.gone' }, { name: 'etc/sub/deeper/x', content: 'x' }]);
  t.is((await st(path.join(target, 'etc'))).mtime.getTime(), T2.getTime());
  t.false(await ok(path.join(target, 'etc/gone')));
  t.true(await ok(path.join(target, 'etc/sub/deeper/x')));
  t.is((await st(path.join(target, 'etc/sub'))).mode & 0o7777, 0o755, 'implicit parents are 0755');
});

test('a tar without end-of-archive blocks still applies its last entry (a slow mknod) before finishing', async (t) => {
  const { target } = await sandbox(t);
  const full = await makeTar([{ name: 'a', content: 'a' }, { name: 'p', type: 'fifo', mtime: T1, pax: { 'SCHILY.xattr.trusted.t': 'v' } }]);
  t.true(full.subarray(-1024).every((b) => b === 0));
  const stats = await apply(target, full.subarray(0, full.length - 1024), { mediaType: TAR });
  t.is(stats.devices, 1);
  const p = await lstat(path.join(target, 'p'));
  t.true(p.isFIFO());
  t.is(p.mtime.getTime(), T1.getTime());
  t.deepEqual((await xattrsUnder(target)).get('p'), ['trusted.t=0x76']);
});

test('large files are written whole, across many chunks', async (t) => {
  const { target } = await sandbox(t);
  const big = randomBytes(3 * 1024 * 1024 + 17);
  const stats = await apply(target, [{ name: 'big', content: big }, { name: 'after', content: 'after' }]);
  t.is(sha256(await readFile(path.join(target, 'big'))), sha256(big));
  t.is(await readFile(path.join(target, 'after'), 'utf8'), 'after');
  t.is(stats.bytesWritten, big.length + 5);
});

test('long names (PAX and GNU) are applied', async (t) => {
  const { target } = await sandbox(t);
  const long = `${'d'.repeat(120)}/${'f'.repeat(150)}`;
  await apply(target, [{ name: long, content: 'long' }, { name: 'ln', type: 'symlink', linkname: 'x'.repeat(200) }]);
  t.is(await readFile(path.join(target, long), 'utf8'), 'long');
  t.is(await readlink(path.join(target, 'ln')), 'x'.repeat(200));
});

test('PAX uid, gid and mtime records override the ustar fields', async (t) => {
  const { target } = await sandbox(t);
  await apply(target, [{ name: 'f', content: 'f', uid: 1, gid: 1, pax: { uid: '3000000', gid: '3000001', mtime: '1500000000.25' } }]);
  const s = await lstat(path.join(target, 'f'));
  t.is(s.uid, 3000000);
  t.is(s.gid, 3000001);
  t.is(s.mtimeMs, 1500000000250);
});

test('an unsupported entry type (GNU sparse) fails with UNPACK_FAILED naming the entry', async (t) => {
  const { base, target } = await sandbox(t);
  const src = path.join(base, 'src');
  await mkdir(src);
  await execFileP('truncate', ['-s', '10M', path.join(src, 'sparse')]);
  await execFileP('tar', ['-H', 'gnu', '-S', '-C', src, '-cf', path.join(base, 'sparse.tar'), 'sparse']);
  const e = await rejection(t, apply(target, await readFile(path.join(base, 'sparse.tar'))));
  t.is(e.code, 'UNPACK_FAILED');
  t.true(e.message.includes('"sparse"'));
});

test('a path under a regular file fails with UNPACK_FAILED naming the entry', async (t) => {
  const { target } = await sandbox(t);
  const e = await rejection(t, apply(target, [{ name: 'f', content: 'f' }, { name: 'f/x', content: 'x' }]));
  t.is(e.code, 'UNPACK_FAILED');
  t.true(e.message.includes('"f/x"'), e.message);
});

test('a hardlink to a missing file fails with UNPACK_FAILED naming both', async (t) => {
  const { target } = await sandbox(t);
  const e = await rejection(t, apply(target, [{ name: 'h', type: 'link', linkname: 'nowhere' }]));
  t.is(e.code, 'UNPACK_FAILED');
  t.true(e.message.includes('"h"') && e.message.includes('nowhere'));
});

test('a failing mknod fails with UNPACK_FAILED naming the entry, with the command error as cause', async (t) => {
  const { target } = await sandbox(t);
  // A real refusal: mknod cannot create a block device with a major number beyond the kernel's limit.
  const e = await rejection(t, apply(target, [{ name: 'dev/bad', type: 'block-device', devmajor: 0o7777777, devminor: 0 }]));
  t.is(e.code, 'UNPACK_FAILED');
  t.true(e.message.includes('"dev/bad"'), e.message);
  t.true(e.cause instanceof AgentError && e.cause.code === 'COMMAND_FAILED');
});

// ---------------------------------------------------------------------------------------------------------------
// Replacing lower-layer content

test('an entry replaces whatever a lower layer left at its path (file/dir/symlink in every combination)', async (t) => {
  const { target, sentinel } = await sandbox(t);
  await apply(target, [
    { name: 'fileOverDir/', mode: 0o700 },
    { name: 'fileOverDir/child', content: 'c' },
    { name: 'dirOverFile', content: 'f' },
    { name: 'symOverDir/' },
    { name: 'symOverDir/x', content: 'x' },
    { name: 'dirOverSym', type: 'symlink', linkname: '/' },
    { name: 'fileOverSym', type: 'symlink', linkname: path.join(sentinel, 'secret') },
    { name: 'fileOverFile', content: 'old', mode: 0o4755, uid: 3 },
    { name: 'merged/', mode: 0o700, uid: 5 },
    { name: 'merged/lower', content: 'l' },
    { name: 'fifoOverFile', content: 'f' },
    { name: 'linkOverFile', content: 'f' },
    { name: 'target', content: 't' },
  ]);
  await apply(target, [
    { name: 'fileOverDir', content: 'now a file' },
    { name: 'dirOverFile/', mode: 0o750 },
    { name: 'dirOverFile/inner', content: 'i' },
    { name: 'symOverDir', type: 'symlink', linkname: 'merged' },
    { name: 'dirOverSym/', mode: 0o711 },
    { name: 'fileOverSym', content: 'not through the link' },
    { name: 'fileOverFile', content: 'new', mode: 0o644 },
    { name: 'merged/', mode: 0o755, uid: 6 },
    { name: 'merged/upper', content: 'u' },
    { name: 'fifoOverFile', type: 'fifo' },
    { name: 'linkOverFile', type: 'link', linkname: 'target' },
  ]);
  const l = (p: string) => lstat(path.join(target, p));
  t.true((await l('fileOverDir')).isFile());
  t.is(await readFile(path.join(target, 'fileOverDir'), 'utf8'), 'now a file');
  t.true((await l('dirOverFile')).isDirectory());
  t.is((await l('dirOverFile')).mode & 0o7777, 0o750);
  t.true((await l('symOverDir')).isSymbolicLink());
  t.true((await l('dirOverSym')).isDirectory());
  t.is((await l('dirOverSym')).mode & 0o7777, 0o711);
  t.true((await l('fileOverSym')).isFile());
  t.is(await readFile(path.join(sentinel, 'secret'), 'utf8'), 'do not touch');
  t.is(await readFile(path.join(target, 'fileOverFile'), 'utf8'), 'new');
  t.is((await l('fileOverFile')).mode & 0o7777, 0o644);
  t.is((await l('fileOverFile')).uid, 0);
  t.deepEqual((await readdir(path.join(target, 'merged'))).sort(), ['lower', 'upper']);
  t.is((await l('merged')).mode & 0o7777, 0o755);
  t.is((await l('merged')).uid, 6);
  t.true((await l('fifoOverFile')).isFIFO());
  t.is((await l('linkOverFile')).ino, (await l('target')).ino);
});

test('a hardlink in a lower layer keeps the old content when an upper layer replaces one of its names', async (t) => {
  const { target } = await sandbox(t);
  await apply(target, [{ name: 'a', content: 'v1' }, { name: 'b', type: 'link', linkname: 'a' }]);
  await apply(target, [{ name: 'a', content: 'v2' }]);
  t.is(await readFile(path.join(target, 'a'), 'utf8'), 'v2');
  t.is(await readFile(path.join(target, 'b'), 'utf8'), 'v1');
});

test('a later layer writes through a directory symlink of a lower layer (Debian lib -> usr/lib)', async (t) => {
  const { target } = await sandbox(t);
  await apply(target, [
    { name: 'usr/', mtime: T1 },
    { name: 'usr/lib/', mtime: T1 },
    { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
    { name: 'lib64', type: 'symlink', linkname: '/usr/lib64' },
  ]);
  await apply(target, [
    { name: 'lib/x86_64-linux-gnu/', mtime: T0 },
    { name: 'lib/x86_64-linux-gnu/libc.so.6', content: 'libc' },
    { name: 'lib64/ld-linux-x86-64.so.2', content: 'ld' },
  ]);
  t.is(await readFile(path.join(target, 'usr/lib/x86_64-linux-gnu/libc.so.6'), 'utf8'), 'libc');
  t.is(await readFile(path.join(target, 'usr/lib64/ld-linux-x86-64.so.2'), 'utf8'), 'ld');
  t.true((await lstat(path.join(target, 'lib'))).isSymbolicLink());
  t.is((await lstat(path.join(target, 'usr/lib/x86_64-linux-gnu'))).mtime.getTime(), T0.getTime());
  t.is((await lstat(path.join(target, 'usr/lib'))).mtime.getTime(), T1.getTime());
});

// ---------------------------------------------------------------------------------------------------------------
// Whiteouts

test('.wh.<name> removes a file or a whole directory of a lower layer, and is never created itself', async (t) => {
  const { target } = await sandbox(t);
  await apply(target, [{ name: 'etc/' }, { name: 'etc/passwd', content: 'p' }, { name: 'var/' }, { name: 'var/cache/' }, { name: 'var/cache/x/y', content: 'y' }]);
  const stats = await apply(target, [{ name: 'etc/.wh.passwd' }, { name: 'var/.wh.cache' }, { name: '.wh.missing' }, { name: 'nodir/.wh.x' }]);
  t.is(stats.whiteouts, 4);
  t.deepEqual(await readdir(path.join(target, 'etc')), []);
  t.deepEqual(await readdir(path.join(target, 'var')), []);
  t.deepEqual((await readdir(target)).sort(), ['etc', 'var']);
});

test('a whiteout does not remove what the same layer adds, whatever the order', async (t) => {
  const { target } = await sandbox(t);
  await apply(target, [{ name: 'a', content: 'lower' }, { name: 'd/' }, { name: 'd/lower', content: 'l' }]);
  await apply(target, [{ name: 'a', content: 'upper' }, { name: '.wh.a' }, { name: 'd/', mode: 0o700 }, { name: 'd/upper', content: 'u' }, { name: '.wh.d' }]);
  t.is(await readFile(path.join(target, 'a'), 'utf8'), 'upper');
  t.deepEqual(await readdir(path.join(target, 'd')), ['upper']);
});

for (const order of ['before', 'after'] as const) {
  test(`an opaque whiteout empties the lower directory but keeps entries of its own layer (marker ${order} them)`, async (t) => {
    const { target } = await sandbox(t);
    await apply(target, [
      { name: 'opq/', mtime: T2 },
      { name: 'opq/old', content: 'o' },
      { name: 'opq/sub/' },
      { name: 'opq/sub/old', content: 'o' },
      { name: 'other/', mtime: T2 },
      { name: 'other/keep', content: 'k' },
    ]);
    const marker: TarEntry = { name: 'opq/.wh..wh..opq' };
    const upper: TarEntry[] = [{ name: 'opq/sub/' }, { name: 'opq/sub/new', content: 'n' }, { name: 'opq/new', content: 'n' }];
    await apply(target, order === 'before' ? [marker, ...upper] : [...upper, marker]);
    t.deepEqual((await readdir(path.join(target, 'opq'))).sort(), ['new', 'sub']);
    t.deepEqual(await readdir(path.join(target, 'opq/sub')), ['new']);
    t.deepEqual(await readdir(path.join(target, 'other')), ['keep']);
    t.false(await ok(path.join(target, 'opq/.wh..wh..opq')));
    t.is((await lstat(path.join(target, 'opq'))).mtime.getTime(), T2.getTime());
  });
}

test('AUFS .wh..wh. metadata entries are ignored', async (t) => {
  const { target } = await sandbox(t);
  await apply(target, [{ name: '.wh..wh.plnk/' }, { name: '.wh..wh.aufs', content: '' }, { name: 'a', content: 'a' }]);
  t.deepEqual(await readdir(target), ['a']);
});

// ---------------------------------------------------------------------------------------------------------------
// Hostile layers: nothing may be written outside the target

/** Everything about a tree that a write could change (content, type, mode, times, links, xattrs). */
async function fingerprint(dir: string): Promise<string[]> {
  const l = await listing(dir);
  const s = await lstat(dir);
  return [...l, `ctime of root ${s.ctimeMs}`];
}

async function hostile(
  t: ExecutionContext,
  layers: ReadonlyArray<readonly TarEntry[] | Buffer>,
  check: (s: Sandbox, err: AgentError | null) => Promise<void>,
): Promise<void> {
  const s = await sandbox(t);
  const before = await fingerprint(s.sentinel);
  const hostPasswd = sha256(await readFile('/etc/passwd'));
  let err: AgentError | null = null;
  try {
    for (const layer of layers) await apply(s.target, layer);
  } catch (e) {
    if (!(e instanceof AgentError)) throw e;
    err = e;
  }
  await check(s, err);
  t.deepEqual(await fingerprint(s.sentinel), before, 'the sentinel next to the target is untouched');
  t.deepEqual((await readdir(s.base)).sort(), ['sentinel', 'target'], 'nothing new next to the target');
  t.is(sha256(await readFile('/etc/passwd')), hostPasswd, "the host's /etc/passwd is untouched");
}

const refused = (t: ExecutionContext, culprit: string) => async (_s: Sandbox, err: AgentError | null): Promise<void> => {
  t.is(err?.code, 'UNPACK_UNSAFE');
  t.true(err?.message.includes(culprit) === true, err?.message);
};

for (const name of ['../x', 'a/../../x', './../../sentinel/secret', '/etc/x', '/x']) {
  test(`an entry named ${name} is refused with UNPACK_UNSAFE`, async (t) => {
    await hostile(t, [[{ name: 'ok', content: 'fine' }, { name, content: 'pwned' }]], refused(t, JSON.stringify(name)));
  });
}

test('a PAX path record that escapes is refused like a plain name', async (t) => {
  await hostile(t, [[{ name: 'innocent', content: 'pwned', pax: { path: '../sentinel/secret' } }]], refused(t, '../sentinel/secret'));
});

test('a long (PAX) name that escapes is refused', async (t) => {
  const name = `${'../'.repeat(40)}sentinel/${'x'.repeat(100)}`;
  await hostile(t, [[{ name, content: 'pwned' }]], refused(t, 'sentinel/xxx'));
});

test('symlink evil -> / then evil/etc/passwd lands in the target, not on the host', async (t) => {
  await hostile(t, [[{ name: 'evil', type: 'symlink', linkname: '/' }, { name: 'evil/etc/passwd', content: 'root::0:0::/:/bin/sh\n' }]], async (s, err) => {
    t.is(err, null);
    t.is(await readFile(path.join(s.target, 'etc/passwd'), 'utf8'), 'root::0:0::/:/bin/sh\n');
    t.true((await lstat(path.join(s.target, 'evil'))).isSymbolicLink());
  });
});

test('symlink evil -> ../../.. then evil/x lands in the target root', async (t) => {
  await hostile(t, [[{ name: 'evil', type: 'symlink', linkname: '../../..' }, { name: 'evil/x', content: 'x' }, { name: 'evil/sentinel/secret', content: 'pwned' }]], async (s, err) => {
    t.is(err, null);
    t.is(await readFile(path.join(s.target, 'x'), 'utf8'), 'x');
    t.is(await readFile(path.join(s.target, 'sentinel/secret'), 'utf8'), 'pwned');
  });
});

test('an absolute symlink into the host path of the sentinel is resolved inside the target', async (t) => {
  await hostile(t, [], async (s) => {
    await apply(s.target, [{ name: 'evil', type: 'symlink', linkname: s.sentinel }, { name: 'evil/secret', content: 'pwned' }, { name: 'evil/etc/', mode: 0o700 }]);
    const inside = path.join(s.target, s.sentinel);
    t.is(await readFile(path.join(inside, 'secret'), 'utf8'), 'pwned');
    t.is((await lstat(path.join(inside, 'etc'))).mode & 0o7777, 0o700);
  });
});

test('a symlink made in a lower layer cannot be used to escape by an upper layer', async (t) => {
  await hostile(
    t,
    [
      [{ name: 'up', type: 'symlink', linkname: '../sentinel' }, { name: 'd/' }, { name: 'd/up2', type: 'symlink', linkname: '../../../../sentinel/etc' }],
      [{ name: 'up/secret', content: 'pwned' }, { name: 'd/up2/passwd', content: 'pwned' }, { name: 'up/.wh.secret' }, { name: 'd/up2/.wh..wh..opq' }],
    ],
    async (s, err) => {
      t.is(err, null);
      // up -> <root>/sentinel and d/up2 -> <root>/sentinel/etc (.. stops at the root).
      // Whiteouts only remove what lower layers made, so this layer's files stay.
      t.deepEqual((await readdir(path.join(s.target, 'sentinel'))).sort(), ['etc', 'secret']);
      t.deepEqual(await readdir(path.join(s.target, 'sentinel/etc')), ['passwd']);
    },
  );
});

test('whiteouts reached through a symlink cannot remove anything outside the target', async (t) => {
  await hostile(t, [[{ name: 'out', type: 'symlink', linkname: '../sentinel' }, { name: 'abs', type: 'symlink', linkname: '/' }], [{ name: 'out/.wh.secret' }, { name: 'out/etc/.wh.passwd' }, { name: 'abs/.wh..wh..opq' }]], async (s, err) => {
    t.is(err, null);
    t.deepEqual(await readdir(s.target), [], 'the opaque whiteout through abs -> / emptied the target root, nothing else');
  });
});

test('a whiteout named ../.wh.x is refused with UNPACK_UNSAFE', async (t) => {
  await hostile(t, [[{ name: '../.wh.sentinel' }]], refused(t, '../.wh.sentinel'));
  await hostile(t, [[{ name: 'a/../../.wh.sentinel' }]], refused(t, '.wh.sentinel'));
});

test('a whiteout of .. is refused with UNPACK_UNSAFE', async (t) => {
  await hostile(t, [[{ name: 'a/' }, { name: 'a/.wh..' }]], refused(t, 'a/.wh..'));
});

test('a hardlink to ../../etc/shadow is refused with UNPACK_UNSAFE', async (t) => {
  await hostile(t, [[{ name: 'shadow', type: 'link', linkname: '../../etc/shadow' }]], refused(t, '../../etc/shadow'));
  await hostile(t, [[{ name: 'shadow', type: 'link', linkname: '/etc/shadow' }]], refused(t, '/etc/shadow'));
});

test('a hardlink through a symlink to outside resolves inside the target (and fails when missing there)', async (t) => {
  await hostile(t, [[{ name: 'out', type: 'symlink', linkname: '../sentinel' }, { name: 'h', type: 'link', linkname: 'out/secret' }]], async (s, err) => {
    t.is(err?.code, 'UNPACK_FAILED');
    t.false(await ok(path.join(s.target, 'h')));
  });
  await hostile(t, [[{ name: 'sentinel/secret', content: 'inner' }, { name: 'out', type: 'symlink', linkname: '/../sentinel' }, { name: 'h', type: 'link', linkname: 'out/secret' }]], async (s, err) => {
    t.is(err, null);
    t.is((await lstat(path.join(s.target, 'h'))).ino, (await lstat(path.join(s.target, 'sentinel/secret'))).ino);
  });
});

test('a hardlink to a symlink links the symlink itself, never what it points to', async (t) => {
  await hostile(t, [[{ name: 'out', type: 'symlink', linkname: '../sentinel/secret' }, { name: 'h', type: 'link', linkname: 'out' }, { name: 'h2', type: 'link', linkname: 'h' }]], async (s, err) => {
    t.is(err, null);
    t.true((await lstat(path.join(s.target, 'h'))).isSymbolicLink());
  });
});

test('a symlink loop in a parent path is refused cleanly with UNPACK_UNSAFE (ELOOP)', async (t) => {
  await hostile(t, [[{ name: 'a', type: 'symlink', linkname: 'b' }, { name: 'b', type: 'symlink', linkname: 'a' }, { name: 'a/x', content: 'x' }]], async (_s, err) => {
    t.is(err?.code, 'UNPACK_UNSAFE');
    t.regex(err?.message ?? '', /ELOOP/);
    t.true(err?.message.includes('"a/x"') === true);
  });
  await hostile(t, [[{ name: 'self', type: 'symlink', linkname: '/self' }, { name: 'self/x', type: 'link', linkname: 'self/y' }]], async (_s, err) => {
    t.is(err?.code, 'UNPACK_UNSAFE');
  });
});

test('a symlink entry may point anywhere: it is created, never followed', async (t) => {
  await hostile(t, [[{ name: 'p', type: 'symlink', linkname: '/etc/passwd' }, { name: 'q', type: 'symlink', linkname: '../../sentinel/secret' }, { name: 'q', content: 'replaced the link, not the file' }]], async (s, err) => {
    t.is(err, null);
    t.is(await readlink(path.join(s.target, 'p')), '/etc/passwd');
    t.true((await lstat(path.join(s.target, 'q'))).isFile());
  });
});

test('xattrs of a symlink entry pointing outside go on the link, not on its target', async (t) => {
  await hostile(t, [], async (s) => {
    await apply(s.target, [{ name: 'l', type: 'symlink', linkname: path.join(s.sentinel, 'secret'), pax: { 'SCHILY.xattr.trusted.x': 'y' } }]);
    t.deepEqual((await xattrsUnder(s.target)).get('l'), ['trusted.x=0x79']);
  });
});

test('devices and fifos reached through a symlink are made inside the target', async (t) => {
  await hostile(t, [[{ name: 'out', type: 'symlink', linkname: '../sentinel' }, { name: 'out/fifo', type: 'fifo' }, { name: 'out/null', type: 'character-device', devmajor: 1, devminor: 3 }]], async (s, err) => {
    t.is(err, null);
    t.true((await lstat(path.join(s.target, 'sentinel/fifo'))).isFIFO());
    t.true((await lstat(path.join(s.target, 'sentinel/null'))).isCharacterDevice());
  });
});

test('a dir entry replacing a symlink to outside does not touch the outside dir', async (t) => {
  await hostile(t, [[{ name: 'etc', type: 'symlink', linkname: path.join('..', 'sentinel', 'etc') }], [{ name: 'etc/', mode: 0o700, uid: 1234 }, { name: 'etc/passwd', content: 'x' }]], async (s, err) => {
    t.is(err, null);
    const etc = await lstat(path.join(s.target, 'etc'));
    t.true(etc.isDirectory(), 'the symlink was replaced by a directory, not followed');
    t.is(etc.uid, 1234);
    t.is(await readFile(path.join(s.target, 'etc/passwd'), 'utf8'), 'x');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Equivalence with the real umoci

test('applying every layer in order gives the same tree as the real `umoci raw unpack`', async (t) => {
  const { base } = await sandbox(t);
  const layout = path.join(base, 'layout');
  const byUmoci = path.join(base, 'umoci');
  const byUs = path.join(base, 'ours');
  await mkdir(byUs);
  const pl = (n: number): string => 'P'.repeat(n);
  const layer1 = await tarWithRawPax(
    [
      { name: './', mode: 0o755, mtime: T2 },
      { name: './bin/', mtime: T2 },
      { name: './bin/hello', content: '#!/bin/sh\necho hello\n', mode: 0o755, mtime: T1 },
      { name: './bin/empty', content: '', mtime: T1 },
      { name: './bin/su', content: 'su', mode: 0o4755, mtime: T1 },
      { name: './bin/sg', content: 'sg', mode: 0o2755, gid: 50, mtime: T1 },
      { name: './bin/ping', content: 'ping', mode: 0o755, mtime: T1, pax: { 'SCHILY.xattr.security.capability': pl(20) } },
      { name: './bin/arping', content: 'arping', mode: 0o755, mtime: T1, pax: { 'SCHILY.xattr.security.capability': 'Q'.repeat(20), 'SCHILY.xattr.user.foo': 'bar' } },
      { name: './bin/hardlink', type: 'link', linkname: 'bin/hello' },
      { name: './tmp/', mode: 0o1777, mtime: T1 },
      { name: './home/', mtime: T1 },
      { name: './home/user/', mode: 0o750, uid: 1000, gid: 1000, mtime: T1, pax: { 'SCHILY.xattr.user.dirattr': 'v' } },
      { name: './home/user/notes.txt', content: 'notes', uid: 1000, gid: 1000, mtime: T0 },
      { name: './nobody.txt', content: 'n', uid: 65534, gid: 65534, mode: 0o600, mtime: T0 },
      { name: './usr/', mtime: T1 },
      { name: './usr/lib/', mtime: T1 },
      { name: './usr/lib/libfoo.so.1', content: 'ELF', mtime: T1 },
      { name: './usr/lib/libfoo.so', type: 'symlink', linkname: 'libfoo.so.1', mtime: T1 },
      { name: './usr/lib/libfoo-hardlink.so', type: 'link', linkname: './usr/lib/libfoo.so.1' },
      { name: './lib', type: 'symlink', linkname: 'usr/lib', mtime: T1 },
      { name: './etc/', mtime: T2 },
      { name: './etc/abs-link', type: 'symlink', linkname: '/usr/lib/libfoo.so.1', mtime: T1 },
      { name: './etc/replaced', content: 'v1', mtime: T1 },
      { name: './etc/gone', content: 'gone', mtime: T1 },
      { name: './dev/', mtime: T1 },
      { name: './dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666, mtime: T1 },
      { name: './dev/fifo', type: 'fifo', mode: 0o600, mtime: T1 },
      { name: './olddir/', mtime: T1 },
      { name: './olddir/a', content: 'a', mtime: T1 },
      { name: './olddir/sub/', mtime: T1 },
      { name: './olddir/sub/b', content: 'b', mtime: T1 },
      { name: './opaque/', mtime: T2 },
      { name: './opaque/old1', content: 'old1', mtime: T1 },
      { name: './opaque/olddir/', mtime: T1 },
      { name: './opaque/olddir/x', content: 'x', mtime: T1 },
      { name: './dir-to-file/', mtime: T1 },
      { name: './dir-to-file/child', content: 'c', mtime: T1 },
      { name: './file-to-dir', content: 'f', mtime: T1 },
    ],
    new Map([
      [pl(20), CAP_NET_RAW],
      ['Q'.repeat(20), CAP_SETUID_NET_RAW],
    ]),
  );
  const layer2 = await makeTar([
    { name: './etc/replaced', content: 'version 2', mode: 0o640, uid: 1000, gid: 1000, mtime: T0 },
    { name: './etc/.wh.gone' },
    { name: './.wh.olddir' },
    { name: './opaque/new', content: 'new', mtime: T0 },
    { name: './opaque/.wh..wh..opq' },
    { name: './dir-to-file', content: 'now a file', mtime: T0 },
    { name: './file-to-dir/', mode: 0o700, mtime: T0 },
    { name: './file-to-dir/inner', content: 'inner', mtime: T0 },
    { name: './lib/x86_64-linux-gnu/', mtime: T0 },
    { name: './lib/x86_64-linux-gnu/libbar.so', content: 'bar', mtime: T0 },
  ]);
  const layer3 = await makeTar([
    { name: './bin/hello', content: '#!/bin/sh\necho hello v3\n', mode: 0o755, mtime: T0 },
    { name: './home/user/more', content: 'more', uid: 1000, gid: 1000, mtime: T0 },
  ]);
  const layerTars = [layer1, layer2, layer3];
  await buildLayout(layout, 'v1', { layers: layerTars.map((tar) => ({ tar, compression: 'gzip' as const })) });

  await execFileP('umoci', ['raw', 'unpack', '--image', `${layout}:v1`, byUmoci]);

  // Apply the layout's own blobs, in manifest order.
  const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  const blob = (digest: string): string => path.join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
  const manifest = JSON.parse(await readFile(blob(index.manifests[0]?.digest ?? ''), 'utf8')) as { layers: Array<{ digest: string; mediaType: string }> };
  t.is(manifest.layers.length, 3);
  const runner = new RecordingRunner();
  for (const l of manifest.layers) {
    await applyLayer(chunked(await readFile(blob(l.digest)), [7, 300]), l.mediaType, byUs, { runner });
  }
  t.is(runner.argvs.filter((a) => a[0] === 'setfattr').length, 1, 'one setfattr run for the one layer with xattrs');

  const ours = await listing(byUs);
  const theirs = await listing(byUmoci);
  t.deepEqual(ours, theirs);
  // Sanity: the listing really covers what the test is about.
  const joined = ours.join('\n');
  for (const needle of ['bin/su mode=4755', 'tmp mode=1777', 'dev/null mode=0666 uid=0 gid=0', 'char 1,3', 'fifo', 'security.capability=0x0100000280200000', 'user.foo=0x626172',
    'same inode: usr/lib/libfoo-hardlink.so usr/lib/libfoo.so.1', 'usr/lib/x86_64-linux-gnu/libbar.so', 'dir-to-file mode=0644', 'file-to-dir/inner', 'uid=65534 gid=65534', 'xattrs home/user: user.dirattr=0x76']) {
    t.true(joined.includes(needle), needle);
  }
  for (const gone of ['olddir', 'etc/gone', 'opaque/old1', 'opaque/olddir', '.wh.']) t.false(ours.some((x) => x.startsWith(gone) || x.includes(`/${gone}`)), gone);
  t.true(ours.some((x) => x.startsWith('opaque/new ')));
  t.false(ours.some((x) => x.startsWith('same inode: bin/hardlink')), 'the replaced bin/hello is a new inode');
  if (process.env['UNPACK_TEST_SHOW'] !== undefined) t.log(ours.join('\n'));
});
