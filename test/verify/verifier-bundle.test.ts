/** Sigstore bundle v0.3 signatures (cosign v3 `cosign sign`: DSSE in-toto statement), made by the toolkit. */
import test from 'ava';
import type { SignatureCandidates, TrustPolicy } from '../../src/model/signature.ts';
import { verifySignatures } from '../../src/verify/index.ts';
import { cosignStatement, makeCA, makeCTLog, makeKeyPair, makeTlog, makeTrustedRoot, signBundleV03, type LeafOptions } from '../helpers/sigstore.ts';

const REPO = 'registry.test:5000/os';
const D = `sha256:${'6'.repeat(64)}`;
const INDEX = `sha256:${'7'.repeat(64)}`;
const ISSUER = 'https://token.actions.githubusercontent.com';
const WORKFLOW = 'https://github.com/acme/os/.github/workflows/release.yml@refs/heads/main';
const SIGNED_AT = new Date('2025-05-05T05:05:05Z');
const T = Math.floor(SIGNED_AT.getTime() / 1000);
const ca = makeCA();
const ctlog = makeCTLog();
const tlog = makeTlog();
const root = makeTrustedRoot({ ca, ctlog, tlog });
const key = makeKeyPair('p256');

function leaf(over: Partial<LeafOptions> = {}): ReturnType<typeof ca.issueLeaf> {
  return ca.issueLeaf({
    san: { uri: WORKFLOW },
    issuer: ISSUER,
    notBefore: new Date(SIGNED_AT.getTime() - 60_000),
    notAfter: new Date(SIGNED_AT.getTime() + 9 * 60_000),
    ctLog: ctlog,
    ...over,
  });
}

const keyless: TrustPolicy = { keys: [], trustedRoot: root, identities: [{ subject: WORKFLOW, issuer: ISSUER }], requireTlog: true };
const keyed: TrustPolicy = { keys: [{ id: 'release', pem: key.publicPem }], trustedRoot: root, identities: [], requireTlog: true };

function candidates(...bundles: unknown[]): SignatureCandidates {
  return { digest: D, repository: REPO, simpleSigning: [], bundles: bundles.map((bundle, i) => ({ source: `${REPO}@referrer-${i}`, bundle })) };
}

function rejection(bundle: unknown, p: TrustPolicy): { code: string; message: string } {
  const r = verifySignatures(candidates(bundle), p);
  if (r.accepted.length !== 0 || r.rejected.length !== 1) throw new Error(`expected one rejection, got ${JSON.stringify(r)}`);
  return r.rejected[0]!;
}

test('a keyless cosign v3 bundle by the configured workflow is accepted', (t) => {
  const r = verifySignatures(candidates(signBundleV03({ digest: D, signer: leaf(), tlog, integratedTime: T })), keyless);
  t.deepEqual(r.rejected, []);
  t.like(r.accepted[0], { kind: 'bundle', mode: 'keyless', identity: WORKFLOW, issuer: ISSUER, digest: D, integratedTime: String(T) });
});

test('a key-signed cosign v3 bundle is accepted with P-256, and with P-384 signing with SHA-384', (t) => {
  t.like(verifySignatures(candidates(signBundleV03({ digest: D, signer: key, tlog, integratedTime: T })), keyed).accepted[0], {
    kind: 'bundle',
    mode: 'key',
    keyId: 'release',
    digest: D,
  });
  const p384 = makeKeyPair('p384');
  const r = verifySignatures(candidates(signBundleV03({ digest: D, signer: p384, tlog, integratedTime: T, hash: 'sha384' })), {
    ...keyed,
    keys: [{ id: 'p384', pem: p384.publicPem }],
  });
  t.deepEqual(r.rejected, []);
  t.is(r.accepted[0]!.keyId, 'p384');
});

test('inclusion proofs verify at every position of a growing log', (t) => {
  const log = makeTlog();
  const p = { ...keyed, trustedRoot: makeTrustedRoot({ tlog: log }) };
  const bundles = Array.from({ length: 7 }, () => signBundleV03({ digest: D, signer: key, tlog: log, integratedTime: T }));
  const r = verifySignatures(candidates(...bundles), p);
  t.deepEqual(r.rejected, []);
  t.deepEqual(r.accepted.map((a) => a.logIndex), ['0', '1', '2', '3', '4', '5', '6']);
});

