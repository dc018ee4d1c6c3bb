import test from 'ava';
import { decodeYip, goParseInt, isCloudConfig, MAX_NODES } from '../../src/yip/schema.ts';

const F = '/oem/x.yaml';

test('a document: name, stages, steps with every key family; unknown keys ignored', (t) => {
  const r = decodeYip(`name: demo
stages:
  boot:
    - name: one
      commands: [echo a, "echo b"]
      files:
        - path: /etc/x
          permissions: 0644
          owner: 1000
          content: hi
          ownerstring: "u:g"
          owner_string: ignored
      systctl: {a: b}
      sysctl:
        vm.swappiness: 10
        kernel.x: yes
        kernel.y: 007
        kernel.z: ~
      users:
        bob: {passwd: x, groups: [wheel], lock_passwd: yes, uid: 1001}
      after: [{name: demo.zero}]
  boot.after:
    - hostname: h
`, F);
  t.deepEqual(r.problems, []);
  const c = r.config;
  t.is(c?.name, 'demo');
  const s = c?.stages['boot']?.[0];
  t.is(s?.name, 'one');
  t.deepEqual(s?.commands, ['echo a', 'echo b']);
  t.like(s?.files[0], { path: '/etc/x', permissions: 0o644, owner: 1000, group: 0, content: 'hi', ownerstring: 'u:g' });
  t.deepEqual(s?.sysctl, { 'vm.swappiness': '10', 'kernel.x': 'yes', 'kernel.y': '007', 'kernel.z': '' }, 'string maps keep the source text');
  t.like(s?.users['bob'], { passwd: 'x', groups: ['wheel'], lock_passwd: true, uid: '1001', shell: '' });
  t.deepEqual(s?.after, [{ name: 'demo.zero' }]);
  t.is(c?.stages['boot.after']?.[0]?.hostname, 'h');
  t.deepEqual(c?.stages['boot.after']?.[0]?.commands, []);
});

test('integers as Go parses them: YAML 1.1 octal, hex, binary, underscores; 644 is decimal; floats truncate', (t) => {
  const perms = (v: string): number | undefined => decodeYip(`stages: {s: [{files: [{path: /f, permissions: ${v}}]}]}`, F).config?.stages['s']?.[0]?.files[0]?.permissions;
  t.is(perms('0644'), 0o644);
  t.is(perms('0o644'), 0o644);
  t.is(perms('0x1a4'), 0o644);
  t.is(perms('0b101'), 5);
  t.is(perms('1_0'), 10);
  t.is(perms('644'), 644);
  t.is(perms('0777.0'), 777);
});

test('a type mismatch rejects the whole document, naming file, line, stage, step and key', (t) => {
  const cases: Array<[string, { line: number; stage: string | null; step: number | null; key: string }, RegExp]> = [
    ['stages:\n  boot:\n    - files:\n        - path: /f\n          permissions: "0644"\n', { line: 5, stage: 'boot', step: 0, key: 'files[0].permissions' }, /uint32/],
    ['stages:\n  boot:\n    - name: a\n    - commands: echo hi\n', { line: 4, stage: 'boot', step: 1, key: 'commands' }, /expected a list/],
    ['stages:\n  boot:\n    - users:\n        u: {groups: users}\n', { line: 4, stage: 'boot', step: 0, key: 'users.u.groups' }, /expected a list/],
    ['stages: [a, b]\n', { line: 1, stage: null, step: null, key: 'stages' }, /mapping of stage names/],
    ['stages:\n  boot: {name: x}\n', { line: 2, stage: 'boot', step: null, key: '' }, /expected a list/],
    ['stages:\n  boot:\n    - files:\n        - path: /f\n          owner: "0"\n', { line: 5, stage: 'boot', step: 0, key: 'files[0].owner' }, /into int/],
    ['stages:\n  boot:\n    - files:\n        - path: /f\n          permissions: -1\n', { line: 5, stage: 'boot', step: 0, key: 'files[0].permissions' }, /out of range/],
    ['stages:\n  boot:\n    - users:\n        u: {lock_passwd: maybe}\n', { line: 4, stage: 'boot', step: 0, key: 'users.u.lock_passwd' }, /into bool/],
  ];
  for (const [text, where, message] of cases) {
    const r = decodeYip(text, F);
    t.is(r.config, null, text);
    t.like(r.problems[0], { file: F, ...where }, text);
    t.regex(r.problems[0]?.message ?? '', message, text);
  }
});

