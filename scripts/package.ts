/**
 * Builds the tarball a derivative OS image installs: `npm run package` (bundles first, then this) writes
 * dist/cos-agent-<version>-linux-<arch>.tar.gz, a tree to unpack at `/` (a Dockerfile's `ADD <tarball> /`, see
 * packaging/Dockerfile.snippet):
 *
 *   /usr/sbin/cosd                          launcher (sh): exec the runtime with bin/cosd.js's Node flags on cosd.mjs
 *   /usr/bin/cosctl                         launcher (sh): exec the runtime on cosctl.mjs
 *   /usr/lib/cos-agent/node                 the pinned Node.js runtime (the npm package `node`), stripped; the agent
 *                                           never uses the distribution's node
 *   /usr/lib/cos-agent/cosd.mjs, cosctl.mjs packaging/cosd.mjs, packaging/cosctl.mjs: call main() of the bundles
 *   /usr/lib/cos-agent/cosd/                dist/cosd/ (main.mjs, its chunks, cron-next.mjs, job-worker.mjs)
 *   /usr/lib/cos-agent/cosctl/              dist/cosctl/ (cli.mjs)
 *   the unit, bus policy, activation file, interface XML, polkit actions and docs: packaging/install.sh DESTDIR
 *
 * <arch> is the Debian name of the build machine's architecture (amd64, arm64), the one the bundled runtime is for:
 * npm installs the `node` package for the machine it runs on. The runtime needs the image's glibc and libstdc++.
 *
 * Deterministic: entries sorted by name, every mtime the same (SOURCE_DATE_EPOCH, else the last commit's time),
 * owner root:root (numeric 0:0), modes 0755 (directories, programs) or 0644, a gzip header without name or time.
 * Only the directories the package owns (/usr/lib/cos-agent, /usr/share/doc/cos-agent and what is below them) are
 * entries of their own: unpacking never changes the mode, owner or time of a shared directory such as /usr/bin, nor
 * replaces one that is a symlink on the image (/usr/sbin -> bin where bin and sbin are merged); missing parents are
 * created by the unpacker.
 *
 * `node scripts/package.ts [--out DIR]` (default dist/): packages the bundles already in dist/ (it builds nothing;
 * `npm run package` runs scripts/build.sh first). Prints the tarball's path and size, and the sizes inside it.
 */
import { execFile } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, copyFile, cp, mkdir, mkdtemp, readdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, '..');

/** Debian architecture names of the Node.js architectures the package is built for. */
const DEBIAN_ARCH: Readonly<Record<string, string>> = { x64: 'amd64', arm64: 'arm64' };
/** Directories the package owns (relative to /): they, and every directory below them, are tar entries. */
const OWNED_DIRS = ['usr/lib/cos-agent', 'usr/share/doc/cos-agent'];
const LIB = 'usr/lib/cos-agent';

interface PackageJson {
  version: string;
  dependencies: Record<string, string>;
}

/** A reason the package cannot be built: printed as one line, exit status 1. */
class PackageError extends Error {}

function fail(msg: string): never {
  throw new PackageError(msg);
}

/** The Node flags of bin/cosd.js's shebang (`#!/usr/bin/env -S node <flags>`): the one place they are set. */
async function cosdNodeFlags(): Promise<string[]> {
  const first = (await readFile(path.join(repo, 'bin/cosd.js'), 'utf8')).split('\n')[0] ?? '';
  const m = /^#!\/usr\/bin\/env -S node((?: --[a-z0-9-]+(?:=[a-z0-9]+)?)*)$/.exec(first);
  if (m === null) fail(`bin/cosd.js: unexpected shebang ${JSON.stringify(first)}`);
  return (m[1] ?? '').split(' ').filter((f) => f !== '');
}

