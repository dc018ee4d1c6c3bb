/** Free space and durability helpers (no external tools). */
import { constants } from 'node:fs';
import { open, statfs } from 'node:fs/promises';

/** Bytes available to unprivileged users on the filesystem holding `path` (statfs bavail * bsize). */
export async function freeBytes(path: string): Promise<number> {
  const s = await statfs(path, { bigint: true });
  return Number(s.bavail * s.bsize);
}

/** fsync a file or a directory (a directory fsync makes renames and new entries in it durable). */
export async function syncFs(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
