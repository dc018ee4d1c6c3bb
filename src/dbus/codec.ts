/**
 * PURE translation between D-Bus values and the agent's typed requests and state: the a{sv} options of Upgrade,
 * Check and Rollback (unknown, reserved and repeated keys, wrong types and absurdly long strings are rejected naming
 * the key, never ignored, and never echoing a value), RunStage's stage name, and the property values in both
 * directions. No dbus-next here: variants are built through a factory the caller passes (the service and the client
 * pass dbus-next's Variant constructor), and read from anything shaped {signature, value}. The options are read from
 * the dictionary's entries as they were on the wire (a WireDict, see wire.ts): dbus-next's own plain object loses a
 * "__proto__" key (it becomes the prototype) and all but the last of a repeated key.
 */
import { AgentError } from '../model/errors.ts';
import { displayText, TEXT_LIMITS, utf8Length } from '../model/text.ts';
import type { SlotName } from '../model/host.ts';
import type { Operation } from '../host/deps.ts';
import type { JobKind } from '../daemon/job.ts';
import type {
  CheckRequest,
  ConfigSummary,
  DaemonState,
  ProgressState,
  RollbackRequest,
  SlotState,
  SlotSummary,
  UpgradeRequest,
} from '../daemon/daemon.ts';
import type { TransactionDetails, TransactionRecord } from '../daemon/transactions.ts';

export const BUS_NAME = 'io.costoolkit.Agent1';
export const OBJECT_PATH = '/io/costoolkit/Agent1';
export const INTERFACE_NAME = 'io.costoolkit.Agent1';

/** A received variant (dbus-next's Variant has this shape). */
export interface VariantLike {
  readonly signature: string;
  readonly value: unknown;
}

/** Builds a variant to send (the caller passes `(s, v) => new Variant(s, v)`). */
export type MakeVariant = (signature: string, value: unknown) => unknown;

/**
 * A request whose arguments are malformed: an unknown, reserved or repeated key, a wrong type, a string over its limit.
 * Maps to io.costoolkit.Agent1.Error.InvalidArgs.
 */
export class InvalidArgsError extends AgentError {
  override name = 'InvalidArgsError';
  /** The option key at fault, when one is (shown escaped and bounded). */
  readonly key: string | undefined;
  constructor(method: string, message: string, key?: string) {
    super('USAGE', `${method}: ${message}`);
    this.key = key === undefined ? undefined : displayText(key, TEXT_LIMITS.echo);
  }
}

/** A key as an error message names it: quoted, escaped, bounded. */
const quoted = (key: string): string => `"${displayText(key, 128)}"`;

/**
 * The entries of an a{sv} exactly as they were on the wire: every key in order, repeated ones included, each value a
 * variant. The service builds it from the message (wire.ts); the decoders prefer it to a plain object.
 */
export interface WireDict {
  readonly wireEntries: ReadonlyArray<readonly [key: string, value: unknown]>;
}

export function wireDict(entries: ReadonlyArray<readonly [string, unknown]>): WireDict {
  return { wireEntries: entries };
}

function isWireDict(v: unknown): v is WireDict {
  return typeof v === 'object' && v !== null && Array.isArray((v as Partial<WireDict>).wireEntries);
}

/** Keys that are never options: they name parts of every JavaScript object (a plain-object dict loses "__proto__"). */
export const RESERVED_KEYS: readonly string[] = ['__proto__', 'constructor', 'prototype'];

// ---------------------------------------------------------------------------------------------------------------
// Method options

type OptionType = 's' | 'b';
type OptionSpec = Readonly<Record<string, OptionType>>;

/** The options each method takes, and the one type each key has. */
export const METHOD_OPTIONS: Readonly<Record<'Upgrade' | 'Check' | 'Rollback' | 'RunStage', OptionSpec>> = {
  Upgrade: { image: 's', recovery: 'b', 'no-verify': 'b', reboot: 'b', force: 'b' },
  Check: { image: 's', recovery: 'b' },
  Rollback: { permanent: 'b' },
  RunStage: { strict: 'b' },
};

const TYPE_NAMES: Readonly<Record<OptionType, string>> = { s: "a string ('s')", b: "a boolean ('b')" };

