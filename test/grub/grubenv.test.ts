import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { AgentError } from '../../src/model/errors.ts';
import {
  GRUBENV_HEADER,
  GRUBENV_MESSAGE,
  GRUBENV_SIZE,
  applyGrubEnvChanges,
  parseGrubEnv,
  parseGrubEnvBlock,
  serializeGrubEnv,
} from '../../src/grub/index.ts';

const execFileP = promisify(execFile);

/** Run the real grub-editenv (argv array, no shell). */
async function grubEditenv(...args: string[]): Promise<Buffer> {
  const { stdout } = await execFileP('grub-editenv', args, { encoding: 'buffer' });
  return stdout;
}

/** Run grub-editenv expecting it to fail; returns its exit code and stderr. */
async function grubEditenvFails(...args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await execFileP('grub-editenv', args, { encoding: 'buffer' });
  } catch (e) {
    const err = e as { code: number; stderr: Buffer };
    return { code: err.code, stderr: err.stderr.toString('utf8') };
  }
  throw new Error(`grub-editenv ${args.join(' ')} unexpectedly succeeded`);
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'grubenv-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A file made by `grub-editenv F create` then one `grub-editenv F set k=v ...`. */
async function grubMade(t: ExecutionContext, vars: ReadonlyArray<readonly [string, string]>): Promise<Buffer> {
  const file = path.join(await tempDir(t), 'grubenv');
  await grubEditenv(file, 'create');
  if (vars.length > 0) await grubEditenv(file, 'set', ...vars.map(([k, v]) => `${k}=${v}`));
  return readFile(file);
}

function code(t: ExecutionContext, fn: () => unknown): { code: string; message: string } {
  const err = t.throws(fn, { instanceOf: AgentError });
  return { code: err?.code ?? 'none', message: err?.message ?? '' };
}

/** Room for one `name=value\n` line in a fresh 1024-byte block. */
const ROOM = GRUBENV_SIZE - GRUBENV_HEADER.length - Buffer.byteLength(GRUBENV_MESSAGE);
const nearLimit = 'v'.repeat(ROOM - 'long='.length - 1 - 3); // leaves 3 bytes of padding
const exactLimit = 'v'.repeat(ROOM - 'long='.length - 1); // leaves no padding at all

const cases: Array<[string, Array<[string, string]>]> = [
  ['no variables', []],
  ['cOS variables', [
    ['next_entry', 'recovery'],
    ['saved_entry', 'cos'],
    ['default_menu_entry', 'Elemental'],
    ['extra_cmdline', 'console=ttyS0,115200 rd.debug=1'],
    ['enable_boot_assessment', 'yes'],
  ]],
  ['a backslash inside a value', [['a', 'x\\y']]],
  ['a trailing backslash', [['a', 'tr\\'], ['b', 'after']]],
  ['only backslashes', [['a', '\\\\\\']]],
  ['a newline inside a value', [['a', 'l1\nl2'], ['b', 'next']]],
  ['a trailing newline and a backslash-newline pair', [['a', 'x\n'], ['b', '\\\n'], ['c', '\n\n']]],
  ['a newline followed by a hash', [['a', 'x\n#y\n'], ['b', '#']]],
  ["'=' in the value", [['extra_cmdline', 'a=b c==d ='], ['e', '=']]],
  ["'#' in values", [['a', '#'], ['b', '#not a comment'], ['c', 'x#'], ['d', '###']]],
  ['spaces, tabs and carriage returns', [['a', '  lead and trail  '], ['b', ' '], ['c', 't\tr\r']]],
  ['UTF-8 names and values', [['display_name', 'Élémental ✓ 🚀'], ['ключ', 'значение']]],
  ['empty values', [['a', ''], ['b', ''], ['c', 'x']]],
  ['a long value close to the 1024 limit', [['long', nearLimit]]],
  ['a value that fills the block exactly (no padding left)', [['long', exactLimit]]],
  ['escaped characters filling the block exactly', [['long', '\\\n'.repeat((ROOM - 'long='.length - 1) / 4)]]],
];

for (const [what, vars] of cases) {
  test(`for ${what}, serializeGrubEnv writes the same bytes as grub-editenv and parseGrubEnv reads grub's file back`, async (t) => {
    const theirs = await grubMade(t, vars);
    const ours = serializeGrubEnv(new Map(vars));
    t.is(ours.length, GRUBENV_SIZE);
    t.is(ours.toString('latin1'), theirs.toString('latin1'));
    t.deepEqual([...parseGrubEnv(theirs, 'grubenv')], vars);
  });
}

