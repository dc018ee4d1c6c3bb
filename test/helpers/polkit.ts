/**
 * A real polkitd on a test bus, with cosd's polkit actions (packaging/io.costoolkit.agent1.policy) and the given
 * rules. polkitd reads its actions and rules from fixed system paths, so it runs in its own mount namespace
 * (`unshare --mount`) where temp dirs are bind-mounted over /usr/share/polkit-1/actions, /usr/share/polkit-1/rules.d
 * and /etc/polkit-1/rules.d: the machine's own polkit configuration is never touched.
 *
 *   const bus = await startBus({ polkit: 'drop-in' });
 *   const pk = await startPolkit(bus, { rules: 'polkit.addRule(function (a, s) { ... });' });
 *   t.teardown(() => pk.stop());
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestBus } from './dbus.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const POLKIT_ACTIONS_FILE: string = path.join(REPO, 'packaging/io.costoolkit.agent1.policy');
const POLKITD = '/usr/lib/polkit-1/polkitd';

export interface TestPolkit {
  child: ChildProcess;
  /** polkitd's output so far. */
  output(): string;
  stop(): Promise<void>;
}

export async function startPolkit(bus: TestBus, opts: { rules?: string } = {}): Promise<TestPolkit> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cos-polkit-'));
  const actions = path.join(dir, 'actions');
  const rules = path.join(dir, 'rules.d');
  const empty = path.join(dir, 'empty');
  for (const d of [actions, rules, empty]) await mkdir(d);
  await copyFile(POLKIT_ACTIONS_FILE, path.join(actions, 'io.costoolkit.agent1.policy'));
  if (opts.rules !== undefined) await writeFile(path.join(rules, '50-test.rules'), opts.rules);
  // polkitd changes to its own user: everything must be readable by it
  for (const d of [dir, actions, rules, empty]) await chmod(d, 0o755);
  const script = [
    'set -e',
    // The new namespace copies every mount of the moment, other tests' loop-mounted images included; a copy would
    // keep such an image's filesystem live after its test unmounts it (and write it back when this namespace ends):
    // let go of everything under the temp dirs (Mount.released in src/partitions/mount.ts).
    'awk -v t="$4/" -v v="/var/tmp/" \'index($5, t) == 1 || index($5, v) == 1 { print $5 }\' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done',
    'mount --bind "$1" /usr/share/polkit-1/actions',
    'mount --bind "$2" /etc/polkit-1/rules.d',
    'mount --bind "$3" /usr/share/polkit-1/rules.d',
    `exec ${POLKITD}`,
  ].join('\n');
  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', actions, rules, empty, tmpdir()], {
    env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: bus.address },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const onData = (b: Buffer): void => {
    out += b.toString();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`polkitd did not take its bus name within 20 s: ${out}`)), 20_000);
      const check = (): void => {
        if (/Acquired the name org\.freedesktop\.PolicyKit1/.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', check);
      child.stderr!.on('data', check);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`polkitd exited (${code}) before taking its bus name: ${out}`));
      });
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return { child, output: () => out, stop };
}
