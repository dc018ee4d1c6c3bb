/**
 * scripts/package.ts (`npm run package`), checked on its real output (runs as root):
 *   - the tarball: its name (version, Debian arch), the exact entry list with modes, owners and mtime, contents
 *     byte-identical to their sources, a stripped runtime that still runs, and two builds byte-identical;
 *   - unpacked into a temp root outside the repository: the launchers exec the bundled runtime (cosd with the Node
 *     flags of bin/cosd.js's shebang) on the bundles, which load without any node_modules; cosctl --help runs, and
 *     cosd, started from the tree as its launcher would, takes the bus name on a private dbus-daemon (with the
 *     unpacked bus policy) and answers GetStatus, to a D-Bus client and to the unpacked cosctl;
 *   - packaging/Dockerfile.snippet: a derivative OCI image built by its two instructions with umoci
 *     (test/helpers/derivative.ts) holds the program, the unit and the enablement symlink `systemctl enable` makes.
 * The package is built from the bundles in dist/ (built first if missing, as scripts/test.sh does).
 */
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { createGunzip } from 'node:zlib';
import { AgentClient } from '../../src/dbus/client.ts';
import type { HostStatusDocument } from '../../src/model/host.ts';
import { createCosHost } from '../helpers/cos-host.ts';
import { COSD_NODE_FLAGS, startBus } from '../helpers/dbus.ts';
import { baseImage, configOf, layerEntries, makeDerivativeImage, manifestOf, readSnippet, tarEntries, type LayerEntry } from '../helpers/derivative.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const PKG = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string> };
const ARCH = ({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch] ?? process.arch;
const TARBALL_NAME = `cos-agent-${PKG.version}-linux-${ARCH}.tar.gz`;
const LIB = 'usr/lib/cos-agent';
/** A PATH like systemd's default: nothing of the repository (node_modules/.bin) on it. */
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** install.sh's files in the tarball (path -> source in the repository), as in test/packaging.test.ts. */
const INTEGRATION_FILES: Readonly<Record<string, string>> = {
  'usr/lib/systemd/system/cosd.service': 'systemd/cosd.service',
  'usr/lib/systemd/system/cos-agent-healthcheck.service': 'systemd/cos-agent-healthcheck.service',
  'usr/lib/systemd/system/cos-agent-config.path': 'systemd/cos-agent-config.path',
  'usr/share/dbus-1/system.d/io.costoolkit.Agent1.conf': 'packaging/io.costoolkit.Agent1.conf',
  'usr/share/dbus-1/system-services/io.costoolkit.Agent1.service': 'packaging/io.costoolkit.Agent1.service',
  'usr/share/dbus-1/interfaces/io.costoolkit.Agent1.xml': 'src/dbus/interface.xml',
  'usr/share/polkit-1/actions/io.costoolkit.agent1.policy': 'packaging/io.costoolkit.agent1.policy',
  'usr/share/doc/cos-agent/examples/io.costoolkit.Agent1.polkit.conf': 'packaging/io.costoolkit.Agent1.polkit.conf',
  'usr/share/doc/cos-agent/README.md': 'README.md',
  'usr/share/man/man1/cosctl.1': 'packaging/cosctl.1',
  'usr/share/bash-completion/completions/cosctl': 'packaging/cosctl.bash-completion',
  'usr/share/zsh/vendor-completions/_cosctl': 'packaging/_cosctl',
  ...Object.fromEntries(['cos-setup-fs.service', 'cos-setup-boot.service', 'cos-setup-network.service', 'cos-setup-reconcile.service', 'cos-setup-reconcile.timer']
    .map((u) => [`usr/lib/systemd/system/${u}`, `systemd/${u}`])),
};

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8', env: opts.env ?? process.env, cwd: opts.cwd, timeout: 180_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

interface Build {
  tarball: string;
  stdout: string;
}

/** scripts/package.ts into a fresh out dir, SOURCE_DATE_EPOCH as given (unset: the last commit's time). */
async function packageInto(dir: string, sourceDateEpoch?: string): Promise<Build> {
  const { SOURCE_DATE_EPOCH: _unset, ...env } = process.env;
  const r = await run(process.execPath, [path.join(REPO, 'scripts/package.ts'), '--out', dir], { env: sourceDateEpoch === undefined ? env : { ...env, SOURCE_DATE_EPOCH: sourceDateEpoch } });
  if (r.code !== 0) throw new Error(`scripts/package.ts failed (${r.code}): ${r.stderr}`);
  return { tarball: path.join(dir, TARBALL_NAME), stdout: r.stdout };
}

let work = '';
/** Two builds with the commit time, one with SOURCE_DATE_EPOCH=1700000000. */
let first: Build;
let second: Build;
let epochBuild: Build;
/** The first build unpacked (GNU tar, owners and modes kept) in a temp dir outside the repository. */
let root = '';
let commitTime = 0;

test.before(async () => {
  if (!existsSync(path.join(REPO, 'dist/cosd/main.mjs')) || !existsSync(path.join(REPO, 'dist/cosctl/cli.mjs'))) {
    const b = await run('bash', [path.join(REPO, 'scripts/build.sh')]);
    if (b.code !== 0) throw new Error(`scripts/build.sh failed: ${b.stderr}`);
  }
  commitTime = Number((await run('git', ['-C', REPO, 'log', '-1', '--format=%ct'])).stdout.trim());
  work = await mkdtemp(path.join(tmpdir(), 'cos-package-'));
  [first, second, epochBuild] = await Promise.all([
    packageInto(path.join(work, 'a')),
    packageInto(path.join(work, 'b')),
    packageInto(path.join(work, 'c'), '1700000000'),
  ]);
  root = path.join(work, 'root');
  await mkdir(root);
  const x = await run('tar', ['--extract', '--gzip', '--same-permissions', '--same-owner', '--numeric-owner', '--file', first.tarball, '--directory', root]);
  if (x.code !== 0) throw new Error(`tar -x: ${x.stderr}`);
});
test.after.always(async () => {
  if (work !== '') await rm(work, { recursive: true, force: true });
});

/** Every entry of a tarball as `<name> <type> <mode> <uid>:<gid> <uname>:<gname> <mtime>`, in archive order. */
async function listing(tarball: string): Promise<string[]> {
  const tar = (await import('tar-stream')).default;
  const out: string[] = [];
  const extract = tar.extract();
  extract.on('entry', (h, stream, next) => {
    out.push(`${h.name} ${h.type} ${(h.mode ?? 0).toString(8)} ${h.uid}:${h.gid} ${h.uname}:${h.gname} ${(h.mtime?.getTime() ?? 0) / 1000}`);
    stream.on('end', next);
    stream.resume();
  });
  await pipeline(createReadStream(tarball), createGunzip(), extract);
  return out;
}

/** The launcher `rel` of the unpacked tree as argv: `#!/bin/sh`, comments, then one `exec <words> "$@"`. */
async function launcherArgv(rel: string): Promise<string[]> {
  const lines = (await readFile(path.join(root, rel), 'utf8')).split('\n').filter((l) => l !== '');
  if (lines[0] !== '#!/bin/sh') throw new Error(`${rel}: no #!/bin/sh line`);
  const code = lines.slice(1).filter((l) => !l.startsWith('#'));
  const m = code.length === 1 ? /^exec ((?:[A-Za-z0-9_./=-]+ )+)"\$@"$/.exec(code[0] ?? '') : null;
  if (m === null) throw new Error(`${rel}: expected exactly one plain 'exec ... "$@"' line, got ${JSON.stringify(code)}`);
  return (m[1] ?? '').trim().split(' ');
}

/** A launcher's argv with its absolute package paths moved under the unpacked root. */
function rerooted(argv: readonly string[]): string[] {
  return argv.map((w) => (w.startsWith(`/${LIB}/`) ? path.join(root, w) : w));
}

async function sourceFiles(dir: string): Promise<string[]> {
  return (await readdir(path.join(REPO, dir))).sort();
}

test('the tarball is cos-agent-<version>-linux-<Debian arch>.tar.gz, and the script prints its path and size', async (t) => {
  t.regex(TARBALL_NAME, /^cos-agent-\d+\.\d+\.\d+-linux-(amd64|arm64)\.tar\.gz$/);
  const size = (await stat(first.tarball)).size;
  t.true(first.stdout.startsWith(`${first.tarball} `), first.stdout);
  t.true(first.stdout.split('\n')[0]?.includes(`(${size} bytes)`), first.stdout);
  t.regex(first.stdout, /node v24\.\d+\.\d+: .* before strip, .* after/);
});

test('the tarball holds exactly the package: sorted, root:root, 0755/0644, one mtime (the last commit), owned directories only', async (t) => {
  const mtime = commitTime;
  t.true(mtime > 0);
  const entry = (name: string, kind: 'dir' | 'exe' | 'file'): string =>
    `${name}${kind === 'dir' ? '/' : ''} ${kind === 'dir' ? 'directory' : 'file'} ${kind === 'file' ? '644' : '755'} 0:0 root:root ${mtime}`;
  const expected = [
    entry('usr/bin/cosctl', 'exe'),
    entry('usr/sbin/cosd', 'exe'),
    entry('usr/sbin/suc-upgrade', 'exe'),
    entry(LIB, 'dir'),
    entry(`${LIB}/node`, 'exe'),
    entry(`${LIB}/cosd.mjs`, 'file'),
    entry(`${LIB}/cosctl.mjs`, 'file'),
    entry(`${LIB}/check`, 'dir'),
    entry(`${LIB}/check/required.d`, 'dir'),
    entry(`${LIB}/check/required.d/00-cosd-running`, 'exe'),
    entry(`${LIB}/check/wanted.d`, 'dir'),
    entry(`${LIB}/cosd`, 'dir'),
    ...(await sourceFiles('dist/cosd')).map((f) => entry(`${LIB}/cosd/${f}`, 'file')),
    entry(`${LIB}/cosctl`, 'dir'),
    ...(await sourceFiles('dist/cosctl')).map((f) => entry(`${LIB}/cosctl/${f}`, 'file')),
    ...Object.keys(INTEGRATION_FILES).map((f) => entry(f, 'file')),
    entry('usr/share/doc/cos-agent', 'dir'),
    entry('usr/share/doc/cos-agent/examples', 'dir'),
  ].sort();
  const got = await listing(first.tarball);
  t.deepEqual(got, expected);
  t.deepEqual([...got].sort(), got, 'entries are in name order');
  // Shared directories (/usr, /usr/bin, /usr/sbin, /usr/lib/systemd/system, ...) are not entries: unpacking never
  // touches them (nor replaces /usr/sbin where it is a symlink to bin).
  t.false(got.some((l) => /^usr\/(bin|sbin|lib|share)?\/? /.test(l)));
});

test('the files are their sources: bundles, entry modules, integration files; the runtime is the pinned node, stripped', async (t) => {
  const same = async (installed: string, source: string): Promise<void> => {
    t.true((await readFile(path.join(root, installed))).equals(await readFile(path.join(REPO, source))), `${installed} is ${source}`);
  };
  for (const dir of ['cosd', 'cosctl']) {
    for (const f of await sourceFiles(`dist/${dir}`)) await same(`${LIB}/${dir}/${f}`, `dist/${dir}/${f}`);
    await same(`${LIB}/${dir}.mjs`, `packaging/${dir}.mjs`);
  }
  for (const [installed, source] of Object.entries(INTEGRATION_FILES)) await same(installed, source);
  await same(`${LIB}/check/required.d/00-cosd-running`, 'packaging/check/required.d/00-cosd-running');
  await same('usr/sbin/suc-upgrade', 'packaging/suc-upgrade');

  const node = path.join(root, LIB, 'node');
  const version = await run(node, ['--version'], { env: { PATH: SYSTEM_PATH }, cwd: '/' });
  t.is(version.stdout.trim(), `v${PKG.dependencies.node}`);
  const pinned = await stat(path.join(REPO, 'node_modules/node/bin/node'));
  t.true((await stat(node)).size < pinned.size, 'smaller than the unstripped runtime');
  const sections = await run('readelf', ['--section-headers', '--wide', node]);
  t.is(sections.code, 0, sections.stderr);
  t.notRegex(sections.stdout, /\.symtab|\.debug_info/, 'no static symbol table, no debug info');
  t.regex(sections.stdout, /\.dynsym/, 'the dynamic symbols (for native addons) stay');
});

test('two builds are byte-identical; SOURCE_DATE_EPOCH sets every mtime and changes nothing else', async (t) => {
  const a = await readFile(first.tarball);
  t.true(a.equals(await readFile(second.tarball)), 'same bytes');
  t.is(a.readUInt32LE(4), 0, 'no time in the gzip header');
  const withEpoch = await listing(epochBuild.tarball);
  t.true(withEpoch.every((l) => l.endsWith(' 1700000000')));
  const strip = (ls: string[]): string[] => ls.map((l) => l.slice(0, l.lastIndexOf(' ')));
  t.deepEqual(strip(withEpoch), strip(await listing(first.tarball)));
});

test('the launchers exec the bundled runtime on the bundles: cosd with bin/cosd.js\'s Node flags; the unit runs /usr/sbin/cosd', async (t) => {
  t.deepEqual(await launcherArgv('usr/sbin/cosd'), [`/${LIB}/node`, ...COSD_NODE_FLAGS, `/${LIB}/cosd.mjs`]);
  t.true(COSD_NODE_FLAGS.length > 0);
  t.deepEqual(await launcherArgv('usr/bin/cosctl'), [`/${LIB}/node`, `/${LIB}/cosctl.mjs`]);
  for (const launcher of ['usr/sbin/cosd', 'usr/bin/cosctl']) {
    const syntax = await run('sh', ['-n', path.join(root, launcher)]);
    t.is(syntax.code, 0, syntax.stderr);
    for (const word of await launcherArgv(launcher)) {
      if (word.startsWith('/')) t.true((await lstat(path.join(root, word))).isFile(), `${launcher} names ${word}, which the tarball holds`);
    }
  }
  const unit = await readFile(path.join(root, 'usr/lib/systemd/system/cosd.service'), 'utf8');
  t.deepEqual(unit.split('\n').filter((l) => l.startsWith('ExecStart=')), ['ExecStart=/usr/sbin/cosd']);
});

test('unpacked outside the repository, the bundles load and cosctl --help runs with no node_modules anywhere', async (t) => {
  t.false(root.startsWith(REPO));
  // Nothing up the tree from the bundles could resolve a bare import.
  for (let dir = path.join(root, LIB); ; dir = path.dirname(dir)) {
    t.false(existsSync(path.join(dir, 'node_modules')), `${dir}/node_modules`);
    if (dir === path.dirname(dir)) break;
  }
  const env = { PATH: SYSTEM_PATH };
  const [cosctl, ...cosctlArgs] = rerooted(await launcherArgv('usr/bin/cosctl'));
  const help = await run(cosctl!, [...cosctlArgs, '--help'], { env, cwd: '/' });
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /^usage: cosctl /);
  t.is(help.stderr, '');

  // Every module of both bundles, including the chunks cosd imports only on its first job, loads on its own.
  const modules: string[] = [];
  for (const dir of ['cosd', 'cosctl']) for (const f of await readdir(path.join(root, LIB, dir))) modules.push(path.join(root, LIB, dir, f));
  const node = path.join(root, LIB, 'node');
  const code = 'for (const f of process.argv.slice(1)) await import(f); console.log(`loaded ${process.argv.length - 1}`);';
  const loaded = await run(node, ['--input-type=module', '--eval', code, ...modules], { env, cwd: '/' });
  t.is(loaded.code, 0, loaded.stderr);
  t.is(loaded.stdout.trim(), `loaded ${modules.length}`);
});

