/**
 * Crash injection (issue 9): the real cosctl is killed (SIGKILL, as a power cut would stop it) at every step of the
 * slot switch of an upgrade and of `rollback --permanent` (the test-only AGENT_TEST_CRASH_AT=switch:N seam: after
 * the switch journal is written, N = 0, and after each of its steps), and while the transition image is mounted.
 * After each crash: both GRUB entries still find an image with the right label, the next run finishes (or cleans up)
 * what the crash left, and then nothing is left behind (mounts, loop devices, transition or journal files, COS_STATE
 * rw), the records agree with the images, the running image is in a slot, and the next upgrade succeeds.
 * A kill is not a power cut: the kernel still writes back what it holds. What a power cut at that instant would leave
 * is checked through GRUB's own reader (helpers/grub-view.ts), which replays no ext4 journal, as GRUB at boot does.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { CosHost } from '../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { grubSeesKernel } from '../helpers/grub-view.ts';
import { cosctl, cosStatus, grubList, imageCat, imageLabel, mountOptions, testHost } from '../helpers/cosctl.ts';

const run = promisify(execFile);
const BIN = fileURLToPath(new URL('../../bin/cosctl.js', import.meta.url));
let reg: TestRegistry;

test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/os:v1', '1.0.0');
  await pushOsImage(reg, 'cos/os:v2', '2.0.0');
});
test.after.always(async () => {
  await reg?.stop();
});

const image = (tag: string): string => `${reg.host}/cos/os:${tag}`;
const ino = async (host: CosHost, f: string): Promise<number> => (await stat(host.statePath(f))).ino;

/** Both GRUB entries find their image with the label their cmdline names (or a journal will make it so). */
async function entriesBoot(t: ExecutionContext, host: CosHost, what: string): Promise<void> {
  await grubSeesKernel(t, host, what);
  const names = await readdir(host.statePath('cOS'));
  t.true(names.includes('active.img'), `${what}: active.img exists (${names.join(' ')})`);
  t.is(await imageLabel(host.statePath('cOS/active.img')), 'COS_ACTIVE', `${what}: the default entry's image is labelled COS_ACTIVE`);
  if (names.includes('passive.img') && !names.includes('switch.journal')) {
    t.is(await imageLabel(host.statePath('cOS/passive.img')), 'COS_PASSIVE', `${what}: the fallback's image is labelled COS_PASSIVE`);
  }
}

