/**
 * One job at a time (rauc's install thread + notify/cleanup callbacks): the daemon drives the actions through this.
 * A second request while a job runs gets BUSY naming the running transaction. Progress and completion go to the
 * listener; the transport (D-Bus) turns them into properties and signals. The actions are injected (JobActions: the
 * real ones in this process, or in a job process of their own), so tests drive the job logic with fakes, without root.
 */
import { randomUUID } from 'node:crypto';
import { AgentError, cancelVerdict } from '../model/errors.ts';
import type { AgentDeps, Operation, Progress } from '../host/deps.ts';
import type { upgrade, UpgradeOptions, UpgradeOutcome } from '../actions/upgrade/upgrade.ts';
import type { rollback, RollbackOptions, RollbackOutcome } from '../actions/rollback.ts';
import type { checkForUpdate, CheckOutcome } from '../actions/check.ts';
import type { markBooted, MarkOutcome } from '../actions/mark.ts';
import type { runStageAction } from '../actions/run-stage.ts';
import { strictFailure, type RunStageOutcome } from '../model/stage.ts';

export type JobKind = 'upgrade' | 'check' | 'rollback' | 'mark-good' | 'mark-bad' | 'run-stage';

/** Completion result codes of the Completed signal: 0 success, 1 failure, 2 cancelled. */
export const RESULT_OK = 0;
export const RESULT_FAILED = 1;
export const RESULT_CANCELLED = 2;

export interface RunningJob {
  transaction: string;
  kind: JobKind;
  startedAt: string;
}

export type JobOutcome = UpgradeOutcome | RollbackOutcome | CheckOutcome | MarkOutcome | RunStageOutcome | null;

export interface JobListener {
  operation(op: Operation, transaction: string | null): void;
  progress(p: Progress, transaction: string): void;
  completed(transaction: string, kind: JobKind, result: number, error: AgentError | null, outcome: JobOutcome): void;
}

/**
 * What the jobs run: the real actions in this process (job-actions.ts), or each in a process of its own
 * (job-process.ts: cosd's way, so that the daemon never holds the job machinery); tests pass fakes
 * with the same signatures. This module imports none of them: loading it loads no action.
 */
export interface JobActions {
  upgrade: typeof upgrade;
  rollback: typeof rollback;
  checkForUpdate: typeof checkForUpdate;
  markBooted: typeof markBooted;
  runStageAction: typeof runStageAction;
}

export class JobManager {
  private readonly deps: AgentDeps;
  private readonly listener: JobListener;
  private readonly actions: JobActions;
  private job: (RunningJob & { abort: AbortController; committed: boolean; done: Promise<void> }) | null = null;

  constructor(deps: AgentDeps, listener: JobListener, actions: JobActions) {
    this.deps = deps;
    this.listener = listener;
    this.actions = actions;
  }

  get running(): RunningJob | null {
    if (this.job === null) return null;
    const { transaction, kind, startedAt } = this.job;
    return { transaction, kind, startedAt };
  }

  /** Resolves when the running job (if any) has finished. */
  idle(): Promise<void> {
    return this.job?.done ?? Promise.resolve();
  }

  upgrade(opts: Omit<UpgradeOptions, 'transaction' | 'onProgress' | 'signal'>): string {
    return this.start('upgrade', (tx, signal, onProgress, onCommit) => this.actions.upgrade(this.deps, { ...opts, transaction: tx, signal, onProgress, onCommit }));
  }

  check(opts: { image?: string; recovery?: boolean }): string {
    return this.start('check', () => this.actions.checkForUpdate(this.deps, opts));
  }

  rollback(opts: RollbackOptions): string {
    return this.start('rollback', () => this.actions.rollback(this.deps, opts));
  }

  mark(good: boolean): string {
    return this.start(good ? 'mark-good' : 'mark-bad', () => this.actions.markBooted(this.deps, good));
  }

  /**
   * A yip stage (RunStage): every step runs, errors are collected; with `strict` a stage that had errors fails with
   * CLOUD_INIT_FAILED, its outcome (what ran, the errors) kept on the error for the transaction record.
   */
  runStage(stage: string, strict: boolean): string {
    return this.start('run-stage', async () => {
      const outcome = await this.actions.runStageAction(this.deps, { stage, dryRun: false });
      const failure = strict ? strictFailure(outcome) : null;
      if (failure !== null) throw Object.assign(failure, { outcome });
      return outcome;
    });
  }

  /**
   * Cancel the running upgrade if it has not reached the slot switch. Returns false when there is nothing to
   * cancel or it is too late (the switch has begun and will complete). Idempotent.
   */
  cancel(): boolean {
    const job = this.job;
    if (job === null || job.kind !== 'upgrade' || job.committed) return false;
    job.abort.abort(new AgentError('STAGE_FAILED', 'cancelled'));
    return true;
  }

  private start(kind: JobKind, run: (tx: string, signal: AbortSignal, onProgress: (p: Progress) => void, onCommit: () => void) => Promise<JobOutcome>): string {
    if (this.job !== null) {
      throw new AgentError('BUSY', `busy: ${this.job.kind} transaction ${this.job.transaction} is running`);
    }
    const transaction = randomUUID();
    const abort = new AbortController();
    const job = { transaction, kind, startedAt: this.deps.now().toISOString(), abort, committed: false, done: Promise.resolve() };
    this.job = job;
    let lastOp: Operation | null = null;
    // The slot switch is the point of no return: the action says when it reaches it, and from then a cancel is refused.
    const onCommit = (): void => {
      job.committed = true;
    };
    const onProgress = (p: Progress): void => {
      if (p.operation !== lastOp) {
        lastOp = p.operation;
        this.listener.operation(p.operation, transaction);
      }
      this.listener.progress(p, transaction);
    };
    this.listener.operation(kind === 'upgrade' ? 'checking' : kind === 'check' ? 'checking' : 'finalizing', transaction);
    job.done = (async () => {
      let result = RESULT_OK;
      let error: AgentError | null = null;
      let outcome: JobOutcome = null;
      try {
        outcome = await run(transaction, abort.signal, onProgress, onCommit);
      } catch (e) {
        error = e instanceof AgentError ? e : new AgentError('STAGE_FAILED', e instanceof Error ? e.message : String(e), { cause: e });
        // A failure that still has an outcome to report (a strict run-stage: what ran, the errors).
        if (typeof e === 'object' && e !== null && 'outcome' in e) outcome = (e as { outcome: JobOutcome }).outcome;
        // The job's own verdict when it has one (a job process: a cancel that arrived after its point of no return
        // cancelled nothing); else whether it was cancelled here.
        result = (cancelVerdict(e) ?? abort.signal.aborted) ? RESULT_CANCELLED : RESULT_FAILED;
      } finally {
        this.job = null;
        this.listener.operation('idle', null);
      }
      this.listener.completed(transaction, kind, result, error, outcome);
    })();
    return transaction;
  }
}

