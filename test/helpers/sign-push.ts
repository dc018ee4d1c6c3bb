/**
 * Test helper: pushes cosign signature artifacts to a test registry (test/helpers/registry.ts) in cosign's exact
 * registry layouts (spec/sigstore.md section 1), through the registry HTTP API, byte for byte. Documents are
 * serialised as Go's encoding/json does (struct field order, sorted map keys, HTML-escaped `<`, `>`, `&`), so digests
 * look like real cosign/go-containerregistry output:
 *
 * - `pushLegacySignature`: the `sha256-<hex>.sig` tag (cosign v1/v2 default), one simple-signing layer per signature,
 *   annotations on the layer descriptors, the "empty image" config; optionally Docker media types
 *   (COSIGN_DOCKER_MEDIA_TYPES=1).
 * - `pushBundleReferrer`: the cosign v3 Sigstore bundle referrer (`WriteReferrer`: artifactType on the manifest and
 *   on its empty config descriptor, one bundle layer, `subject`, the dev.sigstore.bundle.* annotations), plus the
 *   referrers tag schema index `sha256-<hex>` that go-containerregistry maintains when the registry has no referrers
 *   API (docker-registry 2.8 has none).
 * - `pushSimpleSigningReferrer`: cosign 2.x `--registry-referrers-mode=oci-1-1` (config media type
 *   `application/vnd.dev.cosign.artifact.sig.v1+json`, `subject`, simple-signing layers), plus the fallback index.
 * - `serveReferrersApi`: makes a fault proxy answer `GET /v2/<repo>/referrers/<digest>` as a registry with the API would.
 *
 * The fallback index is written as go-containerregistry's `commitSubjectReferrers` does: read the index tagged
 * `sha256-<hex>` (404: start empty), do nothing if the referrer is listed, else append
 * `{mediaType, size, digest, annotations: <manifest annotations>, artifactType: <CONFIG media type>}`, sort by digest,
 * PUT it back. Note the artifactType: ggcr lists a referrer under its config media type, which for a cosign v3
 * bundle is `application/vnd.oci.empty.v1+json`. `fallback: 'artifactType'` lists the manifest's artifactType
 * instead (what the OCI referrers tag schema says, and what other tools write).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { FaultProxy } from './fault-proxy.ts';
import type { TestRegistry } from './registry.ts';

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  empty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  simpleSigning: 'application/vnd.dev.cosign.simplesigning.v1+json',
  cosignSigArtifact: 'application/vnd.dev.cosign.artifact.sig.v1+json',
  bundle: 'application/vnd.dev.sigstore.bundle.v0.3+json',
} as const;

export const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';

/** A manifest descriptor (what `subject` and index entries hold). */
export interface ManifestDescriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/** A manifest pushed by these helpers. */
export interface PushedManifest extends ManifestDescriptor {
  /** The exact bytes PUT. */
  bytes: Buffer;
  /** The manifest's artifactType, else its config media type (what a referrers API lists it as). */
  artifactType: string;
  configMediaType: string;
  annotations: Record<string, string> | undefined;
  /** The tag it was PUT under (legacy `.sig`), or undefined when PUT by digest. */
  tag: string | undefined;
}

export interface SignatureLayer {
  payload: Buffer;
  annotations: Record<string, string>;
  /** Default: application/vnd.dev.cosign.simplesigning.v1+json. */
  mediaType?: string;
}

/** How the referrers fallback index is maintained after pushing a referrer. */
export type FallbackMode = 'ggcr' | 'artifactType' | 'none';

export const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** JSON as Go's encoding/json writes it: the caller builds objects in struct field order; `<`, `>`, `&`, U+2028/9 escaped. */
export function goJson(v: unknown): Buffer {
  const s = JSON.stringify(v)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
  return Buffer.from(s, 'utf8');
}

/** A Go map: keys sorted. */
function goMap(m: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(m).sort()) out[k] = m[k] as string;
  return out;
}

