/**
 * Next run times of a node-cron schedule, computed by the cron helper (src/cron-next.ts) in a short-lived child
 * process so the daemon itself never loads ICU's date-format data (see that file). The helper is the bundle's
 * `cron-next.mjs` next to this module when cosd runs as built (dist/cosd/), else the TypeScript source.
 *
 * No timeout: the helper only computes (no I/O), and a spawn timeout leaves a timer behind that Node clears lazily,
 * so it would wake the idle daemon once, 30 s later (seen with strace; bench/daemon.ts counts wake-ups).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AgentError } from '../model/errors.ts';
import { SpawnRunner, type Runner } from './runner.ts';

/** The helper script: bundled next to this module, or the source. */
export function cronHelperPath(): string {
  const bundled = fileURLToPath(new URL('./cron-next.mjs', import.meta.url));
  return existsSync(bundled) ? bundled : fileURLToPath(new URL('../cron-next.ts', import.meta.url));
}

/**
 * The next `count` times (after now) at which `expression` fires in `timeZone`. An invalid expression or zone, or
 * a helper that cannot run, is an AgentError (CONFIG_INVALID / COMMAND_FAILED) naming the schedule.
 */
export async function nextCronRuns(expression: string, timeZone: string, count = 1, runner: Runner = new SpawnRunner()): Promise<Date[]> {
  const what = `schedule ${JSON.stringify(expression)} in ${timeZone}`;
  const res = await runner.run({
    argv: [process.execPath, cronHelperPath(), expression, timeZone, String(count)],
    description: `computing the next run of the ${what}`,
    okExitCodes: [2],
  });
  let doc: { next?: unknown; error?: unknown };
  try {
    doc = JSON.parse(res.stdout) as typeof doc;
  } catch (e) {
    throw new AgentError('COMMAND_FAILED', `the cron helper printed no JSON for the ${what}: ${JSON.stringify(res.stdout.slice(0, 200))}`, { cause: e });
  }
  if (res.exitCode !== 0 || typeof doc.error === 'string') {
    throw new AgentError('CONFIG_INVALID', `${what}: ${typeof doc.error === 'string' ? doc.error : 'rejected'}`);
  }
  const next = Array.isArray(doc.next) ? doc.next.map((s) => new Date(String(s))) : [];
  if (next.length !== count || next.some((d) => Number.isNaN(d.getTime()))) {
    throw new AgentError('COMMAND_FAILED', `the cron helper answered ${JSON.stringify(doc)} for the ${what}`);
  }
  return next;
}
