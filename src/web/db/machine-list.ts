/**
 * The machines table of the browser UI as queries: search, filter, sort and one page, all done
 * by the database so a fleet of 10,000 machines costs one page of rows in memory. Four short
 * queries per page (the count, the rows, their labels, their latest flash failures), whatever
 * the fleet size. Plain SQL both engines share: LIKE with an explicit ESCAPE, `lower()`, CASE
 * for where NULLs sort (SQLite puts them first, PostgreSQL last; we say which).
 */
import { sql, type Expression, type Kysely, type SqlBool, type Transaction } from 'kysely';
import type { Database } from './schema.ts';
import { FLASHING_WINDOW_MS } from './stats.ts';

type Db = Kysely<Database> | Transaction<Database>;

export const MACHINE_FILTERS = ['discovered', 'assigned', 'flashing', 'failed'] as const;
export type MachineFilter = (typeof MACHINE_FILTERS)[number];

export const MACHINE_SORTS = [
  'mac',
  'boot_mode',
  'last_seen_at',
  'last_seen_ip',
  'last_flashed_at',
  'image',
] as const;
export type MachineSort = (typeof MACHINE_SORTS)[number];

/** Longer search text than this is cut: nothing stored is longer, and LIKE cost grows with it. */
export const MAX_SEARCH_LENGTH = 200;

/** What the operator asked the table for (paging apart). */
export interface MachineCriteria {
  /** Case-insensitive substring; '' for none. */
  search: string;
  filter: MachineFilter | null;
  sort: MachineSort;
  dir: 'asc' | 'desc';
  /** The moment "flashing now" is judged at (ctx.now()): see FLASHING_WINDOW_MS. */
  now: Date;
}

/** The latest `machine.flash_failed` event of a machine. */
export interface FlashFailure {
  ts: string;
  reason: string;
}

export interface MachineListRow {
  mac: string;
  bty_image_ref: string | null;
  /** The bound catalog entry's name; null when unbound or the ref has no entry. */
  image_name: string | null;
  boot_mode: string;
  last_seen_at: string | null;
  last_seen_ip: string | null;
  last_flashed_at: string | null;
  /** The agent's latest progress report (JSON text) while a flash runs. */
  progress: string | null;
  progress_at: string | null;
  /** Byte order. */
  labels: string[];
  /** The newest failure report, when it is newer than the last completed flash. */
  failure: FlashFailure | null;
}

/** The escape character of every LIKE here: not a backslash, whose meaning differs by engine. */
const ESCAPE = '!';

/** A LIKE pattern matching `text` anywhere, lower-cased, with its wildcards taken literally. */
export function containsPattern(text: string): string {
  const escaped = text.toLowerCase().replace(/[!%_]/g, (c) => ESCAPE + c);
  return `%${escaped}%`;
}

function likeLower(column: Expression<unknown>, pattern: string): Expression<SqlBool> {
  return sql<SqlBool>`lower(${column}) like ${pattern} escape '!'`;
}

/** The machines (joined to their catalog entry) that match `criteria`, unsorted. */
function matching(db: Db, criteria: MachineCriteria) {
  let query = db
    .selectFrom('machines as m')
    .leftJoin('catalog_entries as c', 'c.ref', 'm.bty_image_ref');
  const search = criteria.search.trim().slice(0, MAX_SEARCH_LENGTH);
  if (search !== '') {
    const pattern = containsPattern(search);
    query = query.where((eb) =>
      eb.or([
        likeLower(eb.ref('m.mac'), pattern),
        likeLower(eb.ref('m.bty_image_ref'), pattern),
        likeLower(eb.ref('m.boot_mode'), pattern),
        likeLower(eb.ref('m.last_seen_ip'), pattern),
        likeLower(eb.ref('c.name'), pattern),
        eb.exists(
          eb
            .selectFrom('machine_labels as l')
            .select(sql<number>`1`.as('one'))
            .whereRef('l.mac', '=', 'm.mac')
            .where((lb) => likeLower(lb.ref('l.label'), pattern)),
        ),
      ]),
    );
  }
  switch (criteria.filter) {
    case 'discovered':
      return query.where('m.bty_image_ref', 'is', null);
    case 'assigned':
      return query.where('m.bty_image_ref', 'is not', null);
    case 'flashing':
      // The dashboard's "flashing now" rule, so its count and this filter agree: an agent that
      // stopped reporting (powered off mid-flash) leaves its last progress behind for good.
      // Times are ISO-8601 UTC text in both engines, so they compare correctly as text.
      return query
        .where('m.progress', 'is not', null)
        .where(
          'm.progress_at',
          '>=',
          new Date(criteria.now.getTime() - FLASHING_WINDOW_MS).toISOString(),
        );
    case 'failed':
      // Not flashing now, and a failure report newer than the last completed flash (and than
      // the last progress): the same rule the Flash column applies to each row.
      return query.where('m.progress', 'is', null).where((eb) =>
        eb.exists(
          eb
            .selectFrom('events as e')
            .select(sql<number>`1`.as('one'))
            .where('e.subject_kind', '=', 'machine')
            .whereRef('e.subject_id', '=', 'm.mac')
            .where('e.kind', '=', 'machine.flash_failed')
            .where((fb) =>
              fb.and([
                fb.or([
                  fb('m.last_flashed_at', 'is', null),
                  fb('e.ts', '>', fb.ref('m.last_flashed_at')),
                ]),
                fb.or([fb('m.progress_at', 'is', null), fb('e.ts', '>', fb.ref('m.progress_at'))]),
              ]),
            ),
        ),
      );
    case null:
      return query;
  }
}

