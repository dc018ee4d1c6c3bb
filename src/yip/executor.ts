/**
 * Running the ops of a stage (yip.md 2.4, 2.5, 3): each op's conditionals (`node`, then `if`), then every plugin in
 * the fixed order of the yip cOS v0.8 pins, each plugin keeping going through its own list and every error collected;
 * a failing op never stops the next one. Everything is written through the root prefix, and paths are resolved inside
 * it (an absolute symlink such as /etc/resolv.conf -> /run/... restarts at the root, `..` stops there): with
 * `--root DIR` nothing outside DIR is written, the live hostname is never set, and /proc/sys means DIR/proc/sys.
 *
 * Implemented here: dns, downloads, ensure_entities, directories, files, commands, delete_entities, hostname, sysctl,
 * users, authorized_keys, modules, timesyncd, systemctl, environment, systemd_firstboot, git (git.ts), datasource
 * (datasource.ts: the drive, file and HTTP metadata providers; vmware, azure and packet are errors naming them),
 * layout (layout.ts). A step that uses another plugin's key gets an error naming it (never a silent skip).
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, chownSync, lstatSync, mkdirSync } from 'node:fs';
import { chmod, chown, lstat, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { SysRoot } from '../sys/root.ts';
import type { YipOp } from './plan.ts';
import { emptyStep as step0, type YipDirectory, type YipDownload, type YipEntity, type YipFile, type YipStep, type YipUser } from './schema.ts';
import { applyToText, deleteFromText, DEFAULT_FILES, parseEntity, prepareEntity, readOrEmpty, writeKeepingMode, type Entity } from './entities.ts';
import { renderTemplate } from './template.ts';
import { readText, readTextSync } from './read.ts';
import { overwriteFileSync } from './write.ts';
import { resolveChildSync, resolveInRoot, resolveInRootSync } from './paths.ts';
import { runLayout } from './layout.ts';
import { runGit } from './git.ts';
import { runDatasource, type DatasourceTestSeams } from './datasource.ts';
import type { ToolExec } from './tool.ts';

export interface YipConsole {
  /** `sh -c command` with stdin from /dev/null; the exit code and the combined output (never throws on exit != 0). */
  run(command: string): Promise<{ exitCode: number; output: string }>;
}

export interface YipEnv {
  root: SysRoot;
  console: YipConsole;
  /** The hostname when the run started (yip's sysinfo), for `node:`. */
  hostname: string;
  /** Template data: `{{ .Values.* }}`. */
  values: Record<string, unknown>;
  /** The machine id (templates of `hostname:`). */
  machineId: string;
  /** Sets the running system's hostname; absent when acting on another root (`--root`), where it is never set. */
  setHostname?: (name: string) => Promise<void>;
  /** GET a URL (authorized_keys `github:user`, `https://…`); absent: such keys are an error. */
  fetch?: (url: string) => Promise<string>;
  /**
   * Load a kernel module with its parameters (`modprobe name params...`); absent when acting on another root
   * (`--root`), where the running kernel is never touched: a `modules` entry is then an error naming it.
   */
  modprobe?: (name: string, params: readonly string[]) => Promise<void>;
  /** Run a system tool (argv: git, sgdisk, mkfs, blkid, mount...; `git`, `layout`, datasource drives); absent: they are errors. */
  exec?: ToolExec;
  /**
   * Test seams of the `datasource` plugin (metadata service addresses, the only block devices to look at, the request
   * deadline). Never set by cosctl or cosd; when set, no real metadata service or unlisted device is reached.
   */
  datasourceTest?: DatasourceTestSeams;
}

export interface OpReport {
  op: string;
  origin: string;
  index: number;
  /** Why the op did not run (a conditional said no), or null. */
  skipped: string | null;
  /** Every plugin error, in order, each naming its plugin. */
  errors: string[];
  /** Templates that did not render (their text was used as it was). */
  warnings: string[];
}

/** The plugins of the yip cOS v0.8 pins (elemental-cli v0.0.15), in their order. */
export const PLUGIN_ORDER = [
  'dns', 'downloads', 'git', 'ensure_entities', 'directories', 'files', 'commands', 'delete_entities', 'hostname',
  'sysctl', 'users', 'authorized_keys', 'modules', 'timesyncd', 'systemctl', 'environment', 'systemd_firstboot',
  'datasource', 'layout',
] as const;
type PluginName = (typeof PLUGIN_ORDER)[number];

export { resolveInRoot } from './paths.ts';

