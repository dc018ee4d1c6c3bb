/**
 * Signature discovery against a real docker-registry 2.8 (which has no referrers API): signature artifacts are pushed
 * in cosign's exact layouts by test/helpers/sign-push.ts. The referrers API, error statuses and corrupted bytes are
 * played by test/helpers/fault-proxy.ts in front of the real registry. Payloads and annotations are arbitrary bytes:
 * no cryptography here (the verifier is tested elsewhere).
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AgentError, type ErrorCode } from '../../src/model/errors.ts';
import { parseReference } from '../../src/oci/reference.ts';
import { RegistryClient } from '../../src/oci/registry.ts';
import {
  findSignatures,
  legacySignatureTag,
  parseSignatureRepository,
  referrersFallbackTag,
  type SignatureLookup,
  type SignatureLookupOptions,
} from '../../src/oci/signatures.ts';
import type { ImageReference, RegistryClientOptions } from '../../src/oci/types.ts';
import { SysRoot } from '../../src/sys/root.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { freePort, startRegistry, writeAuthJson, type TestRegistry } from '../helpers/registry.ts';
import {
  emptyImageConfig,
  getManifest,
  goJson,
  MT,
  pushBundleReferrer,
  pushLegacySignature,
  pushSimpleSigningReferrer,
  pushSubjectImage,
  putManifest,
  referrersApiIndex,
  serveReferrersApi,
  sha256,
  uploadBlob,
  type ManifestDescriptor,
  type SignatureLayer,
} from '../helpers/sign-push.ts';

let reg: TestRegistry;
let regBasic: TestRegistry;

test.before(async () => {
  [reg, regBasic] = await Promise.all([startRegistry(), startRegistry({ auth: 'htpasswd', users: { alice: 'wonderland' } })]);
});

test.after.always(async () => {
  await Promise.all([reg, regBasic].map((r) => r?.stop()));
});

// ---------------------------------------------------------------------------------------------------------------
// Helpers

let repoCounter = 0;
/** A repository name of its own for each test (tests of this file run concurrently against one registry). */
function freshRepo(prefix = 'sig'): string {
  repoCounter++;
  return `${prefix}/r${repoCounter}-${randomBytes(3).toString('hex')}`;
}

/** A client isolated from the host: no auth files, no registries.conf, no proxy env, fast retries. */
function client(opts: RegistryClientOptions = {}): RegistryClient {
  return new RegistryClient({ authFiles: [], registriesConf: '/nonexistent/registries.conf', env: {}, retries: 2, retryBaseMs: 2, timeoutMs: 10_000, ...opts });
}

function imageRef(host: string, repo: string): ImageReference {
  return parseReference(`${host}/${repo}:v1`);
}

async function rejectsWith(t: ExecutionContext, p: Promise<unknown>, code: ErrorCode): Promise<AgentError> {
  const e = await t.throwsAsync(p, { instanceOf: AgentError });
  t.is(e?.code, code, e?.message);
  return e as AgentError;
}

async function proxyFor(t: ExecutionContext, r: TestRegistry = reg): Promise<FaultProxy> {
  const proxy = await startFaultProxy(r.url);
  t.teardown(() => proxy.stop());
  return proxy;
}

/** The simple-signing payload in Go's byte form (any bytes would do: no verification here). */
function payload(repo: string, digest: string, extra = ''): Buffer {
  return Buffer.from(`{"critical":{"identity":{"docker-reference":"${reg.host}/${repo}"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"},"optional":${extra === '' ? 'null' : `{"note":"${extra}"}`}}`);
}

/** Annotations with the characters that tend to get mangled: newlines, `<>&` (Go escapes them), non-ASCII, U+2028. */
function annotations(tag: string): Record<string, string> {
  return {
    'dev.cosignproject.cosign/signature': randomBytes(72).toString('base64'),
    'dev.sigstore.cosign/certificate': `-----BEGIN CERTIFICATE-----\n${randomBytes(48).toString('base64')}\n-----END CERTIFICATE-----\n`,
    'dev.sigstore.cosign/chain': '',
    'dev.sigstore.cosign/bundle': `{"SignedEntryTimestamp":"${tag}<&>","Payload":{"body":"é\u2028ü","integratedTime":1700000000,"logIndex":7,"logID":"00ff"}}`,
  };
}

function layer(repo: string, digest: string, n: number): SignatureLayer {
  return { payload: payload(repo, digest, `signer-${n}`), annotations: annotations(`signer-${n}`) };
}

/** A minimal Sigstore bundle v0.3 JSON (shape only). */
function bundleJson(digest: string, n = 0): Buffer {
  const statement = Buffer.from(JSON.stringify({ _type: 'https://in-toto.io/Statement/v1', subject: [{ digest: { sha256: digest.slice(7) } }], predicateType: 'https://sigstore.dev/cosign/sign/v1', predicate: {} }));
  return Buffer.from(JSON.stringify({
    mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
    verificationMaterial: { publicKey: { hint: `key-${n}` }, tlogEntries: [] },
    dsseEnvelope: { payload: statement.toString('base64'), payloadType: 'application/vnd.in-toto+json', signatures: [{ sig: randomBytes(64).toString('base64') }] },
  }));
}

