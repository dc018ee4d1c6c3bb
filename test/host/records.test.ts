import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readLastResult, recordResult } from '../../src/host/records.ts';
import { SysRoot } from '../../src/sys/root.ts';
import type { UpgradeResult } from '../../src/model/host.ts';

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
