/**
 * The OCI distribution (registry v2) client: resolves references to digests, fetches manifests and streams blobs,
 * verifying every byte against its digest.
 *
 * - Transport: plain HTTP only for loopback registries (127.0.0.0/8, localhost, [::1], as Docker does); HTTPS
 *   otherwise. A registry marked `insecure = true` in registries.conf is probed over HTTPS without certificate
 *   verification and falls back to plain HTTP when that fails.
 * - Proxies: HTTP_PROXY / HTTPS_PROXY / NO_PROXY (upper case wins over lower case, as in Go). NO_PROXY entries are
 *   `*`, host names (matching the host and its subdomains), `.domain`, IPs, CIDR ranges and `host:port`. Loopback is
 *   NOT implicitly exempt: list it in NO_PROXY. The proxy mechanics (absolute-URI requests, CONNECT tunnels) are
 *   Node 24's built-in agent proxy support; this module decides per request which proxy, if any, applies.
 * - Auth: an anonymous first request; on 401 the WWW-Authenticate challenge is answered (Bearer: a token from the
 *   realm, with the auth.json credentials if any, cached per registry and scope; Basic: the credentials). What a
 *   registry asked for is remembered, so later requests authenticate up front. 401/403 after that -> REGISTRY_UNAUTHORIZED
 *   naming the registry, the repository and the credentials used (or the files searched).
 * - Retries: 5xx, 408, 429 and network errors, with exponential backoff (`retryBaseMs * 2^n`, or Retry-After when
 *   longer, capped at 60 s). Other 4xx are not retried. A blob stream broken mid-way resumes with a Range request from
 *   the last byte received, the hash state carrying on; the retry budget resets whenever an attempt made progress.
 * - Errors: REGISTRY_UNREACHABLE (network, after retries), REGISTRY_NOT_FOUND (404, naming what), REGISTRY_ERROR
 *   (other HTTP status, or a registry blocked in registries.conf), DIGEST_MISMATCH, BLOB_TRUNCATED, MANIFEST_INVALID.
 *
 * `got` is heavy to import (see spec/perf-notes.md): import this module lazily, when a job starts.
 */
import { createHash, type Hash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP } from 'node:net';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import got, { RequestError, type Got, type Request as GotRequest } from 'got';
import { AgentError, type ErrorCode } from '../model/errors.ts';
import { SysRoot } from '../sys/root.ts';
import {
  basicAuthorization,
  defaultAuthFiles,
  describeCredential,
  findCredential,
  loadAuthFiles,
  loadRegistriesConf,
  parseWwwAuthenticate,
  registryPolicy,
  type AuthFile,
  type Challenge,
  type Credential,
  type RegistriesConf,
} from './auth.ts';
import {
  checkImageManifest,
  computeDigest,
  digestAlgorithm,
  formatPlatform,
  hostPlatform,
  INDEX_MEDIA_TYPES,
  MANIFEST_ACCEPT,
  MAX_MANIFEST_BYTES,
  MEDIA_TYPES,
  parseImageConfig,
  parseManifest,
  platformMatches,
  selectManifest,
} from './manifest.ts';
import { formatReference, isDigest, isLoopbackRegistry, isTag, manifestReference, parseReference, registryApiHost } from './reference.ts';
import type { Descriptor, FetchedManifest, ImageReference, Platform, RegistryClientOptions, ResolvedImage } from './types.ts';

const DEFAULT_RETRIES = 4;
const DEFAULT_RETRY_BASE_MS = 500;
const DEFAULT_TIMEOUT_MS = 30_000;
const MAX_BACKOFF_MS = 60_000;
const ERROR_BODY_LIMIT = 64 * 1024;
const TOKEN_DEFAULT_TTL_S = 60;

/** An AgentError worth retrying (5xx, 429, network errors, broken streams). */
class TransientError extends AgentError {
  override name = 'TransientError';
  readonly retryAfterMs: number | undefined;
  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; retryAfterMs?: number } = {}) {
    super(code, message, { cause: opts.cause });
    this.retryAfterMs = opts.retryAfterMs;
  }
}

interface Exchange {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: GotRequest;
  url: string;
}

type AuthMode = { scheme: 'basic' } | { scheme: 'bearer'; realm: string; service: string | undefined };

interface RegistryConfig {
  authFiles: AuthFile[];
  searched: string[];
  conf: RegistriesConf;
}

// ---------------------------------------------------------------------------------------------------------------
// Proxy selection (pure)

function envAny(env: NodeJS.ProcessEnv, ...names: string[]): string | undefined {
  for (const n of names) {
    const v = env[n];
    if (v !== undefined && v.trim() !== '') return v.trim();
  }
  return undefined;
}

function hostMatchesNoProxy(hostname: string, port: string, entries: readonly string[]): boolean {
  const host = hostname.toLowerCase().replace(/^\[|\]$/g, '');
  const ipType = isIP(host);
  for (const raw of entries) {
    let e = raw.trim().toLowerCase();
    if (e === '') continue;
    if (e === '*') return true;
    // Optional port: "host:port", "[v6]:port", "1.2.3.4:port".
    let entryPort: string | undefined;
    const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(e);
    if (v6) {
      e = v6[1] ?? '';
      entryPort = v6[2];
    } else if (isIP(e) !== 6 && !e.includes('/')) {
      const m = /^(.*):(\d+)$/.exec(e);
      if (m) {
        e = m[1] ?? '';
        entryPort = m[2];
      }
    }
    if (entryPort !== undefined && entryPort !== port) continue;
    if (e.includes('/')) {
      const [net, bits] = e.split('/');
      const type = net ? isIP(net) : 0;
      if (type === 0 || ipType !== type || bits === undefined || !/^\d+$/.test(bits)) continue;
      const list = new BlockList();
      try {
        list.addSubnet(net as string, Number(bits), type === 6 ? 'ipv6' : 'ipv4');
      } catch {
        continue;
      }
      if (list.check(host, ipType === 6 ? 'ipv6' : 'ipv4')) return true;
      continue;
    }
    if (isIP(e) !== 0) {
      if (host === e) return true;
      continue;
    }
    const domain = e.startsWith('*.') ? e.slice(1) : e;
    if (domain.startsWith('.')) {
      if (host.endsWith(domain) || host === domain.slice(1)) return true;
    } else if (host === domain || host.endsWith(`.${domain}`)) {
      return true;
    }
  }
  return false;
}

