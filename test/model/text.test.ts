/** The one helper every boundary uses to show or keep outside text: escaping, truncation with a marker, UTF-8 length. */
import test from 'ava';
import { displayText, escapeText, TEXT_LIMITS, utf8Length } from '../../src/model/text.ts';

/** Anything a terminal acts on: C0, DEL, C1, the line/paragraph separators and the bidi controls. */
const RAW_CONTROL = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;

test('clean text within the limit comes back unchanged (the same string)', (t) => {
  for (const s of ['', 'invalid image reference "reg/os:v2"', 'Grüße ✓ 日本語 🚀', 'C:\\path and "quotes" and \\u001b as text']) {
    t.is(displayText(s, 200), s);
  }
});

test('control characters are escaped: \\n \\r \\t by name, other C0, DEL and C1 as \\xNN; bidi controls and separators as \\uNNNN', (t) => {
  t.is(displayText('a\nb\rc\td', 100), 'a\\nb\\rc\\td');
  t.is(displayText('reg.example/os\x1b[31m\x07:v2', 100), 'reg.example/os\\x1b[31m\\x07:v2');
  t.is(displayText('\x00\x7f\x80\x9b\x9f', 100), '\\x00\\x7f\\x80\\x9b\\x9f');
  t.is(displayText('x\u202ey\u2028z\u2066', 100), 'x\\u202ey\\u2028z\\u2066');
  // Printable characters just above and below the ranges stay.
  t.is(displayText(' ~\u00a0\u00ff', 100), ' ~\u00a0\u00ff');
  t.is(escapeText('\x1b]0;pwned\x07'), '\\x1b]0;pwned\\x07');
});

test('lone surrogates are escaped, pairs are kept whole', (t) => {
  t.is(displayText('a\ud800b', 100), 'a\\ud800b');
  t.is(displayText('a\udc00b', 100), 'a\\udc00b');
  t.is(displayText('🚀', 100), '🚀');
});

test('a long string keeps its head and tail around a marker that names how many characters were left out', (t) => {
  const s = `invalid image reference "reg.example/os:${'a'.repeat(1 << 20)}": tag is not valid`;
  const out = displayText(s, 2048);
  t.true(out.length <= 2048, `${out.length}`);
  t.true(out.startsWith('invalid image reference "reg.example/os:aaa'));
  t.true(out.endsWith('aaa": tag is not valid'), 'the end of the message (why) survives');
  const m = /\[\.\.\. (\d+) characters left out \.\.\.\]/.exec(out);
  if (m === null) return t.fail(out.slice(0, 200));
  const [head, tail] = out.split(m[0]) as [string, string];
  t.is(Number(m[1]) + head.length + tail.length, s.length, 'left out + kept = all of it');
});

test('the count is of characters of the input, escapes and surrogate pairs never split', (t) => {
  const esc = displayText('\x1b'.repeat(10_000), 200);
  t.true(esc.length <= 200);
  const m = /^((?:\\x1b)*)\[\.\.\. (\d+) characters left out \.\.\.\]((?:\\x1b)*)$/.exec(esc);
  if (m === null) return t.fail(esc);
  t.is(Number(m[2]) + ((m[1] as string).length + (m[3] as string).length) / 4, 10_000);
  const rockets = displayText('🚀'.repeat(10_000), 200);
  const r = /^((?:🚀)*)\[\.\.\. (\d+) characters left out \.\.\.\]((?:🚀)*)$/u.exec(rockets);
  if (r === null) return t.fail(rockets);
  t.is(Number(r[2]) + [...(r[1] as string)].length + [...(r[3] as string)].length, 10_000, 'counted in code points');
});

test('a text that only grows past the limit by escaping is truncated too; tiny limits count as 64', (t) => {
  const s = '\x07'.repeat(60); // 60 characters, 240 once escaped
  const out = displayText(s, 100);
  t.true(out.length <= 100);
  t.regex(out, /characters left out/);
  t.true(displayText('x'.repeat(1000), 1).length <= 64);
  t.regex(displayText('x'.repeat(1000), 1), /\d+ characters left out/);
});

test('random text of any length and content: one line, no raw control character, never over the limit', (t) => {
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const alphabet = ['a', 'é', '\n', '\x1b', '\x07', '\x7f', '\x9b', '\u202e', '🚀', '\ud800', '\udfff', '\\', '"', ' '];
  for (let i = 0; i < 500; i++) {
    const len = rnd(3000);
    let s = '';
    for (let j = 0; j < len; j++) s += alphabet[rnd(alphabet.length)];
    const max = 64 + rnd(1000);
    const out = displayText(s, max);
    t.true(out.length <= max, `length ${out.length} > ${max}`);
    t.false(RAW_CONTROL.test(out), JSON.stringify(out));
    t.false(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(out), 'no lone surrogate');
  }
});

test('10 MB in, a bounded line out, quickly', (t) => {
  const s = 'x'.repeat(10 << 20);
  const started = performance.now();
  const out = displayText(s, TEXT_LIMITS.message);
  t.true(performance.now() - started < 2000);
  t.true(out.length <= TEXT_LIMITS.message);
  const m = /\[\.\.\. (\d+) characters left out \.\.\.\]/.exec(out);
  t.is(Number(m?.[1]) + out.length - (m?.[0].length ?? 0), 10 << 20);
});

test('utf8Length is the UTF-8 byte length (a lone surrogate as the 3 bytes of U+FFFD)', (t) => {
  for (const s of ['', 'abc', 'é', '日本', '🚀', 'a\ud800b', '\udc00', 'x'.repeat(5000)]) t.is(utf8Length(s), Buffer.byteLength(s, 'utf8'), JSON.stringify(s.slice(0, 10)));
});
