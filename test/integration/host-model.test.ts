/**
 * The host-model state machine of test/host/boot-model.state.test.ts on a REAL cOS host on loop devices: the real
 * cosctl (--no-daemon, --no-verify) against a real registry with three OS versions, and reboots evaluated by the
 * independent GRUB interpreter (test/helpers/grub-script.ts) running the real cOS grub.cfg on what is on the disk:
 * the env blocks as the agent wrote them, the images' labels (blkid -p). GRUB's own save_env changes are written back
 * with grub-editenv, then the "kernel" starts: root/proc/cmdline is the booted slot's cmdline, /run/cos-agent and
 * /run/cos are emptied (a new boot; the mounts under /run/initramfs stay), /run/cos/upgrade_failure is created when the
 * cmdline has the token, and cOS's boot.before stage of 08_boot_assessment runs (a boot of active.img clears both
 * sentinels). GRUB runs the /grubcustom and /grub_boot_assessment on COS_STATE: cOS's (cos-host.ts installs them as
 * 08_boot_assessment's after-install does) until the agent installs its N-tries script.
 *
 * Ground truth: each image by its ext2 UUID (and inode, for messages); the set of those that booted.
 * After every step: (a) the running image is active.img or passive.img, and status says which; (b) status nextBoot
 * (entry, slot, upgrade_failure) is what GRUB boots next (a dry run), the slot naming the same image; (c) if every
 * image that never booted failed, rebooting would still end in one that did; (d) status staged / rollback name an
 * image that never booted / that booted or runs. Plus: nothing the agent mounted or attached is left.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { cosCmdline, createCosHost, type CosHost } from '../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { cosctl, withStateRw } from '../helpers/cosctl.ts';
import { boot, cloneWorld, readCmdline, type GrubBoot, type GrubFile, type GrubWorld } from '../helpers/grub-script.ts';
import { mulberry32 } from '../helpers/host-sim.ts';
import { readGrubEnvFile } from '../../src/grub/index.ts';
import type { HostStatusDocument } from '../../src/model/host.ts';

const run = promisify(execFile);
let reg: TestRegistry;

test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/os:v1', '1.0.0');
  await pushOsImage(reg, 'cos/os:v2', '2.0.0', { compression: 'zstd' });
  await pushOsImage(reg, 'cos/os:v3', '3.0.0');
});
test.after.always(async () => {
  await reg?.stop();
});

type Action =
  | { op: 'upgrade'; tag: string; force: boolean }
  | { op: 'upgrade-missing' }
  | { op: 'rollback' }
  | { op: 'rollback-permanent' }
  | { op: 'mark-good' }
  | { op: 'mark-bad' }
  | { op: 'reboot' };

const text = (a: Action): string =>
  a.op === 'upgrade' ? `upgrade${a.force ? ' --force' : ''} ${a.tag}` : a.op === 'upgrade-missing' ? 'upgrade (missing tag)' : a.op.replace('-permanent', ' --permanent');

const WEIGHTS: ReadonlyArray<readonly [string, number]> = [
  ['upgrade', 4], ['upgrade-force', 1], ['upgrade-missing', 1], ['rollback', 2], ['rollback-permanent', 1], ['mark-good', 1], ['mark-bad', 1], ['reboot', 4],
];

function actionsFor(seed: number, n: number): Action[] {
  const rnd = mulberry32(seed);
  const total = WEIGHTS.reduce((s, [, w]) => s + w, 0);
  const out: Action[] = [];
  for (let i = 0; i < n; i++) {
    let x = rnd() * total;
    let op = 'reboot';
    for (const [name, w] of WEIGHTS) {
      if (x < w) {
        op = name;
        break;
      }
      x -= w;
    }
    const tag = ['v1', 'v2', 'v3'][Math.floor(rnd() * 3)] as string;
    if (op === 'upgrade' || op === 'upgrade-force') out.push({ op: 'upgrade', tag, force: op === 'upgrade-force' });
    else out.push({ op } as Action);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The disk as GRUB sees it, and the boot

interface ImageId { uuid: string; ino: number; label: string }

async function probe(file: string): Promise<ImageId> {
  const { stdout } = await run('blkid', ['-p', '-o', 'export', file]);
  const v = new Map(stdout.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const));
  return { uuid: v.get('UUID') ?? '', ino: (await stat(file)).ino, label: v.get('LABEL') ?? '' };
}

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/** COS_RECOVERY's cOS/ files as GRUB sees them (read once per host: no action here changes recovery). */
async function readRecovery(host: CosHost): Promise<Map<string, GrubFile>> {
  return host.peek('COS_RECOVERY', async (dir) => {
    const m = new Map<string, GrubFile>();
    for (const f of await readdir(path.join(dir, 'cOS'))) {
      const id = await probe(path.join(dir, 'cOS', f));
      m.set(`/cOS/${f}`, { image: { label: f.endsWith('.squashfs') ? null : id.label, tag: id } });
    }
    return m;
  });
}

