/**
 * The real cosctl as a client of the real cosd on a private system-like bus: jobs run in the daemon (its log has
 * them), progress comes from PropertiesChanged, failures map to the same exit codes, and status --watch follows.
 * Also: check and mark-bad/mark-good as jobs in cosd, cancel from a second cosctl, a non-root cosctl (setpriv) denied,
 * the progress bar under a pseudo-terminal, and status --json validated against docs/status.schema.json.
 */
import test, { type ExecutionContext } from 'ava';
import { Ajv } from 'ajv';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { CosHost } from '../helpers/cos-host.ts';
import { startCosd } from '../helpers/dbus.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { holdLayerDownload, type HeldLayer } from '../helpers/fault-proxy.ts';
import { daemonHost, firstLayer } from '../helpers/daemon-host.ts';
import { cosctl, grubList, imageCat, mountOptions, sha256File } from '../helpers/cosctl.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import { AgentClient } from '../../src/dbus/client.ts';
import type { HostStatusDocument } from '../../src/model/host.ts';

let reg: TestRegistry;
let v2 = '';
let v2Layer = '';
let layerSize = 0;
test.before(async () => {
  reg = await startRegistry();
  v2 = await pushOsImage(reg, 'cos/os:v2', '2.0.0');
  ({ digest: v2Layer, size: layerSize } = await firstLayer(reg, 'cos/os', 'v2'));
});
test.after.always(async () => {
  await reg?.stop();
});

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
  t.like(first.status.nextBoot, { entry: 'cos', oneShot: false, slot: 'active' });
  t.is((await cosctl(host, ['rollback'], env)).code, 0);
  let doc = first;
  while (doc.status.nextBoot.entry !== 'fallback') {
    doc = JSON.parse((await lines.next()).value as string) as HostStatusDocument;
  }
  t.like(doc.status.nextBoot, { entry: 'fallback', oneShot: true, slot: 'passive', reason: 'one-shot' });
  child.kill('SIGINT');
  const [code] = await once(child, 'exit');
  t.is(code, 0);
});

// --- more of cosctl through the daemon: check, mark-bad/mark-good, cancel, a non-root caller, the TTY bar, and the
// status document it prints, validated against docs/status.schema.json --------------------------------------------

// Read synchronously: ava wants every test declared in the first tick, and a top-level await here would delay these.
const schema = JSON.parse(readFileSync(new URL('../../docs/status.schema.json', import.meta.url), 'utf8')) as object;
const validateStatus = new Ajv({ allErrors: true, strict: true }).compile(schema);

/** `cosctl status --json` (through the daemon, as root unless `uid`), validated against the schema and parsed. */
async function statusJson(t: ExecutionContext, host: CosHost, env: Record<string, string>, what: string, uid?: number): Promise<HostStatusDocument> {
  const r = await cosctl(host, ['status', '--json'], env, uid === undefined ? {} : { uid });
  t.is(r.code, 0, `${what}: ${r.stderr}`);
  t.is(r.stderr, '', what);
  const doc = JSON.parse(r.stdout) as unknown;
  t.true(validateStatus(doc), `${what}: ${JSON.stringify(validateStatus.errors)}`);
  return doc as HostStatusDocument;
}

/** A root client of the daemon on `bus`, closed at teardown: to read LastTransaction and the other properties. */
async function rootClient(t: ExecutionContext, address: string): Promise<AgentClient> {
  const client = await AgentClient.connect({ address });
  t.teardown(() => client.close());
  return client;
}

async function slotHashes(host: CosHost): Promise<{ active: string; passive: string }> {
  return { active: await sha256File(host.statePath('cOS/active.img')), passive: await sha256File(host.statePath('cOS/passive.img')) };
}

const heldProxy = (t: ExecutionContext): Promise<HeldLayer> => holdLayerDownload(t, reg.url, v2Layer);

