/**
 * Scenario 7: power cuts during an upgrade inside the guest, at 10 points of `cosctl upgrade` through cosd, spread
 * over download, unpack, seal, the slot switch and the GRUB writes. Each cut's next boot must reach a good system (the
 * old or the new image, never neither), cosd must clean up what the cut left, and an upgrade must succeed afterwards.
 *
 * A cut is a snapshot of the raw disk taken with qemu frozen: cosd, under the test seam AGENT_TEST_PAUSE_AT (the 10
 * points) with AGENT_TEST_PAUSE_SECONDS, prints `COS-AGENT-TEST-PAUSED <point>` on ttyS0 as it reaches each point and
 * blocks for a few seconds; the host SIGSTOPs qemu on that line, copies the disk and lets qemu go on
 * (`freezeAtMarker`). The copy holds every write qemu had completed, and a flush the guest had waited for was an
 * fdatasync of the file: it is the disk of a machine whose power went at that moment (the guest's page cache is lost).
 * So one upgrade boot yields all 10 cuts, and it goes on to finish the upgrade.
 *
 * Each snapshot is then booted once (the steps come through qemu's -fw_cfg, because a cut disk must not be written
 * before its boot: its ext4 journals are still to replay): `check` (the status and COS_STATE/cOS once cosd has started,
 * then power-off), or, after the cut in the middle of the slot switch (`switch:2`, the hardest state to resume),
 * `cosctl upgrade --force` again, which must succeed. The snapshot boots start while the upgrade boot still runs (two
 * VMs at once).
 *
 * Asserted on data only: the `boot` and `status-before` results of the guest (which image runs, COS_STATE/cOS as the
 * cut left it and after cosd started, cosd's mounts), the status documents, the marker lines.
 */
import './lib/timing.ts';
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { BOOT_TIMEOUT_MS, bootOnce, obj, statusOf, type Boot, type Json } from './lib/boots.ts';
import { cloneDisk } from './lib/disk.ts';
import { run } from './lib/exec.ts';
import { upgradeStep, writeStep, type Step } from './lib/fallback.ts';
import { logDir } from './lib/qemu.ts';
import { NEW_VERSION, OLD_VERSION, useUpgradeScenario } from './lib/upgrade-image.ts';
import { PAUSE_MARKER } from '../src/sys/crash.ts';

const POINTS: readonly string[] = [
  'pull:20%', // downloading
  'pull:70%', // unpacking
  'step:read-os-release', // the tree complete, not sealed
  'step:seal',
  'step:commit-switch', // sealed, no switch journal yet
  'switch:0', // the journal written, boot assessment armed, nothing renamed
  'switch:2',
  'switch:4',
  'step:grub', // switched, GRUB not written
  'step:record-state', // GRUB written, records not
];
/**
 * The last-upgrade record cosd's start makes of the cut upgrade (its running marker on COS_PERSISTENT): the result and
 * the step the marker names (the marked step last started: see MARKED_STEPS in src/actions/upgrade/upgrade.ts). Before
 * the switch journal, undone (a failure, code INTERRUPTED); from it on, the switch finished at start (a success).
 */
const RECORD: Readonly<Record<string, { result: 'success' | 'failure'; interruptedAt: string }>> = {
  'pull:20%': { result: 'failure', interruptedAt: 'pull' },
  'pull:70%': { result: 'failure', interruptedAt: 'pull' },
  'step:read-os-release': { result: 'failure', interruptedAt: 'pull' },
  'step:seal': { result: 'failure', interruptedAt: 'seal' },
  'step:commit-switch': { result: 'failure', interruptedAt: 'commit-switch' },
  'switch:0': { result: 'success', interruptedAt: 'commit-switch' },
  'switch:2': { result: 'success', interruptedAt: 'commit-switch' },
  'switch:4': { result: 'success', interruptedAt: 'commit-switch' },
  'step:grub': { result: 'success', interruptedAt: 'grub' },
  'step:record-state': { result: 'success', interruptedAt: 'record-state' },
};
/** After these cuts the next boot upgrades again; after the others it checks and powers off. */
const UPGRADE_AFTER: ReadonlySet<string> = new Set(['switch:2']);
/** What an interrupted upgrade may leave in COS_STATE/cOS, and what cosd must have removed once it has started. */
const LEFTOVERS = /^(transition\.(img|squashfs)|switch\.journal|(active|passive)\.next)$/;
/** qemu is SIGSTOPped from the serial stream's data event: the pause only covers the host's event loop. */
const PAUSE_SECONDS = 2;

