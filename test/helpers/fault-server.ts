/**
 * An HTTP server on 127.0.0.1 that serves objects (in memory or on disk) and breaks in the ways
 * real networks and CDNs break: cut connections, stalls, slow links, objects that change between
 * requests, servers that ignore Range or If-Range, error statuses and redirects.
 *
 * The HTTP semantics the flash engine's resume logic depends on follow RFC 9110: single byte
 * ranges (`bytes=N-`, `bytes=N-M`, `bytes=-K`) answered with 206 and `Content-Range`, 416 with
 * `Content-Range: bytes *\/total` when unsatisfiable, `If-Range` with a strong ETag comparison or an
 * exact Last-Modified date, and Range ignored on every method but GET (§14.2).
 *
 * Counters per path (`cuts`, bytes served for `changeAfterBytes`) start from zero on `serve` and on
 * `setFaults`, so a test can reconfigure a path and get a fresh fault schedule.
 *
 * Usage:
 *   const server = await startFaultServer();
 *   server.serve('/disk.img', { body: { file: imagePath } }, { cutEveryBytes: 1 << 20, maxCuts: 3 });
 *   await flash(server.urlFor('/disk.img'), ...);
 *   expect(server.requests.filter((r) => r.cut)).toHaveLength(3);
 *   await server.close();
 */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

export interface ServedObject {
  /**
   * Content: a Buffer, or a path to a file on disk (streamed with ranges, never fully loaded).
   * A file is stat'ed when served: after changing it on disk, serve it again.
   */
  body: Buffer | { file: string };
  /**
   * Default: a quoted strong ETag derived from the content (for a file: from its size, mtime and
   * inode, so a large file is never read to name it); null = send none. A value without quotes is
   * quoted; `W/"…"` is sent as given (a weak tag never satisfies If-Range).
   */
  etag?: string | null;
  /** Default: a fixed date; null = send none. */
  lastModified?: Date | null;
  /** Default: application/octet-stream. */
  contentType?: string;
}

export interface Faults {
  /** Destroy the socket after sending this many body bytes in each response (simulates a cut). */
  cutEveryBytes?: number;
  /** Stop cutting after this many cuts (default: unlimited). */
  maxCuts?: number;
  /**
   * After this many body bytes have been served in total for this path, replace the object with
   * `changeTo` (new ETag/Last-Modified) — the "object changed mid-download" case. The response in
   * flight finishes with the old content; the next request sees the new object. When `changeTo`
   * leaves the validators to their defaults they are made to differ from the old ones even if the
   * content does not.
   */
  changeAfterBytes?: number;
  changeTo?: ServedObject;
  /**
   * Answer ranged requests with a full 200 (a server that ignores Range). `Accept-Ranges: bytes`
   * is still advertised, the harsher case: the client is promised ranges and must cope anyway.
   */
  ignoreRange?: boolean;
  /** Ignore If-Range (serve 206 even if the validator no longer matches). */
  ignoreIfRange?: boolean;
  /** Send no Content-Length (chunked). */
  chunked?: boolean;
  /** Stop sending (keep the socket open, send nothing more) after this many body bytes. */
  stallAfterBytes?: number;
  /** Delay before the headers of each response, ms. */
  delayMs?: number;
  /** Throttle the body to about this many bytes per second. */
  bytesPerSecond?: number;
  /** Fixed status for every request (e.g. 500, 404), with a short text body. */
  status?: number;
  /** Reject HEAD with 405 (some servers do). */
  noHead?: boolean;
  /** Redirect to this other served path (302) — to test redirect following. */
  redirectTo?: string;
}

export interface RequestRecord {
  method: string;
  path: string;
  range: string | null;
  ifRange: string | null;
  status: number;
  /** Body bytes handed to the socket (for a cut: exactly the bytes the client received). */
  bytesSent: number;
  cut: boolean;
}

