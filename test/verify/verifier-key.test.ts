/** Key-mode simple-signing signatures (cosign sign --key, legacy .sig layout), made by the signing toolkit. */
import test from 'ava';
import type { SignatureCandidates, SimpleSigningCandidate, TrustPolicy } from '../../src/model/signature.ts';
import { verifySignatures } from '../../src/verify/index.ts';
import { ANNOTATIONS, hashedRekordBody, makeCA, makeCTLog, makeKeyPair, makeTlog, makeTrustedRoot, signSimpleSigning, simpleSigningPayload, toCandidate, type SignedLayer } from '../helpers/sigstore.ts';

const REPO = 'registry.test:5000/os';
const D = `sha256:${'1'.repeat(64)}`;
const INDEX = `sha256:${'2'.repeat(64)}`;
const key = makeKeyPair('p256');
const otherKey = makeKeyPair('p256');
const tlog = makeTlog();
const root = makeTrustedRoot({ tlog });

function candidates(...layers: Array<SignedLayer | SimpleSigningCandidate>): SignatureCandidates {
  return {
    digest: D,
    repository: REPO,
    simpleSigning: layers.map((l, i) => ('source' in l ? l : toCandidate(l, `${REPO}:sha256-1.sig layer ${i}`))),
    bundles: [],
  };
}

function withFulcio(): ReturnType<typeof makeTrustedRoot> {
  return makeTrustedRoot({ ca: makeCA(), ctlog: makeCTLog(), tlog });
}

function policy(over: Partial<TrustPolicy> = {}): TrustPolicy {
  return { keys: [{ id: 'release', pem: key.publicPem }], identities: [], requireTlog: false, ...over };
}

/** The single rejection of a one-candidate run. */
function rejection(layer: SignedLayer | SimpleSigningCandidate, p: TrustPolicy = policy(), allowedDigests?: string[]): { code: string; message: string } {
  const r = verifySignatures(candidates(layer), p, allowedDigests ? { allowedDigests } : {});
  if (r.accepted.length !== 0 || r.rejected.length !== 1) throw new Error(`expected one rejection, got ${JSON.stringify(r)}`);
  return r.rejected[0]!;
}

test('a P-256 key signature over the image digest is accepted in key mode, naming the key', (t) => {
  const r = verifySignatures(candidates(signSimpleSigning({ repo: REPO, digest: D, key })), policy());
  t.deepEqual(r.rejected, []);
  t.is(r.digest, D);
  t.like(r.accepted[0], { kind: 'simple-signing', mode: 'key', keyId: 'release', digest: D, source: `${REPO}:sha256-1.sig layer 0` });
  t.is(r.accepted[0]!.logIndex, undefined);
});

test('RSA 2048 and P-384 keys are accepted (P-384 with SHA-384 and with SHA-256)', (t) => {
  const rsa = makeKeyPair('rsa');
  const p384 = makeKeyPair('p384');
  const p = policy({ keys: [{ id: 'rsa', pem: rsa.publicPem }, { id: 'p384', pem: p384.publicPem }] });
  const r = verifySignatures(
    candidates(
      signSimpleSigning({ repo: REPO, digest: D, key: rsa }),
      signSimpleSigning({ repo: REPO, digest: D, key: p384, hash: 'sha384' }),
      signSimpleSigning({ repo: REPO, digest: D, key: p384, hash: 'sha256' }),
    ),
    p,
  );
  t.deepEqual(r.rejected, []);
  t.deepEqual(r.accepted.map((a) => a.keyId), ['rsa', 'p384', 'p384']);
});

test('a signature by a key that is not pinned is rejected with SIGNATURE_UNTRUSTED_KEY', (t) => {
  const r = rejection(signSimpleSigning({ repo: REPO, digest: D, key: otherKey }));
  t.is(r.code, 'SIGNATURE_UNTRUSTED_KEY');
  t.regex(r.message, /release/);
});

test('a tampered payload without log evidence reads as SIGNATURE_UNTRUSTED_KEY (cannot be told from a foreign key)', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key });
  layer.payload = Buffer.from(layer.payload.toString().replace(REPO, 'registry.test:5000/ox'));
  const r = rejection(layer);
  t.is(r.code, 'SIGNATURE_UNTRUSTED_KEY');
  t.regex(r.message, /altered/);
});

