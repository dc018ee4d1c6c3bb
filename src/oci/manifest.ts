/**
 * Manifests, indexes, image configs and platforms (PURE: no I/O).
 *
 * Understands OCI image manifests and indexes and Docker v2 schema 2 manifests and manifest lists. Docker schema 1
 * and any other media type is MANIFEST_INVALID, as is malformed JSON or a malformed descriptor. Platform selection
 * follows containerd: architectures are normalised (x86_64 -> amd64, aarch64 -> arm64), variants default per
 * architecture (arm64 -> v8, arm -> v7, amd64 -> v1), and a host variant runs images of the same or a lower variant,
 * preferring the highest.
 */
import { createHash } from 'node:crypto';
import { AgentError } from '../model/errors.ts';
import { isDigest } from './reference.ts';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform } from './types.ts';

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

/** Media types of a single-image manifest. */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest];
/** Media types of an index / manifest list. */
export const INDEX_MEDIA_TYPES: readonly string[] = [MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList];
/** The Accept list sent for manifests. */
export const MANIFEST_ACCEPT: readonly string[] = [...MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES];
/** Largest manifest or config accepted (containers/image uses the same 4 MiB limit). */
export const MAX_MANIFEST_BYTES: number = 4 << 20;

/** Layer media types this agent can unpack, with their compression. */
const LAYER_MEDIA_TYPES: Readonly<Record<string, LayerCompression>> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar.zstd': 'zstd',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
};

export type LayerCompression = 'none' | 'gzip' | 'zstd';

/** Compression of a layer media type, or undefined when it is not a filesystem layer this agent knows. */
export function layerCompression(mediaType: string): LayerCompression | undefined {
  return LAYER_MEDIA_TYPES[mediaType];
}

