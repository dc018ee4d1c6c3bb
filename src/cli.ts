/**
 * cosctl: upgrade | check | rollback | status | verify | cancel | mark-good | mark-bad. Talks to the daemon over
 * D-Bus when it runs (src/cli/remote.ts), else runs the action in-process (src/cli/local.ts, also --no-daemon).
 * Exit codes come from one table (src/cli/exit-codes.ts).
 */
import { parseArgs } from 'node:util';
import { AgentError } from './model/errors.ts';
import { displayText, TEXT_LIMITS, utf8Length } from './model/text.ts';
import { EXIT_OK, exitCodeFor } from './cli/exit-codes.ts';
import { renderStatus, type StatusFormat } from './cli/format.ts';
import { SysRoot } from './sys/root.ts';
import { SpawnRunner } from './sys/runner.ts';
import { createLogger } from './sys/log.ts';
import { crashHooks } from './sys/crash.ts';
import { NoHooks } from './host/hooks.ts';
import { YipHooks } from './actions/hooks.ts';
import { describeSignature } from './actions/verify-image.ts';
import type { AgentDeps } from './host/deps.ts';
import type { Backend } from './cli/backend.ts';
import { localBackend } from './cli/local.ts';
import { connectDaemon } from './cli/remote.ts';
import { progressRenderer } from './cli/progress.ts';
import { runHealthChecks } from './actions/health.ts';
import { installAssessment } from './actions/boot-assessment.ts';
import { renderRunStage, runStageAction, strictFailure } from './actions/run-stage.ts';
import { checkTimeoutMs, renderHealthReport, reportError } from './actions/health-plan.ts';

export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

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
    ...(crashHooks(io.env) !== undefined ? { testHooks: crashHooks(io.env) } : {}),
    // Test-only seam: shorter registry backoff so fault tests do not wait out production retry delays.
    ...(io.env.AGENT_TEST_REGISTRY_RETRY_MS ? { registry: { retryBaseMs: Number(io.env.AGENT_TEST_REGISTRY_RETRY_MS) } } : {}),
  };
  // The upgrade hooks are yip stages run by the agent's engine (before-upgrade, after-upgrade-chroot, after-upgrade).
  deps.hooks = new YipHooks(deps);

  // run-stage always runs in-process (as elemental's): the fs stage runs before D-Bus exists, and a stage must not
  // wait on the daemon it may configure.
  const inProcess = values['no-daemon'] === true || command === 'run-stage';
  const backend = (inProcess ? null : await connectDaemon(io.env, deps)) ?? localBackend(deps);
  try {
    return await dispatch(command, operand, values, backend, io, deps);
  } finally {
    await backend.close();
  }
}

type Values = Partial<Record<'image' | 'json' | 'yaml' | 'watch' | 'recovery' | 'no-verify' | 'force' | 'reboot' | 'permanent' | 'no-reboot' | 'strict' | 'dry-run', string | boolean>>;

