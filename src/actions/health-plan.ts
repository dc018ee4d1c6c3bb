/**
 * PURE: which health checks run, in which order, what their results mean, and what follows (boot-assessment.md 2:
 * greenboot's layout and semantics). health.ts does the I/O.
 *
 * Directories, for each kind (required first, then wanted):
 *   /usr/lib/cos-agent/check/<kind>.d   vendor: shipped with the package or the OS image
 *   /etc/cos-agent/check/<kind>.d       admin: overrides a vendor check of the same file name (systemd drop-in rule);
 *                                       a symlink to /dev/null there masks it
 *   /etc/greenboot/check/<kind>.d       greenboot's own: its scripts run as greenboot runs them (`bash FILE`, only
 *                                       `*.sh`, whatever their mode), so a host's existing greenboot checks keep working
 * In the cos-agent directories a check is an executable regular file, run directly; anything else is skipped (and
 * reported as skipped). Dot files are ignored everywhere (editor and package-manager leftovers).
 *
 * Order: the checks of one kind from all three directories, merged and sorted by file name (byte order, as `LC_ALL=C
 * sort`), so `05-x` in /etc runs before `10-y` in /usr/lib; on equal names greenboot's runs after cos-agent's (those
 * are different checks: greenboot's directory is its own namespace, never an override of ours).
 *
 * Required checks are strict: any failure (non-zero exit, a signal, a timeout, cannot start) fails the boot. Unlike
 * greenboot, which stops at the first failed required script, every check runs: each is bounded by its timeout, and
 * the report names every failure at once. Wanted checks: failures are logged and reported, never fail the boot.
 */
import { AgentError, type ErrorCode } from '../model/errors.ts';

export type CheckKind = 'required' | 'wanted';
export type CheckSource = 'vendor' | 'admin' | 'greenboot';

export const CHECK_KINDS: readonly CheckKind[] = ['required', 'wanted'];

/** The check directories of one kind, in precedence order (host paths; health.ts maps them through the root). */
export function checkDirs(kind: CheckKind): Array<{ dir: string; source: CheckSource }> {
  return [
    { dir: `/usr/lib/cos-agent/check/${kind}.d`, source: 'vendor' },
    { dir: `/etc/cos-agent/check/${kind}.d`, source: 'admin' },
    { dir: `/etc/greenboot/check/${kind}.d`, source: 'greenboot' },
  ];
}

/** Default per-check timeout. */
export const DEFAULT_CHECK_TIMEOUT_SEC = 60;
/** The environment variable that sets the per-check timeout (seconds; the unit can set it in a drop-in). */
export const CHECK_TIMEOUT_ENV = 'COS_HEALTH_CHECK_TIMEOUT';
const MAX_CHECK_TIMEOUT_SEC = 3600;
/** Output kept per check (its tail). */
export const CHECK_OUTPUT_BYTES = 4096;

/** PURE: the per-check timeout in ms from the environment; a malformed value is a USAGE error naming it. */
export function checkTimeoutMs(env: NodeJS.ProcessEnv): number {
  const raw = env[CHECK_TIMEOUT_ENV];
  if (raw === undefined || raw.trim() === '') return DEFAULT_CHECK_TIMEOUT_SEC * 1000;
  const sec = /^\d+(\.\d+)?$/.test(raw.trim()) ? Number(raw.trim()) : Number.NaN;
  if (!(sec > 0 && sec <= MAX_CHECK_TIMEOUT_SEC)) {
    throw new AgentError('USAGE', `${CHECK_TIMEOUT_ENV}=${JSON.stringify(raw)}: must be a number of seconds, more than 0 and at most ${MAX_CHECK_TIMEOUT_SEC}`);
  }
  return Math.round(sec * 1000);
}

/** One entry of a check directory, as health.ts found it (lstat, and stat through a symlink). */
export interface DirEntry {
  name: string;
  /** file: a regular file (directly or through a symlink); masked: a symlink to /dev/null; other: anything else. */
  type: 'file' | 'masked' | 'other';
  /** Any execute bit set (files only). */
  executable: boolean;
}

export interface DirListing {
  dir: string;
  source: CheckSource;
  kind: CheckKind;
  /** null: the directory does not exist (normal: most hosts have no greenboot directory). */
  entries: DirEntry[] | null;
}

export interface PlannedCheck {
  name: string;
  dir: string;
  kind: CheckKind;
  source: CheckSource;
  /** Host path of the file. */
  path: string;
  /** How it runs: [path] or, for greenboot's, ['bash', path]. Host paths: health.ts re-roots them. */
  interpreter: 'bash' | null;
}

export interface SkippedCheck {
  name: string;
  dir: string;
  kind: CheckKind;
  reason: string;
}

export interface CheckPlan {
  /** Required checks, then wanted, each sorted by name. */
  checks: PlannedCheck[];
  skipped: SkippedCheck[];
}

const byteOrder = (a: string, b: string): number => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return Buffer.compare(x, y);
};

