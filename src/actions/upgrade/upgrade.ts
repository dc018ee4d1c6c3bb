/**
 * The upgrade action: pull an OCI image and stage it into the active (or recovery) slot exactly as
 * `elemental upgrade` lays it out, so that the next boot runs it (cos-layout.md 2.5, with the deliberate changes
 * of issue 2: free space checked and the transition image preallocated, scratch never on COS_STATE, e2fsck before
 * the switch, a switch that keeps both GRUB entries bootable at every instant, COS_STATE back to ro afterwards).
 *
 * The upgrade is UPGRADE_STEPS: an ordered list of named steps sharing one UpgradeRun, run by runSteps, which reports
 * each step as it starts (UpgradeOptions.onStep) and stops early when a step says there is nothing to do. Every undo
 * is pushed on the cleanup stack on the line after its acquire. Helpers that are not steps: tree.ts (where the new
 * image is built and sealed), pull.ts (layers), plan.ts and switch.ts (the switch), size.ts.
 */
import { randomUUID } from 'node:crypto';
import { chmod, rm } from 'node:fs/promises';
import path from 'node:path';
import { AgentError, CancelledError, withContext } from '../../model/errors.ts';
import type { AgentConfig, ImageSource } from '../../model/config.ts';
import type { SlotName, UpgradeResult, Verification } from '../../model/host.ts';
import { CleanupStack } from '../../sys/cleanup.ts';
import { acquireLock } from '../../host/lock.ts';
import { loadActionConfig } from '../../host/config.ts';
import { alreadyStaged, planUpgrade, TRANSITION_FILES, upgradeSwitchSteps, type RecoveryFlavour, type UpgradePlan } from './plan.ts';
import { readStateFile, rotateOnUpgrade, writeStateFile, type RotateOptions } from '../../host/state-file.ts';
import { applyGrubWrites, checkGrubWrites, installBootAssessment, readHost, readHostOnce, type HostView } from '../../host/bootchooser.ts';
import { failedDigests, grubVerbs, recordFor, systemUpgradeWrites, type GrubWrites } from '../../host/boot-model.ts';
import type { ImageEntry } from '../../model/state.ts';
import { removeJournal, runJournalSteps, writeJournal, type SwitchJournal } from './journal.ts';
import { recoverInterrupted } from '../recover.ts';
import { displayText, TEXT_LIMITS } from '../../model/text.ts';
import { retry } from '../../sys/retry.ts';
import { clearRunning, recordResult, recordRunning, type RunningUpgrade } from '../../host/records.ts';
import type { AgentDeps, Progress, ProgressFn } from '../../host/deps.ts';
import { RegistryClient } from '../../oci/registry.ts';
import { formatReference, parseReference } from '../../oci/reference.ts';
import type { ImageReference, ResolvedImage } from '../../oci/types.ts';
import { imageFileBytes, slotBaseMiB, slotSize } from './size.ts';
import { isSquashfs, readImageIdentity, syncFs, type ImageIdentity } from '../../partitions/index.ts';
import { pathExists } from '../../sys/files.ts';
import { parseOsRelease } from '../../host/os-release.ts';
import { applySwitchSteps } from './switch.ts';
import { findPartition, mountRw, withDiscovery } from '../../host/access.ts';
import { preflightVerification, verifyImage } from '../verify-image.ts';
import { estimateRootfs, pullInto } from './pull.ts';
import { makeSkeleton, prepareTree, sealTree, withChrootBinds, type Tree } from './tree.ts';
import { readImageOsRelease } from './image-files.ts';
import { hookError } from './errors.ts';
import { copyTree, estimateTree, openDirSource, type OpenDirSource } from './dir-source.ts';
import { parseImageUri } from '../../config/resolve.ts';
import { dirSourceRefusedBy } from '../../config/verify-policy.ts';
import { MOUNT_POINTS } from '../../host/mount-points.ts';

export { hasErrno, mapNoSpace } from './errors.ts';

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
  /** Called as each step of UPGRADE_STEPS starts, with its name, in order (a run that stops early reports fewer). */
  onStep?: (name: UpgradeStepName) => void;
}

