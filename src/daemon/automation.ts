/**
 * Automation: the glue between the config watcher, the update scheduler and the daemon (no D-Bus in sight).
 *
 *   ConfigWatcher.onReload(next, prev) -> daemon.setConfig(next) (Config property and the jobs' config, a rejected
 *                                         config's LastError cleared) + scheduler.onConfigChanged(prev, next) (new settings; a new
 *                                         UPGRADE_IMAGE runs the policy at once)
 *   ConfigWatcher.onError(err)         -> daemon.setConfigError(err): LastError names file and line, the previous
 *                                         configuration stays in effect (the watcher keeps its snapshot)
 *   Scheduler.runAutomatic(request)    -> check:   a Check job of the configured image; resolves with its CheckReport
 *                                         upgrade: an Upgrade job of the configured image, never with a reboot
 *                                         reboot:  the daemon's reboot path (rebootStaged)
 *   a user's Check of the configured image -> scheduler.onCheckResult (under stage/apply a newer digest is staged)
 *
 * Automatic jobs are ordinary daemon jobs: the same BUSY rule, the same persisted record, properties and Completed
 * signal. The daemon's reloadConfig() delegates to `reload()` (deps.reloadConfig), so the daemon's start loads the
 * config once, through the watcher, which arms its inotify watches at the same time.
 *
 * Timers: the idle automation holds the scheduler's cron task (one timeout to the next match) and the watcher's
 * fs.watch handles, nothing else (see schedule.ts and watch.ts).
 *
 * Test-only seam: AGENT_TEST_CLOCK=manual:<ISO 8601 instant> makes the scheduler run on a ManualClock starting at that
 * instant (see testClockFromEnv; main.ts advances it on SIGUSR2). Inert (unset) on real hosts.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { AgentError, type ErrorCode } from '../model/errors.ts';
import type { AutomaticRequest, CheckReport } from '../model/schedule.ts';
import { DEFAULT_AGENT_SETTINGS } from '../model/schedule.ts';
import type { Logger } from '../sys/log.ts';
import type { SysRoot } from '../sys/root.ts';
import type { AgentDaemon } from './daemon.ts';
import { ManualClock, type SchedulerClock } from './schedule/clock.ts';
import { Scheduler, type SchedulerEvent } from './schedule/scheduler.ts';
import { RESULT, type TransactionRecord } from './transactions.ts';
import { ConfigWatcher, type WatchedSnapshot } from './watch.ts';

/** What the automation needs from the daemon. */
export type AutomationDaemon = Pick<AgentDaemon, 'check' | 'upgrade' | 'rebootStaged' | 'setConfig' | 'setConfigError' | 'subscribe' | 'stagedUpgrade'>;

export interface AutomationOptions {
  root: SysRoot;
  daemon: AutomationDaemon;
  log: Logger;
  /** Environment of the config loader (ELEMENTAL_*). */
  env: NodeJS.ProcessEnv;
  /** Default: the system clock (node-cron). */
  clock?: SchedulerClock;
  /** Uniform in [0, 1): scales the random delays; default Math.random. */
  random?: () => number;
  /** The watcher's debounce; default 100 ms. */
  debounceMs?: number;
}

/** The configured upgrade image the last cosd of this boot saw (tmpfs: a new boot starts without one). */
export const SEEN_IMAGE = '/run/cos-agent/seen-image';

/** Name of the test-only clock seam. */
export const TEST_CLOCK_ENV = 'AGENT_TEST_CLOCK';

/**
 * Test-only seam: `manual:<ISO 8601 instant>` gives a ManualClock starting there; unset gives undefined (the system
 * clock). Anything else is a USAGE error naming the variable.
 */
export function testClockFromEnv(value: string | undefined): ManualClock | undefined {
  if (value === undefined || value === '') return undefined;
  const m = /^manual:(.+)$/.exec(value);
  const start = m?.[1] !== undefined ? new Date(m[1]) : undefined;
  if (start === undefined || Number.isNaN(start.getTime())) {
    throw new AgentError('USAGE', `${TEST_CLOCK_ENV}=${JSON.stringify(value)}: expected manual:<ISO 8601 instant>, e.g. manual:2025-01-06T02:00:00Z`);
  }
  return new ManualClock(start);
}

/**
 * Test-only: move a ManualClock to its next event (the next cron match or timer) and wait for the work it starts.
 * Resolves with the new time, or null when nothing is scheduled.
 */
export async function advanceToNextEvent(clock: ManualClock, scheduler: Scheduler): Promise<Date | null> {
  const candidates = [scheduler.nextRun, ...clock.pending().timers].filter((d): d is Date => d !== null);
  if (candidates.length === 0) return null;
  const at = new Date(Math.min(...candidates.map((d) => d.getTime())));
  await clock.advanceTo(at);
  return at;
}

