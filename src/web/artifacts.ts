/**
 * bty-web's artifact cache: the src/cache library opened on `[cache] dir`, with the server's
 * rules around it.
 *
 * - Pinning: an entry some machine is bound to (its ref is a machine's `bty_image_ref`) is never
 *   evicted. The bound refs are read from the database at start and again after machine changes
 *   (debounced), so the library's synchronous eviction check never waits on a query.
 * - Lifecycle: every download's start and outcome goes to the audit log (`cache.download.*`,
 *   `cache.downloaded`, actor system); every state change and progress tick (about 1/s per job)
 *   goes to the live bus as a `cache` message, which the console turns into a refresh.
 * - Mode: `pull-through` lets a request for a catalog image that is not cached start a fill it
 *   reads while it grows; `curated` serves only what an operator downloaded. Either way only
 *   catalog images are ever fetched: the cache is not an open proxy.
 *
 * One per WebContext, opened on first use and closed with the app.
 */
import type { ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import {
  CacheManager,
  CacheStore,
  cacheKey,
  type CacheEntry,
  type CacheJob,
  type CacheJobEvent,
} from '../cache/index.ts';
import { auditMessage } from './bus.ts';
import { CONFIG_SCHEMA } from './config.ts';
import type { WebContext } from './context.ts';
import { appendEvent, type NewEvent } from './db/events.ts';
import type { EventKind } from './event-kinds.ts';
import type { CacheMode } from './plan-image.ts';
import { withcacheBase } from './withcache.ts';

export interface ArtifactCache {
  readonly store: CacheStore;
  readonly manager: CacheManager;
  readonly mode: CacheMode;
  readonly dir: string;
  /** Normalised `[withcache] url`, '' when none. */
  readonly withcacheBase: string;
  /** Re-reads the bound refs now (before an operator's download, after a binding changes). */
  refreshPins(): Promise<void>;
  isPinned(key: string): boolean;
  /** Remembers a response sending image bytes, until the returned function is called. */
  track(res: ServerResponse): () => void;
  /** Cancels fills, cuts the image responses still running, closes the store. */
  close(): Promise<void>;
}

const services = new WeakMap<WebContext, ArtifactCache>();

/** The cache of this server, opened on first use. */
export function artifactsOf(ctx: WebContext): ArtifactCache {
  let service = services.get(ctx);
  if (!service) {
    service = openArtifacts(ctx);
    services.set(ctx, service);
  }
  return service;
}

/** Closes the cache if it was opened (at app close). */
export async function closeArtifacts(ctx: WebContext): Promise<void> {
  const service = services.get(ctx);
  if (!service) return;
  services.delete(ctx);
  await service.close();
}

/** How long after a machine change the bound refs are read again. */
const PIN_REFRESH_DELAY_MS = 500;

function openArtifacts(ctx: WebContext): ArtifactCache {
  const settings = ctx.config?.config.cache ?? {
    mode: CONFIG_SCHEMA.cache.mode.default,
    dir: '',
    max_bytes: CONFIG_SCHEMA.cache.max_bytes.default,
    concurrency: CONFIG_SCHEMA.cache.concurrency.default,
  };
  const dir = ctx.cacheDir ?? (settings.dir || join(dirname(ctx.bootDir), 'cache'));
  // Until the bound refs are read, every entry counts as pinned: nothing is evicted blind.
  let pinned: Set<string> | null = null;
  /** Appends an audit event without holding up the cache (a failed write is not its failure). */
  const record = (event: NewEvent) => {
    void appendEvent(ctx.database.db, event, ctx.now())
      .then((id) => ctx.bus.publish(auditMessage(id, { ...event, subject_id: event.subjectId })))
      .catch(() => {});
  };
  const store = CacheStore.open(dir, {
    maxBytes: settings.max_bytes,
    isPinned: (_origin, key) => pinned === null || pinned.has(key),
    onEvict: (entry) => {
      ctx.bus.publish({ type: 'cache', url: entry.origin, ref: entry.key, status: 'evicted' });
      record({
        kind: 'cache.entry.evicted',
        summary: clip(
          `${entry.origin} evicted from the cache to make room (${entry.size} bytes, last used ${entry.last_used_at})`,
        ),
        subjectKind: 'catalog',
        subjectId: entry.key,
        actor: 'system',
        sourceIp: null,
        details: {
          origin: entry.origin,
          ref: entry.key,
          digest: entry.digest,
          size: entry.size,
          last_used_at: entry.last_used_at,
        },
      });
    },
  });
  const manager = new CacheManager(store, { concurrency: settings.concurrency });
  const responses = new Set<ServerResponse>();

  const refreshPins = async () => {
    const rows = await ctx.database.db
      .selectFrom('machines')
      .select('bty_image_ref')
      .distinct()
      .where('bty_image_ref', 'is not', null)
      .execute();
    pinned = new Set(rows.map((r) => r.bty_image_ref!.toLowerCase()));
  };
  void refreshPins().catch(() => {});
  let pinTimer: NodeJS.Timeout | null = null;
  const unsubscribe = ctx.bus.subscribe((message) => {
    if (message.type !== 'machine' || pinTimer !== null) return;
    pinTimer = setTimeout(() => {
      pinTimer = null;
      void refreshPins().catch(() => {});
    }, PIN_REFRESH_DELAY_MS);
    pinTimer.unref();
  });

  manager.on('job', (event) => {
    ctx.bus.publish({
      type: 'cache',
      url: event.job.origin,
      ref: event.job.key,
      status: event.type,
    });
    const audit = auditOf(event);
    if (audit) {
      void appendEvent(ctx.database.db, audit, ctx.now())
        .then((id) => ctx.bus.publish(auditMessage(id, { ...audit, subject_id: audit.subjectId })))
        .catch(() => {});
    }
  });

  return {
    store,
    manager,
    mode: settings.mode === 'curated' ? 'curated' : 'pull-through',
    dir,
    withcacheBase: withcacheBase(ctx.config?.config.withcache.url ?? ''),
    refreshPins,
    isPinned: (key) => pinned === null || pinned.has(key),
    track(res) {
      responses.add(res);
      return () => responses.delete(res);
    },
    async close() {
      unsubscribe();
      if (pinTimer !== null) clearTimeout(pinTimer);
      const cancelled = manager.close();
      for (const res of responses) res.destroy();
      responses.clear();
      await cancelled;
      store.close();
    },
  };
}

function clip(text: string, max = 300): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

const AUDITED: Partial<Record<CacheJobEvent['type'], EventKind>> = {
  started: 'cache.download.started',
  completed: 'cache.downloaded',
  failed: 'cache.download.failed',
  cancelled: 'cache.download.cancelled',
};

function auditOf(event: CacheJobEvent): NewEvent | null {
  const kind = AUDITED[event.type];
  if (!kind) return null;
  const job = event.job;
  const how = job.pull_through ? 'pull-through fill' : 'download';
  const summary =
    event.type === 'started'
      ? `cache ${how} of ${job.origin} started`
      : event.type === 'completed'
        ? `cache ${how} of ${job.origin} done: ${job.bytes_done} bytes, ${job.digest ?? ''}`
        : event.type === 'failed'
          ? `cache ${how} of ${job.origin} failed: ${job.error ?? 'unknown error'}`
          : `cache ${how} of ${job.origin} cancelled`;
  return {
    kind,
    summary: clip(summary),
    subjectKind: 'catalog',
    subjectId: job.key,
    actor: 'system',
    sourceIp: null,
    details: {
      origin: job.origin,
      ref: job.key,
      pull_through: job.pull_through,
      bytes: job.bytes_done,
      ...(job.digest ? { digest: job.digest } : {}),
      ...(job.error ? { error: job.error, error_code: job.error_code } : {}),
    },
  };
}

/** The cache's state of one origin, as the API and the console show it. */
export interface CacheState {
  state: 'cached' | 'queued' | 'running' | 'failed' | 'cancelled' | 'absent';
  size: number | null;
  digest: string | null;
  bytes_done: number;
  bytes_total: number | null;
  rate: number;
  error: string | null;
  last_used_at: string | null;
  pull_through: boolean;
}

export function cacheStateOf(cache: ArtifactCache, origin: string): CacheState {
  let key: string;
  try {
    key = cacheKey(origin);
  } catch {
    return absent();
  }
  const entry: CacheEntry | undefined = cache.store.lookupKey(key);
  const job: CacheJob | undefined = cache.manager.job(origin);
  const live = job && (job.state === 'queued' || job.state === 'running') ? job : null;
  if (live) {
    return {
      state: live.state as 'queued' | 'running',
      size: entry?.size ?? null,
      digest: entry?.digest ?? null,
      bytes_done: live.bytes_done,
      bytes_total: live.bytes_total,
      rate: live.rate,
      error: null,
      last_used_at: entry?.last_used_at ?? null,
      pull_through: live.pull_through,
    };
  }
  if (entry) {
    return {
      state: 'cached',
      size: entry.size,
      digest: entry.digest,
      bytes_done: entry.size,
      bytes_total: entry.size,
      rate: 0,
      error: null,
      last_used_at: entry.last_used_at,
      pull_through: false,
    };
  }
  if (job && (job.state === 'failed' || job.state === 'cancelled')) {
    return { ...absent(), state: job.state, error: job.error, pull_through: job.pull_through };
  }
  return absent();
}

function absent(): CacheState {
  return {
    state: 'absent',
    size: null,
    digest: null,
    bytes_done: 0,
    bytes_total: null,
    rate: 0,
    error: null,
    last_used_at: null,
    pull_through: false,
  };
}
