import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigWatcher, DEFAULT_DEBOUNCE_MS, type WatchedSnapshot } from '../../src/daemon/watch.ts';
import { AgentError, ConfigError } from '../../src/model/errors.ts';
import { SysRoot } from '../../src/sys/root.ts';

type Seen = { kind: 'reload'; config: WatchedSnapshot; prev: WatchedSnapshot | undefined; at: number } | { kind: 'error'; error: AgentError; at: number };

/** A watcher on a temp root, recording every callback; `next` waits for the next one with a deadline. */
interface Rig {
  root: SysRoot;
  watcher: ConfigWatcher;
  seen: Seen[];
  next(kind: Seen['kind'], deadlineMs?: number): Promise<Seen>;
  write(hostPath: string, text: string): Promise<void>;
}

async function rig(
  t: { teardown(fn: () => Promise<void> | void): void },
  files: Record<string, string>,
  opts: { debounceMs?: number; dirs?: string[] } = {},
): Promise<Rig> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-agent-watch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = new SysRoot(dir);
  for (const d of opts.dirs ?? ['/etc']) await mkdir(root.path(d), { recursive: true });
  // Atomic (written beside the root, renamed in): an in-place write is a truncate and a write, and a loaded machine can
  // stall between the two for longer than the debounce, so the watcher would rightly read the empty file in between.
  let writes = 0;
  const write = async (hostPath: string, text: string): Promise<void> => {
    await mkdir(path.dirname(root.path(hostPath)), { recursive: true });
    const tmp = `${dir}.write-${writes++}`;
    await writeFile(tmp, text);
    await rename(tmp, root.path(hostPath));
  };
  for (const [p, text] of Object.entries(files)) await write(p, text);
  const seen: Seen[] = [];
  let wake: (() => void) | undefined;
  const push = (s: Seen): void => {
    seen.push(s);
    wake?.();
  };
  const watcher = new ConfigWatcher(root, {
    env: {},
    ...(opts.debounceMs !== undefined ? { debounceMs: opts.debounceMs } : {}),
    onReload: (config, prev) => push({ kind: 'reload', config, prev, at: performance.now() }),
    onError: (error) => push({ kind: 'error', error, at: performance.now() }),
  });
  t.teardown(() => watcher.close());
  let cursor = 0;
  const next = async (kind: Seen['kind'], deadlineMs = 5000): Promise<Seen> => {
    const deadline = performance.now() + deadlineMs;
    for (;;) {
      while (cursor < seen.length) {
        const s = seen[cursor++] as Seen;
        if (s.kind === kind) return s;
        throw new Error(`expected ${kind}, got ${s.kind}${s.kind === 'error' ? `: ${s.error.message}` : ''}`);
      }
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no ${kind} within ${deadlineMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = (): void => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  };
  return { root, watcher, seen, next, write };
}

const image = (c: WatchedSnapshot | undefined): string | undefined => c?.config.upgradeSource?.ref;
const reloadOf = (s: Seen): WatchedSnapshot => {
  if (s.kind !== 'reload') throw new Error('not a reload');
  return s.config;
};

test('a change of /etc/cos-upgrade-image is picked up within a second, without restart', async (t) => {
  const r = await rig(t, { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE="reg.example/os:1"\n' });
  const first = await r.watcher.start();
  t.is(image(first), 'reg.example/os:1');
  t.is(image(reloadOf(await r.next('reload'))), 'reg.example/os:1', 'the first load goes through onReload too');

  const t0 = performance.now();
  await writeFile(r.root.path('/etc/cos-upgrade-image'), 'UPGRADE_IMAGE="reg.example/os:2"\n');
  const seen = await r.next('reload', 1000);
  t.log(`change picked up after ${(seen.at - t0).toFixed(0)} ms (default debounce ${DEFAULT_DEBOUNCE_MS} ms)`);
  t.is(image(reloadOf(seen)), 'reg.example/os:2');
  t.is(seen.kind === 'reload' ? image(seen.prev) : undefined, 'reg.example/os:1', 'onReload gets the previous snapshot');
  t.is(image(r.watcher.current), 'reg.example/os:2');
  t.true(r.watcher.current?.files.includes(r.root.path('/etc/cos-upgrade-image')));
});

test('when a file is replaced by rename (as yip writes it), the new content is picked up', async (t) => {
  const r = await rig(t, { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE="reg.example/os:1"\n' }, { debounceMs: 50 });
  await r.watcher.start();
  await r.next('reload');
  const tmp = r.root.path('/etc/.cos-upgrade-image.tmp');
  await writeFile(tmp, 'UPGRADE_IMAGE="reg.example/os:renamed"\n');
  await rename(tmp, r.root.path('/etc/cos-upgrade-image'));
  t.is(image(reloadOf(await r.next('reload'))), 'reg.example/os:renamed');

  // elemental config and agent.yaml the same way
  await mkdir(r.root.path('/etc/cos-agent'), { recursive: true });
  await writeFile(r.root.path('/etc/cos-agent/.agent.yaml.new'), 'policy: stage\n');
  await rename(r.root.path('/etc/cos-agent/.agent.yaml.new'), r.root.path('/etc/cos-agent/agent.yaml'));
  t.is(reloadOf(await r.next('reload')).agent.policy, 'stage');
});

test('when a new file is invalid, the previous config is kept and the error names the file and line', async (t) => {
  const yaml = '/etc/elemental/config.yaml';
  const r = await rig(t, { [yaml]: 'upgrade:\n  system:\n    uri: docker:reg.example/os:good\n' }, { debounceMs: 50 });
  await r.watcher.start();
  await r.next('reload');
  const good = r.watcher.current;

  await r.write(yaml, 'upgrade:\n  system:\n    size: lots\n');
  const seen = await r.next('error');
  const err = seen.kind === 'error' ? seen.error : undefined;
  t.true(err instanceof ConfigError);
  t.is(err?.code, 'CONFIG_INVALID');
  t.is((err as ConfigError).file, r.root.path(yaml));
  t.is((err as ConfigError).line, 3);
  t.is(r.watcher.current, good, 'the previous snapshot stays current');
  t.is(image(r.watcher.current), 'reg.example/os:good');

  await r.write(yaml, 'upgrade:\n  system:\n    uri: docker:reg.example/os:fixed\n');
  const fixed = reloadOf(await r.next('reload'));
  t.is(image(fixed), 'reg.example/os:fixed');

  await r.write('/etc/cos-agent/agent.yaml', 'policy: stage\nwindow:\n  start: "26:00"\n  length: 1h\n');
  const agentErr = await r.next('error');
  t.like(agentErr.kind === 'error' ? agentErr.error : {}, { code: 'CONFIG_INVALID', file: r.root.path('/etc/cos-agent/agent.yaml'), line: 3, key: 'window.start' });
  t.is(r.watcher.current, fixed);
});

test('when policy.yaml is invalid the reload is refused, naming it', async (t) => {
  const r = await rig(t, { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE="reg.example/os:1"\n' }, { debounceMs: 50 });
  await r.watcher.start();
  await r.next('reload');
  await r.write('/etc/cos-agent/policy.yaml', 'default:\n  keys: [/k.pub]\n  requireTlog: maybe\n');
  const seen = await r.next('error');
  t.like(seen.kind === 'error' ? seen.error : {}, { code: 'CONFIG_INVALID', file: r.root.path('/etc/cos-agent/policy.yaml'), line: 3, key: 'default.requireTlog' });
  await r.write('/etc/cos-agent/policy.yaml', 'default:\n  keys: [/k.pub]\n');
  const ok = reloadOf(await r.next('reload'));
  t.true(ok.files.includes(r.root.path('/etc/cos-agent/policy.yaml')));
});

test('a fixed file after an error is picked up, with a reload whose previous snapshot is the last good one', async (t) => {
  const file = '/etc/cos/config';
  const r = await rig(t, { [file]: 'UPGRADE_IMAGE="reg.example/os:1"\n' }, { debounceMs: 50 });
  await r.watcher.start();
  const first = reloadOf(await r.next('reload'));
  await r.write(file, 'UPGRADE_IMAGE="reg.example/os:2"\nNOT A LINE\n');
  const err = await r.next('error');
  t.like(err.kind === 'error' ? err.error : {}, { file: r.root.path(file), line: 2 });
  await r.write(file, 'UPGRADE_IMAGE="reg.example/os:3"\n');
  const seen = await r.next('reload');
  t.is(image(reloadOf(seen)), 'reg.example/os:3');
  t.is(seen.kind === 'reload' ? seen.prev : undefined, first);
});

test('when the config is invalid at start, start reports it through onError and a later fix is picked up', async (t) => {
  const r = await rig(t, { '/etc/cos-agent/agent.yaml': 'policy: sometimes\n' }, { debounceMs: 50 });
  t.is(await r.watcher.start(), undefined);
  const err = await r.next('error');
  t.like(err.kind === 'error' ? err.error : {}, { code: 'CONFIG_INVALID', line: 1, key: 'policy' });
  t.is(r.watcher.current, undefined);
  await r.write('/etc/cos-agent/agent.yaml', 'policy: apply\n');
  const seen = await r.next('reload');
  t.is(reloadOf(seen).agent.policy, 'apply');
  t.is(seen.kind === 'reload' ? seen.prev : null, undefined);
});

test('a file created in directories that did not exist at start is picked up, and the new directory is then watched itself', async (t) => {
  const r = await rig(t, {}, { debounceMs: 50, dirs: [] }); // not even /etc exists
  await r.watcher.start();
  t.is(image(reloadOf(await r.next('reload'))), undefined);
  t.deepEqual(r.watcher.watchedPaths, [r.root.prefix], 'only the root stands in for everything');

  await r.write('/etc/elemental/config.d/10-image.yaml', 'upgrade:\n  system:\n    uri: docker:reg.example/os:from-config-d\n');
  // the directories appear one by one; wait until the reload that sees the file
  let seen = reloadOf(await r.next('reload'));
  while (image(seen) === undefined) seen = reloadOf(await r.next('reload'));
  t.is(image(seen), 'reg.example/os:from-config-d');
  t.true(r.watcher.watchedPaths.includes(r.root.path('/etc/elemental/config.d')));
  t.true(r.watcher.watchedPaths.includes(r.root.path('/etc/elemental')));
  t.false(r.watcher.watchedPaths.includes(r.root.prefix), 'the root is no longer needed once /etc exists');

  await r.write('/etc/elemental/config.d/20-image.yaml', 'upgrade:\n  system:\n    uri: docker:reg.example/os:second\n');
  // a reload of the directories' appearance may still be on its way (it sees the first file only); then the new file's
  let next = reloadOf(await r.next('reload'));
  if (image(next) === 'reg.example/os:from-config-d') next = reloadOf(await r.next('reload'));
  t.is(image(next), 'reg.example/os:second');
});

test('when a watched directory is removed and created again, its files are followed again', async (t) => {
  const r = await rig(t, { '/etc/elemental/config.d/a.yaml': 'upgrade:\n  system:\n    uri: docker:reg.example/os:a\n' }, { debounceMs: 50 });
  await r.watcher.start();
  t.is(image(reloadOf(await r.next('reload'))), 'reg.example/os:a');
  await rm(r.root.path('/etc/elemental/config.d'), { recursive: true });
  t.is(image(reloadOf(await r.next('reload'))), undefined);
  t.false(r.watcher.watchedPaths.includes(r.root.path('/etc/elemental/config.d')));
  await r.write('/etc/elemental/config.d/b.yaml', 'upgrade:\n  system:\n    uri: docker:reg.example/os:b\n');
  let seen = reloadOf(await r.next('reload'));
  while (image(seen) === undefined) seen = reloadOf(await r.next('reload'));
  t.is(image(seen), 'reg.example/os:b');
  t.true(r.watcher.watchedPaths.includes(r.root.path('/etc/elemental/config.d')));
});

test('a burst of writes is coalesced into one reload that sees the last write', async (t) => {
  const file = '/etc/cos-upgrade-image';
  const r = await rig(t, { [file]: 'UPGRADE_IMAGE="reg.example/os:0"\n' }, { debounceMs: 300 });
  await r.watcher.start();
  await r.next('reload');
  const p = r.root.path(file);
  for (let i = 1; i <= 20; i++) writeFileSync(p, `UPGRADE_IMAGE="reg.example/os:${i}"\n`);
  t.is(image(reloadOf(await r.next('reload'))), 'reg.example/os:20');
  // a sentinel change: if the burst had produced a second reload, it would show up before this one
  writeFileSync(p, 'UPGRADE_IMAGE="reg.example/os:sentinel"\n');
  t.is(image(reloadOf(await r.next('reload'))), 'reg.example/os:sentinel');
  t.is(r.seen.length, 3, 'start, one for the burst, one for the sentinel');
});

test('changes to unrelated files in watched directories do not reload', async (t) => {
  // Every watched directory exists from the start: a directory appearing is a reload of its own (tested below), which
  // a slow machine could deliver after the sentinel's.
  const r = await rig(t, { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE="reg.example/os:1"\n', '/etc/elemental/config.d/a.yaml': '' }, { debounceMs: 50, dirs: ['/etc', '/etc/cos-agent'] });
  await r.watcher.start();
  await r.next('reload');
  await r.write('/etc/hostname', 'node-1\n');
  await r.write('/etc/elemental/notes.txt', 'hello\n');
  await r.write('/etc/elemental/config.d/a.yaml.swp', 'x');
  await r.write('/etc/cos-agent/keys.txt', 'x');
  // The sentinel lands whole (written aside, renamed into place, as yip writes files): a truncate-then-write could be
  // seen half done by a reload under load, which would be a second reload, not an unrelated one.
  await writeFile(r.root.path('/etc/.cos-upgrade-image.new'), 'UPGRADE_IMAGE="reg.example/os:sentinel"\n');
  await rename(r.root.path('/etc/.cos-upgrade-image.new'), r.root.path('/etc/cos-upgrade-image'));
  t.is(image(reloadOf(await r.next('reload'))), 'reg.example/os:sentinel');
  t.is(r.seen.length, 2, 'only the sentinel change reloaded');
});

test('reload() reloads on demand with the same callbacks', async (t) => {
  const r = await rig(t, { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE="reg.example/os:1"\n' }, { debounceMs: 60_000 });
  await r.watcher.start();
  await r.next('reload');
  await writeFile(r.root.path('/etc/cos-upgrade-image'), 'UPGRADE_IMAGE="reg.example/os:2"\n');
  const got = await r.watcher.reload();
  t.is(image(got), 'reg.example/os:2');
  t.is(image(reloadOf(await r.next('reload'))), 'reg.example/os:2');
});

test.serial('close() releases every watch and timer of the watcher', async (t) => {
  const count = (): number => process.getActiveResourcesInfo().filter((x) => x === 'FSEventWrap' || x === 'Timeout').length;
  // a closed handle leaves the list in the close phase of the loop, after the check phase that runs setImmediate
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
  };
  await settle();
  const before = count();
  const r = await rig(t, { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE="reg.example/os:1"\n' }, { debounceMs: 10_000 });
  await r.watcher.start();
  t.deepEqual(r.watcher.watchedPaths, [r.root.path('/etc')], '/etc stands in for its missing subdirectories');
  t.is(count() - before, 1, 'one inotify watch, no timer while idle');
  writeFileSync(r.root.path('/etc/cos-upgrade-image'), 'UPGRADE_IMAGE="reg.example/os:2"\n');
  mkdirSync(r.root.path('/etc/cos'));
  await new Promise((resolve) => setTimeout(resolve, 50)); // let the events arrive: a debounce timer is pending
  r.watcher.close();
  r.watcher.close();
  await settle();
  t.is(count(), before, JSON.stringify(process.getActiveResourcesInfo()));
  t.deepEqual(r.watcher.watchedPaths, []);
});

test('a process that closes its watcher exits on its own', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-agent-watch-exit-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'etc/elemental'), { recursive: true });
  writeFileSync(path.join(dir, 'etc/cos-upgrade-image'), 'UPGRADE_IMAGE="reg.example/os:1"\n');
  const src = new URL('../../src/', import.meta.url).pathname;
  const script = `
    import { writeFileSync } from 'node:fs';
    import { ConfigWatcher } from '${src}daemon/watch.ts';
    import { SysRoot } from '${src}sys/root.ts';
    const root = new SysRoot(${JSON.stringify(dir)});
    let reloads = 0;
    const w = new ConfigWatcher(root, { env: {}, debounceMs: 20, onError: (e) => { console.error(e.message); process.exit(3); },
      onReload: (c) => { reloads++; if (reloads === 2) { w.close(); console.log('closed', c.config.upgradeSource.ref); } } });
    await w.start();
    writeFileSync(root.path('/etc/cos-upgrade-image'), 'UPGRADE_IMAGE="reg.example/os:2"\\n');
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  clearTimeout(killer);
  t.is(signal, null, `the process had to be killed: ${out}`);
  t.is(code, 0, out);
  t.is(out.trim(), 'closed reg.example/os:2');
});
