/**
 * What a slot holds: the record that describes the image really in it (host model: a stale record naming another
 * image is not taken for it) and whether its image file is there. Read-only; used by Check (is there an update?).
 */
import type { AgentConfig } from '../model/config.ts';
import type { ImageEntry } from '../model/state.ts';
import type { AgentDeps } from './deps.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { readHost } from './bootchooser.ts';
import { recordFor } from './boot-model.ts';

export interface SlotImage {
  /** The record of the slot's image, if any. */
  entry: ImageEntry | null;
  /** The digest recorded for it (the agent's `digest`, else elemental's `source-metadata.digest`). */
  digest: string | null;
  /** The slot's image file is on the partition. */
  present: boolean;
  /** That file, relative to the partition (null when absent). */
  file: string | null;
}

/** What the target slot (active, or recovery) holds; read-only, mounts undone. */
export async function readSlotImage(deps: AgentDeps, config: AgentConfig, recovery: boolean): Promise<SlotImage> {
  const cleanup = new CleanupStack();
  try {
    const host = await readHost(deps, config, cleanup);
    const slot = recovery ? 'recovery' : 'active';
    const entry = recordFor(host.facts, slot).record;
    const f = host.files[slot];
    return { entry, digest: entry?.digest ?? entry?.sourceMetadata?.digest ?? null, present: f.present, file: f.present ? f.file : null };
  } finally {
    for (const e of await cleanup.run(false)) deps.log.warn({ err: e.message }, 'cleanup after reading the slot failed');
  }
}
