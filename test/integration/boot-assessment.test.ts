/**
 * `cosctl boot-assessment` and an upgrade's arming on a loop-device cOS host (test/helpers/cos-host.ts installs cOS's
 * own grubcustom and one-try grub_boot_assessment, as 08_boot_assessment does): the agent's N-tries script replaces
 * cOS's, the grubcustom hook is kept, the env blocks exist, the configured tries are armed and shown by status.
 */
import test from 'ava';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { cosctl, cosStatus, grubList, testHost } from '../helpers/cosctl.ts';
import { cosBootAssessment } from '../helpers/grub-script.ts';
import { bootAssessmentScript } from '../../src/host/boot-assessment.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';

let reg: TestRegistry;
test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/os:v2', '2.0.0');
});
test.after.always(async () => {
  await reg?.stop();
});

test.serial("cosctl boot-assessment replaces cOS's one-try script with the agent's, keeps the grubcustom hook, creates /oem/grubenv; a second run has nothing to do", async (t) => {
  const host = await testHost(t);
  t.is(await readFile(host.statePath('grub_boot_assessment'), 'utf8'), cosBootAssessment().grubBootAssessment, "the host starts with cOS's script");
  const grubcustom = await readFile(host.statePath('grubcustom'), 'utf8');
  const r = await cosctl(host, ['boot-assessment']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^Boot assessment installed: .*grub_boot_assessment.*grubenv\.$/m);
  t.regex(r.stdout, /gives the new image 3 tries \(BOOT_ASSESSMENT_TRIES\)/);
  t.is(await readFile(host.statePath('grub_boot_assessment'), 'utf8'), bootAssessmentScript());
  t.is(await readFile(host.statePath('grubcustom'), 'utf8'), grubcustom, "cOS's hook already sources it: grubcustom untouched");
  t.is((await stat(path.join(host.root, 'oem/grubenv'))).size, 1024);
  const again = await cosctl(host, ['boot-assessment', '--json']);
  t.is(again.code, 0, again.stderr);
  t.like(JSON.parse(again.stdout), { changed: [], tries: 3, assessment: { enabled: false, triesLeft: null } });
  const nobody = await cosctl(host, ['boot-assessment'], {}, { uid: 65534 });
  t.is(nobody.code, EXIT_CODES.ACCESS_DENIED.exit, nobody.stderr);
});

test.serial('an upgrade installs the script and arms BOOT_ASSESSMENT_TRIES (5 here); status says how many tries are left', async (t) => {
  const host = await testHost(t, { files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\nBOOT_ASSESSMENT_TRIES=5\n' } });
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`]);
  t.is(r.code, 0, r.stderr);
  t.is(await readFile(host.statePath('grub_boot_assessment'), 'utf8'), bootAssessmentScript());
  const env = await grubList(host.statePath('boot_assessment'));
  t.deepEqual([env.get('enable_boot_assessment'), env.get('boot_assessment_tentative'), env.get('boot_assessment_tries')], ['yes', '', '5']);
  t.like((await cosStatus(host)).status.bootAssessment, { enabled: true, tentative: false, triesLeft: 5 });
  t.regex((await cosctl(host, ['status'])).stdout, /^Boot assessment: armed, 5 tries left$/m);
});

test.serial('BOOT_ASSESSMENT_TRIES out of 1..9 is a config error naming the key and the file', async (t) => {
  const host = await testHost(t, { files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\nBOOT_ASSESSMENT_TRIES=12\n' } });
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`]);
  t.is(r.code, EXIT_CODES.CONFIG_INVALID.exit, r.stderr);
  t.regex(r.stderr, /\/etc\/cos\/config:2.*BOOT_ASSESSMENT_TRIES.*1 to 9, got "12"/);
});
