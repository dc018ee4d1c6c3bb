/**
 * PURE: the GRUB side of boot assessment the agent installs on COS_STATE, the way cOS's 08_boot_assessment.yaml does
 * (cos-layout.md 4.5): `/grubcustom` sources `/grub_boot_assessment`, which reads the env block `/boot_assessment`.
 *
 * The agent's `/grub_boot_assessment` is a superset of cOS's: the same variables (`enable_boot_assessment`,
 * `enable_boot_assessment_always`, `boot_assessment_tentative`, `upgrade_failure` on the fallback's cmdline, the same
 * extra_active_cmdline), plus `boot_assessment_tries`, the boots of active left before GRUB falls back. cOS gives
 * an upgrade one try; N tries survive a transient failure (a hung network at first boot, a power cut mid-boot).
 * Debian's GRUB 2.06 has no arithmetic (no increment/decrement modules): the countdown is spelled out, one branch
 * per value (vm-boot.md section 3).
 *
 * One boot of active, with assessment enabled and no one-shot entry taken:
 *   tentative=yes            -> the fallback entry boots, with upgrade_failure (tries are used up);
 *   tries = 2..MAX_TRIES     -> tries - 1 is saved, active boots;
 *   anything else (1, unset) -> tentative=yes is saved (this is the last try), active boots.
 * With tries unset this is exactly cOS's single try, so a host whose env was written by elemental behaves as before.
 */

import { MAX_TRIES } from '../model/boot-assessment.ts';

/** The first line of the agent's script: how the host model tells it from cOS's. */
export const AGENT_SCRIPT_MARK = '# cos-agent boot assessment';
/** The env variable holding the boots of active left. */
export const TRIES_VAR = 'boot_assessment_tries';
export { DEFAULT_TRIES, MAX_TRIES, validTries } from '../model/boot-assessment.ts';

export type AssessmentScript = 'agent' | 'cos' | 'none';

/** PURE: the text of COS_STATE/grub_boot_assessment. */
export function bootAssessmentScript(): string {
  const save = (vars: string): string => `      save_env -f "(\${boot_assessment_blk})\${boot_assessment}" ${vars}`;
  const countdown: string[] = [];
  for (let n = MAX_TRIES; n >= 2; n--) {
    countdown.push(`    elif [ "\${${TRIES_VAR}}" = "${n}" ]; then`, `      set ${TRIES_VAR}="${n - 1}"`, save(TRIES_VAR));
  }
  return [
    `${AGENT_SCRIPT_MARK} (a superset of cOS's 08_boot_assessment grub_boot_assessment; written by cos-agent).`,
    `# ${TRIES_VAR}: boots of active left before the fallback (1..${MAX_TRIES}; unset: one, as cOS).`,
    '# GRUB 2.06 has no arithmetic: the countdown is spelled out.',
    'set extra_active_cmdline="rd.emergency=reboot rd.shell=0 panic=5 systemd.crash_reboot systemd.crash_shell=0"',
    'set boot_assessment="/boot_assessment"',
    'search --no-floppy --file --set=boot_assessment_blk "${boot_assessment}"',
    'if [ "${boot_assessment_blk}" ]; then',
    '  load_env -f "(${boot_assessment_blk})${boot_assessment}"',
    'fi',
    'if [ "${enable_boot_assessment}" = "yes" -o "${enable_boot_assessment_always}" = "yes" ]; then',
    '  if [ -z "${selected_entry}" ]; then',
    '    if [ "${boot_assessment_tentative}" = "yes" ]; then',
    '      set default="fallback"',
    '      set extra_passive_cmdline="upgrade_failure"',
    ...countdown,
    '    else',
    '      set boot_assessment_tentative="yes"',
    save('boot_assessment_tentative'),
    '    fi',
    '  fi',
    'fi',
    '',
  ].join('\n');
}

/** The block cOS's 08_boot_assessment appends to /grubcustom (the same text, so either installer sees it is there). */
export const GRUBCUSTOM_HOOK: string = [
  'set bootfile="/grub_boot_assessment"',
  'search --no-floppy --file --set=bootfile_loc "${bootfile}"',
  'if [ "${bootfile_loc}" ]; then',
  '   source "(${bootfile_loc})${bootfile}"',
  'fi',
  '',
].join('\n');

/**
 * PURE: /grubcustom with the hook, or null when it already sources grub_boot_assessment (cOS's test: `grep -q
 * grub_boot_assessment`). An existing file is extended, never replaced.
 */
export function grubcustomWithHook(existing: string | undefined): string | null {
  if (existing !== undefined && existing.includes('grub_boot_assessment')) return null;
  if (existing === undefined || existing === '') return GRUBCUSTOM_HOOK;
  return `${existing}${existing.endsWith('\n') ? '' : '\n'}${GRUBCUSTOM_HOOK}`;
}

/** PURE: whose script COS_STATE/grub_boot_assessment holds (undefined: the file is missing). */
export function scriptKind(text: string | undefined): AssessmentScript {
  if (text === undefined) return 'none';
  return text.startsWith(AGENT_SCRIPT_MARK) ? 'agent' : 'cos';
}

/** PURE: what the countdown does with the saved value: the next value to save, or null on the last try. */
export function nextTries(value: string | undefined): string | null {
  const n = value !== undefined && /^[2-9]$/.test(value) ? Number(value) : 0;
  return n >= 2 && n <= MAX_TRIES ? String(n - 1) : null;
}
