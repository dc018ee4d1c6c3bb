/**
 * StatusWatcher: inotify (`fs.watch`) on the few places whose files make up the status document, so a change made
 * outside cosd (an in-process `cosctl`, an admin editing a GRUB env block, a rename of a slot image) re-reads the
 * status copy GetStatus answers from, after a short debounce. Event-driven, like ConfigWatcher: nothing runs between
 * events, and the debounce timer exists only after one.
 *
 * Watched (host paths through the SysRoot, directories that exist when armed; events filtered by file name):
 *   /run/initramfs/cos-state        boot_assessment, grub_oem_env, state.yaml   (COS_STATE as the booted host sees it)
 *   /run/initramfs/cos-state/cOS    active.img, passive.img                      (slot switches and rollbacks)
 *   /oem                            grubenv                                      (one-shot next_entry)
 *   /run/cos-agent                  last-upgrade.json                            (an in-process cosctl's upgrade)
 *   /run/cos                        upgrade_failure
 * Only these names count: cosd's own read-only mounts (temp dirs under /run/cos-agent) and its own job records
 * (last-transaction.json) never trigger a re-read. The callback gets the time of the last event (performance.now()),
 * so the daemon can skip a re-read that one of its own, started later, already covers (a job's own writes).
 */
import { watch, type FSWatcher } from 'node:fs';
import type { SysRoot } from '../sys/root.ts';

export const STATUS_SOURCES: ReadonlyArray<{ dir: string; names: readonly string[] }> = [
  { dir: '/run/initramfs/cos-state', names: ['boot_assessment', 'grub_oem_env', 'state.yaml'] },
  { dir: '/run/initramfs/cos-state/cOS', names: ['active.img', 'passive.img'] },
  { dir: '/oem', names: ['grubenv'] },
  { dir: '/run/cos-agent', names: ['last-upgrade.json'] },
  { dir: '/run/cos', names: ['upgrade_failure'] },
];

export class StatusWatcher {
  readonly #root: SysRoot;
  readonly #onChange: (lastEventAt: number) => void;
  readonly #debounceMs: number;
  readonly #onWatchError: ((dir: string, error: NodeJS.ErrnoException) => void) | undefined;
  #watchers: FSWatcher[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastEventAt = 0;

  /**
   * `onWatchError`: a source directory that is there (or may be) but cannot be watched (ELOOP, EACCES, the inotify
   * limits ENOSPC / EMFILE): changes in it reach GetStatus only with the next job. A directory that does not exist
   * (ENOENT, ENOTDIR) is no error: that host does not have it.
   */
  constructor(
    root: SysRoot,
    onChange: (lastEventAt: number) => void,
    opts: { debounceMs?: number; onWatchError?: (dir: string, error: NodeJS.ErrnoException) => void } = {},
  ) {
    this.#root = root;
    this.#onChange = onChange;
    this.#debounceMs = opts.debounceMs ?? 200;
    this.#onWatchError = opts.onWatchError;
  }

  /** Host dirs being watched. */
  get watchedDirs(): string[] {
    return this.#watched;
  }

  #watched: string[] = [];

  /** Arm the watches on the directories that exist. Idempotent. */
  start(): void {
    if (this.#watchers.length > 0) return;
    for (const { dir, names } of STATUS_SOURCES) {
      try {
        const w = watch(this.#root.path(dir), { persistent: false }, (_event, name) => {
          if (name !== null && names.includes(name.toString())) this.#changed();
        });
        w.on('error', () => undefined); // the directory went away (unmounted): its watch ends, the others stay
        this.#watchers.push(w);
        this.#watched.push(dir);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        // Not there on this host (booted from recovery: COS_STATE is not mounted by the initrd): nothing to watch.
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') continue;
        this.#onWatchError?.(dir, err);
      }
    }
  }

  stop(): void {
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
    this.#watched = [];
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #changed(): void {
    this.#lastEventAt = performance.now();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#onChange(this.#lastEventAt);
    }, this.#debounceMs);
  }
}
