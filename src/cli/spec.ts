/**
 * PURE: cosctl's one command table. The parser (src/cli.ts), `cosctl --help`, `cosctl COMMAND --help`, `cosctl help`,
 * the typo suggestions, the man page and the bash/zsh completions (src/cli/docs.ts; packaging/cosctl.1 etc., checked
 * against it by test/cli/docs.test.ts) all come from here.
 */
import { wrapWords } from '../model/text.ts';

export interface OptionSpec {
  /** Long name without the dashes. */
  name: string;
  short?: string;
  /** A value option's placeholder ("REF", "DIR"); absent: a flag. */
  value?: string;
  help: string;
}

export interface CommandSpec {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** The operand (IMAGE, STAGE), required when present. */
  operand?: { name: string; help: string };
  options: readonly OptionSpec[];
  /** Paragraphs for `cosctl COMMAND --help` and the man page. */
  details: readonly string[];
  /** It changes the system: root (or polkit through cosd) only. */
  changes: boolean;
  /** Only cosd can do it (there is nothing to act on without it). */
  needsDaemon?: boolean;
}

export const GLOBAL_OPTIONS: readonly OptionSpec[] = [
  { name: 'root', value: 'DIR', help: 'act on the host mounted at DIR (default / or $COS_ROOT); a root other than the daemon\'s runs in-process' },
  { name: 'no-daemon', help: 'run the action in this process even when cosd runs' },
  { name: 'verbose', short: 'v', help: 'log what happens on stderr' },
  { name: 'help', short: 'h', help: 'show help (of the command, after one)' },
  { name: 'version', help: 'print the version' },
];

