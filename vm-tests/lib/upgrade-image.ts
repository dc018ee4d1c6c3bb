/**
 * VM-test helper: the OS images a guest upgrades to, made as a derivative makes them, pushed to the host's registry
 * and signed with the VM tests' key, which the guest image trusts.
 *
 * - `vmSigningKey()`: one P-256 key pair for the VM tests, kept in the cache (`vm-signing-key.pem`, made once), so
 *   that the disks that trust it stay cached. `trustFiles()`: what the guest needs to verify with it (cosign's format,
 *   key only, no transparency log): /etc/cos-agent/policy.yaml naming /etc/cos-agent/keys/vmtest.pub, the key, and
 *   /etc/cos/config with the slot image size of the disk and uncompressed squashfs recovery images.
 * - `buildUpgradeImage()`: an OCI image layout (cached as `oci-<hash>/`), built like packaging/Dockerfile.snippet
 *   says, with umoci (no Docker daemon): a base image holding the guest root filesystem (lib/rootfs.ts, the same
 *   prepareRootfs the disks use, with the scenario's files: os-release VERSION, units, trust files), then
 *   test/helpers/derivative.ts's two instructions on top: ADD the package tarball at /, RUN systemctl enable the
 *   snippet's units. So what the guest upgrades to is a derivative image, three gzip layers.
 * - `pushSigned()`: pushes it to the test registry (skopeo) as `<repo>:<tag>`, signs the manifest digest with the key
 *   (cosign's legacy `sha256-<hex>.sig` tag, simple-signing payload naming the repository as the guest sees it,
 *   `10.0.2.2:<port>/<repo>`), and returns the reference the guest pulls.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { cacheDir, cached, fileHash, hashKey, removeTree, sourceOf } from './cache.ts';
import { run } from './exec.ts';
import { buildInitrd } from './initrd.ts';
import { guestKernel } from './kernel.ts';
import { prepareRootfs, rootfsKey, type GuestFile, type RootfsOptions } from './rootfs.ts';
import { agentDiskOptions, agentPackage, COS_FSTAB, dockerfileEnabledUnits, RESIDENT_COSD } from './agent.ts';
import { buildCosDisk, type CosDisk } from './disk.ts';
import { fallbackReporter, osRelease } from './fallback.ts';
import { makeDerivativeImage, readSnippet } from '../../test/helpers/derivative.ts';
import { startRegistry, type TestRegistry } from '../../test/helpers/registry.ts';
import type { TestFn } from 'ava';
import { killAllVms } from './qemu.ts';
import { pushLegacySignature } from '../../test/helpers/sign-push.ts';
import { signImageWithKey, type KeyPair } from '../../test/helpers/sigstore.ts';

/** Where the guest finds its trust (policy.yaml's default rule names the key). */
export const GUEST_KEY_PATH = '/etc/cos-agent/keys/vmtest.pub';
export const GUEST_POLICY_PATH = '/etc/cos-agent/policy.yaml';
/** The host's 127.0.0.1 as a QEMU user-networking guest reaches it. */
export const GUEST_HOST_ADDR = '10.0.2.2';

/** The VM tests' signing key, made once and kept in the cache. */
export async function vmSigningKey(): Promise<KeyPair> {
  const file = path.join(cacheDir(), 'vm-signing-key.pem');
  let pem = await readFile(file, 'utf8').catch(() => undefined);
  if (pem === undefined) {
    await mkdir(cacheDir(), { recursive: true });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    // two processes may race: the first rename wins, and both then read the winner
    await rename(tmp, file).catch(async () => rm(tmp, { force: true }));
    pem = await readFile(file, 'utf8');
  }
  const privateKey = createPrivateKey(pem);
  const publicKey = createPublicKey(privateKey);
  return {
    kind: 'p256',
    privateKey,
    publicKey,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    spki: publicKey.export({ type: 'spki', format: 'der' }),
  };
}

