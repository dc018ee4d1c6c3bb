/**
 * Fuzzing the D-Bus a{sv} option decoders (src/dbus/codec.ts: decodeUpgradeOptions, decodeCheckOptions,
 * decodeRollbackOptions, and decodeStageName), fed the way the service feeds them: the a{sv} of a real method-call
 * message, marshalled to bytes and parsed back by dbus-next's own marshaller and parser (repeated keys and
 * "__proto__" kept, as on the wire), each entry's variant converted by dbus-next's converter as wire.ts does; and,
 * for the fallback path, dbus-next's plain object and any JavaScript value at all. Contract:
 * - they return a request with only the method's options, each of its one type (strings non-empty and within
 *   TEXT_LIMITS.optionBytes), or throw InvalidArgsError (AgentError USAGE) whose `key` is bounded; never anything
 *   else, never a hang, and never a caller's value echoed in the message;
 * - the wire form and the plain object agree when the keys are unique;
 * - encode, marshal, parse, decode gives back the request.
 * The corpus (test/fuzz/corpus/dbus: one JSON per call, its entries as [key, {signature, value}]) is replayed first.
 */
import test from 'ava';
import messageModule from 'dbus-next/lib/message.js';
import compat from 'dbus-next/lib/marshall-compat.js';
import { Variant } from 'dbus-next';
import {
  decodeCheckOptions,
  decodeRollbackOptions,
  decodeRunStageOptions,
  decodeStageName,
  decodeUpgradeOptions,
  encodeCheckOptions,
  encodeRollbackOptions,
  encodeUpgradeOptions,
  InvalidArgsError,
  METHOD_OPTIONS,
  RESERVED_KEYS,
  wireDict,
} from '../../src/dbus/codec.ts';
import { TEXT_LIMITS, utf8Length } from '../../src/model/text.ts';
import { contract, corpus, fc, fuzz } from './fuzz.ts';

type Method = keyof typeof METHOD_OPTIONS;
const METHODS: readonly Method[] = ['Upgrade', 'Check', 'Rollback', 'RunStage'];
const DECODE: Record<Method, (dict: unknown) => Record<string, unknown>> = {
  Upgrade: (d) => ({ ...decodeUpgradeOptions(d) }),
  Check: (d) => ({ ...decodeCheckOptions(d) }),
  Rollback: (d) => ({ ...decodeRollbackOptions(d) }),
  RunStage: (d) => ({ ...decodeRunStageOptions(d) }),
};
/** The request field each option key becomes. */
const FIELD: Readonly<Record<string, string>> = { image: 'image', recovery: 'recovery', 'no-verify': 'noVerify', reboot: 'reboot', force: 'force', permanent: 'permanent', strict: 'strict' };
/** Values carry this marker, keys never do: a message containing it echoed a value. */
const MARK = '§§';

// dbus-next's message (de)serialiser, as the bus connection uses it.
const wire = messageModule as unknown as {
  marshall(m: Record<string, unknown>): [Buffer, unknown[]];
  unmarshall(b: Buffer): { signature?: string; body: unknown[] };
};

/** A value in dbus-next's marshall form, with its signature. */
interface WireValue { sig: string; value: unknown }

/**
 * The entries as the service sees them: an Upgrade/Check/Rollback call whose a{sv} holds `entries` in order,
 * marshalled to bytes, parsed back, each variant converted as wire.ts converts it. Undefined when dbus-next will not
 * marshal the values (not a message a bus could carry).
 */
function overTheWire(method: Method, entries: ReadonlyArray<readonly [string, WireValue]>): Array<[string, unknown]> | undefined {
  let buf: Buffer;
  try {
    [buf] = wire.marshall({
      serial: 1, type: 1, path: '/io/costoolkit/Agent1', interface: 'io.costoolkit.Agent1', member: method,
      destination: 'io.costoolkit.Agent1', signature: 'a{sv}', body: [entries.map(([k, v]) => [k, [v.sig, v.value]])],
    });
  } catch {
    return undefined;
  }
  const raw = wire.unmarshall(buf);
  const dict = raw.body[0] as Array<[string, unknown]>;
  return dict.map(([k, v]) => [k, compat.messageToJsFmt({ signature: 'v', body: [v] }).body[0]]);
}

