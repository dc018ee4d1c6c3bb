/**
 * Test helper: a booted cOS host without root, loop devices or mounts, for driving upgrade() through its steps.
 *
 * FakeKernel is a Runner that records every argv and plays the tools the agent calls (src/partitions/*.ts):
 *   - `blkid -p -o export DEV` answers COS_STATE for one device (exit 2, "nothing found", for every other one);
 *   - `losetup --show -f FILE`, `losetup --list ... DEV`, `losetup -d DEV` keep a table of fake loop devices
 *     (/dev/loop7000 and up, numbers no real host has, so the sysfs reads of loop.ts find nothing);
 *   - `mount SRC DIR` makes the filesystem's content appear at DIR: its content directory (the partition's, or for a
 *     loop device the one of the ext2 image's UUID) is renamed onto the empty DIR, and `umount DIR` renames it back;
 *     `mount -o bind` and `mount -o remount,...` are recorded only;
 *   - `fallocate -l N FILE` sizes the file (sparse); `mkfs.ext2 ... -L LABEL FILE` writes an ext2 superblock (magic,
 *     a fresh UUID, the label: what superblock.ts reads) and gives it an empty content directory; `tune2fs -L` rewrites
 *     the label; `e2fsck -f -n FILE` checks the magic and fails (exit 4) while the image is mounted;
 *   - anything else fails with exit 127, so an unexpected command is loud.
 *
 * The device carrying COS_STATE has to be a real block device node listed in /proc/partitions (label discovery,
 * src/partitions/discover.ts, lists and stats them itself; only the blkid probe goes through the runner). A device
 * that is not a loop device is preferred: loop devices of other tests come and go. Nothing is ever run on it.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, readdir, rename, rm, rmdir, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CommandError } from '../../../src/model/errors.ts';
import { isBlockDevice, parseProcPartitions, readImageIdentity } from '../../../src/partitions/index.ts';
import { updateGrubEnvFile } from '../../../src/grub/index.ts';
import type { Command, CommandResult, Runner } from '../../../src/sys/runner.ts';
import { cosCmdline, GRUB_CFG } from '../../helpers/cos-host.ts';

/** A block device the host lists in /proc/partitions to stand for COS_STATE (not a loop device when possible). */
export async function pickStateDevice(): Promise<string | undefined> {
  const names = parseProcPartitions(await readFile('/proc/partitions', 'utf8').catch(() => ''));
  const ordered = [...names.filter((n) => !n.startsWith('loop')), ...names.filter((n) => n.startsWith('loop'))];
  for (const n of ordered) if (await isBlockDevice(`/dev/${n}`)) return `/dev/${n}`;
  return undefined;
}

/** Write an ext2 superblock (magic 0xEF53, UUID, volume label) at byte 1024 of `file`, leaving the rest as it is. */
export async function writeExt2Superblock(file: string, uuid: string, label: string): Promise<void> {
  const sb = Buffer.alloc(1024);
  sb.writeUInt16LE(0xef53, 56);
  Buffer.from(uuid.replace(/-/g, ''), 'hex').copy(sb, 104);
  Buffer.from(label, 'utf8').copy(sb, 120, 0, 16);
  const fh = await open(file, 'r+');
  try {
    await fh.write(sb, 0, sb.length, 1024);
  } finally {
    await fh.close();
  }
}

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/** A Runner that plays blkid, losetup, mount/umount, fallocate, mkfs.ext2, tune2fs and e2fsck; see the file comment. */
export class FakeKernel implements Runner {
  /** Every argv run, in order. */
  readonly commands: string[][] = [];
  /** Filesystem content directories of ext2 images, by UUID. */
  private readonly fsDir: string;
  /** The COS_STATE device and its content directory. */
  private readonly stateDevice: string;
  private readonly stateContent: string;
  private readonly loops = new Map<string, { file: string; ino: string }>();
  /** Mount point -> the content directory moved onto it (null: a bind, recorded only). */
  private readonly mounts = new Map<string, { source: string; content: string | null }>();
  private nextLoop = 7000;
  private readonly onCommand: (argv: readonly string[]) => void | Promise<void>;

  constructor(opts: { fsDir: string; stateDevice: string; stateContent: string; onCommand?: (argv: readonly string[]) => void | Promise<void> }) {
    this.fsDir = opts.fsDir;
    this.stateDevice = opts.stateDevice;
    this.stateContent = opts.stateContent;
    this.onCommand = opts.onCommand ?? (() => {});
  }

  /** What is still mounted or attached (the agent's cleanup must leave nothing). */
  leaks(): { mounts: string[]; loops: string[] } {
    return { mounts: [...this.mounts.keys()], loops: [...this.loops.keys()] };
  }

  /** Where the COS_STATE content is now: its mount point while mounted, else its own directory. */
  stateDir(): string {
    for (const [target, m] of this.mounts) if (m.content === this.stateContent) return target;
    return this.stateContent;
  }

