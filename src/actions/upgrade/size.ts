/**
 * How big the slot image must be (PURE, but for imageFileBytes). The rootfs size is estimated before pulling from
 * each layer's own metadata: a gzip member's ISIZE trailer (uncompressed size mod 2^32), a zstd frame's
 * Frame_Content_Size, a plain tar's size. The base is DEFAULT_IMAGE_SIZE / upgrade.system.size when set, else the
 * size of the image file being replaced (else elemental's 3072 MiB), grown when the estimate says the rootfs would
 * not fit.
 */
import { stat } from 'node:fs/promises';
import { DEFAULT_IMAGE_SIZE_MIB } from '../../model/config.ts';

const MiB = 1024 * 1024;
const U32 = 2 ** 32;

/** ext2 overhead over the tar stream: block rounding of small files, inode tables, directories, reserved blocks. */
export const FS_OVERHEAD_RATIO = 1.2;
export const FS_OVERHEAD_FIXED_MiB = 32;

/**
 * Uncompressed size from a gzip member's last 4 bytes (ISIZE, the size mod 2^32). Deflate expands incompressible
 * data by a bounded amount (zlib's deflateBound), so an ISIZE below the compressed size minus that bound means the
 * size wrapped past 4 GiB: add 2^32 until it is plausible.
 */
export function gzipIsize(trailer: Buffer, compressedSize: number): number | undefined {
  if (trailer.length < 4) return undefined;
  let size = trailer.readUInt32LE(trailer.length - 4);
  // zlib's deflateBound(): n + (n >> 12) + (n >> 14) + (n >> 25) + 13, plus room for a gzip header with a name.
  const n = compressedSize;
  const minPlausible = n - (Math.floor(n / 4096) + Math.floor(n / 16_384) + Math.floor(n / 33_554_432) + 13) - 1024;
  while (size < minPlausible) size += U32;
  return size;
}

/** Frame_Content_Size of the first zstd frame (RFC 8878 3.1.1.1), when the header declares it. */
export function zstdContentSize(head: Buffer): number | undefined {
  if (head.length < 6 || head.readUInt32LE(0) !== 0xfd2fb528) return undefined;
  const fhd = head[4] as number;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const didFlag = fhd & 3;
  const fcsBytes = fcsFlag === 0 ? singleSegment : [1, 2, 4, 8][fcsFlag] as number;
  if (fcsBytes === 0) return undefined;
  const off = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][didFlag]!;
  if (head.length < off + fcsBytes) return undefined;
  if (fcsBytes === 1) return head[off] as number;
  if (fcsBytes === 2) return head.readUInt16LE(off) + 256;
  if (fcsBytes === 4) return head.readUInt32LE(off);
  return Number(head.readBigUInt64LE(off));
}

/** Bytes to fetch to estimate a layer: [start, length] relative to the blob. */
export function probeRange(compression: 'gzip' | 'zstd' | 'none', size: number): [number, number] | undefined {
  if (compression === 'gzip') return [Math.max(0, size - 4), 4];
  if (compression === 'zstd') return [0, 18];
  return undefined;
}

export interface SlotSize {
  /** Size of the slot image to create, MiB. */
  sizeMiB: number;
  /** Estimated rootfs bytes, or null when a layer could not be estimated. */
  estimateBytes: number | null;
  /** Whether the configured size was grown. */
  grown: boolean;
}

/**
 * The base size of a new slot image, before growing it to fit the rootfs: the configured size when set; else the
 * size of the image file it replaces, in whole MiB (a host installed with small images stays small, as with
 * elemental, whose images all have one size); else, with no image to replace, elemental's ImgSize (3072 MiB).
 */
export function slotBaseMiB(configuredMiB: number | null | undefined, replacedImageBytes: number | null): number {
  if (configuredMiB !== null && configuredMiB !== undefined) return configuredMiB;
  if (replacedImageBytes !== null && replacedImageBytes > 0) return Math.ceil(replacedImageBytes / MiB);
  return DEFAULT_IMAGE_SIZE_MIB;
}

/** The size of an image file in bytes (its apparent size: a sparse image counts in full); null when there is none. */
export async function imageFileBytes(file: string): Promise<number | null> {
  try {
    return (await stat(file)).size;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw e;
  }
}

/** The smallest slot image the estimated rootfs fits in, with ext2 overhead (null when it cannot be estimated). */
export function rootfsMiB(estimateBytes: number | null): number | null {
  return estimateBytes === null ? null : Math.ceil((estimateBytes * FS_OVERHEAD_RATIO) / MiB) + FS_OVERHEAD_FIXED_MiB;
}

/** The base size, grown to fit the estimated rootfs with ext2 overhead. */
export function slotSize(configuredMiB: number, estimateBytes: number | null): SlotSize {
  const needed = rootfsMiB(estimateBytes);
  if (needed === null) return { sizeMiB: configuredMiB, estimateBytes, grown: false };
  return needed > configuredMiB ? { sizeMiB: needed, estimateBytes, grown: true } : { sizeMiB: configuredMiB, estimateBytes, grown: false };
}
