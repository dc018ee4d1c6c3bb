/**
 * Test helper: a derivative OS image made the way packaging/Dockerfile.snippet says, without Docker: umoci unpacks
 * the base image, its two instructions are carried out on the unpacked root, and umoci repacks each as its own layer:
 *
 *   ADD <tarball> /                     the cos-agent tarball extracted at / (GNU tar, owners and modes kept, as
 *                                       Docker's ADD of a local tar.gz does)
 *   RUN systemctl enable cosd.service   run as `systemctl --root=<rootfs> enable cosd.service` (offline enablement:
 *                                       what the RUN does inside the build container)
 *
 * Each layer's history entry carries its instruction as `created_by`. baseImage() makes a tiny base to build on
 * (the OS tree of test/helpers/os-image.ts); a VM test passes a real cOS image layout instead.
 */
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { buildLayout, makeTar } from './oci-layout.ts';
import { osTree } from './os-image.ts';

const run = promisify(execFile);
export const SNIPPET: string = fileURLToPath(new URL('../../packaging/Dockerfile.snippet', import.meta.url));

/** The instructions of packaging/Dockerfile.snippet: ADD's source and destination, RUN's argv. */
export interface Snippet {
  add: { line: string; source: string; dest: string };
  run: { line: string; argv: string[] };
}

/** Parse the snippet: comments and blank lines, then exactly `ADD <source> <dest>` and `RUN <words>`, in that order. */
export async function readSnippet(file: string = SNIPPET): Promise<Snippet> {
  const lines = (await readFile(file, 'utf8')).split('\n').filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'));
  const [add, runLine, ...rest] = lines;
  const addWords = add?.trim().split(/\s+/) ?? [];
  const runWords = runLine?.trim().split(/\s+/) ?? [];
  if (rest.length > 0 || addWords.length !== 3 || addWords[0] !== 'ADD' || runWords[0] !== 'RUN' || runWords.length < 2) {
    throw new Error(`${file}: expected one "ADD <source> <dest>" line and one "RUN ..." line, got ${JSON.stringify(lines)}`);
  }
  return {
    add: { line: add!.trim(), source: addWords[1]!, dest: addWords[2]! },
    run: { line: runLine!.trim(), argv: runWords.slice(1) },
  };
}

/** A tiny base image in the OCI layout `layout` as `tag`: a merged-/usr OS tree with an empty systemd unit tree. */
export async function baseImage(layout: string, tag: string, version = '1.0.0'): Promise<void> {
  const layer = await makeTar([
    ...osTree(version),
    { name: 'etc/systemd/' },
    { name: 'etc/systemd/system/' },
    { name: 'usr/lib/systemd/' },
    { name: 'usr/lib/systemd/system/' },
  ]);
  await buildLayout(layout, tag, { layers: [{ tar: layer, compression: 'gzip' }], labels: { 'org.opencontainers.image.version': version } });
}

export interface DerivativeImage {
  /** The OCI layout holding the image (the base's layout). */
  layout: string;
  tag: string;
  /** Digests of the layers the two instructions added. */
  layers: { add: string; run: string };
}

/**
 * Build `layout:tag` from `layout:baseTag` and `tarball` with the snippet's instructions (`snippet`, default
 * packaging/Dockerfile.snippet); `work` is an empty scratch directory (the unpacked bundle). The RUN instruction must
 * be a systemctl command (it runs offline, with --root).
 */
export async function makeDerivativeImage(opts: {
  layout: string;
  baseTag: string;
  tag: string;
  tarball: string;
  work: string;
  snippet?: Snippet;
}): Promise<DerivativeImage> {
  const snippet = opts.snippet ?? (await readSnippet());
  if (snippet.add.dest !== '/') throw new Error(`the snippet ADDs to ${snippet.add.dest}, not /`);
  const [cmd, ...args] = snippet.run.argv;
  if (cmd !== 'systemctl') throw new Error(`the snippet's RUN is not a systemctl command: ${snippet.run.line}`);
  await mkdir(opts.work, { recursive: true });
  const bundle = path.join(opts.work, 'bundle');
  const rootfs = path.join(bundle, 'rootfs');
  const image = `${opts.layout}:${opts.tag}`;
  await run('umoci', ['unpack', '--image', `${opts.layout}:${opts.baseTag}`, bundle]);
  const repack = (line: string): Promise<unknown> =>
    run('umoci', ['repack', '--refresh-bundle', '--history.created_by', line, '--history.created', '2024-01-02T03:04:05Z', '--image', image, bundle]);

  await run('tar', ['--extract', '--gzip', '--same-permissions', '--same-owner', '--numeric-owner', '--file', opts.tarball, '--directory', rootfs]);
  await repack(snippet.add.line);
  await run(cmd, [`--root=${rootfs}`, ...args]);
  await repack(snippet.run.line);

  const layers = (await manifestOf(opts.layout, opts.tag)).layers.map((l) => l.digest);
  const [add, runLayer] = layers.slice(-2);
  if (add === undefined || runLayer === undefined) throw new Error(`${image} has ${layers.length} layers`);
  return { layout: opts.layout, tag: opts.tag, layers: { add, run: runLayer } };
}

interface Manifest {
  config: { digest: string };
  layers: Array<{ digest: string; mediaType: string }>;
}

function blob(layout: string, digest: string): string {
  return path.join(layout, 'blobs', digest.replace(':', '/'));
}

/** The manifest tagged `tag` in `layout`. */
export async function manifestOf(layout: string, tag: string): Promise<Manifest> {
  const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (desc === undefined) throw new Error(`${layout} has no tag ${tag}`);
  return JSON.parse(await readFile(blob(layout, desc.digest), 'utf8')) as Manifest;
}

/** The image config of `layout:tag` (history and rootfs.diff_ids included). */
export async function configOf(layout: string, tag: string): Promise<{ history?: Array<{ created_by?: string }>; rootfs: { diff_ids: string[] } }> {
  return JSON.parse(await readFile(blob(layout, (await manifestOf(layout, tag)).config.digest), 'utf8')) as {
    history?: Array<{ created_by?: string }>;
    rootfs: { diff_ids: string[] };
  };
}

export interface LayerEntry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  linkname: string | null;
}

/** The entries of a gzipped layer (or tarball) file, in archive order, names without a leading "./" or trailing "/". */
export async function tarEntries(file: string): Promise<LayerEntry[]> {
  const out: LayerEntry[] = [];
  const extract = tar.extract();
  extract.on('entry', (h, stream, next) => {
    out.push({ name: h.name.replace(/^\.\//, '').replace(/\/$/, ''), type: h.type ?? 'file', mode: h.mode ?? 0, uid: h.uid ?? -1, gid: h.gid ?? -1, linkname: h.linkname ?? null });
    stream.on('end', next);
    stream.resume();
  });
  await pipeline(createReadStream(file), createGunzip(), extract);
  return out;
}

/** The entries of layer `digest` of `layout`. */
export function layerEntries(layout: string, digest: string): Promise<LayerEntry[]> {
  return tarEntries(blob(layout, digest));
}
