/**
 * The fallback and rollback scenarios' disks (vm-tests/fallback.test.ts): one whose new active fails a required
 * health check (passive the old image), one with images A and B. Built by vm-tests/lib/prebuild.ts while the other
 * tests run, so the VM suite finds them in the cache; the test file builds them itself when it runs alone.
 */
import { agentDiskOptions, agentPackage, dockerfileEnabledUnits, type AgentPackage } from './agent.ts';
import { buildCosDisk, type CosDisk, type CosDiskOptions } from './disk.ts';
import { fallbackReporter, osRelease } from './fallback.ts';

export const FAILING_CHECK = '#!/bin/sh\n# cos-agent VM test: the application of the new image does not come up\necho "app: not healthy" >&2\nexit 1\n';
export const FALLBACK_NEW_VERSION = 'cosvm-new-2.0';
export const FALLBACK_OLD_VERSION = 'cosvm-old-1.0';
export const A_VERSION = 'cosvm-A';
export const B_VERSION = 'cosvm-B';
export const FALLBACK_PASSIVE_UUID = '5e1f0b0b-0000-4000-8000-00000000b0b0';

export async function fallbackScenarioDisks(log: (line: string) => void): Promise<{ pkg: AgentPackage; diskFail: CosDisk; diskAB: CosDisk }> {
  const pkg = await agentPackage(log);
  const enabled = await dockerfileEnabledUnits();
  const reporter = fallbackReporter();
  const base: CosDiskOptions = { ...agentDiskOptions(pkg.path, enabled, reporter), passiveUuid: FALLBACK_PASSIVE_UUID };
  // one after the other: disk builds of one process share a work directory
  const diskFail = await buildCosDisk({
    ...base,
    slotFiles: {
      active: [{ path: '/etc/cos-agent/check/required.d/50-app', content: FAILING_CHECK, mode: 0o755 }, { path: '/usr/lib/os-release', content: osRelease(FALLBACK_NEW_VERSION) }],
      passive: [{ path: '/usr/lib/os-release', content: osRelease(FALLBACK_OLD_VERSION) }],
    },
  });
  const diskAB = await buildCosDisk({
    ...base,
    slotFiles: {
      active: [{ path: '/usr/lib/os-release', content: osRelease(A_VERSION) }],
      passive: [{ path: '/usr/lib/os-release', content: osRelease(B_VERSION) }],
    },
  });
  return { pkg, diskFail, diskAB };
}
