import test from 'ava';
import { readFileSync } from 'node:fs';
import { parseDotenv } from '../../src/config/dotenv.ts';
import {
  envFileLayer,
  envLayer,
  interpretImageSetting,
  OS_RELEASE_KEYS,
  overridesLayer,
  parseImageUri,
  resolveConfig,
  yamlLayer,
  type ConfigLayer,
} from '../../src/config/resolve.ts';
import { AgentError, ConfigError } from '../../src/model/errors.ts';

const fixture = (name: string): string => readFileSync(new URL(`../fixtures/config/${name}`, import.meta.url), 'utf8');
const envFile = (file: string, text: string, opts: { only?: readonly string[] } = {}): ConfigLayer =>
  envFileLayer(file, parseDotenv(text, file), opts);
const yaml = (file: string, text: string): ConfigLayer => yamlLayer(file, text).layer;

test('when no source sets anything, the built-in defaults apply and every origin says default', (t) => {
  const c = resolveConfig([]);
  t.is(c.upgradeSource, undefined);
  t.is(c.recoverySource, undefined);
  t.false(c.channelUpgrades);
  t.false(c.upgradeRecovery);
  t.is(c.imageSizeMiB, null, 'unset: a new slot image is sized like the one it replaces');
  t.deepEqual(c.labels, {
    state: 'COS_STATE', active: 'COS_ACTIVE', passive: 'COS_PASSIVE', recovery: 'COS_RECOVERY',
    system: 'COS_SYSTEM', oem: 'COS_OEM', persistent: 'COS_PERSISTENT', grub: 'COS_GRUB',
  });
  t.true(c.verify);
  t.is(c.verifyDisabledBy, undefined);
  t.deepEqual(c.cosign, { enabled: false, publicKeyLocations: [], experimental: false });
  t.deepEqual(c.cloudInitPaths, []);
  t.false(c.strict);
  t.false(c.reboot);
  t.false(c.poweroff);
  t.is(c.squashCompression, undefined);
  for (const k of ['channelUpgrades', 'imageSizeMiB', 'labels.state', 'labels.grub', 'verify', 'cosign.enabled', 'strict']) {
    t.is(c.origins[k], 'default', k);
  }
  t.false('upgradeSource' in c.origins);
});

test('when the vanilla yip-written /etc/cos-upgrade-image is the only source, upgrades come from the luet channel', (t) => {
  const c = resolveConfig([envFile('/etc/cos-upgrade-image', fixture('cos-upgrade-image.vanilla'))]);
  t.true(c.channelUpgrades);
  t.deepEqual(c.upgradeSource, { kind: 'channel', ref: 'system/cos', uri: 'channel:system/cos' });
  t.deepEqual(c.recoverySource, { kind: 'channel', ref: 'recovery/cos', uri: 'channel:recovery/cos' });
  t.is(c.origins['upgradeSource'], '/etc/cos-upgrade-image:3 (UPGRADE_IMAGE)');
  t.is(c.origins['recoverySource'], '/etc/cos-upgrade-image:2 (RECOVERY_IMAGE)');
  t.is(c.origins['channelUpgrades'], '/etc/cos-upgrade-image:1 (CHANNEL_UPGRADES)');
});

test('when CHANNEL_UPGRADES is absent or false, a bare UPGRADE_IMAGE is an OCI reference', (t) => {
  const absent = resolveConfig([envFile('f', 'UPGRADE_IMAGE=registry.example.com/os:1')]);
  t.deepEqual(absent.upgradeSource, { kind: 'oci', ref: 'registry.example.com/os:1', uri: 'oci:registry.example.com/os:1' });
  const off = resolveConfig([envFile('f', 'UPGRADE_IMAGE=system/cos\nCHANNEL_UPGRADES=false')]);
  t.deepEqual(off.upgradeSource, { kind: 'oci', ref: 'system/cos', uri: 'oci:system/cos' });
});

