/**
 * The daemon's own settings file, `/etc/cos-agent/agent.yaml`. Missing file = defaults; every problem is a
 * ConfigError naming the file, line and key.
 *
 *   schedule: "0 3 * * *"   # node-cron expression (5 or 6 fields, or @daily…); default daily at 03:00
 *   timeZone: UTC           # IANA zone the schedule is evaluated in, and the window's default zone; default UTC
 *   randomDelay: 2h         # each tick waits a random time up to this (bootc RandomizedDelaySec); 0 disables; max 24h
 *   policy: check           # none | check | stage | apply (rpm-ostree AutomaticUpdatePolicy); default check
 *   window:                 # maintenance window for apply's reboot; absent = reboot at any time
 *     days: [sat, sun]      # days the window opens on (mon..sun or monday..sunday); default every day
 *     start: "02:00"        # HH:MM local time
 *     length: 2h            # elapsed time, > 0, at most 7d; may run past midnight
 *     timeZone: Europe/Berlin   # default: the top-level timeZone
 *   inhibitors: [/run/cos-agent/inhibit, /etc/cos-agent/inhibit]   # absolute host paths; default those two
 *
 * Durations are `<number><unit>` parts, units ms, s, m, h, d (`90m`, `1h30m`, `1.5h`); a bare `0` means none.
 */
import cron from 'node-cron';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { ConfigError } from '../model/errors.ts';
import {
  DEFAULT_AGENT_SETTINGS,
  UPDATE_POLICIES,
  WEEKDAYS,
  type AgentSettings,
  type MaintenanceWindow,
  type UpdatePolicy,
  type Weekday,
} from '../model/schedule.ts';
import { readOptionalText } from '../sys/files.ts';
import type { SysRoot } from '../sys/root.ts';

export const AGENT_CONFIG_FILE = '/etc/cos-agent/agent.yaml';

const MAX_RANDOM_DELAY_MS = 24 * 3600_000;
const MAX_WINDOW_MS = 7 * 24 * 3600_000;
const TOP_KEYS = ['schedule', 'timeZone', 'randomDelay', 'policy', 'window', 'inhibitors'];
const WINDOW_KEYS = ['days', 'start', 'length', 'timeZone'];
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };
const LONG_DAYS: Record<string, Weekday> = {
  sunday: 'sun', monday: 'mon', tuesday: 'tue', wednesday: 'wed', thursday: 'thu', friday: 'fri', saturday: 'sat',
};

/** PURE: parse a duration (`2h`, `90m`, `1h30m`, `0`) to milliseconds; undefined when malformed. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return value === 0 ? 0 : undefined;
  const text = value.trim();
  if (text === '0') return 0;
  const re = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*/gy;
  let total = 0;
  let end = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    total += Number(m[1]) * (UNIT_MS[m[2] ?? ''] ?? Number.NaN);
    end = re.lastIndex;
  }
  if (end === 0 || end !== text.length || !Number.isFinite(total)) return undefined;
  return Math.round(total);
}

let canonicalZones: Set<string> | undefined;

/**
 * PURE: true when `tz` is an IANA time zone this Node's Intl knows. Canonical names are looked up in ICU's list
 * (0.3 MB of resident memory); only other names (aliases such as US/Pacific, or invalid ones) build a formatter,
 * which maps ICU's date-format data (8.3 MB, kept for the life of the process: see src/cron-next.ts).
 */
