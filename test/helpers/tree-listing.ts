/** Test helper: a full, comparable listing of a directory tree (for comparing our unpack with umoci's). */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Every xattr under `root` (no symlink followed), per path relative to root. */
export async function xattrsUnder(root: string): Promise<Map<string, string[]>> {
  const { stdout } = await execFileP('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], { maxBuffer: 64 << 20 });
  const out = new Map<string, string[]>();
  let cur: string[] | null = null;
  for (const line of stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      const rel = path.relative(root, line.slice('# file: '.length)) || '.';
      cur = [];
      out.set(rel, cur);
    } else if (line !== '' && cur !== null) {
      cur.push(line);
    }
  }
  return out;
}

/**
 * A full listing of a tree: path, type, mode, uid, gid, size and sha256 of files, symlink target, device numbers,
 * mtime (seconds) of everything, xattrs, and which paths share an inode.
 */
export async function listing(root: string, opts: { dirSize?: boolean } = {}): Promise<string[]> {
  const lines: string[] = [];
  const inodes = new Map<bigint, string[]>();
  const walk = async (rel: string): Promise<void> => {
    const p = rel === '.' ? root : path.join(root, rel);
    const st = await lstat(p, { bigint: true });
    const mode = (Number(st.mode) & 0o7777).toString(8).padStart(4, '0');
    let line = `${rel} mode=${mode} uid=${st.uid} gid=${st.gid} mtime=${st.mtimeMs / 1000n}`;
    if (st.isFile()) line = `${line} file size=${st.size} sha256=${sha256(await readFile(p))}`;
    else if (st.isDirectory()) line = `${line} dir${opts.dirSize === true ? ` size=${st.size}` : ''}`;
    else if (st.isSymbolicLink()) line = `${line} symlink -> ${await readlink(p)}`;
    else if (st.isFIFO()) line = `${line} fifo`;
    else if (st.isCharacterDevice() || st.isBlockDevice()) {
      const rdev = Number(st.rdev);
      line = `${line} ${st.isCharacterDevice() ? 'char' : 'block'} ${(rdev >> 8) & 0xfff},${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}`;
    }
    lines.push(line);
    if (!st.isDirectory()) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), rel]);
    if (st.isDirectory()) for (const name of (await readdir(p)).sort()) await walk(rel === '.' ? name : `${rel}/${name}`);
  };
  await walk('.');
  for (const [rel, attrs] of [...(await xattrsUnder(root))].sort()) lines.push(`xattrs ${rel}: ${attrs.join(' ')}`);
  for (const group of inodes.values()) if (group.length > 1) lines.push(`same inode: ${group.sort().join(' ')}`);
  return lines;
}

