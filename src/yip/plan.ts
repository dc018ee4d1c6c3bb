/**
 * PURE: the ops of one stage of one source, in the order they run (yip.md 2.3 and decision 6.1).
 *
 * Op names are yip's: within a document, when any two steps of the stage share a name (two unnamed steps do), each is
 * `<name>.<index>`, else `<name>`, and an empty result is `<index>`; the op is `<root>.<that>`, root being the
 * document's `name` or else its path as walked (or `<STDIN>`). Names that still collide across documents get `.1`,
 * `.2`, ... (yip reuses `.1` for a third and loses that step; here every op keeps a name of its own).
 *
 * Order: yip >= 1.0 runs a DAG in concurrent layers; yip 2617d71 (cOS v0.8) runs files in walk order and steps in
 * list order, strictly one after the other, which is a linearisation of the DAG for every input without `after:`. So
 * the ops run in document order, step order, and a step with `after:` moves after the ops it names (a stable
 * topological sort, the original order breaking ties). An `after:` naming no op of this stage and source, or a cycle
 * (a self-reference included), is a warning and that dependency is dropped; yip itself panics on both.
 */
import type { YipProblem, YipStep } from './schema.ts';

export interface YipOp {
  /** The op name (`<root>.<step name or index>`), unique within the stage and source. */
  name: string;
  /** The document's path as walked, its URL, or `<STDIN>`. */
  origin: string;
  stage: string;
  /** Index of the step in its document's list for the stage. */
  index: number;
  step: YipStep;
}

export interface StagePlan {
  ops: YipOp[];
  warnings: YipProblem[];
}

export interface PlanDocument {
  origin: string;
  config: { name: string; stages: Record<string, YipStep[]> };
}

/** The op names of one document's steps for a stage (before cross-document disambiguation). */
export function opNames(root: string, steps: readonly YipStep[]): string[] {
  const names = steps.map((s) => s.name);
  const dup = new Set(names).size < names.length;
  return names.map((n, i) => {
    const base = dup ? `${n}.${i}` : n;
    return `${root}.${base === '' ? String(i) : base}`;
  });
}

export function planStage(docs: readonly PlanDocument[], stage: string): StagePlan {
  const warnings: YipProblem[] = [];
  const ops: YipOp[] = [];
  const taken = new Set<string>();
  for (const doc of docs) {
    const steps = doc.config.stages[stage] ?? [];
    const names = opNames(doc.config.name !== '' ? doc.config.name : doc.origin, steps);
    steps.forEach((step, index) => {
      let name = names[index] as string;
      for (let n = 1; taken.has(name); n++) name = `${names[index] as string}.${n}`;
      taken.add(name);
      ops.push({ name, origin: doc.origin, stage, index, step });
    });
  }

  // Dependencies from after:, by op name; unknown names and self-references dropped with a warning.
  const byName = new Map(ops.map((o, i) => [o.name, i]));
  const deps: Array<Set<number>> = ops.map(() => new Set<number>());
  ops.forEach((op, i) => {
    for (const { name } of op.step.after) {
      const j = byName.get(name);
      const where = { file: op.origin, line: 0, stage, step: op.index, key: 'after' };
      if (j === undefined) warnings.push({ ...where, message: `after: "${name}" names no step of stage ${stage} in this source; the dependency is ignored` });
      else if (j === i) warnings.push({ ...where, message: `after: "${name}" is the step itself; the dependency is ignored` });
      else deps[i]?.add(j);
    }
  });

  // Stable Kahn: always the first ready op in the original order.
  const done = new Set<number>();
  const order: number[] = [];
  while (order.length < ops.length) {
    let next = -1;
    for (let i = 0; i < ops.length; i++) {
      if (done.has(i)) continue;
      if ([...(deps[i] ?? [])].every((d) => done.has(d))) {
        next = i;
        break;
      }
    }
    if (next < 0) {
      // A cycle: its first op (in the original order) runs now, its unmet dependencies dropped with a warning.
      next = ops.findIndex((_, i) => !done.has(i));
      const op = ops[next] as YipOp;
      const unmet = [...(deps[next] ?? [])].filter((d) => !done.has(d)).map((d) => (ops[d] as YipOp).name);
      warnings.push({ file: op.origin, line: 0, stage, step: op.index, key: 'after', message: `after: ${unmet.map((n) => `"${n}"`).join(', ')} forms a cycle with ${op.name}; that dependency is ignored` });
    }
    done.add(next);
    order.push(next);
  }
  return { ops: order.map((i) => ops[i] as YipOp), warnings };
}
