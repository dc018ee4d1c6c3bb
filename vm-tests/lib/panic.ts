/**
 * VM-test helper (panic.test.ts): an initrd that never reaches userspace. Its `/init` (busybox-static ash) prints one
 * line `COSVM-PANIC {json}` on the console (the kernel release, the uptime, the cmdline GRUB built) and exits, so the
 * kernel panics ("Attempted to kill init") before any root filesystem is mounted; `panic=5` on the cmdline makes the
 * kernel reboot 5 s later, which ends qemu under `-no-reboot`. Put into a slot image as `/boot/initrd`
 * (buildCosDisk's `slotFiles`), it makes that image a new OS that panics in its initrd, the failure boot assessment's
 * `panic=5` exists for (cos-layout.md 4.5).
 *
 * The cpio (newc) is written here, not by cpio(1): every field is fixed (inode numbers, mtime 0, owner root), so the
 * bytes, and with them the cache key of the disk that holds them, are the same on every run. gzip-compressed
 * (node's gzip header carries no mtime).
 */
import { readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';

export const PANIC_MARKER = 'COSVM-PANIC';

const BUSYBOX = '/bin/busybox';
/** The applets /init uses, as symlinks to busybox. */
const APPLETS: readonly string[] = ['sh', 'mount', 'dmesg', 'cat', 'cut', 'sed', 'printf', 'uname', 'sleep'];

export const PANIC_INIT: string = String.raw`#!/bin/sh
# cos-agent VM tests (panic.test.ts, vm-tests/lib/panic.ts): an initrd that never reaches userspace. One marker line,
# then /init exits and the kernel panics ("Attempted to kill init"); panic=5 reboots it.
export PATH=/bin
mount -t proc proc /proc
# kernel messages at the console loglevel would interleave with the marker line (the panic itself is printed anyway)
dmesg -n 1
read -r cmdline < /proc/cmdline
esc() { printf %s "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
printf '\n%s {"initrd":"panic","release":"%s","uptime":%s,"cmdline":"%s"}\n' COSVM-PANIC "$(esc "$(uname -r)")" "$(cut -d' ' -f1 /proc/uptime)" "$(esc "$cmdline")"
# let the UART drain before the panic stops the machine
sleep 1
exit 1
`;

export interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/** PURE: a newc cpio archive of `entries` (owner root, mtime 0, inodes numbered in order), with its trailer. */
export function newcCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let size = 0;
  const push = (b: Buffer): void => {
    parts.push(b);
    size += b.length;
  };
  const pad = (): void => {
    if (size % 4 !== 0) push(Buffer.alloc(4 - (size % 4)));
  };
  const hex = (n: number): string => n.toString(16).padStart(8, '0');
  const all: CpioEntry[] = [...entries, { name: 'TRAILER!!!', mode: 0 }];
  for (const [i, e] of all.entries()) {
    const data = e.data ?? Buffer.alloc(0);
    const trailer = e.name === 'TRAILER!!!';
    const isDir = (e.mode & 0o170000) === S_IFDIR;
    const fields = [
      trailer ? 0 : i + 1, // ino
      e.mode,
      0, // uid
      0, // gid
      trailer ? 1 : isDir ? 2 : 1, // nlink
      0, // mtime
      data.length,
      0, // devmajor
      0, // devminor
      e.rdev?.[0] ?? 0,
      e.rdev?.[1] ?? 0,
      Buffer.byteLength(e.name) + 1, // namesize, NUL included
      0, // check
    ];
    push(Buffer.from(`070701${fields.map(hex).join('')}`, 'latin1'));
    push(Buffer.from(`${e.name}\0`, 'utf8'));
    pad();
    if (data.length > 0) {
      push(data);
      pad();
    }
  }
  return Buffer.concat(parts);
}

/** The panicking initrd (gzip newc cpio): /init, busybox-static and its applet links, /dev/console, /proc. */
export async function panicInitrd(): Promise<Buffer> {
  const busybox = await readFile(BUSYBOX);
  const entries: CpioEntry[] = [
    { name: 'bin', mode: S_IFDIR | 0o755 },
    { name: 'bin/busybox', mode: S_IFREG | 0o755, data: busybox },
    ...APPLETS.map((a) => ({ name: `bin/${a}`, mode: S_IFLNK | 0o777, data: Buffer.from('busybox') })),
    { name: 'dev', mode: S_IFDIR | 0o755 },
    { name: 'dev/console', mode: S_IFCHR | 0o600, rdev: [5, 1] },
    { name: 'proc', mode: S_IFDIR | 0o755 },
    { name: 'init', mode: S_IFREG | 0o755, data: Buffer.from(PANIC_INIT) },
  ];
  return gzipSync(newcCpio(entries), { level: 9 });
}