test('cosd from the unpacked tree takes the bus name on a private bus (the unpacked policy) and answers GetStatus', async (t) => {
  const bus = await startBus({ includes: [path.join(root, 'usr/share/dbus-1/system.d/io.costoolkit.Agent1.conf')] });
  t.teardown(() => bus.stop());
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());

  const [cmd, ...args] = rerooted(await launcherArgv('usr/sbin/cosd'));
  const child = spawn(cmd!, [...args, '--root', host.root], {
    env: { PATH: SYSTEM_PATH, ...host.env, DBUS_SYSTEM_BUS_ADDRESS: bus.address, HOME: host.root, COS_LOG_LEVEL: 'info', AGENT_TEST_CLOCK: 'manual:2025-01-06T12:00:00Z' },
    cwd: '/',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  const exited = once(child, 'exit');
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const junk: string[] = [];
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      let entry: { msg?: string };
      try {
        entry = JSON.parse(line) as { msg?: string };
      } catch {
        junk.push(line);
        return;
      }
      if (entry.msg === 'ready') resolve();
    });
    child.once('exit', (code, signal) => reject(new Error(`cosd exited (${code ?? signal}) before it was ready: ${stderr}`)));
  });

  const client = await AgentClient.connect({ address: bus.address });
  t.teardown(() => client.close());
  t.true(await client.daemonRunning());
  const status = await client.getStatus();
  t.is(status.status.bootedFrom, 'active');
  t.is(status.status.slots.active.version, host.versions.active);

  // The unpacked cosctl on the same runtime: its status comes from cosd (a bus monitor sees its GetStatus call).
  const monitor = spawn('dbus-monitor', ['--address', bus.address, "type='method_call',interface='io.costoolkit.Agent1',member='GetStatus'"], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => monitor.kill());
  let seen = '';
  const watching = new Promise<void>((resolve) => monitor.stdout.once('data', () => resolve()));
  const called = new Promise<void>((resolve) => monitor.stdout.on('data', (b: Buffer) => {
    seen += b.toString();
    if (/member=GetStatus/.test(seen)) resolve();
  }));
  await watching; // the monitor announces itself (NameLost of its own name) once it is one
  const [ctl, ...ctlArgs] = rerooted(await launcherArgv('usr/bin/cosctl'));
  const viaCosctl = await run(ctl!, [...ctlArgs, '--root', host.root, 'status', '--json'], { env: { PATH: SYSTEM_PATH, ...host.env, DBUS_SYSTEM_BUS_ADDRESS: bus.address }, cwd: '/' });
  t.is(viaCosctl.code, 0, viaCosctl.stderr);
  t.deepEqual(JSON.parse(viaCosctl.stdout) as HostStatusDocument, status);
  await Promise.race([called, sleep(10_000, undefined, { ref: false }).then(() => Promise.reject(new Error(`no GetStatus call seen: ${seen}`)))]);
  t.regex(seen, /method call .* destination=io\.costoolkit\.Agent1 .* member=GetStatus/);

  child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  t.is(code, 0, stderr);
  t.is(stderr, '');
  t.deepEqual(junk, [], 'every line cosd logs is JSON');
});

