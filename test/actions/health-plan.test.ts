/** The pure part of the health checks: which run, in which order, what they decide (src/actions/health-plan.ts). */
import test from 'ava';
import {
  bootIsGood,
  checkDirs,
  checkPassed,
  checkTimeoutMs,
  planChecks,
  failurePlan,
  rebootDecision,
  renderHealthReport,
  reportError,
  type CheckKind,
  type CheckResult,
  type CheckSource,
  type DirEntry,
  type DirListing,
  type HealthReport,
  type MarkResult,
} from '../../src/actions/health-plan.ts';
import { AgentError } from '../../src/model/errors.ts';

const exe = (name: string): DirEntry => ({ name, type: 'file', executable: true });
const plain = (name: string): DirEntry => ({ name, type: 'file', executable: false });

/** Listings for all six directories; `entries` by "<source>/<kind>" (absent: the directory does not exist). */
function listings(entries: Partial<Record<`${CheckSource}/${CheckKind}`, DirEntry[]>>): DirListing[] {
  const out: DirListing[] = [];
  for (const kind of ['required', 'wanted'] as const) {
    for (const { dir, source } of checkDirs(kind)) out.push({ dir, source, kind, entries: entries[`${source}/${kind}`] ?? null });
  }
  return out;
}

test('the directories are cos-agent vendor, cos-agent admin and greenboot\'s, for required and wanted', (t) => {
  t.deepEqual(checkDirs('required').map((d) => d.dir), [
    '/usr/lib/cos-agent/check/required.d',
    '/etc/cos-agent/check/required.d',
    '/etc/greenboot/check/required.d',
  ]);
  t.deepEqual(checkDirs('wanted').map((d) => d.source), ['vendor', 'admin', 'greenboot']);
  t.true(checkDirs('wanted').every((d) => d.dir.endsWith('/wanted.d')));
});

test('when the checks come from several directories, they run merged in byte order of name, required before wanted', (t) => {
  const plan = planChecks(listings({
    'vendor/required': [exe('20-net'), exe('00-cosd-running')],
    'admin/required': [exe('10-app'), exe('Z-upper')],
    'greenboot/required': [exe('05-dns.sh')],
    'vendor/wanted': [exe('01-w')],
    'greenboot/wanted': [plain('00-g.sh')],
  }));
  t.deepEqual(plan.checks.map((c) => `${c.kind} ${c.path}`), [
    'required /usr/lib/cos-agent/check/required.d/00-cosd-running',
    'required /etc/greenboot/check/required.d/05-dns.sh',
    'required /etc/cos-agent/check/required.d/10-app',
    'required /usr/lib/cos-agent/check/required.d/20-net',
    'required /etc/cos-agent/check/required.d/Z-upper', // byte order: '2' < 'Z'
    'wanted /etc/greenboot/check/wanted.d/00-g.sh',
    'wanted /usr/lib/cos-agent/check/wanted.d/01-w',
  ]);
  t.deepEqual(plan.skipped, []);
});

test('when /etc/cos-agent has a check of the same name, it overrides the vendor one; a /dev/null symlink masks it', (t) => {
  const plan = planChecks(listings({
    'vendor/required': [exe('00-cosd-running'), exe('10-a'), exe('20-b')],
    'admin/required': [exe('10-a'), { name: '00-cosd-running', type: 'masked', executable: false }, plain('20-b')],
  }));
  t.deepEqual(plan.checks.map((c) => c.path), ['/etc/cos-agent/check/required.d/10-a']);
  t.deepEqual(plan.skipped.map((s) => `${s.dir}/${s.name}: ${s.reason}`).sort(), [
    '/etc/cos-agent/check/required.d/00-cosd-running: masked (a symlink to /dev/null)',
    '/etc/cos-agent/check/required.d/20-b: not executable',
    '/usr/lib/cos-agent/check/required.d/00-cosd-running: masked by /etc/cos-agent/check/required.d/00-cosd-running',
    '/usr/lib/cos-agent/check/required.d/10-a: overridden by /etc/cos-agent/check/required.d/10-a',
    '/usr/lib/cos-agent/check/required.d/20-b: overridden by /etc/cos-agent/check/required.d/20-b',
  ]);
});

test('when greenboot has a check of the same name, both run (its directory is its own namespace), cos-agent\'s first', (t) => {
  const plan = planChecks(listings({ 'admin/wanted': [exe('10-x.sh')], 'greenboot/wanted': [exe('10-x.sh')] }));
  t.deepEqual(plan.checks.map((c) => c.source), ['admin', 'greenboot']);
});

