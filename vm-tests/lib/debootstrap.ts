/**
 * VM-test helper: a minimal Debian 12 root filesystem for the guest, made by
 * `debootstrap --variant=minbase --include=systemd-sysv,udev,dbus,kmod,squashfs-tools bookworm` (vm-boot.md section 4:
 * without udev no .device unit appears and boot stalls 90 s; without kmod kmod-static-nodes fails; squashfs-tools
 * because the agent builds squashfs recovery images with mksquashfs, which elemental also needs in the OS image), from
 * the Debian mirror apt uses.
 * Cached as the tarball `debootstrap-<hash>.tar.zst`; the tree is not kept.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { cacheDir, cached, hashKey, removeTree } from './cache.ts';
import { run } from './exec.ts';

/** Bump when the debootstrap recipe below changes (the key does not hash this file: a rebuild costs minutes). */
export const RECIPE_VERSION = 1;

export const DEFAULT_SUITE = 'bookworm';
export const DEFAULT_PACKAGES: readonly string[] = ['systemd-sysv', 'udev', 'dbus', 'kmod', 'squashfs-tools'];

export interface DebootstrapOptions {
  suite?: string;
  /** Packages on top of minbase (default DEFAULT_PACKAGES). */
  include?: readonly string[];
  /** Default: $COS_AGENT_VM_MIRROR, else the first URIs: of apt's deb822 sources, else deb.debian.org. */
  mirror?: string;
}

/** The Debian mirror apt already uses on this machine. */
export async function aptMirror(): Promise<string> {
  const env = process.env['COS_AGENT_VM_MIRROR'];
  if (env) return env;
  const dir = '/etc/apt/sources.list.d';
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.sources')).sort();
  for (const f of files) {
    const text = await readFile(path.join(dir, f), 'utf8');
    for (const stanza of text.split(/\n\s*\n/)) {
      const uri = /^URIs:\s*(\S+)/m.exec(stanza)?.[1];
      if (uri && /^Suites:.*\bbookworm\b/m.test(stanza) && !uri.includes('security')) return uri;
    }
  }
  const list = await readFile('/etc/apt/sources.list', 'utf8').catch(() => '');
  const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/m.exec(list);
  return m?.[1] ?? 'http://deb.debian.org/debian';
}

/** Path of the cached tarball (zstd) of the debootstrapped tree, building it when absent. */
export async function debootstrapTarball(opts: DebootstrapOptions = {}): Promise<{ tarball: string; key: string }> {
  const suite = opts.suite ?? DEFAULT_SUITE;
  const include = [...(opts.include ?? DEFAULT_PACKAGES)].sort();
  const mirror = opts.mirror ?? (await aptMirror());
  const key = hashKey(suite, include, mirror, RECIPE_VERSION);
  const tarball = await cached(`debootstrap-${suite}-${key}.tar.zst`, async (tmp) => {
    const tree = path.join(cacheDir(), `tree-debootstrap-${process.pid}`);
    await removeTree(tree);
    try {
      await run(['debootstrap', '--variant=minbase', `--include=${include.join(',')}`, suite, tree, mirror], { timeoutMs: 15 * 60_000 });
      // apt's downloaded .debs are not part of the system
      await run(['find', path.join(tree, 'var/cache/apt/archives'), '-name', '*.deb', '-delete']);
      await run(['tar', '--zstd', '--numeric-owner', '--xattrs', '-C', tree, '-cf', tmp, '.']);
    } finally {
      await removeTree(tree);
    }
  });
  return { tarball, key };
}
