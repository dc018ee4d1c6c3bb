/**
 * Mark the running system good or bad through cOS boot assessment (cos-layout.md 4.5), decided by the host model
 * and written through the bootchooser:
 * - good: the running image's record becomes `good`; boot assessment is disarmed only when the running image is the
 *   one under assessment (active). With an upgrade staged in active and the running image in passive, the staged
 *   upgrade stays armed: marking the running system good must not let an untried image boot unassessed.
 * - bad: only when active runs and passive booted before: armed with tentative set, so on the next boot GRUB picks
 *   the fallback and adds upgrade_failure.
 */
import path from 'node:path';
import { AgentError } from '../model/errors.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { loadActionConfig } from '../host/config.ts';
import { acquireLock } from '../host/lock.ts';
import { markOnBoot, readStateFile, writeStateFile } from '../host/state-file.ts';
import { applyGrubWrites, installBootAssessment, readHost } from '../host/bootchooser.ts';
import { decideMark } from '../host/boot-model.ts';
import { recoverInterrupted } from './recover.ts';
import type { AgentDeps } from '../host/deps.ts';
import { withDiscovery } from '../host/access.ts';
import { syncFs } from '../partitions/index.ts';

export interface MarkOutcome {
  /** Whether boot assessment was disarmed (good) or armed to fall back (bad). */
  assessmentChanged: boolean;
  /** The slot whose record was updated (null: the running image is in no A/B slot, e.g. recovery). */
  slot: 'active' | 'passive' | null;
  warnings: string[];
}

export async function markBooted(scopeDeps: AgentDeps, good: boolean): Promise<MarkOutcome> {
  // One probe pass of the block devices for the whole action (recovery and the host read).
  const deps = withDiscovery(scopeDeps);
  const { config } = await loadActionConfig(deps);
  const cleanup = new CleanupStack();
  let failed = true;
  const warnings: string[] = [];
  try {
    const lock = await acquireLock(deps.root.path('/run/cos-agent/upgrade.lock'), good ? 'mark-good' : 'mark-bad');
    cleanup.push('release the lock', () => lock.release());
    warnings.push(...(await recoverInterrupted(deps, config)).warnings);
    const host = await readHost(deps, config, cleanup, { writable: true });
    if (host.dirs.state === undefined) throw new AgentError('DEVICE_NOT_FOUND', `no partition labelled ${config.labels.state}: boot assessment lives there`);
    const d = decideMark(host.state, good);
    if ('refused' in d) throw new AgentError('NOT_SUPPORTED', d.refused);
    const { slot } = d;
    const changed = d.writes !== null;
    if (d.writes !== null) {
      // What is marked must be what GRUB acts on: the boot-assessment script and its env blocks are on disk first.
      await installBootAssessment(host.dirs);
      await applyGrubWrites(host, d.writes);
    }
    else deps.log.info({ running: host.state.running, staged: host.state.staged }, 'mark-good: boot assessment left as it is (the image under assessment is not the running one)');
    const dir = host.dirs.state;
    if (slot !== null && dir !== undefined) {
      const stateFile = path.join(dir, 'state.yaml');
      const { state } = await readStateFile(stateFile);
      const id = host.facts.slots[slot].id;
      if (state.partitions['state'] !== undefined || id !== null) {
        await writeStateFile(stateFile, markOnBoot(state, slot, good ? 'good' : 'failed', id));
      }
      await syncFs(dir);
    }
    failed = false;
    return { assessmentChanged: changed, slot, warnings };
  } finally {
    for (const e of await cleanup.run(failed)) {
      deps.log.error({ err: e.message }, 'cleanup step failed');
      warnings.push(e.message);
    }
  }
}
