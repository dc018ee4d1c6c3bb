/**
 * The last upgrade's outcome, kept where `cosctl status` finds it: /run/cos-agent (this boot) and, when COS_PERSISTENT
 * is mounted at /usr/local, /usr/local/.cos-agent (across reboots). Written atomically.
 */
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { writeFileAtomic } from '../sys/files.ts';
import { AgentError } from '../model/errors.ts';
import { displayText, TEXT_LIMITS } from '../model/text.ts';
import path from 'node:path';
import type { UpgradeResult } from '../model/host.ts';
import type { SysRoot } from '../sys/root.ts';

const FILES = ['/run/cos-agent/last-upgrade.json', '/usr/local/.cos-agent/last-upgrade.json'];

async function writeJson(file: string, value: unknown): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Write the record to /run and, when COS_PERSISTENT is there, to /usr/local/.cos-agent. A failed write of either is
 * thrown (after the other was attempted), naming the file: the caller retries and surfaces it, never drops it.
 */
export async function recordResult(root: SysRoot, unbounded: UpgradeResult): Promise<void> {
  // Bounded and escaped: a record never carries a megabyte of someone's input, nor raw control bytes.
  const result: UpgradeResult = {
    ...unbounded,
    image: unbounded.image === null ? null : displayText(unbounded.image, TEXT_LIMITS.value),
    error: unbounded.error === null ? null : displayText(unbounded.error, TEXT_LIMITS.message),
    ...(unbounded.warnings !== undefined ? { warnings: unbounded.warnings.slice(0, TEXT_LIMITS.warnings).map((w) => displayText(w, TEXT_LIMITS.message)) } : {}),
  };
  const errors: string[] = [];
  const write = (file: string): Promise<void> =>
    writeJson(root.path(file), result).catch((e: unknown) => {
      errors.push(`${root.path(file)}: ${e instanceof Error ? e.message : String(e)}`);
    });
  await write(FILES[0] as string);
  const persistent = await stat(root.path('/usr/local')).then((s) => s.isDirectory(), () => false);
  if (persistent) await write(FILES[1] as string);
  if (errors.length > 0) throw new AgentError('STATE_INVALID', `cannot record the upgrade result: ${errors.join('; ')}`);
}

/**
 * The upgrade that runs now, as far as a power cut can tell: written when the upgrade holds the lock and has undone
 * what an earlier run left, its step updated as it goes, removed once its outcome is recorded. Found by the next run
 * (recoverInterrupted, under the same lock), it becomes that run's outcome: an upgrade cut by a power loss is recorded
 * as interrupted instead of leaving the last record of an older upgrade as the truth.
 */
export interface RunningUpgrade {
  transaction: string;
  target: 'system' | 'recovery';
  image: string | null;
  imageDigest: string | null;
  startedAt: string;
  /** The step the run had reached (an UPGRADE_STEPS name). */
  step: string;
}

const RUNNING_FILES = ['/run/cos-agent/upgrade-running.json', '/usr/local/.cos-agent/upgrade-running.json'];

/** Write the marker of a running upgrade (this boot, and COS_PERSISTENT when mounted at /usr/local). Throws on failure. */
export async function recordRunning(root: SysRoot, running: RunningUpgrade): Promise<void> {
  const value: RunningUpgrade = { ...running, image: running.image === null ? null : displayText(running.image, TEXT_LIMITS.value) };
  await writeJson(root.path(RUNNING_FILES[0] as string), value);
  const persistent = await stat(root.path('/usr/local')).then((s) => s.isDirectory(), () => false);
  if (persistent) await writeJson(root.path(RUNNING_FILES[1] as string), value);
}

/** The marker a run left (the persistent one survives a power cut; /run's a crash without a reboot). */
export async function readRunning(root: SysRoot): Promise<RunningUpgrade | null> {
  for (const f of RUNNING_FILES) {
    const r = await readFile(root.path(f), 'utf8').then((t) => JSON.parse(t) as unknown).catch(() => null);
    if (isRunning(r)) return r;
  }
  return null;
}

/** Remove the markers (only those of `transaction`, when given: a refused second run never removes the first's). */
export async function clearRunning(root: SysRoot, transaction?: string): Promise<void> {
  for (const f of RUNNING_FILES) {
    const file = root.path(f);
    if (transaction !== undefined) {
      const r = await readFile(file, 'utf8').then((t) => JSON.parse(t) as unknown).catch(() => null);
      if (!isRunning(r) || r.transaction !== transaction) continue;
    }
    await rm(file, { force: true });
  }
}

function isRunning(r: unknown): r is RunningUpgrade {
  if (typeof r !== 'object' || r === null) return false;
  const o = r as Record<string, unknown>;
  return typeof o['transaction'] === 'string' && (o['target'] === 'system' || o['target'] === 'recovery') && typeof o['startedAt'] === 'string' && typeof o['step'] === 'string';
}

/** The newest recorded result, and whether it happened during this boot (it is in /run, a tmpfs). */
export async function readLastResult(root: SysRoot): Promise<{ result: UpgradeResult; thisBoot: boolean } | null> {
  let best: { result: UpgradeResult; thisBoot: boolean } | null = null;
  for (const [i, f] of FILES.entries()) {
    // A missing or corrupt record (e.g. a torn write from an older version) is no record, never a failed status.
    const r = await readFile(root.path(f), 'utf8').then((t) => JSON.parse(t) as UpgradeResult).catch(() => null);
    if (r && (best === null || r.finishedAt > best.result.finishedAt)) best = { result: r, thisBoot: i === 0 };
  }
  return best;
}
