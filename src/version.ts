/**
 * The agent's version (package.json's): built into the bundles by scripts/build.ts (esbuild `define`), read from
 * package.json when running from the sources.
 */
import { readFileSync } from 'node:fs';

declare const COS_AGENT_VERSION: string | undefined;

function fromPackageJson(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export const VERSION: string = typeof COS_AGENT_VERSION === 'string' ? COS_AGENT_VERSION : fromPackageJson();
