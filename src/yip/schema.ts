/**
 * PURE: a yip document decoded the way yip's typed Go decode does it (yip.md 1.2, 1.3), for the yip that cOS v0.8.14
 * pins (mudler/yip 2617d71, yaml.v2): YAML 1.1 (`0644` octal, `yes`/`on` booleans), `<<` merge keys, the first
 * document only, a duplicate key's last value wins, unknown keys ignored, scalars into string fields as their source
 * text, and any type mismatch rejecting the whole document. `after:` (yip >= 1.0) is read too: the executor orders
 * by it.
 *
 * A rejected document is returned as problems (file, stage, step, key, line), never thrown: the loader skips that file
 * with a warning and the others run.
 */
import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseAllDocuments, type Document, type Node, type Pair, type YAMLMap } from 'yaml';

export interface YipFile {
  path: string;
  permissions: number;
  owner: number;
  group: number;
  content: string;
  encoding: string;
  ownerstring: string;
}

export interface YipDirectory {
  path: string;
  permissions: number;
  owner: number;
  group: number;
}

export interface YipDownload {
  path: string;
  url: string;
  permissions: number;
  owner: number;
  group: number;
  timeout: number;
  ownerstring: string;
}

export interface YipUser {
  name: string;
  passwd: string;
  ssh_authorized_keys: string[];
  gecos: string;
  homedir: string;
  no_create_home: boolean;
  primary_group: string;
  groups: string[];
  no_user_group: boolean;
  system: boolean;
  no_log_init: boolean;
  shell: string;
  lock_passwd: boolean;
  uid: string;
}

export interface YipEntity {
  path: string;
  entity: string;
}

export interface YipStep {
  name: string;
  if: string;
  node: string;
  after: Array<{ name: string }>;
  commands: string[];
  files: YipFile[];
  directories: YipDirectory[];
  downloads: YipDownload[];
  dns: { nameservers: string[]; search: string[]; options: string[]; path: string };
  hostname: string;
  sysctl: Record<string, string>;
  authorized_keys: Record<string, string[]>;
  users: Record<string, YipUser>;
  ensure_entities: YipEntity[];
  delete_entities: YipEntity[];
  modules: string[];
  systemctl: { enable: string[]; disable: string[]; start: string[]; mask: string[] };
  environment: Record<string, string>;
  environment_file: string;
  timesyncd: Record<string, string>;
  systemd_firstboot: Record<string, string>;
  datasource: { providers: string[]; path: string };
  layout: {
    device: { path: string; label: string };
    expand_partition: { size: number } | null;
    add_partitions: Array<{ fsLabel: string; pLabel: string; size: number; filesystem: string }>;
  };
  git: { url: string; path: string; branch: string; branch_only: boolean; auth: { username: string; password: string; private_key: string; insecure: boolean; public_key: string } };
}

export interface YipConfig {
  name: string;
  /** Stage name → its steps, in file order (stage names are free strings: `boot`, `boot.before`, `after-upgrade`). */
  stages: Record<string, YipStep[]>;
}

export interface YipProblem {
  file: string;
  /** 1-based line of the offending node (0: unknown). */
  line: number;
  stage: string | null;
  /** Index of the step in its stage (null: not inside a step). */
  step: number | null;
  /** The key path inside the step (or the document), e.g. `files[0].permissions`. */
  key: string;
  message: string;
}

class TypeMismatch extends Error {
  readonly node: Node | null;
  readonly where: string;
  constructor(node: Node | null, where: string, message: string) {
    super(message);
    this.node = node;
    this.where = where;
  }
}

/** A decoder of one field type: the node (null/undefined: absent or `~`) and where it is, for messages. */
type Dec<T> = (node: Node | null | undefined, where: string) => T;

/** Nodes a document may expand to through its aliases before it is refused (an alias bomb stays bounded). */
export const MAX_NODES = 100_000;

class AliasBomb extends Error {}

/** The document being decoded (decodeYip is synchronous: one at a time) and the nodes visited so far. */
let current: { doc: Document.Parsed; visits: number; resolved: Map<Node, Node | undefined> } | null = null;