/** COS_OEM and COS_STATE as they are on the disk now, and COS_RECOVERY as read (image tags: their ImageId). */
async function readWorld(host: CosHost, recovery: ReadonlyMap<string, GrubFile>): Promise<GrubWorld> {
  const env = async (file: string): Promise<GrubFile> => ({ env: await readGrubEnvFile(file, { missingOk: true }) });
  const oem = new Map<string, GrubFile>();
  const grubenv = path.join(host.root, 'oem/grubenv');
  if (await exists(grubenv)) oem.set('/grubenv', await env(grubenv));
  // The boot-assessment scripts as they are on the disk: cOS's as 08_boot_assessment installed them (cos-host.ts),
  // until the agent's first upgrade or mark put its own N-tries script there.
  const state = new Map<string, GrubFile>();
  for (const f of ['grubcustom', 'grub_boot_assessment']) state.set(`/${f}`, { text: await readFile(host.statePath(f), 'utf8') });
  for (const f of ['grub_oem_env', 'boot_assessment']) if (await exists(host.statePath(f))) state.set(`/${f}`, await env(host.statePath(f)));
  for (const f of await readdir(host.statePath('cOS'))) {
    const id = await probe(host.statePath(`cOS/${f}`));
    state.set(`/cOS/${f}`, { image: { label: id.label, tag: id } });
  }
  return {
    partitions: [
      { label: 'COS_GRUB', files: new Map() },
      { label: 'COS_OEM', files: oem },
      { label: 'COS_STATE', files: state },
      { label: 'COS_RECOVERY', files: new Map(recovery) },
      { label: 'COS_PERSISTENT', files: new Map() },
    ],
  };
}


async function editenv(file: string, vars: Record<string, string | null>): Promise<void> {
  for (const [k, v] of Object.entries(vars)) await run('grub-editenv', v === null ? [file, 'unset', k] : [file, 'set', `${k}=${v}`]);
}

/** GRUB's save_env changes, written where GRUB writes them. */
async function writeBack(host: CosHost, r: GrubBoot): Promise<void> {
  for (const w of r.writes) {
    if (w.partition === 'COS_OEM') await editenv(path.join(host.root, 'oem', w.path), w.vars);
    else if (w.partition === 'COS_STATE') await withStateRw(host, () => editenv(host.statePath(w.path.slice(1)), w.vars));
    else throw new Error(`GRUB wrote to ${w.partition}${w.path}: not modelled`);
  }
}

interface Truth {
  /** COS_RECOVERY's files (read once). */
  recovery: ReadonlyMap<string, GrubFile>;
  /** The uuid of the running image. */
  running: string;
  /** Every image (uuid) that booted. */
  booted: Set<string>;
}

const tagOf = (r: GrubBoot): ImageId | null => (r.image?.tag as ImageId | undefined) ?? null;

