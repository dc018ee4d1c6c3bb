// /usr/lib/cos-agent/cosd.mjs of the package (scripts/package.ts): what /usr/sbin/cosd runs on the package's own
// Node.js runtime. The daemon bundle (cosd/main.mjs, `npm run build`) only exports main(); this calls it, as
// bin/cosd.js does in the repository.
import { main } from './cosd/main.mjs';

process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
