/** The test signing toolkit (test/helpers/sigstore.ts) makes what real signers make; checked with independent parsers. */
import { X509Certificate } from 'node:crypto';
import test from 'ava';
import { X509Certificate as SigstoreCertificate } from '@sigstore/core';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { toTrustMaterial } from '@sigstore/verify';
import { verifySignatures } from '../../src/verify/index.ts';
import { makeCA, makeCTLog, makeKeyPair, makeSigstoreWorld, makeTlog, signBundleV03, signImageKeyless, signImageWithKey, toCandidate } from '../helpers/sigstore.ts';

test('the CA and its back-dated leaves are well-formed X.509 that OpenSSL (node:crypto) verifies', (t) => {
  const ca = makeCA({ notBefore: new Date('2019-01-01T00:00:00Z'), notAfter: new Date('2029-01-01T00:00:00Z') });
  const leaf = ca.issueLeaf({
    san: { email: 'alice@example.com' },
    issuer: 'https://issuer.test',
    notBefore: new Date('2020-02-02T02:02:02Z'),
    notAfter: new Date('2020-02-02T02:12:02Z'),
    ctLog: makeCTLog(),
  });
  const root = new X509Certificate(ca.cert);
  const cert = new X509Certificate(leaf.certPem);
  t.true(root.ca);
  t.true(root.verify(root.publicKey));
  t.true(cert.verify(root.publicKey));
  t.true(cert.checkIssued(root));
  t.false(cert.ca);
  t.is(cert.subjectAltName, 'email:alice@example.com');
  t.is(new Date(cert.validFrom).toISOString(), '2020-02-02T02:02:02.000Z');
  t.is(new Date(cert.validTo).toISOString(), '2020-02-02T02:12:02.000Z');
  t.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.3']);
  t.is(cert.publicKey.export({ type: 'spki', format: 'der' }).toString('hex'), leaf.keyPair.spki.toString('hex'));
});

test('leaves carry Fulcio\'s extensions in Fulcio\'s order, the SCT last', (t) => {
  const ca = makeCA();
  const leaf = ca.issueLeaf({ san: { uri: 'https://ci.test/wf@refs/heads/main' }, issuer: 'https://issuer.test', notBefore: new Date('2024-01-01T00:00:00Z'), notAfter: new Date('2024-01-01T00:10:00Z'), ctLog: makeCTLog() });
  const cert = SigstoreCertificate.parse(Buffer.from(leaf.cert));
  const oids = cert.extensions.map((e) => e.subs[0]!.toOID());
  t.deepEqual(oids, ['2.5.29.15', '2.5.29.37', '2.5.29.14', '2.5.29.35', '2.5.29.17', '1.3.6.1.4.1.57264.1.1', '1.3.6.1.4.1.57264.1.8', '1.3.6.1.4.1.11129.2.4.2']);
  t.true(cert.extKeyUsage!.digitalSignature);
  t.true(cert.extKeyUsage!.critical);
  t.true(cert.extSubjectAltName!.critical);
  t.is(cert.subjectAltName, 'https://ci.test/wf@refs/heads/main');
  t.is(cert.extension('1.3.6.1.4.1.57264.1.1')!.value.toString(), 'https://issuer.test');
  t.is(cert.extSCT!.signedCertificateTimestamps.length, 1);
  t.true(cert.verify(SigstoreCertificate.parse(Buffer.from(ca.cert))));
  const bare = ca.issueLeaf({ san: { email: 'a@b.c' }, issuer: 'i', notBefore: new Date(0), notAfter: new Date(1e12), sct: false, eku: false });
  t.deepEqual(SigstoreCertificate.parse(Buffer.from(bare.cert)).extensions.map((e) => e.subs[0]!.toOID()), ['2.5.29.15', '2.5.29.14', '2.5.29.35', '2.5.29.17', '1.3.6.1.4.1.57264.1.1', '1.3.6.1.4.1.57264.1.8']);
});