test('the exact-limit cases really leave no padding (the boundary is tested, not missed)', (t) => {
  const block = serializeGrubEnv(new Map([['long', exactLimit]]));
  t.is(block[block.length - 1], 0x0a);
  t.is((ROOM - 'long='.length - 1) % 4, 0);
});

test('the constants are the GRUB ones', (t) => {
  t.is(GRUBENV_SIZE, 1024);
  t.is(GRUBENV_HEADER, '# GRUB Environment Block\n');
});

test('a sequence of set and unset matches grub-editenv step by step: a re-set key keeps its position, a new one is appended', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  await grubEditenv(file, 'create');
  const steps: Array<[string[], Record<string, string | null>]> = [
    [['set', 'a=1', 'b=2', 'c=3'], { a: '1', b: '2', c: '3' }],
    [['set', 'b=a much longer value\\with escapes\n', 'a='], { b: 'a much longer value\\with escapes\n', a: '' }],
    [['set', 'd=4'], { d: '4' }],
    [['unset', 'c'], { c: null }],
    [['set', 'c=5', 'a=short'], { c: '5', a: 'short' }],
    [['unset', 'missing', 'a'], { missing: null, a: null }],
    [['set', 'b=x'], { b: 'x' }],
  ];
  let env = new Map<string, string>();
  for (const [args, changes] of steps) {
    await grubEditenv(file, ...args);
    env = applyGrubEnvChanges(env, changes);
    const theirs = await readFile(file);
    t.is(serializeGrubEnv(env).toString('latin1'), theirs.toString('latin1'), `after ${args.join(' ')}`);
    t.deepEqual(parseGrubEnv(theirs), env);
  }
  t.deepEqual([...env.keys()], ['b', 'd', 'c']);
});

test('a bigger block keeps its size and matches grub-editenv, which also keeps the size', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  const empty = Buffer.alloc(2048, '#');
  empty.write(GRUBENV_HEADER + GRUBENV_MESSAGE);
  await writeFile(file, empty);
  await grubEditenv(file, 'set', 'a=1', `big=${'z'.repeat(1500)}`);
  const theirs = await readFile(file);
  t.is(theirs.length, 2048);
  const parsed = parseGrubEnvBlock(theirs);
  t.is(parsed.size, 2048);
  t.is(serializeGrubEnv(parsed.vars, parsed.size, parsed.preamble).toString('latin1'), theirs.toString('latin1'));
  t.is(code(t, () => serializeGrubEnv(parsed.vars)).code, 'GRUBENV_OVERFLOW');
});

test('a block without the warning comment (older GRUB) round-trips with its preamble kept empty, as grub-editenv does', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  const old = Buffer.alloc(1024, '#');
  old.write(GRUBENV_HEADER);
  await writeFile(file, old);
  await grubEditenv(file, 'set', 'next_entry=recovery');
  const theirs = await readFile(file);
  const parsed = parseGrubEnvBlock(theirs);
  t.is(parsed.preamble.length, 0);
  t.deepEqual([...parsed.vars], [['next_entry', 'recovery']]);
  t.is(serializeGrubEnv(parsed.vars, 1024, parsed.preamble).toString('latin1'), theirs.toString('latin1'));
});

test('a block written by grub2-editenv (SUSE/cOS wording of the warning) keeps that comment', (t) => {
  const preamble = '# WARNING: Do not edit this file by tools other than grub2-editenv!!!\n';
  const block = serializeGrubEnv(new Map([['k', 'v']]), 1024, preamble);
  const parsed = parseGrubEnvBlock(block);
  t.is(parsed.preamble.toString(), preamble);
  t.deepEqual(serializeGrubEnv(parsed.vars, parsed.size, parsed.preamble), block);
});

test('when the variables do not fit, serializeGrubEnv throws GRUBENV_OVERFLOW naming them, and grub-editenv refuses the same set', async (t) => {
  const tooLong = `${exactLimit}v`;
  const file = path.join(await tempDir(t), 'grubenv');
  await grubEditenv(file, 'create');
  const before = await readFile(file);
  const refused = await grubEditenvFails(file, 'set', `long=${tooLong}`);
  t.not(refused.code, 0);
  t.regex(refused.stderr, /environment block too small/);
  t.deepEqual(await readFile(file), before);
  const err = code(t, () => serializeGrubEnv(new Map([['long', tooLong]])));
  t.is(err.code, 'GRUBENV_OVERFLOW');
  t.regex(err.message, /long/);
  t.regex(err.message, /1 over/);
});

