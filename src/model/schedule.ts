/**
 * Types of the daemon's own settings (`/etc/cos-agent/agent.yaml`: schedule, automatic-update policy, maintenance
 * window, inhibitors) and of what the config watcher and the scheduler hand to the daemon. Pure data.
 */
import type { AgentConfig } from './config.ts';

/**
 * What automatic work may do (rpm-ostree `AutomaticUpdatePolicy` semantics):
 * - `none`: nothing automatic (no cron task at all);
 * - `check`: resolve the image and report whether an update is available (no writes);
 * - `stage`: upgrade the passive slot when an update is available, never reboot;
 * - `apply`: like `stage`, then reboot into it, but only inside the maintenance window.
 */
export type UpdatePolicy = 'none' | 'check' | 'stage' | 'apply';
export const UPDATE_POLICIES: readonly UpdatePolicy[] = ['none', 'check', 'stage', 'apply'];

/** Weekday names as written in agent.yaml; index = JavaScript `getDay()` (0 = Sunday). */
export type Weekday = 'sun' | 'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat';
export const WEEKDAYS: readonly Weekday[] = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

/**
 * A recurring maintenance window: it opens on each listed day at `start` (wall-clock time in `timeZone`) and stays
 * open for `lengthMs` of elapsed time, so it may run past midnight (the day that counts is the day it opens).
 */
export interface MaintenanceWindow {
  /** Days on which the window opens (sorted, no duplicates); all seven when agent.yaml has no `days`. */
  readonly days: readonly Weekday[];
  /** `HH:MM`, as written. */
  readonly start: string;
  /** `start` as minutes after local midnight. */
  readonly startMinute: number;
  /** Length of the window in milliseconds (> 0). */
  readonly lengthMs: number;
  /** IANA time zone of `start` and `days`. */
  readonly timeZone: string;
}

/** The daemon's settings (agent.yaml), with defaults filled in. */
export interface AgentSettings {
  /** node-cron expression of the automatic run (5 fields, or 6 with seconds, or a nickname such as `@daily`). */
  readonly schedule: string;
  /** IANA time zone the schedule is evaluated in (top-level `timeZone`, default UTC). */
  readonly timeZone: string;
  /** Upper bound of the random delay after each tick, in ms (0 = run at the tick). */
  readonly randomDelayMs: number;
  readonly policy: UpdatePolicy;
  /** Maintenance window for `apply`'s reboot; absent = a reboot is allowed at any time. */
  readonly window?: MaintenanceWindow;
  /** Host paths of inhibitor files: while one exists, automatic work is skipped. */
  readonly inhibitors: readonly string[];
}

/** Default schedule: daily at 03:00 (plus the random delay, as bootc's timer spreads a fleet with RandomizedDelaySec). */
export const DEFAULT_SCHEDULE = '0 3 * * *';
/** Default random delay: 2 h (bootc `RandomizedDelaySec=2h`). */
export const DEFAULT_RANDOM_DELAY_MS: number = 2 * 3600_000;
export const DEFAULT_POLICY: UpdatePolicy = 'check';
export const DEFAULT_TIME_ZONE = 'UTC';
export const DEFAULT_INHIBITORS: readonly string[] = ['/run/cos-agent/inhibit', '/etc/cos-agent/inhibit'];

export const DEFAULT_AGENT_SETTINGS: AgentSettings = Object.freeze({
  schedule: DEFAULT_SCHEDULE,
  timeZone: DEFAULT_TIME_ZONE,
  randomDelayMs: DEFAULT_RANDOM_DELAY_MS,
  policy: DEFAULT_POLICY,
  inhibitors: DEFAULT_INHIBITORS,
});

/** One consistent snapshot of every config source, as the watcher publishes it. */
export interface WatchedConfig {
  /** The effective upgrade config (src/config/load.ts). */
  readonly config: AgentConfig;
  /** Warnings of the config loader (ignored keys and files), with file and line. */
  readonly warnings: readonly string[];
  /** Every file that was read (root-mapped paths): the config sources, agent.yaml and policy.yaml when present. */
  readonly files: readonly string[];
  /** The daemon's own settings (agent.yaml). */
  readonly agent: AgentSettings;
  readonly loadedAt: Date;
}

/** Why the scheduler asks for automatic work. */
export type AutomaticTrigger =
  | 'schedule' // the cron tick (after its random delay)
  | 'image-changed' // a reload changed the configured upgrade image
  | 'update-available' // a check (run by someone else) reported a newer digest
  | 'window'; // the maintenance window opened while an upgrade staged by `apply` waits for its reboot

/**
 * Work the scheduler asks the daemon to do. `check` must answer with a CheckReport; `upgrade` stages the configured
 * image into the passive slot without rebooting; `reboot` reboots into the staged slot (only asked under `apply`,
 * inside the window, with no inhibitor present).
 */
export interface AutomaticRequest {
  readonly action: 'check' | 'upgrade' | 'reboot';
  readonly trigger: AutomaticTrigger;
  readonly policy: Exclude<UpdatePolicy, 'none'>;
  /** For `upgrade`: the digest the check reported (the daemon may pin the upgrade to it). */
  readonly digest?: string;
}

/** What a check found; `CheckOutcome` of src/actions/check.ts fits. */
export interface CheckReport {
  readonly updateAvailable: boolean;
  readonly image?: string;
  readonly digest?: string;
  /** An upgrade is staged but not booted yet (the next boot switches slots). */
  readonly rebootPending?: boolean;
}
