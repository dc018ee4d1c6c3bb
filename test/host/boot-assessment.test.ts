/**
 * The agent's boot assessment (src/host/boot-assessment.ts): its GRUB script run by the INDEPENDENT interpreter of
 * test/helpers/grub-script.ts inside the real cOS grub.cfg, the host model's evaluation of the same boots, and the
 * installer on a real directory.
 */
import test from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { boot, cosBootAssessment, cosWorld, envOf, readCmdline, type GrubWorld } from '../helpers/grub-script.ts';
import { AGENT_SCRIPT_MARK, bootAssessmentScript, GRUBCUSTOM_HOOK, grubcustomWithHook, MAX_TRIES, nextTries, scriptKind } from '../../src/host/boot-assessment.ts';
import { assessmentState, evaluateGrub, grubVerbs } from '../../src/host/boot-model.ts';
import { installBootAssessment } from '../../src/host/bootchooser.ts';
import { hostFacts } from '../helpers/host-facts.ts';

const exec = promisify(execFile);

/** A cOS disk whose COS_STATE carries the agent's script (as installBootAssessment leaves it). */
function agentWorld(assessment: Record<string, string>): GrubWorld {
  const w = cosWorld({ user: {}, assessment });
  const state = w.partitions.find((p) => p.label === 'COS_STATE');
  state?.files.set('/grubcustom', { text: GRUBCUSTOM_HOOK });
  state?.files.set('/grub_boot_assessment', { text: bootAssessmentScript() });
  return w;
}
const assess = (w: GrubWorld): Map<string, string> => envOf(w, 'COS_STATE', '/boot_assessment') ?? new Map();

test('armed with N tries, GRUB boots active N times (counting down by enumeration), then falls back with upgrade_failure', (t) => {
  for (const tries of [1, 2, 3, MAX_TRIES]) {
    const w = agentWorld(Object.fromEntries(Object.entries(grubVerbs.arm(tries).assessment ?? {}).map(([k, v]) => [k, v ?? ''])));
    const seen: string[] = [];
    for (let i = 0; i < tries; i++) {
      // The model predicts each boot before GRUB runs it.
      const facts = { ...hostFacts({ assessment: Object.fromEntries(assess(w)) }), assessmentScript: 'agent' as const };
      t.is(assessmentState(facts).triesLeft, tries - i, `${tries} tries, boot ${i + 1}: tries left`);
      const predicted = evaluateGrub(facts);
      const r = boot(w);
      seen.push(r.entry ?? 'none');
      t.is(predicted.next.entry as string | null, r.entry, `${tries} tries, boot ${i + 1}: the model boots what GRUB boots`);
      t.deepEqual(Object.fromEntries(r.writes.flatMap((x) => Object.entries(x.vars))), predicted.writes.assessment, 'and writes what GRUB saves');
      t.regex(r.cmdline ?? '', /rd\.emergency=reboot/, 'an assessed boot reboots on failure');
    }
    const last = boot(w);
    t.is(last.entry, 'fallback', `${tries} tries: after ${tries} failed boots, the fallback`);
    t.true(readCmdline(last.cmdline ?? '').upgradeFailure);
    t.deepEqual(seen, Array.from({ length: tries }, () => 'cos'));
  }
});

test('a good boot disarms (mark-good): the next boots are plain active; a one-shot entry skips the countdown', (t) => {
  const w = agentWorld({ enable_boot_assessment: 'yes', boot_assessment_tries: '3' });
  t.is(boot(w).entry, 'cos');
  t.is(assess(w).get('boot_assessment_tries'), '2');
  for (const [k, v] of Object.entries(grubVerbs.markGood().assessment ?? {})) assess(w).set(k, v ?? '');
  t.deepEqual(boot(w).writes, []);
  const once = agentWorld({ enable_boot_assessment: 'yes', boot_assessment_tries: '3' });
  envOf(once, 'COS_OEM', '/grubenv')?.set('next_entry', 'fallback');
  t.is(boot(once).entry, 'fallback');
  t.is(assess(once).get('boot_assessment_tries'), '3', 'a one-shot boot is not a try');
});

