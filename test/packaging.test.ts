/**
 * packaging/install.sh and the files it installs, checked with the real consumers (runs as root):
 *   - the installed tree: exactly the system-integration files, 0644 in 0755 directories, byte-identical to their
 *     sources; idempotent; DESTDIR from argv only;
 *   - the interface XML parses as D-Bus introspection (dbus-next's introspection reader);
 *   - the bus policy and the activation file: a real dbus-daemon whose config includes the installed policy and has
 *     the installed system-services dir as <servicedir> lists io.costoolkit.Agent1 as activatable, and lets root (only)
 *     own the name; the example polkit drop-in is a bus config dbus-daemon loads;
 *   - the unit: `systemd-analyze verify` offline, in a root made of the installed tree, the host's units (dbus.socket,
 *     the targets) and a stub /usr/sbin/cosd (the program itself is not installed by install.sh). systemd 252 only
 *     warns about unknown keys and bad values (exit 0), so "valid" means exit 0 AND no diagnostics at all; broken
 *     copies of the unit prove that this check fails on a real error.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { chmod, cp, lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import dbus from 'dbus-next';
import { startBus as startTestBus, type TestBus } from './helpers/dbus.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const INSTALL = path.join(REPO, 'packaging/install.sh');
const BUS_NAME = 'io.costoolkit.Agent1';
const UNIT = 'usr/lib/systemd/system/cosd.service';
const HEALTH_UNIT = 'usr/lib/systemd/system/cos-agent-healthcheck.service';
const HEALTH_CHECK = 'usr/lib/cos-agent/check/required.d/00-cosd-running';
const POLICY = 'usr/share/dbus-1/system.d/io.costoolkit.Agent1.conf';
const SERVICES_DIR = 'usr/share/dbus-1/system-services';
const ACTIVATION = `${SERVICES_DIR}/io.costoolkit.Agent1.service`;
const INTERFACE = 'usr/share/dbus-1/interfaces/io.costoolkit.Agent1.xml';
const POLKIT_DROP_IN = 'usr/share/doc/cos-agent/examples/io.costoolkit.Agent1.polkit.conf';

/** Installed path (relative to DESTDIR) -> source (relative to the repository). */
const FILES: Readonly<Record<string, string>> = {
  [UNIT]: 'systemd/cosd.service',
  [HEALTH_UNIT]: 'systemd/cos-agent-healthcheck.service',
  'usr/lib/systemd/system/cos-agent-config.path': 'systemd/cos-agent-config.path',
  [POLICY]: 'packaging/io.costoolkit.Agent1.conf',
  [ACTIVATION]: 'packaging/io.costoolkit.Agent1.service',
  [INTERFACE]: 'src/dbus/interface.xml',
  'usr/share/polkit-1/actions/io.costoolkit.agent1.policy': 'packaging/io.costoolkit.agent1.policy',
  [POLKIT_DROP_IN]: 'packaging/io.costoolkit.Agent1.polkit.conf',
  'usr/share/doc/cos-agent/README.md': 'README.md',
  'usr/share/man/man1/cosctl.1': 'packaging/cosctl.1',
  'usr/share/bash-completion/completions/cosctl': 'packaging/cosctl.bash-completion',
  'usr/share/zsh/vendor-completions/_cosctl': 'packaging/_cosctl',
  ...Object.fromEntries(['cos-setup-fs.service', 'cos-setup-boot.service', 'cos-setup-network.service', 'cos-setup-reconcile.service', 'cos-setup-reconcile.timer']
    .map((u) => [`usr/lib/systemd/system/${u}`, `systemd/${u}`])),
};
/** Installed executables (0755), installed path -> source, and the directories installed empty. */
const EXECUTABLES: Readonly<Record<string, string>> = {
  [HEALTH_CHECK]: 'packaging/check/required.d/00-cosd-running',
  'usr/sbin/suc-upgrade': 'packaging/suc-upgrade',
};
const EMPTY_DIRS: readonly string[] = ['usr/lib/cos-agent/check/wanted.d'];

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a program (argv); resolves with its exit code and output whatever the code. */
function run(cmd: string, args: readonly string[], env: Record<string, string> = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

async function tempDir(t: ExecutionContext, prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** install.sh into a fresh DESTDIR (a path it has to create); returns DESTDIR. */
async function install(t: ExecutionContext): Promise<string> {
  const dest = path.join(await tempDir(t, 'cos-pkg-'), 'destdir');
  const r = await run('bash', [INSTALL, dest]);
  t.is(r.code, 0, r.stderr);
  return dest;
}

/** Every entry under `root` (not `root` itself) as "dir 755" / "file 644" / "symlink ...". */
async function tree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    const full = path.join(e.parentPath, e.name);
    const st = await lstat(full);
    const kind = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
    out[path.relative(root, full)] = `${kind} ${(st.mode & 0o7777).toString(8)}`;
  }
  return out;
}

