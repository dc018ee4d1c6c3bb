/** Retry an async step a few times with a fixed pause (writes after an upgrade's point of no return). */
import { setTimeout as sleep } from 'node:timers/promises';

export async function retry<T>(fn: () => Promise<T>, opts: { attempts: number; delayMs: number }): Promise<T> {
  let last: unknown;
  for (let i = 0; i < opts.attempts; i++) {
    try {
      return await fn();
    } catch (e) {
      last = e;
      if (i + 1 < opts.attempts) await sleep(opts.delayMs);
    }
  }
  throw last;
}