interface Subject {
  repo: string;
  ref: ImageReference;
  desc: ManifestDescriptor;
  digest: string;
}

async function subject(r: TestRegistry = reg, repo = freshRepo()): Promise<Subject> {
  const desc = await pushSubjectImage(r, repo, 'v1');
  return { repo, ref: imageRef(r.host, repo), desc, digest: desc.digest };
}

/** Requests the proxy saw for exactly this path. */
function hits(proxy: FaultProxy, p: string): number {
  return proxy.requests.filter((r) => r.path === p).length;
}

function found(l: SignatureLookup): number {
  return l.simpleSigning.length + l.bundles.length;
}

// ---------------------------------------------------------------------------------------------------------------
// Tags and options

test('legacySignatureTag and referrersFallbackTag turn sha256:<hex> into cosign\'s tags', (t) => {
  const d = `sha256:${'ab'.repeat(32)}`;
  t.is(legacySignatureTag(d), `sha256-${'ab'.repeat(32)}.sig`);
  t.is(referrersFallbackTag(d), `sha256-${'ab'.repeat(32)}`);
});

test('a malformed digest is REFERENCE_INVALID, in the tag functions and in findSignatures', async (t) => {
  for (const bad of ['sha256:abc', 'latest', `sha256:${'AB'.repeat(32)}`]) {
    t.is(t.throws(() => legacySignatureTag(bad), { instanceOf: AgentError })?.code, 'REFERENCE_INVALID');
    t.is(t.throws(() => referrersFallbackTag(bad), { instanceOf: AgentError })?.code, 'REFERENCE_INVALID');
  }
  await rejectsWith(t, findSignatures(client(), imageRef(reg.host, 'sig/x'), 'sha256:abc'), 'REFERENCE_INVALID');
});

