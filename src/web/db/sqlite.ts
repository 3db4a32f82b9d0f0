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
import { Worker } from 'node:worker_threads';
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

/** How often the background connection copies the WAL back into the database file. */
export const CHECKPOINT_INTERVAL_MS = 1000;

/**
 * node:sqlite runs on the event loop's thread, and in WAL mode the only writes that wait for
 * the disk are checkpoints. SQLite's automatic checkpoint runs inside whichever commit crosses
 * 1,000 WAL pages, so one PXE request in a few thousand waited for an fsync (0.1-0.7 s on these
 * VMs) and every request queued behind it. Instead, a worker thread with its own connection
 * checkpoints (PASSIVE: it never blocks the writer) once a second, and the main connection's
 * automatic checkpoint is off. If the worker dies, automatic checkpoints come back on.
 */
const CHECKPOINTER = `
const { parentPort, workerData } = require('node:worker_threads');
const { DatabaseSync } = require('node:sqlite');
const db = new DatabaseSync(workerData.path, { timeout: workerData.timeout });
const timer = setInterval(() => {
  try { db.exec('PRAGMA wal_checkpoint(PASSIVE)'); } catch {}
}, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m === 'stop') {
    clearInterval(timer);
    try { db.exec('PRAGMA wal_checkpoint(PASSIVE)'); } catch {}
    db.close();
    parentPort.close();
  }
});
`;

function startCheckpointer(path: string, main: DatabaseSync): () => Promise<void> {
  const worker = new Worker(CHECKPOINTER, {
    eval: true,
    workerData: { path, timeout: SQLITE_BUSY_TIMEOUT_MS, intervalMs: CHECKPOINT_INTERVAL_MS },
  });
  main.exec('PRAGMA wal_autocheckpoint = 0');
  let alive = true;
  const fallBack = () => {
    if (!alive) return;
    alive = false;
    try {
      main.exec('PRAGMA wal_autocheckpoint = 1000');
    } catch {
      // The main connection is closing too.
    }
  };
  worker.on('error', fallBack);
  worker.on('exit', fallBack);
  worker.unref();
  return async () => {
    if (!alive) return;
    alive = false;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage('stop');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000).unref())]);
    await worker.terminate();
  };
}

export function sqliteDialect(path: string): SqliteDialect {
  let stopCheckpointer: (() => Promise<void>) | null = null;
  return new SqliteDialect({
    database: () => {
      const main = openSqlite(path);
      stopCheckpointer = startCheckpointer(path, main);
      const database = new Database(main);
      const close = database.close.bind(database);
      database.close = () => {
        void stopCheckpointer?.();
        close();
      };
      return Promise.resolve(database);
    },
  });
}
