/**
 * The agent's real dependencies, as its three composition roots build them: cosd (src/main.ts), cosd's job process
 * (src/job-worker.ts) and cosctl (src/cli/commands.ts). The spawn runner, the real clock, no hooks yet (each caller
 * fills in the yip hooks, which need these deps), and the test seams the environment turns on, inert on real hosts:
 * AGENT_TEST_DISK (label lookups narrowed to one disk), AGENT_TEST_CRASH_AT / AGENT_TEST_PAUSE_AT (src/sys/crash.ts),
 * AGENT_TEST_REGISTRY_RETRY_MS (a shorter registry backoff, so fault tests do not wait out production delays).
 */
import type { SysRoot } from '../sys/root.ts';
import { SpawnRunner, type Runner } from '../sys/runner.ts';
import type { Logger } from '../sys/log.ts';
import { crashHooks } from '../sys/crash.ts';
import { NoHooks } from './hooks.ts';
import type { AgentDeps } from './deps.ts';

export function agentDeps(o: { root: SysRoot; env: NodeJS.ProcessEnv; log: Logger; runner?: Runner }): AgentDeps {
  const { env } = o;
  const testHooks = crashHooks(env);
  return {
    root: o.root,
    runner: o.runner ?? new SpawnRunner(),
    log: o.log,
    hooks: new NoHooks(),
    env,
    now: () => new Date(),
    ...(env.AGENT_TEST_DISK ? { testDisk: env.AGENT_TEST_DISK } : {}),
    ...(testHooks !== undefined ? { testHooks } : {}),
    ...(env.AGENT_TEST_REGISTRY_RETRY_MS ? { registry: { retryBaseMs: Number(env.AGENT_TEST_REGISTRY_RETRY_MS) } } : {}),
  };
}
