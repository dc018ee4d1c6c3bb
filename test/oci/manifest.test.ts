import test from 'ava';
import { AgentError } from '../../src/model/errors.ts';
import {
  checkImageManifest,
  computeDigest,
  formatPlatform,
  hostPlatform,
  layerCompression,
  MEDIA_TYPES,
  normalizePlatform,
  parseImageConfig,
  parseManifest,
  parsePlatform,
  platformMatches,
  selectManifest,
} from '../../src/oci/manifest.ts';
import type { Descriptor, ImageIndex, Platform } from '../../src/oci/types.ts';

const dg = (c: string): string => `sha256:${c.repeat(64)}`;
const layer = (c: string, mediaType = 'application/vnd.oci.image.layer.v1.tar+gzip'): Descriptor => ({ mediaType, digest: dg(c), size: 100 });

function ociManifest(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: dg('c'), size: 10 },
    layers: [layer('1'), layer('2', 'application/vnd.oci.image.layer.v1.tar+zstd')],
    ...extra,
  };
}

function invalid(t: import('ava').ExecutionContext, fn: () => unknown, mentions: string): void {
  const e = t.throws(fn, { instanceOf: AgentError });
  t.is(e?.code, 'MANIFEST_INVALID');
  t.true(e?.message.includes(mentions), `${e?.message} should mention ${mentions}`);
}

test('an OCI image manifest parses into its config and layers', (t) => {
  const p = parseManifest(JSON.stringify(ociManifest({ annotations: { a: 'b' } })), undefined, 'm');
  t.is(p.kind, 'manifest');
  if (p.kind !== 'manifest') return;
  t.is(p.mediaType, MEDIA_TYPES.ociManifest);
  t.deepEqual(p.manifest.config, { mediaType: MEDIA_TYPES.ociConfig, digest: dg('c'), size: 10 });
  t.deepEqual(p.manifest.layers.map((l) => l.digest), [dg('1'), dg('2')]);
  t.deepEqual(p.manifest.annotations, { a: 'b' });
  t.notThrows(() => checkImageManifest(p.manifest, 'm'));
});

test('a Docker v2 schema 2 manifest parses with its Docker media types', (t) => {
  const doc = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.dockerManifest,
    config: { mediaType: MEDIA_TYPES.dockerConfig, digest: dg('c'), size: 10 },
    layers: [layer('1', 'application/vnd.docker.image.rootfs.diff.tar.gzip')],
  };
  const p = parseManifest(Buffer.from(JSON.stringify(doc)), 'application/json', 'm');
  t.is(p.kind, 'manifest');
  t.is(p.mediaType, MEDIA_TYPES.dockerManifest);
  if (p.kind === 'manifest') t.notThrows(() => checkImageManifest(p.manifest, 'm'));
});

test('an OCI index and a Docker manifest list parse into their manifests with platforms', (t) => {
  for (const mediaType of [MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList]) {
    const doc = {
      schemaVersion: 2,
      mediaType,
      manifests: [
        { mediaType: MEDIA_TYPES.ociManifest, digest: dg('1'), size: 5, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: MEDIA_TYPES.ociManifest, digest: dg('2'), size: 6, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      ],
    };
    const p = parseManifest(JSON.stringify(doc), undefined, 'i');
    t.is(p.kind, 'index');
    if (p.kind !== 'index') return;
    t.is(p.mediaType, mediaType);
    t.deepEqual(p.index.manifests[1]?.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
  }
});

test('without a mediaType field, the Content-Type decides, and without either the shape does', (t) => {
  const { mediaType: _m, ...bare } = ociManifest();
  t.is(parseManifest(JSON.stringify({ ...bare, config: { ...(bare.config as object), mediaType: MEDIA_TYPES.dockerConfig } }), `${MEDIA_TYPES.dockerManifest}; charset=utf-8`, 'm').mediaType, MEDIA_TYPES.dockerManifest);
  t.is(parseManifest(JSON.stringify(bare), undefined, 'm').mediaType, MEDIA_TYPES.ociManifest);
  t.is(parseManifest(JSON.stringify({ schemaVersion: 2, manifests: [] }), 'application/json', 'i').mediaType, MEDIA_TYPES.ociIndex);
});

test('malformed JSON is MANIFEST_INVALID naming the document', (t) => {
  invalid(t, () => parseManifest('{"schemaVersion": 2,', undefined, 'manifest reg/x:v1'), 'manifest reg/x:v1: malformed JSON');
  invalid(t, () => parseManifest('[1,2]', undefined, 'm'), 'not a JSON object');
});

test('Docker schema 1 manifests are MANIFEST_INVALID', (t) => {
  invalid(t, () => parseManifest(JSON.stringify({ schemaVersion: 1, name: 'x', fsLayers: [] }), MEDIA_TYPES.dockerSchema1Signed, 'm'), 'schema 1');
});

test('an unknown media type is MANIFEST_INVALID naming it', (t) => {
  invalid(t, () => parseManifest(JSON.stringify(ociManifest({ mediaType: 'application/vnd.example+json' })), undefined, 'm'), 'application/vnd.example+json');
});

test('malformed descriptors and structures are MANIFEST_INVALID naming the field', (t) => {
  invalid(t, () => parseManifest(JSON.stringify(ociManifest({ schemaVersion: 3 })), undefined, 'm'), 'schemaVersion');
  invalid(t, () => parseManifest(JSON.stringify(ociManifest({ layers: [{ ...layer('1'), digest: 'sha256:xyz' }] })), undefined, 'm'), 'layers[0].digest');
  invalid(t, () => parseManifest(JSON.stringify(ociManifest({ layers: [{ ...layer('1'), size: -1 }] })), undefined, 'm'), 'layers[0].size');
  invalid(t, () => parseManifest(JSON.stringify(ociManifest({ layers: [{ ...layer('1'), size: 1.5 }] })), undefined, 'm'), 'layers[0].size');
  invalid(t, () => parseManifest(JSON.stringify(ociManifest({ layers: [{ digest: dg('1'), size: 1 }] })), undefined, 'm'), 'layers[0].mediaType');
  invalid(t, () => parseManifest(JSON.stringify(ociManifest({ layers: 'x' })), undefined, 'm'), 'layers is not an array');
  invalid(t, () => parseManifest(JSON.stringify(ociManifest({ config: undefined })), undefined, 'm'), 'config is missing');
  invalid(t, () => parseManifest(JSON.stringify(ociManifest({ annotations: { a: 1 } })), undefined, 'm'), 'annotations.a');
  invalid(t, () => parseManifest(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: [{ ...layer('1'), platform: { os: 'linux' } }] }), undefined, 'i'), 'manifests[0].platform.architecture');
  invalid(t, () => parseManifest(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: [], layers: [] }), undefined, 'i'), 'must not have config or layers');
  invalid(t, () => parseManifest(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex }), undefined, 'i'), 'manifests is not an array');
});

