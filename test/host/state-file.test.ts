import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseImageUri } from '../../src/config/resolve.ts';
import {
  emptyState,
  formatStateDate,
  imageSourceToStateUri,
  parseState,
  readStateFile,
  rotateOnUpgrade,
  serializeState,
  writeStateFile,
} from '../../src/host/state-file.ts';
import { AgentError } from '../../src/model/errors.ts';
import type { ImageEntry, InstallState } from '../../src/model/state.ts';

const fixture = (name: string): Promise<string> => readFile(new URL(`../fixtures/config/${name}`, import.meta.url), 'utf8');

async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-agent-state-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const ELEMENTAL_STATE: InstallState = {
  date: '2022-07-13T10:41:19Z',
  partitions: {
    state: {
      label: 'COS_STATE',
      images: {
        active: {
          source: 'docker://registry.example.com/cos/system:v0.8.14',
          sourceMetadata: { digest: 'sha256:4c5a5ee7bd2bb6bbaf9c2d0cd0c3a8a0b1e8a5b3f1c7b7f6ad54c7c0a1d2e3f4', size: 734003200 },
          label: 'COS_ACTIVE',
          fs: 'ext2',
        },
        passive: {
          source: 'docker://registry.example.com/cos/system:v0.8.13',
          sourceMetadata: { digest: 'sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9', size: 730000000 },
          label: 'COS_PASSIVE',
          fs: 'ext2',
        },
      },
    },
    recovery: { label: 'COS_RECOVERY', images: { recovery: { source: 'channel://recovery/cos', label: 'COS_SYSTEM', fs: 'squashfs' } } },
    oem: { label: 'COS_OEM', images: {} },
    persistent: { label: 'COS_PERSISTENT', images: {} },
  },
};

test('when the file does not exist (or its directory does not), reading gives an empty state and nothing recovered', async (t) => {
  const dir = await tempDir(t);
  t.deepEqual(await readStateFile(path.join(dir, 'state.yaml')), { state: { partitions: {} } });
  t.deepEqual(await readStateFile(path.join(dir, 'nope', 'state.yaml')), { state: { partitions: {} } });
  t.deepEqual(await readdir(dir), []);
});

test('when elemental wrote the file, every partition, image and source-metadata field is read', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'state.yaml');
  await writeFile(file, await fixture('state.elemental.yaml'));
  const { state, recovered } = await readStateFile(file);
  t.is(recovered, undefined);
  t.deepEqual(state, ELEMENTAL_STATE);
});

test('when elemental\'s file is read and serialised again, the text is byte-for-byte the same', async (t) => {
  const text = await fixture('state.elemental.yaml');
  t.is(serializeState(parseState(text)), text);
});

test('when the file is incomplete (harvester#4526), it is read as far as it goes and not treated as corrupt', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'state.yaml');
  await writeFile(file, await fixture('state.incomplete.yaml'));
  const { state, recovered } = await readStateFile(file);
  t.is(recovered, undefined);
  t.deepEqual(state, {
    date: '2023-08-01T00:00:00Z',
    partitions: { state: { images: { active: { label: 'COS_ACTIVE' } } }, recovery: { label: 'COS_RECOVERY', images: {} } },
  });
  t.deepEqual(await readdir(dir), ['state.yaml']);
});

test('when the file is empty, the state is empty and the file is left alone', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'state.yaml');
  await writeFile(file, '');
  t.deepEqual(await readStateFile(file), { state: { partitions: {} } });
  t.deepEqual(await readdir(dir), ['state.yaml']);
});

