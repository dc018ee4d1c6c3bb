/**
 * Idle exit (cosd --idle-exit SECONDS), the way systemd's own small bus daemons do it (hostnamed, timedated) and
 * fwupd: the daemon leaves when it has nothing to do, and the bus (D-Bus activation), a systemd timer (the schedule)
 * and a path unit (the config files) start it again. Every state it serves is on disk, so nothing is lost.
 *
 * Idle means, for a whole period: no call came in, no job runs and no automatic work is pending (busy()), and no client
 * that called it is still connected (a client following a job's signals, a fleet manager holding a connection). At the
 * end of a period that is not idle the period starts again; a period that is idle calls onIdle, which leaves (or, when
 * it cannot leave safely, says so and the monitor stops: the daemon stays resident).
 *
 * Callers are remembered by their unique bus name until the bus says they are gone (alive() asks it, once a period).
 */
import { unrefTimer, type SetTimer } from '../sys/timer.ts';

export interface IdleMonitorOptions {
  /** The idle period; 0 turns the monitor off (resident daemon). */
  readonly timeoutMs: number;
  /** A job runs or automatic work is pending. */
  busy(): boolean;
  /** Which of these unique bus names are still connected. */
  alive(names: readonly string[]): Promise<string[]>;
  /** A whole period was idle: leave. Resolves with 'left', or 'stay' (the monitor re-arms), or 'resident' (it stops). */
  onIdle(): Promise<'left' | 'stay' | 'resident'>;
  setTimer?: SetTimer;
}

export class IdleMonitor {
  readonly #opts: IdleMonitorOptions;
  readonly #setTimer: NonNullable<IdleMonitorOptions['setTimer']>;
  readonly #peers = new Set<string>();
  #timer: { cancel(): void } | undefined;
  /** Bumped by every call: onIdle compares it to know whether a call came in while it was leaving. */
  #generation = 0;
  #stopped = false;
  #checking = false;

  constructor(opts: IdleMonitorOptions) {
    this.#opts = opts;
    this.#setTimer = opts.setTimer ?? unrefTimer;
  }

  get enabled(): boolean {
    return this.#opts.timeoutMs > 0 && !this.#stopped;
  }

  /** Calls seen so far (a leaving daemon compares it before and after releasing its name). */
  get generation(): number {
    return this.#generation;
  }

  /** Connected callers being waited for. */
  get peers(): readonly string[] {
    return [...this.#peers];
  }

  /** Start the first period. */
  start(): void {
    if (this.enabled) this.#arm();
  }

  /** A call came in (any method of any interface, from `sender`). */
  activity(sender: string | undefined): void {
    this.#generation++;
    if (sender !== undefined && sender !== '') this.#peers.add(sender);
    if (this.enabled && !this.#checking) this.#arm();
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#timer = undefined;
  }

  #arm(): void {
    this.#timer?.cancel();
    this.#timer = this.#setTimer(() => void this.#check(), this.#opts.timeoutMs);
  }

  async #check(): Promise<void> {
    this.#timer = undefined;
    if (!this.enabled) return;
    this.#checking = true;
    const generation = this.#generation;
    let outcome: 'left' | 'stay' | 'resident' = 'stay';
    try {
      if (this.#peers.size > 0) {
        const alive = new Set(await this.#opts.alive([...this.#peers]).catch(() => [...this.#peers]));
        for (const p of [...this.#peers]) if (!alive.has(p)) this.#peers.delete(p);
      }
      if (!this.#opts.busy() && this.#peers.size === 0 && generation === this.#generation) outcome = await this.#opts.onIdle();
    } finally {
      this.#checking = false;
    }
    if (outcome === 'resident') this.stop();
    else if (outcome === 'stay' && this.enabled) this.#arm();
  }
}
