/**
 * VM-test helper: the guest kernel, taken from the Debian archive alone (vm-boot.md "Environment"): `apt-get download`
 * of the linux-image-<ver>-cloud-amd64 package the archive offers now, `dpkg -x` (no install on the host), then
 * `depmod -b` on the extracted tree. The cloud flavour has ext4 built in; virtio, loop, squashfs and overlay are modules.
 * Cached as `kernel-<package>_<version>/` (the extracted tree).
 */
import { mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { cached, hashKey, sourceOf } from './cache.ts';
import { run } from './exec.ts';

export interface GuestKernel {
  /** Debian package name, e.g. linux-image-6.1.0-57-cloud-amd64. */
  package: string;
  /** Debian package version, e.g. 6.1.192-3. */
  packageVersion: string;
  /** Kernel release (uname -r), e.g. 6.1.0-57-cloud-amd64. */
  release: string;
  /** The extracted package root (holds boot/ and lib/modules/). */
  root: string;
  vmlinuz: string;
  /** <root>/lib/modules/<release>, depmod'ed. */
  modulesDir: string;
  /** Cache key part for things built from this kernel. */
  key: string;
}

/** The concrete package behind the meta package linux-image-<flavour>-amd64, and its candidate version. */
export async function resolveKernelPackage(flavour = 'cloud'): Promise<{ name: string; version: string }> {
  const meta = flavour === 'amd64' ? 'linux-image-amd64' : `linux-image-${flavour}-amd64`;
  const deps = (await run(['apt-cache', 'depends', meta])).stdout;
  const name = /Depends:\s+(linux-image-\S+)/.exec(deps)?.[1];
  if (!name) throw new Error(`apt-cache depends ${meta}: no linux-image dependency in:\n${deps}`);
  const policy = (await run(['apt-cache', 'policy', name])).stdout;
  const version = /Candidate:\s+(\S+)/.exec(policy)?.[1];
  if (!version || version === '(none)') throw new Error(`apt-cache policy ${name}: no candidate version`);
  return { name, version };
}

export async function guestKernel(flavour = 'cloud'): Promise<GuestKernel> {
  const pkg = await resolveKernelPackage(flavour);
  const key = hashKey(pkg, sourceOf(import.meta.url));
  const root = await cached(`kernel-${pkg.name}_${pkg.version}-${key}`, async (tmp) => {
    const debs = path.join(tmp, 'debs');
    await mkdir(debs, { recursive: true });
    await run(['apt-get', 'download', `${pkg.name}=${pkg.version}`], { cwd: debs });
    const [deb] = (await readdir(debs)).filter((f) => f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${pkg.name}: no .deb`);
    await run(['dpkg', '-x', path.join(debs, deb), path.join(tmp, 'root')]);
    const [release] = await readdir(path.join(tmp, 'root/lib/modules'));
    if (!release) throw new Error(`${deb}: no lib/modules/<release>`);
    await run(['depmod', '-b', path.join(tmp, 'root'), release]);
    await run(['rm', '-rf', debs]);
  });
  const dir = path.join(root, 'root');
  const [release] = await readdir(path.join(dir, 'lib/modules'));
  if (!release) throw new Error(`${dir}: no kernel modules`);
  return {
    package: pkg.name,
    packageVersion: pkg.version,
    release,
    root: dir,
    vmlinuz: path.join(dir, 'boot', `vmlinuz-${release}`),
    modulesDir: path.join(dir, 'lib/modules', release),
    key,
  };
}
