/**
 * PURE: the subset of Go's text/template (with sprig) that yip applies to commands, `if`, file content, entities and
 * environment values (yip.md 2.6), over the data `{Values: ...}`.
 *
 * Supported: text and `{{ }}` actions with `{{-`/`-}}` trimming, comments, pipelines (`x | f a`), field chains
 * (`.Values.os.name`, `$.Values`), string ("..." and `...`), number, bool and nil literals, parenthesised pipelines,
 * `if`/`else if`/`else`/`end` and `with`/`else`/`end`, Go's builtins `and or not len index print printf println eq ne
 * lt le gt ge`, and the sprig functions seen in cloud-configs: `trunc upper lower title quote squote default empty
 * replace trim trimAll trimPrefix trimSuffix contains hasPrefix hasSuffix b64enc b64dec toString join split`.
 *
 * Semantics kept from Go: a missing key prints `<no value>` (so `docker ps --format '{{.ID}}'` becomes
 * `docker ps --format '<no value>'`, as in yip); a template that does not parse or fails to execute leaves the string
 * unchanged (yip logs a warning and uses the original), reported here as `error`. A function Go/sprig has but this
 * subset lacks is reported the same way (Go reports an undefined function at parse time too): the string is kept.
 */

export interface RenderResult {
  text: string;
  /** Why the template was not applied (the text is then the original). */
  error?: string;
}

type Value = unknown;

class TemplateError extends Error {}

// ---- lexer -------------------------------------------------------------------------------------------------------

type Tok =
  | { k: 'field'; path: string[] } // .A.B  (path [] is `.`)
  | { k: 'var'; path: string[] } // $ or $.A.B
  | { k: 'str'; v: string }
  | { k: 'num'; v: number }
  | { k: 'ident'; v: string }
  | { k: 'pipe' }
  | { k: 'lp' }
  | { k: 'rp' };

function unquote(s: string, i: number): { v: string; end: number } {
  let out = '';
  for (let j = i + 1; j < s.length; j++) {
    const c = s[j] as string;
    if (c === '"') return { v: out, end: j + 1 };
    if (c === '\\') {
      const e = s[j + 1];
      const map: Record<string, string> = { n: '\n', t: '\t', r: '\r', '\\': '\\', '"': '"', "'": "'", a: '\x07', b: '\b', f: '\f', v: '\v' };
      if (e === undefined || map[e] === undefined) throw new TemplateError(`bad escape in string literal`);
      out += map[e];
      j++;
      continue;
    }
    if (c === '\n') throw new TemplateError('unterminated string');
    out += c;
  }
  throw new TemplateError('unterminated string');
}

function lexAction(src: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  const path = (start: number): { path: string[]; end: number } => {
    const m = /^(?:\.[A-Za-z_][A-Za-z0-9_]*)*/.exec(src.slice(start));
    const text = m?.[0] ?? '';
    return { path: text === '' ? [] : text.slice(1).split('.'), end: start + text.length };
  };
  while (i < src.length) {
    const c = src[i] as string;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '|') {
      toks.push({ k: 'pipe' });
      i++;
    } else if (c === '(') {
      toks.push({ k: 'lp' });
      i++;
    } else if (c === ')') {
      toks.push({ k: 'rp' });
      i++;
    } else if (c === '"') {
      const q = unquote(src, i);
      toks.push({ k: 'str', v: q.v });
      i = q.end;
    } else if (c === '`') {
      const end = src.indexOf('`', i + 1);
      if (end < 0) throw new TemplateError('unterminated raw string');
      toks.push({ k: 'str', v: src.slice(i + 1, end) });
      i = end + 1;
    } else if (c === '.') {
      if (src[i + 1] === undefined || /[\s|)]/.test(src[i + 1] as string)) {
        toks.push({ k: 'field', path: [] });
        i++;
      } else {
        const p = path(i);
        if (p.end === i) throw new TemplateError(`bad character after '.'`);
        toks.push({ k: 'field', path: p.path });
        i = p.end;
      }
    } else if (c === '$') {
      const p = path(i + 1);
      toks.push({ k: 'var', path: p.path });
      i = p.end;
    } else if (/[-+0-9]/.test(c)) {
      const m = /^[-+]?(?:0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)/.exec(src.slice(i));
      if (m === null) throw new TemplateError(`bad number`);
      toks.push({ k: 'num', v: Number(m[0]) });
      i += m[0].length;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i)) as RegExpExecArray;
      toks.push({ k: 'ident', v: m[0] });
      i += m[0].length;
    } else {
      throw new TemplateError(`unexpected ${JSON.stringify(c)} in action`);
    }
  }
  return toks;
}

// ---- parser ------------------------------------------------------------------------------------------------------