export interface FaultServer {
  /** e.g. http://127.0.0.1:41234 */
  url: string;
  urlFor(path: string): string;
  /** Adds or replaces an object at runtime; resets that path's fault counters. */
  serve(path: string, object: ServedObject, faults?: Faults): void;
  /** Replaces the faults of a path (served or not: status and redirectTo work without an object). */
  setFaults(path: string, faults: Faults): void;
  /** Log, in order of arrival; each record is updated while its response is sent. */
  requests: RequestRecord[];
  /** Closes the server and destroys all open sockets. */
  close(): Promise<void>;
}

/** An object with its validators resolved, as it is served. */
interface Representation {
  body: Buffer | { file: string };
  size: number;
  etag: string | null;
  lastModified: Date | null;
  contentType: string;
}

interface PathState {
  representation: Representation | undefined;
  faults: Faults;
  cuts: number;
  bytesServed: number;
  changed: boolean;
}

/** Seconds resolution: HTTP dates carry no more, and If-Range must match them exactly. */
const DEFAULT_LAST_MODIFIED = new Date('2024-01-15T08:30:00Z');
const CHUNK_BYTES = 64 * 1024;
const THROTTLE_TICK_MS = 50;

export interface FaultServerOptions {
  /** Serve HTTPS with this key and certificate (PEM) instead of plain HTTP. */
  tls?: { key: string; cert: string };
}

export async function startFaultServer(options: FaultServerOptions = {}): Promise<FaultServer> {
  const paths = new Map<string, PathState>();
  const requests: RequestRecord[] = [];
  const sockets = new Set<Socket>();

  const stateFor = (path: string): PathState => {
    const key = normalizePath(path);
    let state = paths.get(key);
    if (state === undefined) {
      state = { representation: undefined, faults: {}, cuts: 0, bytesServed: 0, changed: false };
      paths.set(key, state);
    }
    return state;
  };

  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    handleRequest(req, res, paths, requests, urlFor).catch((error: unknown) => {
      // A helper bug must show up in the test, not hang it: fail the response loudly.
      console.error('fault-server: request handler failed', error);
      if (!res.headersSent) {
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end('fault-server internal error\n');
      } else {
        res.destroy();
      }
    });
  };
  const server = options.tls
    ? https.createServer({ key: options.tls.key, cert: options.tls.cert }, handler)
    : http.createServer(handler);
  // TLS servers report the raw TCP socket on 'connection' too, so close() can still cut it.
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  function urlFor(path: string): string {
    return url + normalizePath(path);
  }

  return {
    url,
    urlFor,
    serve(path, object, faults = {}) {
      const state = stateFor(path);
      state.representation = resolveRepresentation(object, undefined);
      state.faults = { ...faults };
      resetCounters(state);
    },
    setFaults(path, faults) {
      const state = stateFor(path);
      state.faults = { ...faults };
      resetCounters(state);
    },
    requests,
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        for (const socket of sockets) socket.destroy();
      });
    },
  };
}

function resetCounters(state: PathState): void {
  state.cuts = 0;
  state.bytesServed = 0;
  state.changed = false;
}

function normalizePath(path: string): string {
  return path.startsWith('/') ? path : `/${path}`;
}

function quoteEtag(etag: string): string {
  return etag.startsWith('"') || etag.startsWith('W/"') ? etag : `"${etag}"`;
}

