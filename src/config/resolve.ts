/**
 * PURE: turn parsed config sources into layers of typed settings and merge them into an AgentConfig
 * (spec cos-layout.md 2.2, 2.3, 3.1–3.3, 9).
 *
 * Precedence, lowest first (each source is one layer; load.ts builds them in this order):
 *   built-in defaults < /etc/os-release < /etc/cos/config < /etc/cos-upgrade-image < /etc/elemental/config.yaml
 *   < /etc/elemental/config.d/*.yaml (lexical) < ELEMENTAL_* environment < overrides (CLI flags).
 * Every setting is merged on its own: the highest layer that sets it wins. Inside one layer, when two keys set the
 * same setting (aliases such as NO_VERIFY / VERIFY, or cosign-key / COSIGN_PUBLIC_KEY_LOCATION) the later one wins:
 * later line in a file, later document position in YAML, lexically later variable name in the environment.
 *
 * Key matching: case-insensitive, `_` and `-` equivalent (viper lowercases keys), so `NO_VERIFY`, `no-verify` and
 * `no_verify` are one key everywhere. An empty value (or YAML null) means "not set".
 * /etc/os-release only contributes the image-describing keys G2 mapped by their upper-case names
 * (UPGRADE_IMAGE, RECOVERY_IMAGE, CHANNEL_UPGRADES, DEFAULT_IMAGE_SIZE, GRUB_ENTRY_NAME, CLOUD_INIT_PATHS, *_LABEL);
 * it cannot switch verification, cosign, strict, reboot or poweroff.
 *
 * Upgrade source rule (a deliberate, documented choice; spec 2.3 shows G2 and bash disagree):
 *  - `UPGRADE_IMAGE` / `RECOVERY_IMAGE` with an explicit scheme (`docker:`, `oci:`, `channel:`, `dir:`, `file:`) mean
 *    exactly that; a bare value is a luet channel package when the effective CHANNEL_UPGRADES is true, and an OCI
 *    image reference otherwise (bash semantics; elemental v0.0.15 would ignore it and install `channel:system/cos`).
 *  - `upgrade.system.uri` (G3), `docker-image` and `directory` (v0.0.15) and `UPGRADE_IMAGE` compete by layer: the
 *    highest layer that sets any of them wins; inside one layer the order of preference is
 *    upgrade.system.uri > docker-image > directory > UPGRADE_IMAGE.
 *  - recovery: `upgrade.recovery-system.uri` / `RECOVERY_IMAGE` the same way, else the upgrade source.
 *  - the `image` override replaces the recovery source when the upgrade targets recovery, else the upgrade source.
 *  - nothing configured: no source (elemental's implicit `channel:system/cos` default is not invented here).
 * Verification is on unless the winning verify setting (NO_VERIFY, VERIFY, no-verify, verify, override noVerify)
 * turns it off; `verifyDisabledBy` then names that origin.
 */
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node, type Pair } from 'yaml';
import {
  DEFAULT_LABELS,
  type AgentConfig,
  type ConfigOverrides,
  type ImageSource,
  type ImageSourceKind,
  type Labels,
} from '../model/config.ts';
import { displayText, TEXT_LIMITS, utf8Length } from '../model/text.ts';
import { AgentError, ConfigError } from '../model/errors.ts';
import { DEFAULT_TRIES, MAX_TRIES, validTries } from '../model/boot-assessment.ts';
import type { DotenvEntry } from './dotenv.ts';