const json = { name: 'json', help: 'print JSON' } as const;

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'upgrade',
    summary: 'stage a new OS image into the active (or recovery) slot',
    options: [
      { name: 'image', value: 'REF', help: 'the image to stage (default: the configured one, /etc/cos-upgrade-image)' },
      { name: 'source', value: 'URI', help: 'what to stage, as a URI: docker:REF, oci:REF, or dir:PATH (a local tree; no signature applies)' },
      { name: 'recovery', help: 'stage into the recovery slot' },
      { name: 'no-verify', help: 'skip signature verification' },
      { name: 'force', help: 'stage even when the slot already holds the image' },
      { name: 'reboot', help: 'reboot into the new image once staged (needs the daemon)' },
    ],
    details: [
      'Pulls the image, verifies its signature, builds it into a transition image and switches it into the slot: the running image becomes the fallback (passive), and the next boot runs the new one under boot assessment.',
      'An image whose digest the slot already holds is not staged again unless --force. Ctrl-C cancels before the slot switch and cleans up.',
      'A dir:PATH source (elemental\'s --system dir:PATH) is a local tree copied as it is, hard links, special files and xattrs included; status shows its verification as not-applicable, and policy.yaml\'s dirSources: refuse refuses it. dir:/ is the running root (SUC\'s upgrade job, /usr/sbin/suc-upgrade): /host, /proc, /sys, /dev, /run and the mounts on it are skipped.',
    ],
    changes: true,
  },
  {
    name: 'check',
    summary: 'is a newer image available? (exit 0: yes, 77: up to date)',
    options: [
      { name: 'image', value: 'REF', help: 'the image to check (default: the configured one)' },
      { name: 'recovery', help: 'compare with the recovery slot' },
    ],
    details: [
      'Resolves the image\'s digest and compares it with the slot\'s; writes nothing. Exit 0 when an update is available, 77 when the slot is up to date (as rpm-ostree upgrade --check), another code on an error.',
    ],
    changes: false,
  },
  {
    name: 'rollback',
    summary: 'boot the other slot next (once, or swap them for good)',
    options: [{ name: 'permanent', help: 'swap active and passive instead of a one-shot choice' }],
    details: [
      'Without --permanent the next boot (only) runs the rollback image: the other image that booted before or, with an upgrade staged, the running image.',
      '--permanent swaps active.img and passive.img with crash-safe renames, when both booted before.',
    ],
    changes: true,
  },
  {
    name: 'status',
    summary: 'show what runs, what boots next and why, and the slots',
    options: [
      { name: 'json', help: 'print the status document as JSON' },
      { name: 'yaml', help: 'print the status document as YAML' },
      { name: 'watch', help: 'follow changes (needs the daemon)' },
    ],
    details: [
      'Everything comes from what is on disk, read in one place: the slot the running image is in, the entry GRUB boots next and why, boot assessment, and the last upgrade.',
    ],
    changes: false,
  },
  {
    name: 'verify',
    summary: 'check an image\'s signatures under the host\'s policy',
    operand: { name: 'IMAGE', help: 'the image reference' },
    options: [json],
    details: ['Resolves IMAGE and verifies its signatures as an upgrade would; stages nothing.'],
    changes: false,
  },
  {
    name: 'cancel',
    summary: 'cancel the running upgrade (before the slot switch)',
    options: [],
    details: ['Asks cosd to stop the running upgrade; it cleans up and leaves the slots untouched. Past the slot switch it finishes.'],
    changes: true,
    needsDaemon: true,
  },
  {
    name: 'mark-good',
    summary: 'tell boot assessment the running system is good',
    options: [],
    details: ['Disarms boot assessment for the running image (it stays armed for an upgrade staged in active).'],
    changes: true,
  },
  {
    name: 'mark-bad',
    summary: 'tell boot assessment the running system is bad',
    options: [],
    details: ['Booted from active with a passive that booted before: the next boot falls back to passive.'],
    changes: true,
  },
  {
    name: 'health-check',
    summary: 'run the health checks and mark the boot good or bad',
    options: [json, { name: 'no-reboot', help: 'do not reboot into the fallback on failure' }],
    details: [
      'Runs the executables in /usr/lib/cos-agent/check/{required,wanted}.d, /etc/cos-agent/check/... and greenboot\'s /etc/greenboot/check/..., each with a timeout. All required checks pass: the boot is marked good; one fails: it is marked bad and the host reboots into the fallback. In-process, root only.',
    ],
    changes: true,
  },
  {
    name: 'boot-assessment',
    summary: 'install or update GRUB\'s boot assessment (N tries)',
    options: [json],
    details: ['Writes the agent\'s grub_boot_assessment and grubcustom (extending an existing one) on COS_STATE. Root only.'],
    changes: true,
  },
  {
    name: 'run-stage',
    summary: 'run a cloud-config (yip) stage',
    operand: { name: 'STAGE', help: 'the stage (boot, network, reconcile, ...; dot notation from the command line too)' },
    options: [
      { name: 'strict', help: 'exit 65 when a step had errors' },
      { name: 'dry-run', help: 'list the steps in order and run nothing' },
      json,
    ],
    details: [
      'Runs STAGE.before, STAGE and STAGE.after over /system/oem, /oem and /usr/local/cloud-config (and CLOUD_INIT_PATHS, cos.setup= on the kernel command line), as elemental run-stage does. A failing step never stops the stage. In-process, root only unless --dry-run.',
    ],
    changes: true,
  },
  {
    name: 'suc-upgrade',
    summary: 'SUC\'s upgrade job: stage this container\'s root on $HOST_DIR',
    options: [],
    details: [
      'What /usr/sbin/suc-upgrade runs (under flock on $HOST_DIR/run/elemental/upgrade.lock), as the default command of elemental-operator\'s ManagedOSImage plans: system-upgrade-controller runs the new OS image as a privileged container with the host\'s / at $HOST_DIR (default /host).',
      'Exits 1 without change while the host shuts down; 0 when the image\'s /etc/os-release equals the host\'s, or the host is newer (IMAGE_REPO, IMAGE_TAG as sort -V orders them) and FORCE is not true. Otherwise it writes the plan\'s cloud-config (/run/data/cloud-config) to /oem/90_operator.yaml, stages the container\'s root (dir:/) into the system slot (and recovery with UPGRADE_RECOVERY=true; recovery alone with UPGRADE_RECOVERY_ONLY=true, then exits 0), reboots the host and exits 1, so that SUC runs the job again after the reboot.',
    ],
    changes: true,
  },
];

