import test from 'ava';
import { interruptedRecord } from '../../src/actions/recover.ts';
import type { RunningUpgrade } from '../../src/host/records.ts';

const running = (step: string, target: 'system' | 'recovery' = 'system'): RunningUpgrade => ({
  transaction: 't-1', target, image: 'reg.example/cos/os:v2', imageDigest: `sha256:${'a'.repeat(64)}`, startedAt: '2026-12-04T10:00:00.000Z', step,
});
const NOW = '2026-12-04T11:00:00.000Z';

test('cut before the switch: a failure with code INTERRUPTED naming the step, the slots as they were, what was removed', (t) => {
  const r = interruptedRecord(running('pull'), null, { removed: ['/run/cos-agent/mnt/state/cOS/transition.img'], unfinished: null }, NOW);
  t.like(r, { transaction: 't-1', result: 'failure', code: 'INTERRUPTED', interruptedAt: 'pull', rotated: false, target: 'system', image: 'reg.example/cos/os:v2', startedAt: '2026-12-04T10:00:00.000Z', finishedAt: NOW });
  t.is(r.error, 'the upgrade was interrupted (power cut or crash) at step pull, before its slot switch: the slots are as they were; what it left was removed (transition.img)');
  t.is(r.warnings, undefined);
});

test('cut after the commit and finished by the next run: a success with a warning naming the step', (t) => {
  const r = interruptedRecord(running('grub'), 'finished', { removed: [], unfinished: null }, NOW);
  t.like(r, { result: 'success', code: null, error: null, interruptedAt: 'grub', rotated: true });
  t.deepEqual(r.warnings, ['interrupted (power cut or crash) at step grub, after its slot switch was committed: the next run of the agent finished it']);
});

test('a recovery upgrade (no journal) cut at or after its switch: no claim that the slots are as they were', (t) => {
  const r = interruptedRecord(running('record-state', 'recovery'), null, { removed: [], unfinished: null }, NOW);
  t.like(r, { result: 'failure', code: 'INTERRUPTED', interruptedAt: 'record-state', target: 'recovery', rotated: false });
  t.regex(r.error ?? '', /at step record-state, while or after the recovery image was switched: status shows which image the recovery slot holds$/);
  t.regex(interruptedRecord(running('seal', 'recovery'), null, { removed: [], unfinished: null }, NOW).error ?? '', /before its slot switch: the slots are as they were$/);
});

test('a system upgrade cut at commit-switch before its journal: nothing switched; cut after the commit with its journal gone: complete', (t) => {
  t.regex(interruptedRecord(running('commit-switch'), null, { removed: [], unfinished: null }, NOW).error ?? '', /at step commit-switch, before its slot switch: the slots are as they were$/);
  const r = interruptedRecord(running('record-state'), null, { removed: [], unfinished: null }, NOW);
  t.like(r, { result: 'success', code: null, interruptedAt: 'record-state', rotated: true });
  t.deepEqual(r.warnings, ['interrupted (power cut or crash) at step record-state, after its slot switch was complete: only its record was missing']);
});

test('a switch recovery abandoned (the running image would have lost its slot): a failure that says so', (t) => {
  const r = interruptedRecord(running('commit-switch'), 'abandoned', { removed: [], unfinished: null }, NOW);
  t.like(r, { result: 'failure', code: 'INTERRUPTED' });
  t.regex(r.error ?? '', /its slot switch abandoned where it stood/);
});

test('what recovery could not put right is named', (t) => {
  const r = interruptedRecord(running('commit-switch'), null, { removed: [], unfinished: 'cOS/passive.next is the only name of an image' }, NOW);
  t.regex(r.error ?? '', /; cOS\/passive\.next is the only name of an image$/);
});
