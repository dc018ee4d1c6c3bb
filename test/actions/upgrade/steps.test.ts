/**
 * The upgrade's step list, driven through upgrade() without root: a FakeKernel runner (fake-host.ts) plays blkid,
 * losetup, mount, mkfs.ext2, tune2fs and e2fsck on a host laid out in a temp dir, the hooks are recorded, and the
 * image comes from a real local registry (test/helpers/registry.ts). Each test reads one log of what happened, in
 * order: the steps as upgrade() reports them (onStep), the commands run (blkid probes left out), the hooks, the commit.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { upgrade, type UpgradeOptions, type UpgradeStepName } from '../../../src/actions/upgrade/upgrade.ts';
import type { AgentDeps } from '../../../src/host/deps.ts';
import type { HookName, HookRunner } from '../../../src/host/hooks.ts';
import { AgentError, CancelledError } from '../../../src/model/errors.ts';
import { readImageIdentity } from '../../../src/partitions/index.ts';
import { readGrubEnvFile } from '../../../src/grub/index.ts';
import { silentLogger } from '../../../src/sys/log.ts';
import { SysRoot } from '../../../src/sys/root.ts';
import { startRegistry, type TestRegistry } from '../../helpers/registry.ts';
import { buildLayout, makeTar } from '../../helpers/oci-layout.ts';
import { osTree } from '../../helpers/os-image.ts';
import { createFakeHost, pickStateDevice, type FakeHost } from './fake-host.ts';

const ALL_STEPS: readonly UpgradeStepName[] = [
  'config', 'lock', 'recover', 'record-start', 'read-host', 'resolve', 'already-staged', 'estimate', 'verify', 'mount-slot-partition', 'plan',
  'clean-leftovers', 'prepare-transition', 'skeleton', 'hook:before-upgrade', 'pull', 'hook:after-upgrade-chroot',
  'read-os-release', 'hook:after-upgrade', 'seal', 'commit-switch', 'grub', 'record-state', 'read-back',
];

const stateDevice = await pickStateDevice();
// Label discovery lists /proc/partitions itself: without a single block device there, no host can be faked. That is
// a failure of the test machine, not a reason to skip: the tests fail saying so.
const withDevice = test;

let reg: TestRegistry;
let image: string;
test.before(async () => {
  if (stateDevice === undefined) throw new Error('no block device in /proc/partitions to stand for COS_STATE (nothing is run on it)');
  reg = await startRegistry();
  // The image's files belong to whoever runs the test, so unpacking it needs no root (lchown to oneself).
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const dir = await mkdtemp(path.join(tmpdir(), 'steps-image-'));
  try {
    const tar = await makeTar(osTree('2.0.0').map((e) => ({ ...e, uid, gid })));
    await buildLayout(dir, 'v2', { layers: [{ tar, compression: 'gzip' }], labels: { 'org.opencontainers.image.version': '2.0.0' } });
    await reg.push(dir, 'v2', 'cos/os:v2');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  image = `${reg.host}/cos/os:v2`;
});
test.after.always(async () => {
  await reg?.stop();
});

interface Run {
  host: FakeHost;
  /** `step:<name>`, `$ <argv>` (blkid probes left out), `hook:<name>`, `commit`, and `cOS: ...` snapshots at tune2fs. */
  events: string[];
  steps: UpgradeStepName[];
  hooks: HookName[];
  upgrade(opts?: UpgradeOptions): ReturnType<typeof upgrade>;
}

/** The slot files of cOS/ as `name=<who>(<label>)`, images named by who they were at the start (A, P) or N (new). */
async function slotFiles(host: FakeHost): Promise<string> {
  const dir = host.statePath('cOS');
  const names = (await readdir(dir)).sort();
  const who = (id: string | null): string => (id === host.ids.active ? 'A' : id === host.ids.passive ? 'P' : 'N');
  const out: string[] = [];
  for (const n of names) {
    const ident = await readImageIdentity(path.join(dir, n));
    out.push(`${n}=${who(ident?.id ?? null)}(${ident?.label ?? '-'})`);
  }
  return `cOS: ${out.join(' ')}`;
}

