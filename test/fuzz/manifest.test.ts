/**
 * Fuzzing the OCI parsers (src/oci/manifest.ts, src/oci/reference.ts). Contract:
 * - parseManifest on any bytes, any JSON and any Content-Type returns a manifest or an index, or throws
 *   MANIFEST_INVALID; never hangs. What it returns is sound (every descriptor a valid digest, a safe non-negative
 *   size, a media type; the kind matches the media type) and stable: the parsed document written as JSON parses to
 *   the same thing, annotations included;
 * - checkImageManifest and selectManifest on what parses, parseImageConfig on anything, parsePlatform on any string
 *   return or throw MANIFEST_INVALID; a selected manifest is in the index and runs on the platform asked for;
 *   parsePlatform / formatPlatform round-trip; normalizePlatform is idempotent;
 * - parseReference on any string returns or throws REFERENCE_INVALID, and formatReference's output parses back to the
 *   same reference (its documented promise).
 * The corpus (test/fuzz/corpus/manifest: manifests the test helpers push to the real registry, an index, a Docker
 * manifest list, a cosign signature manifest, an OCI 1.1 referrer, one defect per bad-* file) is replayed first,
 * then mutated structurally (keys dropped, values replaced with other types) and at the byte level.
 */
import test from 'ava';
import {
  INDEX_MEDIA_TYPES,
  MANIFEST_MEDIA_TYPES,
  MEDIA_TYPES,
  checkImageManifest,
  formatPlatform,
  normalizePlatform,
  parseImageConfig,
  parseManifest,
  parsePlatform,
  platformMatches,
  selectManifest,
  type ParsedManifest,
} from '../../src/oci/manifest.ts';
import { formatReference, isDigest, parseReference } from '../../src/oci/reference.ts';
import type { Descriptor, Platform } from '../../src/oci/types.ts';
import { contract, corpus, fc, fuzz, mutated } from './fuzz.ts';

const entries = corpus('manifest');
const WHAT = 'fuzzed manifest';

/** An object whose keys are exactly `pairs`, "__proto__" included (as JSON.parse makes them, never a prototype). */
function objectOf(pairs: ReadonlyArray<readonly [string, unknown]>): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const [k, v] of pairs) Object.defineProperty(o, k, { value: v, enumerable: true, configurable: true, writable: true });
  return o;
}

function checkDescriptor(d: Descriptor, where: string): void {
  if (typeof d.mediaType !== 'string' || d.mediaType === '') throw new Error(`${where}: media type ${JSON.stringify(d.mediaType)}`);
  if (!isDigest(d.digest)) throw new Error(`${where}: digest ${JSON.stringify(d.digest)} accepted`);
  if (!Number.isSafeInteger(d.size) || d.size < 0) throw new Error(`${where}: size ${d.size} accepted`);
  if (d.annotations !== undefined) for (const v of Object.values(d.annotations)) if (typeof v !== 'string') throw new Error(`${where}: annotation ${JSON.stringify(v)}`);
}

/** The parsed document as JSON, to parse again. */
function written(p: ParsedManifest): string {
  const doc = p.kind === 'manifest' ? { schemaVersion: 2, ...p.manifest } : { schemaVersion: 2, ...p.index };
  return JSON.stringify(doc);
}

/** Own keys of the `annotations` object of a JSON document, when it is one with string values only. */
function annotationKeys(bytes: Buffer | string): string[] | undefined {
  try {
    const doc = JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8')) as { annotations?: unknown };
    const a = doc.annotations;
    if (typeof a !== 'object' || a === null || Array.isArray(a) || Object.values(a).some((v) => typeof v !== 'string')) return undefined;
    return Object.keys(a);
  } catch {
    return undefined;
  }
}