/** The typed value of every setting a source can provide. Keys double as AgentConfig origin paths where they match. */
export interface SettingValues {
  /** UPGRADE_IMAGE, validated; interpreted with channelUpgrades at resolve time. */
  upgradeImage: string;
  /** BOOT_ASSESSMENT_TRIES (cos-agent): boots of active before GRUB falls back, 1..9. */
  bootAssessmentTries: number;
  recoveryImage: string;
  channelUpgrades: boolean;
  /** v0.0.15 `docker-image`. */
  dockerImage: ImageSource;
  /** v0.0.15 `directory`. */
  directory: ImageSource;
  /** G3 `upgrade.system.uri`. */
  systemUri: ImageSource;
  /** G3 `upgrade.recovery-system.uri`. */
  recoveryUri: ImageSource;
  /** Override `image`. */
  image: ImageSource;
  upgradeRecovery: boolean;
  imageSizeMiB: number;
  recoveryImageSizeMiB: number;
  systemFs: string;
  recoveryFs: string;
  grubEntryName: string;
  'labels.state': string;
  'labels.active': string;
  'labels.passive': string;
  'labels.recovery': string;
  'labels.system': string;
  'labels.oem': string;
  'labels.persistent': string;
  verify: boolean;
  'cosign.enabled': boolean;
  'cosign.publicKeyLocations': string[];
  'cosign.experimental': boolean;
  'cosign.repository': string;
  cloudInitPaths: string[];
  strict: boolean;
  reboot: boolean;
  poweroff: boolean;
  squashCompression: string[];
}
export type SettingName = keyof SettingValues;

/** A value with where it came from. `order` ranks aliases inside one layer (line, YAML offset, env name index). */
export interface Sourced<T> {
  readonly value: T;
  /** `<file>:<line> (<KEY>)`, `env (<NAME>)`, `flag (<name>)`. */
  readonly origin: string;
  readonly order: number;
}

/** One source's settings. */
export interface ConfigLayer {
  /** The file path, `environment` or `overrides`. */
  readonly name: string;
  readonly values: { [K in SettingName]?: Sourced<SettingValues[K]> };
}

type Conv =
  | 'string'
  | 'bool'
  | 'notbool'
  | 'posint'
  | 'label'
  | 'list'
  | 'words'
  | 'imageish'
  | 'oci'
  | 'dir'
  | 'uri'
  | 'fs-system'
  | 'fs-recovery'
  | 'tries';
interface KeySpec {
  readonly setting: SettingName;
  readonly conv: Conv;
}

/** Flat keys (env files, top level of config.yaml, ELEMENTAL_<KEY>), normalised: lower case, `_` -> `-`. */
const FLAT: Readonly<Record<string, KeySpec>> = {
  'upgrade-image': { setting: 'upgradeImage', conv: 'imageish' },
  'recovery-image': { setting: 'recoveryImage', conv: 'imageish' },
  'channel-upgrades': { setting: 'channelUpgrades', conv: 'bool' },
  'default-image-size': { setting: 'imageSizeMiB', conv: 'posint' },
  'grub-entry-name': { setting: 'grubEntryName', conv: 'string' },
  'state-label': { setting: 'labels.state', conv: 'label' },
  'active-label': { setting: 'labels.active', conv: 'label' },
  'passive-label': { setting: 'labels.passive', conv: 'label' },
  'recovery-label': { setting: 'labels.recovery', conv: 'label' },
  'system-label': { setting: 'labels.system', conv: 'label' },
  'oem-label': { setting: 'labels.oem', conv: 'label' },
  'persistent-label': { setting: 'labels.persistent', conv: 'label' },
  cosign: { setting: 'cosign.enabled', conv: 'bool' },
  'cosign-key': { setting: 'cosign.publicKeyLocations', conv: 'list' },
  'cosign-public-key-location': { setting: 'cosign.publicKeyLocations', conv: 'list' },
  'cosign-experimental': { setting: 'cosign.experimental', conv: 'bool' },
  'cosign-repository': { setting: 'cosign.repository', conv: 'string' },
  'no-verify': { setting: 'verify', conv: 'notbool' },
  verify: { setting: 'verify', conv: 'bool' },
  'cloud-init-paths': { setting: 'cloudInitPaths', conv: 'list' },
  strict: { setting: 'strict', conv: 'bool' },
  reboot: { setting: 'reboot', conv: 'bool' },
  poweroff: { setting: 'poweroff', conv: 'bool' },
  'docker-image': { setting: 'dockerImage', conv: 'oci' },
  directory: { setting: 'directory', conv: 'dir' },
  'squash-compression': { setting: 'squashCompression', conv: 'words' },
  'boot-assessment-tries': { setting: 'bootAssessmentTries', conv: 'tries' },
};

