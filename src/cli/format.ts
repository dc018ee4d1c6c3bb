/**
 * PURE: render the status document for people (text), or for programs (JSON; YAML in format-yaml.ts, so the YAML
 * library loads only for --yaml). The text shows what came from
 * outside (image references, versions, labels, error messages) escaped and bounded, so a record or a config file
 * cannot put control characters on the terminal or a megabyte on one line.
 */
import type { HostStatusDocument, SlotStatus } from '../model/host.ts';
import { displayText, TEXT_LIMITS, wrapWords } from '../model/text.ts';

/** A value from outside as the text shows it. */
const show = (s: string, max: number = TEXT_LIMITS.value): string => displayText(s, max);

export type StatusFormat = 'human' | 'json' | 'yaml';

export function renderStatus(doc: HostStatusDocument, format: 'human' | 'json'): string {
  if (format === 'json') return `${JSON.stringify(doc, null, 2)}\n`;
  return renderHuman(doc);
}

/** A digest as people read it: the algorithm and 12 hex digits (the JSON and YAML carry it whole). */
function short(digest: string | null): string {
  return digest === null ? '-' : digest.replace(/^(sha256:[0-9a-f]{12})[0-9a-f]+$/, '$1');
}

/** Every sha256 digest in a text shortened (a signer summary names the digest it signed). */
const shortenDigests = (text: string): string => text.replace(/\b(sha256:[0-9a-f]{12})[0-9a-f]{52}\b/g, '$1');

/** The labels of a block's lines, right-aligned under its title (bootc's layout). */
const LABEL_WIDTH = 16;
/** `label: value`, the value wrapped at spaces to fit 80 columns, continuation lines under the value's start. */
function field(label: string, value: string): string {
  const indent = ' '.repeat(LABEL_WIDTH + 2);
  const lines: string[] = [];
  let line = `${label.padStart(LABEL_WIDTH)}:`;
  for (const word of value.split(' ')) {
    if (line.length + 1 + word.length > 80 && line.trim().length > LABEL_WIDTH) {
      lines.push(line);
      line = `${indent}${word}`;
    } else {
      line = `${line} ${word}`;
    }
  }
  lines.push(line);
  return lines.join('\n');
}

/**
 * An image reference as the text spells it everywhere: without the docker:// or oci:// of state.yaml's records, and
 * a local tree as dir:/path (the records' dir:///path).
 */
