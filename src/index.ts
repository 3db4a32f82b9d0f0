/**
 * bty as a library. The same pieces are available one by one as the package entry points
 * `bty-lab/flash`, `bty-lab/disks`, `bty-lab/images`, `bty-lab/catalog`, `bty-lab/oras`,
 * `bty-lab/errors` and `bty-lab/progress`. Importing the root or `bty-lab/oras` enables
 * `oras://` sources.
 */
export * from './core/errors.ts';
export * from './core/progress.ts';
export * from './core/formats.ts';
export * from './flash/index.ts';
export {
  listDisks,
  findDisk,
  matchDiskBySerial,
  type Disk,
  type DiskRefusal,
} from './flash/disks.ts';
export { listLocalImages, imageRoot, readSidecarSha256, type LocalImage } from './flash/images.ts';
export * from './catalog/index.ts';
export * from './oras/index.ts';
export { VERSION } from './core/version.ts';
