/** Keyless simple-signing signatures (Fulcio certificate + Rekor SET), made by the toolkit's CA, CT log and log. */
import test from 'ava';
import type { SignatureCandidates, SimpleSigningCandidate, TrustPolicy } from '../../src/model/signature.ts';
import { verifySignatures } from '../../src/verify/index.ts';
import {
  ANNOTATIONS,
  makeCA,
  makeCTLog,
  makeKeyPair,
  makeTlog,
  makeTrustedRoot,
  signSimpleSigning,
  toCandidate,
  type LeafOptions,
  type SignedLayer,
} from '../helpers/sigstore.ts';

const REPO = 'registry.test:5000/os';
const D = `sha256:${'4'.repeat(64)}`;
const ISSUER = 'https://accounts.example.com';
const SIGNED_AT = new Date('2024-03-01T10:00:00Z');
const T = Math.floor(SIGNED_AT.getTime() / 1000);
const ca = makeCA();
const ctlog = makeCTLog();
const tlog = makeTlog();
const root = makeTrustedRoot({ ca, ctlog, tlog });

function leafFor(over: Partial<LeafOptions> = {}): ReturnType<typeof ca.issueLeaf> {
  return ca.issueLeaf({
    san: { email: 'alice@example.com' },
    issuer: ISSUER,
    notBefore: new Date(SIGNED_AT.getTime() - 60_000),
    notAfter: new Date(SIGNED_AT.getTime() + 9 * 60_000),
    ctLog: ctlog,
    ...over,
  });
}

function signed(over: Partial<LeafOptions> = {}, at: number = T): SignedLayer {
  return signSimpleSigning({ repo: REPO, digest: D, leaf: leafFor(over), chainPem: ca.certPem, tlog, integratedTime: at });
}

function policy(over: Partial<TrustPolicy> = {}): TrustPolicy {
  return { keys: [], trustedRoot: root, identities: [{ subject: 'alice@example.com', issuer: ISSUER }], requireTlog: true, ...over };
}

function candidates(...layers: Array<SignedLayer | SimpleSigningCandidate>): SignatureCandidates {
  return { digest: D, repository: REPO, simpleSigning: layers.map((l) => ('source' in l ? l : toCandidate(l))), bundles: [] };
}

function rejection(layer: SignedLayer, p: TrustPolicy = policy()): { code: string; message: string } {
  const r = verifySignatures(candidates(layer), p);
  if (r.accepted.length !== 0 || r.rejected.length !== 1) throw new Error(`expected one rejection, got ${JSON.stringify(r)}`);
  return r.rejected[0]!;
}

test('a keyless signature by the configured email identity is accepted with its identity and log entry', (t) => {
  const r = verifySignatures(candidates(signed()), policy());
  t.deepEqual(r.rejected, []);
  t.like(r.accepted[0], { kind: 'simple-signing', mode: 'keyless', identity: 'alice@example.com', issuer: ISSUER, digest: D, integratedTime: String(T) });
  t.is(typeof r.accepted[0]!.logIndex, 'string');
});

test('a keyless signature by a CI workflow (URI SAN) matches an exact subject or an anchored subjectRegExp', (t) => {
  const uri = 'https://github.com/acme/os/.github/workflows/release.yml@refs/tags/v1.2.0';
  const layer = signed({ san: { uri } });
  t.is(verifySignatures(candidates(layer), policy({ identities: [{ subject: uri, issuer: ISSUER }] })).accepted.length, 1);
  const re = 'https://github\\.com/acme/os/\\.github/workflows/release\\.yml@refs/tags/v.*';
  t.is(verifySignatures(candidates(layer), policy({ identities: [{ subjectRegExp: re, issuer: ISSUER }] })).accepted.length, 1);
});

test('a keyless signature by another identity is rejected with SIGNATURE_IDENTITY_MISMATCH naming it', (t) => {
  const r = rejection(signed({ san: { email: 'bob@example.com' } }));
  t.is(r.code, 'SIGNATURE_IDENTITY_MISMATCH');
  t.true(r.message.includes('bob@example.com') && r.message.includes('alice@example.com'));
});

