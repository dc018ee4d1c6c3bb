/**
 * VM-test helper: the guest initrd. A busybox-static ash `/init` that does what cOS's dracut modules do on a normal
 * boot (cos-layout.md 1.4), in the few steps a test needs:
 *
 * - `cos-img/filename=/cOS/active.img root=LABEL=COS_ACTIVE` (what bootargs.cfg gives entries cos / fallback, and an
 *   img recovery): look for the partition that holds the image among LABEL=COS_STATE and LABEL=COS_RECOVERY (first one
 *   that has the file wins, like cos-loop-img), mount it READ-ONLY at /run/initramfs/cos-state, loop-mount the image
 *   read-only at /run/rootfsbase and check that its filesystem label is the one root= names;
 * - `root=live:LABEL=COS_RECOVERY rd.live.dir=/ rd.live.squashimg=/cOS/recovery.squashfs` (squashfs recovery): mount
 *   COS_RECOVERY read-only at /run/initramfs/live and the squashfs at /run/rootfsbase;
 * - then a tmpfs at /run/overlay and an overlay (lower /run/rootfsbase) on /sysroot, since systemd needs a writable
 *   `/`; /run, /dev, /proc, /sys are moved into it and `switch_root /sysroot /sbin/init`.
 *
 * Serial console markers (one line each, key=value): `COSVM-INITRD root=... img=... mode=img|live`,
 * `COSVM-STATE dev=... label=... mnt=...`, `COSVM-LOOP label=<fs label of the slot> img=... dev=<loop> type=...`,
 * `COSVM-SWITCHROOT init=...`; on any failure `COSVM-INITRD-FAIL <reason>` and an immediate power-off, so a broken
 * boot ends the VM at once instead of running into the test's timeout.
 *
 * Cached as `initrd-<hash>.img` (gzip newc cpio).
 */
import { mkdir, readdir, readFile, rm, symlink, writeFile, copyFile, chmod } from 'node:fs/promises';
import { createGzip } from 'node:zlib';
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';
import { cached, fileHash, hashKey, sourceOf } from './cache.ts';
import { run } from './exec.ts';
import type { GuestKernel } from './kernel.ts';

/** Modules the initrd loads (with their dependencies, in modules.dep order); ext4 is built into the cloud kernel. */
export const INITRD_MODULES: readonly string[] = ['virtio_pci', 'virtio_blk', 'loop', 'squashfs', 'overlay'];

const BUSYBOX = '/bin/busybox';

export const INIT_SCRIPT = `#!/bin/sh
# cos-agent VM tests: cOS-like initrd (see vm-tests/lib/initrd.ts)
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev; mount -t tmpfs -o mode=0755 tmpfs /run
up() { cut -d' ' -f1 /proc/uptime; }
fail() { echo "COSVM-INITRD-FAIL $* uptime=$(up)"; sleep 1; poweroff -f; sleep 10; }
read -r cmdline < /proc/cmdline
img=; root=; squash=; livedir=/
for x in $cmdline; do case $x in
  cos-img/filename=*) img=\${x#*=};;
  root=*) root=\${x#root=};;
  rd.live.squashimg=*) squash=\${x#*=};;
  rd.live.dir=*) livedir=\${x#*=};;
esac; done
mode=img; case $root in live:*) mode=live;; esac
echo "COSVM-INITRD root=$root img=$img squashimg=$squash mode=$mode uptime=$(up)"
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || fail "insmod $m"; done
# ext2/3/4 superblock volume label (16 bytes at byte 1144)
fslabel() { dd if="$1" bs=1 skip=1144 count=16 2>/dev/null | tr -d '\\000'; }
mkdir -p /run/rootfsbase /run/overlay /sysroot
if [ $mode = img ]; then
  [ -n "$img" ] || fail "no cos-img/filename on the cmdline"
  want=\${root#LABEL=}
  mnt=/run/initramfs/cos-state; mkdir -p $mnt
  found=; i=0
  while [ -z "$found" ]; do
    for l in COS_STATE COS_RECOVERY; do
      dev=$(findfs LABEL=$l 2>/dev/null) || continue
      mount -o ro "$dev" $mnt 2>/dev/null || continue
      if [ -f "$mnt$img" ]; then found=$dev; echo "COSVM-STATE dev=$dev label=$l mnt=$mnt"; break; fi
      umount $mnt
    done
    i=$((i+1)); [ -n "$found" ] || { [ $i -gt 200 ] && fail "no partition holds $img"; sleep 0.05; }
  done
  mount -o loop,ro "$mnt$img" /run/rootfsbase || fail "loop mount $img"
  loopdev=$(awk '$2=="/run/rootfsbase"{print $1}' /proc/mounts)
  label=$(fslabel $loopdev)
  echo "COSVM-LOOP label=$label img=$img dev=$loopdev type=ext2 uptime=$(up)"
  [ "$label" = "$want" ] || fail "root=$root but $img is labelled '$label'"
else
  want=\${root#live:LABEL=}
  mnt=/run/initramfs/live; mkdir -p $mnt
  i=0; while ! dev=$(findfs LABEL=$want 2>/dev/null); do
    i=$((i+1)); [ $i -gt 200 ] && fail "no device LABEL=$want"; sleep 0.05; done
  mount -o ro "$dev" $mnt || fail "mount $dev"
  echo "COSVM-STATE dev=$dev label=$want mnt=$mnt"
  f=$mnt\${livedir%/}$squash
  [ -f "$f" ] || fail "no $f"
  mount -t squashfs -o loop,ro "$f" /run/rootfsbase || fail "loop mount $squash"
  loopdev=$(awk '$2=="/run/rootfsbase"{print $1}' /proc/mounts)
  echo "COSVM-LOOP label=$want img=$squash dev=$loopdev type=squashfs uptime=$(up)"
fi
mount -t tmpfs -o mode=0755 tmpfs /run/overlay && mkdir -p /run/overlay/upper /run/overlay/work || fail "tmpfs"
mount -t overlay overlay -o lowerdir=/run/rootfsbase,upperdir=/run/overlay/upper,workdir=/run/overlay/work /sysroot || fail "overlay"
for d in run dev proc sys; do mkdir -p /sysroot/$d; done
mount --move /run /sysroot/run; mount --move /dev /sysroot/dev
mount --move /proc /sysroot/proc; mount --move /sys /sysroot/sys
init=/sbin/init; [ -x /sysroot$init ] || [ -L /sysroot$init ] || init=/lib/systemd/systemd
echo "COSVM-SWITCHROOT init=$init uptime=$(cut -d' ' -f1 /sysroot/proc/uptime)"
exec switch_root /sysroot $init
`;

