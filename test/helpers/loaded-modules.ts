/**
 * Which of the project's modules (and which packages) a fresh Node process loads when it runs `script`: the script runs
 * in a child with a module load hook (node:module registerHooks) that records every file URL loaded, and prints them
 * once the script's promise settles. For tests of what a composition root or an action loads, and what it leaves out.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

const CHILD = `
import { registerHooks } from 'node:module';
const seen = new Set();
registerHooks({ load(url, ctx, next) { if (url.startsWith('file:')) seen.add(url); return next(url, ctx); } });
const ok = await import(process.argv[1]).then(() => true, (e) => { process.stderr.write(String(e?.stack ?? e)); return false; });
process.stdout.write(JSON.stringify({ ok, seen: [...seen] }));
`;

/** The repo-relative paths (e.g. `src/yip/schema.ts`, `node_modules/yaml/dist/index.js`) of what `script` loaded. */
export function loadedModules(script: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', CHILD, pathToFileURL(path.resolve(REPO, script)).href], { encoding: 'utf8', cwd: REPO }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`loading ${script}: ${stderr || err.message}`));
      const r = JSON.parse(stdout) as { ok: boolean; seen: string[] };
      if (!r.ok) return reject(new Error(`loading ${script} failed: ${stderr}`));
      resolve(r.seen.map((u) => path.relative(REPO, fileURLToPath(u))));
    });
  });
}
