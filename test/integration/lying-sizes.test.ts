/**
 * Lying sizes (issue 9): a manifest whose layer descriptor lies about the blob's size, a layer whose bytes are not
 * the compression its media type names, a gzip whose ISIZE trailer claims a size gzip cannot reach. Before pulling,
 * the rootfs is estimated from each layer's trailer or header (pull.ts estimateRootfs), read by HTTP Range and not
 * digest-checked; that estimate must check what it reads before believing it, so each of these is refused for what it
 * is (DIGEST_MISMATCH, UNPACK_FAILED) naming the layer, never as IMAGE_TOO_LARGE ("rootfs about 1024 MiB").
 *
 * The images are crafted by hand (blobs and a manifest written here, the descriptor's size or media type changed
 * where the test lies) and uploaded byte for byte through the registry API to a real docker-registry, which stores
 * such manifests as they are. Each is staged by the real cosctl into a loop-device cOS host, which must be left
 * untouched: both slots byte-identical, labels, GRUB env, COS_STATE read-only, no mount or loop device left. The
 * estimate itself is also checked directly against the registry (fast, no host), with honest images as controls, and
 * through a fault proxy for registries that ignore Range.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { createCosHost, type CosHostOptions } from '../helpers/cos-host.ts';
import { startRegistry, uploadImage, type TestRegistry } from '../helpers/registry.ts';
import { startFaultProxy } from '../helpers/fault-proxy.ts';
import { makeTar } from '../helpers/oci-layout.ts';
import { osTree } from '../helpers/os-image.ts';
import { cosctl, type CliResult, slotSnapshot } from '../helpers/cosctl.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import { AgentError, type ErrorCode } from '../../src/model/errors.ts';
import { RegistryClient } from '../../src/oci/registry.ts';
import { parseReference } from '../../src/oci/reference.ts';
import { estimateRootfs } from '../../src/actions/upgrade/pull.ts';

const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
const TAR = 'application/vnd.oci.image.layer.v1.tar';

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** One layer of a crafted image: its blob as stored, and what the manifest says about it. */
interface CraftedLayer {
  blob: Buffer;
  /** The tar inside (for the config's diff_ids and the expected estimate). */
  tar: Buffer;
  mediaType: string;
  /** The size the manifest declares (default: the blob's). */
  declaredSize?: number;
}

interface Crafted {
  ref: string;
  layers: Array<{ digest: string; realSize: number; declaredSize: number; mediaType: string }>;
}

let reg: TestRegistry;
let work: string;
let osTar: Buffer;
let extraTar: Buffer;
let randomTar: Buffer;
let bigTar: Buffer;
let seq = 0;
const images: Record<string, Crafted> = {};

/**
 * Writes blobs, config and a manifest (sizes and media types as `layers` declare, true or not) into an OCI layout
 * dir and uploads them through the registry API as `cos/<name>:v1`.
 */
async function craft(name: string, layers: readonly CraftedLayer[]): Promise<Crafted> {
  const dir = path.join(work, `${name}-${seq++}`);
  await mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  const put = async (b: Buffer): Promise<string> => {
    const digest = sha256(b);
    await writeFile(path.join(dir, 'blobs', 'sha256', digest.slice(7)), b);
    return digest;
  };
  const descs: Array<{ mediaType: string; digest: string; size: number }> = [];
  for (const l of layers) descs.push({ mediaType: l.mediaType, digest: await put(l.blob), size: l.declaredSize ?? l.blob.length });
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', created: '2024-01-02T03:04:05Z',
    config: { Labels: { 'org.opencontainers.image.version': '2.0.0' } },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(l.tar)) },
  }));
  const configDigest = await put(config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: descs,
  }));
  const manifestDigest = await put(manifest);
  await uploadImage(reg, dir, { digest: manifestDigest, mediaType: 'application/vnd.oci.image.manifest.v1+json' }, `cos/${name}:v1`);
  return {
    ref: `${reg.host}/cos/${name}:v1`,
    layers: layers.map((l, i) => ({ digest: descs[i]!.digest, realSize: l.blob.length, declaredSize: descs[i]!.size, mediaType: l.mediaType })),
  };
}

/** A gzip blob whose ISIZE trailer says `isize` (its CRC still right: only gunzip's length check can tell). */
function gzipClaiming(tar: Buffer, isize: number): Buffer {
  const gz = Buffer.from(gzipSync(tar));
  gz.writeUInt32LE(isize, gz.length - 4);
  return gz;
}