function checkManifest(input: { bytes: Buffer | string; contentType: string | undefined }): void {
  const r = contract(['MANIFEST_INVALID'], () => parseManifest(input.bytes, input.contentType, WHAT), 'parseManifest');
  if (!r.ok) {
    if (!r.error.message.startsWith(`${WHAT}: `)) throw new Error(`the error does not name the document: ${r.error.message}`);
    return;
  }
  const p = r.value;
  if (p.kind === 'manifest') {
    if (!MANIFEST_MEDIA_TYPES.includes(p.mediaType) || p.manifest.mediaType !== p.mediaType) throw new Error(`a manifest of media type ${p.mediaType}`);
    checkDescriptor(p.manifest.config, 'config');
    p.manifest.layers.forEach((l, i) => checkDescriptor(l, `layers[${i}]`));
    contract(['MANIFEST_INVALID'], () => checkImageManifest(p.manifest, WHAT), 'checkImageManifest');
  } else {
    if (!INDEX_MEDIA_TYPES.includes(p.mediaType) || p.index.mediaType !== p.mediaType) throw new Error(`an index of media type ${p.mediaType}`);
    p.index.manifests.forEach((m, i) => checkDescriptor(m, `manifests[${i}]`));
    for (const wanted of [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 'arm', variant: 'v6' }]) {
      const s = contract(['MANIFEST_INVALID'], () => selectManifest(p.index, wanted, WHAT), 'selectManifest');
      if (s.ok && (!p.index.manifests.includes(s.value) || s.value.platform === undefined || !platformMatches(s.value.platform, wanted))) {
        throw new Error(`selected ${JSON.stringify(s.value)} for ${formatPlatform(wanted)}`);
      }
    }
  }
  const again = contract(['MANIFEST_INVALID'], () => parseManifest(written(p), undefined, WHAT), 'parseManifest of its own output');
  if (!again.ok || JSON.stringify(again.value) !== JSON.stringify(p)) throw new Error(`not stable: ${written(p)} parses to ${again.ok ? JSON.stringify(again.value) : again.error.message}`);
  const keys = annotationKeys(input.bytes);
  const got = p.kind === 'manifest' ? p.manifest.annotations : p.index.annotations;
  if (keys !== undefined && JSON.stringify(Object.keys(got ?? {})) !== JSON.stringify(keys)) {
    throw new Error(`annotations ${JSON.stringify(keys)} parsed as ${JSON.stringify(Object.keys(got ?? {}))}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Generators

const hex = (n: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n });
const digestArb = fc.oneof(
  hex(64).map((h) => `sha256:${h}`),
  hex(128).map((h) => `sha512:${h}`),
  hex(64).map((h) => `sha256:${h.toUpperCase()}`),
  fc.constantFrom('sha256:', 'sha256:abc', 'md5:d41d8cd98f00b204e9800998ecf8427e', ''),
  fc.string({ maxLength: 20 }),
);
const mediaTypeArb = fc.oneof(
  fc.constantFrom(...Object.values(MEDIA_TYPES), 'application/vnd.oci.image.layer.v1.tar+gzip', 'application/vnd.oci.image.layer.v1.tar+zstd',
    'application/vnd.docker.image.rootfs.diff.tar.gzip', 'application/vnd.dev.cosign.simplesigning.v1+json', 'application/json', ''),
  fc.string({ maxLength: 30 }),
);
const sizeArb = fc.oneof(fc.nat(), fc.constantFrom(-1, 1.5, 2 ** 53, 2 ** 53 - 1, -0, 1e308, '12', null, true), fc.double());
const weird = fc.oneof(fc.constantFrom(null, true, 0, '', [], {}), fc.string({ maxLength: 8 }), fc.integer());
const keyArb = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('__proto__', 'constructor', 'toString', 'org.opencontainers.image.version', 'hasOwnProperty'));
const annotationsArb = fc.oneof(
  { weight: 4, arbitrary: fc.array(fc.tuple(keyArb, fc.string({ maxLength: 12 })), { maxLength: 4 }).map(objectOf) },
  { weight: 1, arbitrary: fc.array(fc.tuple(keyArb, weird), { maxLength: 3 }).map(objectOf) },
  { weight: 1, arbitrary: weird },
);
const platformArb = fc.oneof(
  { weight: 4, arbitrary: fc.record({
    os: fc.oneof(fc.constantFrom('linux', 'windows', 'Linux', ''), fc.string({ maxLength: 6 })),
    architecture: fc.oneof(fc.constantFrom('amd64', 'arm64', 'arm', 'x86_64', 'aarch64', 'armel', 'armhf', '386', 'ppc64le', 's390x', ''), fc.string({ maxLength: 6 })),
    variant: fc.oneof(fc.constantFrom('v8', '8', 'v8.0', 'v7', '7', 'v6', 'v5', '', 'V8', 'v1', 'v3'), fc.string({ maxLength: 4 }), weird),
  }, { requiredKeys: [] }) },
  { weight: 1, arbitrary: weird },
);
const descriptorArb = fc.oneof(
  { weight: 6, arbitrary: fc.record({ mediaType: mediaTypeArb, digest: digestArb, size: sizeArb, platform: platformArb, annotations: annotationsArb, urls: fc.array(fc.webUrl(), { maxLength: 1 }) }, { requiredKeys: ['mediaType', 'digest', 'size'] }) },
  { weight: 1, arbitrary: fc.record({ mediaType: mediaTypeArb, digest: digestArb, size: sizeArb, platform: platformArb }, { requiredKeys: [] }) },
  { weight: 1, arbitrary: weird },
);
const docArb = fc.record({
  schemaVersion: fc.oneof({ weight: 6, arbitrary: fc.constant(2) }, { weight: 1, arbitrary: fc.constantFrom(1, '2', 3, null) }),
  mediaType: mediaTypeArb,
  config: descriptorArb,
  layers: fc.oneof({ weight: 6, arbitrary: fc.array(descriptorArb, { maxLength: 4 }) }, { weight: 1, arbitrary: weird }),
  manifests: fc.oneof({ weight: 6, arbitrary: fc.array(descriptorArb, { maxLength: 4 }) }, { weight: 1, arbitrary: weird }),
  annotations: annotationsArb,
  subject: descriptorArb,
  artifactType: mediaTypeArb,
}, { requiredKeys: [] });
const contentTypeArb = fc.option(fc.oneof(mediaTypeArb, fc.constantFrom('application/vnd.oci.image.index.v1+json; charset=utf-8', 'APPLICATION/JSON', ' text/plain ', ';')), { nil: undefined });

/** A structural edit of a corpus document: a key dropped or a value replaced, at any depth. */
type Edit = { at: number; op: 'drop' | 'replace'; value: unknown };
function edited(doc: unknown, edits: readonly Edit[]): unknown {
  let out: unknown = JSON.parse(JSON.stringify(doc));
  for (const e of edits) {
    const slots: Array<{ parent: Record<string, unknown> | unknown[]; key: string | number }> = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach((x, i) => { slots.push({ parent: v, key: i }); walk(x); });
      else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) { slots.push({ parent: v as Record<string, unknown>, key: k }); walk(x); }
    };
    walk(out);
    if (slots.length === 0) { out = e.value; continue; }
    const s = slots[e.at % slots.length]!;
    if (e.op === 'drop' && Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
    else if (e.op === 'drop') delete (s.parent as Record<string, unknown>)[s.key as string];
    else (s.parent as Record<string, unknown>)[s.key as string] = e.value;
  }
  return out;
}
/** The corpus documents that are JSON (and shallow enough for JSON.stringify, which recurses). */
const corpusDocs = entries.flatMap((e) => {
  try {
    const doc = JSON.parse(e.bytes.toString('utf8')) as unknown;
    JSON.stringify(doc);
    return [doc];
  } catch {
    return [];
  }
});
const editArb: fc.Arbitrary<Edit> = fc.record({ at: fc.nat(), op: fc.constantFrom('drop', 'replace'), value: fc.oneof(weird, descriptorArb, platformArb, annotationsArb, digestArb, sizeArb) });
const editedArb = fc.tuple(fc.constantFrom(...corpusDocs), fc.array(editArb, { minLength: 1, maxLength: 3 })).map(([d, e]) => JSON.stringify(edited(d, e)));

const inputArb = fc.record({
  bytes: fc.oneof(
    { weight: 4, arbitrary: docArb.map((d) => JSON.stringify(d)) },
    { weight: 4, arbitrary: editedArb },
    { weight: 1, arbitrary: mutated(fc.constantFrom(...entries.map((e) => e.bytes)).filter((b) => b.length > 0), { resize: true, extra: [0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x2c] }) },
    { weight: 1, arbitrary: fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null') },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)) },
  ),
  contentType: contentTypeArb,
});

// ---------------------------------------------------------------------------------------------------------------

test('corpus: real manifests, indexes, signature and referrer manifests parse and are stable; each bad-* file is MANIFEST_INVALID', (t) => {
  t.true(entries.some((e) => e.expect === 'ok') && entries.some((e) => e.expect === 'bad'));
  for (const e of entries) {
    checkManifest({ bytes: e.bytes, contentType: undefined });
    const r = contract(['MANIFEST_INVALID'], () => parseManifest(e.bytes, undefined, WHAT));
    if (e.expect === 'ok') t.true(r.ok, `${e.name}: ${r.ok ? '' : r.error.message}`);
    if (e.expect === 'bad') t.false(r.ok, `${e.name} parsed`);
  }
  const index = parseManifest(entries.find((e) => e.name === 'ok-oci-index-three-platforms.json')!.bytes, undefined, WHAT);
  t.is(index.kind, 'index');
  if (index.kind === 'index') t.is(selectManifest(index.index, { os: 'linux', architecture: 'arm64' }, WHAT).platform?.architecture, 'arm64');
});

test('fuzz: parseManifest on any bytes and Content-Type returns a sound, stable document or MANIFEST_INVALID', (t) => {
  fuzz(t, 'manifest parse', inputArb, checkManifest, entries.map((e) => ({ bytes: e.bytes, contentType: undefined })));
});

test('fuzz: parseImageConfig on anything returns or throws MANIFEST_INVALID', (t) => {
  const configArb = fc.oneof(
    fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null'),
    fc.record({ architecture: fc.oneof(fc.string(), weird), os: fc.oneof(fc.string(), weird), variant: weird, created: weird, config: fc.oneof(weird, fc.record({ Labels: annotationsArb }, { requiredKeys: [] })) }, { requiredKeys: [] }).map((d) => JSON.stringify(d)),
    fc.string({ maxLength: 40 }),
  );
  fuzz(t, 'image config', configArb, (text) => {
    contract(['MANIFEST_INVALID'], () => parseImageConfig(text, WHAT), 'parseImageConfig');
  });
});

test('fuzz: platforms: parsePlatform and formatPlatform round-trip, normalizePlatform is idempotent, a platform runs on itself', (t) => {
  const platformString = fc.oneof(
    fc.tuple(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), fc.option(fc.string({ maxLength: 4 }))).map(([a, b, c]) => [a, b, ...(c === null ? [] : [c])].join('/')),
    fc.string({ maxLength: 20 }),
    fc.constantFrom('linux/amd64', 'linux/arm64/v8', 'linux/arm/v7', 'linux//v7', 'linux/arm/', '/', 'a/b/c/d'),
  );
  fuzz(t, 'platform', platformString, (s) => {
    const r = contract(['MANIFEST_INVALID'], () => parsePlatform(s), 'parsePlatform');
    if (!r.ok) return;
    if (formatPlatform(r.value) !== s) throw new Error(`${JSON.stringify(s)} formats back as ${JSON.stringify(formatPlatform(r.value))}`);
    const n: Platform = normalizePlatform(r.value);
    if (JSON.stringify(normalizePlatform(n)) !== JSON.stringify(n)) throw new Error(`normalizePlatform is not idempotent on ${JSON.stringify(n)}`);
    if (!platformMatches(r.value, r.value)) throw new Error(`${s} does not run on itself`);
  });
});

test('fuzz: parseReference on any string returns or throws REFERENCE_INVALID, and formatReference parses back to the same reference', (t) => {
  const component = fc.stringMatching(/^[a-z0-9]+(?:[._-][a-z0-9]+)*$/);
  const refArb = fc.oneof(
    fc.tuple(
      fc.option(fc.oneof(fc.constantFrom('docker.io', 'index.docker.io', 'registry-1.docker.io', 'localhost', 'localhost:5000', '127.0.0.1:5000', '[::1]:5000', 'Reg.Example:443', 'quay.io'), fc.domain())),
      fc.array(component, { minLength: 1, maxLength: 3 }),
      fc.option(fc.stringMatching(/^[\w][\w.-]{0,10}$/)),
      fc.option(digestArb),
      fc.boolean(),
    ).map(([reg, path, tag, digest, scheme]) => `${scheme ? 'docker://' : ''}${reg === null ? '' : `${reg}/`}${path.join('/')}${tag === null ? '' : `:${tag}`}${digest === null ? '' : `@${digest}`}`),
    fc.tuple(fc.integer({ min: 200, max: 260 }), fc.boolean()).map(([n, qualified]) => `${qualified ? 'reg.example/' : ''}${'a'.repeat(n)}:v1`),
    fc.string({ maxLength: 40 }),
    fc.string({ unit: fc.constantFrom('a', '/', ':', '@', '.', '-', '_', 'A', '1', '[', ']', ' '), maxLength: 30 }),
  );
  fuzz(t, 'reference', refArb, (s) => { checkReference(s); }, references.map((e) => e.bytes.toString('utf8')));
});

const references = corpus('reference');

function checkReference(s: string): boolean {
  const r = contract(['REFERENCE_INVALID'], () => parseReference(s), 'parseReference');
  if (!r.ok) return false;
  const text = formatReference(r.value);
  const again = contract(['REFERENCE_INVALID'], () => parseReference(text), 'parseReference of formatReference');
  if (!again.ok || JSON.stringify(again.value) !== JSON.stringify(r.value)) {
    throw new Error(`${JSON.stringify(s)} -> ${text} -> ${again.ok ? JSON.stringify(again.value) : again.error.message}`);
  }
  return true;
}

test('corpus: references round-trip through formatReference, including the two the fuzzer broke', (t) => {
  for (const e of references) {
    const ok = checkReference(e.bytes.toString('utf8'));
    if (e.expect !== 'any') t.is(ok, e.expect === 'ok', e.name);
  }
  // A one-label registry named only by its capitals is refused: lower-cased, it would be written as a Docker Hub
  // namespace (`a/a` is docker.io/a/a).
  t.throws(() => parseReference('A/a'), { message: /registry "A" is a host name only by its capitals/ });
  t.deepEqual(parseReference('Localhost/a'), { registry: 'localhost', repository: 'a', tag: 'latest' });
  t.deepEqual(parseReference('a:5000/a'), { registry: 'a:5000', repository: 'a', tag: 'latest' });
  // A short name too long once qualified (docker.io/library/…) is refused up front, as docker does.
  t.throws(() => parseReference(`${'a'.repeat(250)}:v1`), { message: /is longer than 255 characters/ });
  t.is(parseReference(`${'a'.repeat(237)}:v1`).repository.length, 245, 'docker.io/library/ + 237 = 255: accepted');
});
