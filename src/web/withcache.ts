/**
 * An external withcache (upstream-web §14): when `[withcache] url` (or `BTY_WITHCACHE_URL`) is
 * set, flash plans send machines to its serve URL instead of bty-web's own cache, and its
 * `GET /catalog` listing (the entries it holds bytes for) can be imported into the catalog.
 *
 * The serve URL is built by src/cache/url.ts, which is byte-exact with withcache's, so a plan
 * names the blob withcache stores.
 */
import { BtyError } from '../core/errors.ts';
import { tomlString } from './routes/catalog.ts';

/**
 * The base URL as upstream normalises it: trimmed, trailing `/` removed, `http://` prepended
 * when it has no scheme. Empty when unset.
 */
export function withcacheBase(raw: string): string {
  let base = raw.trim();
  while (base.endsWith('/')) base = base.slice(0, -1);
  if (base === '') return '';
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(base)) base = `http://${base}`;
  return base;
}

/** One entry of withcache's `/catalog` envelope, as far as a catalog needs it. */
interface WithcacheEntry {
  name: string;
  src: string;
  sha256?: string;
  format?: string;
  arch?: string;
  size_bytes?: number;
  description?: string;
}

/**
 * withcache's `/catalog` JSON as a bty catalog TOML: its entries (the ones it holds bytes for)
 * with their origin `src`, so bindings keep the refs they would have anyway. Entries without a
 * name or src are skipped; everything else is validated by the catalog import as usual.
 */
export function withcacheCatalogToml(body: string, source: string): string {
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch {
    throw new BtyError('BTY_ERR_CATALOG_INVALID', `${source}: not JSON (is it a withcache?)`);
  }
  const entries = (doc as { entries?: unknown } | null)?.entries;
  if (!Array.isArray(entries)) {
    throw new BtyError(
      'BTY_ERR_CATALOG_INVALID',
      `${source}: no "entries" list (is it a withcache /catalog?)`,
    );
  }
  const lines = ['version = 1', ''];
  for (const raw of entries as unknown[]) {
    if (typeof raw !== 'object' || raw === null) continue;
    const e = raw as Partial<Record<keyof WithcacheEntry, unknown>>;
    if (typeof e.name !== 'string' || e.name === '' || typeof e.src !== 'string' || e.src === '') {
      continue;
    }
    lines.push('[[images]]', `name = ${tomlString(e.name)}`, `src = ${tomlString(e.src)}`);
    for (const key of ['sha256', 'format', 'arch', 'description'] as const) {
      const value = e[key];
      if (typeof value === 'string' && value !== '') lines.push(`${key} = ${tomlString(value)}`);
    }
    if (typeof e.size_bytes === 'number' && Number.isSafeInteger(e.size_bytes)) {
      lines.push(`size_bytes = ${e.size_bytes}`);
    }
    lines.push('');
  }
  return `${lines.join('\n').trimEnd()}\n`;
}
