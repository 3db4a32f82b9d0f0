/**
 * One origin downloaded into one file: the transfer under a cache fill.
 *
 * - http(s) through the shared transport (redirects, credentials only to their origin, idle
 *   timeout); `oras://` resolved through the oras library on every attempt, so an expired
 *   token or signed CDN URL is replaced. The layer digest found first is frozen: a tag moved
 *   mid-download cannot change the bytes.
 * - A stream that ends short of the declared total (Content-Length, or the total of a 206's
 *   Content-Range) or breaks is retried with `Range: bytes=<have>-`, guarded by `If-Range` with
 *   the first answer's validator; a 200 answer to a ranged request restarts from zero. Without
 *   a validator and without an expected digest nothing proves the parts belong together, so the
 *   retry starts from zero.
 * - Bytes are hashed as they are written; a digest or size other than the expected one fails
 *   the transfer (the caller deletes the file and installs nothing).
 */
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { BtyError } from '../core/errors.ts';
import { HttpTransportError, openHttp } from '../net/http-client.ts';
import { resolveOras } from '../oras/resolve.ts';

export interface TransferOptions {
  /** Lower-case hex; the transfer fails when the bytes hash to anything else. */
  expectedSha256?: string | null;
  expectedSize?: number | null;
  signal?: AbortSignal;
  /** Consecutive attempts that bring no new byte before giving up (default 5). */
  maxAttempts?: number;
  /** First pause between attempts, doubled each time up to 5 s (default 250 ms). */
  retryDelayMs?: number;
  /** A connection that sends nothing for this long is retried (default 30 s). */
  idleTimeoutMs?: number;
}

/** What a transfer tells its fill as it goes (a hook that throws fails the transfer). */
export interface TransferHooks {
  /** The size became known (from the expected size or the first answer). */
  onSize?(total: number, contentType: string | null): void;
  /** `bytesDone` bytes are in the file. */
  onData?(bytesDone: number): void;
  /** The file was emptied: the server answered a resume with the whole object. */
  onRestart?(): void;
}

export interface TransferResult {
  /** `sha256:<hex>` */
  digest: string;
  size: number;
  contentType: string | null;
}

/** Accepts `<hex>` or `sha256:<hex>`; returns lower-case hex. */
export function normaliseSha256(text: string): string {
  const hex = text
    .trim()
    .replace(/^sha256:/i, '')
    .toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new BtyError('BTY_ERR_SHA256_INVALID', `not a sha256: '${text}'`);
  }
  return hex;
}

/** Why an attempt stopped early in a way another attempt may fix. */
class RetryableError extends Error {}

const HARD_ATTEMPT_CAP = 100;
const MAX_REDIRECTS = 10;
const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

interface AttemptTarget {
  url: string;
  credentials: Record<string, string>;
}

