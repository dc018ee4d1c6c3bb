/**
 * The upgrade action: pull an OCI image and stage it into the active (or recovery) slot exactly as
 * `elemental upgrade` lays it out, so that the next boot runs it (cos-layout.md 2.5, with the deliberate changes
 * of issue 2: free space checked and the transition image preallocated, scratch never on COS_STATE, e2fsck before
 * the switch, a switch that keeps both GRUB entries bootable at every instant, COS_STATE back to ro afterwards).
 *
 * Reads top to bottom as named steps; every undo is pushed on the cleanup stack on the line after its acquire.
 */
import { randomUUID } from 'node:crypto';
import { chmod, mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { AgentError, withContext } from '../../model/errors.ts';
import type { AgentConfig, ImageSource } from '../../model/config.ts';
import type { UpgradeResult, Verification } from '../../model/host.ts';
import { CleanupStack } from '../../sys/cleanup.ts';
import { acquireLock } from '../../host/lock.ts';
import { loadConfig } from '../../config/load.ts';
import { parseCmdline } from '../../host/cmdline.ts';
import { alreadyStaged, planUpgrade, STALE_FILES, upgradeSwitchSteps, type RecoveryFlavour, type UpgradePlan } from './plan.ts';
import { readStateFile, rotateOnUpgrade, writeStateFile } from '../../host/state-file.ts';
import { recordResult } from '../../host/records.ts';
import type { AgentDeps, Progress, ProgressFn } from '../../host/deps.ts';
import { RegistryClient } from '../../oci/registry.ts';
import { formatReference, parseReference } from '../../oci/reference.ts';
import type { ResolvedImage } from '../../oci/types.ts';
import { applyLayer } from '../../oci/unpack.ts';
import { layerCompression } from '../../oci/manifest.ts';
import { gzipIsize, probeRange, slotSize, zstdContentSize } from './size.ts';
import {
  fsckExt2,
  freeBytes,
  isSquashfs,
  mkfsExt2,
  mksquashfs,
  mount,
  mountImage,
  preallocate,
  readMounts,
  syncFs,
  type Mount,
} from '../../partitions/index.ts';
import { readGrubEnvFile, updateGrubEnvFile } from '../../grub/index.ts';
import { pathExists } from '../../sys/files.ts';
import { parseOsRelease } from '../../host/os-release.ts';
import { applySwitchSteps } from './switch.ts';
import { findPartition, mountRw } from '../../host/access.ts';
import { verifyImage } from '../verify-image.ts';
import { readSlotImage } from '../../host/slot-image.ts';

export interface UpgradeOptions {
  /** Image reference overriding the configured source. */
  image?: string;
  /** Upgrade the recovery slot instead of active. */
  recovery?: boolean;
  /** Stage without signature verification (explicit, logged loudly, shown in status). */
  noVerify?: boolean;
  /** Stage even when the target slot already holds the resolved digest. */
  force?: boolean;
  /** Transaction id (generated when absent). */
  transaction?: string;
  onProgress?: ProgressFn;
  signal?: AbortSignal;
}

export interface UpgradeOutcome {
  transaction: string;
  target: 'system' | 'recovery';
  image: string;
  digest: string;
  version: string | null;
  /** The slot file written, relative to its partition. */
  file: string;
  rotated: boolean;
  keepPassiveReason: string | null;
  verification: Verification;
  /** Who signed what (verified), or what disabled verification (skipped). */
  verificationDetail: string;
  imageSizeMiB: number;
  /** Nothing was staged: the slot already held this digest (why, in words); null when the image was staged. */
  unchanged: string | null;
}

/** Skeleton dirs of a cOS image (cos-layout.md 2.5 step 7). */
const SKELETON: ReadonlyArray<[string, number]> = [
  ['run', 0o777], ['dev', 0o777], ['boot', 0o777], ['usr/local', 0o777], ['oem', 0o777],
  ['proc', 0o555], ['sys', 0o555], ['tmp', 0o1777],
];

const MiB = 1024 * 1024;
/** Room left on the partition beyond the transition image (state.yaml, grubenv writes, ext4 metadata). */
const FREE_MARGIN = 8 * MiB;

export function resolveSource(config: AgentConfig, opts: { image?: string; recovery?: boolean }): ImageSource {
  if (opts.image !== undefined && opts.image !== '') {
    const ref = opts.image.replace(/^(docker|oci):(\/\/)?/, '');
    return { kind: 'oci', ref, uri: `oci:${ref}` };
  }
  const src = opts.recovery ? (config.recoverySource ?? config.upgradeSource) : config.upgradeSource;
  if (src === undefined) {
    throw new AgentError('USAGE', 'no upgrade image: pass --image REF or set UPGRADE_IMAGE (with CHANNEL_UPGRADES=false) in /etc/cos-upgrade-image');
  }
  if (src.kind !== 'oci') {
    throw new AgentError('NOT_SUPPORTED', `upgrade source ${src.uri} (${src.kind}) is not supported: only OCI images are; set CHANNEL_UPGRADES=false and UPGRADE_IMAGE to an image reference`);
  }
  return src;
}

export async function upgrade(deps: AgentDeps, opts: UpgradeOptions = {}): Promise<UpgradeOutcome> {
  const transaction = opts.transaction ?? randomUUID();
  const log = deps.log.child({ transaction });
  const target = opts.recovery ? 'recovery' : 'system';
  const startedAt = deps.now().toISOString();
  const result: Omit<UpgradeResult, 'result' | 'code' | 'error' | 'finishedAt' | 'rotated'> = {
    transaction, target, image: null, imageDigest: null, startedAt,
  };
  try {
    const outcome = await runUpgrade(deps, opts, transaction, log, result);
    // An upgrade with nothing to do leaves the record of the last real one in place.
    if (outcome.unchanged !== null) return outcome;
    await recordResult(deps.root, { ...result, result: 'success', code: null, error: null, rotated: outcome.rotated, finishedAt: deps.now().toISOString() });
    return outcome;
  } catch (e) {
    const caught = e instanceof AgentError ? e : withContext('upgrade', e);
    // A cancel surfaces wherever the work was (a download, an unpack): say it was a cancel.
    const err = opts.signal?.aborted === true && caught.message !== 'upgrade cancelled'
      ? new AgentError('STAGE_FAILED', `upgrade cancelled (${caught.message})`, { cause: caught })
      : caught;
    await recordResult(deps.root, {
      ...result, result: 'failure', code: err.code, rotated: false, error: err.message, finishedAt: deps.now().toISOString(),
    }).catch((re: unknown) => log.warn({ err: re }, 'could not record the upgrade result'));
    log.error({ code: err.code, err: err.message }, 'upgrade failed');
    throw err;
  }
}

async function runUpgrade(
  deps: AgentDeps,
  opts: UpgradeOptions,
  transaction: string,
  log: AgentDeps['log'],
  result: { image: string | null; imageDigest: string | null },
): Promise<UpgradeOutcome> {
  const { root } = deps;
  const progress = (p: Partial<Progress> & Pick<Progress, 'operation' | 'message'>): void => {
    opts.onProgress?.({ percent: 0, bytesDone: 0, bytesTotal: 0, ...p });
  };
  const checkAbort = (): void => {
    if (opts.signal?.aborted) throw new AgentError('STAGE_FAILED', 'upgrade cancelled');
  };

  // 1. Config and source.
  progress({ operation: 'checking', message: 'reading configuration' });
  const { config } = await loadConfig(root, {
    env: deps.env,
    overrides: { ...(opts.image !== undefined ? { image: opts.image } : {}), ...(opts.noVerify ? { noVerify: true } : {}), ...(opts.recovery ? { recovery: true } : {}) },
  });
  const source = resolveSource(config, opts);
  const ref = parseReference(source.ref);
  result.image = formatReference(ref);

  // 2. Signature policy: verification is required unless explicitly turned off (loudly).
  const disabledBy = opts.noVerify ? '--no-verify' : config.verify ? undefined : (config.verifyDisabledBy ?? 'config');
  if (disabledBy !== undefined) {
    log.warn({ image: result.image, disabledBy }, 'SIGNATURE VERIFICATION DISABLED: staging an unverified OS image');
    progress({ operation: 'verifying', message: `WARNING: signature verification disabled (${disabledBy}): ${result.image} will be staged unverified` });
  }

  // 3. One job at a time.
  const cleanup = new CleanupStack();
  let failed = true;
  try {
    const lock = await acquireLock(root.path('/run/cos-agent/upgrade.lock'), `upgrade ${transaction}`);
    cleanup.push('release the upgrade lock', () => lock.release());

    // 4. Where are we booted from?
    const cmdline = await readFile(root.path('/proc/cmdline'), 'utf8').catch(() => '');
    const boot = parseCmdline(cmdline, config.labels);
    const upgradeFailure = boot.upgradeFailure || (await pathExists(root.path('/run/cos/upgrade_failure')));
    log.info({ bootedFrom: boot.bootedFrom, upgradeFailure, target: opts.recovery ? 'recovery' : 'system' }, 'starting upgrade');

    // 5. Resolve the tag to a digest; everything after uses the digest.
    progress({ operation: 'checking', message: `resolving ${result.image}` });
    const registry = new RegistryClient({ root, env: deps.env, ...deps.registry });
    cleanup.push('close registry connections', () => registry.close());
    const image = await registry.resolve(ref).catch((e: unknown) => { throw withContext(`resolving ${result.image}`, e); });
    result.imageDigest = image.digest;
    const pinned = { ...ref, digest: image.digest };
    log.info({ digest: image.digest, layers: image.manifest.layers.length, compressedSize: image.compressedSize }, 'resolved image');

    // 5a. Nothing to do when the slot already holds this digest (bootc's "no changes"), unless forced.
    const target = opts.recovery ? ('recovery' as const) : ('system' as const);
    if (!opts.force) {
      const slot = await readSlotImage(deps, config, opts.recovery === true);
      const unchanged = alreadyStaged({
        target,
        digests: [image.digest, ...(image.indexDigest ? [image.indexDigest] : [])],
        slot: { digest: slot.digest, present: slot.present, verification: slot.entry?.verification ?? null },
        bootedFrom: boot.bootedFrom,
        upgradeFailure,
        verificationRequired: disabledBy === undefined,
        force: false,
      });
      if (unchanged !== null) {
        log.info({ digest: image.digest, reason: unchanged }, 'already up to date: nothing staged');
        failed = false;
        return {
          transaction,
          target,
          image: result.image,
          digest: image.digest,
          version: slot.entry?.version ?? null,
          file: slot.file ?? '',
          rotated: false,
          keepPassiveReason: null,
          verification: slot.entry?.verification === 'verified' ? 'verified' : 'skipped',
          verificationDetail: slot.entry?.verificationDetail ?? '',
          imageSizeMiB: 0,
          unchanged,
        };
      }
    }
    const estimate = await estimateRootfs(registry, pinned, image);
    checkAbort();

    // 5b. Signatures, before a single byte is written (fail closed; the error names the check that failed).
    let verification: Verification = 'skipped';
    let verificationDetail = `disabled by ${disabledBy ?? '?'}`;
    if (disabledBy === undefined) {
      progress({ operation: 'verifying', message: `verifying the signatures of ${result.image}@${image.digest}` });
      const v = await verifyImage(root, config, registry, ref, image);
      verification = 'verified';
      verificationDetail = v.summary;
      log.info({ signedDigest: v.signedDigest, signatures: v.summary }, 'signature verified');
      progress({ operation: 'verifying', message: `verified: ${v.summary}` });
    }
    checkAbort();

    // 6. The partition that holds the slot, mounted rw only for the duration.
    const part = await findPartition(deps, opts.recovery ? config.labels.recovery : config.labels.state);
    const partDir = await mountRw(deps, part.device, opts.recovery ? '/run/cos/recovery' : '/run/cos/state', cleanup);

    // 7. Plan: recovery flavour is what is on disk (file name and magic, cos-layout.md 8 #9).
    let flavour: RecoveryFlavour = 'img';
    if (opts.recovery) {
      const squash = path.join(partDir, 'cOS/recovery.squashfs');
      flavour = (await pathExists(squash)) && (await isSquashfs(squash)) ? 'squashfs' : 'img';
    }
    const plan = planUpgrade({ target: opts.recovery ? 'recovery' : 'system', bootedFrom: boot.bootedFrom, upgradeFailure, recoveryFlavour: flavour, labels: config.labels });
    if (plan.keepPassiveReason) log.info({ reason: plan.keepPassiveReason }, 'passive slot kept');

    // Pre-flight: the GRUB env blocks we will rewrite after the switch must be readable now, so a corrupt one fails
    // the upgrade before anything is written (never after the slots were switched).
    if (plan.updateGrub) {
      for (const f of ['grub_oem_env', 'boot_assessment']) await readGrubEnvFile(path.join(partDir, f), { missingOk: true });
    }

    // 8. Leftovers of an interrupted run never block a new one.
    for (const f of STALE_FILES) await rm(path.join(partDir, f), { force: true });
    const transitionPath = path.join(partDir, plan.transitionFile);
    cleanup.push('remove the transition image', () => rm(transitionPath, { force: true }));
    cleanup.push('remove leftover switch names', async () => {
      for (const f of ['cOS/passive.next', 'cOS/active.next']) await rm(path.join(partDir, f), { force: true });
    });

    // 9. Scratch space: never on COS_STATE. The new tree is built directly in the mounted transition image (ext2)
    //    or, for a squashfs recovery, in a directory on COS_PERSISTENT.
    const configuredMiB = (opts.recovery ? config.recoveryImageSizeMiB : undefined) ?? config.imageSizeMiB;
    const size = slotSize(configuredMiB, estimate);
    if (size.grown) log.info({ configuredMiB, sizeMiB: size.sizeMiB, estimateBytes: estimate }, 'slot image grown to fit the rootfs');
    const sizeMiB = size.sizeMiB;
    const tree = await prepareTree(deps, plan, transitionPath, { configuredMiB, sizeMiB, estimate }, config, cleanup, log);
    const treeDir = tree.dir;
    progress({ operation: 'staging', message: `staging into ${plan.finalFile}` });

    // 10. Skeleton, then before-upgrade.
    for (const [d, mode] of SKELETON) {
      await mkdir(path.join(treeDir, d), { recursive: true });
      await chmod(path.join(treeDir, d), mode);
    }
    const hookCtx = { transaction, target: plan.target, strict: config.strict } as const;
    progress({ operation: 'hooks', message: 'before-upgrade' });
    await deps.hooks.run('before-upgrade', hookCtx).catch((e: unknown) => { throw hookError('before-upgrade', e); });

    // 11. Pull: every layer streamed, digest-checked, straight into the tree.
    await pullInto(deps, registry, pinned, image, treeDir, sizeMiB, progress, opts.signal, log);
    await chmod(treeDir, 0o755);
    checkAbort();

    // 12. after-upgrade-chroot, in the new image with the host's /dev /proc /sys /oem /usr/local bound in.
    progress({ operation: 'hooks', message: 'after-upgrade-chroot' });
    await withChrootBinds(deps, treeDir, () => deps.hooks.run('after-upgrade-chroot', { ...hookCtx, chroot: treeDir }))
      .catch((e: unknown) => { throw hookError('after-upgrade-chroot', e); });
    const osRelease = parseOsRelease(await readFile(path.join(treeDir, 'etc/os-release'), 'utf8').catch(() => ''));
    progress({ operation: 'hooks', message: 'after-upgrade' });
    await deps.hooks.run('after-upgrade', hookCtx).catch((e: unknown) => { throw hookError('after-upgrade', e); });

    // 13. Seal the new image: unmount + fsck (ext2), or mksquashfs (squashfs).
    progress({ operation: 'finalizing', message: 'checking the new image' });
    await sealTree(deps, plan, tree, transitionPath, config);
    checkAbort();

    // 14. The switch.
    progress({ operation: 'finalizing', message: 'switching slots' });
    const haveActive = await pathExists(path.join(partDir, 'cOS/active.img'));
    const steps = upgradeSwitchSteps(plan, config.labels, { active: haveActive });
    await applySwitchSteps(deps, partDir, steps);
    log.info({ file: plan.finalFile, rotated: plan.rotate && haveActive }, 'slot switched');

    // 15. GRUB: rebrand and arm boot assessment (clearing tentative: kairos#4303).
    if (plan.updateGrub) {
      const entry = osRelease.get('GRUB_ENTRY_NAME');
      await updateGrubEnvFile(path.join(partDir, 'grub_oem_env'), { default_menu_entry: entry ?? null }, { create: true });
      await updateGrubEnvFile(path.join(partDir, 'boot_assessment'), { enable_boot_assessment: 'yes', boot_assessment_tentative: '' }, { create: true });
    }

    // 16. state.yaml on the slot's partition (and on COS_STATE for a recovery upgrade, as elemental G3 does).
    const entry = {
      source: `docker://${formatReference(ref)}`,
      sourceMetadata: { digest: image.digest, size: image.compressedSize },
      ...(plan.label !== null ? { label: plan.label } : {}),
      fs: plan.fs,
      digest: image.digest,
      date: deps.now().toISOString().replace(/\.\d{3}Z$/, 'Z'),
      ...(osRelease.get('VERSION') !== undefined ? { version: osRelease.get('VERSION') as string } : {}),
      verification: verification === 'skipped' ? 'skipped' as const : 'verified' as const,
      verificationDetail,
      upgradeResult: 'staged' as const,
    };
    const stateFiles = [path.join(partDir, 'state.yaml')];
    if (opts.recovery) {
      const statePart = await findPartition(deps, config.labels.state).catch(() => undefined);
      if (statePart) stateFiles.push(path.join(await mountRw(deps, statePart.device, '/run/cos/state', cleanup), 'state.yaml'));
    }
    for (const file of stateFiles) {
      const { state, recovered } = await readStateFile(file);
      if (recovered) log.warn({ file, brokenPath: recovered.brokenPath, reason: recovered.reason }, 'state file was corrupt: kept aside and rebuilt');
      const next = rotateOnUpgrade(state, {
        target: opts.recovery ? 'recovery' : 'active',
        keepPassive: !(plan.rotate && haveActive),
        newImage: entry,
        date: entry.date,
        labels: config.labels,
      });
      await writeStateFile(file, next);
    }
    await syncFs(partDir);

    failed = false;
    return {
      transaction,
      target: plan.target,
      image: result.image,
      digest: image.digest,
      version: osRelease.get('VERSION') ?? null,
      file: plan.finalFile,
      rotated: plan.rotate && haveActive,
      keepPassiveReason: plan.keepPassiveReason,
      verification,
      verificationDetail,
      imageSizeMiB: sizeMiB,
      unchanged: null,
    };
  } finally {
    const errors = await cleanup.run(failed);
    for (const e of errors) log.error({ err: e.message }, 'cleanup step failed');
    if (!failed && errors.length > 0) {
      // eslint-disable-next-line no-unsafe-finally
      throw new AgentError('STAGE_FAILED', `upgrade staged but cleanup failed: ${errors.map((e) => e.message).join('; ')}`);
    }
  }
}

async function prepareTree(
  deps: AgentDeps,
  plan: UpgradePlan,
  transitionPath: string,
  size: { configuredMiB: number; sizeMiB: number; estimate: number | null },
  config: AgentConfig,
  cleanup: CleanupStack,
  log: AgentDeps['log'],
): Promise<{ dir: string; mount: Mount | null }> {
  const { sizeMiB } = size;
  const { runner, root } = deps;
  if (plan.fs === 'squashfs') {
    // The tree for mksquashfs lives on COS_PERSISTENT (mounted at /usr/local, or by us when booted from recovery).
    let scratchBase = root.path('/usr/local');
    const mounts = await readMounts();
    if (!mounts.some((m) => m.mountPoint === scratchBase)) {
      const dev = await findPartition(deps, config.labels.persistent).catch(() => undefined);
      if (dev === undefined) throw new AgentError('NO_SPACE', 'no COS_PERSISTENT partition for the recovery squashfs scratch tree');
      scratchBase = await mountRw(deps, dev.device, '/run/cos/persistent', cleanup);
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
  if (free < size.configuredMiB * MiB + FREE_MARGIN) {
    throw new AgentError('NO_SPACE', `${plan.partitionLabel} has ${mib(free)} MiB free; the ${size.configuredMiB} MiB transition image needs ${mib(size.configuredMiB * MiB + FREE_MARGIN)} MiB`);
  }
  if (free < bytes + FREE_MARGIN) {
    throw new AgentError('IMAGE_TOO_LARGE', `the image does not fit: its rootfs (about ${mib(size.estimate ?? 0)} MiB) needs a ${sizeMiB} MiB slot image, and ${plan.partitionLabel} has ${mib(free)} MiB free`);
  }
  await mkdir(path.dirname(transitionPath), { recursive: true });
  await preallocate(runner, transitionPath, bytes);
  // A neutral label while it is mounted, so two filesystems never carry COS_ACTIVE at once (cos-layout.md 2.5 #6).
  await mkfsExt2(runner, transitionPath, { label: 'COS_TRANSITION' });
  const mnt = root.path('/run/cos/transition');
  await mkdir(mnt, { recursive: true });
  const m = await mountImage(runner, transitionPath, mnt);
  cleanup.push(`unmount ${mnt}`, () => m.close());
  log.info({ file: transitionPath, sizeMiB }, 'transition image ready');
  return { dir: mnt, mount: m };
}

async function sealTree(
  deps: AgentDeps,
  plan: UpgradePlan,
  tree: { dir: string; mount: Mount | null },
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
  await fsckExt2(deps.runner, transitionPath);
  await syncFs(transitionPath);
}

async function pullInto(
  deps: AgentDeps,
  registry: RegistryClient,
  ref: ReturnType<typeof parseReference>,
  image: ResolvedImage,
  treeDir: string,
  sizeMiB: number,
  progress: (p: Partial<Progress> & Pick<Progress, 'operation' | 'message'>) => void,
  signal: AbortSignal | undefined,
  log: AgentDeps['log'],
): Promise<void> {
  const total = image.compressedSize;
  let done = 0;
  const layers = image.manifest.layers;
  for (const [i, layer] of layers.entries()) {
    const message = `layer ${i + 1}/${layers.length} ${layer.digest.slice(7, 19)}`;
    const before = done;
    // applyLayer reports the running total of compressed bytes read in this layer.
    const onBytes = (layerBytes: number): void => {
      const now = before + layerBytes;
      progress({ operation: 'downloading', message, bytesDone: now, bytesTotal: total, percent: total > 0 ? Math.floor((now * 100) / total) : 0 });
    };
    // Announced before the first byte: a slow registry shows as downloading, not as the step before.
    onBytes(0);
    const blob = registry.openBlob(ref, layer, { ...(signal ? { signal } : {}) });
    try {
      const stats = await applyLayer(blob, layer.mediaType, treeDir, { runner: deps.runner, onBytes, ...(signal ? { signal } : {}) });
      done = before + layer.size;
      log.info({ layer: layer.digest, entries: stats.entries, bytes: stats.bytesWritten }, 'layer applied');
    } catch (e) {
      blob.destroy();
      if (hasErrno(e, 'ENOSPC')) {
        throw new AgentError('IMAGE_TOO_LARGE', `the image ${formatReference(ref)} does not fit in the ${sizeMiB} MiB slot image (DEFAULT_IMAGE_SIZE): out of space while applying ${layer.digest}`, { cause: e });
      }
      throw withContext(`pulling ${formatReference(ref)}`, e);
    }
  }
}

/** Bind the host's /dev /dev/pts /proc /sys and the mounted /oem, /usr/local into the chroot for the hook. */
async function withChrootBinds(deps: AgentDeps, treeDir: string, fn: () => Promise<void>): Promise<void> {
  const binds: Array<[string, string]> = [['/dev', 'dev'], ['/dev/pts', 'dev/pts'], ['/proc', 'proc'], ['/sys', 'sys']];
  const mounts = await readMounts();
  for (const [host, inside] of [[deps.root.path('/oem'), 'oem'], [deps.root.path('/usr/local'), 'usr/local']] as const) {
    if (mounts.some((m) => m.mountPoint === host)) binds.push([host, inside]);
  }
  const made: Mount[] = [];
  try {
    for (const [src, inside] of binds) {
      if (!(await pathExists(src))) continue;
      made.push(await mount(deps.runner, src, path.join(treeDir, inside), { options: ['bind'], mkdir: true }));
    }
    await fn();
  } finally {
    for (const m of made.reverse()) await m.close();
  }
}


/** The rootfs size from each layer's own trailer or header (see size.ts); null when any layer can't be estimated. */
async function estimateRootfs(registry: RegistryClient, ref: ReturnType<typeof parseReference>, image: ResolvedImage): Promise<number | null> {
  let total = 0;
  for (const layer of image.manifest.layers) {
    const compression = layerCompression(layer.mediaType);
    if (compression === undefined) return null;
    const range = probeRange(compression, layer.size);
    if (range === undefined) {
      total += layer.size;
      continue;
    }
    const bytes = await registry.readBlobRange(ref, layer, range[0], range[1]).catch(() => undefined);
    const n = bytes === undefined ? undefined : compression === 'gzip' ? gzipIsize(bytes, layer.size) : zstdContentSize(bytes);
    if (n === undefined) return null;
    total += n;
  }
  return total;
}

function hookError(name: string, e: unknown): AgentError {
  const err = new AgentError('HOOK_FAILED', `hook ${name} failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  return err;
}

function mapNoSpace(e: unknown, label: string): unknown {
  if (hasErrno(e, 'ENOSPC') || (e instanceof Error && /No space left/i.test(e.message))) {
    return new AgentError('NO_SPACE', `${label} is full: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return e;
}

function hasErrno(e: unknown, code: string): boolean {
  for (let cur: unknown = e, depth = 0; cur instanceof Error && depth < 10; cur = (cur as Error).cause, depth++) {
    if ((cur as NodeJS.ErrnoException).code === code) return true;
    if (cur.message.includes(code)) return true;
  }
  return false;
}


const mib = (b: number): number => Math.ceil(b / MiB);
