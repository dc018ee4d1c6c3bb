/**
 * A Node.js module run as a child process of this one, with an IPC channel (structured-clone messages, `advanced`
 * serialization): cosd's job processes (src/daemon/job-process.ts). Same Node binary; no Node flags of this process
 * (cosd's are tuned for its idle heap, not for a job's work); stdout and stderr are this process's (the journal);
 * stdin is closed.
 */
import { fork, type ChildProcess } from 'node:child_process';

/** A forked module: a Node ChildProcess with its IPC channel. */
export type NodeChild = ChildProcess;

export function forkModule(module: URL, opts: { env: Record<string, string | undefined>; name: string }): NodeChild {
  // the name as its argument: ps shows what it is beside cosd ("node .../job-worker.mjs cosd-upgrade")
  return fork(module, [opts.name], {
    env: opts.env,
    execArgv: [],
    serialization: 'advanced',
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}
