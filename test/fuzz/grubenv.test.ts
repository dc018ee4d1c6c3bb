/**
 * Fuzzing the GRUB environment block parser and serializer (src/grub/grubenv.ts). Contract:
 * - parseGrubEnvBlock / parseGrubEnv on any bytes return, or throw AgentError GRUBENV_CORRUPT; never hang;
 * - whatever parses is written back byte for byte: serializeGrubEnv(vars, size, preamble) is the input (the block
 *   grub-editenv wrote is the block we write);
 * - serializeGrubEnv of any variables returns exactly `size` bytes that parse back to the same variables in the same
 *   order, or throws CONFIG_INVALID (a name or value GRUB cannot store) / GRUBENV_OVERFLOW / GRUBENV_CORRUPT (a bad
 *   size or preamble);
 * - applyGrubEnvChanges keeps positions, appends new names, unsets null ones, or throws CONFIG_INVALID.
 * The corpus (test/fuzz/corpus/grubenv: blocks made by the real grub-editenv, our serializer's shapes, and one
 * corruption each) is replayed first, then mutated.
 */
import test from 'ava';
import { GRUBENV_HEADER, GRUBENV_MESSAGE, applyGrubEnvChanges, parseGrubEnv, parseGrubEnvBlock, serializeGrubEnv } from '../../src/grub/grubenv.ts';
import { contract, corpus, fc, fuzz, interestingByte, mutated } from './fuzz.ts';

const entries = corpus('grubenv');
const SOURCE = '/fuzz/grubenv';

/** The parse contract, and the byte-exact round trip of what parses. */
function checkBlock(block: Buffer): void {
  const r = contract(['GRUBENV_CORRUPT'], () => parseGrubEnvBlock(block, SOURCE), 'parseGrubEnvBlock');
  const vars = contract(['GRUBENV_CORRUPT'], () => parseGrubEnv(block, SOURCE), 'parseGrubEnv');
  if (r.ok !== vars.ok) throw new Error('parseGrubEnv and parseGrubEnvBlock disagree');
  if (!r.ok) {
    if (!r.error.message.startsWith(`${SOURCE}: `)) throw new Error(`the error does not name the source: ${r.error.message}`);
    return;
  }
  const out = contract([], () => serializeGrubEnv(r.value.vars, r.value.size, r.value.preamble), 'serializeGrubEnv of a parsed block');
  if (!out.ok || !out.value.equals(block)) {
    throw new Error(`not written back byte for byte: ${JSON.stringify([...r.value.vars])} preamble ${JSON.stringify(r.value.preamble.toString('latin1'))}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Generators

const nameArb = fc.oneof(
  fc.stringMatching(/^[a-z_][a-z0-9_]{0,20}$/),
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.constantFrom('next_entry', 'saved_entry', 'default_menu_entry', '#x', 'a=b', 'a\\b', 'a\nb', '\uFEFFname', '\u0000', '__proto__', 'é'),
);
const valueArb = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.constantFrom('\\', '\n', '=', '#', ' ', 'a', '\uFEFF', 'é', '\r'), maxLength: 30 }),
  fc.constantFrom('', 'cOS 2.0.0', 'yes', '\uFEFFbom', 'a\\', '\\\n'),
);
const varsArb = fc.uniqueArray(fc.tuple(nameArb, valueArb), { maxLength: 12, selector: ([k]) => k });
const sizeArb = fc.oneof({ weight: 6, arbitrary: fc.constant(1024) }, { weight: 2, arbitrary: fc.constantFrom(1536, 2048) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 4096 }) });
const preambleArb = fc.oneof(
  fc.constant(GRUBENV_MESSAGE),
  fc.constant(''),
  fc.array(fc.string({ unit: fc.constantFrom('#', ' ', 'x', '\\', '\n'), maxLength: 12 }).map((s) => `#${s}\n`), { maxLength: 3 }).map((l) => l.join('')),
);

/** Blocks our serializer writes (when it can), as a base for mutations. */
const serializedArb: fc.Arbitrary<Buffer> = fc.tuple(varsArb, sizeArb, preambleArb).map(([vars, size, pre]) => {
  try {
    return serializeGrubEnv(new Map(vars), size, pre);
  } catch {
    return serializeGrubEnv(new Map(), 1024);
  }
});

/** A block assembled from the fragments the parser branches on, padded with '#' to a block size. */
const fragment = fc.oneof(
  fc.constantFrom('name', 'v', '=', '\\', '\\\\', '\\\n', '\n', '#', '# c\n', '\0', ' ', '\xef\xbb\xbf', '\xff', '\xc3\xa9', '\xed\xa0\x80'),
  fc.string({ unit: 'grapheme-ascii', maxLength: 6 }),
);
const assembledArb: fc.Arbitrary<Buffer> = fc.tuple(fc.array(fragment, { maxLength: 40 }), fc.constantFrom(1024, 2048), fc.boolean()).map(([parts, size, header]) => {
  const body = Buffer.from((header ? GRUBENV_HEADER : '') + parts.join(''), 'latin1');
  const out = Buffer.alloc(size, '#');
  body.copy(out, 0, 0, Math.min(size, body.length));
  return out;
});

const corpusArb = fc.constantFrom(...entries.map((e) => e.bytes));

const blockArb = fc.oneof(
  { weight: 3, arbitrary: mutated(fc.oneof(corpusArb, serializedArb), { extra: [0x23] }) },
  { weight: 1, arbitrary: mutated(corpusArb, { resize: true }) },
  { weight: 3, arbitrary: assembledArb },
  { weight: 2, arbitrary: serializedArb },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2100 }).map((a) => Buffer.from(a)) },
  { weight: 1, arbitrary: fc.array(interestingByte(), { minLength: 1024 - GRUBENV_HEADER.length, maxLength: 1024 - GRUBENV_HEADER.length }).map((a) => Buffer.concat([Buffer.from(GRUBENV_HEADER), Buffer.from(a)])) },
);

