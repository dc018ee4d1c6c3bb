/**
 * Real boots of a cOS disk under QEMU (TCG): OVMF -> standalone GRUB on COS_GRUB -> COS_STATE/grub2/grub.cfg (the
 * real cOS v0.8.14 template, rendered) -> kernel + initrd out of the slot image -> our cOS-like initrd (loop-mounts the
 * slot read-only, overlay, switch_root) -> Debian's systemd. A unit in the guest reports what it sees as
 * `COSVM-RESULT {...}` on ttyS0 and powers off.
 *
 * 1. first boot: GRUB picks entry `cos` (empty saved_entry -> default = entry 0), the guest runs COS_ACTIVE from
 *    /cOS/active.img on COS_STATE, reaches multi-user, and reaches the host through user networking (the port goes to
 *    the guest on the kernel cmdline through grubenv's extra_cmdline, which grub.cfg appends for every entry).
 * 2. one-shot fallback: the host writes next_entry=fallback into /oem/grubenv; GRUB boots entry `fallback`
 *    (COS_PASSIVE from /cOS/passive.img) and clears next_entry with save_env; booted through a qcow2 overlay, so the
 *    write is in the overlay and the raw disk under it keeps next_entry=fallback.
 * 3. one-shot recovery: next_entry=recovery; grub.cfg finds /cOS/recovery.squashfs, bootargs.cfg turns that into a
 *    live cmdline, and the initrd mounts COS_RECOVERY at /run/initramfs/live and the squashfs as the root.
 * 4. power cut: qemu is SIGKILLed the moment the initrd reports the passive slot loop-mounted; GRUB's save_env from
 *    earlier in that boot is on the raw disk.
 */
import './lib/timing.ts';
import test, { type ExecutionContext } from 'ava';
import { once } from 'node:events';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildCosDisk, cloneDisk, type CosDisk } from './lib/disk.ts';
import { OEM_GRUBENV, readGrubEnv, writeGrubEnv } from './lib/grubenv.ts';
import { resultReporter } from './lib/guest.ts';
import { run } from './lib/exec.ts';
import { bootReport, bootVm, killAllVms, markerJson, RESULT_MARKER, type BootResult } from './lib/qemu.ts';

const BOOT_TIMEOUT_MS = 300_000;

let disk: CosDisk;
let buildSeconds = 0;

/**
 * A tarball for the extraTarballs hook, the way the project's dist tarball will be used: entries below `lib/` must
 * land in /usr/lib through Debian's /lib -> usr/lib symlink (replacing the symlink would leave no /lib/systemd to boot).
 * Built reproducibly (fixed mtime, owner, order) so the disk's cache key does not change between runs.
 */
async function factsTarball(dir: string): Promise<string> {
  const root = path.join(dir, 'tree');
  await mkdir(path.join(root, 'etc/cosvm/facts'), { recursive: true });
  await mkdir(path.join(root, 'lib/cosvm-tarball'), { recursive: true });
  await writeFile(path.join(root, 'etc/cosvm/facts/tarball'), 'unpacked at /\n');
  await writeFile(path.join(root, 'lib/cosvm-tarball/fact'), 'below /lib\n');
  const tar = path.join(dir, 'facts.tar.gz');
  await run(['tar', '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', root, '-cf', `${tar}.tar`, 'etc', 'lib']);
  await run(['gzip', '-n', '-9', `${tar}.tar`]);
  await rename(`${tar}.tar.gz`, tar);
  return tar;
}

test.before(async (t) => {
  t.timeout(30 * 60_000, 'building the cOS disk (debootstrap on a cold cache)');
  const t0 = Date.now();
  const dir = await mkdtemp(path.join(tmpdir(), 'cosvm-build-'));
  try {
    const reporter = resultReporter();
    disk = await buildCosDisk({
      rootfs: {
        extraTarballs: [await factsTarball(dir)],
        files: [...reporter.files, { path: '/etc/cosvm/facts/files-hook', content: 'written by the files hook\n' }],
        units: [
          ...reporter.units,
          // a unit added through the hook that copies what the tarball put below /lib into the facts
          {
            name: 'cosvm-lib-fact.service',
            content: '[Unit]\nBefore=cosvm-result.service\n[Service]\nType=oneshot\nExecStart=/bin/cp /usr/lib/cosvm-tarball/fact /etc/cosvm/facts/lib\n[Install]\nWantedBy=multi-user.target\n',
          },
        ],
      },
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  buildSeconds = (Date.now() - t0) / 1000;
});

test.after.always(() => {
  killAllVms();
});

interface Scenario {
  work: string;
  disk: string;
}

async function scenario(t: ExecutionContext, name: string): Promise<Scenario> {
  const work = await mkdtemp(path.join(tmpdir(), `cosvm-${name}-`));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  return { work, disk: await cloneDisk(disk.path, path.join(work, 'disk.img')) };
}

/** A TCP server on 127.0.0.1 that answers each line with "ack <line>". */
async function hostServer(t: ExecutionContext): Promise<{ port: number; received: string[] }> {
  const received: string[] = [];
  const server: Server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        const line = buf.slice(0, nl);
        received.push(line);
        sock.end(`ack ${line}\n`);
      }
    });
    sock.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as AddressInfo).port, received };
}

