/**
 * What a slot holds: its state.yaml entry and whether its image file is there. Read-only; used by Check (is there an
 * update?) and by Upgrade (is the image already there?).
 */
import path from 'node:path';
import type { AgentConfig } from '../model/config.ts';
import type { ImageEntry } from '../model/state.ts';
import { pathExists } from '../sys/files.ts';
import type { AgentDeps } from './deps.ts';
import { findPartition, mountRo } from './access.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { readStateFile } from './state-file.ts';

export interface SlotImage {
  /** The slot's entry in state.yaml, if any. */
  entry: ImageEntry | null;
  /** The digest recorded for it (the agent's `digest`, else elemental's `source-metadata.digest`). */
  digest: string | null;
  /** The slot's image file is on the partition. */
  present: boolean;
  /** That file, relative to the partition (null when absent). */
  file: string | null;
}

/** What the target slot (active, or recovery) holds, from its partition's state.yaml; read-only, mounts undone. */
export async function readSlotImage(deps: AgentDeps, config: AgentConfig, recovery: boolean): Promise<SlotImage> {
  const cleanup = new CleanupStack();
  try {
    const part = await findPartition(deps, recovery ? config.labels.recovery : config.labels.state);
    const dir = await mountRo(deps, part.device, cleanup);
    const { state } = await readStateFile(path.join(dir, 'state.yaml'), { moveAside: false });
    const entry = (recovery ? state.partitions['recovery']?.images['recovery'] : state.partitions['state']?.images['active']) ?? null;
    const files = recovery ? ['cOS/recovery.img', 'cOS/recovery.squashfs'] : ['cOS/active.img'];
    let file: string | null = null;
    for (const f of files) if (file === null && (await pathExists(path.join(dir, f)))) file = f;
    return { entry, digest: entry?.digest ?? entry?.sourceMetadata?.digest ?? null, present: file !== null, file };
  } finally {
    await cleanup.run(false);
  }
}

