import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { clearRunning, readLastResult, readRunning, recordResult, recordRunning } from '../../src/host/records.ts';
import { SysRoot } from '../../src/sys/root.ts';
import type { UpgradeResult } from '../../src/model/host.ts';
import { AgentError } from '../../src/model/errors.ts';

const result = (finishedAt: string): UpgradeResult => ({
  transaction: 't', result: 'success', target: 'system', image: 'r/os:1', imageDigest: null, code: null, error: null,
  rotated: true, startedAt: finishedAt, finishedAt,
});

test('the newest record wins, and this-boot means it is in /run', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'result-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'usr/local'), { recursive: true });
  await recordResult(new SysRoot(dir), result('2026-01-01T00:00:00Z'));
  const got = await readLastResult(new SysRoot(dir));
  t.is(got?.result.finishedAt, '2026-01-01T00:00:00Z');
  t.true(got?.thisBoot);
});

test('a corrupt record is treated as no record, not as a failure of status', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'result-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'run/cos-agent'), { recursive: true });
  await writeFile(path.join(dir, 'run/cos-agent/last-upgrade.json'), '{"transaction": "t", "resu');
  t.is(await readLastResult(new SysRoot(dir)), null);
});

test('a record that cannot be written on COS_PERSISTENT is an error naming the file, after /run was written', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'result-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'usr/local'), { recursive: true });
  // A regular file where the record's directory should be: mkdir fails (EEXIST/ENOTDIR), as a broken partition would.
  await writeFile(path.join(dir, 'usr/local/.cos-agent'), 'not a directory');
  const err = await t.throwsAsync(recordResult(new SysRoot(dir), result('2026-02-01T00:00:00Z')), { instanceOf: AgentError });
  t.is(err?.code, 'STATE_INVALID');
  t.true(err?.message.includes(path.join(dir, 'usr/local/.cos-agent/last-upgrade.json')), err?.message);
  t.is((await readLastResult(new SysRoot(dir)))?.result.finishedAt, '2026-02-01T00:00:00Z', 'the record of this boot was written');
});

test('the running-upgrade marker: written to /run and COS_PERSISTENT, read back (the persistent one alone after a power cut), removed only by its own transaction', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'running-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'usr/local'), { recursive: true });
  const root = new SysRoot(dir);
  const running = { transaction: 'a', target: 'system' as const, image: 'r/os:2', imageDigest: null, startedAt: '2026-12-04T10:00:00Z', step: 'record-start' };
  t.is(await readRunning(root), null);
  await recordRunning(root, running);
  t.deepEqual(await readRunning(root), running);
  // a power cut empties /run: the copy on COS_PERSISTENT is found
  await rm(path.join(dir, 'run'), { recursive: true });
  t.deepEqual(await readRunning(root), running);
  await recordRunning(root, { ...running, step: 'pull' });
  await clearRunning(root, 'b');
  t.is((await readRunning(root))?.step, 'pull', 'another run (refused at the lock) removes nothing');
  await clearRunning(root, 'a');
  t.is(await readRunning(root), null);
  // a torn or foreign file is no marker
  await writeFile(path.join(dir, 'usr/local/.cos-agent/upgrade-running.json'), '{"transaction": "a", "tar');
  t.is(await readRunning(root), null);
});
