/** Block devices, loop devices, mounts and filesystem tools. */
export { parseBlkidExport, parseBlockDevices, toBlockDevice, unescapeBlkidValue, type BlockDevice } from './blkid.ts';
export {
  deviceWithLabel,
  discoverOnce,
  diskPartitions,
  encodeByLabelName,
  findDeviceByLabel,
  isBlockDevice,
  listBlockDevices,
  parseProcPartitions,
  probeCandidates,
  probeDevice,
  type DeviceDiscovery,
} from './discover.ts';
export {
  ambiguousMessage,
  devicesWithLabel,
  notFoundMessage,
  pickRunning,
  uniqueCandidates,
  unreadableLinkTarget,
  type DeviceProbe,
  type ProbeFailure,
  type RunningFacts,
} from './labels.ts';
export {
  defaultSquashCompression,
  fsckExt2,
  isSquashfs,
  mkfsExt2,
  mksquashfs,
  preallocate,
  probeLabel,
  readExtFile,
  readSquashfsFile,
  setExt2Label,
} from './fstools.ts';
export {
  attachLoop,
  detachLoop,
  listLoopDevices,
  loopBackingFile,
  loopBackingIdentity,
  waitForDetach,
  type LoopDevice,
  type LoopStatus,
} from './loop.ts';
export { findMountOf, mount, mountHolders, mountImage, readMounts, remount, unmount, type Mount } from './mount.ts';
export { findMountAt, isReadOnly, parseMountInfo, unescapeMountField, type MountInfo } from './mountinfo.ts';
export { onceCloser } from './once.ts';
export { freeBytes, syncFs } from './space.ts';
export { parseSuperblock, readImageIdentity, type ImageIdentity } from './superblock.ts';
