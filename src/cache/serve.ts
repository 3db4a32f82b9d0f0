/**
 * Serving cache entries over node:http: GET and HEAD with `Content-Length` always (iPXE and
 * other small clients misbehave without it), `ETag` (the digest), a single `Range` (206, 416,
 * suffix ranges, `If-Range`), and the stored content type.
 *
 * A stored entry is streamed from its file with large reads. A fill in progress is read as its
 * file grows; the last `WITHHELD_BYTES` wait until the bytes are verified and installed, and a
 * fill that fails (digest mismatch, upstream gone, cancel) destroys the response, so a client
 * sees a truncated body and an error, never a complete file with the wrong content.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BtyError } from '../core/errors.ts';
import type { Fill, ServeTarget } from './manager.ts';
import { DEFAULT_CONTENT_TYPE, type CacheEntry } from './store.ts';

/** The tail of a fill held back until its digest is verified. */
export const WITHHELD_BYTES = 1024 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;

export type ByteRange = { start: number; end: number };

/**
 * The range a `Range` header asks of `size` bytes: a range, 'unsatisfiable', or null to send the
 * whole body (no header, several ranges, or a syntax this server ignores, as RFC 9110 allows).
 */
export function parseRange(
  header: string | undefined,
  size: number,
): ByteRange | 'unsatisfiable' | null {
  if (header === undefined) return null;
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!match) return null;
  const [, first, last] = match as unknown as [string, string, string];
  if (first === '' && last === '') return null;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (last !== '' && Number(last) < start) return null;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

/** `"sha256:<hex>"`: the strong ETag of an entry. */
export function entryEtag(entry: Pick<CacheEntry, 'digest'>): string {
  return `"${entry.digest}"`;
}

/** Answers a GET or HEAD for `target`; resolves once the response is over (sent or aborted). */
export async function serveArtifact(
  req: IncomingMessage,
  res: ServerResponse,
  target: ServeTarget,
): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-length': 0 });
    res.end();
    return;
  }
  if (target.kind === 'entry') return serveEntry(req, res, target.entry, target.file);
  return serveFill(req, res, target.fill);
}

interface Plan {
  status: 200 | 206 | 416;
  range: ByteRange;
  headers: Record<string, string | number>;
}

/** Types a browser would render or run (pages, scripts, images with script, styles). */
function renderable(contentType: string): boolean {
  return /^\s*(text\/|application\/(.*\+)?(xml|xhtml|javascript|ecmascript|json|pdf)|image\/svg)/i.test(
    contentType,
  );
}

/** Status and headers for a body of `size` bytes (etag null: If-Range never matches). */
function plan(req: IncomingMessage, size: number, etag: string | null, contentType: string): Plan {
  const headers: Record<string, string | number> = {
    'accept-ranges': 'bytes',
    // Disk images, whatever type an upstream claimed: the cache may share an origin with an
    // operator console (bty-web), where an upstream's text/html must never render or run.
    'content-type': renderable(contentType) ? DEFAULT_CONTENT_TYPE : contentType,
    'x-content-type-options': 'nosniff',
    'content-security-policy': 'sandbox',
  };
  if (etag) headers.etag = etag;
  const full = { start: 0, end: size - 1 };
  const ifRange = req.headers['if-range'];
  const rangeApplies =
    req.method === 'GET' && (ifRange === undefined || (etag !== null && ifRange === etag));
  const range = rangeApplies ? parseRange(req.headers.range, size) : null;
  if (range === 'unsatisfiable') {
    headers['content-range'] = `bytes */${size}`;
    headers['content-length'] = 0;
    return { status: 416, range: { start: 0, end: -1 }, headers };
  }
  if (range === null) {
    headers['content-length'] = size;
    return { status: 200, range: full, headers };
  }
  headers['content-range'] = `bytes ${range.start}-${range.end}/${size}`;
  headers['content-length'] = range.end - range.start + 1;
  return { status: 206, range, headers };
}

async function serveEntry(
  req: IncomingMessage,
  res: ServerResponse,
  entry: CacheEntry,
  file: string,
): Promise<void> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    // Removed under us (eviction, another process): the entry is gone, say so.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('not cached\n');
    return;
  }
  const { status, range, headers } = plan(req, entry.size, entryEtag(entry), entry.content_type);
  headers['x-withcache-sha256'] = entry.digest.slice('sha256:'.length);
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || status === 416 || range.end < range.start) {
    await fh.close();
    res.end();
    return;
  }
  try {
    await sendRange(fh, res, range);
  } finally {
    await fh.close();
  }
}

/** Buffers one response reads its file into, each reused once the socket has taken its bytes. */
const SEND_BUFFERS = 4;

/**
 * Sends `range` of an open file through a few buffers reused for the whole response. A new
 * buffer per chunk, as a file ReadStream allocates, costs page faults on every fresh buffer and
 * a garbage collection every few dozen MiB of external memory: with 8 clients that was twice the
 * server's CPU per GiB and half the throughput (docs/performance.md, image serving).
 */
