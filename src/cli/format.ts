/**
 * PURE: render the status document for people (text), or for programs (JSON; YAML in format-yaml.ts, so the YAML
 * library loads only for --yaml). The text shows what came from
 * outside (image references, versions, labels, error messages) escaped and bounded, so a record or a config file
 * cannot put control characters on the terminal or a megabyte on one line.
 */
import type { HostStatusDocument, SlotStatus } from '../model/host.ts';
import { displayText, TEXT_LIMITS } from '../model/text.ts';

/** A value from outside as the text shows it. */
const show = (s: string, max: number = TEXT_LIMITS.value): string => displayText(s, max);

export type StatusFormat = 'human' | 'json' | 'yaml';

export function renderStatus(doc: HostStatusDocument, format: 'human' | 'json'): string {
  if (format === 'json') return `${JSON.stringify(doc, null, 2)}\n`;
  return renderHuman(doc);
}

function short(digest: string | null): string {
  return digest === null ? '-' : digest.replace(/^sha256:/, '').slice(0, 12);
}

function slotLine(s: SlotStatus, booted: boolean, staged: boolean): string {
  const mark = booted ? '●' : staged ? '+' : ' ';
  if (!s.present) return `${mark} ${s.slot.padEnd(9)} (no ${s.file})`;
  const parts = [
    `${mark} ${s.slot.padEnd(9)}`,
    show(s.label ?? s.fs ?? '-', TEXT_LIMITS.echo).padEnd(12),
    s.version !== null ? `version ${show(s.version, TEXT_LIMITS.echo)}` : 'version -',
    s.image !== null ? show(s.image) : 'image unknown',
    `digest ${short(s.imageDigest)}`,
    s.verification === 'skipped' ? 'UNVERIFIED' : s.verification,
  ];
  if (s.timestamp !== null) parts.push(show(s.timestamp, TEXT_LIMITS.echo));
  if (staged) parts.push('(staged: runs after reboot)');
  return parts.join('  ');
}

const REASONS: Record<HostStatusDocument['status']['nextBoot']['reason'], string> = {
  'one-shot': 'one-shot',
  default: 'default',
  'saved-entry': 'saved_entry',
  'boot-assessment': 'boot assessment falls back, upgrade_failure',
  'grub-fallback': 'the chosen entry cannot boot: GRUB falls back',
};

function nextBootLine(n: HostStatusDocument['status']['nextBoot']): string {
  const then = n.then !== undefined ? `; then ${n.then.slot ?? 'nothing bootable'} (${n.then.entry})` : '';
  return `Next boot: ${n.slot ?? 'NOTHING BOOTABLE'} (entry ${n.entry}, ${REASONS[n.reason]}${then})`;
}

function renderHuman(doc: HostStatusDocument): string {
  const st = doc.status;
  const lines: string[] = [];
  const moved = st.booted !== null && st.booted.slot !== st.bootedFrom ? ` (the running image is now ${st.booted.file})` : '';
  const lost = st.booted === null && ['active', 'passive', 'recovery'].includes(st.bootedFrom) ? ' (the running image is in NO slot)' : '';
  lines.push(`Booted from: ${st.bootedFrom}${moved}${lost}${st.upgradeFailure ? ' (the last upgrade failed boot assessment and was rolled back)' : ''}`);
  // ● the slot whose image is running now (after a system upgrade it moved to passive), + the staged one.
  for (const name of ['active', 'passive', 'recovery'] as const) {
    lines.push(slotLine(st.slots[name], st.booted?.slot === name, st.staged?.slot === name));
  }
  lines.push(nextBootLine(st.nextBoot));
  lines.push(`Boot assessment: ${assessmentText(st.bootAssessment)}`);
  const f = st.failedUpgrade;
  if (f) {
    const tries = f.triesUsed === null ? '' : ` after ${f.triesUsed} ${f.triesUsed === 1 ? 'try' : 'tries'}`;
    lines.push(`Rolled back: ${f.image !== null ? show(f.image) : 'the image'} in ${f.slot}${f.version !== null ? ` (version ${show(f.version, TEXT_LIMITS.echo)})` : ''} failed boot assessment${tries}; it is not staged again unless --force`);
  }
  if (doc.spec.image) lines.push(`Upgrade source: ${show(doc.spec.image.image)}${doc.spec.verify ? '' : ' (signature verification OFF)'}`);
  const last = st.lastUpgrade;
  if (last) {
    const result = last.interruptedAt !== undefined ? `${last.result}, interrupted at ${show(last.interruptedAt, TEXT_LIMITS.echo)}` : last.result;
    lines.push(`Last upgrade: ${result} (${last.target}, ${last.image !== null ? show(last.image) : '-'}, ${show(last.finishedAt, TEXT_LIMITS.echo)})${last.error ? `: ${show(last.error, TEXT_LIMITS.message)}` : ''}`);
  }
  return `${lines.join('\n')}\n`;
}

/** "armed, 3 tries left" / "armed, last try" / "armed, tries used up: the next boot falls back" / "off". */
function assessmentText(a: HostStatusDocument['status']['bootAssessment']): string {
  if (!a.enabled) return 'off';
  if (a.triesLeft === null) return a.tentative ? 'armed, tentative boot in progress' : 'armed';
  if (a.triesLeft === 0) return 'armed, tries used up: the next boot of active falls back';
  return a.triesLeft === 1 ? 'armed, last try' : `armed, ${a.triesLeft} tries left`;
}