/** Keys taken from /etc/os-release (normalised). */
export const OS_RELEASE_KEYS: readonly string[] = [
  'upgrade-image',
  'recovery-image',
  'channel-upgrades',
  'default-image-size',
  'grub-entry-name',
  'cloud-init-paths',
  'state-label',
  'active-label',
  'passive-label',
  'recovery-label',
  'system-label',
  'oem-label',
  'persistent-label',
];

/** G3 `upgrade:` section. */
const UPGRADE_SECTION: Readonly<Record<string, KeySpec>> = {
  recovery: { setting: 'upgradeRecovery', conv: 'bool' },
  'grub-entry-name': { setting: 'grubEntryName', conv: 'string' },
};
const SYSTEM_SECTION: Readonly<Record<string, KeySpec>> = {
  uri: { setting: 'systemUri', conv: 'uri' },
  size: { setting: 'imageSizeMiB', conv: 'posint' },
  label: { setting: 'labels.active', conv: 'label' },
  fs: { setting: 'systemFs', conv: 'fs-system' },
};
const RECOVERY_SYSTEM_SECTION: Readonly<Record<string, KeySpec>> = {
  uri: { setting: 'recoveryUri', conv: 'uri' },
  size: { setting: 'recoveryImageSizeMiB', conv: 'posint' },
  label: { setting: 'labels.system', conv: 'label' },
  fs: { setting: 'recoveryFs', conv: 'fs-recovery' },
};

/** ELEMENTAL_<SUFFIX> variables: the flat keys plus the G3 section keys flattened (ELEMENTAL_UPGRADE_SYSTEM_URI). */
const ENV_KEYS: Readonly<Record<string, KeySpec>> = {
  ...FLAT,
  ...prefixed('upgrade-', UPGRADE_SECTION),
  ...prefixed('upgrade-system-', SYSTEM_SECTION),
  ...prefixed('upgrade-recovery-system-', RECOVERY_SYSTEM_SECTION),
};

/** Top-level config.yaml keys that belong to other elemental commands: ignored without a warning. */
const OTHER_COMMAND_KEYS: ReadonlySet<string> = new Set([
  'install',
  'reset',
  'repositories',
  'mount',
  'build-disk',
  'disk',
  'raw-disk',
  'iso',
  'pull-image',
  'arch',
  'platform',
  'debug',
  'logfile',
  'quiet',
  'local',
  'snapshotter',
  'cloud-init',
]);

function prefixed(prefix: string, table: Readonly<Record<string, KeySpec>>): Record<string, KeySpec> {
  const out: Record<string, KeySpec> = {};
  for (const [k, v] of Object.entries(table)) out[prefix + k] = v;
  return out;
}

const normKey = (k: string): string => k.trim().toLowerCase().replace(/_/g, '-');

const SYSTEM_FS: readonly string[] = ['ext2', 'ext3', 'ext4'];
const RECOVERY_FS: readonly string[] = ['squashfs', 'ext2', 'ext3', 'ext4'];
const KNOWN_SCHEMES: readonly string[] = ['docker', 'oci', 'channel', 'dir', 'file'];
const UNSUPPORTED_SCHEMES: readonly string[] = [
  'ocifile',
  'oci-archive',
  'docker-archive',
  'docker-daemon',
  'containers-storage',
  'http',
  'https',
];

/**
 * Parse a source URI: `docker:REF` / `oci:REF` (also `docker://REF`), `channel:PKG`, `dir:/path` (also `dir:///path`),
 * `file:/path`. A value without a scheme is of kind `bare` (OCI by default). Throws REFERENCE_INVALID.
 */
