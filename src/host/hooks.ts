/**
 * Hook points of the upgrade (cos-layout.md 2.5/2.6), called through one interface. The yip engine that fills it is
 * a later issue; until then the agent runs with a HookRunner that runs nothing and says so in the log.
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
}

export interface HookRunner {
  run(name: HookName, ctx: HookContext): Promise<void>;
}

/** Runs nothing (no yip engine yet): logs each hook point so the sequence is visible. */
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
