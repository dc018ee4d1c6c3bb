#!/usr/bin/env node
// cosctl: thin wrapper; the CLI lives in src/cli.ts (TypeScript run natively by Node >= 24).
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`cosctl: needs Node.js >= 24 (this is ${process.version}); run it through the project's pinned node\n`);
  process.exit(1);
}
const { main } = await import('../src/cli.ts');
process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
