/**
 * No unsigned or wrongly signed OS is ever staged: signatures made in cosign's exact formats (node:crypto, a
 * self-made Fulcio-like CA, CT log and Rekor-like log), pushed to a real docker-registry in cosign's registry layouts,
 * verified through the real cosctl (upgrade and verify) against a loop-device cOS host.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { createCosHost, type CosHost } from '../helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushOsImage } from '../helpers/os-image.ts';
import { cosctl, imageCat, sha256File } from '../helpers/cosctl.ts';
import { getManifest, pushBundleReferrer, pushLegacySignature, putManifest, type ManifestDescriptor } from '../helpers/sign-push.ts';
import {
  makeKeyPair, makeSigstoreWorld, makeTlog, signImageKeyless, signImageWithKey, signSimpleSigning, publicKeyPem,
  type KeyPair, type SigstoreWorld,
} from '../helpers/sigstore.ts';
import { makeTar, writeImage, writeIndex } from '../helpers/oci-layout.ts';
import { osTree } from '../helpers/os-image.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EXIT_CODES } from '../../src/cli/exit-codes.ts';
import type { ErrorCode } from '../../src/model/errors.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const ISSUER = 'https://issuer.example';
const ALICE = 'alice@example.com';

let reg: TestRegistry;
let world: SigstoreWorld;
let key: KeyPair;
let repo: string;
const img: Record<string, string> = {};

async function descriptor(name: string, digest: string): Promise<ManifestDescriptor> {
  const bytes = await getManifest(reg, name, digest, OCI_MANIFEST);
  if (bytes === undefined) throw new Error(`no manifest ${digest}`);
  return { mediaType: OCI_MANIFEST, digest, size: bytes.length };
}

/** A multi-arch index of `version` (amd64 + arm64) pushed as `cos/os:<tag>`; returns the index and amd64 digests. */
async function pushIndex(tag: string, version: string): Promise<{ index: string; amd64: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sig-index-'));
  try {
    const tar = await makeTar(osTree(version));
    const amd = await writeImage(dir, { layers: [{ tar }], architecture: 'amd64' });
    const arm = await writeImage(dir, { layers: [{ tar }], architecture: 'arm64', variant: 'v8' });
    await writeIndex(dir, tag, [amd, arm]);
    await reg.push(dir, tag, `cos/os:${tag}`);
    const bytes = await getManifest(reg, 'cos/os', tag, OCI_INDEX);
    if (bytes === undefined) throw new Error('index not pushed');
    return { index: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, amd64: amd.digest };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test.before(async () => {
  reg = await startRegistry();
  world = makeSigstoreWorld();
  key = makeKeyPair('p256');
  repo = `${reg.host}/cos/os`;
  const other = makeKeyPair('p256');
  const rogueLog = makeTlog();
  const foreign = makeSigstoreWorld();

  for (const t of ['key', 'keyless', 'unsigned', 'other-digest', 'tampered', 'wrong-key', 'wrong-identity', 'wrong-issuer', 'expired',
    'forged-set', 'no-tlog', 'foreign-ca', 'moving', 'bundle-key', 'slsa']) {
    // Distinct content per tag: identical images would share one digest, hence one .sig tag.
    img[t] = await pushOsImage(reg, `cos/os:${t}`, t === 'unsigned' ? '6.6.6' : `3.0.0+${t}`);
  }
  const legacy = async (tag: string, layer: { payload: Buffer; annotations: Record<string, string> }): Promise<void> => {
    await pushLegacySignature(reg, 'cos/os', img[tag] as string, [layer]);
  };
  // Key-signed, with a Rekor-like entry (the trusted root has a log, so one is required).
  await legacy('key', signImageWithKey({ repo, digest: img.key as string, key, tlog: world.tlog }).simpleSigning);
  await legacy('moving', signImageWithKey({ repo, digest: img.moving as string, key, tlog: world.tlog }).simpleSigning);
  // Keyless, as cosign v3 stores it: a bundle v0.3 referrer found through the fallback tag.
  const kl = signImageKeyless({ world, repo, digest: img.keyless as string, subject: { email: ALICE }, issuer: ISSUER });
  await pushBundleReferrer(reg, 'cos/os', img.keyless as string, await descriptor('cos/os', img.keyless as string), kl.bundleJson);
  // Key-signed bundle (cosign v3 with --key).
  const kb = signImageWithKey({ repo, digest: img['bundle-key'] as string, key, tlog: world.tlog });
  await pushBundleReferrer(reg, 'cos/os', img['bundle-key'] as string, await descriptor('cos/os', img['bundle-key'] as string), kb.bundleJson);
  // A valid signature of the 'key' image, copied to another image's .sig tag.
  await legacy('other-digest', signImageWithKey({ repo, digest: img.key as string, key, tlog: world.tlog }).simpleSigning);
  // Tampered payload: one byte of the signed message changed after signing.
  const t = signImageWithKey({ repo, digest: img.tampered as string, key, tlog: world.tlog }).simpleSigning;
  const payload = Buffer.from(t.payload);
  payload[payload.length - 3] = 0x20;
  await legacy('tampered', { payload, annotations: t.annotations });
  await legacy('wrong-key', signImageWithKey({ repo, digest: img['wrong-key'] as string, key: other, tlog: world.tlog }).simpleSigning);
  await legacy('wrong-identity', signImageKeyless({ world, repo, digest: img['wrong-identity'] as string, subject: { email: `m${ALICE}.evil` }, issuer: ISSUER }).simpleSigning);
  await legacy('wrong-issuer', signImageKeyless({ world, repo, digest: img['wrong-issuer'] as string, subject: { email: ALICE }, issuer: 'https://evil.example' }).simpleSigning);
  // A certificate that expired long before the logged signing time (no valid timestamp inside its validity).
  const oldLeaf = world.ca.issueLeaf({ san: { email: ALICE }, issuer: ISSUER, notBefore: new Date('2021-01-01T00:00:00Z'), notAfter: new Date('2021-01-01T00:10:00Z'), ctLog: world.ctlog });
  await legacy('expired', signSimpleSigning({ repo, digest: img.expired as string, leaf: oldLeaf, chainPem: world.ca.certPem, tlog: world.tlog, integratedTime: Math.floor(Date.now() / 1000) }));
  await legacy('forged-set', signImageWithKey({ repo, digest: img['forged-set'] as string, key, tlog: rogueLog }).simpleSigning);
  await legacy('no-tlog', signImageWithKey({ repo, digest: img['no-tlog'] as string, key }).simpleSigning);
  await legacy('foreign-ca', signImageKeyless({ world: foreign, repo, digest: img['foreign-ca'] as string, subject: { email: ALICE }, issuer: ISSUER }).simpleSigning);
  // A SLSA provenance by the right identity is not a signature of the image.
  const slsa = signImageKeyless({ world, repo, digest: img.slsa as string, subject: { email: ALICE }, issuer: ISSUER });
  const { signBundleV03 } = await import('../helpers/sigstore.ts');
  const leaf = world.ca.issueLeaf({ san: { email: ALICE }, issuer: ISSUER, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 540_000), ctLog: world.ctlog });
  const slsaBundle = signBundleV03({ digest: img.slsa as string, signer: leaf, tlog: world.tlog, predicateType: 'https://slsa.dev/provenance/v1', integratedTime: Math.floor(Date.now() / 1000) });
  void slsa;
  await pushBundleReferrer(reg, 'cos/os', img.slsa as string, await descriptor('cos/os', img.slsa as string), Buffer.from(JSON.stringify(slsaBundle)),
    { predicateType: 'https://slsa.dev/provenance/v1' });
});
test.after.always(async () => {
  await reg?.stop();
});

const POLICY = `default:
  keys: [/etc/cos-agent/keys/release.pub]
  identities:
    - subject: ${ALICE}
      issuer: ${ISSUER}
`;

async function signedHost(t: ExecutionContext, extra: Record<string, string> = {}): Promise<CosHost> {
  const host = await createCosHost({
    files: {
      '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n',
      '/etc/cos-agent/policy.yaml': POLICY,
      '/etc/cos-agent/keys/release.pub': publicKeyPem(key),
      '/etc/cos-agent/trusted_root.json': JSON.stringify(world.trustedRoot),
      ...extra,
    },
  });
  t.teardown(() => host.close());
  return host;
}

test('a key-signed image (legacy .sig tag with a Rekor entry) is verified and staged, and status says by whom', async (t) => {
  const host = await signedHost(t);
  const r = await cosctl(host, ['upgrade', '--image', `${repo}:key`]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /verified: key \/etc\/cos-agent\/keys\/release\.pub signed sha256:/);
  t.notRegex(r.stdout, /NOT verified/);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="3\.0\.0\+key"/);
  const state = parseYaml(await readFile(host.statePath('state.yaml'), 'utf8')) as { state: { active: Record<string, string> } };
  t.is(state.state.active.verification, 'verified');
  t.regex(state.state.active['verification-detail'] ?? '', /release\.pub/);
  const status = JSON.parse((await cosctl(host, ['status', '--json'])).stdout) as { status: { slots: { active: { verification: string; signedBy: string | null }; passive: { signedBy: string | null } } } };
  t.is(status.status.slots.active.verification, 'verified');
  t.regex(status.status.slots.active.signedBy ?? '', /^key \/etc\/cos-agent\/keys\/release\.pub signed sha256:[0-9a-f]{64} \[/, 'status says who signed it');
  t.is(status.status.slots.passive.signedBy, null, 'the unverified slot has no signer');
  const human = (await cosctl(host, ['status'])).stdout;
  t.regex(human, /Signature: verified: key \/etc\/cos-agent\/keys\/release\.pub signed\s+sha256:[0-9a-f]{12} \[/);
});

test('a keyless cosign v3 bundle (OCI 1.1 referrer via the fallback tag) is verified and staged', async (t) => {
  const host = await signedHost(t);
  const r = await cosctl(host, ['upgrade', '--image', `${repo}:keyless`]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`verified: ${ALICE} \\(issuer ${ISSUER.replace(/\./g, '\\.')}\\)`));
});

test('a key-signed cosign v3 bundle is verified and staged', async (t) => {
  const host = await signedHost(t);
  const r = await cosctl(host, ['upgrade', '--image', `${repo}:bundle-key`]);
  t.is(r.code, 0, r.stderr);
});

test('cosctl verify checks without staging and prints who signed what, as JSON too', async (t) => {
  const host = await signedHost(t);
  const before = await sha256File(host.statePath('cOS/active.img'));
  const human = await cosctl(host, ['verify', `${repo}:keyless`]);
  t.is(human.code, 0, human.stderr);
  t.regex(human.stdout, new RegExp(`Verified ${repo.replace(/\./g, '\\.')}:keyless@${img.keyless}`));
  t.regex(human.stdout, new RegExp(ALICE));
  const json = await cosctl(host, ['verify', '--json', `${repo}:key`]);
  t.is(json.code, 0, json.stderr);
  const out = JSON.parse(json.stdout) as { digest: string; signatures: Array<{ mode: string; keyId: string; digest: string; kind: string }> };
  t.is(out.digest, img.key);
  t.like(out.signatures[0], { mode: 'key', keyId: '/etc/cos-agent/keys/release.pub', digest: img.key, kind: 'simple-signing' });
  const bad = await cosctl(host, ['verify', `${repo}:unsigned`]);
  t.is(bad.code, EXIT_CODES.SIGNATURE_NOT_FOUND.exit);
  t.is(await sha256File(host.statePath('cOS/active.img')), before);
});

/** Each refusal: the exit code of `code`, one stderr line naming the check, and nothing staged. */
const refusals: Array<[string, string, ErrorCode, RegExp]> = [
  ['an unsigned image', 'unsigned', 'SIGNATURE_NOT_FOUND', /no signature/i],
  ['a signature over another digest', 'other-digest', 'SIGNATURE_DIGEST_MISMATCH', /sha256:/],
  ['a tampered payload', 'tampered', 'SIGNATURE_INVALID', /.+/],
  ['a signature by an untrusted key', 'wrong-key', 'SIGNATURE_UNTRUSTED_KEY', /.+/],
  ['a keyless signature by another identity (malice@example.com.evil: the anchoring trap)', 'wrong-identity', 'SIGNATURE_IDENTITY_MISMATCH', /malice@example\.com\.evil/],
  ['a keyless signature from another OIDC issuer', 'wrong-issuer', 'SIGNATURE_IDENTITY_MISMATCH', /evil\.example/],
  ['a certificate expired at the signing time, with no valid timestamp', 'expired', 'SIGNATURE_CERT_EXPIRED', /.+/],
  ['a SET forged by a log we do not trust', 'forged-set', 'SIGNATURE_BAD_SET', /.+/],
  ['a key signature without the transparency-log entry the policy requires', 'no-tlog', 'SIGNATURE_TLOG_MISSING', /.+/],
  ['a certificate from a foreign CA', 'foreign-ca', 'SIGNATURE_UNTRUSTED_KEY', /.+/],
  ['a SLSA provenance by the right identity (not a cosign signature)', 'slsa', 'SIGNATURE_INVALID', /slsa|predicate/i],
];
for (const [what, tag, code, names] of refusals) {
  test(`${what} is refused with ${code} and nothing is staged`, async (t) => {
    const host = await signedHost(t);
    const leaks = await host.leaks();
    const before = [await sha256File(host.statePath('cOS/active.img')), await sha256File(host.statePath('cOS/passive.img'))];
    const r = await cosctl(host, ['upgrade', '--image', `${repo}:${tag}`]);
    t.is(r.code, EXIT_CODES[code].exit, r.stderr);
    const lines = r.stderr.trim().split('\n');
    t.is(lines.length, 1, r.stderr);
    t.regex(lines[0] ?? '', names);
    t.deepEqual([await sha256File(host.statePath('cOS/active.img')), await sha256File(host.statePath('cOS/passive.img'))], before);
    t.deepEqual(await host.leaks(), leaks);
    t.false(r.stdout.includes('staging into'), 'verification happens before staging starts');
  });
}

test('with neither a key nor an identity configured, an upgrade is refused (VERIFY_FAILED), not waved through', async (t) => {
  const host = await createCosHost({ files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n' } });
  t.teardown(() => host.close());
  const r = await cosctl(host, ['upgrade', '--image', `${repo}:key`]);
  t.is(r.code, EXIT_CODES.VERIFY_FAILED.exit, r.stderr);
});

test('COSIGN_PUBLIC_KEY_LOCATION in /etc/cos-upgrade-image supplies the key, COSIGN_REPOSITORY moves the signatures', async (t) => {
  // Signatures of the image live in another repository.
  const digest = await pushOsImage(reg, 'cos/moved:v1', '4.0.0');
  await pushLegacySignature(reg, 'cos/signatures', digest, [signImageWithKey({ repo: `${reg.host}/cos/moved`, digest, key, tlog: world.tlog }).simpleSigning]);
  const host = await createCosHost({
    files: {
      '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n',
      '/etc/cos-upgrade-image': `CHANNEL_UPGRADES="false"\nUPGRADE_IMAGE="${reg.host}/cos/moved:v1"\nCOSIGN_PUBLIC_KEY_LOCATION="/etc/keys/cosign.pub"\nCOSIGN_REPOSITORY="${reg.host}/cos/signatures"`,
      '/etc/keys/cosign.pub': publicKeyPem(key),
      '/etc/cos-agent/trusted_root.json': JSON.stringify(world.trustedRoot),
    },
  });
  t.teardown(() => host.close());
  const r = await cosctl(host, ['upgrade']);
  t.is(r.code, 0, r.stderr);
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="4\.0\.0"/);
});

test('a multi-arch image signed by its index digest is accepted for the platform manifest it resolves to', async (t) => {
  const { index, amd64 } = await pushIndex('multi', '5.0.0');
  await pushLegacySignature(reg, 'cos/os', index, [signImageWithKey({ repo, digest: index, key, tlog: world.tlog }).simpleSigning]);
  const host = await signedHost(t);
  const r = await cosctl(host, ['verify', '--json', `${repo}:multi`]);
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { digest: string; indexDigest: string; signedDigest: string };
  t.deepEqual([out.indexDigest, out.signedDigest, out.digest], [index, index, amd64]);
});

test('a signature over one index, copied to another index the tag now points at, is refused (SIGNATURE_DIGEST_MISMATCH)', async (t) => {
  const signed = await pushIndex('index-a', '5.0.0');
  const other = await pushIndex('index-b', '6.6.6');
  // The attacker copies index-a's valid signature next to index-b.
  await pushLegacySignature(reg, 'cos/os', other.index, [signImageWithKey({ repo, digest: signed.index, key, tlog: world.tlog }).simpleSigning]);
  const host = await signedHost(t);
  const before = await sha256File(host.statePath('cOS/active.img'));
  const r = await cosctl(host, ['upgrade', '--image', `${repo}:index-b`]);
  t.is(r.code, EXIT_CODES.SIGNATURE_DIGEST_MISMATCH.exit, r.stderr);
  t.is(await sha256File(host.statePath('cOS/active.img')), before);
});

test('a tag moved to an unsigned image between resolve and pull: the verified digest is what gets staged', async (t) => {
  const { upgrade } = await import('../../src/actions/upgrade/upgrade.ts');
  const { SysRoot } = await import('../../src/sys/root.ts');
  const { SpawnRunner } = await import('../../src/sys/runner.ts');
  const { silentLogger } = await import('../../src/sys/log.ts');
  const host = await signedHost(t);
  const unsignedManifest = await getManifest(reg, 'cos/os', img.unsigned as string, OCI_MANIFEST);
  let moved = false;
  const out = await upgrade({
    root: new SysRoot(host.root), runner: new SpawnRunner(), log: silentLogger, env: { HOME: host.root }, now: () => new Date(),
    testDisk: host.loop, registry: { retryBaseMs: 10 },
    hooks: {
      run: async (name) => {
        // After verification, before the layers are pulled: the attacker moves the tag.
        if (name === 'before-upgrade') {
          await putManifest(reg, 'cos/os', 'moving', OCI_MANIFEST, unsignedManifest as Buffer);
          moved = true;
        }
      },
    },
  }, { image: `${repo}:moving` });
  t.true(moved);
  t.is(out.digest, img.moving);
  t.is(out.verification, 'verified');
  t.regex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /VERSION="3\.0\.0\+moving"/);
  t.notRegex(await imageCat(host.statePath('cOS/active.img'), '/etc/os-release'), /6\.6\.6/);
});

test('--no-verify stages an unsigned image, loudly, and the slot shows it', async (t) => {
  const host = await signedHost(t);
  const r = await cosctl(host, ['upgrade', '--no-verify', '--image', `${repo}:unsigned`]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /WARNING: signature verification disabled \(--no-verify\)/);
  const status = JSON.parse((await cosctl(host, ['status', '--json'])).stdout) as { status: { slots: { active: { verification: string } } } };
  t.is(status.status.slots.active.verification, 'skipped');
  t.regex((await cosctl(host, ['status'])).stdout, /UNVERIFIED/);
});

test('an image referenced by digest verifies the same as by tag: signatures attach to digests', async (t) => {
  const host = await signedHost(t);
  const r = await cosctl(host, ['verify', '--json', `${repo}@${img.key}`]);
  t.is(r.code, 0, r.stderr);
  t.is((JSON.parse(r.stdout) as { digest: string }).digest, img.key);
});