/** A launcher: a shell script that execs the package's runtime on `module` with `flags` and its own arguments. */
function launcher(installedAs: string, what: string, flags: readonly string[], module: string, version: string): string {
  return [
    '#!/bin/sh',
    `# ${installedAs} (cos-agent ${version}, made by scripts/package.ts): ${what}.`,
    '# Runs on the package\'s own Node.js runtime, never the distribution\'s node.',
    `exec ${[`/${LIB}/node`, ...flags, `/${LIB}/${module}`].join(' ')} "$@"`,
    '',
  ].join('\n');
}

/** Seconds since the epoch every entry gets: SOURCE_DATE_EPOCH, else the time of the last commit. */
async function sourceDateEpoch(): Promise<number> {
  const env = process.env.SOURCE_DATE_EPOCH;
  if (env !== undefined && env !== '') {
    if (!/^\d+$/.test(env)) fail(`SOURCE_DATE_EPOCH=${JSON.stringify(env)} is not a number of seconds`);
    return Number(env);
  }
  const { stdout } = await run('git', ['-C', repo, 'log', '-1', '--format=%ct']);
  const epoch = Number(stdout.trim());
  if (!Number.isInteger(epoch) || epoch <= 0) fail(`no commit time from git (${JSON.stringify(stdout)}); set SOURCE_DATE_EPOCH`);
  return epoch;
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) total += (await stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

interface Entry {
  /** Path relative to the staging root, without a trailing slash. */
  rel: string;
  dir: boolean;
  executable: boolean;
}

/** What goes into the tarball: every file under `stage`, and the owned directories; sorted by name. */
async function entries(stage: string): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const e of await readdir(stage, { recursive: true, withFileTypes: true })) {
    const rel = path.relative(stage, path.join(e.parentPath, e.name));
    if (e.isDirectory()) {
      if (OWNED_DIRS.some((d) => rel === d || rel.startsWith(`${d}/`))) out.push({ rel, dir: true, executable: true });
    } else if (e.isFile()) {
      out.push({ rel, dir: false, executable: ((await stat(path.join(stage, rel))).mode & 0o111) !== 0 });
    } else {
      fail(`${rel}: neither a file nor a directory`);
    }
  }
  // Code-unit order of the names as written (directories with their slash): parents come before their children.
  const name = (e: Entry): string => (e.dir ? `${e.rel}/` : e.rel);
  return out.sort((a, b) => (name(a) < name(b) ? -1 : name(a) > name(b) ? 1 : 0));
}

/** Write `list` from `stage` as a gzipped tar to `file`. */
async function writeTarball(stage: string, list: readonly Entry[], mtime: Date, file: string): Promise<void> {
  const pack = tar.pack();
  const written = pipeline(pack, createGzip({ level: 9 }), createWriteStream(file));
  for (const e of list) {
    const common = { mode: e.executable ? 0o755 : 0o644, uid: 0, gid: 0, uname: 'root', gname: 'root', mtime };
    if (e.dir) {
      await new Promise<void>((resolve, reject) => pack.entry({ ...common, name: `${e.rel}/`, type: 'directory' }, (err) => (err ? reject(err) : resolve())));
      continue;
    }
    const full = path.join(stage, e.rel);
    const size = (await stat(full)).size;
    const entry = pack.entry({ ...common, name: e.rel, type: 'file', size });
    await pipeline(createReadStream(full), entry);
  }
  pack.finalize();
  await written;
}

