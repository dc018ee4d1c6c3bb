/**
 * The outcome of the daemon's last job (any kind), kept where it survives a daemon restart (/run/cos-agent, this
 * boot) and a reboot (/usr/local/.cos-agent when COS_PERSISTENT is mounted there), written atomically. An upgrade run
 * without the daemon only leaves result.ts's record: readLastTransaction takes the newer of the two, so the daemon
 * republishes whichever happened last. Every record is bounded (boundRecord) before it is kept or published: an error
 * message or a value that echoes a caller's or a config file's text is escaped and capped, so a 10 MB image string
 * costs a few KB here, not 10 MB per copy and per reader.
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../model/errors.ts';
import { displayText, TEXT_LIMITS } from '../model/text.ts';
import type { UpgradeResult } from '../model/host.ts';
import type { SysRoot } from '../sys/root.ts';
import { writeFileAtomic } from '../sys/files.ts';
import { readLastResult } from '../host/records.ts';
import type { JobKind } from './job.ts';

const FILES = ['/run/cos-agent/last-transaction.json', '/usr/local/.cos-agent/last-transaction.json'] as const;
/** The last check, kept apart (the metrics report it after later jobs of other kinds, and across an idle exit). */
const LAST_CHECK = '/run/cos-agent/last-check.json';

/** Completion result codes (the Completed signal's `result`). */
export const RESULT = { ok: 0, failed: 1, cancelled: 2 } as const;

/** What a finished job produced, by kind (absent fields: not applicable or not known). */
export interface TransactionDetails {
  /** upgrade, check: the image reference. */
  image?: string;
  /** upgrade, check: the manifest digest it resolved to. */
  digest?: string;
  /** upgrade: system or recovery. */
  target?: 'system' | 'recovery';
  /** upgrade: VERSION of the staged image. */
  version?: string;
  /** upgrade: verified or skipped. */
  verification?: string;
  /** upgrade: the old active moved to passive. */
  rotated?: boolean;
  /** upgrade: why passive was kept, when it was. */
  keepPassiveReason?: string;
  /** upgrade: the caller asked for a reboot after success. */
  reboot?: boolean;
  /** upgrade: the caller asked to stage even an unchanged digest. */
  force?: boolean;
  /** upgrade: nothing was staged, the slot already held the digest (why, in words). */
  unchanged?: string;
  /**
   * upgrade: the upgrade succeeded in an earlier boot, and boot assessment then rolled it back (this boot is the
   * fallback, with upgrade_failure). Derived at each start, not stored.
   */
  rolledBack?: boolean;
  /** check: the digest the slot holds (absent when unknown). */
  currentDigest?: string;
  /** check: whether the image differs from the slot. */
  updateAvailable?: boolean;
  /** rollback: swapped for good rather than once. */
  permanent?: boolean;
  /** rollback: the GRUB entry of the next boot. */
  nextEntry?: string;
  /** upgrade, rollback, mark: what went wrong after the change took effect (it did take effect). */
  warnings?: string[];
  /** upgrade (system): the slot GRUB boots next, read back after the upgrade ('' when none can boot). */
  nextBoot?: string;
  /** mark-good / mark-bad: whether boot assessment was changed (mark-good leaves a staged upgrade's armed). */
  assessmentChanged?: boolean;
  /** run-stage: the yip stage, and whether errors fail it. */
  stage?: string;
  strict?: boolean;
  /** run-stage: the sources read (paths, URLs), the steps that ran, and the errors counted (load problems and step errors). */
  sources?: string[];
  steps?: number;
  stepErrors?: number;
}

export interface TransactionRecord {
  transaction: string;
  kind: JobKind;
  /** RESULT.ok / failed / cancelled. */
  result: number;
  /** Agent error code on failure, else null. */
  code: string | null;
  error: string | null;
  startedAt: string;
  finishedAt: string;
  details: TransactionDetails;
}

const KINDS: ReadonlySet<string> = new Set(['upgrade', 'check', 'rollback', 'mark-good', 'mark-bad', 'run-stage']);

/** Ids, codes and timestamps: short by nature; capped all the same (a record read back may come from anywhere). */
const SHORT = 128;

/**
 * `rec` with every string bounded and escaped (displayText): the error at TEXT_LIMITS.message, each string detail at
 * TEXT_LIMITS.value, at most TEXT_LIMITS.warnings warnings (the last one then says how many were left out), ids and
 * timestamps at 128. Strings already within bounds and free of control characters come back unchanged.
 */
