/**
 * How big the slot image must be (PURE, but for imageFileBytes). The rootfs size is estimated before pulling from
 * each layer's own metadata: a gzip member's ISIZE trailer (uncompressed size mod 2^32), a zstd frame's
 * Frame_Content_Size, a plain tar's size. The base is DEFAULT_IMAGE_SIZE / upgrade.system.size when set, else the
 * size of the image file being replaced (else elemental's 3072 MiB), grown when the estimate says the rootfs would
 * not fit.
 *
 * That metadata is not digest-checked when it is read (a part of a blob cannot be), so it is only believed when it
 * is possible for the compressed size (see `pull.ts` for the checks of the blob's real size and magic): a size the
 * format cannot reach is no estimate, never a reason to refuse the image.
 */
import { stat } from 'node:fs/promises';
import { DEFAULT_IMAGE_SIZE_MIB } from '../../model/config.ts';

const MiB = 1024 * 1024;
const U32 = 2 ** 32;

/** ext2 overhead over the tar stream: block rounding of small files, inode tables, directories, reserved blocks. */
export const FS_OVERHEAD_RATIO = 1.2;
export const FS_OVERHEAD_FIXED_MiB = 32;

/**
 * Deflate's maximum compression ratio (zlib's "technical details"): a length/distance pair codes at most 258 bytes
 * in no less than 2 bits, so a deflate stream never inflates to more than 1032 times its size.
 */
export const GZIP_MAX_RATIO = 1032;

/**
 * Zstandard's maximum compression ratio: a block decompresses to at most 128 KiB (Block_Maximum_Size, RFC 8878
 * 3.1.1.2.4), and the smallest block (an RLE block) is 4 bytes: 32768 times.
 */
export const ZSTD_MAX_RATIO = 32_768;

/**
 * Uncompressed size from a gzip member's last 4 bytes (ISIZE, the size mod 2^32), or undefined (no estimate) when
 * gzip cannot have written it for this compressed size. Deflate expands incompressible data by a bounded amount
 * (zlib's deflateBound, plus room for a gzip header with a name), so an ISIZE below the compressed size minus that
 * bound is not the size of one member:
 * - for a layer of 4 GiB or more, the size wrapped past 4 GiB: add 2^32 until it is plausible;
 * - for a smaller one it is ambiguous: a rootfs over 4 GiB that compresses well, or a gzip of several members (as
 *   eStargz layers are, ending with an empty one) whose last trailer tells only its own size, or a lie. Undefined:
 *   believing a wrap would size the slot past 4 GiB for a layer of a few MiB.
 * A size over GZIP_MAX_RATIO times the compressed size (e.g. an ISIZE of 4 GiB on a layer of a few KiB) is no size
 * gzip can reach: undefined.
 */
export function gzipIsize(trailer: Buffer, compressedSize: number): number | undefined {
  if (trailer.length < 4) return undefined;
  let size = trailer.readUInt32LE(trailer.length - 4);
  // zlib's deflateBound(): n + (n >> 12) + (n >> 14) + (n >> 25) + 13, plus room for a gzip header with a name.
  const n = compressedSize;
  const minPlausible = n - (Math.floor(n / 4096) + Math.floor(n / 16_384) + Math.floor(n / 33_554_432) + 13) - 1024;
  if (size < minPlausible) {
    if (n < U32) return undefined;
    while (size < minPlausible) size += U32;
  }
  if (size > GZIP_MAX_RATIO * n) return undefined;
  return size;
}

/**
 * Frame_Content_Size of the first zstd frame (RFC 8878 3.1.1.1), when the header declares it. With
 * `compressedSize` (the whole blob), a size the blob cannot hold is undefined: over ZSTD_MAX_RATIO times it, or too
 * small for the frame to span the blob (a raw block costs 3 bytes per block of at least 1 KiB, the smallest window;
 * the frame header is at most 18 bytes and the checksum 4): a blob of several frames, whose first one tells only its
 * own size, has no estimate.
 */
export function zstdContentSize(head: Buffer, compressedSize?: number): number | undefined {
  if (head.length < 6 || head.readUInt32LE(0) !== 0xfd2fb528) return undefined;
  const fhd = head[4] as number;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const didFlag = fhd & 3;
  const fcsBytes = fcsFlag === 0 ? singleSegment : [1, 2, 4, 8][fcsFlag] as number;
  if (fcsBytes === 0) return undefined;
  const off = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][didFlag]!;
  if (head.length < off + fcsBytes) return undefined;
  let size: number;
  if (fcsBytes === 1) size = head[off] as number;
  else if (fcsBytes === 2) size = head.readUInt16LE(off) + 256;
  else if (fcsBytes === 4) size = head.readUInt32LE(off);
  else size = Number(head.readBigUInt64LE(off));
  if (compressedSize !== undefined) {
    if (size > ZSTD_MAX_RATIO * compressedSize) return undefined;
    const largestFrame = size + 3 * Math.max(1, Math.ceil(size / 1024)) + 18 + 4;
    if (compressedSize > largestFrame) return undefined;
  }
  return size;
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