/** Nothing left behind, the records agree with the images, the running image is in a slot. */
async function healthy(t: ExecutionContext, host: CosHost, baseline: Awaited<ReturnType<CosHost['leaks']>>, what: string): Promise<void> {
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img'], `${what}: only the slot images`);
  t.is(await imageLabel(host.statePath('cOS/active.img')), 'COS_ACTIVE', what);
  t.is(await imageLabel(host.statePath('cOS/passive.img')), 'COS_PASSIVE', what);
  for (const f of ['cOS/active.img', 'cOS/passive.img']) await run('e2fsck', ['-fn', host.statePath(f)]);
  t.deepEqual(await host.leaks(), baseline, `${what}: no mount or loop device left`);
  t.true((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'), `${what}: COS_STATE read-only`);
  const doc = await cosStatus(host);
  t.not(doc.status.booted, null, `${what}: the running image is in a slot`);
  t.is(doc.status.booted?.version, '0.8.10', `${what}: and it is the image the host booted`);
  for (const s of ['active', 'passive'] as const) t.not(doc.status.slots[s].record, 'unknown', `${what}: the record of ${s} names its image`);
}

/** cosctl killed by itself at the AGENT_TEST_CRASH_AT point: it must die of SIGKILL, not finish. */
async function crashAt(t: ExecutionContext, host: CosHost, args: string[], point: string): Promise<void> {
  const r = await cosctl(host, args, { AGENT_TEST_CRASH_AT: point });
  t.not(r.code, 0, `${args.join(' ')} at ${point} was killed (stdout: ${r.stdout.slice(-200)})`);
  t.notRegex(r.stdout, /Upgraded|Swapped/, 'it did not get to report success');
}

for (const n of [0, 1, 2, 3, 4, 5]) {
  test.serial(`an upgrade killed after ${n} of the 5 switch steps is finished by the next run; nothing is lost or left`, async (t) => {
    const host = await testHost(t);
    const baseline = await host.leaks();
    const running = await ino(host, 'cOS/active.img');
    await crashAt(t, host, ['upgrade', '--no-verify', '--image', image('v2')], `switch:${n}`);
    await entriesBoot(t, host, `after the crash at step ${n}`);
    t.deepEqual(await readdir(host.statePath('cOS')).then((l) => l.includes('switch.journal')), true, 'the switch journal says a switch is committed');
    // Armed before the first rename: a reboot right here boots whichever image active.img names tentatively.
    t.is((await grubList(host.statePath('boot_assessment'))).get('enable_boot_assessment'), 'yes', 'boot assessment is armed already');

    const next = await cosctl(host, ['upgrade', '--no-verify', '--image', image('v1')]);
    t.is(next.code, 0, next.stderr);
    t.regex(next.stderr, /an interrupted upgrade was finished first/);
    // The first upgrade was finished (the running image rotated to passive), the second replaced active only.
    t.is(await ino(host, 'cOS/passive.img'), running, 'the running image is the fallback');
    t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="1\.0\.0"/);
    await healthy(t, host, baseline, `after the crash at step ${n} and the next upgrade`);
  });
}

for (const n of [0, 1, 2, 3, 4, 5, 6]) {
  test.serial(`a permanent rollback killed after ${n} of the 6 swap steps is finished by the next run, no image lost`, async (t) => {
    const host = await testHost(t);
    const baseline = await host.leaks();
    const [a, p] = [await ino(host, 'cOS/active.img'), await ino(host, 'cOS/passive.img')];
    await crashAt(t, host, ['rollback', '--permanent'], `switch:${n}`);
    await entriesBoot(t, host, `after the crash at swap step ${n}`);

    const next = await cosctl(host, ['mark-good']);
    t.is(next.code, 0, next.stderr);
    t.is(await ino(host, 'cOS/active.img'), p, 'the swap was finished: the former passive is active');
    t.is(await ino(host, 'cOS/passive.img'), a, 'and the former active (the running image) is passive');
    await healthy(t, host, baseline, `after the crash at swap step ${n}`);
    t.is((await cosctl(host, ['upgrade', '--no-verify', '--image', image('v2')])).code, 0, 'the next upgrade succeeds');
  });
}

test.serial('two crashes in a row inside switches, then a clean run', async (t) => {
  const host = await testHost(t);
  const baseline = await host.leaks();
  await crashAt(t, host, ['upgrade', '--no-verify', '--image', image('v2')], 'switch:2');
  // The second run finishes the first switch, stages its own image, and is killed inside its own switch.
  await crashAt(t, host, ['upgrade', '--no-verify', '--force', '--image', image('v1')], 'switch:1');
  await entriesBoot(t, host, 'after two crashes');
  const r = await cosctl(host, ['rollback']);
  t.is(r.code, 0, r.stderr);
  await healthy(t, host, baseline, 'after two crashes and a rollback');
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="1\.0\.0"/);
});

test.serial('killed while the transition image is mounted: the next run unmounts, detaches and removes it, and COS_STATE ends read-only', async (t) => {
  const host = await testHost(t);
  const baseline = await host.leaks();
  await killWhileMounted(t, host, ['upgrade', '--no-verify', '--image', image('v2')]);
  const left = await host.leaks();
  t.true(left.mounts.length > baseline.mounts.length, 'the crash left the transition mount');
  t.false((await mountOptions(`${host.root}/run/initramfs/cos-state`)).includes('ro'), 'and COS_STATE read-write');

  // Any action cleans up first: here a one-shot rollback.
  const r = await cosctl(host, ['rollback']);
  t.is(r.code, 0, r.stderr);
  await healthy(t, host, baseline, 'after the crash while mounted');
  t.is((await cosctl(host, ['upgrade', '--no-verify', '--image', image('v2')])).code, 0, 'the next upgrade succeeds');
  t.deepEqual(await host.leaks(), baseline);
});

