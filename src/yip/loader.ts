/**
 * yip's sources (yip.md 2.1, 2.2), read through the root prefix: a directory is walked, a file is read whatever its
 * name, a URL is fetched (through the caller's fetcher), and anything else is the document text itself (`<STDIN>`).
 * Each document is decoded (schema.ts); one that fails is skipped with its problem and the rest load, as yip 2617d71
 * (cOS v0.8) and rancher/yip (Elemental v2) do.
 *
 * The walk is go-vfs's: recursive and depth-first, entries sorted byte-wise (a subdirectory at its sorted place, so
 * `10_a/` before `10_a.yaml`), only names ending exactly in `.yaml` or `.yml` (hidden files too), symlinks to files
 * followed, symlinks to directories not descended, and a source that is itself a symlink to a directory not walked
 * unless given with a trailing slash (`/oem/`), as `Lstat` of the walk's root sees it.
 */
import { lstatSync, readdirSync, statSync } from 'node:fs';
import { readText, readTextSync } from './read.ts';
import { resolveInRootSync } from './paths.ts';
import path from 'node:path';
import type { SysRoot } from '../sys/root.ts';
import type { DecodeStore } from './decode-store.ts';
import { decodeYip, type YipConfig, type YipProblem } from './schema.ts';

/** One loaded document: where it came from (the path as walked, the URL, or `<STDIN>`) and its config. */
export interface YipDocument {
  /** The op-name root when the document has no `name` (yip.md 2.3). */
  origin: string;
  config: YipConfig;
}

export interface LoadResult {
  documents: YipDocument[];
  problems: YipProblem[];
}

export interface LoadOptions {
  /** GET a URL source (http(s)); rejects on a transport error. yip reads the body whatever the status. */
  fetch?: (url: string) => Promise<string>;
  /** Turn loaded bytes into YAML text before decoding (yip's modifier: dot notation for /proc/cmdline). */
  modifier?: (text: string) => string;
  /**
   * Decoded documents by origin and exact text, shared by the loads of one run (STAGE.before, STAGE, STAGE.after read
   * every source again, as yip does, so a file an earlier stage wrote is seen): a file whose text is unchanged is
   * not parsed again. The decoded configs are never mutated (plan and executor only read them).
   */
  decoded?: Map<string, ReturnType<typeof decodeYip>>;
  /** Decoded documents kept between runs (decode-store.ts); not used for text a modifier turns into YAML. */
  store?: DecodeStore;
}

const YAML_EXT = new Set(['.yaml', '.yml']);

