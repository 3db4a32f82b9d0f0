/** `bty-lab/catalog`: catalog schema, loading, picker rows, and the canonical src/ref rules. */
export { CATALOG_SCHEMA_VERSION, parseCatalog, type Catalog, type CatalogEntry } from './schema.ts';
export {
  CATALOG_MAX_REDIRECTS,
  CATALOG_TIMEOUT_MS,
  REMOTE_CATALOG_MAX_BYTES,
  fetchCatalogBytes,
  fetchHttpBody,
  loadCatalog,
  registerCatalogScheme,
  type CatalogFetcher,
  type HttpBodyOptions,
  type LoadCatalogOptions,
  type RemoteFetchOptions,
} from './load.ts';
export { catalogRow, localRow, mergeImageRows, type PickerRow } from './merge.ts';
export { canonicalSrc, imageRefForSrc, tryImageRefForSrc } from '../core/refs.ts';
export { formatOrasRef, parseOrasRef, type OrasRef } from '../core/oras-ref.ts';