const ref = (image: string): string => show(image.replace(/^(docker|oci):\/\//, '').replace(/^dir:\/\/(?=\/)/, 'dir:'));

function signature(s: SlotStatus): string {
  if (s.verification === 'skipped') return 'UNVERIFIED (staged with verification off)';
  if (s.verification === 'not-applicable') return 'not applicable: dir source (a local tree, no registry signature)';
  if (s.verification === 'unknown') return s.record === 'unknown' ? 'unknown (the records name other images)' : 'unknown (no record of its staging)';
  return s.signedBy !== null ? `verified: ${show(shortenDigests(s.signedBy))}` : 'verified';
}

/**
 * One slot as a block: a title (● booted, + boots next), then the image, version, digest, slot and signature lines.
 * A slot without its image file says so; one whose record names another image says that its image is unknown.
 */
function slotBlock(title: string, mark: string, s: SlotStatus, notRead?: string): string[] {
  const head = `${mark} ${title}`.padStart(LABEL_WIDTH);
  const where = `${s.slot} (${s.file}${s.label !== null ? `, ${show(s.label, TEXT_LIMITS.echo)}` : ''}${s.fs !== null ? `, ${s.fs}` : ''})`;
  // Not seen as a user is not the same as absent: say which.
  if (!s.present) return [notRead !== undefined ? `${head}: not read (${show(notRead, TEXT_LIMITS.echo)}: see below)` : `${head}: none (no ${s.file})`];
  return [
    `${head}: ${s.image !== null ? ref(s.image) : 'unknown image (no record of it)'}`,
    field('Version', `${s.version !== null ? show(s.version, TEXT_LIMITS.echo) : '-'}${s.timestamp !== null ? ` (staged ${show(s.timestamp, TEXT_LIMITS.echo)})` : ''}`),
    field('Digest', short(s.imageDigest)),
    field('Slot', where),
    field('Signature', signature(s)),
  ];
}

/** Why GRUB boots what it boots next, in words (the entry id is in the JSON). */
function nextBootText(n: HostStatusDocument['status']['nextBoot']): string {
  const then = n.then !== undefined ? `; the boot after runs ${n.then.slot ?? 'nothing bootable'}` : '';
  if (n.slot === null) return `NOTHING BOOTABLE (GRUB's entry ${n.entry} finds no image)`;
  const why: Record<HostStatusDocument['status']['nextBoot']['reason'], string> = {
    'one-shot': 'once, as chosen with cosctl rollback (next_entry)',
    default: 'the default entry',
    'saved-entry': 'the saved entry (saved_entry)',
    'boot-assessment': 'boot assessment falls back (upgrade_failure)',
    'grub-fallback': 'the chosen entry cannot boot, GRUB falls back',
  };
  return `${n.slot}: ${why[n.reason]}${then}`;
}

function renderHuman(doc: HostStatusDocument): string {
  const st = doc.status;
  const lines: string[] = [];
  const marks = new Set<string>();
  const block = (title: string, mark: string, s: SlotStatus | null): void => {
    if (s === null) return;
    if (mark !== ' ') marks.add(mark);
    // Its own entry (a file, or COS_RECOVERY for recovery), else for active and passive COS_STATE's.
    const notRead = st.unreadable?.find((u) => u.of === s.slot || (s.slot !== 'recovery' && u.of === 'state'));
    lines.push(...slotBlock(title, mark, s, notRead?.name), '');
  };
  // The running image's slot (after a system upgrade it moved to passive), what boots next when that differs
  // (staged), the rollback, and the recovery slot.
  const lost = st.booted === null && ['active', 'passive', 'recovery'].includes(st.bootedFrom);
  if (lost) lines.push(`${'● Booted image'.padStart(LABEL_WIDTH)}: in NO slot (booted from ${st.bootedFrom}; its image was replaced since)`, '');
  block('Booted image', '●', st.booted);
  block('Staged image', '+', st.staged);
  block('Rollback image', ' ', st.rollback);
  // A slot none of those names (after a one-shot rollback, the upgrade waiting in active for the boot after) is
  // still shown: every slot's image is on the screen.
  const shown = new Set([st.booted?.slot, st.staged?.slot, st.rollback?.slot]);
  for (const slot of ['active', 'passive'] as const) if (!shown.has(slot) && st.slots[slot].present) block(`${slot === 'active' ? 'Active' : 'Passive'} image`, ' ', st.slots[slot]);
  if (!shown.has('recovery')) block('Recovery image', ' ', st.slots.recovery);
  const moved = st.booted !== null && st.booted.slot !== st.bootedFrom ? ` (the running image is ${st.booted.file} now)` : '';
  // The lines below fit 80 columns too: wrapped under their value.
  const line = (label: string, value: string): void => {
    lines.push(wrapWords(`${label}: ${value}`, 80, ' '.repeat(label.length + 2)));
  };
  line('Booted from', `${st.bootedFrom}${moved}${st.upgradeFailure ? ', after the last upgrade failed boot assessment and was rolled back' : ''}`);
  line('Next boot', nextBootText(st.nextBoot));
  lines.push(`Boot assessment: ${assessmentText(st.bootAssessment)}`);
  const f = st.failedUpgrade;
  if (f) {
    const tries = f.triesUsed === null ? '' : ` after ${f.triesUsed} ${f.triesUsed === 1 ? 'try' : 'tries'}`;
    line('Rolled back', `${f.image !== null ? ref(f.image) : 'the image'} in ${f.slot}${f.version !== null ? ` (version ${show(f.version, TEXT_LIMITS.echo)})` : ''} failed boot assessment${tries}; it is not staged again unless --force`);
  }
  if (doc.spec.image) lines.push(`Upgrade source: ${ref(doc.spec.image.image)}${doc.spec.verify ? '' : ' (signature verification OFF)'}`);
  const last = st.lastUpgrade;
  if (last) {
    const result = last.interruptedAt !== undefined ? `${last.result}, interrupted at ${show(last.interruptedAt, TEXT_LIMITS.echo)}` : last.result;
    line('Last upgrade', `${result} (${last.target}, ${last.image !== null ? ref(last.image) : '-'}, ${show(last.finishedAt, TEXT_LIMITS.echo)})${last.error ? `: ${show(last.error, TEXT_LIMITS.message)}` : ''}`);
  }
  if (st.unreadable !== undefined && st.unreadable.length > 0) {
    // A user's read without cosd: what is missing above, and how to see it all.
    lines.push('', `Not read (as uid ${process.geteuid?.() ?? '?'}; run as root, or start cosd, for the whole status):`);
    for (const u of st.unreadable) lines.push(`  ${wrapWords(`- ${show(`${u.name}: ${u.why}`, TEXT_LIMITS.message)}`, 78, '    ')}`);
  }
  const legend = [...(marks.has('●') ? ['● runs now'] : []), ...(marks.has('+') ? ['+ boots next (staged)'] : [])];
  if (legend.length > 0) lines.push('', legend.join('   '));
  return `${lines.join('\n')}\n`;
}

/** "armed, 3 tries left" / "armed, last try" / "armed, tries used up: the next boot falls back" / "off". */
function assessmentText(a: HostStatusDocument['status']['bootAssessment']): string {
  if (!a.enabled) return 'off';
  if (a.triesLeft === null) return a.tentative ? 'armed, tentative boot in progress' : 'armed';
  if (a.triesLeft === 0) return 'armed, tries used up: the next boot of active falls back';
  return a.triesLeft === 1 ? 'armed, last try' : `armed, ${a.triesLeft} tries left`;
}
