/**
 * VM-test helper: a bootable cOS disk image, built from the Debian archive alone and without any host mount
 * (mkfs -d, mksquashfs, mtools, sfdisk on a plain file, dd at the partition offsets; vm-boot.md section 2).
 *
 * GPT in elemental order with the elemental (v0.1.0) partition names, like test/helpers/cos-host.ts
 * (cos-layout.md 1.1):
 *
 * | # | GPT name   | fs label       | fs    | content |
 * |---|------------|----------------|-------|---------|
 * | 1 | efi        | COS_GRUB       | FAT32 | EFI/BOOT/BOOTX64.EFI (standalone GRUB, grub.ts) |
 * | 2 | oem        | COS_OEM        | ext4  | grubenv (empty env block), grubmenu (test harness, grub.ts) |
 * | 3 | state      | COS_STATE      | ext4  | cOS/active.img (ext2 COS_ACTIVE), cOS/passive.img (copy of active relabelled COS_PASSIVE, as install does), grub2/grub.cfg (rendered cOS template), grub_oem_env, grubcustom, grub_boot_assessment, boot_assessment (`stateFiles` replaces any of them) |
 * | 4 | recovery   | COS_RECOVERY   | ext4  | cOS/recovery.squashfs (the same root filesystem, uncompressed: cOS uses xz, which takes minutes to build here) |
 * | 5 | persistent | COS_PERSISTENT | ext4  | empty |
 *
 * The disk is cached as `disk-<hash>/disk.img` (sparse, raw; sizes.json beside it), keyed by every input (kernel package, initrd, GRUB binary,
 * debootstrap tarball, cOS template texts, rootfs hooks by content, sizes, and this library's source). Tests must not
 * boot the cached file itself: `cloneDisk()` makes a private sparse copy (or `bootVm({ overlay: true })` a qcow2 overlay).
 */
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { cacheDir, cached, hashKey, removeTree, sourceOf } from './cache.ts';
import { run } from './exec.ts';
import { buildGrubEfi, cosOemBootFiles, cosStateBootFiles, writeBootFiles, type BootFile } from './grub.ts';
import { buildInitrd } from './initrd.ts';
import { guestKernel, type GuestKernel } from './kernel.ts';
import { prepareRootfs, rootfsKey, treeMiB, type GuestFile, type RootfsOptions } from './rootfs.ts';

export const EFI_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
export const LINUX_TYPE = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

export type CosPartitionLabel = 'COS_GRUB' | 'COS_OEM' | 'COS_STATE' | 'COS_RECOVERY' | 'COS_PERSISTENT';

/** [fs label, GPT name] in elemental order. */
export const COS_LAYOUT: ReadonlyArray<readonly [CosPartitionLabel, string]> = [
  ['COS_GRUB', 'efi'],
  ['COS_OEM', 'oem'],
  ['COS_STATE', 'state'],
  ['COS_RECOVERY', 'recovery'],
  ['COS_PERSISTENT', 'persistent'],
];

export interface CosDiskOptions {
  /** What goes into the slot images. */
  rootfs?: RootfsOptions;
  /** Minimum size of active.img / passive.img in MiB (grown to fit the tree). Default 1024. */
  imageMiB?: number;
  /** Partition sizes in MiB. Defaults: ESP 64, OEM 64, STATE 3 images + 256 (room for a transition.img),
   * RECOVERY twice the squashfs + 128, PERSISTENT 1024. All sparse. */
  espMiB?: number;
  oemMiB?: number;
  stateMiB?: number;
  recoveryMiB?: number;
  persistentMiB?: number;
  /** GRUB menu timeout set by the harness /grubmenu. Default 0. */
  grubTimeout?: number;
  /** COS_STATE files that replace (same path) or add to the cOS ones of cosStateBootFiles(), e.g. the agent's own
   * grub_boot_assessment in place of cOS's. */
  stateFiles?: readonly BootFile[];
  /** COS_OEM files besides the harness's (grubenv, grubmenu), e.g. cloud-config the agent runs from /oem. */
  oemFiles?: readonly BootFile[];
  /** Files written into one slot image only, after passive.img was copied from active.img (debugfs, no mount): two
   * images that differ, e.g. an upgrade in active with a failing health check and the good image in passive, or two
   * os-release VERSIONs. Every file replaces any same path; parent directories are created. */
  slotFiles?: { active?: readonly GuestFile[]; passive?: readonly GuestFile[] };
  /** A filesystem UUID of its own for passive.img (default: the copy keeps active's, as install does), so the two
   * images have different identities, as after an upgrade. */
  passiveUuid?: string;
}

export interface CosDisk {
  /** The cached raw disk image. Do not boot or modify it: clone it. */
  path: string;
  key: string;
  kernel: GuestKernel;
  /** Partition sizes (MiB) actually used, and the slot image size. */
  sizes: Record<CosPartitionLabel, number> & { image: number };
}

const MTOOLS_ENV = { MTOOLS_SKIP_CHECK: '1' };

async function sizeMiB(file: string): Promise<number> {
  return Math.ceil((await stat(file)).size / 2 ** 20);
}

