import test from 'ava';
import { main, nextRuns } from '../src/cron-next.ts';

const run = (argv: string[]): { code: number; doc: { next?: string[]; error?: string } } => {
  const lines: string[] = [];
  const code = main(argv, (l) => lines.push(l));
  return { code, doc: JSON.parse(lines.join('')) as { next?: string[]; error?: string } };
};

test('the next runs of a daily schedule are consecutive days at that wall-clock time in the zone', (t) => {
  const r = run(['0 3 * * *', 'Europe/Berlin', '3']);
  t.is(r.code, 0);
  const next = (r.doc.next ?? []).map((s) => new Date(s));
  t.is(next.length, 3);
  t.true((next[0]?.getTime() ?? 0) > Date.now());
  for (const d of next) {
    const local = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(d);
    t.is(local, '03:00');
  }
  // consecutive days: 23, 24 or 25 hours apart (DST)
  for (let i = 1; i < next.length; i++) t.true([23, 24, 25].includes(((next[i]?.getTime() ?? 0) - (next[i - 1]?.getTime() ?? 0)) / 3_600_000));
});

test('nicknames and 6-field expressions are node-cron\'s', (t) => {
  const [d] = nextRuns('@daily', 'UTC', 1);
  t.is(d?.toISOString().slice(11), '00:00:00.000Z');
  const [s1, s2] = nextRuns('*/10 * * * * *', 'UTC', 2);
  t.is(((s2?.getTime() ?? 0) - (s1?.getTime() ?? 0)) / 1000, 10);
});

test('an invalid expression, an unknown zone and bad usage are errors with exit 2, named', (t) => {
  t.like(run(['61 3 * * *', 'UTC']), { code: 2, doc: { error: 'invalid cron expression "61 3 * * *"' } });
  const zone = run(['0 3 * * *', 'Mars/Olympus_Mons']);
  t.is(zone.code, 2);
  t.regex(zone.doc.error ?? '', /Mars\/Olympus_Mons/);
  t.is(run(['0 3 * * *']).code, 2);
  t.is(run(['0 3 * * *', 'UTC', '0']).code, 2);
  t.is(run(['0 3 * * *', 'UTC', '11']).code, 2);
});
