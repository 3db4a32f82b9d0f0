/**
 * Versioned, forward-only schema migrations, run at start and by `bty-web migrate`. Each one is
 * written once and never edited after release; a change is a new migration. An upgrade never
 * discards data (upstream renamed the whole database away on every version change).
 *
 * The same migrations serve SQLite and PostgreSQL: where they differ (an auto-increment key),
 * the migration asks which engine it runs on.
 */
import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

type Engine = 'sqlite' | 'postgres';

function m001(engine: Engine): Migration {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .createTable('machines')
        .addColumn('mac', 'text', (c) => c.primaryKey())
        .addColumn('bty_image_ref', 'text')
        .addColumn('discovered_at', 'text')
        .addColumn('last_seen_at', 'text')
        .addColumn('last_seen_ip', 'text')
        .addColumn('boot_mode', 'text', (c) => c.notNull().defaultTo('ipxe-exit'))
        .addColumn('sanboot_drive', 'text')
        .addColumn('last_flashed_at', 'text')
        .addColumn('saw_flasher_boot', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('armed_at', 'text')
        .addColumn('target_disk_serial', 'text')
        .addColumn('progress', 'text')
        .addColumn('progress_at', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('machines_ref').on('machines').column('bty_image_ref').execute();
      await db.schema
        .createTable('machine_labels')
        .addColumn('mac', 'text', (c) => c.notNull().references('machines.mac').onDelete('cascade'))
        .addColumn('label', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('machine_labels_pk', ['mac', 'label'])
        .execute();
      await db.schema
        .createIndex('machine_labels_label')
        .on('machine_labels')
        .column('label')
        .execute();
      await db.schema
        .createTable('inventory')
        .addColumn('mac', 'text', (c) =>
          c.primaryKey().references('machines.mac').onDelete('cascade'),
        )
        .addColumn('disks', 'text')
        .addColumn('disks_at', 'text')
        .addColumn('lshw', 'text')
        .addColumn('lshw_at', 'text')
        .execute();
      await db.schema
        .createTable('catalog_entries')
        .addColumn('ref', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('src', 'text', (c) => c.notNull())
        .addColumn('sha256', 'text')
        .addColumn('format', 'text')
        .addColumn('size_bytes', 'bigint')
        .addColumn('description', 'text')
        .addColumn('arch', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('events')
        .addColumn('id', engine === 'postgres' ? 'bigserial' : 'integer', (c) =>
          engine === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
        )
        .addColumn('ts', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('subject_kind', 'text')
        .addColumn('subject_id', 'text')
        .addColumn('actor', 'text')
        .addColumn('source_ip', 'text')
        .addColumn('summary', 'text', (c) => c.notNull())
        .addColumn('details', 'text')
        .addColumn('acknowledged', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.createIndex('events_ts').on('events').column('ts').execute();
      await db.schema.createIndex('events_kind').on('events').column('kind').execute();
      await db.schema
        .createIndex('events_subject')
        .on('events')
        .columns(['subject_kind', 'subject_id'])
        .execute();
      await db.schema
        .createTable('settings')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
    },
  };
}

/**
 * The open failures (kinds ending in `failed`, not acknowledged): the dashboard's tripwire
 * counts them on every live refresh. A partial index holds just those rows, so the count and the
 * list stop scanning the whole log. Queries must spell the predicate exactly as
 * `OPEN_FAILURE` does, as a literal, for the planner to see that the index covers them.
 */
export const OPEN_FAILURE = sql<boolean>`acknowledged = 0 and kind like '%failed'`;

const m002: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await sql`create index events_open_failures on events (id) where ${OPEN_FAILURE}`.execute(db);
  },
};

/** Migration names sort in the order they run. */
export function migrations(engine: Engine): Record<string, Migration> {
  return {
    '2026-11-29-001-initial': m001(engine),
    '2026-11-29-002-open-failures-index': m002,
  };
}

export class StaticMigrations implements MigrationProvider {
  private readonly engine: Engine;

  constructor(engine: Engine) {
    this.engine = engine;
  }

  getMigrations(): Promise<Record<string, Migration>> {
    return Promise.resolve(migrations(this.engine));
  }
}
