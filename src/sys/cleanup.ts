/**
 * A LIFO stack of undo jobs (elemental's CleanStack): push the undo right after the acquire. `always` jobs run on
 * every path, `onError` only when the action failed, `onSuccess` only when it succeeded. Every job runs even if an
 * earlier one failed; their errors are collected and returned (never thrown over the action's own error).
 */
type Kind = 'always' | 'onError' | 'onSuccess';

interface Job {
  kind: Kind;
  description: string;
  fn: () => Promise<void> | void;
}

export class CleanupStack {
  private readonly jobs: Job[] = [];

  push(description: string, fn: () => Promise<void> | void): void {
    this.jobs.push({ kind: 'always', description, fn });
  }
  pushOnError(description: string, fn: () => Promise<void> | void): void {
    this.jobs.push({ kind: 'onError', description, fn });
  }
  pushOnSuccess(description: string, fn: () => Promise<void> | void): void {
    this.jobs.push({ kind: 'onSuccess', description, fn });
  }

  /** Run the jobs in reverse order. Returns the errors of failed jobs (empty when all went well). */
  async run(failed: boolean): Promise<Error[]> {
    const errors: Error[] = [];
    while (this.jobs.length > 0) {
      const job = this.jobs.pop() as Job;
      if ((job.kind === 'onError' && !failed) || (job.kind === 'onSuccess' && failed)) continue;
      try {
        await job.fn();
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        errors.push(new Error(`cleanup: ${job.description}: ${err.message}`, { cause: err }));
      }
    }
    return errors;
  }
}
