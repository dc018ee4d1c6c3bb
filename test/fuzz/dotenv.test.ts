/**
 * Fuzzing the env-file parser (src/config/dotenv.ts: /etc/cos-upgrade-image, /etc/cos/config, /etc/os-release).
 * Contract:
 * - parseDotenv on any text returns, or throws a ConfigError (CONFIG_INVALID) naming the file and a line that exists;
 *   never hangs;
 * - every entry has a valid name and the number of a line that assigns it;
 * - what godotenv.Write / yip writes (sorted `KEY="value"` with \ " ! $ ` escaped, newline as \n, CR as \r, no final
 *   newline) parses back to the same values, for any values; so does it with CRLF, a BOM, `export ` and blanks;
 * - parse, write, parse is stable: the values a file holds survive being rewritten.
 * The corpus (test/fuzz/corpus/dotenv: the config fixtures, the godotenv escape golden, shell-isms, one mistake per
 * bad-* file) is replayed first, then mutated.
 */
import test from 'ava';
import { ConfigError } from '../../src/model/errors.ts';
import { parseDotenv, type DotenvEntry } from '../../src/config/dotenv.ts';
import { contract, corpus, fc, fuzz } from './fuzz.ts';

const FILE = '/etc/cos-upgrade-image';
const KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const entries = corpus('dotenv');
const texts = entries.map((e) => e.bytes.toString('utf8'));

/** godotenv.Write (v1.4, as yip v1.3 uses it): sorted lines KEY="value" joined by \n, no final newline. */
function godotenvWrite(values: ReadonlyMap<string, string> | Record<string, string>, opts: { crlf?: boolean; bom?: boolean; exportPrefix?: boolean } = {}): string {
  const pairs = values instanceof Map ? [...values] : Object.entries(values);
  const lines = pairs
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => {
      const escaped = v.replace(/[\\\n\r"!$`]/g, (c: string) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : `\\${c}`));
      return `${opts.exportPrefix ? 'export ' : ''}${k}="${escaped}"`;
    });
  return (opts.bom ? '\uFEFF' : '') + lines.join(opts.crlf ? '\r\n' : '\n');
}

const valuesOf = (m: Map<string, DotenvEntry>): Map<string, string> => new Map([...m].map(([k, e]) => [k, e.value]));
const same = (a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean =>
  a.size === b.size && [...a].every(([k, v]) => b.has(k) && b.get(k) === v);

/** The parse contract and the structure of what parses; returns the values, or undefined when refused. */
function checkText(text: string): Map<string, string> | undefined {
  const r = contract(['CONFIG_INVALID'], () => parseDotenv(text, FILE), 'parseDotenv');
  const lines = (text.startsWith('\uFEFF') ? text.slice(1) : text).split('\n');
  if (!r.ok) {
    const e = r.error;
    if (!(e instanceof ConfigError)) throw new Error(`a CONFIG_INVALID that is not a ConfigError: ${e.message}`);
    if (e.file !== FILE || !e.message.startsWith(`${FILE}:`)) throw new Error(`the error does not name the file: ${e.message}`);
    if (e.line === undefined || e.line < 1 || e.line > lines.length) throw new Error(`the error names line ${e.line} of ${lines.length}`);
    if (!e.message.startsWith(`${FILE}:${e.line}`)) throw new Error(`the message does not name line ${e.line}: ${e.message}`);
    return undefined;
  }
  for (const [key, entry] of r.value) {
    if (!KEY_RE.test(key)) throw new Error(`invalid key ${JSON.stringify(key)} accepted`);
    if (entry.line < 1 || entry.line > lines.length) throw new Error(`${key} on line ${entry.line} of ${lines.length}`);
    if (!(lines[entry.line - 1] ?? '').includes(`${key}`)) throw new Error(`line ${entry.line} does not assign ${key}`);
    if (typeof entry.value !== 'string') throw new Error(`${key} has a ${typeof entry.value} value`);
  }
  return valuesOf(r.value);
}

// ---------------------------------------------------------------------------------------------------------------
// Generators

const keyArb = fc.oneof(fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,15}$/), fc.constantFrom('UPGRADE_IMAGE', 'CHANNEL_UPGRADES', 'DEFAULT_IMAGE_SIZE', 'export', '_'));
const valueArb = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.string({ unit: fc.constantFrom('\\', '"', "'", '!', '$', '`', '\n', '\r', '#', ' ', '\t', 'n', 'r', 'x', '=', '\uFEFF'), maxLength: 20 }),
);
const valuesArb = fc.dictionary(keyArb, valueArb, { maxKeys: 8, noNullPrototype: true }).map((d) => new Map(Object.entries(d)));

