/** Signature verification (cosign / Sigstore, offline trust root). PURE: see verifier.ts for the checks. */
export { MAX_CANDIDATES, checkPolicy, requireVerified, verifySignatures } from './verifier.ts';
export { REJECTION_RANK, SIGSTORE_ERROR_CODES, rejectionRank, toSignatureError } from './errors.ts';
export {
  COSIGN_SIGNATURE_TYPE,
  MAX_PAYLOAD_BYTES,
  SIMPLE_SIGNING_MEDIA_TYPE,
  checkSimpleSigningClaims,
  normaliseRepository,
  parseSimpleSigningPayload,
  type SimpleSigningPayload,
} from './payload.ts';
export { COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE, IN_TOTO_STATEMENT_V1, checkCosignStatement } from './statement.ts';
export {
  ANNOTATION_BUNDLE,
  ANNOTATION_CERTIFICATE,
  ANNOTATION_CHAIN,
  ANNOTATION_RFC3161,
  ANNOTATION_SIGNATURE,
  BUNDLE_V01_MEDIA_TYPE,
  parseRekorBundleAnnotation,
  toBundleV01,
  type BundleV01Json,
  type RekorBundleAnnotation,
} from './adapter.ts';
export { parsePinnedKey, type PinnedKey, type PinnedKeyKind } from './keys.ts';
