/**
 * VM-test helper: the guest root filesystem put into the slot images.
 *
 * The cached debootstrap tree (debootstrap.ts) is unpacked into a work dir and completed so the cOS boot chain can
 * boot it: the guest kernel's modules in /usr/lib/modules/<release> (udev loads virtio_net & co from there),
 * /boot/vmlinuz and /boot/initrd (bootargs.cfg names these), the rendered cOS /etc/cos/bootargs.cfg, a fixed
 * machine-id (an empty one would make systemd run its first-boot preset logic), serial-getty@ttyS0 masked (its
 * vhangup cuts off what test units write to ttyS0, vm-boot.md section 4), and systemd-networkd with DHCP on every
 * ethernet link so the guest reaches the host at 10.0.2.2 through QEMU user networking.
 *
 * Hooks for tests: `extraTarballs` (unpacked at / in order, e.g. the project's dist/cos-agent-<v>-linux-<arch>.tar.gz),
 * `enableUnits` (units a tarball shipped, enabled with `systemctl --root` as a Dockerfile's `RUN systemctl enable`
 * does), `files` and `units` (written under /etc/systemd/system and enabled with `systemctl --root`).
 */
import { mkdir, writeFile, copyFile, symlink, rm, chmod } from 'node:fs/promises';
import path from 'node:path';
import { fileHash, hashKey, sourceOf } from './cache.ts';
import { debootstrapTarball, type DebootstrapOptions } from './debootstrap.ts';
import { run } from './exec.ts';
import { renderedBootargs } from './grub.ts';
import type { GuestKernel } from './kernel.ts';

export interface GuestFile {
  /** Absolute path inside the guest. */
  path: string;
  content: string | Buffer;
  /** Default 0o644. */
  mode?: number;
}

export interface GuestUnit {
  /** Unit file name, e.g. cosvm-result.service. */
  name: string;
  content: string;
  /** `systemctl --root <tree> enable` it (uses its [Install] section). Default true. */
  enable?: boolean;
}

export interface RootfsOptions {
  debootstrap?: DebootstrapOptions;
  /** Tarballs unpacked at / in this order (GNU tar, compression detected; directory symlinks such as /lib kept). */
  extraTarballs?: readonly string[];
  /** Units already in the tree (e.g. shipped by a tarball under /usr/lib/systemd/system) to enable with
   * `systemctl --root=<tree> enable`, after the tarballs are unpacked and before `files` are written. */
  enableUnits?: readonly string[];
  files?: readonly GuestFile[];
  units?: readonly GuestUnit[];
  /** Default cos-vm. */
  hostname?: string;
}

export const DHCP_NETWORK = `[Match]
Type=ether

[Network]
DHCP=ipv4
`;

/** A stable cache-key description of the options (tarballs and files by content hash). */
export async function rootfsKey(opts: RootfsOptions): Promise<string> {
  const { tarball, key } = await debootstrapTarball(opts.debootstrap);
  const tarballs: string[] = [];
  for (const t of opts.extraTarballs ?? []) tarballs.push(await fileHash(t));
  return hashKey(
    key,
    path.basename(tarball),
    tarballs,
    opts.enableUnits ?? [],
    (opts.files ?? []).map((f) => [f.path, hashKey(Buffer.from(f.content).toString('base64')), f.mode ?? 0o644]),
    (opts.units ?? []).map((u) => [u.name, u.content, u.enable ?? true]),
    opts.hostname ?? 'cos-vm',
    renderedBootargs(),
    sourceOf(import.meta.url),
  );
}

function inTree(tree: string, p: string): string {
  const rel = path.posix.normalize(p).replace(/^\/+/, '');
  if (rel.startsWith('..')) throw new Error(`guest path outside the tree: ${p}`);
  return path.join(tree, rel);
}

