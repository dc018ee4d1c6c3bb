/**
 * The bootchooser (RAUC's name for it): the one place that reads the on-disk facts of what runs and what boots next,
 * derives the host model from them (boot-model.ts, pure), and writes the GRUB variables that choose, arm, mark and
 * fall back. status, upgrade, rollback, mark and the daemon all go through readHost / applyGrubWrites.
 *
 * Facts: /proc/cmdline, the running image's identity (recorded once per boot in /run/cos-agent/booted.json, before
 * the agent changes anything), each slot image's identity and label (read from its superblock), the state.yaml
 * records, and the GRUB env blocks: COS_STATE grub_oem_env and boot_assessment, COS_OEM grubenv (/oem/grubenv).
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../model/errors.ts';
import type { AgentConfig } from '../model/config.ts';
import type { SlotName } from '../model/host.ts';
import type { InstallState } from '../model/state.ts';
import { applyGrubEnvChanges, parseGrubEnvBlock, readGrubEnvFile, serializeGrubEnv, updateGrubEnvFile } from '../grub/index.ts';
import { findMountAt, readImageIdentity, readMounts, syncFs } from '../partitions/index.ts';
import { readOptionalText, writeFileAtomic } from '../sys/files.ts';
import { CleanupStack } from '../sys/cleanup.ts';
import { findPartition, hostMountOf, mountRo, mountRw, withDiscovery } from './access.ts';
import { parseCmdline, type BootInfo } from './cmdline.ts';
import type { AgentDeps } from './deps.ts';
import { deriveBootState, type BootState, type GrubWrites, type HostFacts, type SlotFacts } from './boot-model.ts';
import { readStateFile } from './state-file.ts';
import { MOUNT_POINTS } from './mount-points.ts';
import { bootAssessmentScript, grubcustomWithHook, scriptKind } from './boot-assessment.ts';

export const SLOT_FILES: Record<SlotName, readonly string[]> = {
  active: ['cOS/active.img'],
  passive: ['cOS/passive.img'],
  recovery: ['cOS/recovery.squashfs', 'cOS/recovery.img'],
};

export interface SlotFile {
  /** The file found (relative to its partition), or the canonical name when absent. */
  file: string;
  present: boolean;
  size: number | null;
  fs: 'ext2' | 'squashfs' | null;
}

export interface HostView {
  boot: BootInfo;
  facts: HostFacts;
  state: BootState;
  /** Where the partitions are visible now (undefined: not found or not mountable). */
  dirs: { state?: string; recovery?: string; oem?: string };
  /**
   * What a user other than root could not read (a partition the disks' probe or a mount would need root for, a slot
   * file it may not open), each naming the part and why; empty for root. Facts derived without them are incomplete.
   */
  unreadable: Unreadable[];
  /** The state.yaml of COS_STATE and of COS_RECOVERY. */
  records: { state: InstallState; recovery: InstallState };
  files: Record<SlotName, SlotFile>;
}

/** A part of the host a user other than root could not read: which (a partition's role, or a slot's file), and why. */
export interface Unreadable {
  of: 'state' | 'recovery' | 'oem' | SlotName;
  /** The partition's label, or the slot file (cOS/active.img). */
  name: string;
  why: string;
}

export interface ReadHostOptions {
  /** Mount COS_STATE and COS_OEM read-write (undone by the cleanup stack): the caller will write GRUB variables. */
  writable?: boolean;
  /** Directories the caller already has (e.g. COS_STATE mounted rw for an upgrade). */
  dirs?: { state?: string; recovery?: string; oem?: string };
}

const isDir = (p: string): Promise<boolean> => stat(p).then((s) => s.isDirectory(), () => false);

const BOOT_RECORD = '/run/cos-agent/booted.json';
/** Where cOS's initrd mounts COS_STATE (read-only) on a running host. */
const HOST_STATE_MOUNT = '/run/initramfs/cos-state';
/** On COS_PERSISTENT (mounted at /usr/local when booted from active or passive): identities seen running, newest last. */
const BOOTED_IMAGES = '/usr/local/.cos-agent/booted-images';
const BOOTED_IMAGES_KEPT = 16;