/** The tree install.sh must produce: FILES at 0644, EXECUTABLES at 0755, EMPTY_DIRS and every directory leading to them at 0755. */
function expectedTree(): Record<string, string> {
  const out: Record<string, string> = {};
  const parents = (p: string): void => {
    for (let dir = path.dirname(p); dir !== '.'; dir = path.dirname(dir)) out[dir] = 'dir 755';
  };
  for (const file of Object.keys(FILES)) {
    out[file] = 'file 644';
    parents(file);
  }
  for (const file of Object.keys(EXECUTABLES)) {
    out[file] = 'file 755';
    parents(file);
  }
  for (const dir of EMPTY_DIRS) {
    out[dir] = 'dir 755';
    parents(dir);
  }
  return out;
}

async function assertInstalled(t: ExecutionContext, dest: string): Promise<void> {
  t.deepEqual(await tree(dest), expectedTree());
  for (const [installed, source] of Object.entries({ ...FILES, ...EXECUTABLES })) {
    t.true((await readFile(path.join(dest, installed))).equals(await readFile(path.join(REPO, source))), `${installed} is byte-identical to ${source}`);
  }
}

test('install.sh installs exactly the integration files, 0644 in 0755 directories, byte-identical to their sources', async (t) => {
  const dest = await install(t);
  await assertInstalled(t, dest);
  // The opt-in polkit drop-in is an example only: nothing but the base policy goes into the bus's system.d.
  t.deepEqual(await readdir(path.join(dest, path.dirname(POLICY))), [path.basename(POLICY)]);
});

test('install.sh is idempotent and repairs what changed since; DESTDIR comes from argv only', async (t) => {
  const dest = await install(t);
  // A file that was changed and made private, a directory with the wrong mode: a second run restores both.
  await writeFile(path.join(dest, UNIT), 'changed\n');
  await chmod(path.join(dest, UNIT), 0o600);
  await chmod(path.join(dest, 'usr/share/dbus-1'), 0o700);
  const again = await run('bash', [INSTALL, dest]);
  t.is(again.code, 0, again.stderr);
  await assertInstalled(t, dest);

  const envOnly = path.join(await tempDir(t, 'cos-pkg-env-'), 'destdir');
  for (const args of [[], [dest, dest], ['']]) {
    const r = await run('bash', [INSTALL, ...args], { DESTDIR: envOnly });
    t.is(r.code, 2, `args ${JSON.stringify(args)}`);
    t.regex(r.stderr, /usage: .*install\.sh DESTDIR/);
  }
  await t.throwsAsync(lstat(envOnly), { code: 'ENOENT' });
});

/** A system-like test bus (test/helpers/dbus.ts) with the installed policy files and activation directory. */
async function startBus(t: ExecutionContext, includes: readonly string[], servicedir: string): Promise<TestBus> {
  const bus = await startTestBus({ includes, servicedir });
  t.teardown(() => bus.stop());
  return bus;
}

function busCall(address: string, method: string, args: readonly string[] = [], asNobody = false): Promise<RunResult> {
  const argv = [`--bus=${address}`, '--print-reply', '--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', `org.freedesktop.DBus.${method}`, ...args];
  return asNobody ? run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'dbus-send', ...argv]) : run('dbus-send', argv);
}

test('dbus-daemon loads the installed policy and activation file: io.costoolkit.Agent1 is activatable, only root may own it', async (t) => {
  const dest = await install(t);
  const bus = await startBus(t, [path.join(dest, POLICY)], path.join(dest, SERVICES_DIR));
  const names = await busCall(bus.address, 'ListActivatableNames');
  t.is(names.code, 0, names.stderr);
  t.true(names.stdout.includes(`string "${BUS_NAME}"`), names.stdout);

  // The default policy denies owning any name; the installed policy lets root own this one, and nobody else.
  const root = await busCall(bus.address, 'RequestName', [`string:${BUS_NAME}`, 'uint32:4']);
  t.is(root.code, 0, root.stderr);
  t.regex(root.stdout, /uint32 1\b/, 'root becomes the primary owner');
  const nobody = await busCall(bus.address, 'RequestName', [`string:${BUS_NAME}`, 'uint32:4'], true);
  t.not(nobody.code, 0);
  t.regex(nobody.stderr, /org\.freedesktop\.DBus\.Error\.AccessDenied/);
});

