/** Boot assessment's tries: how many boots of active GRUB allows an upgrade before it falls back (host/boot-assessment.ts). */

/** The most tries the GRUB script spells out (GRUB 2.06 has no arithmetic). */
export const MAX_TRIES = 9;
/** The default, as greenboot's boot_counter (BOOT_COUNTER=3 in its grub2 script). */
export const DEFAULT_TRIES = 3;

/** PURE: a tries setting is a whole number 1..MAX_TRIES. */
export function validTries(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 1 && n <= MAX_TRIES;
}
