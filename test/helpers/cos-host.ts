/**
 * Test fixture: a disposable cOS host on a loop device (cos-layout.md 1.1-1.4).
 *
 * A sparse GPT disk image in a fresh temp dir holds the five cOS partitions (elemental order and GPT names:
 * p1 efi/COS_GRUB vfat, p2 oem/COS_OEM, p3 state/COS_STATE, p4 recovery/COS_RECOVERY, p5 persistent/COS_PERSISTENT,
 * all ext4). COS_STATE carries cOS/active.img (ext2 COS_ACTIVE), cOS/passive.img (ext2 COS_PASSIVE), grub_oem_env,
 * boot_assessment and grub2/grub.cfg; COS_RECOVERY carries cOS/recovery.img (ext2 COS_SYSTEM) or
 * cOS/recovery.squashfs. The disk is attached with partscan and its partitions are mounted under `root` the way a
 * booted host sees them, and `root/proc/cmdline` holds the cOS cmdline of the booted slot.
 *
 * Each image's tree: /etc/os-release (NAME, ID, VERSION, PRETTY_NAME, GRUB_ENTRY_NAME="cOS <v>"),
 * /etc/cos-slot-version ("<slot> <version>\n", the slot it was built for), /etc/cos/bootargs.cfg,
 * /boot/vmlinuz and /boot/initrd (dummies).
 *
 * close() tears down everything under the temp dir, including mounts and loop devices the agent made there.
 */
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SpawnRunner, type Runner } from '../../src/sys/runner.ts';
import { cosBootAssessment } from './grub-script.ts';
import {
  attachLoop,
  diskPartitions,
  findMountOf,
  listLoopDevices,
  loopBackingFile,
  loopBackingIdentity,
  waitForDetach,
  mkfsExt2,
  mksquashfs,
  mount,
  readMounts,
  unmount,
} from '../../src/partitions/index.ts';

export type CosLabel = 'COS_GRUB' | 'COS_OEM' | 'COS_RECOVERY' | 'COS_STATE' | 'COS_PERSISTENT';

export interface CosHostOptions {
  /** Booted slot, default active. */
  booted?: 'active' | 'passive' | 'recovery';
  /** Recovery flavour on COS_RECOVERY, default 'img'. */
  recovery?: 'squashfs' | 'img';
  /** Size of active/passive/recovery.img in MiB, default 32. */
  imageMiB?: number;
  /** Partition sizes in MiB (defaults: state 160, recovery 96, persistent 64). */
  stateMiB?: number;
  recoveryMiB?: number;
  persistentMiB?: number;
  /** VERSION written into each image's /etc/os-release (defaults 0.8.10 / 0.8.9 / 0.8.8). */
  versions?: { active?: string; passive?: string; recovery?: string };
  /** Adds `upgrade_failure` to the cmdline (and creates /run/cos/upgrade_failure as 08_boot_assessment does). */
  upgradeFailure?: boolean;
  /** Extra host files under root, written after the mounts ({'/etc/cos-upgrade-image': 'UPGRADE_IMAGE=...'}). */
  files?: Record<string, string>;
}

