/**
 * Reaching a cOS partition by label: use the host's own mount when there is one (remounted rw only for the
 * duration), else mount it ourselves. Every mount or remount pushes its undo on the caller's cleanup stack.
 */
import { mkdtemp } from 'node:fs/promises';
import { mkdir, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { withContext } from '../model/errors.ts';
import { diskPartitions, findDeviceByLabel, findMountOf, mount, readMounts, remount, syncFs, type BlockDevice } from '../partitions/index.ts';
import type { CleanupStack } from '../sys/cleanup.ts';
import type { AgentDeps } from './deps.ts';

/** Name prefix of the private read-only mounts under /run/cos-agent. */
export const RO_PREFIX = 'ro-';

/** Candidate devices for label discovery: the test disk's partitions (AGENT_TEST_DISK), or all. */
export async function findPartition(deps: AgentDeps, label: string): Promise<BlockDevice> {
  const candidates = deps.testDisk !== undefined ? await diskPartitions(deps.testDisk) : undefined;
  return findDeviceByLabel(deps.runner, label, candidates !== undefined ? { candidates } : {});
}

/** Where the host has `device` mounted (under our root), if anywhere. */
export async function hostMountOf(deps: AgentDeps, device: string): Promise<{ dir: string; readOnly: boolean } | undefined> {
  const m = findMountOf(device, await readMounts());
  if (m === undefined) return undefined;
  const prefix = deps.root.prefix === '/' ? '/' : `${deps.root.prefix}/`;
  if (!m.mountPoint.startsWith(prefix)) return undefined;
  return { dir: m.mountPoint, readOnly: m.options.includes('ro') };
}

/**
 * Mount the partition rw: remount in place when the host has it mounted (back to ro at cleanup), else mount it at
 * `fallback`. `restoreRo`: the host keeps this partition read-only (COS_STATE, COS_RECOVERY): it goes back to ro at
 * cleanup even when it was found rw (a crashed run left it so), never left as this run found it.
 */
export async function mountRw(deps: AgentDeps, device: string, fallback: string, cleanup: CleanupStack, opts: { restoreRo?: boolean } = {}): Promise<string> {
  const existing = await hostMountOf(deps, device);
  if (existing) {
    if (existing.readOnly || opts.restoreRo === true) {
      if (existing.readOnly) await remount(deps.runner, existing.dir, 'rw');
      cleanup.push(`remount ${existing.dir} read-only`, async () => {
        await syncFs(existing.dir).catch(() => {});
        await remount(deps.runner, existing.dir, 'ro');
      });
    }
    return existing.dir;
  }
  const dir = deps.root.path(fallback);
  const m = await mount(deps.runner, device, dir, { mkdir: true }).catch((e: unknown) => { throw withContext(`mounting ${device}`, e); });
  cleanup.push(`unmount ${dir}`, () => m.close());
  return dir;
}

/**
 * A read-only view of the partition: the host's mount, or a private ro mount under /run/cos-agent, named after this
 * process (`ro-<pid>-…`) so that leftovers of a process that is gone can be told from a live reader's.
 */
export async function mountRo(deps: AgentDeps, device: string, cleanup: CleanupStack): Promise<string> {
  const existing = await hostMountOf(deps, device);
  if (existing) return existing.dir;
  const base = deps.root.path('/run/cos-agent');
  await mkdir(base, { recursive: true });
  const dir = await mkdtemp(path.join(base, `${RO_PREFIX}${process.pid}-`));
  cleanup.push(`remove ${dir}`, () => rmdir(dir));
  const m = await mount(deps.runner, device, dir, { options: ['ro'] }).catch((e: unknown) => { throw withContext(`mounting ${device} read-only`, e); });
  cleanup.push(`unmount ${dir}`, () => m.close());
  return dir;
}
