/**
 * The `datasource` plugin (yip.md 3.18) as the yip cOS v0.8.14 pins runs it (mudler/yip 2617d71, its metadata
 * providers from the rancher-sandbox fork of linuxkit's): fetch the machine's userdata from a cloud metadata service,
 * a CD-ROM / config drive or a file, write it under /run/config (or `path`), run it when it is a `#!` script, and
 * apply the hostname and SSH keys the provider found. Everything is written inside the root prefix.
 *
 * Order: /run/config is made (0755, owned by the agent's uid/gid). The providers named in the step, deduplicated,
 * unknown names ignored (a warning), are probed: first the local ones one after another (`cdrom`, `config-drive` in
 * the order listed, then `file`), the first that gives userdata winning; only without one, every network provider at
 * once, the first userdata to arrive winning (the others are then abandoned). Each metadata request has a deadline
 * (2 s, the providers' http.Client timeout); every response, and the userdata, is capped at 4 MiB.
 *
 * Providers:
 * - `cdrom`: block devices labelled `cidata` or `CIDATA` (blkid, loop and ram devices left out as yip does), then
 *   every /dev/sr[0-9]*; each mounted read-only (iso9660, else vfat) on a temp directory under the root's /run, its
 *   `user-data` read, else `config`; always unmounted. An empty file does not count. (The provider also reads
 *   `meta-data` and uses nothing of it: not read here.)
 * - `config-drive`: the same with labels `config-2` / `CONFIG-2` and `openstack/latest/user_data`.
 * - `file` (only with `path`): the file `path` inside the root. yip probes it with the network providers; it is
 *   probed here after the drives and before the network, the order in which yip would almost always see it answer.
 * - Network, plain HTTP GETs (no redirect beyond 10, status 200 only), base addresses in NETWORK below: `aws` and
 *   `openstack` (the EC2 API), `hetzner` (the fork's EC2-style routes /latest/...; later yip moved to /hetzner/v1/,
 *   saying Hetzner removed those), `gcp`
 *   (`Metadata-Flavor: Google`), `digitalocean`, `vultr` (metadata only: the fork's Vultr provider returns no
 *   userdata, so it never wins), `metaldata`, `scaleway` (`/conf`, userdata from a source port below 1024, as the
 *   provider does: that needs root). Each probes one URL, then fetches the hostname (required), the metadata files
 *   (public_ipv4, instance_id, ...: /run/config/<name>, 0644), the SSH keys (/run/config/ssh/authorized_keys, 0600)
 *   and the userdata. Only the winner's files are written (yip lets every provider that probes write them, racing).
 *
 * Not implemented, each an error naming it when listed (never a silent skip):
 * - `vmware`: guestinfo is read through VMware's backdoor RPC, not HTTP. (In the fork yip 2617d71 builds, the VMware
 *   provider sits behind the build constraint `linux && 386 && amd64`, which no build satisfies: it never probes.)
 * - `azure`: the fork's provider reads Azure's provisioning DVD (ovf-env.xml on UDF) or IMDS, then reports ready to
 *   the wire server (168.63.129.16, an XML handshake).
 * - `packet`: besides its metadata, the provider reconfigures the network (bonding, addresses, routes through
 *   netlink), which an agent must not half-do.
 *
 * Userdata: a VMware-style multipart body (boundary MIMEBOUNDARY) is unwrapped to its text/cloud-config part; the
 * bytes go to <base>/userdata (0644), base = `path` when set and not the winning provider's own name (the file
 * provider's name is its path), else /run/config; if they decode as a yip or #cloud-config document they also go to
 * <base>/userdata.yaml (that name: 2617d71 has no `userdata_name`); else if the first line starts with `#!` the file
 * is made 0744 and run through the console (`sh -c <base>/userdata`, chrooted into the root as `commands` are);
 * anything else is a warning. Then /run/config/hostname, if there, goes through the `hostname` plugin (raw, newline
 * included), and the non-blank, non-`#` lines of /run/config/ssh/authorized_keys through `authorized_keys` for the
 * agent's own user. As in yip, a failure in one of these steps skips the ones after it.
 *
 * No userdata from any provider: the error `datasource: no metadata/userdata found`, after one error per provider
 * saying why (2617d71 returns that error; rancher/yip v1.9.6 later made it a non-error). When a provider wins, the
 * others' failures are warnings.
 *
 * Deviations from 2617d71: yip waits for every network provider, then takes the first value they sent, even the
 * empty answer of one that found no userdata (it then reports none, although another had some): here the first
 * userdata wins and ends the wait. The userdata is written as received: yip writes it through its `files` plugin,
 * which renders Go templates in it (a cloud-config's own `{{ }}` would be spent before its stage runs). A response
 * over 4 MiB is refused. Scaleway's userdata counts with status 200 only (the provider takes any status but 404).
 */