export interface CosHost {
  /** Temp root dir; the agent runs with --root root. */
  root: string;
  /** The disk image file. */
  disk: string;
  /** /dev/loopN (whole disk, partscan). */
  loop: string;
  /** Partition device of each label. */
  devices: Record<CosLabel, string>;
  /** { AGENT_TEST_DISK: loop }: narrows the agent's label discovery to this disk. */
  env: Record<string, string>;
  /** Versions written into the images. */
  versions: { active: string; passive: string; recovery: string };
  /** Path of a file on COS_STATE as the host sees it (under root/run/initramfs/cos-state). Throws when booted from recovery. */
  statePath(rel: string): string;
  /**
   * Run `fn` with a directory showing the partition's content: its current mount point when mounted (by the host or
   * the agent), else a temporary read-only mount inside the temp dir, unmounted afterwards.
   */
  peek<T>(label: CosLabel, fn: (dir: string) => Promise<T>): Promise<T>;
  /** Unmount everything under the temp dir (reverse order, lazy fallback), detach every loop device backed by a file
   * inside it (including the agent's), remove it. Idempotent. */
  close(): Promise<void>;
  /** What is still mounted under the temp dir and still attached from files inside it. */
  leaks(): Promise<{ mounts: string[]; loops: string[] }>;
  /**
   * GRUB's own view of a partition, through grub-fstest on the disk file: GRUB's filesystem drivers, which replay no
   * ext4 journal, as GRUB at boot does. The loop device writes to the disk file through the page cache, so the file
   * holds what a power cut at this instant would leave on the disk, whatever the kernel still keeps in its journal.
   */
  grub(label: CosLabel): GrubView;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface GrubView {
  /** Names in a directory (`/cOS/`), sorted. */
  ls(dir: string): Promise<string[]>;
  /** CRC-32 of a file as GRUB reads it (hex, as `grub-fstest crc` prints it), or the error GRUB gives. */
  crc(file: string): Promise<{ crc: string } | { error: string }>;
}

function grubView(disk: string, part: number): GrubView {
  const fstest = async (...args: string[]): Promise<{ ok: boolean; out: string }> => {
    const r = await new SpawnRunner()
      .run({ argv: ['grub-fstest', disk, ...args], description: `grub-fstest ${args.join(' ')}`, okExitCodes: [1] });
    return { ok: r.exitCode === 0, out: `${r.stdout}${r.stderr}`.trim() };
  };
  const at = (p: string): string => `(loop0,gpt${part})${p}`;
  return {
    async ls(dir) {
      const r = await fstest('ls', at(dir));
      if (!r.ok) throw new Error(`GRUB cannot list ${dir}: ${r.out}`);
      return r.out.split(/\s+/).filter((n) => n !== '').sort();
    },
    async crc(file) {
      const r = await fstest('crc', at(file));
      return r.ok ? { crc: r.out } : { error: r.out };
    },
  };
}

const DEFAULT_VERSIONS = { active: '0.8.10', passive: '0.8.9', recovery: '0.8.8' } as const;
const EFI_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
const LINUX_TYPE = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
const GRUB_MiB = 16;
const OEM_MiB = 16;

/** Partitions in elemental order: [label, GPT name, fs]. */
const LAYOUT: ReadonlyArray<readonly [CosLabel, string]> = [
  ['COS_GRUB', 'efi'],
  ['COS_OEM', 'oem'],
  ['COS_STATE', 'state'],
  ['COS_RECOVERY', 'recovery'],
  ['COS_PERSISTENT', 'persistent'],
];

const KERNEL_ARGS_IMG = 'panic=5 security=selinux selinux=1 rd.neednet=1 rd.cos.oemlabel=COS_OEM';
const KERNEL_ARGS_LIVE = 'panic=5 rd.neednet=1 rd.cos.oemlabel=COS_OEM';

/** The real cOS /proc/cmdline of a booted slot (cos-layout.md 1.4, 3.4). */
export function cosCmdline(booted: 'active' | 'passive' | 'recovery', recovery: 'img' | 'squashfs', upgradeFailure = false): string {
  const head = 'BOOT_IMAGE=(loop0)/boot/vmlinuz console=tty1 console=ttyS0';
  let body: string;
  if (booted === 'active') body = `root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img ${KERNEL_ARGS_IMG}`;
  else if (booted === 'passive') body = `root=LABEL=COS_PASSIVE cos-img/filename=/cOS/passive.img ${KERNEL_ARGS_IMG}`;
  else if (recovery === 'img') body = `root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.img ${KERNEL_ARGS_IMG}`;
  else body = `root=live:LABEL=COS_RECOVERY rd.live.dir=/ rd.live.squashimg=/cOS/recovery.squashfs ${KERNEL_ARGS_LIVE}`;
  return `${head} ${body}${upgradeFailure ? ' upgrade_failure' : ''}\n`;
}

const BOOTARGS_CFG = `set kernel=/boot/vmlinuz
if [ -n "$recoverylabel" ]; then
    set kernelcmd="console=tty1 console=ttyS0 root=live:LABEL=$recoverylabel rd.live.dir=/ rd.live.squashimg=$img ${KERNEL_ARGS_LIVE}"
else
    set kernelcmd="console=tty1 console=ttyS0 root=LABEL=$label cos-img/filename=$img ${KERNEL_ARGS_IMG}"
fi
set initramfs=/boot/initrd
`;

/** A short but faithful rendering of the cOS grub.cfg (cos-layout.md 4.2). */
export const GRUB_CFG = `set timeout=10

search --no-floppy --file --set=env_blk /grubenv
search --no-floppy --file --set=oem_blk /grub_oem_env
search --no-floppy --file --set=menu_blk /grubmenu
search --no-floppy --file --set=custom_blk /grubcustom

if [ "\${oem_blk}" ] ; then
  load_env -f (\${oem_blk})/grub_oem_env
fi
if [ "\${env_blk}" ] ; then
  load_env -f (\${env_blk})/grubenv
fi

if [ "\${next_entry}" ] ; then
  set default="\${next_entry}"
  set selected_entry="\${next_entry}"
  set next_entry=
  save_env -f (\${env_blk})/grubenv next_entry
else
  set default="\${saved_entry}"
fi

if [ -z "\${default_menu_entry}" ] ; then
  set display_name="cOS"
else
  set display_name="\${default_menu_entry}"
fi

if [ -z "\${default_fallback}" ] ; then
  set fallback="0 1 2"
else
  set fallback="\${default_fallback}"
fi

set gfxmode=auto
set gfxpayload=keep
insmod all_video
insmod gfxterm
insmod loopback
insmod squash4

menuentry "\${display_name}" --id cos {
  search --no-floppy --label --set=root COS_STATE
  set img=/cOS/active.img
  set label=COS_ACTIVE
  loopback loop0 /\$img
  set root=(\$root)
  source (loop0)/etc/cos/bootargs.cfg
  linux (loop0)\$kernel \$kernelcmd \${extra_cmdline} \${extra_active_cmdline}
  initrd (loop0)\$initramfs
}

menuentry "\${display_name} (fallback)" --id fallback {
  search --no-floppy --label --set=root COS_STATE
  set img=/cOS/passive.img
  set label=COS_PASSIVE
  loopback loop0 /\$img
  set root=(\$root)
  source (loop0)/etc/cos/bootargs.cfg
  linux (loop0)\$kernel \$kernelcmd \${extra_cmdline} \${extra_passive_cmdline}
  initrd (loop0)\$initramfs
}

menuentry "\${display_name} recovery" --id recovery {
  if search --no-floppy --file --set=root /cOS/recovery.squashfs ; then
    set img=/cOS/recovery.squashfs
    set recoverylabel=COS_RECOVERY
  else
    set img=/cOS/recovery.img
  fi
  search --no-floppy --label --set=root COS_RECOVERY
  set label=COS_SYSTEM
  loopback loop0 /\$img
  set root=(\$root)
  source (loop0)/etc/cos/bootargs.cfg
  linux (loop0)\$kernel \$kernelcmd \${extra_cmdline} \${extra_recovery_cmdline}
  initrd (loop0)\$initramfs
}

if [ "\${menu_blk}" ] ; then
  source (\${menu_blk})/grubmenu
fi
if [ "\${custom_blk}" ] ; then
  source (\${custom_blk})/grubcustom
fi
`;

function osRelease(version: string): string {
  return [
    'NAME="cOS"',
    'ID="cos"',
    `VERSION="${version}"`,
    `PRETTY_NAME="cOS v${version}"`,
    'HOME_URL="https://github.com/rancher-sandbox/cOS-toolkit"',
    `GRUB_ENTRY_NAME="cOS ${version}"`,
    '',
  ].join('\n');
}

async function put(file: string, content: string | Buffer): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, content);
}