/** The guest files that make it verify images signed with `key` (and size new slot images like the disk's). */
export function trustFiles(key: KeyPair, imageMiB = 1024): GuestFile[] {
  return [
    { path: GUEST_POLICY_PATH, content: `# cos-agent VM tests: images are signed with the test key (cosign format, no transparency log)\ndefault:\n  keys: [${GUEST_KEY_PATH}]\n` },
    { path: GUEST_KEY_PATH, content: key.publicPem },
    // squashfs recovery images uncompressed, like the disk builder's: mksquashfs with xz (elemental's default) takes
    // many minutes under TCG, and GRUB 2.06 reads no lz4
    { path: '/etc/cos/config', content: `DEFAULT_IMAGE_SIZE=${imageMiB}\nSQUASH_COMPRESSION="-noI -noD -noF -noX"\n` },
  ];
}

export interface UpgradeImage {
  /** The OCI layout directory (cached; do not modify). */
  layout: string;
  tag: string;
  /** The manifest digest (what the signature signs). */
  digest: string;
  key: string;
}

/**
 * The derivative image of `rootfs` (its files and units; `extraTarballs` and `enableUnits` must be empty: the package
 * comes in through the snippet's ADD and RUN) with the package tarball `pkg`. Cached by every input.
 */
export async function buildUpgradeImage(opts: { rootfs: RootfsOptions; pkg: string; log?: (line: string) => void }): Promise<UpgradeImage> {
  if ((opts.rootfs.extraTarballs ?? []).length > 0 || (opts.rootfs.enableUnits ?? []).length > 0) {
    throw new Error('buildUpgradeImage: the package is added by the Dockerfile snippet, not by rootfs hooks');
  }
  const [kernel, rkey, pkgHash, snippet] = await Promise.all([guestKernel(), rootfsKey(opts.rootfs), fileHash(opts.pkg), readSnippet()]);
  const initrd = await buildInitrd(kernel);
  const key = hashKey(kernel.key, initrd.key, rkey, pkgHash, snippet, sourceOf(import.meta.url), sourceOf(new URL('../../test/helpers/derivative.ts', import.meta.url)));
  const tag = 'derivative';
  const dir = await cached(`oci-${key}`, async (tmp) => {
    const t0 = Date.now();
    const work = path.join(cacheDir(), `build-oci-${process.pid}`);
    await removeTree(work);
    const layout = path.join(tmp, 'layout');
    const bundle = path.join(work, 'base-bundle');
    try {
      await mkdir(tmp, { recursive: true });
      await run(['umoci', 'init', '--layout', layout]);
      await run(['umoci', 'new', '--image', `${layout}:base`]);
      await run(['umoci', 'config', '--image', `${layout}:base`, '--os', 'linux', '--architecture', 'amd64', '--config.cmd', '/sbin/init']);
      await run(['umoci', 'unpack', '--image', `${layout}:base`, bundle]);
      await prepareRootfs(path.join(bundle, 'rootfs'), kernel, initrd.path, opts.rootfs);
      await run(['umoci', 'repack', '--history.created_by', 'cos-agent VM tests: the guest root filesystem (vm-tests/lib/rootfs.ts)', '--history.created', '2024-01-02T03:04:05Z', '--image', `${layout}:base`, bundle]);
      await removeTree(bundle);
      // The snippet's RUN without the cos-setup units, as the disk's guest (dockerfileEnabledUnits in lib/agent.ts).
      const argv = snippet.run.argv.filter((a) => !a.startsWith('cos-setup-'));
      await makeDerivativeImage({ layout, baseTag: 'base', tag, tarball: opts.pkg, work: path.join(work, 'derivative'), snippet: { ...snippet, run: { line: `RUN ${argv.join(' ')}`, argv } } });
      await run(['umoci', 'gc', '--layout', layout]);
      opts.log?.(`vm-image: built the derivative image in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    } finally {
      await removeTree(work);
    }
  });
  const layout = path.join(dir, 'layout');
  const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (desc === undefined) throw new Error(`${layout} has no tag ${tag}`);
  return { layout, tag, digest: desc.digest, key };
}

export interface PushedImage {
  /** The reference the guest pulls: `10.0.2.2:<port>/<repo>:<tag>`. */
  guestRef: string;
  /** The registry host as the guest names it (`10.0.2.2:<port>`), for its registries.conf. */
  guestRegistry: string;
  digest: string;
}

/** Push `image` to `reg` as `repo:tag` and sign it (cosign legacy .sig tag) with `key` for the guest's reference. */
export async function pushSigned(reg: TestRegistry, image: UpgradeImage, repo: string, tag: string, key: KeyPair): Promise<PushedImage> {
  await reg.push(image.layout, image.tag, `${repo}:${tag}`);
  const port = new URL(reg.url).port;
  const guestRegistry = `${GUEST_HOST_ADDR}:${port}`;
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  const pushed = res.headers.get('docker-content-digest');
  if (pushed !== image.digest) throw new Error(`pushed ${repo}:${tag} has digest ${String(pushed)}, the layout says ${image.digest}`);
  const signed = signImageWithKey({ repo: `${guestRegistry}/${repo}`, digest: image.digest, key });
  await pushLegacySignature(reg, repo, image.digest, [signed.simpleSigning]);
  return { guestRef: `${guestRegistry}/${repo}:${tag}`, guestRegistry, digest: image.digest };
}

/** The version the upgrade scenarios' disk runs, and the one their derivative image brings. */
export const OLD_VERSION = 'cosvm-1.0';
export const NEW_VERSION = 'cosvm-2.0';
const PASSIVE_UUID = '5e1f0b0b-0000-4000-8000-0000000002a2';

export interface UpgradeScenario {
  disk: CosDisk;
  image: UpgradeImage;
  key: KeyPair;
}

/**
 * The disk and image of the upgrade scenarios (upgrade.test.ts, powercut.test.ts): the agent guest with the
 * fallback reporter, trusting the VM key, running OLD_VERSION (passive.img with an identity of its own); the
 * derivative image of the same guest with NEW_VERSION. Both cached: the second caller finds them built.
 */
export async function upgradeScenario(log: (line: string) => void): Promise<UpgradeScenario> {
  const pkg = await agentPackage(log);
  const enabled = await dockerfileEnabledUnits();
  const key = await vmSigningKey();
  const reporter = fallbackReporter();
  const trust = trustFiles(key);
  const disk = await buildCosDisk({ ...agentDiskOptions(pkg.path, enabled, reporter, [...trust, { path: '/usr/lib/os-release', content: osRelease(OLD_VERSION) }]), passiveUuid: PASSIVE_UUID });
  const image = await buildUpgradeImage({
    pkg: pkg.path,
    rootfs: { files: [...reporter.files, { path: '/etc/fstab', content: COS_FSTAB }, RESIDENT_COSD, ...trust, { path: '/usr/lib/os-release', content: osRelease(NEW_VERSION) }], units: reporter.units },
    log,
  });
  return { disk, image, key };
}

/** An upgrade scenario with the new image pushed (tag v2, signed) to a registry of its own, as the upgrade tests use it. */
export interface PushedScenario extends UpgradeScenario {
  reg: TestRegistry;
  v2: PushedImage;
  /** Seconds the build (or cache lookup) and the push took. */
  setupSeconds: number;
}

/** upgradeScenario(), a registry on 127.0.0.1 and the image pushed and signed as `cos/os:v2`. The caller stops `reg`. */
export async function pushedUpgradeScenario(log: (line: string) => void): Promise<PushedScenario> {
  const t0 = Date.now();
  const sc = await upgradeScenario(log);
  const reg = await startRegistry();
  try {
    const v2 = await pushSigned(reg, sc.image, 'cos/os', 'v2', sc.key);
    return { ...sc, reg, v2, setupSeconds: (Date.now() - t0) / 1000 };
  } catch (e) {
    await reg.stop();
    throw e;
  }
}

/**
 * The hooks every upgrade scenario file needs: before its tests, pushedUpgradeScenario() (a cold cache builds for
 * minutes: the hook's timeout allows 40); after them, every VM killed and the registry stopped. Returns the scenario's
 * getter for the tests.
 */
export function useUpgradeScenario(test: TestFn): () => PushedScenario {
  let sc: PushedScenario | undefined;
  test.before(async (t) => {
    t.timeout(40 * 60_000, 'building the package, a cOS disk and the derivative image (debootstrap on a cold cache)');
    sc = await pushedUpgradeScenario((l) => t.log(l));
    t.log(`disk ${sc.disk.key}, image ${sc.image.key} (${sc.v2.digest}) as ${sc.v2.guestRef}; ready after ${sc.setupSeconds.toFixed(1)} s`);
  });
  test.after.always(async () => {
    killAllVms();
    await sc?.reg.stop();
  });
  return () => {
    if (sc === undefined) throw new Error('the upgrade scenario was not set up (its before hook failed)');
    return sc;
  };
}