export function parseImageUri(value: string, bare: ImageSourceKind = 'oci'): ImageSource {
  const v = value.trim();
  if (v === '') throw new AgentError('REFERENCE_INVALID', 'empty image source');
  // Bounded before anything echoes it: errors, records, logs and D-Bus properties never carry a megabyte of it.
  const bytes = utf8Length(v);
  if (bytes > TEXT_LIMITS.value) throw new AgentError('REFERENCE_INVALID', `image source of ${bytes} bytes is too long (at most ${TEXT_LIMITS.value})`);
  if (/\s/.test(v)) throw new AgentError('REFERENCE_INVALID', `image source "${displayText(v, TEXT_LIMITS.echo)}" contains whitespace`);
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):(.*)$/.exec(v);
  const scheme = m?.[1]?.toLowerCase();
  if (m && scheme !== undefined && KNOWN_SCHEMES.includes(scheme)) {
    let rest = m[2] ?? '';
    if (rest.startsWith('//')) rest = rest.slice(2);
    const kind: ImageSourceKind = scheme === 'docker' || scheme === 'oci' ? 'oci' : (scheme as ImageSourceKind);
    return makeSource(kind, rest, v);
  }
  if (m && scheme !== undefined && (UNSUPPORTED_SCHEMES.includes(scheme) || (m[2] ?? '').startsWith('//'))) {
    throw new AgentError(
      'REFERENCE_INVALID',
      `unsupported source scheme "${scheme}:" in ${JSON.stringify(v)} (want docker:, oci:, channel:, dir: or file:)`,
    );
  }
  return makeSource(bare, v, v);
}

function makeSource(kind: ImageSourceKind, ref: string, original: string): ImageSource {
  if (ref === '') throw new AgentError('REFERENCE_INVALID', `image source ${JSON.stringify(original)} names nothing`);
  if ((kind === 'dir' || kind === 'file') && !ref.startsWith('/')) {
    throw new AgentError('REFERENCE_INVALID', `${kind} source ${JSON.stringify(original)} must be an absolute path`);
  }
  return { kind, ref, uri: `${kind}:${ref}` };
}

const hasScheme = (v: string): boolean => {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(v);
  return m !== null && KNOWN_SCHEMES.includes((m[1] ?? '').toLowerCase());
};

/** Interpret an UPGRADE_IMAGE / RECOVERY_IMAGE value (see the module comment). */
export function interpretImageSetting(value: string, channelUpgrades: boolean): ImageSource {
  return hasScheme(value) ? parseImageUri(value) : parseImageUri(value, channelUpgrades ? 'channel' : 'oci');
}

/** Where a raw value sits, for errors and origins. */
interface Where {
  readonly file: string;
  readonly line?: number;
  /** The key as written (`NO_VERIFY`, `upgrade.system.uri`, `ELEMENTAL_VERIFY`); absent for the YAML top level. */
  readonly key?: string;
}

const BOOL_TRUE = /^(true|yes|1)$/i;
const BOOL_FALSE = /^(false|no|0)$/i;

function fail(w: Where, message: string, cause?: unknown): never {
  throw new ConfigError(w.file, message, {
    ...(w.line !== undefined ? { line: w.line } : {}),
    ...(w.key ? { key: w.key } : {}),
    ...(cause !== undefined ? { cause } : {}),
  });
}

function splitList(raw: string, re: RegExp): string[] {
  return raw.split(re).filter((s) => s !== '');
}

