/**
 * Boot health checks (greenboot's layout and semantics, see health-plan.ts for the rules): list the check
 * directories through the root, run each check in its own process group with a timeout, then decide the boot:
 *   - every required check passed: markBooted(good) (the running image's record becomes good; boot assessment is
 *     disarmed when the image under assessment runs);
 *   - a required check failed (health-plan.ts failurePlan): under boot assessment, a reboot (unless `noReboot`) so
 *     GRUB takes the next try, and on the last try markBooted(bad) first, so the record says failed and the reboot
 *     falls back; not under assessment, or not booted from active, the failure is reported and nothing reboots.
 *     The reboot is queued (`systemctl reboot --no-block`) with SIGTERM held, so cosctl still exits 60 (see below).
 * Never throws for a failed check: the report says what happened; cosctl maps it to an exit code (reportError).
 */
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../model/errors.ts';
import { runInProcessGroup } from '../sys/process-group.ts';
import { holdSigterm, type SigtermHold } from '../sys/signals.ts';
import type { AgentDeps } from '../host/deps.ts';
import { markBooted } from './mark.ts';
import { loadActionConfig } from '../host/config.ts';
import { readHostOnce } from '../host/bootchooser.ts';
import { withDiscovery } from '../host/access.ts';
import { assessmentState } from '../host/boot-model.ts';
import {
  bootIsGood,
  CHECK_KINDS,
  CHECK_OUTPUT_BYTES,
  checkDirs,
  checkPassed,
  DEFAULT_CHECK_TIMEOUT_SEC,
  HEALTH_API_VERSION,
  HEALTH_KIND,
  planChecks,
  failurePlan,
  rebootDecision,
  type CheckResult,
  type DirEntry,
  type DirListing,
  type HealthReport,
  type MarkResult,
  type PlannedCheck,
  type SkippedCheck,
} from './health-plan.ts';

export interface HealthCheckOptions {
  /** Per-check timeout; default 60 s. */
  timeoutMs?: number;
  /** Mark a failed boot bad but do not reboot. */
  noReboot?: boolean;
  /** Test seam: holds SIGTERM around the reboot request (default sys/signals.ts holdSigterm, on this process). */
  holdSigterm?: (ms: number) => SigtermHold;
}

/**
 * How long SIGTERM is held once the reboot is requested: the reboot's stop job for this unit comes at once, and
 * cosctl only has its report to print and its exit status to give (well under a second); a cosctl stuck past it
 * still ends by the SIGTERM.
 */
export const REBOOT_SIGTERM_HOLD_MS = 15_000;

/** The reboot request: queued with systemd (a D-Bus call, never reboot(2) ourselves), not waited for. */
export const REBOOT_ARGV: readonly string[] = ['systemctl', 'reboot', '--no-block'];

/** One directory through the root: null when it does not exist. */
async function listDir(real: string): Promise<DirEntry[] | null> {
  let names: string[];
  try {
    names = await readdir(real);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw new AgentError('COMMAND_FAILED', `cannot list health checks in ${real}: ${(e as Error).message}`, { cause: e });
  }
  const out: DirEntry[] = [];
  for (const name of names) {
    const file = path.join(real, name);
    const l = await lstat(file).catch(() => null);
    if (l === null) continue; // removed meanwhile
    if (l.isSymbolicLink() && (await readlink(file).catch(() => '')) === '/dev/null') {
      out.push({ name, type: 'masked', executable: false });
      continue;
    }
    // Through a symlink: what it points to (a dangling link is "other").
    const s = l.isSymbolicLink() ? await stat(file).catch(() => null) : l;
    if (s !== null && s.isFile()) out.push({ name, type: 'file', executable: (s.mode & 0o111) !== 0 });
    else out.push({ name, type: 'other', executable: false });
  }
  return out;
}

async function runCheck(deps: AgentDeps, c: PlannedCheck, timeoutMs: number): Promise<CheckResult> {
  const file = deps.root.path(c.path);
  const r = await runInProcessGroup({
    argv: c.interpreter === 'bash' ? ['bash', file] : [file],
    timeoutMs,
    outputBytes: CHECK_OUTPUT_BYTES,
    cwd: '/',
    // What a check may want to know; it runs on the host (the root prefix is for tests and chroots).
    env: { COS_HEALTH_CHECK_KIND: c.kind, COS_ROOT: deps.root.prefix },
  });
  return {
    name: c.name,
    dir: c.dir,
    kind: c.kind,
    source: c.source,
    passed: checkPassed(r),
    exitCode: r.exitCode,
    signal: r.signal,
    timedOut: r.timedOut,
    durationMs: r.durationMs,
    output: r.output,
    outputTruncated: r.outputTruncated,
    ...(r.error !== undefined ? { error: r.error } : {}),
  };
}

/** The host model's view of this boot, and what a failure does in it (failurePlan); unreadable: reported only. */
async function readFailurePlan(deps: AgentDeps, noReboot: boolean): Promise<ReturnType<typeof failurePlan>> {
  try {
    const { config } = await loadActionConfig(deps);
    const host = await readHostOnce(deps, config);
    return failurePlan({ running: host.state.running, assessment: assessmentState(host.facts) }, noReboot);
  } catch (e) {
    return { markBad: false, reboot: false, reason: `the host could not be read (${e instanceof Error ? e.message : String(e)}): reported only` };
  }
}

