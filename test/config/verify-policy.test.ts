import test from 'ava';
import type { AgentError } from '../../src/model/errors.ts';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { dirSourceRefusedBy, loadImagePolicy, parsePolicyFile, ruleFor } from '../../src/config/verify-policy.ts';
import { ConfigError } from '../../src/model/errors.ts';
import { SysRoot } from '../../src/sys/root.ts';
import { resolveConfig } from '../../src/config/resolve.ts';
import type { AgentConfig } from '../../src/model/config.ts';

const POLICY = `apiVersion: io.costoolkit.agent/v1
kind: VerificationPolicy
default:
  keys: [/etc/cos-agent/keys/release.pub]
  identities:
    - subject: https://github.com/acme/os/.github/workflows/release.yml@refs/heads/main
      issuer: https://token.actions.githubusercontent.com
  requireTlog: false
registries:
  - match: registry.example.com/os
    keys: [/etc/cos-agent/keys/os.pub]
    requireRepository: true
  - match: registry.example.com
    identities: []
`;

test('the longest matching registries[] prefix overrides the default, field by field', (t) => {
  const pf = parsePolicyFile(POLICY, 'policy.yaml');
  t.deepEqual(ruleFor(pf, 'registry.example.com/os/base').keys, ['/etc/cos-agent/keys/os.pub']);
  t.is(ruleFor(pf, 'registry.example.com/os/base').identities?.length, 1, 'identities inherited from default');
  t.deepEqual(ruleFor(pf, 'registry.example.com/other').identities, []);
  t.deepEqual(ruleFor(pf, 'registry.example.com/osx').keys, ['/etc/cos-agent/keys/release.pub'], 'prefix ends at a path segment');
  t.deepEqual(ruleFor(pf, 'docker.io/library/alpine').keys, ['/etc/cos-agent/keys/release.pub']);
});

const bad: Array<[string, string, RegExp]> = [
  ['unknown top-level key', 'defaults:\n  keys: []\n', /policy.yaml:1 \(defaults\)/],
  ['unknown rule key', 'default:\n  key: /k.pub\n', /policy.yaml:2 \(default.key\)/],
  ['identity without issuer', 'default:\n  identities:\n    - subject: a@b\n', /default.identities\[0\]/],
  ['identity with both subject forms', 'default:\n  identities:\n    - subject: a\n      subjectRegExp: b\n      issuer: i\n', /exactly one/],
  ['bad regular expression', 'default:\n  identities:\n    - subjectRegExp: "("\n      issuer: i\n', /subjectRegExp/],
  ['requireTlog not a boolean', 'default:\n  requireTlog: sometimes\n', /policy.yaml:2 \(default.requireTlog\)/],
  ['not YAML', 'default: [\n', /not valid YAML/],
  ['dirSources neither allow nor refuse', 'dirSources: never\n', /policy.yaml:1 \(dirSources\).*must be allow or refuse/],
];
for (const [what, text, re] of bad) {
  test(`a policy file with ${what} is a CONFIG_INVALID naming file, line and key`, (t) => {
    const err = t.throws(() => parsePolicyFile(text, 'policy.yaml'));
    t.true(err instanceof ConfigError);
    t.regex(err?.message ?? '', re);
  });
}

test('dirSources: refuse refuses dir: sources; allow, no key or no policy file allows them', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'policy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = new SysRoot(dir);
  t.is(await dirSourceRefusedBy(root), null, 'no policy file');
  await mkdir(path.join(dir, 'etc/cos-agent'), { recursive: true });
  const file = path.join(dir, 'etc/cos-agent/policy.yaml');
  await writeFile(file, 'default:\n  keys: [/k.pub]\n');
  t.is(await dirSourceRefusedBy(root), null, 'no dirSources key');
  await writeFile(file, 'dirSources: allow\n');
  t.is(await dirSourceRefusedBy(root), null);
  await writeFile(file, 'dirSources: refuse\n');
  t.is(await dirSourceRefusedBy(root), file);
  t.is(await dirSourceRefusedBy(root, null), null, "the daemon's view: no valid policy file");
  t.is(await dirSourceRefusedBy(root, 'dirSources: refuse\n'), file, "the daemon's last valid policy");
  t.is(parsePolicyFile('dirSources: refuse\n', 'p').dirSources, 'refuse');
});