/** The node an alias stands for (aliases of aliases too), each visit counted against MAX_NODES. */
function deref(node: Node | null | undefined): Node | null | undefined {
  let n = node;
  for (let hops = 0; isAlias(n); hops++) {
    if (current === null || hops > 100) throw new AliasBomb('alias chain too long');
    // Alias.resolve searches the document for its anchor: once per alias
    const alias = n;
    if (!current.resolved.has(alias)) current.resolved.set(alias, alias.resolve(current.doc) as Node | undefined);
    n = current.resolved.get(alias);
  }
  if (current !== null && ++current.visits > MAX_NODES) throw new AliasBomb(`the document expands to more than ${MAX_NODES} nodes through its aliases`);
  return n;
}

const kindOf = (node: Node): string => (isMap(node) ? 'a mapping' : isSeq(node) ? 'a list' : isScalar(node) ? `the scalar ${JSON.stringify(String(node.source ?? node.value))}` : 'a node');

function isNull(node: Node | null | undefined): node is null | undefined {
  return node === null || node === undefined || (isScalar(node) && node.value === null);
}

/** A scalar into a Go string: its source text (yaml.v2 sets n.value); `~` → "". */
const str: Dec<string> = (raw, where) => {
  const node = deref(raw);
  if (isNull(node)) return '';
  if (!isScalar(node)) throw new TypeMismatch(node, where, `expected a string, got ${kindOf(node)}`);
  return typeof node.value === 'string' ? node.value : String(node.source ?? node.value);
};

/** An int field: YAML 1.1 ints (octal 0644, 0x, 0b, _), floats truncated; strings and booleans are mismatches. */
function int(min: number, max: number, type: string): Dec<number> {
  return (raw, where) => {
    const node = deref(raw);
    if (isNull(node)) return 0;
    // yaml.v2 resolves a plain scalar with Go's strconv.ParseInt(s, 0, 64): 0o/0x/0b prefixes and underscores too
    if (isScalar(node) && typeof node.value === 'string' && (node.type === undefined || node.type === 'PLAIN')) {
      const v = goParseInt(node.value);
      if (v !== null) {
        if (v < min || v > max) throw new TypeMismatch(node, where, `cannot unmarshal ${kindOf(node)} into ${type} (out of range)`);
        return v;
      }
    }
    if (!isScalar(node) || typeof node.value !== 'number' && typeof node.value !== 'bigint') {
      throw new TypeMismatch(node, where, `cannot unmarshal ${node && isScalar(node) ? kindOf(node) : kindOf(node)} into ${type}`);
    }
    const v = Math.trunc(Number(node.value));
    if (!Number.isFinite(v) || v < min || v > max) throw new TypeMismatch(node, where, `cannot unmarshal ${kindOf(node)} into ${type} (out of range)`);
    return v;
  };
}
/** Go's strconv.ParseInt(s, 0, 64) for the literals YAML 1.1 leaves as strings (`0o644`, `0x_1`); null otherwise. */
export function goParseInt(text: string): number | null {
  const m = /^([+-]?)(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|0[0-7_]*|[1-9][0-9_]*)$/.exec(text);
  if (m === null) return null;
  let body = m[2] as string;
  // underscores only between digits or right after a base prefix (Go's underscoreOK): not doubled, not last
  if (body.includes('_') && (/__|_$/.test(body) || /^0[xXoObB]?$/.test(body.replace(/_/g, '')))) return null;
  body = body.replace(/_/g, '');
  const sign = m[1] === '-' ? -1 : 1;
  let v: number;
  if (/^0[xX]/.test(body)) v = Number.parseInt(body.slice(2), 16);
  else if (/^0[oO]/.test(body)) v = Number.parseInt(body.slice(2), 8);
  else if (/^0[bB]/.test(body)) v = Number.parseInt(body.slice(2), 2);
  else if (body.startsWith('0')) v = body === '0' ? 0 : Number.parseInt(body.slice(1), 8);
  else v = Number.parseInt(body, 10);
  return Number.isFinite(v) ? sign * v : null;
}

const uint32 = int(0, 0xffffffff, 'uint32');
const goInt = int(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 'int');

