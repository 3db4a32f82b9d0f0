/**
 * The artifact cache over HTTP (issue 7).
 *
 * Open (machines fetch without a session):
 * - `GET|HEAD /b/<token>/<name>`: image bytes, withcache's path shape (token = URL-safe Base64 of
 *   the origin). A cached entry is served with Content-Length, ETag (its digest) and ranges. Not
 *   cached: with `[cache] mode = "pull-through"` a catalog image starts (or joins) one upstream
 *   fill that every concurrent request reads while it grows; otherwise 404 with what to do.
 *   Only catalog images are ever fetched, so this is not an open proxy.
 *
 * Operator (session):
 * - `GET /cache`: mode, usage, entries, downloads.
 * - `POST /cache/downloads` `{"ref"}` or `{"bound": true}`: pre-fetch one entry, or every image
 *   a machine is bound to. 202 with the jobs.
 * - `DELETE /cache/downloads/{ref}`: cancel. `DELETE /cache/entries/{ref}`: drop a cached copy.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  blobPath,
  cacheKey,
  originOfBlobPath,
  serveArtifact,
  type CacheJob,
} from '../../cache/index.ts';
import { isBtyError } from '../../core/errors.ts';
import { reprString } from '../../core/python-repr.ts';
import { artifactsOf, cacheStateOf } from '../artifacts.ts';
import { auditMessage } from '../bus.ts';
import { clientIp, detail, type WebContext } from '../context.ts';
import { getCatalogEntry, listCatalogEntries, type StoredCatalogEntry } from '../db/catalog.ts';
import { appendEvent, type NewEvent } from '../db/events.ts';
import { errors, noContent, protectedRoute, textResponse, type JsonSchema } from '../openapi.ts';
import { cacheable, digestHex } from '../plan-image.ts';
import { requireSession } from './auth.ts';

const REF = /^[0-9a-f]{64}$/;

const JOB_SCHEMA: JsonSchema = {
  type: 'object',
  description: 'A download: queued, running or finished.',
  properties: {
    id: { type: 'string' },
    origin: { type: 'string' },
    key: { type: 'string', description: 'The cache key: the catalog ref of the origin.' },
    state: { enum: ['queued', 'running', 'completed', 'failed', 'cancelled'] },
    pull_through: { type: 'boolean', description: 'Started by a machine, not an operator.' },
    bytes_done: { type: 'integer' },
    bytes_total: { type: ['integer', 'null'] },
    rate: { type: 'number', description: 'Bytes per second, lately.' },
    queued_at: { type: 'string' },
    started_at: { type: ['string', 'null'] },
    finished_at: { type: ['string', 'null'] },
    error: { type: ['string', 'null'] },
    error_code: { type: ['string', 'null'] },
    digest: { type: ['string', 'null'], description: '`sha256:<hex>`.' },
  },
};

const REF_PARAM: JsonSchema = {
  type: 'object',
  required: ['ref'],
  properties: { ref: { type: 'string', description: 'A catalog ref (64 hex digits).' } },
};

function blobDoc(head: boolean) {
  return {
    summary: head ? 'Cached image headers' : 'Cached image bytes',
    description:
      (head ? 'The headers of `GET /b/{token}/{name}` without the body. ' : '') +
      'An image through the artifact cache: `token` is the URL-safe Base64 (no padding) of the origin URL, `name` its file name (withcache’s path shape). Content-Length always, ETag = the digest, one byte range. Pull-through mode fetches a catalog image on its first request and streams it while the cache fills.',
    tags: ['cache' as const],
    response: {
      200: head
        ? noContent('Cached or filling: its headers.')
        : textResponse('application/octet-stream', 'The image.', 'binary'),
      206: textResponse('application/octet-stream', 'The byte range asked for.', 'binary'),
      416: noContent('The range is outside the image (`Content-Range: bytes */size`).'),
      ...errors({
        400: 'The token does not decode to a URL: `missing url`.',
        404: 'Not cached (curated mode) or not a catalog image: the message says what to do.',
        502: 'The upstream fill could not start.',
      }),
    },
  };
}

const CACHE_DOC = protectedRoute({
  summary: 'Artifact cache',
  description:
    'The mode, the size limit and usage, every cached entry (with its serve path and whether a bound machine pins it) and the downloads (running first, then the latest finished).',
  tags: ['cache'],
  response: {
    200: {
      description: 'The cache.',
      type: 'object',
      properties: {
        mode: { enum: ['pull-through', 'curated'] },
        dir: { type: 'string' },
        max_bytes: { type: 'integer', description: '0: no limit.' },
        used_bytes: { type: 'integer' },
        withcache: { type: ['string', 'null'], description: 'An external withcache plans use.' },
        entries: {
          type: 'array',
          items: {
            type: 'object',
            properties: {
              ref: { type: 'string' },
              origin: { type: 'string' },
              digest: { type: 'string' },
              size: { type: 'integer' },
              content_type: { type: 'string' },
              fetched_at: { type: 'string' },
              last_used_at: { type: 'string' },
              serve_path: { type: 'string' },
              pinned: { type: 'boolean', description: 'A machine is bound to it: never evicted.' },
              catalog_name: { type: ['string', 'null'] },
            },
          },
        },
        downloads: { type: 'array', items: JOB_SCHEMA },
      },
    },
  },
});

const DOWNLOAD_DOC = protectedRoute({
  summary: 'Download into the cache',
  description:
    'Pre-fetches a catalog entry (`{"ref"}`) or every image a machine is bound to (`{"bound": true}`) into the cache, verified against the catalog’s sha256. Entries already cached are listed in `cached`.',
  tags: ['cache'],
  body: {
    content: {
      'application/json': {
        schema: {
          type: 'object',
          additionalProperties: false,
          properties: { ref: { type: 'string' }, bound: { const: true } },
        },
      },
    },
  },
  response: {
    202: {
      description: 'Queued (or joined a download already under way).',
      type: 'object',
      properties: {
        downloads: { type: 'array', items: JOB_SCHEMA },
        cached: { type: 'array', items: { type: 'string' }, description: 'Refs already cached.' },
        skipped: {
          type: 'array',
          items: { type: 'string' },
          description:
            'Bound refs that cannot be cached (not in the catalog, or a file:// source).',
        },
      },
    },
    ...errors({
      404: 'No catalog entry with that ref.',
      415: 'The body is not JSON.',
      422: 'The body is neither `{"ref"}` nor `{"bound": true}`, or the source cannot be cached.',
    }),
  },
});

const CANCEL_DOC = protectedRoute({
  summary: 'Cancel a download',
  description:
    'Stops the queued or running download of a catalog entry; its partial file is removed.',
  tags: ['cache'],
  params: REF_PARAM,
  response: {
    200: { ...JOB_SCHEMA, description: 'The download, now cancelled (or cancelling).' },
    ...errors({ 400: 'Not a ref.', 404: 'No download under way for that ref.' }),
  },
});

const REMOVE_DOC = protectedRoute({
  summary: 'Drop a cached image',
  description:
    'Removes the cached copy of a catalog entry (the blob goes when no other entry shares it). Machines bound to it fetch it again (pull-through) or from the origin (curated).',
  tags: ['cache'],
  params: REF_PARAM,
  response: {
    204: noContent('Removed.'),
    ...errors({
      400: 'Not a ref.',
      404: 'Nothing cached for that ref.',
      409: 'A download of it is under way.',
    }),
  },
});

/** How long a fill that failed its digest keeps machines from starting the same fill again. */
const INTEGRITY_HOLD_MS = 10 * 60_000;

/**
 * The latest job of an origin when it failed the digest the catalog still expects, recently;
 * else null. A changed catalog sha256, or an operator's new download, lifts it.
 */
function recentIntegrityFailure(
  job: CacheJob | undefined,
  entry: StoredCatalogEntry,
  now: Date,
): CacheJob | null {
  if (!job || job.state !== 'failed' || job.error_code !== 'BTY_ERR_INTEGRITY') return null;
  if (!job.finished_at || now.getTime() - Date.parse(job.finished_at) > INTEGRITY_HOLD_MS) {
    return null;
  }
  const expected = digestHex(entry.sha256);
  if (expected !== null && digestHex(job.digest) !== null && digestHex(job.digest) !== expected) {
    return null;
  }
  return job;
}

/** Why an entry cannot be downloaded into the cache, or null. */
function uncacheable(entry: StoredCatalogEntry): string | null {
  return cacheable(entry.src)
    ? null
    : `${entry.name}: a ${reprString(entry.src.split(':')[0] ?? '')} source is read by the live environment itself, not cached`;
}

export function registerCacheRoutes(app: FastifyInstance, ctx: WebContext): void {
  const { db } = ctx.database;
  const guard = requireSession(ctx);

  const blobRoute = async (req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split('?')[0]!;
    const asked = originOfBlobPath(path);
    if (!asked) return detail(reply, 400, 'missing url');
    const cache = artifactsOf(ctx);
    let ref: string | null;
    try {
      ref = cacheKey(asked);
    } catch {
      ref = null; // Not a source bty knows (no canonical form): never in the catalog.
    }
    const entry = ref ? await getCatalogEntry(db, ref) : null;
    // What is fetched is always the catalog's own src, never the string in the URL: another
    // spelling with the same canonical form (a `\` or `@` that URL parsers read differently)
    // must not send the cache to a host of the client's choosing.
    const origin = entry ? entry.src : asked;
    const pullThrough = cache.mode === 'pull-through' && entry !== null && cacheable(origin);
    // Eviction must know every bound image before a fill makes room.
    if (pullThrough) await cache.refreshPins();
    const refused = entry
      ? recentIntegrityFailure(cache.manager.job(origin), entry, ctx.now())
      : null;
    if (refused && !cache.store.lookupKey(refused.key)) {
      // Filling again would fetch the same wrong bytes: say why, in words and as a code the
      // bty agent turns into an integrity failure (exit 4) instead of retrying.
      const words =
        `integrity: ${entry!.name} from ${origin} does not match the catalog's sha256 ` +
        `(${refused.error ?? 'digest mismatch'}); fix the catalog entry or the origin, ` +
        'then download it again';
      return (
        reply
          .code(502)
          .header('x-bty-error', 'BTY_ERR_INTEGRITY')
          // A HEAD has no body: the words travel in a header too (printable ASCII only).
          .header('x-bty-detail', words.replace(/[^\x20-\x7e]/g, '?').slice(0, 1000))
          .type('application/json')
          .send({ detail: words })
      );
    }
    let target;
    try {
      target = cache.manager.open(origin, {
        expectedSha256: entry?.sha256 ?? null,
        expectedSize: entry?.size_bytes ?? null,
        allowFill: pullThrough,
      });
    } catch (err) {
      return detail(reply, 502, `cannot fill the cache: ${(err as Error).message}`);
    }
    if (target === null) {
      return detail(
        reply,
        404,
        entry === null
          ? `not cached: ${origin} is not in the catalog (only catalog images are fetched through the cache)`
          : `not cached: ${entry.name} (${origin}); download it on the Catalog page or with POST /cache/downloads`,
      );
    }
    reply.hijack();
    // Image downloads are never idle: shutdown cuts them (see closeArtifacts) rather than wait.
    const untrack = cache.track(reply.raw);
    try {
      await serveArtifact(req.raw, reply.raw, target);
    } catch {
      if (!reply.raw.headersSent) {
        reply.raw.writeHead(500, { 'content-type': 'application/json' });
        reply.raw.end(JSON.stringify({ detail: 'internal error' }));
      } else {
        reply.raw.destroy();
      }
    } finally {
      untrack();
    }
    return reply;
  };
  app.get('/b/*', { schema: blobDoc(false) }, blobRoute);
  app.head(
    '/b/*',
    { schema: blobDoc(true), config: { swagger: { exposeHeadRoute: true } } },
    blobRoute,
  );

  app.get('/cache', { onRequest: guard, schema: CACHE_DOC }, async () => {
    const cache = artifactsOf(ctx);
    await cache.refreshPins();
    const names = new Map((await listCatalogEntries(db)).map((e) => [e.ref, e.name]));
    return {
      mode: cache.mode,
      dir: cache.dir,
      max_bytes: cache.store.maxBytes,
      used_bytes: cache.store.usedBytes(),
      withcache: cache.withcacheBase || null,
      entries: cache.store.entries().map((e) => ({
        ref: e.key,
        origin: e.origin,
        digest: e.digest,
        size: e.size,
        content_type: e.content_type,
        fetched_at: e.fetched_at,
        last_used_at: e.last_used_at,
        serve_path: blobPath(e.origin),
        pinned: cache.isPinned(e.key),
        catalog_name: names.get(e.key) ?? null,
      })),
      downloads: cache.manager.jobs(),
    };
  });

  app.post<{ Body: unknown }>(
    '/cache/downloads',
    { onRequest: guard, schema: DOWNLOAD_DOC },
    async (req, reply) => {
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/json') {
        return detail(reply, 415, 'content-type: must be application/json');
      }
      const body = req.body as Record<string, unknown> | null;
      const shape = 'body: must be {"ref": "<64 hex>"} or {"bound": true}';
      if (typeof body !== 'object' || body === null || Array.isArray(body)) {
        return detail(reply, 422, shape);
      }
      const extra = Object.keys(body).filter((k) => k !== 'ref' && k !== 'bound');
      if (extra.length > 0) return detail(reply, 422, `unknown field(s): ${extra.join(', ')}`);
      let result: DownloadResult;
      if (body.bound === true && body.ref === undefined) {
        result = await downloadBound(ctx, clientIp(req, ctx.trustedProxy));
      } else if (typeof body.ref === 'string' && body.bound === undefined) {
        const ref = body.ref.toLowerCase();
        if (!REF.test(ref)) return detail(reply, 422, `ref: must be 64 hexadecimal characters`);
        const entry = await getCatalogEntry(db, ref);
        if (!entry) return detail(reply, 404, `no catalog entry with ref ${ref}`);
        const problem = uncacheable(entry);
        if (problem) return detail(reply, 422, problem);
        result = await downloadEntries(ctx, [entry], clientIp(req, ctx.trustedProxy), 'entry');
      } else {
        return detail(reply, 422, shape);
      }
      return reply.code(202).send(result);
    },
  );

  app.delete<{ Params: { ref: string } }>(
    '/cache/downloads/:ref',
    { onRequest: guard, schema: CANCEL_DOC },
    async (req, reply) => {
      const ref = req.params.ref.toLowerCase();
      if (!REF.test(ref))
        return detail(reply, 400, `invalid ref: ${reprString(req.params.ref.slice(0, 80))}`);
      const cache = artifactsOf(ctx);
      const job = cache.manager
        .jobs()
        .find((j) => j.key === ref && (j.state === 'queued' || j.state === 'running'));
      if (!job || !cache.manager.cancel(job.origin)) {
        return detail(reply, 404, `no download under way for ref ${ref}`);
      }
      return cache.manager.job(job.origin) ?? job;
    },
  );

  app.delete<{ Params: { ref: string } }>(
    '/cache/entries/:ref',
    { onRequest: guard, schema: REMOVE_DOC },
    async (req, reply) => {
      const ref = req.params.ref.toLowerCase();
      if (!REF.test(ref))
        return detail(reply, 400, `invalid ref: ${reprString(req.params.ref.slice(0, 80))}`);
      const result = await removeCached(ctx, ref, clientIp(req, ctx.trustedProxy));
      if (result === 'absent') return detail(reply, 404, `nothing cached for ref ${ref}`);
      if (result === 'busy')
        return detail(reply, 409, `a download of ref ${ref} is under way: cancel it first`);
      return reply.code(204).send();
    },
  );
}