test.before(async () => {
  reg = await startRegistry();
  work = await mkdtemp(path.join(tmpdir(), 'lying-sizes-'));
  osTar = await makeTar(osTree('2.0.0'));
  extraTar = await makeTar([{ name: 'usr/share/' }, { name: 'usr/share/extra', content: 'extra layer\n'.repeat(2000) }]);
  const { randomBytes } = await import('node:crypto');
  randomTar = await makeTar([{ name: 'usr/share/' }, { name: 'usr/share/random', content: randomBytes(64 * 1024) }]);
  // Over 4 MiB compressed (4 GiB / 1032): a wrapped ISIZE would pass gzip's ratio bound.
  bigTar = await makeTar([{ name: 'usr/share/' }, { name: 'usr/share/big', content: randomBytes(5 * 1024 * 1024) }]);
  // Two gzip members (as eStargz layers and concatenated gzips are): the last trailer tells only the last 1 KiB.
  const multi = Buffer.concat([gzipSync(bigTar.subarray(0, bigTar.length - 1024)), gzipSync(bigTar.subarray(bigTar.length - 1024))]);
  const osLayer = { blob: gzipSync(osTar), tar: osTar, mediaType: GZIP };
  const gz = gzipSync(extraTar);
  const zs = zstdCompressSync(extraTar);
  const crafted: Array<[string, CraftedLayer[]]> = [
    // Controls: the same content, honest.
    ['honest-gzip', [osLayer, { blob: gz, tar: extraTar, mediaType: GZIP }]],
    ['honest-zstd', [{ blob: zstdCompressSync(osTar), tar: osTar, mediaType: ZSTD }, { blob: zs, tar: extraTar, mediaType: ZSTD }]],
    ['honest-tar', [osLayer, { blob: extraTar, tar: extraTar, mediaType: TAR }]],
    // The lies, each in layer 2 of 2.
    ['understated', [osLayer, { blob: gz, tar: extraTar, mediaType: GZIP, declaredSize: gz.length - 100 }]],
    ['overstated', [osLayer, { blob: gz, tar: extraTar, mediaType: GZIP, declaredSize: gz.length + 100 }]],
    ['overstated-far', [osLayer, { blob: gz, tar: extraTar, mediaType: GZIP, declaredSize: gz.length * 50 }]],
    ['zstd-as-gzip', [osLayer, { blob: zs, tar: extraTar, mediaType: GZIP }]],
    ['gzip-as-zstd', [osLayer, { blob: gz, tar: extraTar, mediaType: ZSTD }]],
    ['gzip-as-tar', [osLayer, { blob: gz, tar: extraTar, mediaType: TAR }]],
    ['isize-4gib', [osLayer, { blob: gzipClaiming(extraTar, 0xffff_ffff), tar: extraTar, mediaType: GZIP }]],
    ['isize-small', [osLayer, { blob: gzipClaiming(randomTar, 10), tar: randomTar, mediaType: GZIP }]],
    ['multi-member', [osLayer, { blob: multi, tar: bigTar, mediaType: GZIP }]],
  ];
  for (const [name, layers] of crafted) images[name] = await craft(name, layers);
});

