/**
 * `cosctl run-stage STAGE [--strict] [--dry-run]`: a yip cloud-config stage run by the agent (src/yip), as
 * `elemental run-stage` runs it from cOS's cos-setup-* units: the sources /system/oem, /oem/, /usr/local/cloud-config/,
 * CLOUD_INIT_PATHS (space or comma separated), `cos.setup=` on the kernel command line, then the command line's dot
 * notation. Commands run through `sh -c`, chrooted into the root when it is not `/` (`--root /sysroot` for an
 * initrd); the live hostname is set only when the root is `/`. Errors never stop the stage; with `strict` they make
 * it fail with CLOUD_INIT_FAILED (exit 65, as elemental's: strictFailure). `dryRun` loads and orders, and runs nothing.
 */
import { writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { checkStageName, type RunStageOutcome } from '../model/stage.ts';
import { shellConsole } from '../sys/console.ts';
import { parseOsRelease } from '../host/os-release.ts';
import { loadConfig } from '../config/load.ts';
import type { AgentDeps } from '../host/deps.ts';
import { loadSource } from '../yip/loader.ts';
import { planStage } from '../yip/plan.ts';
import { runStage, stageSources, type RunStageResult } from '../yip/run-stage.ts';
import type { YipEnv } from '../yip/executor.ts';
import { resolveInRoot } from '../yip/paths.ts';
import { readText } from '../yip/read.ts';
import type { SysRoot } from '../sys/root.ts';
import { fileDecodeStore } from '../yip/decode-store.ts';

export interface RunStageActionOptions {
  stage: string;
  dryRun: boolean;
  /**
   * Sources after the default ones and before CLOUD_INIT_PATHS: the config's cloud-init-paths. Absent: read from the
   * config files (a config that does not load adds none, with a warning), as elemental run-stage reads its config.
   */
  extraPaths?: readonly string[];
  /**
   * Where the decoded-file cache lives (its run/cos-agent/yip-decoded), default the stage's root. The
   * after-upgrade-chroot hook gives the host's: the agent's cache must never land in the image being staged.
   */
  storeRoot?: SysRoot;
}

// Pure, in src/model so the daemon validates names and judges --strict without loading yip: re-exported for callers here.
export { checkStageName, strictFailure, type RunStageOutcome } from '../model/stage.ts';

export async function runStageAction(deps: AgentDeps, opts: RunStageActionOptions): Promise<RunStageOutcome> {
  checkStageName(opts.stage);
  const { root } = deps;
  // The root may be an image being upgraded to (after-upgrade-chroot): its files are read inside it, regular files of
  // at most 64 KiB only (a FIFO or a link to /dev/zero reads as empty).
  const read = (p: string): Promise<string> => resolveInRoot(root, p).then((f) => readText(f, 64 * 1024)).catch(() => '');
  const cmdline = (await read('/proc/cmdline')).trim();
  const configured = opts.extraPaths ?? (await loadConfig(root, { env: deps.env }).then((c) => c.config.cloudInitPaths, (e: unknown) => {
    deps.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'the configuration did not load: no cloud-init-paths from it');
    return [] as string[];
  }));
  const extraPaths = [...configured, ...(deps.env['CLOUD_INIT_PATHS'] ?? '').split(/[\s,]+/).filter(Boolean)];
  const osRelease = parseOsRelease((await read('/etc/os-release')) || (await read('/usr/lib/os-release')));
  const live = root.isHostRoot;
  const node = live ? hostname() : (await read('/etc/hostname')).trim();
  const machineId = (await read('/etc/machine-id')).trim();
  const env: YipEnv = {
    root,
    console: shellConsole({ root: root.prefix }),
    hostname: node,
    machineId,
    // System tools for `git` and `layout` (layout acts on the devices the step names, whatever the root: the initrd's
    // rootfs stage runs with --root /sysroot and grows the real disk).
    exec: async (argv, o = {}) => {
      const r = await deps.runner.run({
        argv, description: `cloud-config: ${argv[0] ?? ''}`,
        ...(o.okExitCodes !== undefined ? { okExitCodes: o.okExitCodes } : {}), ...(o.stdin !== undefined ? { stdin: o.stdin } : {}), ...(o.env !== undefined ? { env: o.env } : {}),
      });
      return { exitCode: r.exitCode, stdout: r.stdout };
    },
    values: {
      node: { hostname: node, machineid: machineId },
      os: { name: osRelease.get('PRETTY_NAME') ?? '', vendor: osRelease.get('ID') ?? '', version: osRelease.get('VERSION_ID') ?? '', architecture: process.arch === 'x64' ? 'amd64' : process.arch },
    },
    ...(live ? {
      setHostname: (name: string) => writeFile('/proc/sys/kernel/hostname', name),
      modprobe: async (name: string, params: readonly string[]) => {
        await deps.runner.run({ argv: ['modprobe', name, ...params], description: `loading the kernel module ${name}` });
      },
    } : {}),
  };
  let result: RunStageResult;
  if (opts.dryRun) {
    const sources = await stageSources(root, extraPaths, cmdline);
    result = { sources, runs: [], errors: 0 };
    for (const stage of [`${opts.stage}.before`, opts.stage, `${opts.stage}.after`]) {
      for (const source of sources) {
        if (!source.startsWith('/')) continue;
        const loaded = await loadSource(root, source);
        const plan = planStage(loaded.documents, stage);
        result.runs.push({ stage, source, problems: loaded.problems, warnings: plan.warnings, reports: plan.ops.map((o) => ({ op: o.name, origin: o.origin, index: o.index, skipped: 'dry run', errors: [], warnings: [] })) });
      }
    }
  } else {
    result = await runStage(env, { stage: opts.stage, extraPaths, cmdline, store: fileDecodeStore(opts.storeRoot ?? root) });
  }
  const where = (p: { file: string; line: number; step: number | null; key: string; message: string }): string =>
    `${p.file}${p.line > 0 ? `:${p.line}` : ''}${p.step !== null ? ` step ${p.step}` : ''}${p.key !== '' ? ` ${p.key}` : ''}: ${p.message}`;
  const outcome: RunStageOutcome = {
    stage: opts.stage,
    sources: result.sources,
    runs: result.runs.filter((r) => r.reports.length > 0 || r.problems.length > 0).map((r) => ({
      stage: r.stage, source: r.source,
      ops: r.reports.map((o) => ({ op: o.op, skipped: o.skipped, errors: o.errors, warnings: o.warnings })),
      problems: r.source === 'cmdline' ? [] : r.problems.map(where),
      warnings: r.warnings.map(where),
    })),
    errors: result.errors,
    dryRun: opts.dryRun,
  };
  for (const r of outcome.runs) {
    for (const p of r.problems) deps.log.warn({ stage: r.stage, source: r.source, problem: p }, 'cloud-config file skipped');
    for (const o of r.ops) for (const e of o.errors) deps.log.warn({ stage: r.stage, op: o.op, err: e }, 'cloud-config step error');
  }
  return outcome;
}