export async function buildCosDisk(opts: CosDiskOptions = {}): Promise<CosDisk> {
  const [kernel, grubEfi, rkey] = await Promise.all([guestKernel(), buildGrubEfi(), rootfsKey(opts.rootfs ?? {})]);
  const initrd = await buildInitrd(kernel);
  const overrides = opts.stateFiles ?? [];
  const stateFiles = [...cosStateBootFiles().filter((f) => !overrides.some((o) => o.path === f.path)), ...overrides];
  const oemFiles = [...cosOemBootFiles(opts.grubTimeout ?? 0), ...(opts.oemFiles ?? [])];
  const { rootfs: _rootfs, stateFiles: _stateFiles, oemFiles: _oemFiles, slotFiles, ...sizeOpts } = opts;
  // slot files by content hash, as rootfsKey does: hashKey would walk a Buffer byte by byte (an initrd: seconds)
  const slotKey = Object.entries(slotFiles ?? {}).map(([slot, files]) => [slot, files.map((f) => [f.path, hashKey(Buffer.from(f.content).toString('base64')), f.mode ?? 0o644])]);
  const key = hashKey(kernel.key, initrd.key, grubEfi.key, rkey, stateFiles, oemFiles, sizeOpts, slotKey, sourceOf(import.meta.url));
  const dir = await cached(`disk-${key}`, async (tmp) => {
    const work = path.join(cacheDir(), `build-disk-${process.pid}`);
    await removeTree(work);
    await mkdir(tmp, { recursive: true });
    try {
      const built = await assemble(path.join(tmp, 'disk.img'), work, { kernel, initrd: initrd.path, grubEfi: grubEfi.path, stateFiles, oemFiles, opts });
      await writeFile(path.join(tmp, 'sizes.json'), `${JSON.stringify(built)}\n`);
    } finally {
      await removeTree(work);
    }
  });
  const sizes = JSON.parse(await readFile(path.join(dir, 'sizes.json'), 'utf8')) as CosDisk['sizes'];
  const disk = path.join(dir, 'disk.img');
  return { path: disk, key, kernel, sizes };
}

interface AssembleInput {
  kernel: GuestKernel;
  initrd: string;
  grubEfi: string;
  stateFiles: ReturnType<typeof cosStateBootFiles>;
  oemFiles: ReturnType<typeof cosOemBootFiles>;
  opts: CosDiskOptions;
}

