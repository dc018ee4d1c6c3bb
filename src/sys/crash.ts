/**
 * Test-only crash injection (AGENT_TEST_CRASH_AT=switch:N): the process kills itself with SIGKILL once a slot switch has
 * completed N steps, as a power cut there would stop it. Unset on real hosts: no hook at all.
 */
export function crashHooks(env: NodeJS.ProcessEnv): { onSwitchStep?: (done: number) => void } | undefined {
  const at = env['AGENT_TEST_CRASH_AT'];
  const m = at === undefined ? null : /^switch:(\d+)$/.exec(at);
  if (m === null) return undefined;
  const n = Number(m[1]);
  return {
    onSwitchStep: (done: number): void => {
      if (done === n) process.kill(process.pid, 'SIGKILL');
    },
  };
}