/** Start cosctl upgrade and SIGKILL it as soon as its transition image is mounted. */
async function killWhileMounted(t: ExecutionContext, host: CosHost, args: string[]): Promise<void> {
  const transition = `${host.root}/run/cos-agent/mnt/transition`;
  const child = spawn(process.execPath, [BIN, '--root', host.root, ...args], { env: { ...process.env, ...host.env, HOME: host.root }, stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 60_000;
  let mounted = false;
  while (!mounted && Date.now() < deadline) {
    mounted = (await readFileSafe('/proc/self/mountinfo')).includes(` ${transition} `);
    if (!mounted) await new Promise((res) => setTimeout(res, 10));
  }
  t.true(mounted, 'the transition image was mounted');
  child.kill('SIGKILL');
  await exited;
}

test.serial('"already up to date" after a crash still cleans up what the crash left first', async (t) => {
  const host = await testHost(t);
  const baseline = await host.leaks();
  t.is((await cosctl(host, ['upgrade', '--no-verify', '--image', image('v2')])).code, 0);
  await killWhileMounted(t, host, ['upgrade', '--no-verify', '--force', '--image', image('v1')]);
  t.true((await host.leaks()).mounts.length > baseline.mounts.length, 'the crash left the transition mount');
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', image('v2')]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /Already up to date/);
  await healthy(t, host, baseline, 'after "already up to date"');
});

async function readFileSafe(f: string): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  return readFile(f, 'utf8').catch(() => '');
}

test.serial('a GRUB value that cannot fit (an 1100-character GRUB_ENTRY_NAME) fails the upgrade before the switch: nothing switched, nothing recorded', async (t) => {
  const long = 'x'.repeat(1100);
  await pushOsImage(reg, 'cos/os:long-name', '3.0.0', {
    extraLayers: [[{ name: 'etc/os-release', content: `NAME="cOS"\nVERSION="3.0.0"\nGRUB_ENTRY_NAME="${long}"\n` }]],
  });
  const host = await testHost(t);
  const baseline = await host.leaks();
  const before = [await ino(host, 'cOS/active.img'), await ino(host, 'cOS/passive.img')];
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', image('long-name')]);
  t.is(r.code, 51, r.stderr);
  t.regex(r.stderr, /grub_oem_env.*default_menu_entry|default_menu_entry.*grub_oem_env/);
  t.deepEqual([await ino(host, 'cOS/active.img'), await ino(host, 'cOS/passive.img')], before, 'nothing switched');
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img']);
  t.deepEqual(await host.leaks(), baseline);
});

for (const flavour of ['img', 'squashfs'] as const) {
  test.serial(`a recovery upgrade (${flavour}) killed while it builds the new image: the next run removes what it left on COS_RECOVERY and COS_PERSISTENT`, async (t) => {
    const host = await testHost(t, { recovery: flavour });
    const baseline = await host.leaks();
    const recoveryFile = flavour === 'img' ? 'recovery.img' : 'recovery.squashfs';
    const before = await host.peek('COS_RECOVERY', async (dir) => (await stat(`${dir}/cOS/${recoveryFile}`)).ino);
    const args = ['upgrade', '--recovery', '--no-verify', '--image', image('v2')];
    if (flavour === 'img') {
      await killWhileMounted(t, host, args);
    } else {
      // The squashfs is built from a scratch tree on COS_PERSISTENT: killed once the tree is there.
      const tree = `${host.root}/usr/local/.cos-agent/recovery-tree`;
      const child = spawn(process.execPath, [BIN, '--root', host.root, ...args], { env: { ...process.env, ...host.env, HOME: host.root }, stdio: 'ignore' });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline && !(await stat(`${tree}/etc`).then(() => true, () => false))) await new Promise((res) => setTimeout(res, 10));
      child.kill('SIGKILL');
      await exited;
    }
    const r = await cosctl(host, ['rollback']);
    t.is(r.code, 0, r.stderr);
    t.deepEqual(await host.leaks(), baseline, 'no mount or loop device left');
    t.deepEqual(await host.peek('COS_RECOVERY', async (dir) => (await readdir(`${dir}/cOS`)).sort()), [recoveryFile], 'only the recovery image on COS_RECOVERY');
    t.is(await host.peek('COS_RECOVERY', async (dir) => (await stat(`${dir}/cOS/${recoveryFile}`)).ino), before, 'the recovery image is untouched');
    t.false(await stat(`${host.root}/usr/local/.cos-agent/recovery-tree`).then(() => true, () => false), 'no scratch tree left');
    const again = await cosctl(host, ['upgrade', '--recovery', '--no-verify', '--image', image('v2')]);
    t.is(again.code, 0, again.stderr);
    t.deepEqual(await host.leaks(), baseline);
  });
}