const scenario = useUpgradeScenario(test);

function statusDoc(r: Json | undefined): Json {
  try {
    return obj(obj(JSON.parse(String(r?.['stdout'] ?? '')))['status']);
  } catch {
    return {};
  }
}

/** The boot after a cut reached a good system and cosd cleaned up. */
function checkAfterCut(t: ExecutionContext, b: Boot, point: string): void {
  const what = `the boot after the cut at ${point}`;
  t.true(b.boot['label'] === 'COS_ACTIVE' || b.boot['label'] === 'COS_PASSIVE', `${what} runs a slot image: ${String(b.boot['label'])}\n${b.diag}`);
  t.true(b.boot['version'] === OLD_VERSION || b.boot['version'] === NEW_VERSION, `${what} runs the old or the new image: ${String(b.boot['version'])}\n${b.diag}`);
  const before = obj(b.kind.get('status-before'));
  t.is(before['exit'], 0, `${what}: cosctl status\n${b.diag}`);
  const cos = String(before['cos'] ?? '').split(' ').filter(Boolean);
  t.deepEqual(cos.filter((f) => LEFTOVERS.test(f)), [], `${what}: cosd cleaned up COS_STATE/cOS once started: ${cos.join(' ')}\n${b.diag}`);
  for (const f of ['active.img', 'passive.img']) t.true(cos.includes(f), `${what}: ${f} is there: ${cos.join(' ')}`);
  t.is(before['agentMounts'], '', `${what}: nothing mounted under /run/cos-agent/mnt\n${b.diag}`);
  const doc = statusDoc(before);
  const next = obj(doc['nextBoot']);
  t.true(next['slot'] === 'active' || next['slot'] === 'passive', `${what}: GRUB boots a slot next: ${JSON.stringify(next)}`);
  t.is(obj(doc['booted'])['version'], b.boot['version'], `${what}: status.booted names the running image\n${JSON.stringify(doc['booted'])}`);
  const want = RECORD[point];
  const last = obj(doc['lastUpgrade']);
  t.like(last, { ...want, code: want?.result === 'failure' ? 'INTERRUPTED' : null, target: 'system' }, `${what}: status.lastUpgrade records the cut upgrade\n${JSON.stringify(doc['lastUpgrade'])}`);
  t.true(String(last['image'] ?? '').endsWith('/cos/os:v2'), JSON.stringify(last));
  t.is(obj(b.kind.get('done'))['failed'], '', `${what}: no failed units\n${b.diag}`);
}

interface CutRecord {
  point: string;
  snapshotSeconds: number;
  label: unknown;
  version: unknown;
  cosAtBoot: unknown;
  cosAfterStart: unknown;
  nextBoot: unknown;
  lastUpgrade: unknown;
  upgraded: boolean;
  upgradeExit: unknown;
  seconds: number;
  log: string;
}

