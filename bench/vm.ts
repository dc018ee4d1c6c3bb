/**
 * `npm run bench`, VM part: what the agent costs inside the OS it upgrades, measured by real boots (QEMU, TCG).
 *
 * - The package: `dist/cos-agent-<version>-linux-amd64.tar.gz` (built when stale, like the VM tests do), its size,
 *   its unpacked size and the share of the Node runtime.
 * - The guest: `ava vm-tests/agent.test.ts vm-tests/upgrade.test.ts` run as a child with a fresh log directory; their
 *   summary files give cosd's start time under systemd (ExecMainStart → bus name taken) against a bare start of the
 *   package's Node runtime in the same guest (the baseline of the same run), cosd's idle RSS, and the time from
 *   `cosctl upgrade` in the guest to the new active's multi-user.target, split into resolve+verify, download
 *   (streamed download and unpack), staging and reboot.
 *
 * BENCH_VM=0 skips the boots (the package is still measured).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { agentPackage, REPO } from '../vm-tests/lib/agent.ts';

const MiB = 1024 * 1024;
const f1 = (x: unknown): string => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(1) : '?');

async function tarListing(tarball: string): Promise<Array<{ size: number; name: string }>> {
  const text = await new Promise<string>((resolve, reject) => {
    const c = spawn('tar', ['--list', '--verbose', '--gzip', '--file', tarball], { stdio: ['ignore', 'pipe', 'inherit'] });
    let s = '';
    c.stdout.on('data', (d: Buffer) => { s += d.toString(); });
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(s) : reject(new Error(`tar --list ${tarball}: exit ${code}`))));
  });
  // -rwxr-xr-x root/root 113785240 2024-01-01 00:00 usr/lib/cos-agent/node
  return text.split('\n').filter(Boolean).map((l) => {
    const w = l.trim().split(/\s+/);
    return { size: Number(w[2]), name: w.slice(5).join(' ') };
  });
}

export async function benchPackage(out: (line?: string) => void): Promise<void> {
  const pkg = await agentPackage((l) => out(`  ${l}`));
  const bytes = (await stat(pkg.path)).size;
  const entries = await tarListing(pkg.path);
  const unpacked = entries.reduce((n, e) => n + e.size, 0);
  const node = entries.find((e) => e.name === 'usr/lib/cos-agent/node')?.size ?? 0;
  out('package (what a derivative image installs):');
  out(`  ${path.relative(REPO, pkg.path)}  ${(bytes / MiB).toFixed(1)} MiB compressed, ${(unpacked / MiB).toFixed(1)} MiB unpacked, ${entries.length} entries`);
  out(`  of which the Node runtime ${(node / MiB).toFixed(1)} MiB (${((100 * node) / unpacked).toFixed(0)}%), the agent (bundles, units, policy, docs) ${((unpacked - node) / MiB).toFixed(1)} MiB`);
  out();
}

type Json = Record<string, unknown>;

export async function benchVm(out: (line?: string) => void): Promise<void> {
  if (process.env['BENCH_VM'] === '0') {
    out('guest measurements: skipped (BENCH_VM=0)');
    return;
  }
  const logs = await mkdtemp(path.join(os.tmpdir(), 'cos-bench-vm-'));
  let keep = process.env['BENCH_KEEP_LOGS'] === '1';
  try {
    out('guest measurements: booting the agent scenarios (ava vm-tests/agent.test.ts vm-tests/upgrade.test.ts; a few minutes under TCG)...');
    const t0 = Date.now();
    const code = await new Promise<number>((resolve, reject) => {
      const c = spawn(path.join(REPO, 'node_modules/.bin/ava'), ['vm-tests/agent.test.ts', 'vm-tests/upgrade.test.ts'], {
        cwd: REPO,
        env: { ...process.env, COS_AGENT_VM_LOGS: logs },
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      c.on('error', reject);
      c.on('close', (rc) => resolve(rc ?? 1));
    });
    if (code !== 0) throw new Error(`the VM scenarios failed (ava exit ${code}); their serial logs are under ${logs}`);
    const first = JSON.parse(await readFile(path.join(logs, 'agent-first-boot-summary.json'), 'utf8')) as Json;
    const up = JSON.parse(await readFile(path.join(logs, 'upgrade-summary.json'), 'utf8')) as Json;
    const split = up['split'] as Json;
    const startMs = Number(first['cosdStartMs']);
    const nodeMs = Number(first['nodeBareStartMs']);
    const rssKb = (first['cosdIdleRssKb'] as number[] | undefined) ?? [];
    out();
    out(`guest (QEMU TCG, 1 vCPU, 1 GiB; host load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; ${((Date.now() - t0) / 1000).toFixed(0)} s of boots):`);
    out(`  cosd start under systemd (ExecMainStart -> bus name)  ${(startMs / 1000).toFixed(1)} s = ${(startMs / nodeMs).toFixed(1)}x a bare start of the package's node in the same guest (${(nodeMs / 1000).toFixed(2)} s)`);
    out(`  cosd idle RSS                                         ${(Math.max(...rssKb) / 1024).toFixed(1)} MiB (VmRSS ${rssKb.join(', ')} kB, VmHWM ${String(first['cosdVmHwmKb'])} kB)`);
    out(`  cosctl upgrade -> new active's multi-user.target      ${f1(split['total'])} s`);
    out(`    resolve + verify                                    ${f1(split['resolveVerify'])} s`);
    out(`    download (streamed with the unpack)                 ${f1(split['download'])} s`);
    out(`    staging (seal, switch, GRUB, records)               ${f1(split['staging'])} s`);
    out(`    reboot (shutdown, firmware, GRUB, kernel, systemd)  ${f1(split['reboot'])} s (shutdown ${f1(split['shutdown'])} s, qemu start to multi-user ${f1(split['bootToMultiUser'])} s)`);
    out(`  (BENCH_KEEP_LOGS=1 keeps the serial logs and summaries: ${logs})`);
    out();
  } catch (e) {
    keep = true;
    out(`guest measurements: FAILED: ${e instanceof Error ? e.message : String(e)}`);
    throw e;
  } finally {
    if (!keep) await rm(logs, { recursive: true, force: true }).catch(() => undefined);
  }
}
