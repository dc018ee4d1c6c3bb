/**
 * Registry credentials (containers auth.json / Docker config.json), registries.conf, and WWW-Authenticate challenges.
 *
 * The parsers are pure; only `loadAuthFiles` and `loadRegistriesConf` read files (through a SysRoot).
 *
 * auth.json: `{"auths": {"<key>": {"auth": base64("user:pass")} | {"identitytoken": ...} | {"registrytoken": ...}}}`.
 * Keys may be `host[:port]`, `host[:port]/namespace[/repo]` (containers-auth.json: the most specific key wins), or a
 * Docker legacy URL (`https://index.docker.io/v1/`, normalised to `docker.io`). The first file with a matching entry
 * wins. `credsStore` / `credHelpers` (external credential helper programs) are not supported: they are reported in
 * `helpers` so the caller can say so.
 *
 * registries.conf: v2 `[[registry]]` tables (`prefix`/`location`, `insecure`, `blocked`; the longest matching prefix
 * wins, `*.example.com` wildcards allowed) and the v1 `[registries.insecure]` / `[registries.block]` lists. Mirrors and
 * drop-in directories are not supported.
 */
import { parse as parseToml, TomlError } from 'smol-toml';
import { ConfigError } from '../model/errors.ts';
import { readOptionalText } from '../sys/files.ts';
import type { SysRoot } from '../sys/root.ts';
import { DOCKER_HUB, DOCKER_HUB_API } from './reference.ts';

export interface Credential {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (`identitytoken`), exchanged at the token endpoint. */
  identityToken?: string;
  /** A bearer token used as is (`registrytoken`). */
  registryToken?: string;
  /** The file it came from. */
  source: string;
  /** The auths key it was found under (normalised). */
  key: string;
}

export interface AuthFile {
  file: string;
  entries: Map<string, Credential>;
  /** Registries or stores served by credential helpers (`credsStore`, `credHelpers`), which are not supported. */
  helpers: string[];
}

/** Default auth files, in order (host paths: map them through the SysRoot). */
export function defaultAuthFiles(env: NodeJS.ProcessEnv = {}): string[] {
  const home = env.HOME && env.HOME.startsWith('/') ? env.HOME : '/root';
  const files = ['/run/containers/0/auth.json', '/etc/containers/auth.json', `${home.replace(/\/+$/, '')}/.docker/config.json`];
  const extra = env.REGISTRY_AUTH_FILE;
  return extra && extra.startsWith('/') ? [extra, ...files.filter((f) => f !== extra)] : files;
}

/** `https://index.docker.io/v1/` -> `docker.io`, `Quay.io/org` -> `quay.io/org`. */
export function normalizeAuthKey(key: string): string {
  let k = key.trim();
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(k);
  if (scheme) {
    k = k.slice(scheme[0].length);
    // Legacy Docker keys are URLs whose path is an API version, not a namespace.
    k = k.split('/')[0] ?? '';
  }
  k = k.replace(/\/+$/, '');
  const slash = k.indexOf('/');
  let host = (slash === -1 ? k : k.slice(0, slash)).toLowerCase();
  const path = slash === -1 ? '' : k.slice(slash);
  if (host === 'index.docker.io' || host === DOCKER_HUB_API) host = DOCKER_HUB;
  return host + path;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parse an auth.json / config.json; malformed content is a ConfigError naming the file and key. */
export function parseAuthFile(text: string, file: string): AuthFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(file, `malformed JSON: ${(e as Error).message}`, { cause: e });
  }
  if (!isObject(doc)) throw new ConfigError(file, 'not a JSON object');
  const out: AuthFile = { file, entries: new Map(), helpers: [] };
  if (typeof doc.credsStore === 'string' && doc.credsStore !== '') out.helpers.push(`credsStore ${doc.credsStore}`);
  if (isObject(doc.credHelpers)) for (const k of Object.keys(doc.credHelpers)) out.helpers.push(`credHelpers ${k}`);
  if (doc.auths === undefined || doc.auths === null) return out;
  if (!isObject(doc.auths)) throw new ConfigError(file, 'auths is not an object', { key: 'auths' });
  for (const [rawKey, entry] of Object.entries(doc.auths)) {
    const where = `auths.${rawKey}`;
    if (!isObject(entry)) throw new ConfigError(file, 'entry is not an object', { key: where });
    const key = normalizeAuthKey(rawKey);
    const cred: Credential = { source: file, key };
    for (const f of ['auth', 'username', 'password', 'identitytoken', 'registrytoken'] as const) {
      if (entry[f] !== undefined && typeof entry[f] !== 'string') throw new ConfigError(file, `${f} is not a string`, { key: where });
    }
    const auth = entry.auth as string | undefined;
    if (auth) {
      const decoded = Buffer.from(auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (!/^[A-Za-z0-9+/=\s_-]+$/.test(auth) || colon === -1) {
        throw new ConfigError(file, 'auth is not base64 of "username:password"', { key: `${where}.auth` });
      }
      cred.username = decoded.slice(0, colon);
      cred.password = decoded.slice(colon + 1);
    } else if (typeof entry.username === 'string' && entry.username !== '') {
      cred.username = entry.username;
      cred.password = (entry.password as string | undefined) ?? '';
    }
    if (typeof entry.identitytoken === 'string' && entry.identitytoken !== '') cred.identityToken = entry.identitytoken;
    if (typeof entry.registrytoken === 'string' && entry.registrytoken !== '') cred.registryToken = entry.registrytoken;
    if (cred.username === undefined && cred.identityToken === undefined && cred.registryToken === undefined) continue;
    // Two raw keys may normalise to the same one: the first one in the file wins.
    if (!out.entries.has(key)) out.entries.set(key, cred);
  }
  return out;
}