async function assemble(out: string, work: string, input: AssembleInput): Promise<CosDisk['sizes']> {
  const { opts } = input;
  const t0 = Date.now();
  const phase = (what: string): void => {
    process.stderr.write(`vm-disk: ${what} done at ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  };
  const tree = path.join(work, 'rootfs');
  const dirs = { oem: path.join(work, 'oem'), state: path.join(work, 'state'), recovery: path.join(work, 'recovery'), persistent: path.join(work, 'persistent') };
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });
  await mkdir(path.join(dirs.state, 'cOS'), { recursive: true });
  await mkdir(path.join(dirs.recovery, 'cOS'), { recursive: true });

  // 1. the slot images and the recovery squashfs, from one prepared tree
  await prepareRootfs(tree, input.kernel, input.initrd, opts.rootfs ?? {});
  phase('rootfs tree');
  const image = Math.max(opts.imageMiB ?? 1024, Math.ceil((await treeMiB(tree)) * 1.25) + 64);
  const active = path.join(dirs.state, 'cOS/active.img');
  const passive = path.join(dirs.state, 'cOS/passive.img');
  const squash = path.join(dirs.recovery, 'cOS/recovery.squashfs');
  await Promise.all([
    (async () => {
      await run(['mkfs.ext2', '-q', '-F', '-L', 'COS_ACTIVE', '-d', tree, active, `${image}M`]);
      // install/reset: passive.img is a copy of active.img relabelled (cos-layout.md 1.2)
      await run(['cp', '--sparse=always', active, passive]);
      await run(['tune2fs', '-L', 'COS_PASSIVE', passive]);
      if (opts.passiveUuid !== undefined) await run(['tune2fs', '-U', opts.passiveUuid, passive]);
      await writeIntoExtImage(active, opts.slotFiles?.active ?? [], path.join(work, 'slot-active'));
      await writeIntoExtImage(passive, opts.slotFiles?.passive ?? [], path.join(work, 'slot-passive'));
    })(),
    // uncompressed: 1.5 s instead of 1-2 min for gzip/lzo on 2 busy cores; GRUB and the kernel read it all the same
    run(['mksquashfs', tree, squash, '-noI', '-noD', '-noF', '-noX', '-noappend', '-quiet', '-no-progress']),
    writeBootFiles(dirs.state, input.stateFiles),
    writeBootFiles(dirs.oem, input.oemFiles),
  ]);
  phase('active.img, passive.img, recovery.squashfs');
  await removeTree(tree);

  // 2. partition images
  const sizes: CosDisk['sizes'] = {
    image,
    COS_GRUB: opts.espMiB ?? 64,
    COS_OEM: opts.oemMiB ?? 64,
    COS_STATE: opts.stateMiB ?? 3 * image + 256,
    COS_RECOVERY: opts.recoveryMiB ?? 2 * (await sizeMiB(squash)) + 128,
    COS_PERSISTENT: opts.persistentMiB ?? 1024,
  };
  const part = (label: CosPartitionLabel): string => path.join(work, `${label}.img`);
  // mke2fs does not shrink an existing output file (vm-boot.md failure 8): always fresh files
  for (const [label] of COS_LAYOUT) await rm(part(label), { force: true });
  const mkfs4 = (label: CosPartitionLabel, dir: string): Promise<unknown> =>
    run(['mkfs.ext4', '-q', '-F', '-L', label, '-d', dir, part(label), `${sizes[label]}M`]);
  await Promise.all([
    (async () => {
      await run(['mkfs.vfat', '-F', '32', '-n', 'COS_GRUB', '-C', part('COS_GRUB'), String(sizes.COS_GRUB * 1024)]);
      await run(['mmd', '-i', part('COS_GRUB'), '::/EFI', '::/EFI/BOOT'], { env: MTOOLS_ENV });
      await run(['mcopy', '-i', part('COS_GRUB'), input.grubEfi, '::/EFI/BOOT/BOOTX64.EFI'], { env: MTOOLS_ENV });
    })(),
    mkfs4('COS_OEM', dirs.oem),
    mkfs4('COS_STATE', dirs.state),
    mkfs4('COS_RECOVERY', dirs.recovery),
    mkfs4('COS_PERSISTENT', dirs.persistent),
  ]);
  phase('partition filesystems');

  // 3. the disk: GPT on the plain file first (no wiping), then each filesystem dd'ed at its offset
  const totalMiB = 1 + COS_LAYOUT.reduce((n, [label]) => n + sizes[label], 0) + 1;
  await rm(out, { force: true });
  await run(['truncate', '-s', `${totalMiB}M`, out]);
  let startMiB = 1;
  const lines = ['label: gpt', 'unit: sectors'];
  const starts: Array<[CosPartitionLabel, number]> = [];
  for (const [label, name] of COS_LAYOUT) {
    lines.push(`start=${startMiB * 2048}, size=${sizes[label] * 2048}, type=${label === 'COS_GRUB' ? EFI_TYPE : LINUX_TYPE}, name="${name}"`);
    starts.push([label, startMiB]);
    startMiB += sizes[label];
  }
  await run(['sfdisk', '-q', '--wipe', 'never', '--wipe-partitions', 'never', out], { stdin: `${lines.join('\n')}\n` });
  for (const [label, start] of starts) {
    await run(['dd', `if=${part(label)}`, `of=${out}`, 'bs=1M', `seek=${start}`, 'conv=notrunc,sparse', 'status=none']);
    await rm(part(label), { force: true });
  }
  phase('disk');
  return sizes;
}

/**
 * Writes `files` into the ext2/3/4 filesystem image `image` with `debugfs -w` (no mount): parents created, an
 * existing file replaced, owner root, the given mode. Each file is read back with `debugfs cat` and compared.
 */
export async function writeIntoExtImage(image: string, files: readonly GuestFile[], scratch: string): Promise<void> {
  if (files.length === 0) return;
  await mkdir(scratch, { recursive: true });
  const cmds: string[] = [];
  const made = new Set<string>();
  for (const [i, f] of files.entries()) {
    const p = path.posix.normalize(f.path);
    if (!p.startsWith('/') || p.includes('..') || /\s|"/.test(p)) throw new Error(`writeIntoExtImage: bad guest path ${f.path}`);
    const parts = p.split('/').slice(1, -1);
    for (let n = 1; n <= parts.length; n++) {
      const dir = `/${parts.slice(0, n).join('/')}`;
      if (!made.has(dir)) cmds.push(`mkdir ${dir}`);
      made.add(dir);
    }
    const src = path.join(scratch, `f${i}`);
    await writeFile(src, f.content);
    cmds.push(`rm ${p}`, `write ${src} ${p}`, `sif ${p} mode 0${(0o100000 | (f.mode ?? 0o644)).toString(8)}`, `sif ${p} uid 0`, `sif ${p} gid 0`);
  }
  const script = path.join(scratch, 'debugfs.cmds');
  await writeFile(script, `${cmds.join('\n')}\n`);
  // debugfs goes on after a failed command (mkdir of an existing directory, rm of a missing file): checked below
  await run(['debugfs', '-w', '-f', script, image]);
  // read back byte for byte (`dump`, not `cat`: run() decodes stdout as UTF-8, which would blur binary content)
  for (const [i, f] of files.entries()) {
    const back = path.join(scratch, `back${i}`);
    await run(['debugfs', '-R', `dump ${path.posix.normalize(f.path)} ${back}`, image]);
    const got = await readFile(back).catch(() => null);
    if (got === null || !got.equals(Buffer.from(f.content))) throw new Error(`writeIntoExtImage: ${f.path} in ${image} reads back differently`);
  }
  await removeTree(scratch);
}

/** A private sparse copy of a cached disk, for one boot or one scenario. */
export async function cloneDisk(disk: string, dest: string): Promise<string> {
  await run(['cp', '--sparse=always', disk, dest]);
  return dest;
}
