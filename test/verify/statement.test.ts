import test from 'ava';
import { AgentError } from '../../src/model/errors.ts';
import { checkCosignStatement, COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE } from '../../src/verify/statement.ts';
import { cosignStatement } from '../helpers/sigstore.ts';

const D = `sha256:${'a'.repeat(64)}`;
const OTHER = `sha256:${'b'.repeat(64)}`;

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof AgentError ? err.code : 'raw';
  }
  return undefined;
}

test('a cosign sign statement over an allowed digest returns that digest', (t) => {
  t.is(checkCosignStatement(IN_TOTO_PAYLOAD_TYPE, cosignStatement(D), [D]), D);
  t.is(checkCosignStatement(IN_TOTO_PAYLOAD_TYPE, cosignStatement([OTHER, D]), [D]), D);
});

test('a statement with another predicateType (SLSA provenance) is not a signature: SIGNATURE_INVALID naming it', (t) => {
  const err = t.throws(() => checkCosignStatement(IN_TOTO_PAYLOAD_TYPE, cosignStatement(D, 'https://slsa.dev/provenance/v1'), [D]), {
    instanceOf: AgentError,
  });
  t.is(err.code, 'SIGNATURE_INVALID');
  t.true(err.message.includes('https://slsa.dev/provenance/v1') && err.message.includes(COSIGN_SIGN_PREDICATE));
});

test('a statement of another _type or payloadType is refused with SIGNATURE_INVALID', (t) => {
  t.is(code(() => checkCosignStatement(IN_TOTO_PAYLOAD_TYPE, cosignStatement(D, COSIGN_SIGN_PREDICATE, 'https://in-toto.io/Statement/v0.1'), [D])), 'SIGNATURE_INVALID');
  t.is(code(() => checkCosignStatement('application/json', cosignStatement(D), [D])), 'SIGNATURE_INVALID');
  t.is(code(() => checkCosignStatement(IN_TOTO_PAYLOAD_TYPE, Buffer.from('not json'), [D])), 'SIGNATURE_INVALID');
  t.is(code(() => checkCosignStatement(IN_TOTO_PAYLOAD_TYPE, Buffer.from(JSON.stringify({ _type: 'https://in-toto.io/Statement/v1', predicateType: COSIGN_SIGN_PREDICATE, subject: [] })), [D])), 'SIGNATURE_INVALID');
  const noSha = { _type: 'https://in-toto.io/Statement/v1', predicateType: COSIGN_SIGN_PREDICATE, subject: [{ digest: { sha512: 'ab' } }] };
  t.is(code(() => checkCosignStatement(IN_TOTO_PAYLOAD_TYPE, Buffer.from(JSON.stringify(noSha)), [D])), 'SIGNATURE_INVALID');
});

test('a cosign statement over another digest throws SIGNATURE_DIGEST_MISMATCH naming both', (t) => {
  const err = t.throws(() => checkCosignStatement(IN_TOTO_PAYLOAD_TYPE, cosignStatement(OTHER), [D]), { instanceOf: AgentError });
  t.is(err.code, 'SIGNATURE_DIGEST_MISMATCH');
  t.true(err.message.includes(OTHER) && err.message.includes(D));
});
