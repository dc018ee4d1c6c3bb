/**
 * Warm the VM test cache while the other tests run (scripts/test.sh starts this in the background): the package, the
 * guest kernel, initrd, GRUB, the debootstrap tree, the upgrade scenarios' disk and signed derivative image, and the
 * fallback scenarios' two disks, which between them are most of a cold VM suite's build time. Every entry is built under the cache's per-entry lock, so a
 * VM test that needs one while it is being built here waits for it instead of building it again; an entry this does
 * not build, or one it fails to build, the tests build themselves. Exit 0 when all was built, 1 otherwise.
 */
import { upgradeScenario } from './upgrade-image.ts';
import { fallbackScenarioDisks } from './fallback-disks.ts';

const t0 = Date.now();
try {
  await upgradeScenario((line) => console.log(line));
  // The fallback and rollback scenarios' two disks (about a minute of builds the VM suite would otherwise wait for).
  await fallbackScenarioDisks((line) => console.log(line));
  console.log(`vm-prebuild: done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
} catch (e) {
  console.log(`vm-prebuild: failed after ${((Date.now() - t0) / 1000).toFixed(1)} s (the VM tests build what they need themselves): ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  process.exitCode = 1;
}
