/**
 * The automatic-update scheduler: a node-cron task for the configured schedule, a random delay after each tick
 * (bootc's RandomizedDelaySec), inhibitor files, and the policy (rpm-ostree AutomaticUpdatePolicy):
 *
 *   none   no cron task at all.
 *   check  each run asks for a check; a found update is only reported (event `update-available`).
 *   stage  each run checks; when an update is available it asks for an upgrade (staged, never a reboot). Staging is
 *          not bound to the maintenance window: it disrupts nothing, and downloading early is the point.
 *   apply  like stage, then asks for a reboot, but only inside the maintenance window (checked when the reboot would
 *          happen, i.e. after the upgrade finished) and only while no inhibitor exists. Outside the window the reboot
 *          is deferred: one timer is armed for the next window opening (plus a random delay within the window);
 *          that run checks again (a newer image is staged first) and then reboots.
 *
 * Triggers besides the tick: a reload that changes the configured upgrade image (`onConfigChanged`, runs at once,
 * no random delay) and a check run by someone else that found a newer digest (`onCheckResult`); the policy decides
 * what follows, as above. Inhibitors are checked at the start of every run and again right before a reboot.
 *
 * Timers: the idle scheduler holds exactly one cron task (on the system clock one timeout to the next match, which
 * node-cron computes in the cron helper process) and nothing else; the random-delay timer exists only between a tick and its run, the window timer only while
 * an `apply` reboot waits for its window. `stop()` clears all of them. Time comes from a SchedulerClock, so tests run
 * on a ManualClock instead of sleeping. Nothing here knows about D-Bus: work is asked through `runAutomatic` and
 * reported through `onEvent`.
 */
import { stat as fsStat } from 'node:fs/promises';
import cron, { type ScheduledTask } from 'node-cron';
import {
  WEEKDAYS,
  type AgentSettings,
  type AutomaticRequest,
  type AutomaticTrigger,
  type CheckReport,
  type MaintenanceWindow,
  type UpdatePolicy,
} from '../../model/schedule.ts';
import type { AgentConfig } from '../../model/config.ts';
import type { SysRoot } from '../../sys/root.ts';
import { nextCronRuns } from '../../sys/cron.ts';

// ---------------------------------------------------------------------------------------------------------------
// Maintenance-window arithmetic (PURE)

const DAY_MS = 86_400_000;
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

interface LocalTime {
  year: number;
  month: number; // 1..12
  day: number;
  hour: number;
  minute: number;
  second: number;
}

/** PURE: the wall-clock time of instant `ms` in `timeZone`. */
function localTime(ms: number, timeZone: string): LocalTime {
  const out: Record<string, number> = {};
  for (const p of formatter(timeZone).formatToParts(new Date(ms))) {
    if (p.type !== 'literal') out[p.type] = Number(p.value);
  }
  return {
    year: out['year'] ?? 0,
    month: out['month'] ?? 1,
    day: out['day'] ?? 1,
    hour: out['hour'] ?? 0,
    minute: out['minute'] ?? 0,
    second: out['second'] ?? 0,
  };
}

/** PURE: UTC offset (local minus UTC, ms) of `timeZone` at instant `ms`. */
function offsetAt(ms: number, timeZone: string): number {
  const l = localTime(ms, timeZone);
  return Date.UTC(l.year, l.month - 1, l.day, l.hour, l.minute, l.second) - Math.floor(ms / 1000) * 1000;
}

/**
 * PURE: the instant at which the wall clock in `timeZone` reads `year-month-day 00:00 + minute`. A time skipped by
 * a DST jump is read with the offset before the jump (02:30 on a spring-forward day = 03:30 new time); a time that
 * occurs twice (fall back) is its first occurrence.
 */
