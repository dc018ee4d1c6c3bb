/**
 * The `datasource` plugin (yip.md 3.18) through the executor: metadata services are node:http servers on 127.0.0.1
 * (the env's `datasourceTest.metadataBase`, never a real address), drives go through a recording ToolExec standing
 * for blkid/mount/umount, and one test uses a real loop device, always pinned by its path (another disk labelled
 * cidata could be attached to this machine).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { SpawnRunner } from '../../src/sys/runner.ts';
import { SysRoot } from '../../src/sys/root.ts';
import { unwrapMultipart } from '../../src/yip/datasource.ts';
import { runOps, type OpReport, type YipEnv } from '../../src/yip/executor.ts';
import { planStage } from '../../src/yip/plan.ts';
import { decodeYip } from '../../src/yip/schema.ts';
import type { ToolExec } from '../../src/yip/tool.ts';

const sh = promisify(execFile);
const me = userInfo();
const home = me.uid === 0 ? '/root' : `/home/${me.username}`;

interface Rig { env: YipEnv; root: SysRoot; commands: string[]; hostnames: string[] }

/** A temp root (passwd with the agent's own user, /etc/hosts) and a console that runs a command path inside it, as the chroot does. */
async function rig(t: { teardown(fn: () => Promise<void>): void }, opts: { live?: boolean; exec?: ToolExec; seams?: YipEnv['datasourceTest'] } = {}): Promise<Rig> {
  const dir = await mkdtemp(path.join(tmpdir(), 'yip-ds-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = new SysRoot(dir);
  await mkdir(root.path('/etc'), { recursive: true });
  await mkdir(root.path(home), { recursive: true });
  const own = me.uid === 0 ? '' : `${me.username}:x:${me.uid}:${me.gid}::${home}:/bin/sh\n`;
  await writeFile(root.path('/etc/passwd'), `root:x:0:0:root:/root:/bin/sh\n${own}`);
  await writeFile(root.path('/etc/group'), 'root:x:0:\n');
  await writeFile(root.path('/etc/hosts'), '127.0.0.1 localhost\n::1 localhost ip6-localhost\n');
  const commands: string[] = [];
  const hostnames: string[] = [];
  const env: YipEnv = {
    root,
    hostname: 'node',
    machineId: 'abcdef0123456789',
    values: { x: 'templated' },
    console: {
      run: async (c) => {
        commands.push(c);
        // `sh -c /run/config/userdata` chrooted into the root: the script's path inside the temp root
        return sh('/bin/sh', ['-c', c.startsWith('/') ? root.path(c) : c]).then((r) => ({ exitCode: 0, output: r.stdout + r.stderr }), (e: { code?: number; stdout?: string; stderr?: string }) => ({ exitCode: typeof e.code === 'number' ? e.code : 1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
      },
    },
    ...(opts.live === true ? { setHostname: (n: string) => { hostnames.push(n); return Promise.resolve(); } } : {}),
    ...(opts.exec !== undefined ? { exec: opts.exec } : {}),
    datasourceTest: opts.seams ?? {},
  };
  return { env, root, commands, hostnames };
}

async function run(env: YipEnv, yaml: string): Promise<OpReport> {
  const d = decodeYip(yaml, '/oem/ds.yaml');
  if (d.config === null) throw new Error(JSON.stringify(d.problems));
  const [report] = await runOps(planStage([{ origin: '/oem/ds.yaml', config: d.config }], 'rootfs').ops, env);
  if (report === undefined) throw new Error('no op');
  return report;
}

const step = (ds: string): string => `stages:\n  rootfs:\n    - datasource: ${ds}\n`;
const mode = async (p: string): Promise<number> => (await stat(p)).mode & 0o7777;

type Route = string | Buffer | { status?: number; body?: string | Buffer; hang?: boolean; check?: (req: IncomingMessage) => boolean };

/** A metadata service on 127.0.0.1: exact paths to answers (404 for the others); every request recorded. */
async function service(t: { teardown(fn: () => Promise<void>): void }, routes: Record<string, Route>): Promise<{ base: string; requests: Array<{ path: string; headers: IncomingMessage['headers']; port: number }> }> {
  const requests: Array<{ path: string; headers: IncomingMessage['headers']; port: number }> = [];
  const sockets = new Set<import('node:net').Socket>();
  const server = createServer((req, res) => {
    res.on('error', () => undefined);
    requests.push({ path: req.url ?? '', headers: req.headers, port: req.socket.remotePort ?? 0 });
    const r = routes[req.url ?? ''];
    if (r === undefined) {
      res.statusCode = 404;
      res.end('not found');
      return;
    }
    const route = typeof r === 'string' || Buffer.isBuffer(r) ? { body: r } : r;
    if (route.hang === true) return;
    if (route.check !== undefined && !route.check(req)) {
      res.statusCode = 403;
      res.end('forbidden');
      return;
    }
    res.statusCode = route.status ?? 200;
    res.end(route.body ?? '');
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

const AWS_META = '/latest/meta-data/';

test('aws: metadata files, userdata and userdata.yaml byte for byte (not templated), the hostname applied (/etc/hostname, /etc/hosts, live) and the keys added for the agent\'s user', async (t) => {
  const userdata = 'stages:\n  boot:\n    - commands: ["echo {{.Values.x}}"]\n';
  const aws = await service(t, {
    [`${AWS_META}hostname`]: 'ip-10-0-0-1',
    [`${AWS_META}public-ipv4`]: '203.0.113.7',
    [`${AWS_META}local-ipv4`]: '10.0.0.1',
    [`${AWS_META}placement/availability-zone`]: 'eu-west-1a',
    [`${AWS_META}instance-type`]: 't3.micro',
    [`${AWS_META}instance-id`]: 'i-0123',
    [`${AWS_META}public-keys/0/openssh-key`]: 'ssh-ed25519 AAAAkey1 me@laptop\n\n# a comment\nssh-rsa AAAAkey2 other\n',
    '/latest/user-data': userdata,
  });
  const { env, root, commands, hostnames } = await rig(t, { live: true, seams: { metadataBase: (p) => (p === 'aws' ? aws.base : undefined) } });
  const r = await run(env, step('{providers: [aws]}'));
  t.deepEqual(r.errors, []);
  t.deepEqual(r.warnings, []);
  t.is(await mode(root.path('/run/config')), 0o755);
  t.is(await readFile(root.path('/run/config/userdata'), 'utf8'), userdata);
  t.is(await readFile(root.path('/run/config/userdata.yaml'), 'utf8'), userdata, 'written as received: the {{ }} left for the stage that runs it');
  t.is(await mode(root.path('/run/config/userdata')), 0o644);
  t.is(await mode(root.path('/run/config/userdata.yaml')), 0o644);
  t.is(await readFile(root.path('/run/config/hostname'), 'utf8'), 'ip-10-0-0-1');
  t.is(await readFile(root.path('/run/config/public_ipv4'), 'utf8'), '203.0.113.7');
  t.is(await readFile(root.path('/run/config/local_ipv4'), 'utf8'), '10.0.0.1');
  t.is(await readFile(root.path('/run/config/availability_zone'), 'utf8'), 'eu-west-1a');
  t.is(await readFile(root.path('/run/config/instance_type'), 'utf8'), 't3.micro');
  t.is(await readFile(root.path('/run/config/instance_id'), 'utf8'), 'i-0123');
  t.false(existsSync(root.path('/run/config/local_hostname')), 'a metadata item the service does not have is not written');
  t.is(await mode(root.path('/run/config/ssh/authorized_keys')), 0o600);
  t.is(await readFile(root.path('/etc/hostname'), 'utf8'), 'ip-10-0-0-1\n');
  t.is(await readFile(root.path('/etc/hosts'), 'utf8'), '127.0.0.1 localhost ip-10-0-0-1\n::1 localhost ip6-localhost\n');
  t.deepEqual(hostnames, ['ip-10-0-0-1']);
  t.is(await readFile(root.path(`${home}/.ssh/authorized_keys`), 'utf8'), 'ssh-ed25519 AAAAkey1 me@laptop\nssh-rsa AAAAkey2 other\n', 'blank and # lines dropped');
  t.deepEqual(commands, [], 'a yip document is not run');
  t.is(aws.requests.filter((q) => q.path === `${AWS_META}hostname`).length, 2, 'probed, then read (as the provider does)');
  t.deepEqual((await readdir(root.path('/run'))).sort(), ['config']);
});

test('gcp: Metadata-Flavor header, project ssh-keys without their user names; `path` other than the provider\'s name is the base; on another root the live hostname is not set', async (t) => {
  const flavour = (req: IncomingMessage): boolean => req.headers['metadata-flavor'] === 'Google';
  const gcp = await service(t, {
    '/computeMetadata/v1/instance/hostname': { body: 'gce-1.c.project.internal', check: flavour },
    '/computeMetadata/v1/project/attributes/ssh-keys': { body: 'alice:ssh-rsa AAAAalice alice\nbob:ssh-ed25519 AAAAbob bob\nnot a key line\n', check: flavour },
    '/computeMetadata/v1/instance/attributes/user-data': { body: '#cloud-config\nruncmd: [date]\n', check: flavour },
  });
  const { env, root, hostnames } = await rig(t, { seams: { metadataBase: (p) => (p === 'gcp' ? gcp.base : undefined) } });
  const r = await run(env, step('{providers: [gcp], path: /oem}'));
  t.deepEqual(r.errors, []);
  t.is(await readFile(root.path('/oem/userdata'), 'utf8'), '#cloud-config\nruncmd: [date]\n');
  t.is(await readFile(root.path('/oem/userdata.yaml'), 'utf8'), '#cloud-config\nruncmd: [date]\n');
  t.false(existsSync(root.path('/run/config/userdata')));
  t.is(await readFile(root.path('/run/config/ssh/authorized_keys'), 'utf8'), 'ssh-rsa AAAAalice alice\nssh-ed25519 AAAAbob bob\n');
  t.is(await readFile(root.path(`${home}/.ssh/authorized_keys`), 'utf8'), 'ssh-rsa AAAAalice alice\nssh-ed25519 AAAAbob bob\n');
  t.is(await readFile(root.path('/etc/hostname'), 'utf8'), 'gce-1.c.project.internal\n');
  t.deepEqual(hostnames, [], 'no setHostname: the live hostname is left alone');
  t.true(gcp.requests.every((q) => q.headers['metadata-flavor'] === 'Google'));
});

test('a #! userdata is written 0744 and run through the console as <base>/userdata (its side effect checked); a failing script is an error and the hostname is then not applied, as in yip', async (t) => {
  const script = '#!/bin/sh\necho "ran from $(basename "$0")" > "$(dirname "$0")/ran"\n';
  const ok = await service(t, { '/metadata/v1/': 'id\nhostname\n', '/metadata/v1/hostname': 'droplet-1', '/metadata/v1/user-data': script });
  const a = await rig(t, { seams: { metadataBase: (p) => (p === 'digitalocean' ? ok.base : undefined) } });
  const r = await run(a.env, step('{providers: [digitalocean]}'));
  t.deepEqual(r.errors, []);
  t.deepEqual(a.commands, ['/run/config/userdata']);
  t.is(await readFile(a.root.path('/run/config/userdata'), 'utf8'), script);
  t.is(await mode(a.root.path('/run/config/userdata')), 0o744);
  t.false(existsSync(a.root.path('/run/config/userdata.yaml')));
  t.is(await readFile(a.root.path('/run/config/ran'), 'utf8'), 'ran from userdata\n');
  t.is(await readFile(a.root.path('/etc/hostname'), 'utf8'), 'droplet-1\n');

  const failing = await service(t, { '/metadata/v1/': 'id\n', '/metadata/v1/hostname': 'droplet-2', '/metadata/v1/user-data': '#!/bin/sh\necho broken\nexit 3\n' });
  const b = await rig(t, { seams: { metadataBase: () => failing.base } });
  const rb = await run(b.env, step('{providers: [digitalocean]}'));
  t.deepEqual(rb.errors, ['datasource digitalocean: failed to run /run/config/userdata: exit status 3\ncommand output:\nbroken\n']);
  t.false(existsSync(b.root.path('/etc/hostname')), 'yip returns at the failed script: no hostname');
  t.is(await readFile(b.root.path('/run/config/hostname'), 'utf8'), 'droplet-2');
});

test('userdata that is neither a document nor a script is kept (bytes as received) with a warning; a VMware multipart body is unwrapped to its text/cloud-config part', async (t) => {
  const garbage = Buffer.from([0x00, 0xff, 0xfe, 0x0a, 0x41, 0x3a, 0x20, 0x7b, 0x0a]);
  const meta = await service(t, { '/get/meta/hostname': 'metal-1', '/get/user': garbage });
  const a = await rig(t, { seams: { metadataBase: () => meta.base } });
  const r = await run(a.env, step('{providers: [metaldata]}'));
  t.deepEqual(r.errors, []);
  t.deepEqual(r.warnings, ['datasource metaldata: the userdata is neither a cloud-config nor a #! script: written to /run/config/userdata only']);
  t.deepEqual(await readFile(a.root.path('/run/config/userdata')), garbage);
  t.false(existsSync(a.root.path('/run/config/userdata.yaml')));
  t.deepEqual(a.commands, []);

  const multipart = 'Content-Type: multipart/mixed; boundary="MIMEBOUNDARY"\r\nMIME-Version: 1.0\r\n\r\n--MIMEBOUNDARY\r\nContent-Type: text/x-shellscript\r\n\r\n#!/bin/sh\r\necho no\r\n--MIMEBOUNDARY\r\nContent-Transfer-Encoding: 7bit\r\nContent-Type: text/cloud-config\r\n\r\n#cloud-config\nhostname: from-vmware\n\r\n--MIMEBOUNDARY--\r\n';
  const mp = await service(t, { '/get/meta/hostname': 'metal-2', '/get/user': multipart });
  const b = await rig(t, { seams: { metadataBase: () => mp.base } });
  t.deepEqual((await run(b.env, step('{providers: [metaldata]}'))).errors, []);
  t.is(await readFile(b.root.path('/run/config/userdata'), 'utf8'), '#cloud-config\nhostname: from-vmware\n');
  t.is(await readFile(b.root.path('/run/config/userdata.yaml'), 'utf8'), '#cloud-config\nhostname: from-vmware\n');
  t.deepEqual(b.commands, [], 'the shell-script part is not the one taken');
  // LF line breaks, no cloud-config part, or no closing delimiter: unchanged
  t.is(unwrapMultipart(Buffer.from('--MIMEBOUNDARY\nContent-Type: text/cloud-config\n\nhostname: lf\n--MIMEBOUNDARY--\n')).toString(), 'hostname: lf');
  const other = Buffer.from('--MIMEBOUNDARY\nContent-Type: text/plain\n\nx\n--MIMEBOUNDARY--\n');
  t.is(unwrapMultipart(other), other);
  const open = Buffer.from('--MIMEBOUNDARY\nContent-Type: text/cloud-config\n\nhostname: x\n');
  t.is(unwrapMultipart(open), open);
});

/** blkid, mount and umount as a recording ToolExec over fake disks: a mount fills the mount point with the disk's files. */
function driveExec(calls: string[][], disks: Record<string, { label: string; fs: 'vfat' | 'iso9660'; files: Record<string, string> }>): ToolExec {
  return async (argv, o = {}) => {
    calls.push([...argv]);
    if (argv[0] === 'blkid') {
      const label = (argv[6] ?? '').replace(/^LABEL=/, '');
      const hits = argv.slice(7).filter((d) => disks[d]?.label === label);
      if (hits.length > 0) return { exitCode: 0, stdout: `${hits.join('\n')}\n` };
      if (o.okExitCodes?.includes(2) !== true) throw new Error('blkid exit 2 not allowed');
      return { exitCode: 2, stdout: '' };
    }
    if (argv[0] === 'mount') {
      const [fs, dev, dir] = [argv[2] ?? '', argv[5] ?? '', argv[6] ?? ''];
      const disk = disks[dev];
      if (disk === undefined || disk.fs !== fs || argv[4] !== 'ro') throw new Error(`mount: ${dir}: wrong fs type, bad option, bad superblock on ${dev}`);
      for (const [name, content] of Object.entries(disk.files)) {
        await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
        await writeFile(path.join(dir, name), content);
      }
      return { exitCode: 0, stdout: '' };
    }
    if (argv[0] === 'umount') {
      const dir = argv[1] ?? '';
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir);
      return { exitCode: 0, stdout: '' };
    }
    throw new Error(`unexpected ${argv.join(' ')}`);
  };
}

test('cdrom is probed before the network and wins: the device found by label, mounted read-only (iso9660, else vfat), user-data read, always unmounted; the network is not asked', async (t) => {
  const aws = await service(t, { [`${AWS_META}hostname`]: 'aws-host', '/latest/user-data': 'from: aws\n' });
  const calls: string[][] = [];
  const exec = driveExec(calls, {
    '/dev/test-nolabel': { label: 'other', fs: 'vfat', files: { 'user-data': 'never: read\n' } },
    '/dev/test-cidata': { label: 'cidata', fs: 'vfat', files: { 'user-data': '#cloud-config\nhostname: from-cd\n', 'meta-data': 'instance-id: x\n', config: 'fallback: no\n' } },
  });
  const { env, root } = await rig(t, { exec, seams: { devices: ['/dev/test-nolabel', '/dev/test-cidata'], metadataBase: () => aws.base } });
  const r = await run(env, step('{providers: [aws, cdrom], path: /oem}'));
  t.deepEqual(r.errors, []);
  t.is(await readFile(root.path('/oem/userdata'), 'utf8'), '#cloud-config\nhostname: from-cd\n', 'base is `path`: not the provider\'s name');
  t.is(await readFile(root.path('/oem/userdata.yaml'), 'utf8'), '#cloud-config\nhostname: from-cd\n');
  t.deepEqual(aws.requests, [], 'a local provider found userdata: no network provider runs');
  t.false(existsSync(root.path('/run/config/hostname')));
  t.false(existsSync(root.path('/etc/hostname')), 'the cdrom provider writes no hostname (the cloud-config\'s own is for its stage)');
  const mp = calls[2]?.[6] ?? '';
  t.true(mp.startsWith(`${root.path('/run')}/.datasource-`), 'mounted inside the root');
  t.deepEqual(calls, [
    ['blkid', '-c', '/dev/null', '-o', 'device', '-t', 'LABEL=cidata', '/dev/test-nolabel', '/dev/test-cidata'],
    ['blkid', '-c', '/dev/null', '-o', 'device', '-t', 'LABEL=CIDATA', '/dev/test-nolabel', '/dev/test-cidata'],
    ['mount', '-t', 'iso9660', '-o', 'ro', '/dev/test-cidata', mp],
    ['mount', '-t', 'vfat', '-o', 'ro', '/dev/test-cidata', mp],
    ['umount', mp],
  ]);
  t.false(existsSync(mp), 'the mount point is removed');
});

test('config-drive: label config-2, openstack/latest/user_data; a cdrom listed first with no device is passed over (an error only if nothing is found)', async (t) => {
  const calls: string[][] = [];
  const exec = driveExec(calls, { '/dev/test-cfg': { label: 'config-2', fs: 'iso9660', files: { 'openstack/latest/user_data': '#!/bin/sh\necho cfg > "$(dirname "$0")/cfg"\n', 'openstack/latest/meta_data.json': '{}' } } });
  const { env, root, commands } = await rig(t, { exec, seams: { devices: ['/dev/test-cfg'] } });
  const r = await run(env, step('{providers: [cdrom, config-drive, cdrom]}'));
  t.deepEqual(r.errors, []);
  t.deepEqual(r.warnings, ['datasource cdrom: no device labelled cidata or CIDATA']);
  t.deepEqual(commands, ['/run/config/userdata']);
  t.is(await readFile(root.path('/run/config/cfg'), 'utf8'), 'cfg\n');
  t.deepEqual(calls.map((c) => c.slice(0, 7).join(' ')), [
    'blkid -c /dev/null -o device -t LABEL=cidata',
    'blkid -c /dev/null -o device -t LABEL=CIDATA',
    'blkid -c /dev/null -o device -t LABEL=config-2',
    'blkid -c /dev/null -o device -t LABEL=CONFIG-2',
    `mount -t iso9660 -o ro /dev/test-cfg ${calls[4]?.[6] ?? ''}`,
    `umount ${calls[4]?.[6] ?? ''}`,
  ], 'cdrom probed once (deduplicated), first');
});

test('a drive whose mount fails or that lacks user-data is reported and the next one tried; without system tools, drives are an error', async (t) => {
  const calls: string[][] = [];
  const exec = driveExec(calls, {
    '/dev/test-a': { label: 'CIDATA', fs: 'vfat', files: { 'meta-data': 'x' } },
    '/dev/test-b': { label: 'cidata', fs: 'vfat', files: { 'user-data': '' } },
  });
  const { env } = await rig(t, { exec, seams: { devices: ['/dev/test-a', '/dev/test-b', '/dev/test-none'] } });
  const r = await run(env, step('{providers: [cdrom]}'));
  t.deepEqual(r.errors, ['datasource cdrom: /dev/test-a: none of user-data, config; /dev/test-b: user-data is empty', 'datasource: no metadata/userdata found']);
  t.is(calls.filter((c) => c[0] === 'umount').length, 2, 'each mounted drive unmounted');
  t.false(calls.some((c) => c.includes('/dev/test-none') && c[0] === 'mount'), 'a pinned device without the label is never mounted');
  const { env: noTools } = await rig(t, { seams: { devices: ['/dev/test-a'] } });
  t.deepEqual((await run(noTools, step('{providers: [config-drive]}'))).errors, ['datasource config-drive: block devices cannot be read: system tools are not available to this run', 'datasource: no metadata/userdata found']);
});

test('file: read inside the root, before the network; the base stays /run/config (the path is the provider\'s own name)', async (t) => {
  const aws = await service(t, { [`${AWS_META}hostname`]: 'aws-host', '/latest/user-data': 'from: aws\n' });
  const { env, root } = await rig(t, { seams: { metadataBase: () => aws.base } });
  await mkdir(root.path('/oem'), { recursive: true });
  await writeFile(root.path('/oem/ud.yaml'), 'stages:\n  boot:\n    - name: from file\n');
  const r = await run(env, step('{providers: [aws, file], path: /oem/ud.yaml}'));
  t.deepEqual(r.errors, []);
  t.is(await readFile(root.path('/run/config/userdata'), 'utf8'), 'stages:\n  boot:\n    - name: from file\n');
  t.is(await readFile(root.path('/run/config/userdata.yaml'), 'utf8'), 'stages:\n  boot:\n    - name: from file\n');
  t.deepEqual(aws.requests, []);
  const missing = await run(env, step('{providers: [file], path: /oem/nope}'));
  t.deepEqual(missing.errors, ['datasource file: /oem/nope: no such file', 'datasource: no metadata/userdata found']);
});

test('network providers run at once: the first userdata wins while another hangs, and the hanging one is abandoned without waiting for its deadline', async (t) => {
  const aws = await service(t, { [`${AWS_META}hostname`]: 'fast', '/latest/user-data': 'fast: true\n' });
  const gcp = await service(t, { '/computeMetadata/v1/instance/hostname': { hang: true } });
  const { env, root } = await rig(t, { seams: { metadataBase: (p) => ({ aws: aws.base, gcp: gcp.base })[p], timeoutMs: 8000 } });
  const started = Date.now();
  const r = await run(env, step('{providers: [gcp, aws]}'));
  const elapsed = Date.now() - started;
  t.deepEqual(r.errors, []);
  t.deepEqual(r.warnings, []);
  t.is(await readFile(root.path('/run/config/userdata'), 'utf8'), 'fast: true\n');
  t.is(await readFile(root.path('/run/config/hostname'), 'utf8'), 'fast');
  t.is(gcp.requests.length, 1, 'gcp was asked');
  t.true(elapsed < 5000, `done in ${elapsed} ms, well before gcp's 8 s deadline`);
});

test('no provider answers: each one\'s reason, then "no metadata/userdata found" (2617d71: an error), within the deadline; /run/config is made anyway', async (t) => {
  const aws = await service(t, {});
  const gcp = await service(t, { '/computeMetadata/v1/instance/hostname': { hang: true } });
  const vultr = await service(t, { '/v1/': 'hostname\n', '/v1/hostname': 'vultr-1', '/v1/public-keys': 'ssh-rsa AAAA v\n' });
  const { env, root } = await rig(t, { seams: { metadataBase: (p) => ({ aws: aws.base, gcp: gcp.base, vultr: vultr.base })[p], timeoutMs: 400 } });
  const started = Date.now();
  const r = await run(env, step('{providers: [aws, gcp, vultr]}'));
  const elapsed = Date.now() - started;
  t.deepEqual([...r.errors].sort(), [
    `datasource aws: GET ${aws.base}/latest/meta-data/hostname: HTTP 404`,
    `datasource gcp: GET ${gcp.base}/computeMetadata/v1/instance/hostname: no answer within 400 ms`,
    'datasource vultr: answered, but no userdata: this provider gives no userdata (metadata only)',
    'datasource: no metadata/userdata found',
  ].sort());
  t.is(r.errors[r.errors.length - 1], 'datasource: no metadata/userdata found');
  t.true(elapsed >= 350 && elapsed < 3000, `${elapsed} ms`);
  t.is(await mode(root.path('/run/config')), 0o755);
  t.deepEqual(await readdir(root.path('/run/config')), [], 'a provider that did not win writes nothing');
});

test('bad input: a 500 for the userdata, keys that are not JSON (hetzner), a huge userdata refused at 4 MiB; each reported naming its provider', async (t) => {
  const hetzner = await service(t, {
    [`${AWS_META}hostname`]: 'hz-1', [`${AWS_META}public-keys`]: '{not json', '/latest/user-data': { status: 500, body: 'oops' },
  });
  const aws = await service(t, { [`${AWS_META}hostname`]: 'big', '/latest/user-data': Buffer.alloc(5 * 1024 * 1024, 0x61) });
  const { env, root } = await rig(t, { seams: { metadataBase: (p) => ({ hetzner: hetzner.base, aws: aws.base })[p] } });
  const r = await run(env, step('{providers: [hetzner, aws]}'));
  t.deepEqual([...r.errors].sort(), [
    `datasource aws: answered, but no userdata: GET ${aws.base}/latest/user-data: the response is over 4194304 bytes: refused`,
    `datasource hetzner: answered, but no userdata: GET ${hetzner.base}/latest/user-data: HTTP 500`,
    'datasource: no metadata/userdata found',
  ]);
  t.is(r.warnings.length, 1);
  t.regex(r.warnings[0] ?? '', /^datasource hetzner: SSH keys not used: /);
  t.false(existsSync(root.path('/run/config/userdata')));

  // hetzner's keys as it gives them: a JSON list, one per line
  const good = await service(t, { [`${AWS_META}hostname`]: 'hz-2', [`${AWS_META}public-keys`]: '["ssh-ed25519 AAAA1 a","ssh-rsa AAAA2 b"]', [`${AWS_META}instance-id`]: '42', '/latest/user-data': '#cloud-config\n' });
  const g = await rig(t, { seams: { metadataBase: () => good.base } });
  t.deepEqual((await run(g.env, step('{providers: [hetzner]}'))).errors, []);
  t.is(await readFile(g.root.path('/run/config/ssh/authorized_keys'), 'utf8'), 'ssh-ed25519 AAAA1 a\nssh-rsa AAAA2 b\n');
  t.is(await readFile(g.root.path('/run/config/instance_id'), 'utf8'), '42');
});

test('providers deduplicated, unknown names and `file` without path ignored (warnings); vmware, azure and packet are errors naming them, never a silent skip', async (t) => {
  const aws = await service(t, { [`${AWS_META}hostname`]: 'h', '/latest/user-data': 'a: 1\n' });
  const { env } = await rig(t, { seams: { metadataBase: () => aws.base } });
  const r = await run(env, step('{providers: [aws, nosuch, aws, file, vmware, azure, packet, aws]}'));
  t.deepEqual(r.warnings, ['datasource: unknown provider "nosuch" ignored', 'datasource file: ignored without `path`']);
  t.is(r.errors.length, 3);
  t.regex(r.errors[0] ?? '', /^datasource vmware: not implemented in this agent: VMware guestinfo is read through the VMware backdoor RPC/);
  t.regex(r.errors[1] ?? '', /^datasource azure: not implemented in this agent: /);
  t.regex(r.errors[2] ?? '', /^datasource packet: not implemented in this agent: /);
  t.is(aws.requests.filter((q) => q.path === '/latest/user-data').length, 1, 'aws ran once');
});

test('test seams: a network provider without a test address is an error (never the real one); drives are looked for only among the pinned devices', async (t) => {
  const calls: string[][] = [];
  const { env } = await rig(t, { exec: driveExec(calls, {}), seams: { metadataBase: () => undefined } });
  const r = await run(env, step('{providers: [aws, scaleway, cdrom]}'));
  t.deepEqual(r.errors, [
    'datasource aws: no metadata address for it in this test run',
    'datasource scaleway: no metadata address for it in this test run',
    'datasource cdrom: no device labelled cidata or CIDATA',
    'datasource: no metadata/userdata found',
  ]);
  t.deepEqual(calls, [], 'no blkid over the machine\'s disks');
});

(me.uid === 0 ? test : test.skip)('scaleway: /conf fields to files, keys from SSH_PUBLIC_KEYS_n_KEY, the userdata asked from a source port below 1024 (root)', async (t) => {
  const conf = "ID=abc-123\nHOSTNAME=scw-node\nLOCATION_ZONE_ID=fr-par-1\nPRIVATE_IP=10.1.2.3\nPUBLIC_IP_ADDRESS=198.51.100.4\nSSH_PUBLIC_KEYS=2\nSSH_PUBLIC_KEYS_0_KEY='ssh-rsa AAAAs0 zero'\nSSH_PUBLIC_KEYS_1_KEY='ssh-ed25519 AAAAs1 one'\n";
  const scw = await service(t, { '/conf': conf, '/user_data/cloud-init': { body: '#cloud-config\nhostname: scw\n', check: (req) => (req.socket.remotePort ?? 65535) < 1024 } });
  const { env, root } = await rig(t, { seams: { metadataBase: () => scw.base } });
  const r = await run(env, step('{providers: [scaleway]}'));
  t.deepEqual(r.errors, []);
  t.is(await readFile(root.path('/run/config/userdata'), 'utf8'), '#cloud-config\nhostname: scw\n');
  t.is(await readFile(root.path('/run/config/hostname'), 'utf8'), 'scw-node');
  t.is(await readFile(root.path('/run/config/instance_id'), 'utf8'), 'abc-123');
  t.is(await readFile(root.path('/run/config/instance_location'), 'utf8'), 'fr-par-1');
  t.is(await readFile(root.path('/run/config/private_ip'), 'utf8'), '10.1.2.3');
  t.is(await readFile(root.path('/run/config/public_ip'), 'utf8'), '198.51.100.4');
  t.is(await readFile(root.path('/run/config/ssh/authorized_keys'), 'utf8'), 'ssh-rsa AAAAs0 zero\nssh-ed25519 AAAAs1 one\n');
  t.is(await readFile(root.path('/etc/hostname'), 'utf8'), 'scw-node\n');
  const ud = scw.requests.find((q) => q.path === '/user_data/cloud-init');
  t.true(ud !== undefined && ud.port < 1024, `source port ${ud?.port}`);
});

// ------------------------------------------------------------------------------------------- a real loop device

const runner = new SpawnRunner();
const realExec: ToolExec = async (argv, o = {}) => {
  const r = await runner.run({ argv, description: argv.join(' '), ...(o.okExitCodes !== undefined ? { okExitCodes: o.okExitCodes } : {}) });
  return { exitCode: r.exitCode, stdout: r.stdout };
};
const kernelHasVfat = readFileSync('/proc/filesystems', 'utf8').split('\n').some((l) => l.trim().split(/\s+/).pop() === 'vfat');

/** A vfat image labelled `label` holding `files` (mtools, no mount), attached as a loop device. */
async function loopVfat(t: { teardown(fn: () => Promise<void>): void }, label: string, files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'yip-ds-loop-'));
  const img = path.join(dir, 'cidata.img');
  await writeFile(img, '');
  await truncate(img, 4 * 1024 * 1024);
  await sh('mkfs.vfat', ['-n', label, img]);
  for (const [name, content] of Object.entries(files)) {
    await writeFile(path.join(dir, name), content);
    await sh('mcopy', ['-i', img, path.join(dir, name), `::${name}`]);
  }
  const dev = (await sh('losetup', ['--find', '--show', img])).stdout.trim();
  t.teardown(async () => {
    await sh('losetup', ['-d', dev]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });
  return dev;
}

const mountsUnder = (dir: string): string[] => readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((l) => (l.split(' ')[1] ?? '').startsWith(dir));

test.serial(`a real loop device (vfat labelled cidata, pinned by path): found by blkid, mounted read-only, user-data read byte for byte, unmounted${kernelHasVfat ? '' : ' (this kernel has no vfat: its mount failure is the error naming the device)'}`, async (t) => {
  const userdata = `#cloud-config\nhostname: loop-${randomBytes(3).toString('hex')}\n`;
  const dev = await loopVfat(t, 'cidata', { 'user-data': userdata, 'meta-data': 'instance-id: test\n' });
  const calls: string[][] = [];
  const exec: ToolExec = (argv, o) => {
    calls.push([...argv]);
    return realExec(argv, o);
  };
  const { env, root } = await rig(t, { exec, seams: { devices: [dev] } });
  const r = await run(env, step('{providers: [cdrom]}'));
  t.deepEqual(calls.slice(0, 2), [
    ['blkid', '-c', '/dev/null', '-o', 'device', '-t', 'LABEL=cidata', dev],
    ['blkid', '-c', '/dev/null', '-o', 'device', '-t', 'LABEL=CIDATA', dev],
  ]);
  t.is(calls[2]?.[5], dev, 'the labelled device is the one mounted');
  if (kernelHasVfat) {
    t.deepEqual(r.errors, []);
    t.is(await readFile(root.path('/run/config/userdata'), 'utf8'), userdata);
    t.is(await readFile(root.path('/run/config/userdata.yaml'), 'utf8'), userdata);
    t.deepEqual(calls[calls.length - 1]?.[0], 'umount');
  } else {
    t.is(r.errors.length, 2);
    t.regex(r.errors[0] ?? '', new RegExp(`^datasource cdrom: ${dev}: not mounted \\(iso9660: .*; vfat: .*\\)$`));
    t.is(r.errors[1], 'datasource: no metadata/userdata found');
  }
  t.deepEqual(mountsUnder(root.path('/')), [], 'nothing left mounted in the root');
  t.deepEqual(await readdir(root.path('/run')), ['config'], 'the mount point is removed');
});

test.serial('a real loop device labelled otherwise is not used, even pinned', async (t) => {
  const dev = await loopVfat(t, 'OTHER', { 'user-data': 'x: 1\n' });
  const calls: string[][] = [];
  const exec: ToolExec = (argv, o) => {
    calls.push([...argv]);
    return realExec(argv, o);
  };
  const { env } = await rig(t, { exec, seams: { devices: [dev] } });
  const r = await run(env, step('{providers: [cdrom]}'));
  t.deepEqual(r.errors, ['datasource cdrom: no device labelled cidata or CIDATA', 'datasource: no metadata/userdata found']);
  t.deepEqual(calls.map((c) => c[0]), ['blkid', 'blkid'], 'never mounted');
});
