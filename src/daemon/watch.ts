/**
 * ConfigWatcher: watch every config source with inotify (`fs.watch`) and reload atomically after a debounce.
 *
 * Watched (through the SysRoot): the env files of the loader (`/etc/os-release`, `/etc/cos/config`,
 * `/etc/cos-upgrade-image`), `/etc/elemental/config.yaml`, every `*.yaml`/`*.yml` in `/etc/elemental/config.d/`,
 * `/etc/cos-agent/agent.yaml` and `/etc/cos-agent/policy.yaml`. The watches are on the parent directories, because
 * writers (yip, editors) replace files by rename and files may not exist yet; events are filtered by file name. A
 * directory that does not exist is represented by a watch on its nearest existing ancestor, filtered on the next path
 * component; when it appears (or a watched directory is removed or replaced) the watches are re-armed before the
 * reload. No polling: between events nothing runs, and the debounce timer exists only after an event.
 *
 * A reload reads everything (loadConfig, agent.yaml, a parse of policy.yaml) and only then swaps the snapshot:
 * success calls `onReload(next, prev)` (on every successful reload, even when nothing changed, so the caller can
 * clear a previous error); any failure calls `onError(err)` (a ConfigError naming file and line for a malformed file)
 * and KEEPS the previous snapshot. Nothing here knows about D-Bus or logging.
 */
