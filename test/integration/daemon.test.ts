/**
 * cosd end to end: a private dbus-daemon with a system-bus-like config (including packaging/io.costoolkit.Agent1.conf),
 * the real daemon (bin/cosd.js --root <host>), a cOS disk on loop devices and a real docker-registry on 127.0.0.1;
 * a fault proxy only to hold a download open (busy and cancel).
 */
import test, { type ExecutionContext } from 'ava';
import { Ajv } from 'ajv';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { AgentError } from '../../src/model/errors.ts';
import type { HostStatusDocument } from '../../src/model/host.ts';
import type { Progress } from '../../src/host/deps.ts';
import { AgentClient, type Completion } from '../../src/dbus/client.ts';
import type { AgentProperties } from '../../src/dbus/codec.ts';
import { cosCmdline, createCosHost, type CosHost, type CosHostOptions } from '../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { holdLayerDownload, type HeldLayer } from '../helpers/fault-proxy.ts';
import { cosctl, grubList, imageCat, mountOptions, sha256File } from '../helpers/cosctl.ts';
import { asUser, jobProcesses, startBus, startCosd, type CosdLog, type CosdProcess, type TestBus } from '../helpers/dbus.ts';

let reg: TestRegistry;
let v2 = '';
let v2Layer = '';

const schema = JSON.parse(await readFile(new URL('../../docs/status.schema.json', import.meta.url), 'utf8')) as object;
const validateStatus = new Ajv({ allErrors: true, strict: true }).compile(schema);

