/**
 * The real cOS v0.8.14 cloud-config files (../shared/cos-v0.8.14/oem, unmodified, read in place) loaded as a directory
 * source and run stage by stage on a temp root, with a recording console (yip's own tests replay theirs the same
 * way): what they leave is what they leave on a cOS host.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SysRoot } from '../../src/sys/root.ts';
import { loadSource } from '../../src/yip/loader.ts';
import { planStage } from '../../src/yip/plan.ts';
import { runOps, type YipEnv } from '../../src/yip/executor.ts';

const OEM = fileURLToPath(new URL('../../../shared/cos-v0.8.14/oem', import.meta.url));

async function stage(t: ExecutionContext, name: string, answers: Record<string, number> = {}): Promise<{ root: SysRoot; commands: string[]; reports: Awaited<ReturnType<typeof runOps>> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'yip-cos-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = new SysRoot(dir);
  await mkdir(root.path('/etc'), { recursive: true });
  await writeFile(root.path('/etc/hosts'), '127.0.0.1 localhost\n::1 localhost\n');
  await writeFile(root.path('/etc/shadow'), 'root:*:19000::::::\n');
  // the cOS files are read where they are: a SysRoot on their parent, the source being /oem
  const loaded = await loadSource(new SysRoot(path.dirname(OEM)), '/oem');
  t.deepEqual(loaded.problems, []);
  const commands: string[] = [];
  const env: YipEnv = {
    root, hostname: 'localhost', machineId: '0123456789abcdef', values: {},
    console: { run: (c) => { commands.push(c); return Promise.resolve({ exitCode: answers[c.trim()] ?? 0, output: '' }); } },
  };
  const plan = planStage(loaded.documents, name);
  t.deepEqual(plan.warnings, []);
  return { root, commands, reports: await runOps(plan.ops, env) };
}

test('initramfs: the luet config and the upgrade channel, root\'s password hashed, the hostname, /etc/issue, systemd-firstboot, the SELinux relabel command', async (t) => {
  const { root, commands, reports } = await stage(t, 'initramfs');
  t.deepEqual(reports.map((r) => r.op), [
    'General settings.Setup distro', 'Upgrades settings.Setup Luet config file', 'Upgrades settings.Setup upgrade channel',
    'Branding.Branding', 'Default user.Setup users', 'Default network configuration.Setup network', 'Default config.Default systemd config', 'SELinux.Relabelling',
  ], 'the files in walk order, their steps in order');
  t.deepEqual(reports.flatMap((r) => r.errors), []);
  const channel = await readFile(root.path('/etc/elemental/config.d/upgrade_channel.yaml'), 'utf8');
  t.regex(channel, /^upgrade:\n  system: ?\n    uri: channel:system\/cos\n  recovery-system:\n    uri: channel:recovery\/cos\n$/);
  t.is((await stat(root.path('/etc/elemental/config.d/upgrade_channel.yaml'))).mode & 0o777, 0o644);
  t.is((await stat(root.path('/etc/luet/luet.yaml'))).mode & 0o777, 0o600);
  t.regex(await readFile(root.path('/etc/shadow'), 'utf8'), /^root:\$6\$[0-9a-zA-Z]{8}\$[./0-9A-Za-z]{86}:19000::::::\n$/);
  t.is(await readFile(root.path('/etc/hostname'), 'utf8'), 'cos\n');
  t.is(await readFile(root.path('/etc/hosts'), 'utf8'), '127.0.0.1 localhost cos\n::1 localhost\n');
  t.regex(await readFile(root.path('/etc/issue'), 'utf8'), /Welcome to \\S !\nIP address \\4\n/);
  t.true(commands.includes('systemd-firstboot --keymap=us --locale=en_US.UTF-8 --timezone=UTC'), commands.join('\n'));
  // 09_services: systemctl behind an `if` that looks for the binary
  t.true(commands.includes('systemctl enable systemd-timesyncd'), commands.join('\n'));
  t.true(commands.some((c) => c.includes('restorecon -R -i -v /etc')), commands.join('\n'));
});

test('boot.before of 08_boot_assessment: with upgrade_failure on the cmdline /run/cos/upgrade_failure is written; the GRUB sentinels are cleared only when booted from active.img', async (t) => {
  const fromActive = await stage(t, 'boot.before', { 'cat /proc/cmdline | grep -q "upgrade_failure"': 1 });
  t.true(fromActive.commands.some((c) => c.includes('grub2-editenv /run/initramfs/cos-state/boot_assessment set enable_boot_assessment=')));
  await t.throwsAsync(stat(fromActive.root.path('/run/cos/upgrade_failure')));
  const fallback = await stage(t, 'boot.before', { 'cat /proc/cmdline | grep -q "active.img"': 1 });
  t.false(fallback.commands.some((c) => c.includes('grub2-editenv')));
  t.is(await readFile(fallback.root.path('/run/cos/upgrade_failure'), 'utf8'), '1');
  t.is((await stat(fallback.root.path('/run/cos/upgrade_failure'))).mode & 0o777, 0o600);
  t.is((await stat(fallback.root.path('/run/cos'))).mode & 0o777, 0o700, 'its parent made with 0600 + 0100, as yip makes it');
});