async function newRun(t: ExecutionContext, booted: 'active' | 'passive', failHook?: HookName): Promise<Run> {
  const events: string[] = [];
  const steps: UpgradeStepName[] = [];
  const hooksSeen: HookName[] = [];
  let host: FakeHost | undefined;
  const show = (s: string): string => {
    let out = s.replaceAll(stateDevice as string, '<COS_STATE>').replace(/\/ro-(\d+-)?[A-Za-z0-9]{6}\b/g, '/ro-XXXXXX');
    if (host !== undefined) out = out.replaceAll(host.root, '<root>');
    return out;
  };
  host = await createFakeHost({
    booted,
    stateDevice: stateDevice as string,
    onCommand: async (argv) => {
      if (argv[0] === 'blkid') return;
      // Recovery looks at every loop device of the machine (other tests' too): only the fake host's are its business.
      if (argv[0] === 'losetup' && argv[1] === '--list' && !/^\/dev\/loop7\d{3}$/.test(argv[argv.length - 1] ?? '')) return;
      events.push(show(`$ ${argv.join(' ')}`));
      if (argv[0] === 'tune2fs' && host !== undefined) events.push(await slotFiles(host));
    },
  });
  t.teardown(() => host.close());
  const hooks: HookRunner = {
    async run(name) {
      hooksSeen.push(name);
      events.push(`hook:${name}`);
      if (name === failHook) throw new Error(`yip: stage ${name}: command exited 1`);
    },
  };
  const deps: AgentDeps = {
    root: new SysRoot(host.root), runner: host.kernel, log: silentLogger, hooks,
    env: { HOME: host.root }, now: () => new Date(), registry: { retryBaseMs: 10 },
  };
  return {
    host,
    events,
    steps,
    hooks: hooksSeen,
    upgrade: (opts = {}) => upgrade(deps, {
      image, noVerify: true, ...opts,
      onStep: (name) => {
        steps.push(name);
        events.push(`step:${name}`);
        opts.onStep?.(name);
      },
      onCommit: () => {
        events.push('commit');
        opts.onCommit?.();
      },
    }),
  };
}

/** The events from `step:<from>` up to, not including, `step:<to>` (to the end when `to` is undefined). */
function between(events: readonly string[], from: UpgradeStepName, to?: UpgradeStepName): string[] {
  const start = events.indexOf(`step:${from}`);
  const end = to === undefined ? events.length : events.indexOf(`step:${to}`);
  return events.slice(start, end);
}

/** Every regular file on COS_STATE with its size, mtime and (for images) identity: equal lists = nothing written. */
async function stateListing(host: FakeHost): Promise<string[]> {
  const base = host.statePath('.');
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(path.join(base, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) {
        await walk(r);
      } else {
        const st = await stat(path.join(base, r));
        const id = await readImageIdentity(path.join(base, r));
        out.push(`${r} ${st.size} ${st.mtimeMs} ${id?.id ?? ''} ${id?.label ?? ''}`);
      }
    }
  };
  await walk('.');
  return out.sort();
}

const BINDS = ['/dev', '/dev/pts', '/proc', '/sys'];
async function chrootBinds(): Promise<string[]> {
  const present: string[] = [];
  for (const b of BINDS) if (await stat(b).then(() => true, () => false)) present.push(b);
  return present;
}

