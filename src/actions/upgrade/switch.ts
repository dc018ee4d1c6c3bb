/** Carry out the switch steps of plan.ts on a mounted slot partition, with an fsync of cOS/ after every step. */
import { link, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { setExt2Label, syncFs } from '../../partitions/index.ts';
import type { AgentDeps } from '../../host/deps.ts';
import type { SwitchStep } from './plan.ts';

export async function applySwitchSteps(deps: AgentDeps, partDir: string, steps: readonly SwitchStep[], onStepDone?: () => void): Promise<void> {
  const cos = path.join(partDir, 'cOS');
  for (const step of steps) {
    if (step.op === 'label') {
      await setExt2Label(deps.runner, path.join(partDir, step.file), step.label);
      await syncFs(path.join(partDir, step.file));
    } else if (step.op === 'link') {
      await rm(path.join(partDir, step.to), { force: true });
      await link(path.join(partDir, step.from), path.join(partDir, step.to));
    } else {
      await rename(path.join(partDir, step.from), path.join(partDir, step.to));
    }
    await syncFs(cos);
    onStepDone?.();
  }
}