test('the installed example polkit drop-in is a bus configuration dbus-daemon accepts next to the policy', async (t) => {
  const dest = await install(t);
  const bus = await startBus(t, [path.join(dest, POLICY), path.join(dest, POLKIT_DROP_IN)], path.join(dest, SERVICES_DIR));
  const names = await busCall(bus.address, 'ListActivatableNames');
  t.is(names.code, 0, names.stderr);
  // And dbus-daemon does refuse a configuration it cannot parse (so starting above means something).
  const broken = path.join(await tempDir(t, 'cos-pkg-bad-'), 'broken.conf');
  await writeFile(broken, (await readFile(path.join(dest, POLKIT_DROP_IN), 'utf8')).replace('</policy>', '</polcy>'));
  await t.throwsAsync(startBus(t, [path.join(dest, POLICY), broken], path.join(dest, SERVICES_DIR)), { message: /dbus-daemon exited/ });
});

interface IntrospectedInterface {
  $methods: Array<{ name: string; inSignature: string; outSignature: string }>;
  $signals: Array<{ name: string; signature: string }>;
  $properties: Array<{ name: string; type: string; access: string }>;
}

test('the installed interface XML is D-Bus introspection data of io.costoolkit.Agent1', async (t) => {
  const dest = await install(t);
  const xml = await readFile(path.join(dest, INTERFACE), 'utf8');
  t.true(xml.includes(`<interface name="${BUS_NAME}">`));
  // dbus-next's introspection reader (the one cosctl's proxy objects use) on a bus where the name has no owner.
  const bus = await startBus(t, [], path.join(await tempDir(t, 'cos-pkg-nosvc-')));
  const conn = dbus.sessionBus({ busAddress: bus.address, authMethods: ['EXTERNAL'] });
  conn.on('error', () => {}); // a failure shows as the rejected connect or call below
  t.teardown(() => conn.disconnect());
  await new Promise<void>((resolve, reject) => {
    conn.on('connect', () => resolve());
    conn.on('error', reject);
  });
  const obj = await conn.getProxyObject(BUS_NAME, '/io/costoolkit/Agent1', xml);
  t.deepEqual(Object.keys(obj.interfaces), [BUS_NAME]);
  const iface = obj.getInterface(BUS_NAME) as unknown as IntrospectedInterface;
  t.deepEqual(iface.$methods.map((m) => m.name).sort(), ['Cancel', 'Check', 'GetStatus', 'MarkBad', 'MarkGood', 'Rollback', 'RunStage', 'Upgrade']);
  t.deepEqual(iface.$methods.find((m) => m.name === 'Upgrade'), { name: 'Upgrade', inSignature: 'a{sv}', outSignature: 's' });
  t.deepEqual(iface.$signals, [{ name: 'Completed', signature: 'sis' }]);
  t.true(iface.$properties.length > 0);
  t.true(iface.$properties.every((p) => p.access === 'read' && p.type !== ''));
});

/** `key=value` lines of one [section] of a systemd-style file (comments skipped). */
function section(text: string, name: string): Record<string, string> {
  const out: Record<string, string> = {};
  let inside = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('[')) inside = line === `[${name}]`;
    else if (inside && line !== '' && !line.startsWith('#')) {
      const eq = line.indexOf('=');
      out[line.slice(0, eq)] = line.slice(eq + 1);
    }
  }
  return out;
}

test('the unit is Type=dbus on io.costoolkit.Agent1, and the activation file hands that name to the installed unit', async (t) => {
  const dest = await install(t);
  const service = section(await readFile(path.join(dest, UNIT), 'utf8'), 'Service');
  t.is(service.Type, 'dbus');
  t.is(service.BusName, BUS_NAME);
  const activation = section(await readFile(path.join(dest, ACTIVATION), 'utf8'), 'D-BUS Service');
  t.is(activation.Name, BUS_NAME);
  t.is(path.basename(ACTIVATION), `${BUS_NAME}.service`, 'a system bus activation file is named after its bus name');
  t.is(activation.SystemdService, path.basename(UNIT));
  t.is(activation.User, 'root');
});

/**
 * `systemd-analyze verify` of `unit` offline: in a fresh root holding the installed tree, the host's units (what
 * cosd.service refers to: dbus.socket, local-fs.target, multi-user.target, and the default dependencies) and, unless
 * `stub` is false, an executable stub /usr/sbin/cosd for ExecStart=. `clean`: exit 0 and not one diagnostic.
 */
