/**
 * cosctl: `cosctl [--root DIR] upgrade [--image REF] [--recovery] [--no-verify]`,
 * `cosctl [--root DIR] rollback [--permanent]`, `cosctl [--root DIR] status [--json|--yaml]`.
 * Runs the actions in-process (the daemon comes later); exit codes from one table (src/cli/exit-codes.ts).
 */
import { parseArgs } from 'node:util';
import { AgentError } from './model/errors.ts';
import { EXIT_OK, exitCodeFor } from './cli/exit-codes.ts';
import { renderStatus, type StatusFormat } from './cli/format.ts';
import { SysRoot } from './sys/root.ts';
import { SpawnRunner } from './sys/runner.ts';
import { createLogger } from './sys/log.ts';
import { NoHooks } from './agent/hooks.ts';
import { upgrade } from './agent/upgrade.ts';
import { rollback } from './agent/rollback.ts';
import { hostStatus } from './agent/status.ts';
import { describeSignature, verifyReference } from './agent/verify-image.ts';
import type { AgentDeps, Progress } from './agent/deps.ts';

export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

const USAGE = `usage: cosctl [--root DIR] [--verbose] <command>
  upgrade [--image REF] [--recovery] [--no-verify]   stage a new OS into the active (or recovery) slot
  rollback [--permanent]                             boot the other slot next (once, or swap them for good)
  status [--json|--yaml]                             show slots, images and boot state
  verify IMAGE [--json]                              check an image's signatures under the host's policy, stage nothing`;

function usage(msg: string): AgentError {
  return new AgentError('USAGE', `${msg}\n${USAGE}`);
}

export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    return await run(argv, io);
  } catch (e) {
    if (e instanceof AgentError) {
      io.stderr.write(`cosctl: ${e.message.split('\n')[0]}${e.code === 'USAGE' ? `\n${USAGE}` : ''}\n`);
      return exitCodeFor(e.code);
    }
    io.stderr.write(`cosctl: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return exitCodeFor(undefined);
  }
}

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
        image: { type: 'string' },
        recovery: { type: 'boolean' },
        'no-verify': { type: 'boolean' },
        permanent: { type: 'boolean' },
        json: { type: 'boolean' },
        yaml: { type: 'boolean' },
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
  const operand = command === 'verify' ? rest.shift() : undefined;
  if (command === 'verify' && operand === undefined) throw usage('verify needs an IMAGE');
  if (rest.length > 0) throw usage(`unexpected argument ${rest[0]}`);
  const allowed: Record<string, readonly string[]> = {
    upgrade: ['image', 'recovery', 'no-verify'],
    rollback: ['permanent'],
    status: ['json', 'yaml'],
    verify: ['json'],
  };
  const own = allowed[command];
  if (own === undefined) throw usage(`unknown command ${command}`);
  for (const k of Object.keys(values)) {
    if (!['root', 'verbose', 'help', ...own].includes(k)) throw usage(`--${k} does not apply to ${command}`);
  }

  const rootDir = values.root ?? io.env.COS_ROOT ?? '/';
  const deps: AgentDeps = {
    root: new SysRoot(rootDir),
    runner: new SpawnRunner(),
    // JSON logs are for the journal and for --verbose; a plain cosctl run prints progress on stdout and, on failure,
    // exactly one line on stderr.
    log: createLogger({ level: values.verbose ? 'debug' : (io.env.COS_LOG_LEVEL ?? 'silent'), destination: io.stderr }),
    hooks: new NoHooks(),
    env: io.env,
    now: () => new Date(),
    ...(io.env.AGENT_TEST_DISK ? { testDisk: io.env.AGENT_TEST_DISK } : {}),
    // Test-only seam: shorter registry backoff so fault tests do not wait out production retry delays.
    ...(io.env.AGENT_TEST_REGISTRY_RETRY_MS ? { registry: { retryBaseMs: Number(io.env.AGENT_TEST_REGISTRY_RETRY_MS) } } : {}),
  };
  deps.hooks = new NoHooks((name) => deps.log.info({ hook: name }, 'hook point (no yip engine in this build)'));

  if (command === 'upgrade') {
    const out = await upgrade(deps, {
      ...(values.image !== undefined ? { image: values.image } : {}),
      ...(values.recovery ? { recovery: true } : {}),
      ...(values['no-verify'] ? { noVerify: true } : {}),
      onProgress: progressPrinter(io.stdout),
    });
    io.stdout.write(`Upgraded ${out.target === 'recovery' ? 'recovery' : 'active'} slot (${out.file}) to ${out.image}@${out.digest}` +
      `${out.version ? ` version ${out.version}` : ''}${out.verification === 'skipped' ? ' [signature NOT verified]' : ''}.\n` +
      `${out.keepPassiveReason ? `Passive kept: ${out.keepPassiveReason}.\n` : ''}Reboot to run it.\n`);
    return EXIT_OK;
  }
  if (command === 'rollback') {
    const out = await rollback(deps, { permanent: values.permanent === true });
    io.stdout.write(out.permanent ? 'Swapped active and passive: the next boots run the former passive image.\n'
      : `Next boot (once): ${out.nextEntry}.\n`);
    return EXIT_OK;
  }
  if (command === 'verify') {
    const out = await verifyReference(deps, operand as string);
    if (values.json) {
      io.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    } else {
      io.stdout.write(`Verified ${out.image}@${out.digest}${out.indexDigest ? ` (index ${out.indexDigest})` : ''}\n`);
      for (const s of out.signatures) io.stdout.write(`  ${describeSignature(s)}\n`);
    }
    return EXIT_OK;
  }
  if (values.json && values.yaml) throw usage('--json and --yaml are exclusive');
  const format: StatusFormat = values.json ? 'json' : values.yaml ? 'yaml' : 'human';
  io.stdout.write(renderStatus(await hostStatus(deps), format));
  return EXIT_OK;
}

/** Plain progress lines: one per phase change, and every 10% while downloading. */
function progressPrinter(out: NodeJS.WritableStream): (p: Progress) => void {
  let last = '';
  let lastPct = -10;
  return (p) => {
    if (p.operation === 'downloading') {
      if (p.percent < lastPct + 10 && p.percent !== 100) return;
      lastPct = p.percent;
      const mib = (n: number): string => (n / 1048576).toFixed(1);
      out.write(`[${p.operation}] ${p.percent}% ${p.message} (${mib(p.bytesDone)}/${mib(p.bytesTotal)} MiB)\n`);
      return;
    }
    const line = `[${p.operation}] ${p.message}`;
    if (line !== last) out.write(`${line}\n`);
    last = line;
  };
}