/** `previous` is the representation being replaced, so defaulted validators can differ from it. */
function resolveRepresentation(
  object: ServedObject,
  previous: Representation | undefined,
): Representation {
  let size: number;
  let derivedEtag: string;
  if (Buffer.isBuffer(object.body)) {
    size = object.body.length;
    derivedEtag = `"${createHash('sha256').update(object.body).digest('hex').slice(0, 20)}"`;
  } else {
    const stat = statSync(object.body.file);
    size = stat.size;
    derivedEtag = `"${stat.size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}-${stat.ino.toString(16)}"`;
  }
  let etag: string | null;
  if (object.etag === undefined) {
    etag = derivedEtag;
    if (previous?.etag === etag) etag = `${derivedEtag.slice(0, -1)}-changed"`;
  } else {
    etag = object.etag === null ? null : quoteEtag(object.etag);
  }
  let lastModified =
    object.lastModified === undefined ? DEFAULT_LAST_MODIFIED : object.lastModified;
  if (object.lastModified === undefined && previous !== undefined) {
    // A day later than before, so an If-Range date taken from the old object no longer matches.
    const base = previous.lastModified ?? DEFAULT_LAST_MODIFIED;
    lastModified = new Date(base.getTime() + 24 * 3600 * 1000);
  }
  return {
    body: object.body,
    size,
    etag,
    lastModified,
    contentType: object.contentType ?? 'application/octet-stream',
  };
}

