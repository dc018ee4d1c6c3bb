/** Architecture rules (spec/architecture.md 5.3), checked in the test run by test/architecture.test.ts. */
const domain = '^src/(partitions|grub|oci|verify|yip)/';
module.exports = {
  forbidden: [
    { name: 'model-is-a-leaf', severity: 'error', comment: 'src/model is pure types: it imports nothing outside model/',
      from: { path: '^src/model/' }, to: { pathNot: '^src/model/' } },
    { name: 'agent-not-transport', severity: 'error', comment: 'src/agent never imports D-Bus or the CLI',
      from: { path: '^src/agent/' }, to: { path: '^src/(dbus|cli)/|^src/cli\\.ts$|dbus-next' } },
    { name: 'domain-not-agent', severity: 'error', comment: 'domain modules never import agent/, dbus/ or cli/',
      from: { path: domain }, to: { path: '^src/(agent|dbus|cli)/' } },
    { name: 'domain-not-each-other', severity: 'error', comment: 'domain modules do not reach into each other',
      from: { path: '^src/(partitions|grub|oci|verify|yip)/' },
      to: { path: domain, pathNot: '^src/$1/' } },
    { name: 'only-sys-spawns', severity: 'error', comment: 'only src/sys imports node:child_process',
      from: { path: '^src/', pathNot: '^src/sys/' }, to: { path: '^(node:)?child_process$', dependencyTypes: ['core'] } },
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
