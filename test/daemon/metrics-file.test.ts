/**
 * MetricsFile (src/daemon/metrics-file.ts) on a temp root with a stand-in daemon: the default path only where its
 * directory exists, an explicit one created, unchanged text not rewritten, a burst ending with its last state, the last check kept
 * across a restart (read back from /run/cos-agent/last-check.json), a failed write warned once, then retried, a failed
 * status read marked, and UpdateAvailable left out until it is known.
 */
import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_METRICS_FILE, MetricsFile, type MetricsSource } from '../../src/daemon/metrics-file.ts';
import { recordTransaction, RESULT, type TransactionRecord } from '../../src/daemon/transactions.ts';
import { HOST_API_VERSION, HOST_KIND, type HostStatusDocument, type SlotName, type SlotStatus } from '../../src/model/host.ts';
import type { Logger } from '../../src/sys/log.ts';
import { SysRoot } from '../../src/sys/root.ts';

const slot = (name: SlotName): SlotStatus => ({
  slot: name, file: `cOS/${name}.img`, present: true, label: null, fs: 'ext2', size: 1, uuid: null, record: 'own',
  image: 'docker://r/os:v1', imageDigest: 'sha256:aa', version: '1.0.0', timestamp: null, verification: 'skipped', signedBy: null,
});

const doc = (bootedFrom: 'active' | 'passive'): HostStatusDocument => ({
  apiVersion: HOST_API_VERSION, kind: HOST_KIND, metadata: { name: 'h' }, spec: { image: null, verify: false },
  status: {
    bootedFrom, upgradeFailure: false, booted: slot(bootedFrom), staged: null, rollback: null,
    slots: { active: slot('active'), passive: slot('passive'), recovery: slot('recovery') },
    nextBoot: { entry: 'cos', oneShot: false, slot: 'active', reason: 'default', upgradeFailure: false },
    bootAssessment: { enabled: false, tentative: false, triesLeft: null }, lastUpgrade: null, failedUpgrade: null,
  },
});

/** A stand-in for AgentDaemon: a status copy, UpdateAvailable, and its listeners. */
class FakeDaemon implements MetricsSource {
  statusDocument: HostStatusDocument | null = doc('active');
  statusReadOk = true;
  updateAvailableKnown = false;
  state = { updateAvailable: false };
  readonly listeners = new Set<Parameters<MetricsSource['subscribe']>[0]>();
  subscribe(l: Parameters<MetricsSource['subscribe']>[0]): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  refreshed(d: HostStatusDocument): void {
    this.statusDocument = d;
    for (const l of this.listeners) l.statusRefreshed?.(d);
  }
  finished(r: TransactionRecord): void {
    for (const l of this.listeners) l.finished?.(r);
  }
  failed(): void {
    this.statusReadOk = false;
    for (const l of this.listeners) l.statusFailed?.(new Error('EIO'));
  }
  update(available: boolean): void {
    this.updateAvailableKnown = true;
    this.state = { updateAvailable: available };
    for (const l of this.listeners) l.changed?.({ updateAvailable: available });
  }
}

function recordingLog(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  const log: Logger & { warnings: string[] } = {
    warnings, debug: () => {}, info: () => {}, error: () => {}, child: () => log,
    warn: (_o, msg) => { warnings.push(msg ?? ''); },
  };
  return log;
}

