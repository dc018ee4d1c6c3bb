#!/usr/bin/env node
// cosd: thin wrapper. Runs the bundle `npm run build` makes (dist/cosd/main.mjs: what ships, ~60 MB idle), or the
// TypeScript sources (src/main.ts, run natively by Node >= 24) when no bundle was built.
import { existsSync } from 'node:fs';
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`cosd: needs Node.js >= 24 (this is ${process.version}); run it through the project's pinned node\n`);
  process.exit(1);
}
const bundle = new URL('../dist/cosd/main.mjs', import.meta.url);
const { main } = await import(existsSync(bundle) ? bundle.href : '../src/main.ts');
process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
