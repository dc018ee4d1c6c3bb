import test from 'ava';
import { execFileSync } from 'node:child_process';
import { compareVersions, sucDecision as decide, type SucInput } from '../../src/model/suc.ts';
import { parseOsRelease } from '../../src/host/os-release.ts';

const TAGS = [
  'v1.0.0', 'v1.0.1', 'v1.0.10', 'v1.0.9', 'v1.1', 'v1.1.0', 'v2.0.0-rc1', 'v2.0.0', 'v2.0.0-1', 'v2.0.0~rc1', '0.8.14', '0.8.9',
  '0.8.14-cos1', '1.2.3.alpha', '1.2.3.beta', '1.2.3', 'latest', '2024.01.02', '2023.12.31', 'v10', 'v9', '1.0.0+build.5', '1.0.0+build.10',
  'release-5.3', 'release-5.10', 'a', 'b', '1', '01', '001', 'v0.8.14-arm64', 'v0.8.14-amd64', '1.a', '1.b1', '1.b',
];

test('compareVersions orders tags exactly as GNU sort -V does (the reference script\'s sort -rV)', (t) => {
  const bySort = execFileSync('sort', ['-V'], { input: `${TAGS.join('\n')}\n`, env: { ...process.env, LC_ALL: 'C' } }).toString().trim().split('\n');
  t.deepEqual([...TAGS].sort(compareVersions), bySort);
});

const release = (tag: string, repo = 'cos/os', extra = ''): string => `NAME="cOS"\nIMAGE_REPO="${repo}"\nIMAGE_TAG="${tag}"\n${extra}`;
type Input = Omit<SucInput, 'hostFields' | 'imageFields'>;
const sucDecision = (i: Input): ReturnType<typeof decide> => decide({ ...i, hostFields: parseOsRelease(i.hostRelease ?? ''), imageFields: parseOsRelease(i.imageRelease ?? '') });
const input = (over: Partial<Input>): Input => ({
  systemState: 'running', hostRelease: release('v1.0.0'), imageRelease: release('v2.0.0'), force: false, upgradeRecovery: false, upgradeRecoveryOnly: false, ...over,
});

test('sucDecision: the reference script\'s cases', (t) => {
  t.like(sucDecision(input({})), { action: 'upgrade', targets: ['system'], reboot: true });
  t.like(sucDecision(input({ systemState: 'stopping\n' })), { action: 'retry-later', exit: 1 });
  t.like(sucDecision(input({ systemState: 'degraded' })), { action: 'upgrade' }, 'a degraded host still upgrades (elemental#901)');
  t.like(sucDecision(input({ systemState: '' })), { action: 'upgrade' }, 'no answer: not stopping');
  t.like(sucDecision(input({ imageRelease: release('v1.0.0') })), { action: 'done', exit: 0, syncConfig: true });
  t.like(sucDecision(input({ imageRelease: release('v1.0.0', 'cos/os', 'X=1\n') })), { action: 'done', exit: 0, syncConfig: false }, 'same tag, other bytes: not newer');
  t.like(sucDecision(input({ imageRelease: release('v0.9.0') })), { action: 'done', exit: 0 }, 'older: refused without FORCE');
  t.like(sucDecision(input({ imageRelease: release('v0.9.0'), force: true })), { action: 'upgrade', targets: ['system'] });
  t.like(sucDecision(input({ imageRelease: release('v1.0.10'), hostRelease: release('v1.0.9') })), { action: 'upgrade' }, 'version order, not byte order');
  t.like(sucDecision(input({ imageRelease: release('v0.1', 'other/os') })), { action: 'upgrade' }, 'another repository: no version check');
  t.like(sucDecision(input({ hostRelease: release('') })), { action: 'upgrade' }, 'the host has no tag');
  t.like(sucDecision(input({ hostRelease: null })), { action: 'upgrade' }, 'the host has no os-release');
  t.like(sucDecision(input({ upgradeRecovery: true })), { action: 'upgrade', targets: ['system', 'recovery'], reboot: true });
  t.like(sucDecision(input({ upgradeRecoveryOnly: true, upgradeRecovery: true })), { action: 'upgrade', targets: ['recovery'], reboot: false });
  const older = sucDecision(input({ imageRelease: release('v0.9.0') }));
  t.true(older.action === 'done' && /v1\.0\.0 is newer than v0\.9\.0; FORCE=true downgrades/.test(older.reason), JSON.stringify(older));
});
