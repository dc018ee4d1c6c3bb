/**
 * Test signing toolkit: makes cosign / Sigstore signatures with node:crypto alone, in the exact formats cosign and
 * the public-good services produce (spec/sigstore.md sections 1, 3.4 and 6). Registry-agnostic: it returns what
 * to push (test/helpers/sign-push.ts pushes it).
 *
 * - keys: `makeKeyPair('p256' | 'p384' | 'rsa')`, `signBytes` (ECDSA DER, RSA PKCS#1 v1.5).
 * - simple signing: `simpleSigningPayload` (Go json.Marshal bytes), `signSimpleSigning` -> {payload, annotations}
 *   with the cosign annotation keys, an optional certificate/chain and an optional Rekor `dev.sigstore.cosign/bundle`.
 * - a Rekor-like log (`makeTlog`): SETs over the canonical {body, integratedTime, logID, logIndex}, an RFC 6962
 *   Merkle tree with inclusion proofs and signed checkpoints (the note format @sigstore/verify reads).
 * - a Fulcio-like CA (`makeCA`) issuing back-datable leaves with Fulcio's extensions, and a CT log (`makeCTLog`)
 *   whose SCT is embedded as the last extension; a small DER builder does the encoding.
 * - `makeTrustedRoot`: the TrustedRoot JSON for those (no timestamp authority: RFC 3161 is not implemented here).
 * - `signBundleV03`: a Sigstore bundle v0.3 with a DSSE in-toto statement (cosign v3 `cosign sign`).
 * - conveniences for integration tests: `makeSigstoreWorld`, `signImageWithKey`, `signImageKeyless`.
 */
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';

// ---------------------------------------------------------------------------------------------------------------
// keys

export type KeyKind = 'p256' | 'p384' | 'rsa';
export type Hash = 'sha256' | 'sha384';

export interface KeyPair {
  kind: KeyKind;
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** PEM `PUBLIC KEY` (what `cosign generate-key-pair` writes to cosign.pub). */
  publicPem: string;
  /** DER SubjectPublicKeyInfo. */
  spki: Buffer;
}

export function makeKeyPair(kind: KeyKind = 'p256'): KeyPair {
  const { privateKey, publicKey } =
    kind === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: kind === 'p256' ? 'P-256' : 'P-384' });
  return {
    kind,
    privateKey,
    publicKey,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    spki: publicKey.export({ type: 'spki', format: 'der' }),
  };
}

/** The hash cosign signs with for a key kind. */
export function defaultHash(kind: KeyKind): Hash {
  return kind === 'p384' ? 'sha384' : 'sha256';
}

/** Sign bytes: ECDSA (DER r,s) or RSA PKCS#1 v1.5. */
export function signBytes(key: KeyPair, data: Uint8Array, hash: Hash = defaultHash(key.kind)): Buffer {
  return sign(hash, data, key.privateKey);
}

const sha256 = (b: Uint8Array | string): Buffer => createHash('sha256').update(b).digest();
const b64 = (b: Uint8Array | string): string => Buffer.from(b).toString('base64');

