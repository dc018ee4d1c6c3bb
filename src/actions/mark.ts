/**
 * Mark the booted system good or bad through cOS boot assessment (cos-layout.md 4.5), so GRUB acts on it:
 * good = disarm (clear enable_boot_assessment and boot_assessment_tentative), as the boot.before stage does after a
 * healthy boot; bad = arm with tentative set, so the next boot GRUB picks the fallback and adds upgrade_failure.
 */
import path from 'node:path';
import { AgentError } from '../model/errors.ts';
import { updateGrubEnvFile } from '../grub/index.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { loadConfig } from '../config/load.ts';
import { findPartition, mountRw } from '../host/access.ts';
import { parseCmdline } from '../host/cmdline.ts';
import { acquireLock } from '../host/lock.ts';
import { readStateFile, writeStateFile } from '../host/state-file.ts';
import type { AgentDeps } from '../host/deps.ts';
import { readFile } from 'node:fs/promises';
import { syncFs } from '../partitions/index.ts';

export async function markBooted(deps: AgentDeps, good: boolean): Promise<void> {
  const { config } = await loadConfig(deps.root, { env: deps.env });
  const boot = parseCmdline(await readFile(deps.root.path('/proc/cmdline'), 'utf8').catch(() => ''), config.labels);
  if (!good && boot.bootedFrom !== 'active') {
    throw new AgentError('NOT_SUPPORTED', `mark-bad only applies when booted from active (booted from ${boot.bootedFrom}): GRUB falls back from active to passive`);
  }
  const cleanup = new CleanupStack();
  let failed = true;
  try {
    const lock = await acquireLock(deps.root.path('/run/cos-agent/upgrade.lock'), good ? 'mark-good' : 'mark-bad');
    cleanup.push('release the lock', () => lock.release());
    const part = await findPartition(deps, config.labels.state);
    const dir = await mountRw(deps, part.device, '/run/cos/state', cleanup);
    await updateGrubEnvFile(path.join(dir, 'boot_assessment'), good
      ? { enable_boot_assessment: '', boot_assessment_tentative: '' }
      : { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes' }, { create: true });
    const stateFile = path.join(dir, 'state.yaml');
    const { state } = await readStateFile(stateFile);
    const slot = boot.bootedFrom === 'passive' ? 'passive' : 'active';
    const entry = state.partitions['state']?.images[slot];
    if (entry && boot.bootedFrom !== 'recovery') {
      entry.upgradeResult = good ? 'good' : 'failed';
      await writeStateFile(stateFile, state);
    }
    await syncFs(dir);
    failed = false;
  } finally {
    await cleanup.run(failed);
  }
}
