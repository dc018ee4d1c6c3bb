/**
 * Fuzzing helpers (fast-check) shared by test/fuzz/*.test.ts: bounded runs, a replayable seed, the corpus, and the
 * contract every parser is held to (returns, or throws an AgentError with one of its known codes; never hangs).
 *
 * - Runs: FUZZ_RUNS per property (default 2000), each property also stopped after FUZZ_PROPERTY_MS of wall time
 *   (default 4000; an interrupted property passes with the runs it made, and says so in the log).
 * - Seed: FUZZ_SEED when set; a fixed one in CI (CI=true), so a red CI is reproducible and never random; a fresh
 *   random one otherwise, so local runs keep exploring. The seed is printed with every property, and a failure
 *   prints fast-check's report (seed, path and the shrunk counterexample): replay with
 *   `FUZZ_SEED=<seed> ava test/fuzz/x.test.ts`, then add the input to test/fuzz/corpus/.
 * - A single parser call taking longer than HANG_MS fails the property (a hang shows as a slow input, not a stuck run).
 */
import fc from 'fast-check';
import type { ExecutionContext } from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentError, type ErrorCode } from '../../src/model/errors.ts';

export { fc };

export const RUNS: number = Number(process.env.FUZZ_RUNS ?? 2000);
const PROPERTY_MS = Number(process.env.FUZZ_PROPERTY_MS ?? 4000);
export const SEED: number = process.env.FUZZ_SEED !== undefined
  ? Number(process.env.FUZZ_SEED)
  : process.env.CI === 'true' ? 0x0c05_a9e7 : Math.floor(Math.random() * 2 ** 31);
/** One parser call slower than this is a hang. */
export const HANG_MS = 1000;

const CORPUS = fileURLToPath(new URL('./corpus/', import.meta.url));

/** A corpus entry: `ok-*` must be accepted, `bad-*` refused with a known code, anything else either. */
export interface CorpusEntry {
  name: string;
  bytes: Buffer;
  expect: 'ok' | 'bad' | 'any';
}

/** The files of test/fuzz/corpus/<kind>/, sorted by name. */
export function corpus(kind: string): CorpusEntry[] {
  const dir = path.join(CORPUS, kind);
  return readdirSync(dir).sort().map((name) => ({
    name,
    bytes: readFileSync(path.join(dir, name)),
    expect: name.startsWith('ok-') ? 'ok' : name.startsWith('bad-') ? 'bad' : 'any',
  }));
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: AgentError };

/**
 * Runs `fn` under the contract: it returns, or throws an AgentError whose code is one of `codes`; anything else (a
 * TypeError, a RangeError, another code) and a call slower than HANG_MS throw, failing the property.
 */
export function contract<T>(codes: readonly ErrorCode[], fn: () => T, what = 'the parser'): Outcome<T> {
  const start = performance.now();
  let out: Outcome<T>;
  try {
    out = { ok: true, value: fn() };
  } catch (e) {
    if (!(e instanceof AgentError)) throw new Error(`${what} threw a ${e instanceof Error ? e.name : typeof e}, not an AgentError: ${String(e)}`, { cause: e });
    if (!codes.includes(e.code)) throw new Error(`${what} threw AgentError ${e.code}, expected one of ${codes.join(', ')}: ${e.message}`, { cause: e });
    out = { ok: false, error: e };
  }
  const ms = performance.now() - start;
  if (ms > HANG_MS) throw new Error(`${what} took ${ms.toFixed(0)} ms (over ${HANG_MS} ms: a hang)`);
  return out;
}

/**
 * Checks `property` for RUNS runs (examples first), bounded in time; logs seed, runs and time; fails the test with
 * fast-check's report on a counterexample.
 */
export function fuzz<T>(t: ExecutionContext, name: string, arb: fc.Arbitrary<T>, predicate: (input: T) => void, examples: readonly T[] = []): void {
  const start = performance.now();
  const details = fc.check(fc.property(arb, predicate), {
    numRuns: RUNS,
    seed: SEED,
    examples: examples.map((e): [T] => [e]),
    plugins: [fc.interruptAfterTimeLimit(PROPERTY_MS)],
  });
  const ms = performance.now() - start;
  t.log(`${name}: ${details.numRuns} runs (${examples.length} corpus examples first) in ${ms.toFixed(0)} ms, seed ${SEED}${details.interrupted ? `, INTERRUPTED after ${PROPERTY_MS} ms` : ''}`);
  if (details.failed) t.fail(`${name}:\n${fc.defaultReportMessage(details) ?? 'failed'}`);
  else t.pass();
}

/** Bytes with a bias to the ones parsers branch on. */
export function interestingByte(extra: readonly number[] = []): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(0x0a, 0x0d, 0x5c, 0x3d, 0x23, 0x00, 0x22, 0x27, 0x20, 0x09, 0xef, 0xbb, 0xbf, 0xff, 0xc3, 0x80, ...extra) },
    { weight: 2, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
  );
}

/** A mutation of `base`: bytes overwritten, inserted or removed, keeping the length unless `resize`. */
export function mutated(base: fc.Arbitrary<Buffer>, opts: { resize?: boolean; extra?: readonly number[] } = {}): fc.Arbitrary<Buffer> {
  const edit = fc.record({
    kind: opts.resize ? fc.constantFrom('set', 'insert', 'delete') : fc.constant('set'),
    at: fc.nat(),
    byte: interestingByte(opts.extra),
  });
  return fc.tuple(base, fc.array(edit, { minLength: 1, maxLength: 6 })).map(([b, edits]) => {
    let out = Buffer.from(b);
    for (const e of edits) {
      if (out.length === 0) break;
      const i = e.at % out.length;
      if (e.kind === 'set') out[i] = e.byte;
      else if (e.kind === 'insert') out = Buffer.concat([out.subarray(0, i), Buffer.from([e.byte]), out.subarray(i)]);
      else out = Buffer.concat([out.subarray(0, i), out.subarray(i + 1)]);
    }
    return out;
  });
}