test("with tries unset the agent's script is cOS's single try, and cOS's own variables keep their meaning", (t) => {
  const w = agentWorld({ enable_boot_assessment: 'yes' });
  t.is(boot(w).entry, 'cos');
  t.is(assess(w).get('boot_assessment_tentative'), 'yes');
  t.is(boot(w).entry, 'fallback');
  const always = agentWorld({});
  envOf(always, 'COS_OEM', '/grubenv')?.set('enable_boot_assessment_always', 'yes');
  t.is(boot(always).entry, 'cos');
  t.is(assess(always).get('boot_assessment_tentative'), 'yes');
});

test('the countdown is spelled out for every value (Debian GRUB 2.06 has no arithmetic) and nextTries agrees', (t) => {
  const script = bootAssessmentScript();
  t.true(script.startsWith(AGENT_SCRIPT_MARK));
  for (let n = 2; n <= MAX_TRIES; n++) t.regex(script, new RegExp(`"\\$\\{boot_assessment_tries\\}" = "${n}" \\]; then\\n\\s+set boot_assessment_tries="${n - 1}"`));
  t.notRegex(script, /increment|decrement|expr/);
  t.is(nextTries('3'), '2');
  t.is(nextTries('2'), '1');
  for (const v of ['1', '0', '', undefined, '10', 'x', '-1']) t.is(nextTries(v), null, String(v));
  t.is(scriptKind(undefined), 'none');
  t.is(scriptKind(cosBootAssessment().grubBootAssessment), 'cos');
  t.is(scriptKind(script), 'agent');
});

test("grubcustom: an existing file is extended, never replaced; one that sources grub_boot_assessment (cOS's hook) is left alone", (t) => {
  t.is(grubcustomWithHook(undefined), GRUBCUSTOM_HOOK);
  t.is(grubcustomWithHook('set timeout=3'), `set timeout=3\n${GRUBCUSTOM_HOOK}`);
  t.is(grubcustomWithHook(cosBootAssessment().grubcustom), null);
  t.is(GRUBCUSTOM_HOOK, cosBootAssessment().grubcustom, "the same text cOS's 08_boot_assessment appends");
});

test('installBootAssessment: the script, the hook and empty env blocks GRUB can save_env into; idempotent; grub-editenv reads the blocks', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-assess-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const state = path.join(dir, 'state');
  const oem = path.join(dir, 'oem');
  await exec('mkdir', ['-p', state, oem]);
  await writeFile(path.join(state, 'grubcustom'), 'set timeout=3\n');
  const first = await installBootAssessment({ state, oem });
  t.deepEqual(first.map((f) => path.relative(dir, f)).sort(), ['oem/grubenv', 'state/boot_assessment', 'state/grub_boot_assessment', 'state/grubcustom']);
  t.is(await readFile(path.join(state, 'grubcustom'), 'utf8'), `set timeout=3\n${GRUBCUSTOM_HOOK}`);
  t.is(await readFile(path.join(state, 'grub_boot_assessment'), 'utf8'), bootAssessmentScript());
  for (const f of [path.join(state, 'boot_assessment'), path.join(oem, 'grubenv')]) {
    t.is((await readFile(f)).length, 1024);
    t.is((await exec('grub-editenv', [f, 'list'])).stdout, '');
  }
  t.deepEqual(await installBootAssessment({ state, oem }), [], 'nothing to do the second time');
  // cOS's script is replaced by the agent's superset; cOS's hook in grubcustom is kept as it is.
  await writeFile(path.join(state, 'grub_boot_assessment'), cosBootAssessment().grubBootAssessment);
  t.deepEqual((await installBootAssessment({ state, oem })).map((f) => path.basename(f)), ['grub_boot_assessment']);
});