/** Fills `tree` (empty or absent) with the guest root filesystem. */
export async function prepareRootfs(tree: string, kernel: GuestKernel, initrd: string, opts: RootfsOptions = {}): Promise<void> {
  const { tarball } = await debootstrapTarball(opts.debootstrap);
  await mkdir(tree, { recursive: true });
  await run(['tar', '--zstd', '--numeric-owner', '--xattrs', '-C', tree, '-xf', tarball]);
  // what the guest never reads at run time (apt's package lists, translations, docs, man pages: 100 of debootstrap's
  // 226 MiB), as slim container bases drop them: every upgrade in a scenario downloads and unpacks this tree under TCG
  for (const dir of ['var/lib/apt/lists', 'usr/share/locale', 'usr/share/doc', 'usr/share/man', 'usr/share/info']) {
    await rm(path.join(tree, dir), { recursive: true, force: true });
    await mkdir(path.join(tree, dir), { recursive: true });
  }
  // kernel, initrd, modules: what GRUB loads from the image and what udev needs inside it
  await mkdir(path.join(tree, 'usr/lib/modules'), { recursive: true });
  await run(['cp', '-a', kernel.modulesDir, path.join(tree, 'usr/lib/modules/')]);
  await mkdir(path.join(tree, 'boot'), { recursive: true });
  await copyFile(kernel.vmlinuz, path.join(tree, 'boot/vmlinuz'));
  await copyFile(initrd, path.join(tree, 'boot/initrd'));
  await mkdir(path.join(tree, 'etc/cos'), { recursive: true });
  await writeFile(path.join(tree, 'etc/cos/bootargs.cfg'), renderedBootargs());
  const hostname = opts.hostname ?? 'cos-vm';
  await writeFile(path.join(tree, 'etc/hostname'), `${hostname}\n`);
  await writeFile(path.join(tree, 'etc/hosts'), `127.0.0.1\tlocalhost\n127.0.1.1\t${hostname}\n`);
  await writeFile(path.join(tree, 'etc/machine-id'), `${hashKey('cos-vm machine-id', hostname)}${hashKey('second half', hostname)}\n`);
  await writeFile(path.join(tree, 'etc/fstab'), '# cos-agent VM test guest: the initrd mounts everything\n');
  const systemDir = path.join(tree, 'etc/systemd/system');
  await mkdir(systemDir, { recursive: true });
  await rm(path.join(systemDir, 'serial-getty@ttyS0.service'), { force: true });
  await symlink('/dev/null', path.join(systemDir, 'serial-getty@ttyS0.service'));
  // ttyS0 is both the console and the channel of the COSVM-RESULT lines: systemd's ephemeral status ("A start job is
  // running", "Job ... running (2min 53s / no limit)") would land in the middle of a long result line. Errors still show.
  await mkdir(path.join(tree, 'etc/systemd/system.conf.d'), { recursive: true });
  await writeFile(path.join(tree, 'etc/systemd/system.conf.d/50-cosvm-console.conf'), '[Manager]\nShowStatus=error\n');
  await mkdir(path.join(tree, 'etc/systemd/network'), { recursive: true });
  await writeFile(path.join(tree, 'etc/systemd/network/20-cosvm-dhcp.network'), DHCP_NETWORK);
  await run(['systemctl', `--root=${tree}`, 'enable', 'systemd-networkd.service']);
  for (const t of opts.extraTarballs ?? []) {
    await run(['tar', '--numeric-owner', '--keep-directory-symlink', '-C', tree, '-xf', t]);
  }
  if ((opts.enableUnits ?? []).length > 0) await run(['systemctl', `--root=${tree}`, 'enable', ...(opts.enableUnits ?? [])]);
  for (const f of opts.files ?? []) {
    const dest = inTree(tree, f.path);
    await mkdir(path.dirname(dest), { recursive: true });
    await writeFile(dest, f.content);
    await chmod(dest, f.mode ?? 0o644);
  }
  for (const u of opts.units ?? []) {
    await writeFile(path.join(systemDir, u.name), u.content);
    if (u.enable ?? true) await run(['systemctl', `--root=${tree}`, 'enable', u.name]);
  }
}

/** Size of a directory tree in MiB (du, apparent sizes of allocated files). */
export async function treeMiB(tree: string): Promise<number> {
  const out = (await run(['du', '-s', '--block-size=1M', '-x', tree])).stdout;
  return Number(out.split(/\s+/)[0]);
}
