/**
 * The benchmark's OS image: a realistic rootfs (~400 MiB, >= 10,000 entries) taken from this machine's own /usr by a
 * deterministic sorted walk, packed by the `tar` CLI and compressed by `gzip -6` into a one-layer OCI image layout.
 * Nothing is held in memory: tar -> (sha256 of the tar = diff_id) -> gzip -> (sha256 of the blob) -> blob file.
 *
 * The layout is cached under <repo>/.tmp/bench/rootfs-<ROOTFS_VERSION>/ (gitignored): reruns skip the build. Change
 * ROOTFS_VERSION whenever the selection below changes.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { writeIndex } from '../test/helpers/oci-layout.ts';

export const ROOTFS_VERSION = 'usr-walk-v2';
const MiB = 1024 * 1024;

/** Where the files come from, in order; each source is walked sorted, depth first, up to its budget. */
const SOURCES: ReadonlyArray<{ dir: string; budgetMiB?: number }> = [
  { dir: '/usr/bin', budgetMiB: 110 },
  { dir: '/usr/sbin' },
  { dir: '/usr/lib/x86_64-linux-gnu', budgetMiB: 140 },
  { dir: '/usr/lib/aarch64-linux-gnu', budgetMiB: 140 },
  { dir: '/usr/lib/python3.11' },
  { dir: '/usr/lib/python3', budgetMiB: 20 },
  { dir: '/usr/lib/systemd' },
  { dir: '/usr/lib/udev' },
  { dir: '/usr/share/perl', budgetMiB: 20 },
  { dir: '/usr/share/zoneinfo' },
  { dir: '/usr/share/i18n', budgetMiB: 16 },
  { dir: '/usr/share/locale', budgetMiB: 15 },
  { dir: '/usr/share/doc', budgetMiB: 20 },
  { dir: '/usr/share/man', budgetMiB: 5 },
];
/** When the sources above fall short (another machine), the rest of /usr is walked until both targets are met. */
const FALLBACK = '/usr';
const SKIP = new Set(['/usr/local']);
const TARGET_BYTES = 400 * MiB;
const TARGET_ENTRIES = 10_000;
/** The minimum; below it the build fails. */
const MIN_BYTES = 300 * MiB;
/** A file larger than this is left out (no single monster, e.g. libLLVM or a static node, dominating the image). */
const MAX_FILE = 32 * MiB;

export interface RootfsImage {
  /** OCI image layout dir and its tag. */
  layoutDir: string;
  tag: string;
  /** Manifest digest (sha256:...). */
  digest: string;
  /** The gzip layer blob file. */
  blobPath: string;
  blobBytes: number;
  /** Uncompressed tar size. */
  tarBytes: number;
  /** Sum of the regular files' sizes (hard links counted once): "the rootfs size". */
  contentBytes: number;
  entries: number;
  /** Regular files (hard links to them not included). */
  files: number;
  hardlinks: number;
  dirs: number;
  symlinks: number;
  /** Seconds the build took in this run, null when the cache was used. */
  buildSeconds: number | null;
}

interface Selection {
  /** Paths relative to / (no leading slash), in archive order. */
  paths: string[];
  contentBytes: number;
  files: number;
  hardlinks: number;
  dirs: number;
  symlinks: number;
}

