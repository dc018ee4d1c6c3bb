import test from 'ava';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { byteOrder, loadSource, walkYamlFiles } from '../../src/yip/loader.ts';
import { SysRoot } from '../../src/sys/root.ts';
import { dotNotation } from '../../src/yip/dot-notation.ts';
import { stringify } from 'yaml';

async function tree(t: { teardown(fn: () => Promise<void>): void }, files: Record<string, string>): Promise<SysRoot> {
  const dir = await mkdtemp(path.join(tmpdir(), 'yip-load-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [p, text] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, p)), { recursive: true });
    await writeFile(path.join(dir, p), text);
  }
  return new SysRoot(dir);
}

const doc = (hostname: string): string => `stages:\n  boot:\n    - hostname: ${hostname}\n`;

test('byte-wise order: upper case before lower, a dot before digits, UTF-8 bytes', (t) => {
  t.deepEqual(['b', 'a', 'B', '10_a.yaml', '10_a', '1.yaml', 'é', 'z'].sort(byteOrder), ['1.yaml', '10_a', '10_a.yaml', 'B', 'a', 'b', 'z', 'é']);
});

test('the walk: recursive, depth-first, byte-wise, .yaml/.yml only (hidden too), symlinked files followed, symlinked dirs not descended', async (t) => {
  const root = await tree(t, {
    '/oem/10_a/x.yaml': doc('x'), '/oem/10_a.yaml': doc('a'), '/oem/02.yml': doc('b'), '/oem/.hidden.yaml': doc('h'),
    '/oem/notes.txt': 'x', '/oem/UP.YAML': doc('u'), '/oem/sub/deep/z.yaml': doc('z'), '/elsewhere/l.yaml': doc('l'), '/elsewhere/d/in.yaml': doc('i'),
  });
  // Absolute link targets are the root's paths (followed inside the root, as on a host whose root is DIR).
  await symlink('/elsewhere/l.yaml', root.path('/oem/05_link.yaml'));
  await symlink('/elsewhere/d', root.path('/oem/06_dirlink'));
  t.deepEqual(await walkYamlFiles(root, '/oem'), ['/oem/.hidden.yaml', '/oem/02.yml', '/oem/05_link.yaml', '/oem/10_a/x.yaml', '/oem/10_a.yaml', '/oem/sub/deep/z.yaml']);
  const r = await loadSource(root, '/oem/');
  t.deepEqual(r.documents.map((d) => [d.origin, d.config.stages['boot']?.[0]?.hostname]), [
    ['/oem/.hidden.yaml', 'h'], ['/oem/02.yml', 'b'], ['/oem/05_link.yaml', 'l'], ['/oem/10_a/x.yaml', 'x'], ['/oem/10_a.yaml', 'a'], ['/oem/sub/deep/z.yaml', 'z'],
  ]);
  t.deepEqual(r.problems, []);
});

test('a source that is a symlink to a directory is walked only with a trailing slash (go-vfs Lstat of the root)', async (t) => {
  const root = await tree(t, { '/real/a.yaml': doc('a') });
  await mkdir(root.path('/system'), { recursive: true });
  await symlink('../real', root.path('/system/oem'));
  t.deepEqual((await loadSource(root, '/system/oem')).documents, []);
  t.deepEqual((await loadSource(root, '/system/oem/')).documents.map((d) => d.origin), ['/system/oem/a.yaml']);
});

test('a bad file is skipped with its problem (file, line, step, key); the files around it load', async (t) => {
  const root = await tree(t, {
    '/oem/01.yaml': doc('one'),
    '/oem/02.yaml': 'stages:\n  boot:\n    - files:\n        - path: /x\n          permissions: "0644"\n',
    '/oem/03.yaml': 'stages: {boot: [{commands: [a\n',
    '/oem/04.yaml': doc('four'),
    '/oem/05.yaml': doc('five'),
  });
  await chmod(root.path('/oem/05.yaml'), 0o000);
  const r = await loadSource(root, '/oem');
  const unreadable = process.getuid?.() !== 0; // root reads a 0000 file
  t.deepEqual(r.documents.map((d) => d.origin), ['/oem/01.yaml', '/oem/04.yaml', ...(unreadable ? [] : ['/oem/05.yaml'])]);
  t.like(r.problems[0], { file: '/oem/02.yaml', line: 5, stage: 'boot', step: 0, key: 'files[0].permissions' });
  t.like(r.problems[1], { file: '/oem/03.yaml' });
  t.regex(r.problems[1]?.message ?? '', /^invalid YAML/);
});

test('a single file is read whatever its name; inline text is a document named <STDIN>; a missing path is text, as in yip', async (t) => {
  const root = await tree(t, { '/etc/x.conf': doc('conf') });
  t.deepEqual((await loadSource(root, '/etc/x.conf')).documents.map((d) => [d.origin, d.config.stages['boot']?.[0]?.hostname]), [['/etc/x.conf', 'conf']]);
  t.deepEqual((await loadSource(root, 'stages: {boot: [{hostname: inline}]}')).documents.map((d) => [d.origin, d.config.stages['boot']?.[0]?.hostname]), [['<STDIN>', 'inline']]);
  const missing = await loadSource(root, '/oem/missing.yaml');
  t.deepEqual(missing.documents, []);
  t.regex(missing.problems[0]?.message ?? '', /expected a mapping at the top/);
});

test('a URL goes through the fetcher; without one, or when it fails, a problem names the URL', async (t) => {
  const root = await tree(t, {});
  const got = await loadSource(root, 'http://127.0.0.1:9/c.yaml', { fetch: (u) => Promise.resolve(u.endsWith('c.yaml') ? doc('remote') : '') });
  t.is(got.documents[0]?.config.stages['boot']?.[0]?.hostname, 'remote');
  t.is(got.documents[0]?.origin, 'http://127.0.0.1:9/c.yaml');
  t.regex((await loadSource(root, 'http://127.0.0.1:9/c.yaml')).problems[0]?.message ?? '', /error loading path 'http:\/\/127\.0\.0\.1:9\/c\.yaml'/);
  t.regex((await loadSource(root, 'http://127.0.0.1:9/c.yaml', { fetch: () => Promise.reject(new Error('ECONNREFUSED')) })).problems[0]?.message ?? '', /ECONNREFUSED/);
});

test('the dot-notation modifier turns a kernel command line into a document', async (t) => {
  const root = await tree(t, { '/proc/cmdline': "BOOT_IMAGE=/vmlinuz stages.boot[0].commands[0]='echo beepboop' panic=5\n" });
  const r = await loadSource(root, '/proc/cmdline', { modifier: (text) => stringify(dotNotation(text).value, { version: '1.1' }) });
  t.deepEqual(r.problems, []);
  t.deepEqual(r.documents[0]?.config.stages['boot']?.[0]?.commands, ['echo beepboop']);
  // every value is a string: an int field set on the command line rejects the document, as in yip
  const bad = await loadSource(root, 'stages.boot[0].files[0].permissions=0644 stages.boot[0].files[0].path=/x', { modifier: (text) => stringify(dotNotation(text).value, { version: '1.1' }) });
  t.deepEqual(bad.documents, []);
  t.like(bad.problems[0], { stage: 'boot', step: 0, key: 'files[0].permissions' });
});

test('a file is read inside the root and only when it is a regular file of at most 4 MiB: a link to /dev/zero, a FIFO, a huge file and a link out of the root are problems, the rest load', async (t) => {
  const root = await tree(t, { '/oem/01.yaml': doc('ok'), '/oem/huge.yaml': `# ${'x'.repeat(5 * 1024 * 1024)}\n` });
  await symlink('/dev/zero', root.path('/oem/02_zero.yaml'));
  await symlink('../../../../../../../etc/os-release', root.path('/oem/03_out.yaml'));
  execFileSync('mkfifo', [root.path('/oem/04_fifo.yaml')]);
  const r = await loadSource(root, '/oem');
  t.deepEqual(r.documents.map((d) => d.origin), ['/oem/01.yaml']);
  t.deepEqual(r.problems.map((p) => p.file), ['/oem/02_zero.yaml', '/oem/03_out.yaml', '/oem/huge.yaml']);
  t.regex(r.problems[0]?.message ?? '', /error loading path '\/oem\/02_zero\.yaml': .*ENOENT/, 'the link is followed inside the root, where there is no /dev/zero');
  t.regex(r.problems[2]?.message ?? '', /is over 4194304 bytes/);
});

test('a source that is a link to an absolute path, given with a trailing slash, is walked inside the root, never on the host', async (t) => {
  const root = await tree(t, { '/real/a.yaml': doc('inside') });
  await mkdir(root.path('/system'), { recursive: true });
  // /real/ also exists on no host: were the link followed by the kernel, nothing (or the host's files) would load.
  await symlink('/real', root.path('/system/oem'));
  t.deepEqual((await loadSource(root, '/system/oem')).documents, []);
  const r = await loadSource(root, '/system/oem/');
  t.deepEqual(r.documents.map((d) => [d.origin, d.config.stages['boot']?.[0]?.hostname]), [['/system/oem/a.yaml', 'inside']]);
  // A parent that is such a link: followed inside the root too.
  await symlink('/system', root.path('/sys2'));
  t.deepEqual((await loadSource(root, '/sys2/oem/')).documents.map((d) => d.origin), ['/sys2/oem/a.yaml']);
});
