/**
 * Child process of bench/yip.ts (one per measurement, so its peak RSS is its own): `node bench/yip-stage.ts ROOT MODE`.
 *   stage     runs the yip `boot` stage (boot.before, boot, boot.after) over ROOT's cloud-config with the agent's
 *             engine, every command timed as it runs (sh -c, chrooted into ROOT);
 *   baseline  runs the same commands (read from ROOT/commands.json) through the same console, one after another, and
 *             nothing else: what the commands cost without the agent around them.
 * Prints one JSON line: wall and command milliseconds, the number of commands and steps, errors, peak RSS (kB).
 */
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { SysRoot } from '../src/sys/root.ts';
import { shellConsole } from '../src/sys/console.ts';
import { runStage } from '../src/yip/run-stage.ts';
import { fileDecodeStore } from '../src/yip/decode-store.ts';

const [root = '', mode = 'stage'] = process.argv.slice(2);
const inner = shellConsole({ root });
let commandMs = 0;
let commands = 0;
const timed = {
  async run(command: string): Promise<{ exitCode: number; output: string }> {
    const t0 = performance.now();
    try {
      return await inner.run(command);
    } finally {
      commandMs += performance.now() - t0;
      commands++;
    }
  },
};

const t0 = performance.now();
let steps = 0;
let errors = 0;
if (mode === 'baseline') {
  for (const c of JSON.parse(await readFile(`${root}/commands.json`, 'utf8')) as string[]) await timed.run(c);
} else {
  const r = await runStage(
    { root: new SysRoot(root), console: timed, hostname: 'bench', machineId: '', values: { node: { hostname: 'bench' }, os: { vendor: 'bench' } } },
    { stage: 'boot', cmdline: '', ...(mode === 'stage' ? { store: fileDecodeStore(new SysRoot(root)) } : {}) },
  );
  steps = r.runs.reduce((n, run) => n + run.reports.filter((o) => o.skipped === null).length, 0);
  errors = r.errors;
}
const wallMs = performance.now() - t0;
process.stdout.write(`${JSON.stringify({ mode, wallMs, commandMs, commands, steps, errors, maxRssKb: process.resourceUsage().maxRSS })}\n`);
