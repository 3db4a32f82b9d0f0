/**
 * The image picker's rows: the image root's files first (in their listing order), then the
 * catalog's entries in catalog order, without showing the same source twice.
 */
import type { LocalImage } from '../flash/images.ts';
import { tryImageRefForSrc } from '../core/refs.ts';
import type { Catalog, CatalogEntry } from './schema.ts';

export interface PickerRow {
  name: string;
  /** May be a format bty cannot write (a catalog's declared format is not validated). */
  format: string | null;
  size_bytes: number | null;
  arch: string | null;
  /**
   * Expected digest. Local rows carry their `.sha256` sidecar, so a local flash can be verified
   * too (upstream drops it).
   */
  sha256: string | null;
  source: 'local' | 'catalog';
  /** Local rows: the file. */
  path?: string;
  /** Catalog rows: the entry's src. */
  url?: string;
  /**
   * Catalog rows: sha256 of the canonical src (null when it cannot be canonicalised). Local
   * rows: the ref of `file://<name>`, the image-root-relative form bty-web uses for them.
   */
  ref: string | null;
}

export function localRow(image: LocalImage): PickerRow {
  return {
    name: image.name,
    format: image.format,
    size_bytes: image.size_bytes,
    arch: image.arch,
    sha256: image.sha256,
    source: 'local',
    path: image.path,
    ref: tryImageRefForSrc(`file://${image.name}`),
  };
}

export function catalogRow(entry: CatalogEntry): PickerRow {
  return {
    name: entry.name,
    format: entry.format,
    size_bytes: entry.size_bytes,
    arch: entry.arch,
    sha256: entry.sha256,
    source: 'catalog',
    url: entry.src,
    ref: entry.ref,
  };
}

/**
 * Local rows first, then catalog rows. A catalog row whose ref was already seen is dropped (the
 * first wins); one whose src cannot be canonicalised is kept as it is. Local files never share a
 * ref with catalog entries (catalogs refuse `file://`), so in practice only catalog rows dedupe.
 */
export function mergeImageRows(
  local: readonly LocalImage[],
  catalog: Catalog | readonly CatalogEntry[] | null,
): PickerRow[] {
  const rows = local.map(localRow);
  const entries: readonly CatalogEntry[] =
    catalog === null ? [] : isEntryList(catalog) ? catalog : catalog.entries;
  const seen = new Set<string>();
  for (const entry of entries) {
    if (entry.ref !== null) {
      if (seen.has(entry.ref)) continue;
      seen.add(entry.ref);
    }
    rows.push(catalogRow(entry));
  }
  return rows;
}

function isEntryList(value: Catalog | readonly CatalogEntry[]): value is readonly CatalogEntry[] {
  return Array.isArray(value);
}
