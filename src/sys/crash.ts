/**
 * Test-only seams at named points of an upgrade. Unset on real hosts: no hook at all.
 *
 * AGENT_TEST_CRASH_AT=<point>: the process kills itself with SIGKILL there, as a power cut there would stop it.
 * AGENT_TEST_PAUSE_AT=<point>[,<point>...]: at each point the process writes `COS-AGENT-TEST-PAUSED <point>` (one
 *   line) to the file or device AGENT_TEST_PAUSE_NOTIFY names (the VM tests give the guest's serial console) and then
 *   blocks its only thread: for good, so that a test can cut the power (kill the VM) exactly there (nothing after the
 *   point runs, and what the kernel had not written back yet is lost, as in a real power cut); or, with
 *   AGENT_TEST_PAUSE_SECONDS=<s>, for s seconds, long enough for a test to freeze the VM and copy its disk (a power
 *   cut at that point, taken as a snapshot), and then it goes on. (With both variables set, the crash wins.)
 *
 * Points:
 *   switch:N     once a slot switch (or swap) has completed N steps (0: its journal is written, nothing renamed);
 *   step:NAME    as the upgrade step NAME (UPGRADE_STEPS in actions/upgrade/upgrade.ts) starts;
 *   pull:P%      once P percent of the image's compressed bytes are applied (a half-unpacked tree at 50%).
 */
import { appendFileSync } from 'node:fs';

export interface TestHooks {
  onSwitchStep?: (done: number) => void;
  onStep?: (name: string) => void;
  onPullBytes?: (done: number, total: number) => void;
}

const kill = (): void => {
  process.kill(process.pid, 'SIGKILL');
};

/** The marker line AGENT_TEST_PAUSE_AT writes before it blocks. */
export const PAUSE_MARKER = 'COS-AGENT-TEST-PAUSED';

function pauseAt(point: string, notify: string | undefined, seconds: number | undefined): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    if (notify !== undefined && notify !== '') {
      try {
        appendFileSync(notify, `\n${PAUSE_MARKER} ${point}\n`);
      } catch {
        // a test seam: the test sees no marker and times out, which names the problem
      }
    }
    // block this (the only) thread, for good or for `seconds`: no timer, I/O callback or signal handler of ours runs
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, seconds === undefined ? Infinity : seconds * 1000);
  };
}

/** The hooks for one point: `act` runs when the point is reached (at most once). Undefined for an unknown point. */
function hooksAt(at: string, act: () => void): TestHooks | undefined {
  const sw = /^switch:(\d+)$/.exec(at);
  if (sw !== null) {
    const n = Number(sw[1]);
    return { onSwitchStep: (done) => { if (done === n) act(); } };
  }
  const step = /^step:([a-z:-]+)$/.exec(at);
  if (step !== null) {
    const name = step[1];
    return { onStep: (s) => { if (s === name) act(); } };
  }
  const pull = /^pull:(\d{1,2})%$/.exec(at);
  if (pull !== null) {
    const percent = Number(pull[1]);
    return { onPullBytes: (done, total) => { if (total > 0 && done * 100 >= total * percent) act(); } };
  }
  return undefined;
}

export function crashHooks(env: NodeJS.ProcessEnv): TestHooks | undefined {
  const crash = env['AGENT_TEST_CRASH_AT'];
  if (crash !== undefined) return hooksAt(crash, kill);
  const pause = env['AGENT_TEST_PAUSE_AT'];
  if (pause === undefined) return undefined;
  const raw = env['AGENT_TEST_PAUSE_SECONDS'];
  const seconds = raw === undefined || raw === '' ? undefined : Number(raw);
  if (seconds !== undefined && !(Number.isFinite(seconds) && seconds > 0)) return undefined;
  const all = pause.split(',').map((p) => hooksAt(p, pauseAt(p, env['AGENT_TEST_PAUSE_NOTIFY'], seconds)));
  if (all.length === 0 || all.some((h) => h === undefined)) return undefined;
  const hooks = all as TestHooks[];
  return {
    onSwitchStep: (done) => { for (const h of hooks) h.onSwitchStep?.(done); },
    onStep: (name) => { for (const h of hooks) h.onStep?.(name); },
    onPullBytes: (done, total) => { for (const h of hooks) h.onPullBytes?.(done, total); },
  };
}