const corrupt: Array<[string, string | Buffer]> = [
  ['not YAML', 'state:\n  label: [unclosed\n'],
  ['a list at the top level', '- a\n- b\n'],
  ['a scalar at the top level', 'just text\n'],
  ['a duplicate key', 'date: "x"\ndate: "y"\n'],
  ['a label that is not a string', 'state:\n  label: 42\n'],
  ['a source that is a list', 'state:\n  active:\n    source: [a, b]\n'],
  ['source-metadata that is a string', 'state:\n  active:\n    source-metadata: sha256:x\n'],
  ['a digest that is a number', 'state:\n  active:\n    source-metadata:\n      digest: 12\n'],
  ['an unknown verification value', 'state:\n  active:\n    verification: maybe\n'],
  ['an unknown upgrade-result value', 'state:\n  active:\n    upgrade-result: great\n'],
  ['NUL bytes (a torn write)', Buffer.alloc(64)],
  ['bytes that are not UTF-8', Buffer.from([0x64, 0x61, 0x74, 0x65, 0x3a, 0x20, 0xff, 0xfe, 0x0a])],
  ['an unresolved alias', 'state: *nothing\n'],
];
for (const [what, content] of corrupt) {
  test(`when the file has ${what}, it is moved to .broken and an empty state is returned without throwing`, async (t) => {
    const dir = await tempDir(t);
    const file = path.join(dir, 'state.yaml');
    await writeFile(file, content);
    const { state, recovered } = await readStateFile(file);
    t.deepEqual(state, emptyState());
    t.truthy(recovered);
    t.is(recovered?.brokenPath, `${file}.broken`);
    t.is(typeof recovered?.reason, 'string');
    t.true((recovered?.reason.length ?? 0) > 0);
    t.deepEqual((await readdir(dir)).sort(), ['state.yaml.broken']);
    t.deepEqual(await readFile(`${file}.broken`), Buffer.from(content));
  });
}

test('when a second corrupt file is found, it replaces the older .broken copy so the newest is kept', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'state.yaml');
  await writeFile(file, '- first\n');
  await readStateFile(file);
  await writeFile(file, '- second\n');
  const { recovered } = await readStateFile(file);
  t.is(recovered?.brokenPath, `${file}.broken`);
  t.is(await readFile(`${file}.broken`, 'utf8'), '- second\n');
  t.deepEqual(await readdir(dir), ['state.yaml.broken']);
});

test('when moveAside is false, a corrupt file is reported but left in place', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'state.yaml');
  await writeFile(file, '- x\n');
  const { state, recovered } = await readStateFile(file, { moveAside: false });
  t.deepEqual(state, emptyState());
  t.is(recovered?.brokenPath, undefined);
  t.regex(recovered?.reason ?? '', /mapping/);
  t.deepEqual(await readdir(dir), ['state.yaml']);
});

test('when the path is a directory, reading throws STATE_INVALID naming it', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'state.yaml');
  await mkdir(file);
  const err = await t.throwsAsync(readStateFile(file), { instanceOf: AgentError });
  t.is(err.code, 'STATE_INVALID');
  t.true(err.message.includes(file));
});

test('when a state is written, the file is replaced atomically and no temp file is left', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'state.yaml');
  await writeFile(file, 'date: "old"\n');
  await writeStateFile(file, ELEMENTAL_STATE);
  t.deepEqual(await readdir(dir), ['state.yaml']);
  t.is((await stat(file)).mode & 0o777 & ~process.umask(), 0o644 & ~process.umask());
  const text = await readFile(file, 'utf8');
  t.true(text.endsWith('\n'));
  t.deepEqual((await readStateFile(file)).state, ELEMENTAL_STATE);
});

test('when the state is serialised, keys follow elemental\'s order and only elemental keys appear at partition level', (t) => {
  const state: InstallState = {
    partitions: {
      persistent: { label: 'COS_PERSISTENT', images: {} },
      recovery: { label: 'COS_RECOVERY', images: { recovery: { fs: 'squashfs', source: 'docker://r/rec:1' } } },
      state: {
        images: {
          passive: { label: 'COS_PASSIVE', source: 'docker://r/os:1' },
          active: {
            upgradeResult: 'staged',
            verification: 'skipped',
            verificationDetail: 'NO_VERIFY=true in /etc/cos/config:3',
            version: '1.10',
            date: '2024-01-02T03:04:05Z',
            digest: 'sha256:abc',
            fs: 'ext2',
            label: 'COS_ACTIVE',
            sourceMetadata: { digest: 'sha256:abc', size: 10 },
            source: 'docker://r/os:2',
          },
        },
        label: 'COS_STATE',
      },
    },
    date: '2024-01-02T03:04:05Z',
  };
  t.is(serializeState(state), [
    'date: "2024-01-02T03:04:05Z"',
    'state:',
    '  label: COS_STATE',
    '  active:',
    '    source: docker://r/os:2',
    '    source-metadata:',
    '      digest: sha256:abc',
    '      size: 10',
    '    label: COS_ACTIVE',
    '    fs: ext2',
    '    digest: sha256:abc',
    '    date: "2024-01-02T03:04:05Z"',
    '    version: "1.10"',
    '    verification: skipped',
    '    verification-detail: NO_VERIFY=true in /etc/cos/config:3',
    '    upgrade-result: staged',
    '  passive:',
    '    source: docker://r/os:1',
    '    label: COS_PASSIVE',
    'recovery:',
    '  label: COS_RECOVERY',
    '  recovery:',
    '    source: docker://r/rec:1',
    '    fs: squashfs',
    'persistent:',
    '  label: COS_PERSISTENT',
    '',
  ].join('\n'));
  t.deepEqual(parseState(serializeState(state)), state);
});

