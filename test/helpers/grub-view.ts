/**
 * Test helper: what a power cut right now would leave for GRUB. GRUB reads the disk without replaying the ext4
 * journal (CosHost.grub: grub-fstest on the disk file); these checks say it finds the files it boots from where the
 * kernel finds them, with the kernel's bytes. (The agent's own files, a switch journal or a transition image, need
 * not be visible to GRUB yet.)
 */
import type { ExecutionContext } from 'ava';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import type { CosHost, GrubView } from './cos-host.ts';

const crcOf = async (file: string): Promise<string> => crc32(await readFile(file)).toString(16).padStart(8, '0');

/** The kernel's CRC of a file, or undefined where the kernel has no such file (not created yet at this step). */
const crcIfPresent = async (file: string): Promise<string | undefined> => {
  try {
    return await crcOf(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
};

/** GRUB's view of `file` equals the kernel's `kernel` CRC; where the kernel has no such file GRUB must not find one. */
async function sameAsKernel(t: ExecutionContext, view: GrubView, file: string, kernel: string | undefined, msg: string): Promise<void> {
  const grub = await view.crc(file);
  if (kernel === undefined) t.true('error' in grub, `${msg} (absent for both)`);
  else t.deepEqual(grub, { crc: kernel }, msg);
}

/**
 * COS_STATE (active.img, passive.img, boot_assessment, grub_oem_env, grubcustom, grub_boot_assessment) and COS_OEM
 * (grubenv), as GRUB reads them, equal the kernel's view through the host's mounts.
 */
export async function grubSeesKernel(t: ExecutionContext, host: CosHost, what: string): Promise<void> {
  const slots = (names: string[]): string[] => names.filter((n) => n === 'active.img' || n === 'passive.img').sort();
  const names = slots(await readdir(host.statePath('cOS')));
  const state = host.grub('COS_STATE');
  t.deepEqual(slots(await state.ls('/cOS/')), names, `${what}: GRUB finds in cOS/ the slot images the kernel finds`);
  for (const f of [...names.map((n) => `cOS/${n}`), 'boot_assessment', 'grub_oem_env', 'grubcustom', 'grub_boot_assessment']) {
    await sameAsKernel(t, state, `/${f}`, await crcIfPresent(host.statePath(f)), `${what}: GRUB reads in ${f} the bytes the kernel reads`);
  }
  await sameAsKernel(t, host.grub('COS_OEM'), '/grubenv', await crcIfPresent(path.join(host.root, 'oem/grubenv')), `${what}: GRUB reads in COS_OEM/grubenv the bytes the kernel reads`);
}

/** COS_RECOVERY's recovery image (`file`, under cOS/), as GRUB reads it, equals the kernel's (through host.peek). */
export async function grubSeesRecovery(t: ExecutionContext, host: CosHost, file: string, what: string): Promise<void> {
  // GRUB first: a peek that has to mount the partition may replay its journal.
  const grub = await host.grub('COS_RECOVERY').crc(`/cOS/${file}`);
  const kernel = await host.peek('COS_RECOVERY', (dir) => crcOf(path.join(dir, 'cOS', file)));
  t.deepEqual(grub, { crc: kernel }, `${what}: GRUB reads in COS_RECOVERY/cOS/${file} the bytes the kernel reads`);
}
