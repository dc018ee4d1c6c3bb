/**
 * yip's console (yip.md 2.7): a cloud-config command is a shell script, run as `sh -c <script>` (POSIX sh, not bash),
 * stdin from /dev/null, stdout and stderr combined, in a process group of its own whose leftovers are killed when the
 * script exits. A non-zero exit is a result, never a throw. With a root other than `/`, the script runs chrooted into
 * it (as elemental's chroot hooks do), so `cat /proc/cmdline` or `systemctl enable` act on that root, never on the
 * live system. There is no per-command deadline in yip; the process group runner gets the largest timer Node has.
 */
import { runInProcessGroup } from './process-group.ts';

export interface ShellConsole {
  run(command: string): Promise<{ exitCode: number; output: string }>;
}

/** Bytes of a command's output kept (the tail): yip logs it; a report needs no more. */
const OUTPUT_BYTES = 64 * 1024;
const NO_DEADLINE_MS = 2 ** 31 - 1;

export function shellConsole(opts: { root: string; env?: Readonly<Record<string, string>> }): ShellConsole {
  const chrooted = opts.root !== '/';
  return {
    async run(command: string) {
      const argv = chrooted ? ['/usr/sbin/chroot', opts.root, '/bin/sh', '-c', command] : ['/bin/sh', '-c', command];
      const r = await runInProcessGroup({ argv, timeoutMs: NO_DEADLINE_MS, outputBytes: OUTPUT_BYTES, cwd: '/', ...(opts.env !== undefined ? { env: opts.env } : {}) });
      if (r.error !== undefined) return { exitCode: 127, output: `${r.output}${r.error}` };
      return { exitCode: r.exitCode ?? 128, output: r.output };
    },
  };
}
