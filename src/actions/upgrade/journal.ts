/**
 * The switch journal: a slot switch (an upgrade's rotation, a permanent rollback's swap) is committed by writing its
 * whole intent to `cOS/switch.journal` on the slot partition before its first step: the steps, how far they got, the
 * GRUB writes and the record change that complete it. A crash anywhere in the switch or after it is then finished by
 * the next run (resumeSwitch), never undone or "started over": during a switch the old active may exist only as
 * `passive.next`, and a swap has moments where both names point at one image.
 *
 * Steps are re-run from the last one recorded as done, each in its repeatable form (switch.ts applySwitchStep).
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../model/errors.ts';
import type { Labels } from '../../model/config.ts';
import type { GrubWrites } from '../../host/boot-model.ts';
import { readStateFile, rotateOnUpgrade, swapOnRollback, writeStateFile, type RotateOptions } from '../../host/state-file.ts';
import type { AgentDeps } from '../../host/deps.ts';
import { readImageIdentity } from '../../partitions/index.ts';
import { fsyncDir, writeFileAtomic } from '../../sys/files.ts';
import type { SwitchStep } from './plan.ts';
import { applySwitchStep } from './switch.ts';

export const JOURNAL_FILE = 'cOS/switch.journal';

export interface SwitchJournal {
  kind: 'upgrade' | 'swap';
  /** Transaction of the run that committed it. */
  transaction: string;
  steps: SwitchStep[];
  /** Steps known to be complete (each is also safe to repeat). */
  done: number;
  /** The bootchooser writes that complete the switch (null: none), and whether they were made. */
  grub: GrubWrites | null;
  grubDone: boolean;
  /** Whether the record change was made. */
  recordsDone: boolean;
  /** The state.yaml change that completes it. */
  records: { kind: 'rotate'; options: RotateOptions } | { kind: 'swap'; labels: Partial<Labels> } | null;
}

const journalPath = (partDir: string): string => path.join(partDir, JOURNAL_FILE);

export async function readJournal(partDir: string): Promise<SwitchJournal | null> {
  let text: string;
  try {
    text = await readFile(journalPath(partDir), 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw new AgentError('STATE_INVALID', `cannot read the switch journal ${journalPath(partDir)}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const j = JSON.parse(text) as SwitchJournal;
    if ((j.kind !== 'upgrade' && j.kind !== 'swap') || !Array.isArray(j.steps) || typeof j.done !== 'number') throw new Error('not a switch journal');
    return j;
  } catch (e) {
    throw new AgentError('STATE_INVALID', `the switch journal ${journalPath(partDir)} is corrupt (${(e as Error).message}): the slots are left as they are`, { cause: e });
  }
}

/** Commit: the journal is on disk (fsynced, directory too) before the first step runs. */
export async function writeJournal(partDir: string, j: SwitchJournal): Promise<void> {
  await writeFileAtomic(journalPath(partDir), `${JSON.stringify(j)}\n`);
}

export async function removeJournal(partDir: string): Promise<void> {
  await rm(journalPath(partDir), { force: true });
  await fsyncDir(path.join(partDir, 'cOS'));
}

/**
 * Run the journal's remaining steps, recording progress after each; `onStep` after each (tests kill here). Throws on
 * a step that cannot be done; the journal then still says where it stopped.
 */
export async function runJournalSteps(deps: AgentDeps, partDir: string, j: SwitchJournal, onStep?: (done: number) => void): Promise<void> {
  while (j.done < j.steps.length) {
    await applySwitchStep(deps, partDir, j.steps[j.done] as SwitchStep, { repeatable: true });
    j.done++;
    await writeJournal(partDir, j);
    onStep?.(j.done);
  }
}

/**
 * Apply the journal's record change to the partition's state.yaml, once: a change already made (the record of
 * active.img already names the image now in it) is not made again.
 */
export async function applyJournalRecords(partDir: string, j: SwitchJournal): Promise<void> {
  if (j.records === null) return;
  const file = path.join(partDir, 'state.yaml');
  const { state } = await readStateFile(file);
  const activeId = (await readImageIdentity(path.join(partDir, 'cOS/active.img')).catch(() => undefined))?.id ?? null;
  const recorded = state.partitions['state']?.images['active']?.uuid;
  if (activeId !== null && recorded === activeId) return;
  if (j.records.kind === 'rotate') await writeStateFile(file, rotateOnUpgrade(state, j.records.options));
  else if (state.partitions['state'] !== undefined) await writeStateFile(file, swapOnRollback(state, j.records.labels));
}
