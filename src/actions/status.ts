/**
 * Gather the status document from what is on disk: /proc/cmdline, the slot image files (stat + label probe),
 * state.yaml, the GRUB env files, and the last recorded upgrade result. Reads only; partitions the host has not
 * mounted are mounted read-only for the duration.
 */
import { hostname } from 'node:os';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { HOST_API_VERSION, HOST_KIND, type HostStatusDocument, type SlotName, type SlotStatus } from '../model/host.ts';
import type { ImageEntry, InstallState } from '../model/state.ts';
import { readGrubEnvFile } from '../grub/index.ts';
import { isSquashfs, probeLabel, readExtFile } from '../partitions/index.ts';
import { parseOsRelease } from '../host/os-release.ts';
import { pathExists } from '../sys/files.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { loadConfig } from '../config/load.ts';
import { parseCmdline } from '../host/cmdline.ts';
import { readStateFile } from '../host/state-file.ts';
import { readLastResult } from '../host/records.ts';
import { findPartition, mountRo } from '../host/access.ts';
import type { AgentDeps } from '../host/deps.ts';

const FILES: Record<SlotName, string[]> = {
  active: ['cOS/active.img'],
  passive: ['cOS/passive.img'],
  recovery: ['cOS/recovery.squashfs', 'cOS/recovery.img'],
};

export async function hostStatus(deps: AgentDeps): Promise<HostStatusDocument> {
  const { root } = deps;
  const { config } = await loadConfig(root, { env: deps.env });
  const boot = parseCmdline(await readFile(root.path('/proc/cmdline'), 'utf8').catch(() => ''), config.labels);
  const upgradeFailure = boot.upgradeFailure || (await pathExists(root.path('/run/cos/upgrade_failure')));
  const cleanup = new CleanupStack();
  try {
    const stateDir = await partitionDir(deps, config.labels.state, cleanup);
    const recoveryDir = await partitionDir(deps, config.labels.recovery, cleanup);
    const stateFile = stateDir ? (await readStateFile(path.join(stateDir, 'state.yaml'), { moveAside: false })).state : undefined;
    const recoveryFile = recoveryDir ? (await readStateFile(path.join(recoveryDir, 'state.yaml'), { moveAside: false })).state : undefined;

    const slots = {
      active: await slotStatus(deps, 'active', stateDir, entryOf(stateFile, 'state', 'active')),
      passive: await slotStatus(deps, 'passive', stateDir, entryOf(stateFile, 'state', 'passive')),
      recovery: await slotStatus(deps, 'recovery', recoveryDir, entryOf(recoveryFile, 'recovery', 'recovery') ?? entryOf(stateFile, 'recovery', 'recovery')),
    };
    const oemEnv = await readGrubEnvFile(root.path('/oem/grubenv'), { missingOk: true }).catch(() => new Map<string, string>());
    const assess = stateDir ? await readGrubEnvFile(path.join(stateDir, 'boot_assessment'), { missingOk: true }).catch(() => new Map<string, string>()) : new Map<string, string>();
    const oneShot = oemEnv.get('next_entry');
    const last = await readLastResult(root);

    // bootc views. After a system upgrade in this boot, the running OS is no longer in active.img: it moved to
    // passive.img (rotated) or was passive all along; active.img holds the staged image for the next boot.
    const stagedThisBoot = last !== null && last.thisBoot && last.result.result === 'success' && last.result.target === 'system';
    let booted: SlotStatus | null = null;
    let staged: SlotStatus | null = null;
    let rollback: SlotStatus | null = null;
    if (boot.bootedFrom === 'active' || boot.bootedFrom === 'passive' || boot.bootedFrom === 'recovery') {
      if (stagedThisBoot && boot.bootedFrom !== 'recovery') {
        booted = slots.passive;
        staged = slots.active;
        rollback = slots.passive;
      } else {
        booted = slots[boot.bootedFrom];
        rollback = boot.bootedFrom === 'active' ? slots.passive : slots.active;
        if (stagedThisBoot) staged = slots.active;
      }
    }
    const src = config.upgradeSource;
    return {
      apiVersion: HOST_API_VERSION,
      kind: HOST_KIND,
      metadata: { name: hostname() },
      spec: {
        image: src ? { image: src.ref, transport: src.kind === 'oci' ? 'registry' : src.kind } : null,
        verify: config.verify,
      },
      status: {
        bootedFrom: boot.bootedFrom,
        upgradeFailure,
        booted,
        staged,
        rollback,
        slots,
        nextBoot: oneShot ? { entry: oneShot, oneShot: true } : { entry: oemEnv.get('saved_entry') || 'cos', oneShot: false },
        bootAssessment: { enabled: assess.get('enable_boot_assessment') === 'yes', tentative: assess.get('boot_assessment_tentative') === 'yes' },
        lastUpgrade: last?.result ?? null,
      },
    };
  } finally {
    await cleanup.run(false);
  }
}

async function partitionDir(deps: AgentDeps, label: string, cleanup: CleanupStack): Promise<string | undefined> {
  const dev = await findPartition(deps, label).catch(() => undefined);
  if (dev === undefined) return undefined;
  return mountRo(deps, dev.device, cleanup).catch(() => undefined);
}

function entryOf(state: InstallState | undefined, part: string, image: string): ImageEntry | undefined {
  return state?.partitions[part]?.images[image];
}

async function slotStatus(deps: AgentDeps, slot: SlotName, dir: string | undefined, entry: ImageEntry | undefined): Promise<SlotStatus> {
  const candidates = FILES[slot];
  let file = candidates[candidates.length - 1] as string;
  let size: number | null = null;
  let present = false;
  if (dir !== undefined) {
    for (const f of candidates) {
      const st = await stat(path.join(dir, f)).catch(() => undefined);
      if (st?.isFile()) {
        file = f;
        size = st.size;
        present = true;
        break;
      }
    }
  }
  let fs: SlotStatus['fs'] = null;
  let label: string | null = null;
  let version = entry?.version ?? null;
  if (present && dir !== undefined) {
    const full = path.join(dir, file);
    fs = (await isSquashfs(full)) ? 'squashfs' : 'ext2';
    if (fs === 'ext2') {
      label = (await probeLabel(deps.runner, full).catch(() => undefined)) ?? null;
      // Hosts installed by elemental record no version: read it from the image itself, unmounted.
      if (version === null) {
        for (const f of ['/etc/os-release', '/usr/lib/os-release']) {
          const text = await readExtFile(deps.runner, full, f).catch(() => undefined);
          const v = text !== undefined ? parseOsRelease(text).get('VERSION') : undefined;
          if (v !== undefined) {
            version = v;
            break;
          }
        }
      }
    }
  }
  return {
    slot,
    file,
    present,
    label,
    fs,
    size,
    image: entry?.source ?? null,
    imageDigest: entry?.digest ?? entry?.sourceMetadata?.digest ?? null,
    version,
    timestamp: entry?.date ?? null,
    verification: entry?.verification ?? 'unknown',
  };
}