async function boot(
  t: ExecutionContext,
  s: Scenario,
  name: string,
  opts: { overlay?: boolean } = {},
): Promise<{ boot: BootResult; result: Record<string, unknown>; grub: Record<string, unknown> }> {
  const b = await bootVm({ disk: s.disk, workDir: s.work, name, timeoutMs: BOOT_TIMEOUT_MS, overlay: opts.overlay ?? false });
  t.log(`${name}: ${(b.durationMs / 1000).toFixed(1)} s, serial log ${b.logPath} (disk built/loaded in ${buildSeconds.toFixed(1)} s)`);
  const report = bootReport(b);
  if (b.timedOut || b.results.length !== 1) t.fail(`expected exactly one COSVM-RESULT, got ${b.results.length}\n${report}`);
  const grubLines = markerJson(b.serial, 'COSVM-GRUB');
  if (grubLines.length !== 2) t.fail(`expected the two COSVM-GRUB lines of /grubmenu, got ${grubLines.length}\n${report}`);
  return { boot: b, result: b.results[0] ?? {}, grub: Object.assign({}, ...grubLines) as Record<string, unknown> };
}

test('first boot: GRUB picks entry cos, the guest runs COS_ACTIVE to multi-user and reaches the host', async (t) => {
  t.timeout(BOOT_TIMEOUT_MS + 120_000);
  const s = await scenario(t, 'first-boot');
  const server = await hostServer(t);
  // extra_cmdline is appended to every entry's kernel line by grub.cfg: the guest learns the port from /proc/cmdline
  await writeGrubEnv(s.disk, { extra_cmdline: `cosvm.hostport=${server.port}` });
  const { boot: b, result, grub } = await boot(t, s, 'first-boot');
  const report = bootReport(b);
  t.is(grub['default'], '', `no saved_entry and no next_entry: default stays empty, i.e. entry 0 = cos\n${report}`);
  t.is(grub['selected_entry'], '', report);
  t.is(grub['display_name'], 'cOS', `default_menu_entry from COS_STATE/grub_oem_env\n${report}`);
  t.is(result['unit'], 'multi-user', report);
  t.is(result['target'], 'active', `multi-user.target active in the guest\n${report}`);
  t.is(result['label'], 'COS_ACTIVE', `fs label of the loop device under /run/rootfsbase\n${report}`);
  t.is(result['img'], '/run/initramfs/cos-state/cOS/active.img', report);
  const cmdline = String(result['cmdline']);
  // what entry cos + bootargs.cfg + grub_boot_assessment produce
  t.regex(cmdline, /(^| )root=LABEL=COS_ACTIVE cos-img\/filename=\/cOS\/active\.img /, report);
  t.regex(cmdline, /rd\.cos\.oemlabel=COS_OEM/, report);
  t.regex(cmdline, /cosvm\.hostport=\d+ rd\.emergency=reboot rd\.shell=0 panic=5 systemd\.crash_reboot systemd\.crash_shell=0$/, `extra_cmdline, then extra_active_cmdline from grub_boot_assessment\n${report}`);
  t.is(result['failed'], '', `no failed units\n${report}`);
  t.deepEqual(server.received, ['hello from COS_ACTIVE'], `guest -> 10.0.2.2 -> host 127.0.0.1\n${report}`);
  t.is(result['host'], 'ack hello from COS_ACTIVE', report);
  // the rootfs hooks: extra tarball unpacked at / (its lib/ went through the /lib symlink), files, units
  t.deepEqual(result['facts'], { 'files-hook': 'written by the files hook', lib: 'below /lib', tarball: 'unpacked at /' }, report);
  t.true(b.exitCode === 0 && !b.timedOut, `the guest powered off by itself\n${report}`);
  // a plain boot of cos saves nothing: the user env block is as the host left it
  t.deepEqual(await readGrubEnv(s.disk, OEM_GRUBENV), { extra_cmdline: `cosvm.hostport=${server.port}` });
});