test('when one of several variables overflows, grub-editenv writes none of them and the error names the ones that do not fit', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  await grubEditenv(file, 'create');
  await grubEditenv(file, 'set', 'keep=1');
  const before = await readFile(file);
  await grubEditenvFails(file, 'set', 'small=2', `huge=${'h'.repeat(920)}`, 'tail=3');
  t.deepEqual(await readFile(file), before, 'grub-editenv left the file unchanged');
  const env = applyGrubEnvChanges(parseGrubEnv(before), { small: '2', huge: 'h'.repeat(920), tail: '3' });
  const err = code(t, () => serializeGrubEnv(env));
  t.is(err.code, 'GRUBENV_OVERFLOW');
  t.regex(err.message, /not fitting: huge, tail$/);
});

test('when re-setting an existing variable makes it too long, both grub-editenv and serializeGrubEnv refuse; one byte less fits in both', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  await grubEditenv(file, 'create');
  await grubEditenv(file, 'set', 'a=1', 'b=2');
  const before = await readFile(file);
  const room = ROOM - 'a=1\n'.length - 'b=\n'.length;
  await grubEditenvFails(file, 'set', `b=${'\\'.repeat(room / 2 + 1)}`);
  t.deepEqual(await readFile(file), before);
  t.is(code(t, () => serializeGrubEnv(applyGrubEnvChanges(parseGrubEnv(before), { b: '\\'.repeat(room / 2 + 1) }))).code, 'GRUBENV_OVERFLOW');
  await grubEditenv(file, 'set', `b=${'\\'.repeat(room / 2)}`);
  const env = applyGrubEnvChanges(parseGrubEnv(before), { b: '\\'.repeat(room / 2) });
  t.is(serializeGrubEnv(env).toString('latin1'), (await readFile(file)).toString('latin1'));
});

// ---- corrupt blocks ----

function blockOf(text: string, size = 1024): Buffer {
  const b = Buffer.alloc(size, '#');
  b.write(text, 'latin1');
  return b;
}
const H = GRUBENV_HEADER + GRUBENV_MESSAGE;
const good = blockOf(`${H}a=1\nb=x\n`);

const corruptions: Array<[string, Buffer, RegExp]> = [
  ['a wrong header', blockOf(`# GRUB Environment Blok\na=1\n`), /wrong header.*byte offset 22/],
  ['no header at all (zeroed block)', Buffer.alloc(1024), /wrong header.*byte offset 0 /],
  ['an empty file', Buffer.alloc(0), /size is 0 bytes/],
  ['a truncated block', good.subarray(0, 1000), /size is 1000 bytes/],
  ['a block one byte too long', Buffer.concat([good, Buffer.from('#')]), /size is 1025 bytes/],
  ['a half-size block', blockOf(`${H}a=1\n`, 512), /size is 512 bytes/],
  ['a line without =', blockOf(`${H}a=1\njunk\nb=2\n`), /line without '='.*byte offset 98 \(line 4\)/],
  ['an empty line', blockOf(`${H}a=1\n\nb=2\n`), /line without '='/],
  ['an empty name', blockOf(`${H}=v\n`), /empty variable name/],
  ['a bad escape', blockOf(`${H}a=x\\y\n`), /bad escape.*'y'.*"a".*byte offset 97/],
  ['a backslash as the last byte of the block', Buffer.from(`${H}a=${'x'.repeat(1024 - H.length - 3)}\\`, 'latin1'), /backslash at the end of the block/],
  ['a line running to the end of the block', Buffer.from(`${H}a=${'x'.repeat(1024 - H.length - 2)}`, 'latin1'), /does not end with a newline/],
  ['a non-# byte in the padding', (() => { const b = Buffer.from(good); b[1000] = 0x78; return b; })(), /'x' in the '#' padding.*byte offset 1000/],
  ['a NUL byte in the padding', (() => { const b = Buffer.from(good); b[1023] = 0; return b; })(), /0x00 in the '#' padding.*byte offset 1023/],
  ['a newline in the padding', (() => { const b = Buffer.from(good); b[500] = 0x0a; return b; })(), /'\\n' in the '#' padding.*byte offset 500/],
  ['a non-# byte in the padding of a block without variables', (() => { const b = blockOf(H); b[700] = 0x41; return b; })(), /'A' in the '#' padding.*byte offset 700/],
  ['a comment line after the variables', blockOf(`${H}a=1\n# note\nb=2\n`), /' ' in the '#' padding.*byte offset 99/],
  ['a duplicate variable', blockOf(`${H}a=1\nb=2\na=3\n`), /duplicate variable "a"/],
  ['invalid UTF-8 in a value', blockOf(`${H}a=\xff\xfe\n`), /value of "a" is not valid UTF-8/],
  ['a NUL byte in a value', blockOf(`${H}a=x\0y\n`), /NUL byte in the value of "a"/],
  ['a backslash in a name', blockOf(`${H}a\\b=1\n`), /backslash in a variable name/],
];

