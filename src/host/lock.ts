/**
 * One upgrade (or rollback) at a time per host: an exclusive lock file holding the owner's pid. A lock whose pid is
 * gone is stale and taken over; a live one is refused with BUSY naming the holder.
 */
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../model/errors.ts';

export interface Lock {
  readonly path: string;
  release(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function acquireLock(file: string, what: string): Promise<Lock> {
  await mkdir(path.dirname(file), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx', 0o644);
      await fh.writeFile(`${process.pid}\n${what}\n`);
      await fh.close();
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
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const [pidText, holderWhat] = (await readFile(file, 'utf8').catch(() => '')).split('\n');
      const pid = Number.parseInt(pidText ?? '', 10);
      if (Number.isInteger(pid) && pid > 0 && alive(pid)) {
        throw new AgentError('BUSY', `another operation is running (${holderWhat || 'unknown'}, pid ${pid}); lock ${file}`);
      }
      await rm(file, { force: true });
    }
  }
  throw new AgentError('BUSY', `could not take the lock ${file}`);
}
