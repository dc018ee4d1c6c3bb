/** How the upgrade names what went wrong: a full partition told by codes alone, a failed hook. */
import { AgentError } from '../../model/errors.ts';

/**
 * A full partition as NO_SPACE naming it, told by codes alone: an AgentError NO_SPACE (fstools maps mksquashfs's
 * own report to it) or ENOSPC in the cause chain. Exported for tests.
 */
export function mapNoSpace(e: unknown, label: string): unknown {
  if ((e instanceof AgentError && e.code === 'NO_SPACE') || hasErrno(e, 'ENOSPC')) {
    return new AgentError('NO_SPACE', `${label} is full: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return e;
}

/** Whether the errno `code` (e.g. ENOSPC) is the code of `e` or of an error in its cause chain. Exported for tests. */
export function hasErrno(e: unknown, code: string): boolean {
  for (let cur: unknown = e, depth = 0; cur instanceof Error && depth < 10; cur = (cur as Error).cause, depth++) {
    if ((cur as NodeJS.ErrnoException).code === code) return true;
  }
  return false;
}

/** A hook that failed fails the upgrade (before the switch) as HOOK_FAILED naming the hook. */
export function hookError(name: string, e: unknown): AgentError {
  const err = new AgentError('HOOK_FAILED', `hook ${name} failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  return err;
}
