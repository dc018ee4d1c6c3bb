/**
 * The `git` plugin (yip.md 3.3; in cOS v0.8's plugin list), with the `git` binary as yip's `gitbinary` build runs it:
 * a checkout at `path` (`path/.git` exists) is updated with `git fetch origin BRANCH` and `git reset --hard
 * origin/BRANCH` (then `git checkout BRANCH` with `branch_only`); otherwise `git clone --branch BRANCH
 * [--single-branch] URL PATH`. BRANCH defaults to `master`. Auth: `username` + `password` through a GIT_ASKPASS
 * helper (the secrets in its environment, never on a command line or in the helper file); `private_key` through
 * GIT_SSH_COMMAND with that key only, host keys unchecked with `insecure`, else pinned to `public_key` (a
 * known_hosts line for every host) when it is given. No prompt ever waits (GIT_TERMINAL_PROMPT=0, BatchMode).
 * The helper and key files live in a private temp directory removed afterwards.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ToolExec } from './tool.ts';
import type { YipStep } from './schema.ts';

const ASKPASS = `#!/bin/sh
# git's credential prompt for the yip git plugin: the values come from the environment git was started with.
case "$1" in
  Username*) printf '%s\\n' "$YIP_GIT_USERNAME" ;;
  *) printf '%s\\n' "$YIP_GIT_PASSWORD" ;;
esac
`;

const quote = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;

/** Clone or update the checkout at `dest` (the host path of `git.path` inside the root). */
export async function runGit(exec: ToolExec, git: YipStep['git'], dest: string): Promise<void> {
  if (git.url === '') return;
  if (git.path === '') throw new Error('no path to clone into');
  const branch = git.branch !== '' ? git.branch : 'master';
  const secrets = await mkdtemp(path.join(tmpdir(), 'yip-git-'));
  try {
    await chmod(secrets, 0o700);
    const env: Record<string, string> = { GIT_TERMINAL_PROMPT: '0' };
    const { auth } = git;
    if (auth.username !== '' || auth.password !== '') {
      const helper = path.join(secrets, 'askpass');
      await writeFile(helper, ASKPASS, { mode: 0o700 });
      Object.assign(env, { GIT_ASKPASS: helper, YIP_GIT_USERNAME: auth.username, YIP_GIT_PASSWORD: auth.password });
    }
    if (auth.private_key !== '') {
      const key = path.join(secrets, 'id');
      await writeFile(key, auth.private_key.endsWith('\n') ? auth.private_key : `${auth.private_key}\n`, { mode: 0o600 });
      const ssh = ['ssh', '-i', quote(key), '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes'];
      if (auth.insecure) ssh.push('-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null');
      else if (auth.public_key !== '') {
        const known = path.join(secrets, 'known_hosts');
        await writeFile(known, `* ${auth.public_key.trim()}\n`, { mode: 0o600 });
        ssh.push('-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${quote(known)}`);
      }
      env['GIT_SSH_COMMAND'] = ssh.join(' ');
    }
    if (existsSync(path.join(dest, '.git'))) {
      await exec(['git', '-C', dest, 'fetch', '--force', 'origin', branch], { env });
      await exec(['git', '-C', dest, 'reset', '--hard', `origin/${branch}`], { env });
      if (git.branch_only) await exec(['git', '-C', dest, 'checkout', branch], { env });
    } else {
      await exec(['git', 'clone', '--branch', branch, ...(git.branch_only ? ['--single-branch'] : []), '--', git.url, dest], { env });
    }
  } finally {
    await rm(secrets, { recursive: true, force: true });
  }
}
