/**
 * cosctl's command line, table-driven from the one command table (src/cli/spec.ts), in-process (main() with captured
 * streams): help per command, `help`, `--version`, suggestions for typos, usage errors in at most two lines naming
 * the help to read, runtime errors without the usage, and `check`'s exit codes.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sink } from '../helpers/sink.ts';
import { main } from '../../src/cli.ts';
import { EXIT_CODES, EXIT_UP_TO_DATE } from '../../src/cli/exit-codes.ts';
import { COMMANDS, commandHelp, GLOBAL_OPTIONS, mainHelp, suggest } from '../../src/cli/spec.ts';
import { VERSION } from '../../src/version.ts';

async function cosctl(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = sink();
  const err = sink();
  const code = await main(args, { stdout: out.stream, stderr: err.stream, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } });
  return { code, stdout: out.text(), stderr: err.text() };
}

const USAGE = EXIT_CODES.USAGE.exit;

test('--help, -h and `help` print the command list with every command and global option, exit 0, nothing on stderr', async (t) => {
  for (const args of [['--help'], ['-h'], ['help']]) {
    const r = await cosctl(args);
    t.is(r.code, 0, args.join(' '));
    t.is(r.stderr, '');
    t.is(r.stdout, `${mainHelp()}\n`);
  }
  const text = mainHelp();
  for (const c of COMMANDS) t.regex(text, new RegExp(`^  ${c.name} +${c.summary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
  for (const o of GLOBAL_OPTIONS) t.true(text.includes(`--${o.name}`), o.name);
  t.true(text.split('\n').every((l) => l.length <= 80), 'fits 80 columns');
});

for (const c of COMMANDS) {
  test(`${c.name} --help and help ${c.name} print its usage, every option and its details (80 columns), exit 0`, async (t) => {
    const a = await cosctl([c.name, '--help']);
    const b = await cosctl(['help', c.name]);
    const v = await cosctl(['--verbose', c.name, '-h']);
    for (const r of [a, b, v]) {
      t.is(r.code, 0);
      t.is(r.stderr, '');
      t.is(r.stdout, `${commandHelp(c)}\n`);
    }
    t.regex(a.stdout, new RegExp(`^usage: cosctl \\[--root DIR\\] ${c.name}`));
    for (const o of c.options) t.true(a.stdout.includes(`--${o.name}${o.value !== undefined ? ` ${o.value}` : ''}`), `--${o.name}`);
    if (c.operand !== undefined) t.true(a.stdout.includes(c.operand.name));
    t.true(a.stdout.split('\n').every((l) => l.length <= 80), a.stdout);
  });
}

test('--version prints "cosctl VERSION" (package.json\'s), exit 0', async (t) => {
  const r = await cosctl(['--version']);
  t.is(r.code, 0);
  t.is(r.stdout, `cosctl ${VERSION}\n`);
  t.regex(VERSION, /^\d+\.\d+\.\d+/);
});

/** [argv, stderr]: every usage error is one line naming what is wrong and the help to read, exit 2. */
const USAGE_ERRORS: ReadonlyArray<readonly [string[], string]> = [
  [[], 'cosctl: missing command; see cosctl --help\n'],
  [['upgarde'], 'cosctl: unknown command upgarde (did you mean upgrade?); see cosctl --help\n'],
  [['stauts', '--json'], 'cosctl: unknown command stauts (did you mean status?); see cosctl --help\n'],
  [['rollbak'], 'cosctl: unknown command rollbak (did you mean rollback?); see cosctl --help\n'],
  [['frobnicate'], 'cosctl: unknown command frobnicate; see cosctl --help\n'],
  [['help', 'upgarde'], 'cosctl: unknown command upgarde (did you mean upgrade?); see cosctl --help\n'],
  [['upgrade', '--imag', 'x'], 'cosctl: unknown option --imag (did you mean --image?); see cosctl upgrade --help\n'],
  [['upgrade', '--no-verfy'], 'cosctl: unknown option --no-verfy (did you mean --no-verify?); see cosctl upgrade --help\n'],
  [['status', '--jsn'], 'cosctl: unknown option --jsn (did you mean --json?); see cosctl status --help\n'],
  [['status', '--bogus-thing'], 'cosctl: unknown option --bogus-thing; see cosctl status --help\n'],
  [['rollback', '--json'], 'cosctl: --json does not apply to rollback; see cosctl rollback --help\n'],
  [['check', '--permanent'], 'cosctl: --permanent does not apply to check; see cosctl check --help\n'],
  [['upgrade', '--image'], 'cosctl: --image needs a REF; see cosctl upgrade --help\n'],
  [['upgrade', '--image', '--force'], 'cosctl: --image needs a REF (--image=VALUE for one that starts with -); see cosctl upgrade --help\n'],
  [['--root', '-v', 'status'], 'cosctl: --root needs a DIR (--root=VALUE for one that starts with -); see cosctl status --help\n'],
  [['upgrade', '--force=yes'], 'cosctl: --force takes no value; see cosctl upgrade --help\n'],
  [['verify'], 'cosctl: verify needs IMAGE; see cosctl verify --help\n'],
  [['run-stage'], 'cosctl: run-stage needs STAGE; see cosctl run-stage --help\n'],
  [['status', 'extra'], 'cosctl: unexpected argument extra; see cosctl status --help\n'],
  [['status', '--json', '--yaml'], 'cosctl: --json and --yaml are exclusive; see cosctl status --help\n'],
];