test('a signature repository is registry/repository; with a tag or digest it is REFERENCE_INVALID naming it', (t) => {
  t.deepEqual(parseSignatureRepository('127.0.0.1:5000/sigs/os'), { registry: '127.0.0.1:5000', repository: 'sigs/os' });
  t.deepEqual(parseSignatureRepository('alpine'), { registry: 'docker.io', repository: 'library/alpine' });
  for (const bad of ['127.0.0.1:5000/sigs/os:latest', `127.0.0.1:5000/sigs/os@sha256:${'a'.repeat(64)}`]) {
    const e = t.throws(() => parseSignatureRepository(bad), { instanceOf: AgentError });
    t.is(e?.code, 'REFERENCE_INVALID');
    t.true(e?.message.includes(bad), e?.message);
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Layout 2: the legacy .sig tag

test('a legacy .sig tag with one layer gives one simple-signing candidate, payload and annotations byte-exact', async (t) => {
  const s = await subject();
  const l = layer(s.repo, s.digest, 1);
  const pushed = await pushLegacySignature(reg, s.repo, s.digest, [l]);
  t.is(pushed.tag, `sha256-${s.digest.slice(7)}.sig`);
  const r = await findSignatures(client(), s.ref, s.digest);
  t.is(r.digest, s.digest);
  t.is(r.repository, `${reg.host}/${s.repo}`);
  t.is(r.bundles.length, 0);
  t.is(r.simpleSigning.length, 1);
  const c = r.simpleSigning[0];
  t.is(c?.mediaType, MT.simpleSigning);
  t.true(Buffer.from(c?.payload ?? []).equals(l.payload));
  t.deepEqual(c?.annotations, l.annotations);
  t.is(c?.source, `${reg.host}/${s.repo}:${legacySignatureTag(s.digest)} layer 0`);
  t.deepEqual(r.skipped, []);
});

test('the .sig manifest and config are cosign\'s byte form (the 233-byte empty-image config for one layer)', async (t) => {
  const s = await subject();
  const p = payload(s.repo, s.digest);
  const pushed = await pushLegacySignature(reg, s.repo, s.digest, [{ payload: p, annotations: { 'dev.cosignproject.cosign/signature': 'MEUC' } }]);
  const config = emptyImageConfig([p]);
  t.is(config.length, 233);
  t.is(config.toString(), `{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["${sha256(p)}"]},"config":{}}`);
  t.is(pushed.bytes.toString(), `{"schemaVersion":2,"mediaType":"${MT.ociManifest}","config":{"mediaType":"${MT.ociConfig}","size":233,"digest":"${sha256(config)}"},"layers":[{"mediaType":"${MT.simpleSigning}","size":${p.length},"digest":"${sha256(p)}","annotations":{"dev.cosignproject.cosign/signature":"MEUC"}}]}`);
  t.true((await getManifest(reg, s.repo, legacySignatureTag(s.digest), MT.ociManifest))?.equals(pushed.bytes));
});

test('a legacy .sig tag with two layers (two signers) gives two candidates in layer order', async (t) => {
  const s = await subject();
  const layers = [layer(s.repo, s.digest, 1), layer(s.repo, s.digest, 2)];
  await pushLegacySignature(reg, s.repo, s.digest, layers);
  const r = await findSignatures(client(), s.ref, s.digest);
  t.is(r.simpleSigning.length, 2);
  r.simpleSigning.forEach((c, i) => {
    t.true(Buffer.from(c.payload).equals(layers[i]?.payload ?? Buffer.alloc(0)));
    t.deepEqual(c.annotations, layers[i]?.annotations);
    t.true(c.source.endsWith(`.sig layer ${i}`), c.source);
  });
});

test('a .sig tag written with Docker media types (COSIGN_DOCKER_MEDIA_TYPES=1) is read too', async (t) => {
  const s = await subject();
  const l = layer(s.repo, s.digest, 1);
  const pushed = await pushLegacySignature(reg, s.repo, s.digest, [l], { dockerMediaTypes: true });
  t.is(pushed.mediaType, MT.dockerManifest);
  const r = await findSignatures(client(), s.ref, s.digest);
  t.is(r.simpleSigning.length, 1);
  t.true(Buffer.from(r.simpleSigning[0]?.payload ?? []).equals(l.payload));
  t.deepEqual(r.simpleSigning[0]?.annotations, l.annotations);
});

test('a .sig layer of another media type is passed on with that media type, for the verifier to reject', async (t) => {
  const s = await subject();
  await pushLegacySignature(reg, s.repo, s.digest, [{ ...layer(s.repo, s.digest, 1), mediaType: 'application/vnd.oci.image.layer.v1.tar' }]);
  const r = await findSignatures(client(), s.ref, s.digest);
  t.is(r.simpleSigning[0]?.mediaType, 'application/vnd.oci.image.layer.v1.tar');
});

test('a .sig manifest without layers gives no candidate', async (t) => {
  const s = await subject();
  await pushLegacySignature(reg, s.repo, s.digest, []);
  const r = await findSignatures(client(), s.ref, s.digest);
  t.is(found(r), 0);
  t.deepEqual(r.skipped, []);
});

// ---------------------------------------------------------------------------------------------------------------
// Layout 1: OCI 1.1 referrers

test('a cosign v3 bundle referrer is found through the fallback tag written as go-containerregistry does (listed under the empty config type)', async (t) => {
  const s = await subject();
  const b = bundleJson(s.digest);
  const pushed = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, b);
  // The fallback index, exactly as ggcr writes it: the referrer listed under its CONFIG media type.
  const index = await getManifest(reg, s.repo, referrersFallbackTag(s.digest), MT.ociIndex);
  t.is(index?.toString(), `{"schemaVersion":2,"mediaType":"${MT.ociIndex}","manifests":[{"mediaType":"${MT.ociManifest}","size":${pushed.size},"digest":"${pushed.digest}","annotations":{"dev.sigstore.bundle.content":"dsse-envelope","dev.sigstore.bundle.predicateType":"https://sigstore.dev/cosign/sign/v1","org.opencontainers.image.created":"2026-01-02T03:04:05Z"},"artifactType":"${MT.empty}"}]}`);
  const manifest = JSON.parse(pushed.bytes.toString()) as Record<string, unknown>;
  t.is(manifest.artifactType, MT.bundle);
  t.deepEqual(manifest.subject, { mediaType: s.desc.mediaType, size: s.desc.size, digest: s.digest });

  const r = await findSignatures(client(), s.ref, s.digest);
  t.is(r.simpleSigning.length, 0);
  t.is(r.bundles.length, 1);
  t.deepEqual(r.bundles[0]?.bundle, JSON.parse(b.toString()));
  t.is(r.bundles[0]?.source, `${reg.host}/${s.repo}@${pushed.digest} (referrer via fallback tag ${referrersFallbackTag(s.digest)})`);
});

test('a bundle referrer listed under its artifactType in the fallback index is found too', async (t) => {
  const s = await subject();
  const b = bundleJson(s.digest);
  await pushBundleReferrer(reg, s.repo, s.digest, s.desc, b, { fallback: 'artifactType' });
  const r = await findSignatures(client(), s.ref, s.digest);
  t.deepEqual(r.bundles.map((x) => x.bundle), [JSON.parse(b.toString())]);
});

test('several referrers accumulate in the fallback index, sorted by digest, each listed once', async (t) => {
  const s = await subject();
  const first = bundleJson(s.digest, 1);
  const a = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, first);
  const b = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest, 2));
  const c = await pushSimpleSigningReferrer(reg, s.repo, s.digest, s.desc, [layer(s.repo, s.digest, 3)]);
  t.is((await pushBundleReferrer(reg, s.repo, s.digest, s.desc, first)).digest, a.digest); // the same manifest again
  const index = JSON.parse((await getManifest(reg, s.repo, referrersFallbackTag(s.digest), MT.ociIndex))?.toString() ?? '{}') as { manifests: Array<{ digest: string; artifactType: string }> };
  t.deepEqual(index.manifests.map((m) => m.digest), [a.digest, b.digest, c.digest].sort());
  t.is(index.manifests.find((m) => m.digest === c.digest)?.artifactType, MT.cosignSigArtifact);
  const r = await findSignatures(client(), s.ref, s.digest);
  t.is(r.bundles.length, 2);
  t.is(r.simpleSigning.length, 1);
});