import { setMaxListeners } from 'node:events';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, rmdir, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { userInfo } from 'node:os';
import path from 'node:path';
import type { SysRoot } from '../sys/root.ts';
import { resolveInRoot } from './paths.ts';
import { readBytesSync } from './read.ts';
import { decodeYip, type YipStep } from './schema.ts';
import type { ToolExec } from './tool.ts';

/** Where providers leave what they found (linuxkit's ConfigPath). */
export const CONFIG_PATH = '/run/config';
/** The largest userdata (and metadata response) accepted. */
export const MAX_USERDATA_BYTES: number = 4 * 1024 * 1024;
/** Each metadata request's deadline: the providers' http.Client timeout. */
const DEFAULT_TIMEOUT_MS = 2000;

/**
 * Test seams, inert when absent (cosctl and cosd never set them). When present, the plugin reaches no real metadata
 * service and no device it was not given: a network provider without a base is an error, the drives are only `devices`.
 */
export interface DatasourceTestSeams {
  /** Where a network provider's requests go instead of its service: an origin and optional path prefix (http://127.0.0.1:PORT). */
  metadataBase?: (provider: string) => string | undefined;
  /** The only block devices `cdrom` / `config-drive` look at (their labels still checked by blkid); no /dev/sr*. */
  devices?: readonly string[];
  /** Each metadata request's deadline in ms (default 2000). */
  timeoutMs?: number;
}

/** What the plugin needs of the executor's environment (YipEnv has it all). */
export interface DatasourceEnv {
  root: SysRoot;
  console: { run(command: string): Promise<{ exitCode: number; output: string }> };
  exec?: ToolExec;
  datasourceTest?: DatasourceTestSeams;
}

/** The executor's own code paths the plugin goes through (yip calls its plugins the same way). */
export interface DatasourceHooks {
  /** EnsureDirectories for one directory owned by the agent's uid/gid (parents made with the same mode). */
  ensureDir(dir: string, mode: number): Promise<void>;
  /** The `hostname` plugin with this value; its errors pushed to `errors`. */
  hostname(name: string, errors: string[]): Promise<void>;
  /** The `authorized_keys` plugin for one user; its errors pushed to `errors`. */
  authorizedKeys(user: string, keys: string[], errors: string[]): Promise<void>;
}

interface Found {
  /** The provider's name in the step (aws, cdrom, file...). */
  provider: string;
  /** The provider's String() in yip, compared with `path` to pick the base directory. */
  label: string;
  /** null: the provider answered but has no userdata (`why` says so). */
  userdata: Buffer | null;
  why?: string;
  /** Files for /run/config (relative names), written when this provider wins. */
  files: Array<{ name: string; data: Buffer; mode: number }>;
}

const NOT_IMPLEMENTED: Readonly<Record<string, string>> = {
  vmware: 'not implemented in this agent: VMware guestinfo is read through the VMware backdoor RPC, not HTTP (the yip of cOS v0.8.14 never probes it either: its VMware provider is built under an unsatisfiable constraint)',
  azure: "not implemented in this agent: Azure's userdata comes from the provisioning DVD (ovf-env.xml) or IMDS followed by the wire server's report-ready handshake",
  packet: "not implemented in this agent: Packet's provider also reconfigures the network (bonding, addresses, routes), which is not done here",
};

type SshFormat = 'raw' | 'gcp' | 'json';

interface NetProvider {
  label: string;
  origin: string;
  headers?: Readonly<Record<string, string>>;
  /** GET that must answer 200 for the provider to count. */
  probe: string;
  /** GET of the hostname ("this must not fail"). */
  hostname: string;
  /** [path, file under /run/config]: written when they answer 200. */
  meta: ReadonlyArray<readonly [string, string]>;
  ssh?: { path: string; format: SshFormat };
  /** null: the provider gives no userdata. */
  userdata: string | null;
}

const EC2_META = '/latest/meta-data/';
const EC2_FILES: ReadonlyArray<readonly [string, string]> = [
  ['public-ipv4', 'public_ipv4'], ['local-ipv4', 'local_ipv4'], ['placement/availability-zone', 'availability_zone'],
  ['instance-type', 'instance_type'], ['instance-id', 'instance_id'], ['local-hostname', 'local_hostname'],
];
const prefixed = (prefix: string, list: ReadonlyArray<readonly [string, string]>): Array<readonly [string, string]> => list.map(([p, f]) => [prefix + p, f] as const);