test('when a higher layer flips CHANNEL_UPGRADES, it changes how a lower layer\'s UPGRADE_IMAGE is read', (t) => {
  const c = resolveConfig([
    envFile('/etc/cos-upgrade-image', fixture('cos-upgrade-image.vanilla')),
    envLayer({ ELEMENTAL_CHANNEL_UPGRADES: 'false' }),
  ]);
  t.is(c.upgradeSource?.kind, 'oci');
  t.is(c.upgradeSource?.ref, 'system/cos');
  t.is(c.origins['channelUpgrades'], 'env (ELEMENTAL_CHANNEL_UPGRADES)');
});

test('when UPGRADE_IMAGE carries an explicit scheme, the scheme wins over CHANNEL_UPGRADES', (t) => {
  const c = resolveConfig([envFile('f', 'CHANNEL_UPGRADES=true\nUPGRADE_IMAGE=docker:reg.example/os:2\nRECOVERY_IMAGE=dir:///srv/recovery')]);
  t.deepEqual(c.upgradeSource, { kind: 'oci', ref: 'reg.example/os:2', uri: 'oci:reg.example/os:2' });
  t.deepEqual(c.recoverySource, { kind: 'dir', ref: '/srv/recovery', uri: 'dir:/srv/recovery' });
});

test('when RECOVERY_IMAGE is not set, the recovery source falls back to the upgrade source and says so', (t) => {
  const c = resolveConfig([envFile('/etc/cos-upgrade-image', 'UPGRADE_IMAGE=reg.example/os:3')]);
  t.deepEqual(c.recoverySource, c.upgradeSource);
  t.is(c.origins['recoverySource'], 'fallback to upgradeSource: /etc/cos-upgrade-image:1 (UPGRADE_IMAGE)');
});

test('when the layers stack in spec order, each setting comes from the highest layer that sets it', (t) => {
  const c = resolveConfig([
    envFile('/etc/os-release', fixture('os-release'), { only: OS_RELEASE_KEYS }),
    envFile('/etc/cos/config', 'DEFAULT_IMAGE_SIZE=3240\nSTATE_LABEL=ONE\nACTIVE_LABEL=A1\nGRUB_ENTRY_NAME=FromCosConfig'),
    envFile('/etc/cos-upgrade-image', 'STATE_LABEL=TWO\nUPGRADE_IMAGE=reg/os:cos-upgrade-image'),
    yaml('/etc/elemental/config.yaml', 'upgrade:\n  system:\n    uri: docker:reg/os:config-yaml\n    size: 4000\n'),
    yaml('/etc/elemental/config.d/10.yaml', 'upgrade:\n  system:\n    uri: oci:reg/os:config-d-10\n'),
    yaml('/etc/elemental/config.d/20.yaml', 'strict: true\n'),
    envLayer({ ELEMENTAL_STRICT: 'false', ELEMENTAL_UPGRADE_SYSTEM_SIZE: '4500' }),
    overridesLayer({ imageSizeMiB: 5000 }),
  ]);
  t.is(c.grubEntryName, 'FromCosConfig');
  t.is(c.origins['grubEntryName'], '/etc/cos/config:4 (GRUB_ENTRY_NAME)');
  t.is(c.labels.state, 'TWO');
  t.is(c.labels.active, 'A1');
  t.is(c.upgradeSource?.ref, 'reg/os:config-d-10');
  t.is(c.origins['upgradeSource'], '/etc/elemental/config.d/10.yaml:3 (upgrade.system.uri)');
  t.false(c.strict);
  t.is(c.origins['strict'], 'env (ELEMENTAL_STRICT)');
  t.is(c.imageSizeMiB, 5000);
  t.is(c.origins['imageSizeMiB'], 'flag (imageSizeMiB)');
});