test.serial('a switch cut off by a power loss, then a reboot into passive: finishing it would replace the running image, so it is abandoned where it stands', async (t) => {
  const host = await testHost(t);
  const baseline = await host.leaks();
  const passive = await ino(host, 'cOS/passive.img');
  // Killed after step 2 of 5: active.img is the new image, passive.next the old active, passive.img untouched.
  await crashAt(t, host, ['upgrade', '--no-verify', '--image', image('v2')], 'switch:3');
  // The "reboot": GRUB picked the fallback (passive.img), /run starts empty.
  const { rm, writeFile } = await import('node:fs/promises');
  const { cosCmdline } = await import('../helpers/cos-host.ts');
  // (Only the boot's records: a view the killed run had mounted there stays, as recovery must handle it.)
  await rm(`${host.root}/run/cos-agent/booted.json`, { force: true });
  await writeFile(`${host.root}/proc/cmdline`, cosCmdline('passive', 'img'));
  await run('mount', ['-o', 'remount,ro', `${host.root}/run/initramfs/cos-state`]).catch(() => undefined);

  const r = await cosctl(host, ['mark-good']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /would replace the running image, which now holds a slot: the switch is abandoned/);
  t.is(await ino(host, 'cOS/passive.img'), passive, 'the running image kept its slot');
  t.deepEqual((await readdir(host.statePath('cOS'))).sort(), ['active.img', 'passive.img']);
  const doc = await cosStatus(host);
  t.is(doc.status.booted?.slot, 'passive');
  t.is(doc.status.booted?.version, '0.8.9');
  t.deepEqual(await host.leaks(), baseline);
});

test.serial('upgrade --recovery while booted from recovery is refused: the recovery image is the running system', async (t) => {
  const host = await testHost(t, { booted: 'recovery' });
  const r = await cosctl(host, ['upgrade', '--recovery', '--no-verify', '--image', image('v2')]);
  t.is(r.code, 5, r.stderr);
  t.regex(r.stderr, /the recovery image is the running system/);
});

test.serial("what elemental mounts at /run/cos/* (a concurrent `elemental upgrade`) is not the agent's: recovery leaves it mounted", async (t) => {
  const host = await testHost(t);
  const { mkdir } = await import('node:fs/promises');
  const theirs = `${host.root}/run/cos/transition`;
  await mkdir(theirs, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'elemental-transition', theirs]);
  t.teardown(() => run('umount', [theirs]).then(() => undefined, () => undefined));
  // Killed while its own transition image is mounted, so the next run has something of its own to recover.
  await killWhileMounted(t, host, ['upgrade', '--no-verify', '--image', image('v2')]);
  const r = await cosctl(host, ['rollback']);
  t.is(r.code, 0, r.stderr);
  t.true((await readFileSafe('/proc/self/mountinfo')).includes(` ${theirs} `), "elemental's mount is still there");
  t.false((await readFileSafe('/proc/self/mountinfo')).includes(` ${host.root}/run/cos-agent/mnt/transition `), "the agent's own is gone");
});
