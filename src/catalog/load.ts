/**
 * Loading a catalog from where the operator points: a local path, `file://`, `http(s)://`, or a
 * scheme registered by another module (`oras://` comes from the OCI client).
 *
 * Remote bodies are capped (4 MiB) and the whole fetch, redirects included, runs under one
 * timeout: a hostile or broken server can neither exhaust memory nor hang the wizard.
 */
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { resolve as resolvePath } from 'node:path';
import { BtyError } from '../core/errors.ts';
import { reprString } from '../core/python-repr.ts';
import { firstIndexOf } from '../core/refs.ts';
import { openHttp } from '../net/http-client.ts';
import { parseCatalog, type Catalog } from './schema.ts';

export const REMOTE_CATALOG_MAX_BYTES = 4 * 1024 * 1024;
export const CATALOG_TIMEOUT_MS = 30_000;
export const CATALOG_MAX_REDIRECTS = 5;

export interface LoadCatalogOptions {
  /** One deadline for the whole remote fetch, redirects included. Default 30 s. */
  timeoutMs?: number;
  /** Remote body cap. Default 4 MiB. Local files are not capped (not a hostile boundary). */
  maxBytes?: number;
  /** Base for relative local paths. Default `process.cwd()`. */
  cwd?: string;
}

export interface RemoteFetchOptions {
  timeoutMs: number;
  maxBytes: number;
}

/** Fetches the raw bytes of a catalog for a scheme bty does not handle itself. */
export type CatalogFetcher = (source: string, options: RemoteFetchOptions) => Promise<Uint8Array>;

const BUILTIN_SCHEMES = new Set(['', 'file', 'http', 'https']);
const extraSchemes = new Map<string, CatalogFetcher>();

/**
 * Plugs in a fetcher for another URL scheme (lower-case, without `://`). The OCI client
 * registers `oras` this way, so this module does not depend on it.
 */
export function registerCatalogScheme(scheme: string, fetcher: CatalogFetcher): void {
  const key = scheme.toLowerCase();
  if (BUILTIN_SCHEMES.has(key)) throw new Error(`catalog scheme ${key}:// is built in`);
  extraSchemes.set(key, fetcher);
}

/** Fetches, parses and validates a catalog. `source` labels every message. */
export async function loadCatalog(
  source: string,
  options: LoadCatalogOptions = {},
): Promise<Catalog> {
  const bytes = await fetchCatalogBytes(source, options);
  return parseCatalog(bytes, source);
}

/** The raw bytes of a catalog, from any supported source. */
export async function fetchCatalogBytes(
  source: string,
  options: LoadCatalogOptions = {},
): Promise<Uint8Array> {
  const remote: RemoteFetchOptions = {
    timeoutMs: options.timeoutMs ?? CATALOG_TIMEOUT_MS,
    maxBytes: options.maxBytes ?? REMOTE_CATALOG_MAX_BYTES,
  };
  const scheme = urlScheme(source);
  if (scheme === 'http' || scheme === 'https') {
    if (authorityOf(source) === '') {
      throw new BtyError(
        'BTY_ERR_BAD_INPUT',
        `catalog URL missing a host: ${reprString(source)} (expected http(s)://<host>/<path>)`,
      );
    }
    return fetchHttpBody(source, { ...remote, label: source });
  }
  if (scheme === '') return readLocalCatalog(source, options.cwd);
  if (scheme === 'file') return readLocalCatalog(fileUrlPath(source), options.cwd);
  const fetcher = extraSchemes.get(scheme);
  if (fetcher) return fetcher(source, remote);
  if (scheme === 'oras') {
    throw new BtyError(
      'BTY_ERR_SOURCE_SCHEME',
      `oras:// support is not loaded in this program: ${source}`,
      { hint: "Import 'bty-lab/oras' (or the package root) once before loading catalogs." },
    );
  }
  throw new BtyError(
    'BTY_ERR_SOURCE_SCHEME',
    `catalog source must be a local path or http(s):// / oras:// URL; ` +
      `got scheme ${reprString(scheme)} in ${reprString(source)}`,
    { hint: 'A path containing ":" before any "/" reads as a URL scheme: write it as ./a:b.toml.' },
  );
}

async function readLocalCatalog(path: string, cwd: string | undefined): Promise<Uint8Array> {
  const absolute = resolvePath(cwd ?? process.cwd(), path);
  try {
    return await readFile(absolute);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const details = { path: absolute };
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new BtyError('BTY_ERR_CATALOG_NOT_FOUND', `catalog not found: ${path}`, {
        cause: err,
        details,
      });
    }
    if (code === 'EISDIR') {
      throw new BtyError('BTY_ERR_CATALOG_NOT_FOUND', `catalog not found: ${path} is a directory`, {
        cause: err,
        details,
      });
    }
    throw new BtyError(
      'BTY_ERR_CATALOG_UNREACHABLE',
      `catalog at ${path} cannot be read: ${(err as Error).message}`,
      { cause: err, details, hint: 'Check the file permissions.' },
    );
  }
}

