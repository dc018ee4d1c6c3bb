/** image-path.ts, pure: paths of the new image resolved inside it, from a fake lstat (no I/O). */
import test from 'ava';
import { AgentError } from '../../../src/model/errors.ts';
import { MAX_LINKS } from '../../../src/oci/safe-path.ts';
import { followInImage, planImageDir, splitImagePath, type ImageLookup, type ImageNode } from '../../../src/actions/upgrade/image-path.ts';

/**
 * A fake image: path -> 'dir' | 'file' | 'fifo' | 'chr' | '-> target'. The root is a directory; anything not listed is
 * missing. Every lookup is recorded (a resolver must never ask about a path outside the image).
 */
function image(spec: Record<string, string>): ImageLookup & { asked: string[] } {
  const asked: string[] = [];
  const lookup = (parts: readonly string[]): ImageNode => {
    const p = parts.join('/');
    asked.push(p);
    if (p === '') return { kind: 'dir' };
    const v = spec[p];
    if (v === undefined) return { kind: 'missing' };
    if (v === 'dir') return { kind: 'dir' };
    if (v === 'file') return { kind: 'file' };
    if (v === 'fifo') return { kind: 'other', type: 'FIFO' };
    if (v === 'chr') return { kind: 'other', type: 'character device' };
    if (v.startsWith('-> ')) return { kind: 'symlink', target: v.slice(3) };
    throw new Error(`bad spec ${v}`);
  };
  return Object.assign(lookup, { asked });
}

function unsafe(t: { fail(m: string): void }, fn: () => unknown): AgentError {
  try {
    fn();
  } catch (e) {
    if (e instanceof AgentError) return e;
    throw e;
  }
  t.fail('expected an AgentError');
  throw new Error('unreachable');
}

const BASE = { etc: 'dir', usr: 'dir', 'usr/lib': 'dir', 'usr/lib/os-release': 'file', tmp: 'dir', dev: 'dir' };

test('splitImagePath drops empty and . components and keeps ..', (t) => {
  t.deepEqual(splitImagePath('/usr//lib/./os-release'), ['usr', 'lib', 'os-release']);
  t.deepEqual(splitImagePath('../a/..'), ['..', 'a', '..']);
  t.deepEqual(splitImagePath(''), []);
});

test('followInImage: a plain file resolves to itself with no link followed', (t) => {
  const r = followInImage('etc/os-release', image({ ...BASE, 'etc/os-release': 'file' }));
  t.deepEqual(r, { ok: true, parts: ['etc', 'os-release'], node: { kind: 'file' }, links: 0 });
});

test('followInImage: an absolute link (/etc/os-release -> /usr/lib/os-release) resolves from the image root, not the host', (t) => {
  const r = followInImage('etc/os-release', image({ ...BASE, 'etc/os-release': '-> /usr/lib/os-release' }));
  t.deepEqual(r, { ok: true, parts: ['usr', 'lib', 'os-release'], node: { kind: 'file' }, links: 1 });
  const rel = followInImage('etc/os-release', image({ ...BASE, 'etc/os-release': '-> ../usr/lib/os-release' }));
  t.like(rel, { ok: true, parts: ['usr', 'lib', 'os-release'], node: { kind: 'file' } });
});

test('followInImage: a link to a host file is looked up inside the image (missing there), never on the host', (t) => {
  const img = image({ ...BASE, 'etc/os-release': '-> /root/host-secret/os-release' });
  const r = followInImage('etc/os-release', img);
  t.like(r, { ok: true, parts: ['root'], node: { kind: 'missing' } });
  t.false(img.asked.some((p) => p.startsWith('/')), 'only paths below the image root are looked up');
});

test('followInImage: .. is clamped at the image root, in names and in link targets', (t) => {
  t.like(followInImage('../../etc/os-release', image({ ...BASE, 'etc/os-release': 'file' })), { ok: true, parts: ['etc', 'os-release'] });
  const r = followInImage('etc/os-release', image({ ...BASE, 'etc/os-release': '-> ../../../../../usr/lib/os-release' }));
  t.like(r, { ok: true, parts: ['usr', 'lib', 'os-release'], node: { kind: 'file' } });
  // evil -> / then evil/etc/...: the image's own etc.
  t.like(followInImage('evil/etc/os-release', image({ ...BASE, evil: '-> /', 'etc/os-release': 'file' })), { ok: true, parts: ['etc', 'os-release'] });
  t.like(followInImage('etc/..', image(BASE)), { ok: true, parts: [], node: { kind: 'dir' } });
});

test('followInImage: directory links on the way are followed inside the image', (t) => {
  const r = followInImage('lib/os-release', image({ ...BASE, lib: '-> usr/lib' }));
  t.like(r, { ok: true, parts: ['usr', 'lib', 'os-release'], node: { kind: 'file' }, links: 1 });
});

test('followInImage: a link to /dev/zero is the image\'s dev/zero: missing, or a device (never the host\'s)', (t) => {
  t.like(followInImage('etc/os-release', image({ ...BASE, 'etc/os-release': '-> /dev/zero' })), { ok: true, parts: ['dev', 'zero'], node: { kind: 'missing' } });
  t.like(followInImage('etc/os-release', image({ ...BASE, 'etc/os-release': '-> /dev/zero', 'dev/zero': 'chr' })), { ok: true, node: { kind: 'other', type: 'character device' } });
  t.like(followInImage('etc/os-release', image({ ...BASE, 'etc/os-release': 'fifo' })), { ok: true, node: { kind: 'other', type: 'FIFO' } });
});

