/**
 * Recovery from an interrupted run (issue 9): every action, with the host lock held, and cosd at start, first finds
 * and undoes what a crashed run left, in this order:
 *  1. mounts under the agent's own mount points (host/mount-points.ts: the transition mount and its chroot binds,
 *     the slot partitions; never elemental's /run/cos/*, where a concurrent `elemental upgrade` mounts), and the
 *     private read-only views of processes that are gone, deepest first;
 *  2. a committed switch (its journal on COS_STATE) is finished: remaining steps, GRUB writes, records;
 *  3. loop devices backed by files on COS_STATE / COS_RECOVERY that no slot image is (a transition image, usually
 *     deleted already), matched by device number and inode, never by path;
 *  4. leftover files: transition images, the squashfs scratch tree, and a `*.next` name only when another name still
 *     holds its image (it is never the only copy);
 *  5. COS_STATE (and COS_RECOVERY) back to read-only, whatever the crashed run left.
 */
import { rm, rmdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { AgentConfig } from '../model/config.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { findPartition, hostMountOf, mountRo, mountRw, RO_PREFIX, withDiscovery } from '../host/access.ts';
import { applyGrubWrites, readHost, readHostOnce, SLOT_FILES } from '../host/bootchooser.ts';
import { processAlive } from '../host/lock.ts';
import type { AgentDeps } from '../host/deps.ts';
import { detachLoop, listLoopDevices, loopBackingIdentity, readImageIdentity, readMounts, unmount } from '../partitions/index.ts';
import { applyJournalRecords, readJournal, removeJournal, runJournalSteps, writeJournal, JOURNAL_FILE } from './upgrade/journal.ts';
import { NEXT_NAMES, TRANSITION_FILES, type SwitchStep } from './upgrade/plan.ts';
import { MOUNT_BASE, MOUNT_POINTS } from '../host/mount-points.ts';
import { clearRunning, readRunning, recordResult, type RunningUpgrade } from '../host/records.ts';
import type { UpgradeResult } from '../model/host.ts';

export interface RecoveryReport {
  unmounted: string[];
  detached: string[];
  removed: string[];
  /** A committed switch that was finished ('upgrade' or 'swap'), or null. */
  resumed: 'upgrade' | 'swap' | null;
  /**
   * An upgrade a power cut or crash stopped (its running marker, host/records.ts), recorded now as the last upgrade:
   * finished (its committed switch resumed) or undone. Null when there was none.
   */
  interrupted: UpgradeResult | null;
  /**
   * What could not be put right and makes changing the slots unsafe (a committed switch that could not be finished,
   * a `*.next` name that is the only name of an image): upgrade and rollback refuse while it is there.
   */
  unfinished: string | null;
  warnings: string[];
}

const SLOT_NAMES: readonly string[] = Object.values(SLOT_FILES).flat();

const inode = (p: string): Promise<number | undefined> => stat(p).then((s) => s.ino, () => undefined);
const devNumber = (rdev: number): string => `${(rdev >> 8) & 0xfff}:${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}`;

/** Undo what an interrupted run left. The caller holds the host lock. Never throws for what it cannot undo: it says so. */
export async function recoverInterrupted(scopeDeps: AgentDeps, config: AgentConfig): Promise<RecoveryReport> {
  // One probe pass of the block devices for the whole recovery (its label lookups and host reads).
  const deps = withDiscovery(scopeDeps);
  const report: RecoveryReport = { unmounted: [], detached: [], removed: [], resumed: null, interrupted: null, warnings: [], unfinished: null };
  /** The transaction of the switch journal found, and whether its switch was finished or abandoned. */
  let journalFound: { transaction: string; finished: boolean } | null = null;
  const { root, log } = deps;
  const warn = (what: string, e: unknown): void => {
    const message = `${what}: ${e instanceof Error ? e.message : String(e)}`;
    report.warnings.push(message);
    log.warn({ err: message }, 'recovery from an interrupted run');
  };

  // 1. Mounts.
  const own = [root.path(MOUNT_BASE)];
  const roBase = root.path('/run/cos-agent');
  const stale = (mp: string): boolean => {
    if (own.some((o) => mp === o || mp.startsWith(`${o}/`))) return true;
    const m = new RegExp(`^${roBase.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/${RO_PREFIX}(\\d+)-[^/]+(/|$)`).exec(mp);
    return m !== null && !processAlive(Number(m[1]));
  };
  const unmountAll = async (which: (mp: string) => boolean, lazy: boolean): Promise<void> => {
    const mounts = (await readMounts()).filter((m) => which(m.mountPoint)).sort((a, b) => b.mountPoint.length - a.mountPoint.length);
    for (const m of mounts) {
      try {
        await unmount(deps.runner, m.mountPoint).catch((e: unknown) => {
          if (!lazy) throw e;
          return unmount(deps.runner, m.mountPoint, { lazy: true });
        });
        report.unmounted.push(m.mountPoint);
        if (path.dirname(m.mountPoint) === roBase) await rmdir(m.mountPoint).catch(() => undefined);
      } catch (e) {
        warn(`unmounting ${m.mountPoint}`, e);
      }
    }
  };
  // The transition mount (and the chroot binds inside it) first; then the loop devices that held transition images
  // (they keep the partition under them busy); then the partitions themselves, which are then free to unmount.
  const transition = root.path(MOUNT_POINTS.transition);
  await unmountAll((mp) => mp === transition || mp.startsWith(`${transition}/`), true);
  const partitions: Array<{ label: string; device: string }> = [];
  for (const label of [config.labels.state, config.labels.recovery]) {
    const dev = await findPartition(deps, label).catch(() => undefined);
    if (dev !== undefined) partitions.push({ label, device: dev.device });
  }
  for (const { device } of partitions) {
    for (const loop of await staleLoops(deps, device)) {
      await detachLoop(deps.runner, loop).then(() => report.detached.push(loop), (e: unknown) => warn(`detaching ${loop}`, e));
    }
  }
  await unmountAll(stale, true);

  // 2, 4 and 5 on each slot partition.
  for (const { label, device } of partitions) {
    const dev = { device };
    const isState = label === config.labels.state;
    // Look first through a read-only view; mount rw only when there is something to do.
    const view = new CleanupStack();
    let todo: { journal: boolean; files: string[]; rwHostMount: boolean };
    try {
      const dir = await mountRo(deps, dev.device, view);
      const files: string[] = [];
      for (const f of [...TRANSITION_FILES, ...NEXT_NAMES]) if ((await inode(path.join(dir, f))) !== undefined) files.push(f);
      const host = await hostMountOf(deps, dev.device);
      todo = { journal: isState && (await inode(path.join(dir, JOURNAL_FILE))) !== undefined, files, rwHostMount: host !== undefined && !host.readOnly };
    } catch (e) {
      warn(`looking at ${label}`, e);
      continue;
    } finally {
      for (const e of await view.run(false)) warn('cleanup of a read-only view', e);
    }
    if (!todo.journal && todo.files.length === 0 && !todo.rwHostMount) continue;

    const scope = new CleanupStack();
    try {
      const dir = await mountRw(deps, dev.device, isState ? MOUNT_POINTS.state : MOUNT_POINTS.recovery, scope, { restoreRo: true });
      if (todo.journal) {
        try {
          const done = await finishSwitch(deps, config, dir, warn);
          if (done !== null) journalFound = { transaction: done.transaction, finished: done.finished };
          report.resumed = done?.finished === true ? done.kind : null;
        } catch (e) {
          report.unfinished = `an interrupted slot switch could not be finished (${e instanceof Error ? e.message : String(e)}); the slots are left as they are`;
          warn('finishing the interrupted slot switch', e);
        }
      }
      for (const f of TRANSITION_FILES) {
        if ((await inode(path.join(dir, f))) === undefined) continue;
        await rm(path.join(dir, f), { force: true });
        report.removed.push(path.join(dir, f));
      }
      const named = new Set<number>();
      for (const f of SLOT_NAMES) {
        const ino = await inode(path.join(dir, f));
        if (ino !== undefined) named.add(ino);
      }
      for (const f of NEXT_NAMES) {
        const ino = await inode(path.join(dir, f));
        if (ino === undefined) continue;
        if (named.has(ino)) {
          await rm(path.join(dir, f), { force: true });
          report.removed.push(path.join(dir, f));
        } else {
          // The only name of an image, and no journal says how it got there (an older agent): kept, never deleted.
          warn(`${path.join(dir, f)} holds an image no slot names`, new Error('kept; the slots are as they are'));
          report.unfinished ??= `${path.join(dir, f)} is the only name of an image (an interrupted switch): the slots are left as they are`;
        }
      }
    } catch (e) {
      warn(`recovering ${label}`, e);
    } finally {
      for (const e of await scope.run(false)) warn('cleanup after recovery', e);
    }
  }

  // The scratch tree of a squashfs recovery build (on COS_PERSISTENT, at /usr/local when mounted).
  const tree = root.path('/usr/local/.cos-agent/recovery-tree');
  if ((await inode(tree)) !== undefined) {
    await rm(tree, { recursive: true, force: true }).then(() => report.removed.push(tree), (e: unknown) => warn(`removing ${tree}`, e));
  }
  // 6. The upgrade that was running: recorded as interrupted (its marker is found only under the lock: its run is gone).
  const running = await readRunning(root).catch(() => null);
  if (running !== null) {
    const journal = journalFound === null || journalFound.transaction !== running.transaction ? null : journalFound.finished ? 'finished' : 'abandoned';
    const rec = interruptedRecord(running, journal, report, deps.now().toISOString());
    try {
      await recordResult(root, rec);
      await clearRunning(root, running.transaction);
      report.interrupted = rec;
    } catch (e) {
      warn('recording the interrupted upgrade', e);
    }
  }
  if (report.unmounted.length + report.detached.length + report.removed.length > 0 || report.resumed !== null || report.interrupted !== null) {
    log.warn({ ...report }, 'cleaned up after an interrupted run');
  }
  return report;
}

/**
 * Loop devices that held a transition image (by the backing file's name, or a deleted file) on this partition (by
 * the backing file's device number: never by path, which another host's disk may share), and are not mounted. The
 * name is checked before losetup is asked, so unrelated loop devices cost nothing.
 */
async function staleLoops(deps: AgentDeps, partition: string): Promise<string[]> {
  const rdev = await stat(partition).then((s) => devNumber(s.rdev), () => undefined);
  if (rdev === undefined) return [];
  const mounted = new Set((await readMounts()).map((m) => m.source));
  const out: string[] = [];
  for (const l of await listLoopDevices()) {
    if (mounted.has(l.device) || !/transition\.(img|squashfs)( \(deleted\))?$|\(deleted\)$/.test(l.backingFile)) continue;
    const id = await loopBackingIdentity(deps.runner, l.device).catch(() => undefined);
    if ((id ?? '').split(' ')[1] === rdev) out.push(l.device);
  }
  return out;
}

/** The upgrade steps (upgrade.ts UPGRADE_STEPS) after the one that commits the slot switch (its journal is written). */
const AFTER_COMMIT: ReadonlySet<string> = new Set(['grub', 'record-state', 'read-back']);

/**
 * PURE: the last-upgrade record of an upgrade a power cut or crash stopped, from the step its marker names and what
 * recovery found of its switch journal ('finished': resumed to the end; 'abandoned': stopped where it stood, the
 * running image keeping a slot; null: none of its transaction). A system switch always begins by writing its journal
 * and ends by removing it, so without one the switch had not begun (up to commit-switch) or was complete (after it).
 * A recovery upgrade has no journal: cut from commit-switch on, the recovery slot holds the old or the new image.
 */
export function interruptedRecord(running: RunningUpgrade, journal: 'finished' | 'abandoned' | null, report: Pick<RecoveryReport, 'removed' | 'unfinished'>, now: string): UpgradeResult {
  const base = { transaction: running.transaction, target: running.target, image: running.image, imageDigest: running.imageDigest, startedAt: running.startedAt, finishedAt: now, interruptedAt: running.step };
  const cut = `interrupted (power cut or crash) at step ${running.step}`;
  const system = running.target === 'system';
  if (system && journal === 'finished') {
    return { ...base, result: 'success', code: null, error: null, rotated: true, warnings: [`${cut}, after its slot switch was committed: the next run of the agent finished it`] };
  }
  if (system && journal === null && AFTER_COMMIT.has(running.step)) {
    return { ...base, result: 'success', code: null, error: null, rotated: true, warnings: [`${cut}, after its slot switch was complete: only its record was missing`] };
  }
  const left = report.unfinished !== null ? `; ${report.unfinished}` : report.removed.length > 0 ? `; what it left was removed (${report.removed.map((f) => path.basename(f)).join(', ')})` : '';
  const where = system && journal === 'abandoned'
    ? 'its slot switch abandoned where it stood (a remaining step would have replaced the running image): status shows the slots as they are'
    : !system && (running.step === 'commit-switch' || AFTER_COMMIT.has(running.step))
      ? 'while or after the recovery image was switched: status shows which image the recovery slot holds'
      : 'before its slot switch: the slots are as they were';
  return { ...base, result: 'failure', code: 'INTERRUPTED', rotated: false, error: `the upgrade was ${cut}, ${where}${left}` };
}

/** Finish a committed switch from its journal: remaining steps, GRUB writes, records; then the journal goes. */
async function finishSwitch(deps: AgentDeps, config: AgentConfig, dir: string, warn: (what: string, e: unknown) => void): Promise<{ kind: 'upgrade' | 'swap'; transaction: string; finished: boolean } | null> {
  const journal = await readJournal(dir).catch((e: unknown) => {
    warn('reading the switch journal', e);
    return null;
  });
  if (journal === null) return null;
  deps.log.warn({ kind: journal.kind, transaction: journal.transaction, done: journal.done, steps: journal.steps.length }, 'finishing a slot switch an interrupted run committed');
  // Across a reboot GRUB may have booted the image a remaining step would replace (a one-shot or a fallback chose
  // passive.img): the running image never leaves its slot. Then the switch is abandoned where it stands: the journal
  // goes, and a *.next name that is not the running image is dropped (the running image, in its slot, is the fallback).
  const runningId = await runningImageId(deps, config, dir);
  if (runningId !== null && !(await keepsRunning(dir, journal.steps.slice(journal.done), runningId))) {
    warn('finishing the interrupted slot switch', new Error('a remaining step would replace the running image, which now holds a slot: the switch is abandoned where it stands'));
    for (const f of NEXT_NAMES) {
      const id = (await readImageIdentity(path.join(dir, f)).catch(() => undefined))?.id;
      if (id !== undefined && id !== runningId) await rm(path.join(dir, f), { force: true });
    }
    await removeJournal(dir);
    return { kind: journal.kind, transaction: journal.transaction, finished: false };
  }
  await runJournalSteps(deps, dir, journal);
  if (!journal.grubDone && journal.grub !== null) {
    const grub = journal.grub;
    const scope = new CleanupStack();
    try {
      const host = await readHost(deps, config, scope, { writable: true, dirs: { state: dir } });
      await applyGrubWrites(host, grub);
      journal.grubDone = true;
      await writeJournal(dir, journal);
    } catch (e) {
      warn('setting the GRUB variables of the interrupted switch', e);
    } finally {
      for (const e of await scope.run(false)) warn('cleanup after the GRUB writes', e);
    }
  }
  if (!journal.recordsDone) {
    await applyJournalRecords(dir, journal).catch((e: unknown) => warn('recording the slots of the interrupted switch', e));
  }
  await removeJournal(dir);
  return { kind: journal.kind, transaction: journal.transaction, finished: true };
}

/** The running image's identity, as the host model records it for this boot (null: unknown). */
async function runningImageId(deps: AgentDeps, config: AgentConfig, dir: string): Promise<string | null> {
  return readHostOnce(deps, config, { dirs: { state: dir } }).then((h) => h.facts.runningId, () => null);
}

/**
 * PURE-ish: play the remaining steps on the names' identities (labels aside) and check that some name holds the
 * running image after every one of them.
 */
async function keepsRunning(dir: string, steps: readonly SwitchStep[], runningId: string): Promise<boolean> {
  const names = new Map<string, string | null>();
  for (const f of ['cOS/active.img', 'cOS/passive.img', 'cOS/transition.img', ...NEXT_NAMES]) {
    const ident = await readImageIdentity(path.join(dir, f)).catch(() => undefined);
    if (ident !== undefined) names.set(f, ident.id);
  }
  for (const step of steps) {
    if (step.op === 'label') continue;
    if (!names.has(step.from)) continue; // done already (a repeatable step)
    names.set(step.to, names.get(step.from) ?? null);
    if (step.op === 'rename') names.delete(step.from);
    if (![...names.values()].includes(runningId)) return false;
  }
  return true;
}
