/**
 * Filesystem tools on image files and devices: mkfs.ext2, tune2fs, e2fsck, blkid label probing, fallocate, mksquashfs.
 */
import { open, unlink } from 'node:fs/promises';
import path from 'node:path';
import { AgentError, CommandError } from '../model/errors.ts';
import { pathExists } from '../sys/files.ts';
import type { Runner } from '../sys/runner.ts';
import { freeBytes } from './space.ts';

/** ext2/3/4 labels are at most 16 bytes; mke2fs would silently truncate a longer one. */
const EXT_LABEL_MAX = 16;

function checkExtLabel(label: string): void {
  if (label === '' || Buffer.byteLength(label, 'utf8') > EXT_LABEL_MAX) {
    throw new AgentError('CONFIG_INVALID', `filesystem label "${label}" must be 1 to ${EXT_LABEL_MAX} bytes long`);
  }
}

const NO_SPACE_RE = /no space left on device|ENOSPC/i;

function isNoSpace(err: unknown): boolean {
  return err instanceof CommandError && NO_SPACE_RE.test(err.stderrTail);
}


/**
 * `mkfs.ext2 -F -q -E nodiscard -L <label> [-d fromDir] <file> [<sizeMiB>M]`. The file must exist (e.g. preallocated) unless
 * `sizeMiB` is given, in which case mke2fs creates or sizes it (sparse). `fromDir` populates the new filesystem.
 */
export async function mkfsExt2(
  runner: Runner,
  file: string,
  opts: { label: string; sizeMiB?: number; fromDir?: string },
): Promise<void> {
  checkExtLabel(opts.label);
  if (opts.sizeMiB === undefined && !(await pathExists(file))) {
    throw new AgentError('STAGE_FAILED', `cannot format ${file}: it does not exist and no size was given`);
  }
  if (opts.sizeMiB !== undefined && !(Number.isInteger(opts.sizeMiB) && opts.sizeMiB > 0)) {
    throw new AgentError('STAGE_FAILED', `cannot format ${file}: size ${opts.sizeMiB} MiB is not a positive integer`);
  }
  // nodiscard: on a file, mke2fs's default discard punches holes through it, which would undo a preallocation
  // (fallocate) and turn ENOSPC back into a late writeback failure (cos-layout.md 8 #1).
  const argv = ['mkfs.ext2', '-F', '-q', '-E', 'nodiscard', '-L', opts.label];
  if (opts.fromDir !== undefined) argv.push('-d', opts.fromDir);
  argv.push(file);
  if (opts.sizeMiB !== undefined) argv.push(`${opts.sizeMiB}M`);
  try {
    await runner.run({ argv, description: `formatting ${file} as ext2 (${opts.label})` });
  } catch (err) {
    if (isNoSpace(err)) throw new AgentError('NO_SPACE', `formatting ${file}: no space left on its filesystem`, { cause: err });
    throw err;
  }
}

/** `tune2fs -L <label> <file>`. */
export async function setExt2Label(runner: Runner, file: string, label: string): Promise<void> {
  checkExtLabel(label);
  await runner.run({ argv: ['tune2fs', '-L', label, file], description: `labelling ${file} ${label}` });
}

/** The filesystem label of a file or device (`blkid -p -s LABEL -o value`), undefined when it has none. */
export async function probeLabel(runner: Runner, file: string): Promise<string | undefined> {
  const res = await runner.run({
    argv: ['blkid', '-p', '-s', 'LABEL', '-o', 'value', file],
    description: `reading the filesystem label of ${file}`,
    okExitCodes: [2],
  });
  if (res.exitCode === 2) return undefined;
  const value = res.stdout.replace(/\n$/, '');
  return value === '' ? undefined : value;
}

/**
 * Read a small file from inside an unmounted ext2/3/4 image (`debugfs -R 'cat PATH'`), without mounting it.
 * Returns undefined when the file is missing or empty (debugfs reports errors on stderr and still exits 0).
 */
