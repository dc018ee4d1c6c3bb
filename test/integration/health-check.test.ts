/**
 * `cosctl health-check` on a cOS host on loop devices (test/helpers/cosctl.ts), after an upgrade and a simulated
 * reboot into it: a good boot disarms boot assessment and records the image good; a failed required check marks the
 * boot bad (the next boot falls back). Every cosctl run passes --no-reboot; the one run that may ask for a reboot
 * calls the action with a runner that records `systemctl reboot --no-block` and never runs it (and a SIGTERM hold that
 * only records). Also: non-root is refused, a
 * failed boot that has nothing to fall back to is only reported, and the shipped check asks cosd on the bus.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { REBOOT_SIGTERM_HOLD_MS, runHealthChecks } from '../../src/actions/health.ts';
import type { HealthReport } from '../../src/actions/health-plan.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import { CommandError } from '../../src/model/errors.ts';
import { NoHooks } from '../../src/host/hooks.ts';
import type { AgentDeps } from '../../src/host/deps.ts';
import { silentLogger } from '../../src/sys/log.ts';
import { SysRoot } from '../../src/sys/root.ts';
import { SpawnRunner, type Command, type CommandResult, type Runner } from '../../src/sys/runner.ts';
import type { SigtermHold } from '../../src/sys/signals.ts';
import { cosCmdline, type CosHost } from '../helpers/cos-host.ts';
import { cosctl, cosStatus, grubList, slotSnapshot, testHost, withStateRw } from '../helpers/cosctl.ts';
import { startBus, startCosd } from '../helpers/dbus.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';

const run = promisify(execFile);
const SHIPPED_CHECK = fileURLToPath(new URL('../../packaging/check/required.d/00-cosd-running', import.meta.url));

let reg: TestRegistry;
let v2 = '';
test.before(async () => {
  reg = await startRegistry();
  v2 = await pushOsImage(reg, 'cos/os:v2', '2.0.0');
});
test.after.always(async () => {
  await reg?.stop();
});


/**
 * Upgrade to v2, then "reboot" into it: GRUB, with boot assessment armed, saves what its script saves for this try
 * (default: boot_assessment_tentative=yes, the last try; the first of 3 saves boot_assessment_tries=2) and boots active; the new boot's /proc/cmdline names active.img and /run/cos-agent starts empty.
 */