/** The deterministic selection of /usr entries (exported for inspection). */
export function selectRootfs(): Selection {
  const sel: Selection = { paths: [], contentBytes: 0, files: 0, hardlinks: 0, dirs: 0, symlinks: 0 };
  const seen = new Set<string>();
  const inodes = new Set<string>();
  const done = (): boolean => sel.contentBytes >= TARGET_BYTES && sel.paths.length >= TARGET_ENTRIES;
  const add = (abs: string, st: fs.Stats): void => {
    seen.add(abs);
    sel.paths.push(abs.slice(1));
    if (st.isDirectory()) sel.dirs++;
    else if (st.isSymbolicLink()) sel.symlinks++;
    else if (st.nlink > 1 && inodes.has(`${st.dev}:${st.ino}`)) {
      sel.hardlinks++; // tar stores it as a link to the first one
    } else {
      if (st.nlink > 1) inodes.add(`${st.dev}:${st.ino}`);
      sel.files++;
      sel.contentBytes += st.size;
    }
  };
  const ensureAncestors = (abs: string): void => {
    const parent = path.dirname(abs);
    if (parent === '/' || seen.has(parent)) return;
    ensureAncestors(parent);
    add(parent, fs.lstatSync(parent));
  };
  /**
   * Walk `dir` (sorted, depth first), taking files while they fit under `limit` content bytes; false once the limit
   * is (nearly) reached or the targets are met.
   */
  const walk = (dir: string, limit: number): boolean => {
    let names: string[];
    try {
      names = fs.readdirSync(dir).sort();
    } catch {
      return true;
    }
    for (const name of names) {
      if (sel.contentBytes >= limit - 64 * 1024 || done()) return false;
      const abs = path.join(dir, name);
      if (seen.has(abs) || SKIP.has(abs)) continue;
      const st = fs.lstatSync(abs, { throwIfNoEntry: false });
      if (st === undefined) continue;
      if (st.isFile()) {
        const linked = st.nlink > 1 && inodes.has(`${st.dev}:${st.ino}`);
        if (!linked && (st.size > MAX_FILE || sel.contentBytes + st.size > limit)) continue;
        add(abs, st);
      } else if (st.isSymbolicLink()) {
        add(abs, st);
      } else if (st.isDirectory()) {
        add(abs, st);
        if (!walk(abs, limit)) return false;
      }
      // sockets, fifos and devices are skipped
    }
    return true;
  };
  for (const src of SOURCES) {
    if (done()) break;
    const st = fs.lstatSync(src.dir, { throwIfNoEntry: false });
    if (st?.isDirectory() !== true || seen.has(src.dir)) continue;
    ensureAncestors(src.dir);
    add(src.dir, st);
    walk(src.dir, src.budgetMiB === undefined ? Infinity : sel.contentBytes + src.budgetMiB * MiB);
  }
  if (!done()) {
    ensureAncestors(`${FALLBACK}/x`);
    walk(FALLBACK, Infinity);
  }
  if (sel.contentBytes < MIN_BYTES) {
    throw new Error(`this machine's ${FALLBACK} holds only ${(sel.contentBytes / MiB).toFixed(0)} MiB of files: the benchmark needs at least ${MIN_BYTES / MiB} MiB`);
  }
  return sel;
}

/** cOS bits every image carries (os-release with GRUB_ENTRY_NAME, bootargs, kernel/initrd) and merged-/usr links. */
async function writeExtras(dir: string): Promise<string[]> {
  const put = async (rel: string, content: string): Promise<void> => {
    await mkdir(path.join(dir, path.dirname(rel)), { recursive: true });
    await writeFile(path.join(dir, rel), content);
  };
  await put('etc/os-release', 'NAME="cOS"\nID=cos\nVERSION="9.9.9-bench"\nPRETTY_NAME="cOS 9.9.9 (benchmark)"\nGRUB_ENTRY_NAME="cOS bench"\n');
  await put('etc/cos/bootargs.cfg', 'set kernel=/boot/vmlinuz\nset initramfs=/boot/initrd\n');
  await put('boot/vmlinuz', 'benchmark kernel\n');
  await put('boot/initrd', 'benchmark initrd\n');
  for (const l of ['bin', 'sbin', 'lib']) await symlink(`usr/${l}`, path.join(dir, l));
  return ['etc', 'etc/os-release', 'etc/cos', 'etc/cos/bootargs.cfg', 'boot', 'boot/vmlinuz', 'boot/initrd', 'bin', 'sbin', 'lib'];
}

