#!/usr/bin/env -S node --no-memory-reducer --max-semi-space-size=1 --max-opt=1 --expose-gc
// Node flags (kept on the shebang so the unit, a shell and the tests run cosd alike), each measured on RSS by
// bench/daemon.ts: the memory reducer would wake the idle daemon every 8 s; a 1 MB semi-space keeps the young
// generation small; --max-opt=1 keeps cosd's code in the interpreter and Sparkplug's baseline code, never Maglev or
// Turbofan: their compilers' pages of the Node binary and their code stay resident once a burst of calls has made
// functions hot (the resident daemon after an upgrade and 1,000 GetStatus: 70.7 MB with them, 59.5 MB without; the
// GetStatus round trip is the same, p50 0.65 ms; the jobs, which do the heavy work, run in processes of their own
// with Node's defaults, src/daemon/job-process.ts); --expose-gc lets cosd collect once when it goes quiet after
// calls or a job (src/daemon/quiet-gc.ts), what the memory reducer would have done.
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
