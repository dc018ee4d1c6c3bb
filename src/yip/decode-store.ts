/**
 * Decoded cloud-config kept between the stages of one boot: cos-setup-fs, -boot and -network (and every reconcile)
 * each load the same files, and decoding YAML is most of what loading costs (bench/yip.ts: about 90 ms for 50 files
 * in a fresh process, 2 ms to load them again decoded). Entries live in `<root>/run/cos-agent/yip-decoded/` (tmpfs on
 * a host: gone at the next boot), one JSON file each, named by the SHA-256 of the agent's version, the file's origin
 * and its exact text, so a changed file or a new agent never reads an old entry.
 *
 * Only a directory this user owns and nobody else may write is used (another user cannot plant a decoding); any
 * problem reading or writing an entry turns the store off for the run and the files are decoded as without it.
 * At most MAX_ENTRIES entries: past that the directory is emptied (files that change at every reconcile would
 * otherwise add entries for as long as the host is up).
 */
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { SysRoot } from '../sys/root.ts';
import { VERSION } from '../version.ts';
import { readBytesSync } from './read.ts';
import type { DecodeResult } from './schema.ts';

export interface DecodeStore {
  get(origin: string, text: string): DecodeResult | undefined;
  set(origin: string, text: string, result: DecodeResult): void;
}

export const DECODE_STORE_DIR = '/run/cos-agent/yip-decoded';
const MAX_ENTRIES = 2000;
const MAX_ENTRY_BYTES = 16 * 1024 * 1024;

const isResult = (v: unknown): v is DecodeResult =>
  typeof v === 'object' && v !== null && Array.isArray((v as DecodeResult).problems) && ('config' in v) && (typeof (v as DecodeResult).config === 'object');

export function fileDecodeStore(root: SysRoot, opts: { maxEntries?: number } = {}): DecodeStore {
  const maxEntries = opts.maxEntries ?? MAX_ENTRIES;
  const dir = root.path(DECODE_STORE_DIR);
  const uid = process.geteuid?.() ?? -1;
  let state: 'unknown' | 'on' | 'off' = 'unknown';
  let entries = -1;
  const usable = (): boolean => {
    if (state !== 'unknown') return state === 'on';
    try {
      let st = lstatSync(dir, { throwIfNoEntry: false });
      if (st === undefined) {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        st = lstatSync(dir);
      }
      state = st.isDirectory() && st.uid === uid && (st.mode & 0o022) === 0 ? 'on' : 'off';
    } catch {
      state = 'off';
    }
    return state === 'on';
  };
  const file = (origin: string, text: string): string =>
    `${dir}/${createHash('sha256').update(`${VERSION}\0${origin}\0${text}`).digest('hex')}.json`;
  return {
    get(origin, text) {
      if (!usable()) return undefined;
      let bytes: Buffer;
      try {
        bytes = readBytesSync(file(origin, text), MAX_ENTRY_BYTES, { noFollow: true });
      } catch {
        return undefined; // not there (or not a regular file): decode
      }
      try {
        const v: unknown = JSON.parse(bytes.toString('utf8'));
        return isResult(v) ? v : undefined;
      } catch {
        return undefined;
      }
    },
    set(origin, text, result) {
      if (!usable()) return;
      try {
        if (entries < 0) entries = readdirSync(dir).length;
        if (entries >= maxEntries) {
          for (const name of readdirSync(dir)) rmSync(`${dir}/${name}`, { force: true });
          entries = 0;
        }
        const target = file(origin, text);
        const tmp = `${target}.${process.pid}.tmp`;
        writeFileSync(tmp, JSON.stringify(result), { mode: 0o600 });
        renameSync(tmp, target);
        entries++;
      } catch {
        state = 'off';
      }
    },
  };
}