async function dispatch(command: string, operand: string | undefined, values: Values, backend: Backend, io: CliIo, deps: AgentDeps): Promise<number> {
  const out = (s: string): void => {
    io.stdout.write(s);
  };
  // What went wrong after a change took effect: the change stands (exit 0), these say what is not as it should be.
  const warn = (warnings: readonly string[]): void => {
    for (const w of warnings) io.stderr.write(`cosctl: warning: ${displayText(w, TEXT_LIMITS.message)}\n`);
  };
  const image = typeof values.image === 'string' ? values.image : undefined;
  switch (command) {
    case 'upgrade': {
      const bar = progressRenderer(io.stdout);
      // Ctrl-C (or SIGTERM) cancels: before the slot switch the upgrade stops and cleans up (in-process, or in cosd
      // through Cancel), and cosctl reports how it ended. A second Ctrl-C kills cosctl (the default action again).
      const abort = new AbortController();
      const onSignal = (sig: NodeJS.Signals): void => {
        io.stderr.write(`cosctl: ${sig}: cancelling the upgrade (it stops before the slot switch and cleans up); ${sig} again to quit at once\n`);
        abort.abort();
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      let res;
      try {
        res = await backend.upgrade({
          ...(image !== undefined ? { image } : {}),
          ...(values.recovery ? { recovery: true } : {}),
          ...(values['no-verify'] ? { noVerify: true } : {}),
          ...(values.force ? { force: true } : {}),
          ...(values.reboot ? { reboot: true } : {}),
        }, (p) => bar.update(p), abort.signal);
      } finally {
        bar.stop();
        process.removeListener('SIGINT', onSignal);
        process.removeListener('SIGTERM', onSignal);
      }
      if (res.unchanged !== null) {
        out(`Already up to date: ${res.unchanged} (${res.image}); nothing staged. Use --force to stage it again.\n`);
        return EXIT_OK;
      }
      // "Reboot to run it" only when GRUB really boots the new active next (read back from the disk by the upgrade).
      const runsNext = res.target === 'recovery' || res.nextBoot === null || res.nextBoot === 'active';
      out(`Upgraded ${res.target === 'recovery' ? 'recovery' : 'active'} slot to ${res.image}@${res.digest}` +
        `${res.version ? ` version ${res.version}` : ''}${res.verification === 'skipped' ? ' [signature NOT verified]' : ''}.\n` +
        `${res.keepPassiveReason ? `Passive kept: ${res.keepPassiveReason}.\n` : ''}` +
        `${!runsNext ? `The next boot does NOT run it: GRUB boots ${res.nextBoot === '' ? 'nothing' : res.nextBoot} next (see cosctl status).\n` : values.reboot ? 'Rebooting into it.\n' : 'Reboot to run it.\n'}`);
      warn(res.warnings);
      return EXIT_OK;
    }
    case 'check': {
      const res = await backend.check({ ...(image !== undefined ? { image } : {}), ...(values.recovery ? { recovery: true } : {}) });
      out(res.updateAvailable
        ? `Update available: ${res.image}@${res.digest} (slot has ${res.currentDigest ?? 'an unrecorded image'}).\n`
        : `Up to date: ${res.image}@${res.digest}.\n`);
      return EXIT_OK;
    }
    case 'rollback': {
      const res = await backend.rollback({ permanent: values.permanent === true });
      out(res.permanent ? 'Swapped active and passive: the next boots run the former passive image.\n' : `Next boot (once): ${res.nextEntry}.\n`);
      warn(res.warnings);
      return EXIT_OK;
    }
    case 'verify': {
      const res = await backend.verify(operand as string);
      if (values.json) {
        out(`${JSON.stringify(res, null, 2)}\n`);
      } else {
        out(`Verified ${res.image}@${res.digest}${res.indexDigest ? ` (index ${res.indexDigest})` : ''}\n`);
        for (const s of res.signatures) out(`  ${describeSignature(s)}\n`);
      }
      return EXIT_OK;
    }
    case 'cancel': {
      out((await backend.cancel()) ? 'Cancel requested: the upgrade stops and cleans up; the slots are untouched.\n' : 'Nothing to cancel (no upgrade running, or it is past the slot switch).\n');
      return EXIT_OK;
    }
    case 'mark-good':
    case 'mark-bad': {
      const res = await backend.mark(command === 'mark-good');
      out(command === 'mark-bad'
        ? 'Marked bad: the next boot falls back to passive.\n'
        : res.assessmentChanged === false
          ? 'Marked good: the running image. Boot assessment stays armed for the upgrade staged in active.\n'
          : 'Marked good: boot assessment disarmed.\n');
      warn(res.warnings);
      return EXIT_OK;
    }
    case 'health-check': {
      // In-process whatever the backend (it runs at boot, before or beside cosd); it marks the boot, so root only.
      if (process.getuid?.() !== 0) throw new AgentError('ACCESS_DENIED', 'health-check marks the boot good or bad (and may reboot): run it as root');
      const report = await runHealthChecks(deps, { timeoutMs: checkTimeoutMs(io.env), noReboot: values['no-reboot'] === true });
      out(values.json ? `${JSON.stringify(report, null, 2)}\n` : renderHealthReport(report));
      if (report.mark.result === 'done') warn(report.mark.warnings);
      const err = reportError(report);
      if (err !== null) throw err;
      return EXIT_OK;
    }
    case 'run-stage': {
      // In-process (as elemental run-stage is, from the cos-setup units); it writes the system, so root only, but a
      // dry run only reads.
      const dryRun = values['dry-run'] === true;
      if (!dryRun && process.getuid?.() !== 0) throw new AgentError('ACCESS_DENIED', 'run-stage writes files, users and units as the cloud-config says: run it as root (or with --dry-run)');
      const o = await runStageAction(deps, { stage: operand ?? '', dryRun });
      out(values.json ? `${JSON.stringify(o, null, 2)}\n` : renderRunStage(o));
      const err = values.strict === true ? strictFailure(o) : null;
      if (err !== null) throw err;
      return EXIT_OK;
    }
    case 'boot-assessment': {
      if (process.getuid?.() !== 0) throw new AgentError('ACCESS_DENIED', 'boot-assessment writes GRUB files on COS_STATE and COS_OEM: run it as root');
      const o = await installAssessment(deps);
      if (values.json) {
        out(`${JSON.stringify(o, null, 2)}\n`);
      } else {
        out(o.changed.length === 0 ? 'Boot assessment is installed and up to date.\n' : `Boot assessment installed: ${o.changed.map((f) => displayText(f, TEXT_LIMITS.echo)).join(', ')}.\n`);
        out(`An upgrade gives the new image ${o.tries} ${o.tries === 1 ? 'try' : 'tries'} (BOOT_ASSESSMENT_TRIES) before GRUB falls back to passive.\n`);
      }
      return EXIT_OK;
    }
    default: {
      const format: StatusFormat = values.json ? 'json' : values.yaml ? 'yaml' : 'human';
      if (!values.watch) {
        out(renderStatus(await backend.status(), format));
        return EXIT_OK;
      }
      // Follow changes until interrupted: one document per change (JSON: one per line).
      const stop = await backend.watch((doc) => out(format === 'json' ? `${JSON.stringify(doc)}\n` : `${renderStatus(doc, format)}${format === 'human' ? '\n' : '---\n'}`));
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await stop();
      return EXIT_OK;
    }
  }
}