interface BootRecord {
  cmdline: string;
  bootId: string | null;
  slot: string;
  /** The running image's identity. */
  id: string | null;
  /** What active.img held when this boot was first looked at (with upgrade_failure: the image that failed). */
  activeId: string | null;
}

/** Read every fact and derive the model. Partitions the host has not mounted are mounted for the caller's cleanup. */
export async function readHost(scopeDeps: AgentDeps, config: AgentConfig, cleanup: CleanupStack, opts: ReadHostOptions = {}): Promise<HostView> {
  // Every label this read looks up (COS_STATE, COS_RECOVERY, COS_OEM) comes from one probe pass of the devices.
  const deps = withDiscovery(scopeDeps);
  const cmdlineText = (await readOptionalText(deps.root.path('/proc/cmdline'))) ?? '';
  const boot = parseCmdline(cmdlineText, config.labels);
  const upgradeFailure = boot.upgradeFailure || (await readOptionalText(deps.root.path('/run/cos/upgrade_failure'))) !== undefined;
  const writable = opts.writable === true;

  // As a user (cosctl status without cosd), the disks cannot be probed nor partitions mounted: the host's own mounts
  // where cOS puts them are read instead, and what stays out of reach is said, never taken for absent.
  const uid = process.geteuid?.() ?? 0;
  const asUser = uid !== 0;
  const unreadable: Unreadable[] = [];
  const userMount = async (at: string | undefined): Promise<string | undefined> => {
    if (!asUser || at === undefined) return undefined;
    const dir = deps.root.path(at);
    return findMountAt(dir, await readMounts().catch(() => []))?.mountPoint === dir ? dir : undefined;
  };
  const partDir = async (of: 'state' | 'recovery', label: string, fallback: string, rw: boolean, hostAt?: string): Promise<string | undefined> => {
    const dev = await findPartition(deps, label).catch((e: unknown) => {
      if (e instanceof AgentError && e.code === 'DEVICE_NOT_FOUND') return undefined;
      throw e;
    });
    if (dev === undefined) {
      const seen = await userMount(hostAt);
      if (seen === undefined && asUser) unreadable.push({ of, name: label, why: `not found, and as uid ${uid} the disks cannot be probed (root can)` });
      return seen;
    }
    try {
      return rw ? await mountRw(deps, dev.device, fallback, cleanup, { restoreRo: true }) : await mountRo(deps, dev.device, cleanup);
    } catch (e) {
      if (!asUser) throw e;
      unreadable.push({ of, name: label, why: `not mounted by the host, and as uid ${uid} it cannot be mounted (root can)` });
      return undefined;
    }
  };
  const dirs = { ...opts.dirs };
  dirs.state ??= await partDir('state', config.labels.state, MOUNT_POINTS.state, writable, HOST_STATE_MOUNT);
  dirs.recovery ??= await partDir('recovery', config.labels.recovery, MOUNT_POINTS.recovery, false).catch(() => undefined);
  if (dirs.oem === undefined) {
    const dev = await findPartition(deps, config.labels.oem).catch(() => undefined);
    if (dev === undefined) dirs.oem = await userMount('/oem');
    if (dev !== undefined) {
      const host = await hostMountOf(deps, dev.device);
      if (host !== undefined && (!writable || !host.readOnly)) dirs.oem = host.dir;
      else dirs.oem = writable ? await mountRw(deps, dev.device, MOUNT_POINTS.oem, cleanup) : await mountRo(deps, dev.device, cleanup);
    }
  }

  const readRecords = async (dir: string | undefined): Promise<InstallState> =>
    dir === undefined ? { partitions: {} } : (await readStateFile(path.join(dir, 'state.yaml'), { moveAside: false })).state;
  const records = { state: await readRecords(dirs.state), recovery: await readRecords(dirs.recovery) };

  const files = {} as Record<SlotName, SlotFile>;
  const slots = {} as Record<SlotName, SlotFacts>;
  for (const slot of ['active', 'passive', 'recovery'] as const) {
    const dir = slot === 'recovery' ? dirs.recovery : dirs.state;
    const candidates = SLOT_FILES[slot];
    let found: SlotFile = { file: candidates[candidates.length - 1] as string, present: false, size: null, fs: null };
    let id: string | null = null;
    let label: string | null = null;
    if (dir !== undefined) {
      for (const f of candidates) {
        const st = await stat(path.join(dir, f)).catch((e: NodeJS.ErrnoException) => {
          if (asUser && (e.code === 'EACCES' || e.code === 'EPERM')) unreadable.push({ of: slot, name: f, why: `as uid ${uid}: ${e.code}` });
          return undefined;
        });
        if (!st?.isFile()) continue;
        const ident = await readImageIdentity(path.join(dir, f)).catch((e: NodeJS.ErrnoException) => {
          if (asUser && (e.code === 'EACCES' || e.code === 'EPERM')) unreadable.push({ of: slot, name: f, why: `its filesystem cannot be read as uid ${uid}: ${e.code}` });
          return undefined;
        });
        found = { file: f, present: true, size: st.size, fs: ident?.fs ?? null };
        id = ident?.id ?? null;
        label = ident?.label ?? null;
        break;
      }
    }
    files[slot] = found;
    const record = slot === 'recovery'
      ? (records.recovery.partitions['recovery']?.images['recovery'] ?? records.state.partitions['recovery']?.images['recovery'] ?? null)
      : (records.state.partitions['state']?.images[slot] ?? null);
    slots[slot] = { present: found.present, id, label, record };
  }

  const env = async (dir: string | undefined, name: string): Promise<Map<string, string>> =>
    dir === undefined ? new Map() : readGrubEnvFile(path.join(dir, name), { missingOk: true });
  const grub = {
    oem: await env(dirs.state, 'grub_oem_env'),
    assessment: await env(dirs.state, 'boot_assessment'),
    user: await env(dirs.oem, 'grubenv'),
  };

  const assessmentScript = dirs.state === undefined ? 'none' : scriptKind(await readOptionalText(path.join(dirs.state, 'grub_boot_assessment')));
  const booted = await bootRecord(deps, cmdlineText, boot, slots);
  const bootedIds = ((await readOptionalText(deps.root.path(BOOTED_IMAGES)).catch(() => undefined)) ?? '').split('\n').filter((l) => l !== '');
  const facts: HostFacts = {
    bootedIds,
    bootedFrom: boot.bootedFrom,
    upgradeFailure,
    runningId: booted.id,
    failedId: upgradeFailure ? booted.activeId : null,
    slots,
    grub,
    assessmentScript,
    labels: { active: config.labels.active, passive: config.labels.passive },
  };
  return { boot, facts, state: deriveBootState(facts), dirs, records, files, unreadable };
}