test('with the referrers API (played by the proxy), candidates come from the API and the fallback tag is not read', async (t) => {
  const s = await subject();
  const b1 = bundleJson(s.digest, 1);
  const listed = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, b1, { fallback: 'none' });
  // Only in the fallback index, not in the API's answer: must not be found when the API exists.
  await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest, 2));
  const proxy = await proxyFor(t);
  serveReferrersApi(proxy, s.repo, s.digest, [listed]);
  const r = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest);
  t.deepEqual(r.bundles.map((b) => b.bundle), [JSON.parse(b1.toString())]);
  t.is(r.bundles[0]?.source, `${proxy.host}/${s.repo}@${listed.digest} (referrer via referrers API)`);
  t.is(hits(proxy, `/v2/${s.repo}/manifests/${referrersFallbackTag(s.digest)}`), 0);
  t.is(hits(proxy, `/v2/${s.repo}/referrers/${s.digest}`), 1);
});

test('a cosign 2.x OCI 1.1 simple-signing referrer is found through the fallback tag and through the referrers API', async (t) => {
  const s = await subject();
  const layers = [layer(s.repo, s.digest, 1), layer(s.repo, s.digest, 2)];
  const pushed = await pushSimpleSigningReferrer(reg, s.repo, s.digest, s.desc, layers);
  const doc = JSON.parse(pushed.bytes.toString()) as { config: { mediaType: string }; subject: { digest: string } };
  t.is(doc.config.mediaType, MT.cosignSigArtifact);
  t.is(doc.subject.digest, s.digest);

  const viaTag = await findSignatures(client(), s.ref, s.digest);
  const proxy = await proxyFor(t);
  serveReferrersApi(proxy, s.repo, s.digest, [pushed]);
  const viaApi = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest);
  for (const r of [viaTag, viaApi]) {
    t.is(r.bundles.length, 0);
    t.is(r.simpleSigning.length, 2);
    r.simpleSigning.forEach((c, i) => {
      t.true(Buffer.from(c.payload).equals(layers[i]?.payload ?? Buffer.alloc(0)));
      t.deepEqual(c.annotations, layers[i]?.annotations);
      t.true(c.source.includes(`@${pushed.digest}`) && c.source.endsWith(`layer ${i}`), c.source);
    });
  }
});

test('referrers of other artifact types (an SBOM) are neither fetched nor candidates', async (t) => {
  const s = await subject();
  const sbom = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, '{"spdxVersion":"SPDX-2.3"}', { artifactType: 'application/spdx+json', layerMediaType: 'application/spdx+json', annotations: {} });
  const sig = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest), { fallback: 'none' });
  const proxy = await proxyFor(t);
  serveReferrersApi(proxy, s.repo, s.digest, [sbom, sig]);
  const r = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest);
  t.is(r.bundles.length, 1);
  t.is(hits(proxy, `/v2/${s.repo}/manifests/${sbom.digest}`), 0);
  t.is(hits(proxy, `/v2/${s.repo}/manifests/${sig.digest}`), 1);
  t.deepEqual(r.skipped, []);

  // Listed in the ggcr fallback index under the empty type, it must be fetched to be classified, and is then ignored.
  const direct = await findSignatures(client(), s.ref, s.digest);
  t.is(found(direct), 0);
});

test('all three layouts together: every candidate is returned, referrers first, then the .sig tag', async (t) => {
  const s = await subject();
  await pushLegacySignature(reg, s.repo, s.digest, [layer(s.repo, s.digest, 1)]);
  await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest));
  await pushSimpleSigningReferrer(reg, s.repo, s.digest, s.desc, [layer(s.repo, s.digest, 2)]);
  const r = await findSignatures(client(), s.ref, s.digest);
  t.is(r.bundles.length, 1);
  t.is(r.simpleSigning.length, 2);
  t.true(r.simpleSigning[0]?.source.includes('referrer via fallback tag'));
  t.true(r.simpleSigning[1]?.source.endsWith('.sig layer 0'));
});