test.serial('cosctl check runs a Check job in cosd: exit 0, "Update available", and nothing written', async (t) => {
  // The configured upgrade source (no --image): its checks are what UpdateAvailable reports.
  const { host, cosd, env } = await daemonHost(t, { files: { '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:v2\n` } });
  const client = await rootClient(t, env.DBUS_SYSTEM_BUS_ADDRESS);
  t.false(await client.getProperty('UpdateAvailable'));
  const before = await slotHashes(host);
  const r = await cosctl(host, ['check'], env);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '');
  t.is(r.stdout, `Update available: ${reg.host}/cos/os:v2@${v2} (slot has an unrecorded image).\n`);
  const started = cosd.logs.filter((l) => l.msg === 'job started');
  t.deepEqual(started.map((l) => l.kind), ['check'], 'one job ran in cosd: the check');
  t.like(started[0], { image: null, recovery: false });
  const tx = started[0]?.transaction;
  t.truthy(cosd.logs.find((l) => l.msg === 'job succeeded' && l.transaction === tx && l.kind === 'check'));
  const last = await client.getProperty('LastTransaction');
  t.like(last, { transaction: tx, kind: 'check', result: 0, code: null });
  t.like(last?.details, { image: `${reg.host}/cos/os:v2`, digest: v2, updateAvailable: true });
  t.true(await client.getProperty('UpdateAvailable'));
  // A check resolves digests and writes nothing: the slots are byte-identical, nothing was added next to them.
  t.deepEqual(await slotHashes(host), before);
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img']);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));
});

test.serial('cosctl mark-bad then mark-good through the daemon: boot assessment is armed, then disarmed, by jobs in cosd', async (t) => {
  const { host, cosd, env } = await daemonHost(t);
  const client = await rootClient(t, env.DBUS_SYSTEM_BUS_ADDRESS);
  const assessment = async (): Promise<Array<string | undefined>> => {
    const a = await grubList(host.statePath('boot_assessment'));
    return [a.get('enable_boot_assessment'), a.get('boot_assessment_tentative')];
  };
  t.deepEqual(await assessment(), [undefined, undefined], 'a fresh host has boot assessment off');

  const bad = await cosctl(host, ['mark-bad'], env);
  t.is(bad.code, 0, bad.stderr);
  t.is(bad.stdout, 'Marked bad: the next boot falls back to passive.\n');
  t.deepEqual(await assessment(), ['yes', 'yes']);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'), 'COS_STATE is read-only again');
  const badTx = cosd.logs.find((l) => l.msg === 'job started' && l.kind === 'mark-bad')?.transaction;
  t.truthy(badTx, 'the mark-bad job ran in cosd');
  t.like(await client.getProperty('LastTransaction'), { transaction: badTx, kind: 'mark-bad', result: 0 });

  const good = await cosctl(host, ['mark-good'], env);
  t.is(good.code, 0, good.stderr);
  t.is(good.stdout, 'Marked good: boot assessment disarmed.\n');
  t.deepEqual(await assessment(), ['', '']);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));
  const goodTx = cosd.logs.find((l) => l.msg === 'job started' && l.kind === 'mark-good')?.transaction;
  t.truthy(goodTx, 'the mark-good job ran in cosd');
  t.not(goodTx, badTx);
  t.like(await client.getProperty('LastTransaction'), { transaction: goodTx, kind: 'mark-good', result: 0 });
  t.deepEqual(cosd.logs.filter((l) => l.msg === 'job succeeded').map((l) => l.kind), ['mark-bad', 'mark-good']);
});

test.serial('cosctl cancel stops a cosctl upgrade mid-download: the upgrade exits STAGE_FAILED with one error line, slots untouched, no leaks', async (t) => {
  const { host, cosd, env } = await daemonHost(t);
  const client = await rootClient(t, env.DBUS_SYSTEM_BUS_ADDRESS);
  const baseline = await host.leaks();
  const before = await slotHashes(host);
  const { proxy, release, downloading } = await heldProxy(t);

  // The upgrading cosctl is a child process of its own, waiting on the daemon while the layer download is held.
  const upgrading = cosctl(host, ['upgrade', '--no-verify', '--image', `${proxy.host}/cos/os:v2`], env);
  await downloading();
  const started = await cosd.waitForLog((l) => l.msg === 'job started' && l.kind === 'upgrade');
  t.is(await client.getProperty('Transaction'), started.transaction ?? 'missing');

  const cancel = await cosctl(host, ['cancel'], env);
  t.is(cancel.code, 0, cancel.stderr);
  t.is(cancel.stdout, 'Cancel requested: the upgrade stops and cleans up; the slots are untouched.\n');
  const up = await upgrading;
  release();
  t.is(up.code, EXIT_CODES.STAGE_FAILED.exit, up.stderr);
  const errLines = up.stderr.trim().split('\n');
  t.is(errLines.length, 1, up.stderr);
  t.regex(errLines[0] ?? '', /^cosctl: .*(cancel|abort)/i);
  t.notRegex(up.stdout, /Upgraded/);

  t.deepEqual(await slotHashes(host), before);
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img'], 'no transition image left');
  t.deepEqual(await host.leaks(), baseline);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'));
  t.like(await client.getProperty('LastTransaction'), { transaction: started.transaction, kind: 'upgrade', result: 2, code: 'STAGE_FAILED' });
  t.truthy(cosd.logs.find((l) => l.msg === 'job cancelled' && l.transaction === started.transaction));
  const again = await cosctl(host, ['cancel'], env);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /Nothing to cancel/);
});