/** PURE: the checks to run from the directory listings (any order of listings; see the file comment for the rules). */
export function planChecks(listings: readonly DirListing[]): CheckPlan {
  const checks: PlannedCheck[] = [];
  const skipped: SkippedCheck[] = [];
  const sourceRank: Record<CheckSource, number> = { vendor: 0, admin: 1, greenboot: 2 };
  for (const kind of CHECK_KINDS) {
    const mine = listings.filter((l) => l.kind === kind).sort((a, b) => sourceRank[a.source] - sourceRank[b.source]);
    const admin = new Map<string, { dir: string; entry: DirEntry }>();
    for (const l of mine) if (l.source === 'admin') for (const e of l.entries ?? []) if (!e.name.startsWith('.')) admin.set(e.name, { dir: l.dir, entry: e });
    const runnable: PlannedCheck[] = [];
    for (const l of mine) {
      for (const e of l.entries ?? []) {
        if (e.name.startsWith('.')) continue;
        const skip = (reason: string): void => {
          skipped.push({ name: e.name, dir: l.dir, kind, reason });
        };
        const path = `${l.dir}/${e.name}`;
        if (l.source === 'greenboot') {
          if (!e.name.endsWith('.sh')) skip('greenboot runs only *.sh files');
          else if (e.type !== 'file') skip(e.type === 'masked' ? 'masked (a symlink to /dev/null)' : 'not a regular file');
          else runnable.push({ name: e.name, dir: l.dir, kind, source: l.source, path, interpreter: 'bash' });
          continue;
        }
        if (l.source === 'vendor') {
          const over = admin.get(e.name);
          if (over !== undefined) {
            skip(over.entry.type === 'masked' ? `masked by ${over.dir}/${e.name}` : `overridden by ${over.dir}/${e.name}`);
            continue;
          }
        }
        if (e.type === 'masked') skip('masked (a symlink to /dev/null)');
        else if (e.type !== 'file') skip('not a regular file');
        else if (!e.executable) skip('not executable');
        else runnable.push({ name: e.name, dir: l.dir, kind, source: l.source, path, interpreter: null });
      }
    }
    runnable.sort((a, b) => byteOrder(a.name, b.name) || sourceRank[a.source] - sourceRank[b.source]);
    checks.push(...runnable);
  }
  return { checks, skipped };
}

/** The result of one check, as reported. */
export interface CheckResult {
  name: string;
  dir: string;
  kind: CheckKind;
  source: CheckSource;
  passed: boolean;
  /** Exit code; null when a signal ended it or it never started. */
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  durationMs: number;
  /** The last CHECK_OUTPUT_BYTES of its stdout and stderr. */
  output: string;
  outputTruncated: boolean;
  /** Why it could not start, if so. */
  error?: string;
}

/** PURE: a check passed when it exited 0 on its own, in time. */
export function checkPassed(r: Pick<CheckResult, 'exitCode' | 'signal' | 'timedOut' | 'error'>): boolean {
  return r.exitCode === 0 && r.signal === null && !r.timedOut && r.error === undefined;
}

/** PURE: the boot is good when every required check passed (none at all: good, as greenboot with empty dirs). */
export function bootIsGood(results: readonly Pick<CheckResult, 'kind' | 'passed'>[]): boolean {
  return results.every((r) => r.kind === 'wanted' || r.passed);
}

/** What marking the boot did ('none': a failed try that is not the last is not marked: GRUB takes the next try). */
export type MarkResult =
  | { action: 'none'; result: 'skipped'; message: string }
  | { action: 'mark-good' | 'mark-bad'; result: 'done'; assessmentChanged: boolean; slot: 'active' | 'passive' | null; warnings: string[] }
  | { action: 'mark-good' | 'mark-bad'; result: 'refused'; message: string }
  | { action: 'mark-good' | 'mark-bad'; result: 'error'; code: ErrorCode | null; message: string };

/**
 * PURE: after a failed boot, whether to reboot (so GRUB's boot assessment takes the fallback). Only when the failure
 * was recorded with mark-bad: that is when active runs and passive holds an image that booted before (the host
 * model's decideMark). Refused (booted from passive or recovery, or nothing to fall back to): a reboot would run the
 * same image again, so the failure is reported instead. Marking failed (an error): not recorded, so a reboot could
 * loop into the same image; reported instead. `--no-reboot` keeps the mark and only skips the reboot.
 */
export function rebootDecision(mark: MarkResult, noReboot: boolean): { reboot: boolean; reason: string } {
  if (mark.action === 'none') return { reboot: false, reason: mark.message };
  if (mark.action !== 'mark-bad') return { reboot: false, reason: 'the boot is good' };
  if (mark.result === 'refused') return { reboot: false, reason: 'the boot was not marked bad, so a reboot would run the same image again' };
  if (mark.result === 'error') return { reboot: false, reason: 'marking the boot bad failed, so a reboot could run the same image again' };
  if (noReboot) return { reboot: false, reason: '--no-reboot: marked bad, the next boot falls back to passive' };
  return { reboot: true, reason: 'marked bad: rebooting so GRUB falls back to passive' };
}