test('when os-release carries image keys, GRUB_ENTRY_NAME is taken but it cannot switch off verification or other behaviour', (t) => {
  const text = `${fixture('os-release')}NO_VERIFY=true\nVERIFY=false\nSTRICT=true\nREBOOT=true\nCOSIGN=true\nIMAGE=foo\nSTATE_LABEL=OS_STATE\n`;
  const c = resolveConfig([envFile('/etc/os-release', text, { only: OS_RELEASE_KEYS })]);
  t.is(c.grubEntryName, 'cOS 0.8.10');
  t.true(c.verify);
  t.false(c.strict);
  t.false(c.reboot);
  t.false(c.cosign.enabled);
  t.is(c.labels.state, 'OS_STATE');
  t.is(c.upgradeSource, undefined);
});

test('when one layer sets several upgrade-source keys, upgrade.system.uri beats docker-image beats directory beats UPGRADE_IMAGE', (t) => {
  const all = yaml('c.yaml', 'UPGRADE_IMAGE: reg/a:1\ndirectory: /srv/tree\ndocker-image: reg/b:1\nupgrade:\n  system:\n    uri: channel:system/cos\n');
  t.is(resolveConfig([all]).upgradeSource?.uri, 'channel:system/cos');
  const three = yaml('c.yaml', 'UPGRADE_IMAGE: reg/a:1\ndirectory: /srv/tree\ndocker-image: reg/b:1\n');
  t.is(resolveConfig([three]).upgradeSource?.uri, 'oci:reg/b:1');
  const two = yaml('c.yaml', 'UPGRADE_IMAGE: reg/a:1\ndirectory: /srv/tree\n');
  t.deepEqual(resolveConfig([two]).upgradeSource, { kind: 'dir', ref: '/srv/tree', uri: 'dir:/srv/tree' });
});

test('when a lower layer has docker-image and a higher one UPGRADE_IMAGE, the higher layer wins', (t) => {
  const c = resolveConfig([yaml('c.yaml', 'docker-image: reg/low:1\n'), envLayer({ ELEMENTAL_UPGRADE_IMAGE: 'reg/high:1' })]);
  t.is(c.upgradeSource?.ref, 'reg/high:1');
  t.is(c.origins['upgradeSource'], 'env (ELEMENTAL_UPGRADE_IMAGE)');
});

test('when config.d (cOS v0.8.14 upgrade_channel.yaml) follows a G3 config.yaml, its channel URIs win', (t) => {
  const c = resolveConfig([yaml('/etc/elemental/config.yaml', fixture('config.g3.yaml')), yaml('/etc/elemental/config.d/upgrade_channel.yaml', fixture('upgrade_channel.yaml'))]);
  t.deepEqual(c.upgradeSource, { kind: 'channel', ref: 'system/cos', uri: 'channel:system/cos' });
  t.deepEqual(c.recoverySource, { kind: 'channel', ref: 'recovery/cos', uri: 'channel:recovery/cos' });
  t.is(c.imageSizeMiB, 4096, 'settings config.d does not touch stay');
});

test('when the G3 config.yaml fixture is read alone, every G3 key lands in its field', (t) => {
  const { layer, warnings } = yamlLayer('/etc/elemental/config.yaml', fixture('config.g3.yaml'));
  t.deepEqual(warnings, []);
  const c = resolveConfig([layer]);
  t.deepEqual(c.upgradeSource, { kind: 'oci', ref: 'registry.example.com/deriv/os:v2.0', uri: 'oci:registry.example.com/deriv/os:v2.0' });
  t.deepEqual(c.recoverySource, { kind: 'oci', ref: 'registry.example.com/deriv/recovery:v2.0', uri: 'oci:registry.example.com/deriv/recovery:v2.0' });
  t.is(c.imageSizeMiB, 4096);
  t.is(c.recoveryImageSizeMiB, 2048);
  t.is(c.systemFs, 'ext2');
  t.is(c.recoveryFs, 'squashfs');
  t.is(c.labels.active, 'COS_ACTIVE');
  t.is(c.grubEntryName, 'Deriv OS');
  t.false(c.upgradeRecovery);
  t.true(c.strict);
  t.true(c.verify);
  t.false(c.cosign.enabled);
  t.deepEqual(c.cosign.publicKeyLocations, [], 'an empty cosign-key is "not set"');
  t.deepEqual(c.cloudInitPaths, ['/usr/local/deriv-cloud-config']);
  t.is(c.origins['upgradeSource'], '/etc/elemental/config.yaml:21 (upgrade.system.uri)');
  t.is(c.origins['recoveryFs'], '/etc/elemental/config.yaml:27 (upgrade.recovery-system.fs)');
});

