/**
 * The node_exporter textfile (cosd --metrics-file): model/metrics.ts rendered from the daemon's status copy, its
 * UpdateAvailable and the last check, written atomically (temp file in the same directory, rename: the collector
 * never reads half a file) whenever one of them changes. Writes are coalesced (one per burst of changes) and never
 * overlap; identical text is not rewritten. A failed write is logged once per kind of failure and retried with the
 * next change; it never fails a job.
 *
 * The default path (/var/lib/node_exporter/textfile_collector/cos_agent.prom, the directory kairos and many
 * node_exporter setups use) is written only when its directory exists: a host without node_exporter gets no stray
 * directory. A path given with --metrics-file has its directory created.
 */
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { renderMetrics, type JobOutcome } from '../model/metrics.ts';
import type { HostStatusDocument } from '../model/host.ts';
import { writeFileAtomic } from '../sys/files.ts';
import type { Logger } from '../sys/log.ts';
import type { SysRoot } from '../sys/root.ts';
import { readLastCheck, RESULT, type TransactionRecord } from './transactions.ts';

export const DEFAULT_METRICS_FILE = '/var/lib/node_exporter/textfile_collector/cos_agent.prom';

export interface MetricsSource {
  readonly statusDocument: HostStatusDocument | null;
  readonly statusReadOk: boolean;
  readonly state: { readonly updateAvailable: boolean };
  readonly updateAvailableKnown: boolean;
  subscribe(listener: {
    changed?(changes: { updateAvailable?: boolean }): void;
    finished?(record: TransactionRecord): void;
    statusRefreshed?(doc: HostStatusDocument): void;
    statusFailed?(error: Error): void;
  }): () => void;
}

const outcome = (r: TransactionRecord): JobOutcome => ({ ok: r.result === RESULT.ok, code: r.code, startedAt: r.startedAt, finishedAt: r.finishedAt });

export class MetricsFile {
  readonly #root: SysRoot;
  readonly #file: string;
  readonly #createDir: boolean;
  readonly #log: Logger;
  readonly #version: string;
  #lastCheck: JobOutcome | null = null;
  #written = '';
  #pending = false;
  #chain: Promise<void> = Promise.resolve();
  #warned = new Set<string>();
  #unsubscribe: (() => void) | undefined;

  /** `file`: a host path (under the root prefix); `createDir`: it was given explicitly (create its directory). */
  constructor(opts: { root: SysRoot; file: string; createDir: boolean; log: Logger; version: string }) {
    this.#root = opts.root;
    this.#file = opts.file;
    this.#createDir = opts.createDir;
    this.#log = opts.log;
    this.#version = opts.version;
  }

  /** Follow `source`; reads the last check of this boot first. Returns when the first write (if any) is done. */
  async attach(source: MetricsSource): Promise<void> {
    const last = await readLastCheck(this.#root).catch(() => null);
    if (last !== null) this.#lastCheck = outcome(last);
    this.#unsubscribe = source.subscribe({
      changed: (c) => {
        if (c.updateAvailable !== undefined) this.schedule(source);
      },
      finished: (r) => {
        if (r.kind === 'check') this.#lastCheck = outcome(r);
        this.schedule(source);
      },
      statusRefreshed: () => this.schedule(source),
      statusFailed: () => this.schedule(source),
    });
    this.schedule(source);
    await this.idle();
  }

  detach(): void {
    this.#unsubscribe?.();
  }

  /** Resolves when no write is queued or running. */
  async idle(): Promise<void> {
    let chain: Promise<void>;
    do {
      chain = this.#chain;
      await chain;
    } while (chain !== this.#chain);
  }

  /** Queue a write of the current state (one for any number of calls before it starts). */
  schedule(source: MetricsSource): void {
    if (this.#pending) return;
    this.#pending = true;
    this.#chain = this.#chain.then(async () => {
      this.#pending = false;
      const doc = source.statusDocument;
      if (doc === null) return;
      try {
        const text = renderMetrics({
          agentVersion: this.#version, status: doc, statusReadOk: source.statusReadOk,
          updateAvailable: source.updateAvailableKnown ? source.state.updateAvailable : null, lastCheck: this.#lastCheck,
        });
        if (text !== this.#written) await this.#write(text);
      } catch (e) {
        // Never left rejected: the next change writes again.
        this.#once('render', () => this.#log.warn({ err: e instanceof Error ? e.message : String(e) }, 'metrics: cannot render the metrics'));
      }
    });
  }

  async #write(text: string): Promise<void> {
    const file = this.#root.path(this.#file);
    const dir = path.dirname(file);
    try {
      if (this.#createDir) await mkdir(dir, { recursive: true });
      else if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) {
        this.#once('nodir', () => this.#log.debug({ dir: this.#file }, 'metrics: no textfile-collector directory; not writing metrics'));
        return;
      }
      await writeFileAtomic(file, text);
      this.#written = text;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'error';
      this.#once(code, () => this.#log.warn({ file: this.#file, code, err: e instanceof Error ? e.message : String(e) }, 'metrics: cannot write the textfile; retrying with the next change'));
    }
  }

  #once(key: string, fn: () => void): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    fn();
  }
}
