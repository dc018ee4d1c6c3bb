import test from 'ava';
import { lstat, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { SysRoot } from '../../src/sys/root.ts';
import { resolveInRoot, runOps, type YipEnv } from '../../src/yip/executor.ts';
import { planStage } from '../../src/yip/plan.ts';
import { decodeYip } from '../../src/yip/schema.ts';

/** A temp root and a recording console (yip's own plugin tests record the command strings the same way). */
async function rig(t: { teardown(fn: () => Promise<void>): void }, exits: Record<string, number> = {}): Promise<{ env: YipEnv; commands: string[]; root: SysRoot; hostnames: string[] }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'yip-exec-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = new SysRoot(dir);
  await mkdir(root.path('/etc'), { recursive: true });
  await writeFile(root.path('/etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n');
  await writeFile(root.path('/etc/group'), 'root:x:0:\nbob:x:1000:\nwheel:x:10:bob\n');
  const commands: string[] = [];
  const hostnames: string[] = [];
  const env: YipEnv = {
    root,
    hostname: 'cos-node-1',
    machineId: 'abcdef0123456789',
    values: { os: { architecture: 'amd64' } },
    console: { run: (c) => { commands.push(c); return Promise.resolve({ exitCode: exits[c] ?? 0, output: exits[c] ? 'boom' : '' }); } },
    setHostname: (n) => { hostnames.push(n); return Promise.resolve(); },
  };
  return { env, commands, root, hostnames };
}

async function run(env: YipEnv, yaml: string, stage = 'boot'): Promise<Awaited<ReturnType<typeof runOps>>> {
  const d = decodeYip(yaml, '/oem/t.yaml');
  if (d.config === null) throw new Error(JSON.stringify(d.problems));
  return runOps(planStage([{ origin: '/oem/t.yaml', config: d.config }], stage).ops, env);
}

const mode = async (p: string): Promise<number> => (await stat(p)).mode & 0o7777;

test('commands: templated and run in order through the console; a failing one is reported and the next still runs (yip goldens)', async (t) => {
  const { env, commands } = await rig(t, { 'false': 1 });
  const r = await run(env, 'stages:\n  boot:\n    - commands: [echo foo, "false", "echo {{.Values.os.architecture}}"]\n    - commands: [echo bar]\n');
  t.deepEqual(commands, ['echo foo', 'false', 'echo amd64', 'echo bar']);
  t.deepEqual(r[0]?.errors, ['commands: failed to run false: exit status 1\ncommand output:\nboom']);
  t.deepEqual(r[1]?.errors, []);
});

test('conditionals: node is an unanchored Go regexp on the hostname (lookarounds never match); if runs through sh and skips on non-zero', async (t) => {
  const { env, commands } = await rig(t, { 'test -e /nope': 1 });
  const r = await run(env, `stages:
  boot:
    - {node: cos-node, commands: [a]}
    - {node: other, commands: [b]}
    - {node: "^(?!x).*", commands: [c]}
    - {if: "test -e /nope", commands: [d]}
    - {if: "[ {{.Values.os.architecture}} = amd64 ]", commands: [e]}
`);
  t.deepEqual(commands, ['a', 'test -e /nope', '[ amd64 = amd64 ]', 'e']);
  t.deepEqual(r.map((x) => x.skipped === null), [true, false, false, false, true]);
  t.regex(r[2]?.skipped ?? '', /not a regular expression yip accepts/);
});

test('files: parent made with perm+0100, content decoded (b64, gzip) and templated, exact mode (0 when permissions is missing), owner by ownerstring', async (t) => {
  const { env, root } = await rig(t);
  const gz = gzipSync(Buffer.from('zipped {{.Values.os.architecture}}\n')).toString('base64');
  const r = await run(env, `stages:
  boot:
    - files:
        - {path: /testarea/dir/subdir/foo, permissions: 0640, content: "arch={{.Values.os.architecture}}\\n", ownerstring: "bob:wheel"}
        - {path: /etc/b64, permissions: 0600, encoding: b64, content: aGVsbG8=}
        - {path: /etc/gz, permissions: 0644, encoding: gz+b64, content: "${gz}"}
        - {path: /etc/typo, permsisions: 0644, content: x}
        - {path: /etc/bad, permissions: 0644, encoding: base64, content: "not base64!"}
`);
  t.is(await readFile(root.path('/testarea/dir/subdir/foo'), 'utf8'), 'arch=amd64\n');
  t.is(await mode(root.path('/testarea/dir/subdir/foo')), 0o640);
  t.is(await mode(root.path('/testarea/dir/subdir')), 0o740, 'files_test.go: the parent gets 0640 + 0100');
  const st = await stat(root.path('/testarea/dir/subdir/foo'));
  t.deepEqual([st.uid, st.gid], [1000, 10]);
  t.is(await readFile(root.path('/etc/b64'), 'utf8'), 'hello');
  t.is(await readFile(root.path('/etc/gz'), 'utf8'), 'zipped amd64\n');
  t.is(await mode(root.path('/etc/typo')), 0, 'permsisions is ignored: mode 0000, as on cOS');
  t.is(await readFile(root.path('/etc/bad'), 'utf8'), '', 'a decode error leaves the file truncated');
  t.deepEqual(r[0]?.errors, ['files /etc/bad: illegal base64 data']);
});

test('directories: created with the mode (parents too), an existing one chmodded exactly; a file in the way is an error', async (t) => {
  const { env, root } = await rig(t);
  await mkdir(root.path('/tmp/dir'), { recursive: true, mode: 0o755 });
  await writeFile(root.path('/tmp/file'), '');
  const r = await run(env, 'stages:\n  boot:\n    - directories:\n        - {path: /tmp/dir, permissions: 0740}\n        - {path: /tmp/new/sub1/sub2, permissions: 0750}\n        - {path: /tmp/file, permissions: 0700}\n');
  t.is(await mode(root.path('/tmp/dir')), 0o740);
  t.true((await lstat(root.path('/tmp/new/sub1/sub2'))).isDirectory());
  t.deepEqual(r[0]?.errors, ["directories /tmp/file: '/tmp/file' already exists and it is not a directory"]);
});

test('hostname: set on the live system, /etc/hostname written, 127.0.0.1 lines rewritten in /etc/hosts (hostname_test.go)', async (t) => {
  const { env, root, hostnames } = await rig(t);
  await writeFile(root.path('/etc/hosts'), '127.0.0.1 boo\n  ::1 localhost ip6-localhost  \n');
  await run(env, 'stages:\n  boot:\n    - hostname: "bar-{{ trunc 4 .MachineID }}"\n');
  t.deepEqual(hostnames, ['bar-abcd']);
  t.is(await readFile(root.path('/etc/hostname'), 'utf8'), 'bar-abcd\n');
  t.is(await readFile(root.path('/etc/hosts'), 'utf8'), '127.0.0.1 localhost bar-abcd\n::1 localhost ip6-localhost\n');
});

test('sysctl and dns write through the root (sysctl_test.go, dns_test.go); a symlink to an absolute path is followed inside the root', async (t) => {
  const { env, root } = await rig(t);
  await mkdir(root.path('/proc/sys/debug'), { recursive: true });
  await mkdir(root.path('/run/systemd/resolve'), { recursive: true });
  await symlink('/run/systemd/resolve/stub-resolv.conf', root.path('/etc/resolv.conf'));
  await run(env, 'stages:\n  boot:\n    - sysctl: {debug.exception-trace: "0"}\n      dns: {nameservers: [8.8.8.8], search: [example.com], options: [edns0]}\n');
  t.is(await readFile(root.path('/proc/sys/debug/exception-trace'), 'utf8'), '0');
  t.is(await readFile(root.path('/run/systemd/resolve/stub-resolv.conf'), 'utf8'), 'search example.com\nnameserver 8.8.8.8\noptions edns0\n');
  t.is(await resolveInRoot(root, '/etc/../../../../etc/resolv.conf'), root.path('/run/systemd/resolve/stub-resolv.conf'), '.. stops at the root');
});

test('a datasource provider this version does not implement is an error naming it, never a silent skip; the other plugins of the step still run', async (t) => {
  const { env, commands } = await rig(t);
  const r = await run(env, 'stages:\n  boot:\n    - commands: [echo x]\n      datasource: {providers: [vmware]}\n');
  t.deepEqual(commands, ['echo x']);
  t.is(r[0]?.errors.length, 2);
  t.regex(r[0]?.errors[0] ?? '', /^datasource vmware: not implemented in this agent: /);
  t.is(r[0]?.errors[1], 'datasource: no metadata/userdata found');
});

test('modules: entries /proc/modules lists are skipped (exact name), the others loaded with their parameters; without the live system, an error each', async (t) => {
  const { env, root } = await rig(t);
  await mkdir(root.path('/proc'), { recursive: true });
  await writeFile(root.path('/proc/modules'), 'loop 32768 0 - Live 0x0000000000000000\nbr_netfilter 32768 0 - Live 0x0\n');
  const loaded: string[][] = [];
  const live: YipEnv = { ...env, modprobe: (name, params) => { loaded.push([name, ...params]); return name === 'nosuch' ? Promise.reject(new Error('modprobe: FATAL: Module nosuch not found')) : Promise.resolve(); } };
  const r = await run(live, 'stages:\n  boot:\n    - modules: [loop, "dummy numdummies=2", br-netfilter, nosuch, "overlay"]\n');
  t.deepEqual(loaded, [['dummy', 'numdummies=2'], ['br-netfilter'], ['nosuch'], ['overlay']], '- and _ are not normalised, as in yip');
  t.deepEqual(r[0]?.errors, ['modules nosuch: modprobe: FATAL: Module nosuch not found']);
  const other = await run(env, 'stages:\n  boot:\n    - modules: [loop, dummy]\n');
  t.deepEqual(other[0]?.errors, ['modules dummy: not loaded: kernel modules are loaded only on the live system, and this run acts on another root']);
});

test('downloads: to a file or into a directory (the URL\'s name, or Content-Disposition\'s), resumed with Range, mode 0000 by default, owner set; a 404 or a bad URL is an error of that entry only', async (t) => {
  const { env, root } = await rig(t);
  const body = Buffer.from('0123456789abcdefghij');
  const seen: Array<{ url: string; range: string | undefined; agent: string | undefined }> = [];
  const server = createServer((req, res) => {
    seen.push({ url: req.url ?? '', range: req.headers.range, agent: req.headers['user-agent'] });
    if (req.url === '/missing') { res.writeHead(404).end('no'); return; }
    if (req.url === '/named') { res.writeHead(200, { 'content-disposition': 'attachment; filename="from-header.bin"' }).end(body); return; }
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m !== null) {
      const from = Number(m[1]);
      if (from >= body.length) { res.writeHead(416).end(); return; }
      res.writeHead(206, { 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` }).end(body.subarray(from));
      return;
    }
    res.writeHead(200).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await mkdir(root.path('/opt/partial'), { recursive: true });
  await writeFile(root.path('/opt/partial/data.bin'), body.subarray(0, 8));
  await writeFile(root.path('/opt/complete.bin'), body);
  const r = await run(env, `stages:
  boot:
    - downloads:
        - {url: "${base}/unittest.txt", path: /tmp/test/}
        - {url: "${base}/file.bin", path: /opt/file.bin, permissions: 0640, owner: 1000, group: 10}
        - {url: "${base}/named", path: /opt/named/}
        - {url: "${base}/data.bin", path: /opt/partial/data.bin, permissions: 0644}
        - {url: "${base}/complete.bin", path: /opt/complete.bin, permissions: 0644}
        - {url: "${base}/missing", path: /opt/missing}
        - {url: "not a url", path: /opt/x}
        - {url: "${base}/owned", path: /opt/owned, permissions: 0600, ownerstring: "bob:wheel"}
`);
  t.deepEqual(await readFile(root.path('/tmp/test/unittest.txt')), body, 'into a directory, named after the URL (yip\'s download_test.go)');
  t.is(await mode(root.path('/tmp/test/unittest.txt')), 0, 'permissions default to 0: mode 0000, as in yip');
  t.deepEqual(await readFile(root.path('/opt/file.bin')), body);
  t.is(await mode(root.path('/opt/file.bin')), 0o640);
  t.like(await stat(root.path('/opt/file.bin')), { uid: 1000, gid: 10 });
  t.deepEqual(await readFile(root.path('/opt/named/from-header.bin')), body, 'Content-Disposition names the file');
  t.deepEqual(await readFile(root.path('/opt/partial/data.bin')), body, 'resumed: the first 8 bytes kept, the rest appended');
  t.deepEqual(seen.find((s) => s.url === '/data.bin')?.range, 'bytes=8-');
  t.deepEqual(await readFile(root.path('/opt/complete.bin')), body, 'complete (416): left alone');
  t.like(await stat(root.path('/opt/owned')), { uid: 1000, gid: 10 });
  t.true(seen.every((s) => s.agent === 'grab'), 'User-Agent grab');
  t.deepEqual(r[0]?.errors, [`downloads ${base}/missing: GET ${base}/missing: HTTP 404`, 'downloads not a url: "not a url" is not a URL']);
  await t.throwsAsync(stat(root.path('/opt/missing')), undefined, 'nothing written for the 404');
});

test('systemctl: enable, disable, mask, start in that order through the console (systemctl_test.go); systemd-firstboot args sorted, "true" a bare flag', async (t) => {
  const { env, commands } = await rig(t);
  await run(env, 'stages:\n  boot:\n    - systemctl: {start: [moz], mask: [baz], disable: [bar], enable: [foo]}\n      systemd_firstboot: {keymap: us, LOCALE: en_US.UTF-8, force: "true", timezone: UTC}\n');
  t.deepEqual(commands, ['systemctl enable foo', 'systemctl disable bar', 'systemctl mask baz', 'systemctl start moz', 'systemd-firstboot --force --keymap=us --locale=en_US.UTF-8 --timezone=UTC']);
});

test('environment: godotenv v1.4 output (sorted, integers bare, escapes, trailing newline), existing entries kept, parent 0744, file 0644 (environment_test.go)', async (t) => {
  const { env, root } = await rig(t);
  await writeFile(root.path('/etc/environment'), '# comment\nexport OLD="kept"\nZ=1\n');
  await run(env, `stages:
  boot:
    - environment: {A: plain, B: "with space", C: 'q"uote', G: $HOME, J: "1.5", K: "", NUM: "007", T: "{{.Values.os.architecture}}"}
    - environment: {foo: "0"}
      environment_file: /run/cos/cos-layout.env
`);
  t.is(await readFile(root.path('/etc/environment'), 'utf8'), 'A="plain"\nB="with space"\nC="q\\"uote"\nG="\\$HOME"\nJ="1.5"\nK=""\nNUM=7\nOLD="kept"\nT="amd64"\nZ=1\n');
  t.is(await mode(root.path('/etc/environment')), 0o644);
  t.is(await readFile(root.path('/run/cos/cos-layout.env'), 'utf8'), 'foo=0\n');
  t.is(await mode(root.path('/run/cos')), 0o744);
});

test('timesyncd: [Time] keys set in timesyncd.conf the way ini.v1 saves it (timesyncd_test.go): aligned keys, other sections kept', async (t) => {
  const { env, root } = await rig(t);
  await mkdir(root.path('/etc/systemd'), { recursive: true });
  await run(env, 'stages:\n  boot:\n    - timesyncd: {NTP: 0.pool}\n');
  t.is(await readFile(root.path('/etc/systemd/timesyncd.conf'), 'utf8'), '[Time]\nNTP = 0.pool\n');
  await writeFile(root.path('/etc/systemd/timesyncd.conf'), '#c\n[Other]\nA=1\n[Time]\nNTP=old\n');
  await run(env, 'stages:\n  boot:\n    - timesyncd: {NTP: a.pool, FallbackNTP: " b.pool"}\n');
  t.is(await readFile(root.path('/etc/systemd/timesyncd.conf'), 'utf8'), '# c\n[Other]\nA = 1\n\n[Time]\nNTP         = a.pool\nFallbackNTP = " b.pool"\n');
});

test('authorized_keys: ~/.ssh 0700 and authorized_keys 0600 owned by the user, keys appended once, github: keys fetched; an unknown user is an error', async (t) => {
  const { env, root } = await rig(t);
  await mkdir(root.path('/home/bob'), { recursive: true });
  const fetched: string[] = [];
  env.fetch = (url) => { fetched.push(url); return Promise.resolve('ssh-rsa AAAAgithub mudler'); };
  const r = await run(env, 'stages:\n  boot:\n    - authorized_keys:\n        bob: ["efafeeafea,t,t,pgl3,pbar", "github:mudler", "efafeeafea,t,t,pgl3,pbar"]\n        nobody: [k]\n');
  t.deepEqual(fetched, ['https://github.com/mudler.keys']);
  t.is(await readFile(root.path('/home/bob/.ssh/authorized_keys'), 'utf8'), 'efafeeafea,t,t,pgl3,pbar\nssh-rsa AAAAgithub mudler\n');
  t.is(await mode(root.path('/home/bob/.ssh')), 0o700);
  t.is(await mode(root.path('/home/bob/.ssh/authorized_keys')), 0o600);
  const st = await stat(root.path('/home/bob/.ssh/authorized_keys'));
  t.deepEqual([st.uid, st.gid], [1000, 1000]);
  t.deepEqual(r[0]?.errors, ['authorized_keys nobody: user nobody not found']);
});

test('ensure_entities / delete_entities: yip goldens for groups; a user line replaced; a plain shadow password hashed, empty fields kept', async (t) => {
  const { env, root } = await rig(t);
  await writeFile(root.path('/etc/group'), 'nm-openconnect:x:979:\n');
  await writeFile(root.path('/etc/shadow'), 'root:$6$old$hash:18820:0:99999:7:::\n', { mode: 0o640 });
  await run(env, `stages:
  boot:
    - ensure_entities:
        - entity: |
            kind: group
            group_name: foo
            password: xx
            gid: 1
            users: one,two,tree
        - entity: |
            kind: user
            username: bob
            password: x
            uid: 1000
            gid: 1000
            homedir: /srv/bob
            shell: /bin/bash
        - entity: |
            kind: shadow
            username: root
            password: cos
`);
  t.is(await readFile(root.path('/etc/group'), 'utf8'), 'nm-openconnect:x:979:\nfoo:xx:1:one,two,tree\n');
  t.is(await readFile(root.path('/etc/passwd'), 'utf8'), 'root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000:Created by entities:/srv/bob:/bin/bash\n');
  const shadow = await readFile(root.path('/etc/shadow'), 'utf8');
  t.regex(shadow, /^root:\$6\$[0-9a-zA-Z]{8}\$[./0-9A-Za-z]{86}:18820:0:99999:7:::\n$/);
  t.is(await mode(root.path('/etc/shadow')), 0o640, 'the file keeps its mode');
  await run(env, "stages:\n  boot:\n    - delete_entities:\n        - entity: |\n            kind: group\n            group_name: foo\n        - entity: |\n            kind: group\n            group_name: not-there\n");
  t.is(await readFile(root.path('/etc/group'), 'utf8'), 'nm-openconnect:x:979:\n', 'deleting a missing group removes nothing (entities would remove line 1)');
});

test('users: yip user_test.go goldens: group per user, lowest free ids in name order, shadow line, home dir, supplementary groups merged', async (t) => {
  const { env, root } = await rig(t);
  await writeFile(root.path('/etc/group'), '');
  await writeFile(root.path('/etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  await run(env, 'stages:\n  boot:\n    - users:\n        foo: {passwd: $fkekofe}\n');
  t.is(await readFile(root.path('/etc/group'), 'utf8'), 'foo:x:1000:foo\n');
  t.regex(await readFile(root.path('/etc/shadow'), 'utf8'), /^foo:\$fkekofe:\d+::::::\n$/);
  t.regex(await readFile(root.path('/etc/passwd'), 'utf8'), /\nfoo:x:1000:1000:Created by entities:\/home\/foo:\/bin\/sh\n$/);
  const home = await stat(root.path('/home/foo'));
  t.deepEqual([home.isDirectory(), home.uid, home.gid, home.mode & 0o777], [true, 1000, 1000, 0o755]);

  await run(env, 'stages:\n  boot:\n    - users:\n        admin: {}\n    - users:\n        bar: {groups: [admin, missing]}\n    - users:\n        baz: {groups: [admin]}\n');
  t.is(await readFile(root.path('/etc/group'), 'utf8'), 'foo:x:1000:foo\nadmin:x:1001:admin,bar,baz\nbar:x:1002:bar\nbaz:x:1003:baz\n');

  await run(env, 'stages:\n  boot:\n    - users:\n        lock: {lock_passwd: true, uid: "5000", homedir: /run/lock-home, shell: /bin/bash, passwd: ignored}\n');
  t.regex(await readFile(root.path('/etc/shadow'), 'utf8'), /\nlock:!:\d+::::::\n$/);
  t.regex(await readFile(root.path('/etc/passwd'), 'utf8'), /\nlock:x:5000:1004:Created by entities:\/run\/lock-home:\/bin\/bash\n$/);

  // an existing user: only the password changes, hashed, the other shadow fields kept
  await writeFile(root.path('/etc/shadow'), 'foo:old:18820:1:365:14:30:20000:\n');
  await run(env, 'stages:\n  boot:\n    - users:\n        foo: {passwd: newpass, shell: /bin/zsh}\n');
  t.regex(await readFile(root.path('/etc/shadow'), 'utf8'), /^foo:\$6\$[0-9a-zA-Z]{8}\$[./0-9A-Za-z]{86}:18820:1:365:14:30:20000:\n$/);
  t.regex(await readFile(root.path('/etc/passwd'), 'utf8'), /\nfoo:x:1000:1000:Created by entities:\/home\/foo:\/bin\/sh\n/, 'the shell of an existing user is not changed');
});

test('users created together get ids in name order, the same on a re-run (user_test.go)', async (t) => {
  const { env, root } = await rig(t);
  await writeFile(root.path('/etc/group'), '');
  await writeFile(root.path('/etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  const yaml = 'stages:\n  boot:\n    - users:\n        foo: {no_create_home: true}\n        bar: {no_create_home: true}\n        x: {no_create_home: true}\n        a: {no_create_home: true, ssh_authorized_keys: [ssh-ed25519 AAAA a@host]}\n';
  await run(env, yaml);
  const ids = async (): Promise<string> => (await readFile(root.path('/etc/passwd'), 'utf8')).split('\n').filter((l) => l !== '' && !l.startsWith('root')).map((l) => l.split(':').slice(0, 3).join(':')).join(' ');
  t.is(await ids(), 'a:x:1000 bar:x:1001 foo:x:1002 x:x:1003');
  await run(env, yaml);
  t.is(await ids(), 'a:x:1000 bar:x:1001 foo:x:1002 x:x:1003');
});
