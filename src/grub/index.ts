/** GRUB environment blocks: the public API of src/grub. */
export {
  GRUBENV_HEADER,
  GRUBENV_MESSAGE,
  GRUBENV_SIZE,
  applyGrubEnvChanges,
  parseGrubEnv,
  parseGrubEnvBlock,
  serializeGrubEnv,
} from './grubenv.ts';
export type { GrubEnvBlock } from './grubenv.ts';
export { readGrubEnvFile, updateGrubEnvFile } from './envfile.ts';