/** readHost in a scope of its own: the read-only mounts it made are undone before it returns (their errors logged). */
export async function readHostOnce(deps: AgentDeps, config: AgentConfig, opts: Omit<ReadHostOptions, 'writable'> = {}): Promise<HostView> {
  const scope = new CleanupStack();
  try {
    return await readHost(deps, config, scope, opts);
  } finally {
    for (const e of await scope.run(false)) deps.log.warn({ err: e.message }, 'cleanup after reading the host failed');
  }
}

/**
 * The running image's identity. Recorded once per boot (/run is a tmpfs; the record also carries the cmdline and
 * boot id so a stale one is never used): on a real host, the root filesystem's own UUID; under a --root prefix, the
 * identity of the slot file the kernel booted, read before this agent changed anything in this boot.
 */
async function bootRecord(deps: AgentDeps, cmdline: string, boot: BootInfo, slots: Record<SlotName, SlotFacts>): Promise<BootRecord> {
  const file = deps.root.path(BOOT_RECORD);
  const bootId = (await readOptionalText(deps.root.path('/proc/sys/kernel/random/boot_id')).catch(() => undefined))?.trim() ?? null;
  const text = await readOptionalText(file).catch(() => undefined);
  if (text !== undefined) {
    try {
      const r = JSON.parse(text) as BootRecord;
      if (r.cmdline === cmdline && r.bootId === bootId) return { ...r, activeId: r.activeId ?? null };
    } catch {
      // A torn or foreign record: derive it again below.
    }
  }
  let id: string | null = null;
  if (deps.root.prefix === '/') {
    const rootMount = findMountAt('/', await readMounts().catch(() => []));
    if (rootMount !== undefined && rootMount.source.startsWith('/dev/')) id = (await readImageIdentity(rootMount.source).catch(() => undefined))?.id ?? null;
  }
  if (id === null && (boot.bootedFrom === 'active' || boot.bootedFrom === 'passive' || boot.bootedFrom === 'recovery')) {
    id = slots[boot.bootedFrom].id;
  }
  const record: BootRecord = { cmdline, bootId, slot: boot.bootedFrom, id, activeId: slots.active.id };
  try {
    await mkdir(path.dirname(file), { recursive: true });
    await writeFileAtomic(file, `${JSON.stringify(record)}\n`);
    // The running image booted: remembered across boots, so a record still saying `staged` is not taken for "never
    // booted" once it has run (only where COS_PERSISTENT is mounted; recovery boots do not have it).
    if (id !== null && (await isDir(deps.root.path('/usr/local')))) {
      const list = ((await readOptionalText(deps.root.path(BOOTED_IMAGES)).catch(() => undefined)) ?? '').split('\n').filter((l) => l !== '' && l !== id);
      await mkdir(path.dirname(deps.root.path(BOOTED_IMAGES)), { recursive: true });
      await writeFileAtomic(deps.root.path(BOOTED_IMAGES), `${[...list, id].slice(-BOOTED_IMAGES_KEPT).join('\n')}\n`);
    }
  } catch (e) {
    // Not root (cosctl status as a user): the identity is still right for this read; the next root read records it.
    deps.log.debug({ err: (e as Error).message }, 'could not record the booted image identity');
  }
  return record;
}

