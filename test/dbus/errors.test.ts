import test from 'ava';
import { readFileSync } from 'node:fs';
import { DBUS_ERROR_NAMES, dbusErrorName, ERROR_PREFIX, errorCodeOf, isErrorCode } from '../../src/dbus/errors.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import type { ErrorCode } from '../../src/model/errors.ts';

const codes = Object.keys(DBUS_ERROR_NAMES) as ErrorCode[];

test('every error code has its own D-Bus error name, and the name maps back to the same code', (t) => {
  const names = codes.map(dbusErrorName);
  t.is(new Set(names).size, names.length, 'names are unique');
  for (const code of codes) {
    const name = dbusErrorName(code);
    t.true(name.startsWith(ERROR_PREFIX));
    t.regex(name.slice(ERROR_PREFIX.length), /^[A-Z][A-Za-z]+$/, 'a valid D-Bus name element');
    t.is(errorCodeOf(name), code);
    t.true(isErrorCode(code));
  }
  t.false(isErrorCode('NOPE'));
});

test('the D-Bus table covers the same codes as the exit code table (one error vocabulary)', (t) => {
  t.deepEqual([...codes].sort(), Object.keys(EXIT_CODES).sort());
});

test('Busy, AccessDenied and InvalidArgs have the names the contract promises', (t) => {
  t.is(dbusErrorName('BUSY'), 'io.costoolkit.Agent1.Error.Busy');
  t.is(dbusErrorName('ACCESS_DENIED'), 'io.costoolkit.Agent1.Error.AccessDenied');
  t.is(dbusErrorName('USAGE'), 'io.costoolkit.Agent1.Error.InvalidArgs');
  t.is(dbusErrorName('NOT_SUPPORTED'), 'io.costoolkit.Agent1.Error.NotSupported');
});

test('errors of the bus itself map to the code a caller acts on; unknown names to nothing', (t) => {
  t.is(errorCodeOf('org.freedesktop.DBus.Error.AccessDenied'), 'ACCESS_DENIED');
  t.is(errorCodeOf('org.freedesktop.DBus.Error.ServiceUnknown'), 'NOT_SUPPORTED');
  t.is(errorCodeOf('org.freedesktop.DBus.Error.InvalidArgs'), 'USAGE');
  t.is(errorCodeOf('com.github.dbus_next.ServiceError'), undefined);
  t.is(errorCodeOf(`${ERROR_PREFIX}NoSuchThing`), undefined);
});

test('interface.xml lists every error name of the table', (t) => {
  const xml = readFileSync(new URL('../../src/dbus/interface.xml', import.meta.url), 'utf8');
  for (const name of Object.values(DBUS_ERROR_NAMES)) t.regex(xml, new RegExp(`\\b${name}\\b`), name);
});
