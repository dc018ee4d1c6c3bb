/**
 * Bad input, each with a clear error and both bootable slots untouched: the real cosctl against a loop-device cOS
 * host, a real docker-registry, and a fault-injecting proxy only for faults a real registry cannot produce on demand.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { appendFile, readFile, readdir, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { createCosHost, type CosHost, type CosHostOptions } from '../helpers/cos-host.ts';
import { startRegistry, freePort, type TestRegistry } from '../helpers/registry.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { cosctl, type CliResult, slotSnapshot } from '../helpers/cosctl.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import type { ErrorCode } from '../../src/model/errors.ts';

const exec = promisify(execFile);
let reg: TestRegistry;
let authReg: TestRegistry;
let v2Layer = '';

test.before(async () => {
  reg = await startRegistry();
  authReg = await startRegistry({ auth: 'htpasswd' });
  await pushOsImage(reg, 'cos/os:v2', '2.0.0');
  await pushOsImage(authReg, 'cos/os:v2', '2.0.0');
  await pushOsImage(reg, 'cos/hostile:v1', '2.0.0', { extraLayers: [[{ name: '../../../escaped', content: 'pwned' }]] });
  await pushOsImage(reg, 'cos/hostile-link:v1', '2.0.0', {
    extraLayers: [[{ name: 'evil', type: 'symlink', linkname: '/' }, { name: 'evil/../../etc/escaped', content: 'pwned' }]],
  });
  await pushOsImage(reg, 'cos/tiny-files:v1', '2.0.0', {
    extraLayers: [[{ name: 'usr/share/tiny/' }, ...Array.from({ length: 20_000 }, (_v, i) => ({ name: `usr/share/tiny/f${i}`, content: 'x' }))]],
  });
  await pushOsImage(reg, 'cos/big:v1', '2.0.0', {
    extraLayers: [[{ name: 'usr/share/blob', content: (await import('node:crypto')).randomBytes(48 * 1024 * 1024) }]],
  });
  const manifest = await fetch(`${reg.url}/v2/cos/os/manifests/v2`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  v2Layer = ((await manifest.json()) as { layers: Array<{ digest: string }> }).layers[0]?.digest ?? '';
});
test.after.always(async () => {
  await reg?.stop();
  await authReg?.stop();
});

const snapshot = slotSnapshot;

/** Runs cosctl upgrade on a fresh host and checks: the exit code of `code`, one stderr line matching `names`, and
 * nothing changed: both slots byte-identical, labels, GRUB env, COS_STATE read-only, no mounts or loops left. */
