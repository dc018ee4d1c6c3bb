/**
 * cosctl's man page and completions are generated from the command table (src/cli/docs.ts): the committed files in
 * packaging/ are exactly what it makes (else: npm run gen-cli-docs), the man page renders without warnings, the bash
 * completion completes commands and each command's options, and zsh parses its completion.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { cliDocs } from '../../src/cli/docs.ts';
import { COMMANDS, GLOBAL_OPTIONS } from '../../src/cli/spec.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import { VERSION } from '../../src/version.ts';

const exec = promisify(execFile);
const REPO = new URL('../../', import.meta.url);

test('the committed man page and completions are what the command table makes (npm run gen-cli-docs)', async (t) => {
  for (const [file, text] of Object.entries(cliDocs(VERSION))) t.is(await readFile(new URL(file, REPO), 'utf8'), text, file);
});

test('the man page renders without warnings and names every command, option and exit code', async (t) => {
  const { stdout, stderr } = await exec('man', ['--warnings', '-l', '-P', 'cat', new URL('packaging/cosctl.1', REPO).pathname], { env: { ...process.env, MANWIDTH: '100', MAN_KEEP_FORMATTING: '' } });
  t.is(stderr, '');
  const text = stdout.replace(/.\x08/g, '');
  for (const c of COMMANDS) t.true(text.includes(c.name), c.name);
  for (const o of [...GLOBAL_OPTIONS, ...COMMANDS.flatMap((c) => c.options)]) t.true(text.includes(`--${o.name}`), o.name);
  for (const [code, e] of Object.entries(EXIT_CODES)) t.regex(text, new RegExp(`\\b${e.exit}\\b[\\s\\S]{0,20}${code}`), code);
  t.regex(text, /\b77\b\s+check: the slot already holds the image/);
});

/** What the bash completion offers for the words typed so far (the last one being completed). */
async function complete(words: string[]): Promise<string[]> {
  const script = `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _cosctl; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const { stdout } = await exec('bash', ['-c', script, 'bash', new URL('packaging/cosctl.bash-completion', REPO).pathname, 'cosctl', ...words]);
  return stdout.split('\n').filter(Boolean).sort();
}

test('bash completes the commands, then each command\'s own options, and directories after --root', async (t) => {
  t.deepEqual(await complete(['up']), ['upgrade']);
  t.deepEqual(await complete(['mark-']), ['mark-bad', 'mark-good']);
  for (const c of COMMANDS) {
    const offered = await complete([c.name, '--']);
    t.deepEqual(offered, [...c.options, ...GLOBAL_OPTIONS].map((o) => `--${o.name}`).sort(), c.name);
  }
  t.deepEqual(await complete(['--root', '/tmp', 'status', '--j']), ['--json']);
  t.deepEqual(await complete(['upgrade', '--image', '']), [], 'no words for a value');
  t.true((await complete(['--root', '/'])).includes('/tmp'), 'directories after --root');
});

test('zsh parses the zsh completion', async (t) => {
  await t.notThrowsAsync(exec('zsh', ['-n', new URL('packaging/_cosctl', REPO).pathname]));
});