type Arg = { k: 'field'; path: string[] } | { k: 'var'; path: string[] } | { k: 'lit'; v: Value } | { k: 'call'; fn: string; args: Arg[] } | { k: 'pipe'; cmds: Arg[] };
type Node =
  | { k: 'text'; v: string }
  | { k: 'out'; pipe: Arg }
  | { k: 'if'; branches: Array<{ cond: Arg; body: Node[] }>; otherwise: Node[] }
  | { k: 'with'; value: Arg; body: Node[]; otherwise: Node[] };

function parsePipeline(toks: Tok[]): Arg {
  let i = 0;
  const parseCmd = (): Arg => {
    const t = toks[i];
    if (t === undefined) throw new TemplateError('missing value for command');
    if (t.k === 'ident' && !['true', 'false', 'nil'].includes(t.v)) {
      i++;
      if (!Object.hasOwn(FUNCS, t.v)) throw new TemplateError(`function "${t.v}" not defined`);
      const args: Arg[] = [];
      while (i < toks.length && toks[i]?.k !== 'pipe' && toks[i]?.k !== 'rp') args.push(parseOperand());
      return { k: 'call', fn: t.v, args };
    }
    const first = parseOperand();
    if (i < toks.length && toks[i]?.k !== 'pipe' && toks[i]?.k !== 'rp') throw new TemplateError(`can't give argument to non-function`);
    return first;
  };
  const parseOperand = (): Arg => {
    const t = toks[i++];
    if (t === undefined) throw new TemplateError('missing operand');
    switch (t.k) {
      case 'field':
        return { k: 'field', path: t.path };
      case 'var':
        return { k: 'var', path: t.path };
      case 'str':
        return { k: 'lit', v: t.v };
      case 'num':
        return { k: 'lit', v: t.v };
      case 'ident':
        if (t.v === 'true') return { k: 'lit', v: true };
        if (t.v === 'false') return { k: 'lit', v: false };
        if (t.v === 'nil') return { k: 'lit', v: null };
        if (!Object.hasOwn(FUNCS, t.v)) throw new TemplateError(`function "${t.v}" not defined`);
        return { k: 'call', fn: t.v, args: [] };
      case 'lp': {
        const inner = parsePipe();
        if (toks[i++]?.k !== 'rp') throw new TemplateError('unclosed left paren');
        return inner;
      }
      default:
        throw new TemplateError(`unexpected ${t.k} in operand`);
    }
  };
  const parsePipe = (): Arg => {
    const cmds: Arg[] = [parseCmd()];
    while (toks[i]?.k === 'pipe') {
      i++;
      const next = parseCmd();
      // the value piped in is the last argument of the next command
      if (next.k !== 'call') throw new TemplateError('non executable command in pipeline stage');
      cmds.push(next);
    }
    return cmds.length === 1 ? (cmds[0] as Arg) : { k: 'pipe', cmds };
  };
  const p = parsePipe();
  if (i !== toks.length) throw new TemplateError('unexpected token after pipeline');
  return p;
}

function parseTemplate(src: string): Node[] {
  // split into text and actions, applying the trim markers
  const parts: Array<{ text: string } | { action: string }> = [];
  let i = 0;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    if (open < 0) {
      parts.push({ text: src.slice(i) });
      break;
    }
    let text = src.slice(i, open);
    let body = open + 2;
    if (src.startsWith('- ', body) || src.startsWith('-\t', body) || src.startsWith('-\n', body)) {
      text = text.replace(/\s+$/, '');
      body += 1;
    }
    const close = src.indexOf('}}', body);
    if (close < 0) throw new TemplateError('unclosed action');
    let action = src.slice(body, close);
    let next = close + 2;
    if (/\s-$/.test(action)) {
      action = action.slice(0, -1);
      const m = /^\s*/.exec(src.slice(next));
      next += m?.[0].length ?? 0;
    }
    parts.push({ text });
    parts.push({ action: action.trim() });
    i = next;
  }
  let pos = 0;
  const block = (ends: readonly string[]): { nodes: Node[]; end: string } => {
    const nodes: Node[] = [];
    while (pos < parts.length) {
      const p = parts[pos++] as { text: string } | { action: string };
      if ('text' in p) {
        if (p.text !== '') nodes.push({ k: 'text', v: p.text });
        continue;
      }
      const a = p.action;
      if (a.startsWith('/*')) {
        if (!a.endsWith('*/')) throw new TemplateError('unclosed comment');
        continue;
      }
      const word = /^[a-z]+/.exec(a)?.[0] ?? '';
      if (word === 'end' || word === 'else') {
        if (!ends.includes(word)) throw new TemplateError(`unexpected {{${word}}}`);
        return { nodes, end: a };
      }
      if (word === 'if') {
        const branches: Array<{ cond: Arg; body: Node[] }> = [];
        let cond = parsePipeline(lexAction(a.slice(2)));
        let otherwise: Node[] = [];
        for (;;) {
          const r = block(['end', 'else']);
          branches.push({ cond, body: r.nodes });
          if (r.end === 'end') break;
          const rest = r.end.slice(4).trim();
          if (rest.startsWith('if ')) {
            cond = parsePipeline(lexAction(rest.slice(3)));
            continue;
          }
          if (rest !== '') throw new TemplateError('bad else');
          const e = block(['end']);
          otherwise = e.nodes;
          break;
        }
        nodes.push({ k: 'if', branches, otherwise });
        continue;
      }
      if (word === 'with') {
        const value = parsePipeline(lexAction(a.slice(4)));
        const r = block(['end', 'else']);
        let otherwise: Node[] = [];
        if (r.end !== 'end') {
          if (r.end.trim() !== 'else') throw new TemplateError('bad else in with');
          otherwise = block(['end']).nodes;
        }
        nodes.push({ k: 'with', value, body: r.nodes, otherwise });
        continue;
      }
      if (['range', 'define', 'template', 'block', 'break', 'continue'].includes(word) && !Object.hasOwn(FUNCS, word)) {
        throw new TemplateError(`{{${word}}} is not supported here`);
      }
      nodes.push({ k: 'out', pipe: parsePipeline(lexAction(a)) });
    }
    if (ends.length > 0) throw new TemplateError('unexpected EOF');
    return { nodes, end: '' };
  };
  return block([]).nodes;
}

