import test from 'ava';
import { MOUNT_BASE, MOUNT_POINTS } from '../../src/host/mount-points.ts';

test("every mount point of the agent is under its own base, none under elemental's /run/cos/", (t) => {
  for (const [name, mp] of Object.entries(MOUNT_POINTS)) {
    t.true(mp.startsWith(`${MOUNT_BASE}/`), name);
    t.false(mp.startsWith('/run/cos/'), name);
  }
  t.is(new Set(Object.values(MOUNT_POINTS)).size, Object.keys(MOUNT_POINTS).length, 'distinct');
});