test.serial('a non-root cosctl upgrade through the daemon exits ACCESS_DENIED with one stderr line; its status --json is the valid document', async (t) => {
  const { host, cosd, env } = await daemonHost(t);
  const client = await rootClient(t, env.DBUS_SYSTEM_BUS_ADDRESS);
  const before = await slotHashes(host);
  // Through the daemon cosctl reads nothing under --root: the bus carries everything. The host's root lies in a
  // root-owned 0700 temp dir, so uid 65534 cannot even look it up; no file is opened up for it.
  const tmp = await stat(path.dirname(host.root));
  t.is(tmp.uid, 0);
  t.is(tmp.mode & 0o777, 0o700);

  const up = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`], env, { uid: 65534 });
  t.is(up.code, EXIT_CODES.ACCESS_DENIED.exit, up.stderr);
  t.is(up.stdout, '');
  t.is(up.stderr.trim().split('\n').length, 1, up.stderr);
  t.regex(up.stderr, /^cosctl: .*Upgrade/);
  t.false(cosd.logs.some((l) => l.msg === 'job started'), 'no job ran');
  t.is(await client.getProperty('LastTransaction'), null);
  t.deepEqual(await slotHashes(host), before);

  const asNobody = await statusJson(t, host, env, 'cosctl status --json as nobody', 65534);
  t.is(asNobody.kind, 'CosHost');
  t.is(asNobody.status.bootedFrom, 'active');
  t.deepEqual(asNobody, await statusJson(t, host, env, 'cosctl status --json as root'), 'nobody sees the document root sees');
});

test.serial('cosctl upgrade under a TTY draws the cli-progress bar (redrawn in place), then the "Upgraded active slot" line, and exits 0', async (t) => {
  const { host, cosd, env } = await daemonHost(t);
  // cli-progress draws an update at once only when 200 ms passed since its last frame, else at its next 100 ms tick
  // with the latest state only; a local download takes less than that. Holding the layer download for 500 ms makes
  // the first download update a frame of its own.
  const { proxy, release, downloading } = await heldProxy(t);
  const image = `${proxy.host}/cos/os:v2`;
  const upgrading = cosctl(host, ['upgrade', '--no-verify', '--image', image], env, { tty: true });
  await downloading();
  await sleep(500);
  release();
  const r = await upgrading;
  t.is(r.code, 0, r.stdout);
  t.is(r.stderr, '', 'under the pty everything arrives on stdout');
  // Each frame: back to column 1, "[<phase>/6] <operation> [<40 shades>] <n>% | <message>", with bytes
  // " | <done>/<total> <KiB|MiB|GiB>" (in the total's unit) while there are some, and while downloading
  // " | <rate> <unit>/s, <n> s left" once a rate is known; clear to the end of the line.
  const frames = [...r.stdout.matchAll(/\u001b\[1G\[(\d)\/6\] (\w+) +\[([\u2588\u2591]{40})\] (\d{1,3})% \| ([^|\u001b]*)(?: \| (\d+\.\d)\/(\d+\.\d) (KiB|MiB|GiB))?( \| \d+\.\d [KMG]iB\/s, (\d+ min )?\d+ s left)?\u001b\[0K/g)];
  t.true(frames.length >= 3, `bar frames: ${frames.length}\n${JSON.stringify(r.stdout)}`);
  t.is(r.stdout.split('\u001b[1G').length - 1, frames.length, 'every redraw is a whole bar frame');
  for (const [, , , bar, pct] of frames) {
    t.is((bar ?? '').split('').filter((c) => c === '\u2588').length, Math.round((Number(pct) / 100) * 40), `bar ${bar} at ${pct}%`);
  }
  const steps = frames.map((f) => Number(f[1]));
  t.deepEqual(steps, [...steps].sort((a, b) => a - b), `the phase count never goes back: ${steps.join(' ')}`);
  // The MiB figures are the layer's bytes (not cli-progress's own 100-step total): the finished download frame
  // reads n/n with n the compressed layer size.
  const [unitBytes, unit] = layerSize >= 1048576 ? [1048576, 'MiB'] : [1024, 'KiB'];
  const layerInUnit = (layerSize / unitBytes).toFixed(1);
  const downloads = frames.filter((f) => f[2] === 'downloading');
  t.true(downloads.every((f) => f[7] === layerInUnit && f[8] === unit), `download totals ${downloads.map((f) => `${f[7]} ${f[8]}`).join(',')} vs ${layerInUnit} ${unit}`);
  t.true(frames.every((f) => f[2] !== 'downloading' || Number(f[6]) <= Number(f[7])));
  const ops = frames.map((f) => f[2]);
  t.log(frames.map((f) => `[${f[1]}/6] ${f[2]} ${f[4]}%`).join(' -> '));
  t.is(ops[0], 'checking');
  t.true(ops.includes('downloading'), ops.join(' -> '));
  const last = frames[frames.length - 1];
  t.deepEqual([last?.[1], last?.[2], last?.[4], last?.[5]?.trim()], ['6', 'finalizing', '100', 'done'], 'the last frame: the whole job, 100%, done');
  t.false(/^\[(checking|verifying|staging|downloading|finalizing|hooks)\] /m.test(r.stdout.replaceAll('\r', '')), 'no plain "[op] message" lines');
  // It ends with the summary, on fresh lines after the bar (cursor shown and restored).
  const tail = r.stdout.slice(r.stdout.lastIndexOf('\u001b[0K') + '\u001b[0K'.length);
  t.is(tail, `\u001b[?25h\u001b[?7h\u001b8\r\nUpgraded active slot to ${image}@${v2} version 2.0.0 [signature NOT verified].\r\nReboot to run it.\r\n`);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
  t.truthy(cosd.logs.find((l) => l.msg === 'job succeeded' && l.kind === 'upgrade'), 'the daemon ran it');
});

test.serial('cosctl status --json is valid against the schema after a failed upgrade, and shows the failure', async (t) => {
  const { host, env } = await daemonHost(t);
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:nope`], env);
  t.is(r.code, EXIT_CODES.REGISTRY_NOT_FOUND.exit, r.stderr);
  const doc = await statusJson(t, host, env, 'status after a 404 upgrade');
  t.like(doc.status.lastUpgrade, { result: 'failure', code: 'REGISTRY_NOT_FOUND' });
  t.is(doc.status.staged, null);
});