export function zonedInstant(year: number, month: number, day: number, minute: number, timeZone: string): number {
  const wall = Date.UTC(year, month - 1, day, 0, minute);
  const before = offsetAt(wall - DAY_MS, timeZone);
  const after = offsetAt(wall + DAY_MS, timeZone);
  const valid = [...new Set([before, after])].map((o) => wall - o).filter((t) => offsetAt(t, timeZone) === wall - t);
  if (valid.length > 0) return Math.min(...valid);
  return wall - before;
}

/** Calendar date `days` after (or before, when negative) the given one, with its weekday index (0 = Sunday). */
function shiftDate(year: number, month: number, day: number, days: number): { year: number; month: number; day: number; weekday: number } {
  const d = new Date(Date.UTC(year, month - 1, day + days));
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate(), weekday: d.getUTCDay() };
}

/** Openings of the window (start instants) on local days from `fromDay` to `toDay` relative to the local date of `ms`. */
function openings(ms: number, w: MaintenanceWindow, fromDay: number, toDay: number): number[] {
  const here = localTime(ms, w.timeZone);
  const out: number[] = [];
  for (let k = fromDay; k <= toDay; k++) {
    const d = shiftDate(here.year, here.month, here.day, k);
    if (!w.days.includes(WEEKDAYS[d.weekday] ?? 'sun')) continue;
    out.push(zonedInstant(d.year, d.month, d.day, w.startMinute, w.timeZone));
  }
  return out;
}

/**
 * PURE: is `date` inside the window? The window opens on each listed day at `start` local time and stays open for
 * `lengthMs` of elapsed time, so `sat 23:00 + 2h` covers Sunday 00:00–01:00 too (it counts as Saturday's window).
 * No window (undefined) = always inside.
 */
export function inWindow(date: Date, window: MaintenanceWindow | undefined): boolean {
  if (window === undefined) return true;
  const t = date.getTime();
  const back = Math.ceil(window.lengthMs / DAY_MS) + 1;
  return openings(t, window, -back, 0).some((s) => s <= t && t < s + window.lengthMs);
}

/** PURE: the first opening of the window strictly after `date` (a window is at most 7 days away). */
export function nextWindowStart(date: Date, window: MaintenanceWindow): Date {
  const t = date.getTime();
  const next = openings(t, window, 0, 8).find((s) => s > t);
  if (next === undefined) throw new Error(`no opening of the maintenance window within 8 days after ${date.toISOString()}`);
  return new Date(next);
}

// ---------------------------------------------------------------------------------------------------------------
// Clocks

/** A running cron task. */
export interface CronHandle {
  /** The next time the task fires, or null when stopped (or, on the system clock, not yet computed). */
  nextRun(): Date | null;
  /** Resolves with the first next run once it is known (null when it could not be computed). */
  readonly ready: Promise<Date | null>;
  stop(): void;
}

/** A one-shot timer. */
export interface TimerHandle {
  cancel(): void;
}

/** Where the scheduler gets time and timers from: the system (node-cron, setTimeout) or a test clock. */
export interface SchedulerClock {
  now(): Date;
  /** Start a node-cron task of `expression` in `timeZone`; `fn` runs on every match. */
  cron(expression: string, timeZone: string, fn: () => void): CronHandle;
  /** Call `fn` once after `ms`. */
  setTimer(ms: number, fn: () => void): TimerHandle;
  /** Optional: told about each automatic run (a test clock waits for them before moving time on). */
  track?(work: Promise<unknown>): void;
}

/** A tick later than this (a suspended host, a clock stepped forward by NTP at boot) is logged as late; it still runs. */
const MISSED_TOLERANCE_MS = 5 * 60_000;
/** When the cron helper fails (it should not), the next attempt. */
const HELPER_RETRY_MS = 60_000;
/** setTimeout's longest delay; a longer wait is re-armed when it ends. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface SystemClockOptions {
  /** A tick ran more than 5 minutes after its time. */
  onMissed?: (at: Date) => void;
  onCronLog?: (level: string, message: string) => void;
  /** The next run of a schedule after now; default: node-cron in the cron helper process (src/sys/cron.ts). */
  nextRun?: (expression: string, timeZone: string) => Promise<Date>;
  /** After a failed computation, the next attempt (default 60 s). */
  retryMs?: number;
}

