/**
 * cosctl's commands, once src/cli.ts has parsed and checked the command line: the agent's dependencies, the backend
 * (cosd over D-Bus, else in-process) and one function per command. Loaded by cli.ts only for a command that runs (not
 * for --help or a usage error), and each command loads the code it alone needs (the in-process actions, the yip
 * engine, the health checks) when it runs: cosctl's start-up is what a command uses, not the whole agent.
 */
import { AgentError } from '../model/errors.ts';
import { displayText, TEXT_LIMITS } from '../model/text.ts';
import { EXIT_OK, EXIT_UP_TO_DATE } from './exit-codes.ts';
import type { StatusFormat } from './format.ts';
import type { HostStatusDocument } from '../model/host.ts';
import { SysRoot } from '../sys/root.ts';
import { nullLogger } from '../sys/log-null.ts';
import type { HookRunner } from '../host/hooks.ts';
import type { AgentDeps } from '../host/deps.ts';
import { agentDeps } from '../host/agent-deps.ts';
import type { Backend, CliIo } from './backend.ts';
import { commandSpec } from './spec.ts';

export type Values = Partial<Record<'root' | 'verbose' | 'no-daemon' | 'image' | 'source' | 'json' | 'yaml' | 'watch' | 'recovery' | 'no-verify' | 'force' | 'reboot' | 'permanent' | 'no-reboot' | 'strict' | 'dry-run', string | boolean>>;

/** The upgrade hooks are yip stages run by the agent's engine, loaded when the first hook runs. */
function yipHooks(deps: AgentDeps): HookRunner {
  let hooks: HookRunner | undefined;
  return {
    async run(name, ctx) {
      hooks ??= new (await import('../actions/hooks.ts')).YipHooks(deps);
      return hooks.run(name, ctx);
    },
  };
}

export async function execute(command: string, operand: string | undefined, values: Values, io: CliIo): Promise<number> {
  const spec = commandSpec(command);
  // suc-upgrade acts on the host mounted at $HOST_DIR (SUC's /host), as the reference script does.
  const rootDir = (typeof values.root === 'string' ? values.root : undefined) ??
    (command === 'suc-upgrade' ? (io.env.HOST_DIR || '/host') : undefined) ?? io.env.COS_ROOT ?? '/';
  const level = values.verbose ? 'debug' : (io.env.COS_LOG_LEVEL ?? 'silent');
  const deps: AgentDeps = agentDeps({
    root: new SysRoot(rootDir),
    env: io.env,
    // JSON logs are for the journal and for --verbose; a plain cosctl run prints progress on stdout and, on failure,
    // exactly one line on stderr.
    // (pino loads only when something is logged.)
    log: level === 'silent' ? nullLogger : (await import('../sys/log.ts')).createLogger({ level, destination: io.stderr, format: values.verbose ? 'readable' : 'json' }),
  });
  // The upgrade hooks (before-upgrade, after-upgrade-chroot, after-upgrade) run through the yip engine.
  deps.hooks = yipHooks(deps);

  // The backend is made when a command needs one: health-check, boot-assessment and run-stage act in-process
  // whatever runs (run-stage as elemental's: the fs stage runs before D-Bus exists, and a stage must not wait on the
  // daemon it may configure), so they neither connect to cosd nor load the D-Bus client.
  let backend: Backend | undefined;
  const connect = async (): Promise<Backend> => {
    if (backend !== undefined) return backend;
    // Without --root (or COS_ROOT) cosctl uses the running daemon whatever root it manages; an explicit root other
    // than the daemon's runs in-process.
    const explicitRoot = typeof values.root === 'string' || (io.env.COS_ROOT ?? '') !== '';
    const daemon = values['no-daemon'] === true ? null : await (await import('./remote.ts')).connectDaemon(io.env, deps, { explicitRoot });
    if (daemon === null && spec?.needsDaemon === true) {
      throw new AgentError('NOT_SUPPORTED', `${command} needs the daemon (cosd)${values['no-daemon'] === true ? ', not --no-daemon' : ', and none serves this root'}`);
    }
    if (daemon === null && spec?.changes === true && process.getuid?.() !== 0) {
      // In-process, a change needs root: say so up front, not as an EACCES from the middle of the action.
      throw new AgentError('ACCESS_DENIED', `${command} changes the system: run it as root${values['no-daemon'] === true ? '' : ' (no cosd serves this root, so cosctl would act itself)'}`);
    }
    backend = daemon ?? (await import('./local.ts')).localBackend(deps);
    return backend;
  };
  try {
    return await dispatch(command, operand, values, connect, io, deps);
  } finally {
    await backend?.close();
  }
}

