/**
 * Loop devices through `losetup`. close() detaches only while the device is still backed by the same inode it was
 * attached to, so a loop number freed by someone else and reused for another file is never touched.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, CommandError } from '../model/errors.ts';
import type { Runner } from '../sys/runner.ts';
import { onceCloser } from './once.ts';

export interface LoopDevice {
  /** "/dev/loopN" */
  readonly device: string;
  /** The backing file as given. */
  readonly file: string;
  /** `losetup -d`, idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface LoopStatus {
  device: string;
  /** Backing file as the kernel reports it now (follows renames; may end in " (deleted)"). */
  backingFile: string;
}

/** The backing file of /dev/loopN from sysfs, or undefined when the device is not attached. */
export async function loopBackingFile(device: string): Promise<string | undefined> {
  const name = path.basename(device);
  try {
    return (await readFile(`/sys/block/${name}/loop/backing_file`, 'utf8')).replace(/\n$/, '');
  } catch {
    return undefined;
  }
}

function loopNumber(device: string): number {
  return Number(/(\d+)$/.exec(device)?.[1] ?? 0);
}

/** Every attached loop device and its backing file (from sysfs), by loop number. */
export async function listLoopDevices(): Promise<LoopStatus[]> {
  const names = (await readdir('/sys/block')).filter((n) => /^loop\d+$/.test(n));
  const out: LoopStatus[] = [];
  for (const name of names) {
    const backingFile = await loopBackingFile(name);
    if (backingFile !== undefined) out.push({ device: `/dev/${name}`, backingFile });
  }
  return out.sort((a, b) => loopNumber(a.device) - loopNumber(b.device));
}

/** "inode dev" identity of a loop device's backing file, or undefined when not attached. */
export async function loopBackingIdentity(runner: Runner, device: string): Promise<string | undefined> {
  const res = await runner.run({
    argv: ['losetup', '--list', '--noheadings', '--output', 'BACK-INO,BACK-MAJ:MIN', device],
    description: `reading the backing file of ${device}`,
    okExitCodes: [1],
  });
  const id = res.stdout.trim().split(/\s+/).join(' ');
  return id === '' ? undefined : id;
}

/**
 * Wait until `device` no longer serves `backingFile` (sysfs). `losetup -d` on a device someone still has open (a
 * concurrent blkid probe, say) only sets autoclear, and the kernel detaches when the last opener closes it.
 * Returns false when it is still attached after `timeoutMs` (the detach then happens later by itself).
 */
export async function waitForDetach(device: string, backingFile: string | undefined, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = await loopBackingFile(device);
    if (now === undefined || now !== backingFile) return true;
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
}

function tailOf(err: unknown): string {
  return err instanceof CommandError ? err.stderrTail.trim() : err instanceof Error ? err.message : String(err);
}

/** `losetup --show -f [-r] [-P] file`. Failure -> AgentError('MOUNT_FAILED') naming the file. */
export async function attachLoop(
  runner: Runner,
  file: string,
  opts: { readOnly?: boolean; partscan?: boolean } = {},
): Promise<LoopDevice> {
  const argv = ['losetup', '--show', '-f'];
  if (opts.readOnly) argv.push('-r');
  if (opts.partscan) argv.push('-P');
  argv.push(file);
  let device: string;
  try {
    const res = await runner.run({ argv, description: `attaching ${file} to a loop device` });
    device = res.stdout.trim();
  } catch (err) {
    throw new AgentError('MOUNT_FAILED', `attaching ${file} to a loop device failed: ${tailOf(err)}`, { cause: err });
  }
  if (!/^\/dev\/loop\d+$/.test(device)) {
    throw new AgentError('MOUNT_FAILED', `losetup printed no loop device for ${file} (got "${device}")`);
  }
  const identity = await loopBackingIdentity(runner, device).catch(() => undefined);
  const close = onceCloser(async () => {
    const now = await loopBackingIdentity(runner, device);
    // Already detached, or detached and reused for another file: nothing of ours is left to detach.
    if (now === undefined || (identity !== undefined && now !== identity)) return;
    const pathBefore = await loopBackingFile(device);
    try {
      await runner.run({ argv: ['losetup', '-d', device], description: `detaching ${device} (${file})` });
      await waitForDetach(device, pathBefore);
    } catch (err) {
      const after = await loopBackingIdentity(runner, device).catch(() => now);
      if (after === undefined || after !== now) return;
      throw new AgentError('MOUNT_FAILED', `detaching ${device} (${file}) failed: ${tailOf(err)}`, { cause: err });
    }
  });
  return { device, file, close, [Symbol.asyncDispose]: close };
}

/** `losetup -d DEVICE`, waiting until the kernel has let go of the backing file. */
export async function detachLoop(runner: Runner, device: string): Promise<void> {
  const before = await loopBackingFile(device);
  await runner.run({ argv: ['losetup', '-d', device], description: `detaching ${device}` });
  await waitForDetach(device, before);
}
