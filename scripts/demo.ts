/**
 * The main job on an embedded default: a disposable cOS host (a disk image with the real cOS partition layout on
 * loop devices), a local registry holding two OS versions signed with a demo key (and one image nobody signed), a
 * private D-Bus (a dbus-daemon with a system-bus-like policy) with the real cosd on it, and the real cosctl asking
 * it for:
 *   1. status;
 *   2. an upgrade to the unsigned image: refused (SIGNATURE_NOT_FOUND), nothing written (verification is on: the host trusts the demo key);
 *   3. the configured upgrade: verified (signed by the demo key), staged into active, boot assessment armed;
 *   4. the same again: "already up to date";
 *   5. status: what runs, what boots next and why, who signed it;
 *   6. rollback: the next boot goes back to the running version, once;
 *   7. mark-good: the running system is good (boot assessment stays armed for the staged upgrade);
 *   8. status, then a short summary.
 * Everything lives in temp dirs and is torn down at the end, even on failure.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createCosHost, type CosHost } from '../test/helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../test/helpers/registry.ts';
import { pushOsImage } from '../test/helpers/os-image.ts';
import type { TarEntry } from '../test/helpers/oci-layout.ts';
import { pushLegacySignature } from '../test/helpers/sign-push.ts';
import { makeKeyPair, makeSigstoreWorld, publicKeyPem, signImageWithKey } from '../test/helpers/sigstore.ts';
import { startBus, startCosd, type CosdProcess, type TestBus } from '../test/helpers/dbus.ts';
import { EXIT_CODES } from '../src/cli/exit-codes.ts';

const BIN = fileURLToPath(new URL('../bin/cosctl.js', import.meta.url));
const KEY_FILE = '/etc/cos-agent/keys/demo.pub';

/** Run cosctl as a user would, its output shown as it comes; resolves with its exit code. */
function cosctl(host: CosHost, bus: TestBus, args: string[]): Promise<number> {
  console.log(`\n$ cosctl ${args.join(' ')}`);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, '--root', host.root, ...args], {
      stdio: 'inherit',
      env: { ...process.env, ...host.env, HOME: host.root, DBUS_SYSTEM_BUS_ADDRESS: bus.address },
    });
    child.on('close', (code) => resolve(code ?? 1));
  });
}

/** A file of `mib` MiB of incompressible bytes: the demo's OS versions carry some payload, as real ones do. */
function payload(version: string, mib: number): TarEntry[] {
  const content = Buffer.alloc(mib * 1024 * 1024);
  let x = 0x9e3779b9 ^ version.length;
  for (let i = 0; i < content.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    content.writeUInt32LE(x >>> 0, i);
  }
  return [{ name: `usr/share/cos-demo/payload-${version}.bin`, type: 'file', content, mode: 0o644 }];
}

