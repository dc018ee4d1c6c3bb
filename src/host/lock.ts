/**
 * One upgrade (or rollback) at a time per host: an exclusive lock file holding the owner's pid. A lock whose pid is
 * gone is stale and taken over; a live one is refused with BUSY naming the holder.
 */
import { link, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../model/errors.ts';

export interface Lock {
  readonly path: string;
  release(): Promise<void>;
}

/** The process exists (EPERM: it does, under another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let seq = 0;
/** A name beside `file` no other attempt uses, in this process (a counter) or another (the pid). */
function uniqueName(file: string, kind: string): string {
  return `${file}.${kind}.${process.pid}.${(seq++).toString(36)}`;
}

export async function acquireLock(file: string, what: string): Promise<Lock> {
  await mkdir(path.dirname(file), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    // The lock appears whole or not at all: written to a private name, then hard-linked into place (link fails with
    // EEXIST when another holder has it). A lock file is never seen empty or half-written.
    const tmp = uniqueName(file, 'new');
    await writeFile(tmp, `${process.pid}\n${what}\n`, { mode: 0o644 });
    try {
      await link(tmp, file);
      await rm(tmp, { force: true });
      let released = false;
      return {
        path: file,
        release: async () => {
          if (released) return;
          released = true;
          await rm(file, { force: true });
        },
      };
    } catch (e) {
      await rm(tmp, { force: true });
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const seen = await stat(file).catch(() => undefined);
      const [pidText, holderWhat] = (await readFile(file, 'utf8').catch(() => '')).split('\n');
      const pid = Number.parseInt(pidText ?? '', 10);
      if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
        throw new AgentError('BUSY', `another operation is running (${holderWhat || 'unknown'}, pid ${pid}); lock ${file}`);
      }
      // No pid in it: written by something else, or torn by a crash of an older version. Taken over only once it is
      // clearly not being written (older than a few seconds); until then it counts as held.
      if (!(Number.isInteger(pid) && pid > 0)) {
        const age = Date.now() - (seen?.mtimeMs ?? 0);
        if (age < 5000) throw new AgentError('BUSY', `another operation is taking the lock ${file}`);
      }
      if (seen !== undefined) await takeOver(file, seen.ino);
    }
  }
  throw new AgentError('BUSY', `could not take the lock ${file}`);
}

/**
 * Remove the stale lock `file` whose inode was `staleIno`, atomically: it is renamed aside, and only when what was
 * renamed is that stale file is it deleted. Two runs that find the same stale lock cannot both take it: the second
 * rename finds nothing (ENOENT), and both then race on link(), which only one wins. A fresh lock renamed aside by
 * mistake (another run took over between our look and our rename) is linked back and this run is BUSY.
 */
async function takeOver(file: string, staleIno: number): Promise<void> {
  const aside = uniqueName(file, 'stale');
  try {
    await rename(file, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  const moved = await stat(aside).catch(() => undefined);
  if (moved === undefined || moved.ino === staleIno) {
    await rm(aside, { force: true });
    return;
  }
  await link(aside, file).catch(() => undefined);
  await rm(aside, { force: true });
  throw new AgentError('BUSY', `another operation took over the stale lock ${file}`);
}

