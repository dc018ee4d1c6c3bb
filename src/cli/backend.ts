/**
 * What cosctl needs from the agent, whether it runs in the daemon (over D-Bus) or in-process (--no-daemon).
 */
import type { Progress } from '../host/deps.ts';
import type { CheckOutcome } from '../actions/check.ts';
import type { RollbackOutcome } from '../actions/rollback.ts';
import type { VerifyOutcome } from '../actions/verify-image.ts';
import type { HostStatusDocument, Verification } from '../model/host.ts';

/** Where cosctl writes, and its environment (process.* in bin/cosctl.js; buffers in tests). */
export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

export interface UpgradeRequest {
  image?: string;
  recovery?: boolean;
  noVerify?: boolean;
  /** Stage even when the slot already holds the digest. */
  force?: boolean;
  /** Reboot into the new slot after a successful upgrade (daemon only). */
  reboot?: boolean;
}

export interface UpgradeSummary {
  transaction: string;
  target: 'system' | 'recovery';
  image: string;
  /** '' or null for a dir: source (a local tree has no digest). */
  digest: string | null;
  version: string | null;
  verification: Verification;
  keepPassiveReason: string | null;
  /** Nothing was staged: the slot already held the digest (why); null when staged. */
  unchanged: string | null;
  /** What went wrong after the slot switch (it took effect): printed as warnings. */
  warnings: string[];
  /** System upgrades: the slot GRUB boots next ('' when none can boot); null when not known (recovery, older cosd). */
  nextBoot: string | null;
}

export interface Backend {
  readonly kind: 'daemon' | 'in-process';
  /** `signal` (Ctrl-C): cancel the upgrade (before the slot switch) and wait for its cleanup. */
  upgrade(req: UpgradeRequest, onProgress: (p: Progress) => void, signal?: AbortSignal): Promise<UpgradeSummary>;
  check(req: { image?: string; recovery?: boolean }): Promise<CheckOutcome>;
  rollback(req: { permanent: boolean }): Promise<RollbackOutcome>;
  /** Cancel the running upgrade (daemon only); false when there is none or it is past the switch. */
  cancel(): Promise<boolean>;
  /** Whether boot assessment changed (null: not known), and the warnings of a mark that took effect. */
  mark(good: boolean): Promise<{ assessmentChanged: boolean | null; warnings: string[] }>;
  status(): Promise<HostStatusDocument>;
  verify(image: string): Promise<VerifyOutcome>;
  /** Calls `onStatus` with the document now and after every change, until the returned stop() (daemon only). */
  watch(onStatus: (doc: HostStatusDocument) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}