test('keys come from the policy file and from COSIGN_PUBLIC_KEY_LOCATION; URLs and KMS are refused', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'policy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'etc/cos-agent/keys'), { recursive: true });
  await writeFile(path.join(dir, 'etc/cos-agent/keys/release.pub'), '-----BEGIN PUBLIC KEY-----\nA\n-----END PUBLIC KEY-----\n');
  await writeFile(path.join(dir, 'etc/cos-agent/keys/extra.pub'), '-----BEGIN PUBLIC KEY-----\nB\n-----END PUBLIC KEY-----\n');
  await writeFile(path.join(dir, 'etc/cos-agent/policy.yaml'), 'default:\n  keys: [/etc/cos-agent/keys/release.pub]\n');
  const base = resolveConfig([]);
  const config: AgentConfig = { ...base, cosign: { ...base.cosign, publicKeyLocations: ['/etc/cos-agent/keys/extra.pub'], repository: 'reg.example/sigs' } };
  const ip = await loadImagePolicy(new SysRoot(dir), config, { registry: 'reg.example', repository: 'os' });
  t.deepEqual(ip.policy.keys.map((k) => k.id), ['/etc/cos-agent/keys/release.pub', '/etc/cos-agent/keys/extra.pub']);
  t.is(ip.signatureRepository, 'reg.example/sigs');
  t.false(ip.policy.requireTlog, 'no trusted root, no tlog requirement');

  for (const loc of ['https://example.com/cosign.pub', 'k8s://ns/secret', 'awskms:///alias/x', 'env://KEY']) {
    const c = { ...config, cosign: { ...config.cosign, publicKeyLocations: [loc] } };
    const err = await t.throwsAsync(loadImagePolicy(new SysRoot(dir), c, { registry: 'reg.example', repository: 'os' }));
    t.true(err instanceof ConfigError, loc);
    t.regex(err?.message ?? '', /not a local file/);
  }
  const missing = { ...config, cosign: { ...config.cosign, publicKeyLocations: ['/etc/cos-agent/keys/nope.pub'] } };
  const err = await t.throwsAsync(loadImagePolicy(new SysRoot(dir), missing, { registry: 'reg.example', repository: 'os' }));
  t.is((err as AgentError | undefined)?.code, 'VERIFY_FAILED', 'a missing key is a verification failure, not a malformed config');
  t.regex(err?.message ?? '', /nope\.pub.*cannot read the public key/);
});

test('the daemon\'s last valid policy.yaml is used instead of a broken file on disk; null means none, undefined reads the disk', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'policy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'etc/cos-agent/keys'), { recursive: true });
  await writeFile(path.join(dir, 'etc/cos-agent/keys/release.pub'), '-----BEGIN PUBLIC KEY-----\nA\n-----END PUBLIC KEY-----\n');
  await writeFile(path.join(dir, 'etc/cos-agent/policy.yaml'), 'default:\n  key: [oops\n');
  const config = resolveConfig([]);
  const image = { registry: 'reg.example', repository: 'os' };
  const snap = await loadImagePolicy(new SysRoot(dir), config, image, 'default:\n  keys: [/etc/cos-agent/keys/release.pub]\n');
  t.deepEqual(snap.policy.keys.map((k) => k.id), ['/etc/cos-agent/keys/release.pub']);
  t.deepEqual((await loadImagePolicy(new SysRoot(dir), config, image, null)).policy.keys, [], 'the snapshot had no policy file');
  await t.throwsAsync(loadImagePolicy(new SysRoot(dir), config, image), { instanceOf: ConfigError }, 'without a snapshot the broken file is read');
});
