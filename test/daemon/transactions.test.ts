import test from 'ava';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SysRoot } from '../../src/sys/root.ts';
import { recordResult } from '../../src/host/records.ts';
import { boundRecord, fromUpgradeResult, readLastTransaction, recordTransaction, type TransactionRecord } from '../../src/daemon/transactions.ts';
import { TEXT_LIMITS } from '../../src/model/text.ts';
import type { UpgradeResult } from '../../src/model/host.ts';

async function tempRoot(t: import('ava').ExecutionContext, persistent = true): Promise<SysRoot> {
  const dir = await mkdtemp(path.join(tmpdir(), 'tx-root-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  if (persistent) await mkdir(path.join(dir, 'usr/local'), { recursive: true });
  return new SysRoot(dir);
}

const rec = (over: Partial<TransactionRecord> = {}): TransactionRecord => ({
  transaction: 'tx-1', kind: 'rollback', result: 0, code: null, error: null,
  startedAt: '2026-11-21T10:00:00.000Z', finishedAt: '2026-11-21T10:00:01.000Z', details: { permanent: true }, ...over,
});

const upgradeResult = (over: Partial<UpgradeResult> = {}): UpgradeResult => ({
  transaction: 'up-1', result: 'failure', target: 'system', image: 'reg/os:v2', imageDigest: 'sha256:ab', code: 'REGISTRY_NOT_FOUND',
  error: 'not found', rotated: false, startedAt: '2026-11-21T09:00:00.000Z', finishedAt: '2026-11-21T09:00:01.000Z', ...over,
});

test('a record is written to /run/cos-agent and to COS_PERSISTENT, and read back', async (t) => {
  const root = await tempRoot(t);
  await recordTransaction(root, rec());
  t.deepEqual(JSON.parse(await readFile(root.path('/run/cos-agent/last-transaction.json'), 'utf8')), rec());
  t.deepEqual(JSON.parse(await readFile(root.path('/usr/local/.cos-agent/last-transaction.json'), 'utf8')), rec());
  t.deepEqual(await readLastTransaction(root), rec());
  // Atomic replacement leaves no temp files behind.
  t.deepEqual(await readdir(root.path('/run/cos-agent')), ['last-transaction.json']);
});

test('without COS_PERSISTENT at /usr/local the record lives in /run only', async (t) => {
  const root = await tempRoot(t, false);
  await recordTransaction(root, rec());
  t.deepEqual(await readLastTransaction(root), rec());
  t.false(await readFile(root.path('/usr/local/.cos-agent/last-transaction.json')).then(() => true, () => false));
});

test('after a reboot (/run empty) the persistent copy is republished', async (t) => {
  const root = await tempRoot(t);
  await recordTransaction(root, rec());
  await rm(root.path('/run'), { recursive: true });
  t.deepEqual(await readLastTransaction(root), rec());
});

test('nothing recorded, or only malformed files: null', async (t) => {
  const root = await tempRoot(t);
  t.is(await readLastTransaction(root), null);
  await mkdir(root.path('/run/cos-agent'), { recursive: true });
  await writeFile(root.path('/run/cos-agent/last-transaction.json'), '{"transaction": 3');
  await mkdir(root.path('/usr/local/.cos-agent'), { recursive: true });
  await writeFile(root.path('/usr/local/.cos-agent/last-transaction.json'), '{"transaction":"x","kind":"dance","result":0}');
  t.is(await readLastTransaction(root), null);
});

test('an upgrade run without the daemon, newer than the daemon record, is what gets republished', async (t) => {
  const root = await tempRoot(t);
  await recordTransaction(root, rec());
  await recordResult(root, upgradeResult({ finishedAt: '2026-11-21T11:00:00.000Z' }));
  const last = await readLastTransaction(root);
  t.deepEqual(last, fromUpgradeResult(upgradeResult({ finishedAt: '2026-11-21T11:00:00.000Z' })));
  t.like(last, { transaction: 'up-1', kind: 'upgrade', result: 1, code: 'REGISTRY_NOT_FOUND', details: { image: 'reg/os:v2', digest: 'sha256:ab', target: 'system' } });
});

test('the daemon record of the same upgrade wins over the bare upgrade result (it carries more)', async (t) => {
  const root = await tempRoot(t);
  const result = upgradeResult({ result: 'success', code: null, error: null, rotated: true });
  await recordResult(root, result);
  const own = rec({ transaction: 'up-1', kind: 'upgrade', startedAt: result.startedAt, finishedAt: '2026-11-21T09:00:01.500Z', details: { version: '2.0.0', verification: 'verified' } });
  await recordTransaction(root, own);
  t.deepEqual(await readLastTransaction(root), own);
});

test('a cancelled upgrade result reads as cancelled (2)', (t) => {
  t.is(fromUpgradeResult(upgradeResult({ code: 'STAGE_FAILED', error: 'upgrade: upgrade cancelled', cancelled: true })).result, 2);
  t.is(fromUpgradeResult(upgradeResult({ result: 'success', code: null, error: null })).result, 0);
});

test('a cancel is told by the record\'s cancelled flag, never by the words of the error message', (t) => {
  // A failure whose message happens to mention a cancel (here the registry's own words) is a failure.
  t.is(fromUpgradeResult(upgradeResult({ code: 'STAGE_FAILED', error: 'pulling reg/os:v2: the registry cancelled the upload' })).result, 1);
  t.is(fromUpgradeResult(upgradeResult({ code: 'STAGE_FAILED', error: 'pulling reg/os:v2: cancel', cancelled: false })).result, 1);
  // A cancel is a cancel whatever its message says (the code and the message are the caller's).
  t.is(fromUpgradeResult(upgradeResult({ code: 'BLOB_TRUNCATED', error: 'layer sha256:aa ended early', cancelled: true })).result, 2);
});

test('when the copy on COS_PERSISTENT cannot be written, recordTransaction rejects naming it, after writing /run', async (t) => {
  const root = await tempRoot(t);
  // A regular file where the directory should be: mkdir fails with EEXIST/ENOTDIR, as on a broken persistent partition.
  await writeFile(root.path('/usr/local/.cos-agent'), 'not a directory\n');
  const err = await t.throwsAsync(recordTransaction(root, rec()));
  t.is((err as { code?: string } | undefined)?.code, 'STATE_INVALID');
  t.true(err?.message.includes(root.path('/usr/local/.cos-agent/last-transaction.json')), err?.message);
  t.true(err?.message.includes('lost at the next reboot'), err?.message);
  t.deepEqual(JSON.parse(await readFile(root.path('/run/cos-agent/last-transaction.json'), 'utf8')), rec(), 'the /run copy is there');
});

const TEN_MB = 'x'.repeat(10 << 20);
const RAW_CONTROL = /[\x00-\x1f\x7f-\x9f]/;

test('boundRecord: a 10 MB error, image and warnings become a few KB; control characters are escaped; small records are unchanged', (t) => {
  t.deepEqual(boundRecord(rec()), rec());
  const huge = rec({
    kind: 'upgrade', result: 1, code: 'REFERENCE_INVALID', error: `invalid image reference "${TEN_MB}"\x1b[2J`,
    details: { image: TEN_MB, target: 'system', reboot: false, warnings: Array.from({ length: 100 }, (_, i) => `w${i} ${TEN_MB.slice(0, 100_000)}`) },
  });
  const b = boundRecord(huge);
  t.true((b.error ?? '').length <= TEXT_LIMITS.message);
  t.regex(b.error ?? '', /characters left out \.\.\.\].*\\x1b\[2J$/);
  t.true((b.details.image ?? '').length <= TEXT_LIMITS.value);
  t.is(b.details.warnings?.length, TEXT_LIMITS.warnings);
  t.is(b.details.warnings?.at(-1), '... 69 more left out');
  t.like(b, { transaction: 'tx-1', kind: 'upgrade', result: 1, code: 'REFERENCE_INVALID' });
  t.like(b.details, { target: 'system', reboot: false });
  const text = JSON.stringify(b);
  t.true(text.length < 100_000, `${text.length}`);
  t.false(RAW_CONTROL.test(JSON.parse(text).error as string));
});

test('recordTransaction bounds what it writes, and readLastTransaction bounds what it reads (a huge record from anywhere)', async (t) => {
  const root = await tempRoot(t);
  await recordTransaction(root, rec({ result: 1, code: 'STAGE_FAILED', error: TEN_MB, details: { image: TEN_MB } }));
  for (const f of ['/run/cos-agent/last-transaction.json', '/usr/local/.cos-agent/last-transaction.json']) {
    t.true((await stat(root.path(f))).size < 16_384, f);
  }
  // A record written unbounded (an older cosd) is bounded when read.
  await writeFile(root.path('/run/cos-agent/last-transaction.json'), JSON.stringify(rec({ finishedAt: '2027-01-01T00:00:00.000Z', result: 1, error: TEN_MB, details: { nextEntry: TEN_MB } })));
  const back = await readLastTransaction(root);
  t.true((back?.error ?? '').length <= TEXT_LIMITS.message);
  t.true((back?.details.nextEntry ?? '').length <= TEXT_LIMITS.value);
  t.true(JSON.stringify(back).length < 16_384);
});
