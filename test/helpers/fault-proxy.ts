/**
 * Test helper: a small reverse proxy (node:http) in front of a real registry, injecting faults that a real registry
 * cannot produce on demand: error statuses, corrupted bytes, connections cut mid-body, replaced bodies, resets.
 * Every request is logged (method, path, Range header, status sent, fault applied).
 *
 *   const proxy = await startFaultProxy(reg.url);
 *   t.teardown(() => proxy.stop());
 *   proxy.addFault({ path: /\/blobs\//, fault: { kind: 'truncate', at: 1000 }, times: 1 });
 *   // pull from `${proxy.host}/repo:tag`
 */
import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';

export type Fault =
  /** Answer with this status (and body) instead of forwarding. */
  | { kind: 'status'; status: number; body?: string; headers?: Record<string, string> }
  /** Forward, but flip (xor 0xff) the byte at this absolute offset of the content (blob offset for Range answers). */
  | { kind: 'corrupt'; at: number }
  /**
   * Forward the upstream headers (Content-Length included) and the content up to absolute offset `at` (exclusive),
   * then cut the connection. A Range request starting at or after `at` gets the headers and nothing else.
   */
  | { kind: 'truncate'; at: number }
  /** Forward the upstream status and headers but send this body instead (Content-Length fixed up). */
  | { kind: 'replace'; body: Buffer | string }
  /** Destroy the connection without answering. */
  | { kind: 'reset' }
  /** Forward without the Range header (a server that ignores Range and sends the whole content). */
  | { kind: 'ignore-range' }
  /** Answer 307 with `Location: <location><request path>` (as registries redirect blobs to a CDN). */
  | { kind: 'redirect'; location: string }
  /** Hold the request until `until` resolves, then forward it unchanged (a slow download the test controls). */
  | { kind: 'hold'; until: Promise<void> };

export interface FaultRule {
  /** Match on the request method (default: any). */
  method?: string;
  /** Match on the path: substring or RegExp (default: any). */
  path?: string | RegExp;
  fault: Fault;
  /** Match only requests without a Range header (a whole download, not a resume or a partial read). */
  rangeless?: boolean;
  /** How many matching requests get the fault (default: all). */
  times?: number;
}

export interface ProxyLogEntry {
  method: string;
  path: string;
  range: string | undefined;
  authorization: boolean;
  /** The status sent to the client (undefined for a reset). */
  status: number | undefined;
  /** The fault applied, if any. */
  fault: Fault['kind'] | undefined;
}

export interface FaultProxy {
  /** `127.0.0.1:PORT`. */
  host: string;
  url: string;
  /** Every request seen, in order. */
  requests: ProxyLogEntry[];
  addFault(rule: FaultRule): void;
  clearFaults(): void;
  stop(): Promise<void>;
}

function matches(rule: FaultRule, method: string, path: string, range: string | undefined): boolean {
  if (rule.method !== undefined && rule.method.toUpperCase() !== method.toUpperCase()) return false;
  if (rule.rangeless === true && range !== undefined) return false;
  if (rule.path === undefined) return true;
  return typeof rule.path === 'string' ? path.includes(rule.path) : rule.path.test(path);
}

/** Absolute offset of the first body byte: the Content-Range start of a 206, else 0. */
function bodyStart(res: http.IncomingMessage): number {
  const m = /^bytes (\d+)-/.exec(res.headers['content-range'] ?? '');
  return res.statusCode === 206 && m?.[1] !== undefined ? Number(m[1]) : 0;
}