test('a referrer whose subject is another digest is skipped and listed', async (t) => {
  const s = await subject();
  const other = await pushSubjectImage(reg, s.repo, 'other');
  // Listed under s's fallback tag, but its subject is the other image.
  const pushed = await pushBundleReferrer(reg, s.repo, s.digest, other, bundleJson(s.digest));
  const r = await findSignatures(client(), s.ref, s.digest);
  t.is(found(r), 0);
  t.is(r.skipped.length, 1);
  t.true(r.skipped[0]?.source.includes(pushed.digest));
  t.true(r.skipped[0]?.reason.includes(other.digest), r.skipped[0]?.reason);
});

test('a bundle blob that is not JSON is skipped and listed; the other candidates are kept', async (t) => {
  const s = await subject();
  const bad = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, '{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", ');
  const latin1 = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])); // {"\xff":1}: not UTF-8
  const good = bundleJson(s.digest);
  await pushBundleReferrer(reg, s.repo, s.digest, s.desc, good);
  const r = await findSignatures(client(), s.ref, s.digest);
  t.deepEqual(r.bundles.map((b) => b.bundle), [JSON.parse(good.toString())]);
  t.deepEqual(r.skipped.map((x) => x.source.split(' ')[0]).sort(), [bad, latin1].map((p) => `${reg.host}/${s.repo}@${p.digest}`).sort());
  t.true(r.skipped.every((x) => x.reason.includes('not JSON')));
});

test('a bundle referrer whose layer is not a Sigstore bundle is skipped and listed', async (t) => {
  const s = await subject();
  await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest), { layerMediaType: 'application/octet-stream' });
  const r = await findSignatures(client(), s.ref, s.digest);
  t.is(found(r), 0);
  t.true(r.skipped[0]?.reason.includes('application/octet-stream'), r.skipped[0]?.reason);
});

test('a .sig tag holding an index, and a fallback tag holding an image manifest, are skipped and listed', async (t) => {
  const s = await subject();
  const index = goJson({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [{ mediaType: s.desc.mediaType, size: s.desc.size, digest: s.digest }] });
  await putManifest(reg, s.repo, legacySignatureTag(s.digest), MT.ociIndex, index);
  const image = await pushLegacySignature(reg, s.repo, s.digest, [layer(s.repo, s.digest, 1)], { tag: referrersFallbackTag(s.digest) });
  // docker-registry 2.8 honours Accept (image manifests for .sig, an OCI index for the fallback tag): a document of
  // the other kind is "not found" there.
  t.is(found(await findSignatures(client(), s.ref, s.digest)), 0);
  // A registry that ignores Accept sends them anyway: they are skipped, and named.
  const proxy = await proxyFor(t);
  proxy.addFault({ path: `/manifests/${legacySignatureTag(s.digest)}`, fault: { kind: 'status', status: 200, body: index.toString(), headers: { 'content-type': MT.ociIndex } } });
  proxy.addFault({ path: `/manifests/${referrersFallbackTag(s.digest)}`, fault: { kind: 'status', status: 200, body: image.bytes.toString(), headers: { 'content-type': MT.ociManifest } } });
  const r = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest);
  t.is(found(r), 0);
  t.deepEqual(r.skipped.map((x) => x.source).sort(), [
    `${proxy.host}/${s.repo}:${legacySignatureTag(s.digest)}`,
    `${proxy.host}/${s.repo}:${referrersFallbackTag(s.digest)}`,
  ].sort());
  t.true(r.skipped.every((x) => x.reason.includes('index') || x.reason.includes('image manifest')));
});

test('referrers API pages announced by Link rel="next" are followed, on the same registry and repository only', async (t) => {
  const s = await subject();
  const [a, b] = [
    await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest, 1), { fallback: 'none' }),
    await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest, 2), { fallback: 'none' }),
  ];
  const c = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest, 3), { fallback: 'none' });
  if (a === undefined || b === undefined) throw new Error('unreachable');
  const proxy = await proxyFor(t);
  const base = `/v2/${s.repo}/referrers/${s.digest}`;
  const escaped = base.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const page = (refs: typeof a[], link: string | undefined): { kind: 'status'; status: number; body: string; headers: Record<string, string> } => ({
    kind: 'status', status: 200, body: referrersApiIndex(refs).toString(), headers: { 'content-type': MT.ociIndex, ...(link ? { link } : {}) },
  });
  proxy.addFault({ path: new RegExp(`^${escaped}$`), fault: page([a], `<${base}?n=1&last=${a.digest}>; rel="next"`) });
  proxy.addFault({ path: new RegExp(`^${escaped}\\?n=1&last=${a.digest}$`), fault: page([b], `<http://evil.example${base}?n=1&last=${b.digest}>; rel="next"`) });
  proxy.addFault({ path: `last=${b.digest}`, fault: page([c], undefined) });
  const r = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest);
  // Page 3 is announced on another host: not followed.
  t.deepEqual(r.bundles.map((x) => x.source.split(' ')[0]), [a, b].map((p) => `${proxy.host}/${s.repo}@${p.digest}`));
  t.is(proxy.requests.filter((x) => x.path.startsWith(base)).length, 2);

  const direct = await client().fetchReferrers(imageRef(proxy.host, s.repo), s.digest);
  t.true(direct.supported);
  t.is(direct.pages.length, 2);
});

