/**
 * cosctl's error line, in-process (main() with captured streams, --no-daemon, a temp root holding only config files):
 * whatever the message echoes from a config file or the command line, it is one line, with no raw control bytes,
 * bounded, and an absurd --image is refused naming its length.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sink } from '../helpers/sink.ts';
import { main } from '../../src/cli.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import { TEXT_LIMITS } from '../../src/model/text.ts';

const RAW_CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/;

async function root(t: ExecutionContext, files: Record<string, string | Buffer>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cosctl-stderr-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [file, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await writeFile(path.join(dir, file), content);
  }
  return dir;
}

async function run(dir: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = sink();
  const err = sink();
  const code = await main(['--root', dir, '--no-daemon', ...args], {
    stdout: out.stream, stderr: err.stream, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', AGENT_TEST_DISK: '/dev/cos-test-no-such-disk' },
  });
  return { code, stdout: out.text(), stderr: err.text() };
}

test('ESC and BEL bytes from UPGRADE_IMAGE in a config file reach stderr escaped, on one line', async (t) => {
  const dir = await root(t, { '/etc/cos-upgrade-image': Buffer.from('UPGRADE_IMAGE=channel:\x1b]0;pwned\x07\x1b[2J\n', 'latin1') });
  const r = await run(dir, ['upgrade']);
  t.is(r.code, EXIT_CODES.NOT_SUPPORTED.exit, r.stderr);
  t.false(RAW_CONTROL.test(r.stderr), JSON.stringify(r.stderr));
  t.is(r.stderr.split('\n').length, 2, 'one line and its newline');
  t.true(r.stderr.includes('channel:\\x1b]0;pwned\\x07\\x1b[2J'), r.stderr);
});

test('a raw control byte in a config key is escaped in the CONFIG_INVALID line', async (t) => {
  const dir = await root(t, { '/etc/cos-upgrade-image': Buffer.from('UPGRADE\x1b_IMAGE=x\n', 'latin1') });
  const r = await run(dir, ['check']);
  t.is(r.code, EXIT_CODES.CONFIG_INVALID.exit, r.stderr);
  t.false(RAW_CONTROL.test(r.stderr), JSON.stringify(r.stderr));
  t.regex(r.stderr, /^cosctl: .*cos-upgrade-image:1 \(UPGRADE\\x1b_IMAGE\)/);
});

test('a 1 MB UPGRADE_IMAGE is refused where it is read: CONFIG_INVALID naming file, line, key and length, not echoing it', async (t) => {
  const dir = await root(t, { '/etc/cos-upgrade-image': `UPGRADE_IMAGE=reg.example/os:${'a'.repeat(1 << 20)}\n` });
  const r = await run(dir, ['upgrade']);
  t.is(r.code, EXIT_CODES.CONFIG_INVALID.exit, r.stderr.slice(0, 300));
  t.is(r.stderr.split('\n').length, 2);
  t.regex(r.stderr, /^cosctl: .*cos-upgrade-image:1 \(UPGRADE_IMAGE\): image source of 1048591 bytes is too long \(at most 4096\)\n$/);
  t.false(r.stderr.includes('aaaa'));
});

test('a long invalid image reference under the limit gives one bounded error line that says how much it left out', async (t) => {
  const dir = await root(t, { '/etc/cos-upgrade-image': `UPGRADE_IMAGE=reg.example/os:${'a'.repeat(4000)}\n` });
  const r = await run(dir, ['upgrade']);
  t.is(r.code, EXIT_CODES.REFERENCE_INVALID.exit, r.stderr.slice(0, 300));
  t.is(r.stderr.split('\n').length, 2);
  t.true(Buffer.byteLength(r.stderr) <= TEXT_LIMITS.message + 'cosctl: \n'.length, `${Buffer.byteLength(r.stderr)} bytes`);
  t.regex(r.stderr, /^cosctl: invalid image reference "reg\.example\/os:a+\[\.\.\. \d+ characters left out \.\.\.\]a+.*is not valid/);
});

test('an --image over 4096 bytes is refused as REFERENCE_INVALID naming its length in one line, not echoing it', async (t) => {
  const dir = await root(t, {});
  const r = await run(dir, ['check', '--image', `reg.example/os:${'b'.repeat(100_000)}`]);
  t.is(r.code, EXIT_CODES.REFERENCE_INVALID.exit);
  t.is(r.stderr, 'cosctl: --image is 100015 bytes long, over the limit of 4096 bytes\n');
  const v = await run(dir, ['verify', 'x'.repeat(5000)]);
  t.is(v.code, EXIT_CODES.REFERENCE_INVALID.exit);
  t.is(v.stderr, 'cosctl: IMAGE is 5000 bytes long, over the limit of 4096 bytes\n');
});