/** Reboot the real host: GRUB (bounded retries on a wrong label), then the new boot's /proc/cmdline and /run. */
async function reboot(host: CosHost, truth: Truth): Promise<string> {
  const tries: string[] = [];
  for (let i = 0; i < 6; i++) {
    const world = await readWorld(host, truth.recovery);
    const r = boot(world);
    await writeBack(host, r);
    const id = tagOf(r);
    if (r.entry === null || r.cmdline === null || id === null) throw new Error(`bricked: GRUB has nothing to boot (${tries.join(' ')})`);
    const c = readCmdline(r.cmdline);
    if (c.rootLabel !== null && c.rootLabel !== id.label) {
      tries.push(`${r.entry}(ino ${id.ino}):wrong-label ${id.label}`);
      continue;
    }
    const slot = c.imgFile === '/cOS/active.img' ? 'active' : c.imgFile === '/cOS/passive.img' ? 'passive' : null;
    if (slot === null) throw new Error(`GRUB booted ${r.entry} (${r.cmdline}): only active/passive boots are modelled on this host`);
    tries.push(`${r.entry}(ino ${id.ino}):booted${c.upgradeFailure ? '+upgrade_failure' : ''}`);
    // The new boot.
    await writeFile(path.join(host.root, 'proc/cmdline'), cosCmdline(slot, 'img', c.upgradeFailure));
    for (const d of ['run/cos-agent', 'run/cos']) {
      const dir = path.join(host.root, d);
      for (const f of await readdir(dir).catch(() => [])) await rm(path.join(dir, f), { recursive: true, force: true });
    }
    await mkdir(path.join(host.root, 'run/cos'), { recursive: true });
    if (c.upgradeFailure) await writeFile(path.join(host.root, 'run/cos/upgrade_failure'), '1', { mode: 0o600 });
    // cOS 08_boot_assessment boot.before: "Remove GRUB sentinels" when the cmdline names active.img.
    if (r.cmdline.includes('active.img')) {
      await withStateRw(host, () => editenv(host.statePath('boot_assessment'), { enable_boot_assessment: '', boot_assessment_tentative: '' }));
    }
    truth.running = id.uuid;
    truth.booted.add(id.uuid);
    return tries.join(' ');
  }
  throw new Error(`no boot after 6 tries: ${tries.join(' ')}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Steps and invariants

async function status(host: CosHost): Promise<HostStatusDocument> {
  const r = await cosctl(host, ['--no-daemon', 'status', '--json']);
  if (r.code !== 0) throw new Error(`status failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as HostStatusDocument;
}

async function act(host: CosHost, a: Action, truth: Truth): Promise<string> {
  const image = (tag: string): string => `${reg.host}/cos/os:${tag}`;
  const cli = async (args: string[]): Promise<string> => {
    const r = await cosctl(host, ['--no-daemon', ...args]);
    const lines = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l !== '' && !l.startsWith('['));
    return `exit ${r.code}: ${lines.slice(-1)[0] ?? ''}`;
  };
  switch (a.op) {
    case 'upgrade':
      return cli(['upgrade', '--no-verify', '--image', image(a.tag), ...(a.force ? ['--force'] : [])]);
    case 'upgrade-missing':
      return cli(['upgrade', '--no-verify', '--image', image('missing')]);
    case 'rollback':
      return cli(['rollback']);
    case 'rollback-permanent':
      return cli(['rollback', '--permanent']);
    case 'mark-good':
      return cli(['mark-good']);
    case 'mark-bad':
      return cli(['mark-bad']);
    case 'reboot':
      return reboot(host, truth);
  }
}

/** (c): assume every image that never booted fails; bounded GRUB passes on a copy of the world. */
function pessimisticReboot(world: GrubWorld, booted: ReadonlySet<string>): string[] {
  const w = cloneWorld(world);
  const tries: string[] = [];
  for (let i = 0; i < 6; i++) {
    const r = boot(w);
    const id = tagOf(r);
    if (id === null || r.cmdline === null) return [...tries, 'nothing boots'];
    const c = readCmdline(r.cmdline);
    const ok = booted.has(id.uuid) && (c.rootLabel === null || c.rootLabel === id.label);
    tries.push(`${r.entry ?? '-'}(ino ${id.ino}):${ok ? 'booted' : 'fails'}`);
    if (ok) return tries;
  }
  return tries;
}

