// Which code bin/cosd.js and bin/cosctl.js run: the bundle `npm run build` makes (what ships, and faster to start:
// one file and its chunks instead of about 160 TypeScript modules), unless a source file under src/ is newer than
// it (an edit not built yet), or no bundle was built; then the TypeScript sources, run natively by Node >= 24.
import { readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export function entry(bundle, source) {
  let built;
  try {
    built = statSync(bundle).mtimeMs;
  } catch {
    return source.href;
  }
  const src = fileURLToPath(new URL('../src/', import.meta.url));
  for (const e of readdirSync(src, { recursive: true, withFileTypes: true })) {
    if (e.isFile() && statSync(`${e.parentPath}/${e.name}`).mtimeMs > built) return source.href;
  }
  return bundle.href;
}