const bool: Dec<boolean> = (raw, where) => {
  const node = deref(raw);
  if (isNull(node)) return false;
  if (!isScalar(node) || typeof node.value !== 'boolean') throw new TypeMismatch(node, where, `cannot unmarshal ${kindOf(node)} into bool`);
  return node.value;
};

function list<T>(item: Dec<T>): Dec<T[]> {
  return (raw, where) => {
    const node = deref(raw);
    if (isNull(node)) return [];
    if (!isSeq(node)) throw new TypeMismatch(node, where, `expected a list, got ${kindOf(node)}`);
    return node.items.map((n, i) => item(n as Node | null, `${where}[${i}]`));
  };
}

const isMergeKey = (k: Node | null): boolean =>
  isScalar(k) && ((typeof k.value === 'symbol' && k.value.description === '<<') || (k.value === '<<' && (k.type === undefined || k.type === 'PLAIN')));

/**
 * The pairs of a mapping: the last of duplicate keys wins (yaml.v2); `<<` merge keys (a mapping, or a list of them,
 * usually aliases) fill in the keys the mapping does not set itself, earlier merge sources before later ones.
 */
function entries(node: YAMLMap, where: string): Map<string, Node | null> {
  const out = new Map<string, Node | null>();
  const merged: Array<Map<string, Node | null>> = [];
  for (const p of node.items as Array<Pair<unknown, unknown>>) {
    if (!isPair(p)) continue;
    const k = deref(p.key as Node | null) ?? null;
    if (isMergeKey(k)) {
      const src = deref(p.value as Node | null);
      const sources = isSeq(src) ? src.items.map((i) => deref(i as Node | null)) : [src];
      for (const m of sources) {
        if (!isMap(m)) throw new TypeMismatch(m ?? null, where, 'a merge key (<<) whose value is not a mapping');
        merged.push(entries(m, where));
      }
      continue;
    }
    const key = isScalar(k) ? String(k.value) : null;
    if (key === null) throw new TypeMismatch(k, where, 'a mapping key that is not a scalar');
    out.set(key, (p.value ?? null) as Node | null);
  }
  for (const m of merged) for (const [k, v] of m) if (!out.has(k)) out.set(k, v);
  return out;
}

function stringMap<T>(value: Dec<T>): Dec<Record<string, T>> {
  return (raw, where) => {
    const node = deref(raw);
    if (isNull(node)) return {};
    if (!isMap(node)) throw new TypeMismatch(node, where, `expected a mapping, got ${kindOf(node)}`);
    const out: Record<string, T> = {};
    for (const [k, v] of entries(node, where)) out[k] = value(v, `${where}.${k}`);
    return out;
  };
}

type Fields<T> = { [K in keyof T]: Dec<T[K]> };

function struct<T>(fields: Fields<T>): Dec<T> {
  return (raw, where) => {
    const node = deref(raw);
    if (!isNull(node) && !isMap(node)) throw new TypeMismatch(node, where, `expected a mapping, got ${kindOf(node)}`);
    const given = isNull(node) ? new Map<string, Node | null>() : entries(node as YAMLMap, where);
    const out = {} as T;
    for (const key of Object.keys(fields) as Array<keyof T & string>) {
      out[key] = fields[key](given.get(key), where === '' ? key : `${where}.${key}`);
    }
    return out;
  };
}

/** A pointer field (Go *T): absent → null. */
function optional<T>(dec: Dec<T>): Dec<T | null> {
  return (raw, where) => {
    const node = deref(raw);
    return isNull(node) ? null : dec(node, where);
  };
}

const file = struct<YipFile>({ path: str, permissions: uint32, owner: goInt, group: goInt, content: str, encoding: str, ownerstring: str });
const directory = struct<YipDirectory>({ path: str, permissions: uint32, owner: goInt, group: goInt });
const download = struct<YipDownload>({ path: str, url: str, permissions: uint32, owner: goInt, group: goInt, timeout: goInt, ownerstring: str });
const user = struct<YipUser>({
  name: str, passwd: str, ssh_authorized_keys: list(str), gecos: str, homedir: str, no_create_home: bool, primary_group: str, groups: list(str),
  no_user_group: bool, system: bool, no_log_init: bool, shell: str, lock_passwd: bool, uid: str,
});
const entity = struct<YipEntity>({ path: str, entity: str });

