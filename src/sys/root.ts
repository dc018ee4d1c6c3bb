/**
 * SysRoot: every host path the agent touches is derived from one root prefix, so tests and `--root DIR` run the
 * agent against a host mounted under a temp dir. Block devices (/dev) are never re-rooted: they are found by label.
 */
import path from 'node:path';

export class SysRoot {
  /** Absolute path of the root prefix ("/" on a real host). */
  readonly prefix: string;
  constructor(prefix = '/') {
    this.prefix = path.resolve(prefix);
  }
  /** Map an absolute host path ("/etc/cos-upgrade-image") into the root. */
  path(hostPath: string): string {
    if (!hostPath.startsWith('/')) throw new Error(`SysRoot.path wants an absolute path, got ${hostPath}`);
    return this.prefix === '/' ? path.normalize(hostPath) : path.join(this.prefix, hostPath);
  }
  get isHostRoot(): boolean {
    return this.prefix === '/';
  }
}
