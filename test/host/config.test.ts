/**
 * loadActionConfig: the config an action runs with. cosd's last valid snapshot when the deps carry one (overrides
 * applied exactly as a fresh load applies them), the files on disk otherwise. Temp roots only, no host needed.
 */
import test from 'ava';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, type ConfigSnapshot } from '../../src/config/load.ts';
import { loadActionConfig } from '../../src/host/config.ts';
import type { ConfigOverrides } from '../../src/model/config.ts';
import { SysRoot } from '../../src/sys/root.ts';

const FILES: Record<string, string> = {
  '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\nSTATE_LABEL=MY_STATE\n',
  '/etc/cos-upgrade-image': 'UPGRADE_IMAGE=reg.example/os:v1\nRECOVERY_IMAGE=reg.example/recovery:v1\n',
  '/etc/elemental/config.yaml': 'upgrade:\n  recovery-system:\n    size: 64\n',
};
const ENV = { ELEMENTAL_GRUB_ENTRY_NAME: 'from env' };

async function hostRoot(t: { teardown(fn: () => Promise<void>): void }): Promise<SysRoot> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-action-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = new SysRoot(dir);
  for (const [hostPath, text] of Object.entries(FILES)) await put(root, hostPath, text);
  return root;
}

async function put(root: SysRoot, hostPath: string, text: string): Promise<void> {
  const p = root.path(hostPath);
  await mkdir(path.dirname(p), { recursive: true });
  await writeFile(`${p}.tmp`, text);
  await rename(`${p}.tmp`, p);
}

const OVERRIDES: ConfigOverrides[] = [
  {},
  { image: 'oci:reg.example/os:flag' },
  { noVerify: true },
  { noVerify: false },
  { recovery: true },
  { recovery: true, image: 'docker://reg.example/recovery:flag', noVerify: true },
];

test('with a snapshot, an invalid edit on disk does not matter: the action gets the snapshot\'s config', async (t) => {
  const root = await hostRoot(t);
  const snapshot: ConfigSnapshot = await loadConfig(root, { env: ENV });
  await put(root, '/etc/cos-upgrade-image', 'UPGRADE_IMAGE=reg.example/os:v2\nthis line is not KEY=value\n');
  await t.throwsAsync(loadConfig(root, { env: ENV }), { code: 'CONFIG_INVALID' }, 'the file on disk is broken');

  const { config } = await loadActionConfig({ root, env: ENV, config: () => snapshot });
  t.deepEqual(config, snapshot.config);
  t.is(config.upgradeSource?.ref, 'reg.example/os:v1');
  t.is(config.labels.state, 'MY_STATE');
  t.is(config.grubEntryName, 'from env');
});

test('overrides on a snapshot give exactly what a fresh load of the same files with the same overrides gives', async (t) => {
  const root = await hostRoot(t);
  const snapshot = await loadConfig(root, { env: ENV });
  // The files then change on disk: what a job gets must still come from the snapshot.
  await put(root, '/etc/cos-upgrade-image', 'UPGRADE_IMAGE=reg.example/os:changed\n');
  const fresh = await hostRoot(t);
  for (const overrides of OVERRIDES) {
    const fromSnapshot = await loadActionConfig({ root, env: {}, config: () => snapshot }, { overrides });
    const fromFiles = await loadConfig(fresh, { env: ENV, overrides });
    const rootless = (c: typeof fromSnapshot.config): unknown => JSON.parse(JSON.stringify(c).replaceAll(root.prefix, '<root>').replaceAll(fresh.prefix, '<root>'));
    t.deepEqual(rootless(fromSnapshot.config), rootless(fromFiles.config), JSON.stringify(overrides));
  }
  const { config } = await loadActionConfig({ root, env: {}, config: () => snapshot }, { overrides: { recovery: true, image: 'reg.example/recovery:flag', noVerify: true } });
  t.is(config.recoverySource?.ref, 'reg.example/recovery:flag');
  t.is(config.upgradeSource?.ref, 'reg.example/os:v1');
  t.false(config.verify);
  t.is(config.verifyDisabledBy, 'flag (noVerify)');
  t.true(config.upgradeRecovery);
  // The snapshot itself is never changed by a job's overrides.
  t.is(snapshot.config.recoverySource?.ref, 'reg.example/recovery:v1');
  t.true(snapshot.config.verify);
});

test('an invalid override image is REFERENCE_INVALID on a snapshot too', async (t) => {
  const root = await hostRoot(t);
  const snapshot = await loadConfig(root, { env: ENV });
  await t.throwsAsync(loadActionConfig({ root, env: ENV, config: () => snapshot }, { overrides: { image: 'http://reg.example/os:1' } }), { code: 'REFERENCE_INVALID' });
});

test('without a snapshot (cosctl in-process, or cosd before a valid config) the files on disk are read', async (t) => {
  const root = await hostRoot(t);
  const { config } = await loadActionConfig({ root, env: ENV }, { overrides: { image: 'reg.example/os:flag' } });
  t.is(config.upgradeSource?.ref, 'reg.example/os:flag');
  t.is(config.labels.state, 'MY_STATE');
  await put(root, '/etc/cos-upgrade-image', 'this line is not KEY=value\n');
  await t.throwsAsync(loadActionConfig({ root, env: ENV }), { code: 'CONFIG_INVALID' });
  await t.throwsAsync(loadActionConfig({ root, env: ENV, config: () => undefined }), { code: 'CONFIG_INVALID' }, 'a daemon with no valid config yet');
});