async function upgradeAndReboot(t: ExecutionContext, host: CosHost, grubSaves: string = 'boot_assessment_tentative=yes'): Promise<void> {
  const up = await cosctl(host, ['--no-daemon', 'upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`]);
  t.is(up.code, 0, up.stderr);
  const armed = await grubList(host.statePath('boot_assessment'));
  t.is(armed.get('enable_boot_assessment'), 'yes', 'the upgrade armed boot assessment');
  await withStateRw(host, () => run('grub-editenv', [host.statePath('boot_assessment'), 'set', grubSaves]));
  await writeFile(path.join(host.root, 'proc/cmdline'), cosCmdline('active', 'img'));
  await rm(path.join(host.root, 'run/cos-agent'), { recursive: true, force: true });
  const doc = await cosStatus(host, { COS_LOG_LEVEL: 'silent' });
  t.is(doc.status.booted?.slot, 'active');
  t.is(doc.status.booted?.version, '2.0.0');
}

/** A check script under the host root (`hostPath`), 0755. */
async function check(host: CosHost, hostPath: string, body: string): Promise<void> {
  const file = path.join(host.root, hostPath);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, body);
  await chmod(file, 0o755);
}

interface StateYaml { state: Record<string, Record<string, unknown>> }
const stateYaml = async (host: CosHost): Promise<StateYaml> => parseYaml(await readFile(host.statePath('state.yaml'), 'utf8')) as StateYaml;

test.serial('after an upgrade and a reboot into it, passing checks make the boot good: assessment disarmed, the image recorded good', async (t) => {
  const host = await testHost(t);
  await upgradeAndReboot(t, host);
  await check(host, '/etc/cos-agent/check/required.d/10-app', '#!/bin/sh\necho "app is up"\n');
  await check(host, '/etc/cos-agent/check/wanted.d/10-optional', '#!/bin/sh\necho "metrics endpoint down"\nexit 1\n');

  const r = await cosctl(host, ['health-check', '--json', '--no-reboot']);
  t.is(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as HealthReport;
  t.like(report, { kind: 'HealthCheckReport', good: true, requiredFailed: [], wantedFailed: ['/etc/cos-agent/check/wanted.d/10-optional'] });
  t.like(report.checks[0], { name: '10-app', kind: 'required', passed: true, exitCode: 0, output: 'app is up\n' });
  t.like(report.mark, { action: 'mark-good', result: 'done', assessmentChanged: true, slot: 'active' });
  t.false(report.reboot.requested);

  const assess = await grubList(host.statePath('boot_assessment'));
  t.deepEqual([assess.get('enable_boot_assessment'), assess.get('boot_assessment_tentative')], ['', ''], 'boot assessment disarmed');
  const state = await stateYaml(host);
  t.is(state.state.active?.digest, v2);
  t.is(state.state.active?.['upgrade-result'], 'good');
  t.like((await cosStatus(host)).status.bootAssessment, { enabled: false, tentative: false });
});

test.serial('after an upgrade and a reboot into it, a failed required check marks the boot bad (exit HEALTH_CHECK_FAILED, no reboot)', async (t) => {
  const host = await testHost(t);
  await upgradeAndReboot(t, host);
  await check(host, '/etc/cos-agent/check/required.d/10-app', '#!/bin/sh\necho "app crashed" >&2\nexit 4\n');

  const human = await cosctl(host, ['health-check', '--no-reboot']);
  t.is(human.code, EXIT_CODES.HEALTH_CHECK_FAILED.exit, human.stderr);
  t.regex(human.stdout, /^FAIL required \/etc\/cos-agent\/check\/required\.d\/10-app: exit 4/m);
  t.regex(human.stdout, /^ {7}\| app crashed$/m);
  t.regex(human.stdout, /^Boot FAILED: marked bad, the next boot falls back to passive\.$/m);
  t.regex(human.stdout, /^Not rebooting: --no-reboot/m);
  t.regex(human.stderr, /^cosctl: required health check failed: \/etc\/cos-agent\/check\/required\.d\/10-app$/m);

  const assess = await grubList(host.statePath('boot_assessment'));
  t.deepEqual([assess.get('enable_boot_assessment'), assess.get('boot_assessment_tentative')], ['yes', 'yes'], 'armed with tentative: GRUB falls back');
  t.is((await stateYaml(host)).state.active?.['upgrade-result'], 'failed');

  // --json: the same verdict as a document (marking bad again changes nothing).
  const json = await cosctl(host, ['health-check', '--json', '--no-reboot']);
  t.is(json.code, EXIT_CODES.HEALTH_CHECK_FAILED.exit);
  const report = JSON.parse(json.stdout) as HealthReport;
  t.like(report, { good: false, requiredFailed: ['/etc/cos-agent/check/required.d/10-app'], reboot: { requested: false } });
  t.like(report.mark, { action: 'mark-bad', result: 'done' });
  t.like(report.checks[0], { exitCode: 4, timedOut: false, output: 'app crashed\n' });
});

test.serial('without --no-reboot, a failed boot that was marked bad asks systemd to reboot (a recording runner: nothing reboots)', async (t) => {
  const host = await testHost(t);
  await upgradeAndReboot(t, host);
  await check(host, '/etc/cos-agent/check/required.d/10-hang', '#!/bin/sh\nsleep 300\n');

  const { deps, systemctl, events, holdSigterm, probes } = recordingDeps(host);
  const report = await runHealthChecks(deps, { timeoutMs: 1000, holdSigterm });
  t.deepEqual(probes.sort(), Object.values(host.devices).sort(), 'reading the host and marking it bad: one blkid per partition');
  t.like(report.checks[0], { name: '10-hang', passed: false, timedOut: true });
  t.like(report.mark, { action: 'mark-bad', result: 'done' });
  t.deepEqual(report.reboot, { requested: true, reason: 'marked bad: rebooting so GRUB falls back to passive' });
  t.deepEqual(systemctl, [['systemctl', 'reboot', '--no-block']], 'the reboot is queued, not waited for');
  // SIGTERM held from before the request and kept (the reboot stops the unit at once): cosctl still exits 60.
  t.deepEqual(events, [`hold ${REBOOT_SIGTERM_HOLD_MS}`, 'systemctl reboot --no-block']);
  const assess = await grubList(host.statePath('boot_assessment'));
  t.deepEqual([assess.get('enable_boot_assessment'), assess.get('boot_assessment_tentative')], ['yes', 'yes']);
});

test.serial('when the reboot request fails, the SIGTERM hold is released and the report says the reboot failed (the boot stays marked bad)', async (t) => {
  const host = await testHost(t);
  await upgradeAndReboot(t, host);
  await check(host, '/etc/cos-agent/check/required.d/10-app', '#!/bin/sh\nexit 1\n');
  const { deps, events, holdSigterm } = recordingDeps(host, { systemctlFails: true });
  const report = await runHealthChecks(deps, { timeoutMs: 10_000, holdSigterm });
  t.like(report.mark, { action: 'mark-bad', result: 'done' });
  t.false(report.reboot.requested);
  t.regex(report.reboot.reason, /^marked bad, but the reboot failed: .*Access denied/);
  t.deepEqual(events, [`hold ${REBOOT_SIGTERM_HOLD_MS}`, 'systemctl reboot --no-block', 'release']);
  t.is((await stateYaml(host)).state.active?.['upgrade-result'], 'failed');
});

test.serial('booted from passive, a failed required check is reported only (nothing to fall back to); non-root is refused', async (t) => {
  const host = await testHost(t, { booted: 'passive' });
  await check(host, '/etc/cos-agent/check/required.d/10-app', '#!/bin/sh\nexit 1\n');
  const before = await slotSnapshot(host);

  const r = await cosctl(host, ['health-check', '--json', '--no-reboot']);
  t.is(r.code, EXIT_CODES.HEALTH_CHECK_FAILED.exit, r.stderr);
  const report = JSON.parse(r.stdout) as HealthReport;
  t.like(report.mark, { action: 'none', result: 'skipped' });
  t.regex((report.mark as { message: string }).message, /not booted from active \(the running image is in passive\): there is nothing to fall back to/);
  t.like(report.reboot, { requested: false });
  t.deepEqual(await slotSnapshot(host), before, 'slots and GRUB blocks untouched');

  const nobody = await cosctl(host, ['health-check', '--no-reboot'], {}, { uid: 65534 });
  t.is(nobody.code, EXIT_CODES.ACCESS_DENIED.exit, nobody.stderr);
  t.regex(nobody.stderr, /health-check marks the boot good or bad .*run it as root/);
  t.is(nobody.stdout, '');
});

test.serial('the shipped check 00-cosd-running fails while cosd is not on the bus and passes once it answers', async (t) => {
  const bus = await startBus();
  t.teardown(() => bus.stop());
  const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: bus.address };
  const absent = await run('sh', [SHIPPED_CHECK], { env }).then(() => null, (e: { code?: number; stderr?: string }) => e);
  t.not(absent, null, 'fails without cosd');
  t.not(absent?.code, 0);

  const host = await testHost(t);
  const cosd = await startCosd(bus, host);
  t.teardown(() => cosd.stop());
  const present = await run('sh', [SHIPPED_CHECK], { env });
  t.is(present.stdout, '');
});

/**
 * Deps whose runner records `systemctl` (never runs it) and runs everything else for real, and a SIGTERM hold that
 * only records: `events` has both, in order ('hold <ms>', 'release', 'systemctl ...').
 */
function recordingDeps(host: CosHost, opts: { systemctlFails?: boolean } = {}): { deps: AgentDeps; systemctl: string[][]; events: string[]; holdSigterm: (ms: number) => SigtermHold; probes: string[] } {
  const real = new SpawnRunner();
  const systemctl: string[][] = [];
  const events: string[] = [];
  const probes: string[] = [];
  const runner: Runner = {
    run(cmd: Command): Promise<CommandResult> {
      if (cmd.argv[0] === 'blkid') probes.push(cmd.argv[cmd.argv.length - 1] as string);
      if (cmd.argv[0] === 'systemctl') {
        systemctl.push([...cmd.argv]);
        events.push(cmd.argv.join(' '));
        if (opts.systemctlFails === true) {
          return Promise.reject(new CommandError(cmd.description, cmd.argv, { exitCode: 1, signal: null, stderrTail: 'Failed to reboot system via logind: Access denied' }));
        }
        return Promise.resolve({ exitCode: 0, stdout: '', stderr: '' });
      }
      return real.run(cmd);
    },
  };
  const holdSigterm = (ms: number): SigtermHold => {
    events.push(`hold ${ms}`);
    return { received: false, release: () => events.push('release') };
  };
  const deps: AgentDeps = {
    root: new SysRoot(host.root), runner, log: silentLogger, hooks: new NoHooks(), env: { ...process.env, ...host.env },
    now: () => new Date(), testDisk: host.loop,
  };
  return { deps, systemctl, events, holdSigterm, probes };
}

test.serial('a failed try that is not the last (the first of 3): not marked, a reboot so GRUB takes the next try; GRUB and records untouched', async (t) => {
  const host = await testHost(t);
  await upgradeAndReboot(t, host, 'boot_assessment_tries=2');
  t.like((await cosStatus(host)).status.bootAssessment, { enabled: true, tentative: false, triesLeft: 2 });
  await check(host, '/etc/cos-agent/check/required.d/10-app', '#!/bin/sh\nexit 1\n');
  const before = await slotSnapshot(host);
  const { deps, systemctl, events, holdSigterm } = recordingDeps(host);
  const report = await runHealthChecks(deps, { timeoutMs: 10_000, holdSigterm });
  t.false(report.good);
  t.like(report.mark, { action: 'none', result: 'skipped' });
  t.deepEqual(report.reboot, { requested: true, reason: 'this try failed; GRUB tries active 2 more times before it falls back to passive' });
  t.deepEqual(systemctl, [['systemctl', 'reboot', '--no-block']]);
  t.deepEqual(events, [`hold ${REBOOT_SIGTERM_HOLD_MS}`, 'systemctl reboot --no-block']);
  t.deepEqual(await slotSnapshot(host), before, 'the countdown is GRUB\'s: nothing written');
  t.not((await stateYaml(host)).state.active?.['upgrade-result'], 'failed');
});

test.serial('a failed check on an active that is not under boot assessment (no upgrade being tried) is reported only: no mark, no reboot', async (t) => {
  const host = await testHost(t);
  await check(host, '/etc/cos-agent/check/required.d/10-app', '#!/bin/sh\nexit 1\n');
  const before = await slotSnapshot(host);
  const { deps, systemctl, events, holdSigterm } = recordingDeps(host);
  const report = await runHealthChecks(deps, { timeoutMs: 10_000, holdSigterm });
  t.like(report.mark, { action: 'none', result: 'skipped' });
  t.like(report.reboot, { requested: false });
  t.regex(report.reboot.reason, /not under boot assessment/);
  t.deepEqual(systemctl, []);
  t.deepEqual(events, [], 'no reboot, no SIGTERM hold');
  t.deepEqual(await slotSnapshot(host), before);
});