export interface UpgradeOutcome {
  transaction: string;
  target: 'system' | 'recovery';
  image: string;
  /** The manifest digest staged; null for a dir: source (a local tree has none). */
  digest: string | null;
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

/** The steps of an upgrade, in the order UPGRADE_STEPS runs them. */
export type UpgradeStepName =
  | 'config'
  | 'lock'
  | 'recover'
  | 'record-start'
  | 'read-host'
  | 'resolve'
  | 'already-staged'
  | 'estimate'
  | 'verify'
  | 'mount-slot-partition'
  | 'plan'
  | 'clean-leftovers'
  | 'prepare-transition'
  | 'skeleton'
  | 'hook:before-upgrade'
  | 'pull'
  | 'hook:after-upgrade-chroot'
  | 'read-os-release'
  | 'hook:after-upgrade'
  | 'seal'
  | 'commit-switch'
  | 'grub'
  | 'record-state'
  | 'read-back';

/** A step: 'stop' ends the upgrade there, successfully, with the outcome the step set (nothing to do). */
interface UpgradeStep {
  name: UpgradeStepName;
  run: (run: UpgradeRun) => Promise<void | 'stop'>;
}

/**
 * The source to upgrade from: --image (an image reference, `docker:`/`oci:` URI, or `dir:PATH`), else the
 * configured one. `channel:` and `file:` sources are NOT_SUPPORTED.
 */
export function resolveSource(config: AgentConfig, opts: { image?: string; recovery?: boolean }): ImageSource {
  const src = opts.image !== undefined && opts.image !== ''
    ? parseImageUri(opts.image)
    : opts.recovery ? (config.recoverySource ?? config.upgradeSource) : config.upgradeSource;
  if (src === undefined) {
    throw new AgentError('CONFIG_INVALID', 'no upgrade image: pass --image REF or set UPGRADE_IMAGE (with CHANNEL_UPGRADES=false) in /etc/cos-upgrade-image');
  }
  if (src.kind !== 'oci' && src.kind !== 'dir') {
    throw new AgentError('NOT_SUPPORTED', `upgrade source ${src.uri} (${src.kind}) is not supported: only OCI images and dir: trees are; set CHANNEL_UPGRADES=false and UPGRADE_IMAGE to an image reference`);
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
    const outcome = await runSteps(new UpgradeRun(deps, opts, transaction, log, result), UPGRADE_STEPS);
    // An upgrade with nothing to do leaves the record of the last real one in place.
    if (outcome.unchanged !== null) {
      await clearRunningMarker(deps, log, transaction);
      return outcome;
    }
    // After the point of no return: recorded with retries; a record that cannot be written is a surfaced warning.
    const recorded = await recordWithRetries(deps, log, { ...result, result: 'success', code: null, error: null, rotated: outcome.rotated, finishedAt: deps.now().toISOString(), ...(outcome.warnings.length > 0 ? { warnings: outcome.warnings } : {}) });
    if (recorded.length === 0) await clearRunningMarker(deps, log, transaction);
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
    // Its outcome recorded, the run is no longer one to find interrupted (a refused second run removes nothing).
    if (warnings.length === 0) await clearRunningMarker(deps, log, transaction);
    log.error({ code: err.code, err: displayText(err.message, TEXT_LIMITS.message), ...(warnings.length > 0 ? { warnings } : {}) }, 'upgrade failed');
    throw err;
  }
}

/**
 * What the steps share. The fields up to `outcome` exist from the start; each field after it is set by the step
 * named in its comment and read only by steps after that one (the order of UPGRADE_STEPS).
 */
class UpgradeRun {
  /**
   * From read-host to plan, with one probe pass of the block devices shared by their label lookups (withDiscovery:
   * after recover, which may detach what an interrupted run left attached; dropped once planned, before this run
   * attaches its transition image). Before and after, each lookup makes its own pass.
   */
  deps: AgentDeps;
  readonly opts: UpgradeOptions;
  readonly transaction: string;
  readonly log: AgentDeps['log'];
  /** The parts of the upgrade's record known so far (upgrade() writes the record, whatever the end). */
  readonly result: { image: string | null; imageDigest: string | null; startedAt: string };
  readonly target: 'system' | 'recovery';
  /** Undo jobs, run when the steps end (failed or not). */
  readonly cleanup: CleanupStack = new CleanupStack();
  /** What went wrong after the commit, and cleanup jobs that failed: the outcome's warnings (this array). */
  readonly warnings: string[] = [];
  /** The point of no return is passed (commit-switch). */
  committed = false;
  /** Set by a step that ends the upgrade early (already-staged). */
  outcome: UpgradeOutcome | null = null;
  /** record-start: the marker of this running upgrade is written (host/records.ts RunningUpgrade). */
  running: RunningUpgrade | null = null;

  // config
  config!: AgentConfig;
  /** A `dir:` source's path (dir-source.ts); null for an OCI image (then `ref` and the registry steps apply). */
  dirSource: string | null = null;
  ref!: ImageReference;
  /** The reference as shown and recorded (result.image). */
  imageName!: string;
  /** What turned signature verification off (undefined: it is required). */
  disabledBy!: string | undefined;
  // read-host: the host model before anything changes.
  before!: HostView;
  // resolve
  registry!: RegistryClient;
  image!: ResolvedImage;
  pinned!: ImageReference;
  /** resolve, for a dir: source: the tree to copy. */
  tree0!: OpenDirSource;
  // estimate
  estimate!: number | null;
  // verify
  verification!: Verification;
  verificationDetail!: string;
  // mount-slot-partition
  partDir!: string;
  // plan: the host model read again with the slot partition mounted rw (null for recovery).
  host!: HostView | null;
  plan!: UpgradePlan;
  // clean-leftovers
  transitionPath!: string;
  // prepare-transition
  sizeMiB!: number;
  tree!: Tree;
  // read-os-release
  osRelease!: Map<string, string>;
  // commit-switch
  newIdentity!: ImageIdentity | undefined;
  haveActive!: boolean;
  rotatedId!: string | null;
  /** commit-switch: the journal that commits a system switch (null for recovery) and the record of the new image. */
  journal: SwitchJournal | null = null;
  entry!: ImageEntry;
  grubWrites: GrubWrites | null = null;
  // read-back
  nextBoot: UpgradeOutcome['nextBoot'] = null;

  constructor(deps: AgentDeps, opts: UpgradeOptions, transaction: string, log: AgentDeps['log'], result: UpgradeRun['result']) {
    this.deps = deps;
    this.opts = opts;
    this.transaction = transaction;
    this.log = log;
    this.result = result;
    this.target = opts.recovery ? 'recovery' : 'system';
  }