type RangeDecision =
  { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/**
 * Parses a Range header against a representation of `size` bytes. Anything this server does not
 * support (other units, several ranges, bad syntax) is ignored, which RFC 9110 §14.2 allows: the
 * full representation is sent instead.
 */
function decideRange(header: string | undefined, size: number): RangeDecision {
  if (header === undefined) return { kind: 'full' };
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (match === null) return { kind: 'full' };
  const [, firstText = '', lastText = ''] = match;
  if (firstText === '' && lastText === '') return { kind: 'full' };
  if (firstText === '') {
    const suffixLength = Number(lastText);
    if (suffixLength === 0) return { kind: 'unsatisfiable' };
    // Nothing to range over: the whole (empty) representation is the answer.
    if (size === 0) return { kind: 'full' };
    return { kind: 'partial', start: Math.max(0, size - suffixLength), end: size - 1 };
  }
  const first = Number(firstText);
  if (lastText !== '' && Number(lastText) < first) return { kind: 'full' };
  if (first >= size) return { kind: 'unsatisfiable' };
  const last = lastText === '' ? size - 1 : Math.min(Number(lastText), size - 1);
  return { kind: 'partial', start: first, end: last };
}

/** RFC 9110 §13.1.5: a strong ETag match, or an HTTP date exactly equal to Last-Modified. */
function ifRangeMatches(header: string, etag: string | null, lastModified: Date | null): boolean {
  const value = header.trim();
  if (value.startsWith('"') || value.startsWith('W/"')) {
    // Strong comparison: neither tag may be weak, and the opaque strings must be identical.
    return etag !== null && !value.startsWith('W/') && !etag.startsWith('W/') && value === etag;
  }
  if (lastModified === null) return false;
  const date = Date.parse(value);
  return !Number.isNaN(date) && date === Math.floor(lastModified.getTime() / 1000) * 1000;
}

async function handleRequest(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  paths: Map<string, PathState>,
  requests: RequestRecord[],
  urlFor: (path: string) => string,
): Promise<void> {
  const method = req.method ?? 'GET';
  const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
  const record: RequestRecord = {
    method,
    path,
    range: req.headers.range ?? null,
    ifRange: headerValue(req.headers['if-range']),
    status: 0,
    bytesSent: 0,
    cut: false,
  };
  requests.push(record);
  const state = paths.get(path);
  const faults = state?.faults ?? {};

  if (faults.delayMs !== undefined && faults.delayMs > 0) {
    if (!(await sleepUnlessClosed(faults.delayMs, res))) return;
  }

  const sendText = (status: number, text: string, headers: http.OutgoingHttpHeaders = {}) => {
    record.status = status;
    const body = Buffer.from(`${text}\n`);
    res.writeHead(status, {
      ...headers,
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': body.length,
    });
    res.end(method === 'HEAD' ? undefined : body);
  };

  if (faults.status !== undefined) {
    sendText(faults.status, `${faults.status} ${http.STATUS_CODES[faults.status] ?? 'status'}`);
    return;
  }
  if (faults.redirectTo !== undefined) {
    const location = urlFor(faults.redirectTo);
    sendText(302, `redirecting to ${location}`, { Location: location });
    return;
  }
  if (state?.representation === undefined) {
    sendText(404, `no object at ${path}`);
    return;
  }
  if (method !== 'GET' && method !== 'HEAD') {
    sendText(405, `${method} is not allowed`, { Allow: 'GET, HEAD' });
    return;
  }
  if (method === 'HEAD' && faults.noHead === true) {
    sendText(405, 'HEAD is not allowed', { Allow: 'GET' });
    return;
  }

  const { representation } = state;
  const { size } = representation;
  let decision: RangeDecision = { kind: 'full' };
  // Range is defined only for GET (RFC 9110 §14.2); HEAD describes the full representation.
  if (method === 'GET' && faults.ignoreRange !== true) {
    decision = decideRange(req.headers.range, size);
    const ifRange = record.ifRange;
    if (
      decision.kind !== 'full' &&
      ifRange !== null &&
      faults.ignoreIfRange !== true &&
      !ifRangeMatches(ifRange, representation.etag, representation.lastModified)
    ) {
      decision = { kind: 'full' };
    }
  }

  const headers: http.OutgoingHttpHeaders = { 'Accept-Ranges': 'bytes' };
  if (representation.etag !== null) headers.ETag = representation.etag;
  if (representation.lastModified !== null) {
    headers['Last-Modified'] = representation.lastModified.toUTCString();
  }

  if (decision.kind === 'unsatisfiable') {
    sendText(416, 'range not satisfiable', { ...headers, 'Content-Range': `bytes */${size}` });
    return;
  }
  const start = decision.kind === 'partial' ? decision.start : 0;
  const end = decision.kind === 'partial' ? decision.end : size - 1;
  const length = end - start + 1;
  const status = decision.kind === 'partial' ? 206 : 200;
  headers['Content-Type'] = representation.contentType;
  if (decision.kind === 'partial') headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  if (faults.chunked !== true) headers['Content-Length'] = length;

  record.status = status;
  res.writeHead(status, headers);
  if (method === 'HEAD' || length === 0) {
    res.end();
    return;
  }
  // State is looked up once: a change made while this response runs takes effect on the next one.
  await sendBody(res, representation, start, end, state, record);
}

function headerValue(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? value.join(', ') : value;
}

/** Sends bytes [start, end] of the representation, applying the body faults of the path. */
async function sendBody(
  res: http.ServerResponse,
  representation: Representation,
  start: number,
  end: number,
  state: PathState,
  record: RequestRecord,
): Promise<void> {
  const { faults } = state;
  const length = end - start + 1;
  const cutAt =
    faults.cutEveryBytes !== undefined &&
    faults.cutEveryBytes < length &&
    (faults.maxCuts === undefined || state.cuts < faults.maxCuts)
      ? faults.cutEveryBytes
      : undefined;
  const stallAt =
    faults.stallAfterBytes !== undefined && faults.stallAfterBytes < length
      ? faults.stallAfterBytes
      : undefined;
  // Whichever comes first ends the body early; a cut and a stall at the same byte count is a cut.
  const stopAt = Math.min(cutAt ?? Infinity, stallAt ?? Infinity);
  const stopIsCut = cutAt !== undefined && cutAt === stopAt;
  if (stopIsCut) state.cuts += 1;

  const throttle =
    faults.bytesPerSecond !== undefined && faults.bytesPerSecond > 0
      ? { bytesPerSecond: faults.bytesPerSecond, startedAt: Date.now() }
      : undefined;
  const pieceLimit =
    throttle === undefined
      ? CHUNK_BYTES
      : Math.max(
          1,
          Math.min(CHUNK_BYTES, Math.floor((throttle.bytesPerSecond * THROTTLE_TICK_MS) / 1000)),
        );

  const source = openBody(representation, start, end);
  try {
    for await (const chunk of source) {
      let offset = 0;
      while (offset < chunk.length) {
        if (record.bytesSent >= stopAt) break;
        const take = Math.min(pieceLimit, chunk.length - offset, stopAt - record.bytesSent);
        const piece = chunk.subarray(offset, offset + take);
        offset += take;
        if (throttle !== undefined) {
          const dueAt =
            throttle.startedAt + ((record.bytesSent + take) * 1000) / throttle.bytesPerSecond;
          const wait = dueAt - Date.now();
          if (wait > 0 && !(await sleepUnlessClosed(wait, res))) return;
        }
        const isLastBeforeStop = record.bytesSent + take === stopAt;
        if (!(await writePiece(res, piece, isLastBeforeStop))) return;
        record.bytesSent += take;
        countServedBytes(state, take);
      }
      if (record.bytesSent >= stopAt) break;
    }
  } finally {
    destroySource(source);
  }

  if (record.bytesSent < stopAt || stopAt === Infinity) {
    res.end();
    return;
  }
  if (stopAt === 0 && !(await flushHeaders(res))) return;
  if (stopIsCut) {
    record.cut = true;
    // Destroy rather than end: the client must see a connection broken mid-body.
    res.socket?.destroy();
    return;
  }
  // Stall: send nothing more and keep the socket open until the client or close() ends it.
  await new Promise<void>((resolve) => {
    if (res.socket === null || res.socket.destroyed) resolve();
    else res.once('close', () => resolve());
  });
}

function countServedBytes(state: PathState, bytes: number): void {
  state.bytesServed += bytes;
  const { changeAfterBytes, changeTo } = state.faults;
  if (
    !state.changed &&
    changeAfterBytes !== undefined &&
    changeTo !== undefined &&
    state.bytesServed >= changeAfterBytes
  ) {
    state.changed = true;
    state.representation = resolveRepresentation(changeTo, state.representation);
  }
}

type BodySource = AsyncIterable<Buffer> | Iterable<Buffer>;

function openBody(representation: Representation, start: number, end: number): BodySource {
  const { body } = representation;
  if (Buffer.isBuffer(body)) {
    return (function* () {
      for (let offset = start; offset <= end; offset += CHUNK_BYTES) {
        yield body.subarray(offset, Math.min(offset + CHUNK_BYTES, end + 1));
      }
    })();
  }
  return createReadStream(body.file, { start, end, highWaterMark: CHUNK_BYTES });
}

function destroySource(source: BodySource): void {
  if ('destroy' in source && typeof source.destroy === 'function') {
    (source as { destroy(): void }).destroy();
  }
}

/**
 * Writes one piece, honouring backpressure. With `flush`, waits until the bytes are handed to the
 * kernel, so a socket destroyed right after really delivered them. False when the client is gone.
 */
function writePiece(res: http.ServerResponse, piece: Buffer, flush: boolean): Promise<boolean> {
  if (res.destroyed || res.socket === null || res.socket.destroyed) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    let pending = flush ? 2 : 1;
    const onClose = () => resolve(false);
    const done = () => {
      pending -= 1;
      if (pending === 0) {
        res.off('close', onClose);
        resolve(true);
      }
    };
    res.once('close', onClose);
    const mayContinue = res.write(
      piece,
      flush ? (error) => (error ? onClose() : done()) : undefined,
    );
    if (mayContinue) done();
    else res.once('drain', done);
  });
}

/** Sends the headers of a response that will be cut or stalled before its first body byte. */
function flushHeaders(res: http.ServerResponse): Promise<boolean> {
  res.flushHeaders();
  const socket = res.socket;
  if (socket === null || socket.destroyed) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    // An empty write completes only after everything queued before it: the headers.
    socket.write(Buffer.alloc(0), (error) => resolve(error === undefined || error === null));
  });
}

/** Resolves true after `ms`, or false as soon as the client goes away. */
function sleepUnlessClosed(ms: number, res: http.ServerResponse): Promise<boolean> {
  if (res.destroyed || res.socket === null || res.socket.destroyed) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const onClose = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      res.off('close', onClose);
      resolve(true);
    }, ms);
    res.once('close', onClose);
  });
}