async function dispatch(command: string, operand: string | undefined, values: Values, connect: () => Promise<Backend>, io: CliIo, deps: AgentDeps): Promise<number> {
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
      const bar = (await import('./progress.ts')).progressRenderer(io.stdout);
      // Ctrl-C (or SIGTERM) cancels: before the slot switch the upgrade stops and cleans up (in-process, or in cosd
      // through Cancel), and cosctl reports how it ended. A second Ctrl-C kills cosctl (the default action again).
      const abort = new AbortController();
      const onSignal = (sig: NodeJS.Signals): void => {
        bar.note(() => io.stderr.write(`cosctl: ${sig}: cancelling the upgrade (it stops before the slot switch and cleans up); ${sig} again to quit at once\n`));
        abort.abort();
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      let res;
      try {
        res = await (await connect()).upgrade({
          ...(image !== undefined ? { image } : {}),
          ...(values.recovery ? { recovery: true } : {}),
          ...(values['no-verify'] ? { noVerify: true } : {}),
          ...(values.force ? { force: true } : {}),
          ...(values.reboot ? { reboot: true } : {}),
        }, (p) => bar.update(p), abort.signal);
        bar.done();
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
      out(`Upgraded ${res.target === 'recovery' ? 'recovery' : 'active'} slot to ${res.image}${res.digest ? `@${res.digest}` : ''}` +
        `${res.version ? ` version ${res.version}` : ''}${res.verification === 'skipped' ? ' [signature NOT verified]' : res.verification === 'not-applicable' ? ' [a local tree: no signature applies]' : ''}.\n` +
        `${res.keepPassiveReason ? `Passive kept: ${res.keepPassiveReason}.\n` : ''}` +
        `${!runsNext ? `The next boot does NOT run it: GRUB boots ${res.nextBoot === '' ? 'nothing' : res.nextBoot} next (see cosctl status).\n` : values.reboot ? 'Rebooting into it.\n' : 'Reboot to run it.\n'}`);
      warn(res.warnings);
      return EXIT_OK;
    }
    case 'check': {
      const res = await (await connect()).check({ ...(image !== undefined ? { image } : {}), ...(values.recovery ? { recovery: true } : {}) });
      out(res.updateAvailable
        ? `Update available: ${res.image}@${res.digest} (slot has ${res.currentDigest ?? 'an unrecorded image'}).\n`
        : `Up to date: ${res.image}@${res.digest}.\n`);
      // Scripts tell the two apart by the exit code, as with rpm-ostree upgrade --check.
      return res.updateAvailable ? EXIT_OK : EXIT_UP_TO_DATE;
    }
    case 'rollback': {
      const res = await (await connect()).rollback({ permanent: values.permanent === true });
      out(res.permanent ? 'Swapped active and passive: the next boots run the former passive image.\n' : `Next boot (once): ${res.nextEntry}.\n`);
      warn(res.warnings);
      return EXIT_OK;
    }
    case 'verify': {
      const res = await (await connect()).verify(operand as string);
      if (values.json) {
        out(`${JSON.stringify(res, null, 2)}\n`);
      } else {
        out(`Verified ${res.image}@${res.digest}${res.indexDigest ? ` (index ${res.indexDigest})` : ''}\n`);
        const { describeSignature } = await import('../actions/verify-image.ts');
        for (const s of res.signatures) out(`  ${describeSignature(s)}\n`);
      }
      return EXIT_OK;
    }
    case 'cancel': {
      out((await (await connect()).cancel()) ? 'Cancel requested: the upgrade stops and cleans up; the slots are untouched.\n' : 'Nothing to cancel (no upgrade running, or it is past the slot switch).\n');
      return EXIT_OK;
    }
    case 'mark-good':
    case 'mark-bad': {
      const res = await (await connect()).mark(command === 'mark-good');
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
      const { runHealthChecks } = await import('../actions/health.ts');
      const { checkTimeoutMs, renderHealthReport, reportError } = await import('../actions/health-plan.ts');
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
      const { renderRunStage, runStageAction, strictFailure } = await import('../actions/run-stage.ts');
      const o = await runStageAction(deps, { stage: operand ?? '', dryRun });
      out(values.json ? `${JSON.stringify(o, null, 2)}\n` : renderRunStage(o));
      const err = values.strict === true ? strictFailure(o) : null;
      if (err !== null) throw err;
      return EXIT_OK;
    }
    case 'suc-upgrade': {
      // In-process, in SUC's job container (the host's cosd cannot see the container's root): root only.
      if (process.getuid?.() !== 0) throw new AgentError('ACCESS_DENIED', 'suc-upgrade changes the host at $HOST_DIR: run it as root (SUC runs it in a privileged container)');
      const { sucOptionsFromEnv, sucUpgrade } = await import('../actions/suc-upgrade.ts');
      const opts = sucOptionsFromEnv(io.env);
      // The job's log (kubectl logs): one line per change of what the upgrade does, not one per chunk.
      let last = '';
      const onProgress = (p: { message: string }): void => {
        if (p.message !== last) out(`suc-upgrade: ${displayText(p.message, TEXT_LIMITS.message)}\n`);
        last = p.message;
      };
      return sucUpgrade(deps, { ...opts, hostDir: deps.root.path('/'), say: (line) => out(`${line}\n`), onProgress });
    }
    case 'boot-assessment': {
      if (process.getuid?.() !== 0) throw new AgentError('ACCESS_DENIED', 'boot-assessment writes GRUB files on COS_STATE and COS_OEM: run it as root');
      const o = await (await import('../actions/boot-assessment.ts')).installAssessment(deps);
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
      // The YAML library loads for --yaml only.
      const { renderStatus: text } = await import('./format.ts');
      const renderStatus = format === 'yaml' ? (await import('./format-yaml.ts')).renderStatusYaml : (doc: HostStatusDocument): string => text(doc, format);
      const backend = await connect();
      if (!values.watch) {
        out(renderStatus(await backend.status()));
        return EXIT_OK;
      }
      // Follow changes until interrupted: one document per change (JSON: one per line).
      const stop = await backend.watch((doc) => out(format === 'json' ? `${JSON.stringify(doc)}\n` : `${renderStatus(doc)}${format === 'human' ? '\n' : '---\n'}`));
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await stop();
      return EXIT_OK;
    }
  }
}