  async run(cmd: Command): Promise<CommandResult> {
    const argv = [...cmd.argv];
    this.commands.push(argv);
    await this.onCommand(argv);
    const done = (exitCode: number, stdout = '', stderr = ''): CommandResult => {
      if (exitCode !== 0 && !cmd.okExitCodes?.includes(exitCode)) {
        throw new CommandError(cmd.description, argv, { exitCode, signal: null, stderrTail: stderr });
      }
      return { exitCode, stdout, stderr };
    };
    const last = argv.at(-1) ?? '';
    switch (argv[0]) {
      case 'blkid': {
        if (argv.join(' ') !== `blkid -p -o export ${last}`) return done(127, '', `fake blkid: unexpected ${argv.join(' ')}`);
        if (last !== this.stateDevice) return done(2);
        return done(0, `DEVNAME=${last}\nUUID=3f1d6c1e-7b8a-4c55-9d2e-0a1b2c3d4e5f\nLABEL=COS_STATE\nTYPE=ext4\nPART_ENTRY_NAME=state\n`);
      }
      case 'losetup':
        return this.losetup(argv, done);
      case 'mount':
        return this.mount(argv, done);
      case 'umount': {
        const m = this.mounts.get(last);
        if (m === undefined) return done(32, '', `umount: ${last}: not mounted.`);
        if (m.content !== null) {
          await rename(last, m.content);
          await mkdir(last);
        }
        this.mounts.delete(last);
        return done(0);
      }
      case 'fallocate': {
        const [, flag, bytes, file] = argv;
        if (flag !== '-l' || bytes === undefined || file === undefined) return done(127, '', 'fake fallocate: unexpected argv');
        await writeFile(file, '', { flag: 'a' });
        await truncate(file, Number(bytes));
        return done(0);
      }
      case 'mkfs.ext2': {
        const label = argv[argv.indexOf('-L') + 1] ?? '';
        if (!(await exists(last))) return done(1, '', `mkfs.ext2: ${last}: no such file`);
        const uuid = randomUUID();
        await writeExt2Superblock(last, uuid, label);
        await mkdir(path.join(this.fsDir, uuid), { recursive: true });
        return done(0);
      }
      case 'tune2fs': {
        const id = await readImageIdentity(last);
        if (argv[1] !== '-L' || argv[2] === undefined || id?.fs !== 'ext2' || id.id === null) return done(1, '', `tune2fs: bad magic number in super-block of ${last}`);
        await writeExt2Superblock(last, id.id, argv[2]);
        return done(0);
      }
      case 'e2fsck': {
        const id = await readImageIdentity(last);
        if (id?.fs !== 'ext2') return done(8, '', `e2fsck: Bad magic number in super-block while trying to open ${last}`);
        if (this.mountedFile(last)) return done(4, '', `${last} is mounted.`);
        return done(0, `${id.label}: clean\n`);
      }
      default:
        return done(127, '', `fake kernel: no tool ${argv[0]}`);
    }
  }

  private mountedFile(file: string): boolean {
    const loopsOf = [...this.loops].filter(([, l]) => path.resolve(l.file) === path.resolve(file)).map(([dev]) => dev);
    return [...this.mounts.values()].some((m) => loopsOf.includes(m.source));
  }

  private async losetup(argv: string[], done: (code: number, out?: string, err?: string) => CommandResult): Promise<CommandResult> {
    const last = argv.at(-1) ?? '';
    if (argv[1] === '--show' && argv[2] === '-f') {
      const st = await stat(last).catch(() => undefined);
      if (st === undefined) return done(1, '', `losetup: ${last}: failed to set up loop device: No such file or directory`);
      const dev = `/dev/loop${this.nextLoop++}`;
      this.loops.set(dev, { file: last, ino: `${st.ino} 7:${this.nextLoop}` });
      return done(0, `${dev}\n`);
    }
    if (argv[1] === '--list') {
      const l = this.loops.get(last);
      return l === undefined ? done(1) : done(0, `${l.ino}\n`);
    }
    if (argv[1] === '-d') {
      if (!this.loops.delete(last)) return done(1, '', `losetup: ${last}: detach failed: No such device or address`);
      return done(0);
    }
    return done(127, '', `fake losetup: unexpected ${argv.join(' ')}`);
  }

