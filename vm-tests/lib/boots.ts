/**
 * VM-test helper for the multi-boot agent scenarios (fallback, upgrade, power cut): one boot of a raw disk with the
 * reporter units of lib/fallback.ts, its results by kind, the parsed status document, and a diagnostic text for
 * assertion messages (console tail, the guest's health-check and cosd journals, cosctl's stderr).
 */
import type { ExecutionContext } from 'ava';
import { bootReport, bootVm, markerJson, type BootResult } from './qemu.ts';

export type Json = Record<string, unknown>;
export const obj = (v: unknown): Json => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : {});

/** The hard timeout of one boot. */
export const BOOT_TIMEOUT_MS = 300_000;

export interface Boot {
  n: number;
  vm: BootResult;
  /** The results of this boot by kind (the last of each kind). */
  kind: Map<string, Json>;
  /** ms since qemu started at which the (last) result of each kind was printed. */
  at: Map<string, number>;
  boot: Json;
  grub: Json;
  /** The parsed `cosctl status --json` document, when the reporter got to it. */
  status: Json | null;
  report: string;
  /** Data for failure messages: console tail, the agent's journals and stderr. */
  diag: string;
}

export interface BootOnceOptions {
  timeoutMs?: number;
  /** Cut the power (SIGKILL qemu) when a console line matches. */
  killAtMarker?: string | RegExp;
  /** Log the one-line summary of the boot (default true); false for a caller that logs its own. */
  log?: boolean;
  /** Freeze qemu at a console line, run the handler (e.g. a disk snapshot), go on (BootOptions.freezeAtMarker). */
  freezeAtMarker?: { match: string | RegExp; handle: (line: string) => Promise<void> };
  /** Extra qemu arguments (e.g. `-fw_cfg name=opt/cosvm/step,file=...`: this boot's step). */
  extraArgs?: readonly string[];
}

export async function bootOnce(t: ExecutionContext, image: string, work: string, name: string, n: number, opts: BootOnceOptions = {}): Promise<Boot> {
  const vm = await bootVm({
    disk: image,
    workDir: work,
    name: `${name}-boot${n}`,
    timeoutMs: opts.timeoutMs ?? BOOT_TIMEOUT_MS,
    memMiB: 1024,
    ...(opts.killAtMarker !== undefined ? { killAtMarker: opts.killAtMarker } : {}),
    ...(opts.freezeAtMarker !== undefined ? { freezeAtMarker: opts.freezeAtMarker } : {}),
    ...(opts.extraArgs !== undefined ? { extraArgs: opts.extraArgs } : {}),
  });
  const kind = new Map<string, Json>();
  const at = new Map<string, number>();
  for (const [i, r] of vm.results.entries()) {
    kind.set(String(r['kind']), r);
    at.set(String(r['kind']), vm.resultTimesMs[i] ?? Number.NaN);
  }
  const report = bootReport(vm, 100);
  const statusRes = kind.get('status');
  let status: Json | null = null;
  if (statusRes !== undefined) {
    try {
      status = obj(JSON.parse(String(statusRes['stdout'] ?? '')));
    } catch {
      status = null;
    }
  }
  const hc = obj(kind.get('healthcheck')?.['healthcheck'] ?? kind.get('shutdown')?.['healthcheck']);
  const diag = [
    report,
    `--- health check journal (guest) ---\n${String(hc['journal'] ?? '')}`,
    `--- cosd journal (guest) ---\n${String(kind.get('done')?.['cosdJournal'] ?? kind.get('shutdown')?.['cosdJournal'] ?? '')}`,
    `--- cosctl ${String(kind.get('cosctl')?.['args'] ?? '')} stdout/stderr ---\n${String(kind.get('cosctl')?.['stdout'] ?? '').slice(-3000)}\n${String(kind.get('cosctl')?.['stderr'] ?? '')}`,
    `--- cosctl status stdout/stderr ---\n${String(statusRes?.['stdout'] ?? '').slice(0, 4000)}\n${String(statusRes?.['stderr'] ?? '')}`,
  ].join('\n');
  const boot = obj(kind.get('boot'));
  const ends = vm.killedAtMarker !== null ? 'power cut at the marker' : kind.has('done') ? (kind.has('shutdown') ? `reporter, then ${String(kind.get('shutdown')?.['shutdownTarget'] ?? '')}` : 'reporter power-off') : kind.has('shutdown') ? `shutdown (${String(kind.get('shutdown')?.['shutdownTarget'] ?? '')})` : 'no report';
  if (opts.log !== false) t.log(`${name} boot ${n}: ${(vm.durationMs / 1000).toFixed(1)} s, ${String(boot['label'] ?? '?')} (${String(boot['version'] ?? '?')}), ends: ${ends}${vm.timedOut ? ' HARD TIMEOUT' : ''}; ${vm.logPath}`);
  return { n, vm, kind, at, boot, grub: Object.assign({}, ...markerJson(vm.serial, 'COSVM-GRUB')) as Json, status, report, diag };
}

/**
 * When multi-user.target was reached, in seconds since qemu started (firmware and GRUB included): the kernel's start
 * is the serial time of the `boot` result minus the guest's uptime then; systemd's monotonic clock is the kernel's.
 */
export function multiUserSeconds(b: Boot): number {
  const bootAt = b.at.get('boot');
  const uptime = Number(b.kind.get('boot')?.['uptime']);
  const mu = Number(b.kind.get('healthcheck')?.['multiUserUs']);
  if (bootAt === undefined || !Number.isFinite(uptime) || !Number.isFinite(mu) || mu <= 0) return Number.NaN;
  return bootAt / 1000 - uptime + mu / 1e6;
}

/** The `status` object of a boot's status document ({} when there is none). */
export function statusOf(b: Boot): Json {
  return obj(b.status?.['status']);
}
