/**
 * Signature verification (PURE: no I/O, no network, synchronous). Takes what discovery found for one digest
 * (`SignatureCandidates`) and a `TrustPolicy`, and says which candidates pass; the image is accepted when ANY does
 * (cosign semantics). Built on @sigstore/verify with an offline trusted root (spec/sigstore.md sections 2, 3 and 8).
 *
 * Simple-signing layers (legacy `.sig` tag, cosign OCI 1.1 `sig` referrers), checked in this order, each failure
 * rejecting the candidate with a SIGNATURE_* code:
 *   1. media type `application/vnd.dev.cosign.simplesigning.v1+json`, payload <= 64 KiB, signature annotation base64;
 *   2. key mode (no certificate annotation): some pinned key verifies the signature (P-256/SHA-256, P-384/SHA-384 or
 *      SHA-256, RSA PKCS#1 v1.5/SHA-256). When none does, the code follows this rule:
 *        - the Rekor entry names a signer key and that key verifies the signature -> SIGNATURE_UNTRUSTED_KEY
 *          (a genuine signature by a key we do not pin);
 *        - the Rekor entry names a signer key and it does not verify either -> SIGNATURE_INVALID (the payload or the
 *          signature was altered);
 *        - nothing names the signer -> SIGNATURE_UNTRUSTED_KEY (a foreign key and an altered payload cannot be told
 *          apart; the message says both).
 *      Then the transparency log: with a trusted root, a Rekor bundle annotation (and an RFC 3161 annotation) is
 *      verified through @sigstore/verify (adapter -> bundle v0.1) and the key inside the Rekor body must be the
 *      verifying key (cosign's comparePublicKey) -> SIGNATURE_BAD_SET; `requireTlog` without an entry ->
 *      SIGNATURE_TLOG_MISSING. Without a trusted root (then `requireTlog` is false) log evidence is not examined.
 *   3. keyless (certificate annotation): identities must be configured (else SIGNATURE_IDENTITY_MISMATCH); the
 *      signature must verify under the certificate key (else SIGNATURE_INVALID: the payload was altered); a signing
 *      time is required (Rekor SET or RFC 3161 timestamp, else SIGNATURE_TLOG_MISSING - checked before the library,
 *      whose zero-timestamp path crashes); @sigstore/verify with the default thresholds checks the Fulcio chain from
 *      the trusted root only (the chain annotation is ignored), one SCT, the timestamps, the SET and the Rekor body,
 *      and the signature; then the Rekor body key must be the leaf's (SIGNATURE_BAD_SET), the leaf must carry EKU
 *      codeSigning (SIGNATURE_UNTRUSTED_KEY), and its SAN and OIDC issuer must match a configured identity exactly
 *      (subject compared with ===, subjectRegExp anchored as ^(?:...)$, issuer with ===) -> SIGNATURE_IDENTITY_MISMATCH.
 *      A leaf not valid at a signing time whose SET verifies -> SIGNATURE_CERT_EXPIRED.
 *   4. the payload: critical.type, docker-manifest-digest in allowedDigests, docker-reference when `requireRepository`
 *      (SIGNATURE_INVALID / SIGNATURE_DIGEST_MISMATCH). Claims are checked last, after the signer is trusted.
 *
 * Sigstore bundles (cosign v3 referrers): bundleFromJSON -> toSignedEntity -> the same key/keyless checks (DSSE
 * envelope with exactly one signature; key mode checks the PAE with the pinned keys), then the in-toto statement
 * (statement.ts): payloadType, `_type` v1, predicateType exactly `https://sigstore.dev/cosign/sign/v1`, a subject
 * sha256 in allowedDigests.
 *
 * Caps: at most 32 candidates are examined, bundles first (the rest are rejected unexamined); payloads over 64 KiB
 * and bundles with more than 8 log entries/timestamps are rejected.
 * An invalid policy is not a rejection: `verifySignatures` throws VERIFY_FAILED, like `checkPolicy`.
 */
import { createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { bundleFromJSON, type Bundle } from '@sigstore/bundle';
import { dsse } from '@sigstore/core';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { Verifier, toSignedEntity, toTrustMaterial, type SignedEntity, type Signer, type TrustMaterial, type VerifierOptions } from '@sigstore/verify';
import { AgentError, type ErrorCode } from '../model/errors.ts';
import type {
  BundleCandidate,
  IdentityRule,
  RejectedSignature,
  SignatureCandidates,
  SimpleSigningCandidate,
  TrustPolicy,
  VerificationReport,
  VerifiedSignature,
} from '../model/signature.ts';
import { ANNOTATION_BUNDLE, ANNOTATION_CERTIFICATE, decodeBase64, decodeRekorBody, layerSignature, parseRekorBundleAnnotation, toBundleV01 } from './adapter.ts';
import { REJECTION_RANK, rejectionRank, sigstoreErrorCode, toSignatureError } from './errors.ts';
import { findVerifyingKey, fingerprint, keyKind, parsePinnedKey, verifyRaw, type PinnedKey, type SignatureHash } from './keys.ts';
import { MAX_PAYLOAD_BYTES, SIMPLE_SIGNING_MEDIA_TYPE, checkSimpleSigningClaims, parseSimpleSigningPayload } from './payload.ts';
import { checkCosignStatement } from './statement.ts';
import { logEntrySignerKeys, setVerifies } from './tlog.ts';

/** Candidates examined per digest; the rest are rejected unexamined. */
export const MAX_CANDIDATES = 32;
/** Log entries plus timestamps accepted in one bundle (each costs signature checks; real ones carry 1 or 2). */
const MAX_EVIDENCE = 8;
const OID_EKU = '2.5.29.37';
const OID_EKU_CODE_SIGNING = '1.3.6.1.5.5.7.3.3';
const KEY_HINT = 'cos-agent-pinned-key';

interface PreparedIdentity {
  rule: IdentityRule;
  matches(san: string): boolean;
  label: string;
}

interface PreparedPolicy {
  keys: PinnedKey[];
  identities: PreparedIdentity[];
  /** Trust material from the trusted root (its key finder refuses everything; key mode supplies its own). */
  trust: TrustMaterial | undefined;
  requireTlog: boolean;
  requireRepository: string | undefined;
}

function policyError(message: string, cause?: unknown): AgentError {
  return new AgentError('VERIFY_FAILED', `signature policy: ${message}`, { cause });
}

function prepareIdentity(rule: IdentityRule, index: number): PreparedIdentity {
  const where = `identity #${index + 1}`;
  if (typeof rule.issuer !== 'string' || rule.issuer === '') throw policyError(`${where} has no issuer`);
  const hasSubject = typeof rule.subject === 'string' && rule.subject !== '';
  const hasRegExp = typeof rule.subjectRegExp === 'string' && rule.subjectRegExp !== '';
  if (hasSubject === hasRegExp) throw policyError(`${where} needs exactly one of subject and subjectRegExp`);
  if (hasSubject) {
    const subject = rule.subject!;
    return { rule, matches: (san) => san === subject, label: `${subject} (issuer ${rule.issuer})` };
  }
  let re: RegExp;
  try {
    re = new RegExp(`^(?:${rule.subjectRegExp!})$`);
  } catch (err) {
    throw policyError(`${where} subjectRegExp ${JSON.stringify(rule.subjectRegExp)} is not a regular expression`, err);
  }
  return { rule, matches: (san) => re.test(san), label: `/^(?:${rule.subjectRegExp!})$/ (issuer ${rule.issuer})` };
}

function refuseKeyLookup(hint: string): never {
  throw new AgentError('SIGNATURE_UNTRUSTED_KEY', `no pinned key for hint ${JSON.stringify(hint)}`);
}

function preparePolicy(policy: TrustPolicy): PreparedPolicy {
  const keys = (policy.keys ?? []).map((k) => parsePinnedKey(k));
  const identities = (policy.identities ?? []).map((r, i) => prepareIdentity(r, i));
  if (keys.length === 0 && identities.length === 0) {
    throw policyError('no public keys and no keyless identities are configured: no signature could ever be accepted');
  }
  let trust: TrustMaterial | undefined;
  if (policy.trustedRoot !== undefined && policy.trustedRoot !== null) {
    if (typeof policy.trustedRoot !== 'object' || Array.isArray(policy.trustedRoot)) {
      throw policyError('the trusted root is not a JSON object');
    }
    try {
      trust = toTrustMaterial(TrustedRoot.fromJSON(policy.trustedRoot), refuseKeyLookup);
    } catch (err) {
      throw policyError(`the trusted root cannot be used: ${(err as Error).message}`, err);
    }
  }
  if (identities.length > 0) {
    if (trust === undefined) throw policyError('keyless identities are configured but there is no trusted root');
    if (trust.certificateAuthorities.length === 0) throw policyError('keyless identities need a trusted root with certificate authorities');
    if (trust.ctlogs.length === 0) throw policyError('keyless identities need a trusted root with CT logs (for SCTs)');
    if (trust.tlogs.length === 0 && trust.timestampAuthorities.length === 0) {
      throw policyError('keyless identities need a trusted root with a transparency log or a timestamp authority');
    }
  }
  if (policy.requireTlog) {
    if (trust === undefined) throw policyError('requireTlog is set but there is no trusted root to check log entries with');
    if (trust.tlogs.length === 0) throw policyError('requireTlog is set but the trusted root has no transparency log');
  }
  return {
    keys,
    identities,
    trust,
    requireTlog: policy.requireTlog === true,
    requireRepository: policy.requireRepository,
  };
}

/**
 * Throws VERIFY_FAILED when the policy can accept nothing or cannot be used: no keys and no identities, identities
 * without a (usable) trusted root, requireTlog without a trusted root with a log, a key that is not a PEM
 * `PUBLIC KEY`/`RSA PUBLIC KEY` (a CERTIFICATE is refused) or of an unsupported type (accepted: EC P-256, P-384,
 * RSA >= 2048), an identity without issuer or with both/neither subject forms, a subjectRegExp that does not compile.
 */
export function checkPolicy(policy: TrustPolicy): void {
  preparePolicy(policy);
}

interface Ctx {
  policy: PreparedPolicy;
  allowed: readonly string[];
}

function reject(code: ErrorCode, message: string): AgentError {
  return new AgentError(code, message);
}

/** Run @sigstore/verify and map what it throws; `refine` may turn a CERTIFICATE_ERROR into something sharper. */
function runVerifier(
  trust: TrustMaterial,
  entity: SignedEntity,
  options: VerifierOptions,
  context: string,
  refine?: (err: unknown) => AgentError | undefined,
): Signer {
  try {
    return new Verifier(trust, options).verify(entity);
  } catch (err) {
    throw refine?.(err) ?? toSignatureError(err, context);
  }
}

/** Signing times of an entity as the library reads them (SET integratedTime, TSA genTime). */
function entityTimes(entity: SignedEntity): Date[] {
  const times: Date[] = [];
  for (const t of entity.timestamps) {
    if (t.$case === 'transparency-log') {
      if (t.tlogEntry.inclusionPromise !== undefined) times.push(new Date(Number(t.tlogEntry.integratedTime) * 1000));
    } else {
      times.push(t.timestamp.signingTime);
    }
  }
  return times;
}

/** Each tlog entry's body must name `signerSpki` as the signing key (cosign comparePublicKey). */
function checkLogEntryKeys(entity: SignedEntity, signerSpki: Buffer): void {
  for (const entry of entity.tlogEntries) {
    const body = decodeRekorBody(entry.canonicalizedBody);
    const keys = logEntrySignerKeys(body);
    if (keys === undefined) {
      throw reject('SIGNATURE_BAD_SET', `transparency-log entry ${entry.logIndex}: cannot find the signer key in a ${body.kind}/${body.apiVersion} body`);
    }
    if (!keys.some((k) => k.equals(signerSpki))) {
      throw reject(
        'SIGNATURE_BAD_SET',
        `transparency-log entry ${entry.logIndex} names another public key (${keys.map((k) => fingerprint(k)).join(', ') || 'none'}) than the signer's (${fingerprint(signerSpki)})`,
      );
    }
  }
}

/** The tlog evidence to report. */
function logEvidence(entity: SignedEntity): { logIndex?: string; integratedTime?: string } {
  const entry = entity.tlogEntries[0];
  if (entry === undefined) return {};
  return {
    logIndex: entry.logIndex,
    ...(entry.integratedTime !== '' && entry.integratedTime !== '0' ? { integratedTime: entry.integratedTime } : {}),
  };
}

/** Replace the library's signature check by one with a chosen hash (P-384 keys sign with SHA-384; the library
 *  verifies DSSE with the key's default digest, SHA-256). Digest and signature comparisons are kept. */
function withSignatureHash(entity: SignedEntity, data: Buffer, signature: Buffer, hash: SignatureHash): SignedEntity {
  const original = entity.signature;
  return {
    ...entity,
    signature: {
      signature: original.signature,
      compareSignature: (s) => original.compareSignature(s),
      compareDigest: (d) => original.compareDigest(d),
      compareSignedDigest: (d) => original.compareSignedDigest(d),
      verifySignature: (key) => {
        try {
          return cryptoVerify(hash, data, key, signature);
        } catch {
          return false;
        }
      },
    },
  };
}

/** Why no pinned key verifies: see the rule in the header. `claimed` are the signer keys log entries name. */
function noPinnedKey(ctx: Ctx, data: Buffer, signature: Buffer, claimed: Buffer[]): AgentError {
  const ids = ctx.policy.keys.map((k) => k.id).join(', ');
  for (const spki of claimed) {
    try {
      const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
      const kind = keyKind(key);
      if (kind !== undefined && verifyRaw(kind, key, data, signature) !== undefined) {
        return reject('SIGNATURE_UNTRUSTED_KEY', `signed by key ${fingerprint(spki)}, which is not a pinned key (${ids})`);
      }
    } catch {
      // not a usable key: treat as not verifying
    }
  }
  if (claimed.length > 0) {
    return reject('SIGNATURE_INVALID', `the signature verifies neither under a pinned key (${ids}) nor under the key its log entry names: the payload or the signature was altered`);
  }
  return reject('SIGNATURE_UNTRUSTED_KEY', `the signature does not verify under any pinned key (${ids}): signed by another key, or the payload was altered`);
}

/** Signer keys named by log entries, for classification only (never trusted); [] when unreadable. */
function claimedKeysFromEntries(entries: ReadonlyArray<{ canonicalizedBody: Buffer }>): Buffer[] {
  const out: Buffer[] = [];
  for (const e of entries) {
    try {
      out.push(...(logEntrySignerKeys(decodeRekorBody(e.canonicalizedBody)) ?? []));
    } catch {
      // ignore
    }
  }
  return out;
}

function claimedKeysFromAnnotation(annotations: Record<string, string>): Buffer[] {
  const value = annotations[ANNOTATION_BUNDLE];
  if (value === undefined || value.trim() === '') return [];
  try {
    const a = parseRekorBundleAnnotation(value);
    return claimedKeysFromEntries([{ canonicalizedBody: decodeBase64(a.Payload.body, 'body') }]);
  } catch {
    return [];
  }
}

/**
 * Key mode: `found` already verified the signature; check the log evidence with the trusted root (if any).
 * Returns the entity's log evidence (empty when not examined).
 */
function verifyKeyEvidence(ctx: Ctx, entity: SignedEntity, found: { key: PinnedKey; hash: SignatureHash }, data: Buffer, signature: Buffer): { logIndex?: string; integratedTime?: string } {
  if (ctx.policy.requireTlog && entity.tlogEntries.length === 0) {
    throw reject('SIGNATURE_TLOG_MISSING', 'the policy requires a transparency-log entry and the signature has none');
  }
  const trust = ctx.policy.trust;
  if (trust === undefined) return {};
  const pinned = found.key;
  const keyTrust: TrustMaterial = { ...trust, publicKey: () => ({ publicKey: pinned.key, validFor: () => true }) };
  runVerifier(
    keyTrust,
    withSignatureHash(entity, data, signature, found.hash),
    { tlogThreshold: ctx.policy.requireTlog ? 1 : 0, ctlogThreshold: 0, timestampThreshold: 0 },
    'transparency-log verification',
  );
  checkLogEntryKeys(entity, pinned.spki);
  return logEvidence(entity);
}

function hasEku(cert: Extract<SignedEntity['key'], { $case: 'certificate' }>['certificate']): boolean {
  try {
    const ext = cert.extension(OID_EKU);
    const seq = ext?.valueObj.subs[0];
    return seq !== undefined && seq.subs.some((o) => o.toOID() === OID_EKU_CODE_SIGNING);
  } catch {
    return false;
  }
}

/**
 * Keyless: the signature under the certificate key first (so an altered payload reads as SIGNATURE_INVALID, not as a
 * log-entry mismatch), then the library's checks, then ours (log body key, EKU, identity). Returns the signer identity.
 */
function verifyKeyless(
  ctx: Ctx,
  entity: SignedEntity,
  signed: { data: Buffer; signature: Buffer },
): { identity: string; issuer: string; logIndex?: string; integratedTime?: string } {
  if (ctx.policy.identities.length === 0) {
    throw reject('SIGNATURE_IDENTITY_MISMATCH', 'the signature is keyless (certificate) and no keyless identities are configured');
  }
  const trust = ctx.policy.trust!;
  if (entity.key.$case !== 'certificate') throw reject('SIGNATURE_INVALID', 'keyless signature without a certificate');
  const leaf = entity.key.certificate;
  let leafKey: KeyObject;
  try {
    leafKey = createPublicKey({ key: leaf.publicKey, format: 'der', type: 'spki' });
  } catch (err) {
    throw toSignatureError(err, 'the certificate public key cannot be read');
  }
  const kind = keyKind(leafKey);
  if (kind === undefined) throw reject('SIGNATURE_INVALID', `the certificate key type (${leafKey.asymmetricKeyType}) is not supported`);
  const hash = verifyRaw(kind, leafKey, signed.data, signed.signature);
  if (hash === undefined) {
    throw reject('SIGNATURE_INVALID', 'the signature does not verify under the certificate key: the payload or the signature was altered');
  }
  if (entityTimes(entity).length === 0) {
    throw reject(
      'SIGNATURE_TLOG_MISSING',
      'no verifiable signing time: a certificate signature needs a Rekor SET (bundle annotation) or an RFC 3161 timestamp',
    );
  }
  if (ctx.policy.requireTlog && entity.tlogEntries.length === 0) {
    throw reject('SIGNATURE_TLOG_MISSING', 'the policy requires a transparency-log entry and the signature has none');
  }
  const refine = (err: unknown): AgentError | undefined => {
    if (sigstoreErrorCode(err) !== 'CERTIFICATE_ERROR') return undefined;
    const outside = entityTimes(entity).filter((t) => !leaf.validForDate(t));
    if (outside.length === 0) return undefined;
    const forged = entity.tlogEntries.some((e) => e.inclusionPromise !== undefined && !setVerifies(e, trust.tlogs));
    if (forged) {
      return reject('SIGNATURE_BAD_SET', 'the transparency-log promise (SET) does not verify with a trusted log key');
    }
    return reject(
      'SIGNATURE_CERT_EXPIRED',
      `the certificate is valid ${leaf.notBefore.toISOString()} to ${leaf.notAfter.toISOString()}, but it signed at ${outside[0]!.toISOString()}`,
    );
  };
  const signer = runVerifier(
    trust,
    withSignatureHash(entity, signed.data, signed.signature, hash),
    { tlogThreshold: ctx.policy.requireTlog ? 1 : 0, ctlogThreshold: 1, timestampThreshold: 1 },
    'keyless verification',
    refine,
  );
  checkLogEntryKeys(entity, leafKey.export({ type: 'spki', format: 'der' }));
  if (!hasEku(leaf)) throw reject('SIGNATURE_UNTRUSTED_KEY', 'the signing certificate lacks the codeSigning extended key usage');
  const san = signer.identity?.subjectAlternativeName;
  const issuer = signer.identity?.extensions?.issuer;
  if (san === undefined || san === '' || issuer === undefined || issuer === '') {
    throw reject('SIGNATURE_IDENTITY_MISMATCH', 'the certificate has no URI/email SAN or no OIDC issuer extension');
  }
  const ok = ctx.policy.identities.some((id) => id.rule.issuer === issuer && id.matches(san));
  if (!ok) {
    throw reject(
      'SIGNATURE_IDENTITY_MISMATCH',
      `signed by ${san} (issuer ${issuer}), which is not a configured identity: ${ctx.policy.identities.map((i) => i.label).join('; ')}`,
    );
  }
  return { identity: san, issuer, ...logEvidence(entity) };
}

function parseBundle(json: unknown, artifact?: Buffer): { bundle: Bundle; entity: SignedEntity } {
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON(json);
  } catch (err) {
    throw toSignatureError(err, 'not a valid Sigstore bundle');
  }
  const material = bundle.verificationMaterial;
  const evidence = material.tlogEntries.length + (material.timestampVerificationData?.rfc3161Timestamps.length ?? 0);
  if (evidence > MAX_EVIDENCE) {
    throw reject('SIGNATURE_INVALID', `the bundle carries ${evidence} log entries and timestamps, more than ${MAX_EVIDENCE}`);
  }
  let entity: SignedEntity;
  try {
    entity = toSignedEntity(bundle, artifact);
  } catch (err) {
    throw toSignatureError(err, 'cannot read the bundle');
  }
  if (entity.key.$case === 'certificate') {
    const cert = entity.key.certificate;
    try {
      // the parser is lazy: touch what the checks read so a malformed certificate fails here, with a clear message
      void [cert.publicKey, cert.notBefore, cert.notAfter, cert.extensions, cert.subjectAltName, cert.issuer, cert.subject];
    } catch (err) {
      throw toSignatureError(err, 'the signing certificate is malformed');
    }
  }
  return { bundle, entity };
}