/**
 * The credential for `registry/repository`: in file order, the most specific key (`host/ns/repo`, `host/ns`, `host`).
 */
export function findCredential(files: readonly AuthFile[], registry: string, repository: string): Credential | undefined {
  const parts = repository.split('/');
  const keys: string[] = [];
  for (let n = parts.length; n > 0; n--) keys.push(`${registry}/${parts.slice(0, n).join('/')}`);
  keys.push(registry);
  for (const f of files) {
    for (const k of keys) {
      const c = f.entries.get(k);
      if (c) return c;
    }
  }
  return undefined;
}

/** Reads the auth files that exist (missing ones are skipped; unreadable or malformed ones are ConfigErrors). */
export async function loadAuthFiles(root: SysRoot, files: readonly string[]): Promise<AuthFile[]> {
  const out: AuthFile[] = [];
  for (const f of files) {
    const p = root.path(f);
    const text = await readOptionalText(p).catch((e: unknown) => {
      throw new ConfigError(p, `cannot read: ${(e as Error).message}`, { cause: e });
    });
    if (text === undefined) continue;
    out.push(parseAuthFile(text, p));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// registries.conf

export interface RegistryConfEntry {
  /** What it matches: `host[:port][/namespace...]` or `*.domain`. */
  prefix: string;
  insecure: boolean;
  blocked: boolean;
}

export interface RegistriesConf {
  file: string;
  entries: RegistryConfEntry[];
}

export interface RegistryPolicy {
  insecure: boolean;
  blocked: boolean;
  /** The matching entry's prefix, when one matched. */
  prefix?: string;
}

function tomlLine(e: unknown): number | undefined {
  return e instanceof TomlError ? e.line : undefined;
}

/** Parse registries.conf (TOML). Bad TOML or a bad value is a ConfigError naming the file, line and key. */
export function parseRegistriesConf(text: string, file: string): RegistriesConf {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    const line = tomlLine(e);
    const first = (e as Error).message.split('\n')[0] ?? 'invalid TOML';
    throw new ConfigError(file, first, line !== undefined ? { line, cause: e } : { cause: e });
  }
  const entries: RegistryConfEntry[] = [];
  const reg = doc.registry;
  if (reg !== undefined) {
    if (!Array.isArray(reg)) throw new ConfigError(file, 'must be an array of tables ([[registry]])', { key: 'registry' });
    reg.forEach((r: unknown, i: number) => {
      const key = `registry[${i}]`;
      if (!isObject(r)) throw new ConfigError(file, 'is not a table', { key });
      for (const f of ['location', 'prefix'] as const) {
        if (r[f] !== undefined && typeof r[f] !== 'string') throw new ConfigError(file, 'is not a string', { key: `${key}.${f}` });
      }
      for (const f of ['insecure', 'blocked'] as const) {
        if (r[f] !== undefined && typeof r[f] !== 'boolean') throw new ConfigError(file, 'is not a boolean', { key: `${key}.${f}` });
      }
      const prefix = (r.prefix as string | undefined) || (r.location as string | undefined);
      if (!prefix) throw new ConfigError(file, 'needs a location or a prefix', { key });
      entries.push({ prefix: normalizeAuthKey(prefix), insecure: r.insecure === true, blocked: r.blocked === true });
    });
  }
  const v1 = doc.registries;
  if (v1 !== undefined) {
    if (!isObject(v1)) throw new ConfigError(file, 'is not a table', { key: 'registries' });
    for (const [section, flag] of [['insecure', 'insecure'], ['block', 'blocked']] as const) {
      const s = v1[section];
      if (s === undefined) continue;
      const list = isObject(s) ? s.registries : undefined;
      if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) {
        throw new ConfigError(file, 'must be a list of strings', { key: `registries.${section}.registries` });
      }
      for (const host of list as string[]) {
        const prefix = normalizeAuthKey(host);
        const existing = entries.find((e) => e.prefix === prefix);
        if (existing) existing[flag] = true;
        else entries.push({ prefix, insecure: flag === 'insecure', blocked: flag === 'blocked' });
      }
    }
  }
  return { file, entries };
}

