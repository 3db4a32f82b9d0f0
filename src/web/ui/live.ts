/**
 * `GET /ui/live`: the browser UI's live updates, as htmx's SSE extension consumes them. Each
 * page opens one stream (the layout's `sse-connect`); elements swap or refresh on named events:
 *
 * - `progress-<mac hex>`: the machine's progress cell, rendered (`sse-swap`, outerHTML);
 * - `machines`: some machine changed (new, edited, offered, inventoried, finished): lists and
 *   counters refetch themselves (`hx-trigger="sse:machines"`);
 * - `machine-<mac hex>`: that machine changed (its page refreshes its panels);
 * - `events`: the audit log grew.
 *
 * A boot storm publishes thousands of changes a second, so nothing is sent per message: the
 * hub keeps the latest frame per event name and sends what accumulated every `flushMs` (a
 * progress bar shows its newest state, a refresh trigger fires once). Slow clients are dropped
 * exactly as on the JSON streams (stream.ts).
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { LiveBus, LiveMessage } from '../bus.ts';
import type { WebContext } from '../context.ts';
import { SseClient, startEventStream } from '../routes/stream.ts';
import { FlashProgress, progressId } from './components.tsx';
import { uiGuard } from './guard.ts';
import { htmlOf } from './html.ts';

export const UI_LIVE_FLUSH_MS = 400;

const everything = (): boolean => true;

/** One SSE frame; multi-line data becomes several `data:` lines, as the format requires. */
export function htmlFrame(event: string, data: string): string {
  return `event: ${event}\n${data
    .split('\n')
    .map((line) => `data: ${line}`)
    .join('\n')}\n\n`;
}

class UiLiveHub {
  private readonly bus: LiveBus;
  private readonly flushMs: number;
  private readonly clients = new Set<SseClient>();
  /** Latest frame per event name since the last flush, rendered only when sent. */
  private readonly pending = new Map<string, () => string>();
  private unsubscribe: (() => void) | null = null;
  private timers: NodeJS.Timeout[] = [];

  constructor(bus: LiveBus, flushMs: number) {
    this.bus = bus;
    this.flushMs = flushMs;
  }

  open(res: ServerResponse): void {
    const client = new SseClient(res, everything, this.bus.limits, (c) => this.remove(c));
    if (this.bus.isClosed) return client.end();
    this.clients.add(client);
    if (this.unsubscribe !== null) return;
    this.unsubscribe = this.bus.subscribe(
      (message) => this.collect(message),
      () => this.endAll(),
    );
    const flush = setInterval(() => this.flush(), this.flushMs);
    const beat = setInterval(() => {
      for (const c of this.clients) c.heartbeat();
    }, this.bus.limits.heartbeatMs);
    flush.unref();
    beat.unref();
    this.timers = [flush, beat];
  }

  private collect(message: LiveMessage): void {
    if (message.type === 'event') {
      this.pending.set('events', () => String(message.id));
      return;
    }
    const hex = message.mac.replaceAll(':', '');
    const id = progressId(message.mac);
    if (message.type === 'progress') {
      this.pending.set(id, () => htmlOf(FlashProgress({ mac: message.mac, progress: message })));
      return;
    }
    if (message.type === 'status') {
      const outcome = { status: message.status, reason: message.reason };
      this.pending.set(id, () =>
        htmlOf(FlashProgress({ mac: message.mac, progress: null, outcome })),
      );
    }
    this.pending.set('machines', () => message.mac);
    this.pending.set(`machine-${hex}`, () => message.type);
  }

  private flush(): void {
    if (this.pending.size === 0) return;
    const frames = [...this.pending].map(([event, data]) => htmlFrame(event, data())).join('');
    this.pending.clear();
    for (const client of this.clients) client.send(frames);
  }

  private remove(client: SseClient): void {
    if (this.clients.delete(client) && this.clients.size === 0) this.stop();
  }

  private endAll(): void {
    this.unsubscribe = null;
    for (const client of [...this.clients]) client.end();
    this.stop();
  }

  private stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.pending.clear();
  }
}

export function registerUiLive(app: FastifyInstance, ctx: WebContext, flushMs = UI_LIVE_FLUSH_MS) {
  const hub = new UiLiveHub(ctx.bus, flushMs);
  app.get('/ui/live', { preHandler: uiGuard(ctx), schema: { hide: true } }, (_req, reply) => {
    hub.open(startEventStream(reply));
  });
}
