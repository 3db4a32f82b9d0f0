/**
 * Live events over Server-Sent Events (session required):
 *
 * - `GET /events/stream`: every bus message — machine changes, PXE offers, inventories,
 *   flash progress, final statuses, new audit events and acknowledgements — as `event: <type>` and one
 *   `data: <JSON of the message>` line.
 * - `GET /events/machines`: upstream's machine stream (upstream-web §10.2): the same frames,
 *   machine-related only (everything but `event`). Upstream pushed rendered HTML fragments
 *   here; the browser UI of the next issue renders from these JSON messages instead.
 *
 * A comment line (`: heartbeat`) goes out every `limits.heartbeatMs` so idle connections and
 * proxies stay up. Nobody waits for a slow client: each connection writes while its socket
 * takes data, queues at most `limits.maxQueued` messages while it is full, and is cut off when
 * the queue overflows, when its socket holds more than `limits.maxBufferedBytes`, or when it
 * has not drained for a whole heartbeat interval. The other clients never notice.
 *
 * Shutdown: closing the bus (app.ts's preClose hook) ends every stream at once, so
 * `app.close()` is not held up by them. `GET /metrics` is registered here too (metrics.ts).
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { LiveBus, LiveMessage, StreamLimits } from '../bus.ts';
import type { WebContext } from '../context.ts';
import { metricsOf, registerMetricsRoutes, type WebMetrics } from '../metrics.ts';
import { protectedRoute, textResponse, type RouteDoc } from '../openapi.ts';
import { requireSession } from './auth.ts';

export const EVENT_STREAM_TYPE = 'text/event-stream; charset=utf-8';

/** One message as an SSE frame. JSON never contains a raw line break: one `data:` line. */
export function sseFrame(message: LiveMessage): string {
  return `event: ${message.type}\ndata: ${JSON.stringify(message)}\n\n`;
}

const HEARTBEAT_FRAME = ': heartbeat\n\n';
const OPENING_FRAME = ': connected\n\n';

export type DropReason = 'queue_full' | 'buffer_full' | 'stalled';

/** One open stream: writes, queues while the socket is full, or gives up on the client. */
export class SseClient {
  readonly accepts: (message: LiveMessage) => boolean;
  private readonly res: ServerResponse;
  private readonly limits: StreamLimits;
  private readonly gone: (client: SseClient, reason: DropReason | null) => void;
  private readonly queue: string[] = [];
  private closed = false;
  /** Heartbeats seen while blocked with no drain in between. */
  private blockedBeats = 0;

  constructor(
    res: ServerResponse,
    accepts: (message: LiveMessage) => boolean,
    limits: StreamLimits,
    gone: (client: SseClient, reason: DropReason | null) => void,
  ) {
    this.res = res;
    this.accepts = accepts;
    this.limits = limits;
    this.gone = gone;
    res.on('drain', this.onDrain);
    res.on('close', this.onClose);
  }

  send(frame: string): void {
    if (this.closed) return;
    if (this.queue.length > 0 || this.res.writableNeedDrain) {
      if (this.queue.length >= this.limits.maxQueued) return this.drop('queue_full');
      this.queue.push(frame);
      return;
    }
    this.write(frame);
  }

  heartbeat(): void {
    if (this.closed) return;
    if (this.res.writableNeedDrain) {
      // Blocked at two heartbeats in a row without draining: nobody is reading.
      if (++this.blockedBeats >= 2) return this.drop('stalled');
    } else {
      this.blockedBeats = 0;
    }
    this.send(HEARTBEAT_FRAME);
  }

  /** The graceful end (shutdown): the client sees the stream finish. */
  end(): void {
    if (this.finish()) {
      this.res.end();
      this.gone(this, null);
    }
  }

  private drop(reason: DropReason): void {
    if (this.finish()) {
      this.res.destroy();
      this.gone(this, reason);
    }
  }

  private write(frame: string): void {
    this.res.write(frame);
    if (this.res.writableLength > this.limits.maxBufferedBytes) this.drop('buffer_full');
  }

  private readonly onDrain = (): void => {
    this.blockedBeats = 0;
    while (!this.closed && this.queue.length > 0 && !this.res.writableNeedDrain) {
      this.write(this.queue.shift()!);
    }
  };

  /** The connection went away (the client left, or we ended or dropped it). */
  private readonly onClose = (): void => {
    if (this.finish()) this.gone(this, null);
  };

  /** Marks the client finished; false when it already was. */
  private finish(): boolean {
    if (this.closed) return false;
    this.closed = true;
    this.queue.length = 0;
    this.res.off('drain', this.onDrain);
    this.res.off('close', this.onClose);
    return true;
  }
}

