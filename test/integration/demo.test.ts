/**
 * README command 1 (`npm run demo`, after setup): the demo script runs end to end against the real parts and cleans
 * up after itself: verification on (the demo key), an unsigned image refused, a verified upgrade, "already up to
 * date", status saying what boots next and who signed it, a rollback, mark-good, and a short summary. The bundle it
 * runs is built by `npm test` before the tests.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const DEMO = fileURLToPath(new URL('../../scripts/demo.ts', import.meta.url));

test('the demo: verification on, an unsigned image refused, a verified upgrade, status, rollback, mark-good, a summary', async (t) => {
  const { stdout, stderr } = await run(process.execPath, [DEMO], { maxBuffer: 16 << 20, timeout: 300_000 });
  t.regex(stdout, /cosd pid \d+ owns io\.costoolkit\.Agent1 on unix:path=/);
  t.regex(stdout, /verification on, trusting \/etc\/cos-agent\/keys\/demo\.pub/);
  // the unsigned image: refused at verification, before staging
  t.regex(stdout, /\$ cosctl upgrade --image 127\.0\.0\.1:\d+\/cos\/os:unsigned\n(\[(checking|verifying)\][^\n]*\n)+\n\$ cosctl upgrade\n/, 'nothing staged: no staging or download line');
  t.regex(stderr, /^cosctl: 127\.0\.0\.1:\d+\/cos\/os@sha256:[0-9a-f]{64}: no signature found/m);
  // the verified upgrade, its layers' sizes as they are (no 0.0 MiB)
  t.regex(stdout, /\[verifying\] verified: key \/etc\/cos-agent\/keys\/demo\.pub signed sha256:[0-9a-f]{64} \[simple-signing, tlog index \d+\]/);
  t.notRegex(stdout, /\(0\.0\/0\.0 MiB\)/);
  t.regex(stdout, /\[downloading\] 100% layer 2\/2 [0-9a-f]{12} \(4\.0\/4\.0 MiB\)/);
  t.regex(stdout, /Upgraded active slot to 127\.0\.0\.1:\d+\/cos\/os:2\.0\.0@sha256:[0-9a-f]{64} version 2\.0\.0\.\n/);
  t.notRegex(stdout, /signature NOT verified/);
  t.regex(stdout, /Already up to date: the active slot already holds sha256:[0-9a-f]{64}/);
  t.regex(stdout, /\+ Staged image: 127\.0\.0\.1:\d+\/cos\/os:2\.0\.0\n +Version: 2\.0\.0 \(staged [^)]+\)\n +Digest: sha256:[0-9a-f]{12}\n +Slot: active \(cOS\/active\.img, COS_ACTIVE, ext2\)\n +Signature: verified: key \/etc\/cos-agent\/keys\/demo\.pub signed/);
  t.regex(stdout, /^Next boot: active: the default entry$/m);
  // rollback, then mark-good, then what boots next
  t.regex(stdout, /\$ cosctl rollback\nNext boot \(once\): /);
  t.regex(stdout, /\$ cosctl mark-good\nMarked good: the running image\./);
  t.regex(stdout, /^Next boot: passive: once, as chosen with cosctl rollback \(next_entry\); the boot\n +after runs active$/m);
  t.regex(stdout, /^ +Active image: 127\.0\.0\.1:\d+\/cos\/os:2\.0\.0$/m, 'the upgrade the boot after runs is still shown');
  // the jobs in cosd's log, and the summary: every step as expected
  t.regex(stdout, /job failed +upgrade +[0-9a-f-]{36} {2}SIGNATURE_NOT_FOUND/);
  t.regex(stdout, /job succeeded +mark-good +[0-9a-f-]{36}/);
  const summary = stdout.slice(stdout.indexOf('\nsummary:\n'));
  t.is(summary.match(/^ {2}ok {3}/gm)?.length, 8, summary);
  t.notRegex(summary, /FAIL/);
  t.false(stdout.includes('"apiVersion"'), 'no JSON document dumped');
  t.regex(stdout, /demo: done \(daemon, bus, host and registry removed\)\n$/);
});
