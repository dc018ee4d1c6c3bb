/**
 * Test helper: a real Debian `docker-registry` (distribution 2.8) on 127.0.0.1:<free port>, storing into a fresh temp
 * dir, optionally behind auth:
 *   - 'htpasswd': Basic auth against a bcrypt htpasswd file (made with `htpasswd -B`, package apache2-utils);
 *   - 'token':    the registry's `auth.token` mode, with a token server run here that signs ES256 JWTs with a key and
 *                 self-signed certificate made by the `openssl` CLI (the registry trusts the certificate through
 *                 `rootcertbundle`; tokens carry it in `x5c`). Anonymous callers get `pull` (unless
 *                 `anonymousPull: false`), known users get what they ask for, a wrong password gets 401.
 * With auth, `push()` uses the first user's credentials (default user `admin`). With `tls: true` it serves HTTPS with a
 * self-signed certificate for `registry.test`, `localhost` and 127.0.0.1 (`url` is then https://...).
 * `uploadImage()` puts an image from a layout through the registry API byte for byte (for Docker-format images, which
 * skopeo 1.9 will not read from an OCI layout). `writeAuthJson()` writes an auth.json for the client under test.
 *
 *   const reg = await startRegistry({ auth: 'htpasswd', users: { alice: 'secret' } });
 *   t.teardown(() => reg.stop());
 *   await reg.push(layoutDir, 'v1', 'os/image:v1');   // -> 127.0.0.1:PORT/os/image:v1
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID, sign, createPrivateKey, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { pushLayout, pushLayoutAs } from './oci-layout.ts';

const run = promisify(execFile);

export type RegistryAuth = 'none' | 'htpasswd' | 'token';

export interface RegistryOptions {
  auth?: RegistryAuth;
  /** user -> password. Default with auth: `{ admin: 'admin-password' }`. */
  users?: Record<string, string>;
  /** Token mode: whether callers without credentials get pull access. Default true. */
  anonymousPull?: boolean;
  /** Token mode: OAuth2 refresh tokens accepted by the token server (POST grant_type=refresh_token), token -> user. */
  identityTokens?: Record<string, string>;
  /** Serve HTTPS with a self-signed certificate for `registry.test`, `localhost` and 127.0.0.1 (made by openssl). */
  tls?: boolean;
}

export interface TokenRequest {
  method: string;
  service: string | undefined;
  scope: string | undefined;
  /** The authenticated user, or undefined for anonymous. */
  user: string | undefined;
  grantType: string | undefined;
  status: number;
}

export interface TestRegistry {
  /** `127.0.0.1:PORT`, the host part of image references. */
  host: string;
  /** `http://127.0.0.1:PORT` (`https://` with `tls`). */
  url: string;
  /** With `tls`: the PEM certificate the registry serves. */
  certFile: string | undefined;
  /** The temp dir holding storage and config (removed by stop()). */
  dir: string;
  auth: RegistryAuth;
  users: Record<string, string>;
  /** Token mode: the realm URL (`http://127.0.0.1:TPORT/token`). */
  tokenRealm: string | undefined;
  /** Token mode: every request the token server answered, in order. */
  tokenRequests: TokenRequest[];
  /** Push an OCI layout `layoutDir:tag` to `host/name` (`name` = `repo:tag`) with skopeo, with credentials if needed. */
  push(layoutDir: string, tag: string, name: string): Promise<void>;
  /** Stop the registry (and token server) and remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  srv.close();
  await once(srv, 'close');
  return port;
}

/** Writes a containers auth.json with the given entries (`host -> {username,password}` or `{identitytoken}`). */
export async function writeAuthJson(
  file: string,
  entries: Record<string, { username: string; password: string } | { identitytoken: string } | { registrytoken: string }>,
): Promise<void> {
  const auths: Record<string, Record<string, string>> = {};
  for (const [host, e] of Object.entries(entries)) {
    auths[host] = 'username' in e ? { auth: Buffer.from(`${e.username}:${e.password}`).toString('base64') } : { ...e };
  }
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify({ auths }, null, 2));
}

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString('base64url');
}

interface TokenServer {
  realm: string;
  requests: TokenRequest[];
  close(): Promise<void>;
}