function isVariantLike(v: unknown): v is VariantLike {
  return typeof v === 'object' && v !== null && typeof (v as VariantLike).signature === 'string' && 'value' in v;
}

/**
 * The entries of an a{sv} argument: a WireDict's as they are; a plain object's own entries, refused when its
 * prototype was replaced (a "__proto__" entry built by assignment: the key is gone, but not without a trace).
 */
function entriesOf(method: string, dict: unknown): ReadonlyArray<readonly [string, unknown]> {
  if (isWireDict(dict)) return dict.wireEntries;
  if (typeof dict !== 'object' || dict === null || Array.isArray(dict)) {
    throw new InvalidArgsError(method, 'options must be a dictionary (a{sv})');
  }
  const proto: unknown = Object.getPrototypeOf(dict);
  if (proto !== Object.prototype && proto !== null) {
    throw new InvalidArgsError(method, 'option "__proto__" is a reserved name, never an option', '__proto__');
  }
  return Object.entries(dict as Record<string, unknown>);
}

/**
 * Check every entry of an a{sv} against `spec`; returns the plain values. Refused, naming the key (never echoing a
 * value): a reserved or unknown key, a key given twice, a variant of another type, an empty string, a string over
 * TEXT_LIMITS.optionBytes.
 */
function readOptions(method: keyof typeof METHOD_OPTIONS, dict: unknown): Record<string, string | boolean> {
  const spec = METHOD_OPTIONS[method];
  const takes = `${method} takes ${Object.keys(spec).join(', ')}`;
  const out: Record<string, string | boolean> = Object.create(null) as Record<string, string | boolean>;
  const seen = new Set<string>();
  for (const [key, v] of entriesOf(method, dict)) {
    if (typeof key !== 'string') throw new InvalidArgsError(method, 'options must be a dictionary (a{sv})');
    if (RESERVED_KEYS.includes(key)) {
      throw new InvalidArgsError(method, `option ${quoted(key)} is a reserved name, never an option (${takes})`, key);
    }
    if (!Object.hasOwn(spec, key)) throw new InvalidArgsError(method, `unknown option ${quoted(key)} (${takes})`, key);
    if (seen.has(key)) throw new InvalidArgsError(method, `option ${quoted(key)} is given more than once`, key);
    seen.add(key);
    const want = spec[key] as OptionType;
    const got = isVariantLike(v) ? `'${displayText(v.signature, 128)}'` : typeof v;
    if (!isVariantLike(v) || v.signature !== want || typeof v.value !== (want === 's' ? 'string' : 'boolean')) {
      throw new InvalidArgsError(method, `option ${quoted(key)} must be ${TYPE_NAMES[want]}, got ${got}`, key);
    }
    if (want === 's') {
      const text = v.value as string;
      if (text.length === 0) throw new InvalidArgsError(method, `option ${quoted(key)} must not be empty`, key);
      const bytes = utf8Length(text);
      if (bytes > TEXT_LIMITS.optionBytes) {
        throw new InvalidArgsError(method, `option ${quoted(key)} is ${bytes} bytes long, over the limit of ${TEXT_LIMITS.optionBytes} bytes`, key);
      }
    }
    out[key] = v.value as string | boolean;
  }
  return out;
}

/** RunStage's argument: a stage name of at most TEXT_LIMITS.stageBytes (a longer one is refused naming its length). */
export function decodeStageName(stage: unknown): string {
  if (typeof stage !== 'string') throw new InvalidArgsError('RunStage', 'the stage name must be a string');
  const bytes = utf8Length(stage);
  if (bytes > TEXT_LIMITS.stageBytes) {
    throw new InvalidArgsError('RunStage', `the stage name is ${bytes} bytes long, over the limit of ${TEXT_LIMITS.stageBytes} bytes`);
  }
  return stage;
}

export function decodeUpgradeOptions(dict: unknown): UpgradeRequest {
  const o = readOptions('Upgrade', dict);
  return {
    ...(o.image !== undefined ? { image: o.image as string } : {}),
    ...(o.recovery !== undefined ? { recovery: o.recovery as boolean } : {}),
    ...(o['no-verify'] !== undefined ? { noVerify: o['no-verify'] as boolean } : {}),
    ...(o.reboot !== undefined ? { reboot: o.reboot as boolean } : {}),
    ...(o.force !== undefined ? { force: o.force as boolean } : {}),
  };
}

