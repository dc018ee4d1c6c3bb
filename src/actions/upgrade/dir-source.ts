/**
 * A `dir:` upgrade source (elemental's `--system dir:PATH`): a local tree copied into the new slot image as it is,
 * with hard links, special files, ACLs and xattrs (rsync -aHAX, as elemental and kairos-agent copy). A local tree
 * has no registry signature: its verification is `not-applicable` (policy.yaml `dirSources: refuse` refuses it).
 *
 * `dir:/` is the running root itself: what SUC's upgrade job does inside the new OS image's container
 * (/usr/sbin/suc-upgrade). Its mounts are not part of the image: /host (the host's root), /proc, /sys, /dev, /run
 * (the secret at /run/data), and the files the container runtime binds over /etc/hosts, /etc/resolv.conf,
 * /etc/hostname. So the tree is read through a non-recursive bind mount of `/`, which shows the root filesystem's own
 * files and none of the mounts on it, and the contents of /host /proc /sys /dev /run are skipped (their directories
 * kept), as kairos-agent does.
 */
import { lstat, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../model/errors.ts';
import type { AgentDeps } from '../../host/deps.ts';
import type { CleanupStack } from '../../sys/cleanup.ts';
import { mount } from '../../partitions/mount.ts';

/** What is not copied from the running root (`dir:/`): their directories are kept, empty. */
export const RUNNING_ROOT_SKIPPED: readonly string[] = ['host', 'proc', 'sys', 'dev', 'run'];

export interface OpenDirSource {
  /** The tree to copy from. */
  dir: string;
  /** Top-level directories whose contents are skipped (RUNNING_ROOT_SKIPPED for the running root). */
  skipContentsOf: readonly string[];
}

/**
 * The tree of a `dir:` source, ready to be read: the directory itself, or for `/` a non-recursive bind mount of it
 * (under the agent's run directory, undone by the cleanup stack). A path that is not a directory is CONFIG_INVALID.
 */
export async function openDirSource(deps: AgentDeps, source: string, cleanup: CleanupStack): Promise<OpenDirSource> {
  const st = await stat(source).catch((e: unknown) => {
    throw new AgentError('CONFIG_INVALID', `dir source ${source}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (e as Error).message}`, { cause: e });
  });
  if (!st.isDirectory()) throw new AgentError('CONFIG_INVALID', `dir source ${source} is not a directory`);
  if (path.resolve(source) !== '/') return { dir: source, skipContentsOf: [] };
  const view = deps.root.path('/run/cos-agent/source-root');
  // `-o bind` without rbind: the root filesystem alone, none of the mounts on it.
  const m = await mount(deps.runner, '/', view, { options: ['bind'], mkdir: true });
  cleanup.push('unmount the view of the running root', () => m.close());
  return { dir: view, skipContentsOf: RUNNING_ROOT_SKIPPED };
}

/** Bytes the tree takes in an image: file sizes, plus a block per directory, link and special file. */
export async function estimateTree(src: OpenDirSource, signal?: AbortSignal): Promise<number> {
  let bytes = 0;
  const walk = async (dir: string, top: boolean): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (signal?.aborted) return;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        bytes += 4096;
        if (!(top && src.skipContentsOf.includes(e.name))) await walk(p, false);
      } else if (e.isFile()) {
        bytes += (await lstat(p)).size;
      } else {
        bytes += 4096;
      }
    }
  };
  await walk(src.dir, true);
  return bytes;
}

/**
 * Copy the tree into `target` (the mounted transition image): everything, with owners (numeric), modes, times, hard
 * links, devices, FIFOs, sockets, ACLs and xattrs. A failure is UNPACK_FAILED naming the source.
 */
export async function copyTree(deps: AgentDeps, src: OpenDirSource, source: string, target: string): Promise<void> {
  const argv = ['rsync', '-aHAX', '--numeric-ids', ...src.skipContentsOf.map((d) => `--exclude=/${d}/*`), `${src.dir.replace(/\/+$/, '')}/`, `${target.replace(/\/+$/, '')}/`];
  try {
    await deps.runner.run({ argv, description: `copying dir:${source} into the new image` });
  } catch (e) {
    throw new AgentError('UNPACK_FAILED', `copying dir:${source} into the new image failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}
