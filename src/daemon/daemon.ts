/**
 * cosd's state and jobs, with no transport in sight: what the D-Bus service (src/dbus/service.ts) shows as properties
 * and signals, and what its methods call. It wraps the JobManager (one job at a time, BUSY naming the running
 * transaction), persists every job's outcome (transactions.ts) before announcing it, refreshes the status document
 * after each job, and reboots after an upgrade that asked for it.
 *
 * Memory: the job machinery (got, the OCI and signature stack, the actions) is never imported here in cosd: each job
 * runs in a process of its own (DaemonDeps.jobActions: the daemon never holds that code or its memory, and staging
 * never blocks the bus); without jobActions (tests) it is imported on the first job. The status reader is imported at
 * start because the properties come from disk.
 */
import { AgentError, JobLostError } from '../model/errors.ts';
import { displayText, TEXT_LIMITS } from '../model/text.ts';
import type { AgentConfig } from '../model/config.ts';
import type { ConfigSnapshot } from '../config/load.ts';
import type { BootedFrom, HostStatusDocument, SlotName } from '../model/host.ts';
import type { Logger } from '../sys/log.ts';
import type { AgentDeps, Operation, Progress } from '../host/deps.ts';
import type { JobActions, JobKind, JobManager, JobOutcome } from './job.ts';
import type { UpgradeOutcome } from '../actions/upgrade/upgrade.ts';
import type { CheckOutcome } from '../actions/check.ts';
import type { RollbackOutcome } from '../actions/rollback.ts';
import type { MarkOutcome } from '../actions/mark.ts';
import { checkStageName, type RunStageOutcome } from '../model/stage.ts';
import { readLastResult } from '../host/records.ts';
import { boundRecord, readLastTransaction, recordedThisBoot, recordTransaction, RESULT, type TransactionDetails, type TransactionRecord } from './transactions.ts';

export interface UpgradeRequest {
  /** Image reference overriding the configured source. */
  image?: string;
  /** Upgrade the recovery image instead of active. */
  recovery?: boolean;
  /** Stage without signature verification. */
  noVerify?: boolean;
  /** Reboot after a successful upgrade. */
  reboot?: boolean;
  /** Stage even when the slot already holds the digest (otherwise such an upgrade does nothing and succeeds). */
  force?: boolean;
}

export interface CheckRequest {
  image?: string;
  recovery?: boolean;
}

export interface RollbackRequest {
  permanent?: boolean;
}

export interface RunStageRequest {
  stage: string;
  /** Errors fail the job (CLOUD_INIT_FAILED), as elemental run-stage --strict. */
  strict?: boolean;
}

/** The Progress property: the running job's progress; depth 1 inside a job, 0 when idle. */
export interface ProgressState {
  percent: number;
  message: string;
  depth: number;
  bytesDone: number;
  bytesTotal: number;
}

export type SlotState = 'good' | 'bad' | 'tentative' | 'absent';

/** One slot as the Slots property shows it ('' = unknown, 0 = unknown size). */
export interface SlotSummary {
  image: string;
  digest: string;
  version: string;
  label: string;
  file: string;
  present: boolean;
  fs: string;
  size: number;
  timestamp: string;
  verification: string;
  state: SlotState;
}

/** The effective configuration without secrets ('' = unset). */
export interface ConfigSummary {
  upgradeImage: string;
  recoveryImage: string;
  verify: boolean;
  verifyDisabledBy: string;
  channelUpgrades: boolean;
  /** DEFAULT_IMAGE_SIZE / upgrade.system.size; 0 when unset (a slot image is sized like the one it replaces). */
  imageSizeMiB: number;
  strict: boolean;
  reboot: boolean;
  poweroff: boolean;
  cosign: boolean;
  cosignKeyless: boolean;
  cosignRepository: string;
  cosignKeys: string[];
  labels: Record<string, string>;
  /** The host root cosd manages ("/" on a real host; a temp root in tests): cosctl --root compares it. */
  root: string;
}

export interface DaemonState {
  operation: Operation;
  progress: ProgressState;
  lastError: string;
  bootedSlot: BootedFrom;
  slots: Record<SlotName, SlotSummary>;
  updateAvailable: boolean;
  /** The running job's id, '' when idle. */
  transaction: string;
  /** Null until a configuration was loaded. */
  config: ConfigSummary | null;
  /** The last upgrade was rolled back by boot assessment. */
  upgradeFailure: boolean;
  lastTransaction: TransactionRecord | null;
}