  progress(p: Partial<Progress> & Pick<Progress, 'operation' | 'message'>): void {
    this.lastProgress = { percent: 0, bytesDone: 0, bytesTotal: 0, ...p };
    this.opts.onProgress?.(this.lastProgress);
  }

  /** The last progress reported (a registry retry is reported within it). */
  lastProgress: Progress | undefined;

  /**
   * The registry client's events: a retry is logged as a warning and shown in the progress ("retrying in 4 s, 2 of
   * 4"), instead of minutes of silence while a stalled registry is retried.
   */
  registryEvent(event: string, f: Record<string, unknown>): void {
    if (event !== 'oci.retry') return;
    const ms = Number(f['delayMs'] ?? 0);
    const wait = ms >= 1000 ? `${Math.round(ms / 1000)} s` : `${ms} ms`;
    // The status first (a TTY bar shows the message's start); the registry's own words escaped and bounded.
    const message = displayText(`retrying in ${wait}, ${String(f['attempt'] ?? '?')} of ${String(f['of'] ?? '?')}: ${String(f['what'] ?? 'registry')}: ${String(f['error'] ?? '')}`, TEXT_LIMITS.message);
    this.log.warn({ what: f['what'], attempt: f['attempt'], of: f['of'], delayMs: f['delayMs'], err: f['error'] }, 'registry request failed: retrying');
    const last = this.lastProgress;
    this.opts.onProgress?.({ ...(last ?? { operation: 'checking', percent: 0, bytesDone: 0, bytesTotal: 0 }), message });
  }

  checkAbort(): void {
    if (this.opts.signal?.aborted) throw new CancelledError();
  }