test('anchors, aliases and merge keys (as 08_boot_assessment uses them); explicit keys win over merged ones', (t) => {
  const r = decodeYip(`stages:
  after-install:
    - &install
      name: install
      commands: [a]
      files: [{path: /x, content: c, permissions: 0600}]
  after-upgrade:
    - <<: *install
      name: upgrade
  after-reset:
    - *install
`, F);
  t.deepEqual(r.problems, []);
  t.like(r.config?.stages['after-upgrade']?.[0], { name: 'upgrade', commands: ['a'] });
  t.is(r.config?.stages['after-upgrade']?.[0]?.files[0]?.permissions, 0o600);
  t.is(r.config?.stages['after-reset']?.[0]?.name, 'install');
});

test('duplicate keys: the last wins (yaml.v2); only the first document is read; empty and comment-only documents have no stages', (t) => {
  t.is(decodeYip('stages:\n  b:\n    - hostname: one\n      hostname: two\n', F).config?.stages['b']?.[0]?.hostname, 'two');
  t.deepEqual(Object.keys(decodeYip('stages: {a: [{hostname: x}]}\n---\nstages: {b: [{hostname: y}]}\n', F).config?.stages ?? {}), ['a']);
  t.deepEqual(decodeYip('', F), { config: { name: '', stages: {} }, problems: [] });
  t.deepEqual(decodeYip('# nothing\n', F), { config: { name: '', stages: {} }, problems: [] });
});

test('a null step decodes as an empty step', (t) => {
  const r = decodeYip('stages:\n  boot:\n    - ~\n    - hostname: h\n', F);
  t.is(r.config?.stages['boot']?.length, 2);
  t.deepEqual(r.config?.stages['boot']?.[0]?.commands, []);
  t.is(r.config?.stages['boot']?.[0]?.name, '');
});

test('broken YAML is a problem naming the line, not a throw', (t) => {
  const r = decodeYip('stages:\n  boot:\n    - commands: [a\n', F);
  t.is(r.config, null);
  t.regex(r.problems[0]?.message ?? '', /^invalid YAML/);
  t.true((r.problems[0]?.line ?? 0) >= 3);
});

test('an alias bomb is refused within its node budget, quickly; a list bomb fails at its first wrong type', (t) => {
  // merge keys expand recursively: 10^12 mappings if followed
  let text = 'x0: &m0 {hostname: h}\n';
  for (let i = 1; i < 12; i++) text += `x${i}: &m${i} {<<: [${Array.from({ length: 10 }, () => `*m${i - 1}`).join(', ')}]}\n`;
  text += 'stages:\n  boot:\n    - <<: *m11\n';
  const t0 = Date.now();
  const r = decodeYip(text, F);
  t.is(r.config, null);
  t.regex(r.problems[0]?.message ?? '', new RegExp(`more than ${MAX_NODES} nodes`));
  t.log(`refused in ${Date.now() - t0} ms`);

  let lists = 'a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n';
  for (let i = 1; i < 12; i++) lists += `a${i}: &a${i} [${Array.from({ length: 10 }, () => `*a${i - 1}`).join(', ')}]\n`;
  lists += 'stages:\n  boot:\n    - commands: *a11\n';
  const l = decodeYip(lists, F);
  t.is(l.config, null);
  t.like(l.problems[0], { stage: 'boot', step: 0, key: 'commands[0]' });
});

test('goParseInt: what Go accepts with base 0', (t) => {
  const cases: Array<[string, number | null]> = [['0644', 420], ['0o644', 420], ['0x1A4', 420], ['0b101', 5], ['0x_1a4', 420], ['-0x10', -16], ['10', 10], ['0', 0], ['1_0', 10], ['0_7', 7], ['0x', null], ['08', null], ['abc', null], ['', null], ['1__0', null]];
  for (const [s, v] of cases) t.is(goParseInt(s), v, s);
});

