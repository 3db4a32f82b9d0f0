/**
 * One HTTP/1.1 request, redirects followed: the transport that catalog loading and image
 * sources share. It knows nothing of bty's error catalog; each caller turns an
 * HttpTransportError into its own operator-facing error.
 *
 * - The request target is sent as written in the URL (WHATWG `URL` would resolve `..` and
 *   re-encode), unless it holds characters that cannot go on the wire unencoded.
 * - Credentials (e.g. an OCI bearer token) go only to the origin they were meant for: a
 *   redirect to a CDN or a signed URL on another host, or from https to http, drops them.
 * - Only http(s) redirect targets are followed.
 * - HTTP/1.1 only: CDNs reset long HTTP/2 streams when a signed URL expires mid-transfer.
 */
// Types only: node:http and node:https are loaded on the first request. They take about 25 ms
// to load, which every bty run would pay, including the many that never touch the network.
import type { IncomingMessage, RequestOptions } from 'node:http';
import { urlToHttpOptions } from 'node:url';
import { firstIndexOf } from '../core/refs.ts';
import { VERSION } from '../core/version.ts';

export type HttpTransportFailure = 'network' | 'timeout' | 'tls' | 'redirects' | 'redirect-scheme';

export class HttpTransportError extends Error {
  readonly kind: HttpTransportFailure;
  /** The system error code (ECONNREFUSED, DEPTH_ZERO_SELF_SIGNED_CERT, ...) when there is one. */
  readonly code: string | undefined;

  constructor(kind: HttpTransportFailure, message: string, code?: string) {
    super(message);
    this.name = 'HttpTransportError';
    this.kind = kind;
    this.code = code;
  }
}

export interface OpenHttpOptions {
  method?: 'GET' | 'HEAD';
  /** Sent on every hop (Range, If-Range, Accept, ...). */
  headers?: Record<string, string>;
  /** Sent only to `credentialsOrigin` (default: the origin of the URL first asked for). */
  credentials?: Record<string, string>;
  credentialsOrigin?: string;
  signal?: AbortSignal;
  /** Fail a request that sends nothing for this long. */
  idleTimeoutMs?: number;
  maxRedirects: number;
  /**
   * Refuse a redirect from https to http instead of following it without credentials: for
   * answers that cannot be verified afterwards (a registry manifest found by tag).
   */
  refuseDowngrade?: boolean;
}

export interface OpenedHttp {
  res: IncomingMessage;
  /** Where the redirect chain ended. */
  url: string;
}

export function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/** Follows redirects and returns the first non-redirect response (its body unread). */
export async function openHttp(url: string, options: OpenHttpOptions): Promise<OpenedHttp> {
  const credentialsOrigin = new URL(options.credentialsOrigin ?? url).origin;
  let current = url;
  for (let redirects = 0; ; redirects++) {
    const parsed = new URL(current);
    const res = await send(
      current,
      parsed,
      {
        ...(options.headers ?? {}),
        ...(parsed.origin === credentialsOrigin ? (options.credentials ?? {}) : {}),
      },
      options,
    );
    const location = res.headers.location;
    if (!isRedirect(res.statusCode ?? 0) || location === undefined) return { res, url: current };
    res.resume();
    if (redirects >= options.maxRedirects) {
      throw new HttpTransportError('redirects', `more than ${options.maxRedirects} redirects`);
    }
    const next = new URL(location, current);
    if (next.protocol !== 'http:' && next.protocol !== 'https:') {
      throw new HttpTransportError(
        'redirect-scheme',
        `redirected to an unsupported URL: ${next.href}`,
      );
    }
    if (options.refuseDowngrade && parsed.protocol === 'https:' && next.protocol === 'http:') {
      throw new HttpTransportError(
        'redirect-scheme',
        `refusing a redirect from https to plain http (${next.origin})`,
      );
    }
    current = next.href;
  }
}

async function send(
  url: string,
  parsed: URL,
  headers: Record<string, string>,
  options: OpenHttpOptions,
): Promise<IncomingMessage> {
  const requestOptions: RequestOptions = {
    ...urlToHttpOptions(parsed),
    path: requestTarget(url, parsed),
    method: options.method ?? 'GET',
    headers: { 'user-agent': `bty/${VERSION}`, 'accept-encoding': 'identity', ...headers },
    agent: false,
    ...(options.signal ? { signal: options.signal } : {}),
  };
  const { request: doRequest } =
    parsed.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise((resolve, reject) => {
    const req = doRequest(requestOptions, resolve);
    if (options.idleTimeoutMs !== undefined) {
      const seconds = options.idleTimeoutMs / 1000;
      req.setTimeout(options.idleTimeoutMs, () => {
        req.destroy(new HttpTransportError('timeout', `no answer for ${seconds} s`));
      });
    }
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof HttpTransportError || options.signal?.aborted) return reject(err);
      const code = err.code ?? '';
      const tls = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code);
      reject(new HttpTransportError(tls ? 'tls' : 'network', err.message, code || undefined));
    });
    req.end();
  });
}

/** The request target as written in the URL, else `URL`'s encoding of it. */
function requestTarget(url: string, parsed: URL): string {
  const schemeEnd = url.indexOf('//') + 2;
  const afterScheme = url.slice(schemeEnd);
  const afterAuthority = afterScheme.slice(firstIndexOf(afterScheme, ['/', '?', '#']));
  const raw = afterAuthority.slice(0, firstIndexOf(afterAuthority, ['#']));
  const target = raw.startsWith('/') ? raw : '/' + raw;
  return /^[\x21-\x7e]*$/.test(target) ? target : parsed.pathname + parsed.search;
}
