#!/usr/bin/env -S node --no-memory-reducer --max-semi-space-size=1 --invocation-count-for-maglev=20000
// Node flags (kept on the shebang so the unit, a shell and the tests run cosd alike), each measured on idle RSS by
// bench/daemon.ts: the memory reducer would wake the idle daemon every 8 s; a 1 MB semi-space keeps the young
// generation small; Maglev tiers functions up after 20000 calls instead of 400, so the Node internals startup calls
// a few thousand times (path normalisation: about 8,000 character checks with a test's long temp root) stay in the
// interpreter and Maglev's code (2.4 MB of resident pages) is not mapped in until real work runs (staging's hot
// loops run millions of times; 20000 interpreted calls cost them about a millisecond).
// cosd: thin wrapper. Runs the bundle `npm run build` makes (dist/cosd/main.mjs: what ships, ~59 MB idle), or the
// TypeScript sources (src/main.ts, run natively by Node >= 24) when no bundle was built or src/ is newer (entry.js).
import { entry } from './entry.js';
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`cosd: needs Node.js >= 24 (this is ${process.version}); run it through the project's pinned node\n`);
  process.exit(1);
}
const { main } = await import(entry(new URL('../dist/cosd/main.mjs', import.meta.url), new URL('../src/main.ts', import.meta.url)));
process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
