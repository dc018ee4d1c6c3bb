/**
 * One full, compacting garbage collection when the daemon goes quiet after activity (calls, a job). cosd runs without
 * V8's memory reducer (bin/cosd.js: it would wake the idle daemon every 8 s), so nothing else gives back the heap a
 * burst of calls or a job's announcements grew: this does it once per burst, from a one-shot timer armed only by
 * activity, so the idle daemon still never wakes up (bench/daemon.ts counts its wake-ups).
 */
import { unrefTimer, type SetTimer } from '../sys/timer.ts';

export interface QuietGcOptions {
  /** How long after the last activity (ms). */
  quietMs: number;
  /**
   * Whether a job runs: then nothing is collected and nothing re-armed (the job's completion is activity, and arms
   * it again), so no timer fires while the daemon waits, however long (a reboot window, a random delay).
   */
  busy: () => boolean;
  /** The collection (globalThis.gc with cosd's --expose-gc). */
  collect: () => void;
  setTimer?: SetTimer;
}

export class QuietGc {
  readonly #opts: QuietGcOptions;
  readonly #setTimer: NonNullable<QuietGcOptions['setTimer']>;
  #timer: { cancel(): void } | undefined;
  #stopped = false;

  constructor(opts: QuietGcOptions) {
    this.#opts = opts;
    this.#setTimer = opts.setTimer ?? unrefTimer;
  }

  /** Something happened: collect once `quietMs` passes with nothing else (and no job under way). */
  activity(): void {
    if (this.#stopped) return;
    this.#timer?.cancel();
    this.#timer = this.#setTimer(() => {
      this.#timer = undefined;
      if (!this.#opts.busy()) this.#opts.collect();
    }, this.#opts.quietMs);
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#timer = undefined;
  }
}
