/**
 * The upgrade's hook points run as yip stages by the agent's own engine (the one behind `cosctl run-stage`), as
 * elemental upgrade runs them: `before-upgrade` and `after-upgrade` on the host (its /system/oem, /oem,
 * /usr/local/cloud-config, CLOUD_INIT_PATHS, cos.setup= and the command line), `after-upgrade-chroot` inside the new
 * image (its own /system/oem, with the host's /oem and /usr/local bound in, commands chrooted into it). Each hook is
 * STAGE.before, STAGE and STAGE.after. Errors are logged and never stop the stage; with `strict` (elemental's
 * --strict, the config's `strict`) a stage that had errors fails the upgrade (CLOUD_INIT_FAILED, wrapped as
 * HOOK_FAILED by the upgrade).
 */
import { SysRoot } from '../sys/root.ts';
import type { AgentDeps } from '../host/deps.ts';
import type { HookContext, HookName, HookRunner } from '../host/hooks.ts';
import { runStageAction, strictFailure } from './run-stage.ts';

export class YipHooks implements HookRunner {
  private readonly deps: AgentDeps;
  constructor(deps: AgentDeps) {
    this.deps = deps;
  }

  async run(name: HookName, ctx: HookContext): Promise<void> {
    const root = ctx.chroot !== undefined ? new SysRoot(ctx.chroot) : this.deps.root;
    const log = this.deps.log.child({ transaction: ctx.transaction, hook: name });
    const outcome = await runStageAction({ ...this.deps, root, log }, { stage: name, dryRun: false, storeRoot: this.deps.root, ...(ctx.extraPaths !== undefined ? { extraPaths: ctx.extraPaths } : {}) });
    const steps = outcome.runs.reduce((n, r) => n + r.ops.filter((o) => o.skipped === null).length, 0);
    log.info({ sources: outcome.sources, steps, errors: outcome.errors, ...(ctx.chroot !== undefined ? { chroot: ctx.chroot } : {}) }, `hook ${name}: ${steps} step(s), ${outcome.errors} error(s)`);
    if (ctx.strict) {
      const failure = strictFailure(outcome);
      if (failure !== null) throw failure;
    }
  }
}