export interface DaemonListener {
  /** Fields that changed, with their new values. */
  changed?(changes: Partial<DaemonState>): void;
  /** A job finished; its outcome is persisted and in the state already. */
  completed?(transaction: string, result: number, error: string): void;
  /**
   * A job finished (called just before `completed`) with its persisted record. `configuredSource` is true for a check
   * or upgrade of the configured system image (no image or recovery override): the automatic-update policy may act on it.
   */
  finished?(record: TransactionRecord, configuredSource: boolean): void;
  /** The status document was read again (at start, after each job, after a change outside cosd). */
  statusRefreshed?(doc: HostStatusDocument): void;
  /** A read of the status document failed: the copy kept (statusDocument) is the last one read. */
  statusFailed?(error: AgentError): void;
}

export interface DaemonDeps {
  /** The agent's capabilities; `log` is the daemon's logger (jobs get a child carrying the transaction id). */
  agent: AgentDeps;
  /**
   * Reboot the machine after an upgrade that asked for it. 'skipped' when this daemon must not reboot (it manages a
   * host under a --root prefix).
   */
  reboot(): Promise<'rebooting' | 'skipped'>;
  /**
   * Load the configuration and hand it to setConfig / setConfigError (the config watcher does, see automation.ts).
   * Default: a one-off loadConfig on each reloadConfig().
   */
  reloadConfig?(): Promise<void>;
  /**
   * What runs the jobs, loaded on the first one. Default: the real actions in this process (job-actions.ts); cosd
   * passes its job processes (job-process.ts), so that the job machinery never loads into the daemon.
   */
  jobActions?: () => Promise<JobActions>;
}

/** Whatever the service needs from the daemon: the state, and one call per method. */
export interface AgentPort {
  readonly state: Readonly<DaemonState>;
  upgrade(req: UpgradeRequest): Promise<string>;
  check(req: CheckRequest): Promise<string>;
  rollback(req: RollbackRequest): Promise<string>;
  cancel(): boolean;
  mark(good: boolean): Promise<string>;
  statusJson(): Promise<string>;
  runStage(req: RunStageRequest): Promise<string>;
}

const IDLE_PROGRESS: ProgressState = { percent: 0, message: '', depth: 0, bytesDone: 0, bytesTotal: 0 };

function emptySlot(file: string): SlotSummary {
  return { image: '', digest: '', version: '', label: '', file, present: false, fs: '', size: 0, timestamp: '', verification: 'unknown', state: 'absent' };
}

/** The Slots view of a status document, with each slot's boot-assessment state. */
export function slotSummaries(doc: HostStatusDocument): Record<SlotName, SlotSummary> {
  const s = doc.status;
  const state = (name: SlotName): SlotState => {
    if (!s.slots[name].present) return 'absent';
    if (name !== 'active') return 'good';
    if (s.staged?.slot === 'active') return 'tentative';
    if (s.upgradeFailure) return 'bad';
    if (s.bootAssessment.enabled || s.bootAssessment.tentative) return 'tentative';
    return 'good';
  };
  const one = (name: SlotName): SlotSummary => {
    const slot = s.slots[name];
    return {
      image: slot.image ?? '',
      digest: slot.imageDigest ?? '',
      version: slot.version ?? '',
      label: slot.label ?? '',
      file: slot.file,
      present: slot.present,
      fs: slot.fs ?? '',
      size: slot.size ?? 0,
      timestamp: slot.timestamp ?? '',
      verification: slot.verification,
      state: state(name),
    };
  };
  return { active: one('active'), passive: one('passive'), recovery: one('recovery') };
}

export function summarizeConfig(c: AgentConfig, root = '/'): ConfigSummary {
  return {
    root,
    upgradeImage: c.upgradeSource?.uri ?? '',
    recoveryImage: c.recoverySource?.uri ?? '',
    verify: c.verify,
    verifyDisabledBy: c.verifyDisabledBy ?? '',
    channelUpgrades: c.channelUpgrades,
    imageSizeMiB: c.imageSizeMiB ?? 0,
    strict: c.strict,
    reboot: c.reboot,
    poweroff: c.poweroff,
    cosign: c.cosign.enabled,
    cosignKeyless: c.cosign.experimental,
    cosignRepository: c.cosign.repository ?? '',
    cosignKeys: [...c.cosign.publicKeyLocations],
    labels: { ...c.labels },
  };
}

