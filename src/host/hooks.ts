/**
 * Hook points of the upgrade (cos-layout.md 2.5/2.6), called through one interface. cosd and cosctl fill it with the
 * yip engine (src/actions/hooks.ts); NoHooks runs nothing (for tests of other parts, and until the deps exist).
 */
export type HookName = 'before-upgrade' | 'after-upgrade-chroot' | 'after-upgrade';

export interface HookContext {
  /** The transaction id of the job. */
  transaction: string;
  /** 'system' or 'recovery'. */
  target: 'system' | 'recovery';
  /** For after-upgrade-chroot: the mounted new image, with /dev /dev/pts /proc /sys /oem /usr/local bound in. */
  chroot?: string;
  /** Whether hook errors fail the upgrade (elemental --strict). */
  strict: boolean;
  /** The config's cloud-init-paths: sources after the default ones (inside the chroot for after-upgrade-chroot). */
  extraPaths?: readonly string[];
}

export interface HookRunner {
  run(name: HookName, ctx: HookContext): Promise<void>;
}

/** Runs nothing: logs each hook point so the sequence is visible. */
export class NoHooks implements HookRunner {
  private readonly log: (name: HookName, ctx: HookContext) => void;
  constructor(log: (name: HookName, ctx: HookContext) => void = () => {}) {
    this.log = log;
  }
  run(name: HookName, ctx: HookContext): Promise<void> {
    this.log(name, ctx);
    return Promise.resolve();
  }
}
