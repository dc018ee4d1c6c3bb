/**
 * PURE: yip's dot notation (yip.md 1.6, `schema.DotNotationModifier`): a kernel command line (or `yip -d` text) as a
 * yip document. `stages.boot[0].commands[0]='echo hi' stages.boot[0].name=x` becomes
 * `{stages: {boot: [{commands: ['echo hi'], name: 'x'}]}}`.
 *
 * 1. Split like google/shlex: whitespace separates; '…' quotes literally; "…" quotes with `\` escaping the next
 *    character; `\` outside quotes escapes the next character; `#` at the start of a token begins a comment.
 * 2. Each token splits on its first `=`: the key and the value with surrounding `"` trimmed; no `=` → the value
 *    "true". A key given twice: the last value wins.
 * 3. yip applies the jq program `.<key>="<value>"` per key. Here the key must be a jq path of identifiers and
 *    indexes (`a.b[0].c`), which is what jq accepts of such a token; anything else (`cos-img/filename`, `8250.nr_uarts`)
 *    fails in jq and is dropped, as yip drops it. The value is spliced unescaped into a jq string: a `"` in it, an
 *    invalid escape or an interpolation `\(` breaks the program (dropped); valid escapes are decoded. Setting a path
 *    through a value of another type (a string indexed by a name, an object by a number) is a jq error: dropped.
 *    Indexes beyond an array's end fill it with nulls.
 * Keys are applied in the order of their first appearance (yip's order is Go map order, random: only conflicting
 * keys such as `a=1 a.b=2` can tell, and then yip's own result is random).
 *
 * Every value is a string, so only string and list-of-string fields can be set this way (yip.md 1.6): a
 * `permissions=0644` fails the document's decoding, as it does in yip.
 */

export interface DotToken {
  key: string;
  value: string;
}

/** What was dropped, and why (yip drops silently; the agent logs these at debug level). */
export interface DotDropped {
  key: string;
  reason: string;
}

export interface DotResult {
  /** The object jq would have built (plain JSON: objects, arrays, strings, nulls). */
  value: Record<string, unknown>;
  dropped: DotDropped[];
}

/** google/shlex's split (the subset its lexer defines: no `$`, no backquotes). Unterminated quotes end the input. */
export function shlexSplit(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  const n = text.length;
  const space = (c: string): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\r';
  while (i < n) {
    while (i < n && space(text[i] as string)) i++;
    if (i >= n) break;
    if (text[i] === '#') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    let word = '';
    while (i < n && !space(text[i] as string)) {
      const c = text[i] as string;
      if (c === '\\') {
        if (i + 1 < n) word += text[i + 1];
        i += 2;
      } else if (c === "'") {
        i++;
        while (i < n && text[i] !== "'") word += text[i++];
        i++;
      } else if (c === '"') {
        i++;
        while (i < n && text[i] !== '"') {
          if (text[i] === '\\' && i + 1 < n) {
            word += text[i + 1];
            i += 2;
          } else {
            word += text[i++];
          }
        }
        i++;
      } else {
        word += c;
        i++;
      }
    }
    out.push(word);
  }
  return out;
}

const trimQuotes = (s: string): string => s.replace(/^"+|"+$/g, '');

/** Tokens as key/value, the last value of a key winning, in the order keys first appear. */
export function dotTokens(text: string): DotToken[] {
  const values = new Map<string, string>();
  for (const word of shlexSplit(text)) {
    const eq = word.indexOf('=');
    const key = trimQuotes(eq < 0 ? word : word.slice(0, eq));
    const value = eq < 0 ? 'true' : trimQuotes(word.slice(eq + 1));
    values.set(key, value);
  }
  return [...values].map(([key, value]) => ({ key, value }));
}

type Segment = string | number;