/** How many machines match (the pager's total). */
export async function countMachineList(db: Db, criteria: MachineCriteria): Promise<number> {
  const row = await matching(db, criteria)
    .select((eb) => eb.fn.countAll<number | string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

const SORT_COLUMNS = {
  mac: 'm.mac',
  boot_mode: 'm.boot_mode',
  last_seen_at: 'm.last_seen_at',
  last_seen_ip: 'm.last_seen_ip',
  last_flashed_at: 'm.last_flashed_at',
} as const;

/**
 * One page of matching machines in the asked order (NULLs first ascending, last descending;
 * MAC ascending breaks ties), with their labels and latest flash failure.
 */
export async function listMachineRows(
  db: Db,
  criteria: MachineCriteria,
  { limit, offset }: { limit: number; offset: number },
): Promise<MachineListRow[]> {
  let query = matching(db, criteria).select([
    'm.mac',
    'm.bty_image_ref',
    'c.name as image_name',
    'm.boot_mode',
    'm.last_seen_at',
    'm.last_seen_ip',
    'm.last_flashed_at',
    'm.progress',
    'm.progress_at',
  ]);
  const dir = criteria.dir;
  if (criteria.sort !== 'mac') {
    // The image sorts by what the cell shows: the entry's name, else the bare ref.
    const key =
      criteria.sort === 'image'
        ? sql`coalesce(${sql.ref('c.name')}, ${sql.ref('m.bty_image_ref')})`
        : sql.ref(SORT_COLUMNS[criteria.sort]);
    query = query.orderBy(sql`case when ${key} is null then 0 else 1 end`, dir).orderBy(key, dir);
  }
  const rows = await query
    .orderBy('m.mac', criteria.sort === 'mac' ? dir : 'asc')
    .limit(limit)
    .offset(offset)
    .execute();
  if (rows.length === 0) return [];

  const macs = rows.map((r) => r.mac);
  const labels = await labelsOf(db, macs);
  const failures = await latestFailuresOf(db, macs);
  return rows.map((r) => {
    const failure = failures.get(r.mac) ?? null;
    const current =
      failure !== null &&
      (r.last_flashed_at === null || failure.ts > r.last_flashed_at) &&
      (r.progress_at === null || failure.ts > r.progress_at);
    return {
      ...r,
      image_name: r.image_name ?? null,
      labels: labels.get(r.mac) ?? [],
      failure: current ? failure : null,
    };
  });
}

const byteOrder = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

async function labelsOf(db: Db, macs: readonly string[]): Promise<Map<string, string[]>> {
  const rows = await db
    .selectFrom('machine_labels')
    .select(['mac', 'label'])
    .where('mac', 'in', macs)
    .execute();
  const out = new Map<string, string[]>();
  for (const { mac, label } of rows) {
    const list = out.get(mac);
    if (list) list.push(label);
    else out.set(mac, [label]);
  }
  for (const list of out.values()) list.sort(byteOrder);
  return out;
}

/** The newest `machine.flash_failed` event of each MAC, in one query. */
async function latestFailuresOf(
  db: Db,
  macs: readonly string[],
): Promise<Map<string, FlashFailure>> {
  const rows = await db
    .selectFrom('events')
    .select(['subject_id', 'ts', 'summary', 'details'])
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('events')
        .select((fb) => fb.fn.max('id').as('id'))
        .where('subject_kind', '=', 'machine')
        .where('kind', '=', 'machine.flash_failed')
        .where('subject_id', 'in', macs)
        .groupBy('subject_id'),
    )
    .execute();
  const out = new Map<string, FlashFailure>();
  for (const row of rows) {
    if (row.subject_id === null) continue;
    out.set(row.subject_id, { ts: row.ts, reason: reasonOf(row.details) ?? row.summary });
  }
  return out;
}

/** The `reason` the agent gave (stored in the event's details), when there is one. */
function reasonOf(details: string | null): string | null {
  if (!details) return null;
  try {
    const value: unknown = JSON.parse(details);
    if (typeof value === 'object' && value !== null && 'reason' in value) {
      const reason = value.reason;
      return typeof reason === 'string' && reason.trim() !== '' ? reason : null;
    }
  } catch {
    // Corrupt details: the summary says it instead.
  }
  return null;
}
