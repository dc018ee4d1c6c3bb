/**
 * Rollback, decided by the host model (host/boot-model.ts) and written through the bootchooser:
 * - one-shot: the next boot runs the rollback slot once (`next_entry` in /oem/grubenv, which GRUB clears when it
 *   takes it). The rollback slot is the other image that booted before, or, when an upgrade is staged in active, the
 *   running image: like `bootc rollback`, a rollback discards the staged upgrade (for the next boot).
 * - permanent: swap active.img and passive.img with the crash-safe steps of plan.swapSteps, when both booted
 *   before; any pending one-shot choice is replaced and boot assessment starts a fresh cycle.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../model/errors.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { acquireLock } from '../host/lock.ts';
import { loadActionConfig } from '../host/config.ts';
import { swapSteps } from './upgrade/plan.ts';
import { applyJournalRecords, removeJournal, runJournalSteps, writeJournal, type SwitchJournal } from './upgrade/journal.ts';
import { recoverInterrupted } from './recover.ts';
import { syncFs } from '../partitions/index.ts';
import { applyGrubWrites, checkGrubWrites, readHost } from '../host/bootchooser.ts';
import { decidePermanentRollback, decideRollback, grubVerbs, permanentRollbackWrites } from '../host/boot-model.ts';
import type { AgentDeps } from '../host/deps.ts';
import { withDiscovery } from '../host/access.ts';

export interface RollbackOptions {
  permanent?: boolean;
}

export interface RollbackOutcome {
  permanent: boolean;
  /** The GRUB entry the next boot uses (one-shot). */
  nextEntry: string | null;
  /** What went wrong after the rollback took effect (e.g. COS_STATE could not be remounted read-only). */
  warnings: string[];
}

export async function rollback(scopeDeps: AgentDeps, opts: RollbackOptions = {}): Promise<RollbackOutcome> {
  // One probe pass of the block devices for the whole action (recovery and the host read).
  const deps = withDiscovery(scopeDeps);
  const { root } = deps;
  const { config } = await loadActionConfig(deps);
  const cleanup = new CleanupStack();
  let failed = true;
  // Filled by the cleanup in finally, before the caller sees the outcome object.
  const warnings: string[] = [];
  try {
    const lock = await acquireLock(root.path('/run/cos-agent/upgrade.lock'), `rollback${opts.permanent ? ' --permanent' : ''}`);
    cleanup.push('release the lock', () => lock.release());

    // What an interrupted run left is undone (a committed switch finished) before anything is decided.
    const recovered = await recoverInterrupted(deps, config);
    warnings.push(...recovered.warnings);
    if (recovered.unfinished !== null && opts.permanent) throw new AgentError('STATE_INVALID', `refusing to change the slots: ${recovered.unfinished}`);
    const host = await readHost(deps, config, cleanup, { writable: true });
    if (!opts.permanent) {
      const d = decideRollback(host.state);
      if ('refused' in d) throw new AgentError('NOT_SUPPORTED', `cannot roll back: ${d.refused}`);
      await applyGrubWrites(host, grubVerbs.setOneShot(d.entry));
      deps.log.info({ nextEntry: d.entry, running: host.state.running, staged: host.state.staged }, 'one-shot rollback set');
      failed = false;
      return { permanent: false, nextEntry: d.entry, warnings };
    }

    const d = decidePermanentRollback(host.state);
    if ('refused' in d) throw new AgentError('NOT_SUPPORTED', `cannot swap active and passive: ${d.refused}`);
    const dir = host.dirs.state;
    if (dir === undefined) throw new AgentError('DEVICE_NOT_FOUND', `no ${config.labels.state} partition`);
    for (const f of ['cOS/active.img', 'cOS/passive.img']) {
      if (!(await stat(path.join(dir, f)).then((s) => s.isFile(), () => false))) {
        throw new AgentError('STATE_INVALID', `cannot swap slots: ${f} is missing on ${config.labels.state}`);
      }
    }
    // Committed by its journal: a crash from here on is finished by the next run, never started over (during a swap
    // both names may point at one image while the other exists only as passive.next).
    const writes = permanentRollbackWrites(host.facts);
    await checkGrubWrites(host, writes);
    const journal: SwitchJournal = {
      kind: 'swap', transaction: `rollback-${process.pid}-${Date.now()}`, steps: swapSteps(config.labels), done: 0,
      grub: writes, grubDone: false, recordsDone: false, records: { kind: 'swap', labels: config.labels },
    };
    await writeJournal(dir, journal);
    deps.testHooks?.onSwitchStep?.(0);
    await runJournalSteps(deps, dir, journal, (done) => deps.testHooks?.onSwitchStep?.(done));

    // The swapped pair: no pending one-shot choice, a fresh boot assessment cycle, swapped records.
    await applyGrubWrites(host, writes);
    journal.grubDone = true;
    await writeJournal(dir, journal);
    await applyJournalRecords(dir, journal);
    journal.recordsDone = true;
    await writeJournal(dir, journal);
    await removeJournal(dir);
    await syncFs(dir);
    deps.log.info({}, 'active and passive swapped');
    failed = false;
    return { permanent: true, nextEntry: null, warnings };
  } finally {
    const errors = await cleanup.run(failed);
    for (const e of errors) {
      deps.log.error({ err: e.message }, 'cleanup step failed');
      warnings.push(e.message);
    }
  }
}