/** The network providers of the fork as 2617d71 builds them: where each looks, what it writes. */
const NETWORK: Readonly<Record<string, NetProvider>> = {
  aws: {
    label: 'AWS', origin: 'http://169.254.169.254', probe: `${EC2_META}hostname`, hostname: `${EC2_META}hostname`, meta: prefixed(EC2_META, EC2_FILES),
    ssh: { path: `${EC2_META}public-keys/0/openssh-key`, format: 'raw' }, userdata: '/latest/user-data',
  },
  openstack: {
    label: 'openstack', origin: 'http://169.254.169.254', probe: `${EC2_META}hostname`, hostname: `${EC2_META}hostname`, meta: prefixed(EC2_META, EC2_FILES),
    ssh: { path: `${EC2_META}public-keys/0/openssh-key`, format: 'raw' }, userdata: '/latest/user-data',
  },
  hetzner: {
    label: 'Hetzner', origin: 'http://169.254.169.254', probe: `${EC2_META}hostname`, hostname: `${EC2_META}hostname`,
    meta: prefixed(EC2_META, [['public-ipv4', 'public_ipv4'], ['local-ipv4', 'local_ipv4'], ['instance-id', 'instance_id']]),
    ssh: { path: `${EC2_META}public-keys`, format: 'json' }, userdata: '/latest/user-data',
  },
  gcp: {
    label: 'GCP', origin: 'http://metadata.google.internal', headers: { 'Metadata-Flavor': 'Google' },
    probe: '/computeMetadata/v1/instance/hostname', hostname: '/computeMetadata/v1/instance/hostname', meta: [],
    ssh: { path: '/computeMetadata/v1/project/attributes/ssh-keys', format: 'gcp' }, userdata: '/computeMetadata/v1/instance/attributes/user-data',
  },
  digitalocean: {
    label: 'DigitalOcean', origin: 'http://169.254.169.254', probe: '/metadata/v1/', hostname: '/metadata/v1/hostname',
    meta: prefixed('/metadata/v1/', [['interfaces/public/0/ipv4/address', 'public_ipv4'], ['interfaces/private/0/ipv4/address', 'private_ipv4'], ['region', 'region'], ['id', 'id']]),
    ssh: { path: '/metadata/v1/public-keys', format: 'raw' }, userdata: '/metadata/v1/user-data',
  },
  vultr: {
    label: 'Vultr', origin: 'http://169.254.169.254', probe: '/v1/', hostname: '/v1/hostname',
    meta: prefixed('/v1/', [['interfaces/0/ipv4/address', 'public_ipv4'], ['interfaces/1/ipv4/address', 'private_ipv4'], ['interfaces/1/ipv4/netmask', 'private_netmask'], ['region/regioncode', 'region_code'], ['instanceid', 'instance_id']]),
    ssh: { path: '/v1/public-keys', format: 'raw' }, userdata: null,
  },
  metaldata: {
    label: 'metaldata', origin: 'http://metaldata', probe: '/get/meta/hostname', hostname: '/get/meta/hostname',
    meta: prefixed('/get/meta/', [['public-ipv4', 'public_ipv4'], ['private-ipv4', 'private_ipv4'], ['failure-domain', 'failure_domain'], ['machine-id', 'machine_id'], ['machine-type', 'machine_type']]),
    ssh: { path: '/get/meta/authorized-keys', format: 'raw' }, userdata: '/get/user',
  },
};
const SCALEWAY_ORIGIN = 'http://169.254.42.42';

const DRIVES: Readonly<Record<string, { labels: readonly string[]; files: readonly string[]; label: string }>> = {
  cdrom: { labels: ['cidata', 'CIDATA'], files: ['user-data', 'config'], label: 'CDROM' },
  'config-drive': { labels: ['config-2', 'CONFIG-2'], files: ['openstack/latest/user_data'], label: 'CONFIG_DRIVE' },
};

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

// ---------------------------------------------------------------------------------------------------------- HTTP

interface GetOptions {
  headers?: Readonly<Record<string, string>> | undefined;
  /** The whole exchange's deadline (Date.now() ms), redirects included, and its length for messages. */
  deadline: number;
  timeoutMs: number;
  signal: AbortSignal;
  localPort?: number;
}

