import test from 'ava';
import { opNames, planStage, type PlanDocument } from '../../src/yip/plan.ts';
import { emptyStep, type YipStep } from '../../src/yip/schema.ts';

const step = (name: string, after: string[] = []): YipStep => ({ ...emptyStep(), name, after: after.map((n) => ({ name: n })) });
const doc = (origin: string, steps: YipStep[], name = '', stage = 'boot'): PlanDocument => ({ origin, config: { name, stages: { [stage]: steps } } });

test("op names as yip makes them (its verified examples)", (t) => {
  t.deepEqual(opNames('f.yaml', [step(''), step(''), step('n')]), ['f.yaml..0', 'f.yaml..1', 'f.yaml.n.2']);
  t.deepEqual(opNames('f.yaml', [step('')]), ['f.yaml.0']);
  t.deepEqual(opNames('Branding', [step('Branding'), step('Branding'), step('Branding recovery'), step('Branding live CD')]), ['Branding.Branding.0', 'Branding.Branding.1', 'Branding.Branding recovery.2', 'Branding.Branding live CD.3']);
});

test('the same name in two files: X.s and X.s.1; a third collision gets .2 (yip would reuse .1 and lose a step)', (t) => {
  const p = planStage([doc('/a.yaml', [step('s')], 'X'), doc('/b.yaml', [step('s')], 'X'), doc('/c.yaml', [step('s')], 'X')], 'boot');
  t.deepEqual(p.ops.map((o) => o.name), ['X.s', 'X.s.1', 'X.s.2']);
});

test('without after: document order, then step order; documents without the stage contribute nothing', (t) => {
  const p = planStage([doc('/01.yaml', [step('a'), step('b')]), doc('/02.yaml', [], '', 'other'), doc('/03.yaml', [step('c')])], 'boot');
  t.deepEqual(p.ops.map((o) => o.name), ['/01.yaml.a', '/01.yaml.b', '/03.yaml.c']);
  t.deepEqual(p.warnings, []);
});

test("after: a step moves after the op it names, across files (yip's test.test), ties in original order", (t) => {
  const p = planStage([doc('/01.yaml', [step('a', ['test.test']), step('b')]), doc('/02.yaml', [step('test')], 'test')], 'boot');
  t.deepEqual(p.ops.map((o) => o.name), ['/01.yaml.b', 'test.test', '/01.yaml.a']);
  const q = planStage([doc('F', [step('a'), step('b'), step('c', ['F.a'])]), doc('2.yaml', [step('d')])], 'boot');
  t.deepEqual(q.ops.map((o) => o.name), ['F.a', 'F.b', 'F.c', '2.yaml.d']);
});

test('an after: naming a missing op, the step itself, or a cycle: a warning naming file and step, and every step still runs once', (t) => {
  const missing = planStage([doc('/a.yaml', [step('x', ['nope.y']), step('z')])], 'boot');
  t.deepEqual(missing.ops.map((o) => o.name), ['/a.yaml.x', '/a.yaml.z']);
  t.like(missing.warnings[0], { file: '/a.yaml', stage: 'boot', step: 0, key: 'after' });
  t.regex(missing.warnings[0]?.message ?? '', /"nope\.y" names no step/);

  const self = planStage([doc('/a.yaml', [step('x', ['/a.yaml.x'])])], 'boot');
  t.is(self.ops.length, 1);
  t.regex(self.warnings[0]?.message ?? '', /is the step itself/);

  const cycle = planStage([doc('/a.yaml', [step('a', ['/a.yaml.b']), step('b', ['/a.yaml.a']), step('c')])], 'boot');
  t.deepEqual(cycle.ops.map((o) => o.name), ['/a.yaml.c', '/a.yaml.a', '/a.yaml.b'], 'what is ready runs first; then the cycle, at its first op');
  t.is(cycle.warnings.length, 1);
  t.regex(cycle.warnings[0]?.message ?? '', /"\/a\.yaml\.b" forms a cycle with \/a\.yaml\.a/);
});
