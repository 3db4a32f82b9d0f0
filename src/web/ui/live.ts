/**
 * `GET /ui/live`: the browser UI's live updates, as htmx's SSE extension consumes them. Each
 * page opens one stream (the layout's `sse-connect`); elements refresh or swap on named events:
 *
 * - `progress`: rendered progress cells (`FlashProgress`, one per machine that reported),
 *   which bty.js puts in place by element id;
 * - `machines`: some machine changed (new, edited, offered, inventoried, started or finished
 *   a flash): lists and counters refetch themselves (`hx-trigger="sse:machines …"`);
 * - `machine-<mac hex>`: that machine changed (its page refreshes its panels);
 * - `events`: the audit log grew.
 *
 * A boot storm publishes thousands of changes a second, so nothing is sent per message: the
 * hub keeps the latest state per machine and per trigger and sends what accumulated every
 * `flushMs` (a bar shows its newest state, a trigger fires once). One flush carries at most
 * `PROGRESS_PER_FLUSH` bars; the others wait their turn (oldest first), so a fleet of
 * thousands flashing at once costs each tab a bounded stream instead of getting it dropped for
 * falling behind. Slow clients are dropped exactly as on the JSON streams (stream.ts).
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { LiveBus, LiveMessage } from '../bus.ts';
import type { WebContext } from '../context.ts';
import { requireSession } from '../routes/auth.ts';
import { SseClient, startEventStream } from '../routes/stream.ts';
import { FlashProgress } from './components.tsx';
import { htmlOf } from './html.ts';

export const UI_LIVE_FLUSH_MS = 400;
/** Progress cells per flush: about 450 bytes each, so a flush stays near 100 KiB. */
export const PROGRESS_PER_FLUSH = 250;

const everything = (): boolean => true;

/**
 * One SSE frame. Every line break the format knows (CRLF, LF, and a lone CR) starts a new
 * `data:` line, so text inside the data (a failure reason from a machine) can never end the
 * frame early or name another event.
 */
export function htmlFrame(event: string, data: string): string {
  return `event: ${event}\n${data
    .split(/\r\n|\r|\n/)
    .map((line) => `data: ${line}`)
    .join('\n')}\n\n`;
}

class UiLiveHub {
  private readonly bus: LiveBus;
  private readonly flushMs: number;
  private readonly clients = new Set<SseClient>();
  /** Latest trigger per event name since the last flush. */
  private readonly triggers = new Map<string, string>();
  /** Latest progress cell per MAC not sent yet, oldest first; rendered only when sent. */
  private readonly bars = new Map<string, () => string>();
  /** Machines with a flash under way, to tell lists when one starts. */
  private readonly flashing = new Set<string>();
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
    if (message.type === 'event' || message.type === 'ack') {
      this.triggers.set('events', message.type === 'event' ? String(message.id) : 'ack');
      return;
    }
    // Background work: the page showing it refetches its panel (at most once per flush).
    if (message.type === 'netboot-fetch') {
      this.triggers.set('netboot', `${message.tag}:${message.status}`);
      return;
    }
    if (message.type === 'cache') {
      this.triggers.set('cache', `${message.ref ?? message.url}:${message.status}`);
      return;
    }
    const { mac } = message;
    const changed = () => {
      this.triggers.set('machines', mac);
      this.triggers.set(`machine-${mac.replaceAll(':', '')}`, message.type);
    };
    if (message.type === 'progress') {
      this.bars.set(mac, () => htmlOf(FlashProgress({ mac, progress: message })));
      // A flash starting changes counters and filters; its later reports change only the bar.
      if (!this.flashing.has(mac)) {
        this.flashing.add(mac);
        changed();
      }
      return;
    }
    if (message.type === 'status') {
      this.flashing.delete(mac);
      const outcome = { status: message.status, reason: message.reason };
      // Re-inserted: a final state goes out in the next flush, behind nothing.
      this.bars.delete(mac);
      this.bars.set(mac, () => htmlOf(FlashProgress({ mac, progress: null, outcome })));
    }
    changed();
  }

  private flush(): void {
    const frames: string[] = [];
    for (const [event, data] of this.triggers) frames.push(htmlFrame(event, data));
    this.triggers.clear();
    if (this.bars.size > 0) {
      const cells: string[] = [];
      for (const [mac, render] of this.bars) {
        if (cells.length >= PROGRESS_PER_FLUSH) break;
        cells.push(render());
        this.bars.delete(mac);
      }
      frames.push(htmlFrame('progress', cells.join('')));
    }
    if (frames.length === 0) return;
    const all = frames.join('');
    for (const client of this.clients) client.send(all);
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
    this.triggers.clear();
    this.bars.clear();
    this.flashing.clear();
  }
}

export function registerUiLive(app: FastifyInstance, ctx: WebContext, flushMs = UI_LIVE_FLUSH_MS) {
  const hub = new UiLiveHub(ctx.bus, flushMs);
  // 401 rather than the pages' redirect: an EventSource cannot follow a login page, and its
  // retries should not each fetch one.
  app.get(
    '/ui/live',
    { preHandler: requireSession(ctx), schema: { hide: true } },
    (_req, reply) => {
      hub.open(startEventStream(reply));
    },
  );
}