async function tempRoot(t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-agent-metrics-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const check = (ok: boolean): TransactionRecord => ({
  transaction: 'tx-c', kind: 'check', result: ok ? RESULT.ok : RESULT.failed, code: ok ? null : 'REGISTRY_UNREACHABLE', error: null,
  startedAt: '2026-12-05T10:00:00.000Z', finishedAt: '2026-12-05T10:00:04.000Z', details: {},
});

test('the default path is written only where its directory exists: no stray node_exporter directory', async (t) => {
  const dir = await tempRoot(t);
  const m = new MetricsFile({ root: new SysRoot(dir), file: DEFAULT_METRICS_FILE, createDir: false, log: recordingLog(), version: '0.1.0' });
  await m.attach(new FakeDaemon());
  await t.throwsAsync(stat(path.join(dir, 'var/lib/node_exporter')), { code: 'ENOENT' });
  await mkdir(path.join(dir, path.dirname(DEFAULT_METRICS_FILE)), { recursive: true });
  const d = new FakeDaemon();
  const m2 = new MetricsFile({ root: new SysRoot(dir), file: DEFAULT_METRICS_FILE, createDir: false, log: recordingLog(), version: '0.1.0' });
  await m2.attach(d);
  t.regex(await readFile(path.join(dir, DEFAULT_METRICS_FILE), 'utf8'), /^cos_agent_booted_slot\{slot="active"\} 1$/m);
});

test('an explicit path has its directory created; unchanged text is not rewritten; a burst of changes ends with the last state', async (t) => {
  const dir = await tempRoot(t);
  const file = path.join(dir, 'srv/m/cos_agent.prom');
  const d = new FakeDaemon();
  const m = new MetricsFile({ root: new SysRoot(dir), file: '/srv/m/cos_agent.prom', createDir: true, log: recordingLog(), version: '0.1.0' });
  await m.attach(d);
  const first = await stat(file);
  d.refreshed(doc('active'));
  d.refreshed(doc('active'));
  await m.idle();
  t.is((await stat(file)).ino, first.ino, 'the same text: not replaced');
  d.refreshed(doc('active'));
  d.refreshed(doc('passive'));
  d.refreshed(doc('passive'));
  await m.idle();
  t.not((await stat(file)).ino, first.ino, 'replaced (a rename: a new inode)');
  t.regex(await readFile(file, 'utf8'), /^cos_agent_booted_slot\{slot="passive"\} 1$/m);
  m.detach();
  d.refreshed(doc('active'));
  await m.idle();
  t.regex(await readFile(file, 'utf8'), /^cos_agent_booted_slot\{slot="passive"\} 1$/m, 'detached: no more writes');
});

test('the last check: from the finished job, and after a restart from the record of this boot', async (t) => {
  const dir = await tempRoot(t);
  const root = new SysRoot(dir);
  const file = path.join(dir, 'm/c.prom');
  const d = new FakeDaemon();
  const m = new MetricsFile({ root, file: '/m/c.prom', createDir: true, log: recordingLog(), version: '0.1.0' });
  await m.attach(d);
  t.notRegex(await readFile(file, 'utf8'), /cos_agent_last_check/);
  d.finished(check(false));
  await m.idle();
  t.regex(await readFile(file, 'utf8'), /^cos_agent_last_check_error\{code="REGISTRY_UNREACHABLE"\} 1$/m);
  m.detach();

  await recordTransaction(root, check(true));
  await recordTransaction(root, { ...check(true), transaction: 'tx-u', kind: 'upgrade' });
  const again = new MetricsFile({ root, file: '/m/c.prom', createDir: true, log: recordingLog(), version: '0.1.0' });
  await again.attach(new FakeDaemon());
  const text = await readFile(file, 'utf8');
  t.regex(text, /^cos_agent_last_check_success 1$/m, 'a later job of another kind does not hide the last check');
  t.regex(text, /^cos_agent_last_check_duration_seconds 4$/m);
});

test('a write that fails is warned about once and retried with the next change; the job is never failed', async (t) => {
  const dir = await tempRoot(t);
  await writeFile(path.join(dir, 'blocked'), 'a file where the directory should be');
  const log = recordingLog();
  const d = new FakeDaemon();
  const m = new MetricsFile({ root: new SysRoot(dir), file: '/blocked/c.prom', createDir: true, log, version: '0.1.0' });
  await m.attach(d);
  d.refreshed(doc('passive'));
  await m.idle();
  t.is(log.warnings.length, 1, log.warnings.join('; '));
  await rm(path.join(dir, 'blocked'));
  d.refreshed(doc('active'));
  await m.idle();
  t.regex(await readFile(path.join(dir, 'blocked/c.prom'), 'utf8'), /^cos_agent_booted_slot\{slot="active"\} 1$/m);
});

test('a failed status read says so (status_read_ok 0) beside the last values read; UpdateAvailable only once it is known', async (t) => {
  const dir = await tempRoot(t);
  const file = path.join(dir, 'm/c.prom');
  const d = new FakeDaemon();
  const m = new MetricsFile({ root: new SysRoot(dir), file: '/m/c.prom', createDir: true, log: recordingLog(), version: '0.1.0' });
  await m.attach(d);
  let text = await readFile(file, 'utf8');
  t.regex(text, /^cos_agent_status_read_ok 1$/m);
  t.notRegex(text, /cos_agent_update_available/, 'not known: left out, not 0');
  d.update(false);
  await m.idle();
  t.regex(await readFile(file, 'utf8'), /^cos_agent_update_available 0$/m, 'known: 0 is a value');
  d.failed();
  await m.idle();
  text = await readFile(file, 'utf8');
  t.regex(text, /^cos_agent_status_read_ok 0$/m);
  t.regex(text, /^cos_agent_booted_slot\{slot="active"\} 1$/m, 'the last values read stay, marked as such');
});