test('when a file has keys this agent does not know, they survive a read-write cycle', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'state.yaml');
  const text = [
    'date: "2023-01-01T00:00:00Z"',
    'schema: 2',
    'state:',
    '  label: COS_STATE',
    '  snapshots-count: 3',
    '  active:',
    '    source: docker://r/os:1',
    '    future-field:',
    '      nested: [1, 2]',
    'efi:',
    '  label: COS_GRUB',
    '',
  ].join('\n');
  await writeFile(file, text);
  const { state } = await readStateFile(file);
  t.deepEqual(state.extra, { schema: 2 });
  t.deepEqual(state.partitions['state']?.extra, { 'snapshots-count': 3 });
  t.deepEqual(state.partitions['state']?.images['active']?.extra, { 'future-field': { nested: [1, 2] } });
  t.is(state.partitions['efi']?.label, 'COS_GRUB');
  await writeStateFile(file, state);
  t.deepEqual((await readStateFile(file)).state, state);
});

test('when the target path cannot be replaced (it is a directory), writing throws and removes its temp file', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'state.yaml');
  await mkdir(file);
  await writeFile(path.join(file, 'keep'), 'x');
  const err = await t.throwsAsync(writeStateFile(file, ELEMENTAL_STATE), { instanceOf: AgentError });
  t.is(err.code, 'STATE_INVALID');
  t.true(err.message.includes(file));
  t.deepEqual(await readdir(dir), ['state.yaml']);
  t.deepEqual(await readdir(file), ['keep']);
});

test('when the directory does not exist, writing throws and creates nothing', async (t) => {
  const dir = await tempDir(t);
  const err = await t.throwsAsync(writeStateFile(path.join(dir, 'missing', 'state.yaml'), emptyState()), { instanceOf: AgentError });
  t.is(err.code, 'STATE_INVALID');
  t.deepEqual(await readdir(dir), []);
});

const isRoot = process.getuid?.() === 0;
(isRoot ? test : test.skip)('when the partition is mounted read-only (as COS_STATE is at boot), a corrupt file is reported with moveError and writing fails cleanly', async (t) => {
  const dir = await tempDir(t);
  const mnt = path.join(dir, 'state');
  await mkdir(mnt);
  const file = path.join(mnt, 'state.yaml');
  await writeFile(file, '- corrupt\n');
  execFileSync('mount', ['--bind', mnt, mnt]);
  t.teardown(() => {
    execFileSync('umount', [mnt]);
    return Promise.resolve();
  });
  execFileSync('mount', ['-o', 'remount,ro,bind', mnt]);
  const { state, recovered } = await readStateFile(file);
  t.deepEqual(state, emptyState());
  t.is(recovered?.brokenPath, undefined);
  t.regex(recovered?.moveError ?? '', /EROFS|read-only/i);
  t.deepEqual(await readdir(mnt), ['state.yaml']);
  const err = await t.throwsAsync(writeStateFile(file, ELEMENTAL_STATE), { instanceOf: AgentError });
  t.is(err.code, 'STATE_INVALID');
  t.deepEqual(await readdir(mnt), ['state.yaml']);
});

const NEW_IMAGE: ImageEntry = {
  source: 'docker://registry.example.com/cos/system:v0.8.15',
  digest: 'sha256:ffff',
  fs: 'ext2',
  version: '0.8.15',
  verification: 'verified',
};
const DATE = new Date('2024-05-06T07:08:09.123Z');

