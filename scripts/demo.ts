/**
 * The main job on an embedded default: a disposable cOS host (a disk image with the real cOS partition layout on
 * loop devices), a local registry holding two OS versions, a private D-Bus (a dbus-daemon with a system-bus-like
 * policy) with the real cosd on it, a real upgrade by the daemon asked for by the real cosctl, then `cosctl status`.
 * Everything lives in temp dirs and is torn down at the end, even on failure.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createCosHost, type CosHost } from '../test/helpers/cos-host.ts';
import { startRegistry, type TestRegistry } from '../test/helpers/registry.ts';
import { pushOsImage } from '../test/helpers/os-image.ts';
import { startBus, startCosd, type CosdProcess, type TestBus } from '../test/helpers/dbus.ts';

const BIN = fileURLToPath(new URL('../bin/cosctl.js', import.meta.url));

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

let reg: TestRegistry | undefined;
let host: CosHost | undefined;
let bus: TestBus | undefined;
let cosd: CosdProcess | undefined;
let rc = 0;
try {
  console.log('demo: starting a local registry on 127.0.0.1 with two OS versions');
  reg = await startRegistry();
  const d1 = await pushOsImage(reg, 'cos/os:1.0.0', '1.0.0');
  const d2 = await pushOsImage(reg, 'cos/os:2.0.0', '2.0.0');
  console.log(`  ${reg.host}/cos/os:1.0.0  ${d1}\n  ${reg.host}/cos/os:2.0.0  ${d2}`);

  console.log('demo: building a disposable cOS host (GPT: COS_GRUB, COS_OEM, COS_STATE, COS_RECOVERY, COS_PERSISTENT) on loop devices');
  host = await createCosHost({
    versions: { active: '1.0.0', passive: '0.9.0', recovery: '0.9.0' },
    files: {
      // What a derivative's cloud-config writes at boot (yip environment_file format), pointing at the new version.
      '/etc/cos-upgrade-image': `CHANNEL_UPGRADES="false"\nNO_VERIFY="true"\nUPGRADE_IMAGE="${reg.host}/cos/os:2.0.0"`,
      '/etc/cos/config': 'DEFAULT_IMAGE_SIZE=64\n',
    },
  });
  console.log(`  disk ${host.disk} on ${host.loop}, host root ${host.root}`);

  console.log('demo: starting a private D-Bus (system-bus-like policy) and cosd on it, on the real clock');
  bus = await startBus();
  cosd = await startCosd(bus, host, { AGENT_TEST_CLOCK: '' });
  const armed = await cosd.waitForLog((l) => l.msg === 'automatic updates scheduled');
  console.log(`  cosd pid ${cosd.child.pid} owns io.costoolkit.Agent1 on ${bus.address}; next automatic check ${String(armed.nextRun)}`);

  rc = (await cosctl(host, bus, ['status'])) || rc;
  rc = (await cosctl(host, bus, ['upgrade'])) || rc;
  rc = (await cosctl(host, bus, ['upgrade'])) || rc;
  rc = (await cosctl(host, bus, ['status'])) || rc;
  rc = (await cosctl(host, bus, ['status', '--json'])) || rc;
  console.log('\ncosd log (the jobs cosctl asked for, one JSON event per line in the journal):');
  for (const l of cosd.logs.filter((x) => /^job (started|succeeded|failed)|^already up to date|^slot switched/.test(String(x.msg)))) {
    console.log(`  ${String(l.msg)}  transaction ${String(l.transaction)}${l.digest ? `  ${String(l.digest)}` : ''}`);
  }
} catch (e) {
  console.error(`demo: ${e instanceof Error ? e.message : String(e)}`);
  rc = 1;
} finally {
  await cosd?.stop();
  await bus?.stop();
  await host?.close();
  await reg?.stop();
  console.log(rc === 0 ? '\ndemo: done (daemon, bus, host and registry removed)' : `\ndemo: FAILED (exit ${rc})`);
}
process.exitCode = rc;
