/**
 * applySwitchSteps (src/actions/upgrade/switch.ts) on a temp dir standing for the slot partition: small regular files
 * stand for the images (their inodes tell which image a name holds), a recording Runner answers the `label` steps
 * (tune2fs). Covers the upgrade switch of plan.ts, per-step progress, a failure part way and its resume.
 */
import test, { type ExecutionContext } from 'ava';
import { renameSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { applySwitchSteps } from '../../../src/actions/upgrade/switch.ts';
import { upgradeSwitchSteps, type SwitchStep, type UpgradePlan } from '../../../src/actions/upgrade/plan.ts';
import type { AgentDeps } from '../../../src/host/deps.ts';
import type { Labels } from '../../../src/model/config.ts';
import { CommandError } from '../../../src/model/errors.ts';
import type { Command, CommandResult, Runner } from '../../../src/sys/runner.ts';

const labels: Labels = {
  state: 'COS_STATE', active: 'COS_ACTIVE', passive: 'COS_PASSIVE', recovery: 'COS_RECOVERY',
  system: 'COS_SYSTEM', oem: 'COS_OEM', persistent: 'COS_PERSISTENT', grub: 'COS_GRUB',
};

/** A system upgrade plan as planUpgrade makes it; `rotate` decides whether active moves to passive. */
const systemPlan = (rotate: boolean): UpgradePlan => ({
  target: 'system',
  partitionLabel: 'COS_STATE',
  finalFile: 'cOS/active.img',
  transitionFile: 'cOS/transition.img',
  fs: 'ext2',
  label: 'COS_ACTIVE',
  rotate,
  keepPassiveReason: rotate ? null : 'booted from passive',
  updateGrub: true,
});

/** Records every command; `failAt` (1-based) makes that command fail as the real runner would (CommandError). */
class RecordingRunner implements Runner {
  readonly argv: string[][] = [];
  failAt: number | undefined;
  constructor(failAt?: number) {
    this.failAt = failAt;
  }
  run(cmd: Command): Promise<CommandResult> {
    this.argv.push([...cmd.argv]);
    if (this.argv.length === this.failAt) {
      return Promise.reject(new CommandError(cmd.description, cmd.argv, { exitCode: 1, signal: null, stderrTail: 'tune2fs: Device or resource busy' }));
    }
    return Promise.resolve({ exitCode: 0, stdout: '', stderr: '' });
  }
}

const depsWith = (runner: Runner): AgentDeps => ({ runner }) as unknown as AgentDeps;

/** A partition dir with cOS/ holding the given files (content = the file's original name, to tell images apart). */
async function partition(t: ExecutionContext, files: readonly string[]): Promise<{ dir: string; ino: Record<string, number> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-agent-switch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'cOS'));
  const ino: Record<string, number> = {};
  for (const f of files) {
    await writeFile(path.join(dir, 'cOS', f), `image ${f}\n`);
    ino[f] = (await stat(path.join(dir, 'cOS', f))).ino;
  }
  return { dir, ino };
}

/** cOS/ now: each name with its inode, sorted. */
async function listing(dir: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const name of (await readdir(path.join(dir, 'cOS'))).sort()) out[name] = (await stat(path.join(dir, 'cOS', name))).ino;
  return out;
}

const tune2fs = (dir: string, file: string, label: string): string[] => ['tune2fs', '-L', label, path.join(dir, file)];

test('the rotating upgrade switch: new image under active.img, the old active under passive.img, labels set in order', async (t) => {
  const { dir, ino } = await partition(t, ['active.img', 'passive.img', 'transition.img']);
  const steps = upgradeSwitchSteps(systemPlan(true), labels, { active: true });
  t.deepEqual(steps.map((s) => s.op), ['label', 'link', 'rename', 'label', 'rename']);
  const runner = new RecordingRunner();
  const seen: Array<Record<string, number>> = [];
  await applySwitchSteps(depsWith(runner), dir, steps, () => void seen.push({ runs: runner.argv.length }));

  t.deepEqual(await listing(dir), { 'active.img': ino['transition.img'], 'passive.img': ino['active.img'] });
  t.is(await readFile(path.join(dir, 'cOS/active.img'), 'utf8'), 'image transition.img\n');
  t.is(await readFile(path.join(dir, 'cOS/passive.img'), 'utf8'), 'image active.img\n');
  t.is((await stat(path.join(dir, 'cOS/passive.img'))).nlink, 1, 'the second name of the old active is gone');
  t.deepEqual(runner.argv, [tune2fs(dir, 'cOS/transition.img', 'COS_ACTIVE'), tune2fs(dir, 'cOS/passive.next', 'COS_PASSIVE')]);
  // onStepDone: once per step, each after that step's command (if any) ran
  t.deepEqual(seen, [{ runs: 1 }, { runs: 1 }, { runs: 1 }, { runs: 2 }, { runs: 2 }]);
});