export const COMMAND_NAMES: readonly string[] = COMMANDS.map((c) => c.name);

export function commandSpec(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name);
}

/** Every option the parser knows (global and per command), for node:util parseArgs. */
export function parserOptions(): Record<string, { type: 'string' | 'boolean'; short?: string }> {
  const out: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const o of [...GLOBAL_OPTIONS, ...COMMANDS.flatMap((c) => c.options)]) {
    out[o.name] = { type: o.value !== undefined ? 'string' : 'boolean', ...(o.short !== undefined ? { short: o.short } : {}) };
  }
  return out;
}

/** Levenshtein distance, for typo suggestions. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j] as number;
      row[j] = Math.min(cur + 1, (row[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length] as number;
}

/** The closest of `names` to `word` (a prefix, or at most 2 edits, or a third of its length), else undefined. */
export function suggest(word: string, names: readonly string[]): string | undefined {
  const prefixed = names.filter((n) => word.length >= 2 && n.startsWith(word));
  if (prefixed.length === 1) return prefixed[0];
  let best: { name: string; d: number } | undefined;
  for (const n of names) {
    const d = distance(word, n);
    if (best === undefined || d < best.d) best = { name: n, d };
  }
  return best !== undefined && best.d <= Math.max(2, Math.floor(word.length / 3)) ? best.name : undefined;
}

const optionSynopsis = (o: OptionSpec): string => `--${o.name}${o.value !== undefined ? ` ${o.value}` : ''}`;

function optionLines(options: readonly OptionSpec[]): string[] {
  return options.map((o) => {
    const head = `  ${o.short !== undefined ? `-${o.short}, ` : ''}${optionSynopsis(o)}`.padEnd(24);
    // The help text in a column from 25: wrapped to fit 80, continuation lines indented to the column.
    const help = wrapWords(o.help, 80 - 25, '').split('\n');
    const first = head.length > 24 ? [head.trimEnd(), ...help.map((l) => `${' '.repeat(25)}${l}`)] : [`${head} ${help[0] ?? ''}`, ...help.slice(1).map((l) => `${' '.repeat(25)}${l}`)];
    return first.join('\n');
  });
}

/** `cosctl --help` / `cosctl help`: every command with its summary, the global options. */
export function mainHelp(): string {
  return [
    'usage: cosctl [--root DIR] [--no-daemon] [--verbose] COMMAND [OPTIONS]',
    '',
    'The cOS upgrade agent\'s command line: stage OS images into the A/B slots, roll',
    'back, assess boots. It talks to cosd when it runs, and runs the action itself',
    'otherwise.',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(16)} ${c.summary}`),
    '',
    'Options:',
    ...optionLines(GLOBAL_OPTIONS),
    '',
    'See cosctl COMMAND --help for a command\'s options, man cosctl for more.',
  ].join('\n');
}

export function commandUsage(c: CommandSpec): string {
  const opts = c.options.map((o) => `[${optionSynopsis(o)}]`).join(' ');
  return `usage: cosctl [--root DIR] ${c.name}${c.operand !== undefined ? ` ${c.operand.name}` : ''}${opts !== '' ? ` ${opts}` : ''}`;
}

/** `cosctl COMMAND --help` / `cosctl help COMMAND`. */
export function commandHelp(c: CommandSpec): string {
  return [
    wrapWords(commandUsage(c), 80, '         '),
    '',
    wrapWords(`${c.summary.charAt(0).toUpperCase()}${c.summary.slice(1)}.`, 80, ''),
    '',
    ...c.details.flatMap((d) => [wrapWords(d, 80, ''), '']),
    ...(c.operand !== undefined ? ['Arguments:', ...optionLines([{ name: '', help: c.operand.help }]).map((l, i) => (i === 0 ? `  ${c.operand!.name.padEnd(22)}${l.slice(24)}` : l)), ''] : []),
    ...(c.options.length > 0 ? ['Options:', ...optionLines(c.options), ''] : []),
    wrapWords(`Global options: ${GLOBAL_OPTIONS.map((o) => optionSynopsis(o)).join(', ')} (see cosctl --help).`, 80, ''),
  ].join('\n');
}
