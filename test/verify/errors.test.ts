import test from 'ava';
import { PolicyError, VerificationError } from '@sigstore/verify';
import { AgentError } from '../../src/model/errors.ts';
import { REJECTION_RANK, SIGSTORE_ERROR_CODES, rejectionRank, toSignatureError } from '../../src/verify/errors.ts';

// every VerificationErrorCode/PolicyErrorCode of @sigstore/verify 4.1.3 (dist/error.d.ts)
const LIBRARY_CODES = [
  'NOT_IMPLEMENTED_ERROR',
  'TLOG_ERROR',
  'TLOG_INCLUSION_PROOF_ERROR',
  'TLOG_INCLUSION_PROMISE_ERROR',
  'TLOG_MISSING_INCLUSION_ERROR',
  'TLOG_BODY_ERROR',
  'CERTIFICATE_ERROR',
  'PUBLIC_KEY_ERROR',
  'SIGNATURE_ERROR',
  'TIMESTAMP_ERROR',
  'UNTRUSTED_SIGNER_ERROR',
];

test('the mapping table covers every @sigstore/verify error code with a SIGNATURE_* code', (t) => {
  t.deepEqual(Object.keys(SIGSTORE_ERROR_CODES).sort(), [...LIBRARY_CODES].sort());
  for (const code of Object.values(SIGSTORE_ERROR_CODES)) t.true(REJECTION_RANK.includes(code), code);
});

test('library errors map through the table and keep the library code and message', (t) => {
  const cases: Array<[Error, string]> = [
    [new VerificationError({ code: 'TLOG_INCLUSION_PROMISE_ERROR', message: 'inclusion promise could not be verified' }), 'SIGNATURE_BAD_SET'],
    [new VerificationError({ code: 'CERTIFICATE_ERROR', message: 'Failed to verify certificate chain', cause: new Error('no trusted certificate path found') }), 'SIGNATURE_UNTRUSTED_KEY'],
    [new VerificationError({ code: 'PUBLIC_KEY_ERROR', message: 'key not found' }), 'SIGNATURE_UNTRUSTED_KEY'],
    [new VerificationError({ code: 'SIGNATURE_ERROR', message: 'signature verification failed' }), 'SIGNATURE_INVALID'],
    [new VerificationError({ code: 'TIMESTAMP_ERROR', message: 'timestamp could not be verified' }), 'SIGNATURE_BAD_SET'],
    [new VerificationError({ code: 'TLOG_ERROR', message: 'expected 1 tlog entries, got 0' }), 'SIGNATURE_TLOG_MISSING'],
    [new PolicyError({ code: 'UNTRUSTED_SIGNER_ERROR', message: 'certificate identity error' }), 'SIGNATURE_IDENTITY_MISMATCH'],
  ];
  for (const [err, code] of cases) {
    const mapped = toSignatureError(err, 'keyless verification');
    t.is(mapped.code as string, code);
    t.true(mapped.message.startsWith('keyless verification: ') && mapped.message.includes(err.message));
    t.is(mapped.cause, err);
  }
  t.regex(toSignatureError(cases[1]![0], 'x').message, /no trusted certificate path found/);
});

test('anything else (TypeError, unknown code, non-Error) becomes SIGNATURE_INVALID with its message; AgentErrors pass through', (t) => {
  const typeError = toSignatureError(new TypeError("Cannot read properties of undefined (reading 'publicKey')"), 'ctx');
  t.is(typeError.code, 'SIGNATURE_INVALID');
  t.regex(typeError.message, /TypeError: Cannot read properties/);
  t.is(toSignatureError(new VerificationError({ code: 'SOMETHING_NEW' as never, message: 'new' }), 'ctx').code, 'SIGNATURE_INVALID');
  t.is(toSignatureError('a string', 'ctx').code, 'SIGNATURE_INVALID');
  const own = new AgentError('SIGNATURE_TLOG_MISSING', 'none');
  t.is(toSignatureError(own, 'ctx'), own);
});

test('the rejection rank prefers the check that got furthest', (t) => {
  t.true(rejectionRank('SIGNATURE_DIGEST_MISMATCH') < rejectionRank('SIGNATURE_IDENTITY_MISMATCH'));
  t.true(rejectionRank('SIGNATURE_IDENTITY_MISMATCH') < rejectionRank('SIGNATURE_UNTRUSTED_KEY'));
  t.true(rejectionRank('SIGNATURE_UNTRUSTED_KEY') < rejectionRank('SIGNATURE_INVALID'));
  t.true(rejectionRank('SIGNATURE_INVALID') < rejectionRank('SOMETHING_ELSE'));
});
