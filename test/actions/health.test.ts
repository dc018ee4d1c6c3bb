/**
 * runCheckDirs (src/actions/health.ts) with real scripts in a temp root: what runs, in which order, how each result
 * is reported, and that a hung check, or a check's leftovers, are killed with their process group. No devices, no
 * marking: the runner refuses every command (marking and rebooting are test/integration/health-check.test.ts's).
 */
import test, { type ExecutionContext } from 'ava';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCheckDirs } from '../../src/actions/health.ts';
import { bootIsGood } from '../../src/actions/health-plan.ts';
import { CommandError } from '../../src/model/errors.ts';
import { NoHooks } from '../../src/host/hooks.ts';
import { SysRoot } from '../../src/sys/root.ts';
import { silentLogger } from '../../src/sys/log.ts';
import type { AgentDeps } from '../../src/host/deps.ts';
import type { Command, CommandResult, Runner } from '../../src/sys/runner.ts';

/** A runner that runs nothing: checks are not run through it, and nothing else may run here. */
class NoCommands implements Runner {
  readonly seen: string[][] = [];
  run(cmd: Command): Promise<CommandResult> {
    this.seen.push([...cmd.argv]);
    return Promise.reject(new CommandError(cmd.description, cmd.argv, { exitCode: 127, signal: null, stderrTail: 'no commands in this test' }));
  }
}

async function tempRoot(t: ExecutionContext): Promise<{ root: string; deps: AgentDeps; runner: NoCommands }> {
  const root = await mkdtemp(path.join(tmpdir(), 'cos-health-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const runner = new NoCommands();
  const deps: AgentDeps = { root: new SysRoot(root), runner, log: silentLogger, hooks: new NoHooks(), env: {}, now: () => new Date() };
  return { root, deps, runner };
}

/** Write a check script `hostPath` under `root` (mode 0755 unless given). */
async function script(root: string, hostPath: string, body: string, mode = 0o755): Promise<string> {
  const file = path.join(root, hostPath);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, body);
  await chmod(file, mode);
  return file;
}

const REQ = '/etc/cos-agent/check/required.d';
const WANT = '/etc/cos-agent/check/wanted.d';
const VENDOR_REQ = '/usr/lib/cos-agent/check/required.d';

/** Whether process `pid` runs (a zombie is dead: killed, waiting for its reaper). */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  if (stat === null) return false;
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] !== 'Z';
}

/** Poll until `pid` is gone (bounded; the kill is asynchronous), then say whether it still runs. */
async function stillAlive(pid: number): Promise<boolean> {
  for (let i = 0; i < 50 && (await alive(pid)); i++) await sleep(100);
  return alive(pid);
}

test('when every check passes, each is reported with its name, dir, kind, exit code and output, and the boot is good', async (t) => {
  const { root, deps, runner } = await tempRoot(t);
  await script(root, `${REQ}/10-ok`, '#!/bin/sh\necho "all fine"\necho "on stderr" >&2\n');
  await script(root, `${WANT}/10-ok`, '#!/bin/sh\nexit 0\n');
  const { checks, skipped } = await runCheckDirs(deps, 10_000);
  t.deepEqual(skipped, []);
  t.is(checks.length, 2);
  t.like(checks[0], { name: '10-ok', dir: REQ, kind: 'required', source: 'admin', passed: true, exitCode: 0, signal: null, timedOut: false, output: 'all fine\non stderr\n', outputTruncated: false });
  t.like(checks[1], { name: '10-ok', dir: WANT, kind: 'wanted', passed: true });
  t.true(checks.every((c) => typeof c.durationMs === 'number' && c.durationMs >= 0));
  t.true(bootIsGood(checks));
  t.deepEqual(runner.seen, [], 'checks do not go through the runner');
});