export class Automation {
  readonly watcher: ConfigWatcher;
  readonly scheduler: Scheduler;
  readonly #daemon: AutomationDaemon;
  readonly #log: Logger;
  readonly #unsubscribe: () => void;
  /** Waiters for the automatic jobs' records, by transaction. */
  readonly #waiting = new Map<string, (rec: TransactionRecord) => void>();
  /** The last few finished records, for a job that finished before its waiter was registered. */
  readonly #recent = new Map<string, TransactionRecord>();
  /** Transactions started here (their results are the scheduler's own, not a user's). */
  readonly #ours = new Set<string>();
  #started = false;
  #stopped = false;
  readonly #root: SysRoot;
  /** The image seen by the cosd before this one differs from the configured one: run the policy once started. */
  #imageChangedWhileDown = false;

  constructor(opts: AutomationOptions) {
    this.#daemon = opts.daemon;
    this.#log = opts.log;
    this.#root = opts.root;
    this.watcher = new ConfigWatcher(opts.root, {
      env: opts.env,
      ...(opts.debounceMs !== undefined ? { debounceMs: opts.debounceMs } : {}),
      onReload: (next, prev) => this.#onReload(next, prev),
      onError: (err) => opts.daemon.setConfigError(err),
      onWatchError: (dir, err) =>
        this.#log.warn({ dir, code: err.code ?? null, err: err.message }, 'cannot watch a config directory: changes there are seen at the next reload'),
    });
    this.scheduler = new Scheduler({
      root: opts.root,
      settings: DEFAULT_AGENT_SETTINGS,
      runAutomatic: (req) => this.#run(req),
      ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
      ...(opts.random !== undefined ? { random: opts.random } : {}),
      onEvent: (e) => this.#logEvent(e),
    });
    this.#unsubscribe = opts.daemon.subscribe({ finished: (rec, configured) => this.#onFinished(rec, configured) });
  }

  /**
   * Load every config source now (the first call also arms the watches) and hand the result to the daemon and the
   * scheduler; an invalid config goes to the daemon's LastError. The daemon's reloadConfig() calls this.
   */
  async reload(): Promise<void> {
    await this.watcher.reload();
  }

  /** Arm the schedule (no cron task under policy none). Call after the daemon has started. */
  start(): void {
    this.#started = true;
    this.scheduler.start();
    if (this.#imageChangedWhileDown) {
      this.#imageChangedWhileDown = false;
      this.scheduler.imageChanged();
    }
  }

