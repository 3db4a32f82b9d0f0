/**
 * Where a flash plan sends a machine for its image bytes (issue 7): an external withcache when
 * one is configured, else bty-web's own artifact cache (`/b/<token>/<name>` on the Host the
 * machine used, like the iPXE scripts) when the image is cached or pull-through is on, else the
 * origin. Pure: the route supplies what it looked up.
 *
 * `disk_image_sha` carries the image's digest whichever way the bytes travel: the catalog's
 * sha256, or the digest the cache computed when the catalog has none.
 */
import { blobPath, serveUrl } from '../cache/url.ts';

export type CacheMode = 'pull-through' | 'curated';

export type ServedFrom = 'withcache' | 'cache' | 'origin';

export interface PlanImage {
  url: string;
  served_from: ServedFrom;
  /** Whether the cache held the bytes already (null for a file:// source, which no cache takes). */
  hit: boolean | null;
  /** Lower-case hex, or null when neither the catalog nor the cache knows it. */
  sha256: string | null;
}

/** Sources a cache can fetch: the file:// sources are the live environment's own. */
export function cacheable(src: string): boolean {
  return /^(https?|oras):\/\//i.test(src);
}

/** `sha256:<hex>` or `<hex>` as lower-case hex; null for anything else. */
export function digestHex(digest: string | null | undefined): string | null {
  if (!digest) return null;
  const m = /^(?:sha256:)?([0-9a-f]{64})$/i.exec(digest);
  return m ? m[1]!.toLowerCase() : null;
}

export function planImage(
  entry: { src: string; sha256: string | null },
  where: {
    /** `host[:port]` the machine reached bty-web on. */
    host: string;
    /** Normalised withcache base URL, or '' when none is configured. */
    withcacheBase: string;
    mode: CacheMode;
    /** The cached copy of `entry.src`, when there is one. */
    cached: { digest: string } | null;
  },
): PlanImage {
  const catalogSha = digestHex(entry.sha256);
  if (!cacheable(entry.src)) {
    return { url: entry.src, served_from: 'origin', hit: null, sha256: catalogSha };
  }
  if (where.withcacheBase !== '') {
    return {
      url: serveUrl(where.withcacheBase, entry.src),
      served_from: 'withcache',
      // Upstream's plan event says so (its catalog was withcache's list of what it holds).
      hit: true,
      sha256: catalogSha,
    };
  }
  if (where.cached !== null || where.mode === 'pull-through') {
    return {
      url: `http://${where.host}${blobPath(entry.src)}`,
      served_from: 'cache',
      hit: where.cached !== null,
      sha256: catalogSha ?? digestHex(where.cached?.digest),
    };
  }
  return { url: entry.src, served_from: 'origin', hit: false, sha256: catalogSha };
}
