/**
 * Writing the small files cloud-config names, with the effect of yip's os.WriteFile (created 0666 & ~umask when
 * missing, the same inode rewritten when present, links in the last place followed: callers resolve them inside the
 * root first) but without truncating to zero first: ext4 (auto_da_alloc) flushes a file truncated to zero when it is
 * closed, which made rewriting the files of a boot stage cost eight times more than writing them (bench/yip.ts). The
 * bytes are written over the old ones and the file is cut to their length, also when a write fails, so a failure
 * leaves what O_TRUNC would have: the part written.
 */
import { closeSync, constants, ftruncateSync, openSync, writeSync } from 'node:fs';

export function overwriteFileSync(file: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT, 0o666);
  let written = 0;
  try {
    while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
  } finally {
    try {
      ftruncateSync(fd, written);
    } finally {
      closeSync(fd);
    }
  }
}
