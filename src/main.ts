/**
 * cosd: the composition root of the daemon. `cosd [--root DIR]`: builds the real dependencies, loads the state from
 * disk, exports io.costoolkit.Agent1 on the system bus (DBUS_SYSTEM_BUS_ADDRESS when set) and takes the bus name,
 * which is when systemd (Type=dbus) considers it started. Logs are pino JSON lines on stdout (the journal), one event
 * per line, the transaction id on every line of a job. SIGTERM/SIGINT: cancel a job that can still be cancelled,
 * wait for it to clean up, leave the bus, exit.
 *
 * The configuration is watched (inotify, debounced: a change shows in the Config property without a restart, an
 * invalid file keeps the previous config and sets LastError) and automatic updates run on the schedule of
 * /etc/cos-agent/agent.yaml (src/daemon/automation.ts). The idle daemon holds the scheduler's cron task and the
 * watches, no other timer.
 *
 * Static imports stay small (dbus-next, pino, the daemon state, the config loader): the jobs run in a process of their
 * own (src/daemon/job-process.ts, src/job-worker.ts) that loads the job machinery and frees it when the job ends, and
 * the schedule's next run is computed by node-cron in the cron helper process (src/cron-next.ts),
 * so ICU's date-format data never loads in the idle daemon.
 *
 * Test-only seam: AGENT_TEST_CLOCK=manual:<ISO instant> runs the scheduler on a ManualClock starting there, and only
 * then is a SIGUSR2 handler installed that moves that clock to its next event (cron match or timer) and logs
 * "test clock advanced" once the work it started has finished. Inert when unset.
 */
import { fstatSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { AgentError } from './model/errors.ts';
import { SysRoot } from './sys/root.ts';
import { SpawnRunner } from './sys/runner.ts';
import { createLogger, type Logger } from './sys/log.ts';
import { agentDeps } from './host/agent-deps.ts';
import { AgentDaemon } from './daemon/daemon.ts';
import type { AgentDeps } from './host/deps.ts';
import { startService, type RunningService } from './dbus/service.ts';
import { advanceToNextEvent, Automation, TEST_CLOCK_ENV, testClockFromEnv } from './daemon/automation.ts';
import { StatusWatcher } from './daemon/status-watch.ts';
import { IdleMonitor } from './daemon/idle.ts';
import { QuietGc } from './daemon/quiet-gc.ts';
import { systemdWaker } from './daemon/wake.ts';
import { DEFAULT_METRICS_FILE, MetricsFile } from './daemon/metrics-file.ts';
import { VERSION } from './version.ts';

/** Default idle period before cosd leaves (systemd's hostnamed waits 30 s, fwupd two hours). */
export const DEFAULT_IDLE_EXIT_S = 60;

export interface DaemonIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

const USAGE = `usage: cosd [--root DIR] [--idle-exit SECONDS] [--metrics-file PATH]
  --root DIR           manage the cOS host whose root is DIR (default /); the bus is DBUS_SYSTEM_BUS_ADDRESS, else
                       the system bus
  --idle-exit SECONDS  leave after SECONDS with no call, no job and no connected caller (default ${DEFAULT_IDLE_EXIT_S});
                       the bus, a systemd timer (the schedule) and cos-agent-config.path start cosd again;
                       0 stays resident
  --metrics-file PATH  node_exporter textfile with the agent's metrics, rewritten on every change (default
                       ${DEFAULT_METRICS_FILE}, written when its directory exists; '' writes none)`;

/** A running daemon: `stopped` resolves with the exit status once it has left the bus. */
export interface Cosd {
  readonly daemon: AgentDaemon;
  stop(reason: string): Promise<void>;
  readonly stopped: Promise<number>;
}

/** Parse argv, start the daemon. Throws AgentError USAGE on bad arguments. */
export async function startDaemon(argv: readonly string[], io: DaemonIo): Promise<Cosd | null> {
  let values: { root?: string; help?: boolean; 'idle-exit'?: string; 'metrics-file'?: string };
  try {
    ({ values } = parseArgs({ args: [...argv], strict: true, allowPositionals: false, options: { root: { type: 'string' }, 'idle-exit': { type: 'string' }, 'metrics-file': { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (e) {
    throw new AgentError('USAGE', `${e instanceof Error ? e.message : String(e)}\n${USAGE}`);
  }
  const idleText = values['idle-exit'] ?? String(DEFAULT_IDLE_EXIT_S);
  if (!/^\d{1,7}$/.test(idleText)) throw new AgentError('USAGE', `--idle-exit ${JSON.stringify(idleText)}: expected whole seconds (0 stays resident)\n${USAGE}`);
  const idleExitMs = Number(idleText) * 1000;
  if (values.help) {
    io.stdout.write(`${USAGE}\n`);
    return null;
  }
  const env = io.env;
  const root = new SysRoot(values.root ?? '/');
  // Test-only seam (AGENT_TEST_CLOCK): a manual scheduler clock; a malformed value is a USAGE error.
  const testClock = testClockFromEnv(env[TEST_CLOCK_ENV]);
  // Under systemd (stdout on the journal: JOURNAL_STREAM), each line carries its syslog priority prefix.
  const journal = isJournalStream(env.JOURNAL_STREAM);
  const log: Logger = createLogger({ level: env.COS_LOG_LEVEL ?? 'info', destination: io.stdout, format: journal ? 'journal' : 'json' }).child({ component: 'cosd' });
  // Tool runs are logged at debug level, with the transaction of the job that runs them.
  let current = (): string => '';
  const runner = new SpawnRunner({
    onCommand: (argv) => log.debug({ ...(current() !== '' ? { transaction: current() } : {}), argv: [...argv] }, 'run'),
  });
  // No hooks here: the upgrade hooks run with the jobs, in the job process (src/job-worker.ts builds its own).
  const agent: AgentDeps = agentDeps({ root, env, log, runner });

  const daemon: AgentDaemon = new AgentDaemon({
    agent,
    // Every job runs in a process of its own: the job machinery never loads into this one (src/daemon/job-process.ts).
    jobActions: async () => (await import('./daemon/job-process.ts')).processActions(),
    reboot: async () => {
      // Test-only seam: AGENT_TEST_REBOOT_ARGV (a JSON argv) runs instead of the reboot.
      const seam = env.AGENT_TEST_REBOOT_ARGV;
      if (seam) {
        await runner.run({ argv: JSON.parse(seam) as string[], description: 'rebooting (test seam AGENT_TEST_REBOOT_ARGV)' });
        return 'rebooting';
      }
      // A daemon managing a host under --root must never reboot the machine it runs on.
      if (!root.isHostRoot) return 'skipped';
      await runner.run({ argv: ['systemctl', 'reboot'], description: 'rebooting after the upgrade' });
      return 'rebooting';
    },
    // The first call (from daemon.start) loads the config and arms the watches.
    reloadConfig: (): Promise<void> => automation.reload(),
  });
  current = () => daemon.state.transaction;
  const automation: Automation = new Automation({ root, daemon, log, env, ...(testClock !== undefined ? { clock: testClock } : {}) });
  // Changes to the status sources made outside cosd re-read the status copy (after the job, if one runs).
  const statusWatcher = new StatusWatcher(root, (at) => {
    // During a job these are (mostly) its own writes: the line carries the job's transaction, the re-read waits for it.
    const tx = daemon.state.transaction;
    log.debug(tx !== '' ? { transaction: tx } : {}, 'status sources changed');
    void daemon.refreshAfterChange(at);
  }, {
    onWatchError: (dir, err) =>
      log.warn({ dir, code: err.code ?? null, err: err.message }, 'cannot watch a status source: changes made there outside cosd show after the next job'),
  });

  log.info({ root: root.prefix, pid: process.pid, ...(testClock !== undefined ? { testClock: testClock.now().toISOString() } : {}) }, 'starting');
  try {
    await daemon.start();
  } catch (e) {
    automation.stop();
    throw e;
  }
  const metricsPath = values['metrics-file'] ?? DEFAULT_METRICS_FILE;
  const metrics = metricsPath === '' ? undefined
    : new MetricsFile({ root, file: metricsPath, createDir: values['metrics-file'] !== undefined, log, version: VERSION });
  await metrics?.attach(daemon);

  let resolveStopped: (code: number) => void = () => {};
  const stopped = new Promise<number>((resolve) => {
    resolveStopped = resolve;
  });
  let stopping: Promise<void> | null = null;
  let service: RunningService | undefined;
  let advanceOnSignal: (() => void) | undefined;
  const waker = systemdWaker(root, runner, env);
  const busy = (): boolean => {
    const sched = automation.scheduler.state;
    return daemon.state.operation !== 'idle' || sched.running || sched.delayPending || sched.rebootWindow !== null;
  };
  const idle: IdleMonitor = new IdleMonitor({
    timeoutMs: idleExitMs,
    busy,
    alive: (names) => service?.alive(names) ?? Promise.resolve([...names]),
    onIdle: async () => {
      if (service === undefined || stopping !== null) return 'stay';
      // The schedule goes to systemd first; where it cannot, cosd stays (a schedule is never dropped).
      const sched = automation.scheduler;
      if (sched.state.cron) {
        const next = sched.nextRun;
        if (next === null) return 'stay';
        try {
          await waker.arm(next);
        } catch (e) {
          log.warn({ code: e instanceof AgentError ? e.code : null, err: e instanceof Error ? e.message : String(e) }, 'staying resident: the schedule cannot be handed to a systemd timer');
          return 'resident';
        }
      }
      // Calls routed to cosd before the bus released the name arrive before its reply: one of them keeps cosd.
      const calls = idle.generation;
      if (!(await service.releaseName())) return 'stay';
      if ((idle.generation !== calls || busy()) && (await service.requestName())) return 'stay';
      log.info({ idleSeconds: idleExitMs / 1000, wake: sched.state.cron ? (sched.nextRun?.toISOString() ?? null) : null }, 'idle: leaving; a call, the schedule\'s timer or a config change starts cosd again');
      void (async () => {
        // Another cosd took the name while a call started a job here: finish it first.
        while (busy()) await new Promise((r) => setTimeout(r, 1000));
        await stop('idle', 0);
      })();
      return 'left';
    },
  });
  // A full GC once quiet after calls or a job (no memory reducer: see quiet-gc.ts); with --expose-gc (bin/cosd.js).
  const gc = (globalThis as { gc?: (o?: object) => void }).gc;
  const quietGc = gc === undefined ? undefined
    : new QuietGc({ quietMs: 2000, busy: () => daemon.state.operation !== 'idle', collect: () => gc({ type: 'major', flavor: 'last-resort' }) });
  const unsubscribeGc = quietGc === undefined ? undefined : daemon.subscribe({ completed: () => quietGc.activity() });
  const stop = (reason: string, code = 0): Promise<void> => {
    stopping ??= (async () => {
      idle.stop();
      quietGc?.stop();
      unsubscribeGc?.();
      log.info({ reason }, 'stopping');
      if (advanceOnSignal) process.off('SIGUSR2', advanceOnSignal);
      automation.stop();
      statusWatcher.stop();
      await daemon.stop();
      metrics?.detach();
      await metrics?.idle();
      await service?.stop();
      log.info({}, 'stopped');
      resolveStopped(code);
    })();
    return stopping;
  };
  try {
    service = await startService(daemon, {
      log,
      ...(env.DBUS_SYSTEM_BUS_ADDRESS ? { address: env.DBUS_SYSTEM_BUS_ADDRESS } : {}),
      subscribe: (l) => daemon.subscribe(l),
      onCall: (sender) => {
        idle.activity(sender);
        quietGc?.activity();
      },
      onDisconnect: (err) => {
        log.error({ err: err.message }, 'lost the bus connection');
        void stop('bus connection lost', 1);
      },
    });
  } catch (e) {
    automation.stop();
    throw e;
  }
  automation.start();
  statusWatcher.start();
  // Started by the schedule's wake timer (or after its instant): run the tick it was armed for.
  const wokenFor = waker.recorded();
  if (wokenFor !== null && wokenFor.getTime() <= (testClock?.now() ?? new Date()).getTime() + 1000) {
    waker.clear();
    log.info({ at: wokenFor.toISOString() }, 'started for a scheduled run');
    automation.scheduler.tick();
  }
  idle.start();
  if (testClock !== undefined) {
    // Test-only seam: each SIGUSR2 moves the manual clock to its next event, one advance at a time.
    let chain = Promise.resolve();
    let advances = 0;
    advanceOnSignal = () => {
      chain = chain.then(async () => {
        const from = testClock.now().toISOString();
        const to = await advanceToNextEvent(testClock, automation.scheduler);
        log.info({ advance: ++advances, from, to: to?.toISOString() ?? null, pending: testClock.pending().timers.map((d) => d.toISOString()) }, 'test clock advanced');
      });
    };
    process.on('SIGUSR2', advanceOnSignal);
  }
  log.info({}, 'ready');
  return { daemon, stop: (reason) => stop(reason), stopped };
}

/** The process entry (bin/cosd.js): run until SIGTERM/SIGINT or a lost bus; returns the exit status. */
/**
 * Whether stdout is the journal stream systemd set up: JOURNAL_STREAM names its device and inode, which must be
 * stdout's own (the variable is inherited by children whose stdout is something else: sd_journal_stream_fd(3)).
 */
function isJournalStream(value: string | undefined): boolean {
  const [dev, ino] = (value ?? '').split(':');
  if (dev === undefined || ino === undefined || dev === '' || ino === '') return false;
  try {
    const st = fstatSync(1);
    return String(st.dev) === dev && String(st.ino) === ino;
  } catch {
    return false;
  }
}

export async function main(argv: readonly string[], io: DaemonIo): Promise<number> {
  let cosd: Cosd | null;
  try {
    cosd = await startDaemon(argv, io);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    io.stderr.write(`cosd: ${msg}\n`);
    return e instanceof AgentError && e.code === 'USAGE' ? 2 : 1;
  }
  if (cosd === null) return 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    void cosd.stop(sig);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const code = await cosd.stopped;
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  return code;
}
