/**
 * The registry client against a real docker-registry (test/helpers/registry.ts), images pushed with real skopeo.
 * Faults a real registry cannot produce on demand go through test/helpers/fault-proxy.ts; proxy support is checked
 * with a small forward proxy (absolute-URI requests and CONNECT) defined here.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { AgentError, type ErrorCode } from '../../src/model/errors.ts';
import { computeDigest, formatPlatform, hostPlatform, MEDIA_TYPES, platformMatches } from '../../src/oci/manifest.ts';
import { parseReference } from '../../src/oci/reference.ts';
import { proxyForUrl, RegistryClient } from '../../src/oci/registry.ts';
import type { Descriptor, Platform, RegistryClientOptions } from '../../src/oci/types.ts';
import { SysRoot } from '../../src/sys/root.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { buildLayout, makeTar, writeImage, writeIndex, type ImageSpec } from '../helpers/oci-layout.ts';
import { freePort, startRegistry, uploadImage, writeAuthJson, type TestRegistry } from '../helpers/registry.ts';

// ---------------------------------------------------------------------------------------------------------------
// Fixtures: registries and images shared by the tests of this file

interface Pushed {
  layout: string;
  manifest: Descriptor;
}

let work: string;
let reg: TestRegistry; // no auth
let regBasic: TestRegistry; // htpasswd, alice:wonderland
let regToken: TestRegistry; // token, anonymous pull, bob:builder, identity token
let regPrivate: TestRegistry; // token, no anonymous pull
let regTls: TestRegistry; // HTTPS with a self-signed certificate
let oci: Pushed;
let docker: Pushed;
let big: Pushed;
let multi: { layout: string; platforms: Array<{ platform: Platform; manifest: Descriptor }> };
let dockerList: { digest: string; platforms: Array<{ platform: Platform; manifest: Descriptor }> };
const host = hostPlatform();
const foreignArch = host.architecture === 's390x' ? 'amd64' : 's390x';

async function blob(layout: string, digest: string): Promise<Buffer> {
  return readFile(path.join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length)));
}

async function manifestOf(p: Pushed): Promise<{ config: Descriptor; layers: Descriptor[] }> {
  return JSON.parse((await blob(p.layout, p.manifest.digest)).toString('utf8')) as { config: Descriptor; layers: Descriptor[] };
}

async function layout(name: string, spec: ImageSpec): Promise<Pushed> {
  const dir = path.join(work, name);
  return { layout: dir, manifest: await buildLayout(dir, 'v1', spec) };
}

test.before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'oci-registry-test-'));
  [reg, regBasic, regToken, regPrivate, regTls] = await Promise.all([
    startRegistry(),
    startRegistry({ auth: 'htpasswd', users: { alice: 'wonderland' } }),
    startRegistry({ auth: 'token', users: { bob: 'builder' }, identityTokens: { 'refresh-123': 'bob' } }),
    startRegistry({ auth: 'token', users: { carol: 'secret' }, anonymousPull: false }),
    startRegistry({ tls: true }),
  ]);

  const files = await makeTar([{ name: 'etc/' }, { name: 'etc/os-release', content: 'NAME=cOS\nVERSION=1\n' }, { name: 'usr/bin/tool', content: 'x'.repeat(5000), mode: 0o755 }]);
  oci = await layout('oci', {
    labels: { 'org.opencontainers.image.version': '1.0.0' },
    architecture: host.architecture,
    ...(host.variant ? { variant: host.variant } : {}),
    layers: [
      { tar: files, compression: 'gzip' },
      { tar: await makeTar([{ name: 'var/lib/zstd', content: 'z'.repeat(3000) }]), compression: 'zstd' },
      { tar: await makeTar([{ name: 'plain', content: 'p' }]), compression: 'none' },
    ],
  });
  docker = await layout('docker', { format: 'docker', architecture: host.architecture, layers: [{ tar: files, compression: 'gzip' }] });
  big = await layout('big', { architecture: host.architecture, layers: [{ tar: await makeTar([{ name: 'big.bin', content: randomBytes(3 << 20) }]), compression: 'none' }] });
  const foreign = await layout('foreign', { architecture: foreignArch, layers: [{ tar: files }] });

  const platforms: Platform[] = [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64' },
    { os: 'linux', architecture: 'arm', variant: 'v7' },
    { os: 'linux', architecture: 's390x' },
  ];
  const multiDir = path.join(work, 'multi');
  await mkdir(multiDir);
  const entries = [];
  for (const p of platforms) {
    const spec: ImageSpec = { architecture: p.architecture, ...(p.variant ? { variant: p.variant } : {}), layers: [{ tar: await makeTar([{ name: `arch-${formatPlatform(p).replaceAll('/', '-')}`, content: formatPlatform(p) }]) }] };
    entries.push({ platform: p, manifest: await writeImage(multiDir, spec) });
  }
  await writeIndex(multiDir, 'v1', entries.map((e) => e.manifest));
  multi = { layout: multiDir, platforms: entries };

  for (const r of [reg, regBasic, regToken, regPrivate, regTls]) await r.push(oci.layout, 'v1', 'os/oci:v1');
  // One repository per token test, so each can pick its own token requests out of the shared log.
  for (const repo of ['anon', 'creds', 'idtoken']) await regToken.push(oci.layout, 'v1', `os/${repo}:v1`);
  await uploadImage(reg, docker.layout, docker.manifest, 'os/docker:v1');
  await reg.push(big.layout, 'v1', 'os/big:v1');
  await reg.push(foreign.layout, 'v1', 'os/foreign:v1');
  await reg.push(multiDir, 'v1', 'os/multi:v1');

  // A Docker manifest list, PUT by hand: its Docker per-platform images are uploaded by tag into the same repository first.
  const listEntries = [];
  for (const p of [{ os: 'linux', architecture: 's390x' }, { os: 'linux', architecture: host.architecture, ...(host.variant ? { variant: host.variant } : {}) }] as Platform[]) {
    const name = `dlist-${p.architecture}`;
    const img = await layout(name, { format: 'docker', architecture: p.architecture, ...(p.variant ? { variant: p.variant } : {}), layers: [{ tar: await makeTar([{ name: p.architecture, content: p.architecture }]) }] });
    await uploadImage(reg, img.layout, img.manifest, `os/dlist:${p.architecture}`);
    listEntries.push({ platform: p, manifest: img.manifest });
  }
  const list = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.dockerManifestList,
    manifests: listEntries.map((e) => ({ mediaType: MEDIA_TYPES.dockerManifest, digest: e.manifest.digest, size: e.manifest.size, platform: e.platform })),
  }));
  const put = await fetch(`${reg.url}/v2/os/dlist/manifests/v1`, { method: 'PUT', headers: { 'content-type': MEDIA_TYPES.dockerManifestList }, body: list });
  if (put.status !== 201) throw new Error(`PUT manifest list: HTTP ${put.status} ${await put.text()}`);
  dockerList = { digest: computeDigest(list), platforms: listEntries };
});

test.after.always(async () => {
  await Promise.all([reg, regBasic, regToken, regPrivate, regTls].map((r) => r?.stop()));
  if (work) await rm(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------------
// Helpers

interface ClientExtras extends RegistryClientOptions {
  events?: Array<{ event: string; fields: Record<string, unknown> }>;
}

/** A client isolated from the host: no auth files or registries.conf unless given, no proxy env, fast retries. */
function client(opts: ClientExtras = {}): RegistryClient {
  const { events, ...rest } = opts;
  const c = new RegistryClient({
    authFiles: [],
    registriesConf: '/nonexistent/registries.conf',
    env: {},
    retries: 2,
    retryBaseMs: 5,
    timeoutMs: 10_000,
    ...(events ? { log: (event: string, fields: Record<string, unknown>): void => void events.push({ event, fields }) } : {}),
    ...rest,
  });
  return c;
}

