import test from 'ava';
import { readFileSync } from 'node:fs';
import { parseDotenv } from '../../src/config/dotenv.ts';
import { ConfigError } from '../../src/model/errors.ts';

const fixture = (name: string): string => readFileSync(new URL(`../fixtures/config/${name}`, import.meta.url), 'utf8');
const values = (m: Map<string, { value: string; line: number }>): Record<string, string> =>
  Object.fromEntries([...m].map(([k, v]) => [k, v.value]));

test('when the file is exactly what yip v1.3 writes (sorted KEY="value", no trailing newline), every key is read with its line', (t) => {
  const text = fixture('cos-upgrade-image.vanilla');
  t.false(text.endsWith('\n'), 'the fixture has no trailing newline');
  const m = parseDotenv(text, '/etc/cos-upgrade-image');
  t.deepEqual(values(m), { CHANNEL_UPGRADES: 'true', RECOVERY_IMAGE: 'recovery/cos', UPGRADE_IMAGE: 'system/cos' });
  t.deepEqual([...m].map(([k, v]) => [k, v.line]), [['CHANNEL_UPGRADES', 1], ['RECOVERY_IMAGE', 2], ['UPGRADE_IMAGE', 3]]);
});

test('when godotenv v1.4 wrote unquoted integers and escapes, the values round-trip', (t) => {
  const m = parseDotenv(fixture('cos-upgrade-image.derivative'), 'f');
  t.deepEqual(values(m), {
    CHANNEL_UPGRADES: 'false',
    DEFAULT_IMAGE_SIZE: '4096',
    GRUB_ENTRY_NAME: 'Deriv "edge" $HOME',
    UPGRADE_IMAGE: 'registry.example.com/deriv/os:v1.2',
  });
});

test('when godotenv.Write escaped every special character (yip.md 3.15 golden), the original values come back', (t) => {
  // Writer: \ " ! $ ` get a backslash, newline -> \n, CR -> \r.
  const text = 'A="plain"\nB="with space"\nC="q\\"uote"\nD="back\\\\slash"\nE="bang\\!"\nF="tick\\`"\nG="\\$HOME"\nH="two\\nlines\\r"\nK=""\n';
  t.deepEqual(values(parseDotenv(text, 'f')), {
    A: 'plain',
    B: 'with space',
    C: 'q"uote',
    D: 'back\\slash',
    E: 'bang!',
    F: 'tick`',
    G: '$HOME',
    H: 'two\nlines\r',
    K: '',
  });
});

test('when a double-quoted value has an unknown escape, the backslash is kept as the shell does', (t) => {
  t.is(parseDotenv('A="c:\\temp\\x"', 'f').get('A')?.value, 'c:\\temp\\x');
});

test('when values are single-quoted, they are taken literally', (t) => {
  t.deepEqual(values(parseDotenv(`A='a \\n $B "c" # not a comment'\nB=''`, 'f')), { A: 'a \\n $B "c" # not a comment', B: '' });
});

test('when variables are referenced, they are not expanded', (t) => {
  const m = parseDotenv('HOME_DIR=/root\nA=$HOME_DIR/x\nB="${HOME_DIR}/y"\nC=$(reboot)', 'f');
  t.deepEqual(values(m), { HOME_DIR: '/root', A: '$HOME_DIR/x', B: '${HOME_DIR}/y', C: '$(reboot)' });
});

test('when lines use export, comments, blanks around "=", CRLF and a BOM, they parse like the shell/godotenv', (t) => {
  const text = '\uFEFF# header\r\n\r\n   # indented comment\r\nexport A=1\r\nexport\tB="two"  # trailing\r\nC = three four   \r\nD=x#y\r\nE=x #y\r\nF= # only a comment\r\nexport=weird\r\n\t G=tabbed\r\n';
  const m = parseDotenv(text, 'f');
  t.deepEqual(values(m), { A: '1', B: 'two', C: 'three four', D: 'x#y', E: 'x', F: '', export: 'weird', G: 'tabbed' });
  t.is(m.get('A')?.line, 4);
  t.is(m.get('G')?.line, 11);
});

test('when a key repeats, the later assignment wins with its line', (t) => {
  const m = parseDotenv('A=1\nB=2\nA=3\n', 'f');
  t.deepEqual(m.get('A'), { value: '3', line: 3 });
});

test('when the real /etc/cos/config layout is read, only the active label lines are values', (t) => {
  const m = parseDotenv(fixture('cos-config'), '/etc/cos/config');
  t.deepEqual([...m.keys()], [
    'OEM_LABEL', 'PERSISTENT_LABEL', 'RECOVERY_LABEL', 'STATE_LABEL', 'ACTIVE_LABEL', 'PASSIVE_LABEL', 'SYSTEM_LABEL',
  ]);
  t.is(m.get('OEM_LABEL')?.value, 'COS_OEM');
});

const malformed: Array<[string, string, number, string | undefined]> = [
  ['no "="', 'A=1\nJUSTAWORD\n', 2, 'JUSTAWORD'],
  ['"export" but no assignment', '# c\nexport FOO\n', 2, 'FOO'],
  ['a key starting with a digit', 'A=1\n\n1ABC=x\n', 3, '1ABC'],
  ['a key with a dash', 'MY-KEY=x', 1, 'MY-KEY'],
  ['a key with a dot', 'a.b=x', 1, 'a.b'],
  ['an empty key', '=value', 1, ''],
  ['an unterminated double quote', 'A=1\nB="open\nC=3', 2, 'B'],
  ['an unterminated single quote', "A='open", 1, 'A'],
  ['a quote ending in an escaped quote', 'A="x\\"', 1, 'A'],
  ['text after the closing quote', 'A="x"y', 1, 'A'],
  ['a value split by blanks into a shell command', "A='x' reboot", 1, 'A'],
];
for (const [what, text, line, key] of malformed) {
  test(`when a line has ${what}, it throws CONFIG_INVALID naming the file, line ${line} and the key`, (t) => {
    const err = t.throws(() => parseDotenv(text, '/etc/cos/config'), { instanceOf: ConfigError });
    t.is(err.code, 'CONFIG_INVALID');
    t.is(err.file, '/etc/cos/config');
    t.is(err.line, line);
    if (key) {
      t.is(err.key, key);
      t.true(err.message.includes(key));
    }
    t.true(err.message.startsWith(`/etc/cos/config:${line}`));
  });
}

test('when a line has no key and no "=", the error has the line but no key', (t) => {
  const err = t.throws(() => parseDotenv('A=1\n"quoted"\n', 'f'), { instanceOf: ConfigError });
  t.is(err.line, 2);
});

test('when the text is empty or only comments, the result is empty', (t) => {
  t.is(parseDotenv('', 'f').size, 0);
  t.is(parseDotenv('# a\n\n  \n', 'f').size, 0);
});
