/** JSON logs (pino), one event per line; the CLI logs to stderr, the daemon to stdout for the journal. */
import { pino } from 'pino';
import type { Writable } from 'node:stream';

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

export function createLogger(opts: { level?: string; destination?: Writable | NodeJS.WritableStream } = {}): Logger {
  return pino({ level: opts.level ?? 'info', base: { name: 'cos-agent' } }, opts.destination ?? process.stderr) as unknown as Logger;
}

/** A logger that drops everything (tests that do not look at logs). */
export const silentLogger: Logger = createLogger({ level: 'silent' });
