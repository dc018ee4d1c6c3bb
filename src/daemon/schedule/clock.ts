/**
 * Clocks of the scheduler: the SchedulerClock interface (now, cron tasks, one-shot timers), the real clock
 * (`systemClock`: one setTimeout to the next cron match, which node-cron computes in the cron helper process) and the
 * test clock (`ManualClock`: time moves only when a test advances it; node-cron's own matching, timers in time order).
 */
import cron, { type ScheduledTask } from 'node-cron';
import { nextCronRuns } from '../../sys/cron.ts';

const DAY_MS = 86_400_000;

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
