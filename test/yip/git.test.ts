/**
 * The `git` plugin with the real git binary against a local origin (file://, no network): clone, update (fetch +
 * hard reset: local edits are gone), branch and branch_only; auth through GIT_ASKPASS and GIT_SSH_COMMAND, checked on
 * the environment git is started with and by running the askpass helper as git would.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { SpawnRunner } from '../../src/sys/runner.ts';
import { SysRoot } from '../../src/sys/root.ts';
import { runOps, type YipEnv } from '../../src/yip/executor.ts';
import { planStage } from '../../src/yip/plan.ts';
import { decodeYip } from '../../src/yip/schema.ts';
import type { ToolExec } from '../../src/yip/tool.ts';

const sh = promisify(execFile);
const runner = new SpawnRunner();
const realExec: ToolExec = async (argv, o = {}) => {
  const r = await runner.run({ argv, description: argv.join(' '), ...(o.env !== undefined ? { env: o.env } : {}), ...(o.okExitCodes !== undefined ? { okExitCodes: o.okExitCodes } : {}) });
  return { exitCode: r.exitCode, stdout: r.stdout };
};
const IDENTITY = { GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.invalid', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.invalid' };
const git = (cwd: string, ...args: string[]): Promise<{ stdout: string }> => sh('git', args, { cwd, env: { ...process.env, ...IDENTITY } });

async function rig(t: { teardown(fn: () => Promise<void>): void }, exec: ToolExec): Promise<{ env: YipEnv; root: SysRoot; origin: string; work: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'yip-git-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const work = path.join(dir, 'work');
  await mkdir(work);
  await git(work, 'init', '-q', '-b', 'master');
  await writeFile(path.join(work, 'config.yaml'), 'v1\n');
  await git(work, 'add', '.');
  await git(work, 'commit', '-q', '-m', 'v1');
  await git(work, 'branch', 'dev');
  const origin = `file://${work}`;
  const root = new SysRoot(path.join(dir, 'root'));
  await mkdir(root.path('/srv'), { recursive: true });
  const env: YipEnv = { root, hostname: 'h', machineId: 'm', values: {}, console: { run: () => Promise.resolve({ exitCode: 0, output: '' }) }, exec };
  return { env, root, origin, work };
}

async function run(env: YipEnv, yaml: string): Promise<string[]> {
  const d = decodeYip(yaml, '/oem/git.yaml');
  if (d.config === null) throw new Error(JSON.stringify(d.problems));
  return (await runOps(planStage([{ origin: '/oem/git.yaml', config: d.config }], 'boot').ops, env)).flatMap((r) => r.errors);
}

test('clone (branch master by default) into the root; a second run fetches and hard-resets: new commits in, local edits gone', async (t) => {
  const { env, root, origin, work } = await rig(t, realExec);
  const step = `stages:\n  boot:\n    - git: {url: "${origin}", path: /srv/config}\n`;
  t.deepEqual(await run(env, step), []);
  t.is(await readFile(root.path('/srv/config/config.yaml'), 'utf8'), 'v1\n');
  await writeFile(path.join(work, 'config.yaml'), 'v2\n');
  await git(work, 'commit', '-q', '-am', 'v2');
  await writeFile(root.path('/srv/config/config.yaml'), 'edited on the host\n');
  t.deepEqual(await run(env, step), []);
  t.is(await readFile(root.path('/srv/config/config.yaml'), 'utf8'), 'v2\n');
});

test('branch and branch_only: a single-branch clone of that branch; a missing branch or origin is an error naming the URL', async (t) => {
  const { env, root, origin, work } = await rig(t, realExec);
  await git(work, 'checkout', '-q', 'dev');
  await writeFile(path.join(work, 'config.yaml'), 'dev\n');
  await git(work, 'commit', '-q', '-am', 'dev');
  t.deepEqual(await run(env, `stages:\n  boot:\n    - git: {url: "${origin}", path: /srv/dev, branch: dev, branch_only: true}\n`), []);
  t.is(await readFile(root.path('/srv/dev/config.yaml'), 'utf8'), 'dev\n');
  const branches = (await git(root.path('/srv/dev'), 'branch', '-r')).stdout.trim().split('\n').map((b) => b.trim()).filter((b) => !b.startsWith('origin/HEAD'));
  t.deepEqual(branches, ['origin/dev'], 'only the one branch was fetched');
  const missing = await run(env, `stages:\n  boot:\n    - git: {url: "${origin}", path: /srv/x, branch: nope}\n`);
  t.is(missing.length, 1);
  t.true(missing[0]?.startsWith(`git ${origin}: `), missing[0]);
  await t.throwsAsync(stat(root.path('/srv/x/.git')));
});

test('auth: a GIT_ASKPASS helper answers the username and password from its environment; a private key goes to GIT_SSH_COMMAND, pinned or insecure', async (t) => {
  const calls: Array<{ argv: readonly string[]; env: Record<string, string>; askpass?: { user: string; pass: string } }> = [];
  const recording: ToolExec = async (argv, o = {}) => {
    const env = { ...(o.env ?? {}) };
    const call: (typeof calls)[number] = { argv, env };
    if (env['GIT_ASKPASS'] !== undefined) {
      // Run the helper as git would, while it exists.
      const ask = (prompt: string): Promise<string> => sh(env['GIT_ASKPASS'] as string, [prompt], { env: { ...process.env, ...env } }).then((r) => r.stdout);
      call.askpass = { user: await ask("Username for 'https://git.example':"), pass: await ask("Password for 'https://me@git.example':") };
      t.is(((await stat(env['GIT_ASKPASS'] as string)).mode & 0o777), 0o700);
      t.false((await readFile(env['GIT_ASKPASS'] as string, 'utf8')).includes('s3cr3t'), 'the password is not in the helper file');
    }
    calls.push(call);
    return { exitCode: 0, stdout: '' };
  };
  const { env } = await rig(t, recording);
  t.deepEqual(await run(env, `stages:
  boot:
    - git: {url: "https://git.example/repo.git", path: /srv/a, auth: {username: me, password: s3cr3t}}
    - git: {url: "ssh://git@git.example/repo.git", path: /srv/b, auth: {private_key: "KEY", insecure: true}}
    - git: {url: "ssh://git@git.example/repo.git", path: /srv/c, auth: {private_key: "KEY", public_key: "ssh-ed25519 AAAA host"}}
`), []);
  t.deepEqual(calls.map((c) => c.argv), [
    ['git', 'clone', '--branch', 'master', '--', 'https://git.example/repo.git', env.root.path('/srv/a')],
    ['git', 'clone', '--branch', 'master', '--', 'ssh://git@git.example/repo.git', env.root.path('/srv/b')],
    ['git', 'clone', '--branch', 'master', '--', 'ssh://git@git.example/repo.git', env.root.path('/srv/c')],
  ]);
  t.deepEqual(calls[0]?.askpass, { user: 'me\n', pass: 's3cr3t\n' });
  t.like(calls[0]?.env, { GIT_TERMINAL_PROMPT: '0', YIP_GIT_USERNAME: 'me', YIP_GIT_PASSWORD: 's3cr3t' });
  t.regex(calls[1]?.env['GIT_SSH_COMMAND'] ?? '', /^ssh -i '[^']+\/id' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=\/dev\/null$/);
  t.regex(calls[2]?.env['GIT_SSH_COMMAND'] ?? '', /-o StrictHostKeyChecking=yes -o UserKnownHostsFile='[^']+\/known_hosts'$/);
  t.false(JSON.stringify(calls.map((c) => c.argv)).includes('s3cr3t'), 'no secret on a command line');
});
