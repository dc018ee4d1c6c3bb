/**
 * The GRUB script interpreter of test/helpers/grub-script.ts, on the real cOS v0.8.14 grub.cfg.tmpl, bootargs.cfg.tmpl
 * and 08_boot_assessment.yaml snippets. These pin down GRUB's behaviour independently of src/host/boot-model.ts.
 */
import test from 'ava';
import { boot, cloneWorld, cosBootAssessment, cosGrubCfg, cosWorld, envOf, readCmdline, type GrubWorld } from '../helpers/grub-script.ts';

const ASSESS_ACTIVE = 'rd.emergency=reboot rd.shell=0 panic=5 systemd.crash_reboot systemd.crash_shell=0';
const userEnv = (w: GrubWorld): Map<string, string> | undefined => envOf(w, 'COS_OEM', '/grubenv');
const assessEnv = (w: GrubWorld): Map<string, string> | undefined => envOf(w, 'COS_STATE', '/boot_assessment');

test('the real cOS files are used: the grub.cfg template rendered with labels, the snippets out of the YAML', (t) => {
  const cfg = cosGrubCfg();
  t.notRegex(cfg, /@[A-Z_]+@/);
  t.regex(cfg, /search --no-floppy --label --set=root COS_STATE/);
  const { grubcustom, grubBootAssessment } = cosBootAssessment();
  t.is(grubcustom.split('\n')[0], 'set bootfile="/grub_boot_assessment"');
  t.regex(grubcustom, /source "\(\$\{bootfile_loc\}\)\$\{bootfile\}"/);
  t.regex(grubBootAssessment, /set extra_passive_cmdline="upgrade_failure"/);
  t.regex(grubBootAssessment, /save_env -f "\(\$\{boot_assessment_blk\}\)\$\{boot_assessment\}" boot_assessment_tentative/);
});

test('with empty env blocks GRUB boots entry 0 (cos, active.img) with the bootargs.cfg cmdline and writes nothing', (t) => {
  const w = cosWorld({ user: {} });
  const r = boot(w);
  t.is(r.entry, 'cos');
  t.deepEqual(r.tried, ['cos']);
  t.deepEqual(r.file, { partition: 'COS_STATE', path: '/cOS/active.img' });
  t.is(r.kernel, '(loop0)/boot/vmlinuz');
  t.is(r.cmdline, `console=tty1 console=ttyS0 root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img panic=5 security=selinux selinux=1 rd.neednet=1 rd.cos.oemlabel=COS_OEM fsck.mode=force fsck.repair=yes ${ASSESS_ACTIVE}`);
  t.deepEqual(r.writes, []);
  t.is(r.vars.get('display_name'), 'cOS');
  t.is(r.vars.get('fallback'), '0 1 2', 'no default_fallback: the cOS list');
});

test('a one-shot next_entry boots once: GRUB clears it with save_env, the boot after is the default again', (t) => {
  const w = cosWorld({ user: { next_entry: 'fallback' } });
  const r = boot(w);
  t.is(r.entry, 'fallback');
  t.is(readCmdline(r.cmdline ?? '').imgFile, '/cOS/passive.img');
  t.deepEqual(r.writes, [{ partition: 'COS_OEM', path: '/grubenv', vars: { next_entry: '' } }]);
  t.is(userEnv(w)?.get('next_entry'), '', 'applied to the world');
  t.is(r.vars.get('selected_entry'), 'fallback');
  const again = boot(w);
  t.is(again.entry, 'cos');
  t.deepEqual(again.writes, []);
});

test('a one-shot given by menu index works as well', (t) => {
  const w = cosWorld({ user: { next_entry: '2' } });
  t.is(boot(w).entry, 'recovery');
  t.is(boot(w).entry, 'cos');
});

test('without a /grubenv anywhere, a next_entry coming from grub_oem_env is never cleared (save_env cannot create the block)', (t) => {
  const w = cosWorld({ oem: { next_entry: 'fallback' } });
  for (let i = 0; i < 3; i++) t.is(boot(w).entry, 'fallback');
  t.is(envOf(w, 'COS_STATE', '/grub_oem_env')?.get('next_entry'), 'fallback');
  t.true(boot(w).errors.some((e) => e.startsWith('save_env: file not found')));
});

test('saved_entry is the default on every boot (id or index), and the user env overrides grub_oem_env', (t) => {
  const w = cosWorld({ user: { saved_entry: 'fallback', default_menu_entry: 'Mine' }, oem: { default_menu_entry: 'cOS 2', saved_entry: 'recovery' } });
  t.is(boot(w).entry, 'fallback');
  t.is(boot(w).entry, 'fallback');
  t.is(boot(w).vars.get('display_name'), 'Mine');
  t.is(boot(cosWorld({ user: { saved_entry: '1' } })).entry, 'fallback');
  t.is(boot(cosWorld({ oem: { saved_entry: 'recovery' } })).entry, 'recovery', 'grub_oem_env counts when grubenv does not say otherwise');
  t.is(boot(cosWorld({ user: { saved_entry: 'nonsense' } })).entry, 'cos', 'an unknown default is entry 0');
});