/** The decoder contract; the request when accepted. */
function checkDecode(method: Method, dict: unknown): Record<string, unknown> | undefined {
  const r = contract(['USAGE'], () => DECODE[method](dict), `decode${method}Options`);
  if (!r.ok) {
    const e = r.error;
    if (!(e instanceof InvalidArgsError)) throw new Error(`a USAGE error that is not InvalidArgsError: ${e.message}`);
    if (!e.message.startsWith(`${method}: `)) throw new Error(`the message does not name the method: ${e.message}`);
    if (e.message.includes(MARK)) throw new Error(`a value is echoed: ${e.message}`);
    if (e.key !== undefined && e.key.length > TEXT_LIMITS.echo) throw new Error(`key of ${e.key.length} characters`);
    if (e.message.length > TEXT_LIMITS.message) throw new Error(`message of ${e.message.length} characters`);
    return undefined;
  }
  const spec = METHOD_OPTIONS[method];
  for (const [field, value] of Object.entries(r.value)) {
    const key = Object.keys(spec).find((k) => FIELD[k] === field);
    if (key === undefined) throw new Error(`${method} returned field ${field}`);
    const type = spec[key];
    if (type === 's' && (typeof value !== 'string' || value === '' || utf8Length(value) > TEXT_LIMITS.optionBytes)) throw new Error(`${field}: ${JSON.stringify(value)}`);
    if (type === 'b' && typeof value !== 'boolean') throw new Error(`${field}: ${String(value)}`);
  }
  return r.value;
}

// ---------------------------------------------------------------------------------------------------------------
// Generators

const keyArb = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom(...new Set(Object.values(METHOD_OPTIONS).flatMap((s) => Object.keys(s)))) },
  { weight: 2, arbitrary: fc.constantFrom(...RESERVED_KEYS, 'toString', 'hasOwnProperty', 'Image', 'no_verify', '', ' image', 'image\0') },
  { weight: 1, arbitrary: fc.string({ maxLength: 10 }).filter((s) => !s.includes(MARK)) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 600, maxLength: 700 }).filter((s) => !s.includes(MARK)) },
);
const markedString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 30 }).map((s) => `${MARK}${s}`),
  fc.integer({ min: TEXT_LIMITS.optionBytes - 8, max: TEXT_LIMITS.optionBytes + 8 }).map((n) => MARK + 'x'.repeat(Math.max(0, n - 4))),
  fc.constant(''),
);
/** A variant value of a type D-Bus can carry, in dbus-next's marshall form. */
const wireValueArb: fc.Arbitrary<WireValue> = fc.letrec<{ v: WireValue }>((tie) => ({
  v: fc.oneof(
    { weight: 6, arbitrary: markedString.map((value) => ({ sig: 's', value })) },
    { weight: 6, arbitrary: fc.boolean().map((value) => ({ sig: 'b', value })) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 32 - 1 }).map((value) => ({ sig: 'u', value })) },
    { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }).map((value) => ({ sig: 'i', value })) },
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((value) => ({ sig: 't', value })) },
    { weight: 1, arbitrary: fc.double({ noNaN: true }).map((value) => ({ sig: 'd', value })) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8 }).map((a) => ({ sig: 'ay', value: Buffer.from(a) })) },
    { weight: 1, arbitrary: fc.array(markedString, { maxLength: 3 }).map((value) => ({ sig: 'as', value })) },
    { weight: 1, arbitrary: fc.array(fc.tuple(fc.string({ maxLength: 5 }), markedString), { maxLength: 3 }).map((value) => ({ sig: 'a{ss}', value })) },
    { weight: 1, arbitrary: fc.constantFrom('/', '/io/costoolkit').map((value) => ({ sig: 'o', value })) },
    { weight: 1, arbitrary: tie('v').map((inner) => ({ sig: 'v', value: [inner.sig, inner.value] })) },
  ),
})).v;
const wireEntriesArb = fc.array(fc.tuple(keyArb, wireValueArb), { maxLength: 7 });

