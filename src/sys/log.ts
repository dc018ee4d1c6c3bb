/**
 * Logs (pino), one event per line. cosd writes JSON lines to stdout for the journal: under systemd (JOURNAL_STREAM set)
 * each line starts with its syslog priority, `<4>{"level":40,...}`, which journald turns into the entry's PRIORITY
 * (SyslogLevelPrefix=, on by default), so `journalctl -p warning -u cosd` shows the warnings and errors; the JSON
 * carries the message (msg) and the fields (transaction, code, digest, ...). cosctl --verbose writes readable lines
 * to stderr instead: `12:00:01.234 WARN  message  key=value ...`.
 */
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { displayText, TEXT_LIMITS } from '../model/text.ts';

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** pino's numeric levels and their syslog priorities (sd-daemon(3): <7> debug ... <2> crit). */
const PRIORITY: ReadonlyArray<readonly [number, number]> = [[60, 2], [50, 3], [40, 4], [30, 6], [20, 7], [10, 7]];
const LEVEL_NAME: ReadonlyArray<readonly [number, string]> = [[60, 'FATAL'], [50, 'ERROR'], [40, 'WARN'], [30, 'INFO'], [20, 'DEBUG'], [10, 'TRACE']];

/** PURE: the syslog priority of a pino level (the nearest at or below it). */
export function syslogPriority(level: number): number {
  return PRIORITY.find(([l]) => level >= l)?.[1] ?? 7;
}

/** PURE: a JSON line of pino's with its syslog priority prefix (pino writes `{"level":N,` first). */
export function withPriorityPrefix(line: string): string {
  const m = /^\{"level":(\d+),/.exec(line);
  return m === null ? line : `<${syslogPriority(Number(m[1]))}>${line}`;
}

const PLAIN = /^[\w./:@+-]+$/;

/** PURE: a pino JSON line as a readable line (time, level, message, then the fields as key=value). */
export function readableLine(line: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const { level, time, msg, name: _name, pid: _pid, hostname: _host, ...fields } = o;
  const at = typeof time === 'number' ? new Date(time).toISOString().slice(11, 23) : '--:--:--.---';
  const lv = typeof level === 'number' ? (LEVEL_NAME.find(([l]) => level >= l)?.[1] ?? 'TRACE') : String(level);
  const kv = Object.entries(fields).map(([k, v]) => {
    // Strings bare when plain, else quoted; numbers, booleans, null, arrays and objects as JSON.
    if (typeof v !== 'string') return `${k}=${JSON.stringify(v)}`;
    return `${k}=${PLAIN.test(v) ? v : JSON.stringify(v)}`;
  });
  // The message escaped as the fields are (JSON.stringify): no control character from outside reaches the terminal.
  return `${at} ${lv.padEnd(5)} ${typeof msg === 'string' ? displayText(msg, TEXT_LIMITS.message) : ''}${kv.length > 0 ? `  ${kv.join(' ')}` : ''}\n`;
}

/** A stream that rewrites each complete line with `fn` on its way to `out`. */
function lineMapper(out: Writable | NodeJS.WritableStream, fn: (line: string) => string): Writable {
  let partial = '';
  return new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      const text = partial + chunk.toString();
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      const mapped = lines.map((l) => fn(l)).map((l) => (l.endsWith('\n') ? l : `${l}\n`)).join('');
      if (mapped === '') cb();
      else out.write(mapped, () => cb());
    },
  });
}

export function createLogger(opts: { level?: string; destination?: Writable | NodeJS.WritableStream; format?: 'json' | 'journal' | 'readable' } = {}): Logger {
  const out = opts.destination ?? process.stderr;
  const format = opts.format ?? 'json';
  const dest = format === 'journal' ? lineMapper(out, withPriorityPrefix) : format === 'readable' ? lineMapper(out, readableLine) : out;
  return pino({ level: opts.level ?? 'info', base: { name: 'cos-agent' } }, dest) as unknown as Logger;
}

/** A logger that drops everything (tests that do not look at logs). */
export const silentLogger: Logger = createLogger({ level: 'silent' });
