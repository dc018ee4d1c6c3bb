/**
 * The D-Bus surface of the real cosd on a private system-like bus, against a bare root (no cOS disk: jobs that need
 * one fail, which is what some of these tests want). Covers the contract (introspection = interface.xml), argument
 * checking (InvalidArgs naming the key), the error table on the wire, and who may call what.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AgentError } from '../../src/model/errors.ts';
import { AgentClient } from '../../src/dbus/client.ts';
import { PROPERTY_SIGNATURES } from '../../src/dbus/codec.ts';
import { asUser, startBus, startCosd, type CosdProcess, type TestBus } from '../helpers/dbus.ts';

const XML = new URL('../../src/dbus/interface.xml', import.meta.url);

/** Members of one interface in an introspection document: methods, properties and signals with their argument types. */
interface Members {
  methods: Record<string, string[]>;
  properties: Record<string, string>;
  signals: Record<string, string[]>;
}

function attrs(tag: string): Record<string, string> {
  return Object.fromEntries([...tag.matchAll(/([\w:-]+)="([^"]*)"/g)].map((m) => [m[1] as string, m[2] as string]));
}

/** A small reader for introspection XML (elements and attributes only; comments and the DOCTYPE dropped). */
function membersOf(xml: string, iface: string): Members {
  const text = xml.replace(/<!--[\s\S]*?-->/g, '').replace(/<!DOCTYPE[^>]*>/, '');
  const start = text.search(new RegExp(`<interface\\s+name="${iface.replaceAll('.', '\\.')}"`));
  if (start < 0) throw new Error(`interface ${iface} not found`);
  const body = text.slice(start, text.indexOf('</interface>', start));
  const out: Members = { methods: {}, properties: {}, signals: {} };
  let current: string[] | null = null;
  for (const m of body.matchAll(/<(\/?)(method|signal|property|arg)\b([^>]*?)(\/?)>/g)) {
    const [, closing, el, rest, selfClosing] = m as unknown as [string, string, string, string, string];
    if (closing) {
      current = null;
      continue;
    }
    const a = attrs(rest);
    if (el === 'property') out.properties[a.name as string] = `${a.type} ${a.access}`;
    else if (el === 'method' || el === 'signal') {
      current = [];
      (el === 'method' ? out.methods : out.signals)[a.name as string] = current;
      if (selfClosing) current = null;
    } else if (el === 'arg' && current) current.push(el === 'arg' && a.direction ? `${a.direction} ${a.type}` : `${a.type}`);
  }
  return out;
}

interface Ctx {
  bus: TestBus;
  cosd: CosdProcess;
  client: AgentClient;
  root: string;
}

/** A bus, a cosd on a bare root, a root client; all torn down after the test, in reverse order. */
async function setup(t: ExecutionContext, policy: 'packaging' | 'open' = 'packaging', files: Record<string, string> = {}): Promise<Ctx> {
  const bus = await startBus({ policy });
  t.teardown(() => bus.stop());
  const root = await mkdtemp(path.join(tmpdir(), 'cosd-root-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  for (const [file, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(root, file)), { recursive: true });
    await writeFile(path.join(root, file), content);
  }
  // A disk that does not exist: label discovery finds nothing instead of other tests' cOS disks.
  const cosd = await startCosd(bus, { root, env: { AGENT_TEST_DISK: '/dev/cos-test-no-such-disk' } });
  t.teardown(async () => {
    await cosd.stop();
  });
  const client = await AgentClient.connect({ address: bus.address });
  t.teardown(() => client.close());
  return { bus, cosd, client, root };
}

async function rejection(t: ExecutionContext, p: Promise<unknown>): Promise<AgentError & { cause: { type: string } }> {
  const err = await t.throwsAsync(p);
  if (!(err instanceof AgentError)) throw new Error(`expected an AgentError, got ${String(err)}`);
  return err as AgentError & { cause: { type: string } };
}

test('the live service introspects to exactly the methods, properties and signals of src/dbus/interface.xml', async (t) => {
  const { client } = await setup(t);
  const contract = membersOf(await readFile(XML, 'utf8'), 'io.costoolkit.Agent1');
  const live = membersOf(await client.introspect(), 'io.costoolkit.Agent1');
  t.deepEqual(live, contract);
  // The codec's signature table says the same.
  t.deepEqual(Object.fromEntries(Object.entries(PROPERTY_SIGNATURES).map(([k, v]) => [k, `${v} read`])), contract.properties);
  t.is(Object.keys(contract.methods).length, 8);
  t.deepEqual(contract.signals, { Completed: ['s', 'i', 's'] });
});

test('interface.xml documents every method, property and signal in a comment right before it', async (t) => {
  const xml = await readFile(XML, 'utf8');
  for (const m of xml.matchAll(/<(method|property|signal) name="(\w+)"/g)) {
    const before = xml.slice(0, m.index).trimEnd();
    t.true(before.endsWith('-->'), `${m[2]} has no doc comment`);
    const comment = before.slice(before.lastIndexOf('<!--'));
    t.true(comment.includes(m[2] as string), `the comment before ${m[2]} names it`);
  }
});

test('an unknown option key is rejected with InvalidArgs naming the key, and nothing starts', async (t) => {
  const { client } = await setup(t);
  const err = await rejection(t, client.callWithOptions('Upgrade', { image: ['s', 'reg.example/os:v2'], 'no-verfy': ['b', true] }));
  t.is(err.code, 'USAGE');
  t.is(err.cause.type, 'io.costoolkit.Agent1.Error.InvalidArgs');
  t.regex(err.message, /unknown option "no-verfy"/);
  const check = await rejection(t, client.callWithOptions('Check', { permanent: ['b', true] }));
  t.regex(check.message, /Check: unknown option "permanent"/);
  t.is(await client.getProperty('Operation'), 'idle');
  t.is(await client.getProperty('LastTransaction'), null);
});

test('an option of the wrong type is rejected with InvalidArgs naming the key and the type it must have', async (t) => {
  const { client } = await setup(t);
  const err = await rejection(t, client.callWithOptions('Upgrade', { recovery: ['s', 'yes'] }));
  t.is(err.code, 'USAGE');
  t.is(err.cause.type, 'io.costoolkit.Agent1.Error.InvalidArgs');
  t.regex(err.message, /option "recovery" must be a boolean \('b'\), got 's'/);
  t.regex((await rejection(t, client.callWithOptions('Check', { image: ['b', true] }))).message, /"image" must be a string/);
  t.regex((await rejection(t, client.callWithOptions('Rollback', { permanent: ['i', 1] }))).message, /"permanent" must be a boolean/);
  t.regex((await rejection(t, client.callWithOptions('Upgrade', { image: ['s', ''] }))).message, /"image" must not be empty/);
});

test('a call with the wrong signature is rejected with InvalidArgs', async (t) => {
  const { client } = await setup(t);
  const err = await rejection(t, client.call('Upgrade', 's', ['reg.example/os:v2']));
  t.is(err.cause.type, 'io.costoolkit.Agent1.Error.InvalidArgs');
  t.regex(err.message, /Upgrade takes \(a\{sv\}\), got \(s\)/);
});

const STAGE_FILES: Record<string, string> = {
  'oem/10_custom.yaml': `stages:
  custom:
    - name: a file
      files:
        - path: /etc/custom.conf
          content: "written by RunStage\\n"
          permissions: 0640
    - name: a directory
      directories:
        - path: /var/lib/custom
  other:
    - files:
        - path: /etc/other.conf
          content: other
`,
  'oem/20_broken.yaml': 'stages:\n  custom:\n    - files: "not a list"\n',
};

test('RunStage runs a yip stage as a job: its files are written in the root, the record counts steps and names each error', async (t) => {
  const { client, root } = await setup(t, 'packaging', STAGE_FILES);
  const rec = await client.runJob(() => client.runStage('custom'));
  t.is(rec.kind, 'run-stage');
  t.is(rec.result, 0, 'errors never fail a stage without strict');
  t.is(await readFile(path.join(root, 'etc/custom.conf'), 'utf8'), 'written by RunStage\n');
  t.true((await stat(path.join(root, 'var/lib/custom'))).isDirectory());
  await t.throwsAsync(stat(path.join(root, 'etc/other.conf')), undefined, 'another stage did not run');
  t.like(rec.details, { stage: 'custom', strict: false, sources: ['/oem/'], steps: 2, stepErrors: 1 });
  t.deepEqual(rec.details.warnings, ['skipped /oem/20_broken.yaml:3 step 0 files: expected a list, got the scalar "not a list"']);
  const last = await client.getProperty('LastTransaction');
  t.like(last, { kind: 'run-stage', details: { stage: 'custom', steps: 2, stepErrors: 1, sources: ['/oem/'] } });
});

test('RunStage with strict fails the job with CloudInitFailed when the stage had errors, and still records what ran', async (t) => {
  const { client, root } = await setup(t, 'packaging', STAGE_FILES);
  const err = await rejection(t, client.runJob(() => client.runStage('custom', { strict: true })));
  t.is(err.code, 'CLOUD_INIT_FAILED');
  const rec = JSON.parse(await readFile(path.join(root, 'run/cos-agent/last-transaction.json'), 'utf8')) as { result: number; code: string; error: string; details: object };
  t.like(rec, { result: 1, code: 'CLOUD_INIT_FAILED', details: { stage: 'custom', strict: true, steps: 2, stepErrors: 1 } });
  t.regex(rec.error, /stage custom: 1 error\(s\)/);
  t.like(await client.getProperty('LastTransaction'), { code: 'CLOUD_INIT_FAILED', details: { stepErrors: 1 } });
  t.is(await readFile(path.join(root, 'etc/custom.conf'), 'utf8'), 'written by RunStage\n', 'the good steps ran');
  // A file that does not load fails every stage under strict (its steps may have been for any); without it, none.
  await rm(path.join(root, 'oem/20_broken.yaml'));
  const clean = await client.runJob(() => client.runStage('other', { strict: true }));
  t.like(clean, { result: 0, details: { stage: 'other', steps: 1, stepErrors: 0 } });
});

test('RunStage with a 10 MB stage name is refused with a short InvalidArgs naming its length; a hostile name is echoed escaped', async (t) => {
  const { client, cosd } = await setup(t);
  const err = await rejection(t, client.runStage('s'.repeat(10 << 20)));
  t.is(err.code, 'USAGE');
  t.is(err.cause.type, 'io.costoolkit.Agent1.Error.InvalidArgs');
  t.is(err.message, 'RunStage: the stage name is 10485760 bytes long, over the limit of 256 bytes');
  const hostile = await rejection(t, client.runStage('\x1b]0;pwned\x07after-upgrade'));
  t.is(hostile.code, 'USAGE');
  t.regex(hostile.message, /^run-stage: "\\u001b\]0;pwned\\u0007after-upgrade" is not a stage name/);
  t.false(/[\x00-\x1f\x7f-\x9f]/.test(hostile.message));
  t.regex((await rejection(t, client.call('RunStage', 's', ['boot']))).message, /RunStage takes \(sa\{sv\}\)/);
  t.is(await client.getProperty('LastTransaction'), null, 'nothing ran');
  t.true(Math.max(...cosd.logs.map((l) => JSON.stringify(l).length)) < 8 << 10, 'no log line echoes the 10 MB');
});

test('Upgrade and Check read their a{sv} from the wire too: a reserved or repeated key is refused, nothing starts', async (t) => {
  const { bus, client } = await setup(t);
  const call = (member: string, ...args: string[]): Promise<{ code: number; stderr: string }> => new Promise((resolve) => {
    execFile('busctl', [`--address=${bus.address}`, 'call', 'io.costoolkit.Agent1', '/io/costoolkit/Agent1', 'io.costoolkit.Agent1', member, 'a{sv}', ...args],
      (e, _out, stderr) => resolve({ code: e ? 1 : 0, stderr }));
  });
  const cases: Array<[string, string[], RegExp]> = [
    ['Upgrade', ['2', 'image', 's', 'reg.example/os:v2', '__proto__', 'b', 'true'], /Upgrade: option "__proto__" is a reserved name/],
    ['Upgrade', ['2', 'image', 's', 'reg.example/os:v2', 'image', 's', 'reg.example/os:v3'], /Upgrade: option "image" is given more than once/],
    ['Check', ['1', 'constructor', 's', 'x'], /Check: option "constructor" is a reserved name/],
    ['Check', ['2', 'recovery', 'b', 'true', 'recovery', 'b', 'true'], /Check: option "recovery" is given more than once/],
  ];
  for (const [member, args, message] of cases) {
    const r = await call(member, ...args);
    t.is(r.code, 1, `${member} ${args.join(' ')}`);
    t.regex(r.stderr, message);
  }
  t.is(await client.getProperty('Operation'), 'idle');
  t.is(await client.getProperty('LastTransaction'), null);
});

test('Cancel with nothing running returns false, and again (idempotent)', async (t) => {
  const { client } = await setup(t);
  t.false(await client.cancel());
  t.false(await client.cancel());
});

test('a job that fails ends with Completed(tx, 1, error); its code is in LastTransaction, persisted, and LastError says why', async (t) => {
  const { client, root } = await setup(t);
  const completions: Array<{ transaction: string; result: number; error: string }> = [];
  const unsubscribe = await client.subscribe({ completed: (c) => completions.push(c) });
  const err = await rejection(t, client.markAndWait(true));
  await unsubscribe();
  t.is(err.code, 'DEVICE_NOT_FOUND');
  const rec = await client.getProperty('LastTransaction');
  if (rec === null) throw new Error('no LastTransaction');
  t.is(rec.kind, 'mark-good');
  t.is(rec.result, 1);
  t.is(rec.code, 'DEVICE_NOT_FOUND');
  t.deepEqual(completions, [{ transaction: rec.transaction, result: 1, error: rec.error ?? '' }]);
  t.is(await client.getProperty('LastError'), rec.error ?? '');
  const persisted = JSON.parse(await readFile(path.join(root, 'run/cos-agent/last-transaction.json'), 'utf8')) as { transaction: string; code: string };
  t.is(persisted.transaction, rec.transaction);
  t.is(persisted.code, 'DEVICE_NOT_FOUND');
});

test('with the packaging policy, a non-root caller may read properties but every state-changing method is refused', async (t) => {
  const { bus, client } = await setup(t);
  t.deepEqual(await asUser(65534, bus, 'getProperty', 'Operation'), { ok: true, value: 'idle' });
  t.like(await asUser(65534, bus, 'getProperty', 'Slots'), { ok: true });
  for (const call of ['upgrade', 'cancel', 'markGood', 'runStage']) {
    const r = await asUser(65534, bus, call);
    t.is(r.code, 'ACCESS_DENIED', `${call}: ${JSON.stringify(r)}`);
  }
  t.is(await client.getProperty('LastTransaction'), null, 'no job ran');
});

test('when a looser policy lets the call through, the service itself refuses a non-root caller (uid from the bus)', async (t) => {
  const { bus, client, cosd } = await setup(t, 'open');
  const r = await asUser(65534, bus, 'upgrade');
  t.is(r.code, 'ACCESS_DENIED');
  t.regex(r.message ?? '', /Upgrade is for root only .*uid 65534/);
  t.is((await asUser(65534, bus, 'runStage')).code, 'ACCESS_DENIED', 'checked before the stage name');
  t.is(await client.getProperty('LastTransaction'), null, 'no job ran');
  const refused = cosd.logs.find((l) => l.msg === 'refused a call from a non-root caller');
  t.like(refused, { method: 'Upgrade', uid: 65534 });
  // Root passes the same check.
  t.false(await client.cancel());
});

test('a second cosd on the same bus does not start: the name is taken', async (t) => {
  const { bus, root } = await setup(t);
  const err = await t.throwsAsync(startCosd(bus, { root, env: { AGENT_TEST_DISK: '/dev/cos-test-no-such-disk' } }));
  t.regex(err?.message ?? '', /io\.costoolkit\.Agent1 is already owned/);
});

test('a configuration that does not load is shown in LastError naming file and line; cosd still answers', async (t) => {
  const { client } = await setup(t, 'packaging', { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE="reg/os:v2"\nCHANNEL_UPGRADES="maybe"\n' });
  t.regex(await client.getProperty('LastError'), /cos-upgrade-image:2/);
  t.is(await client.getProperty('Config'), null);
  t.is(await client.getProperty('Operation'), 'idle');
});

test('the effective configuration is published without secrets', async (t) => {
  const { client } = await setup(t, 'packaging', { '/etc/cos-upgrade-image': 'UPGRADE_IMAGE="reg.example/os:v2"\nCHANNEL_UPGRADES=false\n' });
  const config = await client.getProperty('Config');
  t.like(config, { upgradeImage: 'oci:reg.example/os:v2', verify: true, channelUpgrades: false });
  t.is(config?.labels.state, 'COS_STATE');
  t.is(await client.getProperty('LastError'), '');
});