test('a SLSA provenance by the same identity does not count as a signature (SIGNATURE_INVALID)', (t) => {
  const slsa = signBundleV03({ digest: D, signer: leaf(), tlog, integratedTime: T, predicateType: 'https://slsa.dev/provenance/v1' });
  const r = rejection(slsa, keyless);
  t.is(r.code, 'SIGNATURE_INVALID');
  t.regex(r.message, /slsa\.dev\/provenance/);
});

test('a bundle whose subject digest is not the image is rejected with SIGNATURE_DIGEST_MISMATCH', (t) => {
  const other = `sha256:${'8'.repeat(64)}`;
  const r = rejection(signBundleV03({ digest: other, signer: leaf(), tlog, integratedTime: T }), keyless);
  t.is(r.code, 'SIGNATURE_DIGEST_MISMATCH');
  t.true(r.message.includes(other));
});

test('allowedDigests containing the index digest accepts a bundle over the index', (t) => {
  const b = signBundleV03({ digest: INDEX, signer: key, tlog, integratedTime: T });
  t.is(rejection(b, keyed).code, 'SIGNATURE_DIGEST_MISMATCH');
  const r = verifySignatures(candidates(b), keyed, { allowedDigests: [D, INDEX] });
  t.is(r.accepted[0]!.digest, INDEX);
});

test('a key-signed bundle by a key that is not pinned is rejected with SIGNATURE_UNTRUSTED_KEY', (t) => {
  const other = makeKeyPair();
  t.is(rejection(signBundleV03({ digest: D, signer: other, tlog, integratedTime: T }), keyed).code, 'SIGNATURE_UNTRUSTED_KEY');
  t.is(rejection(signBundleV03({ digest: D, signer: other }), { ...keyed, requireTlog: false }).code, 'SIGNATURE_UNTRUSTED_KEY');
});

test('a bundle whose statement was altered is rejected with SIGNATURE_INVALID (keyless and key)', (t) => {
  for (const [signer, p] of [[leaf(), keyless], [key, keyed]] as const) {
    const b = signBundleV03({ digest: D, signer, tlog, integratedTime: T }) as any;
    b.dsseEnvelope.payload = cosignStatement(`sha256:${'9'.repeat(64)}`).toString('base64');
    t.is(rejection(b, p).code, 'SIGNATURE_INVALID');
  }
});

test('a keyless bundle with an inclusion proof but no SET or timestamp is rejected with SIGNATURE_TLOG_MISSING', (t) => {
  const b = signBundleV03({ digest: D, signer: leaf(), tlog, integratedTime: T, promise: false });
  const r = rejection(b, keyless);
  t.is(r.code, 'SIGNATURE_TLOG_MISSING');
  t.notRegex(r.message, /TypeError/);
});

test('a key-signed bundle without tlog entries is accepted without requireTlog and rejected with SIGNATURE_TLOG_MISSING with it', (t) => {
  // bundle v0.3 requires an inclusion proof per entry; an entry-less bundle is valid
  const b = signBundleV03({ digest: D, signer: key });
  t.is(verifySignatures(candidates(b), { ...keyed, requireTlog: false }).accepted.length, 1);
  t.is(verifySignatures(candidates(b), { keys: keyed.keys, identities: [], requireTlog: false }).accepted.length, 1);
  t.is(rejection(b, keyed).code, 'SIGNATURE_TLOG_MISSING');
});

