/**
 * Fresh, migrated bty-web databases on both engines for storage tests: SQLite files in a temp
 * folder and databases in one private PostgreSQL server, set up and torn down by the calling
 * test file's hooks.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { startPostgres, type PgServer } from './postgres.ts';

export type Engine = 'sqlite' | 'postgres';
export const ENGINES: readonly Engine[] = ['sqlite', 'postgres'];

export interface Databases {
  /** A new, migrated database on `engine`; close it when done. */
  fresh(engine: Engine): Promise<BtyDatabase>;
  /** The temp folder (for other files the test needs). */
  dir(): string;
}

/** Registers beforeAll/afterAll in the calling file; `name` labels folders and databases. */
export function useDatabases(name: string): Databases {
  let dir = '';
  let pg: PgServer | null = null;
  let counter = 0;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), `bty-${name}-`));
    pg = await startPostgres();
  }, 60_000);
  afterAll(async () => {
    await pg?.stop();
    await rm(dir, { recursive: true, force: true });
  });
  return {
    dir: () => dir,
    async fresh(engine) {
      counter++;
      const label = `${name.replace(/[^a-z0-9]/g, '_')}_${counter}`;
      const url = engine === 'postgres' ? await pg!.createDatabase(`bty_${label}`) : null;
      const database = await openDatabase({ url, sqlitePath: join(dir, `${label}.db`) });
      await migrate(database);
      return database;
    },
  };
}