/** Lines built from the fragments the parser branches on. */
const fragment = fc.oneof(
  fc.constantFrom('export', 'export ', 'KEY', 'A_1', '1A', '=', ' = ', ' ', '\t', '"', "'", '\\', '\\"', '\\n', '#', ' #', '$X', '${X}', '\r', '\uFEFF', 'é', '\u2028', '\0'),
  fc.string({ unit: 'grapheme-ascii', maxLength: 5 }),
);
const lineArb = fc.array(fragment, { maxLength: 10 }).map((p) => p.join(''));
const structuredArb = fc.array(lineArb, { maxLength: 10 }).map((l) => l.join('\n'));
const corpusArb = fc.constantFrom(...texts);
const mutatedTextArb = fc.tuple(corpusArb, fc.array(fc.tuple(fc.nat(), fragment, fc.boolean()), { minLength: 1, maxLength: 5 })).map(([text, edits]) => {
  let s = text;
  for (const [at, frag, remove] of edits) {
    const i = s.length === 0 ? 0 : at % (s.length + 1);
    s = remove ? s.slice(0, i) + s.slice(i + 1) : s.slice(0, i) + frag + s.slice(i);
  }
  return s;
});
const textArb = fc.oneof(
  { weight: 3, arbitrary: structuredArb },
  { weight: 3, arbitrary: mutatedTextArb },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
  { weight: 1, arbitrary: fc.tuple(valuesArb, fc.boolean(), fc.boolean(), fc.boolean()).map(([v, crlf, bom, exp]) => godotenvWrite(v, { crlf, bom, exportPrefix: exp })) },
);

// ---------------------------------------------------------------------------------------------------------------

test('corpus: the config fixtures and shell-isms parse, each bad-* file is CONFIG_INVALID naming its line', (t) => {
  t.true(entries.some((e) => e.expect === 'ok') && entries.some((e) => e.expect === 'bad'));
  for (const e of entries) {
    const values = checkText(e.bytes.toString('utf8'));
    if (e.expect === 'ok') t.not(values, undefined, e.name);
    if (e.expect === 'bad') t.is(values, undefined, e.name);
  }
  const golden = checkText(entries.find((e) => e.name === 'ok-godotenv-write-escapes.env')!.bytes.toString('utf8'));
  t.is(golden?.get('H'), 'two\nlines\r');
  const shell = checkText(entries.find((e) => e.name === 'ok-export-crlf-bom.env')!.bytes.toString('utf8'));
  t.deepEqual(Object.fromEntries(shell ?? []), { A: '1', B: 'lit $X \\n', C: 'x#y', D: 'value' });
});

test('fuzz: parsing any text returns entries of valid names on real lines, or CONFIG_INVALID naming the file and a real line', (t) => {
  fuzz(t, 'dotenv parse', textArb, (text) => {
    checkText(text);
  }, texts);
});

test('fuzz: what godotenv.Write writes parses back to the same values (also with CRLF, a BOM, export)', (t) => {
  fuzz(t, 'dotenv write round trip', fc.tuple(valuesArb, fc.boolean(), fc.boolean(), fc.boolean()), ([values, crlf, bom, exportPrefix]) => {
    const text = godotenvWrite(values, { crlf, bom, exportPrefix });
    const back = checkText(text);
    if (back === undefined || !same(back, values)) throw new Error(`${JSON.stringify(text)} read back as ${JSON.stringify([...(back ?? [])])}`);
  });
});

test('fuzz: parse, write, parse is stable (rewriting a file keeps its values)', (t) => {
  fuzz(t, 'dotenv idempotent', textArb, (text) => {
    const first = checkText(text);
    if (first === undefined) return;
    const second = checkText(godotenvWrite(first));
    if (second === undefined || !same(first, second)) throw new Error(`values changed on rewrite: ${JSON.stringify([...first])} -> ${JSON.stringify([...(second ?? [])])}`);
  }, texts);
});
