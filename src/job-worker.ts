/**
 * A job process's entry (a composition root, like main.ts): runs the one action of a cosd job (src/daemon/job-process.ts
 * forks it and sends a JobData) with the real dependencies and the daemon's root, environment and last valid
 * configuration, and reports back over the IPC channel: log lines, progress, the point of no return, then the outcome
 * or the error, and exits. A cancel from the daemon, or a SIGTERM/SIGINT (the unit stopping), aborts the action until
 * it reports its point of no return; after it the job finishes. If the daemon goes away (its IPC channel closes), the
 * job cancels the same way: a job dies with its daemon, cleaning up after itself, and records how it ended.
 */
import { pathToFileURL } from 'node:url';
import { AgentError } from './model/errors.ts';
import { SysRoot } from './sys/root.ts';
import { SpawnRunner } from './sys/runner.ts';
import type { Logger } from './sys/log.ts';
import { agentDeps } from './host/agent-deps.ts';
import type { AgentDeps } from './host/deps.ts';
import type { HookRunner } from './host/hooks.ts';
import { REAL_ACTIONS } from './daemon/job-actions.ts';
import type { FromJob, JobData, LogLevel, ToJob } from './daemon/job-process.ts';

// Only as a forked job (an IPC channel) does this do anything; run by hand it says what it is, imported it is inert.
// (an IPC channel and the name src/daemon/job-process.ts gives it: a test runner's own channel is not one)
const forked = process.send !== undefined && (process.argv[2] ?? '').startsWith('cosd-');
if (!forked && process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stderr.write('job-worker: this is a cosd job process, started by cosd (src/daemon/job-process.ts), not a command\n');
  process.exit(2);
}

/**
 * Send `m` to cosd (nothing when it is gone), then `then`. A value the serializer cannot copy (a function in a log
 * field or an outcome) goes as its JSON form, what the log line, the record and the bus would show (a BigInt as its
 * decimal text).
 */
function post(m: FromJob, then: () => void = () => {}): void {
  if (!process.connected) {
    then();
    return;
  }
  try {
    process.send?.(m, then);
  } catch {
    const json = JSON.stringify(m, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
    process.send?.(JSON.parse(json) as FromJob, then);
  }
}

/** Log lines go to the daemon's logger: one format, one destination, the job's transaction on every line. */
function forwardingLogger(bindings: Record<string, unknown>): Logger {
  const line = (level: LogLevel) => (obj: object, msg?: string): void => {
    post({ t: 'log', level, obj: { ...bindings, ...obj }, ...(msg !== undefined ? { msg } : {}) });
  };
  return { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error'), child: (b) => forwardingLogger({ ...bindings, ...b }) };
}

const abort = new AbortController();
let committed = false;
const cancel = (reason: AgentError): void => {
  if (!committed && !abort.signal.aborted) abort.abort(reason);
};
if (forked) for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => cancel(new AgentError('STAGE_FAILED', `cancelled (${sig})`)));
// cosd gone (crashed, killed): the job is nobody's any more. Before its point of no return it cancels and cleans up
// (its record says so, for the next cosd to publish); after it, it finishes the switch. Then it exits.
if (forked) process.on('disconnect', () => cancel(new AgentError('STAGE_FAILED', 'cancelled: cosd, which ran this job, went away')));

async function run(data: JobData): Promise<unknown> {
  const log = forwardingLogger({});
  const base = agentDeps({
    root: new SysRoot(data.root),
    env: process.env,
    log,
    // Tool runs are logged at debug level (the daemon adds the transaction).
    runner: new SpawnRunner({ onCommand: (argv) => log.debug({ argv: [...argv] }, 'run') }),
  });
  // The yip engine loads when a hook runs (an upgrade), not for the other jobs.
  const hooks: HookRunner = { run: async (name, ctx) => new (await import('./actions/hooks.ts')).YipHooks(base).run(name, ctx) };
  base.hooks = hooks;
  // The jobs read the daemon's config snapshot (the hooks read the files, as in the daemon).
  const deps: AgentDeps = { ...base, config: () => data.config };
  const a = REAL_ACTIONS;
  switch (data.action) {
    case 'upgrade':
      return a.upgrade(deps, {
        ...(data.args as object),
        signal: abort.signal,
        onProgress: (p) => post({ t: 'progress', p }),
        onCommit: () => {
          committed = true;
          post({ t: 'commit' });
        },
      });
    case 'rollback':
      return a.rollback(deps, data.args as Parameters<typeof a.rollback>[1]);
    case 'checkForUpdate':
      return a.checkForUpdate(deps, data.args as Parameters<typeof a.checkForUpdate>[1]);
    case 'markBooted':
      return a.markBooted(deps, data.args === true);
    case 'runStageAction':
      return a.runStageAction(deps, data.args as Parameters<typeof a.runStageAction>[1]);
  }
}

async function job(data: JobData): Promise<FromJob> {
  try {
    return { t: 'done', outcome: await run(data) };
  } catch (e) {
    const outcome = typeof e === 'object' && e !== null && 'outcome' in e ? (e as { outcome: unknown }).outcome : undefined;
    return {
      t: 'failed',
      code: e instanceof AgentError ? e.code : null,
      message: e instanceof Error ? e.message : String(e),
      // a cancel this job took (before its point of no return), not one that came too late
      cancelled: abort.signal.aborted && !committed,
      ...(outcome !== undefined ? { outcome } : {}),
    };
  }
}

let started = false;
if (forked) process.on('message', (m: ToJob) => {
  if (m.t === 'cancel') cancel(new AgentError(m.code, m.message));
  else if (m.t === 'start' && !started) {
    started = true;
    // the report written (or the daemon gone), the job ends: nothing it started is still running
    void job(m.data).then((report) => post(report, () => process.exit(0)));
  }
});
