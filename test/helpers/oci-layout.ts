/**
 * Test helper: builds OCI image layouts on disk from in-memory tar layers (so tests can make hostile tars that no
 * image tool would produce), and pushes them to a registry with the real `skopeo copy`.
 */
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import tar from 'tar-stream';
import type { Header } from 'tar-stream';

const run = promisify(execFile);

export interface TarEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  content?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** PAX records, e.g. { 'SCHILY.xattr.security.capability': '...' } */
  pax?: Record<string, string>;
}

/** An uncompressed tar archive of the given entries, in order. */
export async function makeTar(entries: readonly TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (b: unknown) => { chunks.push(b as Buffer); });
  const done = new Promise<void>((resolve, reject) => {
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });
  for (const e of entries) {
    const type = e.type ?? (e.content !== undefined ? 'file' : 'directory');
    const header: Partial<Header> & { name: string } = {
      name: e.name,
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: e.mtime ?? new Date('2024-01-02T03:04:05Z'),
    };
    if (e.linkname !== undefined) header.linkname = e.linkname;
    if (e.devmajor !== undefined) header.devmajor = e.devmajor;
    if (e.devminor !== undefined) header.devminor = e.devminor;
    if (e.pax) header.pax = e.pax;
    await new Promise<void>((resolve, reject) => {
      const body = type === 'file' ? Buffer.from(e.content ?? '') : undefined;
      if (body !== undefined) header.size = body.length;
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (body !== undefined) pack.entry(header, body, cb);
      else pack.entry(header, cb);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export type Compression = 'gzip' | 'zstd' | 'none';

export interface LayerSpec {
  tar: Buffer;
  compression?: Compression;
}

export interface ImageSpec {
  layers: readonly LayerSpec[];
  architecture?: string;
  os?: string;
  variant?: string;
  /** Labels in the image config (e.g. org.opencontainers.image.version). */
  labels?: Record<string, string>;
  /** 'oci' (default) or 'docker' (Docker v2 schema 2 media types). */
  format?: 'oci' | 'docker';
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string; variant?: string };
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function writeBlob(dir: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const p = path.join(dir, 'blobs', 'sha256', digest.slice(7));
  await mkdir(path.dirname(p), { recursive: true });
  await writeFile(p, data);
  return digest;
}

function layerMediaType(format: 'oci' | 'docker', c: Compression): string {
  if (format === 'docker') {
    if (c === 'gzip') return 'application/vnd.docker.image.rootfs.diff.tar.gzip';
    if (c === 'zstd') return 'application/vnd.oci.image.layer.v1.tar+zstd';
    return 'application/vnd.docker.image.rootfs.diff.tar';
  }
  return c === 'gzip' ? 'application/vnd.oci.image.layer.v1.tar+gzip' : c === 'zstd' ? 'application/vnd.oci.image.layer.v1.tar+zstd' : 'application/vnd.oci.image.layer.v1.tar';
}

/** Writes blobs, config and manifest of one image into an OCI layout dir; returns the manifest descriptor. */
export async function writeImage(dir: string, spec: ImageSpec): Promise<Descriptor> {
  const format = spec.format ?? 'oci';
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const l of spec.layers) {
    const c = l.compression ?? 'gzip';
    const data = c === 'gzip' ? gzipSync(l.tar) : c === 'zstd' ? zstdCompressSync(l.tar) : l.tar;
    const digest = await writeBlob(dir, data);
    layers.push({ mediaType: layerMediaType(format, c), digest, size: data.length });
    diffIds.push(sha256(l.tar));
  }
  const platform = { architecture: spec.architecture ?? 'amd64', os: spec.os ?? 'linux', ...(spec.variant ? { variant: spec.variant } : {}) };
  const config = Buffer.from(JSON.stringify({
    ...platform,
    created: '2024-01-02T03:04:05Z',
    config: { Labels: spec.labels ?? {} },
    rootfs: { type: 'layers', diff_ids: diffIds },
  }));
  const configDigest = await writeBlob(dir, config);
  const manifestMediaType = format === 'docker' ? 'application/vnd.docker.distribution.manifest.v2+json' : 'application/vnd.oci.image.manifest.v1+json';
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: manifestMediaType,
    config: { mediaType: format === 'docker' ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers,
  }));
  const digest = await writeBlob(dir, manifest);
  return { mediaType: manifestMediaType, digest, size: manifest.length, platform };
}

/** Writes index.json (and oci-layout) naming the given manifests under one tag. */
export async function writeIndex(dir: string, tag: string, manifests: readonly Descriptor[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  let top: Descriptor;
  if (manifests.length === 1 && manifests[0] !== undefined) {
    top = manifests[0];
  } else {
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
    top = { mediaType: 'application/vnd.oci.image.index.v1+json', digest: await writeBlob(dir, index), size: index.length };
  }
  const { platform: _p, ...bare } = top;
  await writeFile(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ ...(manifests.length === 1 ? bare : top), annotations: { 'org.opencontainers.image.ref.name': tag } }],
  }));
}

/** Builds a single-manifest layout in `dir` tagged `tag`; returns the manifest descriptor. */
export async function buildLayout(dir: string, tag: string, spec: ImageSpec): Promise<Descriptor> {
  await mkdir(dir, { recursive: true });
  const desc = await writeImage(dir, spec);
  await writeIndex(dir, tag, [desc]);
  return desc;
}

/**
 * skopeo copy, tried up to 3 times: fixture setup, not the code under test. Under a loaded CI machine an index push
 * was seen to fail once ("Manifest list must be converted ... Instructed to preserve digests": skopeo's fallback
 * after the registry refused the OCI index PUT); the same push passes when repeated.
 */
async function skopeoCopy(args: readonly string[]): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await run('skopeo', ['copy', ...args], { maxBuffer: 16 << 20 });
      return;
    } catch (e) {
      if (attempt >= 3) throw e;
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
}

/** Pushes layout `dir:tag` to `docker://host/repo:tag` with the real skopeo, preserving digests. */
export async function pushLayout(dir: string, tag: string, dest: string): Promise<void> {
  await skopeoCopy(['--all', '--preserve-digests', '--dest-tls-verify=false', `oci:${dir}:${tag}`, `docker://${dest}`]);
}

/** Like pushLayout, with registry credentials (`user:password`) for registries that require auth. */
export async function pushLayoutAs(dir: string, tag: string, dest: string, creds: string): Promise<void> {
  await skopeoCopy(['--all', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${dir}:${tag}`, `docker://${dest}`]);
}