test('a manifest whose config is not an image config is not an image (an artifact)', (t) => {
  const p = parseManifest(JSON.stringify(ociManifest({ config: { mediaType: 'application/vnd.dev.cosign.artifact.sig.v1+json', digest: dg('c'), size: 2 } })), undefined, 'm');
  if (p.kind !== 'manifest') return t.fail();
  invalid(t, () => checkImageManifest(p.manifest, 'manifest X'), 'not a container image config');
});

test('a layer of an unknown media type is MANIFEST_INVALID naming the layer', (t) => {
  const p = parseManifest(JSON.stringify(ociManifest({ layers: [layer('1'), layer('2', 'application/vnd.example.layer')] })), undefined, 'm');
  if (p.kind !== 'manifest') return t.fail();
  invalid(t, () => checkImageManifest(p.manifest, 'm'), 'layers[1]');
});

test('layer media types map to their compression', (t) => {
  t.is(layerCompression('application/vnd.oci.image.layer.v1.tar'), 'none');
  t.is(layerCompression('application/vnd.oci.image.layer.v1.tar+gzip'), 'gzip');
  t.is(layerCompression('application/vnd.oci.image.layer.v1.tar+zstd'), 'zstd');
  t.is(layerCompression('application/vnd.docker.image.rootfs.diff.tar.gzip'), 'gzip');
  t.is(layerCompression('application/vnd.example'), undefined);
});

test('an image config parses, and a malformed one is MANIFEST_INVALID', (t) => {
  const c = parseImageConfig(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Labels: { v: '1' } }, rootfs: {} }), 'cfg');
  t.is(c.architecture, 'amd64');
  t.deepEqual(c.config?.Labels, { v: '1' });
  invalid(t, () => parseImageConfig('nope', 'config sha256:x'), 'config sha256:x');
  invalid(t, () => parseImageConfig(JSON.stringify({ architecture: 5 }), 'cfg'), 'architecture');
  invalid(t, () => parseImageConfig(JSON.stringify({ config: { Labels: { v: 1 } } }), 'cfg'), 'config.Labels.v');
});