/** A child's exit as a promise: rejects naming the command on a non-zero exit. */
function exited(child: ReturnType<typeof spawn>, what: string, stderr: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${what} failed (exit ${code ?? signal}): ${stderr().trim().slice(-1000)}`));
    });
  });
}

/** tar (CLI) | gzip -6 (CLI), hashing both streams on the way; the blob lands in `blobTmp`. */
async function packLayer(selection: Selection, extrasDir: string, extras: string[], work: string, blobTmp: string): Promise<{ diffId: string; digest: string; tarBytes: number; blobBytes: number }> {
  const list = path.join(work, 'paths.nul');
  await writeFile(list, selection.paths.map((p) => `${p}\0`).join(''));
  const tarArgs = ['-c', '-f', '-', '--format=gnu', '--no-recursion', '--numeric-owner', '--owner=0', '--group=0',
    '-C', extrasDir, ...extras, '-C', '/', '--null', '-T', list];
  const tar = spawn('tar', tarArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  const gzip = spawn('gzip', ['-6', '-n', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let tarErr = '';
  let gzErr = '';
  tar.stderr?.on('data', (b: Buffer) => { tarErr = (tarErr + b.toString()).slice(-4000); });
  gzip.stderr?.on('data', (b: Buffer) => { gzErr = (gzErr + b.toString()).slice(-4000); });
  const tarDone = exited(tar, 'tar', () => tarErr);
  const gzDone = exited(gzip, 'gzip -6', () => gzErr);
  const tarHash = createHash('sha256');
  const blobHash = createHash('sha256');
  let tarBytes = 0;
  let blobBytes = 0;
  const out = fs.createWriteStream(blobTmp);
  const tarOut = tar.stdout;
  const gzIn = gzip.stdin;
  const gzOut = gzip.stdout;
  if (tarOut === null || gzIn === null || gzOut === null) throw new Error('tar/gzip pipes missing');
  tarOut.on('data', (b: Buffer) => {
    tarHash.update(b);
    tarBytes += b.length;
    if (!gzIn.write(b)) {
      tarOut.pause();
      gzIn.once('drain', () => tarOut.resume());
    }
  });
  tarOut.on('end', () => gzIn.end());
  gzOut.on('data', (b: Buffer) => {
    blobHash.update(b);
    blobBytes += b.length;
    if (!out.write(b)) {
      gzOut.pause();
      out.once('drain', () => gzOut.resume());
    }
  });
  const written = new Promise<void>((resolve, reject) => {
    gzOut.on('end', () => out.end());
    out.on('finish', resolve);
    out.on('error', reject);
  });
  try {
    await Promise.all([tarDone, gzDone, written]);
  } catch (e) {
    tar.kill();
    gzip.kill();
    out.destroy();
    throw e;
  }
  return { diffId: `sha256:${tarHash.digest('hex')}`, digest: `sha256:${blobHash.digest('hex')}`, tarBytes, blobBytes };
}

async function writeJsonBlob(layout: string, doc: unknown): Promise<{ digest: string; size: number }> {
  const body = Buffer.from(JSON.stringify(doc));
  const hex = createHash('sha256').update(body).digest('hex');
  await writeFile(path.join(layout, 'blobs', 'sha256', hex), body);
  return { digest: `sha256:${hex}`, size: body.length };
}

/** Remove half-built dirs of interrupted builds (named .building-<pid>-*, their process gone). */
async function removeStaleBuilds(cacheRoot: string): Promise<void> {
  for (const name of await readdir(cacheRoot)) {
    const m = /^\.building-(\d+)-/.exec(name);
    if (m === null) continue;
    let alive = true;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code !== 'ESRCH';
    }
    if (!alive) await rm(path.join(cacheRoot, name), { recursive: true, force: true });
  }
}

async function build(cacheRoot: string, finalDir: string, tag: string): Promise<void> {
  await mkdir(cacheRoot, { recursive: true });
  await removeStaleBuilds(cacheRoot);
  const work = await mkdtemp(path.join(cacheRoot, `.building-${process.pid}-`));
  try {
    const selection = selectRootfs();
    const extrasDir = path.join(work, 'extras');
    const extras = await writeExtras(extrasDir);
    const layout = path.join(work, 'layout');
    await mkdir(path.join(layout, 'blobs', 'sha256'), { recursive: true });
    const blobTmp = path.join(layout, 'blobs', 'sha256', 'layer.partial');
    const layer = await packLayer(selection, extrasDir, extras, work, blobTmp);
    await rename(blobTmp, path.join(layout, 'blobs', 'sha256', layer.digest.slice(7)));
    const arch = process.arch === 'arm64' ? 'arm64' : 'amd64';
    const config = await writeJsonBlob(layout, {
      architecture: arch,
      os: 'linux',
      created: '2026-01-01T00:00:00Z',
      config: { Labels: { 'org.opencontainers.image.version': '9.9.9-bench' } },
      rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    });
    const manifestType = 'application/vnd.oci.image.manifest.v1+json';
    const manifest = await writeJsonBlob(layout, {
      schemaVersion: 2,
      mediaType: manifestType,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: layer.blobBytes }],
    });
    await writeIndex(layout, tag, [{ mediaType: manifestType, ...manifest }]);
    const meta = {
      version: ROOTFS_VERSION,
      tag,
      digest: manifest.digest,
      blob: layer.digest.slice(7),
      blobBytes: layer.blobBytes,
      tarBytes: layer.tarBytes,
      contentBytes: selection.contentBytes,
      entries: selection.paths.length + extras.length,
      files: selection.files + 4,
      hardlinks: selection.hardlinks,
      dirs: selection.dirs + 3,
      symlinks: selection.symlinks + 3,
    };
    await writeFile(path.join(layout, 'bench-meta.json'), `${JSON.stringify(meta, null, 2)}\n`);
    try {
      await rename(layout, finalDir);
    } catch (e) {
      // Another run finished the same build first: keep its copy.
      if (!(await stat(path.join(finalDir, 'bench-meta.json')).then(() => true, () => false))) throw e;
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The cached image layout, built first when missing. */
export async function ensureRootfsImage(cacheRoot: string, onBuild: (msg: string) => void): Promise<RootfsImage> {
  const dir = path.join(cacheRoot, `rootfs-${ROOTFS_VERSION}`);
  const tag = 'v1';
  let buildSeconds: number | null = null;
  const metaFile = path.join(dir, 'bench-meta.json');
  if (!(await stat(metaFile).then(() => true, () => false))) {
    await rm(dir, { recursive: true, force: true });
    onBuild(`building the benchmark rootfs image from this machine's /usr into ${dir} (once; cached for later runs) ...`);
    const t0 = performance.now();
    await build(cacheRoot, dir, tag);
    buildSeconds = (performance.now() - t0) / 1000;
  }
  const meta = JSON.parse(await readFile(metaFile, 'utf8')) as {
    digest: string; blob: string; blobBytes: number; tarBytes: number; contentBytes: number; entries: number; files: number; hardlinks: number; dirs: number; symlinks: number;
  };
  const blobPath = path.join(dir, 'blobs', 'sha256', meta.blob);
  const st = await stat(blobPath);
  if (st.size !== meta.blobBytes) throw new Error(`the cached layer ${blobPath} is ${st.size} bytes, expected ${meta.blobBytes}: delete ${dir} and rerun`);
  return {
    layoutDir: dir,
    tag,
    digest: meta.digest,
    blobPath,
    blobBytes: meta.blobBytes,
    tarBytes: meta.tarBytes,
    contentBytes: meta.contentBytes,
    entries: meta.entries,
    files: meta.files,
    hardlinks: meta.hardlinks,
    dirs: meta.dirs,
    symlinks: meta.symlinks,
    buildSeconds,
  };
}