function verifySimpleSigning(c: SimpleSigningCandidate, ctx: Ctx): VerifiedSignature {
  if (c.mediaType !== SIMPLE_SIGNING_MEDIA_TYPE) {
    throw reject('SIGNATURE_INVALID', `layer media type ${JSON.stringify(c.mediaType)} is not ${SIMPLE_SIGNING_MEDIA_TYPE}`);
  }
  if (c.payload.byteLength > MAX_PAYLOAD_BYTES) {
    throw reject('SIGNATURE_INVALID', `payload of ${c.payload.byteLength} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte limit`);
  }
  const payload = Buffer.from(c.payload.buffer, c.payload.byteOffset, c.payload.byteLength);
  const annotations = c.annotations ?? {};
  const signature = layerSignature(annotations);
  const certPem = annotations[ANNOTATION_CERTIFICATE];
  const keyless = certPem !== undefined && certPem.trim() !== '';
  let result: Omit<VerifiedSignature, 'digest'>;
  if (keyless) {
    if (ctx.policy.identities.length === 0) {
      throw reject('SIGNATURE_IDENTITY_MISMATCH', 'the signature is keyless (certificate) and no keyless identities are configured');
    }
    const { bundle } = toBundleV01({ payload, annotations }, { hint: KEY_HINT, includeEvidence: true });
    const { entity } = parseBundle(bundle, payload);
    const who = verifyKeyless(ctx, entity, { data: payload, signature });
    result = { kind: 'simple-signing', mode: 'keyless', source: c.source, ...who };
  } else {
    if (ctx.policy.keys.length === 0) {
      throw reject('SIGNATURE_UNTRUSTED_KEY', 'the signature is key-based and the policy pins no public key');
    }
    const found = findVerifyingKey(ctx.policy.keys, payload, signature);
    if (found === undefined) throw noPinnedKey(ctx, payload, signature, claimedKeysFromAnnotation(annotations));
    const trusted = ctx.policy.trust !== undefined;
    const { bundle } = toBundleV01({ payload, annotations }, { hint: KEY_HINT, includeEvidence: trusted });
    const { entity } = parseBundle(bundle, payload);
    const evidence = verifyKeyEvidence(ctx, entity, found, payload, signature);
    result = { kind: 'simple-signing', mode: 'key', source: c.source, keyId: found.key.id, ...evidence };
  }
  const claims = parseSimpleSigningPayload(payload);
  checkSimpleSigningClaims(claims, { allowedDigests: ctx.allowed, requireRepository: ctx.policy.requireRepository });
  return { ...result, digest: claims.manifestDigest };
}

