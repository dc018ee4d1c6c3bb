import { X509Certificate, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import test from 'ava';
import { bundleFromJSON } from '@sigstore/bundle';
import { AgentError } from '../../src/model/errors.ts';
import { BUNDLE_V01_MEDIA_TYPE, parseRekorBundleAnnotation, toBundleV01 } from '../../src/verify/adapter.ts';
import { makeKeyPair, signSimpleSigning } from '../helpers/sigstore.ts';

const fx = (p: string): Buffer => readFileSync(new URL(`../fixtures/sigstore/containers-image/${p}`, import.meta.url));

function realLayer(): { payload: Buffer; annotations: Record<string, string> } {
  return {
    payload: fx('rekor-payload'),
    annotations: {
      'dev.cosignproject.cosign/signature': fx('rekor-sig').toString(),
      'dev.sigstore.cosign/certificate': fx('fulcio-cert').toString(),
      'dev.sigstore.cosign/chain': fx('fulcio-chain').toString(),
      'dev.sigstore.cosign/bundle': fx('rekor-set').toString(),
    },
  };
}

test('the real cosign annotations map to a v0.1 bundle as spec/sigstore.md 3.3 says', (t) => {
  const layer = realLayer();
  const set = JSON.parse(layer.annotations['dev.sigstore.cosign/bundle']!);
  const { bundle, rekor } = toBundleV01(layer, { hint: 'h', includeEvidence: true });
  t.is(bundle.mediaType, BUNDLE_V01_MEDIA_TYPE);
  t.is(bundle.verificationMaterial.publicKey, undefined);
  t.is(bundle.verificationMaterial.x509CertificateChain!.certificates.length, 1, 'the chain annotation is not used');
  t.is(bundle.verificationMaterial.x509CertificateChain!.certificates[0]!.rawBytes, new X509Certificate(fx('fulcio-cert')).raw.toString('base64'));
  t.deepEqual(bundle.verificationMaterial.tlogEntries, [
    {
      logIndex: '8949589',
      logId: { keyId: Buffer.from('c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d', 'hex').toString('base64') },
      kindVersion: { kind: 'hashedrekord', version: '0.0.1' },
      integratedTime: '1670870899',
      inclusionPromise: { signedEntryTimestamp: set.SignedEntryTimestamp },
      canonicalizedBody: set.Payload.body,
    },
  ]);
  t.deepEqual(bundle.messageSignature, {
    messageDigest: { algorithm: 'SHA2_256', digest: createHash('sha256').update(layer.payload).digest('base64') },
    signature: layer.annotations['dev.cosignproject.cosign/signature'],
  });
  t.is(rekor!.body.kind, 'hashedrekord');
  t.notThrows(() => bundleFromJSON(bundle));
});

test('a key-mode layer gets the key hint, and its evidence only when asked', (t) => {
  const layer = signSimpleSigning({ key: makeKeyPair() });
  const withRfc = { ...layer.annotations, 'dev.sigstore.cosign/rfc3161timestamp': JSON.stringify({ SignedRFC3161Timestamp: 'AAAA' }) };
  const a = toBundleV01({ payload: layer.payload, annotations: withRfc }, { hint: 'pinned', includeEvidence: true });
  t.deepEqual(a.bundle.verificationMaterial.publicKey, { hint: 'pinned' });
  t.deepEqual(a.bundle.verificationMaterial.timestampVerificationData, { rfc3161Timestamps: [{ signedTimestamp: 'AAAA' }] });
  const b = toBundleV01({ payload: layer.payload, annotations: { ...withRfc, ...realLayer().annotations, 'dev.sigstore.cosign/certificate': '' } }, { hint: 'pinned', includeEvidence: false });
  t.deepEqual(b.bundle.verificationMaterial.tlogEntries, []);
  t.is(b.bundle.verificationMaterial.timestampVerificationData, undefined);
  t.is(b.rekor, undefined);
});

test('whitespace inside the signature annotation is stripped; a broken certificate annotation is SIGNATURE_INVALID', (t) => {
  const layer = realLayer();
  const sig = layer.annotations['dev.cosignproject.cosign/signature']!;
  layer.annotations['dev.cosignproject.cosign/signature'] = `${sig.slice(0, 10)}\n ${sig.slice(10)}\n`;
  t.is(toBundleV01(layer, { hint: 'h', includeEvidence: true }).bundle.messageSignature.signature, sig);
  layer.annotations['dev.sigstore.cosign/certificate'] = 'not a pem';
  const err = t.throws(() => toBundleV01(layer, { hint: 'h', includeEvidence: true }), { instanceOf: AgentError });
  t.is(err.code, 'SIGNATURE_INVALID');
  t.regex(err.message, /dev\.sigstore\.cosign\/certificate/);
});

test('the Rekor bundle annotation parser requires cosign\'s exact, case-sensitive field names', (t) => {
  const good = fx('rekor-set').toString();
  t.is(parseRekorBundleAnnotation(good).Payload.logIndex, 8949589);
  const lower = good.replace('"SignedEntryTimestamp"', '"signedEntryTimestamp"');
  t.is(t.throws(() => parseRekorBundleAnnotation(lower), { instanceOf: AgentError }).code, 'SIGNATURE_BAD_SET');
  const hexUpper = good.replace('c0d23d6a', 'C0D23D6A');
  t.is(t.throws(() => parseRekorBundleAnnotation(hexUpper), { instanceOf: AgentError }).code, 'SIGNATURE_BAD_SET');
});