test('when a required check fails, it is reported with its exit code and the tail of its output, and the boot is not good', async (t) => {
  const { root, deps } = await tempRoot(t);
  // 10 000 bytes of output, ending in a marker: only the last 4 KiB are kept.
  await script(root, `${REQ}/20-broken`, '#!/bin/sh\nhead -c 10000 /dev/zero | tr "\\0" x\necho\necho "disk is full" >&2\nexit 3\n');
  await script(root, `${REQ}/30-after`, '#!/bin/sh\nexit 0\n');
  const { checks } = await runCheckDirs(deps, 10_000);
  t.like(checks[0], { name: '20-broken', passed: false, exitCode: 3, signal: null, timedOut: false, outputTruncated: true });
  t.is(Buffer.byteLength(checks[0]?.output ?? ''), 4096);
  t.true(checks[0]?.output.endsWith('x\ndisk is full\n'));
  t.like(checks[1], { name: '30-after', passed: true }, 'the checks after a failed required one still run');
  t.false(bootIsGood(checks));
});

test('when only a wanted check fails, it is reported failed and the boot is still good', async (t) => {
  const { root, deps } = await tempRoot(t);
  await script(root, `${REQ}/10-ok`, '#!/bin/sh\nexit 0\n');
  await script(root, `${WANT}/10-flaky`, '#!/bin/sh\necho "no network"\nexit 1\n');
  const { checks } = await runCheckDirs(deps, 10_000);
  t.like(checks[1], { kind: 'wanted', passed: false, exitCode: 1, output: 'no network\n' });
  t.true(bootIsGood(checks));
});

test('when a check hangs, it is killed at its timeout with its children, reported timed out, and the run goes on', async (t) => {
  const { root, deps } = await tempRoot(t);
  const pidFile = path.join(root, 'child.pid');
  // A child in the background (its pid written down), then the check itself hangs; both ignore nothing.
  await script(root, `${REQ}/10-hang`, `#!/bin/sh\necho started\nsleep 300 &\necho $! > ${pidFile}\nsleep 300\n`);
  // And one that ignores SIGTERM: SIGKILL follows after the grace period.
  await script(root, `${REQ}/20-stubborn`, '#!/bin/sh\ntrap "" TERM\necho stubborn\nwhile :; do sleep 1; done\n');
  await script(root, `${REQ}/30-next`, '#!/bin/sh\nexit 0\n');
  const { checks } = await runCheckDirs(deps, 1000);
  t.like(checks[0], { name: '10-hang', passed: false, timedOut: true, exitCode: null, signal: 'SIGTERM', output: 'started\n' });
  t.like(checks[1], { name: '20-stubborn', passed: false, timedOut: true, exitCode: null, signal: 'SIGKILL', output: 'stubborn\n' });
  t.like(checks[2], { name: '30-next', passed: true });
  const child = Number(await readFile(pidFile, 'utf8'));
  t.true(child > 0);
  t.false(await stillAlive(child), 'the hung check\'s background child was killed with its process group');
});

test('when a check exits but leaves a child running that holds its output, the child is killed and the run does not wait for it', async (t) => {
  const { root, deps } = await tempRoot(t);
  const pidFile = path.join(root, 'leftover.pid');
  await script(root, `${REQ}/10-forks`, `#!/bin/sh\nsleep 300 &\necho $! > ${pidFile}\necho "forked"\nexit 0\n`);
  // A generous timeout: the run must end because the check ended, not because its deadline passed.
  const { checks } = await runCheckDirs(deps, 120_000);
  t.like(checks[0], { name: '10-forks', passed: true, exitCode: 0, timedOut: false, output: 'forked\n' });
  t.false(await stillAlive(Number(await readFile(pidFile, 'utf8'))), 'the leftover in the check\'s process group was killed');
});