/** One line for an op error: its first line, and the last line a failed command printed (yip's "command output:"). */
function errorLine(e: string): string {
  const [head = '', ...rest] = e.split('\n');
  const at = rest.indexOf('command output:');
  const last = at < 0 ? undefined : rest.slice(at + 1).map((l) => l.trim()).filter(Boolean).pop();
  return last === undefined ? head : `${head} (${last.length > 200 ? `${last.slice(0, 200)}...` : last})`;
}

/** The human report: per stage and source, each op and what happened to it. */
export function renderRunStage(o: RunStageOutcome): string {
  const lines: string[] = [];
  for (const r of o.runs) {
    lines.push(`${r.stage} from ${r.source}:`);
    for (const p of r.problems) lines.push(`  skipped file: ${p}`);
    for (const w of r.warnings) lines.push(`  warning: ${w}`);
    for (const op of r.ops) {
      lines.push(`  ${op.op}: ${op.skipped !== null ? `skipped (${op.skipped})` : op.errors.length > 0 ? `${op.errors.length} error(s)` : 'done'}`);
      for (const e of op.errors) lines.push(`    error: ${errorLine(e)}`);
    }
  }
  lines.push(`${o.dryRun ? 'Dry run: nothing was run. ' : ''}Stage ${o.stage}: ${o.runs.reduce((n, r) => n + r.ops.length, 0)} step(s) from ${o.sources.length} source(s), ${o.errors} error(s).`);
  return `${lines.join('\n')}\n`;
}
