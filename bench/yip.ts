/**
 * Benchmark line for the yip engine (issue 11): the `boot` stage over 50 cloud-config files in /system/oem (each with
 * a files + directories + environment step, a templated file, an `if:` and a command, 200 steps in all) on a temp
 * root holding busybox, run by the agent's engine in a child process. Beside it, in the same run, the baseline: the
 * same commands (the `if:` scripts and the commands) through the same console with nothing around them. The agent's
 * own overhead is the stage's wall time minus the time inside its commands (target under 100 ms); peak RSS is the
 * child's, beside a child that only runs the commands.
 *
 * Two lines, each against the target: the stage in a fresh boot with nothing decoded yet (every file's YAML decoded),
 * and the stage as a host runs it, after the fs stage of the same boot decoded the same files (the decoded files kept
 * in <root>/run/cos-agent/yip-decoded, src/yip/decode-store.ts).
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { DECODE_STORE_DIR } from '../src/yip/decode-store.ts';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const TARGET_OVERHEAD_MS = 100;
const FILES = 50;
const RUNS = 3;

interface ChildResult { mode: string; wallMs: number; commandMs: number; commands: number; steps: number; errors: number; maxRssKb: number }

function child(root: string, mode: 'stage' | 'baseline'): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(import.meta.dirname, 'yip-stage.ts'), root, mode], { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`yip bench child (${mode}) failed: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as ChildResult);
    });
  });
}

/** The temp root: busybox as /bin/sh and its tools, base passwd/group, 50 cloud-config files. */
export async function makeRoot(): Promise<{ root: string; commands: string[] }> {
  const root = await mkdtemp(path.join(tmpdir(), 'bench-yip-'));
  await mkdir(path.join(root, 'bin'), { recursive: true });
  await copyFile('/bin/busybox', path.join(root, 'bin/busybox'));
  for (const tool of ['sh', 'true', 'test', '[', 'echo', 'cat']) await symlink('busybox', path.join(root, 'bin', tool));
  await mkdir(path.join(root, 'etc'), { recursive: true });
  await writeFile(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  await writeFile(path.join(root, 'etc/group'), 'root:x:0:\n');
  await mkdir(path.join(root, 'system/oem'), { recursive: true });
  const commands: string[] = [];
  for (let i = 0; i < FILES; i++) {
    const n = String(i).padStart(2, '0');
    const cond = `test -d /etc`;
    const cmd = `echo ${n} > /tmp/cmd-${n}`;
    commands.push(cond, cmd);
    await writeFile(path.join(root, `system/oem/${n}_bench.yaml`), `name: "bench ${n}"
stages:
  boot.before:
    - name: "files ${n}"
      files:
        - path: /etc/bench/${n}/a.conf
          content: "a ${n}\\n"
          permissions: 0644
        - path: /etc/bench/${n}/b.conf
          content: "b ${n}\\n"
          permissions: 0600
      directories:
        - path: /var/lib/bench/${n}
          permissions: 0755
  boot:
    - name: "environment ${n}"
      environment:
        BENCH_${n}: "${n}"
    - name: "template ${n}"
      files:
        - path: /etc/bench/${n}/os
          content: "{{.Values.os.vendor}} ${n}"
    - name: "command ${n}"
      if: "${cond}"
      commands:
        - "${cmd}"
`);
  }
  await mkdir(path.join(root, 'tmp'), { recursive: true });
  await writeFile(path.join(root, 'commands.json'), JSON.stringify(commands));
  return { root, commands };
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

export async function benchYip(out: (line?: string) => void): Promise<void> {
  const { root, commands } = await makeRoot();
  try {
    const cold: ChildResult[] = [];
    const stage: ChildResult[] = [];
    const base: ChildResult[] = [];
    for (let i = 0; i < RUNS; i++) {
      await rm(path.join(root, DECODE_STORE_DIR), { recursive: true, force: true });
      cold.push(await child(root, 'stage'));
      stage.push(await child(root, 'stage'));
      base.push(await child(root, 'baseline'));
    }
    const bad = [...cold, ...stage].find((r) => r.errors > 0 || r.commands !== commands.length || r.steps !== FILES * 4);
    if (bad !== undefined) throw new Error(`the yip bench stage did not run as built: ${JSON.stringify(bad)} (want ${commands.length} commands, ${FILES * 4} steps, 0 errors)`);
    const overhead = median(stage.map((r) => r.wallMs - r.commandMs));
    const coldOverhead = median(cold.map((r) => r.wallMs - r.commandMs));
    const wall = median(stage.map((r) => r.wallMs));
    const baseWall = median(base.map((r) => r.wallMs));
    const rss = median(stage.map((r) => r.maxRssKb)) / 1024;
    const baseRss = median(base.map((r) => r.maxRssKb)) / 1024;
    const verdict = (ms: number): string => `${ms.toFixed(0).padStart(5)} ms  target < ${TARGET_OVERHEAD_MS} ms  ${ms < TARGET_OVERHEAD_MS ? 'PASS' : 'MISS'}`;
    out();
    out(`yip: the boot stage over ${FILES} files (${FILES * 4} steps, ${commands.length} commands: ${FILES} if: + ${FILES} commands, chrooted), median of ${RUNS}:`);
    out(`  stage ${wall.toFixed(0)} ms, of which in commands ${median(stage.map((r) => r.commandMs)).toFixed(0)} ms; the same commands alone (baseline) ${baseWall.toFixed(0)} ms: ${(wall / baseWall).toFixed(2)}x`);
    out(`  ${'agent overhead, after the fs stage'.padEnd(44)} ${verdict(overhead)}`);
    out(`  ${'agent overhead, first stage of a boot'.padEnd(44)} ${verdict(coldOverhead)}`);
    out(`  peak RSS ${rss.toFixed(1)} MiB (a child running only the commands: ${baseRss.toFixed(1)} MiB; +${(rss - baseRss).toFixed(1)} MiB for the engine and the files)`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
