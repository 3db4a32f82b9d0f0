/**
 * Kysely's SQLite dialect over Node's built-in `node:sqlite` (no native add-on to build).
 *
 * Kysely expects a better-sqlite3-shaped database; this adapts `DatabaseSync` to it: a
 * statement is a reader when it returns columns, parameters are spread, and booleans become
 * 0/1 (SQLite has no boolean type and node:sqlite refuses JS booleans).
 *
 * Connection settings: WAL (readers never wait for the writer), a busy timeout so concurrent
 * writers queue instead of failing with "database is locked", and foreign keys on.
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { SqliteDialect, type SqliteDatabase, type SqliteStatement } from 'kysely';

export const SQLITE_BUSY_TIMEOUT_MS = 5000;

function bind(parameters: ReadonlyArray<unknown>): SQLInputValue[] {
  return parameters.map((p) => {
    if (typeof p === 'boolean') return p ? 1 : 0;
    if (p === undefined) return null;
    if (p instanceof Date) return p.toISOString();
    return p as SQLInputValue;
  });
}

class Statement implements SqliteStatement {
  readonly reader: boolean;
  private readonly stmt: StatementSync;

  constructor(stmt: StatementSync) {
    this.stmt = stmt;
    this.reader = stmt.columns().length > 0;
  }

  all(parameters: ReadonlyArray<unknown>): unknown[] {
    return this.stmt.all(...bind(parameters));
  }

  run(parameters: ReadonlyArray<unknown>): {
    changes: number | bigint;
    lastInsertRowid: number | bigint;
  } {
    const r = this.stmt.run(...bind(parameters));
    return { changes: r.changes, lastInsertRowid: r.lastInsertRowid };
  }

  iterate(parameters: ReadonlyArray<unknown>): IterableIterator<unknown> {
    return this.stmt.iterate(...bind(parameters));
  }
}

/** Statements kept compiled: the PXE hot path runs the same few SQL texts over and over. */
const STATEMENT_CACHE_SIZE = 256;

class Database implements SqliteDatabase {
  private readonly db: DatabaseSync;
  /**
   * Compiled statements by SQL text, least recently used first. Kysely runs one query at a
   * time on its single SQLite connection, so a statement is never in use twice at once.
   */
  private readonly statements = new Map<string, Statement>();

  constructor(db: DatabaseSync) {
    this.db = db;
  }

  prepare(sql: string): SqliteStatement {
    const cached = this.statements.get(sql);
    if (cached) {
      this.statements.delete(sql);
      this.statements.set(sql, cached);
      return cached;
    }
    const statement = new Statement(this.db.prepare(sql));
    this.statements.set(sql, statement);
    if (this.statements.size > STATEMENT_CACHE_SIZE) {
      const oldest = this.statements.keys().next().value;
      if (oldest !== undefined) this.statements.delete(oldest);
    }
    return statement;
  }

  close(): void {
    this.db.close();
  }
}

/** Opens (creating it if need be) the SQLite file at `path` with bty's connection settings. */
export function openSqlite(path: string): DatabaseSync {
  const db = new DatabaseSync(path, { timeout: SQLITE_BUSY_TIMEOUT_MS });
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = NORMAL');
  db.exec('PRAGMA foreign_keys = ON');
  return db;
}

export function sqliteDialect(path: string): SqliteDialect {
  return new SqliteDialect({ database: () => Promise.resolve(new Database(openSqlite(path))) });
}
