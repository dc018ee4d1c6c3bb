/**
 * cosd's cron helper: prints when a node-cron expression next fires in a time zone, as one JSON line, and exits.
 *
 * The daemon runs it in a short-lived process (src/sys/cron.ts) instead of computing in-process because node-cron
 * computes every time through `Intl.DateTimeFormat`, and the first formatter makes ICU map its locale and time-zone
 * data: 8.3 MB of resident memory (measured, bench/daemon.ts), kept for the life of the process. Run once per
 * (re)arm and once per tick, it keeps that out of the idle daemon.
 *
 *   argv:   <expression> <timeZone> [<count>]        (count 1..10, default 1; times after now)
 *   stdout: {"next":["2026-01-01T03:00:00.000Z", ...]}            exit 0
 *           {"error":"invalid cron expression ..."}                exit 2
 */
import cron from 'node-cron';

export function nextRuns(expression: string, timeZone: string, count: number): Date[] {
  if (!cron.validate(expression)) throw new Error(`invalid cron expression ${JSON.stringify(expression)}`);
  // Throws a RangeError naming the zone when ICU does not know it.
  new Intl.DateTimeFormat('en-US', { timeZone });
  const task = cron.createTask(expression, () => undefined, { timezone: timeZone });
  try {
    return task.getNextRuns(count);
  } finally {
    void task.destroy();
  }
}

export function main(argv: readonly string[], out: (line: string) => void): number {
  const [expression, timeZone, countText = '1'] = argv;
  const count = Number(countText);
  if (expression === undefined || timeZone === undefined || argv.length > 3 || !Number.isInteger(count) || count < 1 || count > 10) {
    out(JSON.stringify({ error: 'usage: cron-next <expression> <timeZone> [<count 1..10>]' }));
    return 2;
  }
  try {
    out(JSON.stringify({ next: nextRuns(expression, timeZone, count).map((d) => d.toISOString()) }));
    return 0;
  } catch (e) {
    out(JSON.stringify({ error: e instanceof Error ? e.message : String(e) }));
    return 2;
  }
}

if (import.meta.main) {
  process.exitCode = main(process.argv.slice(2), (line) => process.stdout.write(`${line}\n`));
}
