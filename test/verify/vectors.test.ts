/**
 * Real public vectors (test/fixtures/sigstore, see its README): genuine cosign output verified offline against the
 * public-good trusted root, and sigstore-conformance bundles. They prove interop with what real signers produce.
 */
import { readFileSync } from 'node:fs';
import test from 'ava';
import type { SignatureCandidates, SimpleSigningCandidate, TrustPolicy } from '../../src/model/signature.ts';
import { verifySignatures } from '../../src/verify/index.ts';
import { encodeSigstoreAttachment, hashedRekordBody, makeCA, makeCTLog, makeTlog, makeTrustedRoot, readSigstoreAttachment } from '../helpers/sigstore.ts';

const fx = (p: string): Buffer => readFileSync(new URL(`../fixtures/sigstore/${p}`, import.meta.url));
const fxText = (p: string): string => fx(p).toString('utf8');
const fxJson = (p: string): any => JSON.parse(fxText(p));

const publicGood = fxJson('public-good/trusted_root.json');
const cosignPub = fxText('containers-image/cosign.pub');
const cosign2Pub = fxText('containers-image/cosign2.pub');

// containers/image signature/internal/testdata: a keyless cosign signature (Fulcio + public Rekor, 2022-12-12)
const KEYLESS_DIGEST = 'sha256:fa93b01658e3a5a1686dc3ae55f170d8de487006fb53a28efcd12ab0710a2e5f';
const KEYLESS_REPO = '192.168.64.2:5000/test-repo-2100826901021538654/alpine';
const KEYLESS_SAN = 'mitr@redhat.com';
const GITHUB_OAUTH = 'https://github.com/login/oauth';

function keylessLayer(): SimpleSigningCandidate {
  return {
    source: 'containers/image rekor-* vector',
    mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
    payload: fx('containers-image/rekor-payload'),
    annotations: {
      'dev.cosignproject.cosign/signature': fxText('containers-image/rekor-sig'),
      'dev.sigstore.cosign/certificate': fxText('containers-image/fulcio-cert'),
      'dev.sigstore.cosign/chain': fxText('containers-image/fulcio-chain'),
      'dev.sigstore.cosign/bundle': fxText('containers-image/rekor-set'),
    },
  };
}

function legacy(layer: SimpleSigningCandidate, digest = KEYLESS_DIGEST): SignatureCandidates {
  return { digest, repository: KEYLESS_REPO, simpleSigning: [layer], bundles: [] };
}

function bundles(digest: string, bundle: unknown): SignatureCandidates {
  return { digest, repository: 'x', simpleSigning: [], bundles: [{ source: 'vector', bundle }] };
}

const keylessPolicy: TrustPolicy = { keys: [], trustedRoot: publicGood, identities: [{ subject: KEYLESS_SAN, issuer: GITHUB_OAUTH }], requireTlog: true };

function only(c: SignatureCandidates, p: TrustPolicy, allowedDigests?: string[]): { code: string; message: string } {
  const r = verifySignatures(c, p, allowedDigests ? { allowedDigests } : {});
  if (r.accepted.length !== 0 || r.rejected.length !== 1) throw new Error(`expected one rejection, got ${JSON.stringify(r)}`);
  return r.rejected[0]!;
}

test('the real keyless cosign signature verifies offline with the public-good root, identity and issuer', (t) => {
  const r = verifySignatures(legacy(keylessLayer()), keylessPolicy);
  t.deepEqual(r.rejected, []);
  t.deepEqual(r.accepted, [
    {
      kind: 'simple-signing',
      mode: 'keyless',
      source: 'containers/image rekor-* vector',
      identity: KEYLESS_SAN,
      issuer: GITHUB_OAUTH,
      logIndex: '8949589',
      integratedTime: '1670870899',
      digest: KEYLESS_DIGEST,
    },
  ]);
});

test('the real keyless signature passes requireRepository for its repository and is refused for another', (t) => {
  t.is(verifySignatures(legacy(keylessLayer()), { ...keylessPolicy, requireRepository: `${KEYLESS_REPO}:latest` }).accepted.length, 1);
  t.is(only(legacy(keylessLayer()), { ...keylessPolicy, requireRepository: '192.168.64.2:5000/other/alpine' }).code, 'SIGNATURE_DIGEST_MISMATCH');
});