withDevice('booted from active: every step in order, each command in its step, and the switch relabels before it renames', async (t) => {
  const run = await newRun(t, 'active');
  const out = await run.upgrade();
  t.deepEqual(run.steps, ALL_STEPS);
  t.deepEqual(run.hooks, ['before-upgrade', 'after-upgrade-chroot', 'after-upgrade']);
  t.like(out, { rotated: true, keepPassiveReason: null, unchanged: null, version: '2.0.0', file: 'cOS/active.img', warnings: [] });
  t.is(out.nextBoot?.slot, 'active');

  const binds = await chrootBinds();
  const transition = '<root>/run/cos-agent/mnt/transition';
  const slot = '<root>/run/cos-agent/mnt/state/cOS';
  t.deepEqual(run.events, [
    'step:config',
    'step:lock',
    'step:recover',
    '$ mount -o ro <COS_STATE> <root>/run/cos-agent/ro-XXXXXX',
    '$ umount <root>/run/cos-agent/ro-XXXXXX',
    // the running-upgrade marker: files on the root, no command
    'step:record-start',
    'step:read-host',
    // The host model before anything changes: COS_STATE read-only, unmounted again at once.
    '$ mount -o ro <COS_STATE> <root>/run/cos-agent/ro-XXXXXX',
    '$ umount <root>/run/cos-agent/ro-XXXXXX',
    'step:resolve',
    'step:already-staged',
    'step:estimate',
    'step:verify',
    'step:mount-slot-partition',
    '$ mount <COS_STATE> <root>/run/cos-agent/mnt/state',
    'step:plan',
    'step:clean-leftovers',
    'step:prepare-transition',
    `$ fallocate -l ${48 * 1024 * 1024} ${slot}/transition.img`,
    `$ mkfs.ext2 -F -q -E nodiscard -L COS_TRANSITION ${slot}/transition.img`,
    `$ losetup --show -f ${slot}/transition.img`,
    '$ losetup --list --noheadings --output BACK-INO,BACK-MAJ:MIN /dev/loop7000',
    `$ mount /dev/loop7000 ${transition}`,
    'step:skeleton',
    'step:hook:before-upgrade',
    'hook:before-upgrade',
    'step:pull',
    'step:hook:after-upgrade-chroot',
    ...binds.map((b) => `$ mount -o bind ${b} ${transition}${b}`),
    'hook:after-upgrade-chroot',
    ...[...binds].reverse().map((b) => `$ umount ${transition}${b}`),
    'step:read-os-release',
    'step:hook:after-upgrade',
    'hook:after-upgrade',
    'step:seal',
    // Unmounted and detached, then checked: e2fsck runs on the image nobody has mounted.
    `$ umount ${transition}`,
    '$ losetup --list --noheadings --output BACK-INO,BACK-MAJ:MIN /dev/loop7000',
    '$ losetup -d /dev/loop7000',
    `$ e2fsck -f -n ${slot}/transition.img`,
    'step:commit-switch',
    'commit',
    // The new image takes COS_ACTIVE while still named transition.img: no rename has happened yet.
    `$ tune2fs -L COS_ACTIVE ${slot}/transition.img`,
    'cOS: active.img=A(COS_ACTIVE) passive.img=P(COS_PASSIVE) switch.journal=N(-) transition.img=N(COS_TRANSITION)',
    // Then the old active got a second name and the new image was renamed over active.img; the old one is relabelled.
    `$ tune2fs -L COS_PASSIVE ${slot}/passive.next`,
    'cOS: active.img=N(COS_ACTIVE) passive.img=P(COS_PASSIVE) passive.next=A(COS_ACTIVE) switch.journal=N(-)',
    'step:grub',
    'step:record-state',
    'step:read-back',
    // Cleanup: COS_STATE unmounted (the transition mount is already gone).
    '$ umount <root>/run/cos-agent/mnt/state',
  ]);
  t.is(await slotFiles(run.host), 'cOS: active.img=N(COS_ACTIVE) passive.img=A(COS_PASSIVE)');
  const oemEnv = await readGrubEnvFile(run.host.statePath('grub_oem_env'));
  t.is(oemEnv.get('default_menu_entry'), 'cOS 2.0.0');
  t.is((await readGrubEnvFile(run.host.statePath('boot_assessment'))).get('enable_boot_assessment'), 'yes');
  t.regex(await readFile(run.host.statePath('state.yaml'), 'utf8'), /upgrade-result: staged/);
  t.deepEqual(run.host.kernel.leaks(), { mounts: [], loops: [] });
});

withDevice('booted from passive: the same steps, and the switch is one relabel and one rename over active.img, passive kept', async (t) => {
  const run = await newRun(t, 'passive');
  const out = await run.upgrade();
  t.deepEqual(run.steps, ALL_STEPS);
  t.false(out.rotated);
  t.regex(out.keepPassiveReason ?? '', /booted from passive/);
  const slot = '<root>/run/cos-agent/mnt/state/cOS';
  t.deepEqual(between(run.events, 'seal', 'grub'), [
    'step:seal',
    '$ umount <root>/run/cos-agent/mnt/transition',
    '$ losetup --list --noheadings --output BACK-INO,BACK-MAJ:MIN /dev/loop7000',
    '$ losetup -d /dev/loop7000',
    `$ e2fsck -f -n ${slot}/transition.img`,
    'step:commit-switch',
    'commit',
    `$ tune2fs -L COS_ACTIVE ${slot}/transition.img`,
    'cOS: active.img=A(COS_ACTIVE) passive.img=P(COS_PASSIVE) switch.journal=N(-) transition.img=N(COS_TRANSITION)',
  ]);
  t.is(await slotFiles(run.host), 'cOS: active.img=N(COS_ACTIVE) passive.img=P(COS_PASSIVE)');
  t.deepEqual(run.host.kernel.leaks(), { mounts: [], loops: [] });
});

