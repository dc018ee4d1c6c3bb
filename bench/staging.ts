/**
 * The three contestants of the staging benchmark, each a self-contained timed run that sets up its own fresh disk
 * first and tears it down afterwards (neither part timed):
 *
 * - agent:    upgrade() in-process against a fresh disposable cOS host (test/helpers/cos-host.ts): resolve, preallocate
 *             and format the transition image, stream the layer into it, e2fsck, switch, GRUB, state.yaml.
 * - pipeline: what a user would script: `skopeo copy` registry -> OCI dir, `umoci raw unpack`, `mkfs.ext2 -d` into an
 *             image file of the slot size, fsync; all on a fresh ext4 loop disk of the same kind as COS_STATE.
 * - floor:    `gzip -dc` of the layer to /dev/null, then `dd` of the rootfs size once with conv=fsync onto a fresh
 *             ext4 loop disk of the same size and kind as the host's COS_STATE, one after the other (as
 *             spec/perf-notes.md measured it). The same run also times Node's zlib inflating the layer, for a
 *             stricter floor (zlib + dd).
 *
 * Peak extra disk: a sampler polls statfs ((blocks - bfree) * bsize) of every filesystem the run can write to every
 * 50 ms (and, for the agent, after every command it runs, so the instant after `fallocate` is never missed) and keeps
 * the maximum of (sum used - sum used at start). During each timed run os.tmpdir() (TMPDIR) points
 * at a private tmpfs, so temp use is measured exactly, without noise from other processes on the machine and
 * without counting the growth of the sparse file that backs the host's own disk (that growth is COS_STATE's).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, open, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { SpawnRunner, type Command, type CommandResult, type Runner } from '../src/sys/runner.ts';
import { SysRoot } from '../src/sys/root.ts';
import { silentLogger } from '../src/sys/log.ts';
import { NoHooks } from '../src/host/hooks.ts';
import type { AgentDeps, Progress } from '../src/host/deps.ts';
import { upgrade } from '../src/actions/upgrade/upgrade.ts';
import { attachLoop, mount, type Mount } from '../src/partitions/index.ts';
import { createCosHost } from '../test/helpers/cos-host.ts';

const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------------------------
// Small process helpers (the benchmark may spawn directly: it is not agent code)

/** Environment for every tool and the agent: no proxies (the registry is on 127.0.0.1), private HOME and TMPDIR. */
export function cleanEnv(home: string, tmp: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(https?|all|no)_proxy$/i.test(k)) continue;
    env[k] = v;
  }
  env.HOME = home;
  env.TMPDIR = tmp;
  return env;
}

/** Children of run() still running (killed when the benchmark is interrupted). */
export const liveChildren: Set<ChildProcess> = new Set();

