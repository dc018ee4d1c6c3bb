/**
 * A non-root user without the daemon: every command that changes the system is refused up front with one
 * ACCESS_DENIED line (exit 6), before cosctl reads, probes or writes anything; reading commands are not refused.
 * The real cosctl as uid 65534 (setpriv), with no bus to reach.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cosctl } from '../helpers/cosctl.ts';
import type { CosHost } from '../helpers/cos-host.ts';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import { COMMANDS } from '../../src/cli/spec.ts';

const NOBODY = 65534;
const NO_BUS = { DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent/cos-agent-test-bus' };

/** A root nobody may read (a 0700 temp dir of root's): a command that got as far as reading it would fail otherwise. */
async function hostRoot(t: import('ava').ExecutionContext): Promise<CosHost> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cosctl-access-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return { root: dir, env: {} } as unknown as CosHost;
}

const ARGS: Record<string, string[]> = {
  upgrade: ['upgrade', '--image', 'registry.example/os:v2'],
  rollback: ['rollback'],
  'mark-good': ['mark-good'],
  'mark-bad': ['mark-bad'],
  'health-check': ['health-check'],
  'boot-assessment': ['boot-assessment'],
  'run-stage': ['run-stage', 'boot'],
  'suc-upgrade': ['suc-upgrade'],
};

for (const c of COMMANDS.filter((x) => x.changes && x.needsDaemon !== true)) {
  test(`as nobody without cosd, ${c.name} is one ACCESS_DENIED line up front`, async (t) => {
    const host = await hostRoot(t);
    const args = ARGS[c.name];
    if (args === undefined) throw new Error(`no arguments for ${c.name}: add it to ARGS`);
    for (const extra of [[], ['--no-daemon']]) {
      const r = await cosctl(host, [...extra, ...args], NO_BUS, { uid: NOBODY });
      t.is(r.code, EXIT_CODES.ACCESS_DENIED.exit, `${c.name} ${extra.join(' ')}: ${r.stderr}`);
      t.is(r.stdout, '');
      t.regex(r.stderr, new RegExp(`^cosctl: ${c.name}(:| changes| marks| writes)[^\\n]* root[^\\n]*\\n$`), r.stderr);
    }
  });
}

test('cancel without cosd is NOT_SUPPORTED for anyone (there is nothing to cancel), not a request for root', async (t) => {
  const host = await hostRoot(t);
  for (const uid of [NOBODY, undefined]) {
    const r = await cosctl(host, ['cancel'], NO_BUS, uid === undefined ? {} : { uid });
    t.is(r.code, EXIT_CODES.NOT_SUPPORTED.exit, r.stderr);
    t.is(r.stderr, 'cosctl: cancel needs the daemon (cosd), and none serves this root\n');
  }
});

test('as nobody, reading commands are not refused for access: status and check fail (or not) for their own reasons', async (t) => {
  const host = await hostRoot(t);
  for (const args of [['status'], ['check', '--image', 'registry.example/os:v2']]) {
    const r = await cosctl(host, args, NO_BUS, { uid: NOBODY });
    t.not(r.code, EXIT_CODES.ACCESS_DENIED.exit, `${args[0]}: ${r.stderr}`);
  }
});

/** A loop-device cOS host a user may read as on a real one: directories 0755, files 0644 (the RO mounts as they are). */
async function readableHost(t: import('ava').ExecutionContext): Promise<CosHost> {
  const { createCosHost } = await import('../helpers/cos-host.ts');
  const host = await createCosHost({});
  t.teardown(() => host.close());
  const { execFile } = await import('node:child_process');
  // chmod fails inside the read-only COS_STATE mount (its files are readable already): that is expected.
  await new Promise<void>((resolve) => execFile('chmod', ['-R', 'a+rX', path.dirname(host.root)], () => resolve()));
  return host;
}

test('as nobody without cosd, status shows what the host mounts and names what it could not read, never "none"', async (t) => {
  const host = await readableHost(t);
  const asRoot = await cosctl(host, ['status', '--json'], NO_BUS);
  t.is(asRoot.code, 0, asRoot.stderr);
  const rootDoc = JSON.parse(asRoot.stdout) as { status: Record<string, unknown> };
  t.is(rootDoc.status['unreadable'], undefined, 'root reads everything');

  const json = await cosctl(host, ['status', '--json'], NO_BUS, { uid: NOBODY });
  t.is(json.code, 0, json.stderr);
  const doc = JSON.parse(json.stdout) as { status: { unreadable?: Array<{ of: string; name: string; why: string }>; nextBoot: unknown; booted: { slot: string } | null; slots: Record<string, { present: boolean }> } };
  // COS_STATE: read from the host's own read-only mount, as root sees it.
  t.deepEqual(doc.status.nextBoot, (rootDoc.status as { nextBoot: unknown }).nextBoot);
  t.is(doc.status.booted?.slot, 'active');
  t.true(doc.status.slots['passive']?.present);
  // COS_RECOVERY is not mounted by the host: a user cannot probe or mount it, and the document says so.
  t.deepEqual(doc.status.unreadable?.map((u) => [u.of, u.name]), [['recovery', 'COS_RECOVERY']]);
  t.regex(doc.status.unreadable?.[0]?.why ?? '', /as uid 65534 .*\(root can\)/);

  const human = await cosctl(host, ['status'], NO_BUS, { uid: NOBODY });
  t.is(human.code, 0, human.stderr);
  t.regex(human.stdout, /Recovery image: not read \(COS_RECOVERY: see below\)/);
  t.notRegex(human.stdout, /none \(no cOS\/recovery\.img\)|NOTHING BOOTABLE/);
  t.regex(human.stdout, /Not read \(as uid 65534; run as root, or start cosd, for the whole status\):\n {2}- COS_RECOVERY: /);
  t.regex(human.stdout, /Next boot: active: the default entry/);
  t.true(human.stdout.split('\n').every((l) => l.length <= 80), 'fits 80 columns');
});

test('as nobody without cosd and no COS_STATE it can read, status is ACCESS_DENIED naming the partition and the fix', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cosctl-access-nostate-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { chmod, mkdir, writeFile } = await import('node:fs/promises');
  await chmod(dir, 0o755);
  await mkdir(path.join(dir, 'etc'), { mode: 0o755 });
  await writeFile(path.join(dir, 'etc/os-release'), 'NAME=cOS\nVERSION=0.8.10\n', { mode: 0o644 });
  const host = { root: dir, env: { AGENT_TEST_DISK: '/dev/cos-test-no-such-disk' } } as unknown as CosHost;
  const r = await cosctl(host, ['status'], NO_BUS, { uid: NOBODY });
  t.is(r.code, EXIT_CODES.ACCESS_DENIED.exit, r.stderr);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^cosctl: status: cannot read the host as uid 65534: COS_STATE: not found, and as uid 65534 the disks cannot be probed \(root can\)[^\n]*Run it as root, or start cosd \(anyone may ask it for the status\)\n$/);
});
