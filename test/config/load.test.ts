import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.ts';
import { ConfigError } from '../../src/model/errors.ts';
import { SysRoot } from '../../src/sys/root.ts';

const fixtureDir = new URL('../fixtures/config/', import.meta.url);
const fixture = (name: string): Promise<string> => readFile(new URL(name, fixtureDir), 'utf8');

/** A temp host root with the given files (host path -> content). Removed after the test. */
async function hostRoot(t: { teardown(fn: () => Promise<void>): void }, files: Record<string, string>): Promise<SysRoot> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-agent-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = new SysRoot(dir);
  for (const [hostPath, content] of Object.entries(files)) {
    const p = root.path(hostPath);
    await mkdir(path.dirname(p), { recursive: true });
    await writeFile(p, content);
  }
  return root;
}

test('when the root has no config files at all, the defaults apply and no file is listed', async (t) => {
  const root = await hostRoot(t, {});
  const { config, warnings, files } = await loadConfig(root, { env: {} });
  t.deepEqual(files, []);
  t.deepEqual(warnings, []);
  t.is(config.upgradeSource, undefined);
  t.is(config.imageSizeMiB, null, 'unset: a new slot image is sized like the one it replaces');
  t.true(config.verify);
  t.is(config.labels.state, 'COS_STATE');
});

test('when the host is vanilla cOS v0.8 (G2), the yip-written /etc/cos-upgrade-image selects the luet channel', async (t) => {
  const root = await hostRoot(t, {
    '/etc/os-release': await fixture('os-release'),
    '/etc/cos/config': await fixture('cos-config'),
    '/etc/cos-upgrade-image': await fixture('cos-upgrade-image.vanilla'),
  });
  const { config, files } = await loadConfig(root, { env: {} });
  t.deepEqual(files, [root.path('/etc/os-release'), root.path('/etc/cos/config'), root.path('/etc/cos-upgrade-image')]);
  t.deepEqual(config.upgradeSource, { kind: 'channel', ref: 'system/cos', uri: 'channel:system/cos' });
  t.deepEqual(config.recoverySource, { kind: 'channel', ref: 'recovery/cos', uri: 'channel:recovery/cos' });
  t.is(config.grubEntryName, 'cOS 0.8.10');
  t.is(config.origins['grubEntryName'], `${root.path('/etc/os-release')}:9 (GRUB_ENTRY_NAME)`);
  t.is(config.origins['labels.state'], `${root.path('/etc/cos/config')}:39 (STATE_LABEL)`);
  t.is(config.origins['upgradeSource'], `${root.path('/etc/cos-upgrade-image')}:3 (UPGRADE_IMAGE)`);
  t.true(config.verify);
});

test('when a derivative rewrote /etc/cos-upgrade-image with an OCI image, that image is the source', async (t) => {
  const root = await hostRoot(t, {
    '/etc/cos/config': await fixture('cos-config.derivative'),
    '/etc/cos-upgrade-image': await fixture('cos-upgrade-image.derivative'),
  });
  const { config } = await loadConfig(root, { env: {} });
  t.deepEqual(config.upgradeSource, {
    kind: 'oci',
    ref: 'registry.example.com/deriv/os:v1.2',
    uri: 'oci:registry.example.com/deriv/os:v1.2',
  });
  t.is(config.imageSizeMiB, 4096);
  t.is(config.grubEntryName, 'Deriv "edge" $HOME');
  t.is(config.labels.active, 'DERIV_ACTIVE');
  t.true(config.cosign.enabled);
});