async function mark(deps: AgentDeps, good: boolean): Promise<MarkResult> {
  const action = good ? 'mark-good' : 'mark-bad';
  try {
    const o = await markBooted(deps, good);
    return { action, result: 'done', assessmentChanged: o.assessmentChanged, slot: o.slot, warnings: o.warnings };
  } catch (e) {
    // The host model's refusal (decideMark): not booted from active, or nothing that booted to fall back to.
    if (e instanceof AgentError && e.code === 'NOT_SUPPORTED') return { action, result: 'refused', message: e.message };
    return { action, result: 'error', code: e instanceof AgentError ? e.code : null, message: e instanceof Error ? e.message : String(e) };
  }
}

/** List the check directories through the root and run every planned check, in order (no marking, no reboot). */
export async function runCheckDirs(deps: AgentDeps, timeoutMs: number): Promise<{ checks: CheckResult[]; skipped: SkippedCheck[] }> {
  const listings: DirListing[] = [];
  for (const kind of CHECK_KINDS) {
    for (const { dir, source } of checkDirs(kind)) listings.push({ dir, source, kind, entries: await listDir(deps.root.path(dir)) });
  }
  const plan = planChecks(listings);
  for (const s of plan.skipped) deps.log.info({ check: `${s.dir}/${s.name}`, kind: s.kind, reason: s.reason }, 'health check skipped');

  const checks: CheckResult[] = [];
  for (const c of plan.checks) {
    deps.log.debug({ check: c.path, kind: c.kind }, 'health check starting');
    const r = await runCheck(deps, c, timeoutMs);
    checks.push(r);
    const fields = { check: c.path, kind: c.kind, exitCode: r.exitCode, signal: r.signal, timedOut: r.timedOut, durationMs: r.durationMs, ...(r.error !== undefined ? { error: r.error } : {}) };
    if (r.passed) deps.log.info(fields, 'health check passed');
    else if (c.kind === 'required') deps.log.error({ ...fields, output: r.output }, 'required health check failed');
    else deps.log.warn({ ...fields, output: r.output }, 'wanted health check failed (the boot is not failed for it)');
  }
  return { checks, skipped: plan.skipped };
}

/** Run the checks, mark the boot good or bad, and reboot into the fallback after a failure marked bad (see the file comment). */
export async function runHealthChecks(deps: AgentDeps, opts: HealthCheckOptions = {}): Promise<HealthReport> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_CHECK_TIMEOUT_SEC * 1000;
  const { checks, skipped } = await runCheckDirs(deps, timeoutMs);
  const good = bootIsGood(checks);
  const failed = (kind: 'required' | 'wanted'): string[] => checks.filter((r) => r.kind === kind && !r.passed).map((r) => `${r.dir}/${r.name}`);
  let marked: MarkResult;
  let decision: { reboot: boolean; reason: string };
  if (good) {
    marked = await mark(deps, true);
    decision = rebootDecision(marked, opts.noReboot === true);
  } else {
    // Reading the host and marking it bad: one probe pass of the block devices (made after the checks ran).
    const hostDeps = withDiscovery(deps);
    const plan = await readFailurePlan(hostDeps, opts.noReboot === true);
    if (plan.markBad) {
      marked = await mark(hostDeps, false);
      decision = rebootDecision(marked, opts.noReboot === true);
    } else {
      marked = { action: 'none', result: 'skipped', message: plan.reason };
      decision = { reboot: plan.reboot, reason: plan.reason };
    }
  }
  const report: HealthReport = {
    apiVersion: HEALTH_API_VERSION,
    kind: HEALTH_KIND,
    good,
    timeoutSec: timeoutMs / 1000,
    checks,
    skipped,
    requiredFailed: failed('required'),
    wantedFailed: failed('wanted'),
    mark: marked,
    reboot: { requested: false, reason: decision.reason },
  };
  deps.log.info({ good, mark: marked.result, reboot: decision.reboot, reason: decision.reason }, 'health checks done');
  if (decision.reboot) {
    // The reboot stops this unit (cos-agent-healthcheck.service) while cosctl still runs: `--no-block` so cosctl does
    // not wait for the reboot job (which would end it first), and SIGTERM held from before the request (the stop job
    // can come before systemctl returns) so cosctl prints its report and exits HEALTH_CHECK_FAILED (60): the unit's
    // Result is exit-code, its status 60, not a SIGTERM.
    const hold = (opts.holdSigterm ?? holdSigterm)(REBOOT_SIGTERM_HOLD_MS);
    try {
      await deps.runner.run({ argv: REBOOT_ARGV, description: 'rebooting after a failed health check, so boot assessment falls back' });
      report.reboot = { requested: true, reason: decision.reason };
    } catch (e) {
      hold.release();
      // The boot is marked bad either way: the next boot falls back, whenever it happens.
      const message = e instanceof Error ? e.message : String(e);
      deps.log.error({ err: message }, 'reboot after a failed health check failed');
      report.reboot = { requested: false, reason: `marked bad, but the reboot failed: ${message}` };
    }
  }
  return report;
}