test('identity matching is anchored: malice@example.com.evil and evil-alice@example.com do not pass for alice@example.com', (t) => {
  for (const trap of ['malice@example.com.evil', 'evil-alice@example.com', 'alice@example.com.evil']) {
    const layer = signed({ san: { email: trap } });
    t.is(rejection(layer).code, 'SIGNATURE_IDENTITY_MISMATCH', `subject: ${trap}`);
    t.is(rejection(layer, policy({ identities: [{ subjectRegExp: 'alice@example\\.com', issuer: ISSUER }] })).code, 'SIGNATURE_IDENTITY_MISMATCH', `regexp: ${trap}`);
    // an unanchored-looking pattern is anchored as a whole too
    t.is(rejection(layer, policy({ identities: [{ subjectRegExp: 'alice@example\\.com|nobody', issuer: ISSUER }] })).code, 'SIGNATURE_IDENTITY_MISMATCH', `alternation: ${trap}`);
  }
});

test('a keyless signature from another OIDC issuer is rejected with SIGNATURE_IDENTITY_MISMATCH', (t) => {
  t.is(rejection(signed({ issuer: 'https://accounts.example.com.evil' })).code, 'SIGNATURE_IDENTITY_MISMATCH');
  t.is(rejection(signed({ issuer: 'https://accounts.example.co' })).code, 'SIGNATURE_IDENTITY_MISMATCH');
});

test('a certificate that had expired at the integrated time is rejected with SIGNATURE_CERT_EXPIRED', (t) => {
  const old = { notBefore: new Date('2021-06-01T00:00:00Z'), notAfter: new Date('2021-06-01T00:10:00Z') };
  const r = rejection(signed(old));
  t.is(r.code, 'SIGNATURE_CERT_EXPIRED');
  t.regex(r.message, /2021-06-01T00:10:00\.000Z/);
});

test('a certificate not yet valid at the integrated time is rejected with SIGNATURE_CERT_EXPIRED', (t) => {
  const r = rejection(signed({ notBefore: new Date(SIGNED_AT.getTime() + 3600_000), notAfter: new Date(SIGNED_AT.getTime() + 4200_000) }));
  t.is(r.code, 'SIGNATURE_CERT_EXPIRED');
});

test('an integratedTime moved outside the certificate validity without a valid SET is rejected with SIGNATURE_BAD_SET', (t) => {
  const layer = signed();
  const set = JSON.parse(layer.annotations[ANNOTATIONS.bundle]!);
  set.Payload.integratedTime += 3600;
  layer.annotations[ANNOTATIONS.bundle] = JSON.stringify(set);
  t.is(rejection(layer).code, 'SIGNATURE_BAD_SET');
});

test('an integratedTime changed by one second inside the validity is rejected with SIGNATURE_BAD_SET', (t) => {
  const layer = signed();
  const set = JSON.parse(layer.annotations[ANNOTATIONS.bundle]!);
  set.Payload.integratedTime += 1;
  layer.annotations[ANNOTATIONS.bundle] = JSON.stringify(set);
  t.is(rejection(layer).code, 'SIGNATURE_BAD_SET');
});

test('a leaf issued by a CA that is not in the trusted root is rejected with SIGNATURE_UNTRUSTED_KEY, even with the CA in the chain annotation', (t) => {
  const foreign = makeCA({ commonName: ca.commonName, organization: ca.organization });
  const leaf = foreign.issueLeaf({ san: { email: 'alice@example.com' }, issuer: ISSUER, notBefore: new Date(SIGNED_AT.getTime() - 60_000), notAfter: new Date(SIGNED_AT.getTime() + 60_000), ctLog: ctlog });
  const layer = signSimpleSigning({ repo: REPO, digest: D, leaf, chainPem: foreign.certPem, tlog, integratedTime: T });
  t.is(rejection(layer).code, 'SIGNATURE_UNTRUSTED_KEY');
});

