import test from 'ava';
import { existsSync } from 'node:fs';
import { cronHelperPath, nextCronRuns } from '../../src/sys/cron.ts';
import type { Command, CommandResult, Runner } from '../../src/sys/runner.ts';

test('the helper runs in its own process and answers the next runs', async (t) => {
  t.true(existsSync(cronHelperPath()));
  const next = await nextCronRuns('30 4 * * 1', 'UTC', 2);
  t.is(next.length, 2);
  for (const d of next) {
    t.is(d.getUTCDay(), 1);
    t.is(d.toISOString().slice(11), '04:30:00.000Z');
  }
  t.is(((next[1]?.getTime() ?? 0) - (next[0]?.getTime() ?? 0)) / 86_400_000, 7);
});

test('an invalid schedule is CONFIG_INVALID naming the schedule and the reason', async (t) => {
  const e = await t.throwsAsync(nextCronRuns('0 3 * * *', 'Mars/Olympus_Mons'));
  t.like(e, { code: 'CONFIG_INVALID' });
  t.regex(e?.message ?? '', /^schedule "0 3 \* \* \*" in Mars\/Olympus_Mons: .*Mars\/Olympus_Mons/);
});

test('a helper answer that is not what was asked is COMMAND_FAILED', async (t) => {
  const fake = (stdout: string, exitCode = 0): Runner => ({ run: async (_c: Command): Promise<CommandResult> => ({ exitCode, stdout, stderr: '' }) });
  await t.throwsAsync(nextCronRuns('0 3 * * *', 'UTC', 1, fake('Segmentation fault')), { code: 'COMMAND_FAILED', message: /printed no JSON/ });
  await t.throwsAsync(nextCronRuns('0 3 * * *', 'UTC', 2, fake('{"next":["2026-01-01T03:00:00Z"]}')), { code: 'COMMAND_FAILED', message: /answered/ });
  await t.throwsAsync(nextCronRuns('0 3 * * *', 'UTC', 1, fake('{"next":["tomorrow"]}')), { code: 'COMMAND_FAILED' });
});