/** A caller's value as a log line echoes it: escaped and bounded (null when absent). */
function echo(value: string | undefined): string | null {
  return value === undefined ? null : displayText(value, TEXT_LIMITS.echo);
}

function toAgentError(e: unknown): AgentError {
  return e instanceof AgentError ? e : new AgentError('STAGE_FAILED', e instanceof Error ? e.message : String(e), { cause: e });
}

/** A logger that adds the running job's transaction id to every line (the JobManager shares one deps object). */
function transactionLogger(base: Logger, current: () => string): Logger {
  const withTx = (obj: object): object => {
    const tx = current();
    return tx !== '' && !('transaction' in obj) ? { transaction: tx, ...obj } : obj;
  };
  return {
    debug: (obj, msg) => base.debug(withTx(obj), msg),
    info: (obj, msg) => base.info(withTx(obj), msg),
    warn: (obj, msg) => base.warn(withTx(obj), msg),
    error: (obj, msg) => base.error(withTx(obj), msg),
    child: (bindings) => ('transaction' in bindings ? base.child(bindings) : transactionLogger(base.child(bindings), current)),
  };
}

interface Pending {
  kind: JobKind;
  startedAt: string;
  details: TransactionDetails;
  reboot: boolean;
  /** A check or upgrade of the configured system image (no image or recovery override). */
  configuredSource: boolean;
}

export class AgentDaemon implements AgentPort {
  private readonly deps: DaemonDeps;
  private readonly log: Logger;
  /** deps.agent with the last valid configuration: what the jobs and the status reads run with. */
  private readonly agentDeps: AgentDeps;
  private readonly jobDeps: AgentDeps;
  private readonly listeners = new Set<DaemonListener>();
  private current: DaemonState = {
    operation: 'idle',
    progress: IDLE_PROGRESS,
    lastError: '',
    bootedSlot: 'unknown',
    slots: { active: emptySlot('cOS/active.img'), passive: emptySlot('cOS/passive.img'), recovery: emptySlot('cOS/recovery.img') },
    updateAvailable: false,
    transaction: '',
    config: null,
    upgradeFailure: false,
    lastTransaction: null,
  };
  private manager: JobManager | null = null;
  private managerLoading: Promise<JobManager> | null = null;
  private readonly pending = new Map<string, Pending>();
  private statusDoc: HostStatusDocument | null = null;
  /** statusDoc as JSON, serialised once per refresh. */
  private statusText = '';
  private statusError: AgentError | null = null;
  private updateKnown = false;
  private refreshChain: Promise<void> = Promise.resolve();
  /** Whether a read of the status is queued or running, and when the last one began (performance.now()). */
  private refreshing = false;
  private refreshStartedAt = -1;
  /** A refresh was asked for while a job ran: done when the job finishes. */
  private refreshDeferred = false;
  private completions: Promise<void> = Promise.resolve();
  private started: Promise<void> | null = null;
  private startDone = false;
  /** The message of the configuration error shown in LastError, if one is. */
  private configError: string | null = null;
  /** The last valid configuration (setConfig): jobs use it, so an invalid edit does not fail them. */
  private configSnapshot: ConfigSnapshot | undefined;
  /** What the last progress notification carried: byte-only changes are not announced on their own. */
  private announced = { operation: '', message: '', percent: -1 };

  constructor(deps: DaemonDeps) {
    this.deps = deps;
    this.log = deps.agent.log;
    this.agentDeps = { ...deps.agent, config: () => this.configSnapshot };
    this.jobDeps = { ...this.agentDeps, log: transactionLogger(deps.agent.log, () => this.current.transaction) };
  }

  get state(): Readonly<DaemonState> {
    return this.current;
  }

  /** The status document as last read (null before the first read succeeded). */
  get statusDocument(): HostStatusDocument | null {
    return this.statusDoc;
  }

  /** Whether the last read of the status document succeeded (statusDocument is current). */
  get statusReadOk(): boolean {
    return this.statusError === null;
  }

  /**
   * Whether UpdateAvailable is known: a check of the configured image said so, in this run or (restored at start) in
   * the last job of this boot, or an upgrade to it cleared it. False: the property's `false` only means "not known".
   */
  get updateAvailableKnown(): boolean {
    return this.updateKnown;
  }