test('a tampered payload whose Rekor entry names the pinned key is rejected with SIGNATURE_INVALID', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key, tlog, integratedTime: 1_700_000_000 });
  layer.payload = Buffer.from(layer.payload.toString().replace(D, `sha256:${'3'.repeat(64)}`));
  t.is(rejection(layer, policy({ trustedRoot: root })).code, 'SIGNATURE_INVALID');
});

test('a signature whose Rekor entry names a foreign key that verifies it is rejected with SIGNATURE_UNTRUSTED_KEY naming that key', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key: otherKey, tlog, integratedTime: 1_700_000_000 });
  const r = rejection(layer, policy({ trustedRoot: root }));
  t.is(r.code, 'SIGNATURE_UNTRUSTED_KEY');
  t.regex(r.message, /signed by key [0-9a-f]{16}, which is not a pinned key/);
});

test('a signature over another digest is rejected with SIGNATURE_DIGEST_MISMATCH', (t) => {
  const other = `sha256:${'9'.repeat(64)}`;
  const r = rejection(signSimpleSigning({ repo: REPO, digest: other, key }));
  t.is(r.code, 'SIGNATURE_DIGEST_MISMATCH');
  t.true(r.message.includes(other) && r.message.includes(D));
});

test('allowedDigests containing the index digest accepts a signature over the index', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: INDEX, key });
  t.is(rejection(layer).code, 'SIGNATURE_DIGEST_MISMATCH');
  const r = verifySignatures(candidates(layer), policy(), { allowedDigests: [D, INDEX] });
  t.is(r.accepted.length, 1);
  t.is(r.accepted[0]!.digest, INDEX);
});

test('a correctly signed payload with a wrong critical.type is rejected with SIGNATURE_INVALID', (t) => {
  const payload = Buffer.from(simpleSigningPayload(REPO, D).toString().replace('cosign container image signature', 'atomic container signature'));
  t.is(rejection(signSimpleSigning({ payload, key })).code, 'SIGNATURE_INVALID');
});

test('when requireTlog is set, a signature without a Rekor bundle is rejected with SIGNATURE_TLOG_MISSING', (t) => {
  const r = rejection(signSimpleSigning({ repo: REPO, digest: D, key }), policy({ trustedRoot: root, requireTlog: true }));
  t.is(r.code, 'SIGNATURE_TLOG_MISSING');
});

test('when requireTlog is set, a signature with a valid SET is accepted with its log index and time', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key, tlog, integratedTime: 1_700_000_123, logIndex: 42 });
  const r = verifySignatures(candidates(layer), policy({ trustedRoot: root, requireTlog: true }));
  t.deepEqual(r.rejected, []);
  t.like(r.accepted[0], { mode: 'key', keyId: 'release', logIndex: '42', integratedTime: '1700000123' });
});

test('a SET signed by a log that is not in the trusted root is rejected with SIGNATURE_BAD_SET', (t) => {
  const rogue = makeTlog();
  const layer = signSimpleSigning({ repo: REPO, digest: D, key, tlog: rogue, integratedTime: 1_700_000_000 });
  t.is(rejection(layer, policy({ trustedRoot: root, requireTlog: true })).code, 'SIGNATURE_BAD_SET');
  // and when the forger claims the trusted log's id
  const forged = JSON.parse(layer.annotations[ANNOTATIONS.bundle]!);
  forged.Payload.logID = tlog.logId;
  layer.annotations[ANNOTATIONS.bundle] = JSON.stringify(forged);
  t.is(rejection(layer, policy({ trustedRoot: root, requireTlog: true })).code, 'SIGNATURE_BAD_SET');
});

test('a SET whose integratedTime was changed by one second is rejected with SIGNATURE_BAD_SET', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key, tlog, integratedTime: 1_700_000_000 });
  const set = JSON.parse(layer.annotations[ANNOTATIONS.bundle]!);
  set.Payload.integratedTime += 1;
  layer.annotations[ANNOTATIONS.bundle] = JSON.stringify(set);
  t.is(rejection(layer, policy({ trustedRoot: root })).code, 'SIGNATURE_BAD_SET');
});