test('when the elemental v0.0.15 flat config is read, docker-image, no-verify, cosign and upper-case keys apply', (t) => {
  const c = resolveConfig([yaml('/etc/elemental/config.yaml', fixture('config.v0015.yaml'))]);
  t.deepEqual(c.upgradeSource, { kind: 'oci', ref: 'registry.example.com/deriv/os:v1.5', uri: 'oci:registry.example.com/deriv/os:v1.5' });
  t.false(c.verify);
  t.is(c.verifyDisabledBy, '/etc/elemental/config.yaml:3 (no-verify)');
  t.true(c.cosign.enabled);
  t.deepEqual(c.cosign.publicKeyLocations, ['/etc/elemental/cosign.pub']);
  t.true(c.reboot);
  t.is(c.imageSizeMiB, 5120);
});

test('when YAML keys differ in case or use _ for -, they still match', (t) => {
  const c = resolveConfig([yaml('c.yaml', 'No_Verify: YES\nChannel_Upgrades: "True"\nupgrade_image: system/cos\nUPGRADE:\n  Recovery-System:\n    URI: channel:rec/cos\n')]);
  t.false(c.verify);
  t.true(c.channelUpgrades);
  t.is(c.upgradeSource?.uri, 'channel:system/cos');
  t.is(c.recoverySource?.uri, 'channel:rec/cos');
});

const disablers: Array<[string, () => ConfigLayer[], string]> = [
  ['NO_VERIFY=true in /etc/cos/config', () => [envFile('/etc/cos/config', '# x\n\nNO_VERIFY=true\n')], '/etc/cos/config:3 (NO_VERIFY)'],
  ['VERIFY=false in /etc/cos-upgrade-image', () => [envFile('/etc/cos-upgrade-image', 'VERIFY="false"')], '/etc/cos-upgrade-image:1 (VERIFY)'],
  ['no-verify: true in config.yaml', () => [yaml('/etc/elemental/config.yaml', 'strict: false\nno-verify: true\n')], '/etc/elemental/config.yaml:2 (no-verify)'],
  ['verify: false in config.d', () => [yaml('/etc/elemental/config.d/a.yaml', 'verify: no\n')], '/etc/elemental/config.d/a.yaml:1 (verify)'],
  ['ELEMENTAL_NO_VERIFY=1', () => [envLayer({ ELEMENTAL_NO_VERIFY: '1' })], 'env (ELEMENTAL_NO_VERIFY)'],
  ['the noVerify override', () => [overridesLayer({ noVerify: true })], 'flag (noVerify)'],
];
for (const [what, layers, by] of disablers) {
  test(`when ${what}, verification is off and verifyDisabledBy names that origin`, (t) => {
    const c = resolveConfig(layers());
    t.false(c.verify);
    t.is(c.verifyDisabledBy, by);
    t.is(c.origins['verify'], by);
  });
}

test('when a higher layer requires verification again, the lower disabling key loses', (t) => {
  const c = resolveConfig([envFile('/etc/cos/config', 'NO_VERIFY=true'), yaml('/etc/elemental/config.yaml', 'verify: true\n')]);
  t.true(c.verify);
  t.is(c.verifyDisabledBy, undefined);
  t.is(c.origins['verify'], '/etc/elemental/config.yaml:1 (verify)');
  t.true(resolveConfig([envFile('/etc/cos/config', 'NO_VERIFY=true'), overridesLayer({ noVerify: false })]).verify);
});