async function verify(t: ExecutionContext, dest: string, unit: string, stub = true, unitPath = UNIT, program = 'usr/sbin/cosd'): Promise<RunResult & { clean: boolean }> {
  const root = await tempDir(t, 'cos-pkg-verify-');
  await cp(dest, root, { recursive: true, verbatimSymlinks: true });
  await cp('/usr/lib/systemd/system', path.join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true, force: false });
  await writeFile(path.join(root, unitPath), unit);
  if (stub) {
    await mkdir(path.join(root, path.dirname(program)), { recursive: true });
    await writeFile(path.join(root, program), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  }
  const r = await run('systemd-analyze', ['verify', '--man=no', `--root=${root}`, path.join(root, unitPath)], { SYSTEMD_COLORS: '0', SYSTEMD_PAGER: 'cat' });
  return { ...r, clean: r.code === 0 && r.stdout === '' && r.stderr === '' };
}

test('systemd-analyze verify passes the installed unit without a single diagnostic', async (t) => {
  const dest = await install(t);
  const r = await verify(t, dest, await readFile(path.join(dest, UNIT), 'utf8'));
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '');
  t.is(r.stdout, '');
  t.true(r.clean);
});

/** A broken copy: `edit` applied to the installed unit (null: the unit as installed, but no stub /usr/sbin/cosd). */
const broken = test.macro(async (t, edit: ((unit: string) => string) | null, diagnostic: RegExp) => {
  const dest = await install(t);
  const unit = await readFile(path.join(dest, UNIT), 'utf8');
  const bad = edit ? edit(unit) : unit;
  if (edit) t.not(bad, unit, 'the edit changed the unit');
  const r = await verify(t, dest, bad, edit !== null);
  t.false(r.clean);
  t.regex(r.stderr, diagnostic);
});

test('systemd-analyze verify catches a misspelled directive (Tpye=dbus)', broken, (u) => u.replace(/^Type=dbus$/m, 'Tpye=dbus'), /Unknown key 'Tpye'/);
test('systemd-analyze verify catches an invalid value (Type=dbuss)', broken, (u) => u.replace(/^Type=dbus$/m, 'Type=dbuss'), /Failed to parse service type/);
test('systemd-analyze verify catches Type=dbus without BusName=', broken, (u) => u.replace(/^BusName=.*\n/m, ''), /no D-Bus service name/);
test('systemd-analyze verify catches a missing ExecStart= binary (no stub /usr/sbin/cosd)', broken, null, /\/usr\/sbin\/cosd is not executable/);

test('systemd-analyze verify passes the installed config path unit without a single diagnostic; it starts cosd.service', async (t) => {
  const dest = await install(t);
  const unitPath = 'usr/lib/systemd/system/cos-agent-config.path';
  const text = await readFile(path.join(dest, unitPath), 'utf8');
  const r = await verify(t, dest, text, true, unitPath);
  t.is(r.code, 0, r.stderr);
  t.true(r.clean, `${r.stdout}${r.stderr}`);
  const p = section(text, 'Path');
  t.is(p.Unit, 'cosd.service');
  // Every config file cosd watches but os-release (src/daemon/watch.ts), by the same paths.
  const { WATCHED_FILES, WATCHED_DIRS } = await import('../src/daemon/watch.ts');
  const watched = [...text.matchAll(/^PathChanged=(.*)$/gm)].map((m) => m[1]);
  t.deepEqual(watched.sort(), [...WATCHED_FILES, ...WATCHED_DIRS].filter((f) => f !== '/etc/os-release').sort());
  const bad = await verify(t, dest, text.replace('PathChanged=/etc/cos/config', 'PathChanged=etc/cos/config'), true, unitPath);
  t.false(bad.clean, 'a relative path is refused (the check can fail)');
});

/** The health-check unit: verified like cosd's (a stub /usr/bin/cosctl for ExecStart=), with its ordering and install. */
const verifyHealth = (t: ExecutionContext, dest: string, unit: string, stub = true): ReturnType<typeof verify> =>
  verify(t, dest, unit, stub, HEALTH_UNIT, 'usr/bin/cosctl');

test('systemd-analyze verify passes the installed health-check unit without a single diagnostic', async (t) => {
  const dest = await install(t);
  const text = await readFile(path.join(dest, HEALTH_UNIT), 'utf8');
  const r = await verifyHealth(t, dest, text);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '');
  t.is(r.stdout, '');
  t.true(r.clean);
  // greenboot's greenboot-healthcheck.service ordering and install, plus multi-user.target (GRUB hosts pull in no
  // boot-complete.target), after the daemon the shipped check asks.
  const unitSection = section(text, 'Unit');
  t.is(unitSection.Before, 'boot-complete.target');
  t.deepEqual(unitSection.After?.split(' '), ['cosd.service', 'dbus.socket']);
  t.like(section(text, 'Service'), { Type: 'oneshot', RemainAfterExit: 'yes', ExecStart: '/usr/bin/cosctl health-check' });
  t.like(section(text, 'Install'), { RequiredBy: 'boot-complete.target', WantedBy: 'multi-user.target' });
});