test('the digest of bytes is sha256 by default, sha512 on request', (t) => {
  t.is(computeDigest(Buffer.from('')), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  t.true(computeDigest(Buffer.from(''), 'sha512').startsWith('sha512:cf83e135'));
});

// ---------------------------------------------------------------------------------------------------------------
// Platforms

function indexOf(platforms: Array<Platform | undefined>): ImageIndex {
  return {
    mediaType: MEDIA_TYPES.ociIndex,
    manifests: platforms.map((p, i) => ({ mediaType: MEDIA_TYPES.ociManifest, digest: dg(String(i)), size: 1, ...(p ? { platform: p } : {}) })),
  };
}

const multi = indexOf([
  { os: 'unknown', architecture: 'unknown' },
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
  { os: 'linux', architecture: 'arm', variant: 'v6' },
  { os: 'linux', architecture: 'arm', variant: 'v7' },
  { os: 'linux', architecture: 's390x' },
  undefined,
]);

test('from an index, the host platform linux/amd64 gets the amd64 manifest', (t) => {
  t.is(selectManifest(multi, { os: 'linux', architecture: 'amd64' }, 'i').digest, dg('1'));
});

test('on arm64/v8, a manifest without a variant matches (arm64 defaults to v8)', (t) => {
  t.is(selectManifest(multi, { os: 'linux', architecture: 'arm64', variant: 'v8' }, 'i').digest, dg('2'));
  t.is(selectManifest(multi, { os: 'linux', architecture: 'aarch64' }, 'i').digest, dg('2'));
});

test('on arm/v7 the v7 manifest wins over v6, and arm/v6 does not take v7', (t) => {
  t.is(selectManifest(multi, { os: 'linux', architecture: 'arm', variant: 'v7' }, 'i').digest, dg('4'));
  t.is(selectManifest(indexOf([{ os: 'linux', architecture: 'arm', variant: 'v6' }]), { os: 'linux', architecture: 'arm', variant: 'v7' }, 'i').digest, dg('0'));
  invalid(t, () => selectManifest(indexOf([{ os: 'linux', architecture: 'arm', variant: 'v7' }]), { os: 'linux', architecture: 'arm', variant: 'v6' }, 'i'), 'linux/arm/v7');
});

test('an amd64 host without a variant does not take an amd64/v3-only image, a v3 host prefers v2 over v1', (t) => {
  invalid(t, () => selectManifest(indexOf([{ os: 'linux', architecture: 'amd64', variant: 'v3' }]), { os: 'linux', architecture: 'amd64' }, 'i'), 'linux/amd64/v3');
  const idx = indexOf([{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'amd64', variant: 'v2' }, { os: 'linux', architecture: 'amd64', variant: 'v4' }]);
  t.is(selectManifest(idx, { os: 'linux', architecture: 'amd64', variant: 'v3' }, 'i').digest, dg('1'));
});

test('when two entries match equally, the first one in the index wins', (t) => {
  const idx = indexOf([{ os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 'arm64' }]);
  t.is(selectManifest(idx, { os: 'linux', architecture: 'arm64' }, 'i').digest, dg('0'));
});

test('when no entry matches, it throws MANIFEST_INVALID listing the available platforms', (t) => {
  invalid(t, () => selectManifest(multi, { os: 'linux', architecture: 'riscv64' }, 'index sha256:x'), 'available: unknown/unknown, linux/amd64, linux/arm64, linux/arm/v6, linux/arm/v7, linux/s390x');
  invalid(t, () => selectManifest(multi, { os: 'windows', architecture: 'amd64' }, 'i'), 'no manifest for platform windows/amd64');
  invalid(t, () => selectManifest(indexOf([undefined]), { os: 'linux', architecture: 'amd64' }, 'i'), 'available: none');
});

test('platforms normalise architecture aliases and default variants', (t) => {
  t.deepEqual(normalizePlatform({ os: 'Linux', architecture: 'x86_64' }), { os: 'linux', architecture: 'amd64', variant: 'v1' });
  t.deepEqual(normalizePlatform({ os: 'linux', architecture: 'aarch64' }), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  t.deepEqual(normalizePlatform({ os: 'linux', architecture: 'armhf' }), { os: 'linux', architecture: 'arm', variant: 'v7' });
  t.deepEqual(normalizePlatform({ os: 'linux', architecture: 'arm', variant: '7' }), { os: 'linux', architecture: 'arm', variant: 'v7' });
  t.deepEqual(normalizePlatform({ os: 'linux', architecture: 's390x' }), { os: 'linux', architecture: 's390x' });
  t.true(platformMatches({ os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 'arm64' }));
  t.false(platformMatches({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'amd64' }));
});

test('platform strings format and parse', (t) => {
  t.is(formatPlatform({ os: 'linux', architecture: 'arm', variant: 'v7' }), 'linux/arm/v7');
  t.deepEqual(parsePlatform('linux/arm64/v8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  t.deepEqual(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
  for (const s of ['linux', 'linux/', '/amd64', 'a/b/c/d', 'linux/arm/']) invalid(t, () => parsePlatform(s), JSON.stringify(s));
});

test('the host platform maps Node architectures to OCI ones', (t) => {
  t.deepEqual(hostPlatform('x64', 'linux'), { os: 'linux', architecture: 'amd64' });
  t.deepEqual(hostPlatform('arm64', 'linux'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  t.deepEqual(hostPlatform('arm', 'linux', '6'), { os: 'linux', architecture: 'arm', variant: 'v6' });
  t.deepEqual(hostPlatform('arm', 'linux', undefined), { os: 'linux', architecture: 'arm', variant: 'v7' });
  t.deepEqual(hostPlatform('ia32', 'linux'), { os: 'linux', architecture: '386' });
  t.deepEqual(hostPlatform('riscv64', 'linux'), { os: 'linux', architecture: 'riscv64' });
  const here = hostPlatform();
  t.is(here.os, process.platform);
  t.is(here.architecture, { x64: 'amd64', arm64: 'arm64', ia32: '386' }[process.arch as string] ?? here.architecture);
});
