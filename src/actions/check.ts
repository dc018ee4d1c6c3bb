/**
 * Check: resolve the configured (or given) image to a digest and compare it with what the slot holds. No writes.
 */
import type { AgentDeps } from '../host/deps.ts';
import { loadActionConfig } from '../host/config.ts';
import { AgentError } from '../model/errors.ts';
import { resolveSource } from './upgrade/upgrade.ts';
import { readSlotImage } from '../host/slot-image.ts';
import { RegistryClient } from '../oci/registry.ts';
import { formatReference, parseReference } from '../oci/reference.ts';
import { withContext } from '../model/errors.ts';

export interface CheckOutcome {
  image: string;
  /** The digest the image resolves to now. */
  digest: string;
  /** The digest recorded for the target slot, if known. */
  currentDigest: string | null;
  updateAvailable: boolean;
}

export async function checkForUpdate(deps: AgentDeps, opts: { image?: string; recovery?: boolean } = {}): Promise<CheckOutcome> {
  const { config } = await loadActionConfig(deps);
  const source = resolveSource(config, opts);
  if (source.kind === 'dir') throw new AgentError('NOT_SUPPORTED', `${source.uri}: a local tree has no digest to compare: check needs an OCI image (cosctl upgrade stages a dir: source)`);
  const ref = parseReference(source.ref);
  const registry = new RegistryClient({ root: deps.root, env: deps.env, ...deps.registry });
  try {
    const resolved = await registry.resolve(ref).catch((e: unknown) => { throw withContext(`resolving ${formatReference(ref)}`, e); });
    const { digest: currentDigest } = await readSlotImage(deps, config, opts.recovery === true);
    const accepted = new Set([resolved.digest, ...(resolved.indexDigest ? [resolved.indexDigest] : [])]);
    return {
      image: formatReference(ref),
      digest: resolved.digest,
      currentDigest,
      updateAvailable: currentDigest === null || !accepted.has(currentDigest),
    };
  } finally {
    registry.close();
  }
}