test('a Rekor entry naming another public key than the signing key is rejected with SIGNATURE_BAD_SET', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key, tlog, integratedTime: 1_700_000_000, rekorKeyPem: otherKey.publicPem });
  const r = rejection(layer, policy({ trustedRoot: root, requireTlog: true }));
  t.is(r.code, 'SIGNATURE_BAD_SET');
  t.regex(r.message, /another public key/);
});

test('a Rekor entry logging another signature is rejected with SIGNATURE_BAD_SET', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key });
  const body = hashedRekordBody({ payload: layer.payload, signature: Buffer.from('another signature'), publicKeyPem: key.publicPem });
  layer.annotations[ANNOTATIONS.bundle] = JSON.stringify(tlog.sign(body, 1_700_000_000, 7));
  t.is(rejection(layer, policy({ trustedRoot: root })).code, 'SIGNATURE_BAD_SET');
});

test('a malformed Rekor bundle annotation is rejected with SIGNATURE_BAD_SET', (t) => {
  for (const value of ['not json', '{}', '{"SignedEntryTimestamp":"x","Payload":{"body":"e30=","integratedTime":"1","logIndex":1,"logID":"ab"}}']) {
    const layer = signSimpleSigning({ repo: REPO, digest: D, key });
    layer.annotations[ANNOTATIONS.bundle] = value;
    t.is(rejection(layer, policy({ trustedRoot: root })).code, 'SIGNATURE_BAD_SET', value);
  }
});

test('without a trusted root (requireTlog off) log evidence is not examined and the key signature is accepted', (t) => {
  const rogue = makeTlog();
  const layer = signSimpleSigning({ repo: REPO, digest: D, key, tlog: rogue, integratedTime: 1_700_000_000 });
  const r = verifySignatures(candidates(layer), policy());
  t.is(r.accepted.length, 1);
  t.is(r.accepted[0]!.logIndex, undefined);
});

test('a layer whose media type is not simple signing is rejected with SIGNATURE_INVALID even when the signature verifies', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key });
  const r = rejection({ ...toCandidate(layer), mediaType: 'text/plain' });
  t.is(r.code, 'SIGNATURE_INVALID');
  t.regex(r.message, /text\/plain/);
});

test('a payload larger than 64 KiB is rejected with SIGNATURE_INVALID before any crypto', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key, optional: { pad: 'x'.repeat(65 * 1024) } });
  t.is(rejection(layer).code, 'SIGNATURE_INVALID');
});

test('a missing or non-base64 signature annotation is rejected with SIGNATURE_INVALID', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key });
  const noSig = { ...layer, annotations: {} };
  t.is(rejection(noSig).code, 'SIGNATURE_INVALID');
  const bad = { ...layer, annotations: { [ANNOTATIONS.signature]: 'not*base64' } };
  t.is(rejection(bad).code, 'SIGNATURE_INVALID');
});

test('a signature annotation wrapped with newlines (cosign attach signature) is accepted', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key });
  const sig = layer.annotations[ANNOTATIONS.signature]!;
  layer.annotations[ANNOTATIONS.signature] = `${sig.slice(0, 20)}\n${sig.slice(20)}\n`;
  t.is(verifySignatures(candidates(layer), policy()).accepted.length, 1);
});

test('a key-based signature under a keyless-only policy is rejected with SIGNATURE_UNTRUSTED_KEY', (t) => {
  const layer = signSimpleSigning({ repo: REPO, digest: D, key });
  const r = rejection(layer, { keys: [], identities: [{ subject: 'a@b.c', issuer: 'https://i' }], requireTlog: false, trustedRoot: withFulcio() });
  t.is(r.code, 'SIGNATURE_UNTRUSTED_KEY');
});

test('any passing candidate accepts the image; the others are listed as rejected', (t) => {
  const r = verifySignatures(
    candidates(signSimpleSigning({ repo: REPO, digest: D, key: otherKey }), signSimpleSigning({ repo: REPO, digest: D, key })),
    policy(),
  );
  t.is(r.accepted.length, 1);
  t.is(r.rejected.length, 1);
  t.is(r.rejected[0]!.code, 'SIGNATURE_UNTRUSTED_KEY');
  t.is(r.rejected[0]!.source, `${REPO}:sha256-1.sig layer 0`);
});
