/**
 * SUC's upgrade-job contract, for real: the derivative image (a small cOS tree plus the cos-agent package, built by
 * scripts/package.ts) runs as a privileged podman container the way system-upgrade-controller runs it
 * (`--privileged --pid=host --ipc=host --net=host -v /:/host`, the plan's env, the secret at /run/data/cloud-config)
 * with its default command /usr/sbin/suc-upgrade, against a cOS host on loop devices (HOST_DIR points at it inside
 * /host). The image's tree has no tools of its own beyond the package: the host's programs and libraries are bound
 * in read-only beside it (/opt/host-tools, /usr/lib/x86_64-linux-gnu, /usr/lib64), and none of them is copied: the
 * job stages the container's own root filesystem only.
 *
 * The reboot cannot be real here (PID 1 is this machine's): AGENT_TEST_REBOOT_ARGV makes it touch a file instead,
 * and the reboot's effect on the job is the host's /etc/os-release becoming the image's.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createCosHost, type CosHost } from '../helpers/cos-host.ts';
import { listing } from '../helpers/tree-listing.ts';
import { cosctl } from '../helpers/cosctl.ts';
import type { HostStatusDocument } from '../../src/model/host.ts';

const exec = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, '../..');
const release = (tag: string): string =>
  `NAME="cOS"\nID=cos\nVERSION="${tag.slice(1)}"\nPRETTY_NAME="cOS ${tag}"\nGRUB_ENTRY_NAME="cOS ${tag}"\nIMAGE_REPO="example.com/cos/os"\nIMAGE_TAG="${tag}"\n`;

let work: string;
let tarball: string;

test.before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'suc-'));
  await exec(process.execPath, [path.join(REPO, 'scripts/package.ts'), '--out', work], { maxBuffer: 16 << 20 });
  tarball = path.join(work, (await exec('sh', ['-c', `ls ${work}/*.tar.gz`])).stdout.trim().split('/').pop() ?? '');
});
test.after.always(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

/** The derivative image's root filesystem: a cOS tree of `tag` with the package unpacked at /. */
async function imageTree(tag: string): Promise<string> {
  const tree = await mkdtemp(path.join(work, 'rootfs-'));
  for (const d of ['etc', 'usr/bin', 'usr/sbin', 'usr/lib', 'usr/lib64', 'var/lib', 'boot', 'home/cos', 'opt']) await mkdir(path.join(tree, d), { recursive: true });
  await writeFile(path.join(tree, 'etc/os-release'), release(tag));
  await writeFile(path.join(tree, 'etc/cos-slot-version'), `image ${tag}\n`);
  await writeFile(path.join(tree, 'boot/vmlinuz'), `kernel ${tag}\n`);
  await writeFile(path.join(tree, 'boot/initrd'), `initrd ${tag}\n`);
  // The image's shell (its interpreter and libc come from the host's libraries bound in).
  await copyFile('/usr/bin/dash', path.join(tree, 'usr/bin/sh'));
  await exec('mknod', ['-m', '666', path.join(tree, 'var/lib/null'), 'c', '1', '3']);
  await exec('mkfifo', [path.join(tree, 'var/lib/fifo')]);
  await exec('setfattr', ['-n', 'user.cos', '-v', tag, path.join(tree, 'etc/os-release')]);
  for (const [name, target] of [['bin', 'usr/bin'], ['sbin', 'usr/sbin'], ['lib', 'usr/lib'], ['lib64', 'usr/lib64']]) await symlink(target as string, path.join(tree, name as string));
  await exec('tar', ['--extract', '--gzip', '--same-permissions', '--same-owner', '--numeric-owner', '--file', tarball, '--directory', tree]);
  return tree;
}

interface Job { code: number; out: string }

/**
 * Limits for the container at or under this process's hard limits: podman's defaults can be above them, and a
 * container cannot raise them (here even an nproc equal to the hard limit was refused; lowering always works).
 */
async function containerLimits(): Promise<Array<[string, number]>> {
  const { stdout } = await exec('bash', ['-c', 'ulimit -Hn; ulimit -Hu']);
  const [nofile, nproc] = stdout.trim().split('\n').map((v) => (v === 'unlimited' ? Infinity : Number(v)));
  return [['nofile', Math.min(nofile ?? 1024, 16384)], ['nproc', Math.min(nproc ?? 4096, 4096)]];
}