/** The RE2 subset Go accepts: no lookaround, no backreference (a pattern using them never matches in yip). */
function goRegExp(pattern: string): RegExp | null {
  if (/\(\?<?[=!]|\\[1-9]|\\k</.test(pattern)) return null;
  try {
    return new RegExp(pattern);
  } catch {
    return null;
  }
}

function decodeContent(content: string, encoding: string): Buffer {
  const b64 = (s: string): Buffer => {
    const clean = s.replace(/[\r\n]/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(clean) || clean.length % 4 !== 0) throw new Error('illegal base64 data');
    return Buffer.from(clean, 'base64');
  };
  switch (encoding) {
    case 'b64':
    case 'base64':
      return b64(content);
    case 'gz':
    case 'gzip':
      return gunzipSync(Buffer.from(content, 'latin1'));
    case 'gz+base64':
    case 'gzip+base64':
    case 'gz+b64':
    case 'gzip+b64':
      return gunzipSync(b64(content));
    default:
      return Buffer.from(content);
  }
}

/** user[:group] → ids from the root's /etc/passwd and /etc/group (numbers pass through). */
async function resolveOwner(root: SysRoot, spec: string): Promise<{ uid: number; gid: number }> {
  const [user = '', group] = spec.split(':');
  const table = async (file: string): Promise<string[][]> =>
    (await readText(root.path(file)).catch(() => '')).split('\n').filter(Boolean).map((l) => l.split(':'));
  const passwd = await table('/etc/passwd');
  const u = /^\d+$/.test(user) ? passwd.find((l) => l[2] === user) ?? [user, '', user, user] : passwd.find((l) => l[0] === user);
  if (u === undefined) throw new Error(`user: unknown user ${user}`);
  let gid = Number(u[3]);
  if (group !== undefined && group !== '') {
    if (/^\d+$/.test(group)) gid = Number(group);
    else {
      const g = (await table('/etc/group')).find((l) => l[0] === group);
      if (g === undefined) throw new Error(`group: unknown group ${group}`);
      gid = Number(g[2]);
    }
  }
  return { uid: Number(u[2]), gid };
}

/** EnsureDirectories' writePath: chmod/chown an existing dir exactly; create missing ones (parents with the same mode). */
async function ensureDir(env: YipEnv, d: YipDirectory): Promise<void> {
  const real = await resolveInRoot(env.root, d.path);
  const st = lstatSync(real, { throwIfNoEntry: false });
  if (st !== undefined && !st.isDirectory()) throw new Error(`'${d.path}' already exists and it is not a directory`);
  if (st === undefined) {
    const parent = path.posix.dirname(d.path);
    if (parent !== d.path) {
      const pst = lstatSync(await resolveInRoot(env.root, parent), { throwIfNoEntry: false });
      if (pst === undefined) await ensureDir(env, { ...d, path: parent });
    }
    mkdirSync(real, { mode: d.permissions });
    chownSync(real, d.owner, d.group);
    return;
  }
  chmodSync(real, d.permissions);
  chownSync(real, d.owner, d.group);
}

async function ensureFile(env: YipEnv, f: YipFile, warnings: string[]): Promise<void> {
  const parent = path.posix.dirname(f.path);
  const parentFound = { exists: false };
  const parentReal = resolveInRootSync(env.root, parent, parentFound);
  if (!parentFound.exists) {
    const mode = f.permissions < 0o700 ? f.permissions + 0o100 : f.permissions;
    await ensureDir(env, { path: parent, permissions: mode, owner: f.owner, group: f.group });
  }
  const real = resolveChildSync(env.root, parentReal, f.path);
  // Small files, synchronous (see resolveInRoot). As yip: the file exists (empty) even when its content does not decode,
  // then it is written, chmodded, chowned.
  let bytes: Buffer;
  try {
    bytes = decodeContent(f.content, f.encoding);
  } catch (e) {
    overwriteFileSync(real, '');
    throw e;
  }
  const rendered = renderTemplate(bytes.toString('utf8'), { Values: env.values });
  if (rendered.error !== undefined) warnings.push(`files ${f.path}: template not applied: ${rendered.error}`);
  overwriteFileSync(real, rendered.error === undefined ? rendered.text : bytes);
  chmodSync(real, f.permissions);
  const { uid, gid } = f.ownerstring !== '' ? await resolveOwner(env.root, f.ownerstring) : { uid: f.owner, gid: f.group };
  chownSync(real, uid, gid);
}

function uses(step: YipStep, plugin: PluginName): boolean {
  const v = step[plugin] as unknown;
  if (typeof v === 'string') return v !== '';
  if (Array.isArray(v)) return v.length > 0;
  if (plugin === 'dns') return step.dns.nameservers.length > 0;
  if (plugin === 'layout') return step.layout.device.path !== '' || step.layout.device.label !== '' || step.layout.expand_partition !== null || step.layout.add_partitions.length > 0;
  if (plugin === 'git') return step.git.url !== '';
  if (plugin === 'systemctl') return Object.values(step.systemctl).some((l) => l.length > 0);
  if (plugin === 'datasource') return step.datasource.providers.length > 0;
  return typeof v === 'object' && v !== null && Object.keys(v).length > 0;
}

type Plugin = (env: YipEnv, step: YipStep, errors: string[], warnings: string[]) => Promise<void>;

const each = async <T>(items: readonly T[], errors: string[], what: (x: T) => string, fn: (x: T) => Promise<void>): Promise<void> => {
  for (const x of items) {
    try {
      await fn(x);
    } catch (e) {
      errors.push(`${what(x)}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
};

/** The file name a response gives (Content-Disposition filename), else the URL's last path segment (grab's rule). */
function downloadName(url: URL, disposition: string | undefined): string {
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition ?? '');
  const fromHeader = m?.[1] !== undefined ? path.posix.basename(decodeURIComponent(m[1])) : '';
  if (fromHeader !== '' && fromHeader !== '.' && fromHeader !== '..') return fromHeader;
  const base = path.posix.basename(decodeURIComponent(url.pathname));
  if (base === '' || base === '/' || base === '.' || base === '..') throw new Error(`no file name in ${url.href} (give a file path, not a directory)`);
  return base;
}

/**
 * downloads (yip.md 3.2, grab): GET the URL with User-Agent `grab` and the entry's timeout (seconds, 0 = none); a
 * directory path (existing, or ending in /) takes the response's file name. An existing file is resumed with a Range
 * request (206 appends, 416 means complete and leaves it alone, 200 replaces it). Then chmod(permissions), whose
 * default 0 gives mode 0000 as in yip, and chown(owner, group), or the ownerstring's ids applied to `path` itself.
 */
async function download(env: YipEnv, d: YipDownload): Promise<void> {
  let url: URL;
  try {
    url = new URL(d.url);
  } catch {
    throw new Error(`${JSON.stringify(d.url)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`only http and https URLs are downloaded, not ${url.protocol}`);
  const target = await resolveInRoot(env.root, d.path);
  const targetSt = await lstat(target).catch(() => undefined);
  const intoDir = d.path.endsWith('/') || targetSt?.isDirectory() === true;
  if (intoDir) await mkdir(target, { recursive: true });
  else await mkdir(path.dirname(target), { recursive: true });
  const guess = intoDir ? path.join(target, downloadName(url, undefined)) : target;
  const have = await lstat(guess).then((s) => (s.isFile() ? s.size : 0), () => 0);
  const { default: got } = await import('got');
  const stream = got.stream(url, {
    headers: { 'user-agent': 'grab', ...(have > 0 ? { range: `bytes=${have}-` } : {}) },
    throwHttpErrors: false,
    followRedirect: true,
    retry: { limit: 0 },
    ...(d.timeout > 0 ? { timeout: { request: d.timeout * 1000 } } : {}),
  });
  const response = await new Promise<{ statusCode: number; headers: Record<string, string | string[] | undefined> }>((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', reject);
  });
  let file = guess;
  if (response.statusCode === 416 && have > 0) {
    stream.destroy();
  } else if (response.statusCode === 200 || (response.statusCode === 206 && have > 0)) {
    const disposition = response.headers['content-disposition'];
    if (intoDir) file = path.join(target, downloadName(url, typeof disposition === 'string' ? disposition : undefined));
    if (response.statusCode === 206 && file !== guess) {
      stream.destroy();
      throw new Error(`GET ${url.href}: the server resumed ${path.basename(guess)} but names the file ${path.basename(file)}`);
    }
    const { createWriteStream } = await import('node:fs');
    const { pipeline } = await import('node:stream/promises');
    await pipeline(stream, createWriteStream(file, { flags: response.statusCode === 206 && file === guess ? 'a' : 'w' }));
  } else {
    stream.destroy();
    throw new Error(`GET ${url.href}: HTTP ${response.statusCode}`);
  }
  await chmod(file, d.permissions);
  if (d.ownerstring !== '') {
    const { uid, gid } = await resolveOwner(env.root, d.ownerstring);
    // yip applies the ownerstring's chown to the entry's path, not the resolved file name (yip.md 3.2).
    await chown(target, uid, gid);
  } else {
    await chown(file, d.owner, d.group);
  }
}

/** modules (yip.md 3.13): every entry "name [params...]" whose name /proc/modules does not list is loaded. */
async function loadModules(env: YipEnv, step: YipStep, errors: string[]): Promise<void> {
  const loaded = new Set((await readText(env.root.path('/proc/modules')).catch(() => '')).split('\n').map((l) => l.split(' ')[0] ?? '').filter(Boolean));
  await each(step.modules, errors, (m) => `modules ${m}`, async (entry) => {
    const [name = '', ...params] = entry.split(/\s+/).filter(Boolean);
    if (name === '' || loaded.has(name)) return;
    if (env.modprobe === undefined) throw new Error('not loaded: kernel modules are loaded only on the live system, and this run acts on another root');
    await env.modprobe(name, params);
  });
}

const PLUGINS: Partial<Record<PluginName, Plugin>> = {
  downloads: async (env, step, errors) => each(step.downloads, errors, (d) => `downloads ${d.url}`, (d) => download(env, d)),
  modules: async (env, step, errors) => loadModules(env, step, errors),
  git: async (env, step, errors) => {
    if (env.exec === undefined) {
      errors.push('git: system tools are not available to this run');
      return;
    }
    try {
      await runGit(env.exec, step.git, await resolveInRoot(env.root, step.git.path !== '' ? step.git.path : '/'));
    } catch (e) {
      errors.push(`git ${step.git.url}: ${e instanceof Error ? e.message : String(e)}`);
    }
  },
  datasource: async (env, step, errors, warnings) => runDatasource(env, step.datasource, errors, warnings, {
    // /run/config and userdata parents: yip's EnsureDirectories, owned by the agent's own uid/gid
    ensureDir: (dir, mode) => ensureDir(env, { path: dir, permissions: mode, owner: process.getuid?.() ?? 0, group: process.getgid?.() ?? 0 }),
    // the provider's hostname and keys go through the plugins themselves, as yip calls Hostname and SSH
    hostname: (name, errs) => (PLUGINS.hostname as Plugin)(env, { ...step0(), hostname: name }, errs, warnings),
    authorizedKeys: (user, keys, errs) => (PLUGINS.authorized_keys as Plugin)(env, { ...step0(), authorized_keys: { [user]: keys } }, errs, warnings),
  }),
  layout: async (env, step, errors, warnings) => {
    if (env.exec === undefined) {
      errors.push('layout: disk tools are not available to this run');
      return;
    }
    try {
      await runLayout(env.exec, step.layout, (w) => warnings.push(w));
    } catch (e) {
      errors.push(`layout: ${e instanceof Error ? e.message : String(e)}`);
    }
  },
  dns: async (env, step, errors) => {
    const d = step.dns;
    let content = '';
    if (d.search.length > 0 && d.search.join(' ').trim() !== '.') content += `search ${d.search.join(' ')}\n`;
    for (const ns of d.nameservers) content += `nameserver ${ns}\n`;
    if (d.options.join(' ').trim() !== '') content += `options ${d.options.join(' ')}\n`;
    const file = d.path !== '' ? d.path : '/etc/resolv.conf';
    await each([file], errors, (f) => `dns ${f}`, async (f) => writeFile(await resolveInRoot(env.root, f), content, { mode: 0o644 }));
  },
  directories: async (env, step, errors) => each(step.directories, errors, (d) => `directories ${d.path}`, (d) => ensureDir(env, d)),
  files: async (env, step, errors, warnings) => each(step.files, errors, (f) => `files ${f.path}`, (f) => ensureFile(env, f, warnings)),
  commands: async (env, step, errors, warnings) => {
    for (const raw of step.commands) {
      const r = renderTemplate(raw, { Values: env.values });
      if (r.error !== undefined) warnings.push(`commands: template not applied: ${r.error}`);
      const res = await env.console.run(r.text);
      if (res.exitCode !== 0) errors.push(`commands: failed to run ${r.text}: exit status ${res.exitCode}\ncommand output:\n${res.output}`);
    }
  },
  hostname: async (env, step, errors) => {
    const machine = env.machineId;
    const r = renderTemplate(step.hostname, { UUID: randomUUID(), Random: randomName(), MachineID: machine });
    if (r.error !== undefined) {
      errors.push(`hostname: ${r.error}`);
      return;
    }
    const name = r.text;
    if (env.setHostname !== undefined) await env.setHostname(name).catch((e: unknown) => errors.push(`hostname: setting ${name}: ${e instanceof Error ? e.message : String(e)}`));
    await each(['/etc/hostname'], errors, (f) => `hostname ${f}`, async (f) => writeFile(await resolveInRoot(env.root, f), `${name}\n`, { mode: 0o644 }));
    await each(['/etc/hosts'], errors, (f) => `hostname ${f}`, async (f) => {
      const real = await resolveInRoot(env.root, f);
      const lines = (await readText(real)).split('\n');
      if (lines[lines.length - 1] === '') lines.pop();
      const out = lines.map((l) => l.trim()).map((l) => (l.split(/\s+/)[0] === '127.0.0.1' ? `127.0.0.1 localhost ${name}` : l));
      await writeFile(real, out.map((l) => `${l}\n`).join(''), { mode: 0o600 });
    });
  },
  systemctl: async (env, step, errors) => {
    const { enable, disable, mask, start } = step.systemctl;
    const cmds = [...enable.map((u) => `systemctl enable ${u}`), ...disable.map((u) => `systemctl disable ${u}`), ...mask.map((u) => `systemctl mask ${u}`), ...start.map((u) => `systemctl start ${u}`)];
    for (const c of cmds) {
      const res = await env.console.run(c);
      if (res.exitCode !== 0) errors.push(`systemctl: failed to run ${c}: exit status ${res.exitCode}\ncommand output:\n${res.output}`);
    }
  },
  systemd_firstboot: async (env, step, errors) => {
    const args = Object.entries(step.systemd_firstboot).map(([k, v]) => (v === 'true' ? `--${k.toLowerCase()}` : `--${k.toLowerCase()}=${v}`)).sort();
    const c = `systemd-firstboot ${args.join(' ')}`;
    const res = await env.console.run(c);
    if (res.exitCode !== 0) errors.push(`systemd_firstboot: failed to run ${c}: exit status ${res.exitCode}\ncommand output:\n${res.output}`);
  },
  environment: async (env, step, errors, warnings) => {
    const file = step.environment_file !== '' ? step.environment_file : '/etc/environment';
    await each([file], errors, (f) => `environment ${f}`, async (f) => {
      // Synchronous, as ensureFile: small files, no thread-pool round trip per call.
      const parentFound = { exists: false };
      const parentReal = resolveInRootSync(env.root, path.posix.dirname(f), parentFound);
      if (!parentFound.exists) mkdirSync(parentReal, { recursive: true, mode: 0o744 });
      const real = resolveChildSync(env.root, parentReal, f);
      let text = '';
      try {
        text = readTextSync(real);
      } catch {
        // a missing or unreadable file starts empty, as yip's godotenv read
      }
      const current = parseDotenv(text);
      for (const [k, v] of Object.entries(step.environment)) {
        const r = renderTemplate(v, { Values: env.values });
        if (r.error !== undefined) warnings.push(`environment ${k}: template not applied: ${r.error}`);
        current.set(k, r.text);
      }
      overwriteFileSync(real, writeDotenv(current));
      chmodSync(real, 0o644);
    });
  },
  users: async (env, step, errors) => {
    // sorted by name (yip >= 1.x; 2617d71 took Go's random map order), so ids come out the same on every run
    for (const name of Object.keys(step.users).sort()) {
      try {
        await ensureUser(env, name, step.users[name] as YipUser);
      } catch (e) {
        errors.push(`users ${name}: ${e instanceof Error ? e.message : String(e)}`);
        // yip returns at a failed update of an existing user, skipping the rest; one failed creation skips that user
        if (e instanceof ExistingUserError) return;
      }
    }
  },
  ensure_entities: async (env, step, errors, warnings) => entityItems(env, step.ensure_entities, 'ensure_entities', errors, warnings, applyToText),
  delete_entities: async (env, step, errors, warnings) => entityItems(env, step.delete_entities, 'delete_entities', errors, warnings, deleteFromText),
  timesyncd: async (env, step) => {
    // yip 2617d71 (and rancher/yip): timesyncd.conf itself; a save error is ignored, as yip ignores it
    const real = await resolveInRoot(env.root, '/etc/systemd/timesyncd.conf');
    const current = await readText(real).catch(() => '');
    await writeFile(real, iniSet(current, 'Time', step.timesyncd)).catch(() => undefined);
  },
  authorized_keys: async (env, step, errors) => {
    for (const [user, keys] of Object.entries(step.authorized_keys)) {
      try {
        const passwd = (await readText(env.root.path('/etc/passwd')).catch(() => '')).split('\n').map((l) => l.split(':'));
        const u = passwd.find((l) => l[0] === user);
        if (u === undefined) throw new Error(`user ${user} not found`);
        const [uid, gid, home] = [Number(u[2]), Number(u[3]), u[5] ?? ''];
        const sshDir = await resolveInRoot(env.root, path.posix.join(home, '.ssh'));
        if ((await lstat(sshDir).catch(() => undefined)) === undefined) await mkdir(sshDir, { mode: 0o700 });
        await chown(sshDir, uid, gid);
        const file = path.join(sshDir, 'authorized_keys');
        let content = await readText(file).catch(() => undefined);
        if (content === undefined) {
          await writeFile(file, '', { mode: 0o600 });
          content = '';
        }
        for (const key of keys) {
          let text = key;
          const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):[^ ]*$/.exec(key);
          if (scheme !== null) {
            const url = scheme[1] === 'github' ? `https://github.com/${key.slice(7)}.keys` : scheme[1] === 'gitlab' ? `https://gitlab.com/${key.slice(7)}.keys` : key;
            if (env.fetch === undefined) throw new Error(`fetching ${url}: no network access here`);
            text = await env.fetch(url);
          }
          if (content.includes(text)) continue;
          content += `${text}\n`;
          await writeFile(file, content);
          await chown(file, uid, gid);
        }
      } catch (e) {
        errors.push(`authorized_keys ${user}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  },
  sysctl: async (env, step, errors) => {
    await each(Object.entries(step.sysctl), errors, ([k]) => `sysctl ${k}`, async ([k, v]) => writeFile(await resolveInRoot(env.root, `/proc/sys/${k.replace(/\./g, '/')}`), v, { mode: 0o644 }));
  },
};

/** Go's strconv.Atoi: an optional sign and decimal digits. */
const goAtoi = (v: string): number | null => (/^[+-]?\d+$/.test(v) && Number.isSafeInteger(Number(v)) ? Number(v) : null);

/**
 * godotenv.Unmarshal, as far as yip relies on it: blank and `#` lines skipped, `export ` dropped, `KEY=value` or
 * `KEY: value`, single quotes literal, double quotes with `\n` `\r` `\"` `\\` escapes, unquoted values trimmed and
 * cut at ` #`. A line that does not parse ends the parse: what came before it is kept (yip ignores the error).
 */
export function parseDotenv(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(?:export\s+)?([A-Za-z0-9_.-]+)\s*[=:]\s*(.*)$/.exec(line);
    if (m === null) break;
    const key = m[1] as string;
    let v = m[2] as string;
    if (v.startsWith("'")) {
      const end = v.indexOf("'", 1);
      if (end < 0) break;
      v = v.slice(1, end);
    } else if (v.startsWith('"')) {
      const q = /^"((?:[^"\\]|\\.)*)"/.exec(v);
      if (q === null) break;
      v = (q[1] as string).replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c));
    } else {
      v = v.replace(/\s+#.*$/, '').trim();
    }
    out.set(key, v);
  }
  return out;
}

/** godotenv.Write (v1.4+): sorted `K=<int>` or `K="<escaped>"` lines, ending with a newline. */
export function writeDotenv(env: ReadonlyMap<string, string>): string {
  const lines = [...env].map(([k, v]) => {
    const n = goAtoi(v);
    if (n !== null) return `${k}=${n}`;
    const escaped = v.replace(/[\\"!$`]/g, (c) => `\\${c}`).replace(/\n/g, '\\n').replace(/\r/g, '\\r');
    return `${k}="${escaped}"`;
  });
  return `${lines.sort().join('\n')}\n`;
}

/** An ini.v1 value as it writes it: quoted when it has surrounding spaces, backticks around `#`/`;`, triple quotes for newlines. */
function iniValue(v: string): string {
  if (v.includes('\n') || v.includes('`')) return `"""${v}"""`;
  if (v.includes('#') || v.includes(';')) return `\`${v}\``;
  if (v !== v.trim()) return `"${v}"`;
  return v;
}

/**
 * gopkg.in/ini.v1's load, set of `[section] key`, and save, for timesyncd.conf: other sections and keys kept, comments
 * normalised to `# c`, keys padded to the longest of their section, no blank line after the last section.
 */
export function iniSet(text: string, section: string, values: Readonly<Record<string, string>>): string {
  type Entry = { comments: string[]; key: string; value: string };
  const sections: Array<{ name: string; leading: string[]; entries: Entry[]; trailing: string[] }> = [{ name: '', leading: [], entries: [], trailing: [] }];
  let pending: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    const cur = sections[sections.length - 1] as (typeof sections)[number];
    if (line === '') continue;
    if (line.startsWith('#') || line.startsWith(';')) {
      pending.push(`${line[0] as string} ${line.slice(1).trim()}`);
      continue;
    }
    const sec = /^\[(.*)\]$/.exec(line);
    if (sec !== null) {
      // a comment before a section header is that section's (ini.v1)
      const name = (sec[1] as string).trim();
      const existing = sections.find((x) => x.name === name);
      if (existing !== undefined) {
        existing.leading.push(...pending);
        sections.push(sections.splice(sections.indexOf(existing), 1)[0] as (typeof sections)[number]);
      } else {
        sections.push({ name, leading: pending, entries: [], trailing: [] });
      }
      pending = [];
      continue;
    }
    const kv = /^([^=:]+?)\s*[=:]\s*(.*)$/.exec(line);
    if (kv === null) continue;
    let v = kv[2] as string;
    const q = /^"(.*)"$/.exec(v) ?? /^`(.*)`$/.exec(v);
    if (q !== null) v = q[1] as string;
    const e = cur.entries.find((x) => x.key === kv[1]);
    if (e !== undefined) e.value = v;
    else cur.entries.push({ comments: pending, key: kv[1] as string, value: v });
    pending = [];
  }
  (sections[sections.length - 1] as (typeof sections)[number]).trailing.push(...pending);
  let target = sections.find((x) => x.name === section);
  if (target === undefined) {
    target = { name: section, leading: [], entries: [], trailing: [] };
    sections.push(target);
  }
  for (const [k, v] of Object.entries(values)) {
    const e = target.entries.find((x) => x.key === k);
    if (e !== undefined) e.value = v;
    else target.entries.push({ comments: [], key: k, value: v });
  }
  const blocks: string[] = [];
  for (const sec of sections) {
    if (sec.name === '' && sec.entries.length === 0 && sec.trailing.length === 0) continue;
    const width = Math.max(0, ...sec.entries.map((e) => e.key.length));
    const lines = [...sec.leading, ...(sec.name === '' ? [] : [`[${sec.name}]`])];
    for (const e of sec.entries) lines.push(...e.comments, `${e.key.padEnd(width)} = ${iniValue(e.value)}`);
    lines.push(...sec.trailing);
    blocks.push(lines.map((l) => `${l}\n`).join(''));
  }
  return blocks.join('\n');
}

function randomName(): string {
  const chars = '0123456789abcdefghijklmnopqrstuvwxyz';
  return Array.from({ length: 32 }, () => chars[Math.floor(Math.random() * chars.length)]).join('');
}

class ExistingUserError extends Error {}

const table = (text: string): string[][] => text.split('\n').filter(Boolean).map((l) => l.split(':'));

/** The lowest free id in 1000..60000 among the third fields of `text`. */
function lowestFree(text: string): number {
  const used = new Set(table(text).map((l) => Number(l[2])));
  for (let id = 1000; id <= 60000; id++) if (!used.has(id)) return id;
  throw new Error('no free id in 1000-60000');
}

/** Apply one entity (already prepared) to its default file under the root. */
async function applyEntity(env: YipEnv, e: Entity): Promise<void> {
  const file = await resolveInRoot(env.root, DEFAULT_FILES[e.kind]);
  await writeKeepingMode(file, applyToText(await readOrEmpty(file), e));
}

/** yip's User plugin for one user (yip.md 3.11): create it, or only replace the password of an existing one. */
async function ensureUser(env: YipEnv, name: string, u: YipUser): Promise<void> {
  const passwdFile = env.root.path('/etc/passwd');
  const groupFile = env.root.path('/etc/group');
  const now = new Date();
  const existing = table(await readOrEmpty(passwdFile)).find((l) => l[0] === name);
  if (existing !== undefined) {
    if (u.passwd === '') return;
    try {
      await applyEntity(env, prepareEntity('shadow', { username: name, password: u.passwd }, { passwd: '', group: '', now }));
    } catch (e) {
      throw new ExistingUserError(e instanceof Error ? e.message : String(e));
    }
    return;
  }
  const pass = u.lock_passwd ? '!' : u.passwd;
  const defaults = parseDotenv(await readOrEmpty(env.root.path('/etc/default/useradd')));
  const home = defaults.get('HOME') ?? '/home';
  const shell = u.shell !== '' ? u.shell : defaults.get('SHELL') ?? '/bin/sh';
  // the primary group: an existing one by name, or one named after the user with the lowest free gid
  let gid: number;
  if (u.primary_group !== '') {
    const g = table(await readOrEmpty(groupFile)).find((l) => l[0] === u.primary_group);
    if (g === undefined) throw new Error(`primary group ${u.primary_group} not found`);
    gid = Number(g[2]);
  } else {
    const groups = await readOrEmpty(groupFile);
    const own = table(groups).find((l) => l[0] === name);
    gid = own !== undefined ? Number(own[2]) : lowestFree(groups);
    await applyEntity(env, { kind: 'group', fields: [name, 'x', String(gid), name], gidGiven: own === undefined });
  }
  const homedir = u.homedir !== '' ? u.homedir : path.posix.join(home, name);
  let uid: number;
  if (u.uid !== '') {
    uid = goAtoi(u.uid) ?? Number.NaN;
    if (!Number.isInteger(uid)) throw new Error(`uid ${u.uid} is not a number`);
  } else {
    const owner = await lstat(await resolveInRoot(env.root, homedir)).then((st) => st.uid, () => undefined);
    uid = owner ?? lowestFree(await readOrEmpty(passwdFile));
  }
  await applyEntity(env, { kind: 'user', fields: [name, 'x', String(uid), String(gid), u.gecos !== '' ? u.gecos : 'Created by entities', homedir, shell] });
  await applyEntity(env, prepareEntity('shadow', { username: name, password: pass, last_changed: 'now' }, { passwd: '', group: '', now }));
  if (!u.no_create_home) {
    const real = await resolveInRoot(env.root, homedir);
    await mkdir(real, { recursive: true, mode: 0o755 });
    await chown(real, uid, gid);
  }
  // existing supplementary groups get the user as a member; groups that do not exist are ignored, as in yip
  const groups = table(await readOrEmpty(groupFile));
  for (const g of u.groups) {
    if (groups.some((l) => l[0] === g)) await applyEntity(env, { kind: 'group', fields: [g, '', '', name], gidGiven: false });
  }
  if (u.ssh_authorized_keys.length > 0) {
    // yip discards the SSH plugin's error for a user's own keys
    await (PLUGINS.authorized_keys as Plugin)(env, { ...step0(), authorized_keys: { [name]: u.ssh_authorized_keys } }, [], []);
  }
}

/** ensure_entities / delete_entities: each item templated, parsed, prepared and applied to its file; an error skips that item. */
async function entityItems(env: YipEnv, items: readonly YipEntity[], plugin: string, errors: string[], warnings: string[], change: (text: string, e: Entity) => string): Promise<void> {
  await each(items, errors, (item) => `${plugin} ${item.path !== '' ? item.path : '(default file)'}`, async (item) => {
    const r = renderTemplate(item.entity, { Values: env.values });
    if (r.error !== undefined) warnings.push(`${plugin}: template not applied: ${r.error}`);
    const { kind, data } = parseEntity(r.text);
    const files = { passwd: await readOrEmpty(env.root.path('/etc/passwd')), group: await readOrEmpty(env.root.path('/etc/group')), now: new Date() };
    const entity = prepareEntity(kind, data, files);
    const file = await resolveInRoot(env.root, item.path !== '' ? item.path : DEFAULT_FILES[kind]);
    await writeKeepingMode(file, change(await readOrEmpty(file), entity));
  });
}

/** Run the ops in order; a skipped or failing op never stops the next. */
export async function runOps(ops: readonly YipOp[], env: YipEnv): Promise<OpReport[]> {
  const reports: OpReport[] = [];
  for (const op of ops) {
    const report: OpReport = { op: op.name, origin: op.origin, index: op.index, skipped: null, errors: [], warnings: [] };
    reports.push(report);
    const { step } = op;
    if (step.node !== '') {
      const re = goRegExp(step.node);
      if (re === null || !re.test(env.hostname)) {
        report.skipped = re === null ? `node: ${step.node} is not a regular expression yip accepts` : `node: ${env.hostname} does not match ${step.node}`;
        continue;
      }
    }
    if (step.if !== '') {
      const r = renderTemplate(step.if, { Values: env.values });
      if (r.error !== undefined) report.warnings.push(`if: template not applied: ${r.error}`);
      const res = await env.console.run(r.text);
      if (res.exitCode !== 0) {
        report.skipped = `if: ${r.text} exited ${res.exitCode}`;
        continue;
      }
    }
    for (const name of PLUGIN_ORDER) {
      if (!uses(step, name)) continue;
      const plugin = PLUGINS[name];
      if (plugin === undefined) {
        report.errors.push(`${name}: this plugin is not implemented in this version of the agent; the step's ${name} did not run`);
        continue;
      }
      try {
        await plugin(env, step, report.errors, report.warnings);
      } catch (e) {
        report.errors.push(`${name}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }
  return reports;
}
