/**
 * PURE: text that came from outside (config files, D-Bus callers, registries, tools) made safe to show and cheap to
 * keep. `displayText` escapes what a terminal would act on and truncates, saying how much it left out; it is applied
 * where text leaves the agent: cosctl's stderr line, D-Bus error messages, LastError, the persisted transaction
 * records, the log lines that echo a request, RunStage's reply. `utf8Length` measures a caller's string so an absurd
 * one is refused (naming its length, not echoing it) before it reaches anything.
 */

/** The limits, in one place. Lengths are JavaScript string lengths unless the name says bytes. */
export const TEXT_LIMITS = {
  /** An error message as shown or kept: cosctl's stderr line, a D-Bus error's text, LastError, a record's error. */
  message: 2048,
  /** A string value kept in a record (image reference, digest, version, entry name). */
  value: 4096,
  /** A caller's value echoed into a log line or an error message. */
  echo: 512,
  /** Warnings kept in a record (each one is a message). */
  warnings: 32,
  /** A string option a caller passes (D-Bus a{sv} string options, cosctl --image), in UTF-8 bytes: longer is refused. */
  optionBytes: 4096,
  /** A RunStage stage name, in UTF-8 bytes: longer is refused. */
  stageBytes: 256,
} as const;

/** Below this, a limit leaves no room for a head, a tail and the marker: it is raised to this. */
const MIN_MAX = 64;
/** Room kept for the marker: "[... " + up to 16 digits + " characters left out ...]". */
const MARKER_ROOM = 44;

/**
 * One code point (or lone surrogate) as shown: C0 controls, DEL and C1 controls as \xNN (\n, \r, \t as such), the
 * Unicode line and paragraph separators, the bidirectional controls (which reorder what a terminal shows) and lone
 * surrogates as \uNNNN; everything else as itself. Backslashes are left alone (messages quote JSON, regexps).
 */
function piece(cp: number): string {
  if (cp === 0x0a) return '\\n';
  if (cp === 0x0d) return '\\r';
  if (cp === 0x09) return '\\t';
  if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) return `\\x${cp.toString(16).padStart(2, '0')}`;
  if (
    cp === 0x061c || cp === 0x200e || cp === 0x200f || (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) ||
    (cp >= 0xd800 && cp <= 0xdfff)
  ) {
    return `\\u${cp.toString(16).padStart(4, '0')}`;
  }
  return String.fromCodePoint(cp);
}

/** Characters piece() changes; a lone surrogate is one not paired with its other half. */
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** `s` with every unsafe character escaped (see piece()), not truncated. */
export function escapeText(s: string): string {
  return s.replace(UNSAFE, (c) => piece(c.charCodeAt(0)));
}

/** The code point starting at `i` and its length in UTF-16 units (a lone surrogate is its own code point). */
function at(s: string, i: number): [number, number] {
  const cp = s.codePointAt(i) as number;
  return [cp, cp > 0xffff ? 2 : 1];
}

/** The code point ending just before `j` and its length in UTF-16 units. */
function before(s: string, j: number, floor: number): [number, number] {
  const low = s.charCodeAt(j - 1);
  if (low >= 0xdc00 && low <= 0xdfff && j - 2 >= floor) {
    const high = s.charCodeAt(j - 2);
    if (high >= 0xd800 && high <= 0xdbff) return [((high - 0xd800) << 10) + (low - 0xdc00) + 0x10000, 2];
  }
  return [low, 1];
}

/** How many code points s[from, to) holds. */
function codePoints(s: string, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    // The low half of a pair is not counted again.
    if (c >= 0xdc00 && c <= 0xdfff && i > from) {
      const h = s.charCodeAt(i - 1);
      if (h >= 0xd800 && h <= 0xdbff) continue;
    }
    n++;
  }
  return n;
}

/**
 * `s` as one safe line of at most `max` characters (a `max` below 64 counts as 64): control characters escaped (see
 * piece()), so the result holds no control character, no newline and nothing that reorders a line; when the escaped
 * text is longer than `max`, its head and its tail are kept (the end of an error message usually says why) around a
 * marker naming how many characters of `s` were left out: "head[... 1048562 characters left out ...]tail". Work and
 * memory are bounded by `max`, not by the length of `s`, except for counting what was left out.
 */
export function displayText(s: string, max: number): string {
  const limit = Math.max(MIN_MAX, Math.floor(max));
  if (s.length <= limit) {
    const escaped = escapeText(s);
    if (escaped.length <= limit) return escaped;
  }
  const budget = limit - MARKER_ROOM;
  const headBudget = Math.ceil((budget * 2) / 3);
  const tailBudget = budget - headBudget;
  let head = '';
  let i = 0;
  while (i < s.length) {
    const [cp, n] = at(s, i);
    const p = piece(cp);
    if (head.length + p.length > headBudget) break;
    head += p;
    i += n;
  }
  const tail: string[] = [];
  let tailLength = 0;
  let j = s.length;
  while (j > i) {
    const [cp, n] = before(s, j, i);
    const p = piece(cp);
    if (tailLength + p.length > tailBudget) break;
    tail.push(p);
    tailLength += p.length;
    j -= n;
  }
  const rest = tail.reverse().join('');
  if (j <= i) return head + rest;
  return `${head}[... ${codePoints(s, i, j)} characters left out ...]${rest}`;
}

/** The length of `s` in UTF-8 bytes (a lone surrogate counts as the 3 bytes of U+FFFD it is encoded as). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && s.charCodeAt(i + 1) >= 0xdc00 && s.charCodeAt(i + 1) <= 0xdfff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** Wrap `text` at `width` columns on spaces, each line after the first indented by `indent`. */
export function wrapWords(text: string, width: number, indent: string): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = indent + word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines.join('\n');
}
