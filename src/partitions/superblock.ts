/**
 * Identity of a filesystem image read from its superblock, without a process: ext2/3/4 UUID and label (superblock at
 * byte 1024: magic 0xEF53 at +56, s_uuid at +104, s_volume_name at +120), or for squashfs (no UUID) its mkfs time and
 * size (superblock at 0: magic "hsqs", mkfs_time at +8, bytes_used at +40). The UUID survives renames and hard links,
 * so it tells which image a slot file holds whatever it is called now.
 */
import { open } from 'node:fs/promises';

export interface ImageIdentity {
  fs: 'ext2' | 'squashfs' | null;
  /** `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (ext), `squashfs:<mkfs time>:<bytes>`; null when unknown. */
  id: string | null;
  /** Volume label (ext); null for squashfs or none. */
  label: string | null;
}

/** PURE: parse the first 2048 bytes of an image. */
export function parseSuperblock(buf: Buffer): ImageIdentity {
  if (buf.length >= 48 && buf.toString('latin1', 0, 4) === 'hsqs') {
    const mkfs = buf.readUInt32LE(8);
    const bytes = buf.readBigUInt64LE(40);
    return { fs: 'squashfs', id: `squashfs:${mkfs}:${bytes}`, label: null };
  }
  if (buf.length >= 1160 && buf.readUInt16LE(1024 + 56) === 0xef53) {
    const u = buf.subarray(1024 + 104, 1024 + 120).toString('hex');
    const id = `${u.slice(0, 8)}-${u.slice(8, 12)}-${u.slice(12, 16)}-${u.slice(16, 20)}-${u.slice(20)}`;
    const raw = buf.subarray(1024 + 120, 1024 + 136);
    const end = raw.indexOf(0);
    const label = raw.subarray(0, end < 0 ? raw.length : end).toString('utf8');
    return { fs: 'ext2', id: /^0+-0+-0+-0+-0+$/.test(id) ? null : id, label: label === '' ? null : label };
  }
  return { fs: null, id: null, label: null };
}

/** The identity of an image file (or block device); undefined when it does not exist. */
export async function readImageIdentity(file: string): Promise<ImageIdentity | undefined> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw e;
  }
  try {
    const buf = Buffer.alloc(2048);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return parseSuperblock(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}