test.after.always(async () => {
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

const regexEscape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function client(): RegistryClient {
  return new RegistryClient({ retries: 1, retryBaseMs: 10, authFiles: [], registriesConf: '/nonexistent/registries.conf', env: {} });
}

async function estimateOf(name: string, registryHost = reg.host): Promise<number | null> {
  const c = client();
  try {
    const ref = parseReference(images[name]!.ref.replace(reg.host, registryHost));
    const image = await c.resolve(ref);
    return await estimateRootfs(c, { ...ref, digest: image.digest }, image);
  } finally {
    c.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The estimate, against the registry

test('honest images: the estimate is the sum of the tar sizes, gzip, zstd or plain', async (t) => {
  t.is(await estimateOf('honest-gzip'), osTar.length + extraTar.length);
  t.is(await estimateOf('honest-zstd'), osTar.length + extraTar.length);
  t.is(await estimateOf('honest-tar'), osTar.length + extraTar.length);
});

async function estimateRefused(t: ExecutionContext, name: string, code: ErrorCode, registryHost?: string): Promise<string> {
  const e = await t.throwsAsync(estimateOf(name, registryHost), { instanceOf: AgentError });
  t.is(e?.code, code, e?.message);
  const layer = images[name]!.layers[1]!;
  t.regex(e?.message ?? '', new RegExp(`^layer 2/2 ${layer.digest} of `), 'names the layer');
  return e?.message ?? '';
}

test('a manifest understating a layer: DIGEST_MISMATCH naming the layer and both sizes', async (t) => {
  const l = images.understated!.layers[1]!;
  const m = await estimateRefused(t, 'understated', 'DIGEST_MISMATCH');
  t.regex(m, new RegExp(`the blob is ${l.realSize} bytes on the registry, but the manifest says ${l.declaredSize}$`));
});

test('a manifest overstating a layer (a little, or past the blob\'s end): DIGEST_MISMATCH naming both sizes', async (t) => {
  for (const name of ['overstated', 'overstated-far']) {
    const l = images[name]!.layers[1]!;
    const m = await estimateRefused(t, name, 'DIGEST_MISMATCH');
    t.regex(m, new RegExp(`the blob is ${l.realSize} bytes on the registry, but the manifest says ${l.declaredSize}$`));
  }
});

test('zstd bytes labelled gzip, gzip bytes labelled zstd or plain tar: UNPACK_FAILED naming the media type and the bytes', async (t) => {
  t.regex(await estimateRefused(t, 'zstd-as-gzip', 'UNPACK_FAILED'), new RegExp(`media type "${regexEscape(GZIP)}" says gzip, but the blob starts with 28 b5 2f fd .*\\(zstd\\)$`));
  t.regex(await estimateRefused(t, 'gzip-as-zstd', 'UNPACK_FAILED'), new RegExp(`media type "${regexEscape(ZSTD)}" says zstd, but the blob starts with 1f 8b 08 .*\\(gzip\\)$`));
  t.regex(await estimateRefused(t, 'gzip-as-tar', 'UNPACK_FAILED'), new RegExp(`media type "${regexEscape(TAR)}" says an uncompressed tar, but the blob starts with 1f 8b .*\\(gzip\\)$`));
});

test('a gzip ISIZE gzip cannot reach for the layer (4 GiB, or too small to have wrapped): no estimate, not a size', async (t) => {
  t.is(await estimateOf('isize-4gib'), null);
  t.is(await estimateOf('isize-small'), null);
});

test('a gzip of several members (the last trailer sizes only the last one) under 4 GiB: no estimate, not a 4 GiB wrap', async (t) => {
  t.is(await estimateOf('multi-member'), null);
});

test('a registry that ignores Range: the size is checked by Content-Length, the head read from the body; no trailer, no estimate', async (t) => {
  const proxy = await startFaultProxy(reg.url);
  t.teardown(() => proxy.stop());
  proxy.addFault({ path: /\/blobs\//, fault: { kind: 'ignore-range' } });
  t.is(await estimateOf('honest-gzip', proxy.host), null, 'the gzip trailer cannot be read');
  t.is(await estimateOf('honest-zstd', proxy.host), osTar.length + extraTar.length, 'the zstd head comes from the start of the body');
  const l = images.understated!.layers[1]!;
  t.regex(await estimateRefused(t, 'understated', 'DIGEST_MISMATCH', proxy.host), new RegExp(`is ${l.realSize} bytes on the registry, but the manifest says ${l.declaredSize}$`));
  t.regex(await estimateRefused(t, 'zstd-as-gzip', 'UNPACK_FAILED', proxy.host), /\(zstd\)$/);
});

test('a registry that does not state the blob size (Content-Range total "*"): no estimate, the magic still checked', async (t) => {
  const upstream = new URL(reg.url);
  // A proxy that rewrites Content-Range totals to '*', as RFC 9110 allows when the length is unknown.
  const http = await import('node:http');
  const server = http.createServer((req, res) => {
    const up = http.request({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      const headers = { ...r.headers };
      if (typeof headers['content-range'] === 'string') headers['content-range'] = headers['content-range'].replace(/\/\d+$/, '/*');
      res.writeHead(r.statusCode ?? 502, headers);
      r.pipe(res);
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
  const host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  t.is(await estimateOf('honest-gzip', host), null);
  t.is(await estimateOf('understated', host), null, 'an unknown size cannot be compared: no estimate (the pull says DIGEST_MISMATCH)');
  await estimateRefused(t, 'gzip-as-zstd', 'UNPACK_FAILED', host);
});

test('probeBlob states the blob\'s real size: the Content-Range total of a 206, and of a 416 past the end', async (t) => {
  const c = client();
  t.teardown(() => c.close());
  const ref = parseReference(images.understated!.ref);
  const l = images.understated!.layers[1]!;
  const desc = { mediaType: l.mediaType, digest: l.digest, size: l.declaredSize };
  const head = await c.probeBlob(ref, desc, 0, 4);
  t.deepEqual([head.bytes?.length, head.total], [4, l.realSize]);
  t.deepEqual([...(head.bytes ?? [])].slice(0, 2), [0x1f, 0x8b]);
  const tail = await c.probeBlob(ref, desc, l.realSize - 2, 4);
  t.deepEqual([tail.bytes?.length, tail.total], [2, l.realSize], 'clipped by the registry to what it has');
  const past = await c.probeBlob(ref, desc, l.realSize + 10, 4);
  t.deepEqual([past.bytes?.length, past.total], [0, l.realSize], '416: nothing there, and the size');
});

// ---------------------------------------------------------------------------------------------------------------
// End to end: the real cosctl on a loop-device host

const snapshot = slotSnapshot;

/** cosctl upgrade on a fresh host: the exit code of `code`, one stderr line matching `names`, nothing changed. */
async function refused(t: ExecutionContext, code: ErrorCode, names: RegExp, name: string, opts: CosHostOptions = {}): Promise<CliResult> {
  const host = await createCosHost({ ...opts, files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n', ...opts.files } });
  t.teardown(() => host.close());
  const before = await snapshot(host);
  const leaks = await host.leaks();
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', images[name]!.ref]);
  t.is(r.code, EXIT_CODES[code].exit, `expected ${code}; stderr: ${r.stderr}`);
  t.not(r.code, EXIT_CODES.IMAGE_TOO_LARGE.exit);
  const lines = r.stderr.trim().split('\n');
  t.is(lines.length, 1, `one line on stderr: ${r.stderr}`);
  t.regex(lines[0] ?? '', names);
  t.regex(lines[0] ?? '', new RegExp(regexEscape(images[name]!.layers[1]!.digest)), 'the message names the layer');
  t.deepEqual(await snapshot(host), before, 'slots, labels and GRUB env untouched, COS_STATE read-only');
  t.deepEqual(await host.leaks(), leaks, 'no mount or loop device left behind');
  const last = JSON.parse(await readFile(`${host.root}/run/cos-agent/last-upgrade.json`, 'utf8').catch(() => '{}')) as { result?: string; code?: string };
  if (last.result !== undefined) t.deepEqual([last.result, last.code], ['failure', code]);
  return r;
}

test('cosctl: a manifest understating a layer is DIGEST_MISMATCH naming the layer and both sizes, slots untouched', async (t) => {
  const l = images.understated!.layers[1]!;
  await refused(t, 'DIGEST_MISMATCH', new RegExp(`layer 2/2 sha256:[0-9a-f]{64} of .*: the blob is ${l.realSize} bytes on the registry, but the manifest says ${l.declaredSize}$`), 'understated');
});

test('cosctl: a manifest overstating a layer is DIGEST_MISMATCH naming both sizes, slots untouched', async (t) => {
  const l = images.overstated!.layers[1]!;
  await refused(t, 'DIGEST_MISMATCH', new RegExp(`the blob is ${l.realSize} bytes on the registry, but the manifest says ${l.declaredSize}$`), 'overstated');
});

test('cosctl: zstd bytes labelled gzip are UNPACK_FAILED naming the media type and the bytes, slots untouched', async (t) => {
  await refused(t, 'UNPACK_FAILED', /says gzip, but the blob starts with 28 b5 2f fd .*\(zstd\)$/, 'zstd-as-gzip');
});

test('cosctl: gzip bytes labelled zstd are UNPACK_FAILED naming the media type and the bytes, slots untouched', async (t) => {
  await refused(t, 'UNPACK_FAILED', /says zstd, but the blob starts with 1f 8b .*\(gzip\)$/, 'gzip-as-zstd');
});

test('cosctl: a tiny gzip layer whose ISIZE claims 4 GiB is not sized by it: the pull finds the lie (UNPACK_FAILED naming the layer), slots untouched', async (t) => {
  // With the trailer believed, the slot would have grown past 4 GiB and been refused as IMAGE_TOO_LARGE.
  await refused(t, 'UNPACK_FAILED', /layer 2\/2 sha256:[0-9a-f]{64}: decompressing the gzip layer failed: incorrect length check/, 'isize-4gib');
});

test('cosctl: a 5 MiB layer of two gzip members is staged (no 4 GiB estimate from its last trailer)', async (t) => {
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const leaks = await host.leaks();
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', images['multi-member']!.ref]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(await host.leaks(), leaks, 'no mount or loop device left behind');
});
