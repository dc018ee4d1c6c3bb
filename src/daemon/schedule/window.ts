/**
 * Maintenance-window arithmetic (PURE): whether an instant is inside a window, the next opening of a window, and
 * the wall-clock/time-zone conversions they need (Intl; a DST jump reads a skipped start with the offset before the
 * jump, a repeated one at its first occurrence). The scheduler (scheduler.ts) decides with these when an `apply`
 * reboot may happen and when a deferred one is due.
 */
import { WEEKDAYS, type MaintenanceWindow } from '../../model/schedule.ts';

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
