/**
 * What a slot holds: the record that describes the image really in it (host model: a stale record naming another
 * image is not taken for it) and whether its image file is there. Read-only; used by Check (is there an update?).
 */
import type { AgentConfig } from '../model/config.ts';
import type { ImageEntry } from '../model/state.ts';
import type { AgentDeps } from './deps.ts';
import { readHostOnce } from './bootchooser.ts';
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
  const host = await readHostOnce(deps, config);
  const slot = recovery ? 'recovery' : 'active';
  const entry = recordFor(host.facts, slot).record;
  const f = host.files[slot];
  return { entry, digest: entry?.digest ?? entry?.sourceMetadata?.digest ?? null, present: f.present, file: f.present ? f.file : null };
}