// ---------------------------------------------------------------------------------------------------------------

test('corpus: the grub-editenv blocks and the valid shapes parse and are written back byte for byte; each corruption is GRUBENV_CORRUPT', (t) => {
  const reasons: Record<string, RegExp> = {
    'bad-header.bin': /wrong header/,
    'bad-size-1000.bin': /size is 1000 bytes/,
    'bad-size-0.bin': /size is 0 bytes/,
    'bad-newline-in-padding.bin': /byte '\\n' in the '#' padding/,
    'bad-escape.bin': /bad escape/,
    'bad-nul-in-value.bin': /NUL byte in the value/,
    'bad-duplicate.bin': /duplicate variable "next_entry"/,
    'bad-empty-name.bin': /empty variable name/,
    'bad-no-equals.bin': /line without '='/,
    'bad-invalid-utf8.bin': /not valid UTF-8/,
    'bad-backslash-at-end.bin': /backslash at the end of the block/,
    'bad-unterminated-line.bin': /does not end with a newline/,
  };
  t.true(entries.some((e) => e.expect === 'ok') && entries.some((e) => e.expect === 'bad'));
  for (const e of entries) {
    checkBlock(e.bytes);
    const r = contract(['GRUBENV_CORRUPT'], () => parseGrubEnvBlock(e.bytes, SOURCE));
    if (e.expect === 'ok') t.true(r.ok, `${e.name}: ${r.ok ? '' : r.error.message}`);
    if (e.expect === 'bad') {
      t.false(r.ok, `${e.name} parsed`);
      if (!r.ok) t.regex(r.error.message, reasons[e.name] ?? /./, e.name);
    }
  }
  const cos = parseGrubEnv(entries.find((e) => e.name === 'ok-grub-editenv-escapes.bin')!.bytes);
  t.is(cos.get('back'), 'C:\\path\\to\\x');
  t.is(cos.get('multi'), 'line one\nline two');
  t.is(cos.get('utf8'), 'é ✓ 日本');
});

test('fuzz: parsing any block returns or throws GRUBENV_CORRUPT, and what parses is written back byte for byte', (t) => {
  fuzz(t, 'grubenv parse', blockArb, checkBlock, entries.map((e) => e.bytes));
});

test('fuzz: serializing any variables gives a block of the size that parses back to them, or a known refusal', (t) => {
  fuzz(t, 'grubenv serialize', fc.tuple(varsArb, sizeArb, preambleArb), ([vars, size, pre]) => {
    const map = new Map(vars);
    const out = contract(['CONFIG_INVALID', 'GRUBENV_OVERFLOW', 'GRUBENV_CORRUPT'], () => serializeGrubEnv(map, size, pre), 'serializeGrubEnv');
    if (!out.ok) return;
    if (out.value.length !== size) throw new Error(`${out.value.length} bytes, not ${size}`);
    const back = parseGrubEnvBlock(out.value);
    if (JSON.stringify([...back.vars]) !== JSON.stringify(vars)) throw new Error(`read back ${JSON.stringify([...back.vars])}`);
    if (back.preamble.toString('utf8') !== pre) throw new Error(`preamble read back as ${JSON.stringify(back.preamble.toString('utf8'))}`);
  });
});

test('fuzz: grub-editenv set/unset semantics: positions kept, new names appended, null unsets; else CONFIG_INVALID', (t) => {
  const changesArb = fc.array(fc.tuple(nameArb, fc.option(valueArb, { nil: null })), { maxLength: 6 });
  fuzz(t, 'grubenv changes', fc.tuple(varsArb, changesArb), ([vars, changeList]) => {
    const env = new Map(vars);
    const changes: Record<string, string | null> = {};
    for (const [k, v] of changeList) Object.defineProperty(changes, k, { value: v, enumerable: true, configurable: true, writable: true });
    const r = contract(['CONFIG_INVALID'], () => applyGrubEnvChanges(env, changes), 'applyGrubEnvChanges');
    if (!r.ok) return;
    const expected = new Map(env);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null) expected.delete(k);
      else expected.set(k, v);
    }
    if (JSON.stringify([...r.value]) !== JSON.stringify([...expected])) throw new Error(`got ${JSON.stringify([...r.value])}`);
    if (env.size !== vars.length) throw new Error('the input map was changed');
  });
});

test('a value or name starting with U+FEFF (a BOM) is kept, not dropped by the UTF-8 decoder (found by fuzzing)', (t) => {
  const vars = new Map([['k', '\uFEFFvalue'], ['\uFEFFname', 'x']]);
  const block = serializeGrubEnv(vars);
  t.deepEqual([...parseGrubEnv(block)], [...vars]);
  // The same block as the real grub-editenv writes it (`set` with the UTF-8 BOM bytes), in the corpus.
  const real = entries.find((e) => e.name === 'ok-bom-value-and-name.bin')!.bytes;
  t.deepEqual([...parseGrubEnv(real)], [...vars]);
  t.true(real.equals(block));
});
