/**
 * SUC's upgrade job (`cosctl suc-upgrade`, run by /usr/sbin/suc-upgrade under its flock): elemental-operator's
 * ManagedOSImage plans run the NEW OS image as a privileged container with the host's `/` at $HOST_DIR (/host),
 * hostPID/IPC/network, the plan's cloud-config at /run/data/cloud-config. This upgrades the host's slots from the
 * container's own root (a `dir:/` source) with everything an upgrade guarantees, then reboots the host and exits 1 so
 * that SUC runs the job again; after the reboot the releases match and it exits 0. What it decides: model/suc.ts.
 *
 * Environment (the reference script's): HOST_DIR, RELEASE_FILE (/etc/os-release), CONF_FILE
 * (/run/data/cloud-config), FORCE, UPGRADE_RECOVERY, UPGRADE_RECOVERY_ONLY (true/false). LOCK_FILE and LOCK_TIMEOUT
 * are the wrapper's (flock). Test-only seam: AGENT_TEST_REBOOT_ARGV (a JSON argv) runs instead of the reboot.
 */
import { readFile, readlink, rm, stat } from 'node:fs/promises';
import { AgentError } from '../model/errors.ts';
import { sucDecision } from '../model/suc.ts';
import type { AgentDeps, ProgressFn } from '../host/deps.ts';
import { parseOsRelease } from '../host/os-release.ts';
import { writeFileAtomic } from '../sys/files.ts';
import { mount } from '../partitions/mount.ts';
import { upgrade, type UpgradeOutcome } from './upgrade/upgrade.ts';

export const OPERATOR_CONFIG = '/oem/90_operator.yaml';
const REBOOT_ENV = 'AGENT_TEST_REBOOT_ARGV';

export interface SucOptions {
  /** Where the host's root is mounted (HOST_DIR); deps.root is the same directory. */
  hostDir: string;
  releaseFile: string;
  confFile: string;
  force: boolean;
  upgradeRecovery: boolean;
  upgradeRecoveryOnly: boolean;
  /** One line for the job's log. */
  say: (line: string) => void;
  onProgress?: ProgressFn;
  signal?: AbortSignal;
}

/** The options from the job's environment, as the reference script reads them ("true" turns a flag on). */
export function sucOptionsFromEnv(env: NodeJS.ProcessEnv): Omit<SucOptions, 'say'> {
  const flag = (k: string): boolean => env[k] === 'true';
  return {
    hostDir: env['HOST_DIR'] || '/host',
    releaseFile: env['RELEASE_FILE'] || '/etc/os-release',
    confFile: env['CONF_FILE'] || '/run/data/cloud-config',
    force: flag('FORCE'),
    upgradeRecovery: flag('UPGRADE_RECOVERY'),
    upgradeRecoveryOnly: flag('UPGRADE_RECOVERY_ONLY'),
  };
}

const readOptional = (file: string): Promise<string | null> =>
  readFile(file, 'latin1').catch((e: unknown) => {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AgentError('CONFIG_INVALID', `${file}: cannot read: ${(e as Error).message}`, { cause: e });
  });