async function check(t: ExecutionContext, host: CosHost, truth: Truth, where: string): Promise<void> {
  const [doc, world, active, passive] = await Promise.all([
    status(host),
    readWorld(host, truth.recovery),
    probe(host.statePath('cOS/active.img')).catch(() => null),
    probe(host.statePath('cOS/passive.img')).catch(() => null),
  ]);
  const files = { active, passive };
  const slotOf = (uuid: string): 'active' | 'passive' | null => (files.active?.uuid === uuid ? 'active' : files.passive?.uuid === uuid ? 'passive' : null);

  // (a)
  const runningSlot = slotOf(truth.running);
  t.not(runningSlot, null, `${where}: (a) the running image ${truth.running} is in no slot file`);
  t.is(doc.status.booted?.slot ?? null, runningSlot, `${where}: (a) status booted`);

  // (b)
  const dry = boot(cloneWorld(world));
  const grubId = tagOf(dry);
  const grubSlot = grubId === null ? null : slotOf(grubId.uuid);
  t.is(doc.status.nextBoot.slot, grubSlot, `${where}: (b) status nextBoot.slot vs GRUB (${dry.tried.join(',')})`);
  if (dry.entry !== null) t.is(doc.status.nextBoot.entry, dry.entry, `${where}: (b) status nextBoot.entry vs GRUB`);
  t.is(doc.status.nextBoot.upgradeFailure, dry.cmdline !== null && readCmdline(dry.cmdline).upgradeFailure, `${where}: (b) upgrade_failure`);
  const statusNext = doc.status.nextBoot.slot === 'active' || doc.status.nextBoot.slot === 'passive' ? files[doc.status.nextBoot.slot]?.uuid : undefined;
  t.is(statusNext, grubId?.uuid, `${where}: (b) the slot status names holds the image GRUB boots`);

  // (c)
  const tries = pessimisticReboot(world, truth.booted);
  t.true(tries.at(-1)?.endsWith(':booted') === true, `${where}: (c) ${tries.join(' ')}`);

  // (d)
  const staged = doc.status.staged?.slot;
  if (staged === 'active' || staged === 'passive') {
    const u = files[staged]?.uuid ?? '';
    t.false(truth.booted.has(u) || u === truth.running, `${where}: (d) staged=${staged} holds an image that booted`);
  }
  const rb = doc.status.rollback?.slot;
  if (rb === 'active' || rb === 'passive') {
    const u = files[rb]?.uuid ?? '';
    t.true(truth.booted.has(u) || u === truth.running, `${where}: (d) rollback=${rb} holds an image that never booted`);
  }
}

async function sequence(t: ExecutionContext, actions: readonly Action[]): Promise<string[]> {
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=24\n' } });
  t.teardown(() => host.close());
  const baseline = await host.leaks();
  const initial = [await probe(host.statePath('cOS/active.img')), await probe(host.statePath('cOS/passive.img'))];
  const truth: Truth = { recovery: await readRecovery(host), running: initial[0]?.uuid ?? '', booted: new Set(initial.map((i) => i.uuid)) };
  const trace: string[] = [];
  await check(t, host, truth, 'initial');
  for (const [i, a] of actions.entries()) {
    const out = await act(host, a, truth);
    trace.push(`${i + 1}. ${text(a)} -> ${out}`);
    await check(t, host, truth, `after ${trace.join(' | ')}`);
    t.deepEqual(await host.leaks(), baseline, `after ${text(a)}: nothing left mounted or attached`);
  }
  t.log(trace.join('\n'));
  return trace;
}

for (const seed of [16, 27]) {
  test.serial(`seed ${seed}: a sequence of real actions and reboots keeps the invariants of the host model`, async (t) => {
    const actions = actionsFor(seed, 12);
    const trace = await sequence(t, actions);
    t.is(trace.length, actions.length);
    t.true(trace.some((l) => /reboot -> .*booted/.test(l)), 'the sequence rebooted');
    t.true(trace.some((l) => /upgrade.* -> exit 0/.test(l)), 'the sequence upgraded');
  });
}

test.serial('mark-bad, the fallback boot (upgrade_failure), rollback --permanent, then an upgrade: the running image stays in a slot', async (t) => {
  // The shortest form of a violation of (a) the in-memory sequences found before the model knew the image boot
  // assessment fell back from (failedId): the swap was allowed, and the upgrade then kept passive "because the last
  // upgrade failed" and replaced active, which held the running image. check() asserts (a) after every step.
  const trace = await sequence(t, [{ op: 'mark-bad' }, { op: 'reboot' }, { op: 'rollback-permanent' }, { op: 'upgrade', tag: 'v1', force: false }]);
  t.regex(trace[1] ?? '', /fallback\(ino \d+\):booted\+upgrade_failure/);
  t.regex(trace[3] ?? '', /^4\. upgrade v1 -> exit 0/);
});

test.serial('upgrade, reboot into it, one-shot rollback, reboot: the image that booted is not reported as staged', async (t) => {
  // The shortest violation of (d) the in-memory sequences find (test/host/boot-model.state.test.ts), on a real host:
  // check() after the last reboot fails on "(d) staged=active holds an image that booted".
  const trace = await sequence(t, [{ op: 'upgrade', tag: 'v2', force: false }, { op: 'reboot' }, { op: 'rollback' }, { op: 'reboot' }]);
  t.regex(trace[1] ?? '', /^2\. reboot -> cos\(ino \d+\):booted$/);
  t.regex(trace[3] ?? '', /^4\. reboot -> fallback\(ino \d+\):booted$/);
});