test(`power cuts at ${POINTS.length} points of an upgrade in the guest: every next boot reaches a good system, cosd cleans up, upgrades succeed afterwards`, async (t) => {
  const { disk, v2, setupSeconds } = scenario();
  t.timeout(BOOT_TIMEOUT_MS + 900_000 + POINTS.length * (BOOT_TIMEOUT_MS + 300_000));
  const t0 = Date.now();
  const work = await mkdtemp(path.join(tmpdir(), 'cosvm-powercut-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const image = await cloneDisk(disk.path, path.join(work, 'disk.img'));
  await writeStep(image, upgradeStep(v2.guestRef, { pauseAt: POINTS, pauseSeconds: PAUSE_SECONDS }));

  const records: CutRecord[] = [];
  const boots: Array<Promise<void>> = [];
  const cutBoot = async (i: number, point: string, snapshot: string, snapshotSeconds: number): Promise<void> => {
    const upgrade = UPGRADE_AFTER.has(point);
    const step: Step = upgrade ? upgradeStep(v2.guestRef, { force: true }) : 'check';
    const stepFile = path.join(work, `step-${i}`);
    await writeFile(stepFile, `${step}\n`);
    const b = await bootOnce(t, snapshot, work, `cut${i + 1}`, 1, { timeoutMs: BOOT_TIMEOUT_MS + (upgrade ? 600_000 : 0), extraArgs: ['-fw_cfg', `name=opt/cosvm/step,file=${stepFile}`] });
    await rm(snapshot, { force: true });
    const before = obj(b.kind.get('status-before'));
    const up = obj(b.kind.get('cosctl'));
    records[i] = {
      point, snapshotSeconds, label: b.boot['label'], version: b.boot['version'], cosAtBoot: b.boot['cos'], cosAfterStart: before['cos'],
      nextBoot: statusDoc(before)['nextBoot'], lastUpgrade: statusDoc(before)['lastUpgrade'], upgraded: upgrade, upgradeExit: up['exit'] ?? null, seconds: b.vm.durationMs / 1000, log: b.vm.logPath,
    };
    t.log(`after the cut at ${point}: ${String(b.boot['label'])} (${String(b.boot['version'])}); COS_STATE/cOS at boot: ${String(b.boot['cos'])}; once cosd started: ${String(before['cos'])}${upgrade ? `; upgrade again: exit ${String(up['exit'])}` : ''}; ${(b.vm.durationMs / 1000).toFixed(1)} s`);
    t.is(b.boot['step'], step, `the boot took the step from -fw_cfg\n${b.diag}`);
    checkAfterCut(t, b, point);
    if (upgrade) {
      t.is(up['exit'], 0, `the upgrade after the cut at ${point}\n${b.diag}`);
      const st = statusOf(b);
      t.like(obj(obj(st['slots'])['active']), { version: NEW_VERSION, imageDigest: v2.digest, verification: 'verified' }, `after the cut at ${point}, the new image staged in active\n${JSON.stringify(obj(st['slots'])['active'])}`);
      t.like(obj(st['lastUpgrade']), { result: 'success', imageDigest: v2.digest }, JSON.stringify(st['lastUpgrade']));
    }
  };

  let n = 0;
  const b = await bootOnce(t, image, work, 'powercut', 1, {
    timeoutMs: BOOT_TIMEOUT_MS + 900_000,
    freezeAtMarker: {
      match: PAUSE_MARKER,
      handle: async (line) => {
        const point = line.slice(line.indexOf(PAUSE_MARKER) + PAUSE_MARKER.length).trim();
        const i = n++;
        const snapshot = path.join(work, `cut-${i + 1}.img`);
        const s0 = Date.now();
        await run(['cp', '--sparse=always', image, snapshot]);
        boots.push(cutBoot(i, point, snapshot, (Date.now() - s0) / 1000));
      },
    },
  });
  await Promise.all(boots);

  // the upgrade boot: paused at every point in order, then finished the upgrade
  const markers = b.vm.serial.split('\n').filter((l) => l.includes(PAUSE_MARKER)).map((l) => l.slice(l.indexOf(PAUSE_MARKER) + PAUSE_MARKER.length).trim());
  t.deepEqual(markers, [...POINTS], `cosd reached every point, in order\n${b.diag}`);
  t.deepEqual(records.map((r) => r.point), [...POINTS], 'one snapshot per point');
  t.is(obj(b.kind.get('cosctl'))['exit'], 0, `the upgrade that was cut ${POINTS.length} times (as snapshots) finished\n${b.diag}`);
  t.like(obj(obj(statusOf(b)['slots'])['active']), { version: NEW_VERSION, imageDigest: v2.digest, verification: 'verified' }, b.diag);

  const wall = (Date.now() - t0) / 1000;
  t.log(`scenario wall ${wall.toFixed(1)} s (+ setup ${setupSeconds.toFixed(1)} s); upgrade boot ${(b.vm.durationMs / 1000).toFixed(1)} s; boots after the cuts ${records.map((r) => r.seconds.toFixed(0)).join(' + ')} s; snapshots ${records.map((r) => r.snapshotSeconds.toFixed(1)).join(', ')} s; host load ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  await mkdir(logDir(), { recursive: true });
  await writeFile(path.join(logDir(), 'powercut-summary.json'), `${JSON.stringify({ scenario: 'power cuts', wallSeconds: wall, setupSeconds, upgradeBoot: { seconds: b.vm.durationMs / 1000, log: b.vm.logPath }, cuts: records }, null, 2)}\n`);
});
