import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { AgentError } from '../../src/model/errors.ts';
import { GRUBENV_HEADER, GRUBENV_MESSAGE, readGrubEnvFile, updateGrubEnvFile } from '../../src/grub/index.ts';

const execFileP = promisify(execFile);

/** Run the real grub-editenv (argv array, no shell). */
async function grubEditenv(...args: string[]): Promise<Buffer> {
  const { stdout } = await execFileP('grub-editenv', args, { encoding: 'buffer' });
  return stdout;
}

async function grubEditenvFails(...args: string[]): Promise<string> {
  try {
    await execFileP('grub-editenv', args, { encoding: 'buffer' });
  } catch (e) {
    return (e as { stderr: Buffer }).stderr.toString('utf8');
  }
  throw new Error(`grub-editenv ${args.join(' ')} unexpectedly succeeded`);
}

/** What `grub-editenv F list` prints for these variables (name=value, values raw). */
function listing(vars: Iterable<readonly [string, string]>): string {
  let out = '';
  for (const [k, v] of vars) out += `${k}=${v}\n`;
  return out;
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'envfile-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function rejects(t: ExecutionContext, p: Promise<unknown>): Promise<AgentError> {
  const err = await t.throwsAsync(p, { instanceOf: AgentError });
  if (err === undefined) throw new Error('did not throw');
  return err;
}

function block(text: string, size = 1024): Buffer {
  const b = Buffer.alloc(size, '#');
  b.write(text, 'latin1');
  return b;
}

const awkward: Array<[string, string]> = [
  ['next_entry', 'recovery'],
  ['backslash', 'a\\b'],
  ['trailing', 'end\\'],
  ['newline', 'one\ntwo'],
  ['equals', 'console=ttyS0 root=LABEL=COS_STATE'],
  ['hash', '#x#'],
  ['spaces', ' a b '],
  ['utf8', 'Élémental ✓'],
  ['empty', ''],
];

test('creating a missing file with opts.create writes the same 1024 bytes as grub-editenv create + set, and grub-editenv lists the variables', async (t) => {
  const dir = await tempDir(t);
  const ours = path.join(dir, 'grubenv');
  const env = await updateGrubEnvFile(ours, Object.fromEntries(awkward), { create: true });
  t.deepEqual([...env], awkward);
  t.is((await grubEditenv(ours, 'list')).toString('utf8'), listing(awkward));

  const theirs = path.join(dir, 'theirs');
  await grubEditenv(theirs, 'create');
  await grubEditenv(theirs, 'set', ...awkward.map(([k, v]) => `${k}=${v}`));
  t.deepEqual(await readFile(ours), await readFile(theirs));
  t.is((await stat(ours)).size, 1024);
  t.deepEqual((await readdir(dir)).sort(), ['grubenv', 'theirs'], 'no temp file left behind');
});

test('without opts.create a missing file is GRUBENV_CORRUPT naming the path, and nothing is created', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'grubenv');
  const err = await rejects(t, updateGrubEnvFile(file, { a: '1' }));
  t.is(err.code, 'GRUBENV_CORRUPT');
  t.true(err.message.includes(file));
  t.deepEqual(await readdir(dir), []);
});

test('creating a file whose directory does not exist fails with STATE_INVALID and leaves nothing', async (t) => {
  const dir = await tempDir(t);
  const err = await rejects(t, updateGrubEnvFile(path.join(dir, 'nope', 'grubenv'), { a: '1' }, { create: true }));
  t.is(err.code, 'STATE_INVALID');
  t.deepEqual(await readdir(dir), []);
});

test('readGrubEnvFile returns an empty map for a missing file with missingOk, else GRUBENV_CORRUPT naming the path', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  t.deepEqual(await readGrubEnvFile(file, { missingOk: true }), new Map());
  const err = await rejects(t, readGrubEnvFile(file));
  t.is(err.code, 'GRUBENV_CORRUPT');
  t.true(err.message.includes(file));
});