/** PEM of DER bytes. */
export function toPem(label: string, der: Uint8Array): string {
  const lines = b64(der).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

// ---------------------------------------------------------------------------------------------------------------
// JSON as the producers write it

/** Go encoding/json string escaping (HTML-safe: <, >, & and U+2028/9 as \u escapes). */
function goString(s: string): string {
  return JSON.stringify(s).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Go json.Marshal of a map[string]interface{} of strings/numbers/booleans (keys sorted). */
function goMap(m: Record<string, string | number | boolean>): string {
  const parts = Object.keys(m)
    .sort()
    .map((k) => {
      const v = m[k]!;
      return `${goString(k)}:${typeof v === 'string' ? goString(v) : String(v)}`;
    });
  return `{${parts.join(',')}}`;
}

/** RFC 8785 canonical JSON (sorted keys, no whitespace) of plain data. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => canonicalJson(x)).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
    .join(',')}}`;
}

/**
 * The simple-signing payload exactly as cosign (sigstore/sigstore payload.go, Go json.Marshal) writes it.
 * `optional` null (default) gives `"optional":null`; an object gives its keys sorted.
 */
export function simpleSigningPayload(repo: string, digest: string, optional: Record<string, string | number | boolean> | null = null): Buffer {
  return Buffer.from(
    `{"critical":{"identity":{"docker-reference":${goString(repo)}},"image":{"docker-manifest-digest":${goString(digest)}},` +
      `"type":"cosign container image signature"},"optional":${optional === null ? 'null' : goMap(optional)}}`,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// DER builder (minimal: what certificates need)

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, content: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([tag]), derLength(content.length), content]);
}

export const der = {
  seq: (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items)),
  set: (...items: Buffer[]): Buffer => tlv(0x31, Buffer.concat(items)),
  bool: (v: boolean): Buffer => tlv(0x01, Buffer.from([v ? 0xff : 0x00])),
  null: (): Buffer => Buffer.from([0x05, 0x00]),
  int: (v: bigint | number | Uint8Array): Buffer => {
    let bytes: Buffer;
    if (typeof v === 'bigint' || typeof v === 'number') {
      let hex = BigInt(v).toString(16);
      if (hex.length % 2 === 1) hex = `0${hex}`;
      bytes = Buffer.from(hex, 'hex');
    } else {
      bytes = Buffer.from(v);
    }
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0 && (bytes[i + 1]! & 0x80) === 0) i++;
    bytes = bytes.subarray(i);
    if ((bytes[0]! & 0x80) !== 0) bytes = Buffer.concat([Buffer.from([0]), bytes]);
    return tlv(0x02, bytes);
  },
  oid: (dotted: string): Buffer => {
    const arcs = dotted.split('.').map((a) => BigInt(a));
    const out: number[] = [];
    const push = (n: bigint): void => {
      const chunk: number[] = [Number(n & 0x7fn)];
      for (let v = n >> 7n; v > 0n; v >>= 7n) chunk.unshift(Number((v & 0x7fn) | 0x80n));
      out.push(...chunk);
    };
    push(arcs[0]! * 40n + arcs[1]!);
    for (const a of arcs.slice(2)) push(a);
    return tlv(0x06, Buffer.from(out));
  },
  utf8: (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8')),
  octet: (b: Uint8Array): Buffer => tlv(0x04, b),
  bitString: (b: Uint8Array, unusedBits = 0): Buffer => tlv(0x03, Buffer.concat([Buffer.from([unusedBits]), b])),
  /** UTCTime for 1950-2049, GeneralizedTime otherwise (RFC 5280 4.1.2.5). */
  time: (d: Date): Buffer => {
    const iso = d.toISOString();
    const y = d.getUTCFullYear();
    const body = `${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
    return y >= 1950 && y < 2050 ? tlv(0x17, Buffer.from(`${String(y).slice(2)}${body}`)) : tlv(0x18, Buffer.from(`${y}${body}`));
  },
  /** [n] EXPLICIT (constructed context tag). */
  explicit: (n: number, content: Buffer): Buffer => tlv(0xa0 | n, content),
  /** [n] IMPLICIT primitive. */
  implicit: (n: number, bytes: Uint8Array): Buffer => tlv(0x80 | n, bytes),
};

const OID = {
  ecdsaSha256: '1.2.840.10045.4.3.2',
  ecdsaSha384: '1.2.840.10045.4.3.3',
  rsaSha256: '1.2.840.113549.1.1.11',
  organization: '2.5.4.10',
  commonName: '2.5.4.3',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  subjectKeyId: '2.5.29.14',
  authorityKeyId: '2.5.29.35',
  subjectAltName: '2.5.29.17',
  fulcioIssuerV1: '1.3.6.1.4.1.57264.1.1',
  fulcioIssuerV2: '1.3.6.1.4.1.57264.1.8',
  sct: '1.3.6.1.4.1.11129.2.4.2',
};

function sigAlgorithm(key: KeyPair): { der: Buffer; hash: Hash } {
  if (key.kind === 'rsa') return { der: der.seq(der.oid(OID.rsaSha256), der.null()), hash: 'sha256' };
  if (key.kind === 'p384') return { der: der.seq(der.oid(OID.ecdsaSha384)), hash: 'sha384' };
  return { der: der.seq(der.oid(OID.ecdsaSha256)), hash: 'sha256' };
}

function name(organization: string, commonName: string): Buffer {
  return der.seq(
    der.set(der.seq(der.oid(OID.organization), der.utf8(organization))),
    der.set(der.seq(der.oid(OID.commonName), der.utf8(commonName))),
  );
}

function extension(oid: string, critical: boolean, value: Buffer): Buffer {
  return der.seq(der.oid(oid), ...(critical ? [der.bool(true)] : []), der.octet(value));
}

/** A subject key identifier: sha1-like 20 bytes, with byte 1 forced so the bytes never parse as nested DER (the
 *  SCT check re-encodes the TBS; a value that happened to parse with a non-minimal length would change). */
function keyIdentifier(spki: Buffer): Buffer {
  const id = createHash('sha1').update(spki).digest();
  id[1] = 0x7f;
  return id;
}

function randomSerial(): Buffer {
  const s = randomBytes(16);
  s[0] = (s[0]! & 0x7f) | 0x01;
  return s;
}

function tbsCertificate(opts: {
  serial: Buffer;
  signer: KeyPair;
  issuer: Buffer;
  notBefore: Date;
  notAfter: Date;
  subject: Buffer;
  spki: Buffer;
  extensions: Buffer[];
}): Buffer {
  return der.seq(
    der.explicit(0, der.int(2)),
    der.int(opts.serial),
    sigAlgorithm(opts.signer).der,
    opts.issuer,
    der.seq(der.time(opts.notBefore), der.time(opts.notAfter)),
    opts.subject,
    opts.spki,
    der.explicit(3, der.seq(...opts.extensions)),
  );
}

function signCertificate(tbs: Buffer, signer: KeyPair): Buffer {
  const alg = sigAlgorithm(signer);
  return der.seq(tbs, alg.der, der.bitString(sign(alg.hash, tbs, signer.privateKey)));
}

// ---------------------------------------------------------------------------------------------------------------
// CT log, CA and leaves

export interface CTLog {
  keyPair: KeyPair;
  /** sha256 of the DER SPKI: the SCT log id. */
  logId: Buffer;
}

export function makeCTLog(keyPair: KeyPair = makeKeyPair('p256')): CTLog {
  return { keyPair, logId: sha256(keyPair.spki) };
}

export type SubjectAltName = { email: string } | { uri: string };

export interface LeafOptions {
  san: SubjectAltName;
  /** OIDC issuer, written both as the raw 1.1 and the UTF8String 1.8 extension. */
  issuer: string;
  notBefore: Date;
  notAfter: Date;
  /** The CT log signing the embedded SCT (required unless `sct: false`). */
  ctLog?: CTLog;
  /** Include EKU codeSigning (default true). */
  eku?: boolean;
  /** Embed an SCT (default true). */
  sct?: boolean;
  /** The leaf key (default: a fresh P-256 key). */
  keyPair?: KeyPair;
  /** SCT timestamp (default notBefore). */
  sctTime?: Date;
}

export interface Leaf {
  keyPair: KeyPair;
  cert: Buffer;
  certPem: string;
}

export interface CA {
  keyPair: KeyPair;
  cert: Buffer;
  certPem: string;
  organization: string;
  commonName: string;
  notBefore: Date;
  notAfter: Date;
  issueLeaf(opts: LeafOptions): Leaf;
}

/** A self-signed P-256 root CA (basicConstraints CA, keyUsage certSign|crlSign, SKI/AKI), back-datable. */
export function makeCA(opts: { notBefore?: Date; notAfter?: Date; organization?: string; commonName?: string } = {}): CA {
  const keyPair = makeKeyPair('p256');
  const notBefore = opts.notBefore ?? new Date('2020-01-01T00:00:00Z');
  const notAfter = opts.notAfter ?? new Date('2040-01-01T00:00:00Z');
  const organization = opts.organization ?? 'sigstore.test';
  const commonName = opts.commonName ?? `test-fulcio-${randomBytes(4).toString('hex')}`;
  const subject = name(organization, commonName);
  const ski = keyIdentifier(keyPair.spki);
  const tbs = tbsCertificate({
    serial: randomSerial(),
    signer: keyPair,
    issuer: subject,
    notBefore,
    notAfter,
    subject,
    spki: keyPair.spki,
    extensions: [
      extension(OID.keyUsage, true, der.bitString(Buffer.from([0x06]), 1)),
      extension(OID.basicConstraints, true, der.seq(der.bool(true))),
      extension(OID.subjectKeyId, false, der.octet(ski)),
      extension(OID.authorityKeyId, false, der.seq(der.implicit(0, ski))),
    ],
  });
  const cert = signCertificate(tbs, keyPair);
  const ca: CA = {
    keyPair,
    cert,
    certPem: toPem('CERTIFICATE', cert),
    organization,
    commonName,
    notBefore,
    notAfter,
    issueLeaf(leafOpts: LeafOptions): Leaf {
      const leafKey = leafOpts.keyPair ?? makeKeyPair('p256');
      const san = 'email' in leafOpts.san ? der.implicit(1, Buffer.from(leafOpts.san.email)) : der.implicit(6, Buffer.from(leafOpts.san.uri));
      const exts = [
        extension(OID.keyUsage, true, der.bitString(Buffer.from([0x80]), 7)),
        ...(leafOpts.eku === false ? [] : [extension(OID.extKeyUsage, false, der.seq(der.oid(OID.codeSigning)))]),
        extension(OID.subjectKeyId, false, der.octet(keyIdentifier(leafKey.spki))),
        extension(OID.authorityKeyId, false, der.seq(der.implicit(0, ski))),
        extension(OID.subjectAltName, true, der.seq(san)),
        extension(OID.fulcioIssuerV1, false, Buffer.from(leafOpts.issuer, 'utf8')),
        extension(OID.fulcioIssuerV2, false, der.utf8(leafOpts.issuer)),
      ];
      const base = {
        serial: randomSerial(),
        signer: keyPair,
        issuer: subject,
        notBefore: leafOpts.notBefore,
        notAfter: leafOpts.notAfter,
        subject: der.seq(),
        spki: leafKey.spki,
      };
      if (leafOpts.sct !== false) {
        const ct = leafOpts.ctLog;
        if (ct === undefined) throw new Error('issueLeaf: an SCT needs ctLog (or pass sct: false)');
        // RFC 6962 3.2: the precertificate TBS is the TBS without the SCT extension.
        const precertTbs = tbsCertificate({ ...base, extensions: exts });
        const ts = Buffer.alloc(8);
        ts.writeBigUInt64BE(BigInt((leafOpts.sctTime ?? leafOpts.notBefore).getTime()));
        const signed = Buffer.concat([
          Buffer.from([0x00, 0x00]), // version v1, signature_type certificate_timestamp
          ts,
          Buffer.from([0x00, 0x01]), // entry_type precert_entry
          sha256(keyPair.spki), // issuer_key_hash
          u24(precertTbs.length),
          precertTbs,
          Buffer.from([0x00, 0x00]), // extensions
        ]);
        const sig = sign('sha256', signed, ct.keyPair.privateKey);
        const sctBytes = Buffer.concat([Buffer.from([0x00]), ct.logId, ts, Buffer.from([0x00, 0x00, 0x04, 0x03]), u16(sig.length), sig]);
        const list = Buffer.concat([u16(sctBytes.length + 2), u16(sctBytes.length), sctBytes]);
        exts.push(extension(OID.sct, false, der.octet(list)));
      }
      const leafCert = signCertificate(tbsCertificate({ ...base, extensions: exts }), keyPair);
      return { keyPair: leafKey, cert: leafCert, certPem: toPem('CERTIFICATE', leafCert) };
    },
  };
  return ca;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u24(n: number): Buffer {
  return Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
}

// ---------------------------------------------------------------------------------------------------------------
// Rekor-like transparency log

/** cosign's RekorBundle annotation (field names as Go writes them). */
export interface RekorBundleJson {
  SignedEntryTimestamp: string;
  Payload: { body: string; integratedTime: number; logIndex: number; logID: string };
}

/** A Sigstore bundle tlog entry (protobuf JSON). */
export interface TlogEntryJson {
  logIndex: string;
  logId: { keyId: string };
  kindVersion: { kind: string; version: string };
  integratedTime: string;
  inclusionPromise?: { signedEntryTimestamp: string };
  inclusionProof?: { logIndex: string; rootHash: string; treeSize: string; hashes: string[]; checkpoint: { envelope: string } };
  canonicalizedBody: string;
}

export interface Tlog {
  keyPair: KeyPair;
  /** hex sha256 of the DER SPKI (as in the cosign annotation). */
  logId: string;
  logIdBytes: Buffer;
  baseUrl: string;
  /** Checkpoint origin line. */
  origin: string;
  /** Leaves appended so far. */
  readonly size: number;
  /** The SET over a body (does not append to the tree): the `dev.sigstore.cosign/bundle` annotation object. */
  sign(entryBody: Uint8Array | string, integratedTime: number, logIndex: number): RekorBundleJson;
  /** Append a body to the Merkle tree and return a bundle tlog entry with inclusion proof + signed checkpoint, and
   *  (unless `promise: false`) a SET. */
  append(entryBody: Uint8Array | string, opts: { kind: string; version: string; integratedTime: number; promise?: boolean }): TlogEntryJson;
}

function leafHash(data: Uint8Array): Buffer {
  return createHash('sha256').update(Buffer.from([0x00])).update(data).digest();
}

function nodeHash(left: Buffer, right: Buffer): Buffer {
  return createHash('sha256').update(Buffer.from([0x01])).update(left).update(right).digest();
}

function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** RFC 6962 2.1 Merkle tree hash of leaf hashes. */
function merkleRoot(leaves: readonly Buffer[]): Buffer {
  if (leaves.length === 0) return sha256('');
  if (leaves.length === 1) return leaves[0]!;
  const k = largestPowerOfTwoBelow(leaves.length);
  return nodeHash(merkleRoot(leaves.slice(0, k)), merkleRoot(leaves.slice(k)));
}

/** RFC 6962 2.1.1 audit path (bottom to top). */
function merklePath(m: number, leaves: readonly Buffer[]): Buffer[] {
  if (leaves.length <= 1) return [];
  const k = largestPowerOfTwoBelow(leaves.length);
  return m < k
    ? [...merklePath(m, leaves.slice(0, k)), merkleRoot(leaves.slice(k))]
    : [...merklePath(m - k, leaves.slice(k)), merkleRoot(leaves.slice(0, k))];
}

/** A Rekor-like log with a P-256 key. `baseUrl`'s host is the checkpoint signer name (it must be a substring of the
 *  trusted root's baseUrl for @sigstore/verify to use the key). */
export function makeTlog(opts: { baseUrl?: string; keyPair?: KeyPair } = {}): Tlog {
  const keyPair = opts.keyPair ?? makeKeyPair('p256');
  const logIdBytes = sha256(keyPair.spki);
  const baseUrl = opts.baseUrl ?? `https://rekor-${randomBytes(3).toString('hex')}.test`;
  const host = new URL(baseUrl).host;
  const origin = `${host} - ${BigInt(`0x${randomBytes(7).toString('hex')}`).toString()}`;
  const leaves: Buffer[] = [];
  const setFor = (body: Buffer, integratedTime: number, logIndex: number): string =>
    b64(
      sign(
        'sha256',
        Buffer.from(canonicalJson({ body: b64(body), integratedTime, logID: logIdBytes.toString('hex'), logIndex })),
        keyPair.privateKey,
      ),
    );
  return {
    keyPair,
    logId: logIdBytes.toString('hex'),
    logIdBytes,
    baseUrl,
    origin,
    get size(): number {
      return leaves.length;
    },
    sign(entryBody, integratedTime, logIndex) {
      const body = Buffer.from(entryBody);
      return {
        SignedEntryTimestamp: setFor(body, integratedTime, logIndex),
        Payload: { body: b64(body), integratedTime, logIndex, logID: logIdBytes.toString('hex') },
      };
    },
    append(entryBody, o) {
      const body = Buffer.from(entryBody);
      const index = leaves.length;
      leaves.push(leafHash(body));
      const root = merkleRoot(leaves);
      const note = `${origin}\n${leaves.length}\n${b64(root)}\n`;
      const noteSig = sign('sha256', Buffer.from(note), keyPair.privateKey);
      const envelope = `${note}\n\u2014 ${host} ${b64(Buffer.concat([logIdBytes.subarray(0, 4), noteSig]))}\n`;
      return {
        logIndex: String(index),
        logId: { keyId: b64(logIdBytes) },
        kindVersion: { kind: o.kind, version: o.version },
        integratedTime: String(o.integratedTime),
        ...(o.promise === false ? {} : { inclusionPromise: { signedEntryTimestamp: setFor(body, o.integratedTime, index) } }),
        inclusionProof: {
          logIndex: String(index),
          rootHash: b64(root),
          treeSize: String(leaves.length),
          hashes: merklePath(index, leaves).map((h) => b64(h)),
          checkpoint: { envelope },
        },
        canonicalizedBody: b64(body),
      };
    },
  };
}

/** Canonical hashedrekord v0.0.1 body (what cosign uploads for an image signature). `publicKeyPem` is the PEM of the
 *  signing key or certificate (stored as base64 of the PEM). */
export function hashedRekordBody(opts: { payload: Uint8Array; signature: Uint8Array; publicKeyPem: string; hash?: Hash }): Buffer {
  const hash = opts.hash ?? 'sha256';
  return Buffer.from(
    canonicalJson({
      apiVersion: '0.0.1',
      kind: 'hashedrekord',
      spec: {
        data: { hash: { algorithm: hash, value: createHash(hash).update(opts.payload).digest('hex') } },
        signature: { content: b64(opts.signature), publicKey: { content: b64(opts.publicKeyPem) } },
      },
    }),
  );
}

/** Canonical dsse v0.0.1 body for a DSSE envelope (Rekor v1, what cosign v3 uploads for a bundle). */
export function dsseRekordBody(opts: { envelopeJson: string; payload: Uint8Array; signature: Uint8Array; publicKeyPem: string }): Buffer {
  return Buffer.from(
    canonicalJson({
      apiVersion: '0.0.1',
      kind: 'dsse',
      spec: {
        envelopeHash: { algorithm: 'sha256', value: sha256(opts.envelopeJson).toString('hex') },
        payloadHash: { algorithm: 'sha256', value: sha256(opts.payload).toString('hex') },
        signatures: [{ signature: b64(opts.signature), verifier: b64(opts.publicKeyPem) }],
      },
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// trusted root

function keyDetails(key: KeyPair): string {
  if (key.kind === 'rsa') return 'PKIX_RSA_PKCS1V15_2048_SHA256';
  return key.kind === 'p384' ? 'PKIX_ECDSA_P384_SHA_384' : 'PKIX_ECDSA_P256_SHA_256';
}

export interface TrustedRootJson {
  mediaType: string;
  tlogs: unknown[];
  certificateAuthorities: unknown[];
  ctlogs: unknown[];
  timestampAuthorities: unknown[];
}

/** The TrustedRoot JSON (spec/sigstore.md 3.4) for self-made CAs and logs. Logs are valid from `validFrom`
 *  (default 2000-01-01); a CA from its notBefore (with an end only when `caValidUntil` is given). */
export function makeTrustedRoot(opts: {
  ca?: CA | CA[];
  tlog?: Tlog | Tlog[];
  ctlog?: CTLog | CTLog[];
  validFrom?: Date;
  caValidUntil?: Date;
}): TrustedRootJson {
  const arr = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
  const start = (opts.validFrom ?? new Date('2000-01-01T00:00:00Z')).toISOString();
  return {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: arr(opts.tlog).map((t) => ({
      baseUrl: t.baseUrl,
      hashAlgorithm: 'SHA2_256',
      publicKey: { rawBytes: b64(t.keyPair.spki), keyDetails: keyDetails(t.keyPair), validFor: { start } },
      logId: { keyId: b64(t.logIdBytes) },
    })),
    certificateAuthorities: arr(opts.ca).map((ca) => ({
      subject: { organization: ca.organization, commonName: ca.commonName },
      uri: 'https://fulcio.test',
      certChain: { certificates: [{ rawBytes: b64(ca.cert) }] },
      validFor: {
        start: ca.notBefore.toISOString(),
        ...(opts.caValidUntil !== undefined ? { end: opts.caValidUntil.toISOString() } : {}),
      },
    })),
    ctlogs: arr(opts.ctlog).map((c) => ({
      baseUrl: 'https://ctfe.test',
      hashAlgorithm: 'SHA2_256',
      publicKey: { rawBytes: b64(c.keyPair.spki), keyDetails: keyDetails(c.keyPair), validFor: { start } },
      logId: { keyId: b64(c.logId) },
    })),
    timestampAuthorities: [],
  };
}

// ---------------------------------------------------------------------------------------------------------------
// cosign legacy (simple signing) signatures

export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const ANNOTATIONS = {
  signature: 'dev.cosignproject.cosign/signature',
  certificate: 'dev.sigstore.cosign/certificate',
  chain: 'dev.sigstore.cosign/chain',
  bundle: 'dev.sigstore.cosign/bundle',
  rfc3161: 'dev.sigstore.cosign/rfc3161timestamp',
} as const;

/** One signed simple-signing layer, as pushed (compatible with sign-push.ts SignatureLayer). */
export interface SignedLayer {
  payload: Buffer;
  annotations: Record<string, string>;
  mediaType: string;
}

/**
 * Sign a simple-signing payload the way `cosign sign` (legacy layout) does. Key mode: `key`. Keyless: `leaf` (its
 * key signs; the certificate and `chainPem` go into the annotations). With `tlog`, a hashedrekord entry is made
 * and its SET goes into `dev.sigstore.cosign/bundle`; `rekorKeyPem` overrides the key the Rekor body names.
 */
export function signSimpleSigning(opts: {
  payload?: Buffer;
  repo?: string;
  digest?: string;
  optional?: Record<string, string | number | boolean> | null;
  key?: KeyPair;
  leaf?: Leaf;
  chainPem?: string;
  hash?: Hash;
  tlog?: Tlog;
  integratedTime?: number;
  logIndex?: number;
  rekorKeyPem?: string;
}): SignedLayer {
  const payload =
    opts.payload ??
    simpleSigningPayload(opts.repo ?? 'registry.test/os', opts.digest ?? `sha256:${'0'.repeat(64)}`, opts.optional ?? null);
  const key = opts.leaf?.keyPair ?? opts.key;
  if (key === undefined) throw new Error('signSimpleSigning: pass key or leaf');
  const hash = opts.hash ?? defaultHash(key.kind);
  const signature = signBytes(key, payload, hash);
  const annotations: Record<string, string> = { [ANNOTATIONS.signature]: b64(signature) };
  if (opts.leaf !== undefined) {
    annotations[ANNOTATIONS.certificate] = opts.leaf.certPem;
    annotations[ANNOTATIONS.chain] = opts.chainPem ?? '';
  }
  if (opts.tlog !== undefined) {
    const body = hashedRekordBody({
      payload,
      signature,
      publicKeyPem: opts.rekorKeyPem ?? opts.leaf?.certPem ?? key.publicPem,
      hash,
    });
    const set = opts.tlog.sign(body, opts.integratedTime ?? 1_700_000_000, opts.logIndex ?? opts.tlog.size);
    annotations[ANNOTATIONS.bundle] = JSON.stringify(set);
  }
  return { payload, annotations, mediaType: SIMPLE_SIGNING_MEDIA_TYPE };
}

/** A SimpleSigningCandidate (src/model/signature.ts) for a signed layer. */
export function toCandidate(layer: SignedLayer, source = 'test:sha256-x.sig layer 0'): { source: string; mediaType: string; payload: Uint8Array; annotations: Record<string, string> } {
  return { source, mediaType: layer.mediaType, payload: layer.payload, annotations: { ...layer.annotations } };
}

// ---------------------------------------------------------------------------------------------------------------
// Sigstore bundle v0.3 (cosign v3)

export const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';
export const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
export const BUNDLE_V03_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';

/** The in-toto statement `cosign sign` v3 signs: subject digests (no name), predicate {}. */
export function cosignStatement(digests: string | string[], predicateType: string = COSIGN_SIGN_PREDICATE, statementType = 'https://in-toto.io/Statement/v1'): Buffer {
  const list = Array.isArray(digests) ? digests : [digests];
  return Buffer.from(
    JSON.stringify({
      _type: statementType,
      subject: list.map((d) => ({ digest: { [d.split(':')[0]!]: d.split(':')[1] } })),
      predicateType,
      predicate: {},
    }),
  );
}

/** DSSE pre-authentication encoding. */
export function pae(payloadType: string, payload: Uint8Array): Buffer {
  const type = Buffer.from(payloadType);
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.length} `), payload]);
}

/**
 * A Sigstore bundle v0.3 JSON over a DSSE in-toto statement. `signer` is a key pair (key mode: publicKey hint) or a
 * leaf (keyless: certificate). With `tlog`, the dsse entry is appended (inclusion proof + checkpoint) with a SET
 * unless `promise: false`. `statement` replaces the whole payload.
 */
export function signBundleV03(opts: {
  digest: string | string[];
  signer: KeyPair | Leaf;
  predicateType?: string;
  statementType?: string;
  payloadType?: string;
  statement?: Buffer;
  tlog?: Tlog;
  integratedTime?: number;
  promise?: boolean;
  hash?: Hash;
  rekorKeyPem?: string;
}): Record<string, unknown> {
  const isLeaf = 'certPem' in opts.signer;
  const key = isLeaf ? (opts.signer as Leaf).keyPair : (opts.signer as KeyPair);
  const payloadType = opts.payloadType ?? IN_TOTO_PAYLOAD_TYPE;
  const payload = opts.statement ?? cosignStatement(opts.digest, opts.predicateType, opts.statementType);
  const signature = signBytes(key, pae(payloadType, payload), opts.hash ?? defaultHash(key.kind));
  const envelope = { payload: b64(payload), payloadType, signatures: [{ sig: b64(signature), keyid: '' }] };
  const tlogEntries: TlogEntryJson[] = [];
  if (opts.tlog !== undefined) {
    const body = dsseRekordBody({
      envelopeJson: JSON.stringify(envelope),
      payload,
      signature,
      publicKeyPem: opts.rekorKeyPem ?? (isLeaf ? (opts.signer as Leaf).certPem : key.publicPem),
    });
    tlogEntries.push(
      opts.tlog.append(body, {
        kind: 'dsse',
        version: '0.0.1',
        integratedTime: opts.integratedTime ?? 1_700_000_000,
        ...(opts.promise === false ? { promise: false } : {}),
      }),
    );
  }
  return {
    mediaType: BUNDLE_V03_MEDIA_TYPE,
    verificationMaterial: {
      ...(isLeaf
        ? { certificate: { rawBytes: b64((opts.signer as Leaf).cert) } }
        : { publicKey: { hint: b64(sha256(key.spki)) } }),
      tlogEntries,
      timestampVerificationData: { rfc3161Timestamps: [] },
    },
    dsseEnvelope: envelope,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// conveniences for integration tests

/** A self-contained Sigstore deployment: CA, CT log, Rekor-like log and the trusted root naming them. */
export interface SigstoreWorld {
  ca: CA;
  ctlog: CTLog;
  tlog: Tlog;
  trustedRoot: TrustedRootJson;
}

export function makeSigstoreWorld(): SigstoreWorld {
  const ca = makeCA();
  const ctlog = makeCTLog();
  const tlog = makeTlog();
  return { ca, ctlog, tlog, trustedRoot: makeTrustedRoot({ ca, ctlog, tlog }) };
}

/** What to push for one signed image: the legacy/OCI-1.1 simple-signing layer, and the cosign v3 bundle. */
export interface SignedImage {
  simpleSigning: SignedLayer;
  bundle: Record<string, unknown>;
  /** The bundle as the layer blob to push (JSON text). */
  bundleJson: Buffer;
}

/** Sign `repo@digest` with a key (cosign `--key`); with `tlog`, both layouts carry a log entry. */
export function signImageWithKey(opts: { repo: string; digest: string; key: KeyPair; tlog?: Tlog; integratedTime?: number }): SignedImage {
  const integratedTime = opts.integratedTime ?? Math.floor(Date.now() / 1000);
  const simpleSigning = signSimpleSigning({
    repo: opts.repo,
    digest: opts.digest,
    key: opts.key,
    integratedTime,
    ...(opts.tlog !== undefined ? { tlog: opts.tlog } : {}),
  });
  const bundle = signBundleV03({
    digest: opts.digest,
    signer: opts.key,
    integratedTime,
    ...(opts.tlog !== undefined ? { tlog: opts.tlog } : {}),
  });
  return { simpleSigning, bundle, bundleJson: Buffer.from(JSON.stringify(bundle)) };
}

/** Sign `repo@digest` keylessly as `subject` (email or URI SAN) from `issuer`, through `world`'s CA, CT log and log.
 *  The leaf is valid 10 minutes from one minute before `signedAt` (default now), like Fulcio's. */
export function signImageKeyless(opts: { world: SigstoreWorld; repo: string; digest: string; subject: SubjectAltName; issuer: string; signedAt?: Date }): SignedImage {
  const at = opts.signedAt ?? new Date();
  const leaf = opts.world.ca.issueLeaf({
    san: opts.subject,
    issuer: opts.issuer,
    notBefore: new Date(at.getTime() - 60_000),
    notAfter: new Date(at.getTime() + 9 * 60_000),
    ctLog: opts.world.ctlog,
  });
  const integratedTime = Math.floor(at.getTime() / 1000);
  const simpleSigning = signSimpleSigning({
    repo: opts.repo,
    digest: opts.digest,
    leaf,
    chainPem: opts.world.ca.certPem,
    tlog: opts.world.tlog,
    integratedTime,
  });
  const bundle = signBundleV03({ digest: opts.digest, signer: leaf, tlog: opts.world.tlog, integratedTime });
  return { simpleSigning, bundle, bundleJson: Buffer.from(JSON.stringify(bundle)) };
}

/** The public key PEM of a key pair or certificate, as a policy would pin it. */
export function publicKeyPem(key: KeyPair | KeyObject): string {
  const k = 'privateKey' in key ? key.publicKey : key;
  const pub = k.type === 'public' ? k : createPublicKey(k);
  return pub.export({ type: 'spki', format: 'pem' }).toString();
}

// ---------------------------------------------------------------------------------------------------------------
// containers/image "dir:" signature files

const SIGSTORE_ATTACHMENT_PREFIX = Buffer.from('\x00sigstore-json\n', 'latin1');

/**
 * Read a containers/image `signature-N` file of the sigstore kind (internal/signature/sigstore.go): the bytes
 * `\x00sigstore-json\n` then JSON {mimeType, payload: base64 of the layer blob, annotations}. That is one `.sig` layer.
 */
export function readSigstoreAttachment(bytes: Uint8Array, source: string): { source: string; mediaType: string; payload: Uint8Array; annotations: Record<string, string> } {
  const buf = Buffer.from(bytes);
  if (!buf.subarray(0, SIGSTORE_ATTACHMENT_PREFIX.length).equals(SIGSTORE_ATTACHMENT_PREFIX)) {
    throw new Error(`${source}: not a containers/image sigstore signature (no \\x00sigstore-json prefix)`);
  }
  const doc = JSON.parse(buf.subarray(SIGSTORE_ATTACHMENT_PREFIX.length).toString('utf8')) as {
    mimeType: string;
    payload: string;
    annotations: Record<string, string> | null;
  };
  return { source, mediaType: doc.mimeType, payload: Buffer.from(doc.payload, 'base64'), annotations: doc.annotations ?? {} };
}

/** The inverse of readSigstoreAttachment (Go json.Marshal field order mimeType, payload, annotations). */
export function encodeSigstoreAttachment(layer: SignedLayer): Buffer {
  const json = `{"mimeType":${goString(layer.mediaType)},"payload":${goString(b64(layer.payload))},"annotations":${goMap(layer.annotations)}}`;
  return Buffer.concat([SIGSTORE_ATTACHMENT_PREFIX, Buffer.from(json)]);
}
