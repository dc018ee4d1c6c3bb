/**
 * The upgrade hooks as yip stages, for real: the built cosctl upgrades a cOS disk on loop devices from the local
 * registry, and runs `before-upgrade` and `after-upgrade` from the host's /oem, and `after-upgrade-chroot` inside the
 * new image (its own /system/oem and the host's /oem, commands chrooted into it with busybox from the image). Errors
 * are logged and the upgrade goes on; with `strict: true` in the config a failing hook fails the upgrade (HOOK_FAILED,
 * exit 34) and leaves the slots as they were.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import type { TarEntry } from '../helpers/oci-layout.ts';
import { cosctl, imageCat, slotSnapshot, testHost } from '../helpers/cosctl.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';

let reg: TestRegistry;
const refs: Record<string, string> = {};

/** busybox (static) as the image's shell and tools, and the image's own cloud-config. */
async function hookLayer(imageOem: string): Promise<TarEntry[]> {
  const busybox = await readFile('/bin/busybox');
  return [
    { name: 'usr/bin/busybox', content: busybox, mode: 0o755 },
    ...['sh', 'cat', 'echo', 'ls', 'false'].map((tool): TarEntry => ({ name: `usr/bin/${tool}`, type: 'symlink', linkname: 'busybox' })),
    { name: 'system/' },
    { name: 'system/oem/' },
    { name: 'system/oem/50_image-hooks.yaml', content: imageOem },
  ];
}

const IMAGE_OEM = `name: "hooks of the new image"
stages:
  after-upgrade-chroot:
    - name: stamp the new image from inside it
      commands:
        - echo "chroot saw $(cat /etc/cos-slot-version)" > /etc/hook-chroot
        - ls /oem > /etc/hook-saw-oem
      files:
        - path: /etc/hook-files
          content: "written by the image's own /system/oem\\n"
          permissions: 0644
  after-upgrade:
    - name: never runs on the host
      files:
        - path: /etc/image-after-upgrade
          content: "wrong"
`;

const FAILING_OEM = `stages:
  after-upgrade-chroot:
    - name: a command that fails
      commands: ["echo failing on purpose; false"]
    - name: a step after it
      files: [{path: /etc/hook-still-ran, content: "yes\\n"}]
`;

const HOST_OEM = `name: "hooks of the host"
stages:
  before-upgrade:
    - files: [{path: /etc/hook-before, content: "before {{.Values.os.version}}\\n"}]
  after-upgrade-chroot.before:
    - files: [{path: /etc/hook-host-oem-in-chroot, content: "the host's /oem, inside the new image\\n"}]
  after-upgrade:
    - files: [{path: /etc/hook-after, content: "after\\n"}]
`;

test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/hooks:v2', '2.0.0', { extraLayers: [await hookLayer(IMAGE_OEM)] });
  await pushOsImage(reg, 'cos/failing:v2', '2.0.0', { extraLayers: [await hookLayer(FAILING_OEM)] });
  refs.hooks = `${reg.host}/cos/hooks:v2`;
  refs.failing = `${reg.host}/cos/failing:v2`;
});
test.after.always(async () => {
  await reg?.stop();
});

test.serial('before-upgrade and after-upgrade run from the host, after-upgrade-chroot inside the new image with its own /system/oem', async (t) => {
  const host = await testHost(t, { files: { '/oem/90_hooks.yaml': HOST_OEM, '/etc/os-release': 'ID=cos\nVERSION_ID=1.0.0\n' } });
  const r = await cosctl(host, ['upgrade', '--image', refs.hooks ?? '', '--no-verify']);
  t.is(r.code, 0, r.stderr);
  const hostFile = (p: string): Promise<string> => readFile(path.join(host.root, p), 'utf8');
  t.is(await hostFile('/etc/hook-before'), 'before 1.0.0\n', 'before-upgrade, templated from the host');
  t.is(await hostFile('/etc/hook-after'), 'after\n');
  await t.throwsAsync(hostFile('/etc/image-after-upgrade'), undefined, "the image's after-upgrade is not the host's");
  await t.throwsAsync(hostFile('/etc/hook-chroot'), undefined, 'the chroot stage wrote nothing on the host');
  const active = host.statePath('cOS/active.img');
  t.is(await imageCat(active, '/etc/hook-chroot'), 'chroot saw image 2.0.0\n', 'the command ran chrooted into the new image');
  t.is(await imageCat(active, '/etc/hook-files'), "written by the image's own /system/oem\n");
  t.is(await imageCat(active, '/etc/hook-host-oem-in-chroot'), "the host's /oem, inside the new image\n");
  t.regex(await imageCat(active, '/etc/hook-saw-oem'), /^90_hooks\.yaml$/m, "the host's /oem is bound into the chroot");
});

test.serial('a failing hook step is reported and the upgrade goes on; with strict in the config it fails the upgrade, slots untouched', async (t) => {
  const host = await testHost(t);
  const r = await cosctl(host, ['upgrade', '--image', refs.failing ?? '', '--no-verify', '--verbose']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /hook after-upgrade-chroot: 2 step\(s\), 1 error\(s\)/);
  t.regex(r.stderr, /failing on purpose/);
  t.is(await imageCat(host.statePath('cOS/active.img'), '/etc/hook-still-ran'), 'yes\n', 'the step after the failure ran');

  const strict = await testHost(t, { files: { '/etc/elemental/config.yaml': 'strict: true\n' } });
  const before = await slotSnapshot(strict);
  const s = await cosctl(strict, ['upgrade', '--image', refs.failing ?? '', '--no-verify']);
  t.is(s.code, EXIT_CODES.HOOK_FAILED.exit, s.stderr);
  t.regex(s.stderr, /hook after-upgrade-chroot failed: stage after-upgrade-chroot: 1 error\(s\)/);
  t.deepEqual(await slotSnapshot(strict), before, 'the slots, labels and GRUB blocks are as they were');
  t.deepEqual((await strict.leaks()).mounts.filter((m) => m.includes('transition')), [], 'no transition mount left');
});