/** Any JavaScript value, as a caller of the decoders that skips the wire could pass (null prototypes included). */
const jsValueArb = fc.anything({ maxDepth: 3, withBigInt: true, withNullPrototype: true, withMap: true, withSet: true, withBoxedValues: true, withTypedArray: true, withSparseArray: true });
const variantLikeArb = fc.oneof(
  fc.record({ signature: fc.oneof(fc.constantFrom('s', 'b', 'v', 'as', ''), fc.string({ maxLength: 3 })), value: fc.oneof(markedString, fc.boolean(), jsValueArb) }),
  jsValueArb,
);
const dictArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.array(fc.tuple(keyArb, variantLikeArb), { maxLength: 6 }).map((e) => wireDict(e)) },
  { weight: 2, arbitrary: fc.array(fc.tuple(keyArb, variantLikeArb), { maxLength: 6 }).map((e) => {
    // dbus-next's conversion: assignment, so "__proto__" replaces the prototype and a repeated key overwrites.
    const o: Record<string, unknown> = {};
    for (const [k, v] of e) o[k] = v;
    return o;
  }) },
  { weight: 1, arbitrary: jsValueArb },
  { weight: 1, arbitrary: fc.array(fc.tuple(jsValueArb, jsValueArb), { maxLength: 3 }).map((e) => ({ wireEntries: e })) },
);

/** A valid request of each method, as the client builds it (D-Bus strings hold no NUL: dbus-next refuses to send one). */
const imageArb = fc.string({ unit: 'binary', minLength: 1, maxLength: 60 }).filter((s) => !s.includes('\0'));
const requestArb = fc.oneof(
  fc.record({ image: imageArb, recovery: fc.boolean(), noVerify: fc.boolean(), reboot: fc.boolean(), force: fc.boolean() }, { requiredKeys: [] }).map((r) => ['Upgrade', r] as const),
  fc.record({ image: imageArb, recovery: fc.boolean() }, { requiredKeys: [] }).map((r) => ['Check', r] as const),
  fc.record({ permanent: fc.boolean() }, { requiredKeys: [] }).map((r) => ['Rollback', r] as const),
);

// ---------------------------------------------------------------------------------------------------------------
// The corpus

interface CorpusCall { method: Method; form: 'wire' | 'object' | 'array' | 'null'; entries: Array<[unknown, { signature: string; value: unknown } | unknown]> }
const calls = corpus('dbus').map((e) => ({ ...e, call: JSON.parse(e.bytes.toString('utf8'), (_k, v: unknown) => {
  // {"$bigint": "1"} stands for a BigInt (a 't' or 'x' value as dbus-next hands it over).
  if (typeof v === 'object' && v !== null && Object.keys(v).length === 1 && typeof (v as { $bigint?: unknown }).$bigint === 'string') return BigInt((v as { $bigint: string }).$bigint);
  return v;
}) as CorpusCall }));

function corpusDict(call: CorpusCall): unknown {
  const variants = call.entries.map(([k, v]) => {
    const isVariant = typeof v === 'object' && v !== null && 'signature' in v;
    return [k, isVariant ? new Variant((v as { signature: string }).signature, (v as unknown as { value: unknown }).value) : v] as [string, unknown];
  });
  if (call.form === 'array') return [];
  if (call.form === 'null') return null;
  if (call.form === 'object') return Object.fromEntries(variants);
  return wireDict(variants);
}

test('corpus: each recorded call decodes or is refused as its name says, over the wire where it can be marshalled', (t) => {
  t.true(calls.some((c) => c.expect === 'ok') && calls.some((c) => c.expect === 'bad'));
  for (const c of calls) {
    const got = checkDecode(c.call.method, corpusDict(c.call));
    if (c.expect === 'ok') t.not(got, undefined, c.name);
    if (c.expect === 'bad') t.is(got, undefined, c.name);
    const plain = c.call.entries.every(([k, v]) => typeof k === 'string' && typeof v === 'object' && v !== null && 'signature' in v);
    if (c.call.form === 'wire' && plain) {
      const entries = overTheWire(c.call.method, c.call.entries.map(([k, v]) => [k as string, { sig: (v as { signature: string }).signature, value: (v as unknown as { value: unknown }).value }]));
      if (entries !== undefined) t.deepEqual(checkDecode(c.call.method, wireDict(entries)), got, `${c.name} over the wire`);
    }
  }
  t.deepEqual(checkDecode('Upgrade', corpusDict(calls.find((c) => c.name === 'ok-upgrade-all-options.json')!.call)), {
    image: '127.0.0.1:5000/cos/os:v2', recovery: false, noVerify: true, reboot: false, force: true,
  });
});