/** A GET over plain HTTP: the status and the body (at most MAX_USERDATA_BYTES), redirects followed, one deadline overall. */
function httpGet(url: string, o: GetOptions, hops = 0): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      reject(new Error(`${url} is not a URL`));
      return;
    }
    if (u.protocol !== 'http:') {
      reject(new Error(`${url}: only http is used for metadata`));
      return;
    }
    const left = o.deadline - Date.now();
    if (left <= 0) {
      reject(new Error(`no answer within ${o.timeoutMs} ms`));
      return;
    }
    const req = request(u, { method: 'GET', agent: false, signal: o.signal, headers: { ...(o.headers ?? {}) }, ...(o.localPort !== undefined ? { localPort: o.localPort } : {}) }, (res) => {
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if ([301, 302, 303, 307, 308].includes(status) && location !== undefined) {
        res.resume();
        if (hops >= 10) reject(new Error('stopped after 10 redirects'));
        else httpGet(new URL(location, u).href, o, hops + 1).then(resolve, reject);
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_USERDATA_BYTES) {
          req.destroy(new Error(`the response is over ${MAX_USERDATA_BYTES} bytes: refused`));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
      res.on('error', reject);
      res.on('close', () => reject(new Error('the connection closed before the end of the response'))); // after 'end': no effect
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${o.timeoutMs} ms`)), left);
    req.on('error', (e) => reject(e.name === 'AbortError' ? new Error('abandoned: another provider answered first') : e));
    req.on('close', () => clearTimeout(timer));
    req.end();
  });
}

// ------------------------------------------------------------------------------------------------------- network

interface NetContext {
  base: string;
  timeoutMs: number;
  signal: AbortSignal;
}

/** GET base+route; the body when 200, else an Error saying what came back. */
async function get200(ctx: NetContext, route: string, headers?: Readonly<Record<string, string>>): Promise<Buffer> {
  const url = ctx.base + route;
  let r: { status: number; body: Buffer };
  try {
    r = await httpGet(url, { headers, deadline: Date.now() + ctx.timeoutMs, timeoutMs: ctx.timeoutMs, signal: ctx.signal });
  } catch (e) {
    throw new Error(`GET ${url}: ${message(e)}`);
  }
  if (r.status !== 200) throw new Error(`GET ${url}: HTTP ${r.status}`);
  return r.body;
}

/** The SSH keys file the provider writes, from what its service answered. */
function sshFile(format: SshFormat, body: Buffer): Buffer {
  if (format === 'raw') return body;
  if (format === 'gcp') {
    // project ssh-keys: "user:key" lines; the user is dropped (the provider puts every key in one file)
    let out = '';
    for (const line of body.toString('utf8').split('\n')) {
      const i = line.indexOf(':');
      if (i >= 0) out += `${line.slice(i + 1)}\n`;
    }
    return Buffer.from(out);
  }
  const keys = JSON.parse(body.toString('utf8')) as unknown;
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) throw new Error('the public keys are not a JSON list of strings');
  return Buffer.from(keys.map((k) => `${k}\n`).join(''));
}

async function runNetProvider(name: string, p: NetProvider, ctx: NetContext, warn: (w: string) => void): Promise<Found> {
  await get200(ctx, p.probe, p.headers);
  const optional = (route: string): Promise<Buffer | null> => get200(ctx, route, p.headers).catch(() => null);
  const [hostname, metas, ssh, userdata] = await Promise.all([
    get200(ctx, p.hostname, p.headers),
    Promise.all(p.meta.map(async ([route, file]) => ({ file, body: await optional(route) }))),
    p.ssh !== undefined ? optional(p.ssh.path) : Promise.resolve(null),
    p.userdata !== null ? get200(ctx, p.userdata, p.headers).then((b) => ({ b, why: '' }), (e: unknown) => ({ b: null, why: message(e) })) : Promise.resolve({ b: null, why: 'this provider gives no userdata (metadata only)' }),
  ]);
  const files: Found['files'] = [{ name: 'hostname', data: hostname, mode: 0o644 }];
  for (const m of metas) if (m.body !== null) files.push({ name: m.file, data: m.body, mode: 0o644 });
  if (ssh !== null && p.ssh !== undefined) {
    try {
      files.push({ name: 'ssh/authorized_keys', data: sshFile(p.ssh.format, ssh), mode: 0o600 });
    } catch (e) {
      warn(`datasource ${name}: SSH keys not used: ${message(e)}`);
    }
  }
  return { provider: name, label: p.label, userdata: userdata.b, ...(userdata.b === null ? { why: userdata.why } : {}), files };
}

/** `KEY=value` of Scaleway's /conf (the first line starting with the upper-cased key and `=`). */
function confValue(conf: string, key: string): string | null {
  const q = `${key.toUpperCase()}=`;
  const line = conf.split('\n').find((l) => l.startsWith(q));
  return line === undefined ? null : line.slice(q.length);
}

/** Scaleway serves userdata only to a client whose source port is below 1024: the provider tries them in turn. */
async function scalewayUserdata(ctx: NetContext): Promise<Buffer | null> {
  const url = `${ctx.base}/user_data/cloud-init`;
  for (let port = 1; port <= 1024; port++) {
    let r: { status: number; body: Buffer };
    try {
      r = await httpGet(url, { deadline: Date.now() + ctx.timeoutMs, timeoutMs: ctx.timeoutMs, signal: ctx.signal, localPort: port });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL') continue;
      if (code === 'EACCES') throw new Error(`GET ${url}: a source port below 1024 needs root`);
      throw new Error(`GET ${url}: ${message(e)}`);
    }
    if (r.status === 404) return null;
    if (r.status !== 200) throw new Error(`GET ${url}: HTTP ${r.status}`);
    return r.body;
  }
  throw new Error(`GET ${url}: no free source port below 1024`);
}

async function runScaleway(ctx: NetContext): Promise<Found> {
  const conf = (await get200(ctx, '/conf')).toString('utf8');
  const need = (key: string): Buffer => {
    const v = confValue(conf, key);
    if (v === null) throw new Error(`${ctx.base}/conf has no ${key.toUpperCase()}`);
    return Buffer.from(v);
  };
  const files: Found['files'] = [
    { name: 'hostname', data: need('hostname'), mode: 0o644 },
    { name: 'instance_id', data: need('id'), mode: 0o644 },
    { name: 'instance_location', data: need('location_zone_id'), mode: 0o644 },
  ];
  const pub = confValue(conf, 'public_ip_address');
  if (pub !== null) files.push({ name: 'public_ip', data: Buffer.from(pub), mode: 0o644 });
  files.push({ name: 'private_ip', data: need('private_ip'), mode: 0o644 });
  const count = Number(confValue(conf, 'ssh_public_keys') ?? 'x');
  if (Number.isInteger(count) && count >= 0) {
    const keys = Array.from({ length: count }, (_x, i) => confValue(conf, `ssh_public_keys_${i}_key`));
    if (keys.every((k) => k !== null)) files.push({ name: 'ssh/authorized_keys', data: Buffer.from(keys.map((k) => `${k.replace(/^'+|'+$/g, '')}\n`).join('')), mode: 0o600 });
  }
  let userdata: Buffer | null = null;
  let why = '';
  try {
    userdata = await scalewayUserdata(ctx);
    if (userdata === null) why = `GET ${ctx.base}/user_data/cloud-init: HTTP 404`;
  } catch (e) {
    why = message(e);
  }
  return { provider: 'scaleway', label: 'Scaleway', userdata, ...(userdata === null ? { why } : {}), files };
}

// -------------------------------------------------------------------------------------------------------- drives

/** The bytes of the regular file `file` (no symlink followed), at most MAX_USERDATA_BYTES; null when it does not exist. */
function readCapped(file: string): Buffer | null {
  try {
    return readBytesSync(file, MAX_USERDATA_BYTES, { noFollow: true, name: path.basename(file) });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new Error(`${path.basename(file)} is a symbolic link: not followed`);
    throw e;
  }
}

/** The devices a drive provider looks at: by label (blkid, no cache), then the CD-ROM drives; or only the pinned ones. */
async function driveCandidates(exec: ToolExec, labels: readonly string[], pinned: readonly string[] | null): Promise<string[]> {
  if (pinned !== null && pinned.length === 0) return [];
  const found: string[] = [];
  for (const label of labels) {
    const r = await exec(['blkid', '-c', '/dev/null', '-o', 'device', '-t', `LABEL=${label}`, ...(pinned ?? [])], { okExitCodes: [2] });
    if (r.exitCode === 0) found.push(...r.stdout.split('\n').map((l) => l.trim()).filter(Boolean));
  }
  if (pinned !== null) return pinned.filter((d) => found.includes(d));
  // As the provider's FindCIs: whole block devices and partitions in name order, never loop or ram devices; then every
  // /dev/sr*, labelled or not.
  const byLabel = [...new Set(found)].filter((d) => !/^\/dev\/(loop|ram)/.test(d)).sort();
  const cds = (await readdir('/dev').catch(() => [] as string[])).filter((n) => /^sr[0-9]/.test(n)).sort().map((n) => `/dev/${n}`);
  return [...new Set([...byLabel, ...cds])];
}

async function readDrive(env: DatasourceEnv, exec: ToolExec, device: string, files: readonly string[], warn: (w: string) => void): Promise<Buffer> {
  const dir = await mkdtemp(path.join(await resolveInRoot(env.root, '/run'), '.datasource-'));
  let mounted = false;
  try {
    const failures: string[] = [];
    for (const fs of ['iso9660', 'vfat']) {
      try {
        await exec(['mount', '-t', fs, '-o', 'ro', device, dir]);
        mounted = true;
        break;
      } catch (e) {
        failures.push(`${fs}: ${message(e).split('\n')[0] ?? ''}`);
      }
    }
    if (!mounted) throw new Error(`${device}: not mounted (${failures.join('; ')})`);
    for (const f of files) {
      const data = readCapped(path.join(dir, f));
      // the first file that exists is the userdata, even empty (then the device does not count)
      if (data !== null) {
        if (data.length === 0) throw new Error(`${device}: ${f} is empty`);
        return data;
      }
    }
    throw new Error(`${device}: none of ${files.join(', ')}`);
  } finally {
    // always unmounted; a failure to is said, and never hides what was read
    const left = mounted ? await exec(['umount', dir]).then(() => null, (e: unknown) => message(e)) : null;
    if (left !== null) warn(`${device} is still mounted on ${dir}: ${left}`);
    else await rmdir(dir).catch(() => undefined);
  }
}

async function runDrive(env: DatasourceEnv, name: string, pinned: readonly string[] | null, warn: (w: string) => void): Promise<Found> {
  const drive = DRIVES[name] as (typeof DRIVES)[string];
  if (env.exec === undefined) throw new Error('block devices cannot be read: system tools are not available to this run');
  const devices = await driveCandidates(env.exec, drive.labels, pinned);
  if (devices.length === 0) throw new Error(`no device labelled ${drive.labels.join(' or ')}${pinned === null ? ' and no CD-ROM drive' : ''}`);
  const problems: string[] = [];
  for (const device of devices) {
    try {
      const userdata = await readDrive(env, env.exec, device, drive.files, (w) => warn(`datasource ${name}: ${w}`));
      return { provider: name, label: `${drive.label} ${device}`, userdata, files: [] };
    } catch (e) {
      problems.push(message(e));
    }
  }
  throw new Error(problems.join('; '));
}

async function runFile(env: DatasourceEnv, file: string): Promise<Found> {
  const real = await resolveInRoot(env.root, file);
  if ((await lstat(real).catch(() => undefined)) === undefined) throw new Error(`${file}: no such file`);
  const data = readCapped(real);
  if (data === null) throw new Error(`${file}: no such file`);
  return { provider: 'file', label: file, userdata: data, files: [] };
}

// ----------------------------------------------------------------------------------------------------- userdata

/**
 * yip's DecodeMultipartVmware (Go's mime/multipart with the boundary MIMEBOUNDARY): the body of the first part whose
 * Content-Type is exactly text/cloud-config; the data unchanged when it is not such a multipart body or a part does
 * not read to its closing delimiter. (Go also undoes a quoted-printable transfer encoding: not done here.)
 */
export function unwrapMultipart(data: Buffer): Buffer {
  const text = data.toString('latin1'); // one character per byte: indexes are byte offsets
  const dash = '--MIMEBOUNDARY';
  // the rest of a delimiter line: "--" (the last one), or blanks up to the line end
  const delimiterTail = (at: number): 'final' | 'part' | null => {
    if (text.startsWith('--', at)) return 'final';
    return /^[ \t]*\r?\n/.test(text.slice(at, at + 80)) ? 'part' : null;
  };
  const nextLine = (at: number): number => {
    const i = text.indexOf('\n', at);
    return i < 0 ? -1 : i + 1;
  };
  // the preamble, up to the first delimiter line; its line end sets the line break of the rest (Go: nl)
  let pos = -1;
  let nl = '\r\n';
  for (let line = 0; line >= 0 && line < text.length; line = nextLine(line)) {
    if (!text.startsWith(dash, line)) continue;
    const tail = delimiterTail(line + dash.length);
    if (tail === 'final') return data;
    if (tail === 'part') {
      pos = nextLine(line);
      if (text[pos - 2] !== '\r') nl = '\n';
      break;
    }
  }
  if (pos < 0) return data;
  for (;;) {
    const headers = new Map<string, string>();
    for (;;) {
      const next = nextLine(pos);
      if (next < 0) return data;
      const line = text.slice(pos, next).replace(/\r?\n$/, '');
      pos = next;
      if (line === '') break;
      const m = /^([^:\s]+)[ \t]*:[ \t]*(.*?)[ \t]*$/.exec(line);
      if (m === null) return data;
      const key = (m[1] as string).toLowerCase();
      if (!headers.has(key)) headers.set(key, m[2] as string);
    }
    // the body ends at the next line break followed by a delimiter (an empty body: a delimiter right away)
    let end = -1;
    let after = -1;
    if (text.startsWith(dash, pos) && delimiterTail(pos + dash.length) !== null) {
      end = pos;
      after = pos + dash.length;
    } else {
      for (let i = text.indexOf(nl + dash, pos); i >= 0; i = text.indexOf(nl + dash, i + 1)) {
        if (delimiterTail(i + nl.length + dash.length) !== null) {
          end = i;
          after = i + nl.length + dash.length;
          break;
        }
      }
    }
    if (end < 0) return data;
    if (headers.get('content-type') === 'text/cloud-config') return Buffer.from(data.subarray(pos, end));
    if (delimiterTail(after) === 'final') return data;
    pos = nextLine(after);
    if (pos < 0) return data;
  }
}

/** yip's writeToFile: through the `files` rules (parent made with mode+0100, exact mode, owned by the agent), the bytes as given. */
async function writeOwned(env: DatasourceEnv, hooks: DatasourceHooks, file: string, data: Buffer, mode: number): Promise<void> {
  const parent = path.posix.dirname(file);
  if ((await lstat(await resolveInRoot(env.root, parent)).catch(() => undefined)) === undefined) await hooks.ensureDir(parent, mode < 0o700 ? mode + 0o100 : mode);
  const real = await resolveInRoot(env.root, file);
  await writeFile(real, data);
  await chmod(real, mode);
  await chown(real, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
}

function firstLine(text: string): string {
  const nl = text.indexOf('\n');
  return (nl < 0 ? text : text.slice(0, nl)).replace(/\r$/, '');
}

/** processUserData: userdata, then userdata.yaml or the script run; an Error stops what follows (as yip's return). */
async function processUserdata(env: DatasourceEnv, hooks: DatasourceHooks, base: string, raw: Buffer, warn: (w: string) => void): Promise<void> {
  const data = unwrapMultipart(raw);
  const file = path.posix.join(base, 'userdata');
  await writeOwned(env, hooks, file, data, 0o644);
  const text = data.toString('utf8');
  if (decodeYip(text, file).config !== null) {
    await writeOwned(env, hooks, path.posix.join(base, 'userdata.yaml'), data, 0o644);
    return;
  }
  if (firstLine(text).startsWith('#!')) {
    await writeOwned(env, hooks, file, data, 0o744);
    const r = await env.console.run(file);
    if (r.exitCode !== 0) throw new Error(`failed to run ${file}: exit status ${r.exitCode}\ncommand output:\n${r.output}`);
    return;
  }
  warn(`the userdata is neither a cloud-config nor a #! script: written to ${file} only`);
}

// ------------------------------------------------------------------------------------------------------ the plugin

type Job = { name: string; run: (signal: AbortSignal) => Promise<Found> };

/** Run every network job at once; the first with userdata wins and the others are abandoned. */
async function race(jobs: readonly Job[], problems: Array<{ name: string; why: string }>): Promise<Found | null> {
  const ctl = new AbortController();
  setMaxListeners(0, ctl.signal); // one listener per request in flight, a dozen per provider
  let winner: Found | null = null;
  const runs = jobs.map((job) => job.run(ctl.signal).then((f) => {
    if (winner !== null) return;
    if (f.userdata !== null) {
      winner = f;
      ctl.abort();
    } else {
      problems.push({ name: job.name, why: `answered, but no userdata: ${f.why ?? ''}` });
    }
  }, (e: unknown) => {
    if (winner === null) problems.push({ name: job.name, why: message(e) });
  }));
  // Settles at the first userdata (the others are aborted and end at once) or when every provider has answered.
  await new Promise<void>((resolve) => {
    let left = runs.length;
    if (left === 0) resolve();
    for (const r of runs) void r.then(() => {
      if (winner !== null || --left === 0) resolve();
    });
  });
  await Promise.allSettled(runs);
  return winner;
}

/** The datasource plugin for one step; every failure pushed to `errors` (never thrown). */
export async function runDatasource(env: DatasourceEnv, ds: YipStep['datasource'], errors: string[], warnings: string[], hooks: DatasourceHooks): Promise<void> {
  try {
    await datasource(env, ds, errors, warnings, hooks);
  } catch (e) {
    errors.push(`datasource: ${message(e)}`);
  }
}

async function datasource(env: DatasourceEnv, ds: YipStep['datasource'], errors: string[], warnings: string[], hooks: DatasourceHooks): Promise<void> {
  const seams = env.datasourceTest;
  const timeoutMs = seams?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const pinned = seams !== undefined ? (seams.devices ?? []) : null;
  const local: Job[] = [];
  const network: Job[] = [];
  let file: Job | null = null;
  for (const name of [...new Set(ds.providers)]) {
    if (NOT_IMPLEMENTED[name] !== undefined) {
      errors.push(`datasource ${name}: ${NOT_IMPLEMENTED[name]}`);
    } else if (DRIVES[name] !== undefined) {
      local.push({ name, run: () => runDrive(env, name, pinned, (w) => warnings.push(w)) });
    } else if (name === 'file') {
      if (ds.path === '') warnings.push('datasource file: ignored without `path`');
      else file = { name, run: () => runFile(env, ds.path) };
    } else if (NETWORK[name] !== undefined || name === 'scaleway') {
      const origin = seams !== undefined ? seams.metadataBase?.(name) : name === 'scaleway' ? SCALEWAY_ORIGIN : NETWORK[name]?.origin;
      if (origin === undefined) {
        errors.push(`datasource ${name}: no metadata address for it in this test run`);
        continue;
      }
      const base = origin.replace(/\/+$/, '');
      network.push({
        name,
        run: (signal) => (name === 'scaleway' ? runScaleway({ base, timeoutMs, signal }) : runNetProvider(name, NETWORK[name] as NetProvider, { base, timeoutMs, signal }, (w) => warnings.push(w))),
      });
    } else {
      warnings.push(`datasource: unknown provider ${JSON.stringify(name)} ignored`);
    }
  }
  if (file !== null) local.push(file);

  await hooks.ensureDir(CONFIG_PATH, 0o755);

  const problems: Array<{ name: string; why: string }> = [];
  let winner: Found | null = null;
  for (const job of local) {
    try {
      const f = await job.run(new AbortController().signal);
      if (f.userdata !== null) {
        winner = f;
        break;
      }
    } catch (e) {
      problems.push({ name: job.name, why: message(e) });
    }
  }
  if (winner === null && network.length > 0) winner = await race(network, problems);
  if (winner === null) {
    for (const p of problems) errors.push(`datasource ${p.name}: ${p.why}`);
    // 2617d71: "no metadata/userdata found" is an error (rancher/yip v1.9.6 later returns nil there)
    errors.push('datasource: no metadata/userdata found');
    return;
  }
  for (const p of problems) warnings.push(`datasource ${p.name}: ${p.why}`);
  const fail = (e: unknown): void => {
    errors.push(`datasource ${(winner as Found).provider}: ${message(e)}`);
  };

  try {
    for (const f of winner.files) {
      const target = path.posix.join(CONFIG_PATH, f.name);
      const parent = await resolveInRoot(env.root, path.posix.dirname(target));
      await mkdir(parent, { recursive: true, mode: 0o755 });
      await writeFile(await resolveInRoot(env.root, target), f.data, { mode: f.mode });
    }
    const base = ds.path !== '' && ds.path !== winner.label ? ds.path : CONFIG_PATH;
    await processUserdata(env, hooks, base, winner.userdata as Buffer, (w) => warnings.push(`datasource ${(winner as Found).provider}: ${w}`));
  } catch (e) {
    fail(e);
    return;
  }

  // The hostname and keys the provider left in /run/config (whoever wrote them), as yip looks for them.
  const hostnameFile = await resolveInRoot(env.root, path.posix.join(CONFIG_PATH, 'hostname'));
  if ((await lstat(hostnameFile).catch(() => undefined)) !== undefined) {
    const errs: string[] = [];
    try {
      const name = (readCapped(hostnameFile) ?? Buffer.alloc(0)).toString('utf8');
      if (name !== '') await hooks.hostname(name, errs); // the plugin does nothing with an empty value
    } catch (e) {
      errs.push(message(e));
    }
    for (const e of errs) fail(e);
    if (errs.length > 0) return;
  }
  const keysFile = await resolveInRoot(env.root, path.posix.join(CONFIG_PATH, 'ssh', 'authorized_keys'));
  if ((await lstat(keysFile).catch(() => undefined)) !== undefined) {
    const errs: string[] = [];
    try {
      const keys = (readCapped(keysFile) ?? Buffer.alloc(0)).toString('utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
      await hooks.authorizedKeys(userInfo().username, keys, errs);
    } catch (e) {
      errs.push(message(e));
    }
    for (const e of errs) fail(e);
  }
}