/** Run argv to completion; rejects naming the command and its stderr tail. stdout goes to `stdoutFd` when given. */
export function run(argv: readonly string[], opts: { env?: NodeJS.ProcessEnv; stdoutFd?: number } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const [file, ...args] = argv;
    if (file === undefined) {
      reject(new Error('empty argv'));
      return;
    }
    const child = spawn(file, args, { stdio: ['ignore', opts.stdoutFd ?? 'ignore', 'pipe'], env: opts.env ?? process.env });
    liveChildren.add(child);
    child.on('close', () => liveChildren.delete(child));
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => { stderr = (stderr + b.toString('utf8')).slice(-4000); });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${argv.join(' ')} failed (exit ${code ?? signal}): ${stderr.trim()}`));
    });
  });
}

export async function fsyncFile(file: string): Promise<void> {
  const fh = await open(file, fs.constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** CPU seconds of this process (incl. its threads: zlib runs on the libuv pool) and of its reaped children. */
export function cpuSeconds(): { self: number; children: number } {
  const u = process.cpuUsage();
  // /proc/self/stat fields 16 and 17 (cutime, cstime) in clock ticks; the comm field may hold spaces: split after ')'.
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[13]) + Number(fields[14]);
  return { self: (u.user + u.system) / 1e6, children: ticks / 100 };
}

/**
 * Everything set up and not yet torn down (hosts, scratch disks, tmpfs), so an interrupted benchmark (SIGINT) can
 * tear it all down: `track` registers a closer and returns it wrapped to unregister itself once run.
 */
export const liveResources: Set<() => Promise<void>> = new Set();

export function track(close: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  const wrapped = (): Promise<void> => {
    done ??= close().finally(() => liveResources.delete(wrapped));
    return done;
  };
  liveResources.add(wrapped);
  return wrapped;
}

// ---------------------------------------------------------------------------------------------------------------
// Disk usage sampling

export interface DiskPeak {
  /** max over time of (sum of used bytes - sum at start). */
  peakBytes: number;
  /** Each filesystem's share at that moment. */
  atPeak: Record<string, number>;
  samples: number;
}

/** Polls statfs of the given filesystems (deduplicated by device) every `intervalMs`, and whenever sample() is called. */
export class DiskSampler {
  readonly #fs: Array<{ label: string; path: string; base: number }> = [];
  #timer: NodeJS.Timeout | undefined;
  #peak = 0;
  #atPeak: Record<string, number> = {};
  #samples = 0;

  constructor(targets: ReadonlyArray<{ label: string; path: string }>) {
    const devs = new Set<number>();
    for (const t of targets) {
      const dev = fs.statSync(t.path).dev;
      if (devs.has(dev)) continue;
      devs.add(dev);
      this.#fs.push({ ...t, base: 0 });
    }
  }

  static used(p: string): number {
    const s = fs.statfsSync(p, { bigint: true });
    return Number((s.blocks - s.bfree) * s.bsize);
  }

  start(intervalMs = 50): void {
    for (const f of this.#fs) f.base = DiskSampler.used(f.path);
    this.sample();
    this.#timer = setInterval(() => {
      try {
        this.sample();
      } catch {
        // A filesystem went away under us (teardown after an interrupt): stop sampling.
        clearInterval(this.#timer);
      }
    }, intervalMs);
  }

  /** Take a sample now; returns the current extra bytes (sum over the filesystems). */
  sample(): number {
    let sum = 0;
    const parts: Record<string, number> = {};
    for (const f of this.#fs) {
      const d = DiskSampler.used(f.path) - f.base;
      parts[f.label] = d;
      sum += d;
    }
    this.#samples++;
    if (sum > this.#peak || this.#samples === 1) {
      this.#peak = Math.max(sum, 0);
      this.#atPeak = parts;
    }
    return sum;
  }

  stop(): DiskPeak {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.sample();
    return { peakBytes: this.#peak, atPeak: this.#atPeak, samples: this.#samples };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Fresh disks

/** A private tmpfs (for TMPDIR during the timed runs). */
export async function privateTmpfs(parent: string): Promise<{ dir: string; close(): Promise<void> }> {
  const dir = await mkdtemp(path.join(parent, 'bench-tmpfs-'));
  const m = await mount(new SpawnRunner(), 'tmpfs', dir, { fstype: 'tmpfs', options: ['size=4g', 'mode=1777'] });
  const close = track(async () => {
    await m.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, close };
}

export interface ScratchDisk {
  /** Mount point of the fresh ext4. */
  dir: string;
  close(): Promise<void>;
}

/**
 * A fresh ext4 of `sizeMiB` on a loop device over a sparse file in os.tmpdir(): the same kind of filesystem and
 * backing as the cOS host's COS_STATE (mkfs.ext4 -q -F -L, default options).
 */
export async function scratchDisk(sizeMiB: number, label: string): Promise<ScratchDisk> {
  const runner = new SpawnRunner();
  const work = await mkdtemp(path.join(os.tmpdir(), 'bench-scratch-'));
  const closers: Array<() => Promise<void>> = [() => rm(work, { recursive: true, force: true })];
  const close = track(async (): Promise<void> => {
    const errors: unknown[] = [];
    for (const c of closers.splice(0).reverse()) await c().catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw new AggregateError(errors, `tearing down the scratch disk in ${work}`);
  });
  try {
    const file = path.join(work, 'disk.img');
    await writeFile(file, '');
    await fs.promises.truncate(file, sizeMiB * MiB);
    const loop = await attachLoop(runner, file);
    closers.push(() => loop.close());
    await run(['mkfs.ext4', '-q', '-F', '-L', label, loop.device]);
    const dir = path.join(work, 'mnt');
    const m: Mount = await mount(runner, loop.device, dir, { mkdir: true });
    closers.push(() => m.close());
    return { dir, close };
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Shared context

export interface BenchContext {
  /** `host:port/bench/os:v1` */
  imageRef: string;
  /** Manifest digest the agent must end up with. */
  digest: string;
  /** The gzip layer blob (for the floor). */
  blobPath: string;
  /** Regular-file bytes of the rootfs. */
  rootfsBytes: number;
  /** DEFAULT_IMAGE_SIZE. */
  slotMiB: number;
  /** COS_STATE partition size of the agent's host (and the floor's disk). */
  stateMiB: number;
  /** Private tmpfs used as TMPDIR during timed runs; private HOME. */
  tmpfs: string;
  home: string;
}

/** `sync`, then point TMPDIR at the private tmpfs for the duration of fn. */
async function timedRegion<T>(ctx: BenchContext, fn: () => Promise<T>): Promise<T> {
  await run(['sync']);
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = ctx.tmpfs;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
    for (const name of await readdir(ctx.tmpfs)) await rm(path.join(ctx.tmpfs, name), { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Agent

export interface CommandTiming {
  key: string;
  start: number;
  end: number;
}

/** Runner decorator that records when each command ran (keyed "e2fsck", "mount -o remount", "losetup -d", ...). */
export class TimingRunner implements Runner {
  readonly calls: CommandTiming[] = [];
  readonly #inner: Runner;
  /** Called after each command (the disk sampler samples then too, so a short-lived peak is never missed). */
  afterEach: (() => void) | undefined;
  constructor(inner: Runner) {
    this.#inner = inner;
  }
  async run(cmd: Command): Promise<CommandResult> {
    const start = performance.now();
    try {
      return await this.#inner.run(cmd);
    } finally {
      this.calls.push({ key: commandKey(cmd.argv), start, end: performance.now() });
      this.afterEach?.();
    }
  }
}

function commandKey(argv: readonly string[]): string {
  const [cmd, first] = argv;
  if (cmd === 'mount') {
    const i = argv.indexOf('-o');
    const opt = i >= 0 ? (argv[i + 1] ?? '').split(',')[0] : undefined;
    return opt === undefined || opt === '' ? 'mount' : `mount -o ${opt}`;
  }
  if (cmd === 'losetup') return `losetup ${first ?? ''}`;
  return cmd ?? '?';
}

export interface Phase {
  name: string;
  seconds: number;
  /** Seconds spent in commands started during this phase, by command. */
  commands: Record<string, number>;
}

export interface AgentRun {
  seconds: number;
  phases: Phase[];
  disk: DiskPeak;
  /** Extra disk when the transition image was ready, before the pull (a preallocated image shows its full size). */
  extraBeforePull: number;
  cpu: { self: number; children: number };
}

/** The phase boundaries, from the first progress event of each kind. */
const PHASES: ReadonlyArray<{ name: string; until: (p: Progress) => boolean }> = [
  { name: 'resolve + preallocate + mkfs + mount', until: (p) => p.operation === 'staging' },
  { name: 'before-upgrade hook', until: (p) => p.operation === 'downloading' },
  { name: 'pull + apply layer', until: (p) => p.operation === 'hooks' && p.message === 'after-upgrade-chroot' },
  { name: 'chroot binds + hooks', until: (p) => p.operation === 'finalizing' && p.message === 'checking the new image' },
  { name: 'seal: fsync, umount, e2fsck, fsync', until: (p) => p.operation === 'finalizing' && p.message === 'switching slots' },
];
const LAST_PHASE = 'switch + GRUB + state.yaml + cleanup';

export async function runAgent(ctx: BenchContext): Promise<AgentRun> {
  const host = await createCosHost({
    imageMiB: 32,
    stateMiB: ctx.stateMiB,
    persistentMiB: 64,
    files: { '/etc/cos/config': `DEFAULT_IMAGE_SIZE=${ctx.slotMiB}\n` },
  });
  const closeHost = track(() => host.close());
  try {
    const runner = new TimingRunner(new SpawnRunner());
    const deps: AgentDeps = {
      root: new SysRoot(host.root),
      runner,
      log: silentLogger,
      hooks: new NoHooks(),
      env: cleanEnv(ctx.home, ctx.tmpfs),
      now: () => new Date(),
      testDisk: host.loop,
    };
    const marks: number[] = [];
    let next = 0;
    let extraBeforePull = NaN;
    const onProgress = (p: Progress): void => {
      while (next < PHASES.length && (PHASES[next] as (typeof PHASES)[number]).until(p)) {
        marks.push(performance.now());
        if (next === 0) extraBeforePull = sampler.sample();
        next++;
      }
    };
    const sampler = new DiskSampler([
      { label: 'COS_STATE', path: host.statePath('') },
      { label: 'COS_PERSISTENT', path: path.join(host.root, 'usr/local') },
      { label: 'COS_OEM', path: path.join(host.root, 'oem') },
      { label: 'tmp', path: ctx.tmpfs },
    ]);
    return await timedRegion(ctx, async () => {
      sampler.start();
      runner.afterEach = () => sampler.sample();
      const cpu0 = cpuSeconds();
      const t0 = performance.now();
      let outcome;
      let disk: DiskPeak;
      try {
        outcome = await upgrade(deps, { image: ctx.imageRef, noVerify: true, onProgress });
      } finally {
        runner.afterEach = undefined;
        disk = sampler.stop();
      }
      const t1 = performance.now();
      const cpu1 = cpuSeconds();
      if (outcome.digest !== ctx.digest) throw new Error(`the agent staged ${outcome.digest}, expected ${ctx.digest}`);
      if (outcome.imageSizeMiB !== ctx.slotMiB) throw new Error(`the agent made a ${outcome.imageSizeMiB} MiB slot image, not DEFAULT_IMAGE_SIZE=${ctx.slotMiB}`);
      const slot = await stat(host.statePath('cOS/active.img'));
      if (slot.size !== ctx.slotMiB * MiB) throw new Error(`active.img is ${slot.size} bytes, expected ${ctx.slotMiB} MiB`);
      const bounds = [t0, ...marks, t1];
      const names = [...PHASES.map((p) => p.name), LAST_PHASE];
      if (marks.length !== PHASES.length) throw new Error(`the agent reported ${marks.length} of ${PHASES.length} phase boundaries`);
      const phases: Phase[] = names.map((name, i) => {
        const from = bounds[i] as number;
        const to = bounds[i + 1] as number;
        const commands: Record<string, number> = {};
        for (const c of runner.calls) {
          if (c.start >= from && c.start < to) commands[c.key] = (commands[c.key] ?? 0) + (c.end - c.start) / 1000;
        }
        return { name, seconds: (to - from) / 1000, commands };
      });
      return {
        seconds: (t1 - t0) / 1000,
        phases,
        disk,
        extraBeforePull,
        cpu: { self: cpu1.self - cpu0.self, children: cpu1.children - cpu0.children },
      };
    });
  } finally {
    await closeHost();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Pipeline

export interface StepRun {
  seconds: number;
  steps: Record<string, number>;
  disk: DiskPeak;
  cpu: { self: number; children: number };
}

async function stepsRun(
  ctx: BenchContext,
  disk: ScratchDisk,
  steps: ReadonlyArray<[string, () => Promise<void>]>,
): Promise<StepRun> {
  const sampler = new DiskSampler([
    { label: 'scratch', path: disk.dir },
    { label: 'tmp', path: ctx.tmpfs },
  ]);
  return timedRegion(ctx, async () => {
    const times: Record<string, number> = {};
    sampler.start();
    const cpu0 = cpuSeconds();
    const t0 = performance.now();
    let last = t0;
    let diskPeak: DiskPeak;
    try {
      for (const [name, step] of steps) {
        await step();
        const now = performance.now();
        times[name] = (now - last) / 1000;
        last = now;
      }
    } finally {
      diskPeak = sampler.stop();
    }
    const cpu1 = cpuSeconds();
    return { seconds: (last - t0) / 1000, steps: times, disk: diskPeak, cpu: { self: cpu1.self - cpu0.self, children: cpu1.children - cpu0.children } };
  });
}

export async function runPipeline(ctx: BenchContext): Promise<StepRun> {
  // Room for the OCI dir, the unpacked tree and the image side by side.
  const disk = await scratchDisk(Math.ceil(3 * ctx.slotMiB + 256), 'BENCH_PIPELINE');
  try {
    const env = cleanEnv(ctx.home, ctx.tmpfs);
    const oci = path.join(disk.dir, 'oci');
    const tree = path.join(disk.dir, 'rootfs');
    const image = path.join(disk.dir, 'active.img');
    const result = await stepsRun(ctx, disk, [
      ['skopeo copy', () => run(['skopeo', 'copy', '--quiet', '--src-tls-verify=false', `docker://${ctx.imageRef}`, `oci:${oci}:v1`], { env })],
      ['umoci raw unpack', () => run(['umoci', 'raw', 'unpack', '--image', `${oci}:v1`, tree], { env })],
      ['mkfs.ext2 -d', () => run(['mkfs.ext2', '-F', '-q', '-L', 'COS_ACTIVE', '-d', tree, image, `${ctx.slotMiB}M`], { env })],
      ['fsync', () => fsyncFile(image)],
    ]);
    const st = await stat(image);
    if (st.size !== ctx.slotMiB * MiB) throw new Error(`the pipeline's image is ${st.size} bytes, expected ${ctx.slotMiB} MiB`);
    return result;
  } finally {
    await disk.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Floor

export const FLOOR_GZIP = 'gzip -dc > /dev/null';
export const FLOOR_ZLIB = 'zlib gunzip > /dev/null';
export const FLOOR_WRITE = 'dd rootfs size + fsync';

/**
 * Both decompressions are timed, one after the other: floor = gzip -dc + dd (how spec/perf-notes.md measured the floor
 * the targets come from), strict floor = Node zlib + dd (the agent's own inflater, much faster than GNU gzip's).
 */
export async function runFloor(ctx: BenchContext): Promise<StepRun> {
  const disk = await scratchDisk(ctx.stateMiB, 'BENCH_FLOOR');
  const devNull = fs.openSync('/dev/null', 'w');
  try {
    const out = path.join(disk.dir, 'floor.img');
    const result = await stepsRun(ctx, disk, [
      [FLOOR_GZIP, () => run(['gzip', '-dc', ctx.blobPath], { stdoutFd: devNull })],
      [FLOOR_ZLIB, () => gunzipToNull(ctx.blobPath, ctx.rootfsBytes)],
      [FLOOR_WRITE, () => run(['dd', 'if=/dev/zero', `of=${out}`, 'bs=4M', `count=${ctx.rootfsBytes}`, 'iflag=count_bytes', 'conv=fsync', 'status=none'])],
    ]);
    const st = await stat(out);
    if (st.size !== ctx.rootfsBytes) throw new Error(`the floor wrote ${st.size} bytes, expected ${ctx.rootfsBytes}`);
    return result;
  } finally {
    fs.closeSync(devNull);
    await disk.close();
  }
}

/**
 * Decompress a gzip file and discard the output, with Node's zlib (the library the agent uses: Chromium's zlib, about
 * 2.5x faster at inflate than GNU `gzip -dc`, so this is the lower of the two floors).
 */
async function gunzipToNull(file: string, atLeast: number): Promise<void> {
  let n = 0;
  await pipeline(
    fs.createReadStream(file, { highWaterMark: MiB }),
    zlib.createGunzip({ chunkSize: 256 * 1024 }),
    new Writable({
      write(chunk: Buffer, _enc, cb): void {
        n += chunk.length;
        cb();
      },
    }),
  );
  if (n < atLeast) throw new Error(`${file} decompressed to ${n} bytes, less than the rootfs`);
}
