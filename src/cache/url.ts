/**
 * The serve-URL shape of the artifact cache, byte-exact with withcache (upstream-web §14.3) so
 * that plans, scripts and tooling built for withcache work against bty-web unchanged:
 *
 *   <base>/b/<token>/<name>
 *
 * `token` is the URL-safe Base64 of the UTF-8 origin without `=` padding; `name` is the last
 * segment of the origin's path (or `download`), percent-encoded except `A-Za-z0-9_.-~` and `/`.
 * Only the token identifies the entry: `name` is there so that downloads get a useful file name.
 */
import { firstIndexOf, imageRefForSrc } from '../core/refs.ts';

/** The cache key of an origin: its image ref (sha256 of the canonical src), a catalog entry's `ref`. */
export function cacheKey(origin: string): string {
  return imageRefForSrc(origin);
}

export function blobToken(origin: string): string {
  return Buffer.from(origin, 'utf8').toString('base64url');
}

const TOKEN_RE = /^[A-Za-z0-9_-]*={0,2}$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The origin a token names, or null when the token is empty or not URL-safe Base64 of UTF-8. */
export function decodeBlobToken(token: string): string | null {
  if (!TOKEN_RE.test(token)) return null;
  const bare = token.replace(/=+$/, '');
  if (bare === '' || bare.length % 4 === 1) return null;
  const bytes = Buffer.from(bare, 'base64url');
  // Base64 with leftover bits set is not what any encoder produces: refuse rather than guess.
  if (bytes.toString('base64url') !== bare) return null;
  try {
    const origin = utf8.decode(bytes);
    return origin === '' ? null : origin;
  } catch {
    return null;
  }
}

/** The file name part of a serve URL: the basename of the origin's path, percent-encoded. */
export function blobName(origin: string): string {
  const path = urlPath(origin);
  const base = path.slice(path.lastIndexOf('/') + 1);
  return percentEncode(base === '' ? 'download' : base);
}

/** `/b/<token>/<name>` */
export function blobPath(origin: string): string {
  return `/b/${blobToken(origin)}/${blobName(origin)}`;
}

/** Where a cache at `base` (e.g. `http://10.0.0.1:8080`) serves `origin`. */
export function serveUrl(base: string, origin: string): string {
  return base.trim().replace(/\/+$/, '') + blobPath(origin);
}

/** The path of a `scheme://authority/path?query#fragment` URL, split as urlsplit splits it. */
function urlPath(origin: string): string {
  const schemeEnd = origin.indexOf('://');
  let rest = origin;
  if (schemeEnd >= 0 && /^[A-Za-z][A-Za-z0-9+.-]*$/.test(origin.slice(0, schemeEnd))) {
    const afterScheme = origin.slice(schemeEnd + 3);
    rest = afterScheme.slice(firstIndexOf(afterScheme, ['/', '?', '#']));
  }
  return rest.slice(0, firstIndexOf(rest, ['?', '#']));
}

const UNRESERVED = /[A-Za-z0-9_.\-~/]/;

/** Percent-encodes UTF-8 bytes outside `A-Za-z0-9_.-~/`, upper-case hex (Python's `quote`). */
function percentEncode(text: string): string {
  let out = '';
  for (const ch of text) {
    if (UNRESERVED.test(ch)) {
      out += ch;
      continue;
    }
    for (const byte of Buffer.from(ch, 'utf8')) {
      out += '%' + byte.toString(16).toUpperCase().padStart(2, '0');
    }
  }
  return out;
}

/**
 * The origin a request path `/b/<token>/<name…>` names (query ignored): a string, null for a
 * token that does not decode (answer 400 `missing url`), or undefined for a path of another shape.
 */
export function originOfBlobPath(path: string): string | null | undefined {
  const match = /^\/b\/([^/?#]*)\/[^?#]*(?:[?#].*)?$/s.exec(path);
  if (!match) return undefined;
  return decodeBlobToken(match[1]!);
}
