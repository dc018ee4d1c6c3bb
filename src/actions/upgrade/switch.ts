/** Carry out the switch steps of plan.ts on a mounted slot partition, with an fsync of cOS/ after every step. */
import { link, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../model/errors.ts';
import { setExt2Label, syncFs } from '../../partitions/index.ts';
import type { AgentDeps } from '../../host/deps.ts';
import type { SwitchStep } from './plan.ts';

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/**
 * One step, then an fsync of cOS/. `repeatable` (a journal resuming a switch): a step whose effect is already there
 * is skipped (a rename whose source is gone and whose target exists; a label of a name renamed away since), and a
 * step neither of whose names exists is STATE_INVALID; without it every step acts and its errors are thrown as they are.
 */
export async function applySwitchStep(deps: AgentDeps, partDir: string, step: SwitchStep, opts: { repeatable?: boolean } = {}): Promise<void> {
  const at = (f: string): string => path.join(partDir, f);
  if (opts.repeatable === true) {
    const source = step.op === 'label' ? step.file : step.from;
    if (!(await exists(at(source)))) {
      if (step.op === 'label' || (await exists(at(step.to)))) {
        // Done before a crash, maybe not yet written where GRUB reads it (its syncfs may not have run).
        await syncFs(at('cOS'));
        return;
      }
      throw new AgentError('STATE_INVALID', `switch step ${step.op} ${step.from} -> ${step.to}: neither name exists`);
    }
  }
  if (step.op === 'label') {
    await setExt2Label(deps.runner, at(step.file), step.label);
    await syncFs(at(step.file));
  } else if (step.op === 'link') {
    await rm(at(step.to), { force: true });
    await link(at(step.from), at(step.to));
  } else {
    await rename(at(step.from), at(step.to));
  }
  await syncFs(at('cOS'));
}

export async function applySwitchSteps(deps: AgentDeps, partDir: string, steps: readonly SwitchStep[], onStepDone?: () => void): Promise<void> {
  for (const step of steps) {
    await applySwitchStep(deps, partDir, step);
    onStepDone?.();
  }
}
