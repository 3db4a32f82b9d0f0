/**
 * The audit log's JSON API (session required): `GET /events` with upstream's filters and
 * id-based paging, and `POST /events/{id}/ack`. Registered by `./machines.ts` inside its
 * operator scope (its JSON parser and error handler).
 */
import type { FastifyInstance } from 'fastify';
import { detail, type WebContext } from '../context.ts';
import { acknowledgeEvent, queryEvents, type EventFilter } from '../db/events.ts';
import { requireSession } from './auth.ts';

/** Query parameters arrive as a string, or as a list when repeated. */
type QueryValue = string | string[] | undefined;

export type EventQueryResult = { ok: true; filter: EventFilter } | { ok: false; message: string };

/** The largest id a client may name: ids are JavaScript-safe integers on both engines. */
const MAX_ID = Number.MAX_SAFE_INTEGER;
const INTEGER = /^[+-]?\d{1,16}$/;

function one(name: string, value: QueryValue): string | undefined {
  if (Array.isArray(value)) throw new QueryError(`${name}: given more than once`);
  if (value !== undefined && value.includes('\u0000')) {
    throw new QueryError(`${name}: must not contain NUL`);
  }
  return value;
}

function integer(name: string, value: QueryValue): number | undefined {
  const text = one(name, value);
  if (text === undefined) return undefined;
  const n = INTEGER.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isSafeInteger(n)) {
    throw new QueryError(`${name}: must be an integer, got ${JSON.stringify(text.slice(0, 64))}`);
  }
  return n;
}

class QueryError extends Error {}

/**
 * Validates `GET /events` parameters. Filters are exact matches (empty means no filter);
 * `failed` is any non-empty value (even "0"); `before_id` must be a positive integer; `limit`
 * must be an integer and is clamped to [1, 500] as upstream does. Unknown parameters are
 * ignored, as upstream does.
 */
export function parseEventQuery(query: Record<string, QueryValue>): EventQueryResult {
  try {
    const beforeId = integer('before_id', query.before_id);
    if (beforeId !== undefined && (beforeId < 1 || beforeId > MAX_ID)) {
      throw new QueryError(`before_id: must be a positive integer, got ${beforeId}`);
    }
    const filter: EventFilter = {
      kind: one('kind', query.kind) || undefined,
      subjectKind: one('subject_kind', query.subject_kind) || undefined,
      subjectId: one('subject_id', query.subject_id) || undefined,
      actor: one('actor', query.actor) || undefined,
      sourceIp: one('source_ip', query.source_ip) || undefined,
      failed: (one('failed', query.failed) ?? '') !== '',
      beforeId,
      limit: integer('limit', query.limit),
    };
    return { ok: true, filter };
  } catch (err) {
    if (err instanceof QueryError) return { ok: false, message: err.message };
    throw err;
  }
}

export function registerEventRoutes(scope: FastifyInstance, ctx: WebContext): void {
  const { db } = ctx.database;
  const guard = { onRequest: requireSession(ctx) };

  scope.get<{ Querystring: Record<string, QueryValue> }>('/events', guard, async (req, reply) => {
    const parsed = parseEventQuery(req.query);
    if (!parsed.ok) return detail(reply, 422, parsed.message);
    const events = await queryEvents(db, parsed.filter);
    return { events };
  });

  scope.post<{ Params: { id: string } }>('/events/:id/ack', guard, async (req, reply) => {
    const raw = req.params.id;
    const id = /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(id) || id < 1) {
      return detail(
        reply,
        422,
        `id: must be a positive integer, got ${JSON.stringify(raw.slice(0, 64))}`,
      );
    }
    if (!(await acknowledgeEvent(db, id))) return detail(reply, 404, `no event with id ${id}`);
    return { id, acknowledged: true };
  });
}