/**
 * The real clock. A cron task is one setTimeout to its next run, which node-cron computes in the cron helper
 * process (once when armed and once after each tick): node-cron computes through Intl, whose ICU data would
 * otherwise stay resident in the idle daemon (8.3 MB). The timer checks the wall clock when it fires: early (the
 * clock was set back, or the wait was longer than setTimeout allows) it waits again; late by more than
 * MISSED_TOLERANCE_MS (a suspended host, a clock stepped forward at boot) it is reported late and still runs, once
 * (like a systemd timer with Persistent=true): a day's check is not lost to a suspend. The next run is then computed
 * from the real time, so ticks passed while suspended are not run one by one.
 */
export function systemClock(opts: SystemClockOptions = {}): SchedulerClock {
  const retryMs = opts.retryMs ?? HELPER_RETRY_MS;
  const next = opts.nextRun ?? (async (expression: string, timeZone: string): Promise<Date> => (await nextCronRuns(expression, timeZone, 1))[0] as Date);
  return {
    now: (): Date => new Date(),
    cron(expression: string, timeZone: string, fn: () => void): CronHandle {
      let at: Date | null = null;
      let timer: ReturnType<typeof setTimeout> | undefined;
      let stopped = false;
      const wait = (ms: number, then: () => void): void => {
        timer = setTimeout(then, Math.max(1, Math.min(ms, MAX_TIMER_MS)));
      };
      const fire = (): void => {
        timer = undefined;
        if (stopped || at === null) return;
        const late = Date.now() - at.getTime();
        if (late < 0) return wait(-late, fire);
        if (late > MISSED_TOLERANCE_MS) opts.onMissed?.(at);
        fn();
        void plan();
      };
      const plan = async (): Promise<Date | null> => {
        try {
          const n = await next(expression, timeZone);
          if (stopped) return null;
          at = n;
          wait(n.getTime() - Date.now(), fire);
          return n;
        } catch (e) {
          if (stopped) return null;
          at = null;
          opts.onCronLog?.('error', `${e instanceof Error ? e.message : String(e)}; trying again in ${retryMs / 1000} s`);
          wait(retryMs, () => void plan());
          return null;
        }
      };
      const ready = plan();
      return {
        nextRun: (): Date | null => (stopped ? null : at),
        ready,
        stop: (): void => {
          stopped = true;
          at = null;
          if (timer !== undefined) clearTimeout(timer);
          timer = undefined;
        },
      };
    },
    setTimer(ms: number, fn: () => void): TimerHandle {
      const h = setTimeout(fn, Math.max(0, Math.min(ms, MAX_TIMER_MS)));
      return { cancel: (): void => clearTimeout(h) };
    },
  };
}

interface ManualCron {
  expression: string;
  timeZone: string;
  fn: () => void;
  matcher: ScheduledTask;
  stepMs: number;
}

interface ManualTimer {
  at: number;
  seq: number;
  fn: () => void;
}

/**
 * A test clock: time only moves when `advance`/`advanceTo` is called. Cron matching is node-cron's own (`match` of a
 * task that is never started), walked minute by minute (second by second for 6-field expressions); timers fire in
 * time order. `pending()` shows every armed cron task and timer.
 */
export class ManualClock implements SchedulerClock {
  #now: number;
  #seq = 0;
  readonly #crons = new Set<ManualCron>();
  readonly #timers: ManualTimer[] = [];
  /** Work started by the event being fired, innermost advance last. */
  readonly #collectors: Array<Array<Promise<unknown>>> = [];

  constructor(start: Date) {
    this.#now = start.getTime();
  }