  subscribe(listener: DaemonListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Load the state from disk: the last transaction, the configuration, the status document. Call once. */
  start(): Promise<void> {
    this.started ??= (async () => {
      const last = await readLastTransaction(this.deps.agent.root).catch((e: unknown) => {
        this.log.warn({ err: String(e) }, 'could not read the last transaction');
        return null;
      });
      this.set({ lastTransaction: last, lastError: last !== null && last.result !== RESULT.ok ? (last.error ?? '') : '' });
      if (last !== null) this.log.info({ lastTransaction: last.transaction, kind: last.kind, result: last.result }, 'last transaction republished');
      await this.reloadConfig();
      // UpdateAvailable as the last check of the configured image left it (a check of another image says nothing).
      const configured = this.current.config?.upgradeImage.replace(/^oci:/, '');
      if (last?.kind === 'check' && last.result === RESULT.ok && last.details.image !== undefined && last.details.image === configured) {
        this.updateKnown = last.details.updateAvailable !== undefined;
        this.set({ updateAvailable: last.details.updateAvailable === true });
      }
      // One probe pass of the block devices for the whole start: the recovery, /oem/grubenv and the first status read.
      const { newDiscovery } = await import('../host/access.ts');
      const discovery = newDiscovery(this.agentDeps);
      await this.recoverInterruptedRun({ ...this.jobDeps, discovery });
      await this.refresh({ ...this.agentDeps, discovery });
      // "The last upgrade was rolled back by boot assessment": it succeeded in an earlier boot, and this boot is
      // the fallback (upgrade_failure on the cmdline or /run/cos/upgrade_failure).
      if (last !== null && last.kind === 'upgrade' && last.result === RESULT.ok && last.details.target !== 'recovery' &&
        last.details.unchanged === undefined && this.current.upgradeFailure && !(await recordedThisBoot(this.deps.agent.root, last.transaction))) {
        this.set({ lastTransaction: { ...last, details: { ...last.details, rolledBack: true } } });
        this.log.warn({ lastTransaction: last.transaction, digest: last.details.digest ?? null }, 'the last upgrade was rolled back by boot assessment');
      }
      this.startDone = true;
    })();
    return this.started;
  }

  /**
   * What a crashed run (of cosd, of an in-process cosctl, or a job process that died) left is undone: stale mounts
   * and loop devices, a committed switch finished; and /oem/grubenv is created when missing. At start, before the
   * first status read, and after a lost job (`when` says which, in the lock's owner and the log lines). Under the host
   * lock; skipped when someone holds it (their run does the same). Never fails the daemon: what it cannot do is
   * logged.
   */
  private async recoverInterruptedRun(deps: AgentDeps, when = 'at start'): Promise<void> {
    const snapshot = deps.config?.();
    if (snapshot === undefined) return;
    const [{ acquireLock }, { recoverInterrupted }] = await Promise.all([import('../host/lock.ts'), import('../actions/recover.ts')]);
    const held = await acquireLock(deps.root.path('/run/cos-agent/upgrade.lock'), `cosd: recovery ${when}`).catch((e: unknown) => {
      this.log.info({ err: e instanceof Error ? e.message : String(e) }, `recovery ${when} skipped: the host lock is held`);
      return null;
    });
    if (held === null) return;
    try {
      await recoverInterrupted(deps, snapshot.config);
    } catch (e) {
      this.log.error({ err: e instanceof Error ? e.message : String(e) }, `recovery ${when} failed`);
    }
    try {
      const { ensureOemGrubenv } = await import('../host/bootchooser.ts');
      const created = await ensureOemGrubenv(deps, snapshot.config);
      if (created !== null) this.log.info({ file: created }, 'created the empty GRUB environment block /oem/grubenv');
    } catch (e) {
      this.log.error({ err: e instanceof Error ? e.message : String(e) }, 'creating /oem/grubenv failed');
    } finally {
      await held.release();
    }
  }

  /** Re-read the configuration (through deps.reloadConfig when given, which calls setConfig / setConfigError). */
  async reloadConfig(): Promise<void> {
    if (this.deps.reloadConfig) {
      await this.deps.reloadConfig();
      return;
    }
    const { loadConfig } = await import('../config/load.ts');
    try {
      const loaded = await loadConfig(this.deps.agent.root, { env: this.deps.agent.env });
      for (const w of loaded.warnings) this.log.warn({ warning: w }, 'configuration');
      this.setConfig(loaded);
    } catch (e) {
      this.setConfigError(toAgentError(e));
    }
  }

  /**
   * A newly loaded configuration: the Config property changes, the jobs use it from now on (until the next valid
   * one), and the status document is re-read (its spec).
   */
  setConfig(snapshot: ConfigSnapshot): void {
    const { config } = snapshot;
    this.configSnapshot = snapshot;
    const before = JSON.stringify(this.current.config);
    // A good configuration clears the error a rejected one left in LastError (a job's error stays).
    const clear = this.configError !== null && this.current.lastError === this.configError;
    this.configError = null;
    this.set({ config: summarizeConfig(config, this.deps.agent.root.prefix), ...(clear ? { lastError: '' } : {}) });
    if (this.startDone && JSON.stringify(this.current.config) !== before) void this.refresh();
  }

  /** A configuration that cannot be used: the previous one stays in effect, the error goes to LastError. */
  setConfigError(err: Error): void {
    // A config file's bytes are echoed in the message: escaped and bounded, like every message cosd shows or keeps.
    const message = displayText(err.message, TEXT_LIMITS.message);
    this.log.error({ err: message }, 'configuration rejected');
    this.configError = message;
    this.set({ lastError: message });
  }

  /**
   * Re-read the status document (slots, booted slot, boot assessment). Serialised; errors keep the old copy. While a
   * job runs it is deferred to the job's end (the job has the partitions mounted and changes them). `deps`: the
   * agent's (cosd's start passes them scoped to the start's probe pass of the block devices).
   */
  refresh(deps: AgentDeps = this.agentDeps): Promise<void> {
    if (this.manager?.running) {
      this.refreshDeferred = true;
      return this.refreshChain;
    }
    this.refreshing = true;
    this.refreshChain = this.refreshChain.then(async () => {
      this.refreshStartedAt = performance.now();
      const { hostStatus } = await import('../actions/status.ts');
      try {
        const doc = await hostStatus(deps);
        this.statusDoc = doc;
        this.statusText = `${JSON.stringify(doc, null, 2)}\n`;
        this.statusError = null;
        this.set({ bootedSlot: doc.status.bootedFrom, upgradeFailure: doc.status.upgradeFailure, slots: slotSummaries(doc) });
        for (const l of this.listeners) l.statusRefreshed?.(doc);
      } catch (e) {
        this.statusError = toAgentError(e);
        this.log.warn({ code: this.statusError.code, err: this.statusError.message }, 'could not read the host status');
        for (const l of this.listeners) l.statusFailed?.(this.statusError);
      } finally {
        this.refreshing = false;
      }
    });
    return this.refreshChain;
  }

  /**
   * A status source changed at `changedAt` (performance.now(); StatusWatcher): re-read, unless a read that began
   * after the change covers it already (a job's own writes are followed by the job's own re-read).
   */
  refreshAfterChange(changedAt: number): Promise<void> {
    if (this.refreshStartedAt >= changedAt) return this.refreshChain;
    return this.refresh();
  }

  /**
   * The status document as JSON (the same text as `cosctl status --json`), from the copy refreshed at start and after
   * each job (before its Completed). Never waits for a refresh in flight when a copy exists: GetStatus stays fast.
   */
  async statusJson(): Promise<string> {
    await this.start();
    // Never read successfully (e.g. a broken config at start): try again now. Changes made outside cosd reach the
    // copy through the StatusWatcher (status-watch.ts), never by reading on a call: GetStatus stays fast.
    if (this.statusDoc === null) await (this.refreshing ? this.refreshChain : this.refresh());
    if (this.statusDoc !== null) return this.statusText;
    throw this.statusError ?? new AgentError('STATE_INVALID', 'the host status could not be read');
  }

  async upgrade(req: UpgradeRequest): Promise<string> {
    const jm = await this.jobs();
    const startedAt = this.deps.agent.now().toISOString();
    const tx = jm.upgrade({
      ...(req.image !== undefined ? { image: req.image } : {}),
      ...(req.recovery ? { recovery: true } : {}),
      ...(req.noVerify ? { noVerify: true } : {}),
      ...(req.force ? { force: true } : {}),
    });
    const details: TransactionDetails = { target: req.recovery ? 'recovery' : 'system', reboot: req.reboot === true, force: req.force === true };
    this.pending.set(tx, { kind: 'upgrade', startedAt, details, reboot: req.reboot === true, configuredSource: req.image === undefined && !req.recovery });
    this.log.child({ transaction: tx }).info({ kind: 'upgrade', image: echo(req.image), recovery: req.recovery === true, noVerify: req.noVerify === true, reboot: req.reboot === true, force: req.force === true }, 'job started');
    return tx;
  }

  async check(req: CheckRequest): Promise<string> {
    const jm = await this.jobs();
    const startedAt = this.deps.agent.now().toISOString();
    const tx = jm.check({ ...(req.image !== undefined ? { image: req.image } : {}), ...(req.recovery ? { recovery: true } : {}) });
    this.pending.set(tx, { kind: 'check', startedAt, details: {}, reboot: false, configuredSource: req.image === undefined && !req.recovery });
    this.log.child({ transaction: tx }).info({ kind: 'check', image: echo(req.image), recovery: req.recovery === true }, 'job started');
    return tx;
  }

  async rollback(req: RollbackRequest): Promise<string> {
    const jm = await this.jobs();
    const startedAt = this.deps.agent.now().toISOString();
    const tx = jm.rollback({ permanent: req.permanent === true });
    this.pending.set(tx, { kind: 'rollback', startedAt, details: { permanent: req.permanent === true }, reboot: false, configuredSource: false });
    this.log.child({ transaction: tx }).info({ kind: 'rollback', permanent: req.permanent === true }, 'job started');
    return tx;
  }

  async mark(good: boolean): Promise<string> {
    const jm = await this.jobs();
    const startedAt = this.deps.agent.now().toISOString();
    const tx = jm.mark(good);
    const kind: JobKind = good ? 'mark-good' : 'mark-bad';
    this.pending.set(tx, { kind, startedAt, details: {}, reboot: false, configuredSource: false });
    this.log.child({ transaction: tx }).info({ kind }, 'job started');
    return tx;
  }

  /** Cancel the running upgrade before its slot switch; false when there is nothing (left) to cancel. Idempotent. */
  cancel(): boolean {
    const running = this.manager?.running ?? null;
    const cancelled = this.manager?.cancel() ?? false;
    this.log.info({ ...(running ? { transaction: running.transaction, kind: running.kind } : {}), cancelled }, 'cancel requested');
    return cancelled;
  }

  /** A yip stage as a job (the same engine as `cosctl run-stage`): its steps, errors and sources go to the record. */
  async runStage(req: RunStageRequest): Promise<string> {
    checkStageName(req.stage);
    const jm = await this.jobs();
    const startedAt = this.deps.agent.now().toISOString();
    const tx = jm.runStage(req.stage, req.strict === true);
    this.pending.set(tx, { kind: 'run-stage', startedAt, details: { stage: req.stage, strict: req.strict === true }, reboot: false, configuredSource: false });
    this.log.child({ transaction: tx }).info({ kind: 'run-stage', stage: req.stage, strict: req.strict === true }, 'job started');
    return tx;
  }

  /** Stop: cancel a job that can still be cancelled, wait for any job (and its announcement) to finish. */
  async stop(): Promise<void> {
    if (this.manager?.running) {
      this.cancel();
      await this.manager.idle();
    }
    await this.completions;
    await this.refreshChain;
  }

  private jobs(): Promise<JobManager> {
    const actions = this.deps.jobActions ?? (async () => (await import('./job-actions.ts')).REAL_ACTIONS);
    this.managerLoading ??= Promise.all([import('./job.ts'), actions()]).then(([m, jobActions]) => {
      this.manager = new m.JobManager(this.jobDeps, {
        operation: (op, tx) => this.onOperation(op, tx),
        progress: (p) => this.onProgress(p),
        completed: (tx, kind, result, error, outcome) => {
          // One failed announcement must not stop the later ones.
          this.completions = this.completions
            .then(() => this.finish(tx, kind, result, error, outcome))
            .catch((e: unknown) => this.log.error({ transaction: tx, err: e instanceof Error ? (e.stack ?? e.message) : String(e) }, 'could not announce the end of a job'));
        },
      }, jobActions);
      this.log.info({}, 'job machinery loaded');
      return this.manager;
    });
    return this.managerLoading;
  }

  private onOperation(op: Operation, tx: string | null): void {
    this.announced = { operation: op, message: '', percent: -1 };
    this.set({ operation: op, transaction: tx ?? '', ...(op === 'idle' ? { progress: IDLE_PROGRESS } : {}) });
  }

  private onProgress(p: Progress): void {
    const progress: ProgressState = { percent: p.percent, message: displayText(p.message, TEXT_LIMITS.echo), depth: 1, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal };
    const a = this.announced;
    if (p.operation === a.operation && p.message === a.message && p.percent === a.percent) {
      this.current = { ...this.current, progress };
      return;
    }
    this.announced = { operation: p.operation, message: p.message, percent: p.percent };
    this.set({ progress });
  }

  private async finish(tx: string, kind: JobKind, result: number, error: AgentError | null, outcome: JobOutcome): Promise<void> {
    const log = this.log.child({ transaction: tx });
    const pending = this.pending.get(tx);
    this.pending.delete(tx);
    const details: TransactionDetails = { ...pending?.details, ...(await this.detailsOf(tx, kind, outcome)) };
    // Bounded (every string escaped and capped): the record is persisted, published and republished after restarts.
    const rec: TransactionRecord = boundRecord({
      transaction: tx,
      kind,
      result,
      code: error?.code ?? null,
      error: error?.message ?? null,
      startedAt: pending?.startedAt ?? this.deps.agent.now().toISOString(),
      finishedAt: this.deps.agent.now().toISOString(),
      details,
    });
    await recordTransaction(this.deps.agent.root, rec).catch((e: unknown) => {
      const err = toAgentError(e);
      log.error({ code: err.code, err: err.message }, 'could not persist the transaction outcome');
      // Surfaced, not only logged: LastTransaction (D-Bus) carries it for as long as this daemon runs.
      rec.details = { ...rec.details, warnings: [...(rec.details.warnings ?? []), displayText(`the outcome could not be persisted: ${err.message}`, TEXT_LIMITS.message)] };
    });
    if (result === RESULT.ok) log.info({ kind, ...rec.details }, 'job succeeded');
    else log.error({ kind, code: rec.code, err: rec.error, cancelled: result === RESULT.cancelled }, result === RESULT.cancelled ? 'job cancelled' : 'job failed');
    // UpdateAvailable is about the configured image: its checks set it, an upgrade to it clears it.
    const configured = pending?.configuredSource === true && result === RESULT.ok;
    if (configured && ((kind === 'check' && details.updateAvailable !== undefined) || kind === 'upgrade')) this.updateKnown = true;
    this.set({
      lastTransaction: rec,
      // A job's success does not hide a configuration error that is still in effect.
      lastError: rec.error ?? this.configError ?? '',
      ...(configured && kind === 'check' && details.updateAvailable !== undefined ? { updateAvailable: details.updateAvailable } : {}),
      ...(configured && kind === 'upgrade' ? { updateAvailable: false } : {}),
    });
    // A job that died without a report (its process killed, out of memory) left what a crash leaves: undone (or
    // finished, past its switch) now, as cosd's start would, not at the next job; then the status is re-read.
    if (error instanceof JobLostError) {
      log.warn({ kind }, 'the job process ended without an outcome: recovering what it left, as after a crash');
      await this.recoverInterruptedRun(this.jobDeps, 'after a lost job');
    }
    if (kind !== 'check' || this.refreshDeferred) {
      this.refreshDeferred = false;
      await this.refresh();
    }
    for (const l of this.listeners) l.finished?.(rec, pending?.configuredSource === true);
    for (const l of this.listeners) l.completed?.(tx, result, rec.error ?? '');
    // As bootc's `upgrade --apply`: an upgrade that had nothing to stage does not reboot.
    if (kind === 'upgrade' && result === RESULT.ok && pending?.reboot && details.unchanged === undefined) await this.rebootAfter(tx);
  }

  private async detailsOf(tx: string, kind: JobKind, outcome: JobOutcome): Promise<TransactionDetails> {
    if (kind === 'upgrade') {
      if (outcome !== null) {
        const o = outcome as UpgradeOutcome;
        return {
          image: o.image, target: o.target, verification: o.verification, rotated: o.rotated,
          ...(o.digest !== null ? { digest: o.digest } : {}),
          ...(o.version !== null ? { version: o.version } : {}),
          ...(o.keepPassiveReason !== null ? { keepPassiveReason: o.keepPassiveReason } : {}),
          ...(o.unchanged !== null ? { unchanged: o.unchanged } : {}),
          ...(o.warnings.length > 0 ? { warnings: o.warnings } : {}),
          ...(o.nextBoot !== null ? { nextBoot: o.nextBoot.slot ?? '' } : {}),
        };
      }
      // A failed upgrade leaves what it got to (image, digest) in its own result record. Best effort: these details
      // only add to the record of a job that failed anyway (readLastResult skips unreadable records itself).
      const last = await readLastResult(this.deps.agent.root).catch(() => null);
      if (last?.result.transaction === tx) {
        const r = last.result;
        return { ...(r.image !== null ? { image: r.image } : {}), ...(r.imageDigest !== null ? { digest: r.imageDigest } : {}) };
      }
      return {};
    }
    if (kind === 'check' && outcome !== null) {
      const o = outcome as CheckOutcome;
      return { image: o.image, digest: o.digest, updateAvailable: o.updateAvailable, ...(o.currentDigest !== null ? { currentDigest: o.currentDigest } : {}) };
    }
    if (kind === 'rollback' && outcome !== null) {
      const o = outcome as RollbackOutcome;
      return { permanent: o.permanent, ...(o.nextEntry !== null ? { nextEntry: o.nextEntry } : {}), ...(o.warnings.length > 0 ? { warnings: o.warnings } : {}) };
    }
    if (kind === 'run-stage' && outcome !== null) {
      const o = outcome as RunStageOutcome;
      // A file that does not load is reported by each of STAGE.before, STAGE, STAGE.after: named once, as it is counted.
      const errors = [...new Set(o.runs.flatMap((r) => [
        ...r.problems.map((p) => `skipped ${p}`),
        ...r.ops.flatMap((op) => op.errors.map((e) => `${r.stage} ${op.op}: ${e.split('\n')[0] ?? ''}`)),
      ]))];
      return {
        sources: o.sources, steps: o.runs.reduce((n, r) => n + r.ops.filter((op) => op.skipped === null).length, 0), stepErrors: o.errors,
        ...(errors.length > 0 ? { warnings: errors } : {}),
      };
    }
    if ((kind === 'mark-good' || kind === 'mark-bad') && outcome !== null) {
      const o = outcome as MarkOutcome;
      return { assessmentChanged: o.assessmentChanged, ...(o.warnings.length > 0 ? { warnings: o.warnings } : {}) };
    }
    return {};
  }

  /** An upgrade has been staged this boot and waits for the reboot into it (from the last status refresh). */
  get stagedUpgrade(): boolean {
    return this.statusDoc !== null && this.statusDoc.status.staged !== null;
  }

  /**
   * Reboot into the staged slot now (automatic updates under policy `apply`, inside the maintenance window): the same
   * path as an upgrade's reboot. BUSY while a job runs; a failed reboot rejects (and shows in LastError).
   */
  async rebootStaged(): Promise<'rebooting' | 'skipped'> {
    const running = this.manager?.running ?? null;
    if (running !== null) throw new AgentError('BUSY', `busy: ${running.kind} transaction ${running.transaction} is running`);
    if (this.current.operation === 'rebooting') return 'rebooting';
    return this.reboot(this.log, 'rebooting into the staged upgrade', 'the reboot into the staged upgrade failed');
  }

  /** The reboot an upgrade asked for. A failure is logged with its code and shown in LastError; cosd carries on. */
  private async rebootAfter(tx: string): Promise<void> {
    const log = this.log.child({ transaction: tx });
    const failure = 'the upgrade succeeded but the reboot failed';
    try {
      await this.reboot(log, 'rebooting after the upgrade', failure);
    } catch (e) {
      const err = toAgentError(e);
      log.error({ code: err.code, err: err.message }, failure);
    }
  }

  /**
   * Reboot through deps.reboot. A failure puts `failure: <message>` in LastError and rejects with an AgentError; the
   * caller logs it (rebootAfter here, the automation for rebootStaged).
   */
  private async reboot(log: Logger, message: string, failure: string): Promise<'rebooting' | 'skipped'> {
    try {
      this.set({ operation: 'rebooting' });
      const done = await this.deps.reboot();
      if (done === 'skipped') {
        log.warn({}, 'reboot requested but not performed: this daemon manages a host under --root, not this machine');
        this.set({ operation: 'idle' });
      } else {
        log.info({}, message);
      }
      return done;
    } catch (e) {
      const err = toAgentError(e);
      this.set({ operation: 'idle', lastError: displayText(`${failure}: ${err.message}`, TEXT_LIMITS.message) });
      throw err;
    }
  }

  /** Apply changes and tell listeners about the fields whose value really changed. */
  private set(changes: Partial<DaemonState>): void {
    const changed: Partial<DaemonState> = {};
    let any = false;
    for (const key of Object.keys(changes) as Array<keyof DaemonState>) {
      const value = changes[key];
      if (JSON.stringify(value) === JSON.stringify(this.current[key])) continue;
      (changed as Record<string, unknown>)[key] = value;
      any = true;
    }
    if (!any) return;
    this.current = { ...this.current, ...changed };
    for (const l of this.listeners) l.changed?.(changed);
  }
}
