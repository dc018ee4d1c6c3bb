/** Free space and durability helpers. */
import { constants } from 'node:fs';
import { open, statfs } from 'node:fs/promises';
import { syncFilesystem } from '../sys/files.ts';

/** Bytes available to unprivileged users on the filesystem holding `path` (statfs bavail * bsize). */
export async function freeBytes(path: string): Promise<number> {
  const s = await statfs(path, { bigint: true });
  return Number(s.bavail * s.bsize);
}

/**
 * fsync a file or a directory (a directory fsync makes renames and new entries in it durable), then syncfs its
 * filesystem, so that GRUB, which reads the disk without replaying the ext4 journal, sees the same files and content
 * as the kernel (sys/files.ts syncFilesystem).
 */
export async function syncFs(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await syncFilesystem(path);
}
