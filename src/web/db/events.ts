/** The audit log: append-only rows, listed newest first with filters and id-based paging. */
import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import type { EventKind } from '../event-kinds.ts';
import type { Database, EventsTable } from './schema.ts';
import { OPEN_FAILURE } from './migrations.ts';

export interface NewEvent {
  kind: EventKind;
  summary: string;
  subjectKind?: string | null;
  subjectId?: string | null;
  actor?: string | null;
  sourceIp?: string | null;
  details?: Record<string, unknown> | null;
}

export interface EventRow {
  id: number;
  ts: string;
  kind: string;
  subject_kind: string | null;
  subject_id: string | null;
  actor: string | null;
  source_ip: string | null;
  summary: string;
  details: Record<string, unknown> | null;
  acknowledged: boolean;
}

type Db = Kysely<Database> | Transaction<Database>;

export async function appendEvent(db: Db, event: NewEvent, now: Date): Promise<number> {
  const row = await db
    .insertInto('events')
    .values({
      ts: now.toISOString(),
      kind: event.kind,
      subject_kind: event.subjectKind ?? null,
      subject_id: event.subjectId ?? null,
      actor: event.actor ?? null,
      source_ip: event.sourceIp ?? null,
      summary: event.summary,
      details: event.details ? JSON.stringify(event.details) : null,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return Number(row.id);
}

export interface EventQuery {
  kind?: string;
  subjectKind?: string;
  subjectId?: string;
  /** Only events with a smaller id (the next page of a newest-first listing). */
  beforeId?: number;
  limit?: number;
}

export async function listEvents(db: Db, query: EventQuery = {}): Promise<EventRow[]> {
  let q = db.selectFrom('events').selectAll();
  if (query.kind) q = q.where('kind', '=', query.kind);
  if (query.subjectKind) q = q.where('subject_kind', '=', query.subjectKind);
  if (query.subjectId) q = q.where('subject_id', '=', query.subjectId);
  if (query.beforeId !== undefined) q = q.where('id', '<', query.beforeId);
  const rows = await q
    .orderBy('id', 'desc')
    .limit(Math.min(Math.max(query.limit ?? 100, 1), 1000))
    .execute();
  return rows.map((r) => ({
    ...r,
    id: Number(r.id),
    details: r.details ? (JSON.parse(r.details) as Record<string, unknown>) : null,
    acknowledged: Number(r.acknowledged) !== 0,
  }));
}

/** Upstream's `GET /events` filters (all exact matches) and id-based paging. */
export interface EventFilter {
  kind?: string;
  subjectKind?: string;
  subjectId?: string;
  actor?: string;
  sourceIp?: string;
  /** Only failures: kinds ending in `failed` (`machine.flash_failed` included). */
  failed?: boolean;
  /** Only events with a smaller id (the next page of a newest-first listing). */
  beforeId?: number;
  /** Page size, clamped to [1, 500]; default 50. */
  limit?: number;
}

export const EVENTS_PAGE_DEFAULT = 50;
export const EVENTS_PAGE_MAX = 500;

/** Details that are not a JSON object (corrupt, an array, a number) read back as null. */
function detailsOf(text: string | null): Record<string, unknown> | null {
  if (!text) return null;
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

/** Events newest first (id descending) matching every given filter. */
export async function queryEvents(db: Db, filter: EventFilter = {}): Promise<EventRow[]> {
  let q = db.selectFrom('events').selectAll();
  if (filter.kind) q = q.where('kind', '=', filter.kind);
  if (filter.subjectKind) q = q.where('subject_kind', '=', filter.subjectKind);
  if (filter.subjectId) q = q.where('subject_id', '=', filter.subjectId);
  if (filter.actor) q = q.where('actor', '=', filter.actor);
  if (filter.sourceIp) q = q.where('source_ip', '=', filter.sourceIp);
  if (filter.failed) q = q.where('kind', 'like', '%failed');
  if (filter.beforeId !== undefined) q = q.where('id', '<', filter.beforeId);
  const limit = Math.min(
    Math.max(Math.trunc(filter.limit ?? EVENTS_PAGE_DEFAULT), 1),
    EVENTS_PAGE_MAX,
  );
  const rows = await q.orderBy('id', 'desc').limit(limit).execute();
  return rows.map((r) => ({
    ...r,
    id: Number(r.id),
    details: detailsOf(r.details),
    acknowledged: Number(r.acknowledged) !== 0,
  }));
}

/** Marks an event acknowledged (idempotent); false when there is no event with that id. */
export async function acknowledgeEvent(db: Db, id: number): Promise<boolean> {
  const r = await db
    .updateTable('events')
    .set({ acknowledged: 1 })
    .where('id', '=', id)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/** Marks an event unacknowledged again (idempotent); false when there is no event with that id. */
export async function unacknowledgeEvent(db: Db, id: number): Promise<boolean> {
  const r = await db
    .updateTable('events')
    .set({ acknowledged: 0 })
    .where('id', '=', id)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

type StoredEvent = Selectable<EventsTable>;

function eventRowOf(r: StoredEvent): EventRow {
  return {
    ...r,
    id: Number(r.id),
    details: detailsOf(r.details),
    acknowledged: Number(r.acknowledged) !== 0,
  };
}

/** The columns the UI's one search box looks in. */
const SEARCHED_COLUMNS = [
  'kind',
  'subject_kind',
  'subject_id',
  'actor',
  'source_ip',
  'summary',
] as const;

/** `!` escapes LIKE's wildcards: a typed `%` or `_` is a character, not a pattern. */
function likeContaining(text: string): string {
  return `%${text.replace(/[!%_]/g, (c) => `!${c}`)}%`;
}

/**
 * `q` as a case-insensitive substring of any searched column. Both sides go through the
 * engine's `lower()`, so SQLite (ASCII-only lower) and PostgreSQL each agree with themselves.
 */
function whereMatches(q: string) {
  const pattern = likeContaining(q);
  return sql<boolean>`(${sql.join(
    SEARCHED_COLUMNS.map(
      (column) => sql`lower(${sql.ref(column)}) like lower(${pattern}) escape '!'`,
    ),
    sql` or `,
  )})`;
}

export interface EventSearch {
  /** Trimmed search text; empty matches every event. */
  q?: string;
  limit?: number;
  offset?: number;
}

/** One page of the events matching `q`, newest first (id descending). */
export async function searchEvents(db: Db, search: EventSearch = {}): Promise<EventRow[]> {
  const q = search.q?.trim() ?? '';
  let query = db.selectFrom('events').selectAll();
  if (q !== '') query = query.where(whereMatches(q));
  const limit = Math.min(
    Math.max(Math.trunc(search.limit ?? EVENTS_PAGE_DEFAULT), 1),
    EVENTS_PAGE_MAX,
  );
  const offset = Math.max(Math.trunc(search.offset ?? 0), 0);
  const rows = await query.orderBy('id', 'desc').limit(limit).offset(offset).execute();
  return rows.map(eventRowOf);
}

/** How many events match `q` (the pager's total). */
export async function countEvents(db: Db, search: Pick<EventSearch, 'q'> = {}): Promise<number> {
  const q = search.q?.trim() ?? '';
  let query = db.selectFrom('events').select((eb) => eb.fn.countAll<number>().as('n'));
  if (q !== '') query = query.where(whereMatches(q));
  const row = await query.executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Failures (kinds ending in `failed`) nobody has acknowledged yet, newest first. */
export async function listUnacknowledgedFailures(db: Db, limit: number): Promise<EventRow[]> {
  const rows = await db
    .selectFrom('events')
    .selectAll()
    .where(OPEN_FAILURE)
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
  return rows.map(eventRowOf);
}

/** Upstream's tripwire: how many failures are not acknowledged. */
export async function countUnacknowledgedFailures(db: Db): Promise<number> {
  const row = await db
    .selectFrom('events')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where(OPEN_FAILURE)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Acknowledges every listed event that exists; returns how many there were. */
export async function acknowledgeEvents(db: Db, ids: readonly number[]): Promise<number> {
  if (ids.length === 0) return 0;
  const r = await db
    .updateTable('events')
    .set({ acknowledged: 1 })
    .where('id', 'in', [...ids])
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}
