/**
 * cosctl when things happen to it or around it: Ctrl-C (SIGINT) during an upgrade, in-process and through cosd;
 * cosd dying while cosctl waits for its job; a --root other than the daemon's. The real cosctl and cosd, a private
 * bus, the loop-device host, the local registry behind a fault proxy that holds the layer download.
 */
import { startFaultProxy } from '../helpers/fault-proxy.ts';
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { createCosHost, type CosHost } from '../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { holdLayerDownload, type HeldLayer } from '../helpers/fault-proxy.ts';
import { daemonHost, firstLayer } from '../helpers/daemon-host.ts';
import { cosctl, cosStatus, imageCat, mountOptions, sha256File } from '../helpers/cosctl.ts';
import { jobProcesses, processGone } from '../helpers/dbus.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';

const BIN = fileURLToPath(new URL('../../bin/cosctl.js', import.meta.url));
const CONFIG = { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' };

let reg: TestRegistry;
let layer = '';
test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/os:v2', '2.0.0');
  layer = (await firstLayer(reg, 'cos/os', 'v2')).digest;
});
test.after.always(async () => {
  await reg?.stop();
});

const heldProxy = (t: ExecutionContext): Promise<HeldLayer> => holdLayerDownload(t, reg.url, layer);

interface Running {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exit: Promise<number | null>;
}

