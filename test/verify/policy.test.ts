import { generateKeyPairSync } from 'node:crypto';
import test from 'ava';
import { AgentError } from '../../src/model/errors.ts';
import type { TrustPolicy, VerificationReport } from '../../src/model/signature.ts';
import { MAX_CANDIDATES, checkPolicy, requireVerified, verifySignatures } from '../../src/verify/index.ts';
import { makeCA, makeCTLog, makeKeyPair, makeTlog, makeTrustedRoot, signSimpleSigning, toCandidate } from '../helpers/sigstore.ts';

const key = makeKeyPair();
const tlog = makeTlog();
const ca = makeCA();
const fullRoot = makeTrustedRoot({ ca, ctlog: makeCTLog(), tlog });
const D = `sha256:${'c'.repeat(64)}`;

function policyCode(p: TrustPolicy): string | undefined {
  try {
    checkPolicy(p);
  } catch (err) {
    return err instanceof AgentError ? err.code : `raw ${String(err)}`;
  }
  return undefined;
}

const base: TrustPolicy = { keys: [{ id: 'k', pem: key.publicPem }], identities: [], requireTlog: false };

test('a policy with a pinned P-256, P-384, RSA or PKCS#1 RSA key is usable', (t) => {
  t.is(policyCode(base), undefined);
  t.is(policyCode({ ...base, keys: [{ id: 'p384', pem: makeKeyPair('p384').publicPem }] }), undefined);
  const rsa = makeKeyPair('rsa');
  t.is(policyCode({ ...base, keys: [{ id: 'rsa', pem: rsa.publicPem }] }), undefined);
  const pkcs1 = rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  t.true(pkcs1.includes('BEGIN RSA PUBLIC KEY'));
  t.is(policyCode({ ...base, keys: [{ id: 'pkcs1', pem: pkcs1 }] }), undefined);
  t.is(policyCode({ keys: [], identities: [{ subject: 'a@b.c', issuer: 'https://i' }], trustedRoot: fullRoot, requireTlog: true }), undefined);
});

test('a policy that can accept nothing is refused with VERIFY_FAILED', (t) => {
  t.is(policyCode({ keys: [], identities: [], requireTlog: false }), 'VERIFY_FAILED');
  t.is(policyCode({ keys: [], identities: [], requireTlog: false, trustedRoot: fullRoot }), 'VERIFY_FAILED');
});

test('identities without a trusted root, or with a root lacking CAs or CT logs, are refused with VERIFY_FAILED', (t) => {
  const ids = [{ subject: 'a@b.c', issuer: 'https://i' }];
  t.is(policyCode({ keys: [], identities: ids, requireTlog: false }), 'VERIFY_FAILED');
  t.is(policyCode({ keys: [], identities: ids, requireTlog: false, trustedRoot: makeTrustedRoot({ tlog }) }), 'VERIFY_FAILED');
  t.is(policyCode({ keys: [], identities: ids, requireTlog: false, trustedRoot: makeTrustedRoot({ tlog, ca }) }), 'VERIFY_FAILED');
});

test('requireTlog without a trusted root with a log is refused with VERIFY_FAILED', (t) => {
  t.is(policyCode({ ...base, requireTlog: true }), 'VERIFY_FAILED');
  t.is(policyCode({ ...base, requireTlog: true, trustedRoot: makeTrustedRoot({ ca }) }), 'VERIFY_FAILED');
  t.is(policyCode({ ...base, requireTlog: true, trustedRoot: makeTrustedRoot({ tlog }) }), undefined);
});

test('a CERTIFICATE pem given as a key is refused with VERIFY_FAILED naming the key', (t) => {
  const err = t.throws(() => checkPolicy({ ...base, keys: [{ id: 'fulcio-root', pem: ca.certPem }] }), { instanceOf: AgentError });
  t.is(err.code, 'VERIFY_FAILED');
  t.regex(err.message, /fulcio-root.*CERTIFICATE/);
});

