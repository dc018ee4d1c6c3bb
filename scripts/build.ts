/**
 * Builds what ships: the daemon as one ESM bundle (dist/cosd/main.mjs) whose jobs run in processes started from
 * dist/cosd/job-worker.mjs (the job code sits in chunks only they load), and the cron helper next to it
 * (dist/cosd/cron-next.mjs, run by src/sys/cron.ts). `npm run build`; the tests and
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
 *
 * The same for xml2js (with xmlbuilder and sax, about 190 KB of the bundle and 15-20 ms of every cosctl start):
 * dbus-next loads it eagerly, for introspection only (a Builder made by every MessageBus, a Parser by every
 * ProxyObject); cosctl and cosd call methods by name and never introspect on the way, so their Builder and Parser are
 * made on first use (lazyXml2js). `cosctl` against a daemon (bench/cli.ts) is the path this is for.
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

/**
 * dbus-next's `require('xml2js')` gets a module with the two constructors it uses, loading the real xml2js when one
 * is first called (`new` of a function that returns an object yields that object).
 */
const lazyXml2js: Plugin = {
  name: 'lazy-xml2js',
  setup(b) {
    b.onResolve({ filter: /^xml2js$/ }, (args) =>
      args.importer.includes(`${path.sep}node_modules${path.sep}dbus-next${path.sep}`) && args.namespace === 'file'
        ? { path: 'xml2js', namespace: 'lazy-xml2js' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy-xml2js' }, () => ({
      loader: 'js',
      // resolved from the repository root: the real package, bundled as a lazily initialised CommonJS module
      resolveDir: repo,
      contents: [
        `const load = () => require('xml2js/lib/xml2js.js');`,
        `exports.Builder = function Builder(opts) { let real; return { buildObject: (o) => (real ??= new (load().Builder)(opts)).buildObject(o) }; };`,
        `exports.Parser = function Parser(opts) { return new (load().Parser)(opts); };`,
        '',
      ].join('\n'),
    }));
  },
};

/** One ESM bundle of `entries` into `outdir` (emptied first), job code split into lazily loaded chunks. */
async function bundle(entries: Record<string, string>, outdir: string): Promise<void> {
  await rm(outdir, { recursive: true, force: true });
  await build({
    entryPoints: Object.entries(entries).map(([out, e]) => ({ in: path.join(repo, e), out })),
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
    plugins: [lazyCrypto, lazyXml2js],
    // src/version.ts: the version built in (no package.json next to the installed bundles)
    define: { COS_AGENT_VERSION: JSON.stringify(version) },
  });
}

// job-worker.mjs: cosd's job processes (src/daemon/job-process.ts forks it from next to its own chunk).
await bundle({ main: 'src/main.ts', 'cron-next': 'src/cron-next.ts', 'job-worker': 'src/job-worker.ts' }, out);
// cosctl never computes a schedule (only the daemon's scheduler runs the cron helper), so no cron-next.mjs there.
await bundle({ cli: 'src/cli.ts' }, cliOut);
