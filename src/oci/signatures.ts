/**
 * Signature DISCOVERY: every cosign signature candidate for one manifest (or index) digest, in the three registry
 * layouts of spec/sigstore.md section 1. Nothing here decides trust: the pure verifier (src/verify) does. This module
 * only finds and fetches, digest-checked, and fails closed:
 *
 * 1. OCI 1.1 referrers of the digest: the referrers API, else (400/404/405/406, or a 2xx that is not an OCI index)
 *    the referrers tag schema, an OCI index tagged `sha256-<hex>` (404 there: no referrers). Index entries whose
 *    `artifactType` is the Sigstore bundle type or cosign's `application/vnd.dev.cosign.artifact.sig.v1+json` are
 *    fetched; so are entries whose type says nothing (absent, `application/vnd.oci.empty.v1+json`,
 *    `application/vnd.oci.image.config.v1+json`), because go-containerregistry's fallback-tag writer lists a referrer
 *    under its CONFIG media type, which for a cosign v3 bundle is the empty type (cosign itself classifies by the
 *    fetched manifest). Entries of any other type (SBOMs, attestations of other tools) are not fetched. A fetched
 *    referrer manifest is classified by its own `artifactType`, its config's `artifactType` and its config media type,
 *    and must name the digest as its `subject`.
 *    - bundle referrer (cosign v3 default): `layers[0]` (media type `application/vnd.dev.sigstore.bundle…`) is the
 *      bundle JSON -> a BundleCandidate with the parsed JSON;
 *    - cosign 2.x experimental OCI 1.1 `sig` referrer: each layer -> a SimpleSigningCandidate, as for the `.sig` tag.
 * 2. The legacy tag `sha256-<hex>.sig` (OCI or Docker media types): one SimpleSigningCandidate per layer, with that
 *    layer's annotations and media type as found (the verifier rejects a layer that is not simple signing).
 *
 * Everything after a tag lookup is fetched by digest: manifests are digest-checked by `fetchManifest`, blobs by
 * `openBlob`; a mismatch throws DIGEST_MISMATCH. A 404 on a tag (or on the repository) means "nothing in that
 * layout". Any other registry failure (5xx after retries, network, 401/403) THROWS with its REGISTRY_* code: an
 * unreachable signature store is never "unsigned" nor "no signature".
 *
 * Decision on content that is not a usable signature (a malformed bundle JSON, a `.sig` tag holding an index, a
 * referrer whose subject is another digest, a blob over the size cap, candidates over the count cap): it is SKIPPED
 * and listed in `skipped` with the reason, never passed on. Skipping only removes candidates, so it cannot make an
 * image pass; the caller can name what was skipped when nothing verifies.
 *
 * COSIGN_REPOSITORY (`signatureRepository`) moves every layout to that repository, as cosign's TargetRepository does.
 */
import { AgentError } from '../model/errors.ts';
import type { BundleCandidate, SignatureCandidates, SimpleSigningCandidate } from '../model/signature.ts';
import { MEDIA_TYPES, parseManifest } from './manifest.ts';
import { isDigest, isTag, parseReference } from './reference.ts';
import type { RegistryClient } from './registry.ts';
import type { Descriptor, ImageManifest, ImageReference } from './types.ts';

export interface SignatureLookupOptions {
  /** COSIGN_REPOSITORY: the repository (registry/repo, no tag) signatures live in instead of the image's own. */
  signatureRepository?: string;
  /** Caps (fail closed on exceed: ignore extra candidates, but never fail open). Defaults: 32 candidates, 64 KiB per payload/bundle blob. */
  maxCandidates?: number;
  maxBlobBytes?: number;
}

/** A candidate (or a whole signature location) left out, and why. */
export interface SkippedSignature {
  source: string;
  reason: string;
}

/** What `findSignatures` returns: the candidates, plus what was left out (for messages when nothing verifies). */
export interface SignatureLookup extends SignatureCandidates {
  skipped: SkippedSignature[];
}

/** cosign's simple-signing layer media type. */
export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
/** artifactType (config media type) of a cosign 2.x experimental OCI 1.1 signature referrer. */
export const COSIGN_SIG_ARTIFACT_TYPE = 'application/vnd.dev.cosign.artifact.sig.v1+json';
/** artifactType of a Sigstore bundle v0.3 referrer (cosign v3 default). */
export const SIGSTORE_BUNDLE_ARTIFACT_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
/** Every Sigstore bundle media type starts with this (`…bundle.v0.3+json`, `…bundle+json;version=0.2`). */
const BUNDLE_MEDIA_TYPE_PREFIX = 'application/vnd.dev.sigstore.bundle';
const EMPTY_MEDIA_TYPE = 'application/vnd.oci.empty.v1+json';
/** Index artifactTypes that say nothing about the referrer: fetch the manifest to know. */
const UNINFORMATIVE_ARTIFACT_TYPES: readonly string[] = ['', EMPTY_MEDIA_TYPE, MEDIA_TYPES.ociConfig];

