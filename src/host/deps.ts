/** Capabilities every action receives (built once at the edge, in cli.ts / main.ts). */
import type { Runner } from '../sys/runner.ts';
import type { SysRoot } from '../sys/root.ts';
import type { Logger } from '../sys/log.ts';
import type { HookRunner } from './hooks.ts';
import type { RegistryClientOptions } from '../oci/types.ts';
import type { ConfigSnapshot } from '../config/load.ts';
import type { DeviceDiscovery } from '../partitions/index.ts';

import type { TestHooks } from '../sys/crash.ts';

export interface AgentDeps {
  root: SysRoot;
  runner: Runner;
  log: Logger;
  hooks: HookRunner;
  /** Process environment (ELEMENTAL_*, proxies, HOME for ~/.docker/config.json). */
  env: NodeJS.ProcessEnv;
  now: () => Date;
  /** Extra registry client options (tests shorten retries). */
  registry?: Partial<RegistryClientOptions>;
  /**
   * Test-only seam (AGENT_TEST_DISK): narrow label discovery to the partitions of this disk, because several test
   * hosts carrying the same labels exist at once. Inert (undefined) on real hosts.
   */
  testDisk?: string;
  /**
   * The label lookups of one host read (or of cosd's start) share one probe pass of the block devices (access.ts
   * withDiscovery). Scoped: set on a copy of the deps for that span only, never for a process's lifetime (devices
   * come and go). Undefined: each lookup makes its own pass.
   */
  discovery?: DeviceDiscovery;
  /**
   * cosd's last valid configuration (its config watcher's snapshot; undefined while none has loaded). Actions read
   * the config through loadActionConfig (./config.ts): this snapshot when there is one, so a config file edited into
   * an invalid state does not fail the next job; the files on disk when absent (cosctl --no-daemon).
   */
  config?: () => ConfigSnapshot | undefined;
  /**
   * Test-only seam (crash injection, AGENT_TEST_CRASH_AT in the composition roots): called at named points of a
   * switch, where a test kills the process. Inert (undefined) on real hosts.
   */
  testHooks?: TestHooks;
}

export type Operation = 'idle' | 'checking' | 'downloading' | 'verifying' | 'staging' | 'hooks' | 'finalizing' | 'rebooting';

export interface Progress {
  operation: Operation;
  percent: number;
  message: string;
  bytesDone: number;
  bytesTotal: number;
}

export type ProgressFn = (p: Progress) => void;