async function refused(t: ExecutionContext, code: ErrorCode, names: RegExp, args: string[], opts: CosHostOptions & { prepare?: (h: CosHost) => Promise<void> } = {}): Promise<CliResult> {
  const host = await createCosHost({ ...opts, files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n', ...opts.files } });
  t.teardown(() => host.close());
  await opts.prepare?.(host);
  const before = await snapshot(host);
  const leaks = await host.leaks();
  const r = await cosctl(host, ['upgrade', '--no-verify', ...args]);
  t.is(r.code, EXIT_CODES[code].exit, `expected ${code}; stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  t.is(lines.length, 1, `one line on stderr: ${r.stderr}`);
  t.regex(lines[0] ?? '', names);
  t.deepEqual(await snapshot(host), before, 'slots, labels and GRUB env untouched, COS_STATE read-only');
  t.deepEqual(await host.leaks(), leaks, 'no mount or loop device left behind');
  const last = JSON.parse(await readFile(`${host.root}/run/cos-agent/last-upgrade.json`, 'utf8').catch(() => '{}')) as { result?: string; code?: string };
  if (last.result !== undefined) t.deepEqual([last.result, last.code], ['failure', code]);
  return r;
}

test('registry down: REGISTRY_UNREACHABLE naming the registry', async (t) => {
  const port = await freePort();
  await refused(t, 'REGISTRY_UNREACHABLE', new RegExp(`127\\.0\\.0\\.1:${port}`), ['--image', `127.0.0.1:${port}/cos/os:v2`]);
});

test('a tag that does not exist: REGISTRY_NOT_FOUND naming it', async (t) => {
  await refused(t, 'REGISTRY_NOT_FOUND', /cos\/os.*nope|nope/, ['--image', `${reg.host}/cos/os:nope`]);
});

test('a registry that wants credentials we do not have: REGISTRY_UNAUTHORIZED', async (t) => {
  await refused(t, 'REGISTRY_UNAUTHORIZED', new RegExp(authReg.host.replace(/\./g, '\\.')), ['--image', `${authReg.host}/cos/os:v2`]);
});

/** A fault proxy of this test's own in front of the registry (tests in this file run concurrently). */
async function faultyRegistry(t: ExecutionContext, rule: Parameters<FaultProxy['addFault']>[0]): Promise<FaultProxy> {
  const p = await startFaultProxy(reg.url);
  t.teardown(() => p.stop());
  p.addFault(rule);
  return p;
}

test('a registry answering 503 twice: each retry shows in the progress (retrying in N ms, k of 4) and the upgrade succeeds', async (t) => {
  const p = await faultyRegistry(t, { path: /\/manifests\/v2$/, fault: { kind: 'status', status: 503, body: 'busy' }, times: 2 });
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${p.host}/cos/os:v2`]);
  t.is(r.code, 0, r.stderr);
  // AGENT_TEST_REGISTRY_RETRY_MS=20: 20 ms, then 40 ms.
  t.regex(r.stdout, /^\[checking\] retrying in 20 ms, 1 of 4: manifest .*503/m);
  t.regex(r.stdout, /^\[checking\] retrying in 40 ms, 2 of 4: manifest .*503/m);
  t.regex(r.stdout, /Upgraded active slot/);
});

test('a layer whose bytes do not match its digest: DIGEST_MISMATCH, nothing switched', async (t) => {
  const p = await faultyRegistry(t, { path: v2Layer, fault: { kind: 'corrupt', at: 100 } });
  await refused(t, 'DIGEST_MISMATCH', /sha256:/, ['--image', `${p.host}/cos/os:v2`]);
});

test('a layer download that keeps breaking off: BLOB_TRUNCATED after the retries', async (t) => {
  const p = await faultyRegistry(t, { path: v2Layer, fault: { kind: 'truncate', at: 200 } });
  await refused(t, 'BLOB_TRUNCATED', /sha256:/, ['--image', `${p.host}/cos/os:v2`]);
  t.true(p.requests.some((r) => r.path.includes(v2Layer) && /^bytes=\d+-$/.test(r.range ?? '')), 'it tried to resume with an open-ended Range');
});

test('a layer download broken off once resumes with a Range request and the upgrade succeeds', async (t) => {
  const p = await faultyRegistry(t, { path: v2Layer, fault: { kind: 'truncate', at: 300 }, times: 1, rangeless: true });
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${p.host}/cos/os:v2`]);
  t.is(r.code, 0, r.stderr);
  // Besides the 4-byte gzip trailer read that sizes the slot: the whole download, cut at 300, then one resume.
  const layerRequests = p.requests.filter((q) => q.path.includes(v2Layer) && !/^bytes=\d+-\d+$/.test(q.range ?? ''));
  t.deepEqual(layerRequests.map((q) => [q.range, q.fault]), [[undefined, 'truncate'], ['bytes=300-', undefined]]);
});

test('a layer entry with ../ that would land outside the image: UNPACK_UNSAFE, nothing written outside', async (t) => {
  await refused(t, 'UNPACK_UNSAFE', /escaped/, ['--image', `${reg.host}/cos/hostile:v1`]);
  await t.throwsAsync(readFile('/escaped'));
});

test('a symlink to / followed by a path through it cannot escape: UNPACK_UNSAFE or confined', async (t) => {
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/hostile-link:v1`]);
  // Either refused (evil/../.. climbs above the root) or applied inside the image: never outside.
  await t.throwsAsync(readFile('/etc/escaped'));
  t.true(r.code === 0 || r.code === EXIT_CODES.UNPACK_UNSAFE.exit, r.stderr);
});

