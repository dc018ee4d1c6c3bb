import test from 'ava';
import { dotNotation, dotTokens, jqPath, jqString, shlexSplit } from '../../src/yip/dot-notation.ts';

test('shlex split: whitespace, single quotes literal, double quotes with escapes, backslash, comments', (t) => {
  t.deepEqual(shlexSplit(`a b\t c`), ['a', 'b', 'c']);
  t.deepEqual(shlexSplit(`x='echo hi there' y="a \\"q\\" b" z=a\\ b`), ['x=echo hi there', 'y=a "q" b', 'z=a b']);
  t.deepEqual(shlexSplit(`'it''s' "" end`), ['its', '', 'end']);
  t.deepEqual(shlexSplit(`a #comment here\nb`), ['a', 'b']);
  t.deepEqual(shlexSplit(`a#b`), ['a#b'], 'a # inside a token is not a comment');
  t.deepEqual(shlexSplit(`  `), []);
});

test('tokens: the first = splits, quotes trimmed, no = is "true", the last value of a key wins in first-seen order', (t) => {
  t.deepEqual(dotTokens('root=LABEL=COS_ACTIVE quiet a=1 b=2 a=3'), [
    { key: 'root', value: 'LABEL=COS_ACTIVE' }, { key: 'quiet', value: 'true' }, { key: 'a', value: '3' }, { key: 'b', value: '2' },
  ]);
});

test('jq paths: identifiers and indexes; what jq would not parse is null', (t) => {
  t.deepEqual(jqPath('stages.boot[0].commands[1]'), ['stages', 'boot', 0, 'commands', 1]);
  t.deepEqual(jqPath('BOOT_IMAGE'), ['BOOT_IMAGE']);
  t.deepEqual(jqPath('rd.cos.disable'), ['rd', 'cos', 'disable']);
  for (const bad of ['cos-img/filename', '8250.nr_uarts', 'a..b', 'a[x]', 'a[0]b', '', 'a.', '.a']) t.is(jqPath(bad), null, bad);
});

test('jq string literal: escapes decoded; a quote, an invalid escape or an interpolation breaks it', (t) => {
  t.is(jqString('plain /dev/sda'), 'plain /dev/sda');
  t.is(jqString('a\\nb\\u0041\\\\'), 'a\nbA\\');
  for (const bad of ['say "hi"', 'a\\d', 'x\\(1)', 'end\\', '\\u12']) t.is(jqString(bad), null, bad);
});

test("the documented example: stages.boot[0].commands[0]='echo hi there' stages.boot[0].name=x", (t) => {
  const r = dotNotation("stages.boot[0].commands[0]='echo hi there' stages.boot[0].name=x");
  t.deepEqual(r.value, { stages: { boot: [{ commands: ['echo hi there'], name: 'x' }] } });
  t.deepEqual(r.dropped, []);
});

test('a real kernel command line: ordinary args become harmless keys; what jq rejects is dropped with its reason', (t) => {
  const r = dotNotation('BOOT_IMAGE=/boot/vmlinuz console=tty1 console=ttyS0,115200 root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img panic=5 rd.cos.disable rd.neednet=1 8250.nr_uarts=1');
  t.deepEqual(r.value, { BOOT_IMAGE: '/boot/vmlinuz', console: 'ttyS0,115200', root: 'LABEL=COS_ACTIVE', panic: '5', rd: { cos: { disable: 'true' }, neednet: '1' } });
  t.deepEqual(r.dropped.map((d) => d.key), ['cos-img/filename', '8250.nr_uarts']);
});

test('indexes beyond the end fill with nulls; every value is a string', (t) => {
  t.deepEqual(dotNotation('stages.boot[2].hostname=h stages.boot[0].files[0].permissions=0644').value, {
    stages: { boot: [{ files: [{ permissions: '0644' }] }, null, { hostname: 'h' }] },
  });
});

test('a type clash is a jq error: that key is dropped and the rest kept', (t) => {
  const r = dotNotation('a=1 a.b=2 c[0]=x c.d=y e.f=1 e[0]=z');
  t.deepEqual(r.value, { a: '1', c: ['x'], e: { f: '1' } });
  t.deepEqual(r.dropped.map((d) => d.key), ['a.b', 'c.d', 'e[0]']);
  t.regex(r.dropped[0]?.reason ?? '', /cannot index string with "b"/);
});

test('a value with a double quote inside breaks its token only', (t) => {
  const r = dotNotation(`stages.boot[0].commands[0]='echo "x"' stages.boot[0].name=ok`);
  t.deepEqual(r.value, { stages: { boot: [{ name: 'ok' }] } });
  t.is(r.dropped[0]?.key, 'stages.boot[0].commands[0]');
});