/** Run the image as SUC runs its job: privileged, host PID/IPC/network, / at /host, the plan's env and secret. */
async function runJob(host: CosHost, tree: string, opts: { env?: Record<string, string>; secret?: string } = {}): Promise<Job> {
  const secret = path.join(work, `secret-${path.basename(tree)}`);
  await writeFile(secret, opts.secret ?? '');
  const env: Record<string, string> = {
    HOST_DIR: path.join('/host', host.root),
    SYSTEM_UPGRADE_NODE_NAME: 'node-1',
    SYSTEM_UPGRADE_PLAN_LATEST_VERSION: 'v2.0.0',
    SYSTEM_UPGRADE_PLAN_LATEST_HASH: 'c0ffee',
    METADATA_NAME: 'os-upgrade',
    PATH: '/usr/sbin:/usr/bin:/opt/host-tools/sbin:/opt/host-tools/bin',
    AGENT_TEST_REBOOT_ARGV: JSON.stringify(['touch', path.join('/host', host.root, 'rebooted')]),
    ...host.env,
    ...opts.env,
  };
  const argv = [
    '--runtime', 'runc', 'run', '--rm', '--privileged', '--pid=host', '--ipc=host', '--net=host',
    ...(await containerLimits()).flatMap(([k, v]) => ['--ulimit', `${k}=${v}:${v}`]),
    '-v', '/:/host', '-v', `${secret}:/run/data/cloud-config:ro`,
    '-v', '/usr/bin:/opt/host-tools/bin:ro', '-v', '/usr/sbin:/opt/host-tools/sbin:ro',
    '-v', '/usr/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:ro', '-v', '/usr/lib64:/usr/lib64:ro',
    ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
    '--rootfs', tree, '/usr/sbin/suc-upgrade',
  ];
  return new Promise((resolve) => {
    const child = spawn('podman', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { out += b.toString(); });
    child.on('close', (code) => resolve({ code: code ?? -1, out }));
  });
}

async function withHost(t: ExecutionContext, hostTag: string, recoveryMiB?: number): Promise<CosHost> {
  const host = await createCosHost({ stateMiB: 700, ...(recoveryMiB !== undefined ? { recoveryMiB } : {}), files: { '/etc/os-release': release(hostTag), '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=64\n' } });
  t.teardown(() => host.close());
  return host;
}

const crcOf = async (host: CosHost, file: string): Promise<unknown> => host.grub('COS_STATE').crc(file);
const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

test.serial('the job stages its own root into the host, writes 90_operator.yaml, reboots and exits 1; the retry after the reboot exits 0', async (t) => {
  const host = await withHost(t, 'v1.0.0');
  const tree = await imageTree('v2.0.0');
  const first = await runJob(host, tree, { secret: '#cloud-config\nusers:\n- name: operator\n' });
  t.log(first.out);
  t.is(first.code, 1, first.out);
  t.regex(first.out, /rebooting the host into the new image; exit 1/);
  t.true(await exists(path.join(host.root, 'rebooted')), 'the reboot was asked for');
  t.is(await readFile(path.join(host.root, 'oem/90_operator.yaml'), 'utf8'), '#cloud-config\nusers:\n- name: operator\n');

  // The host's view: what boots next is the image, staged from a dir: source.
  const doc = JSON.parse((await cosctl(host, ['status', '--json'])).stdout) as HostStatusDocument;
  t.is(doc.status.nextBoot.slot, 'active');
  t.is(doc.status.slots.active.version, '2.0.0');
  t.is(doc.status.slots.active.verification, 'not-applicable');
  t.is(doc.status.slots.active.image, 'dir:///');
  t.is(doc.status.slots.passive.version, host.versions.active, 'the running image is the fallback');

  // The slot holds the container's root filesystem, entry for entry: the tree as the container saw it (with the
  // mount points the runtime made in it), without the contents of /host /proc /sys /dev /run, and none of what was
  // mounted on it (the host's tools, the secret, /etc/hosts).
  const mnt = path.join(work, 'active');
  await mkdir(mnt, { recursive: true });
  await exec('mount', ['-o', 'loop,ro', host.statePath('cOS/active.img'), mnt]);
  let staged: string[];
  try {
    staged = await listing(mnt);
  } finally {
    await exec('umount', ['-d', mnt]);
  }
  const skipped = /^(host|proc|sys|dev|run)\//;
  const agentOwned = new Set(['.', 'lost+found', 'run', 'dev', 'boot', 'usr/local', 'oem', 'proc', 'sys', 'tmp']);
  const keep = (line: string): boolean => {
    const rel = line.startsWith('xattrs ') ? line.slice(7, line.indexOf(':')) : line.slice(0, line.indexOf(' '));
    return !agentOwned.has(rel) && !rel.startsWith('lost+found') && !skipped.test(rel) && !rel.startsWith('usr/local/');
  };
  t.deepEqual(staged.filter(keep), (await listing(tree)).filter(keep));
  const joined = staged.join('\n');
  for (const needle of ['usr/lib/cos-agent/node', 'usr/sbin/suc-upgrade', 'var/lib/null', 'char 1,3', 'var/lib/fifo', 'user.cos=']) t.true(joined.includes(needle), needle);
  for (const d of ['host', 'proc', 'sys', 'dev', 'run']) t.false(new RegExp(`^${d}/`, 'm').test(joined), `nothing under /${d} is copied: ${staged.filter((l) => l.startsWith(`${d}/`)).join('; ')}`);
  t.false(/^opt\/host-tools\/bin\/./m.test(joined), 'the host tools bound in are not copied');
  t.false(/^usr\/lib\/x86_64-linux-gnu\/./m.test(joined), 'nor the host libraries');

  // The reboot: the host now runs the image. SUC runs the job again; the releases match: exit 0, nothing staged.
  await writeFile(path.join(host.root, 'etc/os-release'), release('v2.0.0'));
  await rm(path.join(host.root, 'rebooted'));
  const active = await crcOf(host, '/cOS/active.img');
  const retry = await runJob(host, tree, { secret: '#cloud-config\nusers:\n- name: operator\n' });
  t.is(retry.code, 0, retry.out);
  t.regex(retry.out, /nothing to do: the host runs this release already/);
  t.false(await exists(path.join(host.root, 'rebooted')));
  t.deepEqual(await crcOf(host, '/cOS/active.img'), active);
});