test('a full COS_STATE: NO_SPACE before anything is written', async (t) => {
  await refused(t, 'NO_SPACE', /COS_STATE.*free/, ['--image', `${reg.host}/cos/os:v2`], {
    prepare: async (host) => {
      const dir = `${host.root}/run/initramfs/cos-state`;
      await exec('mount', ['-o', 'remount,rw', dir]);
      const free = Number((await exec('findmnt', ['-n', '-b', '-o', 'AVAIL', '--mountpoint', dir])).stdout.trim());
      await exec('fallocate', ['-l', String(free - 20 * 1024 * 1024), `${dir}/filler`]);
      await exec('mount', ['-o', 'remount,ro', dir]);
    },
  });
});

test('an image whose rootfs cannot fit even a grown slot on COS_STATE: IMAGE_TOO_LARGE before anything is written', async (t) => {
  // 48 MiB of incompressible data: the gzip trailer says so, the slot would grow to ~90 MiB; an 80 MiB COS_STATE
  // has room for the configured 16 MiB but not for that.
  await refused(t, 'IMAGE_TOO_LARGE', /does not fit.*needs a \d+ MiB slot image.*COS_STATE has \d+ MiB free/, ['--image', `${reg.host}/cos/big:v1`], {
    stateMiB: 80,
    files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=16\n' },
  });
});

test('no size configured and no room for a third image of the current size: NO_SPACE says how many MiB the image needs and which setting to change', async (t) => {
  // 96 MiB images (sparse, as elemental makes them) on a 96 MiB COS_STATE: no room for a third one of their size.
  await refused(t, 'NO_SPACE',
    /^cosctl: COS_STATE has \d+ MiB free; this image needs 104 MiB \(a 96 MiB slot image and 8 MiB of margin\), its size 96 MiB, the size of the cOS\/active\.img it replaces \(no size is configured\)\. Free space on COS_STATE, or set a smaller slot size in MiB with DEFAULT_IMAGE_SIZE in \/etc\/cos-upgrade-image or \/etc\/cos\/config, or upgrade\.system\.size in \/etc\/elemental\/config\.yaml \(this image needs at least \d+ MiB\)$/,
    ['--image', `${reg.host}/cos/os:v2`], { imageMiB: 96, stateMiB: 96, files: { '/etc/cos/config': '# no DEFAULT_IMAGE_SIZE here\n' } });
});

test('a configured DEFAULT_IMAGE_SIZE that does not fit: NO_SPACE names the MiB needed and where the size was set', async (t) => {
  const r = await refused(t, 'NO_SPACE', /this image needs 3080 MiB \(a 3072 MiB slot image and 8 MiB of margin\), its size 3072 MiB as set by \S+\/etc\/cos-upgrade-image:1 \(DEFAULT_IMAGE_SIZE\)\. Free space on COS_STATE, or set a smaller slot size/,
    ['--image', `${reg.host}/cos/os:v2`], { files: { '/etc/cos-upgrade-image': 'DEFAULT_IMAGE_SIZE=3072\n' } });
  t.regex(r.stderr, /DEFAULT_IMAGE_SIZE in \/etc\/cos-upgrade-image or \/etc\/cos\/config, or upgrade\.system\.size in \/etc\/elemental\/config\.yaml/);
});

test('a rootfs the estimate under-sizes (20,000 tiny files exhaust the inodes): IMAGE_TOO_LARGE, transition removed', async (t) => {
  await refused(t, 'IMAGE_TOO_LARGE', /does not fit in the \d+ MiB slot image/, ['--image', `${reg.host}/cos/tiny-files:v1`], {
    files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=16\n' },
  });
});