test('boot assessment enabled, not tentative: GRUB sets tentative (save_env into /boot_assessment) and boots cos', (t) => {
  const w = cosWorld({ user: {}, assessment: { enable_boot_assessment: 'yes' } });
  const r = boot(w);
  t.is(r.entry, 'cos');
  t.deepEqual(r.writes, [{ partition: 'COS_STATE', path: '/boot_assessment', vars: { boot_assessment_tentative: 'yes' } }]);
  t.is(assessEnv(w)?.get('boot_assessment_tentative'), 'yes');
  t.false(readCmdline(r.cmdline ?? '').upgradeFailure);
  t.true((r.cmdline ?? '').endsWith(ASSESS_ACTIVE));
});

test('boot assessment enabled and tentative: GRUB falls back to passive with upgrade_failure, and writes nothing', (t) => {
  const w = cosWorld({ user: {}, assessment: { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes' } });
  const r = boot(w);
  t.is(r.entry, 'fallback');
  const c = readCmdline(r.cmdline ?? '');
  t.true(c.upgradeFailure);
  t.is(c.rootLabel, 'COS_PASSIVE');
  t.is(c.imgFile, '/cOS/passive.img');
  t.deepEqual(r.writes, []);
  t.is(boot(w).entry, 'fallback', 'nothing in GRUB ever clears it: the passive boot does not either (cos-layout.md 4.5)');
});

test('enable_boot_assessment_always from grubenv arms it as well; assessment is inert without grubcustom', (t) => {
  const always = cosWorld({ user: { enable_boot_assessment_always: 'yes' } });
  t.is(boot(always).entry, 'cos');
  t.is(assessEnv(always)?.get('boot_assessment_tentative'), 'yes');
  t.is(boot(always).entry, 'fallback');

  const inert = cosWorld({ user: {}, assessmentInstalled: false, assessment: { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes' } });
  const r = boot(inert);
  t.is(r.entry, 'cos');
  t.false((r.cmdline ?? '').includes('rd.emergency=reboot'));
});

test('a one-shot skips boot assessment: no tentative written, no fallback, no upgrade_failure', (t) => {
  const armed = cosWorld({ user: { next_entry: 'cos' }, assessment: { enable_boot_assessment: 'yes' } });
  const r = boot(armed);
  t.is(r.entry, 'cos');
  t.deepEqual(r.writes, [{ partition: 'COS_OEM', path: '/grubenv', vars: { next_entry: '' } }]);
  t.is(assessEnv(armed)?.get('boot_assessment_tentative'), undefined);

  const tentative = cosWorld({ user: { next_entry: 'cos' }, assessment: { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes' } });
  const r2 = boot(tentative);
  t.is(r2.entry, 'cos');
  t.false(readCmdline(r2.cmdline ?? '').upgradeFailure);
  t.is(boot(tentative).entry, 'fallback', 'the boot after the one-shot is assessed again');
});

test('grubenv extra_cmdline lands on every entry; its extra_active_cmdline is overridden by grub_boot_assessment', (t) => {
  const w = cosWorld({ user: { extra_cmdline: 'quiet foo=bar', extra_active_cmdline: 'mine', extra_passive_cmdline: 'p1' } });
  const a = boot(w).cmdline ?? '';
  t.true(a.includes(' quiet foo=bar '));
  t.false(a.split(' ').includes('mine'));
  const p = boot(cosWorld({ user: { next_entry: 'fallback', extra_passive_cmdline: 'p1' } })).cmdline ?? '';
  t.true(p.endsWith(' p1'));
});

test('a missing active.img fails inside GRUB: the fallback list "0 1 2" is walked and passive boots', (t) => {
  const w = cosWorld({ user: {}, active: null });
  const r = boot(w);
  t.is(r.entry, 'fallback');
  t.deepEqual(r.tried, ['cos', 'cos', 'fallback']);
  t.true(r.errors.some((e) => e.startsWith('loopback: file not found')));
  t.is(readCmdline(r.cmdline ?? '').rootLabel, 'COS_PASSIVE');

  const both = boot(cosWorld({ active: null, passive: null }));
  t.is(both.entry, 'recovery');
  t.deepEqual(both.tried, ['cos', 'cos', 'fallback', 'recovery']);

  const nothing = boot(cosWorld({ active: null, passive: null, recovery: null }));
  t.is(nothing.entry, null);
  t.is(nothing.cmdline, null);

  const custom = boot(cosWorld({ user: { default_fallback: '2' }, active: null }));
  t.is(custom.entry, 'recovery', 'default_fallback replaces the list');
  const byId = boot(cosWorld({ user: { default_fallback: 'fallback' }, active: null }));
  t.is(byId.entry, 'fallback', 'an entry id in the list works too');
});

test('boot assessment falling back to a missing passive.img ends in cos through the fallback list (no upgrade_failure there)', (t) => {
  const w = cosWorld({ user: {}, passive: null, assessment: { enable_boot_assessment: 'yes', boot_assessment_tentative: 'yes' } });
  const r = boot(w);
  t.deepEqual(r.tried, ['fallback', 'cos']);
  t.is(r.entry, 'cos');
  t.false(readCmdline(r.cmdline ?? '').upgradeFailure);
});

test('recovery: a squashfs boots live from COS_RECOVERY, an img boots root=LABEL=COS_SYSTEM', (t) => {
  const squash = boot(cosWorld({ user: { next_entry: 'recovery' }, recovery: 'squashfs' }));
  t.is(squash.entry, 'recovery');
  t.deepEqual(squash.file, { partition: 'COS_RECOVERY', path: '/cOS/recovery.squashfs' });
  t.regex(squash.cmdline ?? '', /^console=tty1 console=ttyS0 root=live:LABEL=COS_RECOVERY rd\.live\.dir=\/ rd\.live\.squashimg=\/cOS\/recovery\.squashfs panic=5 rd\.neednet=1 rd\.cos\.oemlabel=COS_OEM$/);
  const img = boot(cosWorld({ user: { next_entry: 'recovery' }, recovery: 'img' }));
  t.deepEqual(img.file, { partition: 'COS_RECOVERY', path: '/cOS/recovery.img' });
  const c = readCmdline(img.cmdline ?? '');
  t.is(c.rootLabel, 'COS_SYSTEM');
  t.is(c.imgFile, '/cOS/recovery.img');
  t.is(c.squashImg, null);
});

test('cloneWorld: a dry run on a copy leaves the original untouched', (t) => {
  const w = cosWorld({ user: { next_entry: 'fallback' }, assessment: { enable_boot_assessment: 'yes' } });
  const copy = cloneWorld(w);
  t.is(boot(copy).entry, 'fallback');
  t.is(userEnv(w)?.get('next_entry'), 'fallback');
  t.is(userEnv(copy)?.get('next_entry'), '');
});

test('the language subset: quoting, expansion and splitting, if/elif/else, test operators, loop0 reuse', (t) => {
  const script = `
set a="x  y"   # a comment
set b=$a
set c='$a'
set d="\${a}-\\"q\\""
if [ -z "$unset" -a -n "$a" ]; then set r1=yes; else set r1=no; fi
if [ "$a" = "nope" ]; then set r2=1
elif [ "$a" != "nope" -o "" ]; then set r2=2
else set r2=3
fi
if [ "" ]; then set r3=bad; fi
if ! [ "" ]; then set r4=ok; fi
set fallback="1 1"
menuentry "T $a" --id one { linux (loop0)/k $a "$a" ; }
menuentry 'two' { loopback loop0 /x ; }
`;
  const r = boot({ partitions: [] }, { grubCfg: script });
  t.is(r.vars.get('a'), 'x  y');
  t.is(r.vars.get('b'), 'x', 'unquoted expansion splits: set gets "b=x" and "y"');
  t.is(r.vars.get('c'), '$a');
  t.is(r.vars.get('d'), 'x  y-"q"');
  t.is(r.vars.get('r1'), 'yes');
  t.is(r.vars.get('r2'), '2');
  t.false(r.vars.has('r3'));
  t.is(r.vars.get('r4'), 'ok');
  t.is(r.entry, null, 'no loop0 device: linux fails, and the second entry has no kernel');
  t.deepEqual(r.tried, ['one', 'two', 'two']);

  // The loop0 bug of cos-layout.md 4.2: an entry that failed after its loopback leaves loop0, the next one cannot
  // create it again.
  const w: GrubWorld = { partitions: [{ label: 'D', files: new Map([['/a.img', { image: { label: 'A' } }], ['/b.img', { image: { label: 'B' } }]]) }] };
  const cfg = `set root=hd0,gpt1
set fallback=1
menuentry a --id a { loopback loop0 /a.img ; linux /nokernel ; }
menuentry b --id b { loopback loop0 /b.img ; linux (loop0)/boot/vmlinuz x=1 ; }
`;
  const r2 = boot(w, { grubCfg: cfg });
  t.deepEqual(r2.tried, ['a', 'b']);
  t.is(r2.entry, 'b');
  t.is(r2.image?.label, 'A', 'b booted the kernel of the loop0 that a left behind');
  t.true(r2.errors.includes('loopback: device name already exists: loop0'));
});
