/** A logger that drops everything, without loading pino: what cosctl logs with unless --verbose or COS_LOG_LEVEL. */
import type { Logger } from './log.ts';

export const nullLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => nullLogger,
};
