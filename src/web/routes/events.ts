/**
 * The audit log's JSON API (session required): `GET /events` with upstream's filters and
 * id-based paging, and `POST /events/{id}/ack`. Registered by `./machines.ts` inside its
 * operator scope (its JSON parser and error handler).
 */
import type { FastifyInstance } from 'fastify';
import { detail, type WebContext } from '../context.ts';
import {
  acknowledgeEvent,
  EVENTS_PAGE_DEFAULT,
  EVENTS_PAGE_MAX,
  queryEvents,
  type EventFilter,
} from '../db/events.ts';
import { NULLABLE_STRING, errors, protectedRoute, type JsonSchema } from '../openapi.ts';
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

// ---------------------------------------------------------------------------------------------
// Documentation (GET /openapi.json); parseEventQuery is what the route applies
// ---------------------------------------------------------------------------------------------

const filter = (description: string): JsonSchema => ({ type: 'string', description });

const EVENT_SCHEMA: JsonSchema = {
  type: 'object',
  required: [
    'id',
    'ts',
    'kind',
    'subject_kind',
    'subject_id',
    'actor',
    'source_ip',
    'summary',
    'details',
    'acknowledged',
  ],
  properties: {
    id: { type: 'integer' },
    ts: { type: 'string', description: 'When, ISO-8601 UTC.' },
    kind: { type: 'string', examples: ['machine.created', 'netboot.pxe.offered'] },
    subject_kind: NULLABLE_STRING,
    subject_id: NULLABLE_STRING,
    actor: NULLABLE_STRING,
    source_ip: NULLABLE_STRING,
    summary: { type: 'string' },
    details: { type: ['object', 'null'] },
    acknowledged: { type: 'boolean' },
  },
};

const LIST_DOC = protectedRoute({
  summary: 'Audit log',
  description: 'Audit events, newest first, filtered by exact matches and paged by id.',
  tags: ['events'],
  querystring: {
    type: 'object',
    properties: {
      kind: filter('Only this kind.'),
      subject_kind: filter('Only this subject kind (machine, catalog, netboot, …).'),
      subject_id: filter('Only this subject (a MAC, a ref, a file name).'),
      actor: filter('Only this actor (operator, pxe-client, …).'),
      source_ip: filter('Only from this client IP.'),
      failed: filter('Any non-empty value: only failures (kinds ending in `failed`).'),
      before_id: {
        type: 'integer',
        minimum: 1,
        description: 'Only events older than this id (the next page).',
      },
      limit: {
        type: 'integer',
        default: EVENTS_PAGE_DEFAULT,
        description: `Page size, clamped to 1-${EVENTS_PAGE_MAX}.`,
      },
    },
  },
  response: {
    200: {
      description: 'One page of events.',
      type: 'object',
      required: ['events'],
      properties: { events: { type: 'array', items: EVENT_SCHEMA } },
    },
    ...errors({ 422: 'A parameter is malformed or repeated; the message names it.' }),
  },
});

const ACK_DOC = protectedRoute({
  summary: 'Acknowledge an event',
  description: 'Marks an audit event as seen.',
  tags: ['events'],
  params: {
    type: 'object',
    required: ['id'],
    properties: { id: { type: 'integer', minimum: 1 } },
  },
  response: {
    200: {
      description: 'Acknowledged (again, if it already was).',
      type: 'object',
      required: ['id', 'acknowledged'],
      properties: { id: { type: 'integer' }, acknowledged: { const: true } },
    },
    ...errors({ 404: 'No event with this id.', 422: 'The id is not a positive integer.' }),
  },
});

export function registerEventRoutes(scope: FastifyInstance, ctx: WebContext): void {
  const { db } = ctx.database;
  const onRequest = requireSession(ctx);

  scope.get<{ Querystring: Record<string, QueryValue> }>(
    '/events',
    { onRequest, schema: LIST_DOC },
    async (req, reply) => {
      const parsed = parseEventQuery(req.query);
      if (!parsed.ok) return detail(reply, 422, parsed.message);
      const events = await queryEvents(db, parsed.filter);
      return { events };
    },
  );

  scope.post<{ Params: { id: string } }>(
    '/events/:id/ack',
    { onRequest, schema: ACK_DOC },
    async (req, reply) => {
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
      ctx.bus.publish({ type: 'ack', ids: [id], acknowledged: true });
      return { id, acknowledged: true };
    },
  );
}
