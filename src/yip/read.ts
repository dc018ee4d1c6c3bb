/**
 * Reading the text files cloud-config acts on (cloud-config files, passwd, os-release, ...) when they may come from
 * an image the agent is upgrading to: only regular files, opened without blocking (a FIFO never hangs the stage), and
 * at most `max` bytes (a link to /dev/zero or a huge file never fills memory). procfs files report size 0, so the
 * bytes are counted as they are read, not taken from fstat.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';

export const MAX_TEXT_BYTES: number = 4 * 1024 * 1024;

/** The text of the regular file `file`; rejects (ENOENT as readFile does) on anything else or over `max` bytes. */
export function readText(file: string, max: number = MAX_TEXT_BYTES): Promise<string> {
  try {
    return Promise.resolve(readTextSync(file, max));
  } catch (e) {
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
}

export function readTextSync(file: string, max: number = MAX_TEXT_BYTES): string {
  return readBytesSync(file, max).toString('utf8');
}

/**
 * The bytes of the regular file `file`, at most `max` (over it: an error naming `name`, default the path); with
 * `noFollow`, a symbolic link in the last place is not followed (ELOOP). Errors of open (ENOENT, ...) are thrown as
 * they are.
 */
export function readBytesSync(file: string, max: number, opts: { noFollow?: boolean; name?: string } = {}): Buffer {
  const name = opts.name ?? file;
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | (opts.noFollow === true ? constants.O_NOFOLLOW : 0));
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${name} is not a regular file`);
    // Sized from fstat (one read for the usual small file, no zero-filled 64 KiB per read), grown for files whose
    // size lies (procfs says 0) or that grow while read; never past max + 1 bytes.
    let buf = Buffer.allocUnsafe(Math.min(max, st.size > 0 ? st.size : 4096) + 1);
    let total = 0;
    for (;;) {
      if (total === buf.length) {
        const grown = Buffer.allocUnsafe(Math.min(max + 1, buf.length * 2));
        buf.copy(grown, 0, 0, total);
        buf = grown;
      }
      const n = readSync(fd, buf, total, buf.length - total, null);
      if (n === 0) break;
      total += n;
      if (total > max) throw new Error(`${name} is over ${max} bytes`);
    }
    return buf.subarray(0, total);
  } finally {
    closeSync(fd);
  }
}
