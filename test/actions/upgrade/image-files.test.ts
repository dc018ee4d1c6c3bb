/**
 * image-files.ts and the tree helpers that use it, on real directories (no registry, no loop device): files of the
 * new image read inside it only, bounded and never blocking; skeleton dirs and chroot bind targets made and mounted
 * without following a link out of the image (the mounts through a recording runner).
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { AgentError } from '../../../src/model/errors.ts';
import { ensureImageDir, OS_RELEASE_MAX_BYTES, readImageFile, readImageOsRelease, verifiedImageDir } from '../../../src/actions/upgrade/image-files.ts';
import { makeSkeleton, withChrootBinds } from '../../../src/actions/upgrade/tree.ts';
import type { AgentDeps } from '../../../src/host/deps.ts';
import type { Command, CommandResult, Runner } from '../../../src/sys/runner.ts';
import { SysRoot } from '../../../src/sys/root.ts';
import { silentLogger } from '../../../src/sys/log.ts';

const exec = promisify(execFile);
const isRoot = process.getuid?.() === 0;

interface Scratch { image: string; host: string }

/** A fresh image root and, beside it, a "host" directory with a canary file (what must never be touched). */
async function scratch(t: ExecutionContext): Promise<Scratch> {
  const dir = await mkdtemp(path.join(tmpdir(), 'image-files-'));
  t.teardown(async () => {
    await exec('umount', ['-R', path.join(dir, 'image', 'etc')]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });
  const image = path.join(dir, 'image');
  const host = path.join(dir, 'host');
  await mkdir(path.join(image, 'etc'), { recursive: true });
  await mkdir(path.join(image, 'usr/lib'), { recursive: true });
  await mkdir(path.join(image, 'dev'), { recursive: true });
  await mkdir(host, { recursive: true });
  await writeFile(path.join(host, 'os-release'), 'VERSION="HOST-LEAK"\n');
  await writeFile(path.join(host, 'canary'), 'untouched\n');
  return { image, host };
}

const listing = async (dir: string): Promise<string[]> => (await readdir(dir, { recursive: true })).map(String).sort();

test('readImageFile reads a regular file, and an absolute link from the image root (not the host\'s /usr/lib/os-release)', async (t) => {
  const s = await scratch(t);
  await writeFile(path.join(s.image, 'usr/lib/os-release'), 'VERSION="3.1.4"\n');
  await symlink('/usr/lib/os-release', path.join(s.image, 'etc/os-release'));
  const r = await readImageFile(s.image, 'etc/os-release', OS_RELEASE_MAX_BYTES);
  t.deepEqual(r.kind === 'ok' ? [r.data.toString(), r.real] : r, ['VERSION="3.1.4"\n', 'usr/lib/os-release']);
});

test('readImageFile: a link to a host file is the image\'s path of that name (missing), never the host file', async (t) => {
  const s = await scratch(t);
  await symlink(path.join(s.host, 'os-release'), path.join(s.image, 'etc/os-release'));
  t.deepEqual(await readImageFile(s.image, 'etc/os-release', OS_RELEASE_MAX_BYTES), { kind: 'missing' });
  await symlink(`../../../../../../../../..${path.join(s.host, 'os-release')}`, path.join(s.image, 'etc/climb'));
  t.deepEqual(await readImageFile(s.image, 'etc/climb', OS_RELEASE_MAX_BYTES), { kind: 'missing' });
});

test('readImageFile refuses a FIFO at once (never opens it, never blocks)', async (t) => {
  t.timeout(10_000);
  const s = await scratch(t);
  await exec('mkfifo', [path.join(s.image, 'etc/os-release')]);
  const r = await readImageFile(s.image, 'etc/os-release', OS_RELEASE_MAX_BYTES);
  t.deepEqual(r, { kind: 'refused', reason: 'is a FIFO: only regular files are read' });
});

test('readImageFile refuses a device: a link to /dev/zero is the image\'s dev/zero (missing, or a device node)', async (t) => {
  t.timeout(10_000);
  const s = await scratch(t);
  await symlink('/dev/zero', path.join(s.image, 'etc/os-release'));
  t.deepEqual(await readImageFile(s.image, 'etc/os-release', OS_RELEASE_MAX_BYTES), { kind: 'missing' });
  if (!isRoot) {
    t.log('not root: no device node made');
    return;
  }
  await exec('mknod', [path.join(s.image, 'dev/zero'), 'c', '1', '5']);
  t.deepEqual(await readImageFile(s.image, 'etc/os-release', OS_RELEASE_MAX_BYTES), {
    kind: 'refused', reason: 'is a character device (resolved inside the image to "dev/zero"): only regular files are read',
  });
});

test('readImageFile: a directory, a loop and a file on the way are refused', async (t) => {
  const s = await scratch(t);
  t.deepEqual(await readImageFile(s.image, 'usr/lib', 10), { kind: 'refused', reason: 'is a directory' });
  await symlink('os-release.b', path.join(s.image, 'etc/os-release'));
  await symlink('os-release', path.join(s.image, 'etc/os-release.b'));
  t.deepEqual(await readImageFile(s.image, 'etc/os-release', 10), { kind: 'refused', reason: 'has too many levels of symbolic links (at "etc/os-release")' });
  await writeFile(path.join(s.image, 'usr/lib/f'), 'x');
  t.deepEqual(await readImageFile(s.image, 'usr/lib/f/x', 10), { kind: 'refused', reason: 'leads through "usr/lib/f", which is not a directory' });
});

test('readImageFile: a link whose target cannot even be looked up (a 300-byte name: ENAMETOOLONG) is refused, not thrown', async (t) => {
  const s = await scratch(t);
  await symlink('a'.repeat(300), path.join(s.image, 'etc/os-release'));
  t.deepEqual(await readImageFile(s.image, 'etc/os-release', OS_RELEASE_MAX_BYTES), { kind: 'refused', reason: 'could not be resolved: ENAMETOOLONG' });
});

test('readImageFile reads at most the limit: exactly the limit is read, one byte more is refused without reading it', async (t) => {
  const s = await scratch(t);
  await writeFile(path.join(s.image, 'etc/exact'), Buffer.alloc(100, 'a'));
  await writeFile(path.join(s.image, 'etc/big'), Buffer.alloc(10 * 1024 * 1024, 'a'));
  const exact = await readImageFile(s.image, 'etc/exact', 100);
  t.is(exact.kind === 'ok' ? exact.data.length : -1, 100);
  t.deepEqual(await readImageFile(s.image, 'etc/big', OS_RELEASE_MAX_BYTES), { kind: 'refused', reason: `is 10485760 bytes, more than the ${OS_RELEASE_MAX_BYTES} read at most` });
});

test('readImageFile refuses a file that is not on the image\'s filesystem (a mount left inside the tree)', async (t) => {
  if (!isRoot) {
    t.pass('needs root to mount');
    return;
  }
  const s = await scratch(t);
  await exec('mount', ['-t', 'tmpfs', 'tmpfs', path.join(s.image, 'etc')]);
  await writeFile(path.join(s.image, 'etc/os-release'), 'VERSION="on another fs"\n');
  t.deepEqual(await readImageFile(s.image, 'etc/os-release', OS_RELEASE_MAX_BYTES), { kind: 'refused', reason: 'is not on the image\'s filesystem' });
});

test('readImageOsRelease: /etc/os-release, else /usr/lib/os-release only when it is missing (dangling counts), as systemd', async (t) => {
  const s = await scratch(t);
  t.deepEqual(await readImageOsRelease(s.image), { text: null, file: null, warnings: [] });
  await writeFile(path.join(s.image, 'usr/lib/os-release'), 'VERSION="lib"\n');
  t.deepEqual(await readImageOsRelease(s.image), { text: 'VERSION="lib"\n', file: 'usr/lib/os-release', warnings: [] });
  await symlink(path.join(s.host, 'os-release'), path.join(s.image, 'etc/os-release'));
  t.deepEqual(await readImageOsRelease(s.image), { text: 'VERSION="lib"\n', file: 'usr/lib/os-release', warnings: [] }, 'dangling inside the image: missing');
  await rm(path.join(s.image, 'etc/os-release'));
  await writeFile(path.join(s.image, 'etc/os-release'), 'VERSION="etc"\n');
  t.is((await readImageOsRelease(s.image)).text, 'VERSION="etc"\n');
});

test('readImageOsRelease: one that exists but is refused is a warning, with no fallback to /usr/lib/os-release', async (t) => {
  t.timeout(10_000);
  const s = await scratch(t);
  await writeFile(path.join(s.image, 'usr/lib/os-release'), 'VERSION="lib"\n');
  await exec('mkfifo', [path.join(s.image, 'etc/os-release')]);
  t.deepEqual(await readImageOsRelease(s.image), {
    text: null, file: 'etc/os-release',
    warnings: ['the new image\'s /etc/os-release is a FIFO: only regular files are read: not read, so the image\'s version and GRUB entry name are unknown'],
  });
});

test('ensureImageDir creates missing dirs with the mode, replaces a link to a host dir, and never creates anything on the host', async (t) => {
  const s = await scratch(t);
  const before = await listing(s.host);
  t.is(ensureImageDir(s.image, 'usr/local', { mode: 0o777 }), path.join(s.image, 'usr/local'));
  t.is((await stat(path.join(s.image, 'usr/local'))).mode & 0o7777, 0o777);
  await symlink(path.join(s.host, 'proc'), path.join(s.image, 'proc'));
  await symlink(s.host, path.join(s.image, 'sys'));
  t.is(ensureImageDir(s.image, 'proc', { mode: 0o555 }), path.join(s.image, 'proc'));
  t.is(ensureImageDir(s.image, 'sys', { mode: 0o555 }), path.join(s.image, 'sys'));
  for (const d of ['proc', 'sys']) {
    const st = await lstat(path.join(s.image, d));
    t.true(st.isDirectory(), d);
    t.is(st.mode & 0o7777, 0o555, d);
  }
  t.deepEqual(await listing(s.host), before, 'nothing created or changed beside the image');
});

test('ensureImageDir refuses a link on the way (usr -> host dir) before touching anything', async (t) => {
  const s = await scratch(t);
  await symlink(s.host, path.join(s.image, 'usr2'));
  await rm(path.join(s.image, 'usr'), { recursive: true });
  await symlink(s.host, path.join(s.image, 'usr'));
  const before = await listing(s.host);
  const e = t.throws(() => ensureImageDir(s.image, 'usr/local', { mode: 0o777 }));
  t.true(e instanceof AgentError && e.code === 'UNPACK_UNSAFE');
  t.is(e?.message, `the image's "usr" is a symbolic link to ${JSON.stringify(s.host)}: "usr/local" must be a directory inside the image, and it is not followed out of it`);
  t.deepEqual(await listing(s.host), before);
  t.is(await readlink(path.join(s.image, 'usr')), s.host, 'the link is left as it is: the image is refused');
});

test('ensureImageDir with chmodExisting sets the mode of a real directory; verifiedImageDir only checks', async (t) => {
  const s = await scratch(t);
  await mkdir(path.join(s.image, 'tmp'), { mode: 0o700 });
  ensureImageDir(s.image, 'tmp', { mode: 0o1777, chmodExisting: true });
  t.is((await stat(path.join(s.image, 'tmp'))).mode & 0o7777, 0o1777);
  t.is(verifiedImageDir(s.image, 'tmp'), path.join(s.image, 'tmp'));
  const e = t.throws(() => verifiedImageDir(s.image, 'run'));
  t.true(e instanceof AgentError && e.code === 'UNPACK_UNSAFE');
  t.false(await stat(path.join(s.image, 'run')).then(() => true, () => false), 'verifiedImageDir creates nothing');
});

test('makeSkeleton makes every skeleton dir inside the tree, through links that lead nowhere', async (t) => {
  const s = await scratch(t);
  await symlink(path.join(s.host, 'run'), path.join(s.image, 'run'));
  const before = await listing(s.host);
  await makeSkeleton(s.image);
  for (const [d, mode] of [['run', 0o777], ['dev', 0o777], ['boot', 0o777], ['usr/local', 0o777], ['oem', 0o777], ['proc', 0o555], ['sys', 0o555], ['tmp', 0o1777]] as const) {
    const st = await lstat(path.join(s.image, d));
    t.true(st.isDirectory(), d);
    t.is(st.mode & 0o7777, mode, d);
  }
  t.deepEqual(await listing(s.host), before);
});

/** A Runner that records argv and succeeds (mount and umount only). */
class RecordingRunner implements Runner {
  readonly commands: string[] = [];
  async run(cmd: Command): Promise<CommandResult> {
    this.commands.push(cmd.argv.join(' '));
    if (cmd.argv[0] !== 'mount' && cmd.argv[0] !== 'umount') throw new Error(`unexpected ${cmd.argv.join(' ')}`);
    return { exitCode: 0, stdout: '', stderr: '' };
  }
}

function deps(root: string, runner: Runner): AgentDeps {
  return { root: new SysRoot(root), runner, log: silentLogger, hooks: { run: async () => {} }, env: {}, now: () => new Date() };
}

const hostBinds = async (): Promise<string[]> => {
  const out: string[] = [];
  for (const b of ['/dev', '/dev/pts', '/proc', '/sys']) if (await stat(b).then(() => true, () => false)) out.push(b);
  return out;
};

test('withChrootBinds: bind targets that are links to host paths become directories of the image and are mounted there', async (t) => {
  const s = await scratch(t);
  await rm(path.join(s.image, 'dev'), { recursive: true });
  for (const d of ['proc', 'sys', 'dev', 'run', 'oem', 'usr/local']) await symlink(path.join(s.host, `${d.replace('/', '-')}-target`), path.join(s.image, d));
  const before = await listing(s.host);
  const runner = new RecordingRunner();
  let during: string[] = [];
  let ptsDuring = false;
  await withChrootBinds(deps(path.join(s.host, 'root'), runner), s.image, async () => {
    during = [...runner.commands];
    ptsDuring = (await lstat(path.join(s.image, 'dev/pts'))).isDirectory();
  });
  const binds = await hostBinds();
  t.deepEqual(during, binds.map((b) => `mount -o bind ${b} ${s.image}${b}`));
  t.deepEqual(runner.commands.slice(binds.length), [...binds].reverse().map((b) => `umount ${s.image}${b}`));
  for (const d of ['proc', 'sys', 'dev', 'run', 'tmp', 'boot', 'oem', 'usr/local']) t.true((await lstat(path.join(s.image, d))).isDirectory(), d);
  t.true(ptsDuring, 'dev/pts was a directory of the image while the hook ran');
  t.false(await lstat(path.join(s.image, 'dev/pts')).then(() => true, () => false), 'and is removed after it: the image stays as the OCI image made it');
  t.deepEqual(await listing(s.host), before, 'nothing made on the host');
});

test('withChrootBinds: usr -> host dir, proc -> a directory of the image, or a file at tmp: UNPACK_UNSAFE before any mount', async (t) => {
  for (const [name, make, entry] of [
    ['usr -> host', async (s: Scratch) => { await rm(path.join(s.image, 'usr'), { recursive: true }); await symlink(s.host, path.join(s.image, 'usr')); }, 'usr'],
    ['proc -> /etc', async (s: Scratch) => { await symlink('/etc', path.join(s.image, 'proc')); }, 'proc'],
    ['tmp is a file', async (s: Scratch) => { await writeFile(path.join(s.image, 'tmp'), ''); }, 'tmp'],
    ['dev/pts -> ../etc', async (s: Scratch) => { await symlink('../etc', path.join(s.image, 'dev/pts')); }, 'dev/pts'],
  ] as const) {
    const s = await scratch(t);
    await make(s);
    const before = await listing(s.host);
    const runner = new RecordingRunner();
    let ran = false;
    const e = await t.throwsAsync(withChrootBinds(deps(path.join(s.host, 'root'), runner), s.image, async () => { ran = true; }));
    t.true(e instanceof AgentError && e.code === 'UNPACK_UNSAFE', name);
    t.regex(e?.message ?? '', new RegExp(`the image's "${entry}" is`), name);
    t.deepEqual(runner.commands, [], `${name}: nothing mounted`);
    t.false(ran, `${name}: the hook did not run`);
    t.deepEqual(await listing(s.host), before, `${name}: nothing made on the host`);
  }
});
