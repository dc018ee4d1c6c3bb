/**
 * After boot assessment fell back (issue 10): status names the upgrade that failed (image, digest, version, the tries
 * it was given), and the next upgrade does not stage that image again unless forced (it would boot-loop into the same
 * failure); another image is staged into active while the running fallback is kept. On a loop-device cOS host; the
 * fallback boot is what GRUB leaves after the tries: passive booted with upgrade_failure on its cmdline.
 */
import test from 'ava';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { cosctl, cosStatus, imageCat, testHost } from '../helpers/cosctl.ts';
import { cosCmdline } from '../helpers/cos-host.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';

let reg: TestRegistry;
let v2 = '';
test.before(async () => {
  reg = await startRegistry();
  v2 = await pushOsImage(reg, 'cos/os:v2', '2.0.0');
  await pushOsImage(reg, 'cos/os:v3', '3.0.0');
});
test.after.always(async () => {
  await reg?.stop();
});

test.serial('after a fallback, status names the failed upgrade and its tries; the same image is refused unless --force, another is staged', async (t) => {
  const host = await testHost(t, { files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\nBOOT_ASSESSMENT_TRIES=2\n' } });
  const up = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`]);
  t.is(up.code, 0, up.stderr);
  t.is((await cosStatus(host)).status.failedUpgrade, null, 'no fallback yet');

  // The tries failed: GRUB fell back to passive (the image that ran before the upgrade) with upgrade_failure.
  await rm(path.join(host.root, 'run/cos-agent'), { recursive: true, force: true });
  await writeFile(path.join(host.root, 'proc/cmdline'), cosCmdline('passive', 'img', true));
  const doc = await cosStatus(host);
  t.true(doc.status.upgradeFailure);
  t.is(doc.status.booted?.slot, 'passive');
  t.like(doc.status.failedUpgrade, { slot: 'active', digest: v2, version: '2.0.0', triesUsed: 2 });
  t.regex(doc.status.failedUpgrade?.image ?? '', /cos\/os:v2/);
  // (the status wraps at 80 columns: its continuation lines are joined back first)
  t.regex((await cosctl(host, ['status'])).stdout.replace(/\n +/g, ' '), /^Rolled back: .*cos\/os:v2.* in active \(version 2\.0\.0\) failed boot assessment after 2 tries; it is not staged again unless --force$/m);

  const again = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v2`]);
  t.is(again.code, EXIT_CODES.IMAGE_FAILED_BEFORE.exit, again.stderr);
  t.regex(again.stderr, new RegExp(`cos/os:v2 \\(${v2}\\) failed boot assessment on this host.*--force stages it again`));

  const other = await cosctl(host, ['upgrade', '--no-verify', '--image', `${reg.host}/cos/os:v3`]);
  t.is(other.code, 0, other.stderr);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="3\.0\.0"/);
  t.is((await cosStatus(host)).status.booted?.slot, 'passive', 'the running fallback is kept');

  const forced = await cosctl(host, ['upgrade', '--no-verify', '--force', '--image', `${reg.host}/cos/os:v2`]);
  t.is(forced.code, 0, forced.stderr);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="2\.0\.0"/);
});
