/**
 * Pinned public keys (PURE): parsing a policy key and checking a raw signature with it (spec/sigstore.md section 2).
 *
 * Decisions:
 * - Exactly one PEM block labelled `PUBLIC KEY` (PKIX SPKI, what `cosign generate-key-pair` writes) or `RSA PUBLIC KEY`
 *   (PKCS#1), as cosign's cryptoutils accepts. Node would silently take a `CERTIFICATE` as a key: refused here, so a
 *   certificate file is never mistaken for a pinned key.
 * - Accepted key types: ECDSA P-256 (SHA-256), ECDSA P-384 (SHA-384, and SHA-256 since cosign before "auto-detect
 *   digest" hashed with SHA-256 for every key), RSA >= 2048 bits with PKCS#1 v1.5 and SHA-256. Anything else (P-521,
 *   Ed25519 - cosign signs Ed25519ph, which Node cannot verify -, RSA-PSS, short RSA) is refused with VERIFY_FAILED.
 * - ECDSA signatures are ASN.1 DER (r,s), as cosign writes them.
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { AgentError } from '../model/errors.ts';

export type PinnedKeyKind = 'p256' | 'p384' | 'rsa';
export type SignatureHash = 'sha256' | 'sha384';

export interface PinnedKey {
  id: string;
  kind: PinnedKeyKind;
  key: KeyObject;
  /** DER SubjectPublicKeyInfo, for comparing with keys named in transparency-log entries. */
  spki: Buffer;
}

const PEM_BLOCK_RE = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)\r?\n?-----END \1-----/g;

/** The PEM blocks of a text, label and DER bytes, in order. Text outside the blocks is ignored. */
export function pemBlocks(text: string): Array<{ label: string; der: Buffer }> {
  const blocks: Array<{ label: string; der: Buffer }> = [];
  for (const m of text.matchAll(PEM_BLOCK_RE)) {
    blocks.push({ label: m[1] ?? '', der: Buffer.from((m[2] ?? '').replace(/\s+/g, ''), 'base64') });
  }
  return blocks;
}

function keyError(id: string, message: string, cause?: unknown): AgentError {
  return new AgentError('VERIFY_FAILED', `public key ${JSON.stringify(id)}: ${message}`, { cause });
}

/** Classify a public key; undefined when its type is not accepted. */
export function keyKind(key: KeyObject): PinnedKeyKind | undefined {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    if (details.namedCurve === 'prime256v1') return 'p256';
    if (details.namedCurve === 'secp384r1') return 'p384';
    return undefined;
  }
  if (key.asymmetricKeyType === 'rsa' && (details.modulusLength ?? 0) >= 2048) return 'rsa';
  return undefined;
}

function describeKey(key: KeyObject): string {
  const d = key.asymmetricKeyDetails ?? {};
  return [key.asymmetricKeyType, d.namedCurve, d.modulusLength !== undefined ? `${d.modulusLength} bits` : undefined]
    .filter((x) => x !== undefined)
    .join(' ');
}

/** Parse a policy key; throws VERIFY_FAILED naming the key id and what is wrong with it. */
export function parsePinnedKey(entry: { id: string; pem: string }): PinnedKey {
  const blocks = pemBlocks(entry.pem);
  if (blocks.length !== 1) {
    throw keyError(entry.id, `expected exactly one PEM block, found ${blocks.length}`);
  }
  const block = blocks[0]!;
  if (block.label !== 'PUBLIC KEY' && block.label !== 'RSA PUBLIC KEY') {
    throw keyError(entry.id, `PEM block is "${block.label}", expected "PUBLIC KEY" or "RSA PUBLIC KEY"`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: block.der, format: 'der', type: block.label === 'PUBLIC KEY' ? 'spki' : 'pkcs1' });
  } catch (err) {
    throw keyError(entry.id, `cannot parse the key: ${(err as Error).message}`, err);
  }
  const kind = keyKind(key);
  if (kind === undefined) {
    throw keyError(entry.id, `unsupported key type ${describeKey(key)} (accepted: ECDSA P-256, ECDSA P-384, RSA >= 2048 bits)`);
  }
  return { id: entry.id, kind, key, spki: key.export({ type: 'spki', format: 'der' }) };
}

/** The hashes tried for a key kind, preferred first. */
export function hashesFor(kind: PinnedKeyKind): SignatureHash[] {
  return kind === 'p384' ? ['sha384', 'sha256'] : ['sha256'];
}

/** Verify a raw signature over data with a key; returns the hash that verified, or undefined. Never throws. */
export function verifyRaw(kind: PinnedKeyKind, key: KeyObject, data: Uint8Array, signature: Uint8Array): SignatureHash | undefined {
  for (const hash of hashesFor(kind)) {
    try {
      if (verify(hash, data, key, signature)) return hash;
    } catch {
      // malformed signature bytes: not a match
    }
  }
  return undefined;
}

/** The first pinned key whose signature check passes, with the hash used. */
export function findVerifyingKey(
  keys: readonly PinnedKey[],
  data: Uint8Array,
  signature: Uint8Array,
): { key: PinnedKey; hash: SignatureHash } | undefined {
  for (const key of keys) {
    const hash = verifyRaw(key.kind, key.key, data, signature);
    if (hash !== undefined) return { key, hash };
  }
  return undefined;
}

/** A short fingerprint for messages: sha256 of the DER SPKI, first 16 hex digits. */
export function fingerprint(spki: Uint8Array): string {
  return createHash('sha256').update(spki).digest('hex').slice(0, 16);
}