test('when an active upgrade rotates, passive inherits active\'s entry relabelled and active becomes the new image', (t) => {
  const before = structuredClone(ELEMENTAL_STATE);
  const next = rotateOnUpgrade(ELEMENTAL_STATE, { target: 'active', keepPassive: false, newImage: NEW_IMAGE, date: DATE });
  t.deepEqual(ELEMENTAL_STATE, before, 'the input is not modified');
  t.is(next.date, '2024-05-06T07:08:09Z');
  const imgs = next.partitions['state']?.images;
  t.deepEqual(imgs?.['passive'], { ...ELEMENTAL_STATE.partitions['state']?.images['active'], label: 'COS_PASSIVE' });
  t.deepEqual(imgs?.['active'], { ...NEW_IMAGE, label: 'COS_ACTIVE', date: '2024-05-06T07:08:09Z' });
  t.deepEqual(next.partitions['recovery'], ELEMENTAL_STATE.partitions['recovery']);
  t.deepEqual(next.partitions['oem'], ELEMENTAL_STATE.partitions['oem']);
});

test('when keepPassive is set, the passive entry stays as it was', (t) => {
  const next = rotateOnUpgrade(ELEMENTAL_STATE, { target: 'active', keepPassive: true, newImage: NEW_IMAGE, date: DATE });
  t.deepEqual(next.partitions['state']?.images['passive'], ELEMENTAL_STATE.partitions['state']?.images['passive']);
  t.is(next.partitions['state']?.images['active']?.source, NEW_IMAGE.source);
});

test('when no active entry was recorded, rotating drops the passive entry whose content is now unknown', (t) => {
  const state: InstallState = { partitions: { state: { label: 'COS_STATE', images: { passive: { source: 'docker://old/one:1' } } } } };
  const next = rotateOnUpgrade(state, { target: 'active', keepPassive: false, newImage: NEW_IMAGE, date: DATE });
  t.is(next.partitions['state']?.images['passive'], undefined);
  t.deepEqual(Object.keys(next.partitions['state']?.images ?? {}), ['active']);
});

test('when the state is empty, rotating creates the state partition with the configured labels', (t) => {
  const labels = { state: 'DERIV_STATE', active: 'DERIV_ACTIVE', passive: 'DERIV_PASSIVE' };
  const next = rotateOnUpgrade(emptyState(), { target: 'active', keepPassive: false, newImage: NEW_IMAGE, date: '2024-01-01T00:00:00Z', labels });
  t.deepEqual(next, {
    date: '2024-01-01T00:00:00Z',
    partitions: { state: { label: 'DERIV_STATE', images: { active: { ...NEW_IMAGE, label: 'DERIV_ACTIVE', date: '2024-01-01T00:00:00Z' } } } },
  });
  const again = rotateOnUpgrade(next, { target: 'active', keepPassive: false, newImage: { source: 'docker://x/y:2' }, date: DATE, labels });
  t.is(again.partitions['state']?.images['passive']?.label, 'DERIV_PASSIVE');
  t.is(again.partitions['state']?.images['passive']?.source, NEW_IMAGE.source);
});

test('when a recovery upgrade is recorded, only the recovery image changes (no label for squashfs)', (t) => {
  const squash: ImageEntry = { source: 'docker://r/recovery:2', fs: 'squashfs' };
  const next = rotateOnUpgrade(ELEMENTAL_STATE, { target: 'recovery', keepPassive: false, newImage: squash, date: DATE });
  t.deepEqual(next.partitions['state'], ELEMENTAL_STATE.partitions['state']);
  t.deepEqual(next.partitions['recovery'], { label: 'COS_RECOVERY', images: { recovery: { ...squash, date: '2024-05-06T07:08:09Z' } } });
  const img = rotateOnUpgrade(emptyState(), { target: 'recovery', keepPassive: false, newImage: { source: 'docker://r/rec:3', fs: 'ext2' }, date: DATE, labels: { system: 'DERIV_SYSTEM' } });
  t.is(img.partitions['recovery']?.images['recovery']?.label, 'DERIV_SYSTEM');
  t.is(img.partitions['recovery']?.label, 'COS_RECOVERY');
});

test('when sources are converted to the state.yaml form, they use elemental\'s <type>://<ref> and parse back', (t) => {
  for (const [uri, want] of [
    ['oci:reg.example/os:1', 'docker://reg.example/os:1'],
    ['channel:system/cos', 'channel://system/cos'],
    ['dir:/srv/root', 'dir:///srv/root'],
    ['file:/srv/os.img', 'file:///srv/os.img'],
  ] as const) {
    const src = parseImageUri(uri);
    t.is(imageSourceToStateUri(src), want);
    t.deepEqual(parseImageUri(imageSourceToStateUri(src)), src);
  }
  t.is(formatStateDate(new Date('2022-07-13T10:41:19.999Z')), '2022-07-13T10:41:19Z');
});