test('when the host is G3, config.yaml then config.d/*.yaml in lexical order apply, and other files are skipped', async (t) => {
  const root = await hostRoot(t, {
    '/etc/os-release': await fixture('os-release'),
    '/etc/elemental/config.yaml': await fixture('config.g3.yaml'),
    '/etc/elemental/config.d/upgrade_channel.yaml': await fixture('upgrade_channel.yaml'),
    '/etc/elemental/config.d/10-size.yaml': 'upgrade:\n  system:\n    size: 6000\n',
    '/etc/elemental/config.d/9-size.yaml': 'upgrade:\n  system:\n    size: 9000\n',
    '/etc/elemental/config.d/README': 'not yaml',
    '/etc/elemental/config.d/zz.yml': 'strict: false\n',
    '/etc/elemental/config.d/sub.yaml/inner.yaml': 'strict: false\n',
  });
  const { config, files, warnings } = await loadConfig(root, { env: {} });
  const d = root.path('/etc/elemental');
  t.deepEqual(files, [
    root.path('/etc/os-release'),
    `${d}/config.yaml`,
    `${d}/config.d/10-size.yaml`,
    `${d}/config.d/9-size.yaml`,
    `${d}/config.d/upgrade_channel.yaml`,
  ]);
  t.is(config.imageSizeMiB, 9000, '9-size.yaml sorts after 10-size.yaml');
  t.is(config.upgradeSource?.uri, 'channel:system/cos');
  t.is(config.recoverySource?.uri, 'channel:recovery/cos');
  t.true(config.strict, 'neither the .yml file nor the directory named .yaml was read');
  t.deepEqual(warnings, [`${d}/config.d/zz.yml: ignored (only *.yaml files in config.d are read)`]);
});

test('when every generation\'s file is present, the spec 9 precedence holds end to end', async (t) => {
  const root = await hostRoot(t, {
    '/etc/os-release': 'NAME=x\nGRUB_ENTRY_NAME="from os-release"\nDEFAULT_IMAGE_SIZE=1000\n',
    '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=2000\nSTATE_LABEL=CFG_STATE\nNO_VERIFY=true\n',
    '/etc/cos-upgrade-image': 'DEFAULT_IMAGE_SIZE=3000\nUPGRADE_IMAGE="reg/os:upgrade-image"',
    '/etc/elemental/config.yaml': 'upgrade:\n  system:\n    size: 4000\n',
    '/etc/elemental/config.d/a.yaml': 'upgrade:\n  system:\n    size: 5000\n    uri: docker:reg/os:config-d\n',
  });
  const run = (env: NodeJS.ProcessEnv, overrides = {}) => loadConfig(root, { env, overrides });

  let { config } = await run({});
  t.is(config.imageSizeMiB, 5000);
  t.is(config.upgradeSource?.ref, 'reg/os:config-d');
  t.is(config.grubEntryName, 'from os-release');
  t.is(config.labels.state, 'CFG_STATE');
  t.false(config.verify);
  t.is(config.verifyDisabledBy, `${root.path('/etc/cos/config')}:3 (NO_VERIFY)`);

  ({ config } = await run({ ELEMENTAL_UPGRADE_SYSTEM_SIZE: '6000', ELEMENTAL_UPGRADE_IMAGE: 'reg/os:env', ELEMENTAL_VERIFY: 'true' }));
  t.is(config.imageSizeMiB, 6000);
  t.is(config.upgradeSource?.ref, 'reg/os:env');
  t.true(config.verify);

  ({ config } = await run({ ELEMENTAL_UPGRADE_SYSTEM_SIZE: '6000' }, { imageSizeMiB: 7000, image: 'oci:reg/os:flag', noVerify: true }));
  t.is(config.imageSizeMiB, 7000);
  t.is(config.upgradeSource?.ref, 'reg/os:flag');
  t.is(config.verifyDisabledBy, 'flag (noVerify)');
});

test.serial('when no env is passed, ELEMENTAL_ variables come from process.env', async (t) => {
  const root = await hostRoot(t, {});
  const name = 'ELEMENTAL_GRUB_ENTRY_NAME';
  const before = process.env[name];
  process.env[name] = 'From process env';
  try {
    const { config } = await loadConfig(root);
    t.is(config.grubEntryName, 'From process env');
    t.is(config.origins['grubEntryName'], `env (${name})`);
  } finally {
    if (before === undefined) delete process.env[name];
    else process.env[name] = before;
  }
});