function startCosctl(host: CosHost, args: string[], env: Record<string, string> = {}): Running {
  const child = spawn(process.execPath, [BIN, '--root', host.root, ...args], {
    env: { ...process.env, ...host.env, HOME: host.root, AGENT_TEST_REGISTRY_RETRY_MS: '20', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  return { child, out: () => out, err: () => err, exit };
}

const slots = async (host: CosHost): Promise<string[]> => [await sha256File(host.statePath('cOS/active.img')), await sha256File(host.statePath('cOS/passive.img'))];

test.serial('Ctrl-C during an in-process upgrade cancels it and cleans up: slots untouched, nothing mounted, COS_STATE read-only', async (t) => {
  const host = await createCosHost({ files: CONFIG });
  t.teardown(() => host.close());
  const baseline = await host.leaks();
  const before = await slots(host);
  const { proxy, downloading } = await heldProxy(t);
  const run = startCosctl(host, ['--no-daemon', 'upgrade', '--no-verify', '--image', `${proxy.host}/cos/os:v2`]);
  await downloading();
  run.child.kill('SIGINT');
  const code = await run.exit;
  t.is(code, EXIT_CODES.STAGE_FAILED.exit, run.err());
  t.regex(run.err(), /SIGINT: cancelling the upgrade/);
  t.regex(run.err(), /cosctl: .*cancelled/);
  t.deepEqual(await slots(host), before);
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img'], 'no transition image left');
  t.deepEqual(await host.leaks(), baseline);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));
});

test.serial('Ctrl-C while the registry holds the manifest request aborts that request at once: STAGE_FAILED in seconds, not after the 30 s timeout', async (t) => {
  const host = await createCosHost({ files: CONFIG });
  t.teardown(() => host.close());
  const proxy = await startFaultProxy(reg.url);
  t.teardown(() => proxy.stop());
  let release = (): void => {};
  proxy.addFault({ path: /\/manifests\/v2$/, fault: { kind: 'hold', until: new Promise<void>((r) => (release = r)) } });
  t.teardown(() => release());
  const run = startCosctl(host, ['--no-daemon', 'upgrade', '--no-verify', '--image', `${proxy.host}/cos/os:v2`]);
  while (!proxy.requests.some((r) => /\/manifests\/v2$/.test(r.path)) && run.child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
  const sent = Date.now();
  run.child.kill('SIGINT');
  const code = await run.exit;
  const ms = Date.now() - sent;
  t.is(code, EXIT_CODES.STAGE_FAILED.exit, run.err());
  t.regex(run.err(), /cosctl: .*cancelled/);
  t.true(ms < 10_000, `cosctl ended ${ms} ms after Ctrl-C, with the request still held`);
});

test.serial('Ctrl-C on cosctl while cosd runs its upgrade cancels the job in cosd (Cancel), and cosctl reports how it ended', async (t) => {
  const { host, cosd, env } = await daemonHost(t);
  const baseline = await host.leaks();
  const before = await slots(host);
  const { proxy, downloading } = await heldProxy(t);
  const run = startCosctl(host, ['upgrade', '--no-verify', '--image', `${proxy.host}/cos/os:v2`], env);
  await downloading();
  run.child.kill('SIGINT');
  const code = await run.exit;
  t.is(code, EXIT_CODES.STAGE_FAILED.exit, run.err());
  t.regex(run.err(), /cancelled/);
  t.truthy(cosd.logs.find((l) => l.msg === 'cancel requested' && l.cancelled === true));
  t.like(cosd.logs.find((l) => l.msg === 'job cancelled'), { kind: 'upgrade', cancelled: true });
  t.deepEqual(await slots(host), before);
  t.deepEqual(await host.leaks(), baseline);
});

test.serial('cosd dying while cosctl waits for its job: cosctl ends with DAEMON_LOST instead of waiting forever; the orphaned job process cancels, cleans up and exits', async (t) => {
  const { host, cosd, env } = await daemonHost(t);
  const baseline = await host.leaks();
  const before = await slots(host);
  const { proxy, downloading } = await heldProxy(t);
  const run = startCosctl(host, ['upgrade', '--no-verify', '--image', `${proxy.host}/cos/os:v2`], env);
  await downloading();
  const jobs = await jobProcesses(cosd.child.pid as number);
  t.is(jobs.length, 1, JSON.stringify(jobs));
  cosd.child.kill('SIGKILL');
  const code = await run.exit;
  t.is(code, EXIT_CODES.DAEMON_LOST.exit, run.err());
  t.regex(run.err(), /^cosctl: cosd left the bus \(it crashed or was stopped\) while transaction [0-9a-f-]{36} was running; its outcome shows in LastTransaction once cosd is back\n$/);
  // a job never outlives its daemon by more than its cleanup (src/job-worker.ts: cancel on disconnect)
  await processGone(jobs[0]?.pid as number);
  t.deepEqual(await slots(host), before);
  t.deepEqual(await host.leaks(), baseline, 'the job cleaned up after itself');
  const last = (await cosStatus(host)).status.lastUpgrade;
  t.like(last ?? {}, { result: 'failure', code: 'STAGE_FAILED' }, JSON.stringify(last));
  t.regex(last?.error ?? '', /^upgrade cancelled/, 'recorded as a cancelled upgrade');
});

test.serial('cosctl --root of another host than the daemon manages runs in-process on that root', async (t) => {
  const { host, cosd, env } = await daemonHost(t);
  const other = await createCosHost({ files: CONFIG, versions: { active: '5.5.5', passive: '0.9.0', recovery: '0.9.0' } });
  t.teardown(() => other.close());
  const r = await cosctl(other, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`], env);
  t.is(r.code, 0, r.stderr);
  t.regex(await imageCat(other.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/, 'the other host was upgraded');
  t.false(cosd.logs.some((l) => l.msg === 'job started'), 'not by the daemon');
  // The slot holds it now: check says so with exit 77 (0 means an update is available), as rpm-ostree upgrade --check.
  const check = await cosctl(other, ['check', '--image', `${reg.host}/cos/os:v2`], env);
  t.is(check.code, 77, check.stderr);
  t.regex(check.stdout, new RegExp(`^Up to date: ${reg.host.replace(/\./g, '\\.')}/cos/os:v2@sha256:[0-9a-f]{64}\\.\n$`));
  const status = await cosctl(host, ['status', '--json'], env);
  t.is(status.code, 0, status.stderr);
  t.not((JSON.parse(status.stdout) as { status: { slots: { active: { version: string } } } }).status.slots.active.version, '2.0.0', "the daemon's host is untouched");
});
