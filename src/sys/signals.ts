/**
 * Holding SIGTERM for a process that has asked for its own end (cosctl health-check, after requesting the reboot
 * that stops its unit): its last words (the report, the exit status) must not be cut off by the stop job's SIGTERM.
 */

export interface SigtermHold {
  /** A SIGTERM arrived while held. */
  readonly received: boolean;
  /** End the hold now: SIGTERM's default action is back, and one that arrived meanwhile is raised again. Idempotent. */
  release(): void;
}

/**
 * Hold SIGTERM for at most `ms`: meanwhile a SIGTERM does not end the process, which ends by itself with its own exit
 * status. After `ms` (or release()) a SIGTERM that arrived meanwhile is raised again, with the default action when
 * nobody else listens: a process stuck past the hold still ends. The timer does not keep the process alive.
 */
export function holdSigterm(ms: number): SigtermHold {
  let received = false;
  let released = false;
  const onTerm = (): void => {
    received = true;
  };
  process.on('SIGTERM', onTerm);
  const release = (): void => {
    if (released) return;
    released = true;
    clearTimeout(timer);
    process.removeListener('SIGTERM', onTerm);
    // Other listeners (cosctl's Ctrl-C handling) had the signal when it came; only the default action was held.
    if (received && process.listenerCount('SIGTERM') === 0) process.kill(process.pid, 'SIGTERM');
  };
  const timer = setTimeout(release, ms);
  timer.unref();
  return {
    get received() {
      return received;
    },
    release,
  };
}
