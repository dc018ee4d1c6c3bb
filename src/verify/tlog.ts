/**
 * Transparency-log checks @sigstore/verify does not make (PURE).
 *
 * - `logEntrySignerKeys`: the public keys a Rekor entry body names for the signer. cosign compares that key with the
 *   verifying key (`comparePublicKey`); sigstore-js compares only the signature and digest. Understood bodies:
 *   hashedrekord 0.0.1 (`spec.signature.publicKey.content`), dsse 0.0.1 (`spec.signatures[].verifier`), intoto 0.0.1
 *   (`spec.publicKey`) and 0.0.2 (`spec.content.envelope.signatures[].publicKey`), and the Rekor v2 hashedrekord/dsse
 *   0.0.2 (`verifier.publicKey.rawBytes` or `verifier.x509Certificate.rawBytes`). Keys are returned as DER SPKI.
 * - `setVerifies`: the inclusion promise (SET) of one entry, checked exactly as sigstore-js does, used to tell a forged
 *   `integratedTime` (bad SET) from a certificate used outside its validity.
 */
import { X509Certificate, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { json } from '@sigstore/core';
import type { RekorBody } from './adapter.ts';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function get(obj: unknown, ...path: string[]): unknown {
  let cur: unknown = obj;
  for (const p of path) {
    if (!isObject(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

/** base64(PEM of a key or certificate) -> DER SPKI; undefined when it is neither. */
function spkiFromB64Pem(value: unknown): Buffer | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    const pem = Buffer.from(value, 'base64').toString('utf8');
    if (!pem.includes('-----BEGIN ')) return undefined;
    return createPublicKey(pem).export({ type: 'spki', format: 'der' });
  } catch {
    return undefined;
  }
}

/** Rekor v2 verifier {publicKey:{rawBytes}} | {x509Certificate:{rawBytes}} -> DER SPKI. */
function spkiFromV2Verifier(verifier: unknown): Buffer | undefined {
  try {
    const key = get(verifier, 'publicKey', 'rawBytes');
    if (typeof key === 'string') {
      return createPublicKey({ key: Buffer.from(key, 'base64'), format: 'der', type: 'spki' }).export({ type: 'spki', format: 'der' });
    }
    const cert = get(verifier, 'x509Certificate', 'rawBytes');
    if (typeof cert === 'string') {
      return new X509Certificate(Buffer.from(cert, 'base64')).publicKey.export({ type: 'spki', format: 'der' });
    }
  } catch {
    return undefined;
  }
  return undefined;
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** The signer keys (DER SPKI) a Rekor entry body names; undefined for a body kind this code does not understand. */
export function logEntrySignerKeys(body: RekorBody): Buffer[] | undefined {
  const spec = body.json['spec'];
  const keys: Array<Buffer | undefined> = [];
  const kv = `${body.kind}/${body.apiVersion}`;
  switch (kv) {
    case 'hashedrekord/0.0.1':
      keys.push(spkiFromB64Pem(get(spec, 'signature', 'publicKey', 'content')));
      break;
    case 'dsse/0.0.1':
      for (const s of list(get(spec, 'signatures'))) keys.push(spkiFromB64Pem(get(s, 'verifier')));
      break;
    case 'intoto/0.0.1':
      keys.push(spkiFromB64Pem(get(spec, 'publicKey')));
      break;
    case 'intoto/0.0.2':
      for (const s of list(get(spec, 'content', 'envelope', 'signatures'))) keys.push(spkiFromB64Pem(get(s, 'publicKey')));
      break;
    case 'hashedrekord/0.0.2':
      keys.push(spkiFromV2Verifier(get(spec, 'hashedRekordV002', 'signature', 'verifier')));
      break;
    case 'dsse/0.0.2':
      for (const s of list(get(spec, 'dsseV002', 'signatures'))) keys.push(spkiFromV2Verifier(get(s, 'verifier')));
      break;
    default:
      return undefined;
  }
  return keys.filter((k): k is Buffer => k !== undefined);
}

/** One trusted log as @sigstore/verify's trust material holds it. */
export interface LogAuthority {
  logID: Buffer;
  publicKey: KeyObject;
  validFor: { start: Date; end: Date };
}

/** A tlog entry as @sigstore/bundle decodes it (the fields the SET covers). */
export interface LogEntryForSet {
  logIndex: string;
  logId: { keyId: Buffer };
  integratedTime: string;
  canonicalizedBody: Buffer;
  inclusionPromise?: { signedEntryTimestamp: Buffer } | undefined;
}

/** True when the entry's SET verifies with a trusted log valid at its integratedTime (sigstore-js `verifyTLogSET`). */
export function setVerifies(entry: LogEntryForSet, logs: readonly LogAuthority[]): boolean {
  const promise = entry.inclusionPromise;
  if (promise === undefined) return false;
  const when = new Date(Number(entry.integratedTime) * 1000);
  const data = Buffer.from(
    json.canonicalize({
      body: entry.canonicalizedBody.toString('base64'),
      integratedTime: Number(entry.integratedTime),
      logIndex: Number(entry.logIndex),
      logID: entry.logId.keyId.toString('hex'),
    }),
    'utf8',
  );
  return logs.some((log) => {
    if (!log.logID.equals(entry.logId.keyId) || log.validFor.start > when || when > log.validFor.end) return false;
    try {
      return verify(undefined, data, log.publicKey, promise.signedEntryTimestamp);
    } catch {
      return false;
    }
  });
}