/** A Go v1.Descriptor: mediaType, size, digest, [annotations], [artifactType]. */
function goDescriptor(d: { mediaType: string; size: number; digest: string; annotations?: Record<string, string> | undefined; artifactType?: string | undefined }): Record<string, unknown> {
  const out: Record<string, unknown> = { mediaType: d.mediaType, size: d.size, digest: d.digest };
  if (d.annotations !== undefined && Object.keys(d.annotations).length > 0) out.annotations = goMap(d.annotations);
  if (d.artifactType !== undefined && d.artifactType !== '') out.artifactType = d.artifactType;
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Registry HTTP API (push side)

const tokens = new Map<string, string>();

/** Authorization for pushing to `repo` (the registry's first user: Basic, or a push token from its token server). */
async function authHeaders(reg: TestRegistry, repo: string): Promise<Record<string, string>> {
  const first = Object.entries(reg.users)[0];
  if (reg.auth === 'none' || first === undefined) return {};
  const basic = `Basic ${Buffer.from(`${first[0]}:${first[1]}`).toString('base64')}`;
  if (reg.auth === 'htpasswd') return { authorization: basic };
  const key = `${reg.host}|${repo}`;
  let token = tokens.get(key);
  if (token === undefined) {
    const u = new URL(reg.tokenRealm as string);
    u.searchParams.set('service', 'cos-test-registry');
    u.searchParams.set('scope', `repository:${repo}:pull,push`);
    const res = await fetch(u, { headers: { authorization: basic } });
    if (res.status !== 200) throw new Error(`push token for ${repo}: HTTP ${res.status}`);
    token = ((await res.json()) as { token: string }).token;
    tokens.set(key, token);
  }
  return { authorization: `Bearer ${token}` };
}

/** Uploads a blob (monolithic POST + PUT); returns its descriptor fields. */
export async function uploadBlob(reg: TestRegistry, repo: string, data: Buffer): Promise<{ digest: string; size: number }> {
  const auth = await authHeaders(reg, repo);
  const digest = sha256(data);
  const start = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: auth });
  const location = start.headers.get('location');
  await start.arrayBuffer();
  if (start.status !== 202 || location === null) throw new Error(`starting a blob upload to ${repo}: HTTP ${start.status}`);
  const u = new URL(location, reg.url);
  u.searchParams.set('digest', digest);
  const put = await fetch(u, { method: 'PUT', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: data });
  const text = await put.text();
  if (put.status !== 201) throw new Error(`uploading ${digest} to ${repo}: HTTP ${put.status} ${text}`);
  return { digest, size: data.length };
}

/** PUTs a manifest under a tag or digest with its media type as Content-Type; returns its digest. */
export async function putManifest(reg: TestRegistry, repo: string, reference: string, mediaType: string, body: Buffer): Promise<string> {
  const auth = await authHeaders(reg, repo);
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${reference}`, { method: 'PUT', headers: { ...auth, 'content-type': mediaType }, body });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`putting manifest ${repo}:${reference}: HTTP ${res.status} ${text}`);
  return sha256(body);
}

/** GETs a manifest's bytes, or undefined on 404. */
export async function getManifest(reg: TestRegistry, repo: string, reference: string, accept: string): Promise<Buffer | undefined> {
  const auth = await authHeaders(reg, repo);
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${reference}`, { headers: { ...auth, accept } });
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status === 404) return undefined;
  if (res.status !== 200) throw new Error(`getting manifest ${repo}:${reference}: HTTP ${res.status} ${body.toString('utf8')}`);
  return body;
}

/** Pushes a tiny image (one random layer) to `repo:tag`, to sign; returns its manifest descriptor. */
export async function pushSubjectImage(reg: TestRegistry, repo: string, tag: string, opts: { docker?: boolean } = {}): Promise<ManifestDescriptor> {
  const layer = randomBytes(64);
  const config = goJson({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(layer)] }, config: {} });
  const l = await uploadBlob(reg, repo, layer);
  const c = await uploadBlob(reg, repo, config);
  const mediaType = opts.docker ? MT.dockerManifest : MT.ociManifest;
  const manifest = goJson({
    schemaVersion: 2,
    mediaType,
    config: goDescriptor({ mediaType: opts.docker ? MT.dockerConfig : MT.ociConfig, ...c }),
    layers: [goDescriptor({ mediaType: opts.docker ? 'application/vnd.docker.image.rootfs.diff.tar' : MT.ociLayer, ...l })],
  });
  const digest = await putManifest(reg, repo, tag, mediaType, manifest);
  return { mediaType, digest, size: manifest.length };
}

// ---------------------------------------------------------------------------------------------------------------
// Tags

function digestTag(digest: string): string {
  return digest.replace(':', '-');
}

/**
 * Adds `referrer` to the referrers fallback index of `subjectDigest` as go-containerregistry's
 * `commitSubjectReferrers` does (see the module comment). `mode: 'artifactType'` lists the manifest's artifactType
 * instead of its config media type.
 */