for (const [what, block, message] of corruptions) {
  test(`when the block has ${what}, parseGrubEnv throws GRUBENV_CORRUPT naming the file and the place`, (t) => {
    const err = code(t, () => parseGrubEnv(block, '/oem/grubenv'));
    t.is(err.code, 'GRUBENV_CORRUPT');
    t.true(err.message.startsWith('/oem/grubenv: '), err.message);
    t.regex(err.message, message);
  });
}

test('the well-formed base of the corruption cases parses', (t) => {
  t.deepEqual([...parseGrubEnv(good)], [['a', '1'], ['b', 'x']]);
});

test('grub-editenv also rejects a block with a wrong header', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  await writeFile(file, blockOf('# GRUB Environment Blok\na=1\n'));
  const refused = await grubEditenvFails(file, 'list');
  t.regex(refused.stderr, /invalid environment block/);
});

// ---- applyGrubEnvChanges ----

test('applyGrubEnvChanges keeps positions of re-set keys, appends new ones, unsets null ones and leaves its input alone', (t) => {
  const env = new Map([['a', '1'], ['b', '2'], ['c', '3']]);
  const next = applyGrubEnvChanges(env, { b: 'two', d: '4', a: null, missing: null });
  t.deepEqual([...next], [['b', 'two'], ['c', '3'], ['d', '4']]);
  t.deepEqual([...env], [['a', '1'], ['b', '2'], ['c', '3']]);
});

for (const bad of ['', 'a=b', 'a\nb', '#comment', 'a\\b', 'a\0b', 'x\ud800']) {
  test(`applyGrubEnvChanges rejects the variable name ${JSON.stringify(bad)} with CONFIG_INVALID naming it`, (t) => {
    const err = code(t, () => applyGrubEnvChanges(new Map(), { [bad]: 'v' }));
    t.is(err.code, 'CONFIG_INVALID');
    t.true(err.message.includes(JSON.stringify(bad)), err.message);
    t.is(code(t, () => serializeGrubEnv(new Map([[bad, 'v']]))).code, 'CONFIG_INVALID');
  });
}

test('applyGrubEnvChanges rejects a value GRUB cannot hold (NUL, lone surrogate, not a string) naming the key', (t) => {
  for (const value of ['a\0b', '\udc00', 42 as unknown as string]) {
    const err = code(t, () => applyGrubEnvChanges(new Map(), { the_key: value }));
    t.is(err.code, 'CONFIG_INVALID');
    t.regex(err.message, /the_key/);
  }
});

test('serializeGrubEnv refuses a block size GRUB would not have and a preamble that is not comment lines', (t) => {
  t.is(code(t, () => serializeGrubEnv(new Map(), 1000)).code, 'GRUBENV_CORRUPT');
  t.is(code(t, () => serializeGrubEnv(new Map(), 1536 + 1)).code, 'GRUBENV_CORRUPT');
  t.is(serializeGrubEnv(new Map(), 1536).length, 1536);
  t.is(code(t, () => serializeGrubEnv(new Map(), 1024, 'a=1\n')).code, 'GRUBENV_CORRUPT');
  t.is(code(t, () => serializeGrubEnv(new Map(), 1024, '# no newline')).code, 'GRUBENV_CORRUPT');
  t.is(serializeGrubEnv(new Map(), 1024, '').subarray(0, 26).toString(), `${GRUBENV_HEADER}#`);
});
