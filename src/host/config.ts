/**
 * The configuration an action runs with. In cosd: the daemon's last valid snapshot (deps.config), so an invalid edit
 * of a config file keeps the previous config for the jobs as it does for the Config property. In-process (cosctl
 * --no-daemon), or in cosd before any config was valid: the files on disk. The per-call overrides (image, noVerify,
 * recovery) go on top either way through the same function as a fresh load (resolveWithOverrides).
 */
import type { AgentConfig, ConfigOverrides } from '../model/config.ts';
import { loadConfig, resolveWithOverrides } from '../config/load.ts';
import type { AgentDeps } from './deps.ts';

export async function loadActionConfig(
  deps: Pick<AgentDeps, 'root' | 'env' | 'config'>,
  opts: { overrides?: ConfigOverrides } = {},
): Promise<{ config: AgentConfig }> {
  const snapshot = deps.config?.();
  if (snapshot !== undefined) return { config: resolveWithOverrides(snapshot.layers, opts.overrides) };
  const { config } = await loadConfig(deps.root, { env: deps.env, ...(opts.overrides !== undefined ? { overrides: opts.overrides } : {}) });
  return { config };
}
