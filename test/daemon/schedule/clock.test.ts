/** The scheduler's real clock (clock.ts systemClock): cron tasks armed from the cron helper's answer, late runs, retries. */
import test from 'ava';
import { systemClock } from '../../../src/daemon/schedule/clock.ts';

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 600 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
  if (!cond()) throw new Error('condition not met within 15 s');
}

test('systemClock: a task fires at the time node-cron gave, then asks for the next one', async (t) => {
  const asked: Date[] = [];
  let calls = 0;
  const clock = systemClock({
    nextRun: async () => {
      calls++;
      const d = new Date(Date.now() + (calls === 1 ? 30 : 3_600_000));
      asked.push(d);
      return d;
    },
  });
  let fired = 0;
  const h = clock.cron('* * * * *', 'UTC', () => fired++);
  t.teardown(() => h.stop());
  t.is(h.nextRun(), null, 'not known before the helper answered');
  t.is((await h.ready)?.getTime(), asked[0]?.getTime());
  await until(() => calls === 2);
  t.is(fired, 1);
  t.true(Date.now() >= (asked[0]?.getTime() ?? Infinity), 'never fired before its time');
  t.is(h.nextRun()?.getTime(), asked[1]?.getTime());
});

test('systemClock: a run more than 5 minutes late (a suspended host) is reported late and still runs, once', async (t) => {
  const missed: Date[] = [];
  let calls = 0;
  const late = new Date(Date.now() - 6 * 60_000);
  const clock = systemClock({ nextRun: async () => (++calls === 1 ? late : new Date(Date.now() + 3_600_000)), onMissed: (d) => missed.push(d) });
  let fired = 0;
  const h = clock.cron('* * * * *', 'UTC', () => fired++);
  t.teardown(() => h.stop());
  await until(() => calls === 2);
  t.is(fired, 1);
  t.deepEqual(missed, [late]);
  t.true((h.nextRun()?.getTime() ?? 0) > Date.now(), 'the next run is computed from now');
});

test('systemClock: a failed computation is logged and retried; stop cancels everything', async (t) => {
  const logs: string[] = [];
  let calls = 0;
  const clock = systemClock({
    retryMs: 20,
    onCronLog: (level, m) => logs.push(`${level}: ${m}`),
    nextRun: async () => {
      if (++calls === 1) throw new Error('helper died');
      return new Date(Date.now() + 3_600_000);
    },
  });
  const h = clock.cron('0 3 * * *', 'UTC', () => undefined);
  t.is(await h.ready, null);
  t.regex(logs[0] ?? '', /^error: helper died; trying again in 0.02 s$/);
  await until(() => h.nextRun() !== null);
  t.is(calls, 2);
  h.stop();
  t.is(h.nextRun(), null);
});

test('systemClock: the real cron helper rejects an unknown time zone, naming it', async (t) => {
  const logs: string[] = [];
  const clock = systemClock({ retryMs: 3_600_000, onCronLog: (_l, m) => logs.push(m) });
  const h = clock.cron('0 3 * * *', 'Mars/Olympus_Mons', () => undefined);
  t.teardown(() => h.stop());
  t.is(await h.ready, null);
  t.regex(logs[0] ?? '', /Mars\/Olympus_Mons/);
});