test('in the cos-agent dirs only executable regular files run, directly; greenboot\'s *.sh run with bash whatever their mode', (t) => {
  const plan = planChecks(listings({
    'admin/required': [plain('10-not-exec'), { name: 'sub', type: 'other', executable: false }, exe('20-ok'), exe('.hidden')],
    'greenboot/required': [plain('01-check.sh'), exe('02-not-sh'), { name: '03-dir.sh', type: 'other', executable: false }],
  }));
  t.deepEqual(plan.checks.map((c) => [c.name, c.interpreter]), [['01-check.sh', 'bash'], ['20-ok', null]]);
  t.deepEqual(plan.skipped.map((s) => `${s.name}: ${s.reason}`), [
    '10-not-exec: not executable',
    'sub: not a regular file',
    '02-not-sh: greenboot runs only *.sh files',
    '03-dir.sh: not a regular file',
  ]);
});

test('when no directory exists there is nothing to run and nothing skipped', (t) => {
  t.deepEqual(planChecks(listings({})), { checks: [], skipped: [] });
});

test('a check passes only when it exited 0 on its own, in time', (t) => {
  const base = { exitCode: 0, signal: null, timedOut: false };
  t.true(checkPassed(base));
  t.false(checkPassed({ ...base, exitCode: 1 }));
  t.false(checkPassed({ ...base, exitCode: null, signal: 'SIGKILL' }));
  t.false(checkPassed({ ...base, timedOut: true }), 'a check that exited 0 just as its deadline passed is still a timeout');
  t.false(checkPassed({ ...base, exitCode: null, error: 'spawn EACCES' }));
});

test('the boot is good when every required check passed; wanted failures never fail it', (t) => {
  t.true(bootIsGood([]));
  t.true(bootIsGood([{ kind: 'required', passed: true }, { kind: 'wanted', passed: false }]));
  t.false(bootIsGood([{ kind: 'required', passed: true }, { kind: 'required', passed: false }]));
});

const done = (action: 'mark-good' | 'mark-bad'): MarkResult => ({ action, result: 'done', assessmentChanged: true, slot: 'active', warnings: [] });

test('a reboot follows only a failed boot that was marked bad, and not with --no-reboot', (t) => {
  t.deepEqual(rebootDecision(done('mark-bad'), false), { reboot: true, reason: 'marked bad: rebooting so GRUB falls back to passive' });
  t.false(rebootDecision(done('mark-bad'), true).reboot);
  t.regex(rebootDecision(done('mark-bad'), true).reason, /--no-reboot/);
  t.false(rebootDecision(done('mark-good'), false).reboot, 'a good boot never reboots');
});

test('when the failed boot could not be marked bad (not booted from active, nothing to fall back to, an error), nothing reboots', (t) => {
  const refused = rebootDecision({ action: 'mark-bad', result: 'refused', message: 'mark-bad only applies when booted from active' }, false);
  t.false(refused.reboot);
  t.regex(refused.reason, /same image/);
  const failed = rebootDecision({ action: 'mark-bad', result: 'error', code: 'BUSY', message: 'an upgrade holds the lock' }, false);
  t.false(failed.reboot);
});

test('the per-check timeout defaults to 60 s and comes from COS_HEALTH_CHECK_TIMEOUT (seconds); a bad value is USAGE', (t) => {
  t.is(checkTimeoutMs({}), 60_000);
  t.is(checkTimeoutMs({ COS_HEALTH_CHECK_TIMEOUT: '' }), 60_000);
  t.is(checkTimeoutMs({ COS_HEALTH_CHECK_TIMEOUT: '1' }), 1000);
  t.is(checkTimeoutMs({ COS_HEALTH_CHECK_TIMEOUT: ' 2.5 ' }), 2500);
  for (const bad of ['0', '-1', '1m', 'abc', '3601']) {
    const e = t.throws(() => checkTimeoutMs({ COS_HEALTH_CHECK_TIMEOUT: bad }), { instanceOf: AgentError });
    t.is(e?.code, 'USAGE', bad);
  }
});

function result(name: string, kind: CheckKind, passed: boolean, extra: Partial<CheckResult> = {}): CheckResult {
  return {
    name, dir: `/etc/cos-agent/check/${kind}.d`, kind, source: 'admin', passed, exitCode: passed ? 0 : 1, signal: null, timedOut: false,
    durationMs: 5, output: passed ? '' : 'it broke\n', outputTruncated: false, ...extra,
  };
}

