/**
 * VM-test helper: the GRUB side of the disk.
 *
 * - `buildGrubEfi()`: a standalone GRUB EFI binary (grub-mkstandalone, all modules in the memdisk: a reduced module
 *   list makes `search` fail on absent fs modules and stall 10 s, vm-boot.md failure 5) whose embedded config finds
 *   COS_STATE by label and hands over to `($state)/grub2/grub.cfg`, the job grub2-install's prefix does on a real
 *   install (cos-layout.md 1.3, 4.1).
 * - `cosStateBootFiles()` / `cosOemBootFiles()`: what a freshly installed cOS has on COS_STATE and COS_OEM for GRUB:
 *   grub2/grub.cfg = cOS v0.8.14 grub.cfg.tmpl rendered with the default labels, grub_oem_env
 *   (default_menu_entry=cOS, as elemental install writes it), grubcustom + grub_boot_assessment exactly as
 *   08_boot_assessment.yaml's after-install stage writes them, an empty boot_assessment env block, and on COS_OEM an
 *   empty grubenv (cOS does not create it, but then `search --file /grubenv` finds nothing and grub.cfg's
 *   `save_env -f "()/grubenv"` fails on every one-shot boot; tests need the block to exist so GRUB can save_env in place).
 *   The cOS files are read from ../shared/cos-v0.8.14 at build time, never copied into the repository.
 * - The only test-harness file is COS_OEM `/grubmenu` (grub.cfg sources it after choosing `default`, before
 *   grubcustom): it sets `timeout=0` (grub.cfg says 10, which would cost 10 s per boot) and prints
 *   two lines `COSVM-GRUB {"default":...,"selected_entry":...}` and `COSVM-GRUB {"saved_entry":...,"display_name":...}`
 *   on the console (short: GRUB's console wraps at 80 columns).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { cached, hashKey } from './cache.ts';
import { run } from './exec.ts';
import { cosBootAssessment, cosBootargs, cosGrubCfg } from '../../test/helpers/grub-script.ts';

/** Embedded (memdisk) config of the EFI binary. */
export const GRUB_EFI_CFG = `search --no-floppy --label --set=state COS_STATE
set root=$state
export state
echo "COSVM-GRUB-EFI state=$state"
configfile ($state)/grub2/grub.cfg
`;

export async function buildGrubEfi(): Promise<{ path: string; key: string }> {
  const version = (await run(['grub-mkstandalone', '--version'])).stdout.trim();
  const key = hashKey(version, GRUB_EFI_CFG, '--compress=xz --modules=part_gpt ext2 search_label');
  const file = await cached(`grub-bootx64-${key}.efi`, async (tmp) => {
    const cfg = `${tmp}.cfg`;
    await writeFile(cfg, GRUB_EFI_CFG);
    try {
      await run(['grub-mkstandalone', '-O', 'x86_64-efi', '-o', tmp, '--compress=xz', '--modules=part_gpt ext2 search_label', `boot/grub/grub.cfg=${cfg}`]);
    } finally {
      await run(['rm', '-f', cfg]);
    }
  });
  return { path: file, key };
}

/** The real cOS grub.cfg, rendered: what COS_STATE/grub2/grub.cfg holds. */
export function renderedGrubCfg(): string {
  return cosGrubCfg();
}

/** The real cOS bootargs.cfg, rendered: what each image holds at /etc/cos/bootargs.cfg. */
export function renderedBootargs(): string {
  return cosBootargs();
}

/** The harness /grubmenu on COS_OEM (see the module comment). */
export function harnessGrubMenu(timeout = 0): string {
  // GRUB's console wraps at 80 columns: one short JSON object per line (markerJson() returns them in order)
  return `set timeout=${timeout}
echo 'COSVM-GRUB {"default":"'"\${default}"'","selected_entry":"'"\${selected_entry}"'"}'
echo 'COSVM-GRUB {"saved_entry":"'"\${saved_entry}"'","display_name":"'"\${display_name}"'"}'
`;
}

export interface BootFile {
  /** Path from the partition's root, without the leading slash. */
  path: string;
  /** Text content, or an env block to create with grub-editenv (variables to set, possibly none). */
  text?: string;
  env?: Record<string, string>;
}

/** GRUB files on COS_STATE after a cOS install (with the boot-assessment after-install hook). */
export function cosStateBootFiles(): BootFile[] {
  const { grubcustom, grubBootAssessment } = cosBootAssessment();
  return [
    { path: 'grub2/grub.cfg', text: renderedGrubCfg() },
    { path: 'grub_oem_env', env: { default_menu_entry: 'cOS' } },
    { path: 'grubcustom', text: grubcustom },
    { path: 'grub_boot_assessment', text: grubBootAssessment },
    { path: 'boot_assessment', env: {} },
  ];
}

/** GRUB files on COS_OEM: the user env block (empty) and the harness menu file. */
export function cosOemBootFiles(grubTimeout = 0): BootFile[] {
  return [
    { path: 'grubenv', env: {} },
    { path: 'grubmenu', text: harnessGrubMenu(grubTimeout) },
  ];
}

/** Writes `files` under `dir` (env blocks through grub-editenv, so they are real 1024-byte blocks). */
export async function writeBootFiles(dir: string, files: readonly BootFile[]): Promise<void> {
  for (const f of files) {
    const dest = path.join(dir, f.path);
    await mkdir(path.dirname(dest), { recursive: true });
    if (f.env !== undefined) {
      await run(['grub-editenv', dest, 'create']);
      const sets = Object.entries(f.env).map(([k, v]) => `${k}=${v}`);
      if (sets.length > 0) await run(['grub-editenv', dest, 'set', ...sets]);
    } else {
      await writeFile(dest, f.text ?? '');
    }
  }
}