export const DEFAULT_MAX_CANDIDATES = 32;
export const DEFAULT_MAX_BLOB_BYTES: number = 64 * 1024;

const IMAGE_MANIFEST_ACCEPT: string[] = [MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest];

function checkDigest(digest: string): void {
  if (!isDigest(digest)) throw new AgentError('REFERENCE_INVALID', `${JSON.stringify(digest)} is not a digest (sha256:<64 hex> or sha512:<128 hex>)`);
}

/** cosign's signature tag for a digest: `sha256:<hex>` -> `sha256-<hex>.sig`. */
export function legacySignatureTag(digest: string): string {
  checkDigest(digest);
  return `${digest.replace(':', '-')}.sig`;
}

/** The OCI referrers tag schema's tag for a digest: `sha256:<hex>` -> `sha256-<hex>`. */
export function referrersFallbackTag(digest: string): string {
  checkDigest(digest);
  return digest.replace(':', '-');
}

/** The repository named by COSIGN_REPOSITORY (`registry/repo`, no tag, no digest). */
export function parseSignatureRepository(value: string): ImageReference {
  const ref = parseReference(value);
  const lastSlash = value.lastIndexOf('/');
  const explicitTag = value.slice(lastSlash + 1).includes(':');
  if (ref.digest !== undefined || explicitTag) {
    throw new AgentError('REFERENCE_INVALID', `signature repository ${JSON.stringify(value)} must be registry/repository, without a tag or digest`);
  }
  return { registry: ref.registry, repository: ref.repository };
}

// ---------------------------------------------------------------------------------------------------------------
// Pure helpers

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isBundleType(t: string | undefined): boolean {
  return t !== undefined && t.startsWith(BUNDLE_MEDIA_TYPE_PREFIX);
}

/** An entry of a referrers index: a descriptor and its artifactType ('' when absent). */
interface ReferrerEntry {
  descriptor: Descriptor;
  artifactType: string;
}

/** Entries of a referrers index (API page or fallback tag). Throws MANIFEST_INVALID when it is not a valid index. */
function referrerEntries(bytes: Buffer, contentType: string, what: string): ReferrerEntry[] {
  const parsed = parseManifest(bytes, contentType, what);
  if (parsed.kind !== 'index') throw new AgentError('MANIFEST_INVALID', `${what}: is an image manifest (${parsed.mediaType}), not an index`);
  const raw = (JSON.parse(bytes.toString('utf8')) as { manifests: unknown[] }).manifests;
  return parsed.index.manifests.map((descriptor, i) => {
    const entry = raw[i];
    const t = isObject(entry) && typeof entry.artifactType === 'string' ? entry.artifactType : '';
    return { descriptor, artifactType: t };
  });
}

/** The fields of a referrer manifest that OCI 1.1 adds and `ImageManifest` does not keep. */
function referrerFields(bytes: Buffer): { artifactType: string | undefined; configArtifactType: string | undefined; subject: string | undefined } {
  const doc = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  return {
    artifactType: str(doc.artifactType),
    configArtifactType: isObject(doc.config) ? str(doc.config.artifactType) : undefined,
    subject: isObject(doc.subject) ? str(doc.subject.digest) : undefined,
  };
}

/** UTF-8 (strict) JSON, or undefined when the bytes are not that. */
function parseJsonStrict(bytes: Uint8Array): { ok: true; value: unknown } | { ok: false; why: string } {
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (e) {
    return { ok: false, why: (e as Error).message };
  }
}

// ---------------------------------------------------------------------------------------------------------------

class Lookup {
  readonly client: RegistryClient;
  readonly repo: ImageReference;
  readonly repoName: string;
  readonly digest: string;
  readonly maxCandidates: number;
  readonly maxBlobBytes: number;
  readonly simpleSigning: SimpleSigningCandidate[] = [];
  readonly bundles: BundleCandidate[] = [];
  readonly skipped: SkippedSignature[] = [];

  constructor(client: RegistryClient, repo: ImageReference, digest: string, opts: SignatureLookupOptions) {
    this.client = client;
    this.repo = repo;
    this.repoName = `${repo.registry}/${repo.repository}`;
    this.digest = digest;
    this.maxCandidates = Math.max(0, Math.floor(opts.maxCandidates ?? DEFAULT_MAX_CANDIDATES));
    this.maxBlobBytes = Math.max(0, Math.floor(opts.maxBlobBytes ?? DEFAULT_MAX_BLOB_BYTES));
  }

  get count(): number {
    return this.simpleSigning.length + this.bundles.length;
  }

