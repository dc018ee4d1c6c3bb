import test from 'ava';
import { AgentError } from '../../src/model/errors.ts';
import {
  formatReference,
  isLoopbackRegistry,
  manifestReference,
  parseReference,
  registryApiHost,
  registryHostname,
} from '../../src/oci/reference.ts';

const D = `sha256:${'a'.repeat(64)}`;

const valid: Array<[string, { registry: string; repository: string; tag?: string; digest?: string }]> = [
  ['alpine', { registry: 'docker.io', repository: 'library/alpine', tag: 'latest' }],
  ['alpine:3.20', { registry: 'docker.io', repository: 'library/alpine', tag: '3.20' }],
  ['user/app:1.0', { registry: 'docker.io', repository: 'user/app', tag: '1.0' }],
  ['docker.io/alpine', { registry: 'docker.io', repository: 'library/alpine', tag: 'latest' }],
  ['index.docker.io/library/alpine:edge', { registry: 'docker.io', repository: 'library/alpine', tag: 'edge' }],
  ['quay.io/costoolkit/releases-green:cos-system-0.8.14-10', { registry: 'quay.io', repository: 'costoolkit/releases-green', tag: 'cos-system-0.8.14-10' }],
  ['localhost:5000/foo/bar:tag', { registry: 'localhost:5000', repository: 'foo/bar', tag: 'tag' }],
  ['localhost/foo', { registry: 'localhost', repository: 'foo', tag: 'latest' }],
  ['127.0.0.1:5000/os/image', { registry: '127.0.0.1:5000', repository: 'os/image', tag: 'latest' }],
  [`127.0.0.1:5000/os/image@${D}`, { registry: '127.0.0.1:5000', repository: 'os/image', digest: D }],
  [`127.0.0.1:5000/os/image:v1@${D}`, { registry: '127.0.0.1:5000', repository: 'os/image', tag: 'v1', digest: D }],
  ['[::1]:5000/repo:tag', { registry: '[::1]:5000', repository: 'repo', tag: 'tag' }],
  ['Registry.Example.COM/a/b', { registry: 'registry.example.com', repository: 'a/b', tag: 'latest' }],
  ['docker://registry.example.com/x/y:z', { registry: 'registry.example.com', repository: 'x/y', tag: 'z' }],
  ['reg.io/a__b/c-d.e_f---g:T_1.x-y', { registry: 'reg.io', repository: 'a__b/c-d.e_f---g', tag: 'T_1.x-y' }],
  [`reg.io/a@sha512:${'b'.repeat(128)}`, { registry: 'reg.io', repository: 'a', digest: `sha512:${'b'.repeat(128)}` }],
];

for (const [input, expected] of valid) {
  test(`it parses ${JSON.stringify(input)}`, (t) => {
    t.deepEqual(parseReference(input), expected);
  });
}

const invalid: Array<[string, string]> = [
  ['', 'the empty string'],
  ['Alpine', 'an uppercase repository'],
  ['reg.io/Foo/bar', 'an uppercase path component'],
  ['repo:', 'an empty tag'],
  ['repo:-x', 'a tag starting with a dash'],
  [`repo:${'t'.repeat(129)}`, 'a tag longer than 128 characters'],
  ['repo@sha256:abc', 'a short digest'],
  [`repo@sha256:${'A'.repeat(64)}`, 'an uppercase digest'],
  [`repo@md5:${'a'.repeat(32)}`, 'an unknown digest algorithm'],
  ['oci:/tmp/layout:tag', 'an oci: transport'],
  ['https://reg.io/repo', 'a URL'],
  ['host:99999/repo', 'a port out of range'],
  ['a//b', 'an empty path component'],
  ['/repo', 'a leading slash'],
  ['repo/', 'a trailing slash'],
  ['reg io/repo', 'whitespace'],
  ['reg.io/', 'a registry without repository'],
  ['reg_io.com:5000/repo', 'an invalid host name'],
  ['reg.io/a-/b', 'a component ending with a separator'],
  [`reg.io/${'a'.repeat(260)}`, 'a name longer than 255 characters'],
];

for (const [input, what] of invalid) {
  test(`when given ${what}, it throws REFERENCE_INVALID naming the reference`, (t) => {
    const e = t.throws(() => parseReference(input), { instanceOf: AgentError });
    t.is(e?.code, 'REFERENCE_INVALID');
    t.true(e?.message.includes(JSON.stringify(input)));
  });
}

test('formatting gives the fully qualified reference, which parses back to the same reference', (t) => {
  for (const [input, expected] of valid) {
    const s = formatReference(expected);
    t.deepEqual(parseReference(s), expected, input);
  }
  t.is(formatReference(parseReference('alpine')), 'docker.io/library/alpine:latest');
  t.is(formatReference(parseReference(`reg.io/a:v1@${D}`)), `reg.io/a:v1@${D}`);
});

test('the manifest reference is the digest when there is one, else the tag', (t) => {
  t.is(manifestReference(parseReference(`reg.io/a:v1@${D}`)), D);
  t.is(manifestReference(parseReference('reg.io/a:v1')), 'v1');
});

test('Docker Hub is spoken to at registry-1.docker.io, other registries at their own name', (t) => {
  t.is(registryApiHost('docker.io'), 'registry-1.docker.io');
  t.is(registryApiHost('quay.io'), 'quay.io');
  t.is(registryApiHost('127.0.0.1:5000'), '127.0.0.1:5000');
});

test('the hostname of a registry drops the port and IPv6 brackets', (t) => {
  t.is(registryHostname('reg.io:5000'), 'reg.io');
  t.is(registryHostname('reg.io'), 'reg.io');
  t.is(registryHostname('[::1]:5000'), '::1');
});

test('loopback registries are 127.0.0.0/8, localhost and ::1, nothing else', (t) => {
  for (const r of ['127.0.0.1:5000', '127.1.2.3', 'localhost', 'localhost:5000', 'foo.localhost:1', '[::1]:5000', '[::1]']) t.true(isLoopbackRegistry(r), r);
  for (const r of ['10.0.0.1:5000', '128.0.0.1', 'registry.local', 'localhost.example.com', 'docker.io', '[::2]:5000', '127.0.0.1.nip.io']) t.false(isLoopbackRegistry(r), r);
});
