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