test('the chain annotation is ignored: garbage or empty chains do not matter', (t) => {
  const layer = signed();
  layer.annotations[ANNOTATIONS.chain] = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
  t.is(verifySignatures(candidates(layer), policy()).accepted.length, 1);
  delete layer.annotations[ANNOTATIONS.chain];
  t.is(verifySignatures(candidates(layer), policy()).accepted.length, 1);
});

test('a leaf without an SCT, or with an SCT from an untrusted CT log, is rejected with SIGNATURE_UNTRUSTED_KEY', (t) => {
  t.is(rejection(signed({ sct: false })).code, 'SIGNATURE_UNTRUSTED_KEY');
  t.is(rejection(signed({ ctLog: makeCTLog() })).code, 'SIGNATURE_UNTRUSTED_KEY');
});

test('a leaf without the codeSigning extended key usage is rejected with SIGNATURE_UNTRUSTED_KEY', (t) => {
  const r = rejection(signed({ eku: false }));
  t.is(r.code, 'SIGNATURE_UNTRUSTED_KEY');
  t.regex(r.message, /codeSigning/);
});

test('a keyless signature with no timestamp at all is rejected with SIGNATURE_TLOG_MISSING, not a TypeError', (t) => {
  const layer = signed();
  delete layer.annotations[ANNOTATIONS.bundle];
  for (const requireTlog of [true, false]) {
    const r = rejection(layer, policy({ requireTlog }));
    t.is(r.code, 'SIGNATURE_TLOG_MISSING');
    t.notRegex(r.message, /TypeError/);
  }
});

test('a tampered payload is rejected with SIGNATURE_INVALID', (t) => {
  const layer = signed();
  layer.payload = Buffer.from(layer.payload.toString().replace(REPO, 'registry.test:5000/ox'));
  t.is(rejection(layer).code, 'SIGNATURE_INVALID');
});

test('a Rekor entry naming another certificate than the signing one is rejected with SIGNATURE_BAD_SET', (t) => {
  const leaf = leafFor();
  const layer = signSimpleSigning({ repo: REPO, digest: D, leaf, tlog, integratedTime: T, rekorKeyPem: leafFor().certPem });
  t.is(rejection(layer).code, 'SIGNATURE_BAD_SET');
});

test('a keyless signature is refused with SIGNATURE_IDENTITY_MISMATCH when the policy has keys but no identities', (t) => {
  const key = makeKeyPair();
  const r = rejection(signed(), { keys: [{ id: 'k', pem: key.publicPem }], identities: [], requireTlog: false, trustedRoot: root });
  t.is(r.code, 'SIGNATURE_IDENTITY_MISMATCH');
  t.regex(r.message, /no keyless identities/);
});

test('a keyless signature over another digest by the trusted identity is rejected with SIGNATURE_DIGEST_MISMATCH', (t) => {
  const other = `sha256:${'5'.repeat(64)}`;
  const layer = signSimpleSigning({ repo: REPO, digest: other, leaf: leafFor(), tlog, integratedTime: T });
  t.is(rejection(layer).code, 'SIGNATURE_DIGEST_MISMATCH');
});

test('when the trusted root lists the CA only until before the signing time, the signature is rejected with SIGNATURE_UNTRUSTED_KEY', (t) => {
  const shortRoot = makeTrustedRoot({ ca, ctlog, tlog, caValidUntil: new Date('2023-01-01T00:00:00Z') });
  t.is(rejection(signed(), policy({ trustedRoot: shortRoot })).code, 'SIGNATURE_UNTRUSTED_KEY');
});

test('a certificate annotation that is not a PEM certificate is rejected with SIGNATURE_INVALID', (t) => {
  const layer = signed();
  layer.annotations[ANNOTATIONS.certificate] = '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n';
  t.is(rejection(layer).code, 'SIGNATURE_INVALID');
  layer.annotations[ANNOTATIONS.certificate] = '-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n';
  t.is(rejection(layer).code, 'SIGNATURE_INVALID');
});