  /**
   * The configured upgrade image as the previous cosd of this boot saw it (SEEN_IMAGE: cosd may exit when idle, and a
   * path unit starts it again when a config file changes), and record the current one.
   */
  #seenImage(current: string | undefined): string | undefined {
    const file = this.#root.path(SEEN_IMAGE);
    let seen: string | undefined;
    try {
      seen = readFileSync(file, 'utf8').replace(/\n$/, '');
    } catch {
      seen = undefined;
    }
    if (current !== seen) {
      try {
        mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
        if (current === undefined) rmSync(file, { force: true });
        else writeFileSync(file, `${current}\n`);
      } catch (e) {
        this.#log.debug({ file, err: e instanceof Error ? e.message : String(e) }, 'cannot record the configured image');
      }
    }
    return seen;
  }

  /** Stop scheduling and watching; an automatic run in progress finishes (the daemon's stop waits for its job). */
  stop(): void {
    this.#started = false;
    this.#stopped = true;
    this.scheduler.stop();
    this.watcher.close();
    this.#unsubscribe();
    for (const resolve of this.#waiting.values()) resolve(stoppedRecord());
    this.#waiting.clear();
  }

  #onReload(next: WatchedSnapshot, prev: WatchedSnapshot | undefined): void {
    for (const w of next.warnings) this.#log.warn({ warning: w }, 'configuration');
    this.#daemon.setConfig(next);
    const a = next.agent;
    const settingsChanged = prev === undefined || JSON.stringify(prev.agent) !== JSON.stringify(a);
    const imageChanged = prev !== undefined && prev.config.upgradeSource?.uri !== next.config.upgradeSource?.uri;
    if (prev === undefined || settingsChanged || imageChanged || JSON.stringify(prev.config) !== JSON.stringify(next.config)) {
      this.#log.info(
        {
          files: [...next.files],
          upgradeImage: next.config.upgradeSource?.uri ?? null,
          policy: a.policy,
          schedule: a.schedule,
          timeZone: a.timeZone,
          randomDelayMs: a.randomDelayMs,
          ...(a.window !== undefined ? { window: { days: a.window.days, start: a.window.start, lengthMs: a.window.lengthMs, timeZone: a.window.timeZone } } : {}),
        },
        prev === undefined ? 'configuration loaded' : 'configuration reloaded',
      );
    }
    const image = next.config.upgradeSource?.uri;
    const seen = this.#seenImage(image);
    if (prev === undefined && seen !== undefined && image !== undefined && seen !== image) {
      this.#log.info({ upgradeImage: image, before: seen }, 'the configured image changed while cosd was not running');
      this.#imageChangedWhileDown = true;
    }
    this.scheduler.onConfigChanged(prev, next);
  }

  /** A job finished: wake the automatic run waiting for it, or tell the scheduler about a user's check. */
  #onFinished(rec: TransactionRecord, configuredSource: boolean): void {
    const waiter = this.#waiting.get(rec.transaction);
    if (waiter !== undefined) {
      this.#waiting.delete(rec.transaction);
      waiter(rec);
      return;
    }
    this.#recent.set(rec.transaction, rec);
    for (const tx of this.#recent.keys()) {
      if (this.#recent.size <= 8) break;
      this.#recent.delete(tx);
    }
    if (this.#ours.has(rec.transaction) || !this.#started) return;
    this.scheduler.onJobFinished();
    if (rec.kind === 'check' && configuredSource && rec.result === RESULT.ok && rec.details.updateAvailable !== undefined) {
      this.scheduler.onCheckResult(this.#report(rec));
    }
  }

  async #run(req: AutomaticRequest): Promise<CheckReport | void> {
    if (this.#stopped) throw new AgentError('STATE_INVALID', `automatic ${req.action} refused: the daemon is stopping`);
    if (req.action === 'reboot') {
      this.#log.info({ trigger: req.trigger, policy: req.policy }, 'automatic reboot into the staged upgrade');
      await this.#daemon.rebootStaged();
      return;
    }
    const tx = req.action === 'check' ? await this.#daemon.check({}) : await this.#daemon.upgrade({ reboot: false });
    this.#ours.add(tx);
    try {
      this.#log.info({ transaction: tx, kind: req.action, trigger: req.trigger, policy: req.policy, ...(req.digest !== undefined ? { digest: req.digest } : {}) }, 'automatic job started');
      const rec = await this.#wait(tx);
      if (rec.result !== RESULT.ok) {
        throw new AgentError((rec.code ?? 'STAGE_FAILED') as ErrorCode, rec.error ?? `automatic ${req.action} ${tx} failed`);
      }
      return req.action === 'check' ? this.#report(rec) : undefined;
    } finally {
      this.#ours.delete(tx);
    }
  }

  #wait(tx: string): Promise<TransactionRecord> {
    const done = this.#recent.get(tx);
    if (done !== undefined) return Promise.resolve(done);
    return new Promise((resolve) => this.#waiting.set(tx, resolve));
  }

  #report(rec: TransactionRecord): CheckReport {
    const d = rec.details;
    return {
      updateAvailable: d.updateAvailable === true,
      ...(d.image !== undefined ? { image: d.image } : {}),
      ...(d.digest !== undefined ? { digest: d.digest } : {}),
      rebootPending: this.#daemon.stagedUpgrade,
    };
  }

  /** One log line per scheduler event. */
  #logEvent(e: SchedulerEvent): void {
    const log = this.#log;
    switch (e.type) {
      case 'armed':
        log.info({ schedule: e.schedule, timeZone: e.timeZone, policy: e.policy, nextRun: e.nextRun?.toISOString() ?? null }, 'automatic updates scheduled');
        break;
      case 'disarmed':
        log.info({ reason: e.reason }, e.reason === 'policy-none' ? 'automatic updates off (policy none)' : 'automatic updates stopped');
        break;
      case 'tick':
        log.info({ at: e.at.toISOString(), delayMs: e.delayMs }, 'scheduled run due');
        break;
      case 'missed':
        log.warn({ at: e.at.toISOString() }, 'a scheduled run is late (suspended host or clock step): running it now');
        break;
      case 'skipped':
        if (e.reason === 'inhibitor-unreadable') {
          log.warn({ trigger: e.trigger, reason: e.reason, file: e.file, code: e.code, err: e.message }, 'automatic run skipped: an inhibitor cannot be checked');
        } else {
          log.info({ trigger: e.trigger, reason: e.reason, ...(e.reason === 'inhibited' ? { file: e.file } : {}) }, 'automatic run skipped');
        }
        break;
      case 'request':
        log.debug({ action: e.request.action, trigger: e.request.trigger, policy: e.request.policy }, 'automatic request');
        break;
      case 'update-available':
        log.info({ trigger: e.trigger, image: e.image ?? null, digest: e.digest ?? null }, 'update available');
        break;
      case 'reboot-deferred':
        log.info({ until: e.until.toISOString() }, 'reboot deferred to the maintenance window');
        break;
      case 'failed': {
        const err = e.error instanceof AgentError ? e.error : null;
        log.warn({ action: e.request.action, trigger: e.request.trigger, code: err?.code ?? null, err: e.error instanceof Error ? e.error.message : String(e.error) }, 'automatic request failed');
        break;
      }
      case 'run-failed': {
        const code = e.error instanceof AgentError ? e.error.code : ((e.error as NodeJS.ErrnoException | null)?.code ?? null);
        log.error({ trigger: e.trigger, code, err: e.error instanceof Error ? (e.error.stack ?? e.error.message) : String(e.error) }, 'automatic run failed');
        break;
      }
      case 'cron':
        if (e.level === 'error' || e.level === 'warn') log.warn({ cron: e.message }, 'scheduler');
        else log.debug({ cron: e.message }, 'scheduler');
        break;
    }
  }
}

function stoppedRecord(): TransactionRecord {
  const now = new Date().toISOString();
  return { transaction: '', kind: 'check', result: RESULT.cancelled, code: 'STAGE_FAILED', error: 'the daemon is stopping', startedAt: now, finishedAt: now, details: {} };
}
