/** QuietGc (src/daemon/quiet-gc.ts) on a hand-driven timer: one collection per quiet period after activity, none idle. */
import test from 'ava';
import { QuietGc } from '../../src/daemon/quiet-gc.ts';

function harness(busy: () => boolean = () => false) {
  const timers: Array<{ fn: () => void; ms: number; cancelled: boolean }> = [];
  let collections = 0;
  const q = new QuietGc({
    quietMs: 2000,
    busy,
    collect: () => {
      collections++;
    },
    setTimer: (fn, ms) => {
      const t = { fn, ms, cancelled: false };
      timers.push(t);
      return { cancel: () => { t.cancelled = true; } };
    },
  });
  const live = () => timers.filter((t) => !t.cancelled);
  const fire = (): void => {
    const t = live().at(-1);
    if (t === undefined) throw new Error('no timer armed');
    t.cancelled = true;
    t.fn();
  };
  return { q, live, fire, collections: () => collections };
}

test('no activity, no timer: the idle daemon never wakes up for it', (t) => {
  const h = harness();
  t.is(h.live().length, 0);
  t.is(h.collections(), 0);
});

test('a burst of activity arms one timer (each call re-arms it) and collects once when it fires', (t) => {
  const h = harness();
  for (let i = 0; i < 100; i++) h.q.activity();
  t.is(h.live().length, 1, 'one timer, whatever the number of calls');
  t.is(h.live()[0]?.ms, 2000);
  h.fire();
  t.is(h.collections(), 1);
  t.is(h.live().length, 0, 'nothing re-armed after the collection');
});

test('while a job runs nothing is collected nor re-armed (no timer while the daemon waits); its completion arms it again; stop disarms', (t) => {
  let busy = true;
  const h = harness(() => busy);
  h.q.activity();
  h.fire();
  t.is(h.collections(), 0, 'busy: not collected');
  t.is(h.live().length, 0, 'not re-armed: no wake-up every quiet period while a job (or a reboot window) lasts');
  busy = false;
  h.q.activity(); // the job's completion
  h.fire();
  t.is(h.collections(), 1);
  h.q.activity();
  h.q.stop();
  t.is(h.live().length, 0);
  h.q.activity();
  t.is(h.live().length, 0, 'stopped: activity arms nothing');
});
