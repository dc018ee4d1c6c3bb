/**
 * The image's layers from the registry: the rootfs size estimated before pulling (each layer's gzip trailer or zstd
 * header, see size.ts), then every layer streamed, digest-checked and applied straight into the new image's tree.
 */
import { AgentError, withContext } from '../../model/errors.ts';
import type { AgentDeps, Progress } from '../../host/deps.ts';
import type { RegistryClient } from '../../oci/registry.ts';
import { formatReference, type parseReference } from '../../oci/reference.ts';
import type { ResolvedImage } from '../../oci/types.ts';
import { applyLayer, sniffCompression } from '../../oci/unpack.ts';
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
      deps.testHooks?.onPullBytes?.(now, total);
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
      // Named by the layer, unless the error already names it (the blob stream's own errors do).
      const where = e instanceof Error && e.message.includes(layer.digest) ? '' : `, layer ${i + 1}/${layers.length} ${layer.digest}`;
      throw withContext(`pulling ${formatReference(ref)}${where}`, e);
    }
  }
}

/** Bytes read from the start of each layer: its magic, and a zstd frame header in full (at most 18 bytes). */
const HEAD_BYTES = 18;

/** What the first bytes of a blob are, for messages: hex and what they look like. */
function describeHead(head: Buffer): string {
  if (head.length === 0) return 'nothing (the blob is empty)';
  const hex = [...head.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  const found = sniffCompression(head);
  const looks = found === 'gzip' ? 'gzip' : found === 'zstd' ? 'zstd' : 'neither gzip nor zstd';
  return `${hex}${head.length > 8 ? ' …' : ''} (${looks})`;
}

/**
 * The rootfs size from each layer's own trailer or header (see size.ts); null when any layer can't be estimated.
 * What is read is checked before it is believed, so a lying manifest is refused for what it is, never as a rootfs too
 * large for the slot:
 * - the blob's real size (the total of the Range answer) must be the manifest's, else DIGEST_MISMATCH naming the
 *   layer and both sizes (a trailer read at the declared size minus 4 would be bytes from elsewhere);
 * - its first bytes must be the magic of its media type (gzip 1f 8b, zstd 28 b5 2f fd or a skippable frame, neither
 *   for a plain tar), else UNPACK_FAILED naming the layer, its media type and what the bytes are (applyLayer would
 *   refuse it the same way, after the slot is prepared);
 * - a size its format cannot reach for the compressed size is no estimate (size.ts).
 * A registry that fails or does not state the blob's size gives no estimate: the pull says what is wrong.
 */
export async function estimateRootfs(registry: RegistryClient, ref: ReturnType<typeof parseReference>, image: ResolvedImage): Promise<number | null> {
  const layers = image.manifest.layers;
  let total: number | null = 0;
  for (const [i, layer] of layers.entries()) {
    const compression = layerCompression(layer.mediaType);
    if (compression === undefined) return null;
    const what = `layer ${i + 1}/${layers.length} ${layer.digest} of ${formatReference(ref)}`;
    const checkSize = (real: number | undefined): void => {
      if (real !== undefined && real !== layer.size) {
        throw new AgentError('DIGEST_MISMATCH', `${what}: the blob is ${real} bytes on the registry, but the manifest says ${layer.size}`);
      }
    };
    const head = await registry.probeBlob(ref, layer, 0, HEAD_BYTES).catch(() => undefined);
    if (head === undefined) return null;
    checkSize(head.total);
    if (head.bytes !== undefined && sniffCompression(head.bytes) !== compression) {
      const expected = compression === 'none' ? 'an uncompressed tar' : compression;
      throw new AgentError('UNPACK_FAILED', `${what}: media type ${JSON.stringify(layer.mediaType)} says ${expected}, but the blob starts with ${describeHead(head.bytes)}`);
    }
    // Without the real size, a trailer read at the declared size minus 4 may be anything: no estimate.
    if (head.total === undefined || head.bytes === undefined) {
      total = null;
      continue;
    }
    let n: number | undefined;
    if (compression === 'none') {
      n = layer.size;
    } else if (compression === 'zstd') {
      n = zstdContentSize(head.bytes, layer.size);
    } else {
      const range = probeRange(compression, layer.size) as [number, number];
      const tail = await registry.probeBlob(ref, layer, range[0], range[1]).catch(() => undefined);
      if (tail === undefined) return null;
      checkSize(tail.total);
      n = tail.bytes?.length === 4 ? gzipIsize(tail.bytes, layer.size) : undefined;
    }
    if (n === undefined) total = null;
    else if (total !== null) total += n;
  }
  return total;
}