test.serial('an older image is refused without FORCE; a held lock times out with exit 1; FORCE with UPGRADE_RECOVERY_ONLY stages recovery alone, no reboot', async (t) => {
  const host = await withHost(t, 'v3.0.0', 400);
  const tree = await imageTree('v2.0.0');
  const active = await crcOf(host, '/cOS/active.img');
  const older = await runJob(host, tree);
  t.is(older.code, 0, older.out);
  t.regex(older.out, /nothing to do: the host's v3\.0\.0 is newer than v2\.0\.0; FORCE=true downgrades/);
  t.deepEqual(await crcOf(host, '/cOS/active.img'), active, 'nothing staged');
  t.false(await exists(path.join(host.root, 'rebooted')));

  // Another job holds the host's lock: this one waits LOCK_TIMEOUT seconds, then exits 1 without a change.
  const lock = path.join(host.root, 'run/elemental/upgrade.lock');
  await mkdir(path.dirname(lock), { recursive: true });
  const holder = spawn('flock', ['--close', lock, 'sleep', '60'], { stdio: 'ignore' });
  t.teardown(() => { holder.kill(); });
  await new Promise((r) => setTimeout(r, 500));
  const t0 = Date.now();
  const locked = await runJob(host, tree, { env: { FORCE: 'true', LOCK_TIMEOUT: '2' } });
  t.is(locked.code, 1, locked.out);
  t.true(Date.now() - t0 >= 2000, 'it waited for the lock');
  t.deepEqual(await crcOf(host, '/cOS/active.img'), active, 'nothing staged while another job holds the lock');
  t.false(await exists(path.join(host.root, 'rebooted')));
  holder.kill();

  // FORCE downgrades; UPGRADE_RECOVERY_ONLY stages the recovery slot alone, and the host need not reboot for it.
  const recovery = await host.grub('COS_RECOVERY').crc('/cOS/recovery.img');
  const only = await runJob(host, tree, { env: { FORCE: 'true', UPGRADE_RECOVERY_ONLY: 'true' } });
  t.is(only.code, 0, only.out);
  t.regex(only.out, /recovery upgraded to 2\.0\.0/);
  t.notDeepEqual(await host.grub('COS_RECOVERY').crc('/cOS/recovery.img'), recovery, 'recovery.img replaced');
  t.deepEqual(await crcOf(host, '/cOS/active.img'), active, 'active untouched');
  t.false(await exists(path.join(host.root, 'rebooted')), 'no reboot for a recovery-only upgrade');
  const doc = JSON.parse((await cosctl(host, ['status', '--json'])).stdout) as HostStatusDocument;
  t.is(doc.status.slots.recovery.version, '2.0.0');
  t.is(doc.status.slots.recovery.verification, 'not-applicable');
  t.is(doc.status.slots.active.version, host.versions.active);
});
