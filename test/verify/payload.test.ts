import { readFileSync } from 'node:fs';
import test from 'ava';
import { AgentError } from '../../src/model/errors.ts';
import { checkSimpleSigningClaims, normaliseRepository, parseSimpleSigningPayload } from '../../src/verify/payload.ts';
import { simpleSigningPayload } from '../helpers/sigstore.ts';

const realPayload = readFileSync(new URL('../fixtures/sigstore/containers-image/rekor-payload', import.meta.url));
const REAL_REPO = '192.168.64.2:5000/test-repo-2100826901021538654/alpine';
const REAL_DIGEST = 'sha256:fa93b01658e3a5a1686dc3ae55f170d8de487006fb53a28efcd12ab0710a2e5f';
const D = `sha256:${'a'.repeat(64)}`;

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof AgentError ? err.code : `not an AgentError: ${String(err)}`;
  }
  return undefined;
}

test('a payload written by cosign parses into its docker-reference and digest', (t) => {
  const p = parseSimpleSigningPayload(realPayload);
  t.deepEqual(p, { dockerReference: REAL_REPO, manifestDigest: REAL_DIGEST, optional: null });
});

test('the toolkit writes the same bytes as cosign for the same claims', (t) => {
  t.true(simpleSigningPayload(REAL_REPO, REAL_DIGEST).equals(realPayload));
});

test('the toolkit writes optional as Go does, keys sorted (containers/image creator and timestamp)', (t) => {
  const bytes = simpleSigningPayload('reference#@!', 'digest!@#', { timestamp: 1484683104, creator: 'CREATOR' });
  // expected string from containers/image signature/internal/sigstore_payload_test.go
  t.is(
    bytes.toString(),
    '{"critical":{"identity":{"docker-reference":"reference#@!"},"image":{"docker-manifest-digest":"digest!@#"},"type":"cosign container image signature"},"optional":{"creator":"CREATOR","timestamp":1484683104}}',
  );
  const p = parseSimpleSigningPayload(simpleSigningPayload('r.test/os:v1', D, { creator: 'containers/image 5.x', timestamp: 1 }));
  t.deepEqual(p.optional, { creator: 'containers/image 5.x', timestamp: 1 });
});

test('when critical.type is not the cosign type, it throws SIGNATURE_INVALID naming the type', (t) => {
  const bytes = Buffer.from(realPayload.toString().replace('cosign container image signature', 'atomic container signature'));
  const err = t.throws(() => parseSimpleSigningPayload(bytes), { instanceOf: AgentError });
  t.is(err.code, 'SIGNATURE_INVALID');
  t.regex(err.message, /atomic container signature/);
});

test('when a critical field is missing, unknown or mistyped, it throws SIGNATURE_INVALID', (t) => {
  const base = JSON.parse(realPayload.toString());
  const variants: Array<[string, (v: any) => void]> = [
    ['no critical', (v) => delete v.critical],
    ['no image', (v) => delete v.critical.image],
    ['no identity', (v) => delete v.critical.identity],
    ['no digest', (v) => delete v.critical.image['docker-manifest-digest']],
    ['digest not a string', (v) => (v.critical.image['docker-manifest-digest'] = 1)],
    ['digest malformed', (v) => (v.critical.image['docker-manifest-digest'] = 'sha256:xyz')],
    ['reference not a string', (v) => (v.critical.identity['docker-reference'] = 1)],
    ['unknown critical field', (v) => (v.critical.unexpected = 1)],
    ['unknown image field', (v) => (v.critical.image.unexpected = 1)],
    ['unknown top-level field', (v) => (v.unexpected = 1)],
    ['optional is a number', (v) => (v.optional = 1)],
    ['critical is an array', (v) => (v.critical = [])],
  ];
  for (const [why, edit] of variants) {
    const v = structuredClone(base);
    edit(v);
    t.is(codeOf(() => parseSimpleSigningPayload(Buffer.from(JSON.stringify(v)))), 'SIGNATURE_INVALID', why);
  }
  t.is(codeOf(() => parseSimpleSigningPayload(Buffer.from('&'))), 'SIGNATURE_INVALID', 'not JSON');
  t.is(codeOf(() => parseSimpleSigningPayload(Buffer.from('[]'))), 'SIGNATURE_INVALID', 'array');
  t.is(codeOf(() => parseSimpleSigningPayload(Buffer.from([0xff, 0xfe]))), 'SIGNATURE_INVALID', 'not UTF-8');
});

test('an unknown field inside optional is accepted and ignored', (t) => {
  const v = JSON.parse(realPayload.toString());
  v.optional = { anything: { nested: true } };
  t.is(parseSimpleSigningPayload(Buffer.from(JSON.stringify(v))).manifestDigest, REAL_DIGEST);
});

test('when the payload exceeds 64 KiB, it throws SIGNATURE_INVALID', (t) => {
  const big = simpleSigningPayload('r.test/os', D, { pad: 'x'.repeat(70 * 1024) });
  const err = t.throws(() => parseSimpleSigningPayload(big), { instanceOf: AgentError });
  t.is(err.code, 'SIGNATURE_INVALID');
  t.regex(err.message, /65536/);
});

test('when the signed digest is not an allowed one, it throws SIGNATURE_DIGEST_MISMATCH naming both digests', (t) => {
  const p = parseSimpleSigningPayload(realPayload);
  t.notThrows(() => checkSimpleSigningClaims(p, { allowedDigests: [D, REAL_DIGEST] }));
  const err = t.throws(() => checkSimpleSigningClaims(p, { allowedDigests: [D] }), { instanceOf: AgentError });
  t.is(err.code, 'SIGNATURE_DIGEST_MISMATCH');
  t.true(err.message.includes(REAL_DIGEST) && err.message.includes(D));
});

test('when a repository is required, the signed docker-reference must name it (tag ignored), else SIGNATURE_DIGEST_MISMATCH', (t) => {
  const p = parseSimpleSigningPayload(simpleSigningPayload('registry.test:5000/os/base:v1.2', D));
  t.notThrows(() => checkSimpleSigningClaims(p, { allowedDigests: [D], requireRepository: 'registry.test:5000/os/base' }));
  t.notThrows(() => checkSimpleSigningClaims(p, { allowedDigests: [D], requireRepository: 'REGISTRY.test:5000/os/base:other' }));
  const err = t.throws(() => checkSimpleSigningClaims(p, { allowedDigests: [D], requireRepository: 'registry.test:5000/os/other' }), {
    instanceOf: AgentError,
  });
  t.is(err.code, 'SIGNATURE_DIGEST_MISMATCH');
  t.true(err.message.includes('registry.test:5000/os/base:v1.2') && err.message.includes('registry.test:5000/os/other'));
});

test('repositories compare with Docker Hub spellings normalised', (t) => {
  for (const r of ['alpine', 'library/alpine', 'docker.io/library/alpine', 'index.docker.io/library/alpine:3.19', 'registry-1.docker.io/library/alpine@' + D, 'docker://alpine:latest']) {
    t.is(normaliseRepository(r), 'docker.io/library/alpine', r);
  }
  t.is(normaliseRepository('localhost/os'), 'localhost/os');
  t.is(normaliseRepository('localhost:5000/os:1'), 'localhost:5000/os');
  t.is(normaliseRepository('rancher/elemental'), 'docker.io/rancher/elemental');
  t.is(normaliseRepository('127.0.0.1:5000/a/b/c:tag@' + D), '127.0.0.1:5000/a/b/c');
});