export async function readExtFile(runner: Runner, image: string, file: string, opts: { maxBytes?: number } = {}): Promise<string | undefined> {
  if (!file.startsWith('/') || /[\s"']/.test(file)) throw new Error(`readExtFile: unsupported path ${file}`);
  // Only a regular file of bounded size is read (an image may hold a FIFO, a device or a huge file there): debugfs
  // `stat` first, which prints the inode's type and size without reading the content.
  const maxBytes = opts.maxBytes ?? 64 * 1024;
  const st = await runner.run({ argv: ['debugfs', '-R', `stat ${file}`, image], description: `looking at ${file} in ${image}` });
  const type = /Type: (\S+)/.exec(st.stdout)?.[1];
  const size = Number(/\bSize: (\d+)/.exec(st.stdout)?.[1] ?? Number.NaN);
  if (type !== 'regular' || !Number.isFinite(size) || size > maxBytes) return undefined;
  const res = await runner.run({ argv: ['debugfs', '-R', `cat ${file}`, image], description: `reading ${file} from ${image}` });
  return res.stdout === '' ? undefined : res.stdout;
}

/**
 * Read a small regular file from inside a squashfs image without mounting it: `unsquashfs -lls` for its type and size
 * (a symlink, a device or a huge file is not read), then `unsquashfs -cat`. Undefined when it is missing, not a
 * regular file, too big or empty.
 */
export async function readSquashfsFile(runner: Runner, image: string, file: string, opts: { maxBytes?: number } = {}): Promise<string | undefined> {
  if (!file.startsWith('/') || /[\s"'*?[\]\\]/.test(file)) throw new Error(`readSquashfsFile: unsupported path ${file}`);
  const rel = file.replace(/^\/+/, '');
  const maxBytes = opts.maxBytes ?? 64 * 1024;
  const ls = await runner.run({ argv: ['unsquashfs', '-lls', image, rel], description: `looking at ${file} in ${image}` });
  // -rw-r--r-- root/root   267 2024-01-01 00:00 squashfs-root/usr/lib/os-release
  const line = ls.stdout.split('\n').find((l) => l.endsWith(` squashfs-root/${rel}`));
  const fields = line?.trim().split(/\s+/) ?? [];
  const size = Number(fields[2] ?? Number.NaN);
  if (line === undefined || !line.startsWith('-') || !Number.isFinite(size) || size > maxBytes) return undefined;
  const res = await runner.run({ argv: ['unsquashfs', '-cat', image, rel], description: `reading ${file} from ${image}` });
  return res.stdout === '' ? undefined : res.stdout;
}

/** e2fsck exit codes 1..255 are reported as FSCK_FAILED with e2fsck's own output rather than as COMMAND_FAILED. */
const ALL_NONZERO: readonly number[] = Array.from({ length: 255 }, (_v, i) => i + 1);

/** `e2fsck -f -n <file>` (check only, never repair). Any problem -> AgentError('FSCK_FAILED') with the output tail. */
export async function fsckExt2(runner: Runner, file: string): Promise<void> {
  const res = await runner.run({
    argv: ['e2fsck', '-f', '-n', file],
    description: `checking the filesystem in ${file}`,
    okExitCodes: ALL_NONZERO,
  });
  if (res.exitCode === 0) return;
  const output = `${res.stdout}\n${res.stderr}`
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  throw new AgentError('FSCK_FAILED', `e2fsck found problems in ${file} (exit ${res.exitCode}): ${output.slice(-6).join(' | ')}`);
}

/**
 * `fallocate -l <bytes> <file>`: really allocate the blocks (not sparse), so a full filesystem fails here and not
 * later in the kernel's writeback. No space -> AgentError('NO_SPACE') naming the file, the size and the free space;
 * a file this call created is removed again.
 */
export async function preallocate(runner: Runner, file: string, bytes: number): Promise<void> {
  if (!(Number.isSafeInteger(bytes) && bytes > 0)) {
    throw new AgentError('STAGE_FAILED', `cannot preallocate ${file}: ${bytes} is not a positive byte count`);
  }
  const existed = await pathExists(file);
  try {
    await runner.run({ argv: ['fallocate', '-l', String(bytes), file], description: `preallocating ${bytes} bytes for ${file}` });
  } catch (err) {
    if (!existed) await unlink(file).catch(() => {});
    if (isNoSpace(err)) {
      const free = await freeBytes(path.dirname(path.resolve(file))).catch(() => undefined);
      const freeText = free === undefined ? '' : ` (${free} bytes free)`;
      throw new AgentError('NO_SPACE', `not enough space for ${file}: ${bytes} bytes needed${freeText}`, { cause: err });
    }
    throw err;
  }
}

/** Default squashfs compression, as elemental: xz with the BCJ filter of the machine. */
export function defaultSquashCompression(arch: string = process.arch): string[] {
  const bcj = arch === 'x64' || arch === 'ia32' ? 'x86' : arch === 'arm64' || arch === 'arm' ? 'arm' : undefined;
  return bcj === undefined ? ['-comp', 'xz'] : ['-comp', 'xz', '-Xbcj', bcj];
}

/**
 * `mksquashfs <dir> <out> -b 1024k <compression> -noappend -no-progress`. `compression` replaces the default
 * (`-comp xz -Xbcj x86|arm`), like elemental's `-x`. No space -> AgentError('NO_SPACE').
 */
export async function mksquashfs(
  runner: Runner,
  dir: string,
  out: string,
  opts: { compression?: readonly string[] } = {},
): Promise<void> {
  const argv = ['mksquashfs', dir, out, '-b', '1024k', ...(opts.compression ?? defaultSquashCompression()), '-noappend', '-no-progress'];
  try {
    await runner.run({ argv, description: `building squashfs ${out} from ${dir}` });
  } catch (err) {
    if (isNoSpace(err)) throw new AgentError('NO_SPACE', `building ${out}: no space left on its filesystem`, { cause: err });
    throw err;
  }
}

/** True when `file` starts with the squashfs magic "hsqs". False for a missing or shorter file. */
export async function isSquashfs(file: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  try {
    const buf = Buffer.alloc(4);
    const { bytesRead } = await fh.read(buf, 0, 4, 0);
    return bytesRead === 4 && buf.toString('latin1') === 'hsqs';
  } finally {
    await fh.close();
  }
}