  /**
   * A write after the point of no return: the slot holds the new image whatever happens, so the write is retried,
   * and one that still fails is logged and surfaced as a warning (status then derives the slots from the images
   * themselves), never a failure.
   */
  async after(what: string, fn: () => Promise<void>): Promise<void> {
    try {
      await retry(fn, { attempts: 3, delayMs: 100 });
    } catch (e) {
      const message = `${what}: ${e instanceof Error ? e.message : String(e)}`;
      this.log.error({ err: message, code: e instanceof AgentError ? e.code : null }, 'the slot is switched, but a write after it failed');
      this.warnings.push(message);
    }
  }
}

/** The upgrade, in order. */
const UPGRADE_STEPS: readonly UpgradeStep[] = [
  { name: 'config', run: readConfig },
  { name: 'lock', run: lock },
  { name: 'recover', run: recover },
  { name: 'record-start', run: recordStart },
  { name: 'read-host', run: readHostBefore },
  { name: 'resolve', run: resolve },
  { name: 'already-staged', run: stopWhenAlreadyStaged },
  { name: 'estimate', run: estimate },
  { name: 'verify', run: verify },
  { name: 'mount-slot-partition', run: mountSlotPartition },
  { name: 'plan', run: plan },
  { name: 'clean-leftovers', run: cleanLeftovers },
  { name: 'prepare-transition', run: prepareTransition },
  { name: 'skeleton', run: skeleton },
  { name: 'hook:before-upgrade', run: hookBeforeUpgrade },
  { name: 'pull', run: pull },
  { name: 'hook:after-upgrade-chroot', run: hookAfterUpgradeChroot },
  { name: 'read-os-release', run: readNewOsRelease },
  { name: 'hook:after-upgrade', run: hookAfterUpgrade },
  { name: 'seal', run: seal },
  { name: 'commit-switch', run: commitSwitch },
  { name: 'grub', run: grub },
  { name: 'record-state', run: recordState },
  { name: 'read-back', run: readBack },
];

/**
 * Run the steps in order, each reported as it starts, until one stops the upgrade early or all ran; then the cleanup
 * stack, whatever happened (its failures become warnings of the outcome).
 */
async function runSteps(run: UpgradeRun, steps: readonly UpgradeStep[]): Promise<UpgradeOutcome> {
  let failed = true;
  try {
    for (const step of steps) {
      run.log.debug({ step: step.name }, 'upgrade step');
      run.opts.onStep?.(step.name);
      await markStep(run, step.name);
      run.deps.testHooks?.onStep?.(step.name);
      if ((await step.run(run)) === 'stop') break;
    }
    failed = false;
    return run.outcome ?? stagedOutcome(run);
  } finally {
    const errors = await run.cleanup.run(failed);
    for (const e of errors) {
      run.log.error({ err: e.message }, 'cleanup step failed');
      // Never dropped: on success they are the outcome's warnings (the array it returned); on failure, logged above.
      run.warnings.push(e.message);
    }
  }
}

/** Config and source; signature policy: verification is required unless explicitly turned off (loudly). */
async function readConfig(run: UpgradeRun): Promise<void> {
  const { deps, opts, log, result } = run;
  run.progress({ operation: 'checking', message: 'reading configuration' });
  const { config } = await loadActionConfig(deps, {
    overrides: { ...(opts.image !== undefined ? { image: opts.image } : {}), ...(opts.noVerify ? { noVerify: true } : {}), ...(opts.recovery ? { recovery: true } : {}) },
  });
  run.config = config;
  const source = resolveSource(config, opts);
  if (source.kind === 'dir') {
    run.dirSource = source.ref;
    run.imageName = `dir:${source.ref}`;
    result.image = run.imageName;
    // No signature can cover a local tree: verification does not apply (verify refuses it where the policy says so).
    run.disabledBy = undefined;
    return;
  }
  run.ref = parseReference(source.ref);
  run.imageName = formatReference(run.ref);
  result.image = run.imageName;

  run.disabledBy = opts.noVerify ? '--no-verify' : config.verify ? undefined : (config.verifyDisabledBy ?? 'config');
  if (run.disabledBy !== undefined) {
    log.warn({ image: result.image, disabledBy: run.disabledBy }, 'SIGNATURE VERIFICATION DISABLED: staging an unverified OS image');
    run.progress({ operation: 'verifying', message: `WARNING: signature verification disabled (${run.disabledBy}): ${result.image} will be staged unverified` });
  }
}

/** One job at a time. */
async function lock(run: UpgradeRun): Promise<void> {
  const held = await acquireLock(run.deps.root.path('/run/cos-agent/upgrade.lock'), `upgrade ${run.transaction}`);
  run.cleanup.push('release the upgrade lock', () => held.release());
}

/**
 * What an interrupted run left is undone (or, for a committed switch, finished) before anything is decided, so that
 * "already up to date" and the plan see the slots as they really are. Its warnings become the outcome's.
 */
async function recover(run: UpgradeRun): Promise<void> {
  const r = await recoverInterrupted(run.deps, run.config);
  run.warnings.push(...r.warnings);
  if (r.unfinished !== null) throw new AgentError('STATE_INVALID', `refusing to change the slots: ${r.unfinished}`);
  if (r.resumed !== null) run.warnings.push(`an interrupted ${r.resumed === 'swap' ? 'permanent rollback' : 'upgrade'} was finished first`);
}

/**
 * The marker of this running upgrade (host/records.ts), written once what an earlier run left is dealt with: a power
 * cut from here on is found by the next run and recorded as this upgrade, interrupted.
 */
async function recordStart(run: UpgradeRun): Promise<void> {
  const running: RunningUpgrade = { transaction: run.transaction, target: run.target, image: run.result.image, imageDigest: null, startedAt: run.result.startedAt, step: 'record-start' };
  await recordRunning(run.deps.root, running).catch((e: unknown) => { throw withContext('recording the start of the upgrade', e); });
  run.running = running;
}

/** The steps whose start updates the marker: where a power cut can leave something to undo or finish. */
const MARKED_STEPS: ReadonlySet<UpgradeStepName> = new Set(['verify', 'prepare-transition', 'pull', 'seal', 'commit-switch', 'grub', 'record-state']);

async function markStep(run: UpgradeRun, step: UpgradeStepName): Promise<void> {
  if (run.running === null || !MARKED_STEPS.has(step)) return;
  run.running = { ...run.running, step, imageDigest: run.result.imageDigest };
  const running = run.running;
  // Only a better record of where a cut happened: a failed write is logged, never the upgrade's failure.
  await recordRunning(run.deps.root, running).catch((e: unknown) => run.log.warn({ err: e instanceof Error ? e.message : String(e), step }, 'could not update the running-upgrade marker'));
}

/**
 * The host model before anything changes (this also records which image runs, for the rest of this boot).
 * Read-only, its mounts undone at once: COS_STATE is mounted rw only after verification.
 */
async function readHostBefore(run: UpgradeRun): Promise<void> {
  run.deps = withDiscovery(run.deps);
  run.before = await readHostOnce(run.deps, run.config);
  const { boot } = run.before;
  run.log.info({ bootedFrom: boot.bootedFrom, running: run.before.state.running, staged: run.before.state.staged, upgradeFailure: run.before.facts.upgradeFailure, target: run.target }, 'starting upgrade');
}

/** Resolve the tag to a digest; everything after uses the digest. */
async function resolve(run: UpgradeRun): Promise<void> {
  const { deps, result } = run;
  if (run.dirSource !== null) {
    run.tree0 = await openDirSource(deps, run.dirSource, run.cleanup);
    return;
  }
  // With verification on, a policy that can accept nothing fails before the registry is contacted.
  if (run.disabledBy === undefined) await preflightVerification(deps.root, run.config, run.ref, deps.config?.()?.policyText);
  run.progress({ operation: 'checking', message: `resolving ${result.image}` });
  run.registry = new RegistryClient({ root: deps.root, env: deps.env, ...deps.registry, ...(run.opts.signal !== undefined ? { signal: run.opts.signal } : {}), log: (event, f) => run.registryEvent(event, f) });
  const registry = run.registry;
  run.cleanup.push('close registry connections', () => registry.close());
  run.image = await registry.resolve(run.ref).catch((e: unknown) => { throw withContext(`resolving ${result.image}`, e); });
  result.imageDigest = run.image.digest;
  run.pinned = { ...run.ref, digest: run.image.digest };
  run.log.info({ digest: run.image.digest, layers: run.image.manifest.layers.length, compressedSize: run.image.compressedSize }, 'resolved image');
}

/** Nothing to do when the slot already holds this digest (bootc's "no changes"), unless forced. */
async function stopWhenAlreadyStaged(run: UpgradeRun): Promise<void | 'stop'> {
  const { opts, before, image, target } = run;
  // A local tree has no digest to compare: it is always staged (SUC's job compares os-release before it asks).
  if (opts.force || run.dirSource !== null) return;
  // An image that failed boot assessment here (or was marked bad) is not staged again unless forced: that would
  // boot-loop into the same failure (kairos#4303's other half).
  const failed = target === 'system' ? failedDigests(before.facts) : [];
  const hit = [image.digest, ...(image.indexDigest ? [image.indexDigest] : [])].find((d) => failed.includes(d));
  if (hit !== undefined) {
    throw new AgentError('IMAGE_FAILED_BEFORE', `${run.imageName} (${hit}) failed boot assessment on this host (or was marked bad); --force stages it again`);
  }
  const slotName = opts.recovery ? 'recovery' : 'active';
  // The record of the image that is really in the slot (a stale record names another image: no digest known).
  const entry = recordFor(before.facts, slotName).record;
  const slot = { entry, digest: entry?.digest ?? entry?.sourceMetadata?.digest ?? null, present: before.files[slotName].present, file: before.files[slotName].present ? before.files[slotName].file : null };
  const unchanged = alreadyStaged({
    target,
    digests: [image.digest, ...(image.indexDigest ? [image.indexDigest] : [])],
    slot: { digest: slot.digest, present: slot.present, verification: slot.entry?.verification ?? null },
    bootedFrom: before.boot.bootedFrom,
    upgradeFailure: before.facts.upgradeFailure,
    verificationRequired: run.disabledBy === undefined,
    force: false,
    nextSlot: before.state.next.slot,
  });
  if (unchanged === null) return;
  run.log.info({ digest: image.digest, reason: unchanged }, 'already up to date: nothing staged');
  run.outcome = {
    transaction: run.transaction,
    target,
    image: run.imageName,
    digest: image.digest,
    version: slot.entry?.version ?? null,
    file: slot.file ?? '',
    rotated: false,
    keepPassiveReason: null,
    verification: slot.entry?.verification === 'verified' ? 'verified' : 'skipped',
    verificationDetail: slot.entry?.verificationDetail ?? '',
    imageSizeMiB: 0,
    unchanged,
    warnings: run.warnings,
    nextBoot: opts.recovery ? null : { slot: before.state.next.slot, entry: before.state.next.entry, reason: before.state.next.reason },
  };
  return 'stop';
}

/** The rootfs size, from the layers' own metadata, before pulling. */
async function estimate(run: UpgradeRun): Promise<void> {
  run.estimate = run.dirSource !== null
    ? await estimateTree(run.tree0, run.opts.signal)
    : await estimateRootfs(run.registry, run.pinned, run.image);
  run.checkAbort();
}

/** Signatures, before a single byte is written (fail closed; the error names the check that failed). */
async function verify(run: UpgradeRun): Promise<void> {
  const { deps, config, result, image } = run;
  if (run.dirSource !== null) {
    const refusedBy = await dirSourceRefusedBy(deps.root, deps.config?.()?.policyText);
    if (refusedBy !== null) throw new AgentError('VERIFY_FAILED', `${refusedBy} refuses dir: sources (dirSources: refuse): ${result.image ?? ''} cannot be verified`);
    run.verification = 'not-applicable';
    run.verificationDetail = 'dir source';
    run.log.warn({ image: result.image }, 'staging a dir: source: no signature applies to a local tree');
    run.progress({ operation: 'verifying', message: `${result.image ?? ''}: a local tree, no signature applies (verification not-applicable: dir source)` });
    return;
  }
  run.verification = 'skipped';
  run.verificationDetail = `disabled by ${run.disabledBy ?? '?'}`;
  if (run.disabledBy === undefined) {
    run.progress({ operation: 'verifying', message: `verifying the signatures of ${result.image}@${image.digest}` });
    const v = await verifyImage(deps.root, config, run.registry, run.ref, image, deps.config?.()?.policyText);
    run.verification = 'verified';
    run.verificationDetail = v.summary;
    run.log.info({ signedDigest: v.signedDigest, signatures: v.summary }, 'signature verified');
    run.progress({ operation: 'verifying', message: `verified: ${v.summary}` });
  }
  run.checkAbort();
}

/** The partition that holds the slot, mounted rw only for the duration. */
async function mountSlotPartition(run: UpgradeRun): Promise<void> {
  const { deps, opts, config } = run;
  const part = await findPartition(deps, opts.recovery ? config.labels.recovery : config.labels.state);
  run.partDir = await mountRw(deps, part.device, opts.recovery ? MOUNT_POINTS.recovery : MOUNT_POINTS.state, run.cleanup, { restoreRo: true });
}

/** Plan: rotate or keep passive (host model); the recovery flavour is what is on disk (file name and magic, cos-layout.md 8 #9). */
async function plan(run: UpgradeRun): Promise<void> {
  const { deps, opts, config, partDir, before } = run;
  let flavour: RecoveryFlavour = 'img';
  if (opts.recovery) {
    const squash = path.join(partDir, 'cOS/recovery.squashfs');
    flavour = (await pathExists(squash)) && (await isSquashfs(squash)) ? 'squashfs' : 'img';
  }
  // The host model again, now that the slot partition is mounted rw (reading it also checks the GRUB env blocks
  // we rewrite after the switch: a corrupt one fails the upgrade here, before anything is written).
  run.host = opts.recovery ? null : await readHost(deps, config, run.cleanup, { writable: true, dirs: { state: partDir } });
  const bootState = run.host?.state ?? before.state;
  // The running image must be in a slot before any slot changes (rule 1): a host where it is not is refused.
  if ((before.boot.bootedFrom === 'active' || before.boot.bootedFrom === 'passive') && bootState.running === null) {
    throw new AgentError('STATE_INVALID', `refusing to change the slots: the running image (booted from ${before.boot.bootedFrom}) is in no slot image`);
  }
  if (opts.recovery && bootState.running === 'recovery') {
    throw new AgentError('NOT_SUPPORTED', 'booted from recovery, the recovery image is the running system: upgrade the recovery slot from active or passive');
  }
  run.plan = planUpgrade({ target: opts.recovery ? 'recovery' : 'system', bootState, bootedFrom: before.boot.bootedFrom, upgradeFailure: before.facts.upgradeFailure, recoveryFlavour: flavour, labels: config.labels });
  if (run.plan.keepPassiveReason) run.log.info({ reason: run.plan.keepPassiveReason }, 'passive slot kept');
  // The probe pass shared since read-host ends here: the transition image attached next is a new device.
  const { discovery: _shared, ...unscoped } = run.deps;
  run.deps = unscoped;
}

/** Leftovers of an interrupted run never block a new one; this run's own are removed when it stops before the commit. */
async function cleanLeftovers(run: UpgradeRun): Promise<void> {
  const { partDir } = run;
  // Recovery (the recover step) removed what an interrupted run left, or refused to go on: only a transition file of
  // this flavour can be here now. A *.next name is never removed blindly (it may be the only name of an image).
  for (const f of TRANSITION_FILES) await rm(path.join(partDir, f), { force: true });
  const transitionPath = path.join(partDir, run.plan.transitionFile);
  run.transitionPath = transitionPath;
  // Before the commit only: after it, the journal names the transition image until its rename is done.
  run.cleanup.push('remove the transition image', () => (run.committed ? undefined : rm(transitionPath, { force: true })));
  run.cleanup.push('remove leftover switch names', async () => {
    // After the commit a switch that stopped midway keeps its names: passive.next may be the only name of the
    // running image.
    if (run.committed) return;
    for (const f of ['cOS/passive.next', 'cOS/active.next']) await rm(path.join(partDir, f), { force: true });
  });
}

/**
 * Scratch space: never on COS_STATE. The new tree is built directly in the mounted transition image (ext2) or, for
 * a squashfs recovery, in a directory on COS_PERSISTENT. The slot size: configured or that of the image it replaces,
 * grown to fit the estimated rootfs.
 */
async function prepareTransition(run: UpgradeRun): Promise<void> {
  const { opts, config, plan: p, estimate: est } = run;
  const configuredMiB = slotBaseMiB((opts.recovery ? config.recoveryImageSizeMiB : undefined) ?? config.imageSizeMiB, p.fs === 'squashfs' ? null : await imageFileBytes(path.join(run.partDir, p.finalFile)));
  const size = slotSize(configuredMiB, est);
  run.log.info({ baseMiB: configuredMiB, sizeMiB: size.sizeMiB, estimateBytes: est }, size.grown ? 'slot image grown to fit the rootfs' : 'slot image size');
  run.sizeMiB = size.sizeMiB;
  run.tree = await prepareTree(run.deps, p, run.transitionPath, { configuredMiB, sizeMiB: run.sizeMiB, estimate: est }, config, run.cleanup, run.log);
  run.progress({ operation: 'staging', message: `staging into ${p.finalFile}` });
}

/** The skeleton dirs of a cOS image. */
async function skeleton(run: UpgradeRun): Promise<void> {
  await makeSkeleton(run.tree.dir);
}

async function hookBeforeUpgrade(run: UpgradeRun): Promise<void> {
  run.progress({ operation: 'hooks', message: 'before-upgrade' });
  await run.deps.hooks.run('before-upgrade', hookContext(run)).catch((e: unknown) => { throw hookError('before-upgrade', e); });
}

/** Pull: every layer streamed, digest-checked, straight into the tree. */
async function pull(run: UpgradeRun): Promise<void> {
  const treeDir = run.tree.dir;
  if (run.dirSource !== null) {
    const mib = (run.estimate ?? 0) / (1 << 20);
    run.progress({ operation: 'downloading', message: `copying ${run.imageName} (${mib.toFixed(1)} MiB)`, bytesTotal: run.estimate ?? 0 });
    await copyTree(run.deps, run.tree0, run.dirSource, treeDir);
    run.progress({ operation: 'downloading', message: `copied ${run.imageName}`, percent: 100, bytesDone: run.estimate ?? 0, bytesTotal: run.estimate ?? 0 });
    await chmod(treeDir, 0o755);
    run.checkAbort();
    return;
  }
  await pullInto(run.deps, run.registry, run.pinned, run.image, treeDir, run.sizeMiB, (p) => run.progress(p), run.opts.signal, run.log);
  await chmod(treeDir, 0o755);
  run.checkAbort();
}

/** after-upgrade-chroot, in the new image with the host's /dev /proc /sys /oem /usr/local bound in. */
async function hookAfterUpgradeChroot(run: UpgradeRun): Promise<void> {
  const treeDir = run.tree.dir;
  run.progress({ operation: 'hooks', message: 'after-upgrade-chroot' });
  // Only the hook's own failure is HOOK_FAILED; a mount point the image makes unsafe is UNPACK_UNSAFE, a bind MOUNT_FAILED.
  await withChrootBinds(run.deps, treeDir, () => run.deps.hooks.run('after-upgrade-chroot', { ...hookContext(run), chroot: treeDir })
    .catch((e: unknown) => { throw hookError('after-upgrade-chroot', e); }));
}

/**
 * The new image's os-release (its VERSION and GRUB_ENTRY_NAME), as the chroot hook left it: /etc/os-release, else
 * /usr/lib/os-release, read inside the image only (links resolved in it, regular files of at most 64 KiB; see
 * image-files.ts). One that cannot be read safely (a FIFO, a device, a loop, too large) does not fail the upgrade:
 * it is not read, the version stays unknown, and a warning of the outcome says why.
 */
async function readNewOsRelease(run: UpgradeRun): Promise<void> {
  const found = await readImageOsRelease(run.tree.dir);
  for (const w of found.warnings) {
    run.log.warn({ file: found.file, warning: w }, "the new image's os-release was not read");
    run.warnings.push(w);
  }
  run.osRelease = parseOsRelease(found.text ?? '');
}

async function hookAfterUpgrade(run: UpgradeRun): Promise<void> {
  run.progress({ operation: 'hooks', message: 'after-upgrade' });
  await run.deps.hooks.run('after-upgrade', hookContext(run)).catch((e: unknown) => { throw hookError('after-upgrade', e); });
}

/** Seal the new image: unmount + fsck (ext2), or mksquashfs (squashfs). */
async function seal(run: UpgradeRun): Promise<void> {
  run.progress({ operation: 'finalizing', message: 'checking the new image' });
  await sealTree(run.deps, run.plan, run.tree, run.transitionPath, run.config);
  run.checkAbort();
}

/**
 * The switch: the point of no return. The new image's identity goes into its record, the old active's identity (and
 * whether it is the running system) into the record that moves to passive.
 */
async function commitSwitch(run: UpgradeRun): Promise<void> {
  const { deps, opts, plan: p, partDir, host, config } = run;
  run.newIdentity = await readImageIdentity(run.transitionPath);
  run.haveActive = await pathExists(path.join(partDir, 'cOS/active.img'));
  run.rotatedId = host?.facts.slots.active.id ?? null;
  const steps = upgradeSwitchSteps(p, config.labels, { active: run.haveActive });
  run.entry = newImageEntry(run);
  // Everything that completes the switch is decided and checked before it: a GRUB value that cannot be written (too
  // long for the block) fails the upgrade here, with nothing switched.
  if (p.updateGrub && host !== null) {
    // The GRUB side of boot assessment (the N-tries script, the grubcustom hook, the env blocks) is installed or
    // brought up to date first: arming it means nothing to a GRUB that does not source it.
    const installed = await installBootAssessment(host.dirs);
    if (installed.length > 0) run.log.info({ files: installed }, 'boot assessment installed on disk');
    run.grubWrites = systemUpgradeWrites(host.facts, run.osRelease.get('GRUB_ENTRY_NAME') ?? null, config.bootAssessmentTries);
    await checkGrubWrites(host, run.grubWrites);
  }
  run.checkAbort();
  if (p.target === 'system') {
    run.journal = {
      kind: 'upgrade', transaction: run.transaction, steps, done: 0, grub: run.grubWrites, grubDone: run.grubWrites === null, recordsDone: false,
      records: { kind: 'rotate', options: rotateOptions(run) },
    };
    await writeJournal(partDir, run.journal);
  }
  run.committed = true;
  opts.onCommit?.();
  // Boot assessment is armed before the first rename: a power cut anywhere in the switch, then a reboot into the
  // new active, boots it tentatively, with the fallback behind it. (An old active that boots armed instead is an
  // image that booted before; the finished switch re-arms for the new one.)
  if (run.grubWrites !== null && host !== null) {
    await run.after('arming boot assessment before the switch', () => applyGrubWrites(host, grubVerbs.arm(config.bootAssessmentTries)));
  }
  if (run.journal !== null) deps.testHooks?.onSwitchStep?.(0);
  run.progress({ operation: 'finalizing', message: 'switching slots' });
  // A step that fails is retried from where it stopped: a half-done switch is never undone by deleting names (the
  // old active may exist only as passive.next at that moment); a crash is finished by the next run from the journal.
  let stepsDone = 0;
  const journal = run.journal;
  const apply = journal !== null
    ? () => runJournalSteps(deps, partDir, journal, (done) => { stepsDone = done; deps.testHooks?.onSwitchStep?.(done); })
    : () => applySwitchSteps(deps, partDir, steps.slice(stepsDone), () => { stepsDone++; });
  await retry(apply, { attempts: 3, delayMs: 100 })
    .catch((e: unknown) => {
      throw new AgentError('STAGE_FAILED', `the slot switch stopped after step ${stepsDone} of ${steps.length} (${JSON.stringify(steps[stepsDone])}); the images are kept as they are${journal !== null ? ' and the next run finishes the switch' : ''}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    });
  run.log.info({ file: p.finalFile, rotated: p.rotate && run.haveActive, keepPassiveReason: p.keepPassiveReason }, 'slot switched: committed');
}

/** The state.yaml entry of the image being switched in. */
function newImageEntry(run: UpgradeRun): ImageEntry {
  const { deps, plan: p, image } = run;
  return {
    // elemental's URI forms: docker://REF, dir:///path.
    ...(run.dirSource !== null
      ? { source: `dir://${run.dirSource}` }
      : { source: `docker://${formatReference(run.ref)}`, sourceMetadata: { digest: image.digest, size: image.compressedSize }, digest: image.digest }),
    ...(p.label !== null ? { label: p.label } : {}),
    fs: p.fs,
    ...(run.newIdentity?.id != null ? { uuid: run.newIdentity.id } : {}),
    date: deps.now().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    ...(run.osRelease.get('VERSION') !== undefined ? { version: run.osRelease.get('VERSION') as string } : {}),
    verification: run.verification === 'skipped' || run.verification === 'not-applicable' ? run.verification : 'verified',
    verificationDetail: run.verificationDetail,
    upgradeResult: 'staged',
  };
}

function rotateOptions(run: UpgradeRun): RotateOptions {
  const { plan: p } = run;
  return {
    target: run.opts.recovery ? 'recovery' : 'active',
    keepPassive: !(p.rotate && run.haveActive),
    newImage: run.entry,
    date: run.entry.date as string,
    labels: run.config.labels,
    rotatedId: run.rotatedId,
    rotatedBooted: run.host?.state.running === 'active',
  };
}

/**
 * GRUB, through the bootchooser: the new active boots next (a pending one-shot or saved choice is replaced), under
 * its name, with boot assessment armed (tentative cleared: kairos#4303). After the commit: a failure is a warning.
 */
async function grub(run: UpgradeRun): Promise<void> {
  const { host, grubWrites } = run;
  if (grubWrites === null || host === null) return;
  await run.after('setting the GRUB variables (next boot, boot assessment)', () => applyGrubWrites(host, grubWrites));
  if (run.journal !== null) {
    const journal = run.journal;
    journal.grubDone = true;
    await run.after('updating the switch journal', () => writeJournal(run.partDir, journal));
  }
}

/**
 * state.yaml on the slot's partition (and on COS_STATE for a recovery upgrade, as elemental G3 does). After the
 * commit: a failure is a warning. Then the switch is complete: its journal goes.
 */
async function recordState(run: UpgradeRun): Promise<void> {
  const { deps, opts, config, partDir, log } = run;
  const stateFiles = [path.join(partDir, 'state.yaml')];
  if (opts.recovery) {
    await run.after('mounting COS_STATE for its state.yaml', async () => {
      const statePart = await findPartition(deps, config.labels.state).catch(() => undefined);
      if (statePart) stateFiles.push(path.join(await mountRw(deps, statePart.device, MOUNT_POINTS.state, run.cleanup, { restoreRo: true }), 'state.yaml'));
    });
  }
  const options = rotateOptions(run);
  for (const file of stateFiles) {
    await run.after(`recording the slots in ${file}`, async () => {
      const { state, recovered } = await readStateFile(file);
      if (recovered) log.warn({ file, brokenPath: recovered.brokenPath, reason: recovered.reason }, 'state file was corrupt: kept aside and rebuilt');
      await writeStateFile(file, rotateOnUpgrade(state, options));
    });
  }
  await run.after('syncing the slot partition', () => syncFs(partDir));
  if (run.journal !== null) {
    const journal = run.journal;
    journal.recordsDone = true;
    await run.after('completing the switch journal', async () => {
      await writeJournal(partDir, journal);
      await removeJournal(partDir);
    });
  }
}

/**
 * What GRUB boots next now, read back from the disk (a write above may have failed): the caller says "reboot to run
 * it" only when that is true.
 */
async function readBack(run: UpgradeRun): Promise<void> {
  const { host } = run;
  if (host === null) return;
  await run.after('reading back what boots next', async () => {
    const n = (await readHost(run.deps, run.config, run.cleanup, { dirs: { state: run.partDir, ...(host.dirs.oem !== undefined ? { oem: host.dirs.oem } : {}) } })).state.next;
    run.nextBoot = { slot: n.slot, entry: n.entry, reason: n.reason };
  });
}

/** The outcome of an upgrade that went through every step. */
function stagedOutcome(run: UpgradeRun): UpgradeOutcome {
  const { plan: p } = run;
  return {
    transaction: run.transaction,
    target: p.target,
    image: run.imageName,
    digest: run.dirSource !== null ? null : run.image.digest,
    version: run.osRelease.get('VERSION') ?? null,
    file: p.finalFile,
    rotated: p.rotate && run.haveActive,
    keepPassiveReason: p.keepPassiveReason,
    verification: run.verification,
    verificationDetail: run.verificationDetail,
    imageSizeMiB: run.sizeMiB,
    unchanged: null,
    warnings: run.warnings,
    nextBoot: run.nextBoot,
  };
}

/** What every hook is told: the transaction, the target, whether hook errors fail the upgrade. */
function hookContext(run: UpgradeRun): { transaction: string; target: 'system' | 'recovery'; strict: boolean; extraPaths: readonly string[] } {
  return { transaction: run.transaction, target: run.plan.target, strict: run.config.strict, extraPaths: run.config.cloudInitPaths };
}

/** Remove this run's running-upgrade marker; a failure is logged (the next run would record it as interrupted). */
async function clearRunningMarker(deps: AgentDeps, log: AgentDeps['log'], transaction: string): Promise<void> {
  await clearRunning(deps.root, transaction).catch((e: unknown) => log.warn({ err: e instanceof Error ? e.message : String(e) }, 'could not remove the running-upgrade marker'));
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
