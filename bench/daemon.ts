/**
 * Benchmark lines for the daemon: idle RSS after start (target <= 60 MB), wake-ups of the idle daemon over a quiet
 * period (target 0 beyond the bus: counted as context switches of all its threads), and GetStatus round trips,
 * idle and while an upgrade stages the ~400 MiB benchmark image (targets: p99 < 5 ms idle, < 25 ms while staging:
 * unpacking must not block the event loop), and the RSS of the resident daemon after that upgrade and 1,000 more
 * GetStatus (target <= 60 MB).
 *
 * benchIdleExit: cosd as shipped (--idle-exit), started by D-Bus activation on a private bus: the RSS between jobs
 * (none: the process is gone, and how long after its last caller), and the cold-call latency (a GetStatus that starts
 * cosd) beside a warm GetStatus and a bare `node -e 0` start, measured in the same run.
 */
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createCosHost } from '../test/helpers/cos-host.ts';
import { installActivation, startBus, startCosd } from '../test/helpers/dbus.ts';
import { AgentClient } from '../src/dbus/client.ts';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestRegistry } from '../test/helpers/registry.ts';

export const TARGET_IDLE_RSS_MB = 60;
export const TARGET_P99_IDLE_MS = 5;
export const TARGET_P99_STAGING_MS = 25;

/** A full GC of this (the measuring) process. */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

/** Context switches (voluntary + involuntary) summed over every thread: each is a wake-up or a preemption. */
async function switches(pid: number): Promise<number> {
  let total = 0;
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const s = await readFile(`/proc/${pid}/task/${tid}/status`, 'utf8').catch(() => '');
    total += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(s)?.[1] ?? 0) + Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(s)?.[1] ?? 0);
  }
  return total;
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
};

export async function benchDaemon(
  out: (line?: string) => void,
  opts: { reg: TestRegistry; imageRef: string; slotMiB: number; stateMiB: number; idleSeconds: number },
): Promise<void> {
  const bus = await startBus();
  const host = await createCosHost({ stateMiB: opts.stateMiB, files: { '/etc/cos/config': `DEFAULT_IMAGE_SIZE=${opts.slotMiB}\n` } });
  let cosd: Awaited<ReturnType<typeof startCosd>> | undefined;
  let client: AgentClient | undefined;
  try {
    // As systemd/cosd.service runs it: the bundle (`npm run bench` builds it first) with the Node flags of its
    // shebang (startCosd reads them from bin/cosd.js), on the real clock.
    cosd = await startCosd(bus, host, { HOME: host.root, AGENT_TEST_CLOCK: '' });
    const pid = cosd.child.pid as number;
    await sleep(2000);
    const rss = await rssMb(pid);
    const s0 = await switches(pid);
    await sleep(opts.idleSeconds * 1000);
    const wakeups = (await switches(pid)) - s0;

    client = await AgentClient.connect({ address: bus.address });
    // The round trips are timed in this process too: collect the garbage the staging benchmark left here first, so a
    // collection of it does not land in the daemon's numbers.
    collectGarbage();
    const idle: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t0 = performance.now();
      await client.getStatusText();
      idle.push(performance.now() - t0);
    }
    const rssAfterStatus = await rssMb(pid);

    // GetStatus while an upgrade streams and unpacks the image.
    const staging: number[] = [];
    let done = false;
    const jobStart = performance.now();
    let jobMs = 0;
    const job = client.upgradeAndWait({ image: opts.imageRef, noVerify: true }).finally(() => {
      done = true;
      jobMs = performance.now() - jobStart;
    });
    while (!done) {
      const t0 = performance.now();
      await client.getStatusText();
      staging.push(performance.now() - t0);
      await sleep(20);
    }
    await job;
    // The resident mode (--idle-exit 0) after an upgrade: 1,000 more GetStatus, then its RSS.
    for (let i = 0; i < 1000; i++) await client.getStatusText();
    // Its resident size once quiet: cosd collects 2 s after the last call (src/daemon/quiet-gc.ts).
    await sleep(3000);
    const rssResident = await rssMb(pid);

    out();
    out(`daemon (cosd on a private system-like bus, against a loop-device cOS host)`);
    out(`  idle RSS after start                 ${rss.toFixed(1)} MB   (after 300 GetStatus: ${rssAfterStatus.toFixed(1)} MB)`);
    out(`  wake-ups in ${opts.idleSeconds} s idle (ctx switches) ${wakeups}`);
    out(`  GetStatus idle      p50 ${pct(idle, 50).toFixed(2)} ms  p99 ${pct(idle, 99).toFixed(2)} ms  (${idle.length} calls)`);
    out(`  upgrade in the daemon (same image)   ${(jobMs / 1000).toFixed(2)} s, while answering GetStatus every ~20 ms`);
    out(`  RSS of the resident daemon (--idle-exit 0) after the upgrade and 1,000 more GetStatus: ${rssResident.toFixed(1)} MB`);
    out(`  GetStatus staging   p50 ${pct(staging, 50).toFixed(2)} ms  p99 ${pct(staging, 99).toFixed(2)} ms  (${staging.length} calls during the upgrade)`);
    const line = (what: string, v: number, target: number, unit: string): void => {
      out(`  ${what.padEnd(34)} ${v.toFixed(unit === '' ? 0 : 2).padStart(7)} ${unit.padEnd(2)} target <${unit === '' ? '=' : ''} ${target} ${unit}  ${(unit === '' ? v <= target : v < target) ? 'PASS' : 'MISS'}`);
    };
    out('targets:');
    line('idle RSS', rss, TARGET_IDLE_RSS_MB, 'MB');
    line('idle wake-ups (beyond the bus)', wakeups, 0, '');
    line('GetStatus p99 idle', pct(idle, 99), TARGET_P99_IDLE_MS, 'ms');
    line('GetStatus p99 while staging', pct(staging, 99), TARGET_P99_STAGING_MS, 'ms');
    line('resident RSS after upgrade + 1000', rssResident, TARGET_IDLE_RSS_MB, 'MB');
  } finally {
    await client?.close();
    await cosd?.stop();
    await host.close();
    await bus.stop();
  }
}