test('a referrers API whose next page fails is an error, not a shorter list', async (t) => {
  const s = await subject();
  const a = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest, 1), { fallback: 'none' });
  const proxy = await proxyFor(t);
  const base = `/v2/${s.repo}/referrers/${s.digest}`;
  proxy.addFault({ path: `${base}?page=2`, fault: { kind: 'status', status: 500 } });
  serveReferrersApi(proxy, s.repo, s.digest, [a], { link: `<${base}?page=2>; rel="next"` });
  await rejectsWith(t, findSignatures(client(), imageRef(proxy.host, s.repo), s.digest), 'REGISTRY_ERROR');
});

// ---------------------------------------------------------------------------------------------------------------
// Where the referrers API is absent, and failures

test('docker-registry 2.8 has no referrers API: fetchReferrers says unsupported with its 404', async (t) => {
  const s = await subject();
  const r = await client().fetchReferrers(s.ref, s.digest);
  t.deepEqual(r, { supported: false, status: 404, pages: [] });
});

for (const status of [400, 404, 405, 406]) {
  test(`a referrers API answering ${status} counts as absent: the fallback tag is read`, async (t) => {
    const s = await subject();
    await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest));
    const proxy = await proxyFor(t);
    proxy.addFault({ path: `/v2/${s.repo}/referrers/`, fault: { kind: 'status', status } });
    const r = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest);
    t.is(r.bundles.length, 1);
    t.is(hits(proxy, `/v2/${s.repo}/referrers/${s.digest}`), 1); // not retried
    t.is(hits(proxy, `/v2/${s.repo}/manifests/${referrersFallbackTag(s.digest)}`), 1);
  });
}

test('a referrers API answering 200 with another content type counts as absent: the fallback tag is read', async (t) => {
  const s = await subject();
  await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest));
  const proxy = await proxyFor(t);
  proxy.addFault({ path: `/v2/${s.repo}/referrers/`, fault: { kind: 'status', status: 200, body: '<html>hello</html>', headers: { 'content-type': 'text/html' } } });
  const r = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest);
  t.is(r.bundles.length, 1);
});

test('a referrers API answering 500 is REGISTRY_ERROR after the retries, with no silent fallback to the tag', async (t) => {
  const s = await subject();
  await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest));
  await pushLegacySignature(reg, s.repo, s.digest, [layer(s.repo, s.digest, 1)]);
  const proxy = await proxyFor(t);
  proxy.addFault({ path: `/v2/${s.repo}/referrers/`, fault: { kind: 'status', status: 500 } });
  const e = await rejectsWith(t, findSignatures(client(), imageRef(proxy.host, s.repo), s.digest), 'REGISTRY_ERROR');
  t.true(e.message.includes(s.digest) && e.message.includes('500'), e.message);
  t.is(hits(proxy, `/v2/${s.repo}/referrers/${s.digest}`), 3); // 1 + 2 retries
  t.is(hits(proxy, `/v2/${s.repo}/manifests/${referrersFallbackTag(s.digest)}`), 0);
});

test('a referrers API answering a broken index is MANIFEST_INVALID', async (t) => {
  const s = await subject();
  const proxy = await proxyFor(t);
  proxy.addFault({ path: `/v2/${s.repo}/referrers/`, fault: { kind: 'status', status: 200, body: '{"schemaVersion":2,"manifests":[{"digest":"nope"}]}', headers: { 'content-type': MT.ociIndex } } });
  await rejectsWith(t, findSignatures(client(), imageRef(proxy.host, s.repo), s.digest), 'MANIFEST_INVALID');
});

test('a .sig tag answering 500 is REGISTRY_ERROR after the retries, never "no signature"', async (t) => {
  const s = await subject();
  await pushLegacySignature(reg, s.repo, s.digest, [layer(s.repo, s.digest, 1)]);
  const proxy = await proxyFor(t);
  const sigPath = `/v2/${s.repo}/manifests/${legacySignatureTag(s.digest)}`;
  proxy.addFault({ path: sigPath, fault: { kind: 'status', status: 500 } });
  const e = await rejectsWith(t, findSignatures(client(), imageRef(proxy.host, s.repo), s.digest), 'REGISTRY_ERROR');
  t.true(e.message.includes(legacySignatureTag(s.digest)), e.message);
  t.is(hits(proxy, sigPath), 3);
});

