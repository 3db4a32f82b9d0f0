/**
 * The server's image catalog: entries keyed by their ref (sha256 of the canonical src), added
 * one at a time by the operator or merged from a catalog TOML, removed one at a time.
 *
 * Names are unique as well as refs: every entry with a sha256 is published in `/catalog.toml`,
 * and a catalog with two entries of one name is refused by every reader (bty and upstream). The
 * store keeps that true; the routes validate the fields before they get here.
 *
 * Each change runs in one transaction together with its audit event, as `touchMachine` does.
 */
import type { Kysely, Selectable, Transaction } from 'kysely';
import { appendEvent, type NewEvent } from './events.ts';
import type { CatalogEntriesTable, Database } from './schema.ts';

type Db = Kysely<Database> | Transaction<Database>;

export type StoredCatalogEntry = Selectable<CatalogEntriesTable>;
/** An entry as validated by a route: everything but the store's own timestamps. */
export type CatalogEntryFields = Omit<StoredCatalogEntry, 'created_at' | 'updated_at'>;

/** The fields an import compares to decide between "updated" and "unchanged". */
const CONTENT_FIELDS = [
  'name',
  'src',
  'sha256',
  'format',
  'size_bytes',
  'description',
  'arch',
] as const satisfies ReadonlyArray<keyof CatalogEntryFields>;

/** Rows per multi-row insert: 10 columns each stays far below either engine's parameter limit. */
const INSERT_CHUNK = 100;

function byNameThenRef(a: CatalogEntryFields, b: CatalogEntryFields): number {
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  return a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0;
}

/** PostgreSQL's bigint parser already yields numbers; SQLite may too. This makes it certain. */
function fromRow(row: StoredCatalogEntry): StoredCatalogEntry {
  return { ...row, size_bytes: row.size_bytes === null ? null : Number(row.size_bytes) };
}

/**
 * Every entry, ordered by name (then ref) in code-unit order. Sorted here rather than in SQL so
 * both engines list identically whatever PostgreSQL's collation is.
 */
export async function listCatalogEntries(db: Db): Promise<StoredCatalogEntry[]> {
  const rows = await db.selectFrom('catalog_entries').selectAll().execute();
  return rows.map(fromRow).sort(byNameThenRef);
}

export async function getCatalogEntry(db: Db, ref: string): Promise<StoredCatalogEntry | null> {
  const row = await db
    .selectFrom('catalog_entries')
    .selectAll()
    .where('ref', '=', ref)
    .executeTakeFirst();
  return row ? fromRow(row) : null;
}

export type AddResult =
  | { outcome: 'added'; entry: StoredCatalogEntry; eventId: number | null }
  /** An entry with this ref (the same src, canonically) exists; nothing changed. */
  | { outcome: 'ref_exists'; existing: StoredCatalogEntry }
  /** Another entry already has this name; nothing changed. */
  | { outcome: 'name_taken'; existing: StoredCatalogEntry };

/**
 * Adds one entry. An existing ref or name is reported, never overwritten: re-adding an entry
 * must not silently change what bound machines flash. `audit` makes the event logged with it.
 */
export async function addCatalogEntry(
  db: Kysely<Database>,
  fields: CatalogEntryFields,
  now: Date,
  audit?: (entry: StoredCatalogEntry) => NewEvent,
): Promise<AddResult> {
  const at = now.toISOString();
  return db.transaction().execute(async (tx): Promise<AddResult> => {
    const sameRef = await getCatalogEntry(tx, fields.ref);
    if (sameRef) return { outcome: 'ref_exists', existing: sameRef };
    const sameName = await tx
      .selectFrom('catalog_entries')
      .selectAll()
      .where('name', '=', fields.name)
      .executeTakeFirst();
    if (sameName) return { outcome: 'name_taken', existing: fromRow(sameName) };
    const entry: StoredCatalogEntry = { ...fields, created_at: at, updated_at: at };
    // A concurrent add of the same ref loses here rather than failing the transaction.
    const inserted = await tx
      .insertInto('catalog_entries')
      .values(entry)
      .onConflict((oc) => oc.column('ref').doNothing())
      .returning('ref')
      .executeTakeFirst();
    if (!inserted) {
      const winner = await getCatalogEntry(tx, fields.ref);
      if (winner) return { outcome: 'ref_exists', existing: winner };
    }
    const eventId = audit ? await appendEvent(tx, audit(entry), now) : null;
    return { outcome: 'added', entry, eventId };
  });
}

export interface RemoveResult {
  entry: StoredCatalogEntry;
  /** Machines still bound to the ref: from now on they get the orphan-ref fallback. */
  boundMachines: number;
  eventId: number | null;
}

/** Removes one entry; null when there is none. Bindings to it are left as they are. */
export async function removeCatalogEntry(
  db: Kysely<Database>,
  ref: string,
  now: Date,
  audit?: (removed: RemoveResult) => NewEvent,
): Promise<RemoveResult | null> {
  return db.transaction().execute(async (tx) => {
    const entry = await getCatalogEntry(tx, ref);
    if (!entry) return null;
    const deleted = await tx
      .deleteFrom('catalog_entries')
      .where('ref', '=', ref)
      .executeTakeFirst();
    if (Number(deleted.numDeletedRows) === 0) return null;
    const bound = await tx
      .selectFrom('machines')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('bty_image_ref', '=', ref)
      .executeTakeFirstOrThrow();
    const result: RemoveResult = { entry, boundMachines: Number(bound.n), eventId: null };
    if (audit) result.eventId = await appendEvent(tx, audit(result), now);
    return result;
  });
}

