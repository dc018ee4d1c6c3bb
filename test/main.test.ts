/** cosd as a process: arguments, and what it does when the bus is missing or goes away. */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBus, startCosd } from './helpers/dbus.ts';

const COSD = fileURLToPath(new URL('../bin/cosd.js', import.meta.url));

function cosd(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [COSD, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('an unknown argument exits 2 with the usage; --help prints it and exits 0', async (t) => {
  const bad = await cosd(['--bogus']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /cosd: .*--bogus[\s\S]*usage: cosd \[--root DIR\]/);
  const help = await cosd(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /^usage: cosd/);
});

test('with no bus at DBUS_SYSTEM_BUS_ADDRESS, cosd exits 1 naming the address', async (t) => {
  const root = await mkdtemp(path.join(tmpdir(), 'cosd-nobus-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const address = `unix:path=${root}/no-such-socket`;
  const r = await cosd(['--root', root], { DBUS_SYSTEM_BUS_ADDRESS: address, AGENT_TEST_DISK: '/dev/cos-test-no-such-disk' });
  t.is(r.code, 1);
  t.true(r.stderr.includes(address), r.stderr);
});

test('when the bus goes away, cosd logs it and exits 1 (systemd restarts it)', async (t) => {
  const bus = await startBus();
  t.teardown(() => bus.stop());
  const root = await mkdtemp(path.join(tmpdir(), 'cosd-root-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const proc = await startCosd(bus, { root, env: { AGENT_TEST_DISK: '/dev/cos-test-no-such-disk' } });
  t.teardown(async () => {
    await proc.stop();
  });
  await bus.stop();
  t.is(await proc.exited(), 1);
  t.truthy(proc.logs.find((l) => l.msg === 'lost the bus connection'));
});
