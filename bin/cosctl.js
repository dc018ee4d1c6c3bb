#!/usr/bin/env node
// cosctl: thin wrapper. Runs the bundle `npm run build` makes (dist/cosctl/cli.mjs: what ships), or the TypeScript
// sources (src/cli.ts, run natively by Node >= 24) when no bundle was built or src/ is newer (entry.js).
import { entry } from './entry.js';
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`cosctl: needs Node.js >= 24 (this is ${process.version}); run it through the project's pinned node\n`);
  process.exit(1);
}
const { main } = await import(entry(new URL('../dist/cosctl/cli.mjs', import.meta.url), new URL('../src/cli.ts', import.meta.url)));
process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