function report(checks: CheckResult[], mark: MarkResult): HealthReport {
  const failed = (kind: CheckKind): string[] => checks.filter((c) => c.kind === kind && !c.passed).map((c) => `${c.dir}/${c.name}`);
  return {
    apiVersion: 'io.costoolkit.agent/v1', kind: 'HealthCheckReport', good: bootIsGood(checks), timeoutSec: 60, checks, skipped: [],
    requiredFailed: failed('required'), wantedFailed: failed('wanted'), mark, reboot: { requested: false, reason: rebootDecision(mark, true).reason },
  };
}

test('cosctl exits 0 for a good boot, HEALTH_CHECK_FAILED for a failed one, and the mark\'s own code when marking good failed', (t) => {
  t.is(reportError(report([result('a', 'required', true), result('w', 'wanted', false)], done('mark-good'))), null);
  const failed = reportError(report([result('a', 'required', false), result('b', 'required', false, { timedOut: true, exitCode: null, signal: 'SIGTERM' })], done('mark-bad')));
  t.is(failed?.code, 'HEALTH_CHECK_FAILED');
  t.regex(failed?.message ?? '', /\/etc\/cos-agent\/check\/required\.d\/a, \/etc\/cos-agent\/check\/required\.d\/b/);
  const refusedToo = reportError(report([result('a', 'required', false)], { action: 'mark-bad', result: 'refused', message: 'no fallback' }));
  t.is(refusedToo?.code, 'HEALTH_CHECK_FAILED', 'a failed boot is a failure whether or not it could be marked');
  const markFailed = reportError(report([result('a', 'required', true)], { action: 'mark-good', result: 'error', code: 'BUSY', message: 'locked' }));
  t.is(markFailed?.code, 'BUSY');
});

test('the human report names every check, the output of failed ones, timeouts, and what was decided', (t) => {
  const text = renderHealthReport(report([
    result('00-ok', 'required', true),
    result('10-hang', 'required', false, { timedOut: true, exitCode: null, signal: 'SIGTERM', durationMs: 1000 }),
    result('20-w', 'wanted', false),
  ], { action: 'mark-bad', result: 'refused', message: 'mark-bad only applies when booted from active' }));
  t.regex(text, /^ok {3}required \/etc\/cos-agent\/check\/required\.d\/00-ok: passed/m);
  t.regex(text, /^FAIL required .*10-hang: timed out after 1\.0 s \(killed\)/m);
  t.regex(text, /^ {7}\| it broke$/m);
  t.regex(text, /^Boot FAILED: not marked bad: mark-bad only applies when booted from active\.$/m);
  t.regex(text, /^Not rebooting: /m);
  t.regex(text, /^Wanted checks failed .*20-w\.$/m);
  t.regex(renderHealthReport(report([], done('mark-good'))), /^No health checks found\.\nBoot is good: boot assessment disarmed\.\n$/);
});

test('failurePlan: reported only off active or outside an assessment; a try that is not the last reboots unmarked; the last try is marked bad', (t) => {
  const armed = (tentative: boolean, triesLeft: number | null) => ({ enabled: true, tentative, triesLeft });
  t.like(failurePlan({ running: 'passive', assessment: armed(false, 3) }, false), { markBad: false, reboot: false });
  t.like(failurePlan({ running: 'recovery', assessment: armed(true, 0) }, false), { markBad: false, reboot: false });
  t.like(failurePlan({ running: 'active', assessment: { enabled: false, tentative: false, triesLeft: null } }, false), { markBad: false, reboot: false });
  t.deepEqual(failurePlan({ running: 'active', assessment: armed(false, 2) }, false),
    { markBad: false, reboot: true, reason: 'this try failed; GRUB tries active 2 more times before it falls back to passive' });
  t.like(failurePlan({ running: 'active', assessment: armed(false, 1) }, true), { markBad: false, reboot: false, reason: '--no-reboot: this try failed; GRUB tries active 1 more time before it falls back to passive' });
  t.deepEqual(failurePlan({ running: 'active', assessment: armed(true, 0) }, false), { markBad: true, reboot: true, reason: 'the last try failed: the next boot falls back to passive' });
  t.like(failurePlan({ running: 'active', assessment: armed(true, 0) }, true), { markBad: true, reboot: false });
});