/** The job: returns its exit code (0: nothing (more) to do, 1: SUC must run it again). Errors are thrown. */
export async function sucUpgrade(deps: AgentDeps, opts: SucOptions): Promise<number> {
  const { say } = opts;
  const systemState = await hostSystemState(deps);
  const hostRelease = await readOptional(deps.root.path(opts.releaseFile));
  const imageRelease = await readOptional(opts.releaseFile);
  const decision = sucDecision({
    systemState, hostRelease, imageRelease,
    hostFields: parseOsRelease(hostRelease ?? ''), imageFields: parseOsRelease(imageRelease ?? ''),
    force: opts.force, upgradeRecovery: opts.upgradeRecovery, upgradeRecoveryOnly: opts.upgradeRecoveryOnly,
  });
  const host = parseOsRelease(hostRelease ?? '');
  const image = parseOsRelease(imageRelease ?? '');
  const name = (m: Map<string, string>): string => `${m.get('IMAGE_REPO') ?? '?'}:${m.get('IMAGE_TAG') ?? '?'} (VERSION ${m.get('VERSION') ?? '?'})`;
  say(`suc-upgrade: host ${name(host)}, image ${name(image)}`);
  if (decision.action === 'retry-later') {
    say(`suc-upgrade: ${decision.reason}: not upgrading now (exit 1, SUC retries)`);
    return decision.exit;
  }
  if (decision.action === 'done') {
    if (decision.syncConfig) await syncOperatorConfig(deps, opts);
    say(`suc-upgrade: nothing to do: ${decision.reason}`);
    return decision.exit;
  }
  await syncOperatorConfig(deps, opts);
  await bindHostDev(deps, opts.hostDir, say);
  say(`suc-upgrade: upgrading ${decision.targets.join(' and ')} from this container's root (dir:/): ${decision.reason}`);
  for (const target of decision.targets) {
    const out: UpgradeOutcome = await upgrade(deps, {
      image: 'dir:/',
      ...(target === 'recovery' ? { recovery: true } : {}),
      ...(opts.force ? { force: true } : {}),
      ...(opts.onProgress !== undefined ? { onProgress: opts.onProgress } : {}),
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
    });
    say(`suc-upgrade: ${target} upgraded to ${out.version ?? 'an unknown version'} (${out.file}, transaction ${out.transaction})`);
    for (const w of out.warnings) say(`suc-upgrade: warning: ${w}`);
    if (target === 'system' && out.nextBoot !== null && out.nextBoot.slot !== 'active') {
      throw new AgentError('STAGE_FAILED', `the upgrade is staged but GRUB boots ${out.nextBoot.slot ?? 'nothing'} next (${out.nextBoot.reason}): not rebooting`);
    }
  }
  if (!decision.reboot) {
    say('suc-upgrade: done; the recovery image is used from its next boot (no reboot needed)');
    return 0;
  }
  await rebootHost(deps);
  say('suc-upgrade: rebooting the host into the new image; exit 1 so that SUC runs this job again after the reboot');
  return 1;
}

/**
 * The plan's cloud-config (the secret at CONF_FILE) as /oem/90_operator.yaml on the host: written when it differs,
 * removed when the secret is empty or absent (the reference's config()).
 */
async function syncOperatorConfig(deps: AgentDeps, opts: SucOptions): Promise<void> {
  const target = deps.root.path(OPERATOR_CONFIG);
  const conf = await readFile(opts.confFile).catch((e: unknown) => {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AgentError('CONFIG_INVALID', `${opts.confFile}: cannot read the plan's cloud-config: ${(e as Error).message}`, { cause: e });
  });
  if (conf === null || conf.length === 0) {
    await rm(target, { force: true });
    return;
  }
  const current = await readFile(target).catch(() => null);
  if (current !== null && current.equals(conf)) return;
  await writeFileAtomic(target, conf, 0o600);
  opts.say(`suc-upgrade: ${OPERATOR_CONFIG} written from ${opts.confFile}`);
}

/** The host's `systemctl is-system-running`, asked in PID 1's namespaces ('' when it cannot be asked). */
async function hostSystemState(deps: AgentDeps): Promise<string> {
  const r = await deps.runner.run({
    argv: ['nsenter', '-i', '-m', '-t', '1', '--', 'systemctl', 'is-system-running'],
    description: "asking the host's systemd whether it is shutting down",
    okExitCodes: [1, 2, 3, 4, 255],
    timeoutMs: 30_000,
  }).catch(() => null);
  return r?.stdout.trim() ?? '';
}

/**
 * In the job's container, the host's /dev over the container's (as the reference script does): loop devices the
 * upgrade attaches appear on the host's devtmpfs, not in the copy of /dev the container started with. Only in a
 * container (another mount namespace than PID 1's) with the host's /dev at $HOST_DIR/dev.
 */
async function bindHostDev(deps: AgentDeps, hostDir: string, say: (l: string) => void): Promise<void> {
  const hostDev = deps.root.path('/dev');
  if (hostDir === '/' || !(await stat(`${hostDev}/loop-control`).then(() => true, () => false))) return;
  const [self, init] = await Promise.all([readlink('/proc/self/ns/mnt').catch(() => ''), readlink('/proc/1/ns/mnt').catch(() => '')]);
  if (self === '' || init === '' || self === init) return;
  await mount(deps.runner, hostDev, '/dev', { options: ['rbind'] });
  say(`suc-upgrade: the host's /dev bound over /dev`);
}

/** Reboot the host: `reboot` in PID 1's namespaces (the references' nsenter), or the test seam's argv. */
async function rebootHost(deps: AgentDeps): Promise<void> {
  const seam = deps.env[REBOOT_ENV];
  const argv = seam !== undefined && seam !== '' ? (JSON.parse(seam) as string[]) : ['nsenter', '-i', '-m', '-t', '1', '--', 'reboot'];
  await deps.runner.run({ argv, description: 'rebooting the host' }).catch((e: unknown) => {
    throw new AgentError('COMMAND_FAILED', `the upgrade is staged, but rebooting the host failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  });
}
