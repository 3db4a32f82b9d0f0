/**
 * Table state from the query string: sorting against a per-table allowlist and paging with a
 * fixed set of page sizes. Bad values fall back to the defaults instead of failing the page
 * (a stale bookmark still opens).
 */

export const PAGE_SIZES = [10, 25, 50, 100] as const;
export const DEFAULT_PAGE_SIZE = 25;

type Query = Record<string, unknown>;

function text(query: Query, name: string): string {
  const v = query[name];
  return typeof v === 'string' ? v : Array.isArray(v) && typeof v[0] === 'string' ? v[0] : '';
}

/** A query parameter as one trimmed string ('' when absent or repeated oddly). */
export function queryText(query: unknown, name: string): string {
  return typeof query === 'object' && query !== null ? text(query as Query, name).trim() : '';
}

export interface Paging {
  page: number;
  perPage: number;
}

export function parsePaging(query: unknown, defaultSize: number = DEFAULT_PAGE_SIZE): Paging {
  const size = Number(queryText(query, 'per_page'));
  const perPage = (PAGE_SIZES as readonly number[]).includes(size) ? size : defaultSize;
  const page = Number(queryText(query, 'page'));
  return { page: Number.isSafeInteger(page) && page >= 1 ? page : 1, perPage };
}

/** The page clamped to the last one there is, and the row offset. */
export function clampPage(
  paging: Paging,
  total: number,
): Paging & { offset: number; last: number } {
  const last = Math.max(1, Math.ceil(total / paging.perPage));
  const page = Math.min(paging.page, last);
  return { ...paging, page, last, offset: (page - 1) * paging.perPage };
}

export type Direction = 'asc' | 'desc';
export interface Sort<C extends string> {
  column: C;
  dir: Direction;
}

export function parseSort<C extends string>(
  query: unknown,
  allowed: readonly C[],
  fallback: Sort<C>,
): Sort<C> {
  const column = queryText(query, 'sort') as C;
  if (!allowed.includes(column)) return fallback;
  return { column, dir: queryText(query, 'dir') === 'desc' ? 'desc' : 'asc' };
}

/** `path?…` with `changes` applied to `params` (empty values dropped). */
export function hrefWith(
  path: string,
  params: Record<string, string | number | undefined>,
  changes: Record<string, string | number | undefined> = {},
): string {
  const merged = { ...params, ...changes };
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(merged)) {
    if (v !== undefined && v !== '') search.set(k, String(v));
  }
  const qs = search.toString();
  return qs ? `${path}?${qs}` : path;
}
