/**
 * `cosctl --root DIR run-stage STAGE` for real: the built cosctl on a root that holds a shell (busybox) and
 * cloud-config files in /system/oem, /oem and /usr/local/cloud-config, a kernel command line in DIR/proc/cmdline.
 * Commands run chrooted into DIR (so they see DIR's files and cmdline, never the host's); files, sysctl and hostname
 * land under DIR; the live hostname is untouched.
 */
import test, { type ExecutionContext } from 'ava';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { cosctl } from '../helpers/cosctl.ts';
import type { CosHost } from '../helpers/cos-host.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';

async function root(t: ExecutionContext, files: Record<string, string>): Promise<CosHost> {
  const dir = await mkdtemp(path.join(tmpdir(), 'run-stage-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'bin'), { recursive: true });
  await mkdir(path.join(dir, 'tmp'), { recursive: true });
  await copyFile('/bin/busybox', path.join(dir, 'bin/busybox'));
  for (const tool of ['sh', 'cat', 'grep', 'echo', 'test', '[', 'false']) await symlink('busybox', path.join(dir, 'bin', tool));
  for (const [p, text] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, p)), { recursive: true });
    await writeFile(path.join(dir, p), text);
  }
  return { root: dir, env: { PATH: '/bin:/usr/bin:/usr/sbin:/sbin' } } as unknown as CosHost;
}

const BOOT = `name: "test"
stages:
  boot.before:
    - name: marker
      if: cat /proc/cmdline | grep -q "upgrade_failure"
      files: [{path: /run/cos/upgrade_failure, content: "1", permissions: 0600}]
  boot:
    - name: from-chroot
      commands: ["cat /etc/os-release > /tmp/seen-os-release"]
    - name: settings
      hostname: cos-test
      sysctl: {vm.swappiness: "10"}
      files: [{path: /etc/motd, content: "hello {{.Values.os.vendor}}\\n", permissions: 0644}]
`;

test('run-stage boot: before/stage/after from the three dirs, commands chrooted into the root, files, sysctl and hostname under it', async (t) => {
  const host = await root(t, {
    '/system/oem/10_test.yaml': BOOT,
    '/usr/local/cloud-config/90_user.yaml': 'stages:\n  boot.after:\n    - commands: ["echo after > /tmp/after"]\n',
    '/etc/elemental/config.yaml': 'cloud-init-paths: [/extra-from-config]\n',
    '/extra-from-config/x.yaml': 'stages:\n  boot:\n    - files: [{path: /tmp/from-config-path, content: "config path"}]\n',
    '/etc/os-release': 'ID=testos\nPRETTY_NAME="Test OS"\n',
    '/etc/hosts': '127.0.0.1 localhost\n',
    '/proc/cmdline': 'BOOT_IMAGE=/vmlinuz upgrade_failure\n',
    '/proc/sys/vm/.keep': '',
  });
  const before = hostname();
  const r = await cosctl(host, ['run-stage', 'boot', '--strict']);
  t.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const file = (p: string): Promise<string> => readFile(path.join(host.root, p), 'utf8');
  t.is(await file('/run/cos/upgrade_failure'), '1', 'the if read the root\'s /proc/cmdline');
  t.is(await file('/tmp/seen-os-release'), 'ID=testos\nPRETTY_NAME="Test OS"\n', 'the command ran chrooted into the root');
  t.is(await file('/tmp/after'), 'after\n');
  t.is(await file('/tmp/from-config-path'), 'config path', "the config's cloud-init-paths are sources too");
  t.is(await file('/proc/sys/vm/swappiness'), '10');
  t.is(await file('/etc/hostname'), 'cos-test\n');
  t.is(await file('/etc/motd'), 'hello testos\n');
  t.is(hostname(), before, 'the live hostname is untouched with --root');
  t.regex(r.stdout, /boot from \/system\/oem:\n {2}test\.from-chroot: done\n {2}test\.settings: done\n/);
  t.regex(r.stdout, /Stage boot: 5 step\(s\) from 3 source\(s\), 0 error\(s\)\.\n$/);
});

test('errors: reported and the stage goes on; exit 0 without --strict, 65 with it; a bad file is named with its line; --dry-run runs nothing', async (t) => {
  const host = await root(t, {
    '/oem/01.yaml': 'stages:\n  network:\n    - commands: ["false", "echo still > /tmp/still"]\n',
    '/oem/02.yaml': 'stages:\n  network:\n    - files:\n        - path: /x\n          permissions: "0644"\n',
    '/proc/cmdline': '',
  });
  const dry = await cosctl(host, ['run-stage', 'network', '--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  const plan = JSON.parse(dry.stdout) as { runs: Array<{ ops: Array<{ op: string; skipped: string }>; problems: string[] }>; dryRun: boolean };
  t.true(plan.dryRun);
  t.deepEqual(plan.runs.flatMap((r) => r.ops.map((o) => [o.op, o.skipped])), [['/oem/01.yaml.0', 'dry run']]);
  t.regex(plan.runs[0]?.problems[0] ?? '', /^\/oem\/02\.yaml:5 step 0 files\[0\]\.permissions: cannot unmarshal/);
  await t.throwsAsync(readFile(path.join(host.root, 'tmp/still')), undefined, 'a dry run runs nothing');

  const plain = await cosctl(host, ['run-stage', 'network']);
  t.is(plain.code, 0, plain.stderr);
  t.is(await readFile(path.join(host.root, 'tmp/still'), 'utf8'), 'still\n', 'the command after the failing one ran');
  t.regex(plain.stdout, /error: commands: failed to run false: exit status 1/);
  const strict = await cosctl(host, ['run-stage', 'network', '--strict']);
  t.is(strict.code, EXIT_CODES.CLOUD_INIT_FAILED.exit);
  t.is(strict.code, 65);
  t.regex(strict.stderr, /stage network: 2 error\(s\) \(--strict\)/);

  const bad = await cosctl(host, ['run-stage', '../x']);
  t.is(bad.code, EXIT_CODES.USAGE.exit);
  const missing = await cosctl(host, ['run-stage']);
  t.is(missing.stderr, "cosctl: run-stage needs STAGE; see cosctl run-stage --help\n");
});
