/**
 * PURE parser for env-style config files: `/etc/cos-upgrade-image`, `/etc/cos/config`, `/etc/os-release`
 * (spec cos-layout.md 3.1, 3.2, 3.5; yip.md 3.15).
 *
 * Accepted, per line:
 *  - blank lines and full-line `#` comments;
 *  - an optional `export ` prefix;
 *  - `KEY=value`, with optional blanks around `=` (godotenv trims them); KEY is `[A-Za-z_][A-Za-z0-9_]*`;
 *  - unquoted values run to the end of the line, trailing blanks trimmed; a `#` preceded by a blank starts a comment
 *    (`A=x#y` keeps `x#y`, like the shell);
 *  - `"double"` values: `\"` `\\` `\$` `` \` `` `\!` unescape to the character and `\n` `\r` to newline / CR — which
 *    round-trips everything godotenv.Write (yip) emits; any other `\c` keeps the backslash (shell rule);
 *  - `'single'` values are literal;
 *  - after a closing quote only blanks and a `#` comment may follow;
 *  - CRLF line ends, a leading UTF-8 BOM, and no newline at the end of the file (yip v1.3 writes none).
 * A later duplicate key replaces the earlier one.
 *
 * Deliberately NOT done: variable expansion. `$X` / `${X}` stay literal text — the agent must not evaluate config as
 * shell (spec 8 item 8: a stray `IMAGE=` in os-release broke `source`-based upgrades). Quoted values spanning several
 * lines are not supported (neither godotenv v1.4 nor yip write them): the quote is reported unterminated.
 */
import { ConfigError } from '../model/errors.ts';

export interface DotenvEntry {
  readonly value: string;
  /** 1-based line number of the assignment. */
  readonly line: number;
}

const KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const DQ_ESCAPES: Readonly<Record<string, string>> = { '"': '"', '\\': '\\', $: '$', '`': '`', '!': '!', n: '\n', r: '\r' };

const isBlank = (c: string | undefined): boolean => c === ' ' || c === '\t';

function skipBlanks(s: string, pos: number): number {
  while (pos < s.length && isBlank(s[pos])) pos++;
  return pos;
}

/** Parse an env file. Throws ConfigError(file, …, {line, key}) on the first malformed line. */
export function parseDotenv(text: string, file: string): Map<string, DotenvEntry> {
  const out = new Map<string, DotenvEntry>();
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  const lines = body.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    let s = lines[i] ?? '';
    if (s.endsWith('\r')) s = s.slice(0, -1);
    let pos = skipBlanks(s, 0);
    if (pos >= s.length || s[pos] === '#') continue;
    if (s.startsWith('export', pos) && isBlank(s[pos + 6])) pos = skipBlanks(s, pos + 6);

    const keyStart = pos;
    while (pos < s.length && s[pos] !== '=' && !isBlank(s[pos])) pos++;
    const key = s.slice(keyStart, pos);
    pos = skipBlanks(s, pos);
    if (s[pos] !== '=') {
      throw new ConfigError(file, key ? `expected KEY=value, found no "=" after "${key}"` : 'expected KEY=value', {
        line,
        ...(key ? { key } : {}),
      });
    }
    if (!KEY_RE.test(key)) {
      throw new ConfigError(file, `invalid variable name "${key}" (want letters, digits and _, not starting with a digit)`, {
        line,
        ...(key ? { key } : {}),
      });
    }
    pos = skipBlanks(s, pos + 1);
    out.set(key, { value: parseValue(s, pos, file, line, key), line });
  }
  return out;
}

function parseValue(s: string, pos: number, file: string, line: number, key: string): string {
  const q = s[pos];
  if (q === '"' || q === "'") {
    let value = '';
    let j = pos + 1;
    let closed = false;
    while (j < s.length) {
      const c = s[j] as string;
      if (q === '"' && c === '\\' && j + 1 < s.length) {
        const n = s[j + 1] as string;
        value += DQ_ESCAPES[n] ?? `\\${n}`;
        j += 2;
        continue;
      }
      if (c === q) {
        closed = true;
        break;
      }
      value += c;
      j++;
    }
    if (!closed) {
      throw new ConfigError(file, `unterminated ${q === '"' ? 'double' : 'single'}-quoted value`, { line, key });
    }
    const rest = s.slice(j + 1);
    if (!/^[ \t]*(#.*)?$/.test(rest)) {
      throw new ConfigError(file, `unexpected text after the closing quote: ${JSON.stringify(rest.trim())}`, { line, key });
    }
    return value;
  }
  let end = s.length;
  for (let k = pos; k < s.length; k++) {
    if (s[k] === '#' && isBlank(s[k - 1])) {
      end = k;
      break;
    }
  }
  return s.slice(pos, end).replace(/[ \t]+$/, '');
}