test('the real keyless signature is refused for a wrong SAN, a substring SAN, or a wrong issuer (SIGNATURE_IDENTITY_MISMATCH)', (t) => {
  for (const identities of [
    [{ subject: 'someone@redhat.com', issuer: GITHUB_OAUTH }],
    [{ subject: 'itr@redhat.com', issuer: GITHUB_OAUTH }],
    [{ subjectRegExp: 'itr@redhat\\.com', issuer: GITHUB_OAUTH }],
    [{ subject: KEYLESS_SAN, issuer: 'https://accounts.google.com' }],
  ]) {
    t.is(only(legacy(keylessLayer()), { ...keylessPolicy, identities }).code, 'SIGNATURE_IDENTITY_MISMATCH', JSON.stringify(identities));
  }
});

test('tampered variants of the real keyless signature are rejected with the right code', (t) => {
  const payload = keylessLayer();
  const edited = Buffer.from(payload.payload);
  edited[edited.indexOf('alpine')] = 'A'.charCodeAt(0);
  t.is(only(legacy({ ...payload, payload: edited }), keylessPolicy).code, 'SIGNATURE_INVALID', 'payload byte edited');

  const later = keylessLayer();
  const set = JSON.parse(later.annotations['dev.sigstore.cosign/bundle']!);
  set.Payload.integratedTime += 1;
  later.annotations['dev.sigstore.cosign/bundle'] = JSON.stringify(set);
  t.is(only(legacy(later), keylessPolicy).code, 'SIGNATURE_BAD_SET', 'integratedTime + 1');

  const noBundle = keylessLayer();
  delete noBundle.annotations['dev.sigstore.cosign/bundle'];
  t.is(only(legacy(noBundle), keylessPolicy).code, 'SIGNATURE_TLOG_MISSING', 'bundle annotation removed');

  const otherType = { ...keylessLayer(), mediaType: 'text/plain' };
  t.is(only(legacy(otherType), keylessPolicy).code, 'SIGNATURE_INVALID', 'other attachment media type');

  const other = `sha256:${'0'.repeat(64)}`;
  t.is(only(legacy(keylessLayer(), other), keylessPolicy).code, 'SIGNATURE_DIGEST_MISMATCH', 'another image digest');
});

test('the chain annotation of the real signature is not needed: the intermediates come from the trusted root', (t) => {
  const layer = keylessLayer();
  delete layer.annotations['dev.sigstore.cosign/chain'];
  t.is(verifySignatures(legacy(layer), keylessPolicy).accepted.length, 1);
});

test('the real keyless signature is refused with SIGNATURE_UNTRUSTED_KEY under a root without the Fulcio CA', (t) => {
  const other = makeTrustedRoot({ ca: makeCA(), ctlog: makeCTLog(), tlog: makeTlog() });
  // the public-good Rekor key, so only the CA differs
  other.tlogs = publicGood.tlogs;
  t.is(only(legacy(keylessLayer()), { ...keylessPolicy, trustedRoot: other }).code, 'SIGNATURE_UNTRUSTED_KEY');
});

test('the toolkit rebuilds the real Rekor entry body byte for byte', (t) => {
  const set = JSON.parse(fxText('containers-image/rekor-set'));
  const body = hashedRekordBody({
    payload: fx('containers-image/rekor-payload'),
    signature: Buffer.from(fxText('containers-image/rekor-sig'), 'base64'),
    publicKeyPem: fxText('containers-image/fulcio-cert'),
  });
  t.is(body.toString('base64'), set.Payload.body);
});

test('a containers/image sigstore signature file round-trips through the test reader and verifies', (t) => {
  const layer = keylessLayer();
  const file = encodeSigstoreAttachment({ payload: Buffer.from(layer.payload), annotations: layer.annotations, mediaType: layer.mediaType });
  t.true(file.subarray(0, 15).equals(Buffer.from('\x00sigstore-json\n', 'latin1')));
  const read = readSigstoreAttachment(file, 'dir:signature-1');
  t.true(Buffer.from(read.payload).equals(fx('containers-image/rekor-payload')));
  t.is(verifySignatures(legacy(read), keylessPolicy).accepted.length, 1);
});

test('real cosign.pub signatures over non-payloads verify with cosign.pub and are still refused (SIGNATURE_INVALID); cosign2.pub does not pin them (SIGNATURE_UNTRUSTED_KEY)', (t) => {
  const { vectors } = fxJson('containers-image/cosign-pub-signatures.json') as { vectors: Array<{ payload: string; signature: string }> };
  for (const v of vectors) {
    const layer: SimpleSigningCandidate = {
      source: `cosign.pub over ${JSON.stringify(v.payload)}`,
      mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
      payload: Buffer.from(v.payload),
      annotations: { 'dev.cosignproject.cosign/signature': v.signature },
    };
    const r = only(legacy(layer), { keys: [{ id: 'cosign.pub', pem: cosignPub }], identities: [], requireTlog: false });
    t.is(r.code, 'SIGNATURE_INVALID', v.payload);
    t.regex(r.message, /simple-signing payload/, v.payload);
    t.is(only(legacy(layer), { keys: [{ id: 'cosign2.pub', pem: cosign2Pub }], identities: [], requireTlog: false }).code, 'SIGNATURE_UNTRUSTED_KEY');
  }
});