test('a malformed /etc/cos-upgrade-image: CONFIG_INVALID naming file, line and key', async (t) => {
  await refused(t, 'CONFIG_INVALID', /cos-upgrade-image:2.*/, [], {
    files: { '/etc/cos-upgrade-image': `UPGRADE_IMAGE="${reg.host}/cos/os:v2"\nCHANNEL_UPGRADES="fals` },
  });
});

test('a malformed boolean in config: CONFIG_INVALID naming the key', async (t) => {
  await refused(t, 'CONFIG_INVALID', /CHANNEL_UPGRADES/, [], {
    files: { '/etc/cos-upgrade-image': `UPGRADE_IMAGE="${reg.host}/cos/os:v2"\nCHANNEL_UPGRADES="maybe"` },
  });
});

test('a corrupt grub_oem_env: GRUBENV_CORRUPT before anything is written', async (t) => {
  await refused(t, 'GRUBENV_CORRUPT', /grub_oem_env/, ['--image', `${reg.host}/cos/os:v2`], {
    prepare: async (host) => {
      const dir = `${host.root}/run/initramfs/cos-state`;
      await exec('mount', ['-o', 'remount,rw', dir]);
      const block = await readFile(`${dir}/grub_oem_env`);
      block.write('X', 0); // the '# GRUB Environment Block' header is gone
      await writeFile(`${dir}/grub_oem_env`, block);
      await exec('mount', ['-o', 'remount,ro', dir]);
    },
  });
});

test('a second upgrade while one runs is refused with BUSY, and the first still completes', async (t) => {
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  let release: () => void = () => {};
  const held = new Promise<void>((resolve) => { release = resolve; });
  const slow = await startFaultProxy(reg.url);
  t.teardown(() => slow.stop());
  slow.addFault({ path: v2Layer, fault: { kind: 'hold', until: held } });
  const first = cosctl(host, ['upgrade', '--no-verify', '--image', `${slow.host}/cos/os:v2`]);
  // Wait until the first upgrade is downloading (its layer request is held), then start a second.
  for (let i = 0; i < 600 && !slow.requests.some((r) => r.path.includes(v2Layer)); i++) await new Promise((r) => setTimeout(r, 50));
  t.true(slow.requests.some((r) => r.path.includes(v2Layer)), 'first upgrade reached the download');
  const second = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`]);
  t.is(second.code, EXIT_CODES.BUSY.exit, second.stderr);
  t.regex(second.stderr, /another operation is running.*upgrade/);
  release();
  const r1 = await first;
  t.is(r1.code, 0, r1.stderr);
});

test('an interrupted earlier run (stale transition.img and lock of a dead process) does not block the next', async (t) => {
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n', '/run/cos-agent/upgrade.lock': '999999\nupgrade x\n' } });
  t.teardown(() => host.close());
  const dir = `${host.root}/run/initramfs/cos-state`;
  await exec('mount', ['-o', 'remount,rw', dir]);
  await exec('fallocate', ['-l', '8M', `${dir}/cOS/transition.img`]);
  await exec('mount', ['-o', 'remount,ro', dir]);
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img']);
});

test('without --no-verify and with no signature policy on the host, verification is required: VERIFY_FAILED, nothing staged', async (t) => {
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const before = await snapshot(host);
  const r = await cosctl(host, ['upgrade', '--image', `${reg.host}/cos/os:v2`]);
  t.is(r.code, EXIT_CODES.VERIFY_FAILED.exit, r.stderr);
  t.deepEqual(await snapshot(host), before);
});

test('a corrupt state.yaml is kept aside and rebuilt, never fatal', async (t) => {
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const dir = `${host.root}/run/initramfs/cos-state`;
  await exec('mount', ['-o', 'remount,rw', dir]);
  await appendFile(`${dir}/state.yaml`, 'state: [unclosed\n  - : :\n');
  await exec('mount', ['-o', 'remount,ro', dir]);
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`]);
  t.is(r.code, 0, r.stderr);
  const files = await readdir(dir);
  t.true(files.includes('state.yaml.broken'), files.join(' '));
  t.regex(await readFile(`${dir}/state.yaml`, 'utf8'), /docker:\/\//);
});