/** Starts the proxy on 127.0.0.1:<free port>, forwarding to `target` (`http://127.0.0.1:PORT`). */
export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const upstream = new URL(target);
  const rules: Array<FaultRule & { left: number }> = [];
  const requests: ProxyLogEntry[] = [];
  const agent = new http.Agent({ keepAlive: false });

  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const entry: ProxyLogEntry = {
      method, path, range: req.headers.range, authorization: req.headers.authorization !== undefined, status: undefined, fault: undefined,
    };
    requests.push(entry);
    const rule = rules.find((r) => r.left > 0 && matches(r, method, path, req.headers.range));
    const fault = rule?.fault;
    if (rule) {
      rule.left--;
      entry.fault = rule.fault.kind;
    }
    if (fault?.kind === 'reset') {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'redirect') {
      entry.status = 307;
      res.writeHead(307, { location: `${fault.location}${path}`, 'content-length': '0' });
      res.end();
      return;
    }
    if (fault?.kind === 'status') {
      entry.status = fault.status;
      res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
      res.end(fault.body ?? JSON.stringify({ errors: [{ code: 'UNKNOWN', message: `injected HTTP ${fault.status}` }] }));
      return;
    }
    const forward = (): void => {
    const headers = { ...req.headers, host: upstream.host };
    if (fault?.kind === 'ignore-range') delete headers.range;
    const up = http.request({ host: upstream.hostname, port: upstream.port, method, path, headers, agent }, (ures) => {
      const status = ures.statusCode ?? 502;
      entry.status = status;
      if (fault?.kind === 'replace') {
        ures.resume();
        const body = Buffer.from(fault.body);
        const h = { ...ures.headers, 'content-length': String(body.length) };
        delete h['transfer-encoding'];
        res.writeHead(status, h);
        res.end(body);
        return;
      }
      res.writeHead(status, ures.headers);
      let offset = bodyStart(ures);
      if (fault?.kind === 'truncate' && offset >= fault.at) {
        res.flushHeaders();
        ures.destroy();
        setImmediate(() => res.socket?.destroy());
        return;
      }
      let cut = false;
      ures.on('data', (chunk: Buffer) => {
        if (cut) return;
        let c = chunk;
        if (fault?.kind === 'corrupt' && fault.at >= offset && fault.at < offset + c.length) {
          c = Buffer.from(c);
          c[fault.at - offset] = (c[fault.at - offset] ?? 0) ^ 0xff;
        }
        if (fault?.kind === 'truncate' && offset + c.length >= fault.at) {
          const head = c.subarray(0, fault.at - offset);
          cut = true;
          ures.destroy();
          res.write(head, () => res.socket?.destroy());
          offset += head.length;
          return;
        }
        offset += c.length;
        if (!res.write(c)) {
          ures.pause();
          res.once('drain', () => ures.resume());
        }
      });
      ures.on('end', () => {
        if (!cut) res.end();
      });
      ures.on('error', () => {
        if (!cut) res.socket?.destroy();
      });
    });
    up.on('error', () => {
      entry.status = 502;
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
    };
    if (fault?.kind === 'hold') {
      void fault.until.then(forward);
      return;
    }
    forward();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const host = `127.0.0.1:${port}`;
  let stopped = false;
  return {
    host,
    url: `http://${host}`,
    requests,
    addFault: (rule: FaultRule): void => {
      rules.push({ ...rule, left: rule.times ?? Infinity });
    },
    clearFaults: (): void => {
      rules.length = 0;
    },
    stop: async (): Promise<void> => {
      if (stopped) return;
      stopped = true;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}

export interface HeldLayer {
  proxy: FaultProxy;
  /** Let the held download go on. */
  release: () => void;
  /** Resolves once the whole-layer download has reached the proxy (and is being held). */
  downloading: () => Promise<void>;
}

/**
 * A fault proxy in front of `registryUrl` that holds the whole-layer (rangeless) download of `layer` until release()
 * or the end of the test; for cancelling, killing or watching a job mid-download.
 */
export async function holdLayerDownload(t: { teardown(fn: () => Promise<void>): void }, registryUrl: string, layer: string): Promise<HeldLayer> {
  const proxy = await startFaultProxy(registryUrl);
  let release: () => void = () => {};
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  t.teardown(async () => {
    release();
    await proxy.stop();
  });
  proxy.addFault({ path: layer, rangeless: true, fault: { kind: 'hold', until: held } });
  const downloading = async (): Promise<void> => {
    const seen = (): boolean => proxy.requests.some((r) => r.path.includes(layer) && r.range === undefined);
    for (let i = 0; i < 1200 && !seen(); i++) await new Promise((r) => setTimeout(r, 25));
    if (!seen()) throw new Error(`gave up waiting for the download of ${layer}`);
  };
  return { proxy, release, downloading };
}
