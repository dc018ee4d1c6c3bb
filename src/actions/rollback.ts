/**
 * Rollback: boot the other A/B slot next, once (`next_entry` in /oem/grubenv, which GRUB clears after use), or for
 * good (`--permanent`: swap active.img and passive.img with the crash-safe steps of plan.swapSteps).
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../model/errors.ts';
import { updateGrubEnvFile } from '../grub/index.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { acquireLock } from '../host/lock.ts';
import { loadConfig } from '../config/load.ts';
import { parseCmdline } from '../host/cmdline.ts';
import { rollbackEntry, swapSteps, STALE_FILES } from './upgrade/plan.ts';
import { readStateFile, writeStateFile } from '../host/state-file.ts';
import { applySwitchSteps } from './upgrade/switch.ts';
import { findPartition, hostMountOf, mountRw } from '../host/access.ts';
import { syncFs } from '../partitions/index.ts';
import type { AgentDeps } from '../host/deps.ts';
import { rm } from 'node:fs/promises';

export interface RollbackOptions {
  permanent?: boolean;
}

export interface RollbackOutcome {
  permanent: boolean;
  /** The GRUB entry the next boot uses (one-shot). */
  nextEntry: string | null;
}

export async function rollback(deps: AgentDeps, opts: RollbackOptions = {}): Promise<RollbackOutcome> {
  const { root } = deps;
  const { config } = await loadConfig(root, { env: deps.env });
  const boot = parseCmdline(await readFile(root.path('/proc/cmdline'), 'utf8').catch(() => ''), config.labels);
  const cleanup = new CleanupStack();
  let failed = true;
  try {
    const lock = await acquireLock(root.path('/run/cos-agent/upgrade.lock'), `rollback${opts.permanent ? ' --permanent' : ''}`);
    cleanup.push('release the lock', () => lock.release());

    if (!opts.permanent) {
      // /oem is COS_OEM, mounted rw on a booted host; mount it ourselves when it is not.
      const oem = await findPartition(deps, config.labels.oem);
      const oemDir = (await hostMountOf(deps, oem.device))?.dir ?? (await mountRw(deps, oem.device, '/run/cos/oem', cleanup));
      const entry = rollbackEntry(boot.bootedFrom);
      await updateGrubEnvFile(path.join(oemDir, 'grubenv'), { next_entry: entry }, { create: true });
      await syncFs(oemDir);
      deps.log.info({ nextEntry: entry, bootedFrom: boot.bootedFrom }, 'one-shot rollback set');
      failed = false;
      return { permanent: false, nextEntry: entry };
    }

    const part = await findPartition(deps, config.labels.state);
    const dir = await mountRw(deps, part.device, '/run/cos/state', cleanup);
    for (const f of ['cOS/active.img', 'cOS/passive.img']) {
      if (!(await stat(path.join(dir, f)).then((s) => s.isFile(), () => false))) {
        throw new AgentError('STATE_INVALID', `cannot swap slots: ${f} is missing on ${config.labels.state}`);
      }
    }
    for (const f of STALE_FILES) await rm(path.join(dir, f), { force: true });
    cleanup.pushOnError('remove leftover switch names', async () => {
      for (const f of ['cOS/passive.next', 'cOS/active.next']) await rm(path.join(dir, f), { force: true });
    });
    await applySwitchSteps(deps, dir, swapSteps(config.labels));

    // The swapped pair: a fresh boot assessment cycle and swapped state entries.
    await updateGrubEnvFile(path.join(dir, 'boot_assessment'), { boot_assessment_tentative: '' }, { create: true });
    const stateFile = path.join(dir, 'state.yaml');
    const { state } = await readStateFile(stateFile);
    const images = state.partitions['state']?.images;
    if (images) {
      const { active, passive } = images;
      if (passive) images['active'] = { ...passive, label: config.labels.active };
      else delete images['active'];
      if (active) images['passive'] = { ...active, label: config.labels.passive };
      else delete images['passive'];
      await writeStateFile(stateFile, state);
    }
    await syncFs(dir);
    deps.log.info({}, 'active and passive swapped');
    failed = false;
    return { permanent: true, nextEntry: null };
  } finally {
    const errors = await cleanup.run(failed);
    for (const e of errors) deps.log.error({ err: e.message }, 'cleanup step failed');
  }
}