test('when two aliases in one file disagree, the later line wins', (t) => {
  t.true(resolveConfig([envFile('f', 'NO_VERIFY=true\nVERIFY=true')]).verify);
  t.false(resolveConfig([envFile('f', 'VERIFY=true\nNO_VERIFY=true')]).verify);
  const keys = resolveConfig([yaml('c.yaml', 'cosign-key: /a.pub\nCOSIGN_PUBLIC_KEY_LOCATION: /b.pub\n')]);
  t.deepEqual(keys.cosign.publicKeyLocations, ['/b.pub']);
});

test('when booleans are written in any accepted form, they are read case-insensitively', (t) => {
  for (const [v, want] of [['true', true], ['TRUE', true], ['Yes', true], ['1', true], ['false', false], ['No', false], ['0', false], ['FALSE', false]] as const) {
    t.is(resolveConfig([envFile('f', `STRICT=${v}`)]).strict, want, v);
    t.is(resolveConfig([yaml('c.yaml', `strict: ${v}\n`)]).strict, want, v);
    t.is(resolveConfig([envLayer({ ELEMENTAL_STRICT: v })]).strict, want, v);
  }
});

test('when a boolean in an env file is not a boolean, it throws CONFIG_INVALID with file, line and key', (t) => {
  const err = t.throws(() => envFile('/etc/cos-upgrade-image', 'UPGRADE_IMAGE=x\nCHANNEL_UPGRADES=maybe'), { instanceOf: ConfigError });
  t.is(err.code, 'CONFIG_INVALID');
  t.is(err.file, '/etc/cos-upgrade-image');
  t.is(err.line, 2);
  t.is(err.key, 'CHANNEL_UPGRADES');
  t.true(err.message.includes('maybe'));
});

test('when a boolean in YAML is not a boolean, it throws CONFIG_INVALID with the YAML line and dotted key', (t) => {
  const err = t.throws(() => yaml('/etc/elemental/config.yaml', '# c\nupgrade:\n  system:\n    uri: docker:x/y\n  recovery: sometimes\n'), { instanceOf: ConfigError });
  t.is(err.file, '/etc/elemental/config.yaml');
  t.is(err.line, 5);
  t.is(err.key, 'upgrade.recovery');
});

test('when an ELEMENTAL_ variable has a bad value, the error names the environment and the variable', (t) => {
  const err = t.throws(() => envLayer({ ELEMENTAL_REBOOT: 'sure' }), { instanceOf: ConfigError });
  t.is(err.file, 'environment');
  t.is(err.key, 'ELEMENTAL_REBOOT');
  t.is(err.line, undefined);
});

test('when an image size is not a positive whole number, it throws CONFIG_INVALID naming the key', (t) => {
  for (const bad of ['0', '-1', '12.5', '3G', '0x10']) {
    const err = t.throws(() => envFile('/etc/cos/config', `DEFAULT_IMAGE_SIZE=${bad}`), { instanceOf: ConfigError }, bad);
    t.is(err.key, 'DEFAULT_IMAGE_SIZE');
    t.is(err.line, 1);
  }
  const y = t.throws(() => yaml('c.yaml', 'upgrade:\n  system:\n    size: 0\n'), { instanceOf: ConfigError });
  t.is(y.key, 'upgrade.system.size');
  t.is(y.line, 3);
  t.is(resolveConfig([envFile('f', 'DEFAULT_IMAGE_SIZE=007')]).imageSizeMiB, 7);
});

test('when a label has blanks, quotes or more than 16 bytes, it throws CONFIG_INVALID', (t) => {
  for (const line of ['STATE_LABEL="MY STATE"', 'OEM_LABEL=ABCDEFGHIJKLMNOPQ', 'ACTIVE_LABEL="A\\"B"']) {
    const err = t.throws(() => envFile('/etc/cos/config', line), { instanceOf: ConfigError }, line);
    t.is(err.line, 1);
  }
  t.is(resolveConfig([envFile('f', 'OEM_LABEL=ABCDEFGHIJKLMNOP')]).labels.oem, 'ABCDEFGHIJKLMNOP');
});