/**
 * The app's open streams. It listens to the bus only while someone is connected, turns each
 * message into a frame once, and hands it to every client that wants it.
 */
class StreamHub {
  private readonly bus: LiveBus;
  private readonly metrics: WebMetrics;
  private readonly clients = new Set<SseClient>();
  private unsubscribe: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(bus: LiveBus, metrics: WebMetrics) {
    this.bus = bus;
    this.metrics = metrics;
  }

  /** Opens a stream on `res` (headers already sent); ends it at once if the bus is closed. */
  open(res: ServerResponse, accepts: (message: LiveMessage) => boolean): void {
    const client = new SseClient(res, accepts, this.bus.limits, (c, reason) =>
      this.remove(c, reason),
    );
    if (this.bus.isClosed) return client.end();
    this.clients.add(client);
    this.metrics.sseSubscribers.set({}, this.clients.size);
    if (this.unsubscribe === null) {
      this.unsubscribe = this.bus.subscribe(
        (message) => this.fanOut(message),
        () => this.endAll(),
      );
      this.timer = setInterval(() => this.beat(), this.bus.limits.heartbeatMs);
      this.timer.unref();
    }
  }

  private remove(client: SseClient, reason: DropReason | null): void {
    if (!this.clients.delete(client)) return;
    this.metrics.sseSubscribers.set({}, this.clients.size);
    if (reason !== null) this.metrics.sseDropped.inc({ reason });
    if (this.clients.size === 0) this.stop();
  }

  private fanOut(message: LiveMessage): void {
    let frame: string | null = null;
    for (const client of this.clients) {
      if (!client.accepts(message)) continue;
      frame ??= sseFrame(message);
      client.send(frame);
    }
  }

  private beat(): void {
    for (const client of this.clients) client.heartbeat();
  }

  private endAll(): void {
    this.unsubscribe = null;
    for (const client of [...this.clients]) client.end();
    this.stop();
  }

  private stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}

const everything = (): boolean => true;
const machineRelated = (message: LiveMessage): boolean =>
  message.type !== 'event' &&
  message.type !== 'ack' &&
  message.type !== 'netboot-fetch' &&
  message.type !== 'cache';

/** The 200 of a stream sending these message types. */
const frames = (types: string) =>
  textResponse(
    'text/event-stream',
    'A `text/event-stream`: `event: <type>` and one `data: <JSON>` line per message ' +
      `(types: ${types}), \`: heartbeat\` comments between.`,
  );

const STREAM_DOC: RouteDoc = protectedRoute({
  summary: 'Live updates',
  description:
    'Every live message as Server-Sent Events: machine changes, PXE offers, inventories, flash progress, final statuses, new audit events and acknowledgements.',
  tags: ['stream'],
  response: {
    200: frames('machine, offer, inventory, progress, status, event, ack, netboot-fetch, cache'),
  },
});

const MACHINE_STREAM_DOC: RouteDoc = protectedRoute({
  summary: 'Live machine updates',
  description:
    "Upstream's machine stream: the same frames as `/events/stream` without the audit log's `event` and `ack` messages.",
  tags: ['stream'],
  response: { 200: frames('machine, offer, inventory, progress, status') },
});

/**
 * Takes over the reply as an event stream: headers (with the session guard's refreshed cookie)
 * and the opening comment. The caller hands the response to its hub.
 */
export function startEventStream(reply: FastifyReply): ServerResponse {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    ...(reply.getHeaders() as Record<string, string | string[]>),
    'content-type': EVENT_STREAM_TYPE,
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
    // A stream owns its connection: nothing follows it on the socket, so when it ends
    // (shutdown) the socket closes with it instead of lingering in keep-alive.
    connection: 'close',
  });
  res.write(OPENING_FRAME);
  return res;
}

export function registerStreamRoutes(app: FastifyInstance, ctx: WebContext): void {
  const hub = new StreamHub(ctx.bus, metricsOf(ctx));
  const preHandler = requireSession(ctx);

  const stream =
    (accepts: (message: LiveMessage) => boolean) =>
    (_req: FastifyRequest, reply: FastifyReply): void => {
      hub.open(startEventStream(reply), accepts);
    };

  app.get('/events/stream', { preHandler, schema: STREAM_DOC }, stream(everything));
  app.get('/events/machines', { preHandler, schema: MACHINE_STREAM_DOC }, stream(machineRelated));

  registerMetricsRoutes(app, ctx);
}
