/**
 * cosd's jobs in a process of their own, one per job: the real actions run there (src/job-worker.ts, forked through
 * src/sys/node-child.ts) with the daemon's root, environment and last valid configuration, and all they report comes
 * back over the IPC channel: log lines (written by the daemon's logger, with the transaction), progress, the point of
 * no return, then the outcome or the error (its code and message). Cancel is a message to the job; the job ignores
 * it once the action has passed its point of no return, as the action itself would.
 *
 * Why a process: the job machinery (got, the OCI, signature and yip stacks, tar, zlib, the actions, and the pages of
 * the Node binary they run) lives in the job's address space and is gone when the job ends, so the resident daemon
 * stays at its idle size after an upgrade (bench/daemon.ts; a worker thread was tried first: its heap is freed, but
 * the Node code pages and malloc arenas it touched stay resident, 108 MB after an upgrade); and staging's CPU work
 * never runs on the daemon's event loop, so GetStatus and Cancel are answered at once while an image is staged.
 *
 * A job that ends without reporting (killed, crashed, out of memory) fails with JobLostError (STAGE_FAILED naming
 * how it ended), and cosd recovers what it left at once, as its own start would (AgentDaemon.finish). The unit's
 * SIGTERM goes to cosd only (KillMode=mixed): cosd cancels the job and waits for it (AgentDaemon.stop); a SIGTERM sent
 * to the job itself, or its cosd dying (the IPC channel closes), cancels it the same way: before its point of no
 * return it cleans up, after it it finishes, and it exits. Whether a failed job was cancelled is the job's verdict
 * (`cancelled` in its report): a Cancel that crossed the job's commit on the way cancelled nothing.
 */
import { AgentError, JobLostError, type ErrorCode } from '../model/errors.ts';
import type { ConfigSnapshot } from '../config/load.ts';
import type { AgentDeps, Progress } from '../host/deps.ts';
import { forkModule, type NodeChild } from '../sys/node-child.ts';
import type { JobActions } from './job.ts';

