/**
 * Small file helpers shared by every module. Durable whole-file replacement: a temp file in the same directory, written and fsynced, renamed over the target,
 * then the directory fsynced. Readers see the old content or the new, never a partial file; on failure the temp
 * file is removed and the old file is untouched. Errors are the raw Node errors (callers add their context).
 */
import { open, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { SpawnRunner } from './runner.ts';

/** fsync a directory (its entries); filesystems that cannot (EINVAL, ENOTSUP) are tolerated. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP') throw e;
  } finally {
    await fh.close();
  }
}

/**
 * syncfs(2) on the filesystem holding `p` (coreutils `sync -f`). An fsync makes a change durable for the kernel, which
 * replays the ext4 journal when it mounts; GRUB reads the disk without replaying it. Until the committed metadata
 * (directory entries, inodes, extent blocks) is written to its home blocks, which the kernel's flusher does some 30 s
 * later, GRUB sees the names and extents of before, or a mix of before and after: a power cut in that window left a
 * disk that GRUB could not boot from any entry (the VM power-cut test, cut at record-state). syncfs writes those
 * home blocks, so what GRUB reads is what the kernel reads.
 */
export async function syncFilesystem(p: string): Promise<void> {
  await new SpawnRunner().run({ argv: ['sync', '-f', '--', p], description: `writing the filesystem holding ${p} to its disk` });
}

/** Temp-file names only need to be unique among this process's writes in flight (pid + counter; 'wx' checks). */
let tmpSeq = 0;

export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Date.now().toString(36)}-${tmpSeq++}`);
  let pending = false;
  try {
    const fh = await open(tmp, 'wx', mode);
    pending = true;
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
    pending = false;
    await fsyncDir(dir);
  } catch (e) {
    if (pending) await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** Whether anything exists at `p` (following symlinks). */
export async function pathExists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

/**
 * A text file's content, or undefined when it does not exist (ENOENT, ENOTDIR): "a missing file means the default".
 * Any other error (EACCES, EISDIR, EIO) is thrown: an unreadable file is never taken for an absent one.
 */
export async function readOptionalText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw e;
  }
}
