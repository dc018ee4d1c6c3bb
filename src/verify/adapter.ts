/**
 * cosign layer annotations -> Sigstore bundle v0.1 JSON (PURE), the mapping of spec/sigstore.md 3.3. sigstore-js has
 * no importer for cosign's registry format; v0.1 is the bundle version whose tlog entries may carry only a SET
 * (inclusion promise) and no inclusion proof, which is what the `dev.sigstore.cosign/bundle` annotation holds.
 *
 * | annotation                              | bundle                                                             |
 * | dev.cosignproject.cosign/signature      | messageSignature.signature (whitespace stripped)                   |
 * | dev.sigstore.cosign/certificate (PEM)   | verificationMaterial.x509CertificateChain.certificates[0] (DER)    |
 * | dev.sigstore.cosign/chain               | ignored: intermediates come from the trusted root only             |
 * | (no certificate)                        | verificationMaterial.publicKey.hint (the key comes from the policy) |
 * | dev.sigstore.cosign/bundle              | tlogEntries[0] (logID hex -> base64, integers -> decimal strings)  |
 * | dev.sigstore.cosign/rfc3161timestamp    | timestampVerificationData.rfc3161Timestamps[0]                     |
 *
 * The message digest is computed here over the payload, with the hash the Rekor body names (sha256 when there is
 * no body), so the library's body check binds the entry to exactly these bytes.
 */
import { createHash } from 'node:crypto';
import { AgentError } from '../model/errors.ts';
import { pemBlocks } from './keys.ts';

export const ANNOTATION_SIGNATURE = 'dev.cosignproject.cosign/signature';
export const ANNOTATION_CERTIFICATE = 'dev.sigstore.cosign/certificate';
export const ANNOTATION_CHAIN = 'dev.sigstore.cosign/chain';
export const ANNOTATION_BUNDLE = 'dev.sigstore.cosign/bundle';
export const ANNOTATION_RFC3161 = 'dev.sigstore.cosign/rfc3161timestamp';
export const BUNDLE_V01_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle+json;version=0.1';

/** cosign's RekorBundle (pkg/cosign/bundle/rekor.go), field names as Go writes them. */
export interface RekorBundleAnnotation {
  SignedEntryTimestamp: string;
  Payload: { body: string; integratedTime: number; logIndex: number; logID: string };
}

/** The decoded Rekor entry body (only what the adapter needs). */
export interface RekorBody {
  kind: string;
  apiVersion: string;
  /** `spec.data.hash.algorithm` of a hashedrekord body, when present. */
  hashAlgorithm?: string;
  json: Record<string, unknown>;
}