test('the fallback tag answering 503 is REGISTRY_ERROR', async (t) => {
  const s = await subject();
  const proxy = await proxyFor(t);
  proxy.addFault({ path: `/v2/${s.repo}/manifests/${referrersFallbackTag(s.digest)}`, fault: { kind: 'status', status: 503 } });
  await rejectsWith(t, findSignatures(client(), imageRef(proxy.host, s.repo), s.digest), 'REGISTRY_ERROR');
});

test('a transient 500 on the .sig tag is retried and the signature found', async (t) => {
  const s = await subject();
  await pushLegacySignature(reg, s.repo, s.digest, [layer(s.repo, s.digest, 1)]);
  const proxy = await proxyFor(t);
  proxy.addFault({ path: `/manifests/${legacySignatureTag(s.digest)}`, fault: { kind: 'status', status: 500 }, times: 1 });
  const r = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest);
  t.is(r.simpleSigning.length, 1);
});

test('an unreachable registry is REGISTRY_UNREACHABLE', async (t) => {
  const host = `127.0.0.1:${await freePort()}`;
  await rejectsWith(t, findSignatures(client({ retries: 1 }), imageRef(host, 'sig/gone'), `sha256:${'c'.repeat(64)}`), 'REGISTRY_UNREACHABLE');
});

test('with Basic auth: no credentials is REGISTRY_UNAUTHORIZED; the credentials from auth.json find the signatures', async (t) => {
  const s = await subject(regBasic);
  const l = layer(s.repo, s.digest, 1);
  await pushLegacySignature(regBasic, s.repo, s.digest, [l]);
  await pushBundleReferrer(regBasic, s.repo, s.digest, s.desc, bundleJson(s.digest));
  await rejectsWith(t, findSignatures(client(), s.ref, s.digest), 'REGISTRY_UNAUTHORIZED');

  const dir = await mkdtemp(path.join(os.tmpdir(), 'sig-auth-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeAuthJson(path.join(dir, 'etc/containers/auth.json'), { [regBasic.host]: { username: 'alice', password: 'wonderland' } });
  const r = await findSignatures(client({ root: new SysRoot(dir), authFiles: ['/etc/containers/auth.json'] }), s.ref, s.digest);
  t.is(r.simpleSigning.length, 1);
  t.is(r.bundles.length, 1);
  t.deepEqual(r.simpleSigning[0]?.annotations, l.annotations);
});

test('a .sig layer blob whose bytes do not match its descriptor is DIGEST_MISMATCH', async (t) => {
  const s = await subject();
  const l = layer(s.repo, s.digest, 1);
  await pushLegacySignature(reg, s.repo, s.digest, [l]);
  const proxy = await proxyFor(t);
  proxy.addFault({ path: `/blobs/${sha256(l.payload)}`, fault: { kind: 'corrupt', at: 10 } });
  const e = await rejectsWith(t, findSignatures(client(), imageRef(proxy.host, s.repo), s.digest), 'DIGEST_MISMATCH');
  t.true(e.message.includes(sha256(l.payload)), e.message);
});

test('a bundle blob or a referrer manifest corrupted in transit is DIGEST_MISMATCH', async (t) => {
  const s = await subject();
  const b = bundleJson(s.digest);
  const pushed = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, b);
  const proxy = await proxyFor(t);
  proxy.addFault({ path: `/blobs/${sha256(b)}`, fault: { kind: 'corrupt', at: 0 }, times: 1 });
  await rejectsWith(t, findSignatures(client(), imageRef(proxy.host, s.repo), s.digest), 'DIGEST_MISMATCH');
  proxy.addFault({ path: `/manifests/${pushed.digest}`, fault: { kind: 'corrupt', at: 5 }, times: 1 });
  await rejectsWith(t, findSignatures(client(), imageRef(proxy.host, s.repo), s.digest), 'DIGEST_MISMATCH');
  // Faults used up: the same lookup now succeeds.
  t.is((await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest)).bundles.length, 1);
});

// ---------------------------------------------------------------------------------------------------------------
// Repositories, nothing found, caps

test('COSIGN_REPOSITORY: signatures in another repository are found there, and not looked for in the image repository', async (t) => {
  const s = await subject();
  const sigRepo = freshRepo('signatures');
  const l = layer(s.repo, s.digest, 1);
  await pushLegacySignature(reg, sigRepo, s.digest, [l]);
  // The bundle referrer lives in the signature repository; its subject is the image (in another repository).
  await pushBundleReferrer(reg, sigRepo, s.digest, s.desc, bundleJson(s.digest));
  const opts: SignatureLookupOptions = { signatureRepository: `${reg.host}/${sigRepo}` };
  const r = await findSignatures(client(), s.ref, s.digest, opts);
  t.is(r.repository, `${reg.host}/${sigRepo}`);
  t.is(r.simpleSigning.length, 1);
  t.is(r.bundles.length, 1);
  t.true(r.simpleSigning[0]?.source.startsWith(`${reg.host}/${sigRepo}:`));
  t.is(found(await findSignatures(client(), s.ref, s.digest)), 0);
});

