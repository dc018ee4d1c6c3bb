// /usr/lib/cos-agent/cosctl.mjs of the package (scripts/package.ts): what /usr/bin/cosctl runs on the package's own
// Node.js runtime. The CLI bundle (cosctl/cli.mjs, `npm run build`) only exports main(); this calls it, as
// bin/cosctl.js does in the repository.
import { main } from './cosctl/cli.mjs';

process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