function prefixMatches(prefix: string, name: string, registry: string): boolean {
  if (prefix.startsWith('*.')) {
    const host = registry.replace(/:\d+$/, '');
    return host.endsWith(prefix.slice(1)) && !prefix.includes('/');
  }
  return name === prefix || name.startsWith(`${prefix}/`);
}

/** Policy for `registry/repository`: the entry with the longest matching prefix (none -> secure, not blocked). */
export function registryPolicy(conf: RegistriesConf | undefined, registry: string, repository: string): RegistryPolicy {
  const name = `${registry}/${repository}`;
  let best: RegistryConfEntry | undefined;
  for (const e of conf?.entries ?? []) {
    if (!prefixMatches(e.prefix, name, registry)) continue;
    if (best === undefined || e.prefix.length > best.prefix.length) best = e;
  }
  return best ? { insecure: best.insecure, blocked: best.blocked, prefix: best.prefix } : { insecure: false, blocked: false };
}

/** Reads registries.conf; a missing file is an empty configuration. */
export async function loadRegistriesConf(root: SysRoot, file: string): Promise<RegistriesConf> {
  const p = root.path(file);
  const text = await readOptionalText(p).catch((e: unknown) => {
    throw new ConfigError(p, `cannot read: ${(e as Error).message}`, { cause: e });
  });
  if (text === undefined) return { file: p, entries: [] };
  return parseRegistriesConf(text, p);
}

// ---------------------------------------------------------------------------------------------------------------
// WWW-Authenticate

export interface Challenge {
  /** Lower-case scheme: `bearer`, `basic`. */
  scheme: string;
  /** Parameters with lower-case names (`realm`, `service`, `scope`, `error`). */
  params: Record<string, string>;
}

/** Parse a WWW-Authenticate header (RFC 7235: one or more `Scheme name=value, name="quoted"` challenges). */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Challenge[] = [];
  const param = /([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s"]*)/y;
  const scheme = /([!#$%&'*+.^_`|~0-9A-Za-z-]+)/y;
  let current: Challenge | undefined;
  let i = 0;
  while (i < header.length) {
    const ch = header[i] ?? '';
    if (/[\s,]/.test(ch)) {
      i++;
      continue;
    }
    param.lastIndex = i;
    const p = current !== undefined ? param.exec(header) : null;
    if (p !== null && current !== undefined) {
      const raw = p[2] ?? '';
      current.params[(p[1] ?? '').toLowerCase()] = raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
      i = param.lastIndex;
      continue;
    }
    scheme.lastIndex = i;
    const s = scheme.exec(header);
    if (s === null) {
      i++; // a stray character
      continue;
    }
    current = { scheme: (s[1] ?? '').toLowerCase(), params: {} };
    out.push(current);
    i = scheme.lastIndex;
  }
  return out;
}

/** `Basic base64(user:pass)`. */
export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

/** A phrase for error messages: which credentials were used, or where none were found. */
export function describeCredential(cred: Credential | undefined, searched: readonly string[]): string {
  if (cred === undefined) return `anonymously (no credentials for it in ${searched.length ? searched.join(', ') : 'any auth file'})`;
  const who = cred.username !== undefined && cred.username !== '<token>' ? `user ${JSON.stringify(cred.username)}` : cred.identityToken ? 'an identity token' : 'a registry token';
  return `with ${who} from ${cred.source} (auths key ${JSON.stringify(cred.key)})`;
}