async function startTokenServer(
  dir: string,
  service: string,
  issuer: string,
  users: Record<string, string>,
  anonymousPull: boolean,
  identityTokens: Record<string, string>,
): Promise<{ server: TokenServer; certFile: string }> {
  const keyFile = path.join(dir, 'token.key');
  const certFile = path.join(dir, 'token.crt');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=cos-test-token-issuer']);
  const key: KeyObject = createPrivateKey(await readFile(keyFile));
  const certPem = await readFile(certFile, 'utf8');
  const certDer = certPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const requests: TokenRequest[] = [];

  const issue = (user: string | undefined, scopes: string[]): string => {
    const now = Math.floor(Date.now() / 1000);
    const access = scopes.flatMap((s) => {
      const m = /^([^:]+):(.+):([^:]+)$/.exec(s);
      if (!m) return [];
      const [, type, name, actions] = m;
      const wanted = (actions ?? '').split(',').filter((a) => a !== '');
      const granted = user !== undefined ? wanted : anonymousPull ? wanted.filter((a) => a === 'pull') : [];
      return granted.length ? [{ type, name, actions: granted }] : [];
    });
    const header = { typ: 'JWT', alg: 'ES256', x5c: [certDer] };
    const claims = { iss: issuer, sub: user ?? '', aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomUUID(), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    return `${input}.${b64url(sig)}`;
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const form = req.method === 'POST' ? new URLSearchParams(Buffer.concat(chunks).toString('utf8')) : url.searchParams;
      const scopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== '');
      const record: TokenRequest = {
        method: req.method ?? '', service: form.get('service') ?? undefined, scope: scopes.join(' ') || undefined,
        user: undefined, grantType: form.get('grant_type') ?? undefined, status: 200,
      };
      requests.push(record);
      const reply = (status: number, body: unknown): void => {
        record.status = status;
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (url.pathname !== '/token') return reply(404, { error: 'not found' });
      let user: string | undefined;
      if (req.method === 'POST') {
        const grant = form.get('grant_type');
        if (grant === 'refresh_token') {
          user = identityTokens[form.get('refresh_token') ?? ''];
          if (user === undefined) return reply(401, { error: 'invalid refresh token' });
        } else if (grant === 'password') {
          const u = form.get('username') ?? '';
          if (users[u] === undefined || users[u] !== form.get('password')) return reply(401, { error: 'invalid credentials' });
          user = u;
        } else {
          return reply(400, { error: 'unsupported grant_type' });
        }
      } else {
        const authz = req.headers.authorization;
        if (authz !== undefined) {
          const m = /^Basic (.+)$/i.exec(authz);
          const decoded = m?.[1] !== undefined ? Buffer.from(m[1], 'base64').toString('utf8') : '';
          const colon = decoded.indexOf(':');
          const u = decoded.slice(0, colon);
          if (colon === -1 || users[u] === undefined || users[u] !== decoded.slice(colon + 1)) {
            return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] });
          }
          user = u;
        }
      }
      record.user = user;
      const token = issue(user, scopes);
      return reply(200, { token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    certFile,
    server: {
      realm: `http://127.0.0.1:${port}/token`,
      requests,
      close: async (): Promise<void> => {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    },
  };
}

async function htpasswdFile(file: string, users: Record<string, string>): Promise<void> {
  const lines: string[] = [];
  for (const [u, p] of Object.entries(users)) {
    // -C 4: the lowest bcrypt cost, so the registry's per-request check stays fast.
    const { stdout } = await run('htpasswd', ['-nbB', '-C', '4', u, p]).catch((e: unknown) => {
      throw new Error(`htpasswd -B failed (is the Debian package apache2-utils installed?): ${(e as Error).message}`);
    });
    lines.push(stdout.trim());
  }
  await writeFile(file, `${lines.join('\n')}\n`);
}

function registryYaml(o: { dir: string; port: number; auth: string; tls: { cert: string; key: string } | undefined }): string {
  return [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(path.join(o.dir, 'data'))}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${o.port}`,
    `  secret: ${randomBytes(16).toString('hex')}`,
    ...(o.tls ? ['  tls:', `    certificate: ${JSON.stringify(o.tls.cert)}`, `    key: ${JSON.stringify(o.tls.key)}`] : []),
    o.auth,
  ].join('\n');
}

async function waitReady(url: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  while (Date.now() < deadline) {
    if (exited) throw new Error(`docker-registry exited during start: ${stderr().trim().slice(-2000)}`);
    const status = await new Promise<number | undefined>((resolve) => {
      const get = url.startsWith('https:') ? https.get : http.get;
      const req = get(`${url}/v2/`, { rejectUnauthorized: false }, (res) => {
        res.resume();
        resolve(res.statusCode);
      });
      req.on('error', () => resolve(undefined));
      req.setTimeout(1000, () => req.destroy());
    });
    if (status === 200 || status === 401) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`docker-registry did not answer ${url}/v2/ within 20 s: ${stderr().trim().slice(-2000)}`);
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** Starts a real docker-registry on 127.0.0.1 (see the module comment). Always call stop() (t.teardown). */
export async function startRegistry(opts: RegistryOptions = {}): Promise<TestRegistry> {
  const auth = opts.auth ?? 'none';
  const users = opts.users ?? (auth === 'none' ? {} : { admin: 'admin-password' });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cos-registry-'));
  let tokenServer: TokenServer | undefined;
  try {
    await mkdir(path.join(dir, 'data'));
    let authYaml = '';
    if (auth === 'htpasswd') {
      await htpasswdFile(path.join(dir, 'htpasswd'), users);
      authYaml = ['auth:', '  htpasswd:', '    realm: cos-test-registry', `    path: ${JSON.stringify(path.join(dir, 'htpasswd'))}`].join('\n');
    } else if (auth === 'token') {
      const service = 'cos-test-registry';
      const issuer = 'cos-test-issuer';
      const t = await startTokenServer(dir, service, issuer, users, opts.anonymousPull ?? true, opts.identityTokens ?? {});
      tokenServer = t.server;
      authYaml = ['auth:', '  token:', `    realm: ${t.server.realm}`, `    service: ${service}`, `    issuer: ${issuer}`,
        `    rootcertbundle: ${JSON.stringify(t.certFile)}`].join('\n');
    }

    let tls: { cert: string; key: string } | undefined;
    if (opts.tls) {
      tls = { cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key') };
      await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', tls.key, '-out', tls.cert, '-days', '2', '-subj', '/CN=registry.test',
        '-addext', 'subjectAltName=DNS:registry.test,DNS:localhost,IP:127.0.0.1']);
    }

    // The port may be taken between freePort() and the registry's bind (tests run in parallel): try a few.
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await freePort();
      const configFile = path.join(dir, 'config.yml');
      await writeFile(configFile, registryYaml({ dir, port, auth: authYaml, tls }));
      const child = spawn('docker-registry', ['serve', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr?.on('data', (b: Buffer) => {
        stderr = (stderr + b.toString('utf8')).slice(-8192);
      });
      const host = `127.0.0.1:${port}`;
      const url = `${tls ? 'https' : 'http'}://${host}`;
      try {
        await waitReady(url, child, () => stderr);
      } catch (e) {
        lastError = e;
        await killChild(child);
        continue;
      }
      const pushCreds = Object.entries(users)[0];
      let stopped = false;
      const ts = tokenServer;
      return {
        host,
        url,
        dir,
        certFile: tls?.cert,
        auth,
        users,
        tokenRealm: ts?.realm,
        tokenRequests: ts?.requests ?? [],
        push: async (layoutDir: string, tag: string, name: string): Promise<void> => {
          if (auth !== 'none' && pushCreds) await pushLayoutAs(layoutDir, tag, `${host}/${name}`, `${pushCreds[0]}:${pushCreds[1]}`);
          else await pushLayout(layoutDir, tag, `${host}/${name}`);
        },
        stop: async (): Promise<void> => {
          if (stopped) return;
          stopped = true;
          await killChild(child);
          await ts?.close();
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
    throw lastError instanceof Error ? lastError : new Error(String(lastError));
  } catch (e) {
    await tokenServer?.close();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/** Puts `data` as blob `digest` into `repo` of `reg` (monolithic upload through the registry HTTP API; no auth). */
export async function uploadBlob(reg: TestRegistry, repo: string, digest: string, data: Buffer): Promise<void> {
  const start = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  const location = start.headers.get('location');
  await start.arrayBuffer();
  if (start.status !== 202 || location === null) throw new Error(`starting a blob upload to ${repo}: HTTP ${start.status}`);
  const u = new URL(location, reg.url);
  u.searchParams.set('digest', digest);
  const put = await fetch(u, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: data });
  if (put.status !== 201) throw new Error(`uploading ${digest} to ${repo}: HTTP ${put.status} ${await put.text()}`);
  await put.arrayBuffer().catch(() => undefined);
}

/**
 * Uploads an image from an OCI layout dir to `reg` as `name` (`repo:tag`) with the registry HTTP API, byte for byte:
 * the config and layer blobs, then the manifest under its own media type. For what skopeo cannot push as is (skopeo
 * 1.9's oci: transport ignores index.json entries with Docker media types). Registries without auth only.
 */
export async function uploadImage(reg: TestRegistry, layoutDir: string, manifest: { digest: string; mediaType: string }, name: string): Promise<void> {
  if (reg.auth !== 'none') throw new Error('uploadImage supports registries without auth only');
  const colon = name.lastIndexOf(':');
  const repo = name.slice(0, colon);
  const tag = name.slice(colon + 1);
  const read = (digest: string): Promise<Buffer> => readFile(path.join(layoutDir, 'blobs', 'sha256', digest.slice('sha256:'.length)));
  const body = await read(manifest.digest);
  const doc = JSON.parse(body.toString('utf8')) as { config?: { digest: string }; layers?: Array<{ digest: string }>; manifests?: unknown };
  if (doc.manifests !== undefined) throw new Error('uploadImage uploads image manifests, not indexes');
  for (const digest of [doc.config?.digest, ...(doc.layers ?? []).map((l) => l.digest)]) {
    if (digest !== undefined) await uploadBlob(reg, repo, digest, await read(digest));
  }
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { method: 'PUT', headers: { 'content-type': manifest.mediaType }, body });
  if (res.status !== 201) throw new Error(`putting manifest ${name}: HTTP ${res.status} ${await res.text()}`);
}
