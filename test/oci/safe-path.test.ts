import test from 'ava';
import { AgentError } from '../../src/model/errors.ts';
import {
  MAX_LINKS,
  normaliseEntryName,
  parsePaxRecords,
  parseWhiteout,
  paxXattrs,
  quoteDumpField,
  resolveInRoot,
  xattrRestoreScript,
  type NodeKind,
} from '../../src/oci/safe-path.ts';

function code(t: { fail(m: string): void }, fn: () => unknown): AgentError {
  try {
    fn();
  } catch (e) {
    if (e instanceof AgentError) return e;
    throw e;
  }
  t.fail('expected an AgentError');
  throw new Error('unreachable');
}

test('entry names lose a leading ./, empty and . components, and resolve .. lexically', (t) => {
  t.deepEqual(normaliseEntryName('./usr/bin/ls'), ['usr', 'bin', 'ls']);
  t.deepEqual(normaliseEntryName('usr//bin/./ls'), ['usr', 'bin', 'ls']);
  t.deepEqual(normaliseEntryName('usr/lib/'), ['usr', 'lib']);
  t.deepEqual(normaliseEntryName('a/b/../c'), ['a', 'c']);
  t.deepEqual(normaliseEntryName('./'), []);
  t.deepEqual(normaliseEntryName('.'), []);
  t.deepEqual(normaliseEntryName('a/..'), []);
  t.deepEqual(normaliseEntryName('...'), ['...']);
});

test('an entry name that leaves the root is refused with UNPACK_UNSAFE naming it', (t) => {
  for (const name of ['../x', 'a/../../x', './../x', '..', 'a/b/../../../etc/passwd']) {
    const e = code(t, () => normaliseEntryName(name));
    t.is(e.code, 'UNPACK_UNSAFE', name);
    t.true(e.message.includes(JSON.stringify(name)), e.message);
  }
});

test('an absolute entry name is refused with UNPACK_UNSAFE', (t) => {
  for (const name of ['/etc/x', '/', '//x']) {
    const e = code(t, () => normaliseEntryName(name));
    t.is(e.code, 'UNPACK_UNSAFE');
    t.true(e.message.includes(JSON.stringify(name)));
  }
});

test('an entry name holding a NUL byte is refused with UNPACK_UNSAFE', (t) => {
  t.is(code(t, () => normaliseEntryName('a\0/../../x')).code, 'UNPACK_UNSAFE');
});

/** A fake tree: paths below the root -> 'dir' or a symlink target or 'file'. */
function tree(nodes: Record<string, string>): (parts: readonly string[]) => NodeKind {
  return (parts) => {
    const v = nodes[parts.join('/')];
    if (v === undefined) return { kind: 'missing' };
    if (v === 'dir') return { kind: 'dir' };
    if (v === 'file') return { kind: 'other' };
    return { kind: 'symlink', target: v.slice('->'.length) };
  };
}

test('a relative symlink in a parent directory is followed inside the root (Debian lib -> usr/lib)', (t) => {
  const fs = tree({ usr: 'dir', 'usr/lib': 'dir', lib: '->usr/lib' });
  t.deepEqual(resolveInRoot([], ['lib', 'x86_64-linux-gnu'], fs, 'e'), { parts: ['usr', 'lib', 'x86_64-linux-gnu'], missingFrom: 2 });
  t.deepEqual(resolveInRoot([], ['lib'], fs, 'e'), { parts: ['usr', 'lib'], missingFrom: -1 });
});

test('an absolute symlink target restarts at the root of the target, not the host', (t) => {
  const fs = tree({ evil: '->/', etc: 'dir' });
  t.deepEqual(resolveInRoot([], ['evil', 'etc'], fs, 'e'), { parts: ['etc'], missingFrom: -1 });
  const fs2 = tree({ a: 'dir', 'a/link': '->/usr/../usr/lib', usr: 'dir', 'usr/lib': 'dir' });
  t.deepEqual(resolveInRoot(['a'], ['link'], fs2, 'e').parts, ['usr', 'lib']);
});

test('.. in a symlink target stops at the root', (t) => {
  const fs = tree({ evil: '->../../..', deep: 'dir', 'deep/er': '->../../../../sentinel' });
  t.deepEqual(resolveInRoot([], ['evil', 'x'], fs, 'e'), { parts: ['x'], missingFrom: 0 });
  t.deepEqual(resolveInRoot(['deep'], ['er'], fs, 'e'), { parts: ['sentinel'], missingFrom: 0 });
});

test('a relative symlink resolves against the real directory holding it', (t) => {
  // lib -> usr/lib, and usr/lib/up -> ../share: up resolves from usr/lib, so it is usr/share.
  const fs = tree({ lib: '->usr/lib', usr: 'dir', 'usr/lib': 'dir', 'usr/lib/up': '->../share', 'usr/share': 'dir' });
  t.deepEqual(resolveInRoot([], ['lib', 'up'], fs, 'e').parts, ['usr', 'share']);
});

test('a missing component is kept as a name, and .. back above it finds existing directories again', (t) => {
  const fs = tree({ a: 'dir', b: '->a/missing/../real', 'a/real': 'dir' });
  t.deepEqual(resolveInRoot([], ['b'], fs, 'e'), { parts: ['a', 'real'], missingFrom: -1 });
});