test('followInImage: loops end after MAX_LINKS links (a <-> b, a self link, proc -> /proc)', (t) => {
  t.deepEqual(followInImage('etc/a', image({ ...BASE, 'etc/a': '-> b', 'etc/b': '-> a' })), { ok: false, reason: 'loop', at: 'etc/a' });
  t.like(followInImage('etc/os-release', image({ ...BASE, 'etc/os-release': '-> os-release' })), { ok: false, reason: 'loop' });
  t.like(followInImage('proc', image({ proc: '-> /proc' })), { ok: false, reason: 'loop' });
});

test('followInImage: a chain of exactly MAX_LINKS links resolves, one more is a loop', (t) => {
  const chain = (n: number): Record<string, string> => {
    const spec: Record<string, string> = { ...BASE, [`l${n}`]: '-> usr/lib/os-release' };
    for (let i = 1; i < n; i++) spec[`l${i}`] = `-> l${i + 1}`;
    return spec;
  };
  t.like(followInImage('l1', image(chain(MAX_LINKS))), { ok: true, parts: ['usr', 'lib', 'os-release'], links: MAX_LINKS });
  t.like(followInImage('l1', image(chain(MAX_LINKS + 1))), { ok: false, reason: 'loop' });
  t.like(followInImage('l1', image(chain(3)), 2), { ok: false, reason: 'loop' });
});

test('followInImage: a file or a missing directory on the way', (t) => {
  t.deepEqual(followInImage('usr/lib/os-release/x', image(BASE)), { ok: false, reason: 'not-a-directory', at: 'usr/lib/os-release' });
  t.like(followInImage('nope/os-release', image(BASE)), { ok: true, parts: ['nope'], node: { kind: 'missing' } });
});

test('planImageDir: real directories are ok; missing ones are created from the first missing component', (t) => {
  t.deepEqual(planImageDir('usr/local', image({ usr: 'dir', 'usr/local': 'dir' })), { action: 'ok', parts: ['usr', 'local'] });
  t.deepEqual(planImageDir('usr/local', image({ usr: 'dir' })), { action: 'create', parts: ['usr', 'local'], from: 1 });
  t.deepEqual(planImageDir('usr/local', image({})), { action: 'create', parts: ['usr', 'local'], from: 0 });
});

test('planImageDir: a mount point that is a link leading nowhere in the image (a host path, a loop) is replaced', (t) => {
  for (const target of ['/tmp/host-canary/proc', '/proc', '../../../../host', 'nowhere', '/dev/zero']) {
    t.deepEqual(planImageDir('proc', image({ ...BASE, proc: `-> ${target}` })), { action: 'replace', parts: ['proc'], target }, target);
  }
  t.deepEqual(planImageDir('dev/pts', image({ ...BASE, 'dev/pts': '-> /dev/pts' })), { action: 'replace', parts: ['dev', 'pts'], target: '/dev/pts' });
  t.deepEqual(planImageDir('usr/local', image({ ...BASE, 'usr/local': '-> /usr/local' })), { action: 'replace', parts: ['usr', 'local'], target: '/usr/local' });
  // A link to a file of the image is no directory either.
  t.deepEqual(planImageDir('oem', image({ ...BASE, oem: '-> usr/lib/os-release' })), { action: 'replace', parts: ['oem'], target: 'usr/lib/os-release' });
});

test('planImageDir: a mount point that links to a directory of the image is UNPACK_UNSAFE naming it', (t) => {
  for (const target of ['/etc', 'etc', '../usr/lib', '..', '/']) {
    const e = unsafe(t, () => planImageDir('proc', image({ ...BASE, proc: `-> ${target}` })));
    t.is(e.code, 'UNPACK_UNSAFE', target);
    t.regex(e.message, /the image's "proc" is a symbolic link to .*mount point and must be a real directory/, target);
  }
});

test('planImageDir: a link on the way (usr -> /host/dir for usr/local) is UNPACK_UNSAFE naming it, dangling or not', (t) => {
  for (const target of ['/some/host/dir', 'usr2', '/usr']) {
    const e = unsafe(t, () => planImageDir('usr/local', image({ usr: `-> ${target}`, usr2: 'dir' })));
    t.is(e.code, 'UNPACK_UNSAFE');
    t.is(e.message, `the image's "usr" is a symbolic link to ${JSON.stringify(target)}: "usr/local" must be a directory inside the image, and it is not followed out of it`);
  }
  t.regex(unsafe(t, () => planImageDir('dev/pts', image({ dev: '-> /dev' }))).message, /"dev" is a symbolic link/);
});

test('planImageDir: a file, FIFO or device where a directory belongs is UNPACK_UNSAFE naming it', (t) => {
  t.is(unsafe(t, () => planImageDir('tmp', image({ tmp: 'file' }))).message, `the image's "tmp" is a regular file: "tmp" must be a directory inside the image`);
  t.regex(unsafe(t, () => planImageDir('dev/pts', image({ dev: 'fifo' }))).message, /"dev" is a FIFO: "dev\/pts" must be a directory/);
  t.regex(unsafe(t, () => planImageDir('sys', image({ sys: 'chr' }))).message, /"sys" is a character device/);
});

test('planImageDir refuses a path with .. (a programming error, not an image problem)', (t) => {
  t.throws(() => planImageDir('usr/../etc', image({})), { message: /without "\.\."/ });
});