async function tempRoot(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'oci-root-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Reads a stream to its end or error, noting whether 'end' was ever emitted. */
async function drain(s: Readable): Promise<{ bytes: Buffer; ended: boolean; error: unknown }> {
  const chunks: Buffer[] = [];
  let ended = false;
  s.on('end', () => {
    ended = true;
  });
  try {
    for await (const c of s) chunks.push(c as Buffer);
    return { bytes: Buffer.concat(chunks), ended, error: undefined };
  } catch (e) {
    return { bytes: Buffer.concat(chunks), ended, error: e };
  }
}

async function rejectsWith(t: ExecutionContext, p: Promise<unknown>, code: ErrorCode): Promise<AgentError> {
  const e = await t.throwsAsync(p, { instanceOf: AgentError });
  t.is(e?.code, code, e?.message);
  return e as AgentError;
}

function ref(registry: TestRegistry | FaultProxy | string, name: string): ReturnType<typeof parseReference> {
  return parseReference(`${typeof registry === 'string' ? registry : registry.host}/${name}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Resolving

test('resolving an OCI image by tag gives the pushed manifest, its exact bytes, config and sizes', async (t) => {
  const c = client();
  const r = await c.resolve(`${reg.host}/os/oci:v1`);
  const m = await manifestOf(oci);
  t.is(r.digest, oci.manifest.digest);
  t.is(r.indexDigest, undefined);
  t.is(r.manifest.mediaType, MEDIA_TYPES.ociManifest);
  t.deepEqual(r.manifest.layers, m.layers);
  t.deepEqual(r.manifest.config, m.config);
  t.true(r.manifestBytes.equals(await blob(oci.layout, oci.manifest.digest)));
  t.is(r.config.config?.Labels?.['org.opencontainers.image.version'], '1.0.0');
  t.is(r.compressedSize, m.layers.reduce((n, l) => n + l.size, 0));
  t.true(platformMatches(r.platform, host));
  t.deepEqual(r.reference, parseReference(`${reg.host}/os/oci:v1`));
});

test('resolving by digest gives the same manifest, fetched by that digest', async (t) => {
  const events: ClientExtras['events'] = [];
  const r = await client({ events }).resolve(parseReference(`${reg.host}/os/oci@${oci.manifest.digest}`));
  t.is(r.digest, oci.manifest.digest);
  t.true(events.some((e) => e.event === 'oci.request' && String(e.fields.url).endsWith(`/manifests/${oci.manifest.digest}`)));
  t.false(events.some((e) => e.event === 'oci.request' && String(e.fields.url).endsWith('/manifests/v1')));
});

test('a Docker v2 schema 2 image resolves with its Docker media types', async (t) => {
  const r = await client().resolve(`${reg.host}/os/docker:v1`);
  t.is(r.digest, docker.manifest.digest);
  t.is(r.manifest.mediaType, MEDIA_TYPES.dockerManifest);
  t.is(r.manifest.config.mediaType, MEDIA_TYPES.dockerConfig);
  t.is(r.manifest.layers[0]?.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
});

test('from an OCI index with several platforms, resolve picks the host platform', async (t) => {
  const expected = multi.platforms.find((p) => platformMatches(p.platform, host));
  if (!expected) return t.fail(`the fixture has no image for ${formatPlatform(host)}`);
  const idx = await blob(multi.layout, JSON.parse(await readFile(path.join(multi.layout, 'index.json'), 'utf8')).manifests[0].digest);
  const r = await client().resolve(`${reg.host}/os/multi:v1`);
  t.is(r.digest, expected.manifest.digest);
  t.is(r.indexDigest, computeDigest(idx));
  t.deepEqual(r.platform, expected.platform);
  t.is(r.config.architecture, expected.platform.architecture);
});

test('on an arm64/v8 platform, the index entry without a variant is picked', async (t) => {
  const r = await client({ platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }).resolve(`${reg.host}/os/multi:v1`);
  t.is(r.digest, multi.platforms[1]?.manifest.digest);
  const arm = await client({ platform: { os: 'linux', architecture: 'arm', variant: 'v7' } }).resolve(`${reg.host}/os/multi:v1`);
  t.is(arm.digest, multi.platforms[2]?.manifest.digest);
});

test('when the index has no manifest for the platform, it throws MANIFEST_INVALID listing the available ones', async (t) => {
  const e = await rejectsWith(t, client({ platform: { os: 'linux', architecture: 'riscv64' } }).resolve(`${reg.host}/os/multi:v1`), 'MANIFEST_INVALID');
  t.true(e.message.includes('linux/amd64, linux/arm64, linux/arm/v7, linux/s390x'), e.message);
  t.true(e.message.includes('linux/riscv64'));
});

test('from a Docker manifest list, resolve picks the host platform', async (t) => {
  const r = await client().resolve(`${reg.host}/os/dlist:v1`);
  t.is(r.indexDigest, dockerList.digest);
  t.is(r.digest, dockerList.platforms[1]?.manifest.digest);
  t.is(r.manifest.mediaType, MEDIA_TYPES.dockerManifest);
});

test('a single-platform image for another architecture is MANIFEST_INVALID naming both platforms', async (t) => {
  const e = await rejectsWith(t, client().resolve(`${reg.host}/os/foreign:v1`), 'MANIFEST_INVALID');
  t.true(e.message.includes(`linux/${foreignArch}`) && e.message.includes(formatPlatform(host)), e.message);
});

test('fetchManifest by digest returns the exact bytes with their media type', async (t) => {
  const m = await client().fetchManifest(ref(reg, 'os/docker'), docker.manifest.digest);
  t.is(m.digest, docker.manifest.digest);
  t.is(m.mediaType, MEDIA_TYPES.dockerManifest);
  t.true(m.bytes.equals(await blob(docker.layout, docker.manifest.digest)));
});

// ---------------------------------------------------------------------------------------------------------------
// Blobs

test('openBlob of every layer gives exactly the pushed bytes, counting them through onBytes', async (t) => {
  const c = client();
  const r = await c.resolve(`${reg.host}/os/oci:v1`);
  t.is(r.manifest.layers.length, 3);
  for (const layer of r.manifest.layers) {
    let counted = 0;
    const out = await drain(c.openBlob(r.reference, layer, { onBytes: (n) => (counted += n) }));
    t.is(out.error, undefined);
    t.true(out.ended);
    t.true(out.bytes.equals(await blob(oci.layout, layer.digest)), layer.digest);
    t.is(counted, layer.size);
  }
});

test('a blob of several MiB streams intact', async (t) => {
  const c = client();
  const r = await c.resolve(`${reg.host}/os/big:v1`);
  const layer = r.manifest.layers[0] as Descriptor;
  const out = await drain(c.openBlob(r.reference, layer));
  t.true(out.bytes.equals(await blob(big.layout, layer.digest)));
});

test('a blob longer than its descriptor says is DIGEST_MISMATCH, one shorter is BLOB_TRUNCATED', async (t) => {
  const layer = (await manifestOf(oci)).layers[0] as Descriptor;
  const long = await drain(client().openBlob(ref(reg, 'os/oci'), { ...layer, size: layer.size - 1 }));
  t.is((long.error as AgentError | undefined)?.code, 'DIGEST_MISMATCH');
  const short = await drain(client().openBlob(ref(reg, 'os/oci'), { ...layer, size: layer.size + 10 }));
  t.is((short.error as AgentError | undefined)?.code, 'BLOB_TRUNCATED');
  t.false(long.ended || short.ended);
});

test('aborting a blob stream errors it with the abort reason', async (t) => {
  const c = client();
  const layer = (await manifestOf(big)).layers[0] as Descriptor;
  const ac = new AbortController();
  let seen = 0;
  const s = c.openBlob(ref(reg, 'os/big'), layer, { signal: ac.signal, onBytes: (n) => { seen += n; if (seen > 0) ac.abort(); } });
  const out = await drain(s);
  t.false(out.ended);
  t.is((out.error as Error | undefined)?.name, 'AbortError');
});

// ---------------------------------------------------------------------------------------------------------------
// Not found, unreachable, blocked

test('an unknown repository is REGISTRY_NOT_FOUND naming the repository', async (t) => {
  const e = await rejectsWith(t, client().resolve(`${reg.host}/no/such-repo:v1`), 'REGISTRY_NOT_FOUND');
  t.true(e.message.includes('no/such-repo'), e.message);
});

test('an unknown tag is REGISTRY_NOT_FOUND naming the tag', async (t) => {
  const e = await rejectsWith(t, client().resolve(`${reg.host}/os/oci:v404`), 'REGISTRY_NOT_FOUND');
  t.true(e.message.includes('os/oci:v404'), e.message);
});

test('an unknown blob is REGISTRY_NOT_FOUND naming the digest', async (t) => {
  const digest = `sha256:${'0'.repeat(64)}`;
  const out = await drain(client().openBlob(ref(reg, 'os/oci'), { mediaType: 'application/octet-stream', digest, size: 10 }));
  t.is((out.error as AgentError).code, 'REGISTRY_NOT_FOUND');
  t.true((out.error as AgentError).message.includes(digest));
});

test('when nothing listens on the port, it is REGISTRY_UNREACHABLE after the configured retries', async (t) => {
  const port = await freePort();
  const events: ClientExtras['events'] = [];
  const e = await rejectsWith(t, client({ retries: 2, retryBaseMs: 1, events }).resolve(`127.0.0.1:${port}/os/oci:v1`), 'REGISTRY_UNREACHABLE');
  t.true(e.message.includes(`127.0.0.1:${port}`) && e.message.includes('connection refused'), e.message);
  t.is(events.filter((x) => x.event === 'oci.retry').length, 2);
});

test('when the registry name does not resolve, it is REGISTRY_UNREACHABLE', async (t) => {
  const e = await rejectsWith(t, client({ retries: 0 }).resolve('no-such-host.invalid/os/oci:v1'), 'REGISTRY_UNREACHABLE');
  t.true(e.message.includes('no-such-host.invalid'), e.message);
});

test('a registry blocked in registries.conf is REGISTRY_ERROR naming the file', async (t) => {
  const root = await tempRoot(t);
  await mkdir(path.join(root, 'etc/containers'), { recursive: true });
  await writeFile(path.join(root, 'etc/containers/registries.conf'), `[[registry]]\nlocation = "${reg.host}/os"\nblocked = true\n`);
  const e = await rejectsWith(t, client({ root: new SysRoot(root), registriesConf: '/etc/containers/registries.conf' }).resolve(`${reg.host}/os/oci:v1`), 'REGISTRY_ERROR');
  t.true(e.message.includes(path.join(root, 'etc/containers/registries.conf')), e.message);
});

// ---------------------------------------------------------------------------------------------------------------
// Auth

async function authRoot(t: ExecutionContext, entries: Parameters<typeof writeAuthJson>[1]): Promise<{ root: SysRoot; file: string }> {
  const dir = await tempRoot(t);
  const file = path.join(dir, 'etc/containers/auth.json');
  await writeAuthJson(file, entries);
  return { root: new SysRoot(dir), file };
}

function authClient(root: SysRoot, extra: ClientExtras = {}): RegistryClient {
  return client({ root, authFiles: ['/run/containers/0/auth.json', '/etc/containers/auth.json'], ...extra });
}

test('with Basic auth (htpasswd), the right credentials from auth.json pull the image', async (t) => {
  const { root } = await authRoot(t, { [regBasic.host]: { username: 'alice', password: 'wonderland' } });
  const c = authClient(root);
  const r = await c.resolve(`${regBasic.host}/os/oci:v1`);
  t.is(r.digest, oci.manifest.digest);
  const layer = r.manifest.layers[0] as Descriptor;
  t.true((await drain(c.openBlob(r.reference, layer))).bytes.equals(await blob(oci.layout, layer.digest)));
});

test('with Basic auth, a credential keyed by registry/namespace in auth.json is used', async (t) => {
  const { root } = await authRoot(t, { [`${regBasic.host}/os`]: { username: 'alice', password: 'wonderland' }, [regBasic.host]: { username: 'alice', password: 'wrong' } });
  t.is((await authClient(root).resolve(`${regBasic.host}/os/oci:v1`)).digest, oci.manifest.digest);
});

test('with Basic auth, a wrong password is REGISTRY_UNAUTHORIZED naming registry, repository and auth file', async (t) => {
  const { root, file } = await authRoot(t, { [regBasic.host]: { username: 'alice', password: 'looking-glass' } });
  const e = await rejectsWith(t, authClient(root).resolve(`${regBasic.host}/os/oci:v1`), 'REGISTRY_UNAUTHORIZED');
  for (const s of [regBasic.host, 'os/oci', file, '"alice"']) t.true(e.message.includes(s), `${e.message} should name ${s}`);
});

test('with Basic auth and no credentials, it is REGISTRY_UNAUTHORIZED naming the files searched', async (t) => {
  const dir = await tempRoot(t);
  const e = await rejectsWith(t, authClient(new SysRoot(dir)).resolve(`${regBasic.host}/os/oci:v1`), 'REGISTRY_UNAUTHORIZED');
  t.true(e.message.includes('anonymously') && e.message.includes(path.join(dir, 'etc/containers/auth.json')), e.message);
});

/** The token server's answers to pull-only requests for `repo` (pushes ask for pull,push). */
const pullTokenRequests = (repo: string): TestRegistry['tokenRequests'] => regToken.tokenRequests.filter((x) => x.scope === `repository:${repo}:pull`);

test('with token auth, an anonymous pull gets a token for the repository scope once and reuses it', async (t) => {
  const c = client();
  const r = await c.resolve(`${regToken.host}/os/anon:v1`);
  for (const layer of r.manifest.layers) await drain(c.openBlob(r.reference, layer));
  await c.resolve(`${regToken.host}/os/anon@${oci.manifest.digest}`);
  t.is(r.digest, oci.manifest.digest);
  t.deepEqual(pullTokenRequests('os/anon').map((x) => ({ user: x.user, service: x.service, status: x.status })), [
    { user: undefined, service: 'cos-test-registry', status: 200 },
  ]);
});

test('with token auth, credentials from auth.json are sent to the token server', async (t) => {
  const { root } = await authRoot(t, { [regToken.host]: { username: 'bob', password: 'builder' } });
  t.is((await authClient(root).resolve(`${regToken.host}/os/creds:v1`)).digest, oci.manifest.digest);
  t.like(pullTokenRequests('os/creds')[0], { user: 'bob', method: 'GET', status: 200 });
});

test('with token auth, an identity token is exchanged with an OAuth2 refresh_token grant', async (t) => {
  const { root } = await authRoot(t, { [regToken.host]: { identitytoken: 'refresh-123' } });
  t.is((await authClient(root).resolve(`${regToken.host}/os/idtoken:v1`)).digest, oci.manifest.digest);
  t.like(pullTokenRequests('os/idtoken')[0], { method: 'POST', grantType: 'refresh_token', user: 'bob', status: 200 });
});

test('with token auth, a wrong password is REGISTRY_UNAUTHORIZED naming registry and repository', async (t) => {
  const { root, file } = await authRoot(t, { [regToken.host]: { username: 'bob', password: 'nope' } });
  const e = await rejectsWith(t, authClient(root).resolve(`${regToken.host}/os/oci:v1`), 'REGISTRY_UNAUTHORIZED');
  for (const s of [regToken.host, 'os/oci', file]) t.true(e.message.includes(s), `${e.message} should name ${s}`);
});

test('with token auth and no anonymous pull, no credentials is REGISTRY_UNAUTHORIZED, the right ones pull', async (t) => {
  const e = await rejectsWith(t, client().resolve(`${regPrivate.host}/os/oci:v1`), 'REGISTRY_UNAUTHORIZED');
  t.true(e.message.includes(regPrivate.host) && e.message.includes('os/oci'), e.message);
  const { root } = await authRoot(t, { [regPrivate.host]: { username: 'carol', password: 'secret' } });
  t.is((await authClient(root).resolve(`${regPrivate.host}/os/oci:v1`)).digest, oci.manifest.digest);
});

// ---------------------------------------------------------------------------------------------------------------
// Faults (through the fault proxy)

async function faultProxy(t: ExecutionContext): Promise<FaultProxy> {
  const p = await startFaultProxy(reg.url);
  t.teardown(() => p.stop());
  return p;
}

const bigLayer = async (): Promise<Descriptor> => (await manifestOf(big)).layers[0] as Descriptor;

test('a blob redirected to another host is fetched from there, through the proxy that applies to that host', async (t) => {
  const proxy = await faultProxy(t);
  const fwd = await forwardProxy(t);
  const layer = await bigLayer();
  proxy.addFault({ path: `/blobs/${layer.digest}`, fault: { kind: 'redirect', location: reg.url } });
  const out = await drain(client({ env: { HTTP_PROXY: fwd.url, NO_PROXY: proxy.host } }).openBlob(ref(proxy, 'os/big'), layer));
  t.is(out.error, undefined);
  t.true(out.bytes.equals(await blob(big.layout, layer.digest)));
  t.deepEqual(proxy.requests.map((r) => r.status), [307]);
  t.deepEqual(fwd.seen, [`GET ${reg.url}/v2/os/big/blobs/${layer.digest}`]);
});

test('a corrupted byte in a blob errors the stream with DIGEST_MISMATCH before it ends', async (t) => {
  const proxy = await faultProxy(t);
  const layer = await bigLayer();
  proxy.addFault({ path: `/blobs/${layer.digest}`, fault: { kind: 'corrupt', at: 123_456 } });
  const out = await drain(client().openBlob(ref(proxy, 'os/big'), layer));
  t.is((out.error as AgentError | undefined)?.code, 'DIGEST_MISMATCH');
  t.true((out.error as AgentError).message.includes(layer.digest));
  t.false(out.ended);
});

test('a blob cut mid-way resumes with a Range request from the last byte and ends with the right bytes', async (t) => {
  const proxy = await faultProxy(t);
  const layer = await bigLayer();
  proxy.addFault({ path: `/blobs/${layer.digest}`, fault: { kind: 'truncate', at: 1_000_000 }, times: 1 });
  const events: ClientExtras['events'] = [];
  const out = await drain(client({ events }).openBlob(ref(proxy, 'os/big'), layer));
  t.is(out.error, undefined);
  t.true(out.bytes.equals(await blob(big.layout, layer.digest)));
  const blobRequests = proxy.requests.filter((r) => r.path.includes(layer.digest));
  t.deepEqual(blobRequests.map((r) => [r.range, r.fault]), [[undefined, 'truncate'], ['bytes=1000000-', undefined]]);
  t.true(events.some((e) => e.event === 'oci.resume' && e.fields.offset === 1_000_000));
});

test('when the server ignores the Range header on resume, the bytes already received are skipped', async (t) => {
  const proxy = await faultProxy(t);
  const layer = await bigLayer();
  proxy.addFault({ path: `/blobs/${layer.digest}`, fault: { kind: 'truncate', at: 700_000 }, times: 1 });
  proxy.addFault({ path: `/blobs/${layer.digest}`, fault: { kind: 'ignore-range' } });
  const out = await drain(client().openBlob(ref(proxy, 'os/big'), layer));
  t.is(out.error, undefined);
  t.true(out.bytes.equals(await blob(big.layout, layer.digest)));
  t.is(proxy.requests.filter((r) => r.path.includes(layer.digest) && r.status === 200).length, 2);
});

test('a blob that is always cut at the same byte is BLOB_TRUNCATED after the retries', async (t) => {
  const proxy = await faultProxy(t);
  const layer = await bigLayer();
  proxy.addFault({ path: `/blobs/${layer.digest}`, fault: { kind: 'truncate', at: 1_000_000 } });
  const out = await drain(client({ retries: 3 }).openBlob(ref(proxy, 'os/big'), layer));
  t.is((out.error as AgentError | undefined)?.code, 'BLOB_TRUNCATED');
  t.false(out.ended);
  t.is(out.bytes.length, 1_000_000);
  t.is(proxy.requests.filter((r) => r.path.includes(layer.digest)).length, 4);
});

test('5xx answers are retried with backoff until the registry answers', async (t) => {
  const proxy = await faultProxy(t);
  proxy.addFault({ path: '/manifests/v1', fault: { kind: 'status', status: 500 }, times: 2 });
  const events: ClientExtras['events'] = [];
  const r = await client({ retries: 2, events }).resolve(`${proxy.host}/os/oci:v1`);
  t.is(r.digest, oci.manifest.digest);
  t.deepEqual(proxy.requests.filter((x) => x.path.endsWith('/manifests/v1')).map((x) => x.status), [500, 500, 200]);
  const delays = events.filter((e) => e.event === 'oci.retry').map((e) => e.fields.delayMs);
  t.deepEqual(delays, [5, 10]);
});

test('a registry that keeps answering 503 is REGISTRY_ERROR with the status after the retries', async (t) => {
  const proxy = await faultProxy(t);
  proxy.addFault({ path: '/manifests/', fault: { kind: 'status', status: 503 } });
  const e = await rejectsWith(t, client({ retries: 2 }).resolve(`${proxy.host}/os/oci:v1`), 'REGISTRY_ERROR');
  t.true(e.message.includes('503'), e.message);
  t.is(proxy.requests.length, 3);
});

test('a 4xx answer is not retried', async (t) => {
  const proxy = await faultProxy(t);
  proxy.addFault({ path: '/manifests/', fault: { kind: 'status', status: 400 } });
  const e = await rejectsWith(t, client({ retries: 3 }).resolve(`${proxy.host}/os/oci:v1`), 'REGISTRY_ERROR');
  t.true(e.message.includes('400'), e.message);
  t.is(proxy.requests.length, 1);
});

test('a connection reset before the answer is retried', async (t) => {
  const proxy = await faultProxy(t);
  proxy.addFault({ path: '/manifests/v1', fault: { kind: 'reset' }, times: 1 });
  t.is((await client().resolve(`${proxy.host}/os/oci:v1`)).digest, oci.manifest.digest);
  t.is(proxy.requests.filter((x) => x.path.endsWith('/manifests/v1')).length, 2);
});

test('a manifest asked by digest whose bytes do not match is DIGEST_MISMATCH', async (t) => {
  const proxy = await faultProxy(t);
  const other = await blob(docker.layout, docker.manifest.digest);
  proxy.addFault({ path: `/manifests/${oci.manifest.digest}`, fault: { kind: 'replace', body: other } });
  const e = await rejectsWith(t, client().resolve(`${proxy.host}/os/oci@${oci.manifest.digest}`), 'DIGEST_MISMATCH');
  t.true(e.message.includes(oci.manifest.digest), e.message);
});

test('a manifest asked by tag whose bytes do not match the registry Docker-Content-Digest is DIGEST_MISMATCH', async (t) => {
  const proxy = await faultProxy(t);
  proxy.addFault({ path: '/manifests/v1', fault: { kind: 'replace', body: await blob(docker.layout, docker.manifest.digest) } });
  await rejectsWith(t, client().resolve(`${proxy.host}/os/oci:v1`), 'DIGEST_MISMATCH');
});

test('an index entry whose manifest bytes do not match is DIGEST_MISMATCH', async (t) => {
  const proxy = await faultProxy(t);
  const expected = multi.platforms.find((p) => platformMatches(p.platform, host));
  if (!expected) return t.fail();
  proxy.addFault({ path: `/manifests/${expected.manifest.digest}`, fault: { kind: 'replace', body: await blob(oci.layout, oci.manifest.digest) } });
  await rejectsWith(t, client().resolve(`${proxy.host}/os/multi:v1`), 'DIGEST_MISMATCH');
});

test('a malformed manifest is MANIFEST_INVALID', async (t) => {
  const proxy = await faultProxy(t);
  proxy.addFault({ path: '/manifests/v1', fault: { kind: 'status', status: 200, body: '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": ', headers: { 'content-type': MEDIA_TYPES.ociManifest } } });
  await rejectsWith(t, client().resolve(`${proxy.host}/os/oci:v1`), 'MANIFEST_INVALID');
});

// ---------------------------------------------------------------------------------------------------------------
// HTTP proxies, TLS and insecure registries

interface ForwardProxy {
  url: string;
  seen: string[];
}

/** A forward proxy: absolute-URI requests and CONNECT tunnels, with host names mapped to 127.0.0.1 ports. */
async function forwardProxy(t: ExecutionContext, hosts: Record<string, string> = {}): Promise<ForwardProxy> {
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const u = new URL(req.url ?? '');
    const [h, p] = (hosts[u.host] ?? u.host).split(':');
    const up = http.request({ host: h, port: p, method: req.method, path: u.pathname + u.search, headers: req.headers }, (ures) => {
      res.writeHead(ures.statusCode ?? 502, ures.headers);
      ures.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connect', (req: http.IncomingMessage, sock: net.Socket, head: Buffer) => {
    seen.push(`CONNECT ${req.url}`);
    const [h, p] = (hosts[req.url ?? ''] ?? req.url ?? '').split(':');
    const up = net.connect(Number(p), h ?? '', () => {
      sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      up.write(head);
      up.pipe(sock);
      sock.pipe(up);
    });
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, seen };
}

test('with HTTP_PROXY set, requests go through the proxy', async (t) => {
  const proxy = await forwardProxy(t);
  const r = await client({ env: { HTTP_PROXY: proxy.url } }).resolve(`${reg.host}/os/oci:v1`);
  t.is(r.digest, oci.manifest.digest);
  t.true(proxy.seen.includes(`GET http://${reg.host}/v2/os/oci/manifests/v1`), proxy.seen.join('\n'));
  t.true(proxy.seen.some((s) => s.includes(`/blobs/${r.manifest.config.digest}`)));
});

test('NO_PROXY bypasses the proxy for the hosts it lists (names, IPs, CIDR ranges, lower case too)', async (t) => {
  const proxy = await forwardProxy(t);
  for (const env of [
    { HTTP_PROXY: proxy.url, NO_PROXY: 'localhost,127.0.0.1' },
    { http_proxy: proxy.url, no_proxy: '127.0.0.0/8' },
    { HTTP_PROXY: proxy.url, NO_PROXY: reg.host },
    { HTTPS_PROXY: proxy.url },
  ]) {
    t.is((await client({ env }).resolve(`${reg.host}/os/oci:v1`)).digest, oci.manifest.digest);
  }
  t.deepEqual(proxy.seen, []);
});

test('a registry with an untrusted certificate is REGISTRY_UNREACHABLE about TLS, without retries (HTTPS via CONNECT)', async (t) => {
  const name = `registry.test:${regTls.host.split(':')[1]}`;
  const proxy = await forwardProxy(t, { [name]: regTls.host });
  const events: ClientExtras['events'] = [];
  const e = await rejectsWith(t, client({ env: { HTTPS_PROXY: proxy.url }, events }).resolve(`${name}/os/oci:v1`), 'REGISTRY_UNREACHABLE');
  t.true(e.message.includes('TLS') && e.message.includes(name), e.message);
  t.true(proxy.seen.includes(`CONNECT ${name}`));
  t.is(events.filter((x) => x.event === 'oci.retry').length, 0);
});

test('a registry marked insecure in registries.conf is used over HTTPS without certificate verification', async (t) => {
  const name = `registry.test:${regTls.host.split(':')[1]}`;
  const proxy = await forwardProxy(t, { [name]: regTls.host });
  const root = await tempRoot(t);
  await mkdir(path.join(root, 'etc/containers'), { recursive: true });
  await writeFile(path.join(root, 'etc/containers/registries.conf'), `[[registry]]\nlocation = "${name}"\ninsecure = true\n`);
  const c = client({ root: new SysRoot(root), registriesConf: '/etc/containers/registries.conf', env: { HTTPS_PROXY: proxy.url, HTTP_PROXY: proxy.url } });
  const r = await c.resolve(`${name}/os/oci:v1`);
  t.is(r.digest, oci.manifest.digest);
  t.true(proxy.seen.length > 0 && proxy.seen.every((s) => s === `CONNECT ${name}`), proxy.seen.join('\n'));
});

test('a registry marked insecure that only speaks plain HTTP is used over HTTP', async (t) => {
  const name = `registry.test:${reg.host.split(':')[1]}`;
  const proxy = await forwardProxy(t, { [name]: reg.host });
  const root = await tempRoot(t);
  await mkdir(path.join(root, 'etc/containers'), { recursive: true });
  await writeFile(path.join(root, 'etc/containers/registries.conf'), `[[registry]]\nlocation = "${name}"\ninsecure = true\n`);
  const c = client({ root: new SysRoot(root), registriesConf: '/etc/containers/registries.conf', env: { HTTPS_PROXY: proxy.url, HTTP_PROXY: proxy.url } });
  t.is((await c.resolve(`${name}/os/oci:v1`)).digest, oci.manifest.digest);
  t.true(proxy.seen.includes(`GET http://${name}/v2/os/oci/manifests/v1`), proxy.seen.join('\n'));
});

test('a registry that is not loopback and not insecure is never spoken to over plain HTTP', async (t) => {
  const name = `registry.test:${reg.host.split(':')[1]}`;
  const proxy = await forwardProxy(t, { [name]: reg.host });
  await rejectsWith(t, client({ retries: 0, env: { HTTPS_PROXY: proxy.url, HTTP_PROXY: proxy.url } }).resolve(`${name}/os/oci:v1`), 'REGISTRY_UNREACHABLE');
  t.deepEqual(proxy.seen, [`CONNECT ${name}`]);
});

test('the proxy for a URL follows HTTPS_PROXY / HTTP_PROXY and NO_PROXY rules', (t) => {
  const env = { HTTPS_PROXY: 'proxy.corp:3128', HTTP_PROXY: 'http://p:8080', NO_PROXY: '.internal, example.com, 10.0.0.0/8, reg.io:5000, [::1]' };
  t.is(proxyForUrl('https://quay.io/v2/', env), 'http://proxy.corp:3128');
  t.is(proxyForUrl('http://quay.io/v2/', env), 'http://p:8080');
  t.is(proxyForUrl('https://a.internal/v2/', env), undefined);
  t.is(proxyForUrl('https://example.com/v2/', env), undefined);
  t.is(proxyForUrl('https://sub.example.com/v2/', env), undefined);
  t.is(proxyForUrl('https://notexample.com/v2/', env), 'http://proxy.corp:3128');
  t.is(proxyForUrl('https://10.1.2.3/v2/', env), undefined);
  t.is(proxyForUrl('https://11.1.2.3/v2/', env), 'http://proxy.corp:3128');
  t.is(proxyForUrl('https://reg.io:5000/v2/', env), undefined);
  t.is(proxyForUrl('https://reg.io/v2/', env), 'http://proxy.corp:3128');
  t.is(proxyForUrl('http://[::1]:5000/v2/', env), undefined);
  t.is(proxyForUrl('https://x.io/', { HTTPS_PROXY: 'http://a:1', https_proxy: 'http://b:1' }), 'http://a:1');
  t.is(proxyForUrl('https://x.io/', { https_proxy: 'http://b:1', NO_PROXY: '*' }), undefined);
  t.is(proxyForUrl('https://x.io/', {}), undefined);
  t.is(proxyForUrl('https://x.io/', { HTTPS_PROXY: '' }), undefined);
});