test('when a source URI is malformed, it throws CONFIG_INVALID with the key', (t) => {
  for (const [text, key] of [
    ['upgrade:\n  system:\n    uri: https://example.com/os.tar\n', 'upgrade.system.uri'],
    ['upgrade:\n  system:\n    uri: dir:relative/path\n', 'upgrade.system.uri'],
    ['upgrade:\n  recovery-system:\n    uri: "docker:"\n', 'upgrade.recovery-system.uri'],
    ['directory: not/absolute\n', 'directory'],
    ['upgrade:\n  system:\n    fs: ntfs\n', 'upgrade.system.fs'],
    ['upgrade:\n  recovery-system:\n    fs: xfs\n', 'upgrade.recovery-system.fs'],
  ] as const) {
    const err = t.throws(() => yaml('/etc/elemental/config.yaml', text), { instanceOf: ConfigError }, text);
    t.is(err.key, key, text);
    t.is(typeof err.line, 'number');
  }
  const e = t.throws(() => envFile('/etc/cos-upgrade-image', 'UPGRADE_IMAGE="oci-archive:/tmp/x.tar"'), { instanceOf: ConfigError });
  t.is(e.key, 'UPGRADE_IMAGE');
});

test('when the YAML is not valid YAML, it throws CONFIG_INVALID with the line of the problem', (t) => {
  const bad = t.throws(() => yaml('/etc/elemental/config.yaml', 'strict: true\nupgrade:\n  system:\n   uri: x\n  - nope\n'), { instanceOf: ConfigError });
  t.is(bad.file, '/etc/elemental/config.yaml');
  t.is(typeof bad.line, 'number');
  const dup = t.throws(() => yaml('c.yaml', 'strict: true\nreboot: true\nstrict: false\n'), { instanceOf: ConfigError });
  t.is(dup.line, 3);
  const two = t.throws(() => yaml('c.yaml', 'strict: true\n---\nreboot: true\n'), { instanceOf: ConfigError });
  t.is(two.code, 'CONFIG_INVALID');
});

test('when the YAML has the wrong shape, it throws CONFIG_INVALID naming the key', (t) => {
  const top = t.throws(() => yaml('c.yaml', '- a\n- b\n'), { instanceOf: ConfigError });
  t.is(top.line, 1);
  const up = t.throws(() => yaml('c.yaml', 'strict: true\nupgrade: soon\n'), { instanceOf: ConfigError });
  t.is(up.key, 'upgrade');
  t.is(up.line, 2);
  const list = t.throws(() => yaml('c.yaml', 'cloud-init-paths:\n  a: b\n'), { instanceOf: ConfigError });
  t.is(list.key, 'cloud-init-paths');
  const notList = t.throws(() => yaml('c.yaml', 'strict: [true]\n'), { instanceOf: ConfigError });
  t.is(notList.key, 'strict');
});

test('when config.yaml has unknown keys, they are returned as warnings and keys of other commands are silent', (t) => {
  const { warnings } = yamlLayer('/etc/elemental/config.yaml', 'install:\n  target: /dev/sda\nreset:\n  reboot: true\nrepositories: []\nfrobnicate: 1\nupgrade:\n  system:\n    uri: docker:a/b\n    colour: blue\n  turbo: true\n');
  t.deepEqual(warnings, [
    '/etc/elemental/config.yaml:6: unknown key "frobnicate" ignored',
    '/etc/elemental/config.yaml:10: unknown key "upgrade.system.colour" ignored',
    '/etc/elemental/config.yaml:11: unknown key "upgrade.turbo" ignored',
  ]);
});

test('when YAML values are null or empty, they count as not set', (t) => {
  const c = resolveConfig([yaml('c.yaml', 'strict: true\n'), yaml('d.yaml', 'strict:\nreboot: ~\ncosign-key: ""\nupgrade:\n')]);
  t.true(c.strict);
  t.is(c.origins['strict'], 'c.yaml:1 (strict)');
  t.false(c.reboot);
  t.deepEqual(c.cosign.publicKeyLocations, []);
});

