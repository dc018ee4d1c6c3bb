/**
 * `run-stage STAGE` as elemental runs it for the cOS units (yip.md 2.10): the sources are /system/oem, /oem/,
 * /usr/local/cloud-config/, the extra paths (CLOUD_INIT_PATHS, config), and the `cos.setup=` / `elemental.setup=`
 * values of the kernel command line; local paths that do not exist are dropped (URLs are kept). For each of
 * `STAGE.before`, `STAGE` and `STAGE.after`, every source runs in order, each with its own plan (an `after:` never
 * crosses sources). Then the command line itself, in yip's dot notation, for the same three stages; its decoding
 * problems are ignored, as elemental ignores them. Errors never stop the run; `strict` only decides the outcome.
 */
import { stat } from 'node:fs/promises';
import { dotNotation } from './dot-notation.ts';
import { runOps, type OpReport, type YipEnv } from './executor.ts';
import { loadSource, type LoadOptions } from './loader.ts';
import { planStage } from './plan.ts';
import type { YipProblem } from './schema.ts';
import type { DecodeStore } from './decode-store.ts';
import type { SysRoot } from '../sys/root.ts';

export const DEFAULT_PATHS: readonly string[] = ['/system/oem', '/oem/', '/usr/local/cloud-config/'];

export interface RunStageOptions {
  stage: string;
  /** Extra source paths after the default ones (CLOUD_INIT_PATHS, the config's cloud-init-paths). */
  extraPaths?: readonly string[];
  /** The kernel command line (the content of /proc/cmdline). */
  cmdline: string;
  /** Fetch URL sources (cos.setup=http://...). */
  fetch?: (url: string) => Promise<string>;
  /** Decoded files kept between stages (decode-store.ts). */
  store?: DecodeStore;
}

export interface StageRun {
  stage: string;
  /** The source path or URL, or `cmdline`. */
  source: string;
  problems: YipProblem[];
  warnings: YipProblem[];
  reports: OpReport[];
}

export interface RunStageResult {
  sources: string[];
  runs: StageRun[];
  /** Load problems (outside the command line) and op errors: what `--strict` fails on. */
  errors: number;
}

/** `cos.setup=` and `elemental.setup=` values of a command line (split on spaces, then on every `=`, as elemental does). */
export function cmdlineSources(cmdline: string): string[] {
  const out: string[] = [];
  for (const token of cmdline.split(' ')) {
    if (!token.includes('=')) continue;
    const parts = token.split('=');
    if (parts[0] === 'cos.setup' || parts[0] === 'elemental.setup') out.push((parts[1] ?? '').trim());
  }
  return out;
}

/** The sources of a stage: the default paths, the extra ones, the command line's; local paths that do not exist dropped. */
export async function stageSources(root: SysRoot, extraPaths: readonly string[], cmdline: string): Promise<string[]> {
  const sources: string[] = [];
  for (const src of [...DEFAULT_PATHS, ...extraPaths, ...cmdlineSources(cmdline)]) {
    if (src === '') continue;
    if (/^https?:\/\//i.test(src)) sources.push(src);
    else if (src.startsWith('/') && (await stat(root.path(src)).then(() => true, () => false))) sources.push(src);
  }
  return sources;
}

export async function runStage(env: YipEnv, opts: RunStageOptions): Promise<RunStageResult> {
  const sources = await stageSources(env.root, opts.extraPaths ?? [], opts.cmdline);
  const runs: StageRun[] = [];
  let errors = 0;
  // Sources are loaded again for each stage (an earlier stage may write a file a later one runs, as in yip); a file
  // that fails to load counts once.
  const counted = new Set<string>();
  const decoded: NonNullable<LoadOptions['decoded']> = new Map();
  const stages = [`${opts.stage}.before`, opts.stage, `${opts.stage}.after`];
  for (const stage of stages) {
    for (const source of sources) {
      const loaded = await loadSource(env.root, source, { decoded, ...(opts.fetch !== undefined ? { fetch: opts.fetch } : {}), ...(opts.store !== undefined ? { store: opts.store } : {}) });
      const plan = planStage(loaded.documents, stage);
      const reports = await runOps(plan.ops, env);
      for (const p of loaded.problems) counted.add(`${p.file}\n${p.message}`);
      errors += reports.reduce((n, r) => n + r.errors.length, 0);
      runs.push({ stage, source, problems: loaded.problems, warnings: plan.warnings, reports });
    }
  }
  // yip marshals the dot-notation object to YAML and decodes that; the object's JSON is the same document (JSON is
  // YAML, every value a string or null), without yaml's stringify, whose first use costs milliseconds of each boot.
  const modifier = (text: string): string => JSON.stringify(dotNotation(text).value);
  for (const stage of stages) {
    const loaded = await loadSource(env.root, opts.cmdline.trim(), { modifier, decoded });
    const plan = planStage(loaded.documents, stage);
    const reports = await runOps(plan.ops, env);
    errors += reports.reduce((n, r) => n + r.errors.length, 0);
    runs.push({ stage, source: 'cmdline', problems: loaded.problems, warnings: plan.warnings, reports });
  }
  return { sources, runs, errors: errors + counted.size };
}