test('nothing in any layout: no candidates and no error', async (t) => {
  const s = await subject();
  const r = await findSignatures(client(), s.ref, s.digest);
  t.deepEqual(r, { digest: s.digest, repository: `${reg.host}/${s.repo}`, simpleSigning: [], bundles: [], skipped: [] });
});

test('a repository that does not exist (404 NAME_UNKNOWN) has no signatures', async (t) => {
  const r = await findSignatures(client(), imageRef(reg.host, freshRepo('missing')), `sha256:${'d'.repeat(64)}`);
  t.is(found(r), 0);
});

test('maxCandidates: extra .sig layers are skipped and listed, and their blobs are not fetched', async (t) => {
  const s = await subject();
  const layers = [1, 2, 3].map((n) => layer(s.repo, s.digest, n));
  await pushLegacySignature(reg, s.repo, s.digest, layers);
  const proxy = await proxyFor(t);
  const r = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest, { maxCandidates: 2 });
  t.is(r.simpleSigning.length, 2);
  t.is(r.skipped.length, 1);
  t.true(r.skipped[0]?.source.endsWith('layer 2'), r.skipped[0]?.source);
  t.is(hits(proxy, `/v2/${s.repo}/blobs/${sha256(layers[2]?.payload ?? '')}`), 0);
});

test('maxCandidates: a flood of referrers is cut at the cap, without fetching the rest', async (t) => {
  const s = await subject();
  const pushed = [];
  for (let i = 0; i < 5; i++) pushed.push(await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest, i)));
  await pushLegacySignature(reg, s.repo, s.digest, [layer(s.repo, s.digest, 9)]);
  const proxy = await proxyFor(t);
  const r = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest, { maxCandidates: 2 });
  t.is(found(r), 2);
  t.is(r.bundles.length, 2);
  t.is(r.skipped.length, 4); // 3 referrers + the .sig layer
  const fetched = pushed.filter((p) => hits(proxy, `/v2/${s.repo}/manifests/${p.digest}`) > 0);
  t.is(fetched.length, 2);
});

test('maxBlobBytes: an oversize payload or bundle is not fetched and is listed in skipped', async (t) => {
  const s = await subject();
  const small = layer(s.repo, s.digest, 1);
  const big: SignatureLayer = { payload: Buffer.concat([payload(s.repo, s.digest), Buffer.alloc(2000, 0x20)]), annotations: annotations('big') };
  await pushLegacySignature(reg, s.repo, s.digest, [big, small]);
  const bigBundle = Buffer.from(JSON.stringify({ padding: 'x'.repeat(3000) }));
  await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bigBundle);
  const proxy = await proxyFor(t);
  const r = await findSignatures(client(), imageRef(proxy.host, s.repo), s.digest, { maxBlobBytes: 1000 });
  t.is(r.bundles.length, 0);
  t.is(r.simpleSigning.length, 1);
  t.true(Buffer.from(r.simpleSigning[0]?.payload ?? []).equals(small.payload));
  t.is(r.skipped.length, 2);
  t.true(r.skipped.some((x) => x.reason.includes(sha256(big.payload))));
  t.true(r.skipped.some((x) => x.reason.includes(sha256(bigBundle))));
  for (const d of [sha256(big.payload), sha256(bigBundle)]) t.is(hits(proxy, `/v2/${s.repo}/blobs/${d}`), 0);
});

test('the referrer manifest pushed by the helper carries cosign\'s fields (artifactType on the manifest and its config, empty config blob)', async (t) => {
  const s = await subject();
  const pushed = await pushBundleReferrer(reg, s.repo, s.digest, s.desc, bundleJson(s.digest), { fallback: 'none' });
  const doc = JSON.parse(pushed.bytes.toString()) as { config: { mediaType: string; digest: string; size: number; artifactType: string }; layers: Array<{ mediaType: string }>; annotations: Record<string, string> };
  t.deepEqual(doc.config, { mediaType: MT.empty, size: 2, digest: sha256('{}'), artifactType: MT.bundle });
  t.is(doc.layers[0]?.mediaType, MT.bundle);
  t.is(doc.annotations['dev.sigstore.bundle.content'], 'dsse-envelope');
  t.is(doc.annotations['dev.sigstore.bundle.predicateType'], 'https://sigstore.dev/cosign/sign/v1');
  t.is(await getManifest(reg, s.repo, referrersFallbackTag(s.digest), MT.ociIndex), undefined);
  // The blob uploads are idempotent (the helper's own check).
  t.deepEqual(await uploadBlob(reg, s.repo, Buffer.from('{}')), { digest: sha256('{}'), size: 2 });
});
