/**
 * Read the config sources of all three host generations through a SysRoot and resolve them (spec cos-layout.md
 * 2.2, 3, 9). The order below is the precedence order, lowest first (see resolve.ts for the merge rules).
 * Missing files are skipped; an unreadable or malformed file is a ConfigError naming it.
 */
import { readdir, stat } from 'node:fs/promises';
import type { AgentConfig, ConfigOverrides } from '../model/config.ts';
import { ConfigError } from '../model/errors.ts';
import { readOptionalText } from '../sys/files.ts';
import type { SysRoot } from '../sys/root.ts';
import { parseDotenv } from './dotenv.ts';
import { envFileLayer, envLayer, OS_RELEASE_KEYS, overridesLayer, resolveConfig, yamlLayer, type ConfigLayer } from './resolve.ts';

/** Env-format files, lowest precedence first. */
export const ENV_FILES: readonly string[] = ['/etc/os-release', '/etc/cos/config', '/etc/cos-upgrade-image'];
/** elemental config dir (`<dir>/config.yaml`, then `<dir>/config.d/*.yaml` in lexical order). */
export const ELEMENTAL_CONFIG_DIR = '/etc/elemental';

/**
 * A loaded configuration that per-call overrides can still be applied to: the effective config of the sources, and
 * the source layers it was resolved from. cosd keeps its last valid one (src/host/config.ts hands it to the jobs).
 */
export interface ConfigSnapshot {
  /** The sources resolved, without per-call overrides (resolveWithOverrides(layers, undefined)). */
  readonly config: AgentConfig;
  /** The file and environment layers, lowest precedence first; never the overrides. */
  readonly layers: readonly ConfigLayer[];
  /**
   * The text of /etc/cos-agent/policy.yaml as last validated (null: there is none). Absent: not part of this snapshot
   * (read from disk when needed).
   */
  readonly policyText?: string | null;
}

export interface LoadedConfig extends ConfigSnapshot {
  /** The sources resolved with the caller's overrides on top. */
  config: AgentConfig;
  /** Ignored keys and files, as sentences with file and line. Data for the caller to show; nothing is logged here. */
  warnings: string[];
  /** The files actually read (root-mapped paths), in precedence order. */
  files: string[];
}

const isMissing = (e: unknown): boolean => {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
};

async function readText(path: string): Promise<string | undefined> {
  const text = await readOptionalText(path).catch((e: unknown) => {
    throw new ConfigError(path, `cannot read: ${(e as Error).message}`, { cause: e });
  });
  return text?.startsWith('\uFEFF') ? text.slice(1) : text;
}

/** Names of the `*.yaml` files in config.d, byte-wise sorted; `.yml` files produce a warning. */
async function configDFiles(dir: string, warnings: string[]): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if (isMissing(e)) return [];
    throw new ConfigError(dir, `cannot list: ${(e as Error).message}`, { cause: e });
  }
  const out: string[] = [];
  for (const name of names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    const full = `${dir}/${name}`;
    if (!name.endsWith('.yaml')) {
      if (name.endsWith('.yml')) warnings.push(`${full}: ignored (only *.yaml files in config.d are read)`);
      continue;
    }
    try {
      if (!(await stat(full)).isFile()) continue;
    } catch (e) {
      if (isMissing(e)) continue; // dangling symlink or removed meanwhile
      throw new ConfigError(full, `cannot stat: ${(e as Error).message}`, { cause: e });
    }
    out.push(full);
  }
  return out;
}

/**
 * The effective configuration of `layers` (the sources) with the caller's overrides (CLI flags, D-Bus options) on
 * top: the one place overrides are applied, for a fresh load and for a kept snapshot alike. Invalid overrides throw
 * AgentError USAGE.
 */
export function resolveWithOverrides(layers: readonly ConfigLayer[], overrides?: ConfigOverrides): AgentConfig {
  return resolveConfig(overrides === undefined ? layers : [...layers, overridesLayer(overrides)]);
}

/**
 * Load the effective configuration. `env` defaults to process.env (only `ELEMENTAL_*` is looked at); `overrides` are
 * the caller's explicit values (CLI flags), strongest of all.
 */
export async function loadConfig(
  root: SysRoot,
  opts: { env?: NodeJS.ProcessEnv; overrides?: ConfigOverrides } = {},
): Promise<LoadedConfig> {
  const layers: ConfigLayer[] = [];
  const warnings: string[] = [];
  const files: string[] = [];

  for (const hostPath of ENV_FILES) {
    const path = root.path(hostPath);
    const text = await readText(path);
    if (text === undefined) continue;
    files.push(path);
    const entries = parseDotenv(text, path);
    layers.push(envFileLayer(path, entries, hostPath === '/etc/os-release' ? { only: OS_RELEASE_KEYS } : {}));
  }

  const dir = root.path(ELEMENTAL_CONFIG_DIR);
  const yamlFiles = [`${dir}/config.yaml`, ...(await configDFiles(`${dir}/config.d`, warnings))];
  for (const path of yamlFiles) {
    const text = await readText(path);
    if (text === undefined) continue;
    files.push(path);
    const { layer, warnings: w } = yamlLayer(path, text);
    layers.push(layer);
    warnings.push(...w);
  }

  layers.push(envLayer(opts.env ?? process.env));
  return { config: resolveWithOverrides(layers, opts.overrides), layers, warnings, files };
}