/**
 * Write the bootchooser's GRUB variables (boot-model.ts grubVerbs) durably, in a fixed order: the user env (one-shot
 * and saved choices) first, then grub_oem_env, then boot_assessment. The caller has the partitions mounted rw. Every
 * file is attempted even when an earlier one fails (arming boot assessment must not depend on /oem being writable);
 * the first error is thrown at the end, naming every file that failed.
 */
export async function applyGrubWrites(view: Pick<HostView, 'dirs'>, writes: GrubWrites): Promise<void> {
  const targets: Array<[Record<string, string | null> | undefined, string | undefined, string, string]> = [
    [writes.user, view.dirs.oem, 'grubenv', 'COS_OEM'],
    [writes.oem, view.dirs.state, 'grub_oem_env', 'COS_STATE'],
    [writes.assessment, view.dirs.state, 'boot_assessment', 'COS_STATE'],
  ];
  const errors: AgentError[] = [];
  for (const [changes, dir, name, label] of targets) {
    if (changes === undefined || Object.keys(changes).length === 0) continue;
    try {
      if (dir === undefined) throw new AgentError('DEVICE_NOT_FOUND', `cannot write ${name}: no ${label} partition`);
      await updateGrubEnvFile(path.join(dir, name), changes, { create: true });
      await syncFs(dir);
    } catch (e) {
      errors.push(e instanceof AgentError ? e : new AgentError('STATE_INVALID', `${name}: ${e instanceof Error ? e.message : String(e)}`, { cause: e }));
    }
  }
  const first = errors[0];
  if (first === undefined) return;
  if (errors.length === 1) throw first;
  throw new AgentError(first.code, errors.map((e) => e.message).join('; '), { cause: first });
}

/**
 * Check, writing nothing, that applyGrubWrites would succeed as far as the values go: every block parses, and every
 * new value is one GRUB can hold and fits the block (GRUBENV_OVERFLOW, CONFIG_INVALID naming the variable). An
 * upgrade checks its writes before the switch, so a value that cannot be written never leaves records behind slots.
 */
