/**
 * `cosctl boot-assessment`: install or bring up to date the GRUB side of boot assessment on this host (the agent's
 * N-tries grub_boot_assessment, the grubcustom hook, the env blocks; host/boot-assessment.ts), as an upgrade does
 * before it arms. For a derivative that installs the agent onto a running cOS host, or after an `elemental upgrade`
 * put cOS's one-try script back. Under the host lock, after recovery from an interrupted run.
 */
import { AgentError } from '../model/errors.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { acquireLock } from '../host/lock.ts';
import { loadActionConfig } from '../host/config.ts';
import { installBootAssessment, readHostOnce, readHost } from '../host/bootchooser.ts';
import type { BootState } from '../host/boot-model.ts';
import type { AgentDeps } from '../host/deps.ts';
import { withDiscovery } from '../host/access.ts';
import { recoverInterrupted } from './recover.ts';

export interface BootAssessmentOutcome {
  /** The files written (empty: everything was up to date). */
  changed: string[];
  /** Boot assessment as GRUB acts on it now, read back. */
  assessment: BootState['assessment'];
  /** The configured tries an upgrade arms (BOOT_ASSESSMENT_TRIES). */
  tries: number;
}

export async function installAssessment(scopeDeps: AgentDeps): Promise<BootAssessmentOutcome> {
  // One probe pass of the block devices for the whole action (recovery and the host reads).
  const deps = withDiscovery(scopeDeps);
  const { config } = await loadActionConfig(deps);
  const cleanup = new CleanupStack();
  let failed = true;
  try {
    const lock = await acquireLock(deps.root.path('/run/cos-agent/upgrade.lock'), 'boot-assessment');
    cleanup.push('release the lock', () => lock.release());
    await recoverInterrupted(deps, config);
    const host = await readHost(deps, config, cleanup, { writable: true });
    if (host.dirs.state === undefined) throw new AgentError('DEVICE_NOT_FOUND', `no partition labelled ${config.labels.state}: boot assessment lives there`);
    const changed = await installBootAssessment(host.dirs);
    failed = false;
    return { changed, assessment: (await readHostOnce(deps, config, { dirs: host.dirs })).state.assessment, tries: config.bootAssessmentTries };
  } finally {
    for (const e of await cleanup.run(failed)) deps.log.error({ err: e.message }, 'cleanup step failed');
  }
}
