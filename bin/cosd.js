#!/usr/bin/env node
// cosd: thin wrapper; the daemon lives in src/main.ts (TypeScript run natively by Node >= 24).
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`cosd: needs Node.js >= 24 (this is ${process.version}); run it through the project's pinned node\n`);
  process.exit(1);
}
const { main } = await import('../src/main.ts');
process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
