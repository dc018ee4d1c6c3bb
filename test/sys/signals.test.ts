/**
 * holdSigterm (src/sys/signals.ts) in a child Node process: while held, a SIGTERM does not end the process, which
 * exits by itself with its own status (as cosctl health-check exits 60 after asking for the reboot that stops its
 * unit); released with a SIGTERM pending, the process ends by it; released without one, SIGTERM ends it as usual.
 * The child says "held" when the hold is in place, and each step waits for the child's word, not for time.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const SIGNALS = fileURLToPath(new URL('../../src/sys/signals.ts', import.meta.url));

/**
 * Run `body` (module code with `holdSigterm` imported) in a child; `onLine` sees each stdout line and the child.
 * Resolves with its exit code, signal and lines.
 */
async function child(body: string, onLine: (line: string, kill: (s: NodeJS.Signals) => void) => void): Promise<{ code: number | null; signal: NodeJS.Signals | null; lines: string[] }> {
  const code = `import { holdSigterm } from ${JSON.stringify(SIGNALS)};\n${body}`;
  const p = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  createInterface({ input: p.stdout }).on('line', (l) => {
    lines.push(l);
    onLine(l, (s) => p.kill(s));
  });
  const [exitCode, signal] = (await once(p, 'exit')) as [number | null, NodeJS.Signals | null];
  return { code: exitCode, signal, lines };
}

// The child keeps itself alive with a ref'd interval until it has seen the SIGTERM (hold.received), then exits 60.
const WAIT_FOR_TERM = `
const hold = holdSigterm(600_000);
console.log('held');
const tick = setInterval(() => {
  if (!hold.received) return;
  clearInterval(tick);
  console.log('got SIGTERM, exiting by myself');
  process.exitCode = 60;
}, 5);
`;

test('while SIGTERM is held, the process is not ended by it: it exits by itself with its own status', async (t) => {
  const r = await child(WAIT_FOR_TERM, (l, kill) => {
    if (l === 'held') kill('SIGTERM');
  });
  t.is(r.signal, null, 'not ended by the signal');
  t.is(r.code, 60);
  t.deepEqual(r.lines, ['held', 'got SIGTERM, exiting by myself']);
});

test('released with a SIGTERM pending, the process ends by that SIGTERM', async (t) => {
  const body = `
const hold = holdSigterm(600_000);
console.log('held');
const tick = setInterval(() => {
  if (!hold.received) return;
  clearInterval(tick);
  console.log('releasing');
  hold.release();
  setInterval(() => {}, 1000); // would stay alive forever but for the SIGTERM raised again
}, 5);
`;
  const r = await child(body, (l, kill) => {
    if (l === 'held') kill('SIGTERM');
  });
  t.is(r.signal, 'SIGTERM');
  t.deepEqual(r.lines, ['held', 'releasing']);
});

test('released without a SIGTERM, the default action is back: a later SIGTERM ends the process', async (t) => {
  const body = `
const hold = holdSigterm(600_000);
hold.release();
hold.release(); // idempotent
console.log(hold.received ? 'received' : 'released');
setInterval(() => {}, 1000);
`;
  const r = await child(body, (l, kill) => {
    if (l === 'released') kill('SIGTERM');
  });
  t.is(r.signal, 'SIGTERM');
  t.deepEqual(r.lines, ['released']);
});

test('the hold does not keep the process alive: with nothing else to do it exits at once with its status', async (t) => {
  const r = await child(`holdSigterm(600_000);\nconsole.log('held');\nprocess.exitCode = 60;\n`, () => {});
  t.is(r.signal, null);
  t.is(r.code, 60);
  t.deepEqual(r.lines, ['held']);
});