import { watch, statSync, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { AgentError, ConfigError } from '../model/errors.ts';
import type { WatchedConfig } from '../model/schedule.ts';
import { readOptionalText } from '../sys/files.ts';
import type { SysRoot } from '../sys/root.ts';
import { AGENT_CONFIG_FILE, loadAgentSettings } from '../config/agent-settings.ts';
import { ELEMENTAL_CONFIG_DIR, ENV_FILES, loadConfig, type ConfigSnapshot } from '../config/load.ts';
import { parsePolicyFile, POLICY_FILE } from '../config/verify-policy.ts';

/** Host paths of the single files that are watched. */
export const WATCHED_FILES: readonly string[] = [...ENV_FILES, `${ELEMENTAL_CONFIG_DIR}/config.yaml`, AGENT_CONFIG_FILE, POLICY_FILE];
/** Host paths of the directories whose YAML entries are all watched. */
export const WATCHED_DIRS: readonly string[] = [`${ELEMENTAL_CONFIG_DIR}/config.d`];
export const DEFAULT_DEBOUNCE_MS = 100;

/** A watcher snapshot: every source (WatchedConfig) plus the config's source layers, for the jobs' overrides. */
export interface WatchedSnapshot extends WatchedConfig, ConfigSnapshot {}

export interface ConfigWatcherOptions {
  /** A reload succeeded. `prev` is undefined for the first load. */
  onReload: (next: WatchedSnapshot, prev: WatchedSnapshot | undefined) => void;
  /** A reload failed; the previous snapshot stays current. A malformed file gives a ConfigError (file, line, key). */
  onError: (error: AgentError) => void;
  /** Environment for loadConfig (`ELEMENTAL_*`); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Quiet time after the last event before reloading; default 100 ms. */
  debounceMs?: number;
  /**
   * A directory that exists could not be watched (the inotify limits ENOSPC / EMFILE, EACCES): changes in it are
   * seen at the next reload (a change elsewhere, SIGHUP), which tries again. Not retried in a loop.
   */
  onWatchError?: (dir: string, error: NodeJS.ErrnoException) => void;
}

/** A directory of interest: the file names in it that matter, or every YAML file. */
interface Target {
  dir: string;
  names: ReadonlySet<string> | 'yaml';
}

interface Watch {
  watcher: FSWatcher;
  ino: number;
}

const isYaml = (name: string): boolean => name.endsWith('.yaml') || name.endsWith('.yml');

export class ConfigWatcher {
  readonly #root: SysRoot;
  readonly #opts: ConfigWatcherOptions;
  readonly #debounceMs: number;
  readonly #targets: Target[];
  readonly #watches = new Map<string, Watch>();
  #current: WatchedSnapshot | undefined;
  #timer: NodeJS.Timeout | undefined;
  #reloading: Promise<WatchedSnapshot | undefined> | undefined;
  #again = false;
  #closed = false;

  constructor(root: SysRoot, opts: ConfigWatcherOptions) {
    this.#root = root;
    this.#opts = opts;
    this.#debounceMs = opts.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    const byDir = new Map<string, Set<string>>();
    for (const file of WATCHED_FILES) {
      const p = root.path(file);
      const names = byDir.get(path.dirname(p)) ?? new Set<string>();
      names.add(path.basename(p));
      byDir.set(path.dirname(p), names);
    }
    this.#targets = [
      ...[...byDir].map(([dir, names]): Target => ({ dir, names })),
      ...WATCHED_DIRS.map((d): Target => ({ dir: root.path(d), names: 'yaml' })),
    ];
  }

  /** The last good snapshot, or undefined before the first successful load. */
  get current(): WatchedSnapshot | undefined {
    return this.#current;
  }

  /** Root-mapped directories watched right now (targets, or ancestors standing in for missing ones). */
  get watchedPaths(): string[] {
    return [...this.#watches.keys()].sort();
  }

  /**
   * Arm the watches and load once, with the same callbacks as any reload: resolves with the first snapshot (also
   * passed to onReload), or undefined when the config is invalid at start (the error went to onError). The watches
   * stay armed either way, so a later fix is picked up. Call close() to stop.
   */
  start(): Promise<WatchedSnapshot | undefined> {
    if (this.#closed) return Promise.reject(new AgentError('STATE_INVALID', 'the config watcher is closed'));
    return this.#reload();
  }

  /**
   * Reload now (e.g. on SIGHUP or a D-Bus call), with the same callbacks as a change on disk. Resolves with the new
   * snapshot, or undefined when the reload failed (the error went to onError).
   */
  reload(): Promise<WatchedSnapshot | undefined> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    return this.#reload();
  }

  /** Close every watch and the debounce timer; a reload in progress delivers nothing afterwards. Idempotent. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const w of this.#watches.values()) w.watcher.close();
    this.#watches.clear();
  }

  // -- internals ----------------------------------------------------------------------------------------------

  #schedule(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#reload();
    }, this.#debounceMs);
  }

  /** Serialised: a request during a reload runs one more reload after it. */
  #reload(): Promise<WatchedSnapshot | undefined> {
    if (this.#reloading !== undefined) {
      this.#again = true;
      return this.#reloading;
    }
    const run = (async (): Promise<WatchedSnapshot | undefined> => {
      let result: WatchedSnapshot | undefined;
      do {
        this.#again = false;
        if (this.#closed) return undefined;
        this.#arm();
        try {
          const snapshot = await this.#load();
          if (this.#closed) return undefined;
          const prev = this.#current;
          this.#current = snapshot;
          result = snapshot;
          this.#opts.onReload(snapshot, prev);
        } catch (e) {
          result = undefined;
          if (this.#closed) return undefined;
          this.#opts.onError(e instanceof AgentError ? e : new AgentError('CONFIG_INVALID', `reloading the configuration: ${(e as Error).message}`, { cause: e }));
        }
      } while (this.#again && !this.#closed);
      return result;
    })().finally(() => {
      this.#reloading = undefined;
    });
    this.#reloading = run;
    return run;
  }

  /** Read every source; throws on the first problem, so nothing half-loaded is ever published. */
  async #load(): Promise<WatchedSnapshot> {
    const loaded = await loadConfig(this.#root, this.#opts.env !== undefined ? { env: this.#opts.env } : {});
    const agent = await loadAgentSettings(this.#root);
    const files = [...loaded.files];
    if (agent.file !== undefined) files.push(agent.file);
    const policyPath = this.#root.path(POLICY_FILE);
    const policyText = await readOptionalText(policyPath).catch((e: unknown) => {
      throw new ConfigError(policyPath, `cannot read: ${(e as Error).message}`, { cause: e });
    });
    if (policyText !== undefined) {
      parsePolicyFile(policyText, policyPath);
      files.push(policyPath);
    }
    return Object.freeze({ config: loaded.config, layers: loaded.layers, policyText: policyText ?? null, warnings: loaded.warnings, files, agent: agent.settings, loadedAt: new Date() });
  }

  /** Make the watch set match the file system: each target dir, or its nearest existing ancestor. */
  #arm(): void {
    if (this.#closed) return;
    const wanted = new Map<string, number>();
    for (const t of this.#targets) {
      const found = nearestDir(t.dir);
      if (found !== undefined) wanted.set(found.dir, found.ino);
    }
    for (const [dir, w] of this.#watches) {
      if (wanted.get(dir) !== w.ino) {
        w.watcher.close();
        this.#watches.delete(dir);
      }
    }
    for (const [dir, ino] of wanted) {
      if (this.#watches.has(dir)) continue;
      let watcher: FSWatcher;
      try {
        watcher = watch(dir, { persistent: true }, (_event, name) => this.#onEvent(dir, name));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') this.#schedule(); // vanished between stat and watch: look again after the debounce
        else this.#opts.onWatchError?.(dir, err);
        continue;
      }
      watcher.on('error', () => {
        watcher.close();
        if (this.#watches.get(dir)?.watcher === watcher) this.#watches.delete(dir);
        this.#schedule();
      });
      this.#watches.set(dir, { watcher, ino });
    }
  }

  #onEvent(dir: string, name: string | Buffer | null): void {
    const file = name === null ? null : name.toString();
    if (file === null || file === path.basename(dir) || this.#relevant(dir, file)) this.#schedule();
  }

  /** Does an event for `file` in the watched `dir` concern a target? */
  #relevant(dir: string, file: string): boolean {
    for (const t of this.#targets) {
      if (t.dir === dir) {
        if (t.names === 'yaml' ? isYaml(file) : t.names.has(file)) return true;
      } else if (t.dir.startsWith(`${dir === '/' ? '' : dir}/`)) {
        // dir stands in for a missing target below it: only the next component matters
        const next = t.dir.slice(dir === '/' ? 1 : dir.length + 1).split('/')[0];
        if (next === file) return true;
      }
    }
    return false;
  }
}

/** The directory itself if it exists, else its nearest existing ancestor; with its inode. */
function nearestDir(dir: string): { dir: string; ino: number } | undefined {
  for (let d = dir; ; d = path.dirname(d)) {
    try {
      const st = statSync(d);
      if (st.isDirectory()) return { dir: d, ino: st.ino };
    } catch {
      // missing: try the parent
    }
    if (d === path.dirname(d)) return undefined;
  }
}