test.serial('cosctl status --json is valid against the schema on a host booted from passive after a failed upgrade (upgrade_failure)', async (t) => {
  const { host, env } = await daemonHost(t, { booted: 'passive', upgradeFailure: true });
  const doc = await statusJson(t, host, env, 'status booted from passive with upgrade_failure');
  t.is(doc.status.bootedFrom, 'passive');
  t.true(doc.status.upgradeFailure);
  t.is(doc.status.booted?.slot, 'passive');
});

test.serial('cosctl status --json is valid against the schema after a daemon restart, with the last upgrade republished', async (t) => {
  const { bus, host, cosd, env } = await daemonHost(t);
  const up = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`], env);
  t.is(up.code, 0, up.stderr);
  const tx = cosd.logs.find((l) => l.msg === 'job started' && l.kind === 'upgrade')?.transaction;
  const first = await statusJson(t, host, env, 'status after the upgrade');
  t.like(first.status.lastUpgrade, { transaction: tx, result: 'success' });
  t.is(await cosd.stop(), 0);
  const second = await startCosd(bus, host);
  t.teardown(async () => {
    await second.stop();
  });
  const doc = await statusJson(t, host, env, 'status after a daemon restart');
  t.like(doc.status.lastUpgrade, { transaction: tx, result: 'success' });
  t.is(doc.status.staged?.imageDigest, v2);
  t.deepEqual(doc, first, 'the restarted daemon answers the same document');
  t.truthy(second.logs.find((l) => l.msg === 'last transaction republished' && l.lastTransaction === tx));
});

// --- echoed text: escaped and bounded on cosctl's stderr and in what cosd keeps (issue 9) ----------------------------

const RAW_CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/;

test.serial('ESC and BEL bytes of UPGRADE_IMAGE in a config file reach cosctl\'s stderr (through cosd) and LastError escaped, as one line', async (t) => {
  const { host, env } = await daemonHost(t, { files: { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE=channel:\x1b]0;pwned\x07\x1b[2J\n' } });
  const client = await rootClient(t, env.DBUS_SYSTEM_BUS_ADDRESS);
  const r = await cosctl(host, ['upgrade'], env);
  t.is(r.code, EXIT_CODES.NOT_SUPPORTED.exit, r.stderr);
  t.false(RAW_CONTROL.test(r.stderr), JSON.stringify(r.stderr));
  t.is(r.stderr.split('\n').length, 2, `one line: ${JSON.stringify(r.stderr)}`);
  t.true(r.stderr.startsWith('cosctl: upgrade source channel:\\x1b]0;pwned\\x07\\x1b[2J (channel) is not supported'), r.stderr);
  const lastError = await client.getProperty('LastError');
  t.false(RAW_CONTROL.test(lastError), JSON.stringify(lastError));
  t.regex(lastError, /channel:\\x1b\]0;pwned\\x07/);
  const record = JSON.parse(readFileSync(path.join(host.root, 'run/cos-agent/last-transaction.json'), 'utf8')) as { error: string };
  t.is(record.error, lastError);
});

test.serial('a 1 MB UPGRADE_IMAGE: cosctl upgrade through cosd prints one bounded line; LastError, LastTransaction and the record stay small', async (t) => {
  const { host, cosd, env } = await daemonHost(t, { files: { '/etc/cos-upgrade-image': `UPGRADE_IMAGE=${reg.host}/cos/os:${'a'.repeat(1 << 20)}\n` } });
  const client = await rootClient(t, env.DBUS_SYSTEM_BUS_ADDRESS);
  const r = await cosctl(host, ['upgrade', '--no-verify'], env);
  // Refused where it is read (the config loader bounds UPGRADE_IMAGE), naming file, line, key and length.
  t.is(r.code, EXIT_CODES.CONFIG_INVALID.exit, r.stderr.slice(0, 300));
  t.is(r.stderr.split('\n').length, 2, 'one line');
  t.regex(r.stderr, /^cosctl: .*cos-upgrade-image:1 \(UPGRADE_IMAGE\): image source of \d+ bytes is too long \(at most 4096\)\n$/);
  t.false(r.stderr.includes('aaaa'));
  const lastError = await client.getProperty('LastError');
  t.true(Buffer.byteLength(lastError) <= 2048, `LastError is ${Buffer.byteLength(lastError)} bytes`);
  const last = await client.getProperty('LastTransaction');
  t.like(last, { kind: 'upgrade', result: 1, code: 'CONFIG_INVALID' });
  t.true(Buffer.byteLength(JSON.stringify(last)) < 16 << 10, `LastTransaction is ${Buffer.byteLength(JSON.stringify(last))} bytes`);
  const size = (await stat(path.join(host.root, 'run/cos-agent/last-transaction.json'))).size;
  t.true(size < 16 << 10, `the record is ${size} bytes`);
  const failed = cosd.logs.find((l) => l.msg === 'job failed');
  t.true(typeof failed?.err === 'string' && failed.err.length <= 2048);
});

test.serial('cosctl upgrade --image of 100 KB is refused before it reaches cosd: REFERENCE_INVALID naming its length, nothing echoed, no job', async (t) => {
  const { host, cosd, env } = await daemonHost(t);
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:${'z'.repeat(100_000)}`], env);
  t.is(r.code, EXIT_CODES.REFERENCE_INVALID.exit, r.stderr.slice(0, 300));
  t.regex(r.stderr, /^cosctl: --image is \d+ bytes long, over the limit of 4096 bytes\n$/);
  t.false(r.stderr.includes('zzzz'));
  t.false(cosd.logs.some((l) => l.msg === 'job started'));
});

test.serial("cosd's first start creates /oem/grubenv, empty and in GRUB's format (cOS's grub.cfg never prints \"no such device: /grubenv\")", async (t) => {
  const { host, cosd } = await daemonHost(t);
  await cosd.waitForLog((l) => l.msg === 'created the empty GRUB environment block /oem/grubenv');
  const file = path.join(host.root, 'oem/grubenv');
  t.is((await stat(file)).size, 1024);
  t.deepEqual(await grubList(file), new Map());
});