test('systemd-analyze verify catches a broken health-check unit (a bad Type=, no /usr/bin/cosctl)', async (t) => {
  const dest = await install(t);
  const text = await readFile(path.join(dest, HEALTH_UNIT), 'utf8');
  const bad = await verifyHealth(t, dest, text.replace(/^Type=oneshot$/m, 'Type=oneshoot'));
  t.false(bad.clean);
  t.regex(bad.stderr, /Failed to parse service type/);
  const noProgram = await verifyHealth(t, dest, text, false);
  t.false(noProgram.clean);
  t.regex(noProgram.stderr, /\/usr\/bin\/cosctl is not executable/);
});

/**
 * The yip runtime-stage units keep cOS v0.8.14's own units' ordering, install and scheduling (read from
 * ../shared/cos-v0.8.14/cos-setup), with `cosctl run-stage STAGE` where cOS runs `elemental run-stage STAGE`; each
 * passes systemd-analyze verify without a diagnostic (a stub /usr/bin/cosctl).
 */
test('the cos-setup units run cosctl run-stage with the ordering, install and timer of cOS v0.8.14\'s own units', async (t) => {
  const dest = await install(t);
  const cos = path.join(REPO, '../shared/cos-v0.8.14/cos-setup');
  for (const unit of ['cos-setup-fs.service', 'cos-setup-boot.service', 'cos-setup-network.service', 'cos-setup-reconcile.service', 'cos-setup-reconcile.timer']) {
    const ours = await readFile(path.join(dest, 'usr/lib/systemd/system', unit), 'utf8');
    const theirs = await readFile(path.join(cos, unit), 'utf8');
    const pick = (text: string, name: string, keys: readonly string[]): Record<string, string | undefined> =>
      Object.fromEntries(keys.map((k) => [k, section(text, name)[k]]));
    const unitKeys = ['DefaultDependencies', 'After', 'Wants', 'Before'];
    t.deepEqual(pick(ours, 'Unit', unitKeys), pick(theirs, 'Unit', unitKeys), `${unit} [Unit] ordering`);
    t.deepEqual(section(ours, 'Install'), section(theirs, 'Install'), `${unit} [Install]`);
    if (unit.endsWith('.timer')) {
      t.deepEqual(section(ours, 'Timer'), section(theirs, 'Timer'), `${unit} [Timer]`);
      continue;
    }
    const service = section(ours, 'Service');
    const stage = unit.replace(/^cos-setup-|\.service$/g, '');
    const theirService = section(theirs, 'Service');
    t.true((theirService.ExecStart ?? '').includes(`elemental run-stage ${stage}`));
    t.true((service.ExecStart ?? '').endsWith(`/usr/bin/cosctl run-stage ${stage}`), `${unit}: ${service.ExecStart}`);
    for (const k of ['Type', 'RemainAfterExit', 'Nice', 'IOSchedulingPriority', 'TimeoutStopSec', 'KillMode', 'KillSignal']) t.is(service[k], theirService[k], `${unit} ${k}`);
    if (unit === 'cos-setup-reconcile.service') t.regex(service.ExecStart ?? '', /^\/usr\/bin\/systemd-inhibit /, 'reconcile runs under systemd-inhibit, as cOS\'s');
    // ExecStart='s program must exist: reconcile's is systemd-inhibit (which runs cosctl).
    const r = await verify(t, dest, ours, true, `usr/lib/systemd/system/${unit}`, unit === 'cos-setup-reconcile.service' ? 'usr/bin/systemd-inhibit' : 'usr/bin/cosctl');
    t.true(r.clean, `${unit}: ${r.stderr}${r.stdout}`);
  }
});

test('the shipped health check is a POSIX sh script that calls GetStatus on the agent\'s bus name', async (t) => {
  const dest = await install(t);
  const file = path.join(dest, HEALTH_CHECK);
  const syntax = await run('sh', ['-n', file]);
  t.is(syntax.code, 0, syntax.stderr);
  const text = await readFile(file, 'utf8');
  t.true(text.startsWith('#!/bin/sh\n'));
  t.regex(text, new RegExp(`^exec busctl .* call ${BUS_NAME.replaceAll('.', '\\.')} /io/costoolkit/Agent1 ${BUS_NAME.replaceAll('.', '\\.')} GetStatus$`, 'm'));
});
