import test from 'ava';
import { readFileSync } from 'node:fs';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';

test('every error code has a distinct exit code, and the README table says the same', (t) => {
  const exits = Object.values(EXIT_CODES).map((e) => e.exit);
  t.is(new Set(exits).size, exits.length, 'exit codes are distinct');
  t.false(exits.includes(0));
  t.false(exits.includes(1), '1 is reserved for internal errors');
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const rows = new Map<string, { exit: number; meaning: string }>();
  for (const m of readme.matchAll(/^\| ([A-Z_]+) \| (\d+) \| (.+) \|$/gm)) {
    rows.set(m[1] as string, { exit: Number(m[2]), meaning: (m[3] as string).trim() });
  }
  t.deepEqual(Object.fromEntries(rows), EXIT_CODES);
});