export interface DownloadResult {
  downloads: CacheJob[];
  cached: string[];
  skipped: string[];
}

/** Queues downloads of catalog entries (logged per entry as `cache.download.requested`). */
export async function downloadEntries(
  ctx: WebContext,
  entries: readonly StoredCatalogEntry[],
  sourceIp: string | null,
  why: 'entry' | 'bound',
): Promise<DownloadResult> {
  const cache = artifactsOf(ctx);
  await cache.refreshPins();
  const result: DownloadResult = { downloads: [], cached: [], skipped: [] };
  for (const entry of entries) {
    if (uncacheable(entry)) {
      result.skipped.push(entry.ref);
      continue;
    }
    let handle;
    try {
      handle = cache.manager.fetch(entry.src, {
        expectedSha256: entry.sha256,
        expectedSize: entry.size_bytes,
      });
    } catch (err) {
      if (!isBtyError(err)) throw err;
      result.skipped.push(entry.ref);
      continue;
    }
    if (handle.job === null) {
      result.cached.push(entry.ref);
      continue;
    }
    result.downloads.push(handle.job);
    await log(ctx, {
      kind: 'cache.download.requested',
      summary: `operator asked for ${entry.name} in the cache${why === 'bound' ? ' (bound images)' : ''}`,
      subjectKind: 'catalog',
      subjectId: entry.ref,
      actor: 'operator',
      sourceIp,
      details: { origin: entry.src, ref: entry.ref, name: entry.name, reason: why },
    });
  }
  return result;
}

