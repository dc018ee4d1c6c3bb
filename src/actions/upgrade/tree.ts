/**
 * The new image's tree: where it is built (the mounted transition image for ext2, a scratch directory on
 * COS_PERSISTENT for a squashfs recovery: scratch space is never on COS_STATE), its skeleton, the host binds of the
 * chroot hook, and sealing it into the transition file (unmount + e2fsck, or mksquashfs).
 */
import { lstatSync } from 'node:fs';
import { mkdir, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../model/errors.ts';
import type { AgentConfig } from '../../model/config.ts';
import type { CleanupStack } from '../../sys/cleanup.ts';
import { pathExists } from '../../sys/files.ts';
import type { AgentDeps } from '../../host/deps.ts';
import { findPartition, mountRw } from '../../host/access.ts';
import { fsckExt2, freeBytes, mkfsExt2, mksquashfs, mount, mountImage, preallocate, readMounts, syncFs, type Mount } from '../../partitions/index.ts';
import type { UpgradePlan } from './plan.ts';
import { rootfsMiB } from './size.ts';
import { mapNoSpace } from './errors.ts';
import { ensureImageDir, verifiedImageDir } from './image-files.ts';
import { MOUNT_POINTS } from '../../host/mount-points.ts';

/** Where the new image's tree is, and the mount of the transition image that holds it (null: a scratch dir). */
export interface Tree {
  dir: string;
  mount: Mount | null;
}

/** Skeleton dirs of a cOS image (cos-layout.md 2.5 step 7). */
const SKELETON: ReadonlyArray<[string, number]> = [
  ['run', 0o777], ['dev', 0o777], ['boot', 0o777], ['usr/local', 0o777], ['oem', 0o777],
  ['proc', 0o555], ['sys', 0o555], ['tmp', 0o1777],
];

const MiB = 1024 * 1024;
/** Room left on the partition beyond the transition image (state.yaml, grubenv writes, ext4 metadata). */
const FREE_MARGIN = 8 * MiB;

const mib = (b: number): number => Math.ceil(b / MiB);

/**
 * Make the place the tree is built in: for ext2, free space checked (NO_SPACE / IMAGE_TOO_LARGE, naming the setting
 * that makes the slot smaller), the transition file preallocated, formatted and loop-mounted; for a squashfs
 * recovery, a fresh scratch dir on COS_PERSISTENT. Every undo is pushed on `cleanup`.
 */
export async function prepareTree(
  deps: AgentDeps,
  plan: UpgradePlan,
  transitionPath: string,
  size: { configuredMiB: number; sizeMiB: number; estimate: number | null },
  config: AgentConfig,
  cleanup: CleanupStack,
  log: AgentDeps['log'],
): Promise<Tree> {
  const { sizeMiB } = size;
  const { runner, root } = deps;
  if (plan.fs === 'squashfs') {
    // The tree for mksquashfs lives on COS_PERSISTENT (mounted at /usr/local, or by us when booted from recovery).
    let scratchBase = root.path('/usr/local');
    const mounts = await readMounts();
    if (!mounts.some((m) => m.mountPoint === scratchBase)) {
      const dev = await findPartition(deps, config.labels.persistent).catch(() => undefined);
      if (dev === undefined) throw new AgentError('NO_SPACE', 'no COS_PERSISTENT partition for the recovery squashfs scratch tree');
      scratchBase = await mountRw(deps, dev.device, MOUNT_POINTS.persistent, cleanup);
    }
    const tree = path.join(scratchBase, '.cos-agent', 'recovery-tree');
    await rm(tree, { recursive: true, force: true });
    await mkdir(tree, { recursive: true });
    cleanup.push('remove the recovery scratch tree', () => rm(tree, { recursive: true, force: true }));
    return { dir: tree, mount: null };
  }
  const bytes = sizeMiB * MiB;
  const partDir = path.dirname(path.dirname(transitionPath));
  const free = await freeBytes(partDir);
  const needs = `${mib(bytes + FREE_MARGIN)} MiB (a ${sizeMiB} MiB slot image and ${mib(FREE_MARGIN)} MiB of margin)`;
  if (free < size.configuredMiB * MiB + FREE_MARGIN) {
    // Even the base size does not fit: say where it came from and which setting makes it smaller.
    const recoverySized = plan.target === 'recovery' && config.recoveryImageSizeMiB !== undefined;
    const origin = recoverySized ? config.origins['recoveryImageSizeMiB'] : config.imageSizeMiB !== null ? config.origins['imageSizeMiB'] : undefined;
    const base = origin !== undefined
      ? `${size.configuredMiB} MiB as set by ${origin}`
      : (await pathExists(path.join(partDir, plan.finalFile)))
        ? `${size.configuredMiB} MiB, the size of the ${plan.finalFile} it replaces (no size is configured)`
        : `${size.configuredMiB} MiB, elemental's default (no size is configured and there is no ${plan.finalFile} to size it like)`;
    const setting = plan.target === 'recovery'
      ? 'upgrade.recovery-system.size in /etc/elemental/config.yaml, or DEFAULT_IMAGE_SIZE in /etc/cos-upgrade-image or /etc/cos/config'
      : 'DEFAULT_IMAGE_SIZE in /etc/cos-upgrade-image or /etc/cos/config, or upgrade.system.size in /etc/elemental/config.yaml';
    const least = rootfsMiB(size.estimate);
    throw new AgentError('NO_SPACE',
      `${plan.partitionLabel} has ${mib(free)} MiB free; this image needs ${needs}, its size ${base}${sizeMiB > size.configuredMiB ? `, grown to fit the rootfs` : ''}. ` +
      `Free space on ${plan.partitionLabel}, or set a smaller slot size in MiB with ${setting}${least !== null ? ` (this image needs at least ${least} MiB)` : ''}`);
  }
  if (free < bytes + FREE_MARGIN) {
    throw new AgentError('IMAGE_TOO_LARGE', `the image does not fit: its rootfs (about ${mib(size.estimate ?? 0)} MiB) needs a ${sizeMiB} MiB slot image, and ${plan.partitionLabel} has ${mib(free)} MiB free; this image needs ${needs}`);
  }
  await mkdir(path.dirname(transitionPath), { recursive: true });
  await preallocate(runner, transitionPath, bytes);
  // A neutral label while it is mounted, so two filesystems never carry COS_ACTIVE at once (cos-layout.md 2.5 #6).
  await mkfsExt2(runner, transitionPath, { label: 'COS_TRANSITION' });
  const mnt = root.path(MOUNT_POINTS.transition);
  await mkdir(mnt, { recursive: true });
  const m = await mountImage(runner, transitionPath, mnt);
  cleanup.push(`unmount ${mnt}`, () => m.close());
  log.info({ file: transitionPath, sizeMiB }, 'transition image ready');
  return { dir: mnt, mount: m };
}

/**
 * The skeleton dirs of a cOS image, with their modes, in the tree. Each is made inside the tree only (checked component
 * by component with lstat; mkdir and chmod never follow a symlink), see ensureImageDir.
 */
export async function makeSkeleton(treeDir: string, log?: AgentDeps['log']): Promise<void> {
  for (const [d, mode] of SKELETON) ensureImageDir(treeDir, d, { mode, chmodExisting: true, ...(log !== undefined ? { log } : {}) });
}

/** Seal the new image into the transition file: unmount + e2fsck -fn (ext2), or mksquashfs (squashfs). */
export async function sealTree(
  deps: AgentDeps,
  plan: UpgradePlan,
  tree: Tree,
  transitionPath: string,
  config: AgentConfig,
): Promise<void> {
  if (plan.fs === 'squashfs') {
    await mksquashfs(deps.runner, tree.dir, transitionPath, config.squashCompression ? { compression: config.squashCompression } : {})
      .catch((e: unknown) => { throw mapNoSpace(e, plan.partitionLabel); });
    await syncFs(transitionPath);
    return;
  }
  await syncFs(tree.dir);
  await tree.mount?.close();
  // Only an image mounted nowhere is checked and sealed: a copy of its mount in another namespace would write its
  // superblock over the label and the check later (Mount.released).
  await tree.mount?.released?.();
  await fsckExt2(deps.runner, transitionPath);
  await syncFs(transitionPath);
}

/** Where the chroot hook gets the host's directories bound: [host path, directory inside the image]. */
const CHROOT_BINDS: ReadonlyArray<readonly [string, string]> = [['/dev', 'dev'], ['/dev/pts', 'dev/pts'], ['/proc', 'proc'], ['/sys', 'sys']];

/**
 * Bind the host's /dev /dev/pts /proc /sys and the mounted /oem, /usr/local into the chroot for the hook.
 *
 * The tree holds what the image's layers made of it (issue 9: a layer may put `proc -> /host/dir` or
 * `usr -> /host/dir` where the skeleton was), so first every skeleton dir and bind target is made a real directory
 * of the image, never following a link out of it (ensureImageDir: a dangling or escaping link in the last place is
 * replaced by a directory; a link on the way, a link to a directory of the image, or a file is UNPACK_UNSAFE naming
 * the entry). Then each bind goes onto its target's real path, checked again component by component right before
 * the mount (verifiedImageDir); `mount` never creates anything.
 */
export async function withChrootBinds(deps: AgentDeps, treeDir: string, fn: () => Promise<void>): Promise<void> {
  const binds: Array<readonly [string, string]> = [...CHROOT_BINDS];
  const mounts = await readMounts();
  for (const [host, inside] of [[deps.root.path('/oem'), 'oem'], [deps.root.path('/usr/local'), 'usr/local']] as const) {
    if (mounts.some((m) => m.mountPoint === host)) binds.push([host, inside]);
  }
  // Skeleton dirs first (dev before dev/pts), then any bind target that is not one of them.
  const dirs = new Map<string, number>(SKELETON);
  // A bind target the image does not have and that is no skeleton dir (dev/pts) is made for the hook and removed
  // after it: the staged image stays exactly what the OCI image holds (plus the skeleton).
  const madeDirs: string[] = [];
  for (const [, inside] of binds) {
    if (dirs.has(inside)) continue;
    dirs.set(inside, 0o755);
    if (!lexists(path.join(treeDir, inside))) madeDirs.push(inside);
  }
  for (const [inside, mode] of dirs) ensureImageDir(treeDir, inside, { mode, log: deps.log });
  const made: Mount[] = [];
  try {
    for (const [src, inside] of binds) {
      if (!(await pathExists(src))) continue;
      // Checked again just before the mount (after /dev is bound, dev/pts is the host's own /dev/pts, a directory).
      made.push(await mount(deps.runner, src, verifiedImageDir(treeDir, inside), { options: ['bind'] }));
    }
    await fn();
  } finally {
    for (const m of made.reverse()) await m.close();
    for (const inside of madeDirs.reverse()) await rmdir(verifiedImageDir(treeDir, inside)).catch((e: unknown) => deps.log.warn({ dir: inside, err: String(e) }, 'could not remove a bind target made for the hook'));
  }
}

/** The name exists (a link counts, whatever it points at). */
function lexists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
