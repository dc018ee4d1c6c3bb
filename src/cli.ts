/**
 * cosctl: upgrade | check | rollback | status | verify | cancel | mark-good | mark-bad. Talks to the daemon over
 * D-Bus when it runs (src/cli/remote.ts), else runs the action in-process (src/cli/local.ts, also --no-daemon).
 * Exit codes come from one table (src/cli/exit-codes.ts).
 */
import { parseArgs } from 'node:util';
import { AgentError } from './model/errors.ts';
import { displayText, TEXT_LIMITS, utf8Length } from './model/text.ts';
import { EXIT_OK, exitCodeFor } from './cli/exit-codes.ts';
import type { CliIo } from './cli/backend.ts';

export type { CliIo } from './cli/backend.ts';

const USAGE = `usage: cosctl [--root DIR] [--no-daemon] [--verbose] <command>
  upgrade [--image REF] [--recovery] [--no-verify] [--force] [--reboot]
                                                     stage a new OS into the active (or recovery) slot; an image the
                                                     slot already holds is not staged again unless --force; --reboot
                                                     reboots into it afterwards (needs the daemon)
  check [--image REF] [--recovery]                   is a newer image available? (resolves digests, writes nothing)
  rollback [--permanent]                             boot the other slot next (once, or swap them for good)
  status [--json|--yaml] [--watch]                   show slots, images and boot state (--watch: follow changes)
  verify IMAGE [--json]                              check an image's signatures under the host's policy, stage nothing
  cancel                                             cancel the running upgrade (before the slot switch)
  mark-good | mark-bad                               tell boot assessment the booted system is good, or bad
  health-check [--json] [--no-reboot]                run the health checks (greenboot layout), mark the boot good or
                                                     bad, and reboot into the fallback on failure (root, in-process)
  boot-assessment [--json]                           install or update GRUB's boot assessment (N tries) on this host
  run-stage STAGE [--strict] [--dry-run] [--json]    run a cloud-config (yip) stage from /system/oem, /oem and
                                                     /usr/local/cloud-config: STAGE.before, STAGE, STAGE.after (root,
                                                     in-process; --strict: exit 65 when a step had errors)
cosctl talks to the daemon (cosd) when it runs, and runs the action itself otherwise or with --no-daemon.`;

function usage(msg: string): AgentError {
  return new AgentError('USAGE', `${msg}\n${USAGE}`);
}

export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    return await run(argv, io);
  } catch (e) {
    if (e instanceof AgentError) {
      // One line whatever the message echoes (a config file's bytes, a 1 MB image): escaped and bounded.
      const message = e.message.endsWith(`\n${USAGE}`) ? e.message.slice(0, -USAGE.length - 1) : e.message;
      io.stderr.write(`cosctl: ${displayText(message, TEXT_LIMITS.message)}${e.code === 'USAGE' ? `\n${USAGE}` : ''}\n`);
      return exitCodeFor(e.code);
    }
    // A stack trace keeps its lines; each one is made safe to print.
    const trace = e instanceof Error ? (e.stack ?? e.message) : String(e);
    io.stderr.write(`cosctl: internal error: ${trace.split('\n').slice(0, 50).map((l) => displayText(l, TEXT_LIMITS.message)).join('\n')}\n`);
    return exitCodeFor(undefined);
  }
}

/** The options each command takes (besides the global --root, --no-daemon, --verbose, --help). */
const COMMANDS: Record<string, readonly string[]> = {
  upgrade: ['image', 'recovery', 'no-verify', 'force', 'reboot'],
  check: ['image', 'recovery'],
  rollback: ['permanent'],
  status: ['json', 'yaml', 'watch'],
  verify: ['json'],
  cancel: [],
  'mark-good': [],
  'mark-bad': [],
  'health-check': ['json', 'no-reboot'],
  'boot-assessment': ['json'],
  'run-stage': ['strict', 'dry-run', 'json'],
};

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        root: { type: 'string' },
        verbose: { type: 'boolean', short: 'v' },
        help: { type: 'boolean', short: 'h' },
        'no-daemon': { type: 'boolean' },
        image: { type: 'string' },
        recovery: { type: 'boolean' },
        'no-verify': { type: 'boolean' },
        force: { type: 'boolean' },
        reboot: { type: 'boolean' },
        permanent: { type: 'boolean' },
        json: { type: 'boolean' },
        yaml: { type: 'boolean' },
        watch: { type: 'boolean' },
        'no-reboot': { type: 'boolean' },
        strict: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
      },
    });
  } catch (e) {
    throw usage(e instanceof Error ? e.message : String(e));
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(`${USAGE}\n`);
    return EXIT_OK;
  }
  const [command, ...rest] = positionals;
  if (command === undefined) throw usage('missing command');
  const operand = command === 'verify' || command === 'run-stage' ? rest.shift() : undefined;
  if (command === 'verify' && operand === undefined) throw usage('verify needs an IMAGE');
  if (command === 'run-stage' && operand === undefined) throw usage('run-stage needs a STAGE');
  if (rest.length > 0) throw usage(`unexpected argument ${rest[0]}`);
  const own = COMMANDS[command];
  if (own === undefined) throw usage(`unknown command ${command}`);
  for (const k of Object.keys(values)) {
    if (!['root', 'verbose', 'help', 'no-daemon', ...own].includes(k)) throw usage(`--${k} does not apply to ${command}`);
  }
  if (values.json && values.yaml) throw usage('--json and --yaml are exclusive');
  // An absurd reference is refused here, naming its length (not echoing it), as cosd refuses it over D-Bus.
  for (const [what, ref] of [['--image', values.image], ['IMAGE', operand]] as const) {
    const bytes = typeof ref === 'string' ? utf8Length(ref) : 0;
    if (bytes > TEXT_LIMITS.optionBytes) throw usage(`${what} is ${bytes} bytes long, over the limit of ${TEXT_LIMITS.optionBytes} bytes`);
  }

  return (await import('./cli/commands.ts')).execute(command, operand, values, io);
}
