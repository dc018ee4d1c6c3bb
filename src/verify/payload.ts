/**
 * The cosign "simple signing" payload (PURE): the JSON a legacy `.sig` layer (or a cosign OCI 1.1 `sig` referrer)
 * signs, as sigstore/sigstore `pkg/signature/payload` writes it (spec/sigstore.md 1.2):
 *
 *   {"critical":{"identity":{"docker-reference":"<repo>"},"image":{"docker-manifest-digest":"sha256:<hex>"},
 *    "type":"cosign container image signature"},"optional":null}
 *
 * Decisions:
 * - The bytes are parsed as received (never re-serialised: the signature covers exactly them).
 * - `critical` is what its name says: an unknown key inside `critical`, `identity` or `image` is refused (as the
 *   containers-signature(5) format requires); `optional` may be null or any object and is ignored.
 * - `docker-manifest-digest` must be a well-formed `sha256:`/`sha512:` digest and be one of the allowed digests.
 * - `docker-reference` is only checked when the policy asks for a repository (cosign ignores it; containers/image
 *   checks it). It is compared as a repository: tag and digest stripped, Docker Hub spellings normalised.
 */
import { AgentError } from '../model/errors.ts';

export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const COSIGN_SIGNATURE_TYPE = 'cosign container image signature';
/** Largest signed payload (simple-signing blob or DSSE payload) looked at; a real one is about 250 bytes. */
export const MAX_PAYLOAD_BYTES: number = 64 * 1024;

const DIGEST_RE = /^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export interface SimpleSigningPayload {
  /** critical.identity.docker-reference, as signed. */
  dockerReference: string;
  /** critical.image.docker-manifest-digest. */
  manifestDigest: string;
  /** The optional object (null when absent). */
  optional: Record<string, unknown> | null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(message: string): AgentError {
  return new AgentError('SIGNATURE_INVALID', `simple-signing payload: ${message}`);
}

function onlyKeys(obj: Record<string, unknown>, where: string, allowed: readonly string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) throw bad(`unknown field ${JSON.stringify(k)} in ${where}`);
  }
}

function objectField(obj: Record<string, unknown>, key: string, where: string): Record<string, unknown> {
  const v = obj[key];
  if (!isObject(v)) throw bad(`${where}.${key} is missing or not an object`);
  return v;
}

function stringField(obj: Record<string, unknown>, key: string, where: string): string {
  const v = obj[key];
  if (typeof v !== 'string' || v === '') throw bad(`${where}.${key} is missing or not a non-empty string`);
  return v;
}

/** Parse and structurally check a simple-signing payload; throws SIGNATURE_INVALID naming the defect. */
export function parseSimpleSigningPayload(bytes: Uint8Array): SimpleSigningPayload {
  if (bytes.byteLength > MAX_PAYLOAD_BYTES) {
    throw bad(`${bytes.byteLength} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte limit`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new AgentError('SIGNATURE_INVALID', `simple-signing payload is not UTF-8 JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!isObject(doc)) throw bad('not a JSON object');
  onlyKeys(doc, 'the payload', ['critical', 'optional']);
  const critical = objectField(doc, 'critical', 'payload');
  onlyKeys(critical, 'critical', ['identity', 'image', 'type']);
  const type = critical['type'];
  if (type !== COSIGN_SIGNATURE_TYPE) {
    throw bad(`critical.type is ${JSON.stringify(type)}, expected ${JSON.stringify(COSIGN_SIGNATURE_TYPE)}`);
  }
  const identity = objectField(critical, 'identity', 'critical');
  onlyKeys(identity, 'critical.identity', ['docker-reference']);
  const image = objectField(critical, 'image', 'critical');
  onlyKeys(image, 'critical.image', ['docker-manifest-digest']);
  const dockerReference = stringField(identity, 'docker-reference', 'critical.identity');
  const manifestDigest = stringField(image, 'docker-manifest-digest', 'critical.image');
  if (!DIGEST_RE.test(manifestDigest)) {
    throw bad(`critical.image.docker-manifest-digest ${JSON.stringify(manifestDigest)} is not a sha256/sha512 digest`);
  }
  const optional = doc['optional'];
  if (optional !== undefined && optional !== null && !isObject(optional)) throw bad('optional is neither null nor an object');
  return { dockerReference, manifestDigest, optional: isObject(optional) ? optional : null };
}

/**
 * Repository part of a reference, normalised for comparison: `[docker://]domain/path[:tag][@digest]` -> `domain/path`,
 * with Docker Hub's `index.docker.io`/`registry-1.docker.io`/implicit domain as `docker.io` and the implicit `library/`.
 * The domain is lower-cased; the path is kept as is.
 */
export function normaliseRepository(reference: string): string {
  let rest = reference.trim();
  if (rest.startsWith('docker://')) rest = rest.slice('docker://'.length);
  const at = rest.indexOf('@');
  if (at >= 0) rest = rest.slice(0, at);
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) rest = rest.slice(0, colon);
  const parts = rest.split('/');
  const first = parts[0] ?? '';
  let domain: string;
  let path: string[];
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    domain = first.toLowerCase();
    path = parts.slice(1);
  } else {
    domain = 'docker.io';
    path = parts;
  }
  if (domain === 'index.docker.io' || domain === 'registry-1.docker.io') domain = 'docker.io';
  if (domain === 'docker.io' && path.length === 1) path = ['library', ...path];
  return `${domain}/${path.join('/')}`;
}

/**
 * The claims cosign checks (SimpleClaimVerifier): the signed digest is one we accept, and (when the policy pins one)
 * the signed docker-reference names the expected repository. Throws SIGNATURE_DIGEST_MISMATCH naming both sides.
 */
export function checkSimpleSigningClaims(
  payload: SimpleSigningPayload,
  opts: { allowedDigests: readonly string[]; requireRepository?: string | undefined },
): void {
  if (!opts.allowedDigests.includes(payload.manifestDigest)) {
    throw new AgentError(
      'SIGNATURE_DIGEST_MISMATCH',
      `the signature is for ${payload.manifestDigest}, not ${opts.allowedDigests.join(' or ')}`,
    );
  }
  if (opts.requireRepository !== undefined) {
    const signed = normaliseRepository(payload.dockerReference);
    const wanted = normaliseRepository(opts.requireRepository);
    if (signed !== wanted) {
      throw new AgentError(
        'SIGNATURE_DIGEST_MISMATCH',
        `the signature names repository ${payload.dockerReference} (${signed}), not ${opts.requireRepository} (${wanted})`,
      );
    }
  }
}
