/**
 * Test helpers for cosctl through the daemon:
 *   - daemonHost(): a private bus, a loop-device cOS host (48 MiB slots unless `files` says otherwise) and the real
 *     cosd on that bus, all torn down with the test; `env` points cosctl at the bus.
 *   - firstLayer(): the first layer of an image in a test registry (digest and size), e.g. for holdLayerDownload().
 */
import { createCosHost, type CosHost, type CosHostOptions } from './cos-host.ts';
import { startBus, startCosd, type CosdProcess, type TestBus } from './dbus.ts';
import type { TestRegistry } from './registry.ts';

export interface DaemonHost {
  bus: TestBus;
  host: CosHost;
  cosd: CosdProcess;
  env: { DBUS_SYSTEM_BUS_ADDRESS: string };
}

export async function daemonHost(t: { teardown: (fn: () => Promise<void>) => void }, opts: CosHostOptions = {}, cosdArgs: readonly string[] = []): Promise<DaemonHost> {
  const bus = await startBus();
  t.teardown(() => bus.stop());
  const host = await createCosHost({ ...opts, files: { '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=48\n', ...opts.files } });
  t.teardown(() => host.close());
  const cosd = await startCosd(bus, host, {}, cosdArgs);
  t.teardown(async () => {
    await cosd.stop();
  });
  return { bus, host, cosd, env: { DBUS_SYSTEM_BUS_ADDRESS: bus.address } };
}

export async function firstLayer(reg: TestRegistry, repo: string, tag: string): Promise<{ digest: string; size: number }> {
  const manifest = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  const layer = ((await manifest.json()) as { layers: Array<{ digest: string; size: number }> }).layers[0];
  return { digest: layer?.digest ?? '', size: layer?.size ?? 0 };
}