test('when YAML uses anchors and aliases, the aliased values are used', (t) => {
  const c = resolveConfig([yaml('c.yaml', 'docker-image: &img reg/os:9\nupgrade:\n  recovery-system:\n    uri: *img\n')]);
  t.is(c.upgradeSource?.uri, 'oci:reg/os:9');
  t.is(c.recoverySource?.uri, 'oci:reg/os:9');
});

test('when lists are given as strings or YAML sequences, both forms split into items', (t) => {
  const s = resolveConfig([envFile('f', 'CLOUD_INIT_PATHS="/a /b,/c"\nCOSIGN_PUBLIC_KEY_LOCATION=/k1.pub,/k2.pub')]);
  t.deepEqual(s.cloudInitPaths, ['/a', '/b', '/c']);
  t.deepEqual(s.cosign.publicKeyLocations, ['/k1.pub', '/k2.pub']);
  const y = resolveConfig([yaml('c.yaml', 'cloud-init-paths: [/x, /y]\nsquash-compression: -comp xz -Xbcj x86\n')]);
  t.deepEqual(y.cloudInitPaths, ['/x', '/y']);
  t.deepEqual(y.squashCompression, ['-comp', 'xz', '-Xbcj', 'x86']);
  const z = resolveConfig([yaml('c.yaml', 'squash-compression: [-comp, zstd]\n')]);
  t.deepEqual(z.squashCompression, ['-comp', 'zstd']);
});

test('when the derivative /etc/cos/config is read, cosign settings and custom labels apply', (t) => {
  const c = resolveConfig([envFile('/etc/cos/config', fixture('cos-config.derivative'))]);
  t.deepEqual(c.cosign, {
    enabled: true,
    publicKeyLocations: ['/etc/cos/keys/cosign.pub'],
    experimental: false,
    repository: 'registry.example.com/deriv/signatures',
  });
  t.true(c.verify);
  t.deepEqual(c.labels, {
    state: 'DERIV_STATE', active: 'DERIV_ACTIVE', passive: 'DERIV_PASSIVE', recovery: 'DERIV_RECOVERY',
    system: 'DERIV_SYSTEM', oem: 'DERIV_OEM', persistent: 'DERIV_PERSIST', grub: 'COS_GRUB',
  });
  t.deepEqual(c.cloudInitPaths, ['/deriv/oem', '/deriv/extra']);
  t.is(c.origins['labels.state'], '/etc/cos/config:8 (STATE_LABEL)');
});

test('when ELEMENTAL_ variables name G3 section keys, they map like the YAML keys; other variables are ignored', (t) => {
  const c = resolveConfig([envLayer({
    ELEMENTAL_UPGRADE_SYSTEM_URI: 'docker:reg/env:1',
    ELEMENTAL_UPGRADE_RECOVERY_SYSTEM_URI: 'channel:recovery/cos',
    ELEMENTAL_UPGRADE_RECOVERY: 'true',
    ELEMENTAL_UPGRADE_GRUB_ENTRY_NAME: 'Env OS',
    ELEMENTAL_COSIGN_KEY: '/env.pub',
    ELEMENTAL_SOMETHING_ELSE: 'whatever',
    UPGRADE_IMAGE: 'reg/not-prefixed:1',
    NO_VERIFY: 'true',
  })]);
  t.is(c.upgradeSource?.uri, 'oci:reg/env:1');
  t.is(c.recoverySource?.uri, 'channel:recovery/cos');
  t.true(c.upgradeRecovery);
  t.is(c.grubEntryName, 'Env OS');
  t.deepEqual(c.cosign.publicKeyLocations, ['/env.pub']);
  t.true(c.verify);
});