export function decodeCheckOptions(dict: unknown): CheckRequest {
  const o = readOptions('Check', dict);
  return {
    ...(o.image !== undefined ? { image: o.image as string } : {}),
    ...(o.recovery !== undefined ? { recovery: o.recovery as boolean } : {}),
  };
}

export function decodeRollbackOptions(dict: unknown): RollbackRequest {
  const o = readOptions('Rollback', dict);
  return o.permanent !== undefined ? { permanent: o.permanent as boolean } : {};
}

export function decodeRunStageOptions(dict: unknown): { strict?: boolean } {
  const o = readOptions('RunStage', dict);
  return o.strict !== undefined ? { strict: o.strict as boolean } : {};
}

/** Build an a{sv} from plain values (only defined ones), typed by the method's spec. */
function writeOptions(method: keyof typeof METHOD_OPTIONS, values: Record<string, string | boolean | undefined>, mk: MakeVariant): Record<string, unknown> {
  const spec = METHOD_OPTIONS[method];
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined) continue;
    const type = Object.hasOwn(spec, key) ? spec[key] : undefined;
    if (type === undefined) throw new InvalidArgsError(method, `unknown option ${quoted(key)}`, key);
    out[key] = mk(type, value);
  }
  return out;
}

export function encodeUpgradeOptions(req: UpgradeRequest, mk: MakeVariant): Record<string, unknown> {
  return writeOptions('Upgrade', { image: req.image, recovery: req.recovery, 'no-verify': req.noVerify, reboot: req.reboot, force: req.force }, mk);
}

export function encodeCheckOptions(req: CheckRequest, mk: MakeVariant): Record<string, unknown> {
  return writeOptions('Check', { image: req.image, recovery: req.recovery }, mk);
}

export function encodeRollbackOptions(req: RollbackRequest, mk: MakeVariant): Record<string, unknown> {
  return writeOptions('Rollback', { permanent: req.permanent }, mk);
}

export function encodeRunStageOptions(req: { strict?: boolean }, mk: MakeVariant): Record<string, unknown> {
  return writeOptions('RunStage', { strict: req.strict }, mk);
}

// ---------------------------------------------------------------------------------------------------------------
// Properties

/** Every property and its D-Bus signature (the XML contract says the same; the introspection test checks both). */
export const PROPERTY_SIGNATURES = {
  Operation: 's',
  Progress: '(isitt)',
  LastError: 's',
  BootedSlot: 's',
  Slots: 'a{sa{sv}}',
  UpdateAvailable: 'b',
  Transaction: 's',
  Config: 'a{sv}',
  UpgradeFailure: 'b',
  LastTransaction: 'a{sv}',
} as const;

export type PropertyName = keyof typeof PROPERTY_SIGNATURES;

/** The properties as typed values (what a client gets back). */
export interface AgentProperties {
  Operation: Operation;
  Progress: ProgressState;
  LastError: string;
  BootedSlot: string;
  Slots: Record<SlotName, SlotSummary>;
  UpdateAvailable: boolean;
  Transaction: string;
  /** Null when the daemon has no configuration loaded (the dictionary is empty). */
  Config: ConfigSummary | null;
  UpgradeFailure: boolean;
  /** Null when no job is known (the dictionary is empty). */
  LastTransaction: TransactionRecord | null;
}

/** Which daemon state field each property shows. */
export const PROPERTY_OF_STATE: Readonly<Record<keyof DaemonState, PropertyName>> = {
  operation: 'Operation',
  progress: 'Progress',
  lastError: 'LastError',
  bootedSlot: 'BootedSlot',
  slots: 'Slots',
  updateAvailable: 'UpdateAvailable',
  transaction: 'Transaction',
  config: 'Config',
  upgradeFailure: 'UpgradeFailure',
  lastTransaction: 'LastTransaction',
};

const SLOT_NAMES: readonly SlotName[] = ['active', 'passive', 'recovery'];