/**
 * PURE: what a failed boot does, from the host model (greenboot's semantics, with boot assessment's N tries):
 *  - not running active: nothing to fall back to from here (a reboot runs the same choice again): reported only;
 *  - active, not under boot assessment (no upgrade being tried: greenboot reboots only while its boot counter is
 *    set): reported only; `cosctl mark-bad` falls back by hand;
 *  - active, under assessment, tries left: not marked (marking bad would skip the tries left); a reboot lets GRUB's
 *    countdown take the next try;
 *  - active, its last try (tentative): marked bad (its record says failed) and a reboot, into the fallback.
 * `noReboot` keeps the mark and only skips the reboot.
 */
export function failurePlan(
  host: { running: string | null; assessment: { enabled: boolean; tentative: boolean; triesLeft: number | null } },
  noReboot: boolean,
): { markBad: boolean; reboot: boolean; reason: string } {
  if (host.running !== 'active') {
    return { markBad: false, reboot: false, reason: `not booted from active (the running image is in ${host.running ?? 'no slot'}): there is nothing to fall back to from here` };
  }
  if (!host.assessment.enabled) {
    return { markBad: false, reboot: false, reason: 'this boot is not under boot assessment (no upgrade is being tried); `cosctl mark-bad` falls back by hand' };
  }
  if (host.assessment.tentative) return { markBad: true, reboot: !noReboot, reason: 'the last try failed: the next boot falls back to passive' };
  const left = host.assessment.triesLeft ?? 1;
  const reason = `this try failed; GRUB tries active ${left} more time${left === 1 ? '' : 's'} before it falls back to passive`;
  return { markBad: false, reboot: !noReboot, reason: noReboot ? `--no-reboot: ${reason}` : reason };
}

export const HEALTH_API_VERSION = 'io.costoolkit.agent/v1';
export const HEALTH_KIND = 'HealthCheckReport';

export interface HealthReport {
  apiVersion: typeof HEALTH_API_VERSION;
  kind: typeof HEALTH_KIND;
  /** Every required check passed. */
  good: boolean;
  timeoutSec: number;
  checks: CheckResult[];
  skipped: SkippedCheck[];
  /** Names (dir/name) of the failed required and wanted checks. */
  requiredFailed: string[];
  wantedFailed: string[];
  mark: MarkResult;
  reboot: { requested: boolean; reason: string };
}

/** PURE: the error cosctl exits with for a report (null: exit 0). A failed required check wins over a mark error. */
export function reportError(report: HealthReport): AgentError | null {
  if (!report.good) {
    return new AgentError('HEALTH_CHECK_FAILED', `required health check${report.requiredFailed.length === 1 ? '' : 's'} failed: ${report.requiredFailed.join(', ')}`);
  }
  if (report.mark.result === 'error') return new AgentError(report.mark.code ?? 'STATE_INVALID', `health checks passed, but marking the boot good failed: ${report.mark.message}`);
  return null;
}

function outcome(r: CheckResult): string {
  if (r.error !== undefined) return `could not start: ${r.error}`;
  if (r.timedOut) return `timed out after ${(r.durationMs / 1000).toFixed(1)} s (killed)`;
  if (r.signal !== null) return `killed by ${r.signal}`;
  return r.exitCode === 0 ? 'passed' : `exit ${r.exitCode}`;
}

/** PURE: the human report: one line per check, the output tail of failed ones, skipped files, the verdict. */
export function renderHealthReport(report: HealthReport): string {
  const lines: string[] = [];
  if (report.checks.length === 0) lines.push('No health checks found.');
  for (const r of report.checks) {
    lines.push(`${r.passed ? 'ok  ' : 'FAIL'} ${r.kind.padEnd(8)} ${r.dir}/${r.name}: ${outcome(r)} (${r.durationMs} ms)`);
    if (!r.passed && r.output.trim() !== '') {
      for (const l of r.output.trimEnd().split('\n').slice(-10)) lines.push(`       | ${l}`);
    }
  }
  for (const s of report.skipped) lines.push(`skip ${s.kind.padEnd(8)} ${s.dir}/${s.name}: ${s.reason}`);
  if (report.good) {
    lines.push(report.mark.result === 'done'
      ? `Boot is good: ${report.mark.assessmentChanged ? 'boot assessment disarmed' : 'the running image is marked good'}.`
      : `Boot is good, but marking it failed: ${report.mark.message}.`);
  } else {
    lines.push(report.mark.result === 'done'
      ? 'Boot FAILED: marked bad, the next boot falls back to passive.'
      : report.mark.result === 'skipped' ? `Boot FAILED: ${report.mark.message}.` : `Boot FAILED: not marked bad: ${report.mark.message}.`);
    lines.push(report.reboot.requested ? 'Rebooting.' : `Not rebooting: ${report.reboot.reason}.`);
  }
  if (report.wantedFailed.length > 0) lines.push(`Wanted checks failed (the boot is not failed for them): ${report.wantedFailed.join(', ')}.`);
  return `${lines.join('\n')}\n`;
}