let reg: TestRegistry | undefined;
let host: CosHost | undefined;
let bus: TestBus | undefined;
let cosd: CosdProcess | undefined;
let rc = 0;
const steps: string[] = [];
/** A step that must exit `want`: its result goes into the summary; another exit code fails the demo. */
const step = async (what: string, want: number, code: Promise<number>): Promise<void> => {
  const got = await code;
  steps.push(`${got === want ? 'ok  ' : 'FAIL'} ${what}${got === want ? '' : ` (exit ${got}, expected ${want})`}`);
  if (got !== want) rc = 1;
};
try {
  console.log('demo: a local registry on 127.0.0.1 with two OS versions signed with a demo key, and one unsigned image');
  reg = await startRegistry();
  const key = makeKeyPair('p256');
  const world = makeSigstoreWorld();
  const repo = `${reg.host}/cos/os`;
  const digests: Record<string, string> = {};
  for (const [tag, version, signed] of [['1.0.0', '1.0.0', true], ['2.0.0', '2.0.0', true], ['unsigned', '6.6.6', false]] as const) {
    digests[tag] = await pushOsImage(reg, `cos/os:${tag}`, version, { extraLayers: [payload(version, 4)] });
    if (signed) await pushLegacySignature(reg, 'cos/os', digests[tag], [signImageWithKey({ repo, digest: digests[tag], key, tlog: world.tlog }).simpleSigning]);
    console.log(`  ${repo}:${tag.padEnd(8)} ${digests[tag]}  ${signed ? 'signed with the demo key' : 'not signed'}`);
  }

  console.log('demo: a disposable cOS host (GPT: COS_GRUB, COS_OEM, COS_STATE, COS_RECOVERY, COS_PERSISTENT) on loop devices');
  host = await createCosHost({
    versions: { active: '1.0.0', passive: '0.9.0', recovery: '0.9.0' },
    files: {
      // What a derivative's cloud-config writes at boot: the image to follow, and the key its releases are signed with.
      '/etc/cos-upgrade-image': `CHANNEL_UPGRADES="false"\nUPGRADE_IMAGE="${repo}:2.0.0"\nCOSIGN_PUBLIC_KEY_LOCATION="${KEY_FILE}"\n`,
      [KEY_FILE]: publicKeyPem(key),
      // The demo's transparency log (a real host trusts the public Sigstore instance's, shipped with the image).
      '/etc/cos-agent/trusted_root.json': JSON.stringify(world.trustedRoot),
      '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=64\n',
    },
  });
  console.log(`  disk ${host.disk} on ${host.loop}, host root ${host.root}; verification on, trusting ${KEY_FILE}`);

  console.log('demo: a private D-Bus (system-bus-like policy) and cosd on it, on the real clock');
  bus = await startBus();
  cosd = await startCosd(bus, host, { AGENT_TEST_CLOCK: '' });
  const armed = await cosd.waitForLog((l) => l.msg === 'automatic updates scheduled');
  console.log(`  cosd pid ${cosd.child.pid} owns io.costoolkit.Agent1 on ${bus.address}; next automatic check ${String(armed.nextRun)}`);

  await step('status: active runs 1.0.0', 0, cosctl(host, bus, ['status']));
  await step(`an unsigned image is refused before anything is written (exit ${EXIT_CODES.SIGNATURE_NOT_FOUND.exit}, SIGNATURE_NOT_FOUND)`, EXIT_CODES.SIGNATURE_NOT_FOUND.exit, cosctl(host, bus, ['upgrade', '--image', `${repo}:unsigned`]));
  await step('the configured image 2.0.0 is verified (demo key) and staged into active', 0, cosctl(host, bus, ['upgrade']));
  await step('asked again: already up to date', 0, cosctl(host, bus, ['upgrade']));
  await step('status: 2.0.0 boots next, signed by the demo key; 1.0.0 is the rollback', 0, cosctl(host, bus, ['status']));
  await step('rollback: the next boot goes back to 1.0.0 (passive), once', 0, cosctl(host, bus, ['rollback']));
  await step('mark-good: the running 1.0.0 is good', 0, cosctl(host, bus, ['mark-good']));
  await step('status: what boots next after the rollback', 0, cosctl(host, bus, ['status']));

  console.log('\ncosd log (one JSON event per line in the journal), the jobs:');
  for (const l of cosd.logs.filter((x) => /^job (started|succeeded|failed)$/.test(String(x.msg)))) {
    console.log(`  ${String(l.msg).padEnd(14)} ${String(l.kind ?? '').padEnd(9)} ${String(l.transaction)}${l.code ? `  ${String(l.code)}` : ''}`);
  }
} catch (e) {
  console.error(`demo: ${e instanceof Error ? e.message : String(e)}`);
  rc = 1;
} finally {
  await cosd?.stop();
  await bus?.stop();
  await host?.close();
  await reg?.stop();
  if (steps.length > 0) console.log(`\nsummary:\n${steps.map((s) => `  ${s}`).join('\n')}`);
  console.log(rc === 0 ? '\ndemo: done (daemon, bus, host and registry removed)' : `\ndemo: FAILED (exit ${rc})`);
}
process.exitCode = rc;