export async function addToFallbackIndex(reg: TestRegistry, repo: string, subjectDigest: string, referrer: PushedManifest, mode: 'ggcr' | 'artifactType' = 'ggcr'): Promise<Buffer> {
  const tag = digestTag(subjectDigest);
  const existing = await getManifest(reg, repo, tag, MT.ociIndex);
  const entry = goDescriptor({
    mediaType: referrer.mediaType,
    size: referrer.size,
    digest: referrer.digest,
    annotations: referrer.annotations,
    artifactType: mode === 'ggcr' ? referrer.configMediaType : referrer.artifactType,
  });
  let manifests: Array<Record<string, unknown>>;
  if (existing === undefined) {
    manifests = [entry];
  } else {
    const doc = JSON.parse(existing.toString('utf8')) as { schemaVersion?: number; mediaType?: string; manifests?: Array<Record<string, unknown>> };
    if (doc.schemaVersion !== 2 || doc.mediaType !== MT.ociIndex) throw new Error(`fallback tag ${tag} is not an OCI image index`);
    manifests = (doc.manifests ?? []).map((m) => goDescriptor(m as Parameters<typeof goDescriptor>[0]));
    if (manifests.some((m) => m.digest === referrer.digest)) return existing;
    manifests.push(entry);
  }
  manifests.sort((a, b) => (String(a.digest) < String(b.digest) ? -1 : String(a.digest) > String(b.digest) ? 1 : 0));
  const index = goJson({ schemaVersion: 2, mediaType: MT.ociIndex, manifests });
  await putManifest(reg, repo, tag, MT.ociIndex, index);
  return index;
}

/** The empty-image config cosign's signature images carry (one history entry per layer). */
export function emptyImageConfig(payloads: readonly Buffer[]): Buffer {
  return goJson({
    architecture: '',
    created: '0001-01-01T00:00:00Z',
    history: payloads.map(() => ({ created: '0001-01-01T00:00:00Z' })),
    os: '',
    rootfs: { type: 'layers', diff_ids: payloads.map((p) => sha256(p)) },
    config: {},
  });
}

async function signatureLayers(reg: TestRegistry, repo: string, layers: readonly SignatureLayer[]): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = [];
  for (const l of layers) {
    const b = await uploadBlob(reg, repo, l.payload);
    out.push(goDescriptor({ mediaType: l.mediaType ?? MT.simpleSigning, ...b, annotations: l.annotations }));
  }
  return out;
}

/**
 * The legacy layout: an image manifest tagged `sha256-<hex>.sig` with one layer per signature (the payload blob,
 * annotations on the descriptor) and cosign's empty-image config. `dockerMediaTypes`: Docker v2 schema 2 manifest
 * and config media types (COSIGN_DOCKER_MEDIA_TYPES=1). `tag` overrides the tag (to plant things elsewhere).
 */
export async function pushLegacySignature(
  reg: TestRegistry,
  repo: string,
  digest: string,
  layers: readonly SignatureLayer[],
  opts: { dockerMediaTypes?: boolean; tag?: string } = {},
): Promise<PushedManifest> {
  const config = emptyImageConfig(layers.map((l) => l.payload));
  const c = await uploadBlob(reg, repo, config);
  const configMediaType = opts.dockerMediaTypes ? MT.dockerConfig : MT.ociConfig;
  const mediaType = opts.dockerMediaTypes ? MT.dockerManifest : MT.ociManifest;
  const manifest = goJson({
    schemaVersion: 2,
    mediaType,
    config: goDescriptor({ mediaType: configMediaType, ...c }),
    layers: await signatureLayers(reg, repo, layers),
  });
  const tag = opts.tag ?? `${digestTag(digest)}.sig`;
  const d = await putManifest(reg, repo, tag, mediaType, manifest);
  return { mediaType, digest: d, size: manifest.length, bytes: manifest, artifactType: configMediaType, configMediaType, annotations: undefined, tag };
}

/**
 * The cosign v3 bundle referrer (`WriteAttestationNewBundleFormat` -> `WriteReferrer`), PUT by digest, `subject`
 * = `subjectDescriptor`; then the fallback index of `subjectDigest` is updated (`fallback`, default 'ggcr'; 'none'
 * pushes only the manifest). `artifactType` replaces the bundle type on the manifest and its config descriptor;
 * `layerMediaType` the layer's. `annotations` replaces the dev.sigstore.bundle.* ones.
 */
