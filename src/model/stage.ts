/**
 * yip stage names and outcomes, pure: the daemon checks a RunStage request and judges a --strict run with these
 * without loading the yip engine (src/yip, src/actions/run-stage.ts), which runs in the job process.
 */
import { AgentError } from './errors.ts';

export interface RunStageOutcome {
  stage: string;
  sources: string[];
  /** Per stage (STAGE.before, STAGE, STAGE.after) and source: the ops in order, what was skipped and why, the errors. */
  runs: Array<{ stage: string; source: string; ops: Array<{ op: string; skipped: string | null; errors: string[]; warnings: string[] }>; problems: string[]; warnings: string[] }>;
  errors: number;
  dryRun: boolean;
}

const STAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** A stage name as yip's: letters, digits, `.`, `_`, `-`, at most 100 characters; else USAGE naming it. */
export function checkStageName(stage: string): void {
  if (!STAGE_NAME.test(stage) || stage.length > 100) throw new AgentError('USAGE', `run-stage: ${JSON.stringify(stage.slice(0, 100))} is not a stage name (letters, digits, . _ -)`);
}

/** With --strict, a stage that had errors fails (after its report is printed): CLOUD_INIT_FAILED naming the first. */
export function strictFailure(outcome: RunStageOutcome): AgentError | null {
  if (outcome.errors === 0) return null;
  const first = outcome.runs.flatMap((r) => [...r.problems, ...r.ops.flatMap((o) => o.errors.map((e) => `${o.op}: ${e}`))])[0] ?? '';
  return new AgentError('CLOUD_INIT_FAILED', `stage ${outcome.stage}: ${outcome.errors} error(s) (--strict); the first: ${first.split('\n')[0] ?? ''}`);
}
