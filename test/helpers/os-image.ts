/** Test helper: a small but realistic cOS OS image (merged /usr, os-release with GRUB_ENTRY_NAME) for a version. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildLayout, makeTar, type Compression, type TarEntry } from './oci-layout.ts';
import type { TestRegistry } from './registry.ts';

export function osTree(version: string): TarEntry[] {
  return [
    { name: 'etc/' },
    { name: 'etc/os-release', content: `NAME="cOS"\nID=cos\nVERSION="${version}"\nPRETTY_NAME="cOS ${version}"\nGRUB_ENTRY_NAME="cOS ${version}"\n` },
    { name: 'etc/cos-slot-version', content: `image ${version}\n` },
    { name: 'etc/cos/' },
    { name: 'etc/cos/bootargs.cfg', content: 'set kernel=/boot/vmlinuz\nset initramfs=/boot/initrd\n' },
    { name: 'boot/' },
    { name: 'boot/vmlinuz', content: `kernel ${version}\n` },
    { name: 'boot/initrd', content: `initrd ${version}\n` },
    { name: 'usr/' },
    { name: 'usr/bin/' },
    { name: 'usr/bin/cos-tool', content: '#!/bin/sh\necho ok\n', mode: 0o755 },
    { name: 'usr/lib/' },
    { name: 'usr/lib/libcos.so.1', content: Buffer.alloc(64 * 1024, version) },
    { name: 'bin', type: 'symlink', linkname: 'usr/bin' },
    { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
    { name: 'var/' },
    { name: 'var/lib/' },
  ];
}

/** Builds the image of `version` (plus extra layers) and pushes it to `reg` as `repo:tag`. Returns the manifest digest. */
export async function pushOsImage(
  reg: TestRegistry,
  name: string,
  version: string,
  opts: { extraLayers?: TarEntry[][]; compression?: Compression } = {},
): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'os-image-'));
  try {
    const layers = [{ tar: await makeTar(osTree(version)), compression: opts.compression ?? 'gzip' }];
    for (const extra of opts.extraLayers ?? []) layers.push({ tar: await makeTar(extra), compression: opts.compression ?? 'gzip' });
    const tag = name.split(':')[1] ?? 'latest';
    const desc = await buildLayout(dir, tag, { layers, labels: { 'org.opencontainers.image.version': version } });
    await reg.push(dir, tag, name);
    return desc.digest;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
