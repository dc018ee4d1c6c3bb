/**
 * The in-toto statement inside a cosign v3 signature bundle (PURE), spec/sigstore.md 1.4 and 3.3:
 *
 *   DSSE payloadType  application/vnd.in-toto+json
 *   _type             https://in-toto.io/Statement/v1
 *   predicateType     https://sigstore.dev/cosign/sign/v1   (exactly: a SLSA provenance or any other attestation by
 *                                                           the same identity is not a signature of the image)
 *   subject           [{digest:{sha256:"<hex>"}, ...}]       one of them must be an allowed digest
 *
 * A statement that is not a cosign signature claim is refused with SIGNATURE_INVALID; a cosign signature claim for
 * another digest with SIGNATURE_DIGEST_MISMATCH.
 */
import { AgentError } from '../model/errors.ts';
import { MAX_PAYLOAD_BYTES } from './payload.ts';

export const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
export const IN_TOTO_STATEMENT_V1 = 'https://in-toto.io/Statement/v1';
export const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(message: string): AgentError {
  return new AgentError('SIGNATURE_INVALID', `bundle statement: ${message}`);
}

/**
 * Check a DSSE envelope's payload as a cosign signature statement and return the allowed digest it names
 * (`sha256:<hex>`). Throws SIGNATURE_INVALID when it is not a cosign signature statement, SIGNATURE_DIGEST_MISMATCH
 * when it names none of the allowed digests.
 */
export function checkCosignStatement(payloadType: string, payload: Uint8Array, allowedDigests: readonly string[]): string {
  if (payloadType !== IN_TOTO_PAYLOAD_TYPE) {
    throw invalid(`DSSE payloadType is ${JSON.stringify(payloadType)}, expected ${JSON.stringify(IN_TOTO_PAYLOAD_TYPE)}`);
  }
  if (payload.byteLength > MAX_PAYLOAD_BYTES) {
    throw invalid(`${payload.byteLength} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte limit`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch (err) {
    throw new AgentError('SIGNATURE_INVALID', `bundle statement is not UTF-8 JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!isObject(doc)) throw invalid('not a JSON object');
  if (doc['_type'] !== IN_TOTO_STATEMENT_V1) {
    throw invalid(`_type is ${JSON.stringify(doc['_type'])}, expected ${JSON.stringify(IN_TOTO_STATEMENT_V1)}`);
  }
  if (doc['predicateType'] !== COSIGN_SIGN_PREDICATE) {
    throw invalid(
      `predicateType is ${JSON.stringify(doc['predicateType'])}, not a cosign signature (${COSIGN_SIGN_PREDICATE})`,
    );
  }
  const subject = doc['subject'];
  if (!Array.isArray(subject) || subject.length === 0) throw invalid('subject is missing or empty');
  const named: string[] = [];
  for (const s of subject) {
    const hex = isObject(s) && isObject(s['digest']) ? s['digest']['sha256'] : undefined;
    if (typeof hex === 'string' && /^[a-f0-9]{64}$/.test(hex)) named.push(`sha256:${hex}`);
  }
  if (named.length === 0) throw invalid('no subject has a sha256 digest');
  const match = named.find((d) => allowedDigests.includes(d));
  if (match === undefined) {
    throw new AgentError(
      'SIGNATURE_DIGEST_MISMATCH',
      `the signature is for ${named.join(', ')}, not ${allowedDigests.join(' or ')}`,
    );
  }
  return match;
}
