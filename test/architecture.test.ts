import test from 'ava';
import { execFileSync } from 'node:child_process';

const opts = { cwd: new URL('..', import.meta.url).pathname, encoding: 'utf8' as const, stdio: 'pipe' as const };

test('the dependency rules of architecture.md 5.3 hold (dependency-cruiser)', (t) => {
  const out = execFileSync('node_modules/.bin/depcruise', ['src', '--config', '.dependency-cruiser.cjs', '--output-type', 'json'], opts);
  const result = JSON.parse(out) as { summary: { violations: Array<{ rule: { name: string }; from: string; to: string }>; totalCruised: number } };
  t.true(result.summary.totalCruised > 0, 'cruised some modules');
  t.deepEqual(result.summary.violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`), []);
});

test('the project type-checks under the strict tsconfig', (t) => {
  try {
    execFileSync('node_modules/.bin/tsc', ['-p', 'tsconfig.json', '--noEmit'], opts);
    t.pass();
  } catch (e) {
    const err = e as { stdout?: string };
    t.fail(err.stdout ?? String(e));
  }
});