test('the keep-passive upgrade switch: the new image replaces active.img, passive.img is left alone', async (t) => {
  const { dir, ino } = await partition(t, ['active.img', 'passive.img', 'transition.img']);
  const steps = upgradeSwitchSteps(systemPlan(false), labels, { active: true });
  t.deepEqual(steps, [
    { op: 'label', file: 'cOS/transition.img', label: 'COS_ACTIVE' },
    { op: 'rename', from: 'cOS/transition.img', to: 'cOS/active.img' },
  ]);
  const runner = new RecordingRunner();
  let done = 0;
  await applySwitchSteps(depsWith(runner), dir, steps, () => void done++);
  t.is(done, 2);
  t.deepEqual(await listing(dir), { 'active.img': ino['transition.img'], 'passive.img': ino['passive.img'] });
  t.deepEqual(runner.argv, [tune2fs(dir, 'cOS/transition.img', 'COS_ACTIVE')]);
});

test('a rotating upgrade without an active.img yet is a label and a rename', async (t) => {
  const { dir, ino } = await partition(t, ['transition.img']);
  const steps = upgradeSwitchSteps(systemPlan(true), labels, { active: false });
  const runner = new RecordingRunner();
  let done = 0;
  await applySwitchSteps(depsWith(runner), dir, steps, () => void done++);
  t.is(done, 2);
  t.deepEqual(await listing(dir), { 'active.img': ino['transition.img'] });
  t.deepEqual(runner.argv, [tune2fs(dir, 'cOS/transition.img', 'COS_ACTIVE')]);
});

test('a failing label (the second tune2fs) stops the switch after the completed steps; the remaining steps complete it', async (t) => {
  const { dir, ino } = await partition(t, ['active.img', 'passive.img', 'transition.img']);
  const steps = upgradeSwitchSteps(systemPlan(true), labels, { active: true });
  const runner = new RecordingRunner(2);
  let done = 0;
  const err = await t.throwsAsync(applySwitchSteps(depsWith(runner), dir, steps, () => void done++), { instanceOf: CommandError });
  t.deepEqual(err?.argv, tune2fs(dir, 'cOS/passive.next', 'COS_PASSIVE'));
  t.is(done, 3, 'label, link and rename completed; the failed label is not counted');
  // where it stopped: active.img already is the new image, the old active still has its second name, passive untouched
  t.deepEqual(await listing(dir), { 'active.img': ino['transition.img'], 'passive.img': ino['passive.img'], 'passive.next': ino['active.img'] });

  // the resume the upgrade relies on: the steps not done, once more
  const again = new RecordingRunner();
  let more = 0;
  await applySwitchSteps(depsWith(again), dir, steps.slice(done), () => void more++);
  t.is(more, 2);
  t.deepEqual(again.argv, [tune2fs(dir, 'cOS/passive.next', 'COS_PASSIVE')]);
  t.deepEqual(await listing(dir), { 'active.img': ino['transition.img'], 'passive.img': ino['active.img'] });
});

test('a step whose source is missing fails (ENOENT) after the completed steps; with the file back the remaining steps complete the switch', async (t) => {
  const { dir, ino } = await partition(t, ['active.img', 'passive.img', 'transition.img']);
  const steps = upgradeSwitchSteps(systemPlan(true), labels, { active: true });
  const runner = new RecordingRunner();
  const aside = path.join(dir, 'elsewhere.img');
  let done = 0;
  const err = await t.throwsAsync(applySwitchSteps(depsWith(runner), dir, steps, () => {
    done++;
    // after the link (step 2) the transition image goes missing: step 3, its rename to active.img, fails
    if (done === 2) renameSync(path.join(dir, 'cOS/transition.img'), aside);
  }));
  t.is((err as NodeJS.ErrnoException | undefined)?.code, 'ENOENT');
  t.is(done, 2);
  // the default entry still has the old active, under both of its names
  t.deepEqual(await listing(dir), { 'active.img': ino['active.img'], 'passive.img': ino['passive.img'], 'passive.next': ino['active.img'] });
  t.deepEqual(runner.argv, [tune2fs(dir, 'cOS/transition.img', 'COS_ACTIVE')]);

  await rename(aside, path.join(dir, 'cOS/transition.img'));
  let more = 0;
  await applySwitchSteps(depsWith(runner), dir, steps.slice(done), () => void more++);
  t.is(more, 3);
  t.deepEqual(await listing(dir), { 'active.img': ino['transition.img'], 'passive.img': ino['active.img'] });
  t.deepEqual(runner.argv, [tune2fs(dir, 'cOS/transition.img', 'COS_ACTIVE'), tune2fs(dir, 'cOS/passive.next', 'COS_PASSIVE')]);
});

test('a link step over an existing target replaces it; over a missing target it just links', async (t) => {
  const { dir, ino } = await partition(t, ['a.img', 'b.img']);
  const runner = new RecordingRunner();
  const steps: SwitchStep[] = [
    { op: 'link', from: 'cOS/a.img', to: 'cOS/b.img' },
    { op: 'link', from: 'cOS/a.img', to: 'cOS/c.img' },
  ];
  let done = 0;
  await applySwitchSteps(depsWith(runner), dir, steps, () => void done++);
  t.is(done, 2);
  t.deepEqual(await listing(dir), { 'a.img': ino['a.img'], 'b.img': ino['a.img'], 'c.img': ino['a.img'] });
  t.is(await readFile(path.join(dir, 'cOS/b.img'), 'utf8'), 'image a.img\n');
  t.is((await stat(path.join(dir, 'cOS/a.img'))).nlink, 3);
  t.deepEqual(runner.argv, [], 'no command for links');
});
