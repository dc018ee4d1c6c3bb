/**
 * The decoded-cloud-config store kept between stages (src/yip/decode-store.ts): entries are exact (a JSON round trip
 * of every real cOS v0.8.14 file equals its decoding), used only for the same origin and text, only in a directory
 * this user owns that nobody else may write, bounded, and never a reason for a stage to fail.
 */
import test from 'ava';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SysRoot } from '../../src/sys/root.ts';
import { DECODE_STORE_DIR, fileDecodeStore } from '../../src/yip/decode-store.ts';
import { decodeYip } from '../../src/yip/schema.ts';
import { loadSource } from '../../src/yip/loader.ts';

const OEM = fileURLToPath(new URL('../../../shared/cos-v0.8.14/oem', import.meta.url));

async function root(t: { teardown(fn: () => Promise<void>): void }): Promise<SysRoot> {
  const d = await mkdtemp(path.join(tmpdir(), 'yip-store-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return new SysRoot(d);
}

test('every real cOS v0.8.14 file and a file with a problem come back from the store exactly as decoded', async (t) => {
  const r = await root(t);
  const store = fileDecodeStore(r);
  const texts: Array<readonly [string, string]> = readdirSync(OEM).map((n) => [`/system/oem/${n}`, readFileSync(path.join(OEM, n), 'utf8')] as const);
  texts.push(['/oem/bad.yaml', 'stages:\n  boot:\n    - files:\n        - path: /x\n          permissions: "0644"\n']);
  for (const [origin, text] of texts) store.set(origin, text, decodeYip(text, origin));
  const again = fileDecodeStore(r);
  for (const [origin, text] of texts) t.deepEqual(again.get(origin, text), decodeYip(text, origin), origin);
  t.true((again.get('/oem/bad.yaml', texts.at(-1)?.[1] ?? '')?.problems.length ?? 0) > 0);
  const st = await stat(r.path(DECODE_STORE_DIR));
  t.is(st.mode & 0o777, 0o700);
  t.is((await readdir(r.path(DECODE_STORE_DIR))).length, texts.length);
});

test('an entry is only for the same origin and the same text', async (t) => {
  const r = await root(t);
  const store = fileDecodeStore(r);
  const text = 'stages:\n  boot:\n    - hostname: one\n';
  store.set('/oem/a.yaml', text, decodeYip(text, '/oem/a.yaml'));
  t.truthy(store.get('/oem/a.yaml', text));
  t.is(store.get('/oem/b.yaml', text), undefined);
  t.is(store.get('/oem/a.yaml', text.replace('one', 'two')), undefined);
});

test('loading with the store: the second load reads the entry, a changed file is decoded again', async (t) => {
  const r = await root(t);
  await mkdir(r.path('/oem'), { recursive: true });
  await writeFile(r.path('/oem/a.yaml'), 'stages:\n  boot:\n    - hostname: first\n');
  const first = await loadSource(r, '/oem', { store: fileDecodeStore(r) });
  t.is(first.documents[0]?.config.stages['boot']?.[0]?.hostname, 'first');
  // Prove the entry is what the second load uses: the owner rewrites it (nobody else can).
  const [entry] = await readdir(r.path(DECODE_STORE_DIR));
  const file = r.path(`${DECODE_STORE_DIR}/${entry ?? ''}`);
  await writeFile(file, (await readFile(file, 'utf8')).replace('"first"', '"from-the-store"'));
  const second = await loadSource(r, '/oem', { store: fileDecodeStore(r) });
  t.is(second.documents[0]?.config.stages['boot']?.[0]?.hostname, 'from-the-store');
  await writeFile(r.path('/oem/a.yaml'), 'stages:\n  boot:\n    - hostname: changed\n');
  const third = await loadSource(r, '/oem', { store: fileDecodeStore(r) });
  t.is(third.documents[0]?.config.stages['boot']?.[0]?.hostname, 'changed');
});

test('a directory others may write, or another user owns, is not used; a broken entry or a link is decoded past', async (t) => {
  const text = 'stages:\n  boot:\n    - hostname: x\n';
  const decoded = decodeYip(text, '/oem/a.yaml');
  for (const spoil of ['group-writable', 'world-writable', 'other owner', 'a link'] as const) {
    const r = await root(t);
    const dir = r.path(DECODE_STORE_DIR);
    fileDecodeStore(r).set('/oem/a.yaml', text, decoded);
    if (spoil === 'group-writable') await chmod(dir, 0o770);
    if (spoil === 'world-writable') await chmod(dir, 0o703);
    if (spoil === 'other owner') await chown(dir, 65534, 65534);
    if (spoil === 'a link') {
      await rm(dir, { recursive: true });
      await mkdir(r.path('/elsewhere'), { recursive: true, mode: 0o700 });
      await symlink(r.path('/elsewhere'), dir);
    }
    const store = fileDecodeStore(r);
    t.is(store.get('/oem/a.yaml', text), undefined, spoil);
    store.set('/oem/b.yaml', text, decoded);
    t.is(store.get('/oem/b.yaml', text), undefined, `${spoil}: nothing written either`);
  }
  const r = await root(t);
  const store = fileDecodeStore(r);
  store.set('/oem/a.yaml', text, decoded);
  const [entry] = await readdir(r.path(DECODE_STORE_DIR));
  for (const junk of ['{not json', '[]', '{"config": 1}', 'null']) {
    await writeFile(r.path(`${DECODE_STORE_DIR}/${entry ?? ''}`), junk);
    t.is(fileDecodeStore(r).get('/oem/a.yaml', text), undefined, junk);
  }
  await rm(r.path(`${DECODE_STORE_DIR}/${entry ?? ''}`));
  await symlink('/etc/hostname', r.path(`${DECODE_STORE_DIR}/${entry ?? ''}`));
  t.is(fileDecodeStore(r).get('/oem/a.yaml', text), undefined, 'an entry that is a link is not followed');
});

test('past its entry limit the store starts over; an unwritable root turns it off without an error', async (t) => {
  const r = await root(t);
  const store = fileDecodeStore(r, { maxEntries: 5 });
  for (let i = 0; i < 12; i++) {
    const text = `stages:\n  boot:\n    - hostname: h${i}\n`;
    store.set(`/oem/${i}.yaml`, text, decodeYip(text, 'x'));
    t.true((await readdir(r.path(DECODE_STORE_DIR))).length <= 5);
  }
  const text = 'stages:\n  boot:\n    - hostname: h11\n';
  t.truthy(store.get('/oem/11.yaml', text), 'the newest entry is kept');
  const ro = await root(t);
  await writeFile(ro.path('/run'), 'a file where /run should be');
  const off = fileDecodeStore(ro);
  t.notThrows(() => off.set('/oem/a.yaml', text, decodeYip(text, 'x')));
  t.is(off.get('/oem/a.yaml', text), undefined);
});
