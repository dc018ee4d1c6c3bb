/**
 * Benchmark lines for cosctl's start (issue 12): wall time and peak RSS of `cosctl --help`, and of `cosctl status`
 * against a loop-device cOS host, in-process (--no-daemon) and through a real cosd on a private bus, beside bare Node
 * (`node -e 0`) run in the same process, alternating. cosctl runs as the tests and the package run it: the bundle
 * (`npm run bench` builds it first) through bin/cosctl.js. Targets: --help within 2x bare Node's wall time; status
 * through cosd under 150 ms where bare Node starts in 30 ms (issue 12's machine), i.e. within 5x bare Node's wall
 * time measured in the same run: a ratio, as every speed target here, so that a slower machine (bare Node takes 70 to
 * 85 ms on this project's CI machines) neither fails it nor a faster one hides a regression. The absolute time is
 * printed beside it. Wall times are the program's own (test/helpers/peak-rss.ts times it from its spawn to its exit).
 */
import { createCosHost } from '../test/helpers/cos-host.ts';
import { cosctlInvocation } from '../test/helpers/cosctl.ts';
import { startBus, startCosd } from '../test/helpers/dbus.ts';
import { runWithPeakRss, type PeakResult } from '../test/helpers/peak-rss.ts';

export const TARGET_HELP_VS_NODE = 2;
/** Issue 12: `cosctl status` under 150 ms on a host, where bare Node took 30 ms. */
export const TARGET_STATUS_MS = 150;
export const ISSUE_BARE_NODE_MS = 30;
export const TARGET_STATUS_VS_NODE: number = TARGET_STATUS_MS / ISSUE_BARE_NODE_MS;

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

export async function benchCli(out: (line?: string) => void, runs = 9): Promise<void> {
  const bus = await startBus();
  const host = await createCosHost();
  let cosd: Awaited<ReturnType<typeof startCosd>> | undefined;
  try {
    cosd = await startCosd(bus, host, { HOME: host.root });
    const daemonEnv = { DBUS_SYSTEM_BUS_ADDRESS: bus.address };
    const contestants: [string, () => Promise<PeakResult>][] = [
      ['node -e 0 (baseline)', () => runWithPeakRss([process.execPath, '-e', '0'])],
      ['cosctl --help', () => {
        const inv = cosctlInvocation(host, ['--help']);
        return runWithPeakRss(inv.argv, { env: inv.env });
      }],
      ['cosctl status --no-daemon', () => {
        const inv = cosctlInvocation(host, ['--no-daemon', 'status']);
        return runWithPeakRss(inv.argv, { env: { ...inv.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' } });
      }],
      ['cosctl status (through cosd)', () => {
        const inv = cosctlInvocation(host, ['status'], daemonEnv);
        return runWithPeakRss(inv.argv, { env: inv.env });
      }],
    ];
    const results = new Map<string, PeakResult[]>(contestants.map(([n]) => [n, []]));
    for (let i = 0; i < runs; i++) {
      for (const [name, fn] of contestants) {
        const r = await fn();
        if (r.code !== 0) throw new Error(`${name} failed (exit ${r.code}): ${r.stderr.slice(-500)}`);
        results.get(name)!.push(r);
      }
    }
    out();
    out(`cosctl start (${runs} runs each, alternating; median wall, median peak RSS):`);
    const med = (name: string): { ms: number; mb: number } => {
      const rs = results.get(name)!;
      return { ms: median(rs.map((r) => r.ms)), mb: median(rs.map((r) => r.peakKb / 1024)) };
    };
    for (const [name] of contestants) {
      const m = med(name);
      out(`  ${name.padEnd(34)} ${m.ms.toFixed(0).padStart(6)} ms  ${m.mb.toFixed(1).padStart(6)} MiB`);
    }
    const node = med('node -e 0 (baseline)');
    const help = med('cosctl --help');
    const status = med('cosctl status (through cosd)');
    const okHelp = help.ms / node.ms <= TARGET_HELP_VS_NODE;
    out(`  ${'cosctl --help / bare node'.padEnd(34)} ${(help.ms / node.ms).toFixed(2).padStart(5)}x  target <= ${TARGET_HELP_VS_NODE.toFixed(2)}x  ${okHelp ? 'PASS' : 'MISS'}   (${help.ms.toFixed(0)} ms / ${node.ms.toFixed(0)} ms)`);
    const okStatus = status.ms / node.ms <= TARGET_STATUS_VS_NODE;
    out(`  ${'cosctl status through cosd / node'.padEnd(34)} ${(status.ms / node.ms).toFixed(2).padStart(5)}x  target <= ${TARGET_STATUS_VS_NODE.toFixed(2)}x  ${okStatus ? 'PASS' : 'MISS'}   (${status.ms.toFixed(0)} ms / ${node.ms.toFixed(0)} ms; the issue's ${TARGET_STATUS_MS} ms where bare Node took ${ISSUE_BARE_NODE_MS} ms)`);
  } finally {
    await cosd?.stop();
    await host.close();
    await bus.stop();
  }
}