test('when the image override is given, it replaces the upgrade source, or the recovery source when targeting recovery', (t) => {
  const base = envFile('/etc/cos-upgrade-image', fixture('cos-upgrade-image.vanilla'));
  const sys = resolveConfig([base, overridesLayer({ image: 'reg.example/os:flag' })]);
  t.deepEqual(sys.upgradeSource, { kind: 'oci', ref: 'reg.example/os:flag', uri: 'oci:reg.example/os:flag' });
  t.is(sys.origins['upgradeSource'], 'flag (image)');
  t.is(sys.recoverySource?.uri, 'channel:recovery/cos');
  const rec = resolveConfig([base, overridesLayer({ image: 'docker://reg.example/rec:flag', recovery: true })]);
  t.true(rec.upgradeRecovery);
  t.is(rec.recoverySource?.uri, 'oci:reg.example/rec:flag');
  t.is(rec.origins['recoverySource'], 'flag (image)');
  t.is(rec.upgradeSource?.uri, 'channel:system/cos');
  const viaConfig = resolveConfig([yaml('c.yaml', 'upgrade:\n  recovery: true\n'), overridesLayer({ image: 'channel:recovery/other' })]);
  t.is(viaConfig.recoverySource?.uri, 'channel:recovery/other');
  t.is(viaConfig.upgradeSource, undefined);
});

test('when an override value is invalid, it throws USAGE', (t) => {
  t.is(t.throws(() => overridesLayer({ image: 'https://x/y' }), { instanceOf: AgentError }).code, 'REFERENCE_INVALID');
  t.is(t.throws(() => overridesLayer({ image: '' }), { instanceOf: AgentError }).code, 'REFERENCE_INVALID');
  t.is(t.throws(() => overridesLayer({ imageSizeMiB: 0 }), { instanceOf: AgentError }).code, 'USAGE');
  t.is(t.throws(() => overridesLayer({ imageSizeMiB: 1.5 }), { instanceOf: AgentError }).code, 'USAGE');
});

test('when source URIs use any supported spelling, parseImageUri normalises them', (t) => {
  const cases: Array<[string, string, string]> = [
    ['docker:reg/os:1', 'oci', 'reg/os:1'],
    ['docker://reg/os:1', 'oci', 'reg/os:1'],
    ['oci:reg/os@sha256:' + 'a'.repeat(64), 'oci', 'reg/os@sha256:' + 'a'.repeat(64)],
    ['DOCKER:reg/os', 'oci', 'reg/os'],
    ['channel:system/cos', 'channel', 'system/cos'],
    ['channel://system/cos', 'channel', 'system/cos'],
    ['dir:/srv/root', 'dir', '/srv/root'],
    ['dir:///srv/root', 'dir', '/srv/root'],
    ['file:///srv/os.img', 'file', '/srv/os.img'],
    ['ubuntu:latest', 'oci', 'ubuntu:latest'],
    ['localhost:5000/os:1', 'oci', 'localhost:5000/os:1'],
    ['system/cos', 'oci', 'system/cos'],
  ];
  for (const [input, kind, ref] of cases) {
    t.deepEqual(parseImageUri(input), { kind, ref, uri: `${kind}:${ref}` }, input);
  }
  t.is(parseImageUri('system/cos', 'channel').kind, 'channel');
  for (const bad of ['', 'a b', 'https://x/y', 'oci-archive:/x.tar', 'ftp://x', 'dir:', 'dir:rel', 'file:rel']) {
    t.is(t.throws(() => parseImageUri(bad), { instanceOf: AgentError }, bad).code, 'REFERENCE_INVALID', bad);
  }
  t.is(interpretImageSetting('system/cos', true).uri, 'channel:system/cos');
  t.is(interpretImageSetting('oci:system/cos', true).uri, 'oci:system/cos');
});

test('when resolveConfig returns, the result is a fresh object that does not share arrays with the layers', (t) => {
  const layer = yaml('c.yaml', 'cloud-init-paths: [/a]\n');
  const c1 = resolveConfig([layer]);
  c1.cloudInitPaths.push('/mutated');
  t.deepEqual(resolveConfig([layer]).cloudInitPaths, ['/a']);
});