export function boundRecord(rec: TransactionRecord): TransactionRecord {
  const details: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(rec.details)) {
    if (typeof value === 'string') details[key] = displayText(value, TEXT_LIMITS.value);
    else if (Array.isArray(value)) {
      const list = value.map((w) => displayText(String(w), TEXT_LIMITS.message));
      details[key] = list.length <= TEXT_LIMITS.warnings
        ? list
        : [...list.slice(0, TEXT_LIMITS.warnings - 1), `... ${list.length - TEXT_LIMITS.warnings + 1} more left out`];
    } else details[key] = value;
  }
  return {
    transaction: displayText(rec.transaction, SHORT),
    kind: rec.kind,
    result: rec.result,
    // A record read back from disk is checked for its shape only: a code or error of another type is made text.
    code: rec.code === null || rec.code === undefined ? null : displayText(String(rec.code), SHORT),
    error: rec.error === null || rec.error === undefined ? null : displayText(String(rec.error), TEXT_LIMITS.message),
    startedAt: displayText(rec.startedAt, SHORT),
    finishedAt: displayText(rec.finishedAt, SHORT),
    details: details as TransactionDetails,
  };
}

function isRecord(v: unknown): v is TransactionRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.transaction === 'string' && typeof r.kind === 'string' && KINDS.has(r.kind) && typeof r.result === 'number' &&
    typeof r.startedAt === 'string' && typeof r.finishedAt === 'string' && typeof r.details === 'object' && r.details !== null;
}

/**
 * Whether `transaction` finished during this boot: its record (the daemon's, or cosctl's upgrade result) is in /run,
 * which every boot starts empty. A record found only on COS_PERSISTENT is from an earlier boot.
 */
export async function recordedThisBoot(root: SysRoot, transaction: string): Promise<boolean> {
  for (const f of [FILES[0], '/run/cos-agent/last-upgrade.json']) {
    const parsed = await readFile(root.path(f), 'utf8').then((t) => JSON.parse(t) as { transaction?: unknown }).catch(() => null);
    if (parsed?.transaction === transaction) return true;
  }
  return false;
}

/**
 * Persist `rec` atomically in /run (always) and on COS_PERSISTENT (when /usr/local is there). A failed copy on
 * COS_PERSISTENT rejects (the record is in /run already, but will not survive a reboot): the caller logs it.
 */
export async function recordTransaction(root: SysRoot, rec: TransactionRecord): Promise<void> {
  const text = `${JSON.stringify(boundRecord(rec), null, 2)}\n`;
  const [volatile, persistent] = FILES.map((f) => root.path(f)) as [string, string];
  await mkdir(path.dirname(volatile), { recursive: true });
  await writeFileAtomic(volatile, text);
  if (rec.kind === 'check') await writeFileAtomic(root.path(LAST_CHECK), text);
  if (await stat(root.path('/usr/local')).then((s) => s.isDirectory(), () => false)) {
    await mkdir(path.dirname(persistent), { recursive: true }).then(() => writeFileAtomic(persistent, text)).catch((e: unknown) => {
      throw new AgentError('STATE_INVALID', `the outcome of ${rec.transaction} is kept in ${volatile} only (lost at the next reboot): writing ${persistent} failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    });
  }
}

/** The last check recorded in this boot (recordTransaction), or null when none is (or it is unreadable). */
export async function readLastCheck(root: SysRoot): Promise<TransactionRecord | null> {
  const parsed = await readFile(root.path(LAST_CHECK), 'utf8').then((t) => JSON.parse(t) as unknown).catch(() => null);
  return isRecord(parsed) && parsed.kind === 'check' ? boundRecord(parsed) : null;
}

/** The upgrade result record of result.ts, as a transaction record. */
export function fromUpgradeResult(r: UpgradeResult): TransactionRecord {
  return {
    transaction: r.transaction,
    kind: 'upgrade',
    result: r.result === 'success' ? RESULT.ok : r.cancelled === true ? RESULT.cancelled : RESULT.failed,
    code: r.code,
    error: r.error,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    details: {
      target: r.target,
      rotated: r.rotated,
      ...(r.image !== null ? { image: r.image } : {}),
      ...(r.imageDigest !== null ? { digest: r.imageDigest } : {}),
    },
  };
}

/**
 * The newest finished job: the daemon's own record or the last upgrade result (an upgrade run in-process by cosctl),
 * whichever finished last. Unreadable or malformed files are skipped. Null when nothing is recorded.
 */
export async function readLastTransaction(root: SysRoot): Promise<TransactionRecord | null> {
  let best: TransactionRecord | null = null;
  const consider = (r: TransactionRecord | null): void => {
    if (r !== null && (best === null || r.finishedAt > best.finishedAt)) best = r;
  };
  for (const f of FILES) {
    const parsed = await readFile(root.path(f), 'utf8').then((t) => JSON.parse(t) as unknown).catch(() => null);
    consider(isRecord(parsed) ? parsed : null);
  }
  const upgrade = await readLastResult(root).catch(() => null);
  if (upgrade !== null) {
    const rec = fromUpgradeResult(upgrade.result);
    // The daemon's own record of the same upgrade carries more (version, verification): keep it.
    const own = best as TransactionRecord | null;
    if (own === null || own.transaction !== rec.transaction) consider(rec);
  }
  // Bounded on the way in as well: a record written by an older version, or cosctl's upgrade result, may be huge.
  return best === null ? null : boundRecord(best);
}