test('readGrubEnvFile reads what grub-editenv wrote, in order', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  await grubEditenv(file, 'create');
  await grubEditenv(file, 'set', ...awkward.map(([k, v]) => `${k}=${v}`));
  t.deepEqual([...(await readGrubEnvFile(file))], awkward);
});

test('readGrubEnvFile of a corrupt file throws GRUBENV_CORRUPT naming the file', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  await writeFile(file, block(`${GRUBENV_HEADER}a=1\nbroken\n`));
  const err = await rejects(t, readGrubEnvFile(file));
  t.is(err.code, 'GRUBENV_CORRUPT');
  t.true(err.message.startsWith(`${file}: `), err.message);
});

test('updating an existing file rewrites it in place (same inode, same size) exactly as grub-editenv would', async (t) => {
  const dir = await tempDir(t);
  const ours = path.join(dir, 'grubenv');
  const theirs = path.join(dir, 'theirs');
  await grubEditenv(ours, 'create');
  await grubEditenv(ours, 'set', 'a=1', 'b=2', 'c=3');
  await copyFile(ours, theirs);
  const before = await stat(ours);

  const env = await updateGrubEnvFile(ours, { b: 'new\\value\nwith escapes', d: '4', a: null, c: 'x' });
  await grubEditenv(theirs, 'set', 'b=new\\value\nwith escapes', 'd=4');
  await grubEditenv(theirs, 'unset', 'a');
  await grubEditenv(theirs, 'set', 'c=x');

  const after = await stat(ours);
  t.is(after.ino, before.ino);
  t.is(after.size, 1024);
  t.deepEqual([...env], [['b', 'new\\value\nwith escapes'], ['c', 'x'], ['d', '4']]);
  t.deepEqual(await readFile(ours), await readFile(theirs));
  t.is((await grubEditenv(ours, 'list')).toString('utf8'), listing(env));
});

test('values written by updateGrubEnvFile are listed by grub-editenv exactly, and grub-editenv can keep editing the file', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  await grubEditenv(file, 'create');
  await updateGrubEnvFile(file, Object.fromEntries(awkward));
  t.is((await grubEditenv(file, 'list')).toString('utf8'), listing(awkward));
  await grubEditenv(file, 'set', 'next_entry=cos', 'added=yes');
  await grubEditenv(file, 'unset', 'empty');
  const expected = new Map(awkward);
  expected.set('next_entry', 'cos');
  expected.delete('empty');
  expected.set('added', 'yes');
  t.deepEqual([...(await readGrubEnvFile(file))], [...expected]);
});

test('a 2048-byte file keeps its size and inode, and matches grub-editenv on the same file', async (t) => {
  const dir = await tempDir(t);
  const ours = path.join(dir, 'grubenv');
  const theirs = path.join(dir, 'theirs');
  await writeFile(ours, block(`${GRUBENV_HEADER}${GRUBENV_MESSAGE}keep=1\n`, 2048));
  await copyFile(ours, theirs);
  const ino = (await stat(ours)).ino;
  const big = 'b'.repeat(1200);
  await updateGrubEnvFile(ours, { big });
  await grubEditenv(theirs, 'set', `big=${big}`);
  t.is((await stat(ours)).ino, ino);
  t.is((await stat(ours)).size, 2048);
  t.deepEqual(await readFile(ours), await readFile(theirs));
});

test("a file's own comment lines (grub2-editenv wording, or none from older GRUB) are kept, as grub-editenv keeps them", async (t) => {
  const dir = await tempDir(t);
  for (const preamble of ['# WARNING: Do not edit this file by tools other than grub2-editenv!!!\n', '']) {
    const ours = path.join(dir, `ours${preamble.length}`);
    const theirs = path.join(dir, `theirs${preamble.length}`);
    await writeFile(ours, block(`${GRUBENV_HEADER}${preamble}saved_entry=cos\n`));
    await copyFile(ours, theirs);
    await updateGrubEnvFile(ours, { next_entry: 'recovery' });
    await grubEditenv(theirs, 'set', 'next_entry=recovery');
    t.deepEqual(await readFile(ours), await readFile(theirs));
    t.true((await readFile(ours)).toString('latin1').startsWith(`${GRUBENV_HEADER}${preamble}saved_entry=cos\nnext_entry=recovery\n#`));
  }
});

