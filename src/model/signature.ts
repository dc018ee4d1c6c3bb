/**
 * PURE types shared by signature discovery (src/oci/signatures.ts), verification (src/verify) and the agent.
 * Layouts are cosign's (spec/sigstore.md section 1): the legacy `sha256-<hex>.sig` tag, OCI 1.1 referrers holding a
 * Sigstore bundle v0.3 (cosign v3 default) or a cosign simple-signing artifact, and the referrers fallback tag.
 */

/** One simple-signing layer (legacy .sig tag, or a cosign OCI 1.1 `sig` referrer): the signed bytes + annotations. */
export interface SimpleSigningCandidate {
  /** Where it was found, for messages ("127.0.0.1:5000/os:sha256-ab….sig layer 0"). */
  source: string;
  /** Layer media type (must be application/vnd.dev.cosign.simplesigning.v1+json to count). */
  mediaType: string;
  /** The layer blob: exactly the signed message (digest-checked when fetched). */
  payload: Uint8Array;
  /** Layer annotations (dev.cosignproject.cosign/signature, dev.sigstore.cosign/certificate|chain|bundle|rfc3161timestamp). */
  annotations: Record<string, string>;
}

/** One Sigstore bundle (v0.3, DSSE in-toto statement) found as an OCI 1.1 referrer or through the fallback tag. */
export interface BundleCandidate {
  source: string;
  /** The parsed bundle JSON as fetched (digest-checked blob). */
  bundle: unknown;
}

/** Everything found for one manifest digest. */
export interface SignatureCandidates {
  /** The manifest (or index) digest the signatures were looked up for. */
  digest: string;
  /** Repository the signatures live in (COSIGN_REPOSITORY may move them). */
  repository: string;
  simpleSigning: SimpleSigningCandidate[];
  bundles: BundleCandidate[];
}

/** An expected keyless signer: exact subject (URI/email SAN) or an anchored regular expression, and the OIDC issuer. */
export interface IdentityRule {
  subject?: string;
  /** Matched as a whole (anchored as ^(?:…)$ by the verifier). */
  subjectRegExp?: string;
  issuer: string;
}

/** What counts as trusted, for one image. */
export interface TrustPolicy {
  /** Pinned public keys (PEM `PUBLIC KEY`; P-256 required, RSA and P-384 accepted), with an id for messages. */
  keys: Array<{ id: string; pem: string }>;
  /** A Sigstore TrustedRoot JSON (Fulcio CAs, Rekor logs, CT logs, TSAs). Required for keyless and for tlog checks. */
  trustedRoot?: unknown;
  /** Accepted keyless identities. Keyless signatures are refused when empty. */
  identities: IdentityRule[];
  /** Require a transparency-log entry (Rekor SET or inclusion proof) for key-based signatures too. */
  requireTlog: boolean;
  /** When set, a simple-signing payload's docker-reference must name this repository. */
  requireRepository?: string;
}

export type SignatureKind = 'simple-signing' | 'bundle';

export interface VerifiedSignature {
  kind: SignatureKind;
  mode: 'key' | 'keyless';
  source: string;
  /** The digest the signature names. */
  digest: string;
  /** key mode: the id of the key that verified. */
  keyId?: string;
  /** keyless: the certificate's SAN and OIDC issuer. */
  identity?: string;
  issuer?: string;
  /** Transparency log evidence, when present. */
  logIndex?: string;
  integratedTime?: string;
}

/** Why a candidate was rejected. */
export interface RejectedSignature {
  source: string;
  code: string;
  message: string;
}

export interface VerificationReport {
  digest: string;
  accepted: VerifiedSignature[];
  rejected: RejectedSignature[];
}
