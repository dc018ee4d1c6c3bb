import test from 'ava';
import {
  decodeCheckOptions,
  decodeStageName,
  decodeProperties,
  decodeProperty,
  decodeRollbackOptions,
  decodeUpgradeOptions,
  encodeCheckOptions,
  encodeProperty,
  encodeRollbackOptions,
  encodeUpgradeOptions,
  InvalidArgsError,
  METHOD_OPTIONS,
  PROPERTY_OF_STATE,
  PROPERTY_SIGNATURES,
  RESERVED_KEYS,
  wireDict,
  type MakeVariant,
  type PropertyName,
} from '../../src/dbus/codec.ts';
import type { DaemonState } from '../../src/daemon/daemon.ts';

/** A variant as dbus-next hands it over after unmarshalling: 64-bit integers arrive as BigInt. */
class V {
  readonly signature: string;
  readonly value: unknown;
  constructor(signature: string, value: unknown) {
    this.signature = signature;
    this.value = signature === 't' || signature === 'x' ? BigInt(value as number) : value;
  }
}
const mk: MakeVariant = (s, v) => new V(s, v);
const v = (s: string, value: unknown): V => new V(s, value);

function invalid(t: import('ava').ExecutionContext, fn: () => unknown, key: string | undefined, message: RegExp): void {
  const err = t.throws(fn, { instanceOf: InvalidArgsError });
  t.is(err?.code, 'USAGE');
  t.is((err as InvalidArgsError).key, key);
  t.regex(err?.message ?? '', message);
}

test('Upgrade options decode to a typed request, kebab-case keys to camelCase', (t) => {
  t.deepEqual(decodeUpgradeOptions({}), {});
  t.deepEqual(decodeUpgradeOptions({
    image: v('s', 'reg.example/os:v2'), recovery: v('b', true), 'no-verify': v('b', true), reboot: v('b', false), force: v('b', true),
  }), { image: 'reg.example/os:v2', recovery: true, noVerify: true, reboot: false, force: true });
  t.deepEqual(decodeCheckOptions({ image: v('s', 'r/os:v1'), recovery: v('b', false) }), { image: 'r/os:v1', recovery: false });
  t.deepEqual(decodeRollbackOptions({ permanent: v('b', true) }), { permanent: true });
  t.deepEqual(decodeRollbackOptions({}), {});
});

test('an unknown key is rejected naming it and the keys the method takes', (t) => {
  invalid(t, () => decodeUpgradeOptions({ imgae: v('s', 'x') }), 'imgae', /^Upgrade: unknown option "imgae" \(Upgrade takes image, recovery, no-verify, reboot, force\)$/);
  invalid(t, () => decodeCheckOptions({ force: v('b', true) }), 'force', /^Check: unknown option "force"/);
  invalid(t, () => decodeRollbackOptions({ 'no-verify': v('b', true) }), 'no-verify', /^Rollback: unknown option "no-verify"/);
});

test('a value of the wrong type is rejected naming the key, the type it must have and the one it has', (t) => {
  invalid(t, () => decodeUpgradeOptions({ recovery: v('s', 'true') }), 'recovery', /option "recovery" must be a boolean \('b'\), got 's'/);
  invalid(t, () => decodeUpgradeOptions({ image: v('as', ['a']) }), 'image', /option "image" must be a string \('s'\), got 'as'/);
  invalid(t, () => decodeRollbackOptions({ permanent: v('i', 1) }), 'permanent', /got 'i'/);
  // A variant whose value does not match its own signature, and a bare value, are refused the same way.
  invalid(t, () => decodeUpgradeOptions({ force: v('b', 'yes') }), 'force', /must be a boolean/);
  invalid(t, () => decodeUpgradeOptions({ force: true }), 'force', /got boolean/);
  invalid(t, () => decodeUpgradeOptions({ image: v('s', '') }), 'image', /"image" must not be empty/);
});

test('options read from the wire entries: reserved keys (__proto__, constructor, prototype) are refused naming the key, for every method', (t) => {
  for (const key of RESERVED_KEYS) {
    invalid(t, () => decodeRollbackOptions(wireDict([[key, v('b', true)]])), key, new RegExp(`^Rollback: option "${key}" is a reserved name, never an option \\(Rollback takes permanent\\)$`));
    invalid(t, () => decodeUpgradeOptions(wireDict([['image', v('s', 'r/os:v2')], [key, v('s', 'x')]])), key, /^Upgrade: option ".*" is a reserved name/);
    invalid(t, () => decodeCheckOptions(wireDict([[key, v('b', true)]])), key, /^Check: option ".*" is a reserved name/);
  }
});

test('a key given twice on the wire is refused naming it, whatever the values', (t) => {
  invalid(t, () => decodeRollbackOptions(wireDict([['permanent', v('b', false)], ['permanent', v('b', true)]])), 'permanent', /^Rollback: option "permanent" is given more than once$/);
  invalid(t, () => decodeUpgradeOptions(wireDict([['force', v('b', true)], ['image', v('s', 'a/b:c')], ['force', v('b', true)]])), 'force', /"force" is given more than once/);
});