const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB (${n} bytes)`;

/** Build the tarball and print what it holds. */
async function main(): Promise<void> {
  const { values } = parseArgs({ options: { out: { type: 'string' } }, strict: true, allowPositionals: false });
  const outDir = path.resolve(values.out ?? path.join(repo, 'dist'));
  const pkg = JSON.parse(await readFile(path.join(repo, 'package.json'), 'utf8')) as PackageJson;
  const arch = DEBIAN_ARCH[process.arch] ?? fail(`no package architecture for Node's ${process.arch} (known: ${Object.keys(DEBIAN_ARCH).join(', ')})`);
  const tarball = path.join(outDir, `cos-agent-${pkg.version}-linux-${arch}.tar.gz`);

  for (const built of ['dist/cosd/main.mjs', 'dist/cosd/cron-next.mjs', 'dist/cosd/job-worker.mjs', 'dist/cosctl/cli.mjs']) {
    await stat(path.join(repo, built)).catch(() => fail(`${built} is missing: run \`npm run build\` first (or \`npm run package\`)`));
  }

  // The pinned runtime: the real binary of the npm package `node` (node_modules/.bin/node is a symlink to it).
  const pinned = pkg.dependencies.node ?? fail('package.json pins no `node` dependency');
  const nodeSource = await realpath(path.join(repo, 'node_modules/node/bin/node'));
  const sourceVersion = (await run(nodeSource, ['--version'])).stdout.trim();
  if (sourceVersion !== `v${pinned}`) fail(`${nodeSource} is ${sourceVersion}, package.json pins ${pinned}: run npm ci`);

  const stage = await mkdtemp(path.join(tmpdir(), 'cos-agent-package-'));
  try {
    await run('bash', [path.join(repo, 'packaging/install.sh'), stage]);
    const lib = path.join(stage, LIB);
    await mkdir(lib, { recursive: true, mode: 0o755 });
    // Debug info and the static symbol table go; the dynamic symbols native addons link against stay.
    await run('strip', ['--strip-unneeded', '-o', path.join(lib, 'node'), nodeSource]);
    await chmod(path.join(lib, 'node'), 0o755);
    const strippedVersion = (await run(path.join(lib, 'node'), ['--version'])).stdout.trim();
    if (strippedVersion !== sourceVersion) fail(`the stripped runtime reports ${strippedVersion}, not ${sourceVersion}`);
    await cp(path.join(repo, 'dist/cosd'), path.join(lib, 'cosd'), { recursive: true });
    await cp(path.join(repo, 'dist/cosctl'), path.join(lib, 'cosctl'), { recursive: true });
    await copyFile(path.join(repo, 'packaging/cosd.mjs'), path.join(lib, 'cosd.mjs'));
    await copyFile(path.join(repo, 'packaging/cosctl.mjs'), path.join(lib, 'cosctl.mjs'));
    const flags = await cosdNodeFlags();
    for (const [rel, text] of [
      ['usr/sbin/cosd', launcher('/usr/sbin/cosd', 'the upgrade agent daemon, run by cosd.service, with the Node flags of bin/cosd.js', flags, 'cosd.mjs', pkg.version)],
      ['usr/bin/cosctl', launcher('/usr/bin/cosctl', 'the upgrade agent CLI', [], 'cosctl.mjs', pkg.version)],
    ] as const) {
      await mkdir(path.dirname(path.join(stage, rel)), { recursive: true });
      await writeFile(path.join(stage, rel), text, { mode: 0o755 });
    }

    const list = await entries(stage);
    const mtime = new Date((await sourceDateEpoch()) * 1000);
    await mkdir(outDir, { recursive: true });
    const partial = `${tarball}.partial`;
    try {
      await writeTarball(stage, list, mtime, partial);
      await rename(partial, tarball);
    } catch (e) {
      await rm(partial, { force: true });
      throw e;
    }

    const size = (await stat(tarball)).size;
    process.stdout.write(`${tarball} ${mb(size)}\n`);
    process.stdout.write(`  ${list.length} entries, mtime ${mtime.toISOString()}, unpacked ${mb(await dirSize(stage))}\n`);
    process.stdout.write(`  /${LIB}/node ${sourceVersion}: ${mb((await stat(nodeSource)).size)} before strip, ${mb((await stat(path.join(lib, 'node'))).size)} after\n`);
    process.stdout.write(`  /${LIB}/cosd/ ${mb(await dirSize(path.join(lib, 'cosd')))}, /${LIB}/cosctl/ ${mb(await dirSize(path.join(lib, 'cosctl')))}\n`);
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (e) {
  if (!(e instanceof PackageError)) throw e;
  process.stderr.write(`package: ${e.message}\n`);
  process.exitCode = 1;
}