/** Sigstore bundle v0.1 JSON as built by the adapter (the shape bundleFromJSON reads). */
export interface BundleV01Json {
  mediaType: string;
  verificationMaterial: {
    publicKey?: { hint: string };
    x509CertificateChain?: { certificates: Array<{ rawBytes: string }> };
    tlogEntries: Array<{
      logIndex: string;
      logId: { keyId: string };
      kindVersion: { kind: string; version: string };
      integratedTime: string;
      inclusionPromise: { signedEntryTimestamp: string };
      canonicalizedBody: string;
    }>;
    timestampVerificationData?: { rfc3161Timestamps: Array<{ signedTimestamp: string }> };
  };
  messageSignature: { messageDigest: { algorithm: string; digest: string }; signature: string };
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const SAFE_INT_RE = /^(?:0|[1-9][0-9]{0,15})$/;

/** Strict standard base64 (padded), whitespace ignored; throws `code` naming `what` when malformed or empty. */
export function decodeBase64(value: string, what: string, code: 'SIGNATURE_INVALID' | 'SIGNATURE_BAD_SET' = 'SIGNATURE_INVALID'): Buffer {
  const compact = value.replace(/\s+/g, '');
  if (compact === '' || !BASE64_RE.test(compact)) throw new AgentError(code, `${what} is not valid base64`);
  return Buffer.from(compact, 'base64');
}

/** The raw signature bytes of a layer; throws SIGNATURE_INVALID when the annotation is missing or malformed. */
export function layerSignature(annotations: Record<string, string>): Buffer {
  const value = annotations[ANNOTATION_SIGNATURE];
  if (value === undefined || value.trim() === '') {
    throw new AgentError('SIGNATURE_INVALID', `the layer has no ${ANNOTATION_SIGNATURE} annotation`);
  }
  return decodeBase64(value, `annotation ${ANNOTATION_SIGNATURE}`);
}

/** DER of the first certificate of a PEM text; throws SIGNATURE_INVALID when there is none. */
export function certificateDer(pem: string, what: string): Buffer {
  const block = pemBlocks(pem)[0];
  if (block === undefined || block.label !== 'CERTIFICATE' || block.der.length === 0) {
    throw new AgentError('SIGNATURE_INVALID', `${what} does not hold a PEM CERTIFICATE`);
  }
  return block.der;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parse the `dev.sigstore.cosign/bundle` annotation; throws SIGNATURE_BAD_SET naming the defect. */
export function parseRekorBundleAnnotation(value: string): RekorBundleAnnotation {
  const fail = (why: string): AgentError => new AgentError('SIGNATURE_BAD_SET', `annotation ${ANNOTATION_BUNDLE}: ${why}`);
  let doc: unknown;
  try {
    doc = JSON.parse(value);
  } catch (err) {
    throw new AgentError('SIGNATURE_BAD_SET', `annotation ${ANNOTATION_BUNDLE} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!isObject(doc)) throw fail('not a JSON object');
  const set = doc['SignedEntryTimestamp'];
  const payload = doc['Payload'];
  if (typeof set !== 'string' || set === '') throw fail('SignedEntryTimestamp is missing');
  if (!isObject(payload)) throw fail('Payload is missing');
  const { body, integratedTime, logIndex, logID } = payload;
  if (typeof body !== 'string' || body === '') throw fail('Payload.body is missing');
  if (typeof integratedTime !== 'number' || !Number.isSafeInteger(integratedTime) || integratedTime <= 0) {
    throw fail('Payload.integratedTime is not a positive integer');
  }
  if (typeof logIndex !== 'number' || !Number.isSafeInteger(logIndex) || logIndex < 0) {
    throw fail('Payload.logIndex is not a non-negative integer');
  }
  if (typeof logID !== 'string' || !/^[0-9a-f]{64}$/.test(logID)) throw fail('Payload.logID is not 64 lowercase hex digits');
  return { SignedEntryTimestamp: set, Payload: { body, integratedTime, logIndex, logID } };
}

/** Decode a Rekor entry body (base64 canonical JSON); throws SIGNATURE_BAD_SET when it is not one. */
export function decodeRekorBody(canonicalizedBody: Uint8Array): RekorBody {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(canonicalizedBody).toString('utf8'));
  } catch (err) {
    throw new AgentError('SIGNATURE_BAD_SET', `the transparency-log entry body is not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!isObject(json) || typeof json['kind'] !== 'string' || typeof json['apiVersion'] !== 'string') {
    throw new AgentError('SIGNATURE_BAD_SET', 'the transparency-log entry body has no kind/apiVersion');
  }
  const spec = json['spec'];
  const data = isObject(spec) ? spec['data'] : undefined;
  const hash = isObject(data) ? data['hash'] : undefined;
  const algorithm = isObject(hash) && typeof hash['algorithm'] === 'string' ? hash['algorithm'] : undefined;
  return { kind: json['kind'], apiVersion: json['apiVersion'], ...(algorithm !== undefined ? { hashAlgorithm: algorithm } : {}), json };
}

const DIGEST_ALGORITHMS: Record<string, { node: string; proto: string }> = {
  sha256: { node: 'sha256', proto: 'SHA2_256' },
  sha384: { node: 'sha384', proto: 'SHA2_384' },
  sha512: { node: 'sha512', proto: 'SHA2_512' },
};

/**
 * Build the v0.1 bundle for one simple-signing layer. `hint` is the key hint used in key mode (no certificate
 * annotation); the Rekor entry and RFC 3161 timestamp are included when their annotations are present and
 * `includeEvidence` is true.
 */
export function toBundleV01(
  layer: { payload: Uint8Array; annotations: Record<string, string> },
  opts: { hint: string; includeEvidence: boolean },
): { bundle: BundleV01Json; rekor?: { annotation: RekorBundleAnnotation; body: RekorBody } } {
  const signature = layerSignature(layer.annotations);
  const certPem = layer.annotations[ANNOTATION_CERTIFICATE];
  const material: BundleV01Json['verificationMaterial'] = { tlogEntries: [] };
  if (certPem !== undefined && certPem.trim() !== '') {
    material.x509CertificateChain = {
      certificates: [{ rawBytes: certificateDer(certPem, `annotation ${ANNOTATION_CERTIFICATE}`).toString('base64') }],
    };
  } else {
    material.publicKey = { hint: opts.hint };
  }
  let rekor: { annotation: RekorBundleAnnotation; body: RekorBody } | undefined;
  let digestAlgorithm = DIGEST_ALGORITHMS['sha256']!;
  const bundleAnnotation = layer.annotations[ANNOTATION_BUNDLE];
  if (opts.includeEvidence && bundleAnnotation !== undefined && bundleAnnotation.trim() !== '') {
    const annotation = parseRekorBundleAnnotation(bundleAnnotation);
    const bodyBytes = decodeBase64(annotation.Payload.body, `annotation ${ANNOTATION_BUNDLE} Payload.body`, 'SIGNATURE_BAD_SET');
    const body = decodeRekorBody(bodyBytes);
    if (body.hashAlgorithm !== undefined) {
      const alg = DIGEST_ALGORITHMS[body.hashAlgorithm];
      if (alg === undefined) {
        throw new AgentError('SIGNATURE_BAD_SET', `the Rekor entry hashes with unsupported ${JSON.stringify(body.hashAlgorithm)}`);
      }
      digestAlgorithm = alg;
    }
    const integrated = String(annotation.Payload.integratedTime);
    const index = String(annotation.Payload.logIndex);
    if (!SAFE_INT_RE.test(integrated) || !SAFE_INT_RE.test(index)) {
      throw new AgentError('SIGNATURE_BAD_SET', `annotation ${ANNOTATION_BUNDLE}: integers out of range`);
    }
    material.tlogEntries.push({
      logIndex: index,
      logId: { keyId: Buffer.from(annotation.Payload.logID, 'hex').toString('base64') },
      kindVersion: { kind: body.kind, version: body.apiVersion },
      integratedTime: integrated,
      inclusionPromise: { signedEntryTimestamp: decodeBase64(annotation.SignedEntryTimestamp, 'SignedEntryTimestamp', 'SIGNATURE_BAD_SET').toString('base64') },
      canonicalizedBody: bodyBytes.toString('base64'),
    });
    rekor = { annotation, body };
  }
  const tsaAnnotation = layer.annotations[ANNOTATION_RFC3161];
  if (opts.includeEvidence && tsaAnnotation !== undefined && tsaAnnotation.trim() !== '') {
    let doc: unknown;
    try {
      doc = JSON.parse(tsaAnnotation);
    } catch (err) {
      throw new AgentError('SIGNATURE_BAD_SET', `annotation ${ANNOTATION_RFC3161} is not JSON`, { cause: err });
    }
    const ts = isObject(doc) ? doc['SignedRFC3161Timestamp'] : undefined;
    if (typeof ts !== 'string') {
      throw new AgentError('SIGNATURE_BAD_SET', `annotation ${ANNOTATION_RFC3161} has no SignedRFC3161Timestamp`);
    }
    material.timestampVerificationData = {
      rfc3161Timestamps: [{ signedTimestamp: decodeBase64(ts, 'SignedRFC3161Timestamp', 'SIGNATURE_BAD_SET').toString('base64') }],
    };
  }
  const digest = createHash(digestAlgorithm.node).update(layer.payload).digest('base64');
  const bundle: BundleV01Json = {
    mediaType: BUNDLE_V01_MEDIA_TYPE,
    verificationMaterial: material,
    messageSignature: { messageDigest: { algorithm: digestAlgorithm.proto, digest }, signature: signature.toString('base64') },
  };
  return rekor !== undefined ? { bundle, rekor } : { bundle };
}