test('next_entry=fallback in /oem/grubenv: GRUB boots COS_PASSIVE once and clears next_entry (through a qcow2 overlay)', async (t) => {
  t.timeout(BOOT_TIMEOUT_MS + 120_000);
  const s = await scenario(t, 'fallback');
  t.deepEqual(await writeGrubEnv(s.disk, { next_entry: 'fallback' }), { next_entry: 'fallback' });
  const { boot: b, result, grub } = await boot(t, s, 'next-entry-fallback', { overlay: true });
  const report = bootReport(b);
  t.is(grub['default'], 'fallback', report);
  t.is(grub['selected_entry'], 'fallback', report);
  t.is(result['target'], 'active', report);
  t.is(result['label'], 'COS_PASSIVE', report);
  t.is(result['img'], '/run/initramfs/cos-state/cOS/passive.img', report);
  t.regex(String(result['cmdline']), /(^| )root=LABEL=COS_PASSIVE cos-img\/filename=\/cOS\/passive\.img /, report);
  t.notRegex(String(result['cmdline']), /rd\.emergency=reboot/, `extra_active_cmdline is not used by the fallback entry\n${report}`);
  t.is(result['failed'], '', report);
  t.true(b.exitCode === 0 && !b.timedOut, report);
  // GRUB's save_env rewrote the block in place, in the overlay: next_entry is still there, empty; the raw disk
  // under the overlay is untouched
  t.regex(b.disk, /\.qcow2$/);
  const flat = path.join(s.work, 'flat.img');
  await run(['qemu-img', 'convert', '-O', 'raw', b.disk, flat]);
  t.deepEqual(await readGrubEnv(flat, OEM_GRUBENV), { next_entry: '' }, report);
  t.deepEqual(await readGrubEnv(s.disk, OEM_GRUBENV), { next_entry: 'fallback' });
});

test('next_entry=recovery: GRUB boots the recovery squashfs live, the initrd mounts COS_RECOVERY', async (t) => {
  t.timeout(BOOT_TIMEOUT_MS + 120_000);
  const s = await scenario(t, 'recovery');
  await writeGrubEnv(s.disk, { next_entry: 'recovery' });
  const { boot: b, result, grub } = await boot(t, s, 'next-entry-recovery');
  const report = bootReport(b);
  t.is(grub['selected_entry'], 'recovery', report);
  t.is(result['target'], 'active', report);
  const cmdline = String(result['cmdline']);
  t.regex(cmdline, /(^| )root=live:LABEL=COS_RECOVERY rd\.live\.dir=\/ rd\.live\.squashimg=\/cOS\/recovery\.squashfs /, report);
  t.is(result['img'], '/run/initramfs/live/cOS/recovery.squashfs', report);
  t.is(result['state'], '', `nothing at /run/initramfs/cos-state in a squashfs recovery boot (cos-layout.md 1.4)\n${report}`);
  t.regex(String(result['live']), /^\/dev\/vda4$/, `COS_RECOVERY (partition 4) at /run/initramfs/live\n${report}`);
  t.is(result['failed'], '', report);
  t.deepEqual(await readGrubEnv(s.disk, OEM_GRUBENV), { next_entry: '' }, report);
});

test('power cut at a serial marker: qemu is SIGKILLed right there; GRUB\'s earlier write is on the raw disk', async (t) => {
  t.timeout(BOOT_TIMEOUT_MS + 120_000);
  const s = await scenario(t, 'power-cut');
  await writeGrubEnv(s.disk, { next_entry: 'fallback' });
  const b = await bootVm({ disk: s.disk, workDir: s.work, name: 'power-cut', killAtMarker: /COSVM-LOOP label=COS_PASSIVE /, timeoutMs: BOOT_TIMEOUT_MS });
  t.log(`power-cut: ${(b.durationMs / 1000).toFixed(1)} s, serial log ${b.logPath}`);
  const report = bootReport(b);
  t.regex(b.killedAtMarker ?? '', /^COSVM-LOOP label=COS_PASSIVE img=\/cOS\/passive\.img /, report);
  t.is(b.signal, 'SIGKILL', report);
  t.false(b.timedOut, report);
  t.deepEqual(b.results, [], `killed before userspace could report\n${report}`);
  t.notRegex(b.serial, new RegExp(`${RESULT_MARKER}|reboot: Power down`), report);
  // on a raw image every write qemu made is in the file (host page cache), flushed by the guest or not
  t.deepEqual(await readGrubEnv(s.disk, OEM_GRUBENV), { next_entry: '' }, report);
});
