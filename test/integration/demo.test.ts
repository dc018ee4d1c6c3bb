/**
 * README command 1 (`npm run demo`, after setup): the demo script runs end to end against the real parts and cleans
 * up after itself. The bundle it runs is built by `npm test` before the tests.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const DEMO = fileURLToPath(new URL('../../scripts/demo.ts', import.meta.url));

test('the demo upgrades a disposable host through cosd on a private bus, is told "already up to date" the second time, and shows the status', async (t) => {
  const { stdout } = await run(process.execPath, [DEMO], { maxBuffer: 16 << 20, timeout: 240_000 });
  t.regex(stdout, /cosd pid \d+ owns io\.costoolkit\.Agent1 on unix:path=/);
  t.regex(stdout, /Upgraded active slot to 127\.0\.0\.1:\d+\/cos\/os:2\.0\.0@sha256:[0-9a-f]{64} version 2\.0\.0/);
  t.regex(stdout, /Already up to date: the active slot already holds sha256:[0-9a-f]{64}/);
  t.regex(stdout, /\+ Staged image: 127\.0\.0\.1:\d+\/cos\/os:2\.0\.0\n +Version: 2\.0\.0 \(staged [^)]+\)\n +Digest: sha256:[0-9a-f]{12}\n +Slot: active \(cOS\/active\.img, COS_ACTIVE, ext2\)/);
  t.regex(stdout, /^Next boot: active: the default entry$/m);
  t.regex(stdout, /job succeeded {2}transaction [0-9a-f-]{36}/);
  t.regex(stdout, /demo: done \(daemon, bus, host and registry removed\)\n$/);
});
