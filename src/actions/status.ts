/**
 * The status document, from the one host model (host/bootchooser.ts readHost -> host/boot-model.ts): what runs, what
 * GRUB boots next and why, what is staged, what a rollback boots, each slot as its image and record say, boot
 * assessment, and the last upgrade's recorded outcome (history only: staged state comes from the disk, never from the
 * last attempt). Reads only (besides the once-per-boot record of the running image's identity); partitions the host
 * has not mounted are mounted read-only for the duration.
 */
import { hostname } from 'node:os';
import { AgentError } from '../model/errors.ts';
import path from 'node:path';
import { HOST_API_VERSION, HOST_KIND, type HostStatusDocument, type SlotName, type SlotStatus } from '../model/host.ts';
import { readExtFile, readSquashfsFile } from '../partitions/index.ts';
import { parseOsRelease } from '../host/os-release.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { loadActionConfig } from '../host/config.ts';
import { readLastResult } from '../host/records.ts';
import { readHost, type HostView } from '../host/bootchooser.ts';
import { failedUpgrade, recordFor } from '../host/boot-model.ts';
import type { AgentDeps } from '../host/deps.ts';

export async function hostStatus(deps: AgentDeps): Promise<HostStatusDocument> {
  const { root } = deps;
  const { config } = await loadActionConfig(deps);
  const cleanup = new CleanupStack();
  try {
    const host = await readHost(deps, config, cleanup);
    if (host.dirs.state === undefined && host.unreadable.length > 0) {
      // Without COS_STATE nothing about the slots or the next boot can be told: say what could not be read, and how.
      throw new AgentError('ACCESS_DENIED', `status: cannot read the host as uid ${process.geteuid?.() ?? 0}: ${host.unreadable.map((u) => `${u.name}: ${u.why}`).join('; ')}. Run it as root, or start cosd (anyone may ask it for the status)`);
    }
    const slots = {
      active: await slotStatus(deps, host, 'active'),
      passive: await slotStatus(deps, host, 'passive'),
      recovery: await slotStatus(deps, host, 'recovery'),
    };
    const { state } = host;
    const pick = (s: SlotName | null): SlotStatus | null => (s === null ? null : slots[s]);
    const last = await readLastResult(root);
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
        bootedFrom: host.boot.bootedFrom,
        upgradeFailure: host.facts.upgradeFailure,
        booted: pick(state.running),
        staged: pick(state.staged),
        rollback: pick(state.rollback),
        slots,
        nextBoot: {
          entry: state.next.entry,
          oneShot: state.next.oneShot,
          slot: state.next.slot,
          reason: state.next.reason,
          upgradeFailure: state.next.upgradeFailure,
          ...(state.afterOneShot !== null ? { then: { entry: state.afterOneShot.entry, slot: state.afterOneShot.slot } } : {}),
        },
        bootAssessment: state.assessment,
        lastUpgrade: last?.result ?? null,
        failedUpgrade: failedOf(host, slots),
        ...(host.unreadable.length > 0 ? { unreadable: host.unreadable } : {}),
      },
    };
  } finally {
    for (const e of await cleanup.run(false)) deps.log.warn({ err: e.message }, 'cleanup after reading the status failed');
  }
}

async function slotStatus(deps: AgentDeps, host: HostView, slot: SlotName): Promise<SlotStatus> {
  const f = host.files[slot];
  const facts = host.facts.slots[slot];
  // The record that describes the image really in the slot; a stale one (naming another image) is not shown as it.
  const { record, match } = recordFor(host.facts, slot);
  let version = record?.version ?? null;
  const dir = slot === 'recovery' ? host.dirs.recovery : host.dirs.state;
  if (f.present && dir !== undefined && (f.fs === 'ext2' || f.fs === 'squashfs') && version === null) {
    // Hosts installed by elemental record no version, and a stale record names none: read it from the image.
    const read = f.fs === 'ext2' ? readExtFile : readSquashfsFile;
    for (const file of ['/etc/os-release', '/usr/lib/os-release']) {
      const text = await read(deps.runner, path.join(dir, f.file), file).catch(() => undefined);
      const v = text !== undefined ? parseOsRelease(text).get('VERSION') : undefined;
      if (v !== undefined) {
        version = v;
        break;
      }
    }
  }
  return {
    slot,
    file: f.file,
    present: f.present,
    label: f.fs === 'ext2' ? facts.label : null,
    fs: f.fs,
    size: f.size,
    uuid: facts.id,
    record: match,
    image: record?.source ?? null,
    imageDigest: record?.digest ?? record?.sourceMetadata?.digest ?? null,
    version,
    timestamp: record?.date ?? null,
    verification: record?.verification ?? 'unknown',
    signedBy: record?.verification === 'verified' ? (record.verificationDetail ?? null) : null,
  };
}

/** The upgrade boot assessment fell back from in this boot, as its slot shows it (see failedUpgrade). */
function failedOf(host: HostView, slots: Record<SlotName, SlotStatus>): HostStatusDocument['status']['failedUpgrade'] {
  const f = failedUpgrade(host.facts);
  if (f === null) return null;
  const s = slots[f.slot];
  return { slot: f.slot, image: s.image, digest: s.imageDigest, version: s.version, uuid: f.id, triesUsed: f.triesUsed };
}