const stepFields: Fields<YipStep> = {
  name: str,
  if: str,
  node: str,
  after: list(struct<{ name: string }>({ name: str })),
  commands: list(str),
  files: list(file),
  directories: list(directory),
  downloads: list(download),
  dns: struct({ nameservers: list(str), search: list(str), options: list(str), path: str }),
  hostname: str,
  sysctl: stringMap(str),
  authorized_keys: stringMap(list(str)),
  users: stringMap(user),
  ensure_entities: list(entity),
  delete_entities: list(entity),
  modules: list(str),
  systemctl: struct({ enable: list(str), disable: list(str), start: list(str), mask: list(str) }),
  environment: stringMap(str),
  environment_file: str,
  timesyncd: stringMap(str),
  systemd_firstboot: stringMap(str),
  datasource: struct({ providers: list(str), path: str }),
  layout: struct({
    device: struct({ path: str, label: str }),
    expand_partition: optional(struct({ size: goInt })),
    add_partitions: list(struct({ fsLabel: str, pLabel: str, size: goInt, filesystem: str })),
  }),
  git: struct({
    url: str, path: str, branch: str, branch_only: bool,
    auth: struct({ username: str, password: str, private_key: str, insecure: bool, public_key: str }),
  }),
};
const step = struct<YipStep>(stepFields);

/** An empty step (a `null` in a stage's list decodes as one: it runs nothing). */
export function emptyStep(): YipStep {
  return step(null, '');
}

/**
 * yip's IsCloudConfig: the first 10 pieces of the text split on newlines (the 10th holds the rest), each with trailing
 * whitespace trimmed: exactly `#cloud-config` says yes; empty lines and other `#` lines go on; anything else says no.
 * Leading spaces are not trimmed.
 */
export function isCloudConfig(text: string): boolean {
  const parts = text.split('\n');
  const pieces = parts.length > 10 ? [...parts.slice(0, 9), parts.slice(9).join('\n')] : parts;
  for (const piece of pieces) {
    const line = piece.replace(/\s+$/, '');
    if (line === '#cloud-config') return true;
    if (line === '' || line.startsWith('#')) continue;
    return false;
  }
  return false;
}

interface CloudUser extends Omit<YipUser, 'name'> {
  name: string;
}

const cloudUser = struct<CloudUser>({
  name: str, passwd: str, ssh_authorized_keys: list(str), gecos: str, homedir: str, no_create_home: bool, primary_group: str, groups: list(str),
  no_user_group: bool, system: bool, no_log_init: bool, shell: str, lock_passwd: bool, uid: str,
});
const cloudFile = struct({ path: str, content: str, encoding: str, owner: str, permissions: str });

/** `permissions` of write_files: a string parsed as octal (`"0644"`, `"644"`, unquoted 644 alike); "" or invalid → 0. */
function octal(text: string): number {
  return /^[0-7]+$/.test(text) ? Number.parseInt(text, 8) : 0;
}

/**
 * The cloud-config subset yip reads (users, ssh_authorized_keys, write_files, milpa_files, hostname, runcmd,
 * growpart) as yip stages (yip.md 1.5, yip 2617d71: no `network` stage): `boot` step 0 with runcmd, the files, the
 * users and their keys (each user's own plus the global ones; the global ones to root when there is no user), then a
 * `layout` step per growpart device; `initramfs` with the hostname. The steps exist even when empty.
 */
function cloudConfigStages(top: Map<string, Node | null>): Record<string, YipStep[]> {
  const users = list(cloudUser)(top.get('users'), 'users');
  const globalKeys = list(str)(top.get('ssh_authorized_keys'), 'ssh_authorized_keys');
  const files = [...list(cloudFile)(top.get('write_files'), 'write_files'), ...list(cloudFile)(top.get('milpa_files'), 'milpa_files')];
  const runcmd = list(str)(top.get('runcmd'), 'runcmd');
  const hostname = str(top.get('hostname'), 'hostname');
  const growpart = struct({ mode: str, devices: list(str) })(top.get('growpart'), 'growpart');
  const boot = emptyStep();
  boot.commands = runcmd;
  boot.files = files.map((f) => ({ path: f.path, permissions: octal(f.permissions), owner: 0, group: 0, content: f.content, encoding: f.encoding, ownerstring: f.owner }));
  for (const u of users) {
    boot.users[u.name] = { ...u };
    boot.authorized_keys[u.name] = [...u.ssh_authorized_keys, ...globalKeys];
  }
  if (users.length === 0) boot.authorized_keys['root'] = globalKeys;
  const steps = [boot];
  for (const device of growpart.devices) {
    const s = emptyStep();
    s.layout.device.path = device;
    s.layout.expand_partition = { size: 0 };
    steps.push(s);
  }
  const initramfs = emptyStep();
  initramfs.hostname = hostname;
  return { boot: steps, initramfs: [initramfs] };
}

