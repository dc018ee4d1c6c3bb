/** The maintenance-window arithmetic (window.ts): inWindow, nextWindowStart and zonedInstant, across days and DST. */
import test from 'ava';
import { parseAgentSettings } from '../../../src/config/agent-settings.ts';
import { inWindow, nextWindowStart, zonedInstant } from '../../../src/daemon/schedule/window.ts';
import type { MaintenanceWindow } from '../../../src/model/schedule.ts';

const at = (iso: string): Date => new Date(iso);
const win = (yaml: string): MaintenanceWindow => {
  const w = parseAgentSettings(`window:\n${yaml}`, 'agent.yaml').window;
  if (w === undefined) throw new Error('no window');
  return w;
};

test('a window is open from its start (inclusive) for its length (exclusive) on the listed days', (t) => {
  const w = win('  days: [wed]\n  start: "02:00"\n  length: 2h\n');
  t.false(inWindow(at('2026-06-03T01:59:59Z'), w)); // Wednesday
  t.true(inWindow(at('2026-06-03T02:00:00Z'), w));
  t.true(inWindow(at('2026-06-03T03:59:59Z'), w));
  t.false(inWindow(at('2026-06-03T04:00:00Z'), w));
  t.false(inWindow(at('2026-06-04T02:30:00Z'), w), 'Thursday is not listed');
  t.true(inWindow(at('2026-06-10T02:30:00Z'), w), 'the next Wednesday');
  t.true(inWindow(at('2026-06-04T02:30:00Z'), undefined), 'no window = always');
});

test('a window that starts before midnight stays open after it, and counts as the day it opened', (t) => {
  const w = win('  days: [sat]\n  start: "23:00"\n  length: 2h\n');
  t.false(inWindow(at('2026-06-06T22:59:00Z'), w)); // Saturday
  t.true(inWindow(at('2026-06-06T23:00:00Z'), w));
  t.true(inWindow(at('2026-06-07T00:30:00Z'), w), 'Sunday 00:30 belongs to Saturday\'s window');
  t.false(inWindow(at('2026-06-07T01:00:00Z'), w));
  t.false(inWindow(at('2026-06-07T23:30:00Z'), w), 'Sunday\'s own 23:00 does not open');
  t.false(inWindow(at('2026-06-06T00:30:00Z'), w), 'Saturday 00:30 would be Friday\'s window');
});

test('a window longer than a day covers the following days too', (t) => {
  const w = win('  days: [fri]\n  start: "20:00"\n  length: 2d\n');
  t.true(inWindow(at('2026-06-07T19:59:00Z'), w)); // Sunday, 47:59 after Friday 20:00
  t.false(inWindow(at('2026-06-07T20:00:00Z'), w));
  t.false(inWindow(at('2026-06-05T19:59:00Z'), w));
});

test('days and start are evaluated in the window\'s time zone, not in UTC', (t) => {
  const w = win('  days: [sat]\n  start: "00:30"\n  length: 1h\n  timeZone: Europe/Berlin\n');
  // Saturday 00:30 in Berlin (CET, +1) is Friday 23:30 UTC
  t.true(inWindow(at('2026-01-09T23:45:00Z'), w));
  t.false(inWindow(at('2026-01-10T00:45:00Z'), w), 'Saturday 00:45 UTC is 01:45 in Berlin');
  const tokyo = win('  start: "09:00"\n  length: 1h\n  timeZone: Asia/Tokyo\n');
  t.true(inWindow(at('2026-01-10T00:00:00Z'), tokyo));
  t.false(inWindow(at('2026-01-10T09:00:00Z'), tokyo));
});

test('on the spring-forward day in Europe/Berlin a start inside the skipped hour opens right after the jump', (t) => {
  // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC)
  t.is(zonedInstant(2026, 3, 29, 150, 'Europe/Berlin'), Date.parse('2026-03-29T01:30:00Z'), '02:30 read with the old offset = 03:30 CEST');
  const w = win('  days: [sun]\n  start: "02:00"\n  length: 2h\n  timeZone: Europe/Berlin\n');
  t.false(inWindow(at('2026-03-29T00:59:59Z'), w), '01:59:59 CET');
  t.true(inWindow(at('2026-03-29T01:00:00Z'), w), '03:00 CEST');
  t.true(inWindow(at('2026-03-29T02:59:59Z'), w), '04:59:59 CEST: the length is elapsed time');
  t.false(inWindow(at('2026-03-29T03:00:00Z'), w));
  const early = win('  days: [sun]\n  start: "01:00"\n  length: 3h\n  timeZone: Europe/Berlin\n');
  t.true(inWindow(at('2026-03-29T02:30:00Z'), early), '04:30 CEST is 2.5 h after 01:00 CET');
  t.false(inWindow(at('2026-03-29T03:00:00Z'), early), '05:00 CEST is 3 h after 01:00 CET');
  // the Sunday before and after are ordinary: 02:00 CET = 01:00 UTC, 02:00 CEST = 00:00 UTC
  t.true(inWindow(at('2026-03-22T01:00:00Z'), w));
  t.true(inWindow(at('2026-04-05T00:00:00Z'), w));
  t.false(inWindow(at('2026-04-05T02:00:00Z'), w));
});

test('on the fall-back day in Europe/Berlin a start in the repeated hour opens at its first occurrence', (t) => {
  // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:30 happens at 00:30 and 01:30 UTC
  t.is(zonedInstant(2026, 10, 25, 150, 'Europe/Berlin'), Date.parse('2026-10-25T00:30:00Z'));
  const w = win('  days: [sun]\n  start: "02:30"\n  length: 1h\n  timeZone: Europe/Berlin\n');
  t.false(inWindow(at('2026-10-25T00:29:59Z'), w));
  t.true(inWindow(at('2026-10-25T00:30:00Z'), w), 'first 02:30 (CEST)');
  t.true(inWindow(at('2026-10-25T01:15:00Z'), w), '02:15 CET, 45 min later');
  t.false(inWindow(at('2026-10-25T01:30:00Z'), w), 'the second 02:30 (CET) does not reopen it');
});

test('the next window opening is the first start strictly after the given time, on a listed day, across DST', (t) => {
  const w = win('  days: [sat, sun]\n  start: "02:00"\n  length: 2h\n  timeZone: Europe/Berlin\n');
  t.is(nextWindowStart(at('2026-03-25T12:00:00Z'), w).toISOString(), '2026-03-28T01:00:00.000Z', 'Saturday 02:00 CET');
  t.is(nextWindowStart(at('2026-03-28T01:00:00Z'), w).toISOString(), '2026-03-29T01:00:00.000Z', 'Sunday: 02:00 does not exist, 03:00 CEST');
  t.is(nextWindowStart(at('2026-03-29T02:00:00Z'), w).toISOString(), '2026-04-04T00:00:00.000Z', 'next Saturday 02:00 CEST');
  const daily = win('  start: "23:30"\n  length: 1h\n');
  t.is(nextWindowStart(at('2026-12-31T23:45:00Z'), daily).toISOString(), '2027-01-01T23:30:00.000Z', 'across the year end');
});
