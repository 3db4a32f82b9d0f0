/**
 * Opens bty-web's database: SQLite under the state folder by default, PostgreSQL when
 * `[database] url` is a `postgres://` URL. Both go through the same Kysely code; migrations run
 * before anything else touches the tables.
 */
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Kysely, Migrator, PostgresDialect, type Dialect } from 'kysely';
import { BtyError } from '../../core/errors.ts';
import { StaticMigrations } from './migrations.ts';
import type { Database } from './schema.ts';
import { sqliteDialect } from './sqlite.ts';

export type Engine = 'sqlite' | 'postgres';

export interface OpenDatabaseOptions {
  /** `postgres://…` / `postgresql://…`; empty or absent: SQLite at `sqlitePath`. */
  url?: string | null;
  sqlitePath: string;
  /** PostgreSQL connections in the pool (default 10). */
  poolSize?: number;
}

export interface BtyDatabase {
  db: Kysely<Database>;
  engine: Engine;
  /** Where it lives, with any password removed (for logs and the config page). */
  location: string;
  close(): Promise<void>;
}

function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}

async function postgresDialect(url: string, poolSize: number): Promise<Dialect> {
  const { default: pg } = await import('pg');
  // bigint columns (sizes) come back as numbers: every value bty stores fits in 2^53.
  pg.types.setTypeParser(pg.types.builtins.INT8, (v: string) => Number(v));
  const pool = new pg.Pool({ connectionString: url, max: poolSize });
  // An idle connection the server drops (a restart, a failover) is an 'error' event on the pool:
  // the pool discards that client and the next query opens a new one. Unhandled, it would end
  // the process.
  pool.on('error', () => {});
  return new PostgresDialect({ pool });
}

export async function openDatabase(options: OpenDatabaseOptions): Promise<BtyDatabase> {
  const url = options.url?.trim() ?? '';
  let engine: Engine;
  let dialect: Dialect;
  let location: string;
  if (url === '') {
    engine = 'sqlite';
    await mkdir(dirname(options.sqlitePath), { recursive: true });
    dialect = sqliteDialect(options.sqlitePath);
    location = options.sqlitePath;
  } else if (/^postgres(ql)?:\/\//i.test(url)) {
    engine = 'postgres';
    dialect = await postgresDialect(url, options.poolSize ?? 10);
    location = redact(url);
  } else {
    throw new BtyError(
      'BTY_ERR_BAD_INPUT',
      `[database] url must be empty (SQLite in the state folder) or a postgres:// URL; got ${redact(url)}`,
    );
  }
  const db = new Kysely<Database>({ dialect });
  return { db, engine, location, close: () => db.destroy() };
}

/** Applies the migrations not applied yet; returns their names. Fails without half-applying. */
export async function migrate(database: BtyDatabase): Promise<string[]> {
  const migrator = new Migrator({
    db: database.db,
    provider: new StaticMigrations(database.engine),
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new BtyError(
      'BTY_ERR_INTERNAL',
      `database migration ${failed} failed on ${database.location}: ${error instanceof Error ? error.message : JSON.stringify(error)}`,
      { cause: error },
    );
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** The default SQLite file under a state folder. */
export function defaultSqlitePath(stateDir: string): string {
  return join(stateDir, 'state.db');
}
