import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../../src/model/errors.ts';
import {
  basicAuthorization,
  defaultAuthFiles,
  describeCredential,
  findCredential,
  loadAuthFiles,
  loadRegistriesConf,
  normalizeAuthKey,
  parseAuthFile,
  parseRegistriesConf,
  parseWwwAuthenticate,
  registryPolicy,
} from '../../src/oci/auth.ts';
import { SysRoot } from '../../src/sys/root.ts';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

function configError(t: import('ava').ExecutionContext, fn: () => unknown): ConfigError | undefined {
  const e = t.throws(fn, { instanceOf: ConfigError });
  t.is(e?.code, 'CONFIG_INVALID');
  return e;
}

test('an auth entry gives the username and password of its base64 "user:pass" (the password may hold colons)', (t) => {
  const f = parseAuthFile(JSON.stringify({ auths: { 'reg.io:5000': { auth: b64('alice:pa:ss') } } }), '/a.json');
  t.like(f.entries.get('reg.io:5000'), { username: 'alice', password: 'pa:ss', source: '/a.json', key: 'reg.io:5000' });
});

test('identity tokens, registry tokens and plain username/password fields are read', (t) => {
  const f = parseAuthFile(JSON.stringify({
    auths: {
      'a.io': { auth: b64('<token>:'), identitytoken: 'refresh-me' },
      'b.io': { registrytoken: 'bearer-me' },
      'c.io': { username: 'carol', password: 'pw' },
      'empty.io': {},
    },
  }), '/a.json');
  t.like(f.entries.get('a.io'), { username: '<token>', identityToken: 'refresh-me' });
  t.like(f.entries.get('b.io'), { registryToken: 'bearer-me' });
  t.like(f.entries.get('c.io'), { username: 'carol', password: 'pw' });
  t.false(f.entries.has('empty.io'));
});

test('Docker legacy URL keys are normalised (https://index.docker.io/v1/ is docker.io)', (t) => {
  t.is(normalizeAuthKey('https://index.docker.io/v1/'), 'docker.io');
  t.is(normalizeAuthKey('http://Reg.IO:5000/v2/'), 'reg.io:5000');
  t.is(normalizeAuthKey('Quay.io/Org/'), 'quay.io/Org');
  const f = parseAuthFile(JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: b64('u:p') } } }), '/c.json');
  t.like(findCredential([f], 'docker.io', 'library/alpine'), { username: 'u' });
});

test('credential helpers are reported, not used', (t) => {
  const f = parseAuthFile(JSON.stringify({ credsStore: 'desktop', credHelpers: { 'gcr.io': 'gcloud' } }), '/c.json');
  t.deepEqual(f.helpers, ['credsStore desktop', 'credHelpers gcr.io']);
  t.is(f.entries.size, 0);
});

test('a malformed auth file is CONFIG_INVALID naming the file (and the key)', (t) => {
  t.true(configError(t, () => parseAuthFile('{"auths": ', '/etc/containers/auth.json'))?.message.includes('/etc/containers/auth.json'));
  const e = configError(t, () => parseAuthFile(JSON.stringify({ auths: { 'r.io': { auth: b64('no-colon') } } }), '/x.json'));
  t.is(e?.key, 'auths.r.io.auth');
  t.is(configError(t, () => parseAuthFile(JSON.stringify({ auths: { 'r.io': { auth: 5 } } }), '/x.json'))?.key, 'auths.r.io');
  t.is(configError(t, () => parseAuthFile(JSON.stringify({ auths: [] }), '/x.json'))?.key, 'auths');
});

test('the most specific key wins within a file, and the first file with an entry wins', (t) => {
  const a = parseAuthFile(JSON.stringify({ auths: { 'r.io': { auth: b64('host:1') }, 'r.io/team': { auth: b64('team:1') }, 'r.io/team/app': { auth: b64('app:1') } } }), '/a');
  const b = parseAuthFile(JSON.stringify({ auths: { 'r.io/other': { auth: b64('other:1') }, 'q.io': { auth: b64('q:1') } } }), '/b');
  t.is(findCredential([a, b], 'r.io', 'team/app')?.username, 'app');
  t.is(findCredential([a, b], 'r.io', 'team/lib')?.username, 'team');
  t.is(findCredential([a, b], 'r.io', 'other')?.username, 'host');
  t.is(findCredential([b, a], 'r.io', 'other')?.username, 'other');
  t.is(findCredential([a, b], 'q.io', 'x')?.source, '/b');
  t.is(findCredential([a, b], 'z.io', 'x'), undefined);
  t.is(findCredential([a], 'r.io', 'teamx')?.username, 'host');
});

test('the default auth files are the containers ones, then the Docker one in HOME, REGISTRY_AUTH_FILE first', (t) => {
  t.deepEqual(defaultAuthFiles({ HOME: '/home/u' }), ['/run/containers/0/auth.json', '/etc/containers/auth.json', '/home/u/.docker/config.json']);
  t.deepEqual(defaultAuthFiles({}), ['/run/containers/0/auth.json', '/etc/containers/auth.json', '/root/.docker/config.json']);
  t.is(defaultAuthFiles({ REGISTRY_AUTH_FILE: '/etc/cos/auth.json' })[0], '/etc/cos/auth.json');
});

