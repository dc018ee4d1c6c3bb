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
 * node-cron computes in the cron helper process) and nothing else; the random-delay timer exists only between a tick
 * and its run, the window timer only while an `apply` reboot waits for its window. `stop()` clears all of them. Time
 * comes from a SchedulerClock (clock.ts), so tests run on a ManualClock instead of sleeping; the maintenance-window
 * arithmetic is window.ts. Nothing here knows about D-Bus: work is asked through `runAutomatic` and reported through
 * `onEvent`.
 */
import { stat as fsStat } from 'node:fs/promises';
import {
  type AgentSettings,
  type AutomaticRequest,
  type AutomaticTrigger,
  type CheckReport,
  type UpdatePolicy,
} from '../../model/schedule.ts';
import type { AgentConfig } from '../../model/config.ts';
import type { SysRoot } from '../../sys/root.ts';
import { systemClock, type CronHandle, type SchedulerClock, type TimerHandle } from './clock.ts';
import { inWindow, nextWindowStart } from './window.ts';

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

  /** A tick now, as the cron task's own (its random delay applies): the run a wake timer started cosd for. */
  tick(): void {
    if (this.#started && this.#cron !== undefined) this.#onTick();
  }

  /** The configured image changed while cosd was not running: run the policy as a reload would. */
  imageChanged(): void {
    this.#stagedDigest = undefined;
    this.#trigger('image-changed');
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