/** Convert one raw value; `undefined` = not set (empty). `list` may be given a YAML sequence as string[]. */
function convert(conv: Conv, raw: string | string[], w: Where): SettingValues[SettingName] | undefined {
  if (Array.isArray(raw)) {
    if (conv === 'list' || conv === 'words') return raw;
    fail(w, 'expected a single value, got a list');
  }
  const v = raw.trim();
  if (v === '') return undefined;
  switch (conv) {
    case 'string':
      return v;
    case 'bool':
    case 'notbool': {
      let b: boolean;
      if (BOOL_TRUE.test(v)) b = true;
      else if (BOOL_FALSE.test(v)) b = false;
      else fail(w, `expected a boolean (true/false/yes/no/1/0), got ${JSON.stringify(v)}`);
      return conv === 'bool' ? b : !b;
    }
    case 'tries': {
      const n = /^\d+$/.test(v) ? Number(v) : NaN;
      if (!validTries(n)) fail(w, `expected the boots of active before the fallback, 1 to ${MAX_TRIES}, got ${JSON.stringify(v)}`);
      return n;
    }
    case 'posint': {
      const n = /^\d+$/.test(v) ? Number(v) : NaN;
      if (!Number.isSafeInteger(n) || n <= 0) fail(w, `expected a positive whole number (MiB), got ${JSON.stringify(v)}`);
      return n;
    }
    case 'label':
      if (!/^[^\s"'\\]+$/.test(v) || new TextEncoder().encode(v).length > 16) {
        fail(w, `invalid filesystem label ${JSON.stringify(v)} (1-16 bytes, no blanks, quotes or backslashes)`);
      }
      return v;
    case 'list':
      return splitList(v, /[\s,]+/);
    case 'words':
      return splitList(v, /\s+/);
    case 'imageish':
      try {
        parseImageUri(v); // validates an explicit scheme, or the bare value's syntax
      } catch (e) {
        fail(w, (e as Error).message, e);
      }
      return v;
    case 'oci':
    case 'dir':
    case 'uri':
      try {
        if (conv === 'uri') return parseImageUri(v);
        return parseImageUri(v, conv);
      } catch (e) {
        return fail(w, (e as Error).message, e);
      }
    case 'fs-system':
    case 'fs-recovery': {
      const allowed = conv === 'fs-system' ? SYSTEM_FS : RECOVERY_FS;
      if (!allowed.includes(v)) fail(w, `unsupported filesystem ${JSON.stringify(v)} (want ${allowed.join(', ')})`);
      return v;
    }
  }
}

class LayerBuilder {
  readonly values: Record<string, Sourced<unknown>> = {};
  put(spec: KeySpec, raw: string | string[], w: Where, origin: string, order: number): void {
    const value = convert(spec.conv, raw, w);
    if (value === undefined) return;
    const prev = this.values[spec.setting];
    if (prev !== undefined && prev.order > order) return;
    this.values[spec.setting] = { value, origin, order };
  }
  layer(name: string): ConfigLayer {
    return { name, values: this.values as ConfigLayer['values'] };
  }
}

const fileOrigin = (file: string, line: number | undefined, key: string): string =>
  `${file}${line !== undefined ? `:${line}` : ''} (${key})`;

/**
 * A layer from a parsed env file (/etc/cos/config, /etc/cos-upgrade-image, /etc/os-release). Unknown keys are ignored
 * silently (os-release has many). `only`: normalised keys to take (OS_RELEASE_KEYS for os-release).
 */
export function envFileLayer(
  file: string,
  entries: ReadonlyMap<string, DotenvEntry>,
  opts: { only?: readonly string[] } = {},
): ConfigLayer {
  const b = new LayerBuilder();
  for (const [key, { value, line }] of entries) {
    const norm = normKey(key);
    if (opts.only !== undefined && !opts.only.includes(norm)) continue;
    const spec = FLAT[norm];
    if (spec === undefined) continue;
    b.put(spec, value, { file, line, key }, fileOrigin(file, line, key), line);
  }
  return b.layer(file);
}

/** A layer from `ELEMENTAL_*` variables (other variables are not looked at; unknown ELEMENTAL_ names are ignored). */
export function envLayer(env: Readonly<Record<string, string | undefined>>): ConfigLayer {
  const b = new LayerBuilder();
  const names = Object.keys(env)
    .filter((n) => n.startsWith('ELEMENTAL_'))
    .sort();
  names.forEach((name, i) => {
    const value = env[name];
    const spec = ENV_KEYS[normKey(name.slice('ELEMENTAL_'.length))];
    if (value === undefined || spec === undefined) return;
    b.put(spec, value, { file: 'environment', key: name }, `env (${name})`, i);
  });
  return b.layer('environment');
}

/** A layer from explicit caller values. An invalid image is REFERENCE_INVALID, other invalid values USAGE. */
export function overridesLayer(o: ConfigOverrides): ConfigLayer {
  const values: Record<string, Sourced<unknown>> = {};
  if (o.image !== undefined) {
    try {
      values['image'] = { value: parseImageUri(o.image), origin: 'flag (image)', order: 0 };
    } catch (e) {
      throw new AgentError('REFERENCE_INVALID', `invalid image ${JSON.stringify(o.image)}: ${(e as Error).message}`, { cause: e });
    }
  }
  if (o.noVerify !== undefined) values['verify'] = { value: !o.noVerify, origin: 'flag (noVerify)', order: 0 };
  if (o.imageSizeMiB !== undefined) {
    if (!Number.isSafeInteger(o.imageSizeMiB) || o.imageSizeMiB <= 0) {
      throw new AgentError('USAGE', `invalid image size ${o.imageSizeMiB}: want a positive whole number of MiB`);
    }
    values['imageSizeMiB'] = { value: o.imageSizeMiB, origin: 'flag (imageSizeMiB)', order: 0 };
  }
  if (o.recovery !== undefined) values['upgradeRecovery'] = { value: o.recovery, origin: 'flag (recovery)', order: 0 };
  return { name: 'overrides', values: values as ConfigLayer['values'] };
}

/**
 * A layer from a config.yaml / config.d file: v0.0.15 flat keys (and the upper-case env keys), G3 top-level keys and
 * the `upgrade:` section. Syntax errors and bad values throw ConfigError with the line; unknown keys become warnings.
 */
export function yamlLayer(file: string, text: string): { layer: ConfigLayer; warnings: string[] } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, schema: 'failsafe', uniqueKeys: true, prettyErrors: true });
  const err = doc.errors[0];
  if (err !== undefined) {
    const line = err.linePos?.[0]?.line;
    throw new ConfigError(file, `invalid YAML: ${yamlMessage(err)}`, {
      ...(line !== undefined ? { line } : {}),
      cause: err,
    });
  }
  const warnings: string[] = doc.warnings.map((w) => `${file}${w.linePos ? `:${w.linePos[0].line}` : ''}: ${yamlMessage(w)}`);
  const b = new LayerBuilder();
  const lineOf = (n: Node | null | undefined): number | undefined =>
    n?.range ? lc.linePos(n.range[0]).line : undefined;
  const offsetOf = (n: Node | null | undefined): number => n?.range?.[0] ?? 0;
  const deref = (n: unknown): Node | null => {
    if (isAlias(n)) return deref(n.resolve(doc as Document.Parsed));
    return (n as Node | null | undefined) ?? null;
  };
  const isNull = (n: Node | null): boolean =>
    n === null || (isScalar(n) && (n.value === '' || (n.type === 'PLAIN' && /^(~|null|Null|NULL)$/.test(String(n.value)))));

  /** Walk one mapping against a table; `sections` maps a key to a nested walker. */
  const walk = (
    map: Node | null,
    path: string,
    table: Readonly<Record<string, KeySpec>>,
    sections: Readonly<Record<string, (n: Node | null, p: string) => void>>,
    ignoreSilently: ReadonlySet<string>,
  ): void => {
    if (isNull(map)) return;
    if (!isMap(map)) fail({ file, key: path, ...lineOpt(lineOf(map)) }, 'expected a mapping');
    for (const pair of map.items as Pair<unknown, unknown>[]) {
      const keyNode = deref(pair.key);
      if (!isScalar(keyNode)) fail({ file, key: path, ...lineOpt(lineOf(keyNode)) }, 'expected a plain key');
      const rawKey = String(keyNode.value);
      const keyPath = path ? `${path}.${rawKey}` : rawKey;
      const norm = normKey(rawKey);
      const valueNode = deref(pair.value);
      const line = lineOf(valueNode) ?? lineOf(keyNode);
      const w: Where = { file, key: keyPath, ...lineOpt(line) };
      const section = sections[norm];
      if (section !== undefined) {
        section(valueNode, keyPath);
        continue;
      }
      const spec = table[norm];
      if (spec === undefined) {
        if (!ignoreSilently.has(norm)) warnings.push(`${file}${line !== undefined ? `:${line}` : ''}: unknown key "${keyPath}" ignored`);
        continue;
      }
      if (isNull(valueNode)) continue;
      let raw: string | string[];
      if (isScalar(valueNode)) raw = String(valueNode.value);
      else if (isSeq(valueNode)) {
        raw = valueNode.items.map((item) => {
          const it = deref(item);
          if (!isScalar(it)) fail({ file, key: keyPath, ...lineOpt(lineOf(it) ?? line) }, 'expected a list of plain values');
          return String(it.value).trim();
        }).filter((s) => s !== '');
      } else fail(w, 'expected a value, got a mapping');
      b.put(spec, raw, w, fileOrigin(file, line, keyPath), offsetOf(valueNode ?? keyNode));
    }
  };
  const none: Readonly<Record<string, (n: Node | null, p: string) => void>> = {};
  const upgrade = (n: Node | null, p: string): void =>
    walk(n, p, UPGRADE_SECTION, {
      system: (m, q) => walk(m, q, SYSTEM_SECTION, none, new Set()),
      'recovery-system': (m, q) => walk(m, q, RECOVERY_SYSTEM_SECTION, none, new Set()),
    }, new Set());
  walk(doc.contents as Node | null, '', FLAT, { upgrade }, OTHER_COMMAND_KEYS);
  return { layer: b.layer(file), warnings };
}

