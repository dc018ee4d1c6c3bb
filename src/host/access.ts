/**
 * Reaching a cOS partition by label: use the host's own mount when there is one (remounted rw only for the
 * duration), else mount it ourselves. Every mount or remount pushes its undo on the caller's cleanup stack.
 */
import { mkdtemp } from 'node:fs/promises';
import { mkdir, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { withContext } from '../model/errors.ts';
import {
  discoverOnce,
  diskPartitions,
  findMountOf,
  mount,
  probeCandidates,
  readMounts,
  remount,
  syncFs,
  type BlockDevice,
  type DeviceDiscovery,
  type DeviceProbe,
} from '../partitions/index.ts';
import type { CleanupStack } from '../sys/cleanup.ts';
import { retry } from '../sys/retry.ts';
import type { AgentDeps } from './deps.ts';

/** Name prefix of the private read-only mounts under /run/cos-agent. */
export const RO_PREFIX = 'ro-';

/** One probe pass of the candidate devices: the test disk's partitions (AGENT_TEST_DISK), or all. */
async function probeHost(deps: Pick<AgentDeps, 'runner' | 'testDisk'>): Promise<DeviceProbe> {
  const candidates = deps.testDisk !== undefined ? await diskPartitions(deps.testDisk) : undefined;
  return probeCandidates(deps.runner, candidates !== undefined ? { candidates } : {});
}

/** Label lookups that share one probe pass of the host's block devices, made by the first of them. */
export function newDiscovery(deps: Pick<AgentDeps, 'runner' | 'testDisk'>): DeviceDiscovery {
  return discoverOnce(() => probeHost(deps));
}

/**
 * `deps` whose label lookups (findPartition) share one probe pass: for the span of one host read, so each device is
 * probed once however many labels the read looks up. Already scoped deps are returned as they are.
 */
export function withDiscovery(deps: AgentDeps): AgentDeps {
  return deps.discovery !== undefined ? deps : { ...deps, discovery: newDiscovery(deps) };
}

/** The partition carrying `label`: from the scope's probe pass (withDiscovery), else from a pass of its own. */
export async function findPartition(deps: AgentDeps, label: string): Promise<BlockDevice> {
  return (deps.discovery ?? newDiscovery(deps)).find(label);
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
        // A loop device detached just before still releases its backing file asynchronously: EBUSY for a moment,
        // which a loaded machine stretched past 1 s in CI (hostile corpus): up to 5 s.
        await retry(() => remount(deps.runner, existing.dir, 'ro'), { attempts: 25, delayMs: 200 });
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
