/**
 * The agent's own mount points, all under one directory. Never elemental's `/run/cos/{state,recovery,transition,…}`:
 * an `elemental upgrade` running beside the agent mounts there, and the agent's recovery after a crash unmounts
 * everything under its own points, which must then be only what an agent run made.
 */
export const MOUNT_BASE = '/run/cos-agent/mnt';

export const MOUNT_POINTS: Readonly<Record<'state' | 'recovery' | 'oem' | 'persistent' | 'transition', string>> = {
  state: '/run/cos-agent/mnt/state',
  recovery: '/run/cos-agent/mnt/recovery',
  oem: '/run/cos-agent/mnt/oem',
  persistent: '/run/cos-agent/mnt/persistent',
  transition: '/run/cos-agent/mnt/transition',
};
