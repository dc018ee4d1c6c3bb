/**
 * cosctl: the commands of src/cli/spec.ts (upgrade, check, rollback, status, verify, ...). Talks to the daemon over
 * D-Bus when it runs (src/cli/remote.ts), else runs the action in-process (src/cli/local.ts, also --no-daemon).
 * Exit codes come from one table (src/cli/exit-codes.ts).
 */
import { parseArgs } from 'node:util';
import { AgentError } from './model/errors.ts';
import { displayText, TEXT_LIMITS, utf8Length } from './model/text.ts';
import { EXIT_OK, exitCodeFor } from './cli/exit-codes.ts';
import type { CliIo } from './cli/backend.ts';
import { COMMANDS, commandHelp, commandSpec, GLOBAL_OPTIONS, mainHelp, parserOptions, suggest } from './cli/spec.ts';
import { VERSION } from './version.ts';

export type { CliIo } from './cli/backend.ts';

export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    return await run(argv, io);
  } catch (e) {
    if (e instanceof AgentError) {
      // One line whatever the message echoes (a config file's bytes, a 1 MB image): escaped and bounded. A usage error
      // names the help to read, never prints the whole usage.
      io.stderr.write(`cosctl: ${displayText(e.message, TEXT_LIMITS.message)}\n`);
      return exitCodeFor(e.code);
    }
    // A stack trace keeps its lines; each one is made safe to print.
    const trace = e instanceof Error ? (e.stack ?? e.message) : String(e);
    io.stderr.write(`cosctl: internal error: ${trace.split('\n').slice(0, 50).map((l) => displayText(l, TEXT_LIMITS.message)).join('\n')}\n`);
    return exitCodeFor(undefined);
  }
}

/**
 * Parse argv against the command table (src/cli/spec.ts): global options anywhere, one command, its operand and its
 * own options. Help and the version are answered here, without loading any command code.
 */
async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const { tokens } = parseArgs({ args: [...argv], allowPositionals: true, strict: false, tokens: true, options: parserOptions() });
  const positionals = tokens.filter((t) => t.kind === 'positional').map((t) => t.value);
  // After `--`, everything is positional (parseArgs says so with an option-terminator token).
  const command = positionals[0];
  const spec = command === undefined || command === 'help' ? undefined : commandSpec(command);
  const seeHelp = spec !== undefined ? `see cosctl ${spec.name} --help` : 'see cosctl --help';
  const usage = (msg: string): AgentError => new AgentError('USAGE', `${msg}; ${seeHelp}`);

  const values: Record<string, string | boolean> = {};
  for (const t of tokens) {
    if (t.kind !== 'option') continue;
    const known = [...GLOBAL_OPTIONS, ...(spec?.options ?? [])].find((o) => o.name === t.name);
    if (known === undefined) {
      const anywhere = COMMANDS.find((c) => c.options.some((o) => o.name === t.name));
      if (anywhere !== undefined && spec !== undefined) throw usage(`${t.rawName} does not apply to ${spec.name}`);
      if (anywhere !== undefined && spec === undefined) continue; // the missing or unknown command is the error
      if (anywhere === undefined) {
        const near = suggest(t.name, [...GLOBAL_OPTIONS, ...(spec?.options ?? COMMANDS.flatMap((c) => c.options))].map((o) => o.name));
        throw usage(`unknown option ${displayText(t.rawName, TEXT_LIMITS.echo)}${near !== undefined ? ` (did you mean --${near}?)` : ''}`);
      }
    }
    if (known?.value !== undefined) {
      if (t.value === undefined) throw usage(`${t.rawName} needs a ${known.value}`);
      // `--image --force` is a missing value, not an image named --force (strict parsing said so; this parse is not).
      if (t.inlineValue === false && t.value.startsWith('-')) throw usage(`${t.rawName} needs a ${known.value} (${t.rawName}=VALUE for one that starts with -)`);
      values[t.name] = t.value;
    } else if (known !== undefined) {
      if (t.value !== undefined) throw usage(`${t.rawName} takes no value`);
      values[t.name] = true;
    }
  }

  if (values.version === true) {
    io.stdout.write(`cosctl ${VERSION}\n`);
    return EXIT_OK;
  }
  if (command === 'help') {
    const about = positionals[1];
    const target = about === undefined ? undefined : commandSpec(about);
    if (about !== undefined && target === undefined) throw unknownCommand(about);
    io.stdout.write(`${target === undefined ? mainHelp() : commandHelp(target)}\n`);
    return EXIT_OK;
  }
  if (command !== undefined && spec === undefined) throw unknownCommand(command);
  if (values.help === true) {
    io.stdout.write(`${spec === undefined ? mainHelp() : commandHelp(spec)}\n`);
    return EXIT_OK;
  }
  if (spec === undefined) throw usage('missing command');
  const rest = positionals.slice(1);
  const operand = spec.operand !== undefined ? rest.shift() : undefined;
  if (spec.operand !== undefined && operand === undefined) throw usage(`${spec.name} needs ${spec.operand.name}`);
  if (rest.length > 0) throw usage(`unexpected argument ${displayText(rest[0] ?? '', TEXT_LIMITS.echo)}`);
  if (values.json === true && values.yaml === true) throw usage('--json and --yaml are exclusive');
  if (values.image !== undefined && values.source !== undefined) throw usage('--image and --source are the same option: give one');
  // --source URI is --image's other spelling (elemental's --system URI): one value from here on.
  if (typeof values.source === 'string') {
    values.image = values.source;
    delete values.source;
  }
  // An absurd reference is refused here, naming its length (not echoing it), as cosd refuses it over D-Bus.
  for (const [what, ref] of [['--image', values.image], ['IMAGE', spec.name === 'verify' ? operand : undefined]] as const) {
    const bytes = typeof ref === 'string' ? utf8Length(ref) : 0;
    if (bytes > TEXT_LIMITS.optionBytes) throw new AgentError('REFERENCE_INVALID', `${what} is ${bytes} bytes long, over the limit of ${TEXT_LIMITS.optionBytes} bytes`);
  }

  return (await import('./cli/commands.ts')).execute(spec.name, operand, values, io);
}

function unknownCommand(name: string): AgentError {
  const near = suggest(name, COMMANDS.map((c) => c.name));
  return new AgentError('USAGE', `unknown command ${displayText(name, TEXT_LIMITS.echo)}${near !== undefined ? ` (did you mean ${near}?)` : ''}; see cosctl --help`);
}