test('wire entries: unknown keys and wrong variant types are refused naming the key and the expected type; good ones decode like a dict', (t) => {
  invalid(t, () => decodeRollbackOptions(wireDict([['permanet', v('b', true)]])), 'permanet', /unknown option "permanet" \(Rollback takes permanent\)/);
  invalid(t, () => decodeRollbackOptions(wireDict([['permanent', v('s', 'true')]])), 'permanent', /option "permanent" must be a boolean \('b'\), got 's'/);
  invalid(t, () => decodeCheckOptions(wireDict([['image', v('as', ['x'])]])), 'image', /option "image" must be a string \('s'\), got 'as'/);
  // Inherited names of a plain object are not options either.
  invalid(t, () => decodeUpgradeOptions(wireDict([['toString', v('b', true)]])), 'toString', /unknown option "toString"/);
  t.deepEqual(decodeUpgradeOptions(wireDict([['image', v('s', 'r/os:v2')], ['no-verify', v('b', true)]])), { image: 'r/os:v2', noVerify: true });
  t.deepEqual(decodeRollbackOptions(wireDict([])), {});
});

test('a plain object whose prototype an a{sv} "__proto__" entry replaced (dbus-next builds dicts by assignment) is refused', (t) => {
  // What dbus-next's converter does with {"__proto__": <true>}: the key vanishes, the prototype becomes the variant.
  const dict: Record<string, unknown> = {};
  dict['__proto__'] = v('b', true);
  t.deepEqual(Object.keys(dict), []);
  invalid(t, () => decodeRollbackOptions(dict), '__proto__', /^Rollback: option "__proto__" is a reserved name/);
  // An own "constructor" key (assignment keeps it) is refused as reserved, not as an odd type.
  invalid(t, () => decodeRollbackOptions({ constructor: v('b', true) }), 'constructor', /"constructor" is a reserved name/);
  // A dictionary without a prototype is fine.
  t.deepEqual(decodeRollbackOptions(Object.assign(Object.create(null) as object, { permanent: v('b', true) })), { permanent: true });
});

test('an absurdly long string option is refused naming the key and its length, never echoing it', (t) => {
  const image = 'a'.repeat(10 << 20);
  const err = t.throws(() => decodeUpgradeOptions(wireDict([['image', v('s', image)]])), { instanceOf: InvalidArgsError });
  t.is(err?.message, 'Upgrade: option "image" is 10485760 bytes long, over the limit of 4096 bytes');
  t.is((err as InvalidArgsError).key, 'image');
  // The limit is in UTF-8 bytes: 4096 bytes pass, 4097 do not.
  t.deepEqual(decodeCheckOptions(wireDict([['image', v('s', 'é'.repeat(2048))]])), { image: 'é'.repeat(2048) });
  invalid(t, () => decodeCheckOptions(wireDict([['image', v('s', `${'é'.repeat(2048)}a`)]])), 'image', /4097 bytes long/);
});

test('a huge or hostile key is named escaped and bounded', (t) => {
  const key = `\x1b]0;pwned\x07${'k'.repeat(1 << 20)}`;
  const err = t.throws(() => decodeRollbackOptions(wireDict([[key, v('b', true)]])), { instanceOf: InvalidArgsError });
  t.true((err?.message.length ?? Infinity) < 400, `${err?.message.length}`);
  t.false(/[\x00-\x1f\x7f-\x9f]/.test(err?.message ?? ''), 'no raw control character');
  t.regex(err?.message ?? '', /^Rollback: unknown option "\\x1b\]0;pwned\\x07k+\[\.\.\. \d+ characters left out \.\.\.\]k+"/);
  t.true(((err as InvalidArgsError).key?.length ?? Infinity) <= 512);
});

test('RunStage: a stage name over 256 bytes is refused naming its length; a normal one passes as is', (t) => {
  t.is(decodeStageName('after-upgrade'), 'after-upgrade');
  const err = t.throws(() => decodeStageName('s'.repeat(10 << 20)), { instanceOf: InvalidArgsError });
  t.is(err?.message, 'RunStage: the stage name is 10485760 bytes long, over the limit of 256 bytes');
  invalid(t, () => decodeStageName(42), undefined, /must be a string/);
});

test('options that are not a dictionary are rejected', (t) => {
  invalid(t, () => decodeUpgradeOptions(null), undefined, /options must be a dictionary/);
  invalid(t, () => decodeCheckOptions([v('s', 'x')]), undefined, /options must be a dictionary/);
});

test('encoding options and decoding them again gives the request back, undefined fields left out', (t) => {
  const up = { image: 'reg.example/os:v2', noVerify: true, force: false };
  const enc = encodeUpgradeOptions(up, mk);
  t.deepEqual(Object.keys(enc).sort(), ['force', 'image', 'no-verify']);
  t.deepEqual(decodeUpgradeOptions(enc), up);
  t.deepEqual(decodeCheckOptions(encodeCheckOptions({ recovery: true }, mk)), { recovery: true });
  t.deepEqual(decodeRollbackOptions(encodeRollbackOptions({ permanent: false }, mk)), { permanent: false });
  // Every key of every method has exactly one type, s or b.
  for (const spec of Object.values(METHOD_OPTIONS)) for (const type of Object.values(spec)) t.true(type === 's' || type === 'b');
});