/** Keys of a slot's a{sv} and their types. */
const SLOT_KEYS: ReadonlyArray<[keyof SlotSummary, string, string]> = [
  ['image', 'image', 's'], ['digest', 'digest', 's'], ['version', 'version', 's'], ['label', 'label', 's'],
  ['file', 'file', 's'], ['present', 'present', 'b'], ['fs', 'fs', 's'], ['size', 'size', 't'],
  ['timestamp', 'timestamp', 's'], ['verification', 'verification', 's'], ['state', 'state', 's'],
];

/** Keys of the Config a{sv} and their types. */
const CONFIG_KEYS: ReadonlyArray<[keyof ConfigSummary, string, string]> = [
  ['upgradeImage', 'upgrade-image', 's'], ['recoveryImage', 'recovery-image', 's'], ['verify', 'verify', 'b'],
  ['verifyDisabledBy', 'verify-disabled-by', 's'], ['channelUpgrades', 'channel-upgrades', 'b'],
  ['imageSizeMiB', 'image-size-mib', 'u'], ['strict', 'strict', 'b'], ['reboot', 'reboot', 'b'], ['poweroff', 'poweroff', 'b'],
  ['cosign', 'cosign', 'b'], ['cosignKeyless', 'cosign-keyless', 'b'], ['cosignRepository', 'cosign-repository', 's'],
  ['cosignKeys', 'cosign-keys', 'as'], ['labels', 'labels', 'a{ss}'], ['root', 'root', 's'],
];

/** Keys of the LastTransaction a{sv}: record fields, then details. */
const TX_KEYS: ReadonlyArray<[keyof TransactionRecord, string, string]> = [
  ['transaction', 'transaction', 's'], ['kind', 'kind', 's'], ['result', 'result', 'i'], ['code', 'code', 's'],
  ['error', 'error', 's'], ['startedAt', 'started-at', 's'], ['finishedAt', 'finished-at', 's'],
];
const DETAIL_KEYS: ReadonlyArray<[keyof TransactionDetails, string, string]> = [
  ['image', 'image', 's'], ['digest', 'digest', 's'], ['target', 'target', 's'], ['version', 'version', 's'],
  ['verification', 'verification', 's'], ['rotated', 'rotated', 'b'], ['keepPassiveReason', 'keep-passive-reason', 's'],
  ['reboot', 'reboot', 'b'], ['force', 'force', 'b'], ['unchanged', 'unchanged', 's'], ['rolledBack', 'rolled-back', 'b'], ['currentDigest', 'current-digest', 's'],
  ['updateAvailable', 'update-available', 'b'], ['permanent', 'permanent', 'b'], ['nextEntry', 'next-entry', 's'],
  ['warnings', 'warnings', 'as'], ['assessmentChanged', 'assessment-changed', 'b'], ['nextBoot', 'next-boot', 's'],
  ['stage', 'stage', 's'], ['strict', 'strict', 'b'], ['sources', 'sources', 'as'], ['steps', 'steps', 'u'], ['stepErrors', 'step-errors', 'u'],
];

/** The D-Bus value of one property, from the daemon state. */
export function encodeProperty(name: PropertyName, s: Readonly<DaemonState>, mk: MakeVariant): unknown {
  switch (name) {
    case 'Operation':
      return s.operation;
    case 'Progress':
      return [s.progress.percent, s.progress.message, s.progress.depth, s.progress.bytesDone, s.progress.bytesTotal];
    case 'LastError':
      return s.lastError;
    case 'BootedSlot':
      return s.bootedSlot;
    case 'Slots': {
      const out: Record<string, Record<string, unknown>> = {};
      for (const slot of SLOT_NAMES) {
        const dict: Record<string, unknown> = {};
        for (const [field, key, sig] of SLOT_KEYS) dict[key] = mk(sig, s.slots[slot][field]);
        out[slot] = dict;
      }
      return out;
    }
    case 'UpdateAvailable':
      return s.updateAvailable;
    case 'Transaction':
      return s.transaction;
    case 'Config': {
      const out: Record<string, unknown> = {};
      if (s.config === null) return out;
      for (const [field, key, sig] of CONFIG_KEYS) out[key] = mk(sig, s.config[field]);
      return out;
    }
    case 'UpgradeFailure':
      return s.upgradeFailure;
    case 'LastTransaction': {
      const out: Record<string, unknown> = {};
      const rec = s.lastTransaction;
      if (rec === null) return out;
      for (const [field, key, sig] of TX_KEYS) out[key] = mk(sig, rec[field] ?? '');
      for (const [field, key, sig] of DETAIL_KEYS) {
        const v = rec.details[field];
        if (v !== undefined) out[key] = mk(sig, v);
      }
      return out;
    }
  }
}

