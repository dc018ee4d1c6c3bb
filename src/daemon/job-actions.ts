/**
 * The real actions, run in the calling process: what a job process runs (src/job-worker.ts), and the jobs of an
 * AgentDaemon built without job processes (tests).
 */
import { upgrade } from '../actions/upgrade/upgrade.ts';
import { rollback } from '../actions/rollback.ts';
import { checkForUpdate } from '../actions/check.ts';
import { markBooted } from '../actions/mark.ts';
import { runStageAction } from '../actions/run-stage.ts';
import type { JobActions } from './job.ts';

export const REAL_ACTIONS: JobActions = { upgrade, rollback, checkForUpdate, markBooted, runStageAction };