/**
 * The path of a `file:` URL, as written (no percent-decoding, like upstream). A host other than
 * `localhost` is refused: upstream silently ignores it, so `file://./x.toml` read `/x.toml`.
 */
function fileUrlPath(source: string): string {
  const rest = source.slice(source.indexOf(':') + 1);
  let path = rest;
  if (rest.startsWith('//')) {
    const authority = authorityOf(source);
    if (authority !== '' && authority.toLowerCase() !== 'localhost') {
      throw new BtyError(
        'BTY_ERR_BAD_INPUT',
        `file:// catalog URL names a host (${reprString(authority)}): ${source}`,
        { hint: 'Write a local file as file:///absolute/path.toml or as a plain path.' },
      );
    }
    path = rest.slice(2 + authority.length);
  }
  const end = firstIndexOf(path, ['?', '#']);
  return path.slice(0, end);
}

export interface HttpBodyOptions extends RemoteFetchOptions {
  /** What messages call the source (the catalog URL, or the `oras://` ref it came from). */
  label: string;
  headers?: Record<string, string>;
}

/**
 * GET a URL over HTTP/1.1 into memory: redirects followed (at most 5), one deadline for
 * everything, the body capped at `maxBytes` (reading stops and the socket is destroyed at the
 * first byte over). An Authorization header is not forwarded to another origin, so a registry's
 * bearer token never reaches its CDN.
 */
export async function fetchHttpBody(url: string, options: HttpBodyOptions): Promise<Uint8Array> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.timeoutMs);
  const seconds = options.timeoutMs / 1000;
  try {
    const { res: response, url: current } = await openHttp(url, {
      ...(options.headers ? { credentials: options.headers } : {}),
      signal: controller.signal,
      maxRedirects: CATALOG_MAX_REDIRECTS,
    });
    const status = response.statusCode ?? 0;
    if (status < 200 || status >= 300) {
      response.resume();
      const reason = response.statusMessage ? ` ${response.statusMessage}` : '';
      throw new BtyError(
        'BTY_ERR_CATALOG_UNREACHABLE',
        `catalog fetch from ${options.label} failed: HTTP ${status}${reason}`,
        {
          details: { status, url: current },
          hint:
            status >= 400 && status < 500
              ? 'Check the catalog URL; the server does not serve it.'
              : 'The server failed; try again later.',
        },
      );
    }
    return await readCapped(response, options);
  } catch (err) {
    if (controller.signal.aborted && !(err instanceof BtyError)) {
      throw new BtyError(
        'BTY_ERR_CATALOG_UNREACHABLE',
        `catalog fetch from ${options.label} timed out after ${seconds} s`,
        { cause: err, details: { timeout_ms: options.timeoutMs } },
      );
    }
    if (err instanceof BtyError) throw err;
    throw unreachable(options.label, (err as Error).message, err);
  } finally {
    clearTimeout(timer);
  }
}

async function readCapped(
  response: IncomingMessage,
  options: HttpBodyOptions,
): Promise<Uint8Array> {
  const tooLarge = () =>
    new BtyError(
      'BTY_ERR_CATALOG_TOO_LARGE',
      `catalog response from ${options.label} exceeded ${options.maxBytes} bytes; refusing to parse`,
      { details: { max_bytes: options.maxBytes } },
    );
  const declared = Number(response.headers['content-length']);
  if (Number.isFinite(declared) && declared > options.maxBytes) {
    response.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > options.maxBytes) {
      response.destroy();
      throw tooLarge();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

function unreachable(label: string, why: string, cause?: unknown): BtyError {
  return new BtyError('BTY_ERR_CATALOG_UNREACHABLE', `catalog fetch from ${label} failed: ${why}`, {
    cause,
  });
}

/**
 * The URL scheme as Python's urlsplit sees it (lower-cased; '' for none): letters first, then
 * letters, digits, `+`, `-`, `.` up to the first `:`. So `a:b.toml` has scheme `a`, while
 * `./a:b.toml` and `dir/a:b.toml` are paths.
 */
export function urlScheme(source: string): string {
  const colon = source.indexOf(':');
  if (colon <= 0) return '';
  const candidate = source.slice(0, colon);
  return /^[A-Za-z][A-Za-z0-9+.-]*$/.test(candidate) ? candidate.toLowerCase() : '';
}

/** The `//authority` part after the scheme, or '' when there is none. */
function authorityOf(url: string): string {
  const rest = url.slice(url.indexOf(':') + 1);
  if (!rest.startsWith('//')) return '';
  const body = rest.slice(2);
  return body.slice(0, firstIndexOf(body, ['/', '?', '#']));
}