test('auth files are read through the SysRoot, missing ones are skipped', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'oci-auth-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'etc/containers'), { recursive: true });
  await writeFile(path.join(dir, 'etc/containers/auth.json'), JSON.stringify({ auths: { 'r.io': { auth: b64('u:p') } } }));
  const files = await loadAuthFiles(new SysRoot(dir), ['/run/containers/0/auth.json', '/etc/containers/auth.json']);
  t.is(files.length, 1);
  t.is(files[0]?.file, path.join(dir, 'etc/containers/auth.json'));
  t.is(findCredential(files, 'r.io', 'x')?.password, 'p');
  await writeFile(path.join(dir, 'etc/containers/auth.json'), 'not json');
  await t.throwsAsync(loadAuthFiles(new SysRoot(dir), ['/etc/containers/auth.json']), { instanceOf: ConfigError });
});

test('error messages say which credentials were used, or which files had none', (t) => {
  t.is(describeCredential(undefined, ['/a', '/b']), 'anonymously (no credentials for it in /a, /b)');
  t.is(describeCredential({ username: 'alice', source: '/a', key: 'r.io' }, []), 'with user "alice" from /a (auths key "r.io")');
  t.true(describeCredential({ username: '<token>', identityToken: 'x', source: '/a', key: 'r.io' }, []).includes('an identity token'));
  t.is(basicAuthorization('u', 'p:w'), `Basic ${b64('u:p:w')}`);
});

// ---------------------------------------------------------------------------------------------------------------
// registries.conf

test('registries.conf v2 entries give insecure and blocked per location, the longest prefix winning', (t) => {
  const conf = parseRegistriesConf(`
unqualified-search-registries = ["docker.io"]

[[registry]]
location = "lan-registry:5000"
insecure = true

[[registry]]
prefix = "lan-registry:5000/secure"
location = "lan-registry:5000/secure"

[[registry]]
location = "bad.io"
blocked = true

[[registry]]
prefix = "*.corp.example"
location = "mirror.corp.example"
insecure = true
`, '/etc/containers/registries.conf');
  t.deepEqual(registryPolicy(conf, 'lan-registry:5000', 'os/image'), { insecure: true, blocked: false, prefix: 'lan-registry:5000' });
  t.like(registryPolicy(conf, 'lan-registry:5000', 'secure/x'), { insecure: false, prefix: 'lan-registry:5000/secure' });
  t.like(registryPolicy(conf, 'lan-registry:5000', 'securex/y'), { insecure: true });
  t.like(registryPolicy(conf, 'bad.io', 'x'), { blocked: true });
  t.like(registryPolicy(conf, 'reg.corp.example:443', 'x'), { insecure: true });
  t.deepEqual(registryPolicy(conf, 'quay.io', 'x'), { insecure: false, blocked: false });
  t.deepEqual(registryPolicy(undefined, 'quay.io', 'x'), { insecure: false, blocked: false });
});

test('registries.conf v1 insecure and block lists are understood', (t) => {
  const conf = parseRegistriesConf('[registries.insecure]\nregistries = ["old:5000"]\n[registries.block]\nregistries = ["evil.io", "old:5000"]\n', '/r.conf');
  t.deepEqual(registryPolicy(conf, 'old:5000', 'x'), { insecure: true, blocked: true, prefix: 'old:5000' });
  t.like(registryPolicy(conf, 'evil.io', 'x'), { insecure: false, blocked: true });
});

test('bad TOML in registries.conf is CONFIG_INVALID naming the file and line', (t) => {
  const e = configError(t, () => parseRegistriesConf('[[registry]]\nlocation = "a"\ninsecure = yes\n', '/etc/containers/registries.conf'));
  t.is(e?.file, '/etc/containers/registries.conf');
  t.is(e?.line, 3);
});

test('bad values in registries.conf are CONFIG_INVALID naming the key', (t) => {
  t.is(configError(t, () => parseRegistriesConf('[[registry]]\nlocation = "a"\ninsecure = "true"\n', '/r'))?.key, 'registry[0].insecure');
  t.is(configError(t, () => parseRegistriesConf('[[registry]]\ninsecure = true\n', '/r'))?.key, 'registry[0]');
  t.is(configError(t, () => parseRegistriesConf('[registries.insecure]\nregistries = "x"\n', '/r'))?.key, 'registries.insecure.registries');
});

test('a missing registries.conf is an empty configuration', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'oci-regconf-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.deepEqual((await loadRegistriesConf(new SysRoot(dir), '/etc/containers/registries.conf')).entries, []);
  await mkdir(path.join(dir, 'etc'));
  await writeFile(path.join(dir, 'etc/r.conf'), '[[registry]]\nlocation = "x.io"\ninsecure = true\n');
  t.like(registryPolicy(await loadRegistriesConf(new SysRoot(dir), '/etc/r.conf'), 'x.io', 'a'), { insecure: true });
});

// ---------------------------------------------------------------------------------------------------------------
// WWW-Authenticate

test('a Bearer challenge gives realm, service and scope (quoted commas kept)', (t) => {
  const c = parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push"');
  t.deepEqual(c, [{ scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull,push' } }]);
});

test('Basic challenges, unquoted values, escapes and several challenges parse', (t) => {
  t.deepEqual(parseWwwAuthenticate('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  t.deepEqual(parseWwwAuthenticate('Bearer realm=http://h/token, error=invalid_token'), [{ scheme: 'bearer', params: { realm: 'http://h/token', error: 'invalid_token' } }]);
  t.deepEqual(parseWwwAuthenticate('Basic realm="a \\"b\\"", Bearer realm="r", service="s"'), [
    { scheme: 'basic', params: { realm: 'a "b"' } },
    { scheme: 'bearer', params: { realm: 'r', service: 's' } },
  ]);
  t.deepEqual(parseWwwAuthenticate(''), []);
});