export function isValidTimeZone(tz: string): boolean {
  canonicalZones ??= new Set(['UTC', 'Etc/UTC', ...Intl.supportedValuesOf('timeZone')]);
  if (canonicalZones.has(tz)) return true;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** PURE: parse agent.yaml; every problem is a ConfigError naming the file, line and key. Empty text = defaults. */
export function parseAgentSettings(text: string, file: string): AgentSettings {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const line = e?.linePos?.[0].line ?? (e !== undefined ? lc.linePos(e.pos[0]).line : undefined);
    throw new ConfigError(file, `not valid YAML: ${e?.message ?? ''}`, line !== undefined ? { line } : {});
  }
  const lineOf = (n: unknown): number | undefined => {
    const range = (n as YamlNode | null | undefined)?.range;
    return range ? lc.linePos(range[0]).line : undefined;
  };
  const fail = (msg: string, node: unknown, key: string): never => {
    const line = lineOf(node);
    throw new ConfigError(file, msg, { ...(line !== undefined ? { line } : {}), key });
  };
  const str = (n: unknown, key: string): string => {
    if (isScalar(n) && typeof n.value === 'string' && n.value.trim() !== '') return n.value.trim();
    return fail('must be a non-empty string', n, key);
  };
  const duration = (n: unknown, key: string): number => {
    const v = isScalar(n) && (typeof n.value === 'string' || typeof n.value === 'number') ? parseDuration(n.value) : undefined;
    if (v === undefined) return fail('must be a duration such as 30m, 2h or 1h30m (units ms, s, m, h, d), or 0', n, key);
    return v;
  };
  const timeZone = (n: unknown, key: string): string => {
    const tz = str(n, key);
    if (!isValidTimeZone(tz)) fail(`unknown time zone ${tz} (expected an IANA name such as UTC or Europe/Berlin)`, n, key);
    return tz;
  };
  const keyName = (k: unknown): string => (isScalar(k) ? String(k.value) : '');

  const top = doc.contents;
  if (top === null || top === undefined) return DEFAULT_AGENT_SETTINGS;
  if (!isMap(top)) return fail('agent.yaml must be a mapping', top, '(top)');

  let schedule = DEFAULT_AGENT_SETTINGS.schedule;
  let tz = DEFAULT_AGENT_SETTINGS.timeZone;
  let randomDelayMs = DEFAULT_AGENT_SETTINGS.randomDelayMs;
  let policy: UpdatePolicy = DEFAULT_AGENT_SETTINGS.policy;
  let inhibitors = DEFAULT_AGENT_SETTINGS.inhibitors;
  let windowNode: unknown;

  for (const pair of top.items) {
    const k = keyName(pair.key);
    const v = pair.value;
    if (k === 'apiVersion' || k === 'kind') continue;
    if (!TOP_KEYS.includes(k)) fail(`unknown key (expected one of ${TOP_KEYS.join(', ')})`, pair.key, k);
    if (k === 'schedule') {
      schedule = str(v, k);
      if (!cron.validate(schedule)) {
        const why = cron.validateDetailed(schedule).errors.map((e) => e.message).join('; ');
        fail(`not a valid cron expression: ${schedule}${why ? ` (${why})` : ''}`, v, k);
      }
    } else if (k === 'timeZone') {
      tz = timeZone(v, k);
    } else if (k === 'randomDelay') {
      randomDelayMs = duration(v, k);
      if (randomDelayMs > MAX_RANDOM_DELAY_MS) fail('must be at most 24h', v, k);
    } else if (k === 'policy') {
      const p = str(v, k);
      if (!(UPDATE_POLICIES as readonly string[]).includes(p)) fail(`must be one of ${UPDATE_POLICIES.join(', ')}`, v, k);
      policy = p as UpdatePolicy;
    } else if (k === 'inhibitors') {
      if (!isSeq(v)) fail('must be a list of absolute file paths', v, k);
      inhibitors = (v as unknown as { items: unknown[] }).items.map((item, i) => {
        const p = str(item, `${k}[${i}]`);
        if (!p.startsWith('/')) fail('must be an absolute path', item, `${k}[${i}]`);
        return p;
      });
    } else {
      windowNode = v;
      if (!isMap(v)) fail('must be a mapping with start and length (and optionally days, timeZone)', v, k);
    }
  }

  let window: MaintenanceWindow | undefined;
  if (windowNode !== undefined && isMap(windowNode)) {
    let days: Weekday[] = [...WEEKDAYS];
    let start: string | undefined;
    let startMinute = 0;
    let lengthMs: number | undefined;
    let wtz = tz;
    for (const pair of windowNode.items) {
      const k = keyName(pair.key);
      const key = `window.${k}`;
      const v = pair.value;
      if (!WINDOW_KEYS.includes(k)) fail(`unknown key (expected one of ${WINDOW_KEYS.join(', ')})`, pair.key, key);
      if (k === 'days') {
        if (!isSeq(v) || v.items.length === 0) fail('must be a non-empty list of weekdays (mon, tue, … sun)', v, key);
        const set = new Set<Weekday>();
        (v as unknown as { items: unknown[] }).items.forEach((item, i) => {
          const name = str(item, `${key}[${i}]`).toLowerCase();
          const day = (WEEKDAYS as readonly string[]).includes(name) ? (name as Weekday) : LONG_DAYS[name];
          if (day === undefined) fail(`unknown weekday ${name} (expected mon, tue, wed, thu, fri, sat, sun)`, item, `${key}[${i}]`);
          set.add(day as Weekday);
        });
        days = WEEKDAYS.filter((d) => set.has(d));
      } else if (k === 'start') {
        start = str(v, key);
        const m = /^([01]?\d|2[0-3]):([0-5]\d)$/.exec(start);
        if (m === null) fail('must be a time HH:MM (00:00 to 23:59)', v, key);
        startMinute = Number(m?.[1]) * 60 + Number(m?.[2]);
      } else if (k === 'length') {
        lengthMs = duration(v, key);
        if (lengthMs <= 0 || lengthMs > MAX_WINDOW_MS) fail('must be longer than 0 and at most 7d', v, key);
      } else {
        wtz = timeZone(v, key);
      }
    }
    if (start === undefined) fail('the window needs a start (HH:MM)', windowNode, 'window.start');
    if (lengthMs === undefined) fail('the window needs a length (e.g. 2h)', windowNode, 'window.length');
    window = Object.freeze({ days: Object.freeze(days), start: start as string, startMinute, lengthMs: lengthMs as number, timeZone: wtz });
  }

  return Object.freeze({
    schedule,
    timeZone: tz,
    randomDelayMs,
    policy,
    ...(window !== undefined ? { window } : {}),
    inhibitors: Object.freeze([...inhibitors]),
  });
}

/** Read agent.yaml through the root. `file` is the root-mapped path when the file exists. */
export async function loadAgentSettings(root: SysRoot): Promise<{ settings: AgentSettings; file?: string }> {
  const file = root.path(AGENT_CONFIG_FILE);
  const text = await readOptionalText(file).catch((e: unknown) => {
    throw new ConfigError(file, `cannot read: ${(e as Error).message}`, { cause: e });
  });
  if (text === undefined) return { settings: DEFAULT_AGENT_SETTINGS };
  return { settings: parseAgentSettings(text.startsWith('\uFEFF') ? text.slice(1) : text, file), file };
}
