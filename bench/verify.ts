/**
 * Benchmark line: the agent's own CPU time to verify one keyless-signed image (resolve, discover the signature in
 * the registry, verify Fulcio chain, SCT, SET and identity), measured in the same run beside a no-verify pull of the
 * same image (resolve + stream every layer, digest-checked, to nowhere). Target: under 50 ms of CPU, warm.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { startRegistry } from '../test/helpers/registry.ts';
import { pushOsImage } from '../test/helpers/os-image.ts';
import { getManifest, pushBundleReferrer } from '../test/helpers/sign-push.ts';
import { makeSigstoreWorld, signImageKeyless } from '../test/helpers/sigstore.ts';
import { verifyReference } from '../src/actions/verify-image.ts';
import { RegistryClient } from '../src/oci/registry.ts';
import { parseReference } from '../src/oci/reference.ts';
import { SysRoot } from '../src/sys/root.ts';
import { SpawnRunner } from '../src/sys/runner.ts';
import { silentLogger } from '../src/sys/log.ts';
import { NoHooks } from '../src/host/hooks.ts';
import type { AgentDeps } from '../src/host/deps.ts';

export const TARGET_VERIFY_CPU_MS = 50;

const cpuMs = async (fn: () => Promise<unknown>): Promise<{ cpu: number; wall: number }> => {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const c = process.cpuUsage(c0);
  return { cpu: (c.user + c.system) / 1000, wall: performance.now() - t0 };
};
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

export async function benchVerification(out: (line?: string) => void, runs = 15): Promise<void> {
  const reg = await startRegistry();
  const root = await mkdtemp(path.join(os.tmpdir(), 'bench-verify-'));
  try {
    const world = makeSigstoreWorld();
    const digest = await pushOsImage(reg, 'bench/signed:v1', '1.0.0');
    const bytes = await getManifest(reg, 'bench/signed', digest, 'application/vnd.oci.image.manifest.v1+json');
    const signed = signImageKeyless({ world, repo: `${reg.host}/bench/signed`, digest, subject: { email: 'release@example.com' }, issuer: 'https://issuer.example' });
    await pushBundleReferrer(reg, 'bench/signed', digest, { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: bytes?.length ?? 0 }, signed.bundleJson);
    await mkdir(path.join(root, 'etc/cos-agent'), { recursive: true });
    await writeFile(path.join(root, 'etc/cos-agent/trusted_root.json'), JSON.stringify(world.trustedRoot));
    await writeFile(path.join(root, 'etc/cos-agent/policy.yaml'),
      'default:\n  identities:\n    - subject: release@example.com\n      issuer: https://issuer.example\n');
    const deps: AgentDeps = {
      root: new SysRoot(root), runner: new SpawnRunner(), log: silentLogger, hooks: new NoHooks(), env: { HOME: root }, now: () => new Date(),
    };
    const image = `${reg.host}/bench/signed:v1`;
    const pull = async (): Promise<void> => {
      const client = new RegistryClient({ root: deps.root, env: deps.env });
      const ref = parseReference(image);
      const resolved = await client.resolve(ref);
      for (const layer of resolved.manifest.layers) {
        await pipeline(client.openBlob({ ...ref, digest: resolved.digest }, layer), new Writable({ write: (_c, _e, cb) => cb() }));
      }
      client.close();
    };
    const cold = await cpuMs(() => verifyReference(deps, image));
    const verify: Array<{ cpu: number; wall: number }> = [];
    const pulls: Array<{ cpu: number; wall: number }> = [];
    for (let i = 0; i < runs; i++) {
      verify.push(await cpuMs(() => verifyReference(deps, image)));
      pulls.push(await cpuMs(pull));
    }
    const vCpu = median(verify.map((v) => v.cpu));
    const pCpu = median(pulls.map((p) => p.cpu));
    out();
    out(`signature verification (keyless bundle v0.3: Fulcio chain + SCT + Rekor inclusion + identity; ${runs} runs, medians)`);
    out(`  verify (resolve + discover + verify)   cpu ${vCpu.toFixed(1)} ms   wall ${median(verify.map((v) => v.wall)).toFixed(1)} ms   (first call, modules loading: cpu ${cold.cpu.toFixed(1)} ms)`);
    out(`  no-verify pull of the same image       cpu ${pCpu.toFixed(1)} ms   wall ${median(pulls.map((p) => p.wall)).toFixed(1)} ms`);
    const ok = vCpu < TARGET_VERIFY_CPU_MS;
    out(`  ${'verification CPU per image'.padEnd(34)} ${vCpu.toFixed(1).padStart(5)} ms target < ${TARGET_VERIFY_CPU_MS} ms  ${ok ? 'PASS' : 'MISS'}   (${(vCpu / pCpu).toFixed(2)}x the no-verify pull's CPU)`);
  } finally {
    await reg.stop();
    await rm(root, { recursive: true, force: true });
  }
}