async function sendRange(fh: FileHandle, res: ServerResponse, range: ByteRange): Promise<void> {
  // No more (or larger) buffers than the range needs: a one-byte range costs one byte.
  const length = range.end - range.start + 1;
  const count = Math.min(SEND_BUFFERS, Math.ceil(length / READ_CHUNK_BYTES));
  const free = Array.from({ length: count }, () =>
    Buffer.allocUnsafeSlow(Math.min(READ_CHUNK_BYTES, length)),
  );
  let wake: (() => void) | null = null;
  // A client that left while the headers were being prepared never sends 'close' again.
  let gone = res.destroyed || res.writableEnded;
  const onClose = (): void => {
    gone = true;
    wake?.();
  };
  res.once('close', onClose);
  try {
    let position = range.start;
    while (position <= range.end && !gone) {
      const buffer = free.pop();
      if (buffer === undefined) {
        await new Promise<void>((done) => (wake = done));
        wake = null;
        continue;
      }
      const want = Math.min(buffer.length, range.end + 1 - position);
      const { bytesRead } = await fh.read(buffer, 0, want, position);
      if (bytesRead === 0) {
        throw new BtyError('BTY_ERR_INTERNAL', 'the cached file is shorter than its entry');
      }
      position += bytesRead;
      // The callback runs once the kernel has the bytes: only then may the buffer be refilled.
      // An error there means the client is gone: stop reading the rest of the file.
      res.write(buffer.subarray(0, bytesRead), (err) => {
        if (err) gone = true;
        free.push(buffer);
        wake?.();
      });
    }
    if (!gone) res.end();
  } catch (err) {
    // Headers are out: cutting the body short is the only way left to say it is wrong.
    res.destroy(err instanceof Error ? err : new Error(String(err)));
  } finally {
    res.off('close', onClose);
  }
}

async function serveFill(req: IncomingMessage, res: ServerResponse, fill: Fill): Promise<void> {
  let size: number;
  try {
    size = await fill.sized();
  } catch (err) {
    fail(res, err);
    return;
  }
  if (fill.entry && fill.entryFile) return serveEntry(req, res, fill.entry, fill.entryFile);
  const { status, range, headers } = plan(
    req,
    size,
    null,
    fill.contentType || DEFAULT_CONTENT_TYPE,
  );
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || status === 416 || range.end < range.start) {
    res.end();
    return;
  }
  await tailFill(res, fill, size, range);
}

/** Streams `range` of a growing fill, waiting for bytes, withholding the unverified tail. */
async function tailFill(
  res: ServerResponse,
  fill: Fill,
  size: number,
  range: ByteRange,
): Promise<void> {
  // A client that left while the fill was sized never sends 'close' again.
  let clientGone = res.destroyed || res.writableEnded;
  const onClose = (): void => {
    clientGone = true;
    fill.notify();
  };
  res.once('close', onClose);
  let fh: FileHandle | null = null;
  let openedFile: string | null = null;
  const generation = fill.generation;
  let position = range.start;
  const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  try {
    while (position <= range.end && !clientGone) {
      if (fill.error) throw fill.error;
      if (fill.generation !== generation || (fill.size !== null && fill.size !== size)) {
        throw new BtyError('BTY_ERR_SOURCE_CHANGED', `${fill.origin} restarted from zero upstream`);
      }
      const verified = fill.entry !== null;
      const available = verified ? size : Math.min(fill.written, size - WITHHELD_BYTES);
      if (position >= available) {
        await fill.changed();
        continue;
      }
      // Once installed, the bytes are in the blob (the partial file may be gone).
      const file = verified && fill.entryFile ? fill.entryFile : fill.tempFile;
      if (fh === null || openedFile !== file) {
        await fh?.close();
        fh = null;
        fh = await open(file, 'r');
        openedFile = file;
      }
      const want = Math.min(READ_CHUNK_BYTES, available - position, range.end + 1 - position);
      const { bytesRead } = await fh.read(buffer, 0, want, position);
      if (bytesRead === 0)
        throw new BtyError('BTY_ERR_INTERNAL', `${file} is shorter than expected`);
      position += bytesRead;
      // A copy: the buffer is reused for the next read while the socket may still hold this one.
      const more = res.write(Buffer.from(buffer.subarray(0, bytesRead)));
      if (!more && !clientGone) await drained(res);
    }
    if (!clientGone) res.end();
  } catch (err) {
    // Headers are out: the only way left to say "this body is wrong" is to cut it short.
    res.destroy(err instanceof Error ? err : new Error(String(err)));
  } finally {
    res.off('close', onClose);
    await fh?.close();
  }
}

function drained(res: ServerResponse): Promise<void> {
  if (res.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.once('drain', done);
    res.once('close', done);
  });
}

/** An error before any header: a short text answer with the error's status. */
function fail(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const status = err instanceof BtyError ? err.httpStatus : 502;
  const message = err instanceof Error ? err.message : String(err);
  const body = `${message}\n`;
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}
