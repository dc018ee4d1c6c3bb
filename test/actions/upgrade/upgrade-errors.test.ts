/**
 * How upgrade.ts tells a full partition (mapNoSpace, hasErrno): by error codes only, never by the words of a message.
 * Pure: no host, no registry (the loop-device tests of upgrade() are in upgrade.test.ts).
 */
import test from 'ava';
import { hasErrno, mapNoSpace } from '../../../src/actions/upgrade/upgrade.ts';
import { AgentError, CommandError } from '../../../src/model/errors.ts';
import { mksquashfs } from '../../../src/partitions/index.ts';
import type { Command, CommandResult, Runner } from '../../../src/sys/runner.ts';

const errno = (code: string, message = `${code}: something, write '/x'`): NodeJS.ErrnoException => Object.assign(new Error(message), { code });

test('ENOSPC anywhere in the cause chain is found by its code', (t) => {
  t.true(hasErrno(errno('ENOSPC'), 'ENOSPC'));
  const wrapped = new AgentError('UNPACK_FAILED', 'applying tar entry "usr/x" failed', { cause: new Error('write failed', { cause: errno('ENOSPC') }) });
  t.true(hasErrno(wrapped, 'ENOSPC'));
  t.false(hasErrno(errno('EIO'), 'ENOSPC'));
  t.false(hasErrno('ENOSPC', 'ENOSPC'), 'a string is no error');
});

test('a message that merely contains an errno name is not that errno', (t) => {
  t.false(hasErrno(new Error('ENOSPC: the words only, no code'), 'ENOSPC'));
  t.false(hasErrno(new AgentError('STAGE_FAILED', 'pulling: ENOSPC mentioned by the registry'), 'ENOSPC'));
});

test('mapNoSpace: ENOSPC and an AgentError NO_SPACE become NO_SPACE naming the partition', (t) => {
  const fromErrno = mapNoSpace(errno('ENOSPC'), 'COS_RECOVERY');
  t.true(fromErrno instanceof AgentError);
  t.is((fromErrno as AgentError).code, 'NO_SPACE');
  t.regex((fromErrno as AgentError).message, /^COS_RECOVERY is full: /);
  const fromTool = mapNoSpace(new AgentError('NO_SPACE', 'building /x/transition.squashfs: no space left on its filesystem'), 'COS_RECOVERY');
  t.is((fromTool as AgentError).code, 'NO_SPACE');
  t.regex((fromTool as AgentError).message, /^COS_RECOVERY is full: building/);
});

test('mapNoSpace: "No space left" in the message of another error is not a full partition', (t) => {
  const own = new AgentError('HOOK_FAILED', 'hook after-upgrade failed: No space left on device (as the hook printed)');
  t.is(mapNoSpace(own, 'COS_STATE'), own, 'passed through unchanged');
  const plain = new Error('No space left on device');
  t.is(mapNoSpace(plain, 'COS_STATE'), plain);
});

test('mksquashfs reporting "No space left on device" on stderr comes back as AgentError NO_SPACE (the one place tool output is read)', async (t) => {
  const failing: Runner = {
    run(cmd: Command): Promise<CommandResult> {
      return Promise.reject(new CommandError(cmd.description, cmd.argv, {
        exitCode: 1, signal: null, stderrTail: 'Write failed because No space left on device\nFATAL ERROR: Failed to write to output filesystem\n',
      }));
    },
  };
  const err = await t.throwsAsync(mksquashfs(failing, '/tree', '/out/transition.squashfs'), { instanceOf: AgentError });
  t.is(err?.code, 'NO_SPACE');
  t.is((mapNoSpace(err, 'COS_RECOVERY') as AgentError).code, 'NO_SPACE');
  // Any other mksquashfs failure stays what it was.
  const other: Runner = {
    run: (cmd) => Promise.reject(new CommandError(cmd.description, cmd.argv, { exitCode: 1, signal: null, stderrTail: 'FATAL ERROR: unknown option' })),
  };
  const err2 = await t.throwsAsync(mksquashfs(other, '/tree', '/out/transition.squashfs'), { instanceOf: CommandError });
  t.is(mapNoSpace(err2, 'COS_RECOVERY'), err2);
});