/** Byte-wise order of names, as Go compares strings. */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * A URL source. yip takes any string with a URL scheme (Go's url.Parse) for a URL and GETs it, so inline text that
 * starts with `stages:` fails there as "unsupported protocol scheme"; here only http(s) URLs are fetched and any other
 * text is the document itself.
 */
const isUrl = (s: string): boolean => /^https?:\/\//i.test(s);

const join = (dir: string, name: string): string => (dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`);

/** A file a directory source yields: the path as walked (`<source>/<rel>`) and where it is on the host. */
interface WalkedFile {
  path: string;
  /** The host path to read: known from the walk for a regular file, resolved inside the root for a link. */
  real: string;
}

/**
 * Walk a directory source in yip's order. The walk runs in the source's real directory inside the root (a source
 * given as `/oem/` with /oem a link is followed inside the root, never out of it); below it every directory walked is
 * a real one (links to directories are not descended), so a regular file's host path is known without resolving it
 * again. Synchronous: small metadata calls, where a thread-pool round trip each made loading grow with the host's load.
 */
function walkSync(root: SysRoot, source: string): WalkedFile[] {
  const out: WalkedFile[] = [];
  // go-vfs Walk: the root is examined with Lstat; a symlink root is not a directory to it (a trailing slash resolves it)
  // (lstat of `link/` follows the link: that is the trailing-slash case). Links are followed inside the root.
  const clean = source.replace(/\/+$/, '') || '/';
  const realDir = resolveInRootSync(root, clean);
  const parent = path.posix.dirname(clean);
  const unfollowed = clean === '/' ? realDir : join(resolveInRootSync(root, parent), path.posix.basename(clean));
  const top = lstatSync(source.endsWith('/') ? realDir : unfollowed, { throwIfNoEntry: false });
  if (top === undefined || !top.isDirectory()) return out;
  const walk = (dir: string, realDir: string): void => {
    const names = readdirSync(realDir).sort(byteOrder);
    for (const name of names) {
      const rel = path.posix.join(dir, name);
      const real = join(realDir, name);
      const st = lstatSync(real, { throwIfNoEntry: false });
      if (st === undefined) continue;
      if (st.isDirectory()) {
        walk(rel, real);
        continue;
      }
      if (!YAML_EXT.has(path.extname(name))) continue;
      if (st.isFile()) out.push({ path: rel, real });
      else if (st.isSymbolicLink()) out.push({ path: rel, real: '' });
    }
  };
  walk(source, realDir);
  return out;
}

/** The files a directory source yields, in yip's order (host paths as walked: `<source>/<rel>`). */
export function walkYamlFiles(root: SysRoot, source: string): Promise<string[]> {
  try {
    return Promise.resolve(walkSync(root, source).map((f) => f.path));
  } catch (e) {
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
}

function decode(text: string, origin: string, opts: LoadOptions, into: LoadResult): void {
  const key = `${origin}\0${text}`;
  let r = opts.decoded?.get(key);
  if (r === undefined) {
    const store = opts.modifier === undefined ? opts.store : undefined;
    r = store?.get(origin, text);
    if (r === undefined) {
      r = decodeYip(opts.modifier !== undefined ? opts.modifier(text) : text, origin);
      store?.set(origin, text, r);
    }
    opts.decoded?.set(key, r);
  }
  into.problems.push(...r.problems);
  if (r.config !== null) into.documents.push({ origin, config: r.config });
}

const problem = (file: string, message: string): YipProblem => ({ file, line: 0, stage: null, step: null, key: '', message });

/** Load one source (yip.md 2.1): a directory, a file, a URL, or inline text. Never throws: problems are data. */
export async function loadSource(root: SysRoot, source: string, opts: LoadOptions = {}): Promise<LoadResult> {
  const result: LoadResult = { documents: [], problems: [] };
  // Local paths are absolute (through the root prefix); anything else is a URL or the text itself.
  let st: ReturnType<typeof statSync>;
  try {
    st = source.startsWith('/') ? statSync(resolveInRootSync(root, source), { throwIfNoEntry: false }) : undefined;
  } catch {
    st = undefined; // unreadable or a link loop: not a local path (yip's os.Stat error)
  }
  if (st?.isDirectory() === true) {
    let files: WalkedFile[];
    try {
      files = walkSync(root, source);
    } catch (e) {
      result.problems.push(problem(source, `error loading path '${source}': ${e instanceof Error ? e.message : String(e)}`));
      return result;
    }
    for (const { path: f, real } of files) {
      let text: string | undefined;
      try {
        // Cloud-config files are small: read synchronously, as the walk stats them; a link is followed inside the root
        // (the root may be an image being upgraded to), and only a regular file of at most 4 MiB is read.
        text = readTextSync(real !== '' ? real : resolveInRootSync(root, f));
      } catch (e) {
        result.problems.push(problem(f, `error loading path '${f}': ${e instanceof Error ? e.message : String(e)}`));
      }
      if (text !== undefined) decode(text, f, opts, result);
    }
    return result;
  }
  if (st !== undefined) {
    const text = await readText(resolveInRootSync(root, source)).catch((e: unknown) => {
      result.problems.push(problem(source, `error loading path '${source}': ${e instanceof Error ? e.message : String(e)}`));
      return undefined;
    });
    if (text !== undefined) decode(text, source, opts, result);
    return result;
  }
  if (isUrl(source)) {
    if (opts.fetch === undefined) {
      result.problems.push(problem(source, `error loading path '${source}': fetching URLs is not enabled here`));
      return result;
    }
    const text = await opts.fetch(source).catch((e: unknown) => {
      result.problems.push(problem(source, `error loading path '${source}': ${e instanceof Error ? e.message : String(e)}`));
      return undefined;
    });
    if (text !== undefined) decode(text, source, opts, result);
    return result;
  }
  decode(source, '<STDIN>', opts, result);
  return result;
}