test.before(async () => {
  reg = await startRegistry();
  v2 = await pushOsImage(reg, 'cos/os:v2', '2.0.0');
  const manifest = await fetch(`${reg.url}/v2/cos/os/manifests/v2`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  v2Layer = ((await manifest.json()) as { layers: Array<{ digest: string }> }).layers[0]?.digest ?? '';
});
test.after.always(async () => {
  await reg?.stop();
});

const CONFIG = { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' };
/** Test clock start (a Monday, 02:00 UTC): the default schedule's next run is 03:00 the same day. */
const FROZEN_CLOCK = 'manual:2025-01-06T02:00:00Z';

interface Daemon {
  bus: TestBus;
  host: CosHost;
  cosd: CosdProcess;
  client: AgentClient;
}

/** Bus, cOS host, cosd and a root client, torn down in reverse order even when the test fails. */
async function daemon(t: ExecutionContext, opts: CosHostOptions = {}, env: Record<string, string> = {}): Promise<Daemon> {
  const bus = await startBus();
  t.teardown(() => bus.stop());
  const host = await createCosHost({ ...opts, files: { ...CONFIG, ...opts.files } });
  t.teardown(() => host.close());
  // The scheduler runs on a test clock that only moves on SIGUSR2: no automatic check fires in the middle of a test.
  const cosd = await startCosd(bus, host, { COS_LOG_LEVEL: 'debug', AGENT_TEST_CLOCK: FROZEN_CLOCK, ...env });
  t.teardown(async () => {
    await cosd.stop();
  });
  const client = await AgentClient.connect({ address: bus.address });
  t.teardown(() => client.close());
  return { bus, host, cosd, client };
}

type BusEvent = { changed: Partial<AgentProperties> } | { completed: Completion };

/** Everything the daemon announces, in order, with a way to wait for a transaction's Completed. */
async function recordEvents(t: ExecutionContext, client: AgentClient): Promise<{ events: BusEvent[]; completion(tx: string): Promise<Completion> }> {
  const events: BusEvent[] = [];
  const waiting = new Map<string, (c: Completion) => void>();
  const stop = await client.subscribe({
    changed: (changed) => events.push({ changed }),
    completed: (c) => {
      events.push({ completed: c });
      waiting.get(c.transaction)?.(c);
    },
  });
  t.teardown(() => stop());
  return {
    events,
    completion: (tx) => {
      const seen = events.find((e): e is { completed: Completion } => 'completed' in e && e.completed.transaction === tx);
      return seen ? Promise.resolve(seen.completed) : new Promise((resolve) => waiting.set(tx, resolve));
    },
  };
}

/** The Operation values announced, consecutive repeats folded. */
function operations(events: BusEvent[]): string[] {
  const ops: string[] = [];
  for (const e of events) {
    const op = 'changed' in e ? e.changed.Operation : undefined;
    if (op !== undefined && ops[ops.length - 1] !== op) ops.push(op);
  }
  return ops;
}

function isSubsequence(needle: readonly string[], haystack: readonly string[]): boolean {
  let i = 0;
  for (const x of haystack) if (x === needle[i]) i++;
  return i === needle.length;
}

function assertValidStatus(t: ExecutionContext, doc: unknown, what: string): void {
  const ok = validateStatus(doc);
  t.true(ok, `${what}: ${JSON.stringify(validateStatus.errors)}`);
}

const heldProxy = (t: ExecutionContext): Promise<HeldLayer> => holdLayerDownload(t, reg.url, v2Layer);

async function slotHashes(host: CosHost): Promise<{ active: string; passive: string }> {
  return { active: await sha256File(host.statePath('cOS/active.img')), passive: await sha256File(host.statePath('cOS/passive.img')) };
}

test.serial('an upgrade over D-Bus announces its operations and progress in order, then Completed(tx, 0, ""), and the slot really changed', async (t) => {
  const { host, cosd, client } = await daemon(t);
  const baseline = await host.leaks();
  const rec = await recordEvents(t, client);

  const tx = await client.upgrade({ image: `${reg.host}/cos/os:v2`, noVerify: true });
  t.regex(tx, /^[0-9a-f-]{36}$/);
  t.deepEqual(await rec.completion(tx), { transaction: tx, result: 0, error: '' });

  const ops = operations(rec.events);
  t.true(isSubsequence(['checking', 'verifying', 'staging', 'downloading', 'finalizing', 'idle'], ops), ops.join(' -> '));
  t.is(ops[ops.length - 1], 'idle');
  // The running transaction is announced with the first operation and cleared with idle.
  const txChanges = rec.events.flatMap((e) => ('changed' in e && e.changed.Transaction !== undefined ? [e.changed.Transaction] : []));
  t.deepEqual(txChanges, [tx, '']);
  // Byte-level download progress, up to the whole compressed size.
  const downloads = rec.events.flatMap((e) => ('changed' in e && e.changed.Progress && e.changed.Progress.bytesTotal > 0 ? [e.changed.Progress] : []));
  t.true(downloads.length > 0, 'download progress was announced');
  const last = downloads[downloads.length - 1];
  t.is(last?.bytesDone, last?.bytesTotal);
  t.is(last?.percent, 100);
  t.is(last?.depth, 1);
  t.true(downloads.every((p, i) => i === 0 || p.bytesDone >= (downloads[i - 1]?.bytesDone ?? 0)), 'bytes only go up');
  // Completed comes last, after the persisted record and the new slots were announced.
  const completedAt = rec.events.findIndex((e) => 'completed' in e);
  t.true(rec.events.findIndex((e) => 'changed' in e && e.changed.LastTransaction?.transaction === tx) < completedAt);
  t.true(rec.events.findIndex((e) => 'changed' in e && e.changed.Slots?.active.digest === v2) < completedAt);

  // The slot really changed on disk, and nothing is left mounted or attached.
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img']);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));
  t.deepEqual(await host.leaks(), baseline);

  const props = await client.getProperties();
  t.is(props.Operation, 'idle');
  t.is(props.Transaction, '');
  t.is(props.LastError, '');
  t.is(props.BootedSlot, 'active');
  t.like(props.LastTransaction, { transaction: tx, kind: 'upgrade', result: 0, code: null, error: null });
  t.like(props.LastTransaction?.details, { image: `${reg.host}/cos/os:v2`, digest: v2, target: 'system', version: '2.0.0', verification: 'skipped', rotated: true, reboot: false, force: false });
  t.like(props.Slots.active, { digest: v2, version: '2.0.0', label: 'COS_ACTIVE', state: 'tentative', present: true, fs: 'ext2', verification: 'skipped' });
  t.like(props.Slots.passive, { version: '0.8.10', label: 'COS_PASSIVE', state: 'good' });

  const doc = await client.getStatus();
  assertValidStatus(t, doc, 'GetStatus after an upgrade');
  t.is(doc.status.lastUpgrade?.transaction, tx);
  t.is(doc.status.staged?.imageDigest, v2);

  // Every log line of the job carries its transaction id (tool runs included), and the logs are JSON only.
  const from = cosd.logs.findIndex((l) => l.msg === 'job started' && l.transaction === tx);
  const to = cosd.logs.findIndex((l) => l.msg === 'job succeeded' && l.transaction === tx);
  t.true(from >= 0 && to > from);
  const jobLines = cosd.logs.slice(from, to + 1);
  t.deepEqual(jobLines.filter((l) => l.transaction !== tx).map((l) => l.msg), []);
  t.true(jobLines.some((l) => l.msg === 'run' && Array.isArray(l.argv) && l.argv[0] === 'e2fsck'), 'tool runs are logged with the transaction');
  t.deepEqual(cosd.junk, []);
});

test.serial('GetStatus is the versioned status document: valid against docs/status.schema.json and equal to cosctl status --json in-process', async (t) => {
  const { host, client } = await daemon(t);
  const text = await client.getStatusText();
  const doc = JSON.parse(text) as HostStatusDocument;
  assertValidStatus(t, doc, 'GetStatus');
  t.is(doc.apiVersion, 'io.costoolkit.agent/v1');
  t.is(doc.kind, 'CosHost');
  t.is(doc.status.lastUpgrade, null);

  const r = await cosctl(host, ['--no-daemon', 'status', '--json'], { DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent/cos-test-bus' });
  t.is(r.code, 0, r.stderr);
  const cli = JSON.parse(r.stdout) as unknown;
  assertValidStatus(t, cli, 'cosctl status --json');
  t.deepEqual(doc, cli);

  // The schema is strict: an unknown field or a missing one is refused.
  t.false(validateStatus({ ...doc, extra: 1 }));
  const { lastUpgrade: _dropped, ...withoutLast } = doc.status;
  t.false(validateStatus({ ...doc, status: withoutLast }));
});

test.serial('a second request while an upgrade downloads gets Busy naming the running transaction; the first still completes', async (t) => {
  const { client } = await daemon(t);
  const { proxy, release, downloading } = await heldProxy(t);
  const rec = await recordEvents(t, client);
  const tx = await client.upgrade({ image: `${proxy.host}/cos/os:v2`, noVerify: true });
  await downloading();

  for (const second of [() => client.upgrade({ image: `${reg.host}/cos/os:v2`, noVerify: true }), () => client.check({}), () => client.markGood()]) {
    const err = await t.throwsAsync(second());
    t.true(err instanceof AgentError);
    t.is((err as AgentError).code, 'BUSY');
    t.is(((err as AgentError).cause as { type: string }).type, 'io.costoolkit.Agent1.Error.Busy');
    t.true(err?.message.includes(tx), err?.message);
  }
  t.is(await client.getProperty('Transaction'), tx);
  release();
  t.deepEqual(await rec.completion(tx), { transaction: tx, result: 0, error: '' });
  t.like(await client.getProperty('LastTransaction'), { transaction: tx, result: 0 });
});

test.serial('Cancel mid-download stops the upgrade: Completed(tx, 2), slots byte-identical, no transition image, no mounts or loops left', async (t) => {
  const { host, client } = await daemon(t);
  const baseline = await host.leaks();
  const before = await slotHashes(host);
  const { proxy, release, downloading } = await heldProxy(t);
  const rec = await recordEvents(t, client);

  const tx = await client.upgrade({ image: `${proxy.host}/cos/os:v2`, noVerify: true });
  await downloading();
  t.true(await stat(host.statePath('cOS/transition.img')).then(() => true, () => false), 'the transition image exists mid-download');
  t.true(await client.cancel());
  const c = await rec.completion(tx);
  release();
  t.is(c.transaction, tx);
  t.is(c.result, 2);
  t.regex(c.error, /cancel|abort/i);
  t.false(await client.cancel(), 'nothing left to cancel');

  t.deepEqual(await slotHashes(host), before);
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img']);
  t.deepEqual(await host.leaks(), baseline);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));
  const props = await client.getProperties();
  t.is(props.Operation, 'idle');
  t.like(props.LastTransaction, { transaction: tx, result: 2, code: 'STAGE_FAILED' });
  t.false(operations(rec.events).includes('finalizing'), 'never reached the switch');
});

test.serial('each job runs in a process of its own: a job process killed mid-download fails the job (STAGE_FAILED naming SIGKILL); cosd carries on and recovers what it left at once; the next upgrade succeeds', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cosd-job-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const notify = path.join(dir, 'paused');
  const { host, cosd, client } = await daemon(t, {}, { AGENT_TEST_PAUSE_AT: 'pull:50%', AGENT_TEST_PAUSE_NOTIFY: notify });
  const baseline = await host.leaks();
  const rec = await recordEvents(t, client);
  const tx = await client.upgrade({ image: `${reg.host}/cos/os:v2`, noVerify: true });
  // the job's own process, a child of cosd, blocks at the pause point (the test seam) with half the image unpacked
  while (!(await readFile(notify, 'utf8').catch(() => '')).includes('pull:50%')) await new Promise((r) => setTimeout(r, 50));
  const jobs = await jobProcesses(cosd.child.pid as number);
  t.is(jobs.length, 1, `one job process under cosd: ${JSON.stringify(jobs)}`);
  t.true(jobs[0]?.argv.includes('cosd-upgrade'), 'named for its action');
  t.is((await client.getProperties()).Operation, 'downloading', 'cosd answers while its job is blocked');
  process.kill(jobs[0]?.pid as number, 'SIGKILL');

  const c = await rec.completion(tx);
  t.is(c.result, 1);
  t.regex(c.error, /the upgrade job process was killed by SIGKILL before it reported an outcome/);
  const props = await client.getProperties();
  t.is(props.Operation, 'idle');
  t.like(props.LastTransaction, { transaction: tx, result: 1, code: 'STAGE_FAILED' });
  t.is(cosd.child.exitCode, null, 'cosd still runs');
  // The killed run left what a crash leaves (mounts, its loop device, the transition image, its running marker):
  // cosd recovered it before announcing the end of the job, as its start would have.
  t.deepEqual(await host.leaks(), baseline, 'nothing of the killed job is left mounted or attached');
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img']);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'), 'COS_STATE read-only again');
  const last = (JSON.parse(await client.getStatusText()) as HostStatusDocument).status.lastUpgrade;
  t.like(last ?? {}, { result: 'failure', code: 'INTERRUPTED', interruptedAt: 'pull' }, JSON.stringify(last));
  t.truthy(cosd.logs.find((l) => l.msg === 'the job process ended without an outcome: recovering what it left, as after a crash'));

  // The next upgrade, in-process without the pause seam, stages the image.
  await cosd.stop();
  const up = await cosctl(host, ['--no-daemon', 'upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`]);
  t.is(up.code, 0, up.stderr);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  t.deepEqual(await host.leaks(), baseline);
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img']);
});

test.serial('a non-root caller reads GetStatus and properties but is denied Upgrade', async (t) => {
  const { bus, client, host } = await daemon(t);
  const before = await slotHashes(host);
  const status = await asUser(65534, bus, 'getStatus');
  t.true(status.ok, JSON.stringify(status));
  assertValidStatus(t, status.value, 'GetStatus as nobody');
  t.deepEqual(await asUser(65534, bus, 'getProperty', 'BootedSlot'), { ok: true, value: 'active' });
  const up = await asUser(65534, bus, 'upgrade');
  t.is(up.code, 'ACCESS_DENIED', JSON.stringify(up));
  t.is(await client.getProperty('LastTransaction'), null);
  t.deepEqual(await slotHashes(host), before);
});

test.serial('after a restart, cosd republishes the last job: its record, LastError, slots and the status document', async (t) => {
  const { bus, host, cosd, client } = await daemon(t);
  const seen: Progress[] = [];
  const done = await client.upgradeAndWait({ image: `${reg.host}/cos/os:v2`, noVerify: true }, { onProgress: (p) => seen.push(p) });
  // The waiting helper reports the job's progress with its operation, as cosctl shows it.
  t.true(isSubsequence(['checking', 'staging', 'downloading', 'finalizing'], seen.map((p) => p.operation).filter((op, i, a) => a[i - 1] !== op)));
  t.true(seen.some((p) => p.operation === 'downloading' && p.bytesTotal > 0 && p.bytesDone === p.bytesTotal));
  t.true(seen.every((p) => p.operation !== 'idle'));
  // A check now finds nothing newer.
  const check = await client.checkAndWait({ image: `${reg.host}/cos/os:v2` });
  t.like(check.details, { digest: v2, currentDigest: v2, updateAvailable: false });
  t.false(await client.getProperty('UpdateAvailable'));

  t.is(await cosd.stop(), 0);
  const second = await startCosd(bus, host, { COS_LOG_LEVEL: 'debug' });
  t.teardown(async () => {
    await second.stop();
  });
  let props = await client.getProperties();
  t.deepEqual(props.LastTransaction, check, 'the check was the last job');
  t.is(props.LastError, '');
  t.like(props.Slots.active, { digest: v2, version: '2.0.0', state: 'tentative' });
  let doc = await client.getStatus();
  t.is(doc.status.lastUpgrade?.transaction, done.transaction);
  t.is(doc.status.lastUpgrade?.result, 'success');

  // A failed upgrade is republished too, with its error.
  const err = await t.throwsAsync(client.upgradeAndWait({ image: `${reg.host}/cos/missing:v1`, noVerify: true }));
  t.is((err as AgentError).code, 'REGISTRY_NOT_FOUND');
  const failed = await client.getProperty('LastTransaction');
  t.like(failed, { kind: 'upgrade', result: 1, code: 'REGISTRY_NOT_FOUND' });
  t.is(await second.stop(), 0);
  const third = await startCosd(bus, host, { COS_LOG_LEVEL: 'debug' });
  t.teardown(async () => {
    await third.stop();
  });
  props = await client.getProperties();
  t.deepEqual(props.LastTransaction, failed);
  t.is(props.LastError, failed?.error ?? 'missing');
  t.regex(props.LastError, /missing/);
  doc = await client.getStatus();
  t.like(doc.status.lastUpgrade, { transaction: failed?.transaction, result: 'failure', code: 'REGISTRY_NOT_FOUND' });
  t.like(props.Slots.active, { digest: v2 }, 'the failed upgrade left the staged slot alone');
  t.truthy(third.logs.find((l) => l.msg === 'last transaction republished' && l.lastTransaction === failed?.transaction));
});

test.serial('an upgrade rolled back by boot assessment shows as UpgradeFailure, and active as bad', async (t) => {
  const { client } = await daemon(t, { booted: 'passive', upgradeFailure: true });
  const props = await client.getProperties();
  t.true(props.UpgradeFailure);
  t.is(props.BootedSlot, 'passive');
  t.is(props.Slots.active.state, 'bad');
  t.is(props.Slots.passive.state, 'good');
  t.is(props.Slots.recovery.state, 'good');
  t.true((await client.getStatus()).status.upgradeFailure);
});

test.serial('reboot: a successful upgrade that asked for it goes to Operation "rebooting" and reboots (through the test seam)', async (t) => {
  const dir = await (await import('node:fs/promises')).mkdtemp(path.join((await import('node:os')).tmpdir(), 'cosd-reboot-'));
  t.teardown(() => import('node:fs/promises').then((fs) => fs.rm(dir, { recursive: true, force: true })));
  const marker = path.join(dir, 'rebooted');
  const { cosd, client } = await daemon(t, {}, { AGENT_TEST_REBOOT_ARGV: JSON.stringify(['touch', marker]) });
  const rec = await client.upgradeAndWait({ image: `${reg.host}/cos/os:v2`, noVerify: true, reboot: true, force: true });
  t.like(rec.details, { reboot: true, force: true });
  await cosd.waitForLog((l) => l.msg === 'rebooting after the upgrade');
  t.true(await stat(marker).then(() => true, () => false), 'the reboot command ran');
  t.is(await client.getProperty('Operation'), 'rebooting');
});

test.serial('a reboot that fails after a successful upgrade is logged with its code and shown in LastError; cosd carries on', async (t) => {
  const { cosd, client } = await daemon(t, {}, { AGENT_TEST_REBOOT_ARGV: JSON.stringify(['false']) });
  const rec = await client.upgradeAndWait({ image: `${reg.host}/cos/os:v2`, noVerify: true, reboot: true, force: true });
  t.is(rec.result, 0);
  const line = await cosd.waitForLog((l) => l.msg === 'the upgrade succeeded but the reboot failed');
  t.like(line, { level: 50, transaction: rec.transaction, code: 'COMMAND_FAILED' });
  const props = await client.getProperties();
  t.regex(props.LastError, /^the upgrade succeeded but the reboot failed: /);
  t.is(props.Operation, 'idle');
  t.is(cosd.child.exitCode, null, 'cosd is still running');
  t.is((await client.getStatus()).status.slots.active.version, '2.0.0');
});

test.serial('an Upgrade to the digest active already holds completes with nothing staged and no reboot; force stages it again', async (t) => {
  const dir = await (await import('node:fs/promises')).mkdtemp(path.join((await import('node:os')).tmpdir(), 'cosd-reboot-'));
  t.teardown(() => import('node:fs/promises').then((fs) => fs.rm(dir, { recursive: true, force: true })));
  const marker = path.join(dir, 'rebooted');
  const { host, cosd, client } = await daemon(t, {}, { AGENT_TEST_REBOOT_ARGV: JSON.stringify(['touch', marker]) });
  const image = `${reg.host}/cos/os:v2`;
  t.like((await client.upgradeAndWait({ image, noVerify: true })).details, { digest: v2, rotated: true });
  const active = await sha256File(host.statePath('cOS/active.img'));
  const passive = await sha256File(host.statePath('cOS/passive.img'));

  const same = await client.upgradeAndWait({ image, noVerify: true, reboot: true });
  t.is(same.result, 0);
  t.like(same.details, { digest: v2, reboot: true, force: false, unchanged: `the active slot already holds ${v2}` });
  t.like(cosd.logs.find((l) => l.msg === 'already up to date: nothing staged' && l.transaction === same.transaction), { digest: v2 });
  t.is(await sha256File(host.statePath('cOS/active.img')), active);
  t.is(await sha256File(host.statePath('cOS/passive.img')), passive);
  t.false(await stat(marker).then(() => true, () => false), 'nothing staged, so no reboot (bootc upgrade --apply)');
  t.is(await client.getProperty('Operation'), 'idle');
  t.like(await client.getProperty('LastTransaction'), { transaction: same.transaction, details: { unchanged: `the active slot already holds ${v2}` } });

  const activeIno = (await stat(host.statePath('cOS/active.img'))).ino;
  const passiveIno = (await stat(host.statePath('cOS/passive.img'))).ino;
  const forced = await client.upgradeAndWait({ image, noVerify: true, force: true });
  t.is(forced.result, 0);
  t.is(forced.details.unchanged, undefined);
  // The first upgrade moved the running image to passive: the forced copy replaces active only (issue 8 #1).
  t.like(forced.details, { digest: v2, force: true, rotated: false, nextBoot: 'active' });
  t.is((await stat(host.statePath('cOS/passive.img'))).ino, passiveIno, 'forced: passive, the running image, kept');
  t.not((await stat(host.statePath('cOS/active.img'))).ino, activeIno, 'forced: a new copy in active');
});

test.serial('after a reboot into the fallback (run/ emptied, upgrade_failure), the upgrade of the earlier boot is republished from COS_PERSISTENT as rolled back', async (t) => {
  const { bus, host, cosd, client } = await daemon(t);
  const done = await client.upgradeAndWait({ image: `${reg.host}/cos/os:v2`, noVerify: true });
  t.is((await client.getProperty('LastTransaction'))?.details.rolledBack, undefined, 'not rolled back in the boot that staged it');
  t.is(await cosd.stop(), 0);
  // The reboot: /run starts empty; GRUB's boot assessment fell back to passive. Only /run/cos/upgrade_failure (which
  // 08_boot_assessment creates) tells it here, not the cmdline token: the file alone is enough.
  await rm(path.join(host.root, 'run/cos-agent'), { recursive: true, force: true });
  await writeFile(path.join(host.root, 'proc/cmdline'), cosCmdline('passive', 'img', false));
  await mkdir(path.join(host.root, 'run/cos'), { recursive: true });
  await writeFile(path.join(host.root, 'run/cos/upgrade_failure'), '');
  const after = await startCosd(bus, host, { COS_LOG_LEVEL: 'debug' });
  t.teardown(async () => {
    await after.stop();
  });
  const props = await client.getProperties();
  t.like(props.LastTransaction, { transaction: done.transaction, kind: 'upgrade', result: 0, details: { digest: v2, rolledBack: true } });
  t.true(props.UpgradeFailure);
  t.is(props.BootedSlot, 'passive');
  t.like(props.Slots.active, { digest: v2, state: 'bad' });
  t.like(after.logs.find((l) => l.msg === 'the last upgrade was rolled back by boot assessment'), { lastTransaction: done.transaction, digest: v2 });
  const doc = await client.getStatus();
  assertValidStatus(t, doc, 'GetStatus after the fallback');
  t.true(doc.status.upgradeFailure);
  t.is(doc.status.lastUpgrade?.transaction, done.transaction);
});

test.serial('a change made outside cosd (an in-process cosctl) reaches GetStatus and the properties through the status watches', async (t) => {
  const { host, cosd, client } = await daemon(t);
  t.false((await client.getStatus()).status.bootAssessment.tentative);
  t.like((await client.getProperties()).Slots.active, { state: 'good' });
  const props = await watchProperties(t, client);
  // An in-process cosctl changes boot assessment behind cosd's back (boot_assessment on COS_STATE).
  t.is((await cosctl(host, ['--no-daemon', 'mark-bad'])).code, 0);
  const slots = await props.until('Slots to change', (c) => (c.Slots?.active.state === 'tentative' ? c.Slots : undefined));
  t.is(slots.value.active.state, 'tentative');
  t.true((await client.getStatus()).status.bootAssessment.tentative);
  t.truthy(cosd.logs.find((l) => l.msg === 'status sources changed'));
});

test.serial('UpdateAvailable follows the configured image: a check of it sets it, an upgrade to it clears it, a restart keeps it; a check of another image leaves it', async (t) => {
  const { bus, host, cosd, client } = await daemon(t, { files: { '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v2\nNO_VERIFY=true\n` } });
  t.like((await client.checkAndWait({})).details, { updateAvailable: true });
  t.true(await client.getProperty('UpdateAvailable'));
  t.is(await cosd.stop(), 0);
  const second = await startCosd(bus, host, { COS_LOG_LEVEL: 'debug', AGENT_TEST_CLOCK: FROZEN_CLOCK });
  t.teardown(async () => {
    await second.stop();
  });
  t.true(await client.getProperty('UpdateAvailable'), 'restored from the last check of the configured image');
  // A check of another image says nothing about the configured one.
  await pushOsImage(reg, 'cos/other:v1', '7.0.0');
  t.like((await client.checkAndWait({ image: `${reg.host}/cos/other:v1` })).details, { updateAvailable: true });
  t.true(await client.getProperty('UpdateAvailable'));
  await client.upgradeAndWait({});
  t.false(await client.getProperty('UpdateAvailable'), 'the configured image is staged');
  t.like((await client.checkAndWait({})).details, { updateAvailable: false, currentDigest: v2 });
  t.false(await client.getProperty('UpdateAvailable'));
});

test.serial('a configuration error stays in LastError while it is in effect, even after a job succeeds', async (t) => {
  const { host, client } = await daemon(t, { files: { '/etc/cos-agent/agent.yaml': 'policy: check\n' } });
  const props = await watchProperties(t, client);
  // cosd's own agent.yaml goes bad: the jobs do not read it, so they still succeed.
  await replaceFile(host, '/etc/cos-agent/agent.yaml', 'policy: sometimes\n');
  const err = await props.until('a LastError', (c) => (c.LastError ? c.LastError : undefined));
  t.regex(err.value, /agent\.yaml/);
  const rec = await client.checkAndWait({ image: `${reg.host}/cos/os:v2` });
  t.is(rec.result, 0);
  t.is(await client.getProperty('LastError'), err.value, 'the job succeeded, the config is still broken');
  await replaceFile(host, '/etc/cos-agent/agent.yaml', 'policy: stage\n');
  await props.until('LastError cleared', (c) => (c.LastError === '' ? true : undefined));
});

test.serial('rollback and mark-good over D-Bus: the next boot entry and boot assessment change, and the status shows it', async (t) => {
  const { host, client } = await daemon(t);
  const rb = await client.rollbackAndWait({});
  t.like(rb.details, { permanent: false, nextEntry: 'fallback' });
  t.is((await grubList(`${host.root}/oem/grubenv`)).get('next_entry'), 'fallback');
  t.like((await client.getStatus()).status.nextBoot, { entry: 'fallback', oneShot: true });

  const mark = await client.markAndWait(true);
  t.like(mark, { kind: 'mark-good', result: 0 });
  const assess = await grubList(host.statePath('boot_assessment'));
  t.is(assess.get('enable_boot_assessment'), '');
  t.is(await client.getProperty('LastError'), '');
  const persisted = JSON.parse(await readFile(path.join(host.root, 'run/cos-agent/last-transaction.json'), 'utf8')) as { transaction: string };
  t.is(persisted.transaction, mark.transaction);
});

// --- config watching and the update schedule ----------------------------------------------------------------------

/** Every PropertiesChanged with its arrival time; `until` waits (bounded) for the first change matching `pred`. */
async function watchProperties(t: ExecutionContext, client: AgentClient): Promise<{
  until<T>(what: string, pred: (c: Partial<AgentProperties>) => T | undefined, timeoutMs?: number): Promise<{ value: T; at: number }>;
}> {
  const seen: Array<{ changed: Partial<AgentProperties>; at: number }> = [];
  const wake = new Set<() => void>();
  const stop = await client.subscribe({
    changed: (changed) => {
      seen.push({ changed, at: performance.now() });
      for (const w of wake) w();
    },
  });
  t.teardown(() => stop());
  return {
    async until(what, pred, timeoutMs = 15_000) {
      let cursor = 0;
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        for (; cursor < seen.length; cursor++) {
          const s = seen[cursor] as { changed: Partial<AgentProperties>; at: number };
          const value = pred(s.changed);
          if (value !== undefined) return { value, at: s.at };
        }
        const left = deadline - performance.now();
        if (left <= 0) throw new Error(`no PropertiesChanged with ${what} within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, left);
          function done(): void {
            clearTimeout(timer);
            wake.delete(done);
            resolve();
          }
          wake.add(done);
        });
      }
    },
  };
}

/** Replace a host file the way yip and editors do: write a sibling, rename it over. */
async function replaceFile(host: CosHost, hostPath: string, text: string): Promise<void> {
  const { writeFile, rename } = await import('node:fs/promises');
  const file = path.join(host.root, hostPath);
  await writeFile(`${file}.tmp-${process.pid}`, text);
  await rename(`${file}.tmp-${process.pid}`, file);
}

/** Send SIGUSR2 (the AGENT_TEST_CLOCK seam): the clock moves to its next event; resolves with that advance's log line. */
async function advanceClock(cosd: CosdProcess): Promise<CosdLog> {
  const n = cosd.logs.filter((l) => l.msg === 'test clock advanced').length + 1;
  cosd.child.kill('SIGUSR2');
  return cosd.waitForLog((l) => l.msg === 'test clock advanced' && l.advance === n);
}

test.serial('a new /etc/cos-upgrade-image is picked up within a second with no restart: Config shows the new image', async (t) => {
  const { host, cosd, client } = await daemon(t, { files: { '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v1\n` } });
  t.is((await client.getProperty('Config'))?.upgradeImage, `oci:${reg.host}/cos/os:v1`);
  const props = await watchProperties(t, client);

  const t0 = performance.now();
  await replaceFile(host, '/etc/cos-upgrade-image', `UPGRADE_IMAGE=${reg.host}/cos/os:v2\n`);
  const seen = await props.until('the new image in Config', (c) => (c.Config?.upgradeImage === `oci:${reg.host}/cos/os:v2` ? c.Config : undefined));
  const latency = seen.at - t0;
  t.log(`config change visible in the Config property after ${latency.toFixed(0)} ms`);
  t.true(latency < 1000, `took ${latency.toFixed(0)} ms`);

  t.is((await client.getProperty('Config'))?.upgradeImage, `oci:${reg.host}/cos/os:v2`);
  t.is(await client.getProperty('LastError'), '');
  t.is(cosd.child.exitCode, null, 'the same cosd process');
  t.is(cosd.logs.filter((l) => l.msg === 'starting').length, 1, 'no restart');
  t.truthy(cosd.logs.find((l) => l.msg === 'configuration reloaded' && l.upgradeImage === `oci:${reg.host}/cos/os:v2`));
});

test.serial('an invalid config is rejected with the old one kept: LastError names file and line; a following valid write clears it', async (t) => {
  const { host, client } = await daemon(t, { files: { '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v1\n` } });
  const props = await watchProperties(t, client);
  const file = path.join(host.root, 'etc/cos-upgrade-image');

  await replaceFile(host, '/etc/cos-upgrade-image', `UPGRADE_IMAGE=${reg.host}/cos/os:v3\nthis line is not KEY=value\n`);
  const err = await props.until('a LastError', (c) => (c.LastError ? c.LastError : undefined));
  t.true(err.value.startsWith(`${file}:2`), err.value);
  t.regex(err.value, /KEY=value/);
  t.is((await client.getProperty('Config'))?.upgradeImage, `oci:${reg.host}/cos/os:v1`, 'the previous config stays in effect');
  t.is(await client.getProperty('LastError'), err.value);

  await replaceFile(host, '/etc/cos-upgrade-image', `UPGRADE_IMAGE=${reg.host}/cos/os:v3\n`);
  await props.until('LastError cleared', (c) => (c.LastError === '' ? true : undefined));
  t.is((await client.getProperty('Config'))?.upgradeImage, `oci:${reg.host}/cos/os:v3`);
  t.is(await client.getProperty('LastError'), '');
});

test.serial('after an invalid edit of /etc/cos-upgrade-image the jobs run with the last valid config, not CONFIG_INVALID; LastError still names the file', async (t) => {
  const { host, client } = await daemon(t, { files: { '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v2\nNO_VERIFY=true\n` } });
  const props = await watchProperties(t, client);
  const file = path.join(host.root, 'etc/cos-upgrade-image');
  await replaceFile(host, '/etc/cos-upgrade-image', `UPGRADE_IMAGE=${reg.host}/cos/os:v3\nthis line is not KEY=value\n`);
  const err = await props.until('a LastError', (c) => (c.LastError ? c.LastError : undefined));
  t.true(err.value.startsWith(`${file}:2`), err.value);

  // Check of the configured image: the image of the last valid config (v2), resolved and compared.
  const check = await client.checkAndWait({});
  t.like(check, { kind: 'check', result: 0 });
  t.like(check.details, { image: `${reg.host}/cos/os:v2`, digest: v2, updateAvailable: true });
  t.is(await client.getProperty('LastError'), err.value, 'the job succeeded, the file is still broken');

  // A rollback (its labels come from the config), and the status re-read after it, use the same snapshot.
  const rb = await client.rollbackAndWait({});
  t.like(rb.details, { permanent: false, nextEntry: 'fallback' });
  t.like((await client.getStatus()).status.nextBoot, { entry: 'fallback', oneShot: true });

  // An upgrade of the configured image, NO_VERIFY=true from the last valid file.
  const up = await client.upgradeAndWait({});
  t.like(up, { kind: 'upgrade', result: 0 });
  t.like(up.details, { digest: v2, verification: 'skipped' });
  t.is(await client.getProperty('LastError'), err.value);
});

test.serial('a scheduled check fires on the test clock (default policy check, daily at 03:00 UTC): a real Check job finds the update', async (t) => {
  const { cosd, client } = await daemon(t, { files: { '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v2\n` } });
  const armed = await cosd.waitForLog((l) => l.msg === 'automatic updates scheduled');
  t.like(armed, { policy: 'check', schedule: '0 3 * * *', timeZone: 'UTC', nextRun: '2025-01-06T03:00:00.000Z' });
  t.is(await client.getProperty('LastTransaction'), null, 'nothing ran before the clock moved');
  const rec = await recordEvents(t, client);

  // The tick at 03:00 arms the random delay (up to 2 h); the next advance runs the check after it.
  const first = await advanceClock(cosd);
  t.is(first.to, '2025-01-06T03:00:00.000Z');
  const tick = await cosd.waitForLog((l) => l.msg === 'scheduled run due');
  t.true(typeof tick.delayMs === 'number' && tick.delayMs >= 0 && tick.delayMs < 2 * 3600_000);
  if ((tick.delayMs as number) > 0) await advanceClock(cosd);

  const started = await cosd.waitForLog((l) => l.msg === 'automatic job started');
  t.like(started, { kind: 'check', trigger: 'schedule', policy: 'check' });
  const tx = started.transaction as string;
  t.deepEqual(await rec.completion(tx), { transaction: tx, result: 0, error: '' });
  const props = await client.getProperties();
  t.true(props.UpdateAvailable);
  t.like(props.LastTransaction, { transaction: tx, kind: 'check', result: 0 });
  t.like(props.LastTransaction?.details, { image: `${reg.host}/cos/os:v2`, digest: v2, updateAvailable: true });
  // Policy check only reports: nothing was staged.
  t.truthy(cosd.logs.find((l) => l.msg === 'update available' && l.digest === v2));
  t.false(cosd.logs.some((l) => l.msg === 'automatic job started' && l.kind === 'upgrade'));
  t.like(props.Slots.active, { version: '0.8.10' });
});

test.serial('under policy stage a scheduled run checks, then stages the new image without rebooting', async (t) => {
  const { host, cosd, client } = await daemon(t, {
    files: {
      '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\nNO_VERIFY=true\n',
      '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v2\n`,
      '/etc/cos-agent/agent.yaml': 'policy: stage\nrandomDelay: 0\n',
    },
  });
  t.like(await cosd.waitForLog((l) => l.msg === 'automatic updates scheduled'), { policy: 'stage' });
  const rec = await recordEvents(t, client);
  // One advance: the tick, its check and the upgrade (the test clock waits for the run it started).
  t.like(await advanceClock(cosd), { to: '2025-01-06T03:00:00.000Z' });

  const jobs = cosd.logs.filter((l) => l.msg === 'automatic job started');
  t.deepEqual(jobs.map((l) => [l.kind, l.trigger]), [['check', 'schedule'], ['upgrade', 'schedule']]);
  const upgradeTx = jobs[1]?.transaction as string;
  t.deepEqual(await rec.completion(upgradeTx), { transaction: upgradeTx, result: 0, error: '' });
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  const props = await client.getProperties();
  t.like(props.LastTransaction, { transaction: upgradeTx, kind: 'upgrade', result: 0 });
  t.like(props.LastTransaction?.details, { digest: v2, reboot: false });
  t.like(props.Slots.active, { digest: v2, version: '2.0.0', state: 'tentative' });
  t.is(props.Operation, 'idle', 'no reboot');
  t.false(cosd.logs.some((l) => /reboot/.test(l.msg)));
});

test.serial('on the real clock the daemon arms the schedule through the cron helper: the next run is the coming 02:30 in the zone', async (t) => {
  const { cosd } = await daemon(t, { files: { '/etc/cos-agent/agent.yaml': 'schedule: "30 2 * * *"\ntimeZone: Europe/Berlin\n' } }, { AGENT_TEST_CLOCK: '' });
  const armed = await cosd.waitForLog((l) => l.msg === 'automatic updates scheduled');
  t.like(armed, { policy: 'check', schedule: '30 2 * * *', timeZone: 'Europe/Berlin' });
  const next = new Date(armed.nextRun as string);
  t.true(next.getTime() > Date.now() && next.getTime() - Date.now() <= 25 * 3600_000, String(armed.nextRun));
  const local = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(next);
  t.is(local, '02:30');
});

test.serial('under policy none there is no cron task at all: the test clock has nothing to advance to', async (t) => {
  const { cosd, client } = await daemon(t, {
    files: { '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v2\n`, '/etc/cos-agent/agent.yaml': 'policy: none\n' },
  });
  t.truthy(await cosd.waitForLog((l) => l.msg === 'automatic updates off (policy none)'));
  t.false(cosd.logs.some((l) => l.msg === 'automatic updates scheduled'));
  t.like(await advanceClock(cosd), { to: null, pending: [] });
  t.is(await client.getProperty('LastTransaction'), null);
});

// --- what callers send: options read from the wire, absurd values refused, echoed text bounded (issue 9) -----------

const RAW_CONTROL = /[\x00-\x1f\x7f-\x9f]/;

/** `busctl call` of one agent method with raw D-Bus arguments (busctl writes what it is told: repeated keys too). */
function busctl(bus: TestBus, member: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('busctl', [`--address=${bus.address}`, 'call', 'io.costoolkit.Agent1', '/io/costoolkit/Agent1', 'io.costoolkit.Agent1', member, ...args],
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
}

async function refused(t: ExecutionContext, p: Promise<unknown>): Promise<AgentError> {
  const err = await t.throwsAsync(p);
  if (!(err instanceof AgentError)) throw new Error(`expected an AgentError, got ${String(err)}`);
  t.is(err.code, 'USAGE');
  t.is((err.cause as { type: string }).type, 'io.costoolkit.Agent1.Error.InvalidArgs');
  return err;
}

test.serial('Rollback reads its a{sv} from the wire: __proto__, constructor, prototype, an unknown key, a wrong type and a repeated key are each refused naming the key, and nothing is done', async (t) => {
  const { bus, host, cosd, client } = await daemon(t);
  // The user GRUB environment a rollback writes next_entry to (absent until something writes it).
  const grubenv = path.join(host.root, 'oem/grubenv');
  const read = (): Promise<Buffer | null> => readFile(grubenv).catch(() => null);
  const before = await read();
  // Through dbus-next's client (an own "__proto__" key is marshalled as an entry like any other; its client refuses
  // to marshal a dict with an own "constructor", so that one goes through busctl below).
  for (const key of ['__proto__', 'prototype']) {
    const err = await refused(t, client.callWithOptions('Rollback', Object.fromEntries([[key, ['b', true]]])));
    t.is(err.message, `Rollback: option "${key}" is a reserved name, never an option (Rollback takes permanent)`);
  }
  t.regex((await refused(t, client.callWithOptions('Rollback', { permanet: ['b', true] }))).message, /^Rollback: unknown option "permanet" \(Rollback takes permanent\)$/);
  t.regex((await refused(t, client.callWithOptions('Rollback', { permanent: ['s', 'true'] }))).message, /^Rollback: option "permanent" must be a boolean \('b'\), got 's'$/);
  // Raw wire entries from another implementation: the same refusals, and a key given twice.
  const raw: Array<[string[], RegExp]> = [
    [['1', '__proto__', 'b', 'true'], /option "__proto__" is a reserved name/],
    [['1', 'constructor', 'b', 'true'], /option "constructor" is a reserved name/],
    [['1', 'prototype', 'b', 'false'], /option "prototype" is a reserved name/],
    [['1', 'permanet', 'b', 'true'], /unknown option "permanet"/],
    [['1', 'permanent', 'i', '1'], /option "permanent" must be a boolean \('b'\), got 'i'/],
    [['2', 'permanent', 'b', 'false', 'permanent', 'b', 'true'], /option "permanent" is given more than once/],
    [['2', 'permanent', 'b', 'false', '__proto__', 'b', 'true'], /option "__proto__" is a reserved name/],
  ];
  for (const [args, message] of raw) {
    const r = await busctl(bus, 'Rollback', 'a{sv}', ...args);
    t.not(r.code, 0, `busctl ${args.join(' ')}: ${r.stdout}`);
    t.regex(r.stderr, message, `busctl ${args.join(' ')}`);
  }
  // Nothing was done: no job, GRUB's environment as it was.
  t.deepEqual(await read(), before);
  t.is(await client.getProperty('LastTransaction'), null);
  t.is(await client.getProperty('Operation'), 'idle');
  t.false(cosd.logs.some((l) => l.msg === 'job started'));
  // The same wire path takes a good request: an empty a{sv} rolls back (next_entry set).
  const events = await recordEvents(t, client);
  const ok = await busctl(bus, 'Rollback', 'a{sv}', '0');
  t.is(ok.code, 0, ok.stderr);
  const tx = /^s "([0-9a-f-]{36})"$/.exec(ok.stdout.trim())?.[1] ?? '';
  t.like(await events.completion(tx), { transaction: tx, result: 0 });
  t.is((await grubList(grubenv)).get('next_entry'), 'fallback');
});

test.serial('a 10 MB image over D-Bus is refused with a short InvalidArgs naming the key and its length; LastError, LastTransaction, GetStatus and the records stay small', async (t) => {
  const { host, cosd, client } = await daemon(t);
  const statusBefore = await client.getStatusText();
  const image = `${reg.host}/cos/os:${'x'.repeat(10 << 20)}`;
  const up = await refused(t, client.upgrade({ image, noVerify: true }));
  t.is(up.message, `Upgrade: option "image" is ${image.length} bytes long, over the limit of 4096 bytes`);
  const check = await refused(t, client.check({ image }));
  t.is(check.message, `Check: option "image" is ${image.length} bytes long, over the limit of 4096 bytes`);
  t.is(await client.getProperty('LastError'), '');
  t.is(await client.getProperty('LastTransaction'), null);
  const status = await client.getStatusText();
  t.is(status, statusBefore);
  t.true(Buffer.byteLength(status) < 64 << 10, `GetStatus is ${Buffer.byteLength(status)} bytes`);
  const all = JSON.stringify(await client.getProperties());
  t.true(Buffer.byteLength(all) < 64 << 10, `GetAll is ${Buffer.byteLength(all)} bytes`);
  for (const f of ['run/cos-agent/last-transaction.json', 'run/cos-agent/last-upgrade.json']) {
    const size = await stat(path.join(host.root, f)).then((s) => s.size, () => 0);
    t.true(size < 16 << 10, `${f} is ${size} bytes`);
  }
  t.false(cosd.logs.some((l) => l.msg === 'job started'));
  const longest = Math.max(...cosd.logs.map((l) => JSON.stringify(l).length));
  t.true(longest < 8 << 10, `the longest log line is ${longest} bytes`);
});

test.serial('a job whose error echoes a long image (under the limit) is kept bounded: Completed, LastError, LastTransaction, the record file and the log lines', async (t) => {
  const { host, cosd, client } = await daemon(t);
  const events = await recordEvents(t, client);
  // 4000 bytes: accepted by the option check, refused by the reference parser, whose message quotes it twice.
  const image = `${reg.host}/cos/os:\x1b[2J${'v'.repeat(4000 - reg.host.length - 12)}`;
  const tx = await client.upgrade({ image, noVerify: true });
  const done = await events.completion(tx);
  t.is(done.result, 1);
  t.true(done.error.length <= 2048, `Completed error: ${done.error.length}`);
  t.regex(done.error, /^invalid image reference "[^"]*\/cos\/os:\\u001b\[2Jv+\[\.\.\. \d+ characters left out \.\.\.\]v+" is not valid/);
  t.false(RAW_CONTROL.test(done.error));
  const lastError = await client.getProperty('LastError');
  t.is(lastError, done.error);
  t.true(Buffer.byteLength(lastError) <= 2048);
  const last = await client.getProperty('LastTransaction');
  t.like(last, { transaction: tx, code: 'REFERENCE_INVALID', error: done.error });
  t.true(Buffer.byteLength(JSON.stringify(last)) < 16 << 10);
  const file = path.join(host.root, 'run/cos-agent/last-transaction.json');
  t.true((await stat(file)).size < 16 << 10, `${(await stat(file)).size} bytes`);
  t.is((JSON.parse(await readFile(file, 'utf8')) as { error: string }).error, done.error);
  const started = cosd.logs.find((l) => l.msg === 'job started' && l.transaction === tx);
  t.true(typeof started?.image === 'string' && started.image.length <= 512 && !RAW_CONTROL.test(started.image), String(started?.image).slice(0, 100));
  const failed = cosd.logs.find((l) => l.msg === 'job failed' && l.transaction === tx);
  t.is(failed?.err, done.error);
});
