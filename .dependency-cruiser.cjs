/** Architecture rules (spec/architecture.md 5.3), checked in the test run by test/architecture.test.ts. */
const domain = '^src/(partitions|grub|oci|verify|yip)/';
const app = '^src/(config|host|actions|daemon)/';
module.exports = {
  forbidden: [
    { name: 'model-is-a-leaf', severity: 'error', comment: 'src/model is pure types: it imports nothing outside model/',
      from: { path: '^src/model/' }, to: { pathNot: '^src/model/' } },
    { name: 'app-not-transport', severity: 'error', comment: 'config, host, actions and daemon never import D-Bus or the CLI',
      from: { path: app }, to: { path: '^src/(dbus|cli)/|^src/cli\\.ts$|dbus-next' } },
    { name: 'config-only-model-and-sys', severity: 'error', comment: 'src/config reads files into model types: it imports only model/ and sys/ (and npm packages)',
      from: { path: '^src/config/' }, to: { path: '^src/', pathNot: '^src/(config|model|sys)/' } },
    { name: 'host-not-actions', severity: 'error', comment: 'src/host (the host model, records, partition access) never imports actions or the daemon',
      from: { path: '^src/host/' }, to: { path: '^src/(actions|daemon)/' } },
    { name: 'actions-not-daemon', severity: 'error', comment: 'actions run in-process (cosctl --no-daemon) as well as in cosd: they never import the daemon',
      from: { path: '^src/actions/' }, to: { path: '^src/daemon/' } },
    { name: 'domain-not-app', severity: 'error', comment: 'domain modules never import config/, host/, actions/, daemon/, dbus/ or cli/',
      from: { path: domain }, to: { path: '^src/(config|host|actions|daemon|dbus|cli)/' } },
    { name: 'domain-not-each-other', severity: 'error', comment: 'domain modules do not reach into each other',
      from: { path: '^src/(partitions|grub|oci|verify|yip)/' },
      to: { path: domain, pathNot: '^src/$1/' } },
    { name: 'sys-is-the-shell', severity: 'error', comment: 'src/sys imports only model/ (and node, npm packages)',
      from: { path: '^src/sys/' }, to: { path: '^src/', pathNot: '^src/(sys|model)/' } },
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
