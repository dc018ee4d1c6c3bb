/**
 * @sigstore errors -> our SIGNATURE_* codes (PURE). ONE table: every code @sigstore/verify 4.1 can raise.
 *
 * Refinements made by verifier.ts, not here: a missing timestamp is detected before the library runs (so
 * TIMESTAMP_ERROR here means a timestamp that does not verify), an altered payload is caught by checking the
 * signature first, and a CERTIFICATE_ERROR is reported as SIGNATURE_CERT_EXPIRED when the leaf was not valid at a
 * signing time whose SET verifies (SIGNATURE_BAD_SET when that SET does not verify).
 * Anything that is not a VerificationError/PolicyError (a bundle ValidationError, an ASN.1 parse error, a TypeError
 * from malformed input) becomes SIGNATURE_INVALID with its message: nothing escapes as a raw exception.
 */
import { AgentError, type ErrorCode } from '../model/errors.ts';

export type SignatureErrorCode = Extract<ErrorCode, `SIGNATURE_${string}`>;

/** @sigstore/verify VerificationError/PolicyError `.code` -> ours. */
export const SIGSTORE_ERROR_CODES: Readonly<Record<string, SignatureErrorCode>> = {
  // transparency log: a promise/proof/body that does not verify is a forged or mismatched entry
  TLOG_INCLUSION_PROMISE_ERROR: 'SIGNATURE_BAD_SET',
  TLOG_INCLUSION_PROOF_ERROR: 'SIGNATURE_BAD_SET',
  TLOG_BODY_ERROR: 'SIGNATURE_BAD_SET',
  // "expected 1 tlog entries, got 0" / an entry with neither promise nor proof
  TLOG_ERROR: 'SIGNATURE_TLOG_MISSING',
  TLOG_MISSING_INCLUSION_ERROR: 'SIGNATURE_TLOG_MISSING',
  // a TSA timestamp that does not verify (absence is detected earlier)
  TIMESTAMP_ERROR: 'SIGNATURE_BAD_SET',
  // chain to the trusted root, SCTs, CA validity
  CERTIFICATE_ERROR: 'SIGNATURE_UNTRUSTED_KEY',
  // key not found / not valid at the signing time
  PUBLIC_KEY_ERROR: 'SIGNATURE_UNTRUSTED_KEY',
  // the signature does not verify under the (trusted) signer key: the signed bytes were altered
  SIGNATURE_ERROR: 'SIGNATURE_INVALID',
  // identity policy
  UNTRUSTED_SIGNER_ERROR: 'SIGNATURE_IDENTITY_MISMATCH',
  NOT_IMPLEMENTED_ERROR: 'SIGNATURE_INVALID',
};

function sigstoreCode(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = (err as { code?: unknown }).code;
  const name = err.name;
  if (typeof code === 'string' && (name === 'VerificationError' || name === 'PolicyError')) return code;
  return undefined;
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  let message = `${err.name}: ${err.message}`;
  const fields = (err as { fields?: unknown }).fields;
  if (Array.isArray(fields) && fields.length > 0) message += ` (invalid: ${fields.join(', ')})`;
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error && cause.message !== err.message) message += ` (${cause.message})`;
  return message;
}

/** The library code of an error, when it is a @sigstore VerificationError/PolicyError. */
export function sigstoreErrorCode(err: unknown): string | undefined {
  return sigstoreCode(err);
}

/** Map any error thrown while verifying one signature to an AgentError with a SIGNATURE_* code. */
export function toSignatureError(err: unknown, context: string): AgentError {
  if (err instanceof AgentError) return err;
  const code = sigstoreCode(err);
  const mapped: SignatureErrorCode = code !== undefined ? (SIGSTORE_ERROR_CODES[code] ?? 'SIGNATURE_INVALID') : 'SIGNATURE_INVALID';
  const what = code !== undefined ? `${code}: ${(err as Error).message}` : describe(err);
  const cause = err instanceof Error ? (err as { cause?: unknown }).cause : undefined;
  const because = code !== undefined && cause instanceof Error ? ` (${cause.message})` : '';
  return new AgentError(mapped, `${context}: ${what}${because}`, { cause: err });
}

/**
 * Which rejection explains a refusal best: the one that got furthest through the checks. A signature by a trusted
 * signer over another digest beats an identity mismatch, which beats an expired certificate, a forged or missing
 * log entry, an untrusted key, and finally a signature that does not verify at all.
 */
export const REJECTION_RANK: readonly SignatureErrorCode[] = [
  'SIGNATURE_DIGEST_MISMATCH',
  'SIGNATURE_IDENTITY_MISMATCH',
  'SIGNATURE_CERT_EXPIRED',
  'SIGNATURE_BAD_SET',
  'SIGNATURE_TLOG_MISSING',
  'SIGNATURE_UNTRUSTED_KEY',
  'SIGNATURE_INVALID',
  'SIGNATURE_NOT_FOUND',
];

/** Rank of a code (lower is better); unknown codes rank last. */
export function rejectionRank(code: string): number {
  const i = (REJECTION_RANK as readonly string[]).indexOf(code);
  return i < 0 ? REJECTION_RANK.length : i;
}