test('a checkpoint signed by another log, or an altered inclusion proof, is rejected with SIGNATURE_BAD_SET', (t) => {
  const rogue = makeTlog({ baseUrl: tlog.baseUrl });
  const b1 = signBundleV03({ digest: D, signer: key, tlog: rogue, integratedTime: T }) as any;
  const genuine = signBundleV03({ digest: D, signer: key, tlog, integratedTime: T }) as any;
  b1.verificationMaterial.tlogEntries[0].logId = genuine.verificationMaterial.tlogEntries[0].logId;
  delete b1.verificationMaterial.tlogEntries[0].inclusionPromise;
  t.is(rejection(b1, keyed).code, 'SIGNATURE_BAD_SET');
  for (let i = 0; i < 3; i++) signBundleV03({ digest: D, signer: key, tlog, integratedTime: T });
  const b2 = signBundleV03({ digest: D, signer: key, tlog, integratedTime: T }) as any;
  const proof = b2.verificationMaterial.tlogEntries[0].inclusionProof;
  t.true(proof.hashes.length > 0);
  proof.hashes[0] = Buffer.alloc(32, 1).toString('base64');
  delete b2.verificationMaterial.tlogEntries[0].inclusionPromise;
  t.is(rejection(b2, keyed).code, 'SIGNATURE_BAD_SET');
});

test('a bundle whose log entry names another key is rejected with SIGNATURE_BAD_SET', (t) => {
  const b = signBundleV03({ digest: D, signer: key, tlog, integratedTime: T, rekorKeyPem: makeKeyPair().publicPem });
  t.is(rejection(b, keyed).code, 'SIGNATURE_BAD_SET');
});

test('malformed bundles are rejected with SIGNATURE_INVALID, never an exception', (t) => {
  const noProof = signBundleV03({ digest: D, signer: key, tlog, integratedTime: T }) as any;
  delete noProof.verificationMaterial.tlogEntries[0].inclusionProof;
  const twoSigs = signBundleV03({ digest: D, signer: key, tlog, integratedTime: T }) as any;
  twoSigs.dsseEnvelope.signatures.push(twoSigs.dsseEnvelope.signatures[0]);
  const message = signBundleV03({ digest: D, signer: key }) as any;
  delete message.dsseEnvelope;
  message.messageSignature = { messageDigest: { algorithm: 'SHA2_256', digest: Buffer.alloc(32).toString('base64') }, signature: 'AAAA' };
  const badCert = signBundleV03({ digest: D, signer: leaf(), tlog, integratedTime: T }) as any;
  badCert.verificationMaterial.certificate.rawBytes = 'MAMCAQA=';
  for (const [why, b] of [['no inclusion proof', noProof], ['two signatures', twoSigs], ['message signature', message], ['bad certificate', badCert], ['a string', 'bundle'], ['null', null], ['empty object', {}]] as const) {
    t.is(rejection(b, { ...keyless, keys: keyed.keys }).code, 'SIGNATURE_INVALID', why);
  }
});

test('a keyless bundle by another identity or issuer is rejected with SIGNATURE_IDENTITY_MISMATCH', (t) => {
  t.is(rejection(signBundleV03({ digest: D, signer: leaf({ san: { uri: `${WORKFLOW}.evil` } }), tlog, integratedTime: T }), keyless).code, 'SIGNATURE_IDENTITY_MISMATCH');
  t.is(rejection(signBundleV03({ digest: D, signer: leaf({ issuer: 'https://evil.example' }), tlog, integratedTime: T }), keyless).code, 'SIGNATURE_IDENTITY_MISMATCH');
});

test('a keyless bundle from a back-dated, expired certificate is rejected with SIGNATURE_CERT_EXPIRED', (t) => {
  const old = leaf({ notBefore: new Date('2022-01-01T00:00:00Z'), notAfter: new Date('2022-01-01T00:10:00Z') });
  t.is(rejection(signBundleV03({ digest: D, signer: old, tlog, integratedTime: T }), keyless).code, 'SIGNATURE_CERT_EXPIRED');
});

test('a bundle with more than 8 log entries is rejected with SIGNATURE_INVALID before any check', (t) => {
  const b = signBundleV03({ digest: D, signer: key, tlog, integratedTime: T }) as any;
  const entry = b.verificationMaterial.tlogEntries[0];
  b.verificationMaterial.tlogEntries = Array.from({ length: 9 }, () => structuredClone(entry));
  const r = rejection(b, keyed);
  t.is(r.code, 'SIGNATURE_INVALID');
  t.regex(r.message, /more than 8/);
});