const median = (xs: readonly number[]): number => pct([...xs], 50);

async function gone(client: AgentClient, deadlineMs: number): Promise<boolean> {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    if (!(await client.daemonRunning())) return true;
    await sleep(50);
  }
  return false;
}

export async function benchIdleExit(out: (line?: string) => void, opts: { rounds?: number; idleSeconds?: number } = {}): Promise<void> {
  const rounds = opts.rounds ?? 5;
  const idleSeconds = opts.idleSeconds ?? 1;
  const dir = await mkdtemp(path.join(tmpdir(), 'bench-idle-'));
  const servicedir = path.join(dir, 'services');
  const root = path.join(dir, 'root');
  await mkdir(servicedir);
  await mkdir(path.join(root, 'etc/cos-agent'), { recursive: true });
  await writeFile(path.join(root, 'etc/cos-agent/agent.yaml'), 'policy: none\n');
  const bus = await startBus({ servicedir });
  const probe = await AgentClient.connect({ address: bus.address });
  try {
    await installActivation(bus, { dir, servicedir, root, args: ['--idle-exit', String(idleSeconds)] });
    // Bare Node starts, for scale.
    const node: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = performance.now();
      spawnSync(process.execPath, ['-e', '0']);
      node.push(performance.now() - t0);
    }
    const cold: number[] = [];
    const warm: number[] = [];
    const leftAfter: number[] = [];
    for (let r = 0; r < rounds; r++) {
      if (!(await gone(probe, 30_000))) throw new Error('cosd did not leave after its idle period');
      const client = await AgentClient.connect({ address: bus.address });
      const t0 = performance.now();
      await client.getStatusText();
      cold.push(performance.now() - t0);
      for (let i = 0; i < 20; i++) {
        const w0 = performance.now();
        await client.getStatusText();
        warm.push(performance.now() - w0);
      }
      await client.close();
      const c0 = performance.now();
      if (!(await gone(probe, 30_000))) throw new Error('cosd did not leave after its last caller');
      leftAfter.push(performance.now() - c0);
    }
    // Between jobs no cosd process is left: no pid of it under /proc.
    const ps = spawnSync('pgrep', ['-f', `--root ${root} --idle-exit`], { encoding: 'utf8' });
    const pidsGone = ps.stdout.trim() === '' && existsSync(root);
    out();
    out(`cosd --idle-exit ${idleSeconds} started by D-Bus activation (a private bus; ${rounds} rounds; medians)`);
    out(`  RSS between jobs                     ${pidsGone ? '0.0 MB (no cosd process)' : 'a cosd process is still there'}; it left ${(median(leftAfter) / 1000).toFixed(2)} s after its last caller hung up (idle period ${idleSeconds} s)`);
    out(`  cold call (GetStatus that starts cosd) ${median(cold).toFixed(0)} ms; warm GetStatus ${median(warm).toFixed(2)} ms; a bare \`node -e 0\` ${median(node).toFixed(0)} ms: cold = ${(median(cold) / median(node)).toFixed(1)}x a bare Node start`);
  } finally {
    await probe.close();
    await bus.stop();
    spawnSync('pkill', ['-f', `--root ${root} --idle-exit`]);
    await rm(dir, { recursive: true, force: true });
  }
}