  private async mount(argv: string[], done: (code: number, out?: string, err?: string) => CommandResult): Promise<CommandResult> {
    const args = argv.slice(1);
    const options: string[] = [];
    const positional: string[] = [];
    for (let i = 0; i < args.length; i++) {
      const a = args[i] as string;
      if (a === '-o' || a === '-t') {
        if (a === '-o') options.push(...(args[i + 1] ?? '').split(','));
        i++;
      } else {
        positional.push(a);
      }
    }
    if (options.includes('remount')) return done(positional.length === 1 && this.mounts.has(positional[0] as string) ? 0 : 32, '', 'mount: not mounted');
    const [source, target] = positional;
    if (source === undefined || target === undefined) return done(1, '', 'mount: bad usage');
    if (this.mounts.has(target)) return done(32, '', `mount: ${target}: already mounted`);
    if (!(await exists(target))) return done(32, '', `mount: ${target}: mount point does not exist.`);
    if (options.includes('bind')) {
      this.mounts.set(target, { source, content: null });
      return done(0);
    }
    let content: string | undefined;
    if (source === this.stateDevice) content = this.stateContent;
    const loop = this.loops.get(source);
    if (loop !== undefined) {
      const id = await readImageIdentity(loop.file);
      if (id?.fs === 'ext2' && id.id !== null) content = path.join(this.fsDir, id.id);
    }
    if (content === undefined) return done(32, '', `mount: ${target}: special device ${source} does not exist.`);
    if ([...this.mounts.values()].some((m) => m.content === content)) return done(32, '', `fake mount: ${source} is already mounted elsewhere`);
    if ((await readdir(target)).length > 0) return done(32, '', `fake mount: ${target} is not empty`);
    await rmdir(target);
    await rename(content, target);
    this.mounts.set(target, { source, content });
    return done(0);
  }
}

export interface FakeHost {
  tmp: string;
  /** The agent's --root. */
  root: string;
  kernel: FakeKernel;
  /** UUIDs of the images active.img and passive.img held at the start. */
  ids: { active: string; passive: string };
  /** Path of a file on COS_STATE, wherever its content is now. */
  statePath(rel: string): string;
  close(): Promise<void>;
}

/**
 * A host booted from `booted`, laid out as cos-host.ts lays out a real one (COS_STATE with cOS/active.img and
 * cOS/passive.img, grub_oem_env, boot_assessment, grub2/grub.cfg; /proc/cmdline; /etc/cos/config), but with COS_STATE
 * a directory behind `stateDevice` and the images sparse files carrying an ext2 superblock.
 */
export async function createFakeHost(opts: {
  booted: 'active' | 'passive';
  stateDevice: string;
  /** Called with each argv before the fake tool acts (awaited). */
  onCommand?: (argv: readonly string[]) => void | Promise<void>;
}): Promise<FakeHost> {
  const tmp = await mkdtemp(path.join(tmpdir(), 'fake-cos-host-'));
  const root = path.join(tmp, 'root');
  const fsDir = path.join(tmp, 'fs');
  const state = path.join(tmp, 'partitions', 'state');
  const ids = { active: randomUUID(), passive: randomUUID() };
  await mkdir(path.join(state, 'cOS'), { recursive: true });
  for (const [slot, label, version] of [['active', 'COS_ACTIVE', '0.8.10'], ['passive', 'COS_PASSIVE', '0.8.9']] as const) {
    const img = path.join(state, `cOS/${slot}.img`);
    await writeFile(img, '');
    await truncate(img, 32 * 1024 * 1024);
    await writeExt2Superblock(img, ids[slot], label);
    const content = path.join(fsDir, ids[slot]);
    await mkdir(path.join(content, 'etc'), { recursive: true });
    await writeFile(path.join(content, 'etc/os-release'), `NAME="cOS"\nVERSION="${version}"\nGRUB_ENTRY_NAME="cOS ${version}"\n`);
  }
  await updateGrubEnvFile(path.join(state, 'grub_oem_env'), { default_menu_entry: 'cOS' }, { create: true });
  await updateGrubEnvFile(path.join(state, 'boot_assessment'), {}, { create: true });
  await mkdir(path.join(state, 'grub2'), { recursive: true });
  await writeFile(path.join(state, 'grub2/grub.cfg'), GRUB_CFG);

  await mkdir(path.join(root, 'proc'), { recursive: true });
  await writeFile(path.join(root, 'proc/cmdline'), cosCmdline(opts.booted, 'img'));
  await mkdir(path.join(root, 'etc/cos'), { recursive: true });
  await writeFile(path.join(root, 'etc/cos/config'), 'DEFAULT_IMAGE_SIZE=48\n');
  await writeFile(path.join(root, 'etc/os-release'), 'NAME="cOS"\nID=cos\nVERSION="0.8.10"\n');
  await mkdir(path.join(root, 'run/cos'), { recursive: true });
  await mkdir(path.join(root, 'oem'), { recursive: true });
  await mkdir(path.join(root, 'tmp'), { recursive: true });

  const kernel = new FakeKernel({ fsDir, stateDevice: opts.stateDevice, stateContent: state, ...(opts.onCommand ? { onCommand: opts.onCommand } : {}) });
  return {
    tmp,
    root,
    kernel,
    ids,
    statePath: (rel) => path.join(kernel.stateDir(), rel),
    close: () => rm(tmp, { recursive: true, force: true }),
  };
}