/** Which action a job runs, and with what (all of it structured-clone data). */
export interface JobData {
  action: keyof JobActions;
  /** The action's options (without callbacks or the signal); markBooted's `good`. */
  args: unknown;
  /** The root prefix (SysRoot) the daemon manages. */
  root: string;
  env: Record<string, string | undefined>;
  /** The daemon's last valid configuration (AgentDeps.config), if one has loaded. */
  config: ConfigSnapshot | undefined;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** From the daemon to the job. */
export type ToJob = { t: 'start'; data: JobData } | { t: 'cancel'; code: ErrorCode; message: string };

/** From the job to the daemon. */
export type FromJob =
  | { t: 'log'; level: LogLevel; obj: object; msg?: string }
  | { t: 'progress'; p: Progress }
  | { t: 'commit' }
  | { t: 'done'; outcome: unknown }
  | { t: 'failed'; code: ErrorCode | null; message: string; cancelled: boolean; outcome?: unknown };

/** The job's entry: next to this module's chunk in the bundle (dist/cosd/job-worker.mjs), else the source. */
function jobModule(): URL {
  return import.meta.url.endsWith('.ts') ? new URL('../job-worker.ts', import.meta.url) : new URL('./job-worker.mjs', import.meta.url);
}

/** How long after a job's exit its report may still arrive (the IPC channel drained). */
const CLOSE_GRACE_MS = 2000;

interface Callbacks {
  signal?: AbortSignal | undefined;
  onProgress?: ((p: Progress) => void) | undefined;
  onCommit?: (() => void) | undefined;
}

function send(child: NodeChild, m: ToJob): void {
  // a job that is gone cannot be told anything: its exit settles the job
  if (child.connected) child.send(m, () => {});
}

function runJob<T>(deps: AgentDeps, action: keyof JobActions, args: unknown, cb: Callbacks = {}): Promise<T> {
  const data: JobData = { action, args, root: deps.root.prefix, env: { ...deps.env }, config: deps.config?.() };
  return new Promise<T>((resolve, reject) => {
    let report: { ok: true; outcome: unknown } | { ok: false; err: AgentError } | null = null;
    const child = forkModule(jobModule(), { env: data.env, name: `cosd-${action}` });
    const onAbort = (): void => {
      const reason: unknown = cb.signal?.reason;
      send(child, {
        t: 'cancel',
        code: reason instanceof AgentError ? reason.code : 'STAGE_FAILED',
        message: reason instanceof Error ? reason.message : 'cancelled',
      });
    };
    child.on('message', (m: FromJob) => {
      switch (m.t) {
        case 'log':
          deps.log[m.level](m.obj, m.msg);
          break;
        case 'progress':
          cb.onProgress?.(m.p);
          break;
        case 'commit':
          cb.onCommit?.();
          break;
        case 'done':
          report = { ok: true, outcome: m.outcome };
          break;
        case 'failed': {
          // the job's own verdict on whether it was cancelled (JobManager keys the result on it)
          const err = Object.assign(new AgentError(m.code ?? 'STAGE_FAILED', m.message), { cancelled: m.cancelled });
          report = { ok: false, err: m.outcome !== undefined ? Object.assign(err, { outcome: m.outcome }) : err };
          break;
        }
      }
    });
    let spawnError: Error | null = null;
    let settled = false;
    const settle = (code: number | null, sig: NodeJS.Signals | null): void => {
      if (settled) return;
      settled = true;
      cb.signal?.removeEventListener('abort', onAbort);
      if (report?.ok === true) resolve(report.outcome as T);
      else if (report !== null) reject(report.err);
      else {
        const how = spawnError !== null ? `could not start (${spawnError.message})` : sig !== null ? `was killed by ${sig}` : `exited with status ${code}`;
        reject(new JobLostError(`the ${action} job process ${how} before it reported an outcome`, { cause: spawnError ?? undefined }));
      }
    };
    child.on('error', (e) => {
      spawnError = e;
    });
    // Settled once the job has exited (never two jobs at once), with its report: read by then, or by the time the
    // IPC channel closes, or within a grace period (a process the job left behind may hold the channel open).
    child.on('exit', (code, sig) => {
      if (report !== null) settle(code, sig);
      else setTimeout(() => settle(code, sig), CLOSE_GRACE_MS).unref();
    });
    child.on('close', (code, sig) => settle(code, sig));
    child.send({ t: 'start', data } satisfies ToJob, (err) => {
      // a job that cannot be told what to do is ended: it would wait for its start for ever
      if (err) child.kill('SIGKILL');
    });
    if (cb.signal?.aborted === true) onAbort();
    else cb.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The real actions, each run in a job process of its own. */
export function processActions(): JobActions {
  return {
    upgrade: (deps, opts = {}) => {
      // onStep (tests of the action itself) is not a job's: the job manager never passes it
      const { signal, onProgress, onCommit, onStep, ...args } = opts;
      if (onStep !== undefined) throw new AgentError('NOT_SUPPORTED', 'upgrade in a job process: onStep is not forwarded');
      return runJob(deps, 'upgrade', args, { signal, onProgress, onCommit });
    },
    rollback: (deps, opts = {}) => runJob(deps, 'rollback', opts),
    checkForUpdate: (deps, opts = {}) => runJob(deps, 'checkForUpdate', opts),
    markBooted: (deps, good) => runJob(deps, 'markBooted', good),
    runStageAction: (deps, opts) => {
      if (opts.storeRoot !== undefined) throw new AgentError('NOT_SUPPORTED', 'run-stage in a job process: storeRoot is for the upgrade hooks, which run in the job itself');
      return runJob(deps, 'runStageAction', { stage: opts.stage, dryRun: opts.dryRun, ...(opts.extraPaths !== undefined ? { extraPaths: [...opts.extraPaths] } : {}) });
    },
  };
}
