/**
 * Builds what ships: the daemon as one ESM bundle whose job code sits in lazily loaded chunks (dist/cosd/main.mjs),
 * and the cron helper next to it (dist/cosd/cron-next.mjs, run by src/sys/cron.ts). `npm run build`; the tests and
 * the benchmark build first and run the bundle, as systemd/cosd.service does. The CLI is bundled the same way into
 * dist/cosctl/cli.mjs (exports `main`, like dist/cosd/main.mjs), for the package (scripts/package.ts), which runs
 * both bundles on its own Node runtime without node_modules.
 *
 * Idle memory (bench/daemon.ts, target <= 60 MB RSS): run from the TypeScript sources cosd idles near 100 MB, as
 * this bundle near 58 MB. One plugin helps: two dependencies import node:crypto when loaded, for paths the idle
 * daemon never takes (dbus-next for the DBUS_COOKIE_SHA1 handshake, which the system bus does not use: it
 * authenticates with EXTERNAL; node-cron for task ids, used only by the test clock in the daemon). Loading
 * node:crypto initialises OpenSSL, about 1.2 MB resident, so those imports get a module that loads node:crypto on
 * first use instead.
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { build, type Plugin } from 'esbuild';

const repo = path.resolve(import.meta.dirname, '..');
const out = path.join(repo, 'dist/cosd');
const cliOut = path.join(repo, 'dist/cosctl');
const { version } = JSON.parse(await readFile(path.join(repo, 'package.json'), 'utf8')) as { version: string };

/** Packages whose `crypto` import is made lazy, with the names they import (ESM) or `*` (CommonJS require). */
const LAZY_CRYPTO: Record<string, 'cjs' | readonly string[]> = {
  'dbus-next': 'cjs',
  'node-cron': ['randomUUID'],
};

const lazyCrypto: Plugin = {
  name: 'lazy-crypto',
  setup(b) {
    b.onResolve({ filter: /^(node:)?crypto$/ }, (args) => {
      const pkg = Object.keys(LAZY_CRYPTO).find((p) => args.importer.includes(`${path.sep}node_modules${path.sep}${p}${path.sep}`));
      return pkg === undefined ? undefined : { path: pkg, namespace: 'lazy-crypto' };
    });
    b.onLoad({ filter: /.*/, namespace: 'lazy-crypto' }, (args) => {
      const names = LAZY_CRYPTO[args.path];
      const load = `const load = () => require('node:crypto');`;
      if (names === 'cjs') {
        return { loader: 'js', contents: `${load}\nmodule.exports = new Proxy({}, { get: (_, k) => load()[k] });\n` };
      }
      const exports = (names ?? []).map((n) => `export function ${n}(...a) { return load().${n}(...a); }`).join('\n');
      return { loader: 'js', contents: `${load}\n${exports}\n` };
    });
  },
};

/** One ESM bundle of `entries` into `outdir` (emptied first), job code split into lazily loaded chunks. */
async function bundle(entries: readonly string[], outdir: string): Promise<void> {
  await rm(outdir, { recursive: true, force: true });
  await build({
    entryPoints: entries.map((e) => path.join(repo, e)),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    splitting: true,
    outdir,
    outExtension: { '.js': '.mjs' },
    logLevel: 'warning',
    // optional native modules of dbus-next's X11 address lookup and its unix-socket fd passing: never used
    external: ['x11', 'usocket'],
    // CommonJS dependencies call require(); an ESM bundle has none of its own
    banner: { js: "import { createRequire as __cosdRequire } from 'node:module'; const require = __cosdRequire(import.meta.url);" },
    plugins: [lazyCrypto],
    // src/version.ts: the version built in (no package.json next to the installed bundles)
    define: { COS_AGENT_VERSION: JSON.stringify(version) },
  });
}

await bundle(['src/main.ts', 'src/cron-next.ts'], out);
// cosctl never computes a schedule (only the daemon's scheduler runs the cron helper), so no cron-next.mjs there.
await bundle(['src/cli.ts'], cliOut);
