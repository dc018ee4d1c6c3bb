/** The in-process backend (--no-daemon, or no daemon on the bus): runs the agent's actions in this process. */
import { AgentError } from '../model/errors.ts';
import type { AgentDeps } from '../host/deps.ts';
import { upgrade } from '../actions/upgrade/upgrade.ts';
import { rollback } from '../actions/rollback.ts';
import { checkForUpdate } from '../actions/check.ts';
import { markBooted } from '../actions/mark.ts';
import { hostStatus } from '../actions/status.ts';
import { verifyReference } from '../actions/verify-image.ts';
import type { Backend } from './backend.ts';

export function localBackend(deps: AgentDeps): Backend {
  return {
    kind: 'in-process',
    async upgrade(req, onProgress, signal) {
      if (req.reboot) throw new AgentError('NOT_SUPPORTED', 'upgrade --reboot needs the daemon (cosd); without it, reboot after the upgrade yourself');
      const out = await upgrade(deps, {
        ...(req.image !== undefined ? { image: req.image } : {}),
        ...(req.recovery ? { recovery: true } : {}),
        ...(req.noVerify ? { noVerify: true } : {}),
        ...(req.force ? { force: true } : {}),
        ...(signal !== undefined ? { signal } : {}),
        onProgress,
      });
      return {
        transaction: out.transaction, target: out.target, image: out.image, digest: out.digest, version: out.version,
        verification: out.verification, keepPassiveReason: out.keepPassiveReason, unchanged: out.unchanged, warnings: out.warnings,
        nextBoot: out.nextBoot === null ? null : (out.nextBoot.slot ?? ''),
      };
    },
    check: (req) => checkForUpdate(deps, req),
    rollback: (req) => rollback(deps, { permanent: req.permanent }),
    cancel: () => Promise.reject(new AgentError('NOT_SUPPORTED', 'cancel needs the daemon (cosd): an in-process upgrade is cancelled with Ctrl-C in its terminal')),
    mark: async (good) => {
      const o = await markBooted(deps, good);
      return { assessmentChanged: o.assessmentChanged, warnings: o.warnings };
    },
    status: () => hostStatus(deps),
    verify: (image) => verifyReference(deps, image),
    watch: () => Promise.reject(new AgentError('NOT_SUPPORTED', 'status --watch needs the daemon (cosd)')),
    close: () => Promise.resolve(),
  };
}
