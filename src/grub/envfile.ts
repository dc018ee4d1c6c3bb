/**
 * GRUB environment files on disk (`/oem/grubenv`, `/grub_oem_env`, `/boot_assessment`, ...).
 *
 * An existing file is rewritten in place: opened r+, the whole block written at offset 0 in one positional write,
 * then fsync. The file keeps its inode, size and disk blocks, which GRUB's `save_env` relies on (it writes the
 * sectors found by blocklist), and it is never missing or short. A new file is written to a temp file in the same
 * directory, fsynced, renamed into place, and the directory fsynced. A corrupt file is never rewritten.
 */
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { AgentError, withContext } from '../model/errors.ts';
import { writeFileAtomic } from '../sys/files.ts';
import { applyGrubEnvChanges, parseGrubEnv, parseGrubEnvBlock, serializeGrubEnv } from './grubenv.ts';

function errno(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

function ioError(file: string, doing: string, e: unknown): AgentError {
  const message = e instanceof Error ? e.message : String(e);
  return new AgentError('STATE_INVALID', `${file}: ${doing}: ${message}`, { cause: e });
}

function missing(file: string, e: unknown): AgentError {
  return new AgentError('GRUBENV_CORRUPT', `${file}: missing (no GRUB environment file there)`, { cause: e });
}

/**
 * Read and parse a file. A missing file is an empty Map when `opts.missingOk`, else AgentError('GRUBENV_CORRUPT')
 * naming the path. A malformed block is AgentError('GRUBENV_CORRUPT'); other I/O errors are 'STATE_INVALID'.
 */
export async function readGrubEnvFile(file: string, opts: { missingOk?: boolean } = {}): Promise<Map<string, string>> {
  let block: Buffer;
  try {
    block = await readFile(file);
  } catch (e) {
    if (errno(e) === 'ENOENT') {
      if (opts.missingOk === true) return new Map();
      throw missing(file, e);
    }
    throw ioError(file, 'reading the GRUB environment file', e);
  }
  return parseGrubEnv(block, file);
}

async function readAll(fh: FileHandle, size: number): Promise<Buffer> {
  const buf = Buffer.alloc(size);
  let got = 0;
  while (got < size) {
    const { bytesRead } = await fh.read(buf, got, size - got, got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

async function writeAll(fh: FileHandle, data: Buffer): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, done);
    if (bytesWritten === 0) throw new Error(`short write at offset ${done}`);
    done += bytesWritten;
  }
}

async function createFile(file: string, block: Buffer): Promise<void> {
  try {
    await writeFileAtomic(file, block);
  } catch (e) {
    throw ioError(file, 'creating the GRUB environment file', e);
  }
}

/**
 * Apply changes (as applyGrubEnvChanges: set keeps a key's position, new keys are appended, null unsets) to the
 * env file at `path` and write it durably, keeping the block's size and comment lines. Returns the new env.
 * A missing file is created (1024 bytes) only with `opts.create`, else AgentError('GRUBENV_CORRUPT').
 * A corrupt file throws AgentError('GRUBENV_CORRUPT') and is left untouched; variables that do not fit throw
 * AgentError('GRUBENV_OVERFLOW') and nothing is written.
 */
export async function updateGrubEnvFile(
  file: string,
  changes: Readonly<Record<string, string | null>>,
  opts: { create?: boolean } = {},
): Promise<Map<string, string>> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r+');
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw ioError(file, 'opening the GRUB environment file', e);
    if (opts.create !== true) throw missing(file, e);
    let next: Map<string, string>;
    let block: Buffer;
    try {
      next = applyGrubEnvChanges(new Map(), changes);
      block = serializeGrubEnv(next);
    } catch (err) {
      throw withContext(file, err);
    }
    await createFile(file, block);
    return next;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new AgentError('STATE_INVALID', `${file}: not a regular file`);
    const current = parseGrubEnvBlock(await readAll(fh, st.size), file);
    let next: Map<string, string>;
    let block: Buffer;
    try {
      next = applyGrubEnvChanges(current.vars, changes);
      block = serializeGrubEnv(next, current.size, current.preamble);
    } catch (err) {
      throw withContext(file, err);
    }
    try {
      await writeAll(fh, block);
      await fh.sync();
    } catch (e) {
      throw ioError(file, 'writing the GRUB environment block in place', e);
    }
    return next;
  } finally {
    await fh.close();
  }
}