// sigstore/cosign pkg/cosign/testdata/oci-attestation.sigstore.json: a real cosign v0.3 DSSE bundle (keyless,
// cody@soyland.com via GitHub OAuth, Rekor dsse entry with SET and inclusion proof). It is an attestation
// (in-toto Statement v0.1, predicate cosign.sigstore.dev/attestation/v1), not a `cosign sign` signature.
const ATT_DIGEST = 'sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4';
const attestation = fxJson('cosign/oci-attestation.sigstore.json');
const attPolicy: TrustPolicy = { keys: [], trustedRoot: publicGood, identities: [{ subject: 'cody@soyland.com', issuer: GITHUB_OAUTH }], requireTlog: true };

test('the real cosign v3 bundle passes every cryptographic and identity check, then is refused as not a signature statement', (t) => {
  const r = only(bundles(ATT_DIGEST, attestation), attPolicy);
  t.is(r.code, 'SIGNATURE_INVALID');
  // the statement check is the last one: reaching it proves chain, SCT, SET, inclusion proof, signature and identity
  t.regex(r.message, /bundle statement: _type is "https:\/\/in-toto\.io\/Statement\/v0\.1"/);
});

test('the real cosign v3 bundle is refused with SIGNATURE_IDENTITY_MISMATCH for another identity and SIGNATURE_INVALID when altered', (t) => {
  t.is(only(bundles(ATT_DIGEST, attestation), { ...attPolicy, identities: [{ subject: 'cody@soyland.co', issuer: GITHUB_OAUTH }] }).code, 'SIGNATURE_IDENTITY_MISMATCH');
  t.is(only(bundles(ATT_DIGEST, attestation), { ...attPolicy, identities: [{ subject: 'cody@soyland.com', issuer: 'https://accounts.google.com' }] }).code, 'SIGNATURE_IDENTITY_MISMATCH');
  const altered = structuredClone(attestation);
  const statement = JSON.parse(Buffer.from(altered.dsseEnvelope.payload, 'base64').toString());
  statement._type = 'https://in-toto.io/Statement/v1';
  statement.predicateType = 'https://sigstore.dev/cosign/sign/v1';
  altered.dsseEnvelope.payload = Buffer.from(JSON.stringify(statement)).toString('base64');
  t.is(only(bundles(ATT_DIGEST, altered), attPolicy).code, 'SIGNATURE_INVALID');
  const promise = structuredClone(attestation);
  promise.verificationMaterial.tlogEntries[0].integratedTime = String(Number(promise.verificationMaterial.tlogEntries[0].integratedTime) + 1);
  t.is(only(bundles(ATT_DIGEST, promise), attPolicy).code, 'SIGNATURE_BAD_SET');
});

// sigstore-conformance bundle-verify cases with their own trusted roots and P-256 keys (managed-key bundles).
for (const [dir, statementError] of [
  ['intoto-canonical-log-entry', /predicateType is "https:\/\/example\.com\/test"/],
  ['dsse-statement-unknown-type_fail', /_type is "https:\/\/in-toto\.io\/Statement\/v2"/],
] as const) {
  const bundle = fxJson(`conformance/${dir}/bundle.sigstore.json`);
  const root = fxJson(`conformance/${dir}/trusted_root.json`);
  const keyPem = fxText(`conformance/${dir}/key.pub`);
  const subject = 'sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf';
  const policy: TrustPolicy = { keys: [{ id: 'key.pub', pem: keyPem }], trustedRoot: root, identities: [], requireTlog: true };

  test(`conformance ${dir}: the log entry and key verify, and the statement is refused (SIGNATURE_INVALID)`, (t) => {
    const r = only(bundles(subject, bundle), policy);
    t.is(r.code, 'SIGNATURE_INVALID');
    t.regex(r.message, statementError);
  });

  test(`conformance ${dir}: another key is SIGNATURE_UNTRUSTED_KEY, another log root is SIGNATURE_BAD_SET`, (t) => {
    t.is(only(bundles(subject, bundle), { ...policy, keys: [{ id: 'cosign.pub', pem: cosignPub }] }).code, 'SIGNATURE_UNTRUSTED_KEY');
    t.is(only(bundles(subject, bundle), { ...policy, trustedRoot: publicGood }).code, 'SIGNATURE_BAD_SET');
  });
}