for (const [argv, stderr] of USAGE_ERRORS) {
  test(`usage error: cosctl ${argv.join(' ') || '(nothing)'} -> exit 2, one line`, async (t) => {
    const r = await cosctl(argv);
    t.is(r.code, USAGE);
    t.is(r.stderr, stderr);
    t.is(r.stdout, '');
    t.false(r.stderr.includes('usage:'), 'never the whole usage');
  });
}

test('suggest: a prefix, a transposition, a missing letter; nothing for a word far from every name', (t) => {
  const names = COMMANDS.map((c) => c.name);
  t.is(suggest('upg', names), 'upgrade');
  t.is(suggest('mark-godo', names), 'mark-good');
  t.is(suggest('helth-check', names), 'health-check');
  t.is(suggest('xyz', names), undefined);
  t.is(suggest('m', names), undefined, 'one letter is no prefix match');
});

test('a runtime error is one line without the usage; a missing image is CONFIG_INVALID; an invalid one REFERENCE_INVALID', async (t) => {
  const root = await mkdtemp(path.join(tmpdir(), 'cosctl-cmds-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const env = { AGENT_TEST_DISK: '/dev/cos-test-no-such-disk' };
  const missing = await cosctl(['--root', root, '--no-daemon', 'upgrade', '--no-verify'], env);
  t.is(missing.code, EXIT_CODES.CONFIG_INVALID.exit, missing.stderr);
  t.regex(missing.stderr, /^cosctl: no upgrade image: pass --image REF or set UPGRADE_IMAGE .*\n$/);
  const invalid = await cosctl(['--root', root, '--no-daemon', 'check', '--image', 'https://example/x'], env);
  t.is(invalid.code, EXIT_CODES.REFERENCE_INVALID.exit, invalid.stderr);
  t.is(invalid.stderr.split('\n').length, 2, invalid.stderr);
  t.false(invalid.stderr.includes('usage'));
});

test('check exits 77 ("up to date") apart from 0 ("update available"), documented in the help, the man page and the README', async (t) => {
  t.is(EXIT_UP_TO_DATE, 77);
  t.false(Object.values(EXIT_CODES).some((e) => e.exit === 77), '77 is no error code');
  const help = (await cosctl(['check', '--help'])).stdout;
  t.regex(help, /exit 0: yes, 77: up to date/);
  const { readFile } = await import('node:fs/promises');
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
  t.regex(readme, /`check` resolves[\s\S]{0,200}exits 77 when the slot is up to date/);
});