/** Module names in load order (dependencies first), resolved from modules.dep; built-in modules are skipped. */
export async function resolveModules(modulesDir: string, wanted: readonly string[]): Promise<Array<{ name: string; file: string }>> {
  const dep = new Map<string, { file: string; deps: string[] }>();
  const norm = (f: string): string => path.basename(f).replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_');
  for (const line of (await readFile(path.join(modulesDir, 'modules.dep'), 'utf8')).split('\n')) {
    const [file, rest] = line.split(':');
    if (!file || rest === undefined) continue;
    dep.set(norm(file), { file, deps: rest.trim().split(/\s+/).filter(Boolean).map(norm) });
  }
  const builtin = new Set(
    (await readFile(path.join(modulesDir, 'modules.builtin'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(norm),
  );
  const order: Array<{ name: string; file: string }> = [];
  const visit = (name: string): void => {
    const n = name.replace(/-/g, '_');
    if (order.some((o) => o.name === n)) return;
    const d = dep.get(n);
    if (!d) {
      if (builtin.has(n)) return;
      throw new Error(`kernel module ${name} not in ${modulesDir}/modules.dep`);
    }
    for (const x of d.deps) visit(x);
    order.push({ name: n, file: path.join(modulesDir, d.file) });
  };
  for (const w of wanted) visit(w);
  return order;
}

async function listTree(dir: string, rel = '.'): Promise<string[]> {
  const out = [rel];
  for (const e of await readdir(path.join(dir, rel), { withFileTypes: true })) {
    const r = `${rel}/${e.name}`;
    if (e.isDirectory()) out.push(...(await listTree(dir, r)));
    else out.push(r);
  }
  return out;
}

/** The cached initrd (gzip newc cpio) for `kernel`. */
export async function buildInitrd(kernel: GuestKernel, modules: readonly string[] = INITRD_MODULES): Promise<{ path: string; key: string }> {
  const mods = await resolveModules(kernel.modulesDir, modules);
  const key = hashKey(kernel.key, kernel.release, mods.map((m) => m.name), INIT_SCRIPT, await fileHash(BUSYBOX), sourceOf(import.meta.url));
  const file = await cached(`initrd-${key}.img`, async (tmp) => {
    const root = `${tmp}.d`;
    await rm(root, { recursive: true, force: true });
    try {
      for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys', 'run', 'sysroot', 'lib/modules']) await mkdir(path.join(root, d), { recursive: true });
      await copyFile(BUSYBOX, path.join(root, 'bin/busybox'));
      await chmod(path.join(root, 'bin/busybox'), 0o755);
      // `busybox --list` names busybox itself: linking that would replace the binary by a self-symlink (ELOOP)
      for (const applet of (await run([BUSYBOX, '--list'])).stdout.split('\n').filter((a) => a && a !== 'busybox')) {
        await symlink('busybox', path.join(root, 'bin', applet));
      }
      for (const m of mods) await copyFile(m.file, path.join(root, 'lib/modules', `${m.name}.ko`));
      await writeFile(path.join(root, 'lib/modules/order'), `${mods.map((m) => m.name).join(' ')}\n`);
      await writeFile(path.join(root, 'init'), INIT_SCRIPT, { mode: 0o755 });
      const list = (await listTree(root)).join('\n');
      await run(['cpio', '-o', '-H', 'newc', '--quiet', '--owner=0:0', '-O', `${tmp}.cpio`], { cwd: root, stdin: `${list}\n` });
      await pipeline(createReadStream(`${tmp}.cpio`), createGzip({ level: 6 }), createWriteStream(tmp));
    } finally {
      await rm(root, { recursive: true, force: true });
      await rm(`${tmp}.cpio`, { force: true });
    }
  });
  return { path: file, key };
}
