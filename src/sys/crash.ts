/**
 * Test-only crash injection (AGENT_TEST_CRASH_AT): the process kills itself with SIGKILL at a named point, as a power
 * cut there would stop it. Unset on real hosts: no hook at all. Points:
 *   switch:N     once a slot switch (or swap) has completed N steps (0: its journal is written, nothing renamed);
 *   step:NAME    as the upgrade step NAME (UPGRADE_STEPS in actions/upgrade/upgrade.ts) starts;
 *   pull:P%      once P percent of the image's compressed bytes are applied (a half-unpacked tree at 50%).
 */
export interface TestHooks {
  onSwitchStep?: (done: number) => void;
  onStep?: (name: string) => void;
  onPullBytes?: (done: number, total: number) => void;
}

const kill = (): void => {
  process.kill(process.pid, 'SIGKILL');
};

export function crashHooks(env: NodeJS.ProcessEnv): TestHooks | undefined {
  const at = env['AGENT_TEST_CRASH_AT'];
  if (at === undefined) return undefined;
  const sw = /^switch:(\d+)$/.exec(at);
  if (sw !== null) {
    const n = Number(sw[1]);
    return { onSwitchStep: (done) => { if (done === n) kill(); } };
  }
  const step = /^step:([a-z:-]+)$/.exec(at);
  if (step !== null) {
    const name = step[1];
    return { onStep: (s) => { if (s === name) kill(); } };
  }
  const pull = /^pull:(\d{1,2})%$/.exec(at);
  if (pull !== null) {
    const percent = Number(pull[1]);
    return { onPullBytes: (done, total) => { if (total > 0 && done * 100 >= total * percent) kill(); } };
  }
  return undefined;
}