export async function transfer(
  origin: string,
  file: string,
  options: TransferOptions = {},
  hooks: TransferHooks = {},
): Promise<TransferResult> {
  const lowered = origin.toLowerCase();
  const isOras = lowered.startsWith('oras://');
  if (!isOras && !lowered.startsWith('http://') && !lowered.startsWith('https://')) {
    throw new BtyError(
      'BTY_ERR_SOURCE_SCHEME',
      `the cache fetches http(s):// and oras:// origins only, not '${origin}'`,
      { hint: 'Images under file:// are on the server already: they need no cache.' },
    );
  }
  const signal = options.signal;
  const maxAttempts = options.maxAttempts ?? 5;
  const idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
  let expectedSha256 = options.expectedSha256 ? normaliseSha256(options.expectedSha256) : null;
  let expectedSize = options.expectedSize ?? null;

  let frozenDigest: string | null = null;
  const target = async (): Promise<AttemptTarget> => {
    if (!isOras) return { url: origin, credentials: {} };
    const resolved = await resolveOras(origin, { timeoutMs: idleTimeoutMs });
    if (frozenDigest === null) {
      frozenDigest = resolved.digest;
      const layerHex = resolved.digest.slice('sha256:'.length);
      if (expectedSha256 !== null && expectedSha256 !== layerHex) {
        throw new BtyError(
          'BTY_ERR_INTEGRITY',
          `${origin} now resolves to layer ${resolved.digest}, not the expected sha256:${expectedSha256}`,
        );
      }
      expectedSha256 = layerHex;
      if (expectedSize === null && resolved.size !== null) expectedSize = resolved.size;
    }
    return {
      url: resolved.client.url('blobs', frozenDigest),
      credentials: await resolved.client.credentials(),
    };
  };

  const fh = await open(file, 'w+');
  try {
    let hash = createHash('sha256');
    let have = 0;
    let total: number | null = null;
    let contentType: string | null = null;
    let validator: string | null = null;
    let failures = 0;
    let sizeAnnounced = false;
    const announceSize = (size: number): void => {
      if (sizeAnnounced) return;
      sizeAnnounced = true;
      hooks.onSize?.(size, contentType);
    };
    if (expectedSize !== null && !isOras) announceSize(expectedSize);
    const restart = async (): Promise<void> => {
      await fh.truncate(0);
      hash = createHash('sha256');
      sizeAnnounced = false;
      have = 0;
      hooks.onRestart?.();
    };

    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      const before = have;
      try {
        const { url, credentials } = await target();
        if (expectedSize !== null) announceSize(expectedSize);
        const resumable = validator !== null || expectedSha256 !== null;
        if (have > 0 && !resumable) await restart();
        const headers: Record<string, string> = {};
        if (have > 0) {
          headers.range = `bytes=${have}-`;
          if (validator !== null) headers['if-range'] = validator;
        }
        const { res } = await openHttp(url, {
          headers,
          credentials,
          maxRedirects: MAX_REDIRECTS,
          idleTimeoutMs,
          ...(signal ? { signal } : {}),
        });
        const status = res.statusCode ?? 0;
        if (status === 416 && have > 0 && total !== null && have === total) {
          res.resume();
        } else {
          const answer = readAnswer(origin, res, have);
          if (answer.restart) {
            await restart();
            total = null;
          }
          if (answer.total !== null) {
            if (total !== null && total !== answer.total) {
              res.resume();
              throw new BtyError(
                'BTY_ERR_SOURCE_CHANGED',
                `${origin} changed size during the download (${total} then ${answer.total} bytes)`,
              );
            }
            total = answer.total;
          }
          if (expectedSize !== null && total !== null && total !== expectedSize) {
            res.resume();
            throw new BtyError(
              'BTY_ERR_INTEGRITY',
              `${origin} is ${total} bytes, not the expected ${expectedSize}`,
            );
          }
          if (have === 0) {
            contentType = headerText(res.headers['content-type']);
            validator = strongValidator(res);
          }
          if (total !== null) announceSize(total);
          await drain(res, fh, have, total, (chunk, end) => {
            hash.update(chunk);
            have = end;
            hooks.onData?.(end);
          });
          if (total !== null && have < total) {
            throw new RetryableError(`the connection ended at byte ${have} of ${total}`);
          }
        }
        if (total === null) total = have;
        if (expectedSize !== null && have !== expectedSize) {
          throw new BtyError(
            'BTY_ERR_INTEGRITY',
            `${origin} is ${have} bytes, not the expected ${expectedSize}`,
          );
        }
        announceSize(have);
        await fh.datasync();
        const hex = hash.digest('hex');
        if (expectedSha256 !== null && hex !== expectedSha256) {
          throw new BtyError(
            'BTY_ERR_INTEGRITY',
            `${origin} hashes to sha256:${hex}, not the expected sha256:${expectedSha256}`,
            { hint: 'The upstream serves other bytes than the catalog names: nothing was cached.' },
          );
        }
        return { digest: `sha256:${hex}`, size: have, contentType };
      } catch (err) {
        if (signal?.aborted) throw cancelled(origin);
        if (!isRetryable(err)) throw err;
        failures = have > before ? 1 : failures + 1;
        if (failures >= maxAttempts || attempt >= HARD_ATTEMPT_CAP) {
          throw new BtyError(
            'BTY_ERR_RESUME_EXHAUSTED',
            `downloading ${origin} failed after ${attempt} attempts: ${(err as Error).message}`,
            { cause: err, hint: 'Check the network or the server, then download again.' },
          );
        }
        const delay = Math.min((options.retryDelayMs ?? 250) * 2 ** (failures - 1), 5000);
        try {
          await sleep(delay, undefined, signal ? { signal } : {});
        } catch {
          throw cancelled(origin);
        }
      }
    }
  } finally {
    await fh.close();
  }
}

/** Checks the status of an answer; says whether it restarts from zero and what total it gives. */
function readAnswer(
  origin: string,
  res: IncomingMessage,
  have: number,
): { restart: boolean; total: number | null } {
  const status = res.statusCode ?? 0;
  if (status === 200) {
    return { restart: have > 0, total: contentLength(res) };
  }
  if (status === 206 && have > 0) {
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(headerText(res.headers['content-range']) ?? '');
    if (!range || Number(range[1]) !== have) {
      res.resume();
      throw new RetryableError(`the server answered a resume at ${have} with another range`);
    }
    return { restart: false, total: Number(range[3]) };
  }
  res.resume();
  if (status >= 500 || status === 408 || status === 429 || status === 416) {
    throw new RetryableError(`HTTP ${status} from ${origin}`);
  }
  throw new BtyError('BTY_ERR_HTTP_STATUS', `${origin} answered HTTP ${status}`);
}

/**
 * Appends the body to the file from `have`, reporting each chunk once it is on disk (so a
 * connection that breaks midway still counts what arrived).
 */
async function drain(
  res: IncomingMessage,
  fh: FileHandle,
  have: number,
  total: number | null,
  written: (chunk: Buffer, end: number) => void,
): Promise<void> {
  let position = have;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    if (total !== null && position + chunk.length > total) {
      res.destroy();
      throw new BtyError('BTY_ERR_SOURCE_CHANGED', `the server sent more than ${total} bytes`);
    }
    let offset = 0;
    while (offset < chunk.length) {
      const { bytesWritten } = await fh.write(chunk, offset, chunk.length - offset, position);
      offset += bytesWritten;
      position += bytesWritten;
    }
    written(chunk, position);
  }
}

function isRetryable(err: unknown): boolean {
  if (err instanceof RetryableError) return true;
  if (err instanceof HttpTransportError) return err.kind === 'network' || err.kind === 'timeout';
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (code !== undefined && RETRYABLE_CODES.has(code)) return true;
  return err instanceof Error && err.message === 'aborted';
}

function cancelled(origin: string): BtyError {
  return new BtyError('BTY_ERR_CANCELLED', `download of ${origin} cancelled`, {
    hint: 'Nothing was cached; start the download again when needed.',
  });
}

function contentLength(res: IncomingMessage): number | null {
  const text = headerText(res.headers['content-length']);
  if (text === null || !/^\d+$/.test(text)) return null;
  return Number(text);
}

function headerText(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

/** A strong ETag, else Last-Modified: what If-Range may carry. */
function strongValidator(res: IncomingMessage): string | null {
  const etag = headerText(res.headers.etag);
  if (etag && !etag.startsWith('W/')) return etag;
  return headerText(res.headers['last-modified']);
}
