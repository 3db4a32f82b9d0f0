/**
 * The artifact cache: a URL-keyed, content-verified blob store, the download manager that fills
 * it (bounded, resumable, `oras://` aware, pull-through), and the HTTP serving of its entries
 * under withcache's `/b/<token>/<name>` URLs. See docs/cache.md.
 */
export {
  cacheKey,
  blobToken,
  decodeBlobToken,
  blobName,
  blobPath,
  serveUrl,
  originOfBlobPath,
} from './url.ts';
export {
  CacheStore,
  DEFAULT_CONTENT_TYPE,
  type CacheEntry,
  type CacheStoreOptions,
  type Reservation,
} from './store.ts';
export {
  CacheManager,
  Fill,
  type CacheJob,
  type CacheJobState,
  type CacheJobEvent,
  type CacheJobEventType,
  type CacheManagerOptions,
  type FillOptions,
  type FetchHandle,
  type ServeTarget,
} from './manager.ts';
export {
  transfer,
  normaliseSha256,
  type TransferOptions,
  type TransferHooks,
  type TransferResult,
} from './fetch.ts';
export { serveArtifact, parseRange, entryEtag, WITHHELD_BYTES, type ByteRange } from './serve.ts';
export { cacheMain, createCacheServer, type CacheCliIO } from './cli.ts';
