/**
 * The real actions, run in the calling process: what a job process runs (src/job-worker.ts), and the jobs of an
 * AgentDaemon built without job processes (tests). Each loads its own module on first use: a job process loads what
 * its one action needs (a mark-good job does not load the upgrade pipeline, the registry client or the yip engine),
 * which is most of a job's start (src/job-worker.ts).
 */
import type { JobActions } from './job.ts';

export const REAL_ACTIONS: JobActions = {
  upgrade: async (...a) => (await import('../actions/upgrade/upgrade.ts')).upgrade(...a),
  rollback: async (...a) => (await import('../actions/rollback.ts')).rollback(...a),
  checkForUpdate: async (...a) => (await import('../actions/check.ts')).checkForUpdate(...a),
  markBooted: async (...a) => (await import('../actions/mark.ts')).markBooted(...a),
  runStageAction: async (...a) => (await import('../actions/run-stage.ts')).runStageAction(...a),
};