export async function pushBundleReferrer(
  reg: TestRegistry,
  repo: string,
  subjectDigest: string,
  subjectDescriptor: ManifestDescriptor,
  bundleJson: Buffer | string,
  opts: { artifactType?: string; layerMediaType?: string; predicateType?: string; annotations?: Record<string, string>; created?: string; fallback?: FallbackMode } = {},
): Promise<PushedManifest> {
  const artifactType = opts.artifactType ?? MT.bundle;
  const config = await uploadBlob(reg, repo, Buffer.from('{}'));
  const layer = await uploadBlob(reg, repo, Buffer.from(bundleJson));
  const annotations = opts.annotations ?? {
    'org.opencontainers.image.created': opts.created ?? '2026-01-02T03:04:05Z',
    'dev.sigstore.bundle.content': 'dsse-envelope',
    'dev.sigstore.bundle.predicateType': opts.predicateType ?? COSIGN_SIGN_PREDICATE,
  };
  // referrerManifest{v1.Manifest{SchemaVersion, MediaType, Config, Layers, Annotations, Subject}, ArtifactType}
  const manifest = goJson({
    schemaVersion: 2,
    mediaType: MT.ociManifest,
    config: goDescriptor({ mediaType: MT.empty, ...config, artifactType }),
    layers: [goDescriptor({ mediaType: opts.layerMediaType ?? MT.bundle, ...layer })],
    ...(Object.keys(annotations).length > 0 ? { annotations: goMap(annotations) } : {}),
    subject: goDescriptor(subjectDescriptor),
    artifactType,
  });
  const digest = await putManifest(reg, repo, sha256(manifest), MT.ociManifest, manifest);
  const pushed: PushedManifest = {
    mediaType: MT.ociManifest, digest, size: manifest.length, bytes: manifest, artifactType, configMediaType: MT.empty,
    annotations: Object.keys(annotations).length > 0 ? annotations : undefined, tag: undefined,
  };
  const mode = opts.fallback ?? 'ggcr';
  if (mode !== 'none') await addToFallbackIndex(reg, repo, subjectDigest, pushed, mode);
  return pushed;
}

/**
 * cosign 2.x experimental OCI 1.1 signatures (`WriteSignaturesExperimentalOCI`): the `.sig` image manifest with
 * `config.mediaType` = `application/vnd.dev.cosign.artifact.sig.v1+json` and `subject`, PUT by digest; then the
 * fallback index of `subjectDigest` is updated (`fallback`, default 'ggcr').
 */
export async function pushSimpleSigningReferrer(
  reg: TestRegistry,
  repo: string,
  subjectDigest: string,
  subjectDescriptor: ManifestDescriptor,
  layers: readonly SignatureLayer[],
  opts: { fallback?: FallbackMode } = {},
): Promise<PushedManifest> {
  const config = await uploadBlob(reg, repo, emptyImageConfig(layers.map((l) => l.payload)));
  const manifest = goJson({
    schemaVersion: 2,
    mediaType: MT.ociManifest,
    config: goDescriptor({ mediaType: MT.cosignSigArtifact, ...config }),
    layers: await signatureLayers(reg, repo, layers),
    subject: goDescriptor(subjectDescriptor),
  });
  const digest = await putManifest(reg, repo, sha256(manifest), MT.ociManifest, manifest);
  const pushed: PushedManifest = {
    mediaType: MT.ociManifest, digest, size: manifest.length, bytes: manifest, artifactType: MT.cosignSigArtifact,
    configMediaType: MT.cosignSigArtifact, annotations: undefined, tag: undefined,
  };
  const mode = opts.fallback ?? 'ggcr';
  if (mode !== 'none') await addToFallbackIndex(reg, repo, subjectDigest, pushed, mode);
  return pushed;
}

// ---------------------------------------------------------------------------------------------------------------
// Referrers API (through a fault proxy: docker-registry 2.8 has none)

/** The index a registry with the referrers API answers: each referrer under its artifactType (else config media type). */
export function referrersApiIndex(referrers: readonly PushedManifest[]): Buffer {
  return goJson({
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    manifests: referrers.map((r) => goDescriptor({ mediaType: r.mediaType, size: r.size, digest: r.digest, annotations: r.annotations, artifactType: r.artifactType })),
  });
}

/**
 * Makes `proxy` answer `GET /v2/<repo>/referrers/<digest>` with 200 and the referrers index of `referrers`
 * (Content-Type application/vnd.oci.image.index.v1+json unless `headers` says otherwise).
 */
export function serveReferrersApi(proxy: FaultProxy, repo: string, digest: string, referrers: readonly PushedManifest[], headers: Record<string, string> = {}): void {
  proxy.addFault({
    method: 'GET',
    path: `/v2/${repo}/referrers/${digest}`,
    fault: { kind: 'status', status: 200, body: referrersApiIndex(referrers).toString('utf8'), headers: { 'content-type': MT.ociIndex, ...headers } },
  });
}
