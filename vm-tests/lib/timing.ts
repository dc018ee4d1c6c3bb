// Wall-clock accounting of the VM suite for scripts/test.sh: every VM test file imports this module, which appends
// "<epoch ms> start|end <file>" to $COS_AGENT_TEST_TIMING when the test process loads it and when it exits. The
// script reports the span from the first start to the last end (the brief's VM-suite budget is measured on it).
import { appendFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const log = process.env.COS_AGENT_TEST_TIMING;
if (log) {
  const file = basename(fileURLToPath(test.meta.file));
  const mark = (what: string): void => {
    try {
      appendFileSync(log, `${Date.now()} ${what} ${file}\n`);
    } catch {
      // The accounting must never fail a test.
    }
  };
  mark('start');
  process.on('exit', () => mark('end'));
}