test("cOS v0.8.14's own cloud-config files (../shared, unmodified) decode with no problem, stage by stage", async (t) => {
  const { readdir, readFile } = await import('node:fs/promises');
  const dir = new URL('../../../shared/cos-v0.8.14/oem/', import.meta.url);
  const got: Record<string, string> = {};
  for (const f of (await readdir(dir)).sort()) {
    const r = decodeYip(await readFile(new URL(f, dir), 'utf8'), f);
    t.deepEqual(r.problems, [], f);
    got[f] = Object.entries(r.config?.stages ?? {}).map(([k, v]) => `${k}:${v.length}`).join(' ');
  }
  t.deepEqual(got, {
    '00_rootfs.yaml.tmpl': 'rootfs.before:1 rootfs:2 initramfs:1',
    '01_defaults.yaml': 'initramfs:1',
    '02_upgrades.yaml': 'initramfs:2',
    '03_branding.yaml': 'initramfs:1',
    '04_accounting.yaml': 'initramfs:1',
    '05_network.yaml': 'initramfs:1',
    '06_recovery.yaml.tmpl': 'rootfs.before:1 boot:1',
    '07_live.yaml': 'rootfs.before:1',
    '08_boot_assessment.yaml': 'boot.before:2 after-install:4 after-upgrade:5 after-reset:4',
    '09_services.yaml': 'initramfs:1',
    '10_selinux.yaml': 'initramfs:1',
  });
  // 08_boot_assessment's typo `permsisions` is ignored: the file's mode is 0 (yip.md 5.1)
  const ba = decodeYip(await readFile(new URL('08_boot_assessment.yaml', dir), 'utf8'), '08');
  const files = Object.values(ba.config?.stages ?? {}).flat().flatMap((s) => s.files);
  t.true(files.some((f) => f.permissions === 0), JSON.stringify(files.map((f) => [f.path, f.permissions])));
});

test('#cloud-config detection: the header among the first lines, after blank and # lines only; leading spaces do not count', (t) => {
  t.true(isCloudConfig('#cloud-config\nhostname: x\n'));
  t.true(isCloudConfig('## template: jinja\n\n#cloud-config  \r\nusers: []\n'));
  t.false(isCloudConfig('  #cloud-config\n'));
  t.false(isCloudConfig('hostname: x\n#cloud-config\n'));
  t.false(isCloudConfig(`${'#\n'.repeat(9)}#cloud-config\nhostname: x\n`), 'the 10th piece holds the rest of the text: it is not the header line alone');
  t.true(isCloudConfig(`${'#\n'.repeat(8)}#cloud-config\n`));
});

test('#cloud-config: boot step 0 (runcmd, files, users and keys), a layout step per growpart device, initramfs hostname; stages: appended', (t) => {
  const r = decodeYip(`#cloud-config
hostname: node-1
users:
  - name: bob
    passwd: x
    groups: [wheel]
    ssh_authorized_keys: [key-bob]
ssh_authorized_keys: [key-global]
write_files:
  - path: /etc/a
    content: A
    owner: "bob:bob"
    permissions: "0600"
  - path: /etc/b
    permissions: 644
milpa_files:
  - path: /etc/c
runcmd: [echo one, echo two]
growpart: {mode: auto, devices: [/dev/sda2]}
stages:
  boot:
    - name: after-runcmd
      commands: [echo three]
`, F);
  t.deepEqual(r.problems, []);
  const boot = r.config?.stages['boot'] ?? [];
  t.is(boot.length, 3);
  t.deepEqual(boot[0]?.commands, ['echo one', 'echo two']);
  t.deepEqual(boot[0]?.files.map((f) => [f.path, f.permissions, f.ownerstring, f.content]), [['/etc/a', 0o600, 'bob:bob', 'A'], ['/etc/b', 0o644, '', ''], ['/etc/c', 0, '', '']]);
  t.like(boot[0]?.users['bob'], { passwd: 'x', groups: ['wheel'] });
  t.deepEqual(boot[0]?.authorized_keys, { bob: ['key-bob', 'key-global'] });
  t.like(boot[1]?.layout, { device: { path: '/dev/sda2', label: '' }, expand_partition: { size: 0 } });
  t.is(boot[2]?.name, 'after-runcmd');
  t.is(r.config?.stages['initramfs']?.[0]?.hostname, 'node-1');
});

test('#cloud-config without users: the global keys go to root; the steps exist even when empty; a type error fails the file', (t) => {
  const r = decodeYip('#cloud-config\nssh_authorized_keys: [k]\n', F);
  t.deepEqual(r.config?.stages['boot']?.[0]?.authorized_keys, { root: ['k'] });
  t.is(decodeYip('#cloud-config\n', F).config?.stages['initramfs']?.length, 1);
  const bad = decodeYip('#cloud-config\nusers:\n  - name: u\n    groups: users\n', F);
  t.is(bad.config, null);
  t.like(bad.problems[0], { line: 4, key: 'users[0].groups' });
});