function verifyBundle(c: BundleCandidate, ctx: Ctx): VerifiedSignature {
  const { bundle, entity } = parseBundle(c.bundle);
  if (bundle.content.$case !== 'dsseEnvelope') {
    throw reject('SIGNATURE_INVALID', 'the bundle holds a message signature, not a DSSE in-toto statement (cosign signs images with DSSE)');
  }
  const envelope = bundle.content.dsseEnvelope;
  if (envelope.signatures.length !== 1) {
    throw reject('SIGNATURE_INVALID', `the DSSE envelope has ${envelope.signatures.length} signatures, expected exactly 1`);
  }
  if (envelope.payload.byteLength > MAX_PAYLOAD_BYTES) {
    throw reject('SIGNATURE_INVALID', `DSSE payload of ${envelope.payload.byteLength} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte limit`);
  }
  let result: Omit<VerifiedSignature, 'digest'>;
  const pae = dsse.preAuthEncoding(envelope.payloadType, envelope.payload);
  const signature = Buffer.from(envelope.signatures[0]!.sig);
  if (entity.key.$case === 'certificate') {
    const who = verifyKeyless(ctx, entity, { data: pae, signature });
    result = { kind: 'bundle', mode: 'keyless', source: c.source, ...who };
  } else {
    if (ctx.policy.keys.length === 0) {
      throw reject('SIGNATURE_UNTRUSTED_KEY', 'the bundle is key-signed and the policy pins no public key');
    }
    const found = findVerifyingKey(ctx.policy.keys, pae, signature);
    if (found === undefined) throw noPinnedKey(ctx, pae, signature, claimedKeysFromEntries(entity.tlogEntries));
    const examined = ctx.policy.trust !== undefined ? entity : { ...entity, tlogEntries: [], timestamps: [] };
    const evidence = verifyKeyEvidence(ctx, examined, found, pae, signature);
    result = { kind: 'bundle', mode: 'key', source: c.source, keyId: found.key.id, ...evidence };
  }
  const digest = checkCosignStatement(envelope.payloadType, envelope.payload, ctx.allowed);
  return { ...result, digest };
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

function rejected(source: string, err: unknown, context: string): RejectedSignature {
  const e = toSignatureError(err, context);
  return { source, code: e.code, message: oneLine(e.message) };
}

/**
 * Verify every candidate (at most MAX_CANDIDATES) against the policy. `allowedDigests`: the digests a signature may
 * name (default [c.digest]; the lead adds an index digest when the platform manifest was reached through it).
 * Never throws for a bad signature (it is listed in `rejected` with its code); throws VERIFY_FAILED for an unusable
 * policy.
 */
export function verifySignatures(
  c: SignatureCandidates,
  policy: TrustPolicy,
  opts: { allowedDigests?: string[] } = {},
): VerificationReport {
  const prepared = preparePolicy(policy);
  const ctx: Ctx = { policy: prepared, allowed: opts.allowedDigests ?? [c.digest] };
  const report: VerificationReport = { digest: c.digest, accepted: [], rejected: [] };
  const work: Array<{ source: string; run: () => VerifiedSignature }> = [
    ...(c.bundles ?? []).map((b) => ({ source: b.source, run: () => verifyBundle(b, ctx) })),
    ...(c.simpleSigning ?? []).map((s) => ({ source: s.source, run: () => verifySimpleSigning(s, ctx) })),
  ];
  work.forEach((w, i) => {
    if (i >= MAX_CANDIDATES) {
      report.rejected.push({
        source: w.source,
        code: 'SIGNATURE_INVALID',
        message: `not examined: more than ${MAX_CANDIDATES} signature candidates for ${c.digest}`,
      });
      return;
    }
    try {
      report.accepted.push(w.run());
    } catch (err) {
      report.rejected.push(rejected(w.source, err, 'verification failed'));
    }
  });
  return report;
}

/**
 * The accepted signatures, or an AgentError: SIGNATURE_NOT_FOUND when nothing was found at all, otherwise the code
 * of the rejection that got furthest (errors.ts REJECTION_RANK), with a message naming the image, the digest and
 * each rejected candidate's reason, one line each.
 */
export function requireVerified(report: VerificationReport, imageName: string): VerifiedSignature[] {
  if (report.accepted.length > 0) return report.accepted;
  const where = `${imageName}@${report.digest}`;
  if (report.rejected.length === 0) {
    throw new AgentError(
      'SIGNATURE_NOT_FOUND',
      `${where}: no signature found (no Sigstore bundle referrer, cosign signature referrer or .sig tag)`,
    );
  }
  let best = report.rejected[0]!;
  for (const r of report.rejected) {
    if (rejectionRank(r.code) < rejectionRank(best.code)) best = r;
  }
  const code: ErrorCode = (REJECTION_RANK as readonly string[]).includes(best.code) ? (best.code as ErrorCode) : 'SIGNATURE_INVALID';
  const lines = report.rejected.map((r) => `  - ${r.source}: ${r.code}: ${oneLine(r.message)}`);
  throw new AgentError(
    code,
    // The first line names the decisive check (a CLI prints only it); every rejected candidate follows.
    `${where}: ${oneLine(best.message)} (${report.rejected.length} signature${report.rejected.length === 1 ? '' : 's'} rejected)\n${lines.join('\n')}`,
  );
}