const broken: Array<[string, string, string, number, string | undefined]> = [
  ['/etc/os-release', 'os-release has a line without "="', 'NAME="cOS"\nVERSION 0.8\n', 2, 'VERSION'],
  ['/etc/cos/config', '/etc/cos/config has a bad boolean', 'OEM_LABEL=COS_OEM\n\nCHANNEL_UPGRADES=perhaps\n', 3, 'CHANNEL_UPGRADES'],
  ['/etc/cos-upgrade-image', '/etc/cos-upgrade-image has an unterminated quote', 'CHANNEL_UPGRADES="true"\nUPGRADE_IMAGE="system/cos', 2, 'UPGRADE_IMAGE'],
  ['/etc/elemental/config.yaml', 'config.yaml is not YAML', 'upgrade:\n  system: {uri: docker:x\n', 3, undefined],
  ['/etc/elemental/config.d/50-x.yaml', 'a config.d file has a bad size', 'strict: true\nupgrade:\n  system:\n    size: big\n', 4, 'upgrade.system.size'],
];
for (const [hostPath, what, content, line, key] of broken) {
  test(`when ${what}, loadConfig throws CONFIG_INVALID naming that file, line ${line}${key ? ` and ${key}` : ''}`, async (t) => {
    const root = await hostRoot(t, { '/etc/os-release': 'NAME=x\n', [hostPath]: content });
    const err = await t.throwsAsync(loadConfig(root, { env: {} }), { instanceOf: ConfigError });
    t.is(err.code, 'CONFIG_INVALID');
    t.is(err.file, root.path(hostPath));
    t.is(err.line, line);
    t.is(err.key, key);
    t.true(err.message.includes(root.path(hostPath)));
  });
}

test('when a config file cannot be read (a directory sits at its path), loadConfig throws CONFIG_INVALID naming it', async (t) => {
  const root = await hostRoot(t, {});
  await mkdir(root.path('/etc/cos/config'), { recursive: true });
  const err = await t.throwsAsync(loadConfig(root, { env: {} }), { instanceOf: ConfigError });
  t.is(err.code, 'CONFIG_INVALID');
  t.is(err.file, root.path('/etc/cos/config'));
});

test('when a bad ELEMENTAL_ variable is in the environment, loadConfig throws CONFIG_INVALID naming it', async (t) => {
  const root = await hostRoot(t, {});
  const err = await t.throwsAsync(loadConfig(root, { env: { ELEMENTAL_DEFAULT_IMAGE_SIZE: 'lots' } }), { instanceOf: ConfigError });
  t.is(err.key, 'ELEMENTAL_DEFAULT_IMAGE_SIZE');
});

test('when config.d holds symlinks, a link to a file is read and a dangling link is skipped', async (t) => {
  const root = await hostRoot(t, { '/srv/shared.yaml': 'reboot: true\n' });
  const d = root.path('/etc/elemental/config.d');
  await mkdir(d, { recursive: true });
  await symlink(root.path('/srv/shared.yaml'), `${d}/a.yaml`);
  await symlink(root.path('/srv/missing.yaml'), `${d}/b.yaml`);
  const { config, files } = await loadConfig(root, { env: {} });
  t.true(config.reboot);
  t.deepEqual(files, [`${d}/a.yaml`]);
});

test('when a config file starts with a UTF-8 BOM, its first key is still recognised', async (t) => {
  const root = await hostRoot(t, {
    '/etc/cos-upgrade-image': '\uFEFFUPGRADE_IMAGE="reg/os:bom"',
    '/etc/elemental/config.yaml': '\uFEFFstrict: true\n',
  });
  const { config } = await loadConfig(root, { env: {} });
  t.is(config.upgradeSource?.ref, 'reg/os:bom');
  t.true(config.strict);
});

test('when config.yaml has unknown keys, loadConfig returns them as warnings with the file and line', async (t) => {
  const root = await hostRoot(t, { '/etc/elemental/config.yaml': 'strict: true\nfancy-mode: on\n' });
  const { warnings } = await loadConfig(root, { env: {} });
  t.deepEqual(warnings, [`${root.path('/etc/elemental/config.yaml')}:2: unknown key "fancy-mode" ignored`]);
});