export type MergePlan =
  | {
      ok: true;
      added: CatalogEntryFields[];
      updated: CatalogEntryFields[];
      unchanged: CatalogEntryFields[];
    }
  /** Two incoming entries are the same source (the same ref) under different names. */
  | { ok: false; reason: 'duplicate_ref'; ref: string; names: [string, string] }
  /** After the merge two entries would share a name: `refs[0]` is the incoming one. */
  | { ok: false; reason: 'name_taken'; name: string; refs: [string, string] };

/**
 * What merging `incoming` into `existing` does, decided without I/O. An incoming entry with a
 * new ref is added; one with a known ref replaces that entry's fields (updated) unless they are
 * equal (unchanged). Entries not in `incoming` stay. The merge is refused as a whole when the
 * result would hold two entries of one name.
 */
export function planCatalogMerge(
  existing: readonly CatalogEntryFields[],
  incoming: readonly CatalogEntryFields[],
): MergePlan {
  const merged = new Map<string, CatalogEntryFields>(existing.map((e) => [e.ref, e]));
  const incomingNames = new Map<string, string>();
  const added: CatalogEntryFields[] = [];
  const updated: CatalogEntryFields[] = [];
  const unchanged: CatalogEntryFields[] = [];
  for (const entry of incoming) {
    const earlier = incomingNames.get(entry.ref);
    if (earlier !== undefined) {
      return { ok: false, reason: 'duplicate_ref', ref: entry.ref, names: [earlier, entry.name] };
    }
    incomingNames.set(entry.ref, entry.name);
    const previous = merged.get(entry.ref);
    if (previous === undefined) added.push(entry);
    else if (CONTENT_FIELDS.every((f) => previous[f] === entry[f])) unchanged.push(entry);
    else updated.push(entry);
    merged.set(entry.ref, entry);
  }
  // Incoming entries claim their names first, so a conflict names the incoming entry's ref.
  const owners = new Map<string, string>();
  const ordered = [...incoming, ...[...merged.values()].filter((e) => !incomingNames.has(e.ref))];
  for (const entry of ordered) {
    const owner = owners.get(entry.name);
    if (owner !== undefined) {
      const [first, second] = incomingNames.has(owner) ? [owner, entry.ref] : [entry.ref, owner];
      return { ok: false, reason: 'name_taken', name: entry.name, refs: [first, second] };
    }
    owners.set(entry.name, entry.ref);
  }
  return { ok: true, added, updated, unchanged };
}

export type MergeResult =
  | { ok: true; plan: Extract<MergePlan, { ok: true }>; eventId: number | null }
  | Extract<MergePlan, { ok: false }>;

/**
 * Merges entries into the catalog in one transaction (all or nothing), with the import's audit
 * event. `created_at` is kept for updated entries; unchanged entries are not written.
 */
export async function mergeCatalogEntries(
  db: Kysely<Database>,
  incoming: readonly CatalogEntryFields[],
  now: Date,
  audit?: (plan: Extract<MergePlan, { ok: true }>) => NewEvent,
): Promise<MergeResult> {
  const at = now.toISOString();
  return db.transaction().execute(async (tx): Promise<MergeResult> => {
    const plan = planCatalogMerge(await listCatalogEntries(tx), incoming);
    if (!plan.ok) return plan;
    const writes = [...plan.added, ...plan.updated].map((e) => ({
      ...e,
      created_at: at,
      updated_at: at,
    }));
    await upsertCatalogRows(tx, writes, { keepCreatedAt: true });
    const eventId = audit ? await appendEvent(tx, audit(plan), now) : null;
    return { ok: true, plan, eventId };
  });
}

/**
 * Inserts catalog rows, replacing the fields of those whose ref is already stored. A merge keeps
 * the stored `created_at` (`keepCreatedAt`); a restored bundle brings its own.
 */
export async function upsertCatalogRows(
  tx: Transaction<Database>,
  rows: readonly StoredCatalogEntry[],
  { keepCreatedAt }: { keepCreatedAt: boolean },
): Promise<void> {
  for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
    await tx
      .insertInto('catalog_entries')
      .values(rows.slice(i, i + INSERT_CHUNK))
      .onConflict((oc) =>
        oc.column('ref').doUpdateSet((eb) => ({
          name: eb.ref('excluded.name'),
          src: eb.ref('excluded.src'),
          sha256: eb.ref('excluded.sha256'),
          format: eb.ref('excluded.format'),
          size_bytes: eb.ref('excluded.size_bytes'),
          description: eb.ref('excluded.description'),
          arch: eb.ref('excluded.arch'),
          ...(keepCreatedAt ? {} : { created_at: eb.ref('excluded.created_at') }),
          updated_at: eb.ref('excluded.updated_at'),
        })),
      )
      .execute();
  }
}