test('a symlink loop is refused with UNPACK_UNSAFE (ELOOP) naming the entry', (t) => {
  const loops = [tree({ a: '->b', b: '->a' }), tree({ self: '->self' }), tree({ grow: '->grow/x' })];
  for (const [i, fs] of loops.entries()) {
    const e = code(t, () => resolveInRoot([], [['a', 'self', 'grow'][i] as string, 'x'], fs, 'tar entry "a/x"'));
    t.is(e.code, 'UNPACK_UNSAFE');
    t.regex(e.message, /ELOOP/);
    t.true(e.message.includes('tar entry "a/x"'));
  }
});

test('a chain of exactly MAX_LINKS symlinks still resolves', (t) => {
  const nodes: Record<string, string> = { end: 'dir' };
  for (let i = 0; i < MAX_LINKS; i++) nodes[`l${i}`] = i === MAX_LINKS - 1 ? '->end' : `->l${i + 1}`;
  t.deepEqual(resolveInRoot([], ['l0'], tree(nodes), 'e').parts, ['end']);
  nodes[`l${MAX_LINKS - 1}`] = `->l${MAX_LINKS}`;
  nodes[`l${MAX_LINKS}`] = '->end';
  t.is(code(t, () => resolveInRoot([], ['l0'], tree(nodes), 'e')).code, 'UNPACK_UNSAFE');
});

test('a regular file used as a directory fails with UNPACK_FAILED (ENOTDIR)', (t) => {
  const e = code(t, () => resolveInRoot([], ['f', 'x'], tree({ f: 'file' }), 'tar entry "f/x/y"'));
  t.is(e.code, 'UNPACK_FAILED');
  t.true(e.message.includes('tar entry "f/x/y"'));
});

test('whiteout names are classified, and whiteouts of . or .. are refused', (t) => {
  t.deepEqual(parseWhiteout('.wh..wh..opq', 'd/.wh..wh..opq'), { kind: 'opaque' });
  t.deepEqual(parseWhiteout('.wh.passwd', 'etc/.wh.passwd'), { kind: 'remove', name: 'passwd' });
  t.deepEqual(parseWhiteout('.wh..wh.plnk', '.wh..wh.plnk'), { kind: 'meta' });
  t.is(parseWhiteout('passwd', 'etc/passwd'), null);
  t.is(parseWhiteout('x.wh.y', 'x.wh.y'), null);
  for (const base of ['.wh.', '.wh..', '.wh...']) t.is(code(t, () => parseWhiteout(base, `a/${base}`)).code, 'UNPACK_UNSAFE');
});

test('PAX records keep binary values byte-exact and UTF-8 keys', (t) => {
  const cap = Buffer.from('0100000280200000000000000000000000000000', 'hex');
  const rec = (k: string, v: Buffer): Buffer => {
    const body = Buffer.concat([Buffer.from(` ${k}=`), v, Buffer.from('\n')]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    return Buffer.concat([Buffer.from(String(len)), body]);
  };
  const buf = Buffer.concat([
    rec('path', Buffer.from('usr/bin/pïng')),
    rec('SCHILY.xattr.security.capability', cap),
    rec('SCHILY.xattr.user.nl', Buffer.from('a\nb=c')),
    rec('mtime', Buffer.from('1700000000.5')),
  ]);
  const m = parsePaxRecords(buf);
  t.is(m.get('path')?.toString('utf8'), 'usr/bin/pïng');
  t.deepEqual(m.get('SCHILY.xattr.security.capability'), cap);
  t.deepEqual(m.get('SCHILY.xattr.user.nl'), Buffer.from('a\nb=c'));
  t.deepEqual(paxXattrs(m), [
    ['security.capability', cap],
    ['user.nl', Buffer.from('a\nb=c')],
  ]);
});

test('a malformed PAX record ends parsing without throwing', (t) => {
  t.deepEqual([...parsePaxRecords(Buffer.from('12 a=b\nxx garbage'))].map(([k, v]) => [k, v.toString()]), []);
  t.deepEqual([...parsePaxRecords(Buffer.from('6 a=b\n99 c=d\n'))].map(([k, v]) => [k, v.toString()]), [['a', 'b']]);
});

test('dump fields quote every byte that could break a line or a field', (t) => {
  t.is(quoteDumpField('/t/usr/bin/ping'), '/t/usr/bin/ping');
  t.is(quoteDumpField('a b\nc=d\\é'), 'a\\040b\\012c\\075d\\134\\303\\251');
});

test('the setfattr script cannot be steered to another file by a newline in a name', (t) => {
  const script = xattrRestoreScript([
    { path: '/t/evil\n# file: /etc/shadow', attrs: [['user.a', Buffer.from([0, 0xff])]] },
    { path: '/t/none', attrs: [] },
    { path: '/t/b', attrs: [['security.capability', Buffer.from('01000002', 'hex')], ['user.e', Buffer.alloc(0)]] },
  ]).toString();
  t.is(script, '# file: /t/evil\\012#\\040file:\\040/etc/shadow\nuser.a=0x00ff\n\n# file: /t/b\nsecurity.capability=0x01000002\nuser.e=0x\n\n');
  t.is(xattrRestoreScript([]).length, 0);
});
