/**
 * mudler/entities as yip's ensure_entities / delete_entities use it (yip.md 3.4, 3.5): a YAML entity with a `kind`
 * (user, shadow, group, gshadow) applied to, or deleted from, /etc/passwd, /etc/shadow, /etc/group or /etc/gshadow
 * (or the item's `path`), through the root prefix. A file's permission bits are kept.
 *
 * One deliberate deviation: deleting a group that is not there removes nothing (entities removes the file's first
 * line then, a bug the spec says not to copy).
 */
import { stat, writeFile } from 'node:fs/promises';
import { readText } from './read.ts';
import { parse } from 'yaml';
import { hashPassword } from './sha512crypt.ts';

export type EntityKind = 'user' | 'shadow' | 'group' | 'gshadow';

export const DEFAULT_FILES: Readonly<Record<EntityKind, string>> = { user: '/etc/passwd', shadow: '/etc/shadow', group: '/etc/group', gshadow: '/etc/gshadow' };

export interface Entity {
  kind: EntityKind;
  /** The fields of the line, in file order. */
  fields: string[];
  /** group only: whether a gid was given (an absent gid keeps the existing one). */
  gidGiven?: boolean;
}

const FIELDS: Readonly<Record<EntityKind, readonly string[]>> = {
  user: ['username', 'password', 'uid', 'gid', 'info', 'homedir', 'shell'],
  shadow: ['username', 'password', 'last_changed', 'minimum_changed', 'maximum_changed', 'warn', 'inactive', 'expire', 'reserved'],
  group: ['group_name', 'password', 'gid', 'users'],
  gshadow: ['name', 'password', 'administrators', 'members'],
};

/** Parse an entity's YAML text (already templated). Throws on an unknown kind or a malformed document. */
export function parseEntity(text: string): { kind: EntityKind; data: Record<string, unknown> } {
  const doc = parse(text, { version: '1.1' }) as unknown;
  if (typeof doc !== 'object' || doc === null) throw new Error('an entity is a mapping with a kind');
  const data = doc as Record<string, unknown>;
  const kind = data['kind'];
  if (kind !== 'user' && kind !== 'shadow' && kind !== 'group' && kind !== 'gshadow') throw new Error(`unknown entity kind ${JSON.stringify(kind)}`);
  return { kind, data };
}

const s = (v: unknown): string => (v === undefined || v === null ? '' : String(v));
const lines = (text: string): string[] => text.split('\n').filter((l, i, all) => l !== '' || i < all.length - 1);

/** The lowest free id in 1000..60000 among the third fields of `text`. */
function freeId(text: string): number {
  const used = new Set(lines(text).map((l) => Number(l.split(':')[2])));
  for (let id = 1000; id <= 60000; id++) if (!used.has(id)) return id;
  throw new Error('no free id in 1000-60000');
}

/** The entity's line fields, with entities' prepare steps (free ids, group lookup, hashing, `now`). */
export function prepareEntity(kind: EntityKind, data: Record<string, unknown>, files: { passwd: string; group: string; now: Date }): Entity {
  const f = FIELDS[kind].map((k) => s(data[k]));
  if (kind === 'user') {
    if (Number(data['uid'] ?? 0) < 0) f[2] = String(freeId(files.passwd));
    const group = s(data['group']);
    if (group !== '') {
      const g = lines(files.group).map((l) => l.split(':')).find((l) => l[0] === group);
      if (g === undefined) throw new Error(`group ${group} not found`);
      f[3] = g[2] as string;
    }
    if (f[2] === '') f[2] = '0';
    if (f[3] === '') f[3] = '0';
    if (f[4] === '') f[4] = 'Created by entities';
  }
  if (kind === 'shadow') {
    if (f[2] === 'now') f[2] = String(Math.max(1, Math.floor(files.now.getTime() / 86_400_000)));
    const pw = f[1] as string;
    if (pw !== '' && !pw.startsWith('$') && !pw.startsWith('!') && pw !== '*') f[1] = hashPassword(pw);
  }
  const entity: Entity = { kind, fields: f };
  if (kind === 'group') {
    entity.gidGiven = data['gid'] !== undefined && data['gid'] !== null;
    if (entity.gidGiven && Number(data['gid']) < 0) f[2] = String(freeId(files.group));
  }
  return entity;
}

/** The file's new text with the entity applied (replaced, merged or appended). */
export function applyToText(text: string, e: Entity): string {
  const all = lines(text);
  const key = e.fields[0] as string;
  const i = all.findIndex((l) => l.split(':')[0] === key);
  if (e.kind === 'shadow' && all.some((l) => l.split(':').length !== 9)) throw new Error('a line of the shadow file does not have 9 fields');
  let line = e.fields.join(':');
  if (i >= 0) {
    const old = (all[i] as string).split(':');
    if (e.kind === 'shadow') line = e.fields.map((v, j) => (v === '' ? old[j] ?? '' : v)).join(':');
    if (e.kind === 'group') {
      const f = [...e.fields];
      if (f[1] === '') f[1] = old[1] ?? '';
      if (e.gidGiven !== true) f[2] = old[2] ?? '';
      const existing = (old[3] ?? '').split(',').filter(Boolean);
      if (existing.length > 0) f[3] = [...new Set([...existing, ...(f[3] ?? '').split(',')])].filter(Boolean).join(',');
      line = f.join(':');
    }
    all[i] = line;
  } else {
    all.push(line);
  }
  return all.map((l) => `${l}\n`).join('');
}

/** The file's new text with the entity deleted: the exact line (user, shadow, gshadow) or the group of that name. */
export function deleteFromText(text: string, e: Entity): string {
  if (e.kind === 'group') {
    const all = lines(text);
    const i = all.findIndex((l) => l.split(':')[0] === e.fields[0]);
    if (i >= 0) all.splice(i, 1);
    return all.map((l) => `${l}\n`).join('');
  }
  return text.replace(`${e.fields.join(':')}\n`, '');
}

/** Write `text` to `file`, keeping its permission bits (new files: 0644). */
export async function writeKeepingMode(file: string, text: string): Promise<void> {
  const mode = await stat(file).then((st) => st.mode & 0o7777, () => 0o644);
  await writeFile(file, text, { mode });
}

export async function readOrEmpty(file: string): Promise<string> {
  return readText(file).catch(() => '');
}
