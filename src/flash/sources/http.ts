/**
 * An image over HTTP(S), read as one forward stream that survives broken connections.
 *
 * On a cut the stream continues with `Range: bytes=N-` guarded by `If-Range`, so the bytes after
 * N come from the same object or not at all: a `200` to a ranged request, a different ETag, or a
 * different total size fails the flash instead of splicing two objects together. The caller's
 * decompressor and hash see one uninterrupted byte sequence, so nothing is written twice and the
 * digest covers every byte (upstream bty failed the flash here; `curl --retry` into dd once
 * re-wrote bytes and corrupted disks).
 *
 * HTTP/1.1 only: CDNs reset long HTTP/2 streams when a signed URL expires mid-transfer.
 */
import type http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { BtyError, ERRORS, type ErrorCode } from '../../core/errors.ts';
import { basenameOf } from '../../core/formats.ts';
import { HttpTransportError, openHttp } from '../../net/http-client.ts';
import type { ImageSource } from './source.ts';

export interface HttpSourceOptions {
  /** Give up when a request sends nothing for this long (then resume). Default 30 s. */
  idleTimeoutMs?: number;
  /** Consecutive failed attempts (no byte gained) before giving up. Default 6. */
  maxRetries?: number;
  /** First retry delay; doubles per consecutive failure up to `maxBackoffMs`. Default 250 ms. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Extra request headers (e.g. an OCI bearer token), sent to the URL's origin only. */
  headers?: Record<string, string>;
  /**
   * New credentials when the URL's own origin answers 401 (an expired registry token): the
   * request is retried once with them.
   */
  refreshHeaders?: () => Promise<Record<string, string>>;
  /** Whether an expected digest will verify the bytes (allows resuming without validators). */
  digestKnown?: boolean;
  /**
   * The URL names its content (an OCI blob by digest): validators are not compared and If-Range
   * is not sent. A registry and the CDN it redirects to each send their own ETag for the same
   * bytes; the digest checked on the wire is what guarantees them.
   */
  contentAddressed?: boolean;
  /** The size the object must have (an OCI descriptor's): another size, or more bytes, fail. */
  expectedSize?: number | null;
  /** Refuse https → http redirects (see openHttp). */
  refuseDowngrade?: boolean;
  /** Called after each resume with the offset it continued from. */
  onResume?: (offset: number, reason: string) => void;
  /** Cancels the metadata requests (probe, head); the stream takes its own signal. */
  signal?: AbortSignal;
}

const MAX_REDIRECTS = 10;

interface Validators {
  etag: string | null;
  lastModified: string | null;
}

interface OpenResponse {
  res: http.IncomingMessage;
  url: string;
}

function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

function header(res: http.IncomingMessage, name: string): string | null {
  const v = res.headers[name];
  if (Array.isArray(v)) return v[0] ?? null;
  return v ?? null;
}

/** The most of an error body read to quote the server's own words. */
const SERVER_DETAIL_MAX_BYTES = 4096;

/**
 * An error a bty server names (`X-Bty-Error: BTY_ERR_…` on a 4xx/5xx, with `{"detail": …}` and
 * the same words in `X-Bty-Detail` for HEAD):
 * bty-web's artifact cache says so when the origin's bytes failed the catalog's sha256, so the
 * agent reports an integrity failure (exit 4) instead of retrying a download that cannot
 * succeed. Null for any other answer; the body is consumed only when the header is there.
 */
async function serverReportedError(
  res: http.IncomingMessage,
  display: string,
): Promise<BtyError | null> {
  const status = res.statusCode ?? 0;
  const code = header(res, 'x-bty-error');
  if (status < 400 || !code || !Object.hasOwn(ERRORS, code)) return null;
  let text = '';
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      text += chunk.toString('utf8');
      if (text.length >= SERVER_DETAIL_MAX_BYTES) break;
    }
  } catch {
    // The words are a courtesy: the code alone is the error.
  } finally {
    res.destroy();
  }
  // The words: the JSON body's `detail`, else (a HEAD has no body) the X-Bty-Detail header.
  let detail = header(res, 'x-bty-detail') ?? '';
  try {
    const parsed = JSON.parse(text) as { detail?: unknown };
    if (typeof parsed.detail === 'string') detail = parsed.detail;
  } catch {
    // Not JSON: keep the header's words.
  }
  return new BtyError(
    code as ErrorCode,
    `${display}: the server answered HTTP ${status}: ${detail || code}`,
    { details: { status, url: display, server_error: code } },
  );
}

