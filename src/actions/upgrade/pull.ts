/**
 * The image's layers from the registry: the rootfs size estimated before pulling (each layer's gzip trailer or zstd
 * header, see size.ts), then every layer streamed, digest-checked and applied straight into the new image's tree.
 */
import { AgentError, withContext } from '../../model/errors.ts';
import type { AgentDeps, Progress } from '../../host/deps.ts';
import type { RegistryClient } from '../../oci/registry.ts';
import { formatReference, type parseReference } from '../../oci/reference.ts';
import type { ResolvedImage } from '../../oci/types.ts';
import { applyLayer } from '../../oci/unpack.ts';
import { layerCompression } from '../../oci/manifest.ts';
import { gzipIsize, probeRange, zstdContentSize } from './size.ts';
import { hasErrno } from './errors.ts';

export async function pullInto(
  deps: AgentDeps,
  registry: RegistryClient,
  ref: ReturnType<typeof parseReference>,
  image: ResolvedImage,
  treeDir: string,
  sizeMiB: number,
  progress: (p: Partial<Progress> & Pick<Progress, 'operation' | 'message'>) => void,
  signal: AbortSignal | undefined,
  log: AgentDeps['log'],
): Promise<void> {
  const total = image.compressedSize;
  let done = 0;
  const layers = image.manifest.layers;
  for (const [i, layer] of layers.entries()) {
    const message = `layer ${i + 1}/${layers.length} ${layer.digest.slice(7, 19)}`;
    const before = done;
    // applyLayer reports the running total of compressed bytes read in this layer.
    const onBytes = (layerBytes: number): void => {
      const now = before + layerBytes;
      progress({ operation: 'downloading', message, bytesDone: now, bytesTotal: total, percent: total > 0 ? Math.floor((now * 100) / total) : 0 });
    };
    // Announced before the first byte: a slow registry shows as downloading, not as the step before.
    onBytes(0);
    const blob = registry.openBlob(ref, layer, { ...(signal ? { signal } : {}) });
    try {
      const stats = await applyLayer(blob, layer.mediaType, treeDir, { runner: deps.runner, onBytes, ...(signal ? { signal } : {}) });
      done = before + layer.size;
      log.info({ layer: layer.digest, entries: stats.entries, bytes: stats.bytesWritten }, 'layer applied');
    } catch (e) {
      blob.destroy();
      if (hasErrno(e, 'ENOSPC')) {
        throw new AgentError('IMAGE_TOO_LARGE', `the image ${formatReference(ref)} does not fit in the ${sizeMiB} MiB slot image (DEFAULT_IMAGE_SIZE): out of space while applying ${layer.digest}`, { cause: e });
      }
      throw withContext(`pulling ${formatReference(ref)}`, e);
    }
  }
}

/** The rootfs size from each layer's own trailer or header (see size.ts); null when any layer can't be estimated. */
export async function estimateRootfs(registry: RegistryClient, ref: ReturnType<typeof parseReference>, image: ResolvedImage): Promise<number | null> {
  let total = 0;
  for (const layer of image.manifest.layers) {
    const compression = layerCompression(layer.mediaType);
    if (compression === undefined) return null;
    const range = probeRange(compression, layer.size);
    if (range === undefined) {
      total += layer.size;
      continue;
    }
    const bytes = await registry.readBlobRange(ref, layer, range[0], range[1]).catch(() => undefined);
    const n = bytes === undefined ? undefined : compression === 'gzip' ? gzipIsize(bytes, layer.size) : zstdContentSize(bytes);
    if (n === undefined) return null;
    total += n;
  }
  return total;
}
