import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SysRoot } from '../../src/sys/root.ts';
import type { YipEnv } from '../../src/yip/executor.ts';
import { cmdlineSources, runStage } from '../../src/yip/run-stage.ts';

async function rig(t: { teardown(fn: () => Promise<void>): void }, files: Record<string, string>): Promise<{ env: YipEnv; commands: string[]; root: SysRoot }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'yip-stage-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = new SysRoot(dir);
  for (const [p, text] of Object.entries(files)) {
    await mkdir(path.dirname(root.path(p)), { recursive: true });
    await writeFile(root.path(p), text);
  }
  const commands: string[] = [];
  const env: YipEnv = { root, hostname: 'h', machineId: 'm', values: {}, console: { run: (c) => { commands.push(c); return Promise.resolve({ exitCode: c === 'false' ? 1 : 0, output: '' }); } } };
  return { env, commands, root };
}

const cmds = (stage: string, ...c: string[]): string => `stages:\n  ${stage}:\n    - commands: [${c.map((x) => JSON.stringify(x)).join(', ')}]\n`;

test('cos.setup= and elemental.setup= from the command line, split on every = as elemental does', (t) => {
  t.deepEqual(cmdlineSources('BOOT_IMAGE=/vmlinuz cos.setup=/oem/extra.yaml elemental.setup=http://127.0.0.1:8080/c.yaml?a=b quiet'), ['/oem/extra.yaml', 'http://127.0.0.1:8080/c.yaml?a']);
});

test('before, stage, after each over every source in order (/system/oem, /oem/, /usr/local/cloud-config/, extra, cos.setup), then the command line', async (t) => {
  const { env, commands } = await rig(t, {
    '/system/oem/01.yaml': cmds('boot.before', 'sys-before') + `  boot:\n    - commands: [sys-boot]\n  boot.after:\n    - commands: [sys-after]\n`,
    '/oem/01.yaml': cmds('boot', 'oem-boot'),
    '/usr/local/cloud-config/a.yaml': cmds('boot.before', 'local-before'),
    '/extra/x.yaml': cmds('boot', 'extra-boot'),
    '/setup/s.yaml': cmds('boot.after', 'setup-after'),
  });
  const r = await runStage(env, { stage: 'boot', extraPaths: ['/extra', '/missing'], cmdline: "cos.setup=/setup/s.yaml stages.boot[0].commands[0]='echo beepboop'" });
  t.deepEqual(r.sources, ['/system/oem', '/oem/', '/usr/local/cloud-config/', '/extra', '/setup/s.yaml']);
  t.deepEqual(commands, ['sys-before', 'local-before', 'sys-boot', 'oem-boot', 'extra-boot', 'sys-after', 'setup-after', 'echo beepboop']);
  t.is(r.errors, 0);
});

test('errors are counted, never stop the run; a bad file is a problem and the others run; command-line garbage is ignored', async (t) => {
  const { env, commands, root } = await rig(t, {
    '/oem/01.yaml': cmds('network', 'false', 'after-false'),
    '/oem/02.yaml': 'stages: [a, b]\n',
    '/oem/03.yaml': `stages:\n  network:\n    - files: [{path: /etc/ok, content: ok, permissions: 0644}]\n`,
  });
  const r = await runStage(env, { stage: 'network', cmdline: 'foo-bar=1 stages.network[0].files[0].permissions=0644 stages.network[0].files[0].path=/x' });
  t.deepEqual(commands, ['false', 'after-false']);
  t.is(await readFile(root.path('/etc/ok'), 'utf8'), 'ok');
  t.is(r.errors, 2, 'the failed command and the file that does not load; not the command line');
  const bad = r.runs.find((x) => x.source === '/oem/' && x.stage === 'network')?.problems[0];
  t.like(bad, { file: '/oem/02.yaml', key: 'stages' });
});

test('a file an earlier stage writes or rewrites is what the later stages run (every source is read again per stage)', async (t) => {
  const { env, commands } = await rig(t, {
    '/oem/01.yaml': `stages:
  boot.before:
    - commands: [before]
      files:
        - path: /oem/01.yaml
          content: "stages:\\n  boot:\\n    - commands: [rewritten-boot]\\n"
        - path: /oem/02.yaml
          content: "stages:\\n  boot.after:\\n    - commands: [new-file-after]\\n"
  boot:
    - commands: [original-boot]
`,
  });
  const r = await runStage(env, { stage: 'boot', cmdline: '' });
  t.deepEqual(commands, ['before', 'rewritten-boot', 'new-file-after']);
  t.is(r.errors, 0);
});
