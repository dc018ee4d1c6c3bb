/**
 * The test-only seams of src/sys/crash.ts: AGENT_TEST_CRASH_AT kills the process at the point, AGENT_TEST_PAUSE_AT
 * writes its marker and blocks the process there (the VM power-cut tests kill the VM at that marker).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { crashHooks, PAUSE_MARKER } from '../../src/sys/crash.ts';

const CRASH_TS = new URL('../../src/sys/crash.ts', import.meta.url).pathname;

/** A child that reaches steps a, b, c (printing each) with the hooks of `env`. */
function child(env: Record<string, string>): { done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }>; kill: () => void } {
  const script = `import { crashHooks } from ${JSON.stringify(CRASH_TS)};
const h = crashHooks(process.env) ?? {};
for (const s of ['a', 'b', 'c']) { h.onStep?.(s); process.stdout.write(s + '\\n'); }`;
  const c = spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  c.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }>((resolve) => {
    c.on('close', (code, signal) => resolve({ code, signal, stdout }));
  });
  return { done, kill: () => c.kill('SIGKILL') };
}

test('no seam without the variables; an unknown point is no seam', (t) => {
  t.is(crashHooks({}), undefined);
  t.is(crashHooks({ AGENT_TEST_CRASH_AT: 'nowhere' }), undefined);
  t.is(crashHooks({ AGENT_TEST_PAUSE_AT: 'step:' }), undefined);
});

test('AGENT_TEST_CRASH_AT=step:b: SIGKILL as step b starts', async (t) => {
  const r = await child({ AGENT_TEST_CRASH_AT: 'step:b' }).done;
  t.is(r.signal, 'SIGKILL');
  t.is(r.stdout, 'a\n');
});

test('AGENT_TEST_PAUSE_AT=step:b: the marker is written, then nothing after the point runs until the process is killed', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-pause-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const notify = path.join(dir, 'console');
  const c = child({ AGENT_TEST_PAUSE_AT: 'step:b', AGENT_TEST_PAUSE_NOTIFY: notify });
  let text = '';
  for (let i = 0; i < 600 && !text.includes(PAUSE_MARKER); i++) {
    await sleep(50);
    text = await readFile(notify, 'utf8').catch(() => '');
  }
  t.is(text, `\n${PAUSE_MARKER} step:b\n`);
  // the process is blocked at b: it never prints b or c; it ends only by the kill (the power cut)
  await sleep(300);
  c.kill();
  const r = await c.done;
  t.is(r.signal, 'SIGKILL');
  t.is(r.stdout, 'a\n');
});

test('pull:50%: at the first report at or past half of the bytes; switch:N after N switch steps', async (t) => {
  const script = (calls: string): string => `import { crashHooks } from ${JSON.stringify(CRASH_TS)};
const h = crashHooks(process.env) ?? {};
${calls}`;
  const run = (env: Record<string, string>, calls: string): Promise<{ signal: NodeJS.Signals | null; stdout: string }> => new Promise((resolve) => {
    const c = spawn(process.execPath, ['--input-type=module', '-e', script(calls)], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    c.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    c.on('close', (_code, signal) => resolve({ signal, stdout }));
  });
  const pull = await run({ AGENT_TEST_CRASH_AT: 'pull:50%' }, "for (const d of [10, 40, 60, 90]) { h.onPullBytes?.(d, 100); console.log(d); }");
  t.deepEqual(pull, { signal: 'SIGKILL', stdout: '10\n40\n' });
  const sw = await run({ AGENT_TEST_CRASH_AT: 'switch:2' }, "for (const n of [0, 1, 2, 3]) { h.onSwitchStep?.(n); console.log(n); }");
  t.deepEqual(sw, { signal: 'SIGKILL', stdout: '0\n1\n' });
});

test('AGENT_TEST_PAUSE_AT=step:a,step:c with AGENT_TEST_PAUSE_SECONDS: a marker at each point, a pause, then it goes on', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-pause-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const notify = path.join(dir, 'console');
  const r = await child({ AGENT_TEST_PAUSE_AT: 'step:a,step:c', AGENT_TEST_PAUSE_NOTIFY: notify, AGENT_TEST_PAUSE_SECONDS: '0.2' }).done;
  t.is(r.code, 0);
  t.is(r.stdout, 'a\nb\nc\n');
  t.is(await readFile(notify, 'utf8'), `\n${PAUSE_MARKER} step:a\n\n${PAUSE_MARKER} step:c\n`);
  t.is(crashHooks({ AGENT_TEST_PAUSE_AT: 'step:a,nowhere' }), undefined, 'an unknown point in the list: no seam');
  t.is(crashHooks({ AGENT_TEST_PAUSE_AT: 'step:a', AGENT_TEST_PAUSE_SECONDS: 'soon' }), undefined, 'a bad duration: no seam');
});
