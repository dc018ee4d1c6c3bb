/**
 * The install state file `state.yaml` (types and format: src/model/state.ts; spec cos-layout.md 2.10).
 *
 * Reading never fails on bad content (rauc status_file.c; harvester#4526 was an incomplete state.yaml breaking
 * upgrades): a missing file is an empty state, a corrupt or invalid one is renamed to `<path>.broken` (replacing an
 * older broken copy, so the newest is kept) and an empty state is returned with `recovered` saying why.
 * Writing is atomic: temp file in the same directory, fsync, rename over the target, fsync the directory.
 *
 * The first half of the file is PURE (parse, serialise, rotate); the I/O is in readStateFile / writeStateFile.
 */
import { readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { Document, parseDocument, visit } from 'yaml';
import { DEFAULT_LABELS, type ImageSource, type Labels } from '../model/config.ts';
import { fsyncDir, writeFileAtomic } from '../sys/files.ts';
import { AgentError } from '../model/errors.ts';
import type {
  ImageEntry,
  InstallState,
  PartitionState,
  SourceMetadata,
  UpgradeResult,
  VerificationResult,
} from '../model/state.ts';

// ---------------------------------------------------------------------------------------------------------------
// PURE

const PARTITION_ORDER: readonly string[] = ['state', 'recovery', 'oem', 'persistent'];
const IMAGE_ORDER: readonly string[] = ['active', 'passive', 'recovery'];
const VERIFICATION: readonly VerificationResult[] = ['verified', 'skipped', 'not-applicable'];
const UPGRADE_RESULTS: readonly UpgradeResult[] = ['staged', 'good', 'failed'];

/** A state with nothing recorded. */
export function emptyState(): InstallState {
  return { partitions: {} };
}

/** Go `time.RFC3339` (what elemental writes): `2022-07-13T10:41:19Z`, UTC, whole seconds. */
export function formatStateDate(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * elemental's state.yaml form of a source: `<type>://<ref>` (`docker://reg/img:tag`, `dir:///abs/path`,
 * `channel://system/cos`, `file:///abs/file`), as its `ImageSource.String()`. src/config/resolve.ts
 * `parseImageUri` reads this form back.
 */
export function imageSourceToStateUri(src: ImageSource): string {
  const type = src.kind === 'oci' ? 'docker' : src.kind;
  return `${type}://${src.ref}`;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);

const invalid = (message: string): AgentError => new AgentError('STATE_INVALID', message);

function optString(obj: Record<string, unknown>, key: string, where: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(`${where}.${key} must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function parseImage(obj: Record<string, unknown>, where: string): ImageEntry {
  const e: ImageEntry = {};
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    switch (k) {
      case 'source':
      case 'digest':
      case 'label':
      case 'fs':
      case 'date':
      case 'uuid':
      case 'version': {
        const s = optString(obj, k, where);
        if (s !== undefined) e[k] = s;
        break;
      }
      case 'verification-detail': {
        const s = optString(obj, k, where);
        if (s !== undefined) e.verificationDetail = s;
        break;
      }
      case 'source-metadata': {
        if (v === null || v === undefined) break;
        if (!isPlainObject(v)) throw invalid(`${where}.source-metadata must be a mapping`);
        if (v['digest'] !== undefined && typeof v['digest'] !== 'string') throw invalid(`${where}.source-metadata.digest must be a string`);
        if (v['size'] !== undefined && typeof v['size'] !== 'number') throw invalid(`${where}.source-metadata.size must be a number`);
        e.sourceMetadata = v as SourceMetadata;
        break;
      }
      case 'verification': {
        if (v === null || v === undefined) break;
        if (!VERIFICATION.includes(v as VerificationResult)) {
          throw invalid(`${where}.verification must be one of ${VERIFICATION.join(', ')}, got ${JSON.stringify(v)}`);
        }
        e.verification = v as VerificationResult;
        break;
      }
      case 'upgrade-result': {
        if (v === null || v === undefined) break;
        if (!UPGRADE_RESULTS.includes(v as UpgradeResult)) {
          throw invalid(`${where}.upgrade-result must be one of ${UPGRADE_RESULTS.join(', ')}, got ${JSON.stringify(v)}`);
        }
        e.upgradeResult = v as UpgradeResult;
        break;
      }
      default:
        extra[k] = v;
    }
  }
  if (Object.keys(extra).length > 0) e.extra = extra;
  return e;
}

function parsePartition(obj: Record<string, unknown>, where: string): PartitionState {
  const p: PartitionState = { images: {} };
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'label') {
      const s = optString(obj, k, where);
      if (s !== undefined) p.label = s;
    } else if (isPlainObject(v)) p.images[k] = parseImage(v, `${where}.${k}`);
    else if (v !== null && v !== undefined) extra[k] = v;
  }
  if (Object.keys(extra).length > 0) p.extra = extra;
  return p;
}

/** Parse state.yaml text. Empty text (or a YAML null document) is an empty state. Throws STATE_INVALID. */
export function parseState(text: string): InstallState {
  if (text.includes('\u0000')) throw invalid('contains NUL bytes');
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  const err = doc.errors[0];
  if (err !== undefined) {
    const line = err.linePos?.[0]?.line;
    throw invalid(`invalid YAML${line !== undefined ? ` at line ${line}` : ''}: ${(err.message.split('\n')[0] ?? err.code).replace(/ at line \d+, column \d+:?$/, '')}`);
  }
  let js: unknown;
  try {
    js = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw invalid(`invalid YAML: ${(e as Error).message}`);
  }
  if (js === null || js === undefined) return emptyState();
  if (!isPlainObject(js)) throw invalid('the top level is not a mapping');
  const state = emptyState();
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(js)) {
    if (k === 'date') {
      const s = optString(js, k, '');
      if (s !== undefined) state.date = s;
    } else if (isPlainObject(v)) state.partitions[k] = parsePartition(v, k);
    else if (v !== null && v !== undefined) extra[k] = v;
  }
  if (Object.keys(extra).length > 0) state.extra = extra;
  return state;
}

function ordered(keys: string[], first: readonly string[]): string[] {
  return [...first.filter((k) => keys.includes(k)), ...keys.filter((k) => !first.includes(k))];
}

function withExtra(out: Record<string, unknown>, extra: Record<string, unknown> | undefined): Record<string, unknown> {
  for (const [k, v] of Object.entries(extra ?? {})) if (!(k in out)) out[k] = v;
  return out;
}

function imageToYaml(e: ImageEntry): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (e.source !== undefined) o['source'] = e.source;
  if (e.sourceMetadata !== undefined) o['source-metadata'] = e.sourceMetadata;
  if (e.label !== undefined) o['label'] = e.label;
  if (e.fs !== undefined) o['fs'] = e.fs;
  if (e.digest !== undefined) o['digest'] = e.digest;
  if (e.uuid !== undefined) o['uuid'] = e.uuid;
  if (e.date !== undefined) o['date'] = e.date;
  if (e.version !== undefined) o['version'] = e.version;
  if (e.verification !== undefined) o['verification'] = e.verification;
  if (e.verificationDetail !== undefined) o['verification-detail'] = e.verificationDetail;
  if (e.upgradeResult !== undefined) o['upgrade-result'] = e.upgradeResult;
  return withExtra(o, e.extra);
}

/** Serialise in elemental's key order (date, then state/recovery/oem/persistent; label before images). */
export function serializeState(state: InstallState): string {
  const out: Record<string, unknown> = {};
  if (state.date !== undefined) out['date'] = state.date;
  for (const name of ordered(Object.keys(state.partitions), PARTITION_ORDER)) {
    const p = state.partitions[name];
    if (p === undefined) continue;
    if (name === 'date') throw invalid('a partition cannot be named "date"');
    const po: Record<string, unknown> = {};
    if (p.label !== undefined) po['label'] = p.label;
    for (const img of ordered(Object.keys(p.images), IMAGE_ORDER)) {
      const e = p.images[img];
      if (e === undefined) continue;
      if (img === 'label') throw invalid(`partition ${name}: an image cannot be named "label"`);
      po[img] = imageToYaml(e);
    }
    out[name] = withExtra(po, p.extra);
  }
  withExtra(out, state.extra);
  const doc = new Document(out);
  // Go yaml.v3 (elemental) double-quotes strings that would otherwise read as a YAML 1.1 timestamp; do the same.
  visit(doc, {
    Scalar(_, node) {
      if (typeof node.value === 'string' && /^\d{4}-\d{1,2}-\d{1,2}([Tt ]|$)/.test(node.value)) node.type = 'QUOTE_DOUBLE';
    },
  });
  return doc.toString({ lineWidth: 0 });
}

export interface RotateOptions {
  /** `active`: a system upgrade (COS_STATE); `recovery`: a recovery upgrade (COS_RECOVERY). */
  target: 'active' | 'recovery';
  /** Active upgrades only: keep the passive entry (bash semantics when booted from passive / after upgrade_failure). */
  keepPassive: boolean;
  /** The entry of the image just written. Its `date` defaults to `date`, its `label` to the configured one. */
  newImage: ImageEntry;
  /** A Date (formatted as RFC 3339 seconds) or an already formatted string. */
  date: Date | string;
  /** The host's labels; missing ones fall back to the existing entries, then to the defaults. */
  labels?: Partial<Labels>;
  /**
   * Identity (filesystem UUID) of the image active.img held before the switch, which moves to passive. When the
   * recorded active entry names another identity (a stale record), the entry that does describe it is used, else a
   * bare entry: a record is never trusted over the image.
   */
  rotatedId?: string | null;
  /** The image moving to passive is the running system: it booted, so a `staged` record of it becomes `good`. */
  rotatedBooted?: boolean;
}

/** PURE: the recorded entry that describes the image with this identity (any slot), if any. */
export function entryForIdentity(state: InstallState, id: string): ImageEntry | undefined {
  for (const part of Object.values(state.partitions)) {
    for (const e of Object.values(part?.images ?? {})) if (e?.uuid === id) return e;
  }
  return undefined;
}

/**
 * PURE: the state after an upgrade. For `active`: passive inherits active's entry (relabelled passive) unless
 * `keepPassive`; when no active entry was recorded the passive entry is dropped (its content is unknown); active becomes
 * `newImage`. For `recovery`: the recovery partition's `recovery` image becomes `newImage`. The top-level `date` is set.
 * The input is not modified.
 */
export function rotateOnUpgrade(state: InstallState, o: RotateOptions): InstallState {
  const next = structuredClone(state);
  const date = typeof o.date === 'string' ? o.date : formatStateDate(o.date);
  next.date = date;
  const image: ImageEntry = { ...structuredClone(o.newImage), date: o.newImage.date ?? date };
  const labels = o.labels ?? {};
  if (o.target === 'active') {
    const part = next.partitions['state'] ?? { images: {} };
    part.label ??= labels.state ?? DEFAULT_LABELS.state;
    const oldActive = part.images['active'];
    if (!o.keepPassive) {
      let moving = oldActive;
      const id = o.rotatedId ?? undefined;
      if (id !== undefined && moving?.uuid !== undefined && moving.uuid !== id) moving = entryForIdentity(state, id) ?? { uuid: id };
      if (id !== undefined && moving === undefined) moving = { uuid: id };
      if (moving !== undefined) {
        const entry: ImageEntry = { ...structuredClone(moving), label: labels.passive ?? part.images['passive']?.label ?? DEFAULT_LABELS.passive };
        if (id !== undefined) entry.uuid = id;
        if (o.rotatedBooted === true && (entry.upgradeResult === 'staged' || entry.upgradeResult === undefined)) entry.upgradeResult = 'good';
        part.images['passive'] = entry;
      } else {
        delete part.images['passive'];
      }
    }
    image.label ??= labels.active ?? oldActive?.label ?? DEFAULT_LABELS.active;
    part.images['active'] = image;
    next.partitions['state'] = part;
  } else {
    const part = next.partitions['recovery'] ?? { images: {} };
    part.label ??= labels.recovery ?? DEFAULT_LABELS.recovery;
    if (image.fs !== 'squashfs') image.label ??= labels.system ?? part.images['recovery']?.label ?? DEFAULT_LABELS.system;
    part.images['recovery'] = image;
    next.partitions['recovery'] = part;
  }
  return next;
}

/** PURE: the records after a permanent rollback swapped active.img and passive.img (labels follow the names). */
export function swapOnRollback(state: InstallState, labels: Partial<Labels> = {}): InstallState {
  const next = structuredClone(state);
  const images = next.partitions['state']?.images;
  if (images === undefined) return next;
  const { active, passive } = images;
  if (passive) images['active'] = { ...passive, label: labels.active ?? DEFAULT_LABELS.active };
  else delete images['active'];
  if (active) images['passive'] = { ...active, label: labels.passive ?? DEFAULT_LABELS.passive };
  else delete images['passive'];
  return next;
}

/**
 * PURE: the records after mark-good / mark-bad of the running A/B slot. `id`: the running image's identity; a
 * record that names another image is replaced by a bare entry for it (never trusted over the image).
 */
export function markOnBoot(state: InstallState, slot: 'active' | 'passive', result: 'good' | 'failed', id: string | null): InstallState {
  const next = structuredClone(state);
  const part = next.partitions['state'] ?? { images: {} };
  let entry = part.images[slot];
  if (id !== null && entry?.uuid !== undefined && entry.uuid !== id) entry = { ...(entryForIdentity(state, id) ?? {}), uuid: id };
  if (entry === undefined) {
    if (id === null) return next;
    entry = { uuid: id };
  }
  part.images[slot] = { ...entry, upgradeResult: result };
  next.partitions['state'] = part;
  return next;
}

// ---------------------------------------------------------------------------------------------------------------
// I/O

export interface ReadStateResult {
  state: InstallState;
  /**
   * Set when the file was corrupt or invalid. `brokenPath`: where it was moved; absent when it was not moved
   * (`moveAside: false`, or the rename failed — e.g. COS_STATE is mounted read-only — with `moveError` saying why).
   */
  recovered?: { brokenPath?: string; reason: string; moveError?: string };
}

const isMissing = (e: unknown): boolean => {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
};

/**
 * Read a state file. Never throws for bad content (see the module comment); throws STATE_INVALID only when the file
 * exists but cannot be read (EACCES, EISDIR …). `moveAside: false` reports corruption without renaming.
 */
export async function readStateFile(file: string, opts: { moveAside?: boolean } = {}): Promise<ReadStateResult> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (e) {
    if (isMissing(e)) return { state: emptyState() };
    throw new AgentError('STATE_INVALID', `cannot read state file ${file}: ${(e as Error).message}`, { cause: e });
  }
  let reason: string;
  try {
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(buf);
    return { state: parseState(text) };
  } catch (e) {
    reason = e instanceof AgentError ? e.message : `not valid UTF-8 (${(e as Error).message})`;
  }
  if (opts.moveAside === false) return { state: emptyState(), recovered: { reason } };
  const brokenPath = `${file}.broken`;
  try {
    await rename(file, brokenPath);
  } catch (e) {
    return { state: emptyState(), recovered: { reason, moveError: (e as Error).message } };
  }
  try {
    await fsyncDir(path.dirname(file));
  } catch {
    // The rename happened; durability of the move is best effort.
  }
  return { state: emptyState(), recovered: { brokenPath, reason } };
}

/**
 * Write a state file atomically: `.<name>.tmp-<random>` in the same directory (mode 0644), fsync, rename over `file`,
 * fsync the directory. On failure the temp file is removed and the old file is untouched. Throws NO_SPACE on ENOSPC,
 * STATE_INVALID otherwise (naming the file).
 */
export async function writeStateFile(file: string, state: InstallState): Promise<void> {
  try {
    await writeFileAtomic(file, serializeState(state));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new AgentError(
      code === 'ENOSPC' ? 'NO_SPACE' : 'STATE_INVALID',
      `cannot write state file ${file}: ${(e as Error).message}`,
      { cause: e },
    );
  }
}
