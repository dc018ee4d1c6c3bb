/**
 * The last upgrade's outcome, kept where `cosctl status` finds it: /run/cos-agent (this boot) and, when COS_PERSISTENT
 * is mounted at /usr/local, /usr/local/.cos-agent (across reboots). Written atomically.
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import { writeFileAtomic } from '../sys/files.ts';
import path from 'node:path';
import type { UpgradeResult } from '../model/host.ts';
import type { SysRoot } from '../sys/root.ts';

const FILES = ['/run/cos-agent/last-upgrade.json', '/usr/local/.cos-agent/last-upgrade.json'];

async function writeJson(file: string, value: unknown): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

export async function recordResult(root: SysRoot, result: UpgradeResult): Promise<void> {
  await writeJson(root.path(FILES[0] as string), result);
  const persistent = await stat(root.path('/usr/local')).then((s) => s.isDirectory(), () => false);
  if (persistent) await writeJson(root.path(FILES[1] as string), result).catch(() => {});
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