test('non-executable files, directories and dot files are skipped (and reported); a check that cannot start fails', async (t) => {
  const { root, deps } = await tempRoot(t);
  await script(root, `${REQ}/10-not-exec`, '#!/bin/sh\nexit 1\n', 0o644);
  await mkdir(path.join(root, REQ, '20-a-dir'));
  await script(root, `${REQ}/.30-hidden`, '#!/bin/sh\nexit 1\n');
  await script(root, `${REQ}/40-no-interpreter`, '#!/nonexistent/interpreter\nexit 0\n');
  await script(root, `${REQ}/50-ok`, '#!/bin/sh\nexit 0\n');
  const { checks, skipped } = await runCheckDirs(deps, 10_000);
  t.deepEqual(skipped.map((s) => `${s.name}: ${s.reason}`), ['10-not-exec: not executable', '20-a-dir: not a regular file']);
  t.deepEqual(checks.map((c) => c.name), ['40-no-interpreter', '50-ok']);
  t.like(checks[0], { passed: false, exitCode: null });
  t.regex(checks[0]?.error ?? '', /ENOENT/);
});

test('checks from the vendor, admin and greenboot dirs run merged by name; /etc overrides and masks /usr/lib', async (t) => {
  const { root, deps } = await tempRoot(t);
  const log = path.join(root, 'order.log');
  const body = (tag: string): string => `#!/bin/sh\necho ${tag} >> ${log}\n`;
  await script(root, `${VENDOR_REQ}/00-cosd-running`, body('vendor-00'));
  await script(root, `${VENDOR_REQ}/20-vendor`, body('vendor-20'));
  await script(root, `${VENDOR_REQ}/30-replaced`, body('vendor-30'));
  await script(root, `${VENDOR_REQ}/40-masked`, body('vendor-40'));
  await script(root, `${REQ}/30-replaced`, body('admin-30'));
  await symlink('/dev/null', path.join(root, REQ, '40-masked'));
  await script(root, `${REQ}/10-admin`, body('admin-10'));
  // greenboot's own: *.sh run with bash even without an execute bit; other names are not greenboot checks.
  await script(root, '/etc/greenboot/check/required.d/15-greenboot.sh', `echo greenboot-15 >> ${log}\n`, 0o644);
  await script(root, '/etc/greenboot/check/required.d/README', 'not a check\n', 0o644);
  await script(root, '/etc/greenboot/check/wanted.d/00-greenboot-wanted.sh', `echo greenboot-wanted >> ${log}\nexit 1\n`, 0o644);
  const { checks, skipped } = await runCheckDirs(deps, 10_000);
  t.deepEqual((await readFile(log, 'utf8')).trim().split('\n'), ['vendor-00', 'admin-10', 'greenboot-15', 'vendor-20', 'admin-30', 'greenboot-wanted']);
  t.deepEqual(checks.map((c) => `${c.source} ${c.kind} ${c.name} ${c.passed}`), [
    'vendor required 00-cosd-running true',
    'admin required 10-admin true',
    'greenboot required 15-greenboot.sh true',
    'vendor required 20-vendor true',
    'admin required 30-replaced true',
    'greenboot wanted 00-greenboot-wanted.sh false',
  ]);
  t.deepEqual(skipped.map((s) => `${s.dir}/${s.name}: ${s.reason}`).sort(), [
    '/etc/cos-agent/check/required.d/40-masked: masked (a symlink to /dev/null)',
    '/etc/greenboot/check/required.d/README: greenboot runs only *.sh files',
    '/usr/lib/cos-agent/check/required.d/30-replaced: overridden by /etc/cos-agent/check/required.d/30-replaced',
    '/usr/lib/cos-agent/check/required.d/40-masked: masked by /etc/cos-agent/check/required.d/40-masked',
  ]);
});

test('a failing greenboot required check fails the boot like any required check', async (t) => {
  const { root, deps } = await tempRoot(t);
  await script(root, '/etc/greenboot/check/required.d/01-dns.sh', 'echo "dns down" >&2\nexit 2\n', 0o644);
  const { checks } = await runCheckDirs(deps, 10_000);
  t.like(checks[0], { source: 'greenboot', kind: 'required', passed: false, exitCode: 2, output: 'dns down\n' });
  t.false(bootIsGood(checks));
});
