/**
 * Test helpers for the daemon:
 *   - startBus(): a private `dbus-daemon` with a system-bus-like configuration (type system, EXTERNAL auth only, the
 *     default-deny policy of Debian's system.conf, every user may connect) that includes the packaging policy file
 *     packaging/io.costoolkit.Agent1.conf, listening on a unix socket in a fresh temp dir (0755, so non-root test
 *     clients reach it). `policy: 'open'` includes a permissive policy instead, to test the service's own uid check.
 *   - startCosd(): the real daemon (bin/cosd.js on the pinned Node) against a cOS host fixture on that bus. Ready
 *     when it logs "ready" (it has taken the bus name by then); its JSON log lines are kept.
 *   - asUser(): run test/helpers/dbus-call.ts as another uid (setpriv), for authorization tests.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { CosHost } from './cos-host.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const POLICY_FILE: string = path.join(REPO, 'packaging/io.costoolkit.Agent1.conf');
const COSD = path.join(REPO, 'bin/cosd.js');
/** The Node flags cosd runs with, from its shebang (`#!/usr/bin/env -S node <flags>`): the one place they are set. */
export const COSD_NODE_FLAGS: readonly string[] = (/^#!\/usr\/bin\/env -S node(.*)$/m.exec(readFileSync(COSD, 'utf8').split('\n')[0] ?? '')?.[1] ?? '')
  .split(' ').filter((f) => f !== '');
const CALL_SCRIPT = path.join(REPO, 'test/helpers/dbus-call.ts');

/** The default policy of Debian's /usr/share/dbus-1/system.conf (default deny for method calls and ownership). */
const SYSTEM_DEFAULT_POLICY = `
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>`;

/** A policy that lets everyone call everything of the agent (only root may own the name). */
const OPEN_POLICY = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root"><allow own="io.costoolkit.Agent1"/></policy>
  <policy context="default"><allow send_destination="io.costoolkit.Agent1"/></policy>
</busconfig>
`;

export interface TestBus {
  /** `unix:path=<dir>/system_bus_socket`. */
  address: string;
  dir: string;
  /** Stop the bus daemon and remove its dir. Idempotent. */
  stop(): Promise<void>;
}

async function stopProcess(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

/** Debian's bus policy of polkitd (user polkitd owns org.freedesktop.PolicyKit1, everyone may call it). */
const POLKIT_BUS_POLICY = '/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf';
export const POLKIT_DROP_IN: string = path.join(REPO, 'packaging/io.costoolkit.Agent1.polkit.conf');

/**
 * `policy`: the packaging policy (default) or a permissive one. `polkit`: also the bus policy polkitd needs, and with
 * `'drop-in'` the packaging's optional polkit drop-in (non-root calls reach cosd, which asks polkit). `includes`:
 * these policy files instead of the agent's (e.g. installed copies); `servicedir`: an activation directory.
 * Rejects when dbus-daemon refuses the configuration.
 */
export async function startBus(opts: {
  policy?: 'packaging' | 'open';
  polkit?: boolean | 'drop-in';
  includes?: readonly string[];
  servicedir?: string;
} = {}): Promise<TestBus> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-bus-'));
  await chmod(dir, 0o755);
  const socket = path.join(dir, 'system_bus_socket');
  let include = POLICY_FILE;
  if (opts.policy === 'open') {
    include = path.join(dir, 'open-policy.conf');
    await writeFile(include, OPEN_POLICY);
  }
  const config = path.join(dir, 'system.conf');
  await writeFile(config, `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=${socket}</listen>
  ${SYSTEM_DEFAULT_POLICY}
  ${(opts.includes ?? [include]).map((f) => `<include>${f}</include>`).join('\n  ')}
  ${opts.servicedir !== undefined ? `<servicedir>${opts.servicedir}</servicedir>` : ''}
  ${opts.polkit ? `<include>${POLKIT_BUS_POLICY}</include>` : ''}
  ${opts.polkit === 'drop-in' ? `<include>${POLKIT_DROP_IN}</include>` : ''}
</busconfig>
`);
  const child = spawn('dbus-daemon', [`--config-file=${config}`, '--nofork', '--nopidfile', '--print-address=1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  const stop = async (): Promise<void> => {
    await stopProcess(child);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const address = await new Promise<string>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout });
      lines.once('line', (line) => resolve(line.trim()));
      child.once('exit', (code) => reject(new Error(`dbus-daemon exited (${code}) before listening: ${stderr}`)));
      child.once('error', reject);
    });
    if (!address.includes(socket)) throw new Error(`dbus-daemon listens on ${address}, not ${socket}`);
    await chmod(socket, 0o777);
    return { address: `unix:path=${socket}`, dir, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

export interface CosdLog {
  level: number;
  msg: string;
  transaction?: string;
  [key: string]: unknown;
}

export interface CosdProcess {
  child: ChildProcess;
  /** Every JSON log line so far. */
  logs: CosdLog[];
  /** Lines of stdout that were not JSON (should stay empty). */
  junk: string[];
  stderr(): string;
  /** The first log line (already seen or to come) matching `pred`; rejects if cosd exits first. */
  waitForLog(pred: (l: CosdLog) => boolean): Promise<CosdLog>;
  /** Resolves with the exit code when cosd exits by itself (null when a signal ended it). */
  exited(): Promise<number | null>;
  /** SIGTERM and wait for the exit (SIGKILL after a grace period). Resolves with the exit code. Idempotent. */
  stop(): Promise<number | null>;
}

/**
 * Start the real cosd against `host` (or a bare root dir: `{ root, env: {} }`) on `bus`; resolves once it logged
 * "ready". `env` adds to (and overrides) the defaults: the host's AGENT_TEST_DISK, HOME = the root, log level info,
 * a frozen AGENT_TEST_CLOCK; `args` are added to cosd's (`--idle-exit 0` unless they set it).
 */
export async function startCosd(bus: TestBus, host: Pick<CosHost, 'root' | 'env'>, env: Record<string, string> = {}, args: readonly string[] = []): Promise<CosdProcess> {
  // Resident unless a test asks for --idle-exit (test/daemon/idle-exit.test.ts): a test's cosd must not leave
  // between two of its steps (the test bus has no activation).
  const idle = args.includes('--idle-exit') ? [] : ['--idle-exit', '0'];
  // The lines must be read even when nobody waits for one: a full stdout pipe would block the daemon.
  const child = spawn(process.execPath, [...COSD_NODE_FLAGS, COSD, '--root', host.root, ...idle, ...args], {
    env: {
      ...process.env,
      ...host.env,
      DBUS_SYSTEM_BUS_ADDRESS: bus.address,
      HOME: host.root,
      AGENT_TEST_REGISTRY_RETRY_MS: '20',
      COS_LOG_LEVEL: 'info',
      // A frozen test clock, so no scheduled run fires during a test whatever the wall clock says; a test (or the
      // benchmark, which measures the real schedule) passes AGENT_TEST_CLOCK: '' for the real clock.
      AGENT_TEST_CLOCK: 'manual:2025-01-06T12:00:00Z',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: CosdLog[] = [];
  const junk: string[] = [];
  const lineEvents = new EventEmitter();
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  let stopped: Promise<number | null> | undefined;
  const proc: CosdProcess = {
    child,
    logs,
    junk,
    stderr: () => stderr,
    exited: () => (child.exitCode !== null || child.signalCode !== null ? Promise.resolve(child.exitCode) : once(child, 'exit').then(() => child.exitCode)),
    waitForLog: (pred) => {
      const seen = logs.find(pred);
      if (seen) return Promise.resolve(seen);
      if (child.exitCode !== null || child.signalCode !== null) return Promise.reject(new Error('cosd has exited'));
      return new Promise((resolve, reject) => {
        const onLine = (l: CosdLog): void => {
          if (!pred(l)) return;
          cleanup();
          resolve(l);
        };
        const onExit = (): void => {
          cleanup();
          reject(new Error(`cosd exited before logging the line waited for: ${stderr}`));
        };
        const cleanup = (): void => {
          lineEvents.off('line', onLine);
          child.off('exit', onExit);
        };
        lineEvents.on('line', onLine);
        child.once('exit', onExit);
      });
    },
    stop: () => {
      stopped ??= (async () => {
        await stopProcess(child, 60_000);
        return child.exitCode;
      })();
      return stopped;
    },
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        let entry: CosdLog;
        try {
          entry = JSON.parse(line) as CosdLog;
        } catch {
          junk.push(line);
          return;
        }
        logs.push(entry);
        lineEvents.emit('line', entry);
        if (entry.msg === 'ready') resolve();
      });
      child.once('exit', (code, signal) => reject(new Error(`cosd exited (${code ?? signal}) before it was ready: ${stderr}\n${logs.map((l) => JSON.stringify(l)).join('\n')}`)));
      child.once('error', reject);
    });
  } catch (e) {
    await proc.stop();
    throw e;
  }
  return proc;
}

/**
 * D-Bus activation of the real cosd on `bus` (started with `servicedir`): a launcher script in `dir` and the service
 * file in `servicedir` that dbus-daemon runs on the first call to io.costoolkit.Agent1 (as the packaging's activation
 * file does through systemd). cosd manages `root` with `args`; its log lines are appended to the returned `log`.
 */
export async function installActivation(bus: TestBus, opts: { dir: string; servicedir: string; root: string; args?: readonly string[]; env?: Record<string, string> }): Promise<{ log: string }> {
  const launcher = path.join(opts.dir, 'cosd-launch');
  const log = path.join(opts.dir, 'cosd.log');
  const q = (v: string): string => `'${v.replaceAll("'", "'\\''")}'`;
  const env = { DBUS_SYSTEM_BUS_ADDRESS: bus.address, AGENT_TEST_DISK: '/dev/cos-test-no-such-disk', HOME: opts.root, ...opts.env };
  await writeFile(launcher, `#!/bin/sh
export ${Object.entries(env).map(([k, v]) => `${k}=${q(v)}`).join(' ')}
exec ${q(process.execPath)} ${COSD_NODE_FLAGS.join(' ')} ${q(COSD)} --root ${q(opts.root)} ${(opts.args ?? []).map(q).join(' ')} >> ${q(log)} 2>&1
`);
  await chmod(launcher, 0o755);
  await writeFile(path.join(opts.servicedir, 'io.costoolkit.Agent1.service'), `[D-BUS Service]\nName=io.costoolkit.Agent1\nExec=${launcher}\nUser=root\n`);
  return { log };
}

export interface CallResult {
  ok: boolean;
  /** The reply body (JSON-able) when ok. */
  value?: unknown;
  /** The AgentError code when not ok. */
  code?: string;
  message?: string;
}

/**
 * Run one client call as another user (setpriv --reuid/--regid --clear-groups) on `bus`, through
 * test/helpers/dbus-call.ts: `getStatus`, `getProperty <Name>`, `upgrade`, `cancel`, `markGood`, `runStage <name>`.
 */
export function asUser(uid: number, bus: TestBus, call: string, ...args: string[]): Promise<CallResult> {
  return new Promise((resolve, reject) => {
    execFile('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, CALL_SCRIPT, call, ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', DBUS_SYSTEM_BUS_ADDRESS: bus.address, HOME: '/nonexistent' },
      cwd: '/',
    }, (err, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as CallResult);
      } catch {
        reject(new Error(`dbus-call as uid ${uid} printed no result (${err?.message ?? 'exit 0'}): ${stdout}${stderr}`));
      }
    });
  });
}

/**
 * cosd's job processes now (src/daemon/job-process.ts): its children running job-worker (the bundle's .mjs or the
 * source), with their argv.
 */
export async function jobProcesses(cosdPid: number): Promise<Array<{ pid: number; argv: string[] }>> {
  const { readFile } = await import('node:fs/promises');
  const children = (await readFile(`/proc/${cosdPid}/task/${cosdPid}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean).map(Number);
  const jobs: Array<{ pid: number; argv: string[] }> = [];
  for (const pid of children) {
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
    if (argv.some((a) => /job-worker\.(mjs|ts)$/.test(a))) jobs.push({ pid, argv });
  }
  return jobs;
}

/** Resolves once process `pid` is gone (polls /proc), or rejects after `ms`. */
export async function processGone(pid: number, ms = 30_000): Promise<void> {
  const { stat } = await import('node:fs/promises');
  const end = Date.now() + ms;
  while (await stat(`/proc/${pid}`).then(() => true, () => false)) {
    if (Date.now() > end) throw new Error(`process ${pid} still runs after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