test('the Rekor bundle annotation has cosign\'s exact field names and order', (t) => {
  const tlog = makeTlog();
  const json = JSON.stringify(tlog.sign(Buffer.from('{}'), 1700000000, 12));
  t.regex(json, /^\{"SignedEntryTimestamp":"[A-Za-z0-9+/=]+","Payload":\{"body":"e30=","integratedTime":1700000000,"logIndex":12,"logID":"[0-9a-f]{64}"\}\}$/);
});

test('log entries carry a signed checkpoint in the note format and an RFC 6962 proof', (t) => {
  const tlog = makeTlog({ baseUrl: 'https://rekor.example.test' });
  const e0 = tlog.append(Buffer.from('a'), { kind: 'hashedrekord', version: '0.0.1', integratedTime: 1 });
  const e1 = tlog.append(Buffer.from('b'), { kind: 'hashedrekord', version: '0.0.1', integratedTime: 2 });
  t.is(e0.inclusionProof!.treeSize, '1');
  t.deepEqual(e0.inclusionProof!.hashes, []);
  t.is(e1.inclusionProof!.treeSize, '2');
  t.is(e1.inclusionProof!.hashes.length, 1);
  t.regex(e1.inclusionProof!.checkpoint.envelope, /^rekor\.example\.test - \d+\n2\n[A-Za-z0-9+/=]{44}\n\n\u2014 rekor\.example\.test [A-Za-z0-9+/=]+\n$/);
  t.is(tlog.size, 2);
});

test('the trusted root JSON loads into @sigstore/verify trust material', (t) => {
  const world = makeSigstoreWorld();
  const tm = toTrustMaterial(TrustedRoot.fromJSON(world.trustedRoot));
  t.is(tm.certificateAuthorities.length, 1);
  t.is(tm.tlogs.length, 1);
  t.is(tm.ctlogs.length, 1);
  t.true(tm.tlogs[0]!.logID.equals(world.tlog.logIdBytes));
  t.true(tm.ctlogs[0]!.logID.equals(world.ctlog.logId));
});

test('signImageWithKey and signImageKeyless produce both layouts, which the verifier accepts', (t) => {
  const world = makeSigstoreWorld();
  const key = makeKeyPair();
  const digest = `sha256:${'d'.repeat(64)}`;
  const byKey = signImageWithKey({ repo: 'registry.test/os', digest, key, tlog: world.tlog });
  const keyless = signImageKeyless({ world, repo: 'registry.test/os', digest, subject: { email: 'ci@example.com' }, issuer: 'https://issuer.test' });
  t.deepEqual(JSON.parse(keyless.bundleJson.toString()), keyless.bundle);
  const r = verifySignatures(
    {
      digest,
      repository: 'registry.test/os',
      simpleSigning: [toCandidate(byKey.simpleSigning, 'key sig'), toCandidate(keyless.simpleSigning, 'keyless sig')],
      bundles: [{ source: 'key bundle', bundle: JSON.parse(byKey.bundleJson.toString()) }, { source: 'keyless bundle', bundle: keyless.bundle }],
    },
    { keys: [{ id: 'k', pem: key.publicPem }], trustedRoot: world.trustedRoot, identities: [{ subject: 'ci@example.com', issuer: 'https://issuer.test' }], requireTlog: true },
  );
  t.deepEqual(r.rejected, []);
  t.deepEqual(r.accepted.map((a) => `${a.kind}/${a.mode}`).sort(), ['bundle/key', 'bundle/keyless', 'simple-signing/key', 'simple-signing/keyless']);
});

test('a bundle signed by the toolkit is a v0.3 DSSE bundle with a cosign sign statement', (t) => {
  const key = makeKeyPair();
  const b = signBundleV03({ digest: `sha256:${'e'.repeat(64)}`, signer: key }) as any;
  t.is(b.mediaType, 'application/vnd.dev.sigstore.bundle.v0.3+json');
  t.is(b.dsseEnvelope.payloadType, 'application/vnd.in-toto+json');
  t.deepEqual(JSON.parse(Buffer.from(b.dsseEnvelope.payload, 'base64').toString()), {
    _type: 'https://in-toto.io/Statement/v1',
    subject: [{ digest: { sha256: 'e'.repeat(64) } }],
    predicateType: 'https://sigstore.dev/cosign/sign/v1',
    predicate: {},
  });
});