/** Every image some machine is bound to, downloaded if it is not cached yet. */
export async function downloadBound(
  ctx: WebContext,
  sourceIp: string | null,
): Promise<DownloadResult> {
  const rows = await ctx.database.db
    .selectFrom('machines')
    .select('bty_image_ref')
    .distinct()
    .where('bty_image_ref', 'is not', null)
    .execute();
  const refs = new Set(rows.map((r) => r.bty_image_ref!.toLowerCase()));
  const entries = (await listCatalogEntries(ctx.database.db)).filter((e) => refs.has(e.ref));
  const result = await downloadEntries(ctx, entries, sourceIp, 'bound');
  const inCatalog = new Set(entries.map((e) => e.ref));
  for (const ref of refs) if (!inCatalog.has(ref)) result.skipped.push(ref);
  return result;
}

/** Drops the cached copy of `ref`: `removed`, `absent` (nothing cached) or `busy` (filling). */
export async function removeCached(
  ctx: WebContext,
  ref: string,
  sourceIp: string | null,
): Promise<'removed' | 'absent' | 'busy'> {
  const cache = artifactsOf(ctx);
  const entry = cache.store.lookupKey(ref);
  if (!entry) return 'absent';
  const state = cacheStateOf(cache, entry.origin).state;
  if (state === 'queued' || state === 'running') return 'busy';
  if (!cache.store.remove(entry.origin)) return 'absent';
  await log(ctx, {
    kind: 'cache.entry.removed',
    summary: `operator removed ${entry.origin} from the cache (${entry.size} bytes)`,
    subjectKind: 'catalog',
    subjectId: ref,
    actor: 'operator',
    sourceIp,
    details: { origin: entry.origin, ref, digest: entry.digest, size: entry.size },
  });
  ctx.bus.publish({ type: 'cache', url: entry.origin, ref, status: 'removed' });
  return 'removed';
}

async function log(ctx: WebContext, event: NewEvent): Promise<void> {
  const id = await appendEvent(ctx.database.db, event, ctx.now());
  ctx.bus.publish(auditMessage(id, { ...event, subject_id: event.subjectId }));
}