test('unsupported key types and malformed PEM are refused with VERIFY_FAILED', (t) => {
  const pem = (k: ReturnType<typeof generateKeyPairSync>['publicKey']): string => k.export({ type: 'spki', format: 'pem' }).toString();
  const bad: Array<[string, string]> = [
    ['P-521', pem(generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey)],
    ['secp256k1', pem(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey)],
    ['Ed25519', pem(generateKeyPairSync('ed25519').publicKey)],
    ['RSA 1024', pem(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey)],
    ['two blocks', key.publicPem + makeKeyPair().publicPem],
    ['no PEM', 'ssh-ed25519 AAAA'],
    ['garbage body', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'],
    ['private key', key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()],
  ];
  for (const [why, p] of bad) t.is(policyCode({ ...base, keys: [{ id: why, pem: p }] }), 'VERIFY_FAILED', why);
});

test('malformed identity rules and trusted roots are refused with VERIFY_FAILED', (t) => {
  const withRoot = { keys: [], trustedRoot: fullRoot, requireTlog: false };
  t.is(policyCode({ ...withRoot, identities: [{ issuer: 'https://i' }] }), 'VERIFY_FAILED', 'no subject');
  t.is(policyCode({ ...withRoot, identities: [{ subject: 'a', subjectRegExp: 'a', issuer: 'https://i' }] }), 'VERIFY_FAILED', 'both');
  t.is(policyCode({ ...withRoot, identities: [{ subject: 'a', issuer: '' }] }), 'VERIFY_FAILED', 'no issuer');
  t.is(policyCode({ ...withRoot, identities: [{ subjectRegExp: '(', issuer: 'https://i' }] }), 'VERIFY_FAILED', 'bad regexp');
  t.is(policyCode({ ...base, trustedRoot: 'not an object' }), 'VERIFY_FAILED', 'root is a string');
  const badKey = structuredClone(fullRoot) as any;
  badKey.tlogs[0].publicKey.rawBytes = 'AAAA';
  t.is(policyCode({ ...base, trustedRoot: badKey }), 'VERIFY_FAILED', 'root with an unreadable log key');
});

test('verifySignatures throws VERIFY_FAILED for an unusable policy instead of rejecting candidates', (t) => {
  const c = { digest: D, repository: 'r', simpleSigning: [toCandidate(signSimpleSigning({ digest: D, key }))], bundles: [] };
  const err = t.throws(() => verifySignatures(c, { keys: [], identities: [], requireTlog: false }), { instanceOf: AgentError });
  t.is(err.code, 'VERIFY_FAILED');
});

test('requireVerified returns the accepted signatures', (t) => {
  const c = { digest: D, repository: 'r', simpleSigning: [toCandidate(signSimpleSigning({ digest: D, key }))], bundles: [] };
  const accepted = requireVerified(verifySignatures(c, base), 'registry.test/os:v1');
  t.is(accepted.length, 1);
  t.is(accepted[0]!.keyId, 'k');
});

test('with no candidates at all, requireVerified throws SIGNATURE_NOT_FOUND naming the image and digest', (t) => {
  const report = verifySignatures({ digest: D, repository: 'r', simpleSigning: [], bundles: [] }, base);
  const err = t.throws(() => requireVerified(report, 'registry.test/os:v1'), { instanceOf: AgentError });
  t.is(err.code, 'SIGNATURE_NOT_FOUND');
  t.true(err.message.includes('registry.test/os:v1') && err.message.includes(D));
});

test('requireVerified throws the most advanced rejection code and lists every candidate on its own line', (t) => {
  const report: VerificationReport = {
    digest: D,
    accepted: [],
    rejected: [
      { source: 'a', code: 'SIGNATURE_INVALID', message: 'bad\nbytes' },
      { source: 'b', code: 'SIGNATURE_IDENTITY_MISMATCH', message: 'signed by mallory' },
      { source: 'c', code: 'SIGNATURE_UNTRUSTED_KEY', message: 'unknown key' },
    ],
  };
  const err = t.throws(() => requireVerified(report, 'registry.test/os:v1'), { instanceOf: AgentError });
  t.is(err.code, 'SIGNATURE_IDENTITY_MISMATCH');
  const lines = err.message.split('\n');
  t.true(lines[0]!.includes('registry.test/os:v1') && lines[0]!.includes(D));
  t.deepEqual(lines.slice(1), ['  - a: SIGNATURE_INVALID: bad bytes', '  - b: SIGNATURE_IDENTITY_MISMATCH: signed by mallory', '  - c: SIGNATURE_UNTRUSTED_KEY: unknown key']);
  const order: Array<[string[], string]> = [
    [['SIGNATURE_INVALID', 'SIGNATURE_UNTRUSTED_KEY'], 'SIGNATURE_UNTRUSTED_KEY'],
    [['SIGNATURE_UNTRUSTED_KEY', 'SIGNATURE_TLOG_MISSING'], 'SIGNATURE_TLOG_MISSING'],
    [['SIGNATURE_TLOG_MISSING', 'SIGNATURE_BAD_SET'], 'SIGNATURE_BAD_SET'],
    [['SIGNATURE_BAD_SET', 'SIGNATURE_CERT_EXPIRED'], 'SIGNATURE_CERT_EXPIRED'],
    [['SIGNATURE_IDENTITY_MISMATCH', 'SIGNATURE_DIGEST_MISMATCH'], 'SIGNATURE_DIGEST_MISMATCH'],
  ];
  for (const [codes, best] of order) {
    const r: VerificationReport = { digest: D, accepted: [], rejected: codes.map((code, i) => ({ source: String(i), code, message: 'm' })) };
    t.is((t.throws(() => requireVerified(r, 'img'), { instanceOf: AgentError })).code as string, best, codes.join(' vs '));
  }
});

test(`at most ${MAX_CANDIDATES} candidates are examined; the rest are rejected unexamined`, (t) => {
  const bad = signSimpleSigning({ digest: D, key: makeKeyPair() });
  const good = signSimpleSigning({ digest: D, key });
  const layers = [...Array.from({ length: MAX_CANDIDATES }, (_, i) => toCandidate(bad, `bad ${i}`)), toCandidate(good, 'good, too late')];
  const r = verifySignatures({ digest: D, repository: 'r', simpleSigning: layers, bundles: [] }, base);
  t.is(r.accepted.length, 0);
  t.is(r.rejected.length, MAX_CANDIDATES + 1);
  t.like(r.rejected[MAX_CANDIDATES], { source: 'good, too late', code: 'SIGNATURE_INVALID' });
  t.regex(r.rejected[MAX_CANDIDATES]!.message, /not examined/);
});