/** The digest of some bytes (`sha256:<hex>` by default). */
export function computeDigest(bytes: Buffer | Uint8Array, algorithm: 'sha256' | 'sha512' = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** The hash algorithm of a digest. */
export function digestAlgorithm(digest: string): 'sha256' | 'sha512' {
  return digest.startsWith('sha512:') ? 'sha512' : 'sha256';
}

function bad(what: string, why: string): AgentError {
  return new AgentError('MANIFEST_INVALID', `${what}: ${why}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseStringMap(v: unknown, what: string, field: string): Record<string, string> {
  if (!isObject(v)) throw bad(what, `${field} is not an object`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw bad(what, `${field}.${k} is not a string`);
    // Defined, not assigned: a key "__proto__" (JSON.parse keeps it as a key) stays a key instead of being dropped
    // as a prototype (found by test/fuzz/manifest.test.ts).
    Object.defineProperty(out, k, { value: val, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Validate a platform object (`where` names it in errors). */
export function parsePlatformObject(v: unknown, what: string, where: string): Platform {
  if (!isObject(v)) throw bad(what, `${where}.platform is not an object`);
  if (typeof v.os !== 'string' || v.os === '') throw bad(what, `${where}.platform.os is missing`);
  if (typeof v.architecture !== 'string' || v.architecture === '') throw bad(what, `${where}.platform.architecture is missing`);
  const p: Platform = { os: v.os, architecture: v.architecture };
  if (v.variant !== undefined) {
    if (typeof v.variant !== 'string') throw bad(what, `${where}.platform.variant is not a string`);
    if (v.variant !== '') p.variant = v.variant;
  }
  return p;
}

/** Validate a descriptor (media type, digest, size; optional platform and annotations). */
export function parseDescriptor(v: unknown, what: string, where: string): Descriptor {
  if (!isObject(v)) throw bad(what, `${where} is not an object`);
  if (typeof v.mediaType !== 'string' || v.mediaType === '') throw bad(what, `${where}.mediaType is missing`);
  if (typeof v.digest !== 'string' || !isDigest(v.digest)) throw bad(what, `${where}.digest ${JSON.stringify(v.digest)} is not a valid digest`);
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) throw bad(what, `${where}.size ${JSON.stringify(v.size)} is not a non-negative integer`);
  const d: Descriptor = { mediaType: v.mediaType, digest: v.digest, size: v.size };
  if (v.platform !== undefined) d.platform = parsePlatformObject(v.platform, what, where);
  if (v.annotations !== undefined && v.annotations !== null) d.annotations = parseStringMap(v.annotations, what, `${where}.annotations`);
  return d;
}

export type ParsedManifest =
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest }
  | { kind: 'index'; mediaType: string; index: ImageIndex };

function bareMediaType(contentType: string | undefined): string | undefined {
  const t = contentType?.split(';')[0]?.trim().toLowerCase();
  return t === '' ? undefined : t;
}

function parseJson(bytes: Buffer | string, what: string): unknown {
  const text = typeof bytes === 'string' ? bytes : bytes.toString('utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new AgentError('MANIFEST_INVALID', `${what}: malformed JSON: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Parse and validate a manifest or index. The media type is the document's `mediaType` field, else the HTTP
 * Content-Type, else inferred from the shape (OCI allows the field to be absent). `what` names the document in errors.
 * Layers are not checked against known layer types here (signature manifests use other types): see `checkImageManifest`.
 */
export function parseManifest(bytes: Buffer | string, contentType: string | undefined, what: string): ParsedManifest {
  const doc = parseJson(bytes, what);
  if (!isObject(doc)) throw bad(what, 'not a JSON object');
  const declared = typeof doc.mediaType === 'string' && doc.mediaType !== '' ? doc.mediaType : undefined;
  let mediaType = declared ?? bareMediaType(contentType);
  if (mediaType === undefined || mediaType === 'application/json' || mediaType === 'application/octet-stream' || mediaType === 'text/plain') {
    mediaType = Array.isArray(doc.manifests) ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.ociManifest;
  }
  if (mediaType === MEDIA_TYPES.dockerSchema1 || mediaType === MEDIA_TYPES.dockerSchema1Signed || doc.schemaVersion === 1) {
    throw bad(what, 'Docker schema 1 manifests are not supported (re-push the image with a current tool)');
  }
  if (!MANIFEST_ACCEPT.includes(mediaType)) throw bad(what, `unsupported media type ${JSON.stringify(mediaType)} (expected one of ${MANIFEST_ACCEPT.join(', ')})`);
  if (doc.schemaVersion !== 2) throw bad(what, `schemaVersion is ${JSON.stringify(doc.schemaVersion)}, expected 2`);
  const annotations = doc.annotations !== undefined && doc.annotations !== null ? parseStringMap(doc.annotations, what, 'annotations') : undefined;

  if (INDEX_MEDIA_TYPES.includes(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw bad(what, 'manifests is not an array');
    if (doc.config !== undefined || doc.layers !== undefined) throw bad(what, `an index (${mediaType}) must not have config or layers`);
    const index: ImageIndex = { mediaType, manifests: doc.manifests.map((m, i) => parseDescriptor(m, what, `manifests[${i}]`)) };
    if (annotations) index.annotations = annotations;
    return { kind: 'index', mediaType, index };
  }
  if (doc.manifests !== undefined) throw bad(what, `a manifest (${mediaType}) must not have manifests`);
  if (doc.config === undefined) throw bad(what, 'config is missing');
  if (!Array.isArray(doc.layers)) throw bad(what, 'layers is not an array');
  const manifest: ImageManifest = {
    mediaType,
    config: parseDescriptor(doc.config, what, 'config'),
    layers: doc.layers.map((l, i) => parseDescriptor(l, what, `layers[${i}]`)),
  };
  if (annotations) manifest.annotations = annotations;
  return { kind: 'manifest', mediaType, manifest };
}

/** Checks that a manifest is a container image this agent can unpack: an image config and known layer types. */
export function checkImageManifest(manifest: ImageManifest, what: string): void {
  const cfg = manifest.config.mediaType;
  if (cfg !== MEDIA_TYPES.ociConfig && cfg !== MEDIA_TYPES.dockerConfig) {
    throw bad(what, `config media type ${JSON.stringify(cfg)} is not a container image config (is this an artifact, not an image?)`);
  }
  manifest.layers.forEach((l, i) => {
    if (layerCompression(l.mediaType) === undefined) throw bad(what, `layers[${i}] has unsupported media type ${JSON.stringify(l.mediaType)}`);
  });
}

/** Parse an image config blob. */
export function parseImageConfig(bytes: Buffer | string, what: string): ImageConfig {
  const doc = parseJson(bytes, what);
  if (!isObject(doc)) throw bad(what, 'not a JSON object');
  for (const k of ['architecture', 'os', 'variant', 'created'] as const) {
    if (doc[k] !== undefined && typeof doc[k] !== 'string') throw bad(what, `${k} is not a string`);
  }
  if (doc.config !== undefined && doc.config !== null) {
    if (!isObject(doc.config)) throw bad(what, 'config is not an object');
    const labels = doc.config.Labels;
    if (labels !== undefined && labels !== null) parseStringMap(labels, what, 'config.Labels');
  }
  return doc as ImageConfig;
}

// ---------------------------------------------------------------------------------------------------------------
// Platforms

const ARCH_ALIASES: Readonly<Record<string, string>> = {
  x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64', armhf: 'arm', armel: 'arm', i386: '386', i686: '386', x86: '386',
};
const DEFAULT_VARIANT: Readonly<Record<string, string>> = { arm64: 'v8', arm: 'v7', amd64: 'v1' };

/** Normalised platform: lower-case, canonical architecture, default variant filled in where the architecture has one. */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  const rawArch = p.architecture.toLowerCase();
  const architecture = ARCH_ALIASES[rawArch] ?? rawArch;
  let variant = p.variant?.toLowerCase();
  if (rawArch === 'armel' && variant === undefined) variant = 'v6';
  if (architecture === 'arm64' && (variant === '8' || variant === 'v8.0')) variant = 'v8';
  if (architecture === 'arm' && variant !== undefined && /^[5-8]$/.test(variant)) variant = `v${variant}`;
  variant ??= DEFAULT_VARIANT[architecture];
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

/** `os/architecture[/variant]`. */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Parse `os/architecture[/variant]` (e.g. from a command-line flag); throws MANIFEST_INVALID naming the string. */
export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  const [os, architecture, variant] = parts;
  if (parts.length < 2 || parts.length > 3 || !os || !architecture || (parts.length === 3 && !variant)) {
    throw new AgentError('MANIFEST_INVALID', `platform ${JSON.stringify(s)} is not os/architecture[/variant]`);
  }
  return variant ? { os, architecture, variant } : { os, architecture };
}

function variantNumber(v: string | undefined): number | undefined {
  const m = v === undefined ? null : /^v(\d+)$/.exec(v);
  return m?.[1] !== undefined ? Number(m[1]) : undefined;
}

/**
 * How well `candidate` fits `wanted`: 0 is an exact match, higher numbers are worse but still runnable (a lower
 * variant of the same architecture), undefined means it does not run.
 */
export function platformRank(candidate: Platform, wanted: Platform): number | undefined {
  const c = normalizePlatform(candidate);
  const w = normalizePlatform(wanted);
  if (c.os !== w.os || c.architecture !== w.architecture) return undefined;
  if (c.variant === w.variant) return 0;
  const cn = variantNumber(c.variant);
  const wn = variantNumber(w.variant);
  if (cn !== undefined && wn !== undefined && cn <= wn) return wn - cn;
  return undefined;
}

/** True when an image of platform `candidate` runs on `wanted`. */
export function platformMatches(candidate: Platform, wanted: Platform): boolean {
  return platformRank(candidate, wanted) !== undefined;
}

/**
 * Choose the manifest of `index` for `wanted`: the best-ranked match, the first one in index order on ties.
 * No match -> MANIFEST_INVALID listing the platforms the index offers.
 */
export function selectManifest(index: ImageIndex, wanted: Platform, what: string): Descriptor {
  let best: Descriptor | undefined;
  let bestRank = Infinity;
  for (const d of index.manifests) {
    if (d.platform === undefined || !MANIFEST_ACCEPT.includes(d.mediaType)) continue;
    const rank = platformRank(d.platform, wanted);
    if (rank !== undefined && rank < bestRank) {
      best = d;
      bestRank = rank;
    }
  }
  if (best === undefined) {
    const available = index.manifests.flatMap((d) => (d.platform ? [formatPlatform(d.platform)] : []));
    throw bad(what, `no manifest for platform ${formatPlatform(wanted)}; available: ${available.length ? available.join(', ') : 'none'}`);
  }
  return best;
}

/**
 * The platform this process runs on, in OCI terms (`x64` -> amd64, `arm64` -> arm64/v8, `arm` -> arm/v7 or the
 * ARM version Node was built for, `ia32` -> 386, `ppc64` -> ppc64le on little-endian).
 */
export function hostPlatform(
  arch: string = process.arch,
  os: string = process.platform,
  armVersion: unknown = (process.config.variables as Record<string, unknown>).arm_version,
): Platform {
  const goos = os === 'win32' ? 'windows' : os === 'sunos' ? 'solaris' : os;
  switch (arch) {
    case 'x64':
      return { os: goos, architecture: 'amd64' };
    case 'arm64':
      return { os: goos, architecture: 'arm64', variant: 'v8' };
    case 'arm': {
      const v = typeof armVersion === 'string' || typeof armVersion === 'number' ? String(armVersion) : '7';
      return { os: goos, architecture: 'arm', variant: /^[5-8]$/.test(v) ? `v${v}` : 'v7' };
    }
    case 'ia32':
      return { os: goos, architecture: '386' };
    case 'ppc64':
      return { os: goos, architecture: 'ppc64le' };
    default:
      return { os: goos, architecture: arch };
  }
}