/**
 * The proxy URL to use for `url` under `env` (HTTPS_PROXY for https, HTTP_PROXY for http, minus NO_PROXY), or
 * undefined to connect directly. A proxy given without a scheme is taken as `http://`.
 */
export function proxyForUrl(url: string | URL, env: NodeJS.ProcessEnv): string | undefined {
  const u = typeof url === 'string' ? new URL(url) : url;
  const proxy = u.protocol === 'https:' ? envAny(env, 'HTTPS_PROXY', 'https_proxy') : u.protocol === 'http:' ? envAny(env, 'HTTP_PROXY', 'http_proxy') : undefined;
  if (proxy === undefined) return undefined;
  const noProxy = envAny(env, 'NO_PROXY', 'no_proxy');
  const port = u.port !== '' ? u.port : u.protocol === 'https:' ? '443' : '80';
  if (noProxy !== undefined && hostMatchesNoProxy(u.hostname, port, noProxy.split(/[\s,]+/))) return undefined;
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(proxy) ? proxy : `http://${proxy}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

function headerString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

function retryAfterMs(headers: http.IncomingHttpHeaders): number | undefined {
  const v = headerString(headers['retry-after']);
  if (v === undefined) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - Date.now());
}

async function readAll(body: Readable, limit: number, onTooLarge: () => AgentError): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    const b = chunk as Buffer;
    n += b.length;
    if (n > limit) {
      body.destroy();
      throw onTooLarge();
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** Reads (at most 64 KiB of) an error body, never throwing. */
async function readErrorBody(body: Readable): Promise<string> {
  try {
    const b = await readAll(body, ERROR_BODY_LIMIT, () => new AgentError('REGISTRY_ERROR', 'error body too large'));
    return b.toString('utf8');
  } catch {
    body.destroy();
    return '';
  }
}

/** `MANIFEST_UNKNOWN: manifest unknown` from a distribution error body, or a short excerpt of a non-JSON body. */
function registryErrorDetail(body: string): { codes: string[]; text: string } {
  try {
    const doc = JSON.parse(body) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    if (Array.isArray(doc.errors)) {
      const codes = doc.errors.map((e) => String(e.code ?? '')).filter((c) => c !== '');
      const text = doc.errors.map((e) => [e.code, e.message].filter((x) => typeof x === 'string' && x !== '').join(': ')).join('; ');
      return { codes, text };
    }
  } catch {
    // not JSON
  }
  return { codes: [], text: body.replace(/\s+/g, ' ').trim().slice(0, 200) };
}

const NETWORK_HINTS: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'host not found (DNS)',
  EAI_AGAIN: 'DNS lookup failed',
  ETIMEDOUT: 'timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EPIPE: 'connection closed',
};

function networkMessage(e: unknown): string {
  const code = (e as { code?: string }).code;
  const msg = e instanceof Error ? e.message : String(e);
  const hint = code !== undefined ? NETWORK_HINTS[code] : undefined;
  return hint !== undefined ? `${hint} (${msg})` : msg;
}

/** TLS verification failures are not retried: trying again cannot fix a certificate. */
function isTlsVerificationError(e: unknown): boolean {
  const code = (e as { code?: string }).code ?? '';
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS_CERT_ALTNAME|UNABLE_TO_GET_ISSUER/.test(code);
}

/**
 * A byte stream fed by an async generator. Unlike Readable.from, destroying it aborts the generator's work at once
 * (through `abort`) instead of waiting for its pending read to finish.
 */
class GeneratorStream extends Readable {
  readonly #gen: AsyncGenerator<Buffer>;
  readonly #abort: AbortController;
  #pumping = false;

  constructor(gen: AsyncGenerator<Buffer>, abort: AbortController) {
    super({ highWaterMark: 256 * 1024 });
    this.#gen = gen;
    this.#abort = abort;
  }

  override _read(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    void this.#pump();
  }

  async #pump(): Promise<void> {
    try {
      for (;;) {
        const { value, done } = await this.#gen.next();
        if (this.destroyed) return;
        if (done) {
          this.push(null);
          return;
        }
        if (!this.push(value)) {
          this.#pumping = false;
          return;
        }
      }
    } catch (e) {
      this.destroy(e instanceof Error ? e : new Error(String(e)));
    }
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.#abort.signal.aborted) this.#abort.abort(err ?? new Error('the blob stream was closed by its consumer'));
    cb(err);
  }
}

/** What the OCI 1.1 referrers API (`GET /v2/<name>/referrers/<digest>`) answered for one digest. */
export interface ReferrersResponse {
  /**
   * True when the registry answered 200 with an OCI image index: it has the API. False when it answered 400, 404,
   * 405 or 406, or a 2xx of another content type: it has no referrers API (read the referrers tag schema instead).
   */
  supported: boolean;
  /** HTTP status of the first request. */
  status: number;
  /** The index pages as received (unparsed), in order; `Link: <…>; rel="next"` pages are followed. Empty when unsupported. */
  pages: Buffer[];
}

/** What a ranged read of a blob found (`RegistryClient.probeBlob`). */
export interface BlobProbe {
  /** The bytes read: fewer than asked when the blob ends first, empty past its end; undefined when not readable. */
  bytes: Buffer | undefined;
  /** The blob's size as the registry states it (Content-Range total, or Content-Length of a whole answer). */
  total: number | undefined;
}

/** Statuses by which a registry says it has no referrers API (go-containerregistry falls back on 400, 404, 406). */
const NO_REFERRERS_API_STATUSES: readonly number[] = [400, 404, 405, 406];
/** Most referrers pages followed through Link headers (a loop or a flood stops there: fewer candidates, never more trust). */
const MAX_REFERRERS_PAGES = 16;

function bareContentType(headers: http.IncomingHttpHeaders): string {
  return headerString(headers['content-type'])?.split(';')[0]?.trim().toLowerCase() ?? '';
}

/** The `rel="next"` target of a Link header (RFC 8288), or undefined. */
function nextLink(headers: http.IncomingHttpHeaders): string | undefined {
  const v = headerString(headers.link);
  if (v === undefined) return undefined;
  for (const m of v.matchAll(/<([^>]*)>((?:\s*;\s*[^;,]*)*)/g)) {
    if (/;\s*rel\s*=\s*"?(?:[^";,]*\s)?next(?:\s[^";,]*)?"?\s*(?:;|$)/i.test(m[2] ?? '')) return m[1];
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------

/** The registry client. One instance caches tokens, learned auth schemes and keep-alive connections. */
export class RegistryClient {
  readonly #root: SysRoot;
  readonly #authFileList: string[];
  readonly #registriesConfPath: string;
  readonly #env: NodeJS.ProcessEnv;
  readonly #retries: number;
  readonly #retryBaseMs: number;
  readonly #timeoutMs: number;
  readonly #platform: Platform;
  readonly #log: (event: string, fields: Record<string, unknown>) => void;
  readonly #got: Got;
  readonly #signal: AbortSignal | undefined;
  #config: Promise<RegistryConfig> | undefined;
  readonly #schemes = new Map<string, Promise<'http' | 'https'>>();
  readonly #authModes = new Map<string, AuthMode>();
  readonly #tokens = new Map<string, { token: string; expiresAt: number }>();
  readonly #agentCache = new Map<string, http.Agent>();

  constructor(opts: RegistryClientOptions = {}) {
    this.#root = opts.root ?? new SysRoot('/');
    this.#env = opts.env ?? process.env;
    this.#authFileList = opts.authFiles ?? defaultAuthFiles(this.#env);
    this.#registriesConfPath = opts.registriesConf ?? '/etc/containers/registries.conf';
    this.#retries = Math.max(0, opts.retries ?? DEFAULT_RETRIES);
    this.#retryBaseMs = Math.max(0, opts.retryBaseMs ?? DEFAULT_RETRY_BASE_MS);
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#platform = opts.platform ?? hostPlatform();
    this.#log = opts.log ?? ((): void => {});
    this.#signal = opts.signal;
    const t = this.#timeoutMs;
    this.#got = got.extend({
      retry: { limit: 0 },
      throwHttpErrors: false,
      decompress: false,
      followRedirect: true,
      maxRedirects: 10,
      http2: false,
      timeout: { lookup: t, connect: t, secureConnect: t, socket: t, send: t, response: t },
      headers: { 'user-agent': 'cos-agent' },
    });
  }

  /** Releases keep-alive connections. The client stays usable (new agents are made on demand). */
  close(): void {
    for (const a of this.#agentCache.values()) a.destroy();
    this.#agentCache.clear();
  }

  /**
   * Resolve a reference to the image manifest to pull: a tag is resolved to a digest first and everything after uses
   * digests; an index is narrowed to the platform's manifest; the config is fetched and checked against the platform.
   */
  async resolve(refIn: ImageReference | string): Promise<ResolvedImage> {
    const ref = typeof refIn === 'string' ? parseReference(refIn) : refIn;
    const name = formatReference(ref);
    const top = await this.fetchManifest(ref, manifestReference(ref));
    const topParsed = parseManifest(top.bytes, top.mediaType, `manifest of ${name}`);

    let manifestDoc = top;
    let parsed = topParsed;
    let indexDigest: string | undefined;
    let platform: Platform | undefined;
    if (topParsed.kind === 'index') {
      indexDigest = top.digest;
      const chosen = selectManifest(topParsed.index, this.#platform, `index ${indexDigest} of ${name}`);
      if (INDEX_MEDIA_TYPES.includes(chosen.mediaType)) {
        throw new AgentError('MANIFEST_INVALID', `index ${indexDigest} of ${name}: entry ${chosen.digest} for ${formatPlatform(this.#platform)} is itself an index (nested indexes are not supported)`);
      }
      this.#log('oci.platform', { reference: name, platform: formatPlatform(chosen.platform ?? this.#platform), digest: chosen.digest });
      manifestDoc = await this.fetchManifest(ref, chosen.digest);
      if (manifestDoc.bytes.length !== chosen.size) {
        throw new AgentError('DIGEST_MISMATCH', `manifest ${chosen.digest} of ${name} is ${manifestDoc.bytes.length} bytes, the index says ${chosen.size}`);
      }
      parsed = parseManifest(manifestDoc.bytes, manifestDoc.mediaType, `manifest ${chosen.digest} of ${name}`);
      if (parsed.kind !== 'manifest') {
        throw new AgentError('MANIFEST_INVALID', `manifest ${chosen.digest} of ${name}: the index points at another index`);
      }
      platform = chosen.platform;
    }
    if (parsed.kind !== 'manifest') throw new AgentError('MANIFEST_INVALID', `manifest of ${name}: not an image manifest`);
    const manifest = parsed.manifest;
    const what = `manifest ${manifestDoc.digest} of ${name}`;
    checkImageManifest(manifest, what);

    const configBytes = await this.#fetchSmallBlob(ref, manifest.config, `config ${manifest.config.digest} of ${name}`);
    const config = parseImageConfig(configBytes, `config ${manifest.config.digest} of ${name}`);
    const configPlatform: Platform | undefined = config.os && config.architecture
      ? { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) }
      : undefined;
    if (configPlatform !== undefined && !platformMatches(configPlatform, this.#platform)) {
      throw new AgentError('MANIFEST_INVALID', `${what}: the image is ${formatPlatform(configPlatform)}, which does not run on ${formatPlatform(this.#platform)}`);
    }
    platform ??= configPlatform ?? this.#platform;

    const out: ResolvedImage = {
      reference: ref,
      digest: manifestDoc.digest,
      manifest,
      manifestBytes: manifestDoc.bytes,
      config,
      platform,
      compressedSize: manifest.layers.reduce((n, l) => n + l.size, 0),
    };
    if (indexDigest !== undefined) out.indexDigest = indexDigest;
    return out;
  }

  /**
   * GET a manifest by tag or digest. Asked by digest, the bytes must hash to it (else DIGEST_MISMATCH); asked by tag,
   * the digest is the sha256 of the bytes and must agree with the registry's Docker-Content-Digest header if sent.
   */
  async fetchManifest(ref: ImageReference, reference: string, accept: string[] = [...MANIFEST_ACCEPT]): Promise<FetchedManifest> {
    const byDigest = isDigest(reference);
    if (!byDigest && !isTag(reference)) throw new AgentError('REFERENCE_INVALID', `${JSON.stringify(reference)} is neither a tag nor a digest`);
    const repoName = `${ref.registry}/${ref.repository}`;
    const what = byDigest ? `manifest ${reference} of ${repoName}` : `manifest ${repoName}:${reference}`;
    return this.#withRetries(what, undefined, async () => {
      const ex = await this.#exchange(ref, `manifests/${reference}`, { accept: accept.join(', ') }, what, undefined);
      const declared = Number(headerString(ex.headers['content-length']) ?? NaN);
      if (declared > MAX_MANIFEST_BYTES) {
        ex.body.destroy();
        throw new AgentError('MANIFEST_INVALID', `${what}: ${declared} bytes is larger than the ${MAX_MANIFEST_BYTES}-byte limit`);
      }
      let bytes: Buffer;
      try {
        bytes = await readAll(ex.body, MAX_MANIFEST_BYTES, () => new AgentError('MANIFEST_INVALID', `${what}: larger than the ${MAX_MANIFEST_BYTES}-byte limit`));
      } catch (e) {
        throw this.#mapNetworkError(e, ref, what);
      }
      const contentType = headerString(ex.headers['content-type'])?.split(';')[0]?.trim() ?? '';
      let mediaType = contentType;
      try {
        const doc = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
        if (typeof doc.mediaType === 'string' && doc.mediaType !== '') mediaType = doc.mediaType;
      } catch {
        // not JSON: the caller's parse reports it
      }
      let digest: string;
      if (byDigest) {
        const actual = computeDigest(bytes, digestAlgorithm(reference));
        if (actual !== reference) throw new AgentError('DIGEST_MISMATCH', `${what}: the registry sent content with digest ${actual}`);
        digest = reference;
      } else {
        digest = computeDigest(bytes);
        const claimed = headerString(ex.headers['docker-content-digest'])?.trim();
        if (claimed !== undefined && isDigest(claimed)) {
          const actual = claimed.startsWith('sha256:') ? digest : computeDigest(bytes, digestAlgorithm(claimed));
          if (actual !== claimed) throw new AgentError('DIGEST_MISMATCH', `${what}: content has digest ${actual} but the registry says ${claimed}`);
        }
      }
      return { mediaType, digest, bytes };
    });
  }

  /**
   * A stream of a blob's bytes, verified against `desc.digest` while streaming: a mismatch (or more bytes than
   * `desc.size`) errors the stream with DIGEST_MISMATCH before it ends; a stream that keeps ending short errors with
   * BLOB_TRUNCATED. A broken connection resumes with a Range request from the last byte received.
   */
  openBlob(
    ref: ImageReference,
    desc: Descriptor,
    opts: { signal?: AbortSignal; onBytes?: (n: number) => void } = {},
  ): NodeJS.ReadableStream & Readable {
    const internal = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, internal.signal]) : internal.signal;
    return new GeneratorStream(this.#blobChunks(ref, desc, signal, opts.onBytes), internal);
  }

  /**
   * A few bytes of a blob by HTTP Range (e.g. a gzip member's ISIZE trailer, for sizing the slot before pulling).
   * NOT digest-checked (a part cannot be): use it only for estimates. Undefined when the registry ignores Range.
   */
  async readBlobRange(ref: ImageReference, desc: Descriptor, start: number, length: number): Promise<Buffer | undefined> {
    if (!isDigest(desc.digest)) throw new AgentError('MANIFEST_INVALID', `blob ${desc.digest}: not a valid digest`);
    const end = Math.min(desc.size, start + length) - 1;
    if (start < 0 || end < start) return Buffer.alloc(0);
    const what = `blob ${desc.digest} of ${ref.registry}/${ref.repository} (bytes ${start}-${end})`;
    return this.#withRetries(what, undefined, async () => {
      const ex = await this.#exchange(ref, `blobs/${desc.digest}`, { range: `bytes=${start}-${end}` }, what, undefined);
      if (ex.status !== 206) {
        ex.body.destroy();
        return undefined;
      }
      try {
        return await readAll(ex.body, end - start + 1, () => new AgentError('REGISTRY_ERROR', `${what}: more bytes than asked for`));
      } catch (e) {
        throw this.#mapNetworkError(e, ref, what);
      }
    });
  }

  /**
   * A few bytes of a blob by HTTP Range, with the blob's real size as the registry states it, so a caller can check
   * the descriptor before trusting what it reads (e.g. a gzip trailer read at `desc.size - 4`). The range is NOT
   * clipped to `desc.size` (the registry clips it to what it has). NOT digest-checked: for estimates only.
   * - 206: the bytes, and the total of its `Content-Range: bytes a-b/total` (undefined for `*`); bytes undefined when
   *   the range starts elsewhere than asked;
   * - 416: no bytes (an empty buffer) and the total its Content-Range states: the blob ends before `start`;
   * - 200 (the registry ignored Range): the total is its Content-Length; the bytes are read from the body when
   *   `start` is 0 (the rest of the body is not downloaded), else undefined.
   * Errors as for every request (REGISTRY_*, after retries).
   */
  async probeBlob(ref: ImageReference, desc: Descriptor, start: number, length: number): Promise<BlobProbe> {
    if (!isDigest(desc.digest)) throw new AgentError('MANIFEST_INVALID', `blob ${desc.digest}: not a valid digest`);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length <= 0) return { bytes: Buffer.alloc(0), total: undefined };
    const end = start + length - 1;
    const what = `blob ${desc.digest} of ${ref.registry}/${ref.repository} (bytes ${start}-${end})`;
    return this.#withRetries(what, undefined, async () => {
      const ex = await this.#exchange(ref, `blobs/${desc.digest}`, { range: `bytes=${start}-${end}` }, what, undefined, [416]);
      const contentRange = headerString(ex.headers['content-range'])?.trim() ?? '';
      const sizeOf = (s: string | undefined): number | undefined => (s !== undefined && /^\d{1,15}$/.test(s) ? Number(s) : undefined);
      try {
        if (ex.status === 416) {
          ex.body.destroy();
          return { bytes: Buffer.alloc(0), total: sizeOf(/^bytes \*\/(\d+)$/.exec(contentRange)?.[1]) };
        }
        if (ex.status === 206) {
          const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange);
          const total = sizeOf(m?.[3]);
          if (m === null || Number(m[1]) !== start) {
            ex.body.destroy();
            return { bytes: undefined, total };
          }
          const bytes = await readAll(ex.body, length, () => new AgentError('REGISTRY_ERROR', `${what}: more bytes than asked for`));
          return { bytes, total };
        }
        const total = ex.status === 200 ? sizeOf(headerString(ex.headers['content-length'])?.trim()) : undefined;
        if (ex.status !== 200 || start !== 0) {
          ex.body.destroy();
          return { bytes: undefined, total };
        }
        const chunks: Buffer[] = [];
        let n = 0;
        for await (const chunk of ex.body) {
          chunks.push(chunk as Buffer);
          n += (chunk as Buffer).length;
          if (n >= length) break;
        }
        ex.body.destroy();
        return { bytes: Buffer.concat(chunks).subarray(0, length), total };
      } catch (e) {
        ex.body.destroy();
        throw this.#mapNetworkError(e, ref, what);
      }
    });
  }

  /**
   * The OCI 1.1 referrers API for `digest` in `ref`'s repository (`Accept: application/vnd.oci.image.index.v1+json`).
   * A registry without the API (400/404/405/406, or a 2xx that is not an OCI index) is `supported: false`, not an
   * error. 401/403, 5xx (after retries) and network failures throw as for manifests. Pages announced by
   * `Link: <…>; rel="next"` are followed on the same registry and repository, up to 16 pages; a next page that fails
   * throws. The pages are returned unparsed (their entries carry `artifactType`, which `Descriptor` does not).
   */
  async fetchReferrers(ref: ImageReference, digest: string): Promise<ReferrersResponse> {
    if (!isDigest(digest)) throw new AgentError('REFERENCE_INVALID', `${JSON.stringify(digest)} is not a digest`);
    const repoName = `${ref.registry}/${ref.repository}`;
    const headers = { accept: MEDIA_TYPES.ociIndex };
    const readPage = async (ex: Exchange, what: string): Promise<Buffer> => {
      try {
        return await readAll(ex.body, MAX_MANIFEST_BYTES, () => new AgentError('MANIFEST_INVALID', `${what}: larger than the ${MAX_MANIFEST_BYTES}-byte limit`));
      } catch (e) {
        throw this.#mapNetworkError(e, ref, what);
      }
    };
    const whatFirst = `referrers of ${digest} in ${repoName}`;
    const first = await this.#withRetries(whatFirst, undefined, async () => {
      const ex = await this.#exchange(ref, `referrers/${digest}`, headers, whatFirst, undefined, NO_REFERRERS_API_STATUSES);
      if (ex.status !== 200 || bareContentType(ex.headers) !== MEDIA_TYPES.ociIndex) {
        ex.body.destroy();
        return { status: ex.status, page: undefined, next: undefined };
      }
      return { status: ex.status, page: await readPage(ex, whatFirst), next: nextLink(ex.headers), url: ex.url };
    });
    if (first.page === undefined) {
      this.#log('oci.referrers.unsupported', { repository: repoName, digest, status: first.status });
      return { supported: false, status: first.status, pages: [] };
    }
    const pages = [first.page];
    const prefix = `/v2/${ref.repository}/referrers/`;
    const seen = new Set<string>();
    let next = first.next !== undefined && first.url !== undefined ? new URL(first.next, first.url) : undefined;
    while (next !== undefined) {
      const origin = new URL(first.url ?? next.href).origin;
      if (next.origin !== origin || !next.pathname.startsWith(prefix) || seen.has(next.href) || pages.length >= MAX_REFERRERS_PAGES) {
        this.#log('oci.referrers.pages-stopped', { repository: repoName, digest, next: next.href, pages: pages.length });
        break;
      }
      seen.add(next.href);
      const path = `${next.pathname.slice(`/v2/${ref.repository}/`.length)}${next.search}`;
      const what = `referrers of ${digest} in ${repoName} (page ${pages.length + 1})`;
      const pageUrl: URL = next;
      const page = await this.#withRetries(what, undefined, async () => {
        const ex = await this.#exchange(ref, path, headers, what, undefined);
        if (bareContentType(ex.headers) !== MEDIA_TYPES.ociIndex) {
          ex.body.destroy();
          throw new AgentError('MANIFEST_INVALID', `${what}: the registry answered ${JSON.stringify(bareContentType(ex.headers))}, not an OCI image index`);
        }
        const link = nextLink(ex.headers);
        return { bytes: await readPage(ex, what), next: link !== undefined ? new URL(link, pageUrl) : undefined };
      });
      pages.push(page.bytes);
      next = page.next;
    }
    return { supported: true, status: first.status, pages };
  }

  // -------------------------------------------------------------------------------------------------------------

  async *#blobChunks(ref: ImageReference, desc: Descriptor, signal: AbortSignal, onBytes: ((n: number) => void) | undefined): AsyncGenerator<Buffer> {
    const repoName = `${ref.registry}/${ref.repository}`;
    const what = `blob ${desc.digest} of ${repoName}`;
    if (!isDigest(desc.digest)) throw new AgentError('MANIFEST_INVALID', `${what}: not a valid digest`);
    const hash: Hash = createHash(digestAlgorithm(desc.digest));
    let received = 0;
    let failures = 0;
    while (received < desc.size) {
      signal.throwIfAborted();
      const before = received;
      let ex: Exchange | undefined;
      try {
        const headers: Record<string, string> = {};
        if (received > 0) {
          headers.range = `bytes=${received}-`;
          this.#log('oci.resume', { digest: desc.digest, repository: repoName, offset: received, size: desc.size });
        }
        ex = await this.#exchange(ref, `blobs/${desc.digest}`, headers, what, signal);
        let skip = 0;
        if (received > 0) {
          if (ex.status === 206) {
            const m = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(headerString(ex.headers['content-range'])?.trim() ?? '');
            const start = m?.[1] !== undefined ? Number(m[1]) : NaN;
            if (!(start <= received)) {
              ex.body.destroy();
              throw new AgentError('REGISTRY_ERROR', `${what}: asked for bytes from ${received}, got Content-Range ${JSON.stringify(headerString(ex.headers['content-range']))}`);
            }
            skip = received - start;
          } else {
            skip = received; // the server ignored the Range header and sent the whole blob
          }
        }
        for await (const raw of ex.body) {
          let chunk = raw as Buffer;
          if (skip > 0) {
            if (chunk.length <= skip) {
              skip -= chunk.length;
              continue;
            }
            chunk = chunk.subarray(skip);
            skip = 0;
          }
          if (received + chunk.length > desc.size) {
            ex.body.destroy();
            throw new AgentError('DIGEST_MISMATCH', `${what}: the registry sent more than the ${desc.size} bytes of the descriptor`);
          }
          hash.update(chunk);
          received += chunk.length;
          onBytes?.(chunk.length);
          yield chunk;
        }
        if (received < desc.size) {
          throw new TransientError('BLOB_TRUNCATED', `${what}: the stream ended after ${received} of ${desc.size} bytes`);
        }
        break;
      } catch (e) {
        ex?.body.destroy();
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : e;
        let err: unknown = e;
        if (!(e instanceof AgentError)) {
          // The connection broke: mid-body is a truncated blob, before the response a network failure.
          err = received > before || ex !== undefined
            ? new TransientError('BLOB_TRUNCATED', `${what}: the connection broke after ${received} of ${desc.size} bytes: ${networkMessage(e)}`, { cause: e })
            : this.#mapNetworkError(e, ref, what);
        }
        if (!(err instanceof TransientError)) throw err;
        if (received > before) failures = 0; // progress: the budget starts again
        if (failures >= this.#retries) {
          throw new AgentError(err.code, `${err.message} (gave up after ${failures} ${failures === 1 ? 'retry' : 'retries'})`, { cause: err });
        }
        const delay = this.#backoff(failures, err.retryAfterMs);
        failures++;
        this.#log('oci.retry', { what, attempt: failures, of: this.#retries, delayMs: delay, offset: received, error: err.message });
        await sleep(delay, undefined, { signal });
      }
    }
    const actual = `${digestAlgorithm(desc.digest)}:${hash.digest('hex')}`;
    if (actual !== desc.digest) throw new AgentError('DIGEST_MISMATCH', `${what}: content has digest ${actual}`);
  }

  async #fetchSmallBlob(ref: ImageReference, desc: Descriptor, what: string): Promise<Buffer> {
    if (desc.size > MAX_MANIFEST_BYTES) throw new AgentError('MANIFEST_INVALID', `${what}: ${desc.size} bytes is larger than the ${MAX_MANIFEST_BYTES}-byte limit`);
    const chunks: Buffer[] = [];
    for await (const c of this.openBlob(ref, desc)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  #backoff(failures: number, retryAfter: number | undefined): number {
    const exp = Math.min(MAX_BACKOFF_MS, this.#retryBaseMs * 2 ** failures);
    return retryAfter !== undefined ? Math.max(exp, Math.min(retryAfter, MAX_BACKOFF_MS)) : exp;
  }

  async #withRetries<T>(what: string, signalIn: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const signal = signalIn ?? this.#signal;
    for (let failures = 0; ; failures++) {
      signal?.throwIfAborted();
      try {
        return await fn();
      } catch (e) {
        if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : e;
        if (!(e instanceof TransientError)) throw e;
        if (failures >= this.#retries) {
          throw new AgentError(e.code, `${e.message} (gave up after ${failures} ${failures === 1 ? 'retry' : 'retries'})`, { cause: e });
        }
        const delay = this.#backoff(failures, e.retryAfterMs);
        this.#log('oci.retry', { what, attempt: failures + 1, of: this.#retries, delayMs: delay, error: e.message });
        await sleep(delay, undefined, signal ? { signal } : undefined);
      }
    }
  }

  #loadConfig(): Promise<RegistryConfig> {
    this.#config ??= (async (): Promise<RegistryConfig> => {
      const [authFiles, conf] = await Promise.all([
        loadAuthFiles(this.#root, this.#authFileList),
        loadRegistriesConf(this.#root, this.#registriesConfPath),
      ]);
      for (const f of authFiles) {
        if (f.helpers.length) this.#log('oci.auth.helpers-ignored', { file: f.file, helpers: f.helpers });
      }
      return { authFiles, conf, searched: this.#authFileList.map((f) => this.#root.path(f)) };
    })();
    // A failed load is not cached: the next call reads the files again.
    this.#config.catch(() => {
      this.#config = undefined;
    });
    return this.#config;
  }

  /** Keep-alive agents for `url`'s host (one per scheme), each with the proxy that applies to it, if any. */
  #agents(url: URL, insecureTls: boolean): { http: http.Agent; https: https.Agent } {
    const pick = (protocol: 'http:' | 'https:'): http.Agent => {
      const u = new URL(url.href);
      u.protocol = protocol;
      const proxy = proxyForUrl(u, this.#env);
      const insecure = insecureTls && protocol === 'https:';
      const key = `${protocol}|${proxy ?? ''}|${insecure}`;
      let agent = this.#agentCache.get(key);
      if (agent === undefined) {
        const proxyEnv = proxy !== undefined ? { HTTP_PROXY: proxy, HTTPS_PROXY: proxy } : {};
        agent = protocol === 'https:'
          ? new https.Agent({ keepAlive: true, proxyEnv, ...(insecure ? { rejectUnauthorized: false } : {}) })
          : new http.Agent({ keepAlive: true, proxyEnv });
        this.#agentCache.set(key, agent);
        if (proxy !== undefined) this.#log('oci.proxy', { protocol, proxy: proxy.replace(/\/\/[^@/]*@/, '//***@') });
      }
      return agent;
    };
    return { http: pick('http:'), https: pick('https:') as https.Agent };
  }

  /** One GET (following redirects), mapping network failures; the body is the caller's to consume or destroy. */
  async #get(url: URL, headers: Record<string, string>, insecureTls: boolean, signal: AbortSignal | undefined): Promise<Exchange> {
    const req = this.#got.stream(url, {
      headers,
      agent: this.#agents(url, insecureTls),
      ...(signal ? { signal } : {}),
      https: { rejectUnauthorized: !insecureTls },
      hooks: {
        // A redirect (blobs often go to a CDN) gets the proxy decision for its own host, and TLS verification
        // unless it stays on the insecure registry's host.
        beforeRedirect: [
          (options): void => {
            const target = options.url instanceof URL ? options.url : new URL(String(options.url));
            const insecure = insecureTls && target.host === url.host;
            options.agent = this.#agents(target, insecure);
            options.https = { ...options.https, rejectUnauthorized: !insecure };
          },
        ],
      },
    });
    return new Promise<Exchange>((resolve, reject) => {
      const onError = (e: Error): void => reject(e);
      req.once('error', onError);
      req.once('response', (res: http.IncomingMessage & { url?: string }) => {
        req.off('error', onError);
        // Errors after this point surface through the body's async iteration (the stream keeps them in `errored`).
        req.on('error', () => {});
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: req, url: res.url ?? url.href });
      });
    });
  }

  #mapNetworkError(e: unknown, ref: ImageReference, what: string): AgentError {
    if (e instanceof AgentError) return e;
    if (isTlsVerificationError(e)) {
      return new AgentError('REGISTRY_UNREACHABLE', `${what}: TLS verification of ${ref.registry} failed: ${networkMessage(e)} (mark it insecure in registries.conf only if you trust the network)`, { cause: e });
    }
    const code = e instanceof RequestError ? e.code : (e as { code?: string }).code;
    if (code === 'ERR_ABORTED' || (e as Error).name === 'AbortError') throw e;
    return new TransientError('REGISTRY_UNREACHABLE', `${what}: cannot reach registry ${ref.registry}: ${networkMessage(e)}`, { cause: e });
  }

  async #scheme(ref: ImageReference, insecure: boolean): Promise<'http' | 'https'> {
    if (isLoopbackRegistry(ref.registry)) return 'http';
    if (!insecure) return 'https';
    const key = ref.registry;
    let p = this.#schemes.get(key);
    if (p === undefined) {
      p = (async (): Promise<'http' | 'https'> => {
        const url = new URL(`https://${registryApiHost(ref.registry)}/v2/`);
        try {
          const ex = await this.#get(url, {}, true, undefined);
          ex.body.destroy();
          return 'https';
        } catch (e) {
          this.#log('oci.insecure-fallback', { registry: ref.registry, error: networkMessage(e) });
          return 'http';
        }
      })();
      this.#schemes.set(key, p);
    }
    return p;
  }

  /**
   * One authenticated exchange with `/v2/<repo>/<path>`: answers an auth challenge once, and maps statuses:
   * 2xx/206 returned; 401/403 -> REGISTRY_UNAUTHORIZED; 404 -> REGISTRY_NOT_FOUND; 5xx/408/429 -> transient
   * REGISTRY_ERROR; other -> REGISTRY_ERROR; network failure -> transient REGISTRY_UNREACHABLE. Statuses in `pass`
   * (never 401, which is answered first) are returned as they are, body unread, for the caller to interpret.
   */
  async #exchange(
    ref: ImageReference,
    path: string,
    headers: Record<string, string>,
    what: string,
    signalIn: AbortSignal | undefined,
    pass: readonly number[] = [],
  ): Promise<Exchange> {
    // The client's own signal (a cancelled upgrade) aborts this request too, through a signal of the request's own:
    // got keeps its abort listener on the signal it is given until the request is destroyed, so handing it the
    // job-long signal would pile up one listener per request (a MaxListenersExceededWarning after 10).
    const own = [...(signalIn !== undefined ? [signalIn] : []), ...(this.#signal !== undefined ? [this.#signal] : [])];
    const signal = own.length > 0 ? AbortSignal.any(own) : undefined;
    const cfg = await this.#loadConfig();
    const policy = registryPolicy(cfg.conf, ref.registry, ref.repository);
    if (policy.blocked) {
      throw new AgentError('REGISTRY_ERROR', `${what}: registry ${ref.registry} is blocked by ${cfg.conf.file} (prefix ${JSON.stringify(policy.prefix)})`);
    }
    const scheme = await this.#scheme(ref, policy.insecure);
    const url = new URL(`${scheme}://${registryApiHost(ref.registry)}/v2/${ref.repository}/${path}`);
    const insecureTls = policy.insecure && scheme === 'https';
    const cred = findCredential(cfg.authFiles, ref.registry, ref.repository);

    let authorization = await this.#preemptiveAuth(ref, cred, signal);
    let answered = false;
    for (;;) {
      let ex: Exchange;
      try {
        ex = await this.#get(url, authorization ? { ...headers, authorization } : headers, insecureTls, signal);
      } catch (e) {
        throw this.#mapNetworkError(e, ref, what);
      }
      this.#log('oci.request', { url: url.href, status: ex.status, range: headers.range });
      if ((ex.status >= 200 && ex.status < 300) || (ex.status !== 401 && pass.includes(ex.status))) return ex;
      const body = await readErrorBody(ex.body);
      const detail = registryErrorDetail(body);
      const detailText = detail.text ? `: ${detail.text}` : '';
      if (ex.status === 401 && !answered) {
        answered = true;
        const challenges = parseWwwAuthenticate(headerString(ex.headers['www-authenticate']) ?? '');
        const next = await this.#answerChallenge(ref, challenges, cred, authorization, cfg, signal);
        if (next !== undefined) {
          authorization = next;
          continue;
        }
      }
      if (ex.status === 401 || ex.status === 403) {
        throw new AgentError('REGISTRY_UNAUTHORIZED', `${what}: registry ${ref.registry} refused access to repository ${ref.repository} (HTTP ${ex.status}${detailText}) ${describeCredential(cred, cfg.searched)}`);
      }
      if (ex.status === 416 && headers.range !== undefined) {
        throw new AgentError('BLOB_TRUNCATED', `${what}: the registry has no bytes at ${headers.range} (HTTP 416): the blob is shorter than its descriptor says`);
      }
      if (ex.status === 404) {
        const missing = detail.codes.includes('NAME_UNKNOWN')
          ? `repository ${ref.repository} not found on registry ${ref.registry}`
          : `${what} not found`;
        throw new AgentError('REGISTRY_NOT_FOUND', `${missing} (HTTP 404${detailText})`);
      }
      const message = `${what}: registry ${ref.registry} answered HTTP ${ex.status}${detailText}`;
      if (ex.status >= 500 || ex.status === 408 || ex.status === 429) {
        const after = retryAfterMs(ex.headers);
        throw new TransientError('REGISTRY_ERROR', message, after !== undefined ? { retryAfterMs: after } : {});
      }
      throw new AgentError('REGISTRY_ERROR', message);
    }
  }

  #scope(ref: ImageReference): string {
    return `repository:${ref.repository}:pull`;
  }

  async #preemptiveAuth(ref: ImageReference, cred: Credential | undefined, signal: AbortSignal | undefined): Promise<string | undefined> {
    const mode = this.#authModes.get(ref.registry);
    if (mode === undefined) return undefined;
    if (mode.scheme === 'basic') return cred?.username !== undefined ? basicAuthorization(cred.username, cred.password ?? '') : undefined;
    const cached = this.#tokens.get(`${ref.registry}|${this.#scope(ref)}`);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
    try {
      return `Bearer ${await this.#fetchToken(ref, mode.realm, mode.service, this.#scope(ref), cred, signal)}`;
    } catch (e) {
      // Let the request go without; its challenge will say what the registry wants now.
      if (e instanceof AgentError && e.code === 'REGISTRY_UNAUTHORIZED') throw e;
      return undefined;
    }
  }

  /** The Authorization to retry with, or undefined when there is nothing new to try. */
  async #answerChallenge(
    ref: ImageReference,
    challenges: Challenge[],
    cred: Credential | undefined,
    sent: string | undefined,
    cfg: RegistryConfig,
    signal: AbortSignal | undefined,
  ): Promise<string | undefined> {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer !== undefined) {
      const realm = bearer.params.realm;
      if (!realm || !/^https?:\/\//i.test(realm)) {
        throw new AgentError('REGISTRY_ERROR', `registry ${ref.registry} sent a Bearer challenge without a usable realm (${JSON.stringify(realm ?? '')})`);
      }
      const service = bearer.params.service;
      this.#authModes.set(ref.registry, { scheme: 'bearer', realm, service });
      const scopeKey = `${ref.registry}|${this.#scope(ref)}`;
      this.#tokens.delete(scopeKey);
      const scope = bearer.params.scope || this.#scope(ref);
      const token = await this.#fetchToken(ref, realm, service, scope, cred, signal, cfg);
      const header = `Bearer ${token}`;
      return header === sent ? undefined : header;
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      this.#authModes.set(ref.registry, { scheme: 'basic' });
      if (cred?.username === undefined) return undefined;
      const header = basicAuthorization(cred.username, cred.password ?? '');
      return header === sent ? undefined : header;
    }
    return undefined;
  }

  async #fetchToken(
    ref: ImageReference,
    realm: string,
    service: string | undefined,
    scope: string,
    cred: Credential | undefined,
    signal: AbortSignal | undefined,
    cfgIn?: RegistryConfig,
  ): Promise<string> {
    const cfg = cfgIn ?? (await this.#loadConfig());
    const scopeKey = `${ref.registry}|${this.#scope(ref)}`;
    if (cred?.registryToken !== undefined) return cred.registryToken;
    const what = `token for ${scope} from ${realm}`;
    const url = new URL(realm);
    const form = new URLSearchParams();
    if (service) form.set('service', service);
    form.set('scope', scope);
    this.#log('oci.token', { registry: ref.registry, realm, service, scope, as: cred?.username ?? (cred?.identityToken ? 'identity token' : 'anonymous') });
    const headers: Record<string, string> = { accept: 'application/json' };
    let res: { statusCode: number; body: Buffer; headers: http.IncomingHttpHeaders };
    try {
      const common = {
        headers,
        agent: this.#agents(url, false),
        responseType: 'buffer' as const,
        ...(signal ? { signal } : {}),
      };
      if (cred?.identityToken !== undefined) {
        form.set('grant_type', 'refresh_token');
        form.set('refresh_token', cred.identityToken);
        form.set('client_id', 'cos-agent');
        res = await this.#got.post(url, { ...common, body: form.toString(), headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' } });
      } else {
        for (const [k, v] of form) url.searchParams.append(k, v);
        if (cred?.username !== undefined) headers.authorization = basicAuthorization(cred.username, cred.password ?? '');
        res = await this.#got.get(url, common);
      }
    } catch (e) {
      throw this.#mapNetworkError(e, ref, what);
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      const detail = registryErrorDetail(res.body.toString('utf8').slice(0, ERROR_BODY_LIMIT)).text;
      throw new AgentError('REGISTRY_UNAUTHORIZED', `registry ${ref.registry}: the token server ${url.origin}${url.pathname} refused access to repository ${ref.repository} (HTTP ${res.statusCode}${detail ? `: ${detail}` : ''}) ${describeCredential(cred, cfg.searched)}`);
    }
    if (res.statusCode < 200 || res.statusCode >= 300) {
      const message = `${what}: HTTP ${res.statusCode}`;
      if (res.statusCode >= 500 || res.statusCode === 429 || res.statusCode === 408) throw new TransientError('REGISTRY_ERROR', message);
      throw new AgentError('REGISTRY_ERROR', message);
    }
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      doc = JSON.parse(res.body.toString('utf8')) as typeof doc;
    } catch (e) {
      throw new AgentError('REGISTRY_ERROR', `${what}: the token response is not JSON`, { cause: e });
    }
    const token = typeof doc.token === 'string' && doc.token !== '' ? doc.token : typeof doc.access_token === 'string' ? doc.access_token : '';
    if (token === '') throw new AgentError('REGISTRY_ERROR', `${what}: the token response has no token`);
    const ttl = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : TOKEN_DEFAULT_TTL_S;
    const issued = typeof doc.issued_at === 'string' && !Number.isNaN(Date.parse(doc.issued_at)) ? Math.min(Date.parse(doc.issued_at), Date.now()) : Date.now();
    // Renew a little early so a token never expires between our check and the registry's.
    this.#tokens.set(scopeKey, { token, expiresAt: issued + ttl * 1000 - Math.min(10_000, (ttl * 1000) / 10) });
    return token;
  }
}