/** Parses `bytes a-b/total`; null when malformed. Total may be `*` (unknown → null). */
function parseContentRange(
  v: string | null,
): { start: number; end: number; total: number | null } | null {
  if (!v) return null;
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/i.exec(v.trim());
  if (!m) return null;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? null : Number(m[3]) };
}

function parseLength(v: string | null): number | null {
  if (v === null || !/^\d+$/.test(v.trim())) return null;
  return Number(v.trim());
}

class RetryableError extends Error {}

const SECRET_PARAM = /sig|signature|token|key|credential|auth|password|secret/i;

/**
 * The URL as it may be shown and logged: no user:password, and the values of query parameters
 * that look like signatures or tokens (pre-signed CDN URLs) replaced.
 */
export function redactUrl(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*@)?([^?#]*)(\?[^#]*)?(#.*)?$/i.exec(url);
  if (!m) return url;
  const query = m[4]
    ? '?' +
      m[4]
        .slice(1)
        .split('&')
        .map((kv) => {
          const eq = kv.indexOf('=');
          return eq > 0 && SECRET_PARAM.test(kv.slice(0, eq))
            ? `${kv.slice(0, eq)}=<redacted>`
            : kv;
        })
        .join('&')
    : '';
  return `${m[1]}${m[3]}${query}${m[5] ?? ''}`;
}

export class HttpSource implements ImageSource {
  readonly kind = 'http';
  readonly localPath = null;
  readonly display: string;
  readonly name: string;
  private readonly url: string;
  private readonly opts: Required<
    Omit<HttpSourceOptions, 'onResume' | 'headers' | 'signal' | 'refreshHeaders' | 'expectedSize'>
  > &
    Pick<HttpSourceOptions, 'onResume' | 'refreshHeaders'> & {
      signal: AbortSignal;
      expectedSize: number | null;
    };
  private headers: Record<string, string> | undefined;
  /**
   * Where requests go: the URL the last redirect chain ended at. Sticking to it keeps a mirror
   * redirector from sending the probe and the download (or a resume) to different mirrors;
   * an expired signed URL sends us back to the original.
   */
  private currentUrl: string;
  private _size: number | null = null;
  private validators: Validators = { etag: null, lastModified: null };
  private _resumes = 0;

  private constructor(url: string, options: HttpSourceOptions) {
    this.url = url;
    this.currentUrl = url;
    this.display = redactUrl(url);
    const path = url.replace(/^[a-z]+:\/\/[^/]*/i, '').replace(/[?#].*$/, '');
    this.name = basenameOf(path) || 'image';
    this.opts = {
      idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
      maxRetries: options.maxRetries ?? 6,
      backoffMs: options.backoffMs ?? 250,
      maxBackoffMs: options.maxBackoffMs ?? 8_000,
      digestKnown: options.digestKnown ?? false,
      onResume: options.onResume,
      refreshHeaders: options.refreshHeaders,
      contentAddressed: options.contentAddressed ?? false,
      expectedSize: options.expectedSize ?? null,
      refuseDowngrade: options.refuseDowngrade ?? false,
      signal: options.signal ?? new AbortController().signal,
    };
    this.headers = options.headers;
  }

  get size(): number | null {
    return this._size;
  }

  get resumes(): number {
    return this._resumes;
  }

  /** Checks that the URL answers and learns its size and validators. */
  static async probe(url: string, options: HttpSourceOptions = {}): Promise<HttpSource> {
    const source = new HttpSource(url, options);
    await source.unreachableAsError(() => source.probeHeaders());
    return source;
  }

  /**
   * Runs a metadata request with a few quick retries for transient failures (connection
   * refused, 5xx), then reports what is still failing as "not reachable".
   */
  private async unreachableAsError<T>(work: () => Promise<T>): Promise<T> {
    const attempts = 3;
    for (let i = 1; ; i++) {
      try {
        return await work();
      } catch (err) {
        if (!(err instanceof RetryableError)) throw err;
        if (i >= attempts) {
          throw new BtyError(
            'BTY_ERR_SOURCE_UNREACHABLE',
            `image URL not reachable: ${this.display} (${err.message})`,
          );
        }
        await sleep(Math.min(this.opts.backoffMs * 2 ** (i - 1), this.opts.maxBackoffMs));
      }
    }
  }

  private async probeHeaders(): Promise<void> {
    // Timeouts come from the per-request idle timer (retryable); the signal is the operator's.
    const signal = this.opts.signal;
    let { res } = await this.request('HEAD', {}, signal);
    res.resume();
    if (res.statusCode === 405 || res.statusCode === 501 || res.statusCode === 403) {
      // Some servers (and signed CDN URLs) refuse HEAD: ask for one byte instead.
      ({ res } = await this.request('GET', { range: 'bytes=0-0' }, signal));
      res.destroy();
    }
    const status = res.statusCode ?? 0;
    if (isRetryableStatus(status)) throw new RetryableError(`HTTP ${status}`);
    if (status >= 400) throw this.statusError(status);
    this.validators = this.validatorsOf(res);
    if (status === 206) {
      this._size = parseContentRange(header(res, 'content-range'))?.total ?? null;
    } else {
      this._size = parseLength(header(res, 'content-length'));
    }
    const expected = this.opts.expectedSize;
    if (expected !== null) {
      if (this._size !== null && this._size !== expected) throw this.sizeError(this._size);
      this._size = expected;
    }
  }

  private sizeError(got: number): BtyError {
    return new BtyError(
      'BTY_ERR_INTEGRITY',
      `${this.display} is ${got} bytes, but its descriptor says ${this.opts.expectedSize}; ` +
        'nothing was written from it',
      { details: { expected: this.opts.expectedSize, got } },
    );
  }

  private validatorsOf(res: http.IncomingMessage): Validators {
    return { etag: header(res, 'etag'), lastModified: header(res, 'last-modified') };
  }

  private statusError(status: number): BtyError {
    return new BtyError(
      'BTY_ERR_HTTP_STATUS',
      `image URL answered HTTP ${status}: ${this.display}`,
      {
        details: { status, url: this.display },
        ...(status === 404 ? { hint: 'Check the URL: the server has no such file.' } : {}),
      },
    );
  }

  readHead(n: number): Promise<Buffer> {
    return this.unreachableAsError(() => this.readHeadOnce(n));
  }

  private async readHeadOnce(n: number): Promise<Buffer> {
    if (n <= 0) return Buffer.alloc(0);
    const signal = this.opts.signal;
    const { res } = await this.request('GET', { range: `bytes=0-${n - 1}` }, signal);
    const status = res.statusCode ?? 0;
    if (status >= 400) {
      res.destroy();
      throw isRetryableStatus(status)
        ? new RetryableError(`HTTP ${status}`)
        : this.statusError(status);
    }
    const parts: Buffer[] = [];
    let got = 0;
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        parts.push(chunk);
        got += chunk.length;
        if (got >= n) break; // a server ignoring Range sends everything: stop early
      }
    } catch (err) {
      throw new RetryableError((err as NodeJS.ErrnoException).code ?? (err as Error).message);
    } finally {
      res.destroy();
    }
    return Buffer.concat(parts).subarray(0, n);
  }

  /**
   * Issues one request at the current URL, following redirects. When a remembered redirect
   * target refuses (expired signature, mirror gone), starts over from the original URL once.
   */
  private async request(
    method: 'GET' | 'HEAD',
    extra: { range?: string; ifRange?: string },
    signal: AbortSignal,
  ): Promise<OpenResponse> {
    let opened = await this.follow(this.currentUrl, method, extra, signal);
    const status = opened.res.statusCode ?? 0;
    // A redirect target that refuses (an expired signed URL: 401, 403, 404, 410, or 400 from
    // some object stores) sends us back to the original URL for a fresh one.
    if (this.currentUrl !== this.url && status >= 400 && status < 500 && status !== 416) {
      opened.res.resume();
      opened = await this.follow(this.url, method, extra, signal);
    }
    if (opened.res.statusCode === 401 && opened.url === this.url && this.opts.refreshHeaders) {
      // The credentials themselves expired (a registry token lives minutes): get new ones.
      opened.res.resume();
      try {
        this.headers = await this.opts.refreshHeaders();
      } catch (err) {
        // The token service may be down for a moment: retry like a broken connection.
        if (err instanceof BtyError && err.code === 'BTY_ERR_SOURCE_UNREACHABLE') {
          throw new RetryableError(err.message);
        }
        throw err;
      }
      opened = await this.follow(this.url, method, extra, signal);
    }
    this.currentUrl = opened.url;
    const reported = await serverReportedError(opened.res, this.display);
    if (reported) throw reported;
    return opened;
  }

  private async follow(
    start: string,
    method: 'GET' | 'HEAD',
    extra: { range?: string; ifRange?: string },
    signal: AbortSignal,
  ): Promise<OpenResponse> {
    const headers: Record<string, string> = { accept: '*/*' };
    if (extra.range) headers.range = extra.range;
    if (extra.ifRange) headers['if-range'] = extra.ifRange;
    try {
      return await openHttp(start, {
        method,
        headers,
        ...(this.headers ? { credentials: this.headers } : {}),
        credentialsOrigin: this.url,
        signal,
        idleTimeoutMs: this.opts.idleTimeoutMs,
        maxRedirects: MAX_REDIRECTS,
        refuseDowngrade: this.opts.refuseDowngrade,
      });
    } catch (err) {
      if (!(err instanceof HttpTransportError)) throw err;
      if (err.kind === 'network' || err.kind === 'timeout') {
        throw new RetryableError(err.code ?? err.message);
      }
      if (err.kind === 'tls') {
        // Retrying cannot fix an untrusted certificate: say so at once.
        throw new BtyError(
          'BTY_ERR_SOURCE_UNREACHABLE',
          `the TLS certificate of ${new URL(start).host} is not trusted (${err.code}): ${err.message}`,
          {
            hint:
              'Install the CA that signed it (system store, or NODE_EXTRA_CA_CERTS=ca.pem), ' +
              'or use a correctly signed URL.',
          },
        );
      }
      throw new BtyError('BTY_ERR_SOURCE_UNREACHABLE', `${this.display}: ${err.message}`);
    }
  }

  /**
   * The If-Range value: a strong ETag, else Last-Modified. Weak ETags cannot guard a range
   * (RFC 9110 §13.1.5), so they do not count.
   */
  private ifRangeValue(): string | null {
    if (this.opts.contentAddressed) return null;
    const { etag, lastModified } = this.validators;
    if (etag && !etag.startsWith('W/')) return etag;
    return lastModified;
  }

  async *stream(signal: AbortSignal): AsyncGenerator<Buffer> {
    let offset = 0;
    let failures = 0;
    let first = true;
    for (;;) {
      signal.throwIfAborted();
      let gained = 0;
      try {
        for await (const chunk of this.attempt(offset, first, signal)) {
          first = false;
          offset += chunk.length;
          gained += chunk.length;
          yield chunk;
        }
        return;
      } catch (err) {
        if (!(err instanceof RetryableError) || signal.aborted) throw err;
        first = false;
        if (gained > 0) failures = 0;
        failures++;
        if (failures > this.opts.maxRetries) {
          throw new BtyError(
            'BTY_ERR_RESUME_EXHAUSTED',
            `download of ${this.display} failed ${failures} times in a row at byte ${offset}: ${err.message}`,
            { details: { offset, resumes: this._resumes } },
          );
        }
        if (offset > 0 && this.ifRangeValue() === null && !this.opts.digestKnown) {
          throw new BtyError(
            'BTY_ERR_RESUME_UNSAFE',
            `download of ${this.display} broke at byte ${offset} (${err.message}) and the server ` +
              'sends no ETag or Last-Modified, so resuming could splice two different files',
          );
        }
        const delay = Math.min(this.opts.backoffMs * 2 ** (failures - 1), this.opts.maxBackoffMs);
        await sleep(delay, undefined, { signal });
        if (offset > 0) {
          this._resumes++;
          this.opts.onResume?.(offset, err.message);
        }
      }
    }
  }

  /** One GET from `offset`; yields body chunks; throws RetryableError on a recoverable break. */
  private async *attempt(
    offset: number,
    first: boolean,
    signal: AbortSignal,
  ): AsyncGenerator<Buffer> {
    const extra: { range?: string; ifRange?: string } = {};
    if (offset > 0) {
      extra.range = `bytes=${offset}-`;
      const guard = this.ifRangeValue();
      if (guard) extra.ifRange = guard;
    }
    const { res } = await this.request('GET', extra, signal);
    try {
      const status = res.statusCode ?? 0;
      if (status >= 400 && !(offset > 0 && status === 416)) {
        if (isRetryableStatus(status)) throw new RetryableError(`HTTP ${status}`);
        throw this.statusError(status);
      }
      if (offset === 0) {
        // Anything but 200 here (204, a redirect without Location, ...) is not the image.
        if (status !== 200) throw this.statusError(status);
        this.checkSameObject(res, null);
        if (first || this._size === null) {
          this._size = parseLength(header(res, 'content-length')) ?? this._size;
        }
      } else {
        this.checkResumeAnswer(res, offset);
        if (status === 416) return; // everything had arrived; only the close was lost
      }
      let got = offset;
      const limit = this.opts.expectedSize;
      for await (const chunk of res as AsyncIterable<Buffer>) {
        got += chunk.length;
        if (limit !== null && got > limit) throw this.sizeError(got);
        yield chunk;
      }
      if (this._size !== null && got < this._size) {
        throw new RetryableError(`connection closed at byte ${got} of ${this._size}`);
      }
    } catch (err) {
      if (err instanceof BtyError || err instanceof RetryableError || signal.aborted) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      throw new RetryableError(code ?? (err as Error).message);
    } finally {
      res.destroy();
    }
  }

  /** Fails when the response's validators or size differ from the object we started with. */
  private checkSameObject(res: http.IncomingMessage, total: number | null): void {
    const now = this.validatorsOf(res);
    // Content-addressed: only the size is compared; the digest covers the rest.
    const before = this.opts.contentAddressed
      ? { etag: null, lastModified: null }
      : this.validators;
    const etagChanged = before.etag !== null && now.etag !== null && before.etag !== now.etag;
    const lmChanged =
      before.lastModified !== null &&
      now.lastModified !== null &&
      before.lastModified !== now.lastModified;
    const size = total ?? parseLength(header(res, 'content-length'));
    const sizeChanged = this._size !== null && size !== null && size !== this._size;
    if (etagChanged || lmChanged || sizeChanged) {
      throw new BtyError(
        'BTY_ERR_SOURCE_CHANGED',
        `the image at ${this.display} changed while it was being read` +
          (etagChanged ? ` (ETag ${before.etag} became ${now.etag})` : '') +
          (lmChanged ? ` (Last-Modified ${before.lastModified} became ${now.lastModified})` : '') +
          (sizeChanged ? ` (size ${this._size} became ${size})` : ''),
      );
    }
    if (!this.opts.contentAddressed && before.etag === null && before.lastModified === null) {
      this.validators = now;
    }
  }

  private checkResumeAnswer(res: http.IncomingMessage, offset: number): void {
    const status = res.statusCode ?? 0;
    if (status === 200) {
      const now = this.validatorsOf(res);
      const changed =
        !this.opts.contentAddressed &&
        ((this.validators.etag !== null && now.etag !== this.validators.etag) ||
          (this.validators.lastModified !== null &&
            now.lastModified !== this.validators.lastModified));
      throw new BtyError(
        'BTY_ERR_SOURCE_CHANGED',
        changed
          ? `the image at ${this.display} changed on the server after ${offset} bytes had been written`
          : `the server sent all of ${this.display} again instead of resuming at byte ${offset} ` +
              '(it ignores Range requests), so the download cannot continue safely',
        { details: { offset } },
      );
    }
    if (status === 416) {
      if (this._size !== null && offset >= this._size) return;
      throw new BtyError(
        'BTY_ERR_SOURCE_CHANGED',
        `the server refused to resume ${this.display} at byte ${offset} (HTTP 416): the file shrank or changed`,
      );
    }
    if (status !== 206) {
      throw new BtyError(
        'BTY_ERR_HTTP_STATUS',
        `unexpected HTTP ${status} resuming ${this.display}`,
      );
    }
    const range = parseContentRange(header(res, 'content-range'));
    if (!range || range.start !== offset) {
      throw new BtyError(
        'BTY_ERR_SOURCE_CHANGED',
        `the server resumed ${this.display} at the wrong place (asked byte ${offset}, got ` +
          `"${header(res, 'content-range') ?? 'no Content-Range'}")`,
      );
    }
    this.checkSameObject(res, range.total);
  }
}