const corrupt: Array<[string, Buffer]> = [
  ['a wrong header', block('# GRUB Environment Blok\na=1\n')],
  ['a truncated block', block(`${GRUBENV_HEADER}a=1\n`).subarray(0, 1000)],
  ['an empty file', Buffer.alloc(0)],
  ['a line without =', block(`${GRUBENV_HEADER}a=1\nbroken\n`)],
  ['a bad escape', block(`${GRUBENV_HEADER}a=x\\q\n`)],
  ['a non-# byte in the padding', (() => { const b = block(`${GRUBENV_HEADER}a=1\n`); b[900] = 0x21; return b; })()],
];

for (const [what, bytes] of corrupt) {
  test(`when the file has ${what}, updateGrubEnvFile throws GRUBENV_CORRUPT and leaves the file byte-for-byte unchanged`, async (t) => {
    const file = path.join(await tempDir(t), 'grubenv');
    await writeFile(file, bytes);
    const before = await stat(file);
    for (const opts of [{}, { create: true }]) {
      const err = await rejects(t, updateGrubEnvFile(file, { a: '2', next_entry: 'recovery' }, opts));
      t.is(err.code, 'GRUBENV_CORRUPT');
      t.true(err.message.startsWith(`${file}: `), err.message);
    }
    t.deepEqual(await readFile(file), bytes);
    const after = await stat(file);
    t.is(after.ino, before.ino);
    t.is(after.mtimeMs, before.mtimeMs);
  });
}

test('when the variables do not fit, updateGrubEnvFile throws GRUBENV_OVERFLOW naming file and variable and writes nothing, like grub-editenv', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  await grubEditenv(file, 'create');
  await grubEditenv(file, 'set', 'a=1');
  const before = await readFile(file);
  const huge = 'h'.repeat(1000);
  t.regex(await grubEditenvFails(file, 'set', `huge=${huge}`), /environment block too small/);
  t.deepEqual(await readFile(file), before);
  const err = await rejects(t, updateGrubEnvFile(file, { b: '2', huge }));
  t.is(err.code, 'GRUBENV_OVERFLOW');
  t.true(err.message.includes(file));
  t.regex(err.message, /not fitting: huge/);
  t.deepEqual(await readFile(file), before);
});

test('creating with variables that do not fit throws GRUBENV_OVERFLOW and creates nothing', async (t) => {
  const dir = await tempDir(t);
  const err = await rejects(t, updateGrubEnvFile(path.join(dir, 'grubenv'), { huge: 'h'.repeat(2000) }, { create: true }));
  t.is(err.code, 'GRUBENV_OVERFLOW');
  t.deepEqual(await readdir(dir), []);
});

test('a bad variable name is CONFIG_INVALID naming the key, and the file is left unchanged', async (t) => {
  const file = path.join(await tempDir(t), 'grubenv');
  await grubEditenv(file, 'create');
  const before = await readFile(file);
  const err = await rejects(t, updateGrubEnvFile(file, { 'bad=name': 'x' }));
  t.is(err.code, 'CONFIG_INVALID');
  t.regex(err.message, /bad=name/);
  t.deepEqual(await readFile(file), before);
});

test('a directory where the env file should be is STATE_INVALID', async (t) => {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, 'grubenv'));
  t.is((await rejects(t, updateGrubEnvFile(path.join(dir, 'grubenv'), { a: '1' }, { create: true }))).code, 'STATE_INVALID');
  t.is((await rejects(t, readGrubEnvFile(path.join(dir, 'grubenv')))).code, 'STATE_INVALID');
});