  now(): Date {
    return new Date(this.#now);
  }

  cron(expression: string, timeZone: string, fn: () => void): CronHandle {
    const matcher = cron.createTask(expression, () => undefined, { timezone: timeZone });
    const fields = expression.trim().startsWith('@') ? 5 : expression.trim().split(/\s+/).length;
    const entry: ManualCron = { expression, timeZone, fn, matcher, stepMs: fields >= 6 ? 1000 : 60_000 };
    this.#crons.add(entry);
    // walked, so only the next 32 days are looked at
    const nextRun = (): Date | null => {
      const at = this.#crons.has(entry) ? this.#nextMatch(entry, this.#now, this.#now + 32 * DAY_MS) : null;
      return at === null ? null : new Date(at);
    };
    return {
      nextRun,
      ready: Promise.resolve(nextRun()),
      stop: (): void => {
        if (this.#crons.delete(entry)) void matcher.destroy();
      },
    };
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const timer: ManualTimer = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn };
    this.#timers.push(timer);
    return {
      cancel: (): void => {
        const i = this.#timers.indexOf(timer);
        if (i >= 0) this.#timers.splice(i, 1);
      },
    };
  }

  track(work: Promise<unknown>): void {
    this.#collectors.at(-1)?.push(work);
  }

  /** Everything armed right now. */
  pending(): { crons: Array<{ expression: string; timeZone: string }>; timers: Date[] } {
    return {
      crons: [...this.#crons].map((c) => ({ expression: c.expression, timeZone: c.timeZone })),
      timers: [...this.#timers].sort((a, b) => a.at - b.at || a.seq - b.seq).map((t) => new Date(t.at)),
    };
  }

  /** Move time forward by `ms`, firing what falls due on the way. */
  advance(ms: number): Promise<void> {
    return this.advanceTo(new Date(this.#now + ms));
  }

  /**
   * Move time forward to `target`, firing cron matches and timers in time order. After each event it waits for the
   * work the event started (see `track`), so time does not move on while a run is in progress, except when that run
   * itself calls advance (which is how a test makes a tick fall into a running job).
   */
  async advanceTo(target: Date): Promise<void> {
    const end = target.getTime();
    if (end < this.#now) throw new Error('ManualClock cannot go backwards');
    for (;;) {
      const timer = this.#timers.reduce<ManualTimer | undefined>((a, b) => (a === undefined || b.at < a.at || (b.at === a.at && b.seq < a.seq) ? b : a), undefined);
      const limit = timer !== undefined && timer.at <= end ? timer.at : end;
      let cronAt: number | null = null;
      for (const c of this.#crons) {
        const at = this.#nextMatch(c, this.#now, limit);
        if (at !== null && (cronAt === null || at < cronAt)) cronAt = at;
      }
      const started: Array<Promise<unknown>> = [];
      this.#collectors.push(started);
      try {
        if (cronAt !== null) {
          this.#now = cronAt;
          for (const c of [...this.#crons]) if (c.matcher.match(new Date(cronAt))) c.fn();
        } else if (timer !== undefined && timer.at <= end) {
          this.#now = timer.at;
          this.#timers.splice(this.#timers.indexOf(timer), 1);
          timer.fn();
        } else {
          this.#now = Math.max(this.#now, end); // a nested advance may already have gone further
          return;
        }
        await settle();
        for (let work = started.shift(); work !== undefined; work = started.shift()) {
          await work.catch(() => undefined); // only waiting here: the work reports its own failures (run-failed, failed)
          await settle();
        }
      } finally {
        this.#collectors.splice(this.#collectors.indexOf(started), 1);
      }
    }
  }

  /** First match of `c` in (after, limit], or null. */
  #nextMatch(c: ManualCron, after: number, limit: number): number | null {
    for (let t = Math.floor(after / c.stepMs) * c.stepMs + c.stepMs; t <= limit; t += c.stepMs) {
      if (c.matcher.match(new Date(t))) return t;
    }
    return null;
  }
}

/** Let pending promise callbacks and I/O completions run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

// ---------------------------------------------------------------------------------------------------------------
// Scheduler

/** Structured events for the daemon's log (one line each); nothing here logs by itself. */
export type SchedulerEvent =
  | { type: 'armed'; schedule: string; timeZone: string; policy: UpdatePolicy; nextRun: Date | null }
  | { type: 'disarmed'; reason: 'policy-none' | 'stopped' }
  | { type: 'tick'; at: Date; delayMs: number }
  | { type: 'missed'; at: Date }
  | { type: 'skipped'; trigger: AutomaticTrigger; reason: 'inhibited'; file: string }
  /** An inhibitor path that exists or may exist but cannot be checked (EACCES, ELOOP, EIO…): fail closed, skip. */
  | { type: 'skipped'; trigger: AutomaticTrigger; reason: 'inhibitor-unreadable'; file: string; code: string; message: string }
  | { type: 'skipped'; trigger: AutomaticTrigger; reason: 'busy' }
  | { type: 'request'; request: AutomaticRequest }
  | { type: 'update-available'; trigger: AutomaticTrigger; image?: string; digest?: string }
  | { type: 'reboot-deferred'; until: Date }
  | { type: 'failed'; request: AutomaticRequest; error: unknown }
  /** The automatic run itself broke (not one of its requests, which are `failed`); the scheduler goes on. */
  | { type: 'run-failed'; trigger: AutomaticTrigger; error: unknown }
  | { type: 'cron'; level: string; message: string };

export interface SchedulerOptions {
  /** Inhibitor paths are host paths read through this root. */
  root: SysRoot;
  settings: AgentSettings;
  /**
   * Do the work: `check` must resolve with a CheckReport; `upgrade` stages (never reboots); `reboot` reboots into
   * the staged slot. A rejection is reported as a `failed` event (e.g. BUSY when a manual job runs).
   */
  runAutomatic: (request: AutomaticRequest) => Promise<CheckReport | void> | CheckReport | void;
  /** Default: systemClock(). */
  clock?: SchedulerClock;
  /** Uniform in [0, 1); default Math.random. Scales the random delays. */
  random?: () => number;
  onEvent?: (event: SchedulerEvent) => void;
  /** How inhibitor paths are looked at; default fs.promises.stat (a seam for tests). */
  stat?: (path: string) => Promise<unknown>;
}

type ActivePolicy = Exclude<UpdatePolicy, 'none'>;

export class Scheduler {
  readonly #root: SysRoot;
  readonly #run: SchedulerOptions['runAutomatic'];
  readonly #clock: SchedulerClock;
  readonly #random: () => number;
  readonly #emit: (e: SchedulerEvent) => void;
  readonly #stat: (path: string) => Promise<unknown>;
  #settings: AgentSettings;
  #cron: CronHandle | undefined;
  #delay: TimerHandle | undefined;
  #window: { timer: TimerHandle; at: Date } | undefined;
  #busy: Promise<void> | undefined;
  #queued: AutomaticTrigger | undefined;
  /** An automatic run refused with BUSY (a user's job was running): run again once that job has finished. */
  #afterJob: AutomaticTrigger | undefined;
  #started = false;
  /** An upgrade staged under `apply` waits for its reboot. */
  #rebootPending = false;
  /** The digest of the last upgrade staged automatically (a second report of it starts nothing). */
  #stagedDigest: string | undefined;

  constructor(opts: SchedulerOptions) {
    this.#root = opts.root;
    this.#run = opts.runAutomatic;
    this.#emit = (e): void => {
      try {
        opts.onEvent?.(e);
      } catch {
        // a logging callback must not break scheduling
      }
    };
    this.#clock =
      opts.clock ??
      systemClock({
        onMissed: (at) => this.#emit({ type: 'missed', at }),
        onCronLog: (level, message) => this.#emit({ type: 'cron', level, message }),
      });
    this.#random = opts.random ?? Math.random;
    this.#stat = opts.stat ?? fsStat;
    this.#settings = opts.settings;
  }

  get settings(): AgentSettings {
    return this.#settings;
  }

  /** The next cron tick (before its random delay), or null when nothing is scheduled. */
  get nextRun(): Date | null {
    return this.#cron?.nextRun() ?? null;
  }

  /** What is armed or running, for status and tests. */
  get state(): { cron: boolean; delayPending: boolean; rebootWindow: Date | null; running: boolean } {
    return { cron: this.#cron !== undefined, delayPending: this.#delay !== undefined, rebootWindow: this.#window?.at ?? null, running: this.#busy !== undefined };
  }

  /** Arm the cron task (none under policy `none`). Idempotent. */
  start(): void {
    this.#started = true;
    this.#arm();
  }

  /** Clear the cron task and every timer. A run in progress finishes but arms nothing afterwards. Idempotent. */
  stop(): void {
    const wasArmed = this.#cron !== undefined;
    this.#started = false;
    this.#disarm();
    this.#cancelWindow();
    this.#queued = undefined;
    this.#afterJob = undefined;
    if (wasArmed) this.#emit({ type: 'disarmed', reason: 'stopped' });
  }

  /** Resolves when no automatic run is in progress (the random delay does not count). */
  async settled(): Promise<void> {
    while (this.#busy !== undefined) await this.#busy;
  }

  /** Replace the settings; the cron task is re-armed only when schedule, zone or policy changed. */
  update(settings: AgentSettings): void {
    const prev = this.#settings;
    this.#settings = settings;
    if (!this.#started) return;
    if (prev.schedule !== settings.schedule || prev.timeZone !== settings.timeZone || prev.policy !== settings.policy) {
      this.#disarm();
      this.#arm();
    }
    if (settings.policy !== 'apply') {
      this.#cancelWindow();
      this.#rebootPending = false;
    } else if (this.#window !== undefined && JSON.stringify(prev.window) !== JSON.stringify(settings.window)) {
      this.#cancelWindow();
      this.#deferReboot();
    }
  }

  /**
   * A reload happened (ConfigWatcher onReload): adopt the new agent settings, and when the configured upgrade image
   * changed, run the policy at once (check: report only; stage/apply: check, then upgrade).
   */
  onConfigChanged(prev: { config: AgentConfig } | undefined, next: { config: AgentConfig; agent: AgentSettings }): void {
    this.update(next.agent);
    const before = prev?.config.upgradeSource?.uri;
    const after = next.config.upgradeSource?.uri;
    if (prev === undefined || after === undefined || before === after) return;
    this.#stagedDigest = undefined;
    this.#trigger('image-changed');
  }

  /**
   * A check run outside the scheduler (a user's Check) finished. Under stage/apply a newer digest is upgraded to
   * (once per digest); under check it is only reported.
   */
  onCheckResult(report: CheckReport): void {
    if (!this.#started || this.#settings.policy === 'none' || !report.updateAvailable) return;
    if (this.#busy !== undefined) return; // the running automatic work decides on its own check
    this.#emit({ type: 'update-available', trigger: 'update-available', ...imageOf(report) });
    const policy = this.#settings.policy;
    if (policy === 'check' || (report.digest !== undefined && report.digest === this.#stagedDigest)) return;
    this.#start('update-available', () => this.#act(policy, 'update-available', report));
  }

  /**
   * A job that was not the scheduler's own finished. An automatic run it had refused with BUSY runs now, once (a
   * tick that fell into a user's upgrade is not lost until tomorrow).
   */
  onJobFinished(): void {
    const trigger = this.#afterJob;
    if (trigger === undefined || this.#busy !== undefined) return;
    this.#afterJob = undefined;
    this.#trigger(trigger);
  }

  /** Run the policy now, as a tick would after its delay (inhibitors still apply). */
  runNow(trigger: AutomaticTrigger = 'schedule'): Promise<void> {
    this.#trigger(trigger);
    return this.settled();
  }

  // -- internals ----------------------------------------------------------------------------------------------

  #arm(): void {
    if (this.#cron !== undefined) return;
    const s = this.#settings;
    if (s.policy === 'none') {
      this.#emit({ type: 'disarmed', reason: 'policy-none' });
      return;
    }
    const handle = this.#clock.cron(s.schedule, s.timeZone, () => this.#onTick());
    this.#cron = handle;
    // On the system clock the next run is known once the cron helper answered.
    void handle.ready.then((nextRun) => {
      if (this.#cron === handle) this.#emit({ type: 'armed', schedule: s.schedule, timeZone: s.timeZone, policy: s.policy, nextRun });
    });
  }

  #disarm(): void {
    this.#cron?.stop();
    this.#cron = undefined;
    this.#delay?.cancel();
    this.#delay = undefined;
  }

  #cancelWindow(): void {
    this.#window?.timer.cancel();
    this.#window = undefined;
  }

  #onTick(): void {
    const at = this.#clock.now();
    if (this.#delay !== undefined || this.#busy !== undefined) {
      this.#emit({ type: 'skipped', trigger: 'schedule', reason: 'busy' });
      return;
    }
    const delayMs = Math.floor(this.#random() * this.#settings.randomDelayMs);
    this.#emit({ type: 'tick', at, delayMs });
    if (delayMs <= 0) {
      this.#trigger('schedule');
      return;
    }
    this.#delay = this.#clock.setTimer(delayMs, () => {
      this.#delay = undefined;
      this.#trigger('schedule');
    });
  }

  /** Start the policy's run for `trigger`, or queue it (image change, window opening) / drop it (ticks) while one runs. */
  #trigger(trigger: AutomaticTrigger): void {
    if (!this.#started || this.#settings.policy === 'none') return;
    if (this.#busy !== undefined) {
      if (trigger === 'image-changed' || trigger === 'window') this.#queued = trigger;
      else this.#emit({ type: 'skipped', trigger, reason: 'busy' });
      return;
    }
    const policy = this.#settings.policy;
    this.#start(trigger, async () => {
      const report = await this.#check({ action: 'check', trigger, policy });
      if (report === undefined) {
        // the check failed: an upgrade staged earlier under apply may still be rebooted into
        if (policy === 'apply') await this.#act(policy, trigger, { updateAvailable: false });
        return;
      }
      if (report.updateAvailable) this.#emit({ type: 'update-available', trigger, ...imageOf(report) });
      if (policy !== 'check') await this.#act(policy, trigger, report);
    });
  }

  /**
   * Run `body` as the one automatic run, after the inhibitor check; then start a queued trigger. An error of the run
   * itself (its requests report their own failures) is a `run-failed` event; the scheduler goes on.
   */
  #start(trigger: AutomaticTrigger, body: () => Promise<void>): void {
    const run = (async () => {
      if (await this.#inhibited(trigger)) return;
      await body();
    })()
      .catch((error: unknown) => this.#emit({ type: 'run-failed', trigger, error }))
      .finally(() => {
        this.#busy = undefined;
        const queued = this.#queued;
        this.#queued = undefined;
        if (queued !== undefined) this.#trigger(queued);
      });
    this.#busy = run;
    this.#clock.track?.(run);
  }

  /** After a check under stage/apply: upgrade when an update is available; under apply, reboot inside the window. */
  async #act(policy: ActivePolicy, trigger: AutomaticTrigger, report: CheckReport): Promise<void> {
    if (policy === 'check') return;
    if (report.updateAvailable && (report.digest === undefined || report.digest !== this.#stagedDigest)) {
      const done = await this.#perform({ action: 'upgrade', trigger, policy, ...(report.digest !== undefined ? { digest: report.digest } : {}) });
      if (!done) return;
      this.#stagedDigest = report.digest;
      if (policy === 'apply') this.#rebootPending = true;
    }
    if (policy !== 'apply' || !(this.#rebootPending || report.rebootPending === true)) return;
    if (!this.#started) return;
    if (!inWindow(this.#clock.now(), this.#settings.window) || (await this.#inhibited(trigger))) {
      this.#deferReboot();
      return;
    }
    const ok = await this.#perform({ action: 'reboot', trigger, policy });
    if (ok) {
      this.#rebootPending = false;
      this.#cancelWindow();
    }
  }

  /** Arm the one window timer: the next opening plus a random delay that stays inside the window. */
  #deferReboot(): void {
    const w = this.#settings.window;
    if (!this.#started || w === undefined || this.#window !== undefined) return;
    this.#rebootPending = true;
    const now = this.#clock.now();
    const opens = nextWindowStart(now, w);
    const jitter = Math.floor(this.#random() * Math.min(this.#settings.randomDelayMs, w.lengthMs));
    const at = new Date(opens.getTime() + jitter);
    const timer = this.#clock.setTimer(at.getTime() - now.getTime(), () => {
      this.#window = undefined;
      this.#trigger('window');
    });
    this.#window = { timer, at };
    this.#emit({ type: 'reboot-deferred', until: at });
  }

  /** Ask for a check; a failure (or an answer that is no CheckReport) is a `failed` event and answers undefined. */
  async #check(request: AutomaticRequest): Promise<CheckReport | undefined> {
    this.#emit({ type: 'request', request });
    try {
      const out = await this.#run(request);
      if (out === undefined || out === null || typeof out.updateAvailable !== 'boolean') {
        throw new Error('runAutomatic answered a check without a CheckReport');
      }
      return out;
    } catch (error) {
      this.#emit({ type: 'failed', request, error });
      this.#noteBusy(request, error);
      return undefined;
    }
  }

  /** A run refused because another job was running is retried when that job ends (onJobFinished). */
  #noteBusy(request: AutomaticRequest, error: unknown): void {
    if ((error as { code?: unknown } | null)?.code === 'BUSY' && request.action !== 'reboot') this.#afterJob = request.trigger;
  }

  /** Ask for an upgrade or a reboot; false (and a `failed` event) when it fails. */
  async #perform(request: AutomaticRequest): Promise<boolean> {
    this.#emit({ type: 'request', request });
    try {
      await this.#run(request);
      return true;
    } catch (error) {
      this.#emit({ type: 'failed', request, error });
      this.#noteBusy(request, error);
      return false;
    }
  }

  /**
   * Whether an inhibitor holds the run back (reported as a `skipped` event naming the file): one exists, or one cannot
   * be checked for a reason other than being absent (ENOENT, ENOTDIR): that fails closed, an inhibitor we cannot see
   * is not taken for an absent one.
   */
  async #inhibited(trigger: AutomaticTrigger): Promise<boolean> {
    for (const file of this.#settings.inhibitors) {
      try {
        await this.#stat(this.#root.path(file));
        this.#emit({ type: 'skipped', trigger, reason: 'inhibited', file });
        return true;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException | null)?.code;
        if (code === 'ENOENT' || code === 'ENOTDIR') continue;
        const message = e instanceof Error ? e.message : String(e);
        this.#emit({ type: 'skipped', trigger, reason: 'inhibitor-unreadable', file, code: typeof code === 'string' ? code : 'UNKNOWN', message });
        return true;
      }
    }
    return false;
  }
}

function imageOf(report: CheckReport): { image?: string; digest?: string } {
  return { ...(report.image !== undefined ? { image: report.image } : {}), ...(report.digest !== undefined ? { digest: report.digest } : {}) };
}
