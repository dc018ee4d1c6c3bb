/**
 * cosd's job processes (src/daemon/job-process.ts, src/job-worker.ts) against the same actions run in this process
 * (job-actions.ts): a failure comes back with the same code and message, the job's log lines reach the caller's
 * logger with their level, a cancel before the start aborts it. The killed-job case, on a real host, is in
 * test/integration/daemon.test.ts.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AgentError } from '../../src/model/errors.ts';
import { SysRoot } from '../../src/sys/root.ts';
import type { Logger } from '../../src/sys/log.ts';
import { agentDeps } from '../../src/host/agent-deps.ts';
import { processActions } from '../../src/daemon/job-process.ts';
import { REAL_ACTIONS } from '../../src/daemon/job-actions.ts';
import { loadedModules } from '../helpers/loaded-modules.ts';

function recordingLogger(lines: Array<{ level: string; obj: object; msg?: string }>): Logger {
  const at = (level: string) => (obj: object, msg?: string): void => {
    lines.push({ level, obj, ...(msg !== undefined ? { msg } : {}) });
  };
  const log: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => log };
  return log;
}

async function emptyRoot(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'job-process-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

// A root with no cOS host in it, label lookups pinned to a disk that does not exist: the actions fail early.
const ENV = { ...process.env, AGENT_TEST_DISK: '/dev/nonexistent-cos-agent-test-disk' };

test('a failing action reports the same error code, message and log lines from its job process as in this process', async (t) => {
  const root = await emptyRoot(t);
  const hereLines: Array<{ level: string; obj: object; msg?: string }> = [];
  const thereLines: Array<{ level: string; obj: object; msg?: string }> = [];
  const here = await REAL_ACTIONS.rollback(agentDeps({ root: new SysRoot(root), env: ENV, log: recordingLogger(hereLines) }), {}).then(() => null, (e: unknown) => e);
  const there = await processActions().rollback(agentDeps({ root: new SysRoot(root), env: ENV, log: recordingLogger(thereLines) }), {}).then(() => null, (e: unknown) => e);
  t.deepEqual(thereLines.map((l) => [l.level, l.msg]), hereLines.map((l) => [l.level, l.msg]), 'the same log lines');
  t.true(here instanceof AgentError, String(here));
  t.true(there instanceof AgentError, String(there));
  t.is((there as AgentError).code, (here as AgentError).code);
  t.is((there as AgentError).message, (here as AgentError).message);
  t.not((there as AgentError).message, '', 'a message naming what was wrong');
});

test('a check of a reference that cannot be parsed: REFERENCE_INVALID from the job process, as in-process', async (t) => {
  const root = await emptyRoot(t);
  const deps = agentDeps({ root: new SysRoot(root), env: ENV, log: recordingLogger([]) });
  const err = await t.throwsAsync(processActions().checkForUpdate(deps, { image: 'UPPER/Case::bad' }));
  t.true(err instanceof AgentError);
  t.is((err as AgentError).code, 'REFERENCE_INVALID', err?.message);
});

test('an upgrade cancelled before its job process starts work fails as cancelled; its error log line comes back with its level and fields', async (t) => {
  const root = await emptyRoot(t);
  const lines: Array<{ level: string; obj: object; msg?: string }> = [];
  const deps = agentDeps({ root: new SysRoot(root), env: ENV, log: recordingLogger(lines) });
  const abort = new AbortController();
  abort.abort(new AgentError('STAGE_FAILED', 'cancelled'));
  const err = await t.throwsAsync(processActions().upgrade(deps, { image: 'registry.invalid/os:v2', noVerify: true, signal: abort.signal }));
  t.true(err instanceof AgentError);
  t.regex(err?.message ?? '', /cancel/i);
  const failed = lines.find((l) => l.msg === 'upgrade failed');
  t.is(failed?.level, 'error', JSON.stringify(lines));
  t.like(failed?.obj ?? {}, { code: 'STAGE_FAILED' });
  t.regex(String((failed?.obj as { transaction?: unknown } | undefined)?.transaction), /^[0-9a-f-]{36}$/, 'the child logger\'s bindings (the transaction) travel with the line');
});

test('a job process loads only its action: the worker and the actions table load no action module; mark and rollback load neither the upgrade pipeline, the registry client, signature verification nor the yip engine', async (t) => {
  const worker = await loadedModules('src/job-worker.ts');
  t.true(worker.includes('src/daemon/job-actions.ts'), worker.join('\n'));
  t.deepEqual(worker.filter((m) => /^src\/(actions|yip|oci|verify)\/|^node_modules\//.test(m)), [], 'before its start message, a job process has loaded no action');
  for (const action of ['src/actions/mark.ts', 'src/actions/rollback.ts']) {
    const loaded = await loadedModules(action);
    t.true(loaded.includes(action), loaded.join('\n'));
    t.deepEqual(loaded.filter((m) => /^src\/(yip|oci|verify)\/|^src\/actions\/upgrade\/upgrade\.ts$|^node_modules\/(got|@sigstore|tar-stream)\//.test(m)), [], `${action} loads only what it needs`);
  }
  // the upgrade does load them (the check above would pass vacuously if the paths were wrong)
  const upgrade = await loadedModules('src/actions/upgrade/upgrade.ts');
  for (const want of [/^src\/oci\//, /^src\/verify\//, /^node_modules\/got\//]) t.true(upgrade.some((m) => want.test(m)), `the upgrade loads ${String(want)}`);
});
