/** IdleMonitor (src/daemon/idle.ts) on a hand-driven timer: what counts as idle, and what restarts the period. */
import test from 'ava';
import { IdleMonitor } from '../../src/daemon/idle.ts';

function harness(opts: { timeoutMs?: number; busy?: () => boolean; alive?: (n: readonly string[]) => Promise<string[]>; onIdle?: () => Promise<'left' | 'stay' | 'resident'> } = {}) {
  const timers: Array<{ fn: () => void; ms: number; cancelled: boolean }> = [];
  let idleCalls = 0;
  const m = new IdleMonitor({
    timeoutMs: opts.timeoutMs ?? 1000,
    busy: opts.busy ?? (() => false),
    alive: opts.alive ?? (() => Promise.resolve([])),
    onIdle: async () => {
      idleCalls++;
      return opts.onIdle !== undefined ? opts.onIdle() : 'left';
    },
    setTimer: (fn, ms) => {
      const t = { fn, ms, cancelled: false };
      timers.push(t);
      return { cancel: () => { t.cancelled = true; } };
    },
  });
  const live = () => timers.filter((t) => !t.cancelled);
  const fire = async (): Promise<void> => {
    const t = live().at(-1);
    if (t === undefined) throw new Error('no timer armed');
    t.cancelled = true;
    t.fn();
    await new Promise((r) => setImmediate(r));
  };
  return { m, fire, live, idleCalls: () => idleCalls };
}

test('a quiet period leaves; 0 never arms; stop disarms', async (t) => {
  const h = harness();
  h.m.start();
  t.is(h.live().length, 1);
  t.is(h.live()[0]?.ms, 1000);
  await h.fire();
  t.is(h.idleCalls(), 1);
  t.is(h.live().length, 0, 'left: nothing re-armed');
  const off = harness({ timeoutMs: 0 });
  off.m.start();
  off.m.activity(':1.5');
  t.is(off.live().length, 0);
  t.false(off.m.enabled);
  const stopped = harness();
  stopped.m.start();
  stopped.m.stop();
  t.is(stopped.live().length, 0);
});

test('busy, or a caller still connected, restarts the period; a caller gone no longer counts', async (t) => {
  let busy = true;
  let connected = [':1.7'];
  const h = harness({ busy: () => busy, alive: (names) => Promise.resolve(names.filter((n) => connected.includes(n))) });
  h.m.start();
  await h.fire();
  t.is(h.idleCalls(), 0);
  t.is(h.live().length, 1, 're-armed while busy');
  busy = false;
  h.m.activity(':1.7');
  t.deepEqual(h.m.peers, [':1.7']);
  await h.fire();
  t.is(h.idleCalls(), 0, 'the caller is still on the bus');
  connected = [];
  await h.fire();
  t.deepEqual(h.m.peers, []);
  t.is(h.idleCalls(), 1);
});

test('every call restarts the period and bumps the generation; stay re-arms, resident stops for good', async (t) => {
  const h = harness({ onIdle: () => Promise.resolve('stay') });
  h.m.start();
  const g = h.m.generation;
  h.m.activity(undefined);
  t.is(h.m.generation, g + 1);
  t.is(h.live().length, 1, 'the old timer was replaced');
  await h.fire();
  t.is(h.idleCalls(), 1);
  t.is(h.live().length, 1, 'stay: a new period');
  const r = harness({ onIdle: () => Promise.resolve('resident') });
  r.m.start();
  await r.fire();
  t.false(r.m.enabled);
  r.m.activity(':1.9');
  t.is(r.live().length, 0);
});

test('a bus that cannot say who is connected keeps every caller (never leaves on a failed question)', async (t) => {
  const h = harness({ alive: () => Promise.reject(new Error('bus gone')) });
  h.m.start();
  h.m.activity(':1.3');
  await h.fire();
  t.is(h.idleCalls(), 0);
  t.deepEqual(h.m.peers, [':1.3']);
});