// ---------------------------------------------------------------------------------------------------------------

test('fuzz: any a{sv} off the wire (dbus-next marshal + parse) decodes to a well-typed request or InvalidArgs, never echoing a value', (t) => {
  fuzz(t, 'dbus wire options', fc.tuple(fc.constantFrom(...METHODS), wireEntriesArb), ([method, entries]) => {
    const got = overTheWire(method, entries);
    if (got === undefined) return;
    checkDecode(method, wireDict(got));
  }, calls.filter((c) => c.call.form === 'wire').map((c) => [c.call.method, c.call.entries.flatMap(([k, v]) => (typeof k === 'string' && typeof v === 'object' && v !== null && 'signature' in v ? [[k, { sig: (v as { signature: string }).signature, value: (v as unknown as { value: unknown }).value }] as [string, WireValue]] : []))] as [Method, Array<[string, WireValue]>]));
});

test('fuzz: any JavaScript value, plain object or WireDict decodes or is InvalidArgs (never a TypeError)', (t) => {
  fuzz(t, 'dbus any options', fc.tuple(fc.constantFrom(...METHODS), dictArb), ([method, dict]) => {
    checkDecode(method, dict);
  });
});

test('fuzz: with unique keys, the wire entries and dbus-next\'s plain object decode the same', (t) => {
  const uniqueArb = fc.uniqueArray(fc.tuple(keyArb.filter((k) => !RESERVED_KEYS.includes(k)), wireValueArb), { maxLength: 6, selector: ([k]) => k });
  fuzz(t, 'dbus wire = object', fc.tuple(fc.constantFrom(...METHODS), uniqueArb), ([method, entries]) => {
    const got = overTheWire(method, entries);
    if (got === undefined) return;
    const fromWire = contract(['USAGE'], () => DECODE[method](wireDict(got)));
    const fromObject = contract(['USAGE'], () => DECODE[method](Object.fromEntries(got)));
    // Both accept the same request, or both refuse (which fault is named first may differ: a plain object lists
    // integer-like keys such as "0" first, the wire keeps the caller's order).
    const a = fromWire.ok ? JSON.stringify(fromWire.value) : 'refused';
    const b = fromObject.ok ? JSON.stringify(fromObject.value) : 'refused';
    if (a !== b) throw new Error(`wire: ${fromWire.ok ? a : fromWire.error.message}\nobject: ${fromObject.ok ? b : fromObject.error.message}`);
  });
});

test('fuzz: encode, marshal, parse, decode gives the request back', (t) => {
  const mk = (signature: string, value: unknown): unknown => new Variant(signature, value);
  fuzz(t, 'dbus round trip', requestArb, ([method, req]) => {
    const encoded = method === 'Upgrade' ? encodeUpgradeOptions(req, mk) : method === 'Check' ? encodeCheckOptions(req, mk) : encodeRollbackOptions(req, mk);
    const entries = Object.entries(encoded).map(([k, v]) => [k, { sig: (v as Variant).signature, value: (v as Variant).value }] as [string, WireValue]);
    const got = overTheWire(method, entries);
    if (got === undefined) throw new Error(`dbus-next would not marshal ${JSON.stringify(entries)}`);
    // Lone surrogates cannot cross the wire (UTF-8): they arrive as U+FFFD, as the client's own strings would.
    const expected = JSON.parse(JSON.stringify(req, (_k, v: unknown) => (typeof v === 'string' ? v.toWellFormed() : v))) as Record<string, unknown>;
    const back = checkDecode(method, wireDict(got));
    if (JSON.stringify(back) !== JSON.stringify(expected)) throw new Error(`${JSON.stringify(req)} came back as ${JSON.stringify(back)}`);
  });
});

test('fuzz: RunStage\'s stage name: a string within 256 bytes, or InvalidArgs', (t) => {
  fuzz(t, 'dbus stage name', fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), jsValueArb), (stage) => {
    const r = contract(['USAGE'], () => decodeStageName(stage), 'decodeStageName');
    if (r.ok && (typeof r.value !== 'string' || utf8Length(r.value) > TEXT_LIMITS.stageBytes)) throw new Error(`accepted ${String(stage)}`);
  });
});
