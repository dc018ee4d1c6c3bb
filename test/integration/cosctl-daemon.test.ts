/**
 * The real cosctl as a client of the real cosd on a private system-like bus: jobs run in the daemon (its log has
 * them), progress comes from PropertiesChanged, failures map to the same exit codes, and status --watch follows.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createCosHost } from '../helpers/cos-host.ts';
import { startBus, startCosd } from '../helpers/dbus.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { cosctl, imageCat } from '../helpers/cosctl.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import type { HostStatusDocument } from '../../src/model/host.ts';

let reg: TestRegistry;
test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/os:v2', '2.0.0');
});
test.after.always(async () => {
  await reg?.stop();
});

async function daemonHost(t: { teardown: (fn: () => Promise<void>) => void }) {
  const bus = await startBus();
  t.teardown(() => bus.stop());
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const cosd = await startCosd(bus, host);
  t.teardown(async () => { await cosd.stop(); });
  return { bus, host, cosd, env: { DBUS_SYSTEM_BUS_ADDRESS: bus.address } };
}

test.serial('cosctl upgrade runs the job in cosd, prints its progress, and exits 0', async (t) => {
  const { host, cosd, env } = await daemonHost(t);
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`], env);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /\[downloading\] \d+%/);
  t.regex(r.stdout, /Upgraded active slot to .*cos\/os:v2@sha256:[0-9a-f]{64} version 2\.0\.0 \[signature NOT verified\]/);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  t.true(cosd.logs.some((l) => typeof l.transaction === 'string' && /upgrade/i.test(l.msg)), 'the daemon ran it');
});

test.serial('a failure in the daemon maps to the same exit code and one stderr line', async (t) => {
  const { host, env } = await daemonHost(t);
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:nope`], env);
  t.is(r.code, EXIT_CODES.REGISTRY_NOT_FOUND.exit, r.stderr);
  t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  const none = await cosctl(host, ['cancel'], env);
  t.is(none.code, 0, none.stderr);
  t.regex(none.stdout, /Nothing to cancel/);
});

test.serial('cosctl status --watch --json prints the document, then again when the daemon state changes', async (t) => {
  const { host, env } = await daemonHost(t);
  const child = spawn(process.execPath, [fileURLToPath(new URL('../../bin/cosctl.js', import.meta.url)), '--root', host.root, 'status', '--watch', '--json'], {
    env: { ...process.env, ...host.env, HOME: host.root, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => { child.kill('SIGKILL'); });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const first = JSON.parse((await lines.next()).value as string) as HostStatusDocument;
  t.is(first.kind, 'CosHost');
  t.deepEqual(first.status.nextBoot, { entry: 'cos', oneShot: false });
  t.is((await cosctl(host, ['rollback'], env)).code, 0);
  let doc = first;
  while (doc.status.nextBoot.entry !== 'fallback') {
    doc = JSON.parse((await lines.next()).value as string) as HostStatusDocument;
  }
  t.deepEqual(doc.status.nextBoot, { entry: 'fallback', oneShot: true });
  child.kill('SIGINT');
  const [code] = await once(child, 'exit');
  t.is(code, 0);
});