test('a derivative image built by the Dockerfile snippet (umoci) holds cosd, the unit and the enablement symlink', async (t) => {
  const snippet = await readSnippet();
  t.regex(snippet.add.source, new RegExp(`^cos-agent-${PKG.version.replaceAll('.', '\\.')}-linux-(amd64|arm64)\\.tar\\.gz$`), 'the snippet ADDs this version\'s tarball');
  t.is(snippet.add.dest, '/');
  t.deepEqual(snippet.run.argv, ['systemctl', 'enable', 'cosd.service', 'cos-agent-config.path', 'cos-agent-healthcheck.service', 'cos-setup-fs.service', 'cos-setup-boot.service', 'cos-setup-network.service', 'cos-setup-reconcile.timer']);

  const dir = await mkdtemp(path.join(tmpdir(), 'cos-derivative-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const layout = path.join(dir, 'layout');
  await baseImage(layout, 'base');
  const base = await manifestOf(layout, 'base');
  const image = await makeDerivativeImage({ layout, baseTag: 'base', tag: 'derived', tarball: first.tarball, work: path.join(dir, 'work') });

  const manifest = await manifestOf(layout, 'derived');
  t.deepEqual(manifest.layers.map((l) => l.digest), [...base.layers.map((l) => l.digest), image.layers.add, image.layers.run]);
  const history = (await configOf(layout, 'derived')).history ?? [];
  t.deepEqual(history.slice(-2).map((h) => h.created_by), [snippet.add.line, snippet.run.line]);

  const added = new Map((await layerEntries(layout, image.layers.add)).map((e) => [e.name, e]));
  const fileOf = (e: LayerEntry | undefined): string => (e === undefined ? 'missing' : `${e.type} ${e.mode.toString(8)} ${e.uid}:${e.gid}`);
  t.is(fileOf(added.get('usr/sbin/cosd')), 'file 755 0:0');
  t.is(fileOf(added.get('usr/bin/cosctl')), 'file 755 0:0');
  t.is(fileOf(added.get(`${LIB}/node`)), 'file 755 0:0');
  t.is(fileOf(added.get('usr/lib/systemd/system/cosd.service')), 'file 644 0:0');
  // The ADD layer holds every file of the tarball.
  const inTarball = (await tarEntries(first.tarball)).filter((e) => e.type === 'file').map((e) => e.name);
  t.deepEqual(inTarball.filter((n) => added.get(n)?.type !== 'file'), []);

  // The RUN layer: the symlinks systemctl enable makes (cosd: WantedBy=multi-user.target; the health checks: also
  // RequiredBy=boot-complete.target; the cos-setup units), and nothing else but their dirs.
  const enabled = await layerEntries(layout, image.layers.run);
  const links = {
    'etc/systemd/system/multi-user.target.wants/cosd.service': 'cosd.service',
    'etc/systemd/system/multi-user.target.wants/cos-agent-config.path': 'cos-agent-config.path',
    'etc/systemd/system/multi-user.target.wants/cos-agent-healthcheck.service': 'cos-agent-healthcheck.service',
    'etc/systemd/system/boot-complete.target.requires/cos-agent-healthcheck.service': 'cos-agent-healthcheck.service',
    // the yip stages, with cOS's install sections
    'etc/systemd/system/sysinit.target.wants/cos-setup-fs.service': 'cos-setup-fs.service',
    'etc/systemd/system/multi-user.target.wants/cos-setup-boot.service': 'cos-setup-boot.service',
    'etc/systemd/system/multi-user.target.wants/cos-setup-network.service': 'cos-setup-network.service',
    'etc/systemd/system/multi-user.target.wants/cos-setup-reconcile.timer': 'cos-setup-reconcile.timer',
  };
  for (const [name, unit] of Object.entries(links)) {
    const link = enabled.find((e) => e.name === name);
    t.is(link?.type, 'symlink', name);
    t.true([`/usr/lib/systemd/system/${unit}`, `/lib/systemd/system/${unit}`].includes(link?.linkname ?? ''), link?.linkname ?? `no link ${name}`);
  }
  t.deepEqual(enabled.filter((e) => e.type !== 'directory').map((e) => e.name).sort(), Object.keys(links).sort());

  // The whole image, unpacked as a runtime would: the link resolves to the unit inside the image, and cosctl runs.
  const rootfs = path.join(dir, 'unpacked');
  const unpacked = await run('umoci', ['raw', 'unpack', '--image', `${layout}:derived`, rootfs]);
  t.is(unpacked.code, 0, unpacked.stderr);
  const target = await readlink(path.join(rootfs, 'etc/systemd/system/multi-user.target.wants/cosd.service'));
  // (/lib/... resolves through the image's own lib -> usr/lib symlink.)
  t.true((await readFile(path.join(rootfs, target))).equals(await readFile(path.join(REPO, 'systemd/cosd.service'))));
  const help = await run(path.join(rootfs, LIB, 'node'), [path.join(rootfs, LIB, 'cosctl.mjs'), '--help'], { env: { PATH: SYSTEM_PATH }, cwd: '/' });
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /^usage: cosctl /);
});