const STATE: DaemonState = {
  operation: 'downloading',
  progress: { percent: 42, message: 'layer 1/2 1234abcd', depth: 1, bytesDone: 5_000_000_000, bytesTotal: 9_000_000_000 },
  lastError: '',
  bootedSlot: 'active',
  slots: {
    active: { image: 'docker://reg/os:v2', digest: 'sha256:aa', version: '2.0.0', label: 'COS_ACTIVE', file: 'cOS/active.img', present: true, fs: 'ext2', size: 50331648, timestamp: '2026-11-21T10:00:00Z', verification: 'skipped', state: 'tentative' },
    passive: { image: '', digest: '', version: '0.8.10', label: 'COS_PASSIVE', file: 'cOS/passive.img', present: true, fs: 'ext2', size: 33554432, timestamp: '', verification: 'unknown', state: 'good' },
    recovery: { image: '', digest: '', version: '', label: '', file: 'cOS/recovery.squashfs', present: true, fs: 'squashfs', size: 1234, timestamp: '', verification: 'unknown', state: 'good' },
  },
  updateAvailable: true,
  transaction: '0b8f6a1e-7d1c-4f55-9e57-0d9a6a2c3f10',
  config: {
    upgradeImage: 'oci:reg/os:v2', recoveryImage: '', verify: false, verifyDisabledBy: '/etc/cos/config:3 (NO_VERIFY)', channelUpgrades: false,
    imageSizeMiB: 3072, strict: false, reboot: false, poweroff: false, cosign: true, cosignKeyless: false, cosignRepository: '',
    cosignKeys: ['/etc/cos/cosign.pub'], labels: { state: 'COS_STATE', active: 'COS_ACTIVE' }, root: '/',
  },
  upgradeFailure: false,
  lastTransaction: {
    transaction: '5c0c2c8e-0000-4000-8000-000000000001', kind: 'upgrade', result: 1, code: 'REGISTRY_NOT_FOUND', error: 'resolving reg/os:v3: not found',
    startedAt: '2026-11-21T10:00:00.000Z', finishedAt: '2026-11-21T10:00:01.000Z', details: { image: 'reg/os:v3', target: 'system', reboot: false, force: false },
  },
};

test('every property encodes from the daemon state and decodes back to the same value (64-bit counters included)', (t) => {
  for (const name of Object.keys(PROPERTY_SIGNATURES) as PropertyName[]) {
    const field = (Object.entries(PROPERTY_OF_STATE).find(([, p]) => p === name) ?? [])[0] as keyof DaemonState;
    t.deepEqual(decodeProperty(name, encodeProperty(name, STATE, mk)), STATE[field], name);
  }
  // Progress is a struct (isitt): bytes beyond 32 bits.
  t.deepEqual(encodeProperty('Progress', STATE, mk), [42, 'layer 1/2 1234abcd', 1, 5_000_000_000, 9_000_000_000]);
});

test('dictionary properties use kebab-case keys, one type each; unset records are empty dictionaries', (t) => {
  const cfg = encodeProperty('Config', STATE, mk) as Record<string, V>;
  t.deepEqual(cfg['image-size-mib'], new V('u', 3072));
  t.deepEqual(cfg['cosign-keys'], new V('as', ['/etc/cos/cosign.pub']));
  t.deepEqual(cfg['labels'], new V('a{ss}', { state: 'COS_STATE', active: 'COS_ACTIVE' }));
  const tx = encodeProperty('LastTransaction', STATE, mk) as Record<string, V>;
  t.deepEqual(tx['result'], new V('i', 1));
  t.deepEqual(tx['finished-at'], new V('s', '2026-11-21T10:00:01.000Z'));
  t.false('digest' in tx, 'details that are not known are left out');
  const slots = encodeProperty('Slots', STATE, mk) as Record<string, Record<string, V>>;
  t.deepEqual(Object.keys(slots), ['active', 'passive', 'recovery']);
  t.deepEqual(slots.active?.size, new V('t', 50331648));
  const none = { ...STATE, config: null, lastTransaction: null };
  t.deepEqual(encodeProperty('Config', none, mk), {});
  t.deepEqual(encodeProperty('LastTransaction', none, mk), {});
  t.is(decodeProperty('Config', {}), null);
  t.is(decodeProperty('LastTransaction', {}), null);
});

test('a GetAll answer decodes to typed properties, unknown names left out', (t) => {
  const all: Record<string, unknown> = { Bogus: v('s', 'x') };
  for (const name of Object.keys(PROPERTY_SIGNATURES) as PropertyName[]) all[name] = v(PROPERTY_SIGNATURES[name], encodeProperty(name, STATE, mk));
  const props = decodeProperties(all);
  t.false('Bogus' in props);
  t.is(props.Operation, 'downloading');
  t.is(props.Progress?.bytesTotal, 9_000_000_000);
  t.is(props.LastTransaction?.code, 'REGISTRY_NOT_FOUND');
  t.is(props.Slots?.active.state, 'tentative');
});
