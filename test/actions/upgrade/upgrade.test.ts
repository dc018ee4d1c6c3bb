/**
 * The upgrade action in-process (the entry point the daemon will call), with a recording HookRunner: hook order,
 * the chroot of after-upgrade-chroot, progress events, and a failing hook that must leave both slots untouched.
 */
import test from 'ava';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { createCosHost, type CosHost } from '../../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../../helpers/registry.ts';
import { pushOsImage } from '../../helpers/os-image.ts';
import { sha256File } from '../../helpers/cosctl.ts';
import { upgrade } from '../../../src/actions/upgrade/upgrade.ts';
import type { AgentDeps, Progress } from '../../../src/host/deps.ts';
import type { HookContext, HookName, HookRunner } from '../../../src/host/hooks.ts';
import { AgentError } from '../../../src/model/errors.ts';
import { SysRoot } from '../../../src/sys/root.ts';
import { SpawnRunner } from '../../../src/sys/runner.ts';
import { silentLogger } from '../../../src/sys/log.ts';
import { readMounts } from '../../../src/partitions/index.ts';

let reg: TestRegistry;
test.before(async () => {
  reg = await startRegistry();
  await pushOsImage(reg, 'cos/os:v2', '2.0.0');
});
test.after.always(async () => {
  await reg?.stop();
});

function deps(host: CosHost, hooks: HookRunner): AgentDeps {
  return {
    root: new SysRoot(host.root), runner: new SpawnRunner(), log: silentLogger, hooks,
    env: { HOME: host.root }, now: () => new Date(), testDisk: host.loop, registry: { retryBaseMs: 10 },
  };
}

async function newHost(t: { teardown: (fn: () => Promise<void>) => void }): Promise<CosHost> {
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  return host;
}

test.serial('hooks run in order through one interface; after-upgrade-chroot sees the new image with /dev /proc /sys /oem /usr/local bound', async (t) => {
  const host = await newHost(t);
  const calls: Array<{ name: HookName; ctx: HookContext; seen?: Record<string, boolean | string> }> = [];
  const hooks: HookRunner = {
    async run(name, ctx) {
      const entry: (typeof calls)[number] = { name, ctx };
      if (name === 'before-upgrade') {
        // The transition image is fully allocated on COS_STATE before any byte is pulled.
        const st = await stat(host.statePath('cOS/transition.img'));
        entry.seen = { allocated: st.blocks * 512 >= 48 * 1024 * 1024 };
      }
      if (name === 'after-upgrade-chroot' && ctx.chroot) {
        const mounted = new Set((await readMounts()).map((m) => m.mountPoint));
        const c = ctx.chroot;
        entry.seen = {
          osRelease: await readFile(path.join(c, 'etc/os-release'), 'utf8'),
          proc: mounted.has(path.join(c, 'proc')) && (await stat(path.join(c, 'proc/self/status')).then(() => true, () => false)),
          sys: mounted.has(path.join(c, 'sys')),
          dev: mounted.has(path.join(c, 'dev')) && (await stat(path.join(c, 'dev/null')).then((s) => s.isCharacterDevice(), () => false)),
          oem: mounted.has(path.join(c, 'oem')),
          usrLocal: mounted.has(path.join(c, 'usr/local')),
        };
      }
      calls.push(entry);
    },
  };
  const progress: Progress[] = [];
  const out = await upgrade(deps(host, hooks), { image: `${reg.host}/cos/os:v2`, noVerify: true, onProgress: (p) => progress.push(p) });
  t.deepEqual(calls.map((c) => c.name), ['before-upgrade', 'after-upgrade-chroot', 'after-upgrade']);
  t.deepEqual(calls[0]?.seen, { allocated: true });
  t.true(calls.every((c) => c.ctx.transaction === out.transaction && c.ctx.target === 'system'));
  const seen = calls[1]?.seen ?? {};
  t.regex(String(seen.osRelease), /VERSION="2\.0\.0"/);
  t.like(seen, { proc: true, sys: true, dev: true, oem: true, usrLocal: true });
  // The binds are gone afterwards, with the transition mount.
  const after = (await readMounts()).map((m) => m.mountPoint).filter((m) => m.startsWith(`${host.root}/run/cos-agent/mnt/transition`));
  t.deepEqual(after, []);
  // Progress: phases in order, download bytes monotonic and ending at the compressed size.
  const phases = progress.map((p) => p.operation).filter((op, i, a) => a[i - 1] !== op);
  t.deepEqual(phases, ['checking', 'verifying', 'checking', 'staging', 'hooks', 'downloading', 'hooks', 'finalizing']);
  const bytes = progress.filter((p) => p.operation === 'downloading').map((p) => p.bytesDone);
  t.deepEqual(bytes, [...bytes].sort((a, b) => a - b));
  t.is(bytes.at(-1), progress.find((p) => p.operation === 'downloading')?.bytesTotal);
});

test.serial('a failing after-upgrade-chroot hook fails the upgrade with HOOK_FAILED and leaves both slots untouched', async (t) => {
  const host = await newHost(t);
  const leaks = await host.leaks();
  const before = [await sha256File(host.statePath('cOS/active.img')), await sha256File(host.statePath('cOS/passive.img'))];
  const hooks: HookRunner = {
    run: async (name) => {
      if (name === 'after-upgrade-chroot') throw new Error('yip: stage after-upgrade-chroot: command exited 1');
    },
  };
  const err = await t.throwsAsync(upgrade(deps(host, hooks), { image: `${reg.host}/cos/os:v2`, noVerify: true }));
  t.true(err instanceof AgentError);
  t.is((err as AgentError).code, 'HOOK_FAILED');
  t.regex(err?.message ?? '', /after-upgrade-chroot/);
  t.deepEqual([await sha256File(host.statePath('cOS/active.img')), await sha256File(host.statePath('cOS/passive.img'))], before);
  t.false(await stat(host.statePath('cOS/transition.img')).then(() => true, () => false));
  t.deepEqual(await host.leaks(), leaks);
});

test.serial('a cancelled upgrade (AbortSignal) stops, removes the transition image and switches nothing', async (t) => {
  const host = await newHost(t);
  const leaks = await host.leaks();
  const before = await sha256File(host.statePath('cOS/active.img'));
  const ac = new AbortController();
  const hooks: HookRunner = {
    run: async (name) => {
      if (name === 'before-upgrade') ac.abort();
    },
  };
  const err = await t.throwsAsync(upgrade(deps(host, hooks), { image: `${reg.host}/cos/os:v2`, noVerify: true, signal: ac.signal }));
  t.true(err instanceof AgentError, String(err));
  t.is(await sha256File(host.statePath('cOS/active.img')), before);
  t.false(await stat(host.statePath('cOS/transition.img')).then(() => true, () => false));
  t.deepEqual(await host.leaks(), leaks);
});
