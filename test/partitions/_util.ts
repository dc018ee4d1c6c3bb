/** Shared helpers of the partitions tests (not a test file: ava only runs *.test.ts). */
import type { ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SpawnRunner } from '../../src/sys/runner.ts';
import { attachLoop, readMounts, unmount, type LoopDevice } from '../../src/partitions/index.ts';

export const runner: SpawnRunner = new SpawnRunner();

/** A fresh temp dir, removed at teardown after whatever was mounted inside it is unmounted (lazily if need be). */
export async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'partitions-test-'));
  t.teardown(async () => {
    const inside = (await readMounts()).filter((m) => m.mountPoint.startsWith(`${dir}/`)).reverse();
    for (const m of inside) await unmount(runner, m.mountPoint, { lazy: true }).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

/** A label nobody else uses (ext labels are at most 16 bytes). */
export function uniqueLabel(prefix = 'T'): string {
  return `${prefix}${randomBytes(5).toString('hex')}`.slice(0, 16);
}

/** Run a tool for test setup. */
export async function sh(argv: string[], stdin?: string): Promise<string> {
  const res = await runner.run({ argv, description: `test setup: ${argv[0]}`, ...(stdin !== undefined ? { stdin } : {}) });
  return res.stdout;
}

/** A sparse ext4 image of `sizeMiB` with `label`, attached to a loop device that is detached at teardown. */
export async function labelledLoop(t: ExecutionContext, dir: string, label: string, sizeMiB = 8): Promise<LoopDevice> {
  const file = path.join(dir, `${label || 'nolabel'}-${randomBytes(3).toString('hex')}.img`);
  await sh(['truncate', '-s', `${sizeMiB}M`, file]);
  await sh(['mkfs.ext4', '-q', '-F', ...(label ? ['-L', label] : []), file]);
  const loop = await attachLoop(runner, file);
  t.teardown(() => loop.close());
  return loop;
}
