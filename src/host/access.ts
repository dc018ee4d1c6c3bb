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

/** Mount the partition rw: remount in place when the host has it mounted (back to ro at cleanup), else mount it at `fallback`. */
export async function mountRw(deps: AgentDeps, device: string, fallback: string, cleanup: CleanupStack): Promise<string> {
  const existing = await hostMountOf(deps, device);
  if (existing) {
    if (existing.readOnly) {
      await remount(deps.runner, existing.dir, 'rw');
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

/** A read-only view of the partition: the host's mount, or a private ro mount under /run/cos-agent. */
export async function mountRo(deps: AgentDeps, device: string, cleanup: CleanupStack): Promise<string> {
  const existing = await hostMountOf(deps, device);
  if (existing) return existing.dir;
  const base = deps.root.path('/run/cos-agent');
  await mkdir(base, { recursive: true });
  const dir = await mkdtemp(path.join(base, 'ro-'));
  cleanup.push(`remove ${dir}`, () => rmdir(dir));
  const m = await mount(deps.runner, device, dir, { options: ['ro'] }).catch((e: unknown) => { throw withContext(`mounting ${device} read-only`, e); });
  cleanup.push(`unmount ${dir}`, () => m.close());
  return dir;
}
