/** The audit log: append-only rows, listed newest first with filters and id-based paging. */
import type { Kysely, Transaction } from 'kysely';
import type { Database } from './schema.ts';

export interface NewEvent {
  kind: string;
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