/** The first line of a yaml-package error, without its own " at line L, column C:" suffix. */
function yamlMessage(e: { message: string; code: string }): string {
  return (e.message.split('\n')[0] ?? e.code).replace(/ at line \d+, column \d+:?$/, '');
}

function lineOpt(line: number | undefined): { line?: number } {
  return line !== undefined ? { line } : {};
}

/** The winning value of a setting over all layers, with the index of its layer (higher = stronger). */
interface Picked<T> {
  readonly value: T;
  readonly origin: string;
  readonly rank: number;
}

/** Merge layers (lowest precedence first) over the built-in defaults. */
export function resolveConfig(layers: readonly ConfigLayer[]): AgentConfig {
  const pick = <K extends SettingName>(k: K): Picked<SettingValues[K]> | undefined => {
    for (let rank = layers.length - 1; rank >= 0; rank--) {
      const s = layers[rank]?.values[k];
      if (s !== undefined) return { value: s.value as SettingValues[K], origin: s.origin, rank };
    }
    return undefined;
  };
  const origins: Record<string, string> = {};
  const get = <K extends SettingName>(k: K, originKey: string, dflt: SettingValues[K]): SettingValues[K] => {
    const p = pick(k);
    origins[originKey] = p?.origin ?? 'default';
    return p?.value ?? dflt;
  };
  /** A setting whose absence means something of its own (null); its origin is then `default`. */
  const getOrNull = <K extends SettingName>(k: K, originKey: string): SettingValues[K] | null => {
    const p = pick(k);
    origins[originKey] = p?.origin ?? 'default';
    return p?.value ?? null;
  };
  const getOpt = <K extends SettingName>(k: K, originKey: string): SettingValues[K] | undefined => {
    const p = pick(k);
    if (p !== undefined) origins[originKey] = p.origin;
    return p?.value;
  };

  const channelUpgrades = get('channelUpgrades', 'channelUpgrades', false);
  const upgradeRecovery = get('upgradeRecovery', 'upgradeRecovery', false);

  const interpreted = (k: 'upgradeImage' | 'recoveryImage'): Picked<ImageSource> | undefined => {
    const p = pick(k);
    return p && { value: interpretImageSetting(p.value, channelUpgrades), origin: p.origin, rank: p.rank };
  };
  /** Highest rank wins; on a tie the earlier candidate in the list wins. */
  const best = (cands: Array<Picked<ImageSource> | undefined>): Picked<ImageSource> | undefined => {
    let out: Picked<ImageSource> | undefined;
    for (const c of cands) if (c !== undefined && (out === undefined || c.rank > out.rank)) out = c;
    return out;
  };
  const configured = best([pick('systemUri'), pick('dockerImage'), pick('directory'), interpreted('upgradeImage')]);
  let upgrade = configured;
  let recovery =
    best([pick('recoveryUri'), interpreted('recoveryImage')]) ??
    (configured && { ...configured, origin: `fallback to upgradeSource: ${configured.origin}` });
  const flagImage = pick('image');
  if (flagImage !== undefined) {
    if (upgradeRecovery) recovery = flagImage;
    else upgrade = flagImage;
  }
  if (upgrade) origins['upgradeSource'] = upgrade.origin;
  if (recovery) origins['recoverySource'] = recovery.origin;

  const label = (k: keyof Omit<Labels, 'grub'>): string => get(`labels.${k}`, `labels.${k}`, DEFAULT_LABELS[k]);
  const labels: Labels = {
    state: label('state'),
    active: label('active'),
    passive: label('passive'),
    recovery: label('recovery'),
    system: label('system'),
    oem: label('oem'),
    persistent: label('persistent'),
    grub: DEFAULT_LABELS.grub,
  };
  origins['labels.grub'] = 'default';

  const verify = get('verify', 'verify', true);
  const repository = getOpt('cosign.repository', 'cosign.repository');
  const recoveryImageSizeMiB = getOpt('recoveryImageSizeMiB', 'recoveryImageSizeMiB');
  const systemFs = getOpt('systemFs', 'systemFs');
  const recoveryFs = getOpt('recoveryFs', 'recoveryFs');
  const grubEntryName = getOpt('grubEntryName', 'grubEntryName');
  const squashCompression = getOpt('squashCompression', 'squashCompression');

  const config: AgentConfig = {
    ...(upgrade ? { upgradeSource: upgrade.value } : {}),
    ...(recovery ? { recoverySource: recovery.value } : {}),
    upgradeRecovery,
    channelUpgrades,
    imageSizeMiB: getOrNull('imageSizeMiB', 'imageSizeMiB'),
    bootAssessmentTries: get('bootAssessmentTries', 'bootAssessmentTries', DEFAULT_TRIES),
    ...(recoveryImageSizeMiB !== undefined ? { recoveryImageSizeMiB } : {}),
    ...(systemFs !== undefined ? { systemFs } : {}),
    ...(recoveryFs !== undefined ? { recoveryFs } : {}),
    ...(grubEntryName !== undefined ? { grubEntryName } : {}),
    labels,
    verify,
    ...(verify ? {} : { verifyDisabledBy: origins['verify'] ?? 'default' }),
    cosign: {
      enabled: get('cosign.enabled', 'cosign.enabled', false),
      publicKeyLocations: [...get('cosign.publicKeyLocations', 'cosign.publicKeyLocations', [])],
      experimental: get('cosign.experimental', 'cosign.experimental', false),
      ...(repository !== undefined ? { repository } : {}),
    },
    cloudInitPaths: [...get('cloudInitPaths', 'cloudInitPaths', [])],
    strict: get('strict', 'strict', false),
    reboot: get('reboot', 'reboot', false),
    poweroff: get('poweroff', 'poweroff', false),
    ...(squashCompression !== undefined ? { squashCompression: [...squashCompression] } : {}),
    origins,
  };
  return config;
}