/** The path of a jq `.<key>`: identifiers after dots, integer indexes in brackets; null when jq would not parse it. */
export function jqPath(key: string): Segment[] | null {
  const re = /^(?:\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\])/;
  const path: Segment[] = [];
  let rest = key;
  let first = true;
  while (rest.length > 0) {
    if (first) {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)/.exec(rest);
      if (m === null) return null;
      path.push(m[1] as string);
      rest = rest.slice(m[0].length);
      first = false;
      continue;
    }
    const m = re.exec(rest);
    if (m === null || (m[1] !== undefined && !m[0].startsWith('.'))) return null;
    path.push(m[1] !== undefined ? m[1] : Number(m[2]));
    rest = rest.slice(m[0].length);
  }
  return path.length > 0 ? path : null;
}

const ESCAPES: Readonly<Record<string, string>> = { n: '\n', t: '\t', r: '\r', b: '\b', f: '\f', '\\': '\\', '/': '/', '"': '"' };

/** The value as the jq string literal `"<value>"` decodes it; null when that literal does not parse. */
export function jqString(value: string): string | null {
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i] as string;
    if (c === '"') return null;
    if (c !== '\\') {
      out += c;
      continue;
    }
    const e = value[i + 1];
    if (e === undefined) return null;
    if (e === 'u') {
      const hex = value.slice(i + 2, i + 6);
      if (!/^[0-9a-fA-F]{4}$/.test(hex)) return null;
      out += String.fromCharCode(Number.parseInt(hex, 16));
      i += 5;
      continue;
    }
    const d = ESCAPES[e];
    if (d === undefined) return null; // includes `\(`: an interpolation, not a literal
    out += d;
    i++;
  }
  return out;
}

/** jq's `setpath`: null fillers for arrays; a type clash is an error (a message), the object then unchanged. */
function setPath(root: Record<string, unknown>, path: readonly Segment[], value: string): string | null {
  // jq works on an immutable value: build the change on copies along the path, commit only when all of it works.
  const set = (node: unknown, i: number): { ok: true; node: unknown } | { ok: false; why: string } => {
    if (i === path.length) return { ok: true, node: value };
    const seg = path[i] as Segment;
    if (typeof seg === 'string') {
      if (node !== null && node !== undefined && (typeof node !== 'object' || Array.isArray(node))) {
        return { ok: false, why: `cannot index ${Array.isArray(node) ? 'array' : typeof node} with "${seg}"` };
      }
      const obj: Record<string, unknown> = { ...((node ?? {}) as Record<string, unknown>) };
      const r = set(obj[seg], i + 1);
      if (!r.ok) return r;
      obj[seg] = r.node;
      return { ok: true, node: obj };
    }
    if (node !== null && node !== undefined && !Array.isArray(node)) {
      return { ok: false, why: `cannot index ${typeof node === 'object' ? 'object' : typeof node} with number` };
    }
    const arr: unknown[] = [...((node ?? []) as unknown[])];
    while (arr.length <= seg) arr.push(null);
    const r = set(arr[seg], i + 1);
    if (!r.ok) return r;
    arr[seg] = r.node;
    return { ok: true, node: arr };
  };
  const r = set(root, 0);
  if (!r.ok) return r.why;
  for (const k of Object.keys(root)) delete root[k];
  Object.assign(root, r.node as Record<string, unknown>);
  return null;
}

/** The object yip's dot-notation modifier builds from `text` (a kernel command line), and what it dropped. */
export function dotNotation(text: string): DotResult {
  const value: Record<string, unknown> = {};
  const dropped: DotDropped[] = [];
  for (const { key, value: raw } of dotTokens(text)) {
    const path = jqPath(key);
    if (path === null) {
      dropped.push({ key, reason: 'not a jq path' });
      continue;
    }
    const str = jqString(raw);
    if (str === null) {
      dropped.push({ key, reason: 'the value breaks the jq string it is spliced into' });
      continue;
    }
    const why = setPath(value, path, str);
    if (why !== null) dropped.push({ key, reason: why });
  }
  return { value, dropped };
}