/** A small cOS rootfs tree for `slot`. */
async function writeImageTree(dir: string, slot: string, version: string): Promise<void> {
  await put(path.join(dir, 'etc/os-release'), osRelease(version));
  await put(path.join(dir, 'etc/cos-slot-version'), `${slot} ${version}\n`);
  await put(path.join(dir, 'etc/cos/bootargs.cfg'), BOOTARGS_CFG);
  await put(path.join(dir, 'boot/vmlinuz'), `dummy kernel of cOS ${version}\n`);
  await put(path.join(dir, 'boot/initrd'), `dummy initrd of cOS ${version}\n`);
  for (const d of ['usr/bin', 'var', 'run', 'dev', 'proc', 'sys', 'tmp', 'oem', 'usr/local']) {
    await mkdir(path.join(dir, d), { recursive: true });
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

function under(dir: string, p: string): boolean {
  return p === dir || p.startsWith(`${dir}/`);
}

/** Wait until `check` holds, polling (for kernel/devtmpfs events that have no notification here). */
async function pollUntil(check: () => Promise<boolean>, attempts = 50, delayMs = 100): Promise<boolean> {
  for (let i = 0; i < attempts; i++) {
    if (await check()) return true;
    await sleep(delayMs);
  }
  return check();
}

/**
 * Make sure the partitions of `loop` exist in sysfs and as /dev nodes. Without udev, `losetup -P` may not scan:
 * `partx -a` adds them; devtmpfs normally creates the nodes, else mknod from /sys/block/loopN/loopNpK/dev.
 */
export async function ensurePartitionNodes(runner: Runner, loop: string, count: number, made: string[]): Promise<string[]> {
  const enough = async (): Promise<boolean> => (await diskPartitions(loop)).length >= count;
  if (!(await pollUntil(enough, 5, 50))) {
    await runner.run({ argv: ['partx', '-a', loop], description: `adding the partitions of ${loop}`, okExitCodes: [1] });
    if (!(await pollUntil(enough))) {
      throw new Error(`the partitions of ${loop} did not appear (have ${(await diskPartitions(loop)).join(', ') || 'none'})`);
    }
  }
  const parts = (await diskPartitions(loop)).slice(0, count);
  for (const part of parts) {
    if (await pollUntil(() => exists(part), 20, 50)) continue;
    const name = path.basename(part);
    const devno = (await readFile(`/sys/block/${path.basename(loop)}/${name}/dev`, 'utf8')).trim();
    const [major, minor] = devno.split(':');
    await runner.run({ argv: ['mknod', part, 'b', major ?? '', minor ?? ''], description: `creating ${part}` });
    made.push(part);
  }
  return parts;
}

interface LoopSnapshot {
  device: string;
  backingFile: string;
  identity: string | undefined;
}

async function loopsFrom(runner: Runner, dir: string): Promise<LoopSnapshot[]> {
  const loops = (await listLoopDevices()).filter((l) => under(dir, l.backingFile.replace(/ \(deleted\)$/, '')));
  return Promise.all(
    loops.map(async (l) => ({ ...l, identity: await loopBackingIdentity(runner, l.device).catch(() => undefined) })),
  );
}

export async function createCosHost(opts: CosHostOptions = {}): Promise<CosHost> {
  const runner = new SpawnRunner();
  const booted = opts.booted ?? 'active';
  const flavour = opts.recovery ?? 'img';
  const imageMiB = opts.imageMiB ?? 32;
  const stateMiB = opts.stateMiB ?? 160;
  const recoveryMiB = opts.recoveryMiB ?? 96;
  const persistentMiB = opts.persistentMiB ?? 64;
  const versions = { ...DEFAULT_VERSIONS, ...opts.versions };

  const tmp = await mkdtemp(path.join(tmpdir(), 'cos-host-'));
  const root = path.join(tmp, 'root');
  const build = path.join(tmp, 'build');
  const disk = path.join(tmp, 'disk.img');
  const madeNodes: string[] = [];
  let closed: Promise<void> | undefined;

  const leaks = async (): Promise<{ mounts: string[]; loops: string[] }> => {
    const mounts = (await readMounts()).filter((m) => under(tmp, m.mountPoint)).map((m) => m.mountPoint);
    const loops = (await listLoopDevices())
      .filter((l) => under(tmp, l.backingFile.replace(/ \(deleted\)$/, '')))
      .map((l) => `${l.device} (${l.backingFile})`);
    return { mounts, loops };
  };

  const teardown = async (): Promise<void> => {
    const problems: unknown[] = [];
    // Snapshot the loops first: once their filesystems are unmounted, backing paths no longer name the temp dir.
    const loops = await loopsFrom(runner, tmp);
    const ourDevices = new Set<string>();
    for (const l of loops) {
      ourDevices.add(l.device);
      for (const p of await diskPartitions(l.device).catch(() => [])) ourDevices.add(p);
    }
    // Unmount in reverse table order (children before parents): everything under the temp dir, plus any mount of
    // our loop devices elsewhere.
    const mounts = (await readMounts()).filter((m) => under(tmp, m.mountPoint) || ourDevices.has(m.source));
    for (const m of mounts.reverse()) {
      try {
        await unmount(runner, m.mountPoint);
      } catch {
        await unmount(runner, m.mountPoint, { lazy: true }).catch((e: unknown) => problems.push(e));
      }
    }
    // Detach image loops first, the whole-disk loop last; only if still backed by the same inode.
    const diskLoops = loops.filter((l) => l.backingFile === disk);
    const order = [...loops.filter((l) => l.backingFile !== disk).reverse(), ...diskLoops];
    for (const l of order) {
      const now = await loopBackingIdentity(runner, l.device).catch(() => undefined);
      if (now === undefined || (l.identity !== undefined && now !== l.identity)) continue;
      const pathBefore = await loopBackingFile(l.device);
      await runner
        .run({ argv: ['losetup', '-d', l.device], description: `detaching ${l.device} (${l.backingFile})` })
        .then(() => waitForDetach(l.device, pathBefore))
        .catch((e: unknown) => problems.push(e));
    }
    for (const node of madeNodes) await rm(node, { force: true }).catch((e: unknown) => problems.push(e));
    const left = await leaks();
    if (left.mounts.length > 0) {
      // Never rm -r across a live mount: that would delete the content of the mounted filesystem.
      problems.push(new Error(`still mounted under ${tmp}: ${left.mounts.join(', ')}`));
    } else {
      await rm(tmp, { recursive: true, force: true }).catch((e: unknown) => problems.push(e));
    }
    if (problems.length > 0) throw new AggregateError(problems, `tearing down the cOS host in ${tmp} failed`);
  };

  const close = (): Promise<void> => {
    closed ??= teardown();
    return closed;
  };

  try {
    // 1. Content of the partitions, built as plain trees (mkfs -d populates without mounting).
    const trees = {
      active: path.join(build, 'active'),
      passive: path.join(build, 'passive'),
      recovery: path.join(build, 'recovery'),
      state: path.join(build, 'state'),
      recoveryPart: path.join(build, 'recovery-part'),
      oem: path.join(build, 'oem'),
      persistent: path.join(build, 'persistent'),
    };
    await Promise.all([
      writeImageTree(trees.active, 'active', versions.active),
      writeImageTree(trees.passive, 'passive', versions.passive),
      writeImageTree(trees.recovery, 'recovery', versions.recovery),
      put(path.join(trees.oem, 'README'), 'COS_OEM: cloud-config (*.yaml) and the user GRUB environment (grubenv).\n'),
      mkdir(path.join(trees.persistent, 'cloud-config'), { recursive: true }),
      mkdir(path.join(trees.state, 'cOS'), { recursive: true }),
      mkdir(path.join(trees.recoveryPart, 'cOS'), { recursive: true }),
    ]);
    const editenv = (file: string, ...args: string[]): Promise<unknown> =>
      runner.run({ argv: ['grub-editenv', file, ...args], description: `writing ${file}` });
    await Promise.all([
      mkfsExt2(runner, path.join(trees.state, 'cOS/active.img'), { label: 'COS_ACTIVE', sizeMiB: imageMiB, fromDir: trees.active }),
      mkfsExt2(runner, path.join(trees.state, 'cOS/passive.img'), { label: 'COS_PASSIVE', sizeMiB: imageMiB, fromDir: trees.passive }),
      flavour === 'img'
        ? mkfsExt2(runner, path.join(trees.recoveryPart, 'cOS/recovery.img'), { label: 'COS_SYSTEM', sizeMiB: imageMiB, fromDir: trees.recovery })
        : mksquashfs(runner, trees.recovery, path.join(trees.recoveryPart, 'cOS/recovery.squashfs'), { compression: ['-comp', 'gzip'] }),
      (async () => {
        const oemEnv = path.join(trees.state, 'grub_oem_env');
        await editenv(oemEnv, 'create');
        await editenv(oemEnv, 'set', 'default_menu_entry=cOS');
        await editenv(path.join(trees.state, 'boot_assessment'), 'create');
        // As cOS's 08_boot_assessment installs them (after-install): grubcustom sources grub_boot_assessment.
        const cosAssessment = cosBootAssessment();
        await put(path.join(trees.state, 'grubcustom'), cosAssessment.grubcustom);
        await put(path.join(trees.state, 'grub_boot_assessment'), cosAssessment.grubBootAssessment);
        await put(path.join(trees.state, 'grub2/grub.cfg'), GRUB_CFG);
      })(),
    ]);

    // 2. The disk: sparse file, GPT, attached with partscan.
    const totalMiB = 1 + GRUB_MiB + OEM_MiB + stateMiB + recoveryMiB + persistentMiB + 1;
    await writeFile(disk, '');
    await runner.run({ argv: ['truncate', '-s', `${totalMiB}M`, disk], description: `sizing ${disk}` });
    const sizes: Record<CosLabel, number | undefined> = {
      COS_GRUB: GRUB_MiB,
      COS_OEM: OEM_MiB,
      COS_STATE: stateMiB,
      COS_RECOVERY: recoveryMiB,
      COS_PERSISTENT: undefined,
    };
    const script = ['label: gpt', ...LAYOUT.map(([label, name]) => {
      const size = sizes[label];
      return `${size !== undefined ? `size=${size}MiB, ` : ''}type=${label === 'COS_GRUB' ? EFI_TYPE : LINUX_TYPE}, name=${name}`;
    })].join('\n');
    await runner.run({ argv: ['sfdisk', '-q', disk], stdin: `${script}\n`, description: `partitioning ${disk}` });
    const loop = (await attachLoop(runner, disk, { partscan: true })).device;
    const parts = await ensurePartitionNodes(runner, loop, LAYOUT.length, madeNodes);
    const devices = Object.fromEntries(LAYOUT.map(([label], i) => [label, parts[i] as string])) as Record<CosLabel, string>;

    // 3. Filesystems. 4 KiB blocks as on a real cOS disk (mkfs picks 1 KiB for a filesystem this small): with 1 KiB
    // blocks, mkfs -d leaves an image's all-zero first block a hole, and GRUB 2.06 cannot read a file whose first
    // extent starts after block 0 ("invalid extent").
    const mkfs4 = (label: CosLabel, tree: string): Promise<unknown> =>
      runner.run({ argv: ['mkfs.ext4', '-q', '-F', '-b', '4096', '-L', label, '-d', tree, devices[label]], description: `formatting ${label}` });
    const mtoolsEnv = { MTOOLS_SKIP_CHECK: '1' };
    await Promise.all([
      (async () => {
        await runner.run({ argv: ['mkfs.vfat', '-n', 'COS_GRUB', devices.COS_GRUB], description: 'formatting COS_GRUB' });
        await runner.run({ argv: ['mmd', '-i', devices.COS_GRUB, '::/EFI', '::/EFI/BOOT'], env: mtoolsEnv, description: 'creating EFI/BOOT' });
        const efi = path.join(build, 'bootx64.efi');
        await writeFile(efi, 'dummy grub EFI binary\n');
        await runner.run({ argv: ['mcopy', '-i', devices.COS_GRUB, efi, '::/EFI/BOOT/bootx64.efi'], env: mtoolsEnv, description: 'copying bootx64.efi' });
      })(),
      mkfs4('COS_OEM', trees.oem),
      mkfs4('COS_STATE', trees.state),
      mkfs4('COS_RECOVERY', trees.recoveryPart),
      mkfs4('COS_PERSISTENT', trees.persistent),
    ]);
    await rm(build, { recursive: true, force: true });

    // 4. Mount as the booted host sees it (cos-layout.md 1.4).
    const at = (p: string): string => path.join(root, p);
    if (booted !== 'recovery') {
      await mount(runner, devices.COS_STATE, at('/run/initramfs/cos-state'), { options: ['ro'], mkdir: true });
    } else if (flavour === 'img') {
      await mount(runner, devices.COS_RECOVERY, at('/run/initramfs/cos-state'), { options: ['ro'], mkdir: true });
    } else {
      await mount(runner, devices.COS_RECOVERY, at('/run/initramfs/live'), { options: ['ro'], mkdir: true });
    }
    await mount(runner, devices.COS_OEM, at('/oem'), { mkdir: true });
    if (booted !== 'recovery') await mount(runner, devices.COS_PERSISTENT, at('/usr/local'), { mkdir: true });

    // 5. Host files.
    await put(at('/proc/cmdline'), cosCmdline(booted, flavour, opts.upgradeFailure ?? false));
    await mkdir(at('/run/cos'), { recursive: true });
    if (booted === 'recovery') await put(at('/run/cos/recovery_mode'), '');
    if (opts.upgradeFailure) await put(at('/run/cos/upgrade_failure'), '');
    await put(at('/etc/os-release'), osRelease(versions[booted]));
    await mkdir(at('/tmp'), { recursive: true });
    for (const [file, content] of Object.entries(opts.files ?? {})) {
      if (!file.startsWith('/')) throw new Error(`CosHostOptions.files wants absolute host paths, got ${file}`);
      await put(at(file), content);
    }

    const statePath = (rel: string): string => {
      if (booted === 'recovery') {
        throw new Error('COS_STATE is not mounted on a host booted from recovery: use peek("COS_STATE", ...)');
      }
      return path.join(root, 'run/initramfs/cos-state', rel);
    };

    const peek = async <T>(label: CosLabel, fn: (dir: string) => Promise<T>): Promise<T> => {
      const existing = findMountOf(devices[label], await readMounts());
      if (existing !== undefined && existing.root === '/') return fn(existing.mountPoint);
      const dir = await mkdtemp(path.join(tmp, 'peek-'));
      const m = await mount(runner, devices[label], dir, { options: ['ro'] });
      try {
        return await fn(dir);
      } finally {
        await m.close();
        await rm(dir, { recursive: true, force: true });
      }
    };

    return {
      root,
      disk,
      loop,
      devices,
      env: { AGENT_TEST_DISK: loop },
      versions,
      statePath,
      peek,
      close,
      leaks,
      grub: (label) => grubView(disk, LAYOUT.findIndex(([l]) => l === label) + 1),
      [Symbol.asyncDispose]: close,
    };
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }
}