// ---- evaluation --------------------------------------------------------------------------------------------------

/** Go's zero "no value": prints as `<no value>`. */
const NO_VALUE = Symbol('no value');

function lookup(base: Value, path: readonly string[]): Value {
  let v: Value = base;
  for (const key of path) {
    if (v === NO_VALUE || v === null || v === undefined) return NO_VALUE;
    if (typeof v !== 'object' || Array.isArray(v)) throw new TemplateError(`can't evaluate field ${key} in type ${Array.isArray(v) ? 'slice' : typeof v}`);
    const o = v as Record<string, Value>;
    v = Object.prototype.hasOwnProperty.call(o, key) ? o[key] : NO_VALUE;
  }
  return v;
}

function truthy(v: Value): boolean {
  if (v === NO_VALUE || v === null || v === undefined || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v as object).length > 0;
  return true;
}

/** Go's fmt %v of the JSON-ish values yip's data holds. */
function show(v: Value): string {
  if (v === NO_VALUE || v === undefined) return '<no value>';
  if (v === null) return '<nil>';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(v).replace(/e\+?/, 'e+');
  if (typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(show).join(' ')}]`;
  if (typeof v === 'object') return `map[${Object.keys(v as object).sort().map((k) => `${k}:${show((v as Record<string, Value>)[k])}`).join(' ')}]`;
  return String(v);
}

const str = (v: Value): string => (v === NO_VALUE || v === null || v === undefined ? '' : typeof v === 'string' ? v : show(v));

function printf(format: string, args: Value[]): string {
  let n = 0;
  return format.replace(/%([-+# 0]*\d*(?:\.\d+)?)([vsdqxf%])/g, (_m, _flags: string, verb: string) => {
    if (verb === '%') return '%';
    const a = args[n++];
    if (a === undefined) return `%!${verb}(MISSING)`;
    switch (verb) {
      case 'd':
        return typeof a === 'number' ? String(Math.trunc(a)) : `%!d(${typeof a}=${show(a)})`;
      case 'q':
        return JSON.stringify(str(a));
      case 'x':
        return typeof a === 'number' ? Math.trunc(a).toString(16) : Buffer.from(str(a)).toString('hex');
      case 'f':
        return typeof a === 'number' ? a.toFixed(6) : `%!f(${typeof a}=${show(a)})`;
      default:
        return show(a);
    }
  });
}

const cmp = (a: Value, b: Value): number => {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  throw new TemplateError('incompatible types for comparison');
};

/** Functions take their arguments already evaluated (`and`/`or` short-circuit in Go; over plain values it is the same). */
const FUNCS: Readonly<Record<string, (...a: Value[]) => Value>> = {
  and: (...a) => a.find((x) => !truthy(x)) ?? a[a.length - 1],
  or: (...a) => a.find((x) => truthy(x)) ?? a[a.length - 1],
  not: (a) => !truthy(a),
  len: (a) => {
    if (typeof a === 'string' || Array.isArray(a)) return a.length;
    if (a !== null && typeof a === 'object') return Object.keys(a).length;
    throw new TemplateError(`len of ${show(a)}`);
  },
  index: (a, ...keys) => keys.reduce<Value>((v, k) => (Array.isArray(v) ? v[Number(k)] : lookup(v, [String(k)])), a),
  print: (...a) => a.map(str).join(''),
  println: (...a) => `${a.map(str).join(' ')}\n`,
  printf: (f, ...a) => printf(str(f), a),
  eq: (a, ...b) => b.some((x) => x === a),
  ne: (a, b) => a !== b,
  lt: (a, b) => cmp(a, b) < 0,
  le: (a, b) => cmp(a, b) <= 0,
  gt: (a, b) => cmp(a, b) > 0,
  ge: (a, b) => cmp(a, b) >= 0,
  // sprig
  trunc: (n, s) => {
    const t = str(s);
    const k = Number(n);
    return k >= 0 ? t.slice(0, k) : t.slice(Math.max(0, t.length + k));
  },
  upper: (s) => str(s).toUpperCase(),
  lower: (s) => str(s).toLowerCase(),
  title: (s) => str(s).replace(/\b[a-z]/g, (c) => c.toUpperCase()),
  quote: (...a) => a.map((x) => JSON.stringify(str(x))).join(' '),
  squote: (...a) => a.map((x) => `'${str(x)}'`).join(' '),
  default: (d, v) => (truthy(v) ? v : d),
  empty: (v) => !truthy(v),
  replace: (old, neu, s) => str(s).split(str(old)).join(str(neu)),
  trim: (s) => str(s).trim(),
  trimAll: (c, s) => {
    const set = str(c);
    let t = str(s);
    while (t !== '' && set.includes(t[0] as string)) t = t.slice(1);
    while (t !== '' && set.includes(t[t.length - 1] as string)) t = t.slice(0, -1);
    return t;
  },
  trimPrefix: (p, s) => (str(s).startsWith(str(p)) ? str(s).slice(str(p).length) : str(s)),
  trimSuffix: (p, s) => (str(p) !== '' && str(s).endsWith(str(p)) ? str(s).slice(0, -str(p).length) : str(s)),
  contains: (sub, s) => str(s).includes(str(sub)),
  hasPrefix: (p, s) => str(s).startsWith(str(p)),
  hasSuffix: (p, s) => str(s).endsWith(str(p)),
  b64enc: (s) => Buffer.from(str(s)).toString('base64'),
  b64dec: (s) => Buffer.from(str(s), 'base64').toString(),
  toString: (v: Value) => str(v),
  join: (sep, l) => (Array.isArray(l) ? l.map(str).join(str(sep)) : str(l)),
  split: (sep, s) => Object.fromEntries(str(s).split(str(sep)).map((p, i) => [`_${i}`, p])),
};

function evalArg(a: Arg, dot: Value, root: Value, piped?: Value): Value {
  switch (a.k) {
    case 'field':
      if (piped !== undefined) throw new TemplateError("can't give argument to non-function");
      return lookup(dot, a.path);
    case 'var':
      return lookup(root, a.path);
    case 'lit':
      return a.v;
    case 'call': {
      const args = a.args.map((x) => evalArg(x, dot, root));
      if (piped !== undefined) args.push(piped);
      const fn = FUNCS[a.fn] as (...x: Value[]) => Value;
      return fn(...args.map((x) => (x === NO_VALUE ? null : x)));
    }
    case 'pipe': {
      let v: Value = evalArg(a.cmds[0] as Arg, dot, root);
      for (const c of a.cmds.slice(1)) v = evalArg(c, dot, root, v === NO_VALUE ? null : v);
      return v;
    }
  }
}

function execNodes(nodes: readonly Node[], dot: Value, root: Value): string {
  let out = '';
  for (const n of nodes) {
    switch (n.k) {
      case 'text':
        out += n.v;
        break;
      case 'out':
        out += show(evalArg(n.pipe, dot, root));
        break;
      case 'if': {
        const hit = n.branches.find((b) => truthy(evalArg(b.cond, dot, root)));
        out += execNodes(hit !== undefined ? hit.body : n.otherwise, dot, root);
        break;
      }
      case 'with': {
        const v = evalArg(n.value, dot, root);
        out += truthy(v) ? execNodes(n.body, v, root) : execNodes(n.otherwise, dot, root);
        break;
      }
    }
  }
  return out;
}

/** Render `text` over `data` (yip passes `{Values: sysinfo}`); the original text, with the reason, when it cannot. */
export function renderTemplate(text: string, data: Record<string, unknown>): RenderResult {
  if (!text.includes('{{')) return { text };
  try {
    return { text: execNodes(parseTemplate(text), data, data) };
  } catch (e) {
    if (e instanceof TemplateError || e instanceof RangeError) return { text, error: e.message };
    throw e;
  }
}