  /** True when one more candidate fits; otherwise notes `source` as skipped. */
  room(source: string): boolean {
    if (this.count < this.maxCandidates) return true;
    this.skipped.push({ source, reason: `more than ${this.maxCandidates} signature candidates: ignored` });
    return false;
  }

  /** A manifest by tag, or undefined when the tag (or the repository) does not exist. Other failures throw. */
  async manifestByTag(tag: string, accept: string[]): Promise<{ bytes: Buffer; mediaType: string; digest: string } | undefined> {
    try {
      return await this.client.fetchManifest(this.repo, tag, accept);
    } catch (e) {
      if (e instanceof AgentError && e.code === 'REGISTRY_NOT_FOUND') return undefined;
      throw e;
    }
  }

  /** A small blob, digest-checked, or undefined (noted) when its descriptor is over the size cap. */
  async blob(desc: Descriptor, source: string): Promise<Buffer | undefined> {
    if (desc.size > this.maxBlobBytes) {
      this.skipped.push({ source, reason: `blob ${desc.digest} is ${desc.size} bytes, over the ${this.maxBlobBytes}-byte limit: not fetched` });
      return undefined;
    }
    const chunks: Buffer[] = [];
    for await (const c of this.client.openBlob(this.repo, desc)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /** One SimpleSigningCandidate per layer of a signature manifest (legacy `.sig` or a cosign OCI 1.1 referrer). */
  async simpleSigningLayers(manifest: ImageManifest, where: string): Promise<void> {
    for (const [i, layer] of manifest.layers.entries()) {
      const source = `${where} layer ${i}`;
      if (!this.room(source)) continue;
      const payload = await this.blob(layer, source);
      if (payload === undefined) continue;
      this.simpleSigning.push({ source, mediaType: layer.mediaType, payload, annotations: { ...(layer.annotations ?? {}) } });
    }
  }

  /** Layout 2: the legacy `sha256-<hex>.sig` tag. */
  async legacy(): Promise<void> {
    const tag = legacySignatureTag(this.digest);
    const where = `${this.repoName}:${tag}`;
    if (!isTag(tag)) {
      this.skipped.push({ source: where, reason: 'the digest is too long for a tag: the .sig layout cannot exist for it' });
      return;
    }
    const got = await this.manifestByTag(tag, IMAGE_MANIFEST_ACCEPT);
    if (got === undefined) return;
    let manifest: ImageManifest;
    try {
      const parsed = parseManifest(got.bytes, got.mediaType, `signature manifest ${where}`);
      if (parsed.kind !== 'manifest') throw new AgentError('MANIFEST_INVALID', `signature manifest ${where}: is an index (${parsed.mediaType}), not an image manifest`);
      manifest = parsed.manifest;
    } catch (e) {
      if (!(e instanceof AgentError) || e.code !== 'MANIFEST_INVALID') throw e;
      this.skipped.push({ source: where, reason: e.message });
      return;
    }
    await this.simpleSigningLayers(manifest, where);
  }

  /** Layout 1: OCI 1.1 referrers (API, else the fallback tag). */
  async referrers(): Promise<void> {
    const api = await this.client.fetchReferrers(this.repo, this.digest);
    let entries: ReferrerEntry[] = [];
    let via: string;
    if (api.supported) {
      via = 'referrers API';
      // A broken API answer is the registry failing: it throws (MANIFEST_INVALID), like any registry error.
      for (const [i, page] of api.pages.entries()) {
        entries.push(...referrerEntries(page, MEDIA_TYPES.ociIndex, `referrers of ${this.digest} in ${this.repoName}${api.pages.length > 1 ? ` (page ${i + 1})` : ''}`));
      }
    } else {
      const tag = referrersFallbackTag(this.digest);
      via = `fallback tag ${tag}`;
      const where = `${this.repoName}:${tag}`;
      if (!isTag(tag)) {
        this.skipped.push({ source: where, reason: 'the digest is too long for a tag: the referrers tag schema cannot exist for it' });
        return;
      }
      const got = await this.manifestByTag(tag, [MEDIA_TYPES.ociIndex]);
      if (got === undefined) return;
      try {
        entries = referrerEntries(got.bytes, got.mediaType, `referrers index ${where}`);
      } catch (e) {
        if (!(e instanceof AgentError) || e.code !== 'MANIFEST_INVALID') throw e;
        this.skipped.push({ source: where, reason: e.message });
        return;
      }
    }

    // Known signature types first, then the uninformative ones; other artifact types are not signatures.
    const known = entries.filter((e) => isBundleType(e.artifactType) || e.artifactType === COSIGN_SIG_ARTIFACT_TYPE);
    const unknown = entries.filter((e) => UNINFORMATIVE_ARTIFACT_TYPES.includes(e.artifactType));
    const seen = new Set<string>();
    let fetched = 0;
    for (const entry of [...known, ...unknown]) {
      const d = entry.descriptor;
      if (seen.has(d.digest)) continue;
      seen.add(d.digest);
      const where = `${this.repoName}@${d.digest} (referrer via ${via})`;
      if (!IMAGE_MANIFEST_ACCEPT.includes(d.mediaType)) {
        this.skipped.push({ source: where, reason: `listed as ${JSON.stringify(d.mediaType)}, not an image manifest` });
        continue;
      }
      // Each referrer fetched may hold a candidate: at most maxCandidates are fetched (a flood is cut, fail closed).
      if (fetched >= this.maxCandidates || this.count >= this.maxCandidates) {
        this.skipped.push({ source: where, reason: `more than ${this.maxCandidates} signature candidates: not fetched` });
        continue;
      }
      fetched++;
      await this.referrer(d, where, entry.artifactType);
    }
  }

  async referrer(d: Descriptor, where: string, listedAs: string): Promise<void> {
    const got = await this.client.fetchManifest(this.repo, d.digest, IMAGE_MANIFEST_ACCEPT);
    let manifest: ImageManifest;
    let fields: ReturnType<typeof referrerFields>;
    try {
      const parsed = parseManifest(got.bytes, got.mediaType, `referrer manifest ${where}`);
      if (parsed.kind !== 'manifest') throw new AgentError('MANIFEST_INVALID', `referrer manifest ${where}: is an index, not an image manifest`);
      manifest = parsed.manifest;
      fields = referrerFields(got.bytes);
    } catch (e) {
      if (!(e instanceof AgentError) || e.code !== 'MANIFEST_INVALID') throw e;
      this.skipped.push({ source: where, reason: e.message });
      return;
    }
    const types = [fields.artifactType, fields.configArtifactType, manifest.config.mediaType];
    const bundle = types.some(isBundleType);
    const sig = types.includes(COSIGN_SIG_ARTIFACT_TYPE);
    if (!bundle && !sig) {
      // A referrer of another kind, listed without a telling artifactType: not a signature, nothing to note.
      if (!UNINFORMATIVE_ARTIFACT_TYPES.includes(listedAs)) {
        this.skipped.push({ source: where, reason: `listed as ${JSON.stringify(listedAs)} but the manifest is of type ${JSON.stringify(fields.artifactType ?? manifest.config.mediaType)}` });
      }
      return;
    }
    if (fields.subject !== this.digest) {
      this.skipped.push({ source: where, reason: fields.subject === undefined ? 'the referrer has no subject' : `the referrer's subject is ${fields.subject}, not ${this.digest}` });
      return;
    }
    if (sig) {
      await this.simpleSigningLayers(manifest, where);
      return;
    }
    const layer = manifest.layers[0];
    if (layer === undefined || !isBundleType(layer.mediaType)) {
      this.skipped.push({ source: where, reason: layer === undefined ? 'the bundle referrer has no layer' : `layers[0] has media type ${JSON.stringify(layer.mediaType)}, not a Sigstore bundle` });
      return;
    }
    if (!this.room(where)) return;
    const bytes = await this.blob(layer, where);
    if (bytes === undefined) return;
    const json = parseJsonStrict(bytes);
    if (!json.ok) {
      this.skipped.push({ source: where, reason: `the bundle ${layer.digest} is not JSON: ${json.why}` });
      return;
    }
    this.bundles.push({ source: where, bundle: json.value });
  }
}

/**
 * Every candidate for `digest` (an image manifest or index digest) in the three layouts of sigstore.md 1 (see the
 * module comment), looked up in `image`'s repository or in `opts.signatureRepository`. Referrers come first, then
 * the legacy `.sig` tag; at most `maxCandidates` candidates in all, each blob at most `maxBlobBytes` (more are
 * skipped and listed in `skipped`). Throws the registry's error (REGISTRY_UNREACHABLE / REGISTRY_UNAUTHORIZED /
 * REGISTRY_ERROR, DIGEST_MISMATCH, BLOB_TRUNCATED) rather than report "nothing found" when a store cannot be read.
 */
export async function findSignatures(
  client: RegistryClient,
  image: ImageReference,
  digest: string,
  opts: SignatureLookupOptions = {},
): Promise<SignatureLookup> {
  checkDigest(digest);
  const repo = opts.signatureRepository !== undefined
    ? parseSignatureRepository(opts.signatureRepository)
    : { registry: image.registry, repository: image.repository };
  const lookup = new Lookup(client, repo, digest, opts);
  await lookup.referrers();
  await lookup.legacy();
  return {
    digest,
    repository: lookup.repoName,
    simpleSigning: lookup.simpleSigning,
    bundles: lookup.bundles,
    skipped: lookup.skipped,
  };
}