withDevice('already up to date: the run stops after already-staged, with nothing mounted rw and nothing written', async (t) => {
  const run = await newRun(t, 'active');
  await run.upgrade();
  const before = await stateListing(run.host);
  run.events.length = 0;
  run.steps.length = 0;
  const out = await run.upgrade();
  t.deepEqual(run.steps, ['config', 'lock', 'recover', 'record-start', 'read-host', 'resolve', 'already-staged']);
  t.regex(out.unchanged ?? '', /the active slot already holds sha256:/);
  t.is(out.imageSizeMiB, 0);
  // The only commands: the read-only looks for leftovers (recover) and at the host model. Nothing after the step
  // that stopped the run.
  t.deepEqual(run.events.filter((e) => e.startsWith('$')), [
    '$ mount -o ro <COS_STATE> <root>/run/cos-agent/ro-XXXXXX',
    '$ umount <root>/run/cos-agent/ro-XXXXXX',
    '$ mount -o ro <COS_STATE> <root>/run/cos-agent/ro-XXXXXX',
    '$ umount <root>/run/cos-agent/ro-XXXXXX',
  ]);
  t.is(run.events.at(-1), 'step:already-staged');
  t.deepEqual(await stateListing(run.host), before);
  t.deepEqual(run.host.kernel.leaks(), { mounts: [], loops: [] });
  t.false(await stat(path.join(run.host.root, 'run/cos-agent/upgrade.lock')).then(() => true, () => false), 'lock released');
});

withDevice('a failing hook stops the steps there: no commit-switch, the binds, the transition mount and COS_STATE undone, transition.img removed', async (t) => {
  const run = await newRun(t, 'active', 'after-upgrade-chroot');
  const before = await slotFiles(run.host);
  const err = await t.throwsAsync(run.upgrade(), { instanceOf: AgentError });
  t.is(err?.code, 'HOOK_FAILED');
  t.deepEqual(run.steps, ALL_STEPS.slice(0, ALL_STEPS.indexOf('hook:after-upgrade-chroot') + 1));
  t.false(run.events.includes('commit'));
  const binds = await chrootBinds();
  const transition = '<root>/run/cos-agent/mnt/transition';
  t.deepEqual(between(run.events, 'hook:after-upgrade-chroot'), [
    'step:hook:after-upgrade-chroot',
    ...binds.map((b) => `$ mount -o bind ${b} ${transition}${b}`),
    'hook:after-upgrade-chroot',
    ...[...binds].reverse().map((b) => `$ umount ${transition}${b}`),
    // The cleanup stack, last acquired first.
    `$ umount ${transition}`,
    '$ losetup --list --noheadings --output BACK-INO,BACK-MAJ:MIN /dev/loop7000',
    '$ losetup -d /dev/loop7000',
    '$ umount <root>/run/cos-agent/mnt/state',
  ]);
  t.false(run.host.kernel.commands.some((c) => c[0] === 'tune2fs' || c[0] === 'e2fsck'));
  t.is(await slotFiles(run.host), before, 'transition.img removed, active and passive untouched');
  t.deepEqual(run.host.kernel.leaks(), { mounts: [], loops: [] });
  const record = JSON.parse(await readFile(path.join(run.host.root, 'run/cos-agent/last-upgrade.json'), 'utf8')) as { result: string; code: string };
  t.like(record, { result: 'failure', code: 'HOOK_FAILED' });
});

withDevice('a cancel that arrives as commit-switch starts is honoured: no commit, no relabel, transition.img removed', async (t) => {
  const run = await newRun(t, 'active');
  const before = await slotFiles(run.host);
  const ac = new AbortController();
  let committed = false;
  const err = await t.throwsAsync(run.upgrade({
    signal: ac.signal,
    onStep: (name) => { if (name === 'commit-switch') ac.abort(); },
    onCommit: () => { committed = true; },
  }));
  t.true(err instanceof CancelledError, String(err));
  t.false(committed);
  t.deepEqual(run.steps, ALL_STEPS.slice(0, ALL_STEPS.indexOf('commit-switch') + 1));
  // The image was sealed (e2fsck ran) but never relabelled; the cleanup unmounts COS_STATE.
  t.true(run.host.kernel.commands.some((c) => c[0] === 'e2fsck'));
  t.deepEqual(between(run.events, 'commit-switch'), ['step:commit-switch', '$ umount <root>/run/cos-agent/mnt/state']);
  t.is(await slotFiles(run.host), before);
  t.deepEqual(run.host.kernel.leaks(), { mounts: [], loops: [] });
  const record = JSON.parse(await readFile(path.join(run.host.root, 'run/cos-agent/last-upgrade.json'), 'utf8')) as { result: string; cancelled: boolean };
  t.like(record, { result: 'failure', cancelled: true });
});