export async function checkGrubWrites(view: Pick<HostView, 'dirs'>, writes: GrubWrites): Promise<void> {
  const targets: Array<[Record<string, string | null> | undefined, string | undefined, string]> = [
    [writes.user, view.dirs.oem, 'grubenv'],
    [writes.oem, view.dirs.state, 'grub_oem_env'],
    [writes.assessment, view.dirs.state, 'boot_assessment'],
  ];
  for (const [changes, dir, name] of targets) {
    if (changes === undefined || Object.keys(changes).length === 0 || dir === undefined) continue;
    const file = path.join(dir, name);
    const bytes = await readFile(file).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    const block = bytes === undefined ? undefined : parseGrubEnvBlock(bytes, file);
    try {
      const next = applyGrubEnvChanges(block?.vars ?? new Map(), changes);
      if (block !== undefined) serializeGrubEnv(next, block.size, block.preamble);
      else serializeGrubEnv(next);
    } catch (e) {
      if (e instanceof AgentError) throw new AgentError(e.code, `${file}: ${e.message}`, { cause: e });
      throw e;
    }
  }
}

/**
 * The GRUB side of boot assessment on disk, installed or brought up to date the way cOS's 08_boot_assessment does
 * (host/boot-assessment.ts): COS_STATE/grub_boot_assessment holds the agent's script (N tries), COS_STATE/grubcustom
 * sources it (an existing grubcustom is extended, never replaced), and the env blocks GRUB's save_env writes into
 * exist (GRUB cannot create a file): COS_STATE/boot_assessment and COS_OEM/grubenv (so cOS's grub.cfg never prints
 * "no such device: /grubenv"). `dirs`: the partitions mounted read-write. Returns the files it wrote.
 */
export async function installBootAssessment(dirs: { state?: string; oem?: string }): Promise<string[]> {
  const changed: string[] = [];
  const put = async (file: string, text: string): Promise<void> => {
    await writeFileAtomic(file, text);
    changed.push(file);
  };
  try {
    await installBootAssessmentFiles(dirs, put, changed);
  } finally {
    // What was written reaches the disk where GRUB reads it, even when a later write failed.
    for (const dir of [dirs.state, dirs.oem]) if (dir !== undefined && changed.some((f) => f.startsWith(`${dir}/`))) await syncFs(dir);
  }
  return changed;
}

async function installBootAssessmentFiles(
  dirs: { state?: string; oem?: string },
  put: (file: string, text: string) => Promise<void>,
  changed: string[],
): Promise<void> {
  if (dirs.state !== undefined) {
    const script = path.join(dirs.state, 'grub_boot_assessment');
    const want = bootAssessmentScript();
    if ((await readOptionalText(script)) !== want) await put(script, want);
    const custom = path.join(dirs.state, 'grubcustom');
    const hooked = grubcustomWithHook(await readOptionalText(custom));
    if (hooked !== null) await put(custom, hooked);
  }
  const blocks: Array<[string | undefined, string]> = [[dirs.state, 'boot_assessment'], [dirs.oem, 'grubenv']];
  for (const [dir, name] of blocks) {
    if (dir === undefined) continue;
    const file = path.join(dir, name);
    if ((await stat(file).catch(() => undefined)) !== undefined) continue;
    await updateGrubEnvFile(file, {}, { create: true });
    changed.push(file);
  }
}

/**
 * COS_OEM/grubenv exists from the agent's first run (cosd's start): created empty, in GRUB's format, when missing, so
 * cOS's grub.cfg never prints "no such device: /grubenv" (cos-layout.md section 8, item 11). Returns the file created,
 * or null when it was there (or there is no COS_OEM).
 */
export async function ensureOemGrubenv(deps: AgentDeps, config: AgentConfig): Promise<string | null> {
  const dev = await findPartition(deps, config.labels.oem).catch(() => undefined);
  if (dev === undefined) return null;
  const scope = new CleanupStack();
  try {
    const look = await mountRo(deps, dev.device, scope);
    if ((await stat(path.join(look, 'grubenv')).catch(() => undefined)) !== undefined) return null;
    const dir = await mountRw(deps, dev.device, MOUNT_POINTS.oem, scope);
    const changed = await installBootAssessment({ oem: dir });
    return changed[0] ?? null;
  } finally {
    for (const e of await scope.run(false)) deps.log.warn({ err: e.message }, 'cleanup after creating /oem/grubenv failed');
  }
}