export interface DecodeResult {
  /** Null when the document is rejected (a YAML error or a type mismatch): none of its steps run. */
  config: YipConfig | null;
  problems: YipProblem[];
}

/** Where in the document a key path is: the stage and step index of `stages.<stage>[<i>]...`, the rest as the key. */
function locate(where: string): { stage: string | null; step: number | null; key: string } {
  const m = /^stages\.(.+?)\[(\d+)\](?:\.(.*))?$/.exec(where) ?? /^stages\.(.+?)\[(\d+)\](\[.*)$/.exec(where);
  if (m !== null) return { stage: m[1] as string, step: Number(m[2]), key: m[3] ?? '' };
  const s = /^stages\.([^[]+)$/.exec(where);
  if (s !== null) return { stage: s[1] as string, step: null, key: '' };
  return { stage: null, step: null, key: where };
}

/** Decode one yip document (the text of `file`). */
export function decodeYip(text: string, file: string): DecodeResult {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { version: '1.1', merge: true, uniqueKeys: false, lineCounter: lines, prettyErrors: false });
  const doc = Array.isArray(docs) ? docs[0] : undefined;
  if (doc === undefined) return { config: { name: '', stages: isCloudConfig(text) ? cloudConfigStages(new Map()) : {} }, problems: [] };
  const lineOf = (node: Node | null | undefined): number => {
    const off = node?.range?.[0];
    return off === undefined ? 0 : lines.linePos(off).line;
  };
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const line = e?.linePos?.[0]?.line ?? (e?.pos !== undefined ? lines.linePos(e.pos[0]).line : 0);
    return { config: null, problems: [{ file, line, stage: null, step: null, key: '', message: `invalid YAML: ${e?.message.split('\n')[0] ?? 'parse error'}` }] };
  }
  current = { doc, visits: 0, resolved: new Map() };
  try {
    const root = deref(doc.contents as Node | null);
    if (isNull(root)) return { config: { name: '', stages: isCloudConfig(text) ? cloudConfigStages(new Map()) : {} }, problems: [] };
    if (!isMap(root)) throw new TypeMismatch(root, '', `expected a mapping at the top, got ${kindOf(root)}`);
    const top = entries(root, '');
    const name = str(top.get('name'), 'name');
    const stagesNode = top.get('stages');
    // A #cloud-config document: its translation first (yip.md 1.5), then its `stages:` appended (optimistic merge).
    const stages: Record<string, YipStep[]> = isCloudConfig(text) ? cloudConfigStages(top) : {};
    if (!isNull(stagesNode)) {
      if (!isMap(stagesNode)) throw new TypeMismatch(stagesNode, 'stages', `expected a mapping of stage names to lists of steps, got ${kindOf(stagesNode)}`);
      for (const [stage, stepsNode] of entries(stagesNode, 'stages')) {
        stages[stage] = [...(stages[stage] ?? []), ...list(step)(stepsNode, `stages.${stage}`)];
      }
    }
    return { config: { name, stages }, problems: [] };
  } catch (e) {
    if (!(e instanceof TypeMismatch)) {
      const message = e instanceof AliasBomb ? `refused: ${e.message}` : `invalid YAML: ${e instanceof Error ? e.message : String(e)}`;
      return { config: null, problems: [{ file, line: 0, stage: null, step: null, key: '', message }] };
    }
    const at = locate(e.where);
    return { config: null, problems: [{ file, line: lineOf(e.node), ...at, message: e.message }] };
  } finally {
    current = null;
  }
}