const num = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : typeof v === 'number' ? v : Number.NaN);

/** The plain values of a received a{sv} (variants unwrapped, 64-bit integers as numbers). */
function unwrapDict(v: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (typeof v !== 'object' || v === null) return out;
  for (const [k, item] of Object.entries(v as Record<string, unknown>)) {
    const value = isVariantLike(item) ? item.value : item;
    out[k] = typeof value === 'bigint' ? Number(value) : value;
  }
  return out;
}

function pick<T>(dict: Record<string, unknown>, keys: ReadonlyArray<readonly [keyof T, string, string]>): Partial<T> {
  const out: Partial<T> = {};
  for (const [field, key] of keys) if (dict[key] !== undefined) (out as Record<string, unknown>)[field as string] = dict[key];
  return out;
}

/** A received property value as its typed form. */
export function decodeProperty<K extends PropertyName>(name: K, value: unknown): AgentProperties[K] {
  const v = isVariantLike(value) ? value.value : value;
  let out: unknown;
  switch (name) {
    case 'Progress': {
      const [percent, message, depth, bytesDone, bytesTotal] = Array.isArray(v) ? v : [];
      out = { percent: num(percent), message: String(message ?? ''), depth: num(depth), bytesDone: num(bytesDone), bytesTotal: num(bytesTotal) } satisfies ProgressState;
      break;
    }
    case 'Slots': {
      const slots: Partial<Record<SlotName, SlotSummary>> = {};
      const raw = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
      for (const slot of SLOT_NAMES) {
        const d = pick<SlotSummary>(unwrapDict(raw[slot]), SLOT_KEYS);
        slots[slot] = {
          image: d.image ?? '', digest: d.digest ?? '', version: d.version ?? '', label: d.label ?? '', file: d.file ?? '',
          present: d.present ?? false, fs: d.fs ?? '', size: d.size ?? 0, timestamp: d.timestamp ?? '',
          verification: d.verification ?? 'unknown', state: (d.state ?? 'absent') as SlotState,
        };
      }
      out = slots;
      break;
    }
    case 'Config': {
      const d = unwrapDict(v);
      out = Object.keys(d).length === 0 ? null : (pick<ConfigSummary>(d, CONFIG_KEYS) as ConfigSummary);
      break;
    }
    case 'LastTransaction': {
      const d = unwrapDict(v);
      if (Object.keys(d).length === 0) {
        out = null;
        break;
      }
      const r = pick<TransactionRecord>(d, TX_KEYS);
      out = {
        transaction: r.transaction ?? '',
        kind: (r.kind ?? 'upgrade') as JobKind,
        result: r.result ?? 0,
        code: r.code === '' || r.code === undefined ? null : r.code,
        error: r.error === '' || r.error === undefined ? null : r.error,
        startedAt: r.startedAt ?? '',
        finishedAt: r.finishedAt ?? '',
        details: pick<TransactionDetails>(d, DETAIL_KEYS),
      } satisfies TransactionRecord;
      break;
    }
    default:
      out = typeof v === 'bigint' ? Number(v) : v;
  }
  return out as AgentProperties[K];
}

/** All received properties (a GetAll answer) as typed values; unknown names are left out. */
export function decodeProperties(dict: Readonly<Record<string, unknown>>): Partial<AgentProperties> {
  const out: Partial<AgentProperties> = {};
  for (const [name, value] of Object.entries(dict)) {
    if (!(name in PROPERTY_SIGNATURES)) continue;
    (out as Record<string, unknown>)[name] = decodeProperty(name as PropertyName, value);
  }
  return out;
}
