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
import { AgentError, CancelledError, withContext } from '../../model/errors.ts';
import type { AgentConfig, ImageSource } from '../../model/config.ts';
import type { SlotName, UpgradeResult, Verification } from '../../model/host.ts';
import { CleanupStack } from '../../sys/cleanup.ts';
import { acquireLock } from '../../host/lock.ts';
import { loadActionConfig } from '../../host/config.ts';
import { alreadyStaged, planUpgrade, STALE_FILES, upgradeSwitchSteps, type RecoveryFlavour, type UpgradePlan } from './plan.ts';
import { readStateFile, rotateOnUpgrade, writeStateFile } from '../../host/state-file.ts';
import { applyGrubWrites, readHost, type HostView } from '../../host/bootchooser.ts';
import { recordFor, systemUpgradeWrites } from '../../host/boot-model.ts';
import { retry } from '../../sys/retry.ts';
import { recordResult } from '../../host/records.ts';
import type { AgentDeps, Progress, ProgressFn } from '../../host/deps.ts';
import { RegistryClient } from '../../oci/registry.ts';
import { formatReference, parseReference } from '../../oci/reference.ts';
import type { ResolvedImage } from '../../oci/types.ts';
import { applyLayer } from '../../oci/unpack.ts';
import { layerCompression } from '../../oci/manifest.ts';
import { gzipIsize, imageFileBytes, probeRange, rootfsMiB, slotBaseMiB, slotSize, zstdContentSize } from './size.ts';
import {
  fsckExt2,
  freeBytes,
  isSquashfs,
  mkfsExt2,
  mksquashfs,
  mount,
  mountImage,
  preallocate,
  readImageIdentity,
  readMounts,
  syncFs,
  type Mount,
} from '../../partitions/index.ts';
import { pathExists } from '../../sys/files.ts';
import { parseOsRelease } from '../../host/os-release.ts';
import { applySwitchSteps } from './switch.ts';
import { findPartition, mountRw } from '../../host/access.ts';
import { verifyImage } from '../verify-image.ts';

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
  /**
   * Called once, just before the slot switch: the point of no return. From here on the upgrade completes (a cancel
   * is refused) and what follows is recorded with retries; failures after it are warnings, not a failed upgrade.
   */
  onCommit?: () => void;
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
  /**
   * What went wrong after the point of no return (a GRUB variable or record that could not be written after retries,
   * COS_STATE left read-write): the slot is switched, and these say what is not as it should be.
   */
  warnings: string[];
  /** System upgrades: what GRUB boots next, read back from the disk after the upgrade (null for recovery). */
  nextBoot: { slot: SlotName | null; entry: string; reason: string } | null;
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
    // After the point of no return: recorded with retries; a record that cannot be written is a surfaced warning.
    const recorded = await recordWithRetries(deps, log, { ...result, result: 'success', code: null, error: null, rotated: outcome.rotated, finishedAt: deps.now().toISOString(), ...(outcome.warnings.length > 0 ? { warnings: outcome.warnings } : {}) });
    return recorded.length > 0 ? { ...outcome, warnings: [...outcome.warnings, ...recorded] } : outcome;
  } catch (e) {
    const caught = e instanceof AgentError ? e : withContext('upgrade', e);
    // A cancel surfaces wherever the work was (a download, an unpack): say it was a cancel.
    const err = opts.signal?.aborted === true && !(caught instanceof CancelledError)
      ? new CancelledError(`upgrade cancelled (${caught.message})`, { cause: caught })
      : caught;
    const warnings = await recordWithRetries(deps, log, {
      ...result, result: 'failure', code: err.code, rotated: false, error: err.message, cancelled: opts.signal?.aborted === true, finishedAt: deps.now().toISOString(),
      ...(err instanceof CancelledError ? { cancelled: true } : {}),
    });
    log.error({ code: err.code, err: err.message, ...(warnings.length > 0 ? { warnings } : {}) }, 'upgrade failed');
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
    if (opts.signal?.aborted) throw new CancelledError();
  };
  const warnings: string[] = [];
  let committed = false;

  // 1. Config and source.
  progress({ operation: 'checking', message: 'reading configuration' });
  const { config } = await loadActionConfig(deps, {
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

    // 4. The host model before anything changes (this also records which image runs, for the rest of this boot).
    //    Read-only, its mounts undone at once: COS_STATE is mounted rw only after verification.
    const before = await readHostScoped(deps, config);
    const { boot } = before;
    const upgradeFailure = before.facts.upgradeFailure;
    log.info({ bootedFrom: boot.bootedFrom, running: before.state.running, staged: before.state.staged, upgradeFailure, target: opts.recovery ? 'recovery' : 'system' }, 'starting upgrade');

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
      const slotName = opts.recovery ? 'recovery' : 'active';
      // The record of the image that is really in the slot (a stale record names another image: no digest known).
      const entry = recordFor(before.facts, slotName).record;
      const slot = { entry, digest: entry?.digest ?? entry?.sourceMetadata?.digest ?? null, present: before.files[slotName].present, file: before.files[slotName].present ? before.files[slotName].file : null };
      const unchanged = alreadyStaged({
        target,
        digests: [image.digest, ...(image.indexDigest ? [image.indexDigest] : [])],
        slot: { digest: slot.digest, present: slot.present, verification: slot.entry?.verification ?? null },
        bootedFrom: boot.bootedFrom,
        upgradeFailure,
        verificationRequired: disabledBy === undefined,
        force: false,
        nextSlot: before.state.next.slot,
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
          warnings,
          nextBoot: opts.recovery ? null : { slot: before.state.next.slot, entry: before.state.next.entry, reason: before.state.next.reason },
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
      const v = await verifyImage(root, config, registry, ref, image, deps.config?.()?.policyText);
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
    // The host model again, now that the slot partition is mounted rw (reading it also checks the GRUB env blocks
    // we rewrite after the switch: a corrupt one fails the upgrade here, before anything is written).
    const host: HostView | null = opts.recovery ? null : await readHost(deps, config, cleanup, { writable: true, dirs: { state: partDir } });
    const bootState = host?.state ?? before.state;
    const plan = planUpgrade({ target: opts.recovery ? 'recovery' : 'system', bootState, bootedFrom: boot.bootedFrom, upgradeFailure, recoveryFlavour: flavour, labels: config.labels });
    if (plan.keepPassiveReason) log.info({ reason: plan.keepPassiveReason }, 'passive slot kept');

    // 8. Leftovers of an interrupted run never block a new one.
    for (const f of STALE_FILES) await rm(path.join(partDir, f), { force: true });
    const transitionPath = path.join(partDir, plan.transitionFile);
    cleanup.push('remove the transition image', () => rm(transitionPath, { force: true }));
    cleanup.push('remove leftover switch names', async () => {
      // After the commit a switch that stopped midway keeps its names: passive.next may be the only name of the
      // running image.
      if (committed) return;
      for (const f of ['cOS/passive.next', 'cOS/active.next']) await rm(path.join(partDir, f), { force: true });
    });

    // 9. Scratch space: never on COS_STATE. The new tree is built directly in the mounted transition image (ext2)
    //    or, for a squashfs recovery, in a directory on COS_PERSISTENT.
    const configuredMiB = slotBaseMiB((opts.recovery ? config.recoveryImageSizeMiB : undefined) ?? config.imageSizeMiB, plan.fs === 'squashfs' ? null : await imageFileBytes(path.join(partDir, plan.finalFile)));
    const size = slotSize(configuredMiB, estimate);
    log.info({ baseMiB: configuredMiB, sizeMiB: size.sizeMiB, estimateBytes: estimate }, size.grown ? 'slot image grown to fit the rootfs' : 'slot image size');
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

    // 14. The switch: the point of no return. The new image's identity goes into its record, the old active's
    //     identity (and whether it is the running system) into the record that moves to passive.
    const newIdentity = await readImageIdentity(transitionPath);
    const haveActive = await pathExists(path.join(partDir, 'cOS/active.img'));
    const rotatedId = host?.facts.slots.active.id ?? null;
    const steps = upgradeSwitchSteps(plan, config.labels, { active: haveActive });
    checkAbort();
    committed = true;
    opts.onCommit?.();
    progress({ operation: 'finalizing', message: 'switching slots' });
    // A step that fails is retried from where it stopped: a half-done switch is never undone by deleting names (the
    // old active may exist only as passive.next at that moment).
    let stepsDone = 0;
    await retry(() => applySwitchSteps(deps, partDir, steps.slice(stepsDone), () => { stepsDone++; }), { attempts: 3, delayMs: 100 })
      .catch((e: unknown) => {
        throw new AgentError('STAGE_FAILED', `the slot switch stopped after step ${stepsDone} of ${steps.length} (${JSON.stringify(steps[stepsDone])}); the images are kept as they are: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      });
    log.info({ file: plan.finalFile, rotated: plan.rotate && haveActive, keepPassiveReason: plan.keepPassiveReason }, 'slot switched: committed');

    // From here on the slot holds the new image whatever happens: each write is retried, and one that still fails is
    // logged and surfaced as a warning (status then derives the slots from the images themselves), never a failure.
    const after = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await retry(fn, { attempts: 3, delayMs: 100 });
      } catch (e) {
        const message = `${what}: ${e instanceof Error ? e.message : String(e)}`;
        log.error({ err: message, code: e instanceof AgentError ? e.code : null }, 'the slot is switched, but a write after it failed');
        warnings.push(message);
      }
    };

    // 15. GRUB, through the bootchooser: the new active boots next (a pending one-shot or saved choice is
    //     replaced), under its name, with boot assessment armed (tentative cleared: kairos#4303).
    if (plan.updateGrub && host !== null) {
      const writes = systemUpgradeWrites(host.facts, osRelease.get('GRUB_ENTRY_NAME') ?? null);
      await after('setting the GRUB variables (next boot, boot assessment)', () => applyGrubWrites(host, writes));
    }

    // 16. state.yaml on the slot's partition (and on COS_STATE for a recovery upgrade, as elemental G3 does).
    const entry = {
      source: `docker://${formatReference(ref)}`,
      sourceMetadata: { digest: image.digest, size: image.compressedSize },
      ...(plan.label !== null ? { label: plan.label } : {}),
      fs: plan.fs,
      digest: image.digest,
      ...(newIdentity?.id != null ? { uuid: newIdentity.id } : {}),
      date: deps.now().toISOString().replace(/\.\d{3}Z$/, 'Z'),
      ...(osRelease.get('VERSION') !== undefined ? { version: osRelease.get('VERSION') as string } : {}),
      verification: verification === 'skipped' ? 'skipped' as const : 'verified' as const,
      verificationDetail,
      upgradeResult: 'staged' as const,
    };
    const stateFiles = [path.join(partDir, 'state.yaml')];
    if (opts.recovery) {
      await after('mounting COS_STATE for its state.yaml', async () => {
        const statePart = await findPartition(deps, config.labels.state).catch(() => undefined);
        if (statePart) stateFiles.push(path.join(await mountRw(deps, statePart.device, '/run/cos/state', cleanup), 'state.yaml'));
      });
    }
    for (const file of stateFiles) {
      await after(`recording the slots in ${file}`, async () => {
        const { state, recovered } = await readStateFile(file);
        if (recovered) log.warn({ file, brokenPath: recovered.brokenPath, reason: recovered.reason }, 'state file was corrupt: kept aside and rebuilt');
        const next = rotateOnUpgrade(state, {
          target: opts.recovery ? 'recovery' : 'active',
          keepPassive: !(plan.rotate && haveActive),
          newImage: entry,
          date: entry.date,
          labels: config.labels,
          rotatedId,
          rotatedBooted: host?.state.running === 'active',
        });
        await writeStateFile(file, next);
      });
    }
    await after('syncing the slot partition', () => syncFs(partDir));

    // What GRUB boots next now, read back from the disk (a write above may have failed): the caller says "reboot to
    // run it" only when that is true.
    let nextBoot: UpgradeOutcome['nextBoot'] = null;
    if (host !== null) {
      await after('reading back what boots next', async () => {
        const n = (await readHost(deps, config, cleanup, { dirs: { state: partDir, ...(host.dirs.oem !== undefined ? { oem: host.dirs.oem } : {}) } })).state.next;
        nextBoot = { slot: n.slot, entry: n.entry, reason: n.reason };
      });
    }

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
      warnings,
      nextBoot,
    };
  } finally {
    const errors = await cleanup.run(failed);
    for (const e of errors) {
      log.error({ err: e.message }, 'cleanup step failed');
      // Never dropped: on success they are the outcome's warnings (the array it returned); on failure, logged above.
      warnings.push(e.message);
    }
  }
}

/** The host model read in its own cleanup scope (read-only mounts undone before returning). */
async function readHostScoped(deps: AgentDeps, config: AgentConfig): Promise<HostView> {
  const scope = new CleanupStack();
  try {
    return await readHost(deps, config, scope);
  } finally {
    for (const e of await scope.run(false)) deps.log.warn({ err: e.message }, 'cleanup after reading the host failed');
  }
}

/** Record an upgrade's outcome (this boot and COS_PERSISTENT), retried; returns what could not be recorded. */
async function recordWithRetries(deps: AgentDeps, log: AgentDeps['log'], r: UpgradeResult): Promise<string[]> {
  try {
    await retry(() => recordResult(deps.root, r), { attempts: 3, delayMs: 100 });
    return [];
  } catch (e) {
    const message = `recording the upgrade result: ${e instanceof Error ? e.message : String(e)}`;
    log.error({ err: message }, 'could not record the upgrade result');
    return [message];
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

/**
 * A full partition as NO_SPACE naming it, told by codes alone: an AgentError NO_SPACE (fstools maps mksquashfs's
 * own report to it) or ENOSPC in the cause chain. Exported for tests.
 */
export function mapNoSpace(e: unknown, label: string): unknown {
  if ((e instanceof AgentError && e.code === 'NO_SPACE') || hasErrno(e, 'ENOSPC')) {
    return new AgentError('NO_SPACE', `${label} is full: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return e;
}

/** Whether the errno `code` (e.g. ENOSPC) is the code of `e` or of an error in its cause chain. Exported for tests. */
export function hasErrno(e: unknown, code: string): boolean {
  for (let cur: unknown = e, depth = 0; cur instanceof Error && depth < 10; cur = (cur as Error).cause, depth++) {
    if ((cur as NodeJS.ErrnoException).code === code) return true;
  }
  return false;
}


const mib = (b: number): number => Math.ceil(b / MiB);
