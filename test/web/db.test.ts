/**
 * The storage layer against both engines it supports: SQLite through node:sqlite (a file in a
 * temp folder) and a real PostgreSQL started for the test.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BtyError } from '../../src/core/errors.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { OPEN_FAILURE } from '../../src/web/db/migrations.ts';
import { appendEvent, listEvents } from '../../src/web/db/events.ts';
import {
  countMachines,
  deleteMachine,
  getLabels,
  getMachine,
  listMachines,
  setLabels,
  touchMachine,
} from '../../src/web/db/machines.ts';
import { useDatabases } from '../helpers/databases.ts';

const databases = useDatabases('db');

const fresh = (engine: 'sqlite' | 'postgres'): Promise<BtyDatabase> => databases.fresh(engine);

const NOW = new Date('2026-11-29T12:00:00.000Z');
const LATER = new Date('2026-11-29T12:05:00.000Z');

describe.each(['sqlite', 'postgres'] as const)('on %s', (engine) => {
  let database: BtyDatabase;
  beforeAll(async () => {
    database = await fresh(engine);
  });
  afterAll(async () => {
    await database?.close();
  });

  it('migrations run once: a second run applies nothing and keeps the data', async () => {
    await touchMachine(database.db, '52:54:00:00:00:01', '10.0.0.1', NOW);
    expect(await migrate(database)).toEqual([]);
    expect(await getMachine(database.db, '52:54:00:00:00:01')).toBeDefined();
  });

  it('a first contact creates the record and one discovery event; a later one touches it', async () => {
    const mac = '52:54:00:00:00:02';
    const first = await touchMachine(database.db, mac, '10.0.0.2', NOW);
    expect(first.discovered).toBe(true);
    expect(first.machine.boot_mode).toBe('ipxe-exit');
    expect(first.machine.saw_flasher_boot).toBe(0);
    expect(first.machine.discovered_at).toBe(NOW.toISOString());
    const again = await touchMachine(database.db, mac, '10.0.0.3', LATER);
    expect(again.discovered).toBe(false);
    expect(again.machine.last_seen_at).toBe(LATER.toISOString());
    expect(again.machine.last_seen_ip).toBe('10.0.0.3');
    expect(again.machine.discovered_at).toBe(NOW.toISOString());
    const events = await listEvents(database.db, { kind: 'machine.discovered', subjectId: mac });
    expect(events).toHaveLength(1);
  });

  it('50 concurrent first contacts of one MAC: one row, one discovery event, no error', async () => {
    const mac = '52:54:00:00:00:03';
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => touchMachine(database.db, mac, `10.0.1.${i}`, NOW)),
    );
    expect(results.filter((r) => r.discovered)).toHaveLength(1);
    const events = await listEvents(database.db, { kind: 'machine.discovered', subjectId: mac });
    expect(events).toHaveLength(1);
  });

  it('labels: set semantics, sorted, validated like upstream, removed with the machine', async () => {
    const mac = '52:54:00:00:00:04';
    await touchMachine(database.db, mac, null, NOW);
    expect(await setLabels(database.db, mac, ['rack-2', 'GPU', 'rack-2', 'a b'])).toEqual([
      'GPU',
      'a b',
      'rack-2',
    ]);
    expect(await getLabels(database.db, mac)).toEqual(['GPU', 'a b', 'rack-2']);
    await setLabels(database.db, mac, ['only']);
    expect(await getLabels(database.db, mac)).toEqual(['only']);
    for (const bad of [
      ['-x'],
      [''],
      ['x'.repeat(65)],
      ['a\nb'],
      Array.from({ length: 17 }, (_, i) => `l${i}`),
    ]) {
      const err = await setLabels(database.db, mac, bad).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BtyError);
      expect((err as BtyError).message).toMatch(/^labels: /);
    }
    expect(await getLabels(database.db, mac)).toEqual(['only']);
    expect(await deleteMachine(database.db, mac)).toBe(true);
    expect(await getLabels(database.db, mac)).toEqual([]);
    expect(await deleteMachine(database.db, mac)).toBe(false);
  });

  it('events: newest first, filtered, paged by id, details round-trip', async () => {
    const ids: number[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(
        await appendEvent(
          database.db,
          { kind: 'bundle.imported', summary: `n${i}`, details: { i, nested: { ok: true } } },
          NOW,
        ),
      );
    }
    const page1 = await listEvents(database.db, { kind: 'bundle.imported', limit: 2 });
    expect(page1.map((e) => e.summary)).toEqual(['n4', 'n3']);
    const page2 = await listEvents(database.db, {
      kind: 'bundle.imported',
      limit: 2,
      beforeId: page1.at(-1)!.id,
    });
    expect(page2.map((e) => e.summary)).toEqual(['n2', 'n1']);
    expect(page2[0]!.details).toEqual({ i: 2, nested: { ok: true } });
    expect(page2[0]!.acknowledged).toBe(false);
  });

  it('listing is ordered by MAC and paged; counting is cheap', async () => {
    const before = await countMachines(database.db);
    for (const mac of ['52:54:00:00:00:0c', '52:54:00:00:00:0a', '52:54:00:00:00:0b']) {
      await touchMachine(database.db, mac, null, NOW);
    }
    expect(await countMachines(database.db)).toBe(before + 3);
    const all = await listMachines(database.db);
    const macs = all.map((m) => m.mac);
    expect(macs).toEqual([...macs].sort());
    expect((await listMachines(database.db, { limit: 2, offset: 1 })).length).toBe(2);
  });
});

it('an unknown database URL scheme is refused with the password hidden', async () => {
  const err = await openDatabase({
    url: 'mysql://bty:secret@db/bty',
    sqlitePath: join(databases.dir(), 'never.db'),
  }).catch((e: unknown) => e);
  expect((err as BtyError).code).toBe('BTY_ERR_BAD_INPUT');
  expect((err as BtyError).message).not.toContain('secret');
});

it('sqlite: the WAL is checkpointed into the database file off the main thread', async () => {
  const path = join(databases.dir(), 'checkpoint.db');
  const database = await openDatabase({ sqlitePath: path });
  try {
    await migrate(database);
    const { statSync } = await import('node:fs');
    const before = statSync(path).size;
    for (let i = 0; i < 40; i++) {
      await database.db.transaction().execute(async (tx) => {
        for (let j = 0; j < 50; j++) {
          await appendEvent(tx, { kind: 'bundle.imported', summary: 'x'.repeat(200) }, NOW);
        }
      });
    }
    // The main connection never checkpoints by itself: the worker does, within about a second.
    const deadline = Date.now() + 10_000;
    while (statSync(path).size <= before + 200_000 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(statSync(path).size).toBeGreaterThan(before + 200_000);
  } finally {
    await database.close();
  }
});

describe('the open-failures index', () => {
  it('serves the dashboard tripwire without scanning the log (SQLite plan)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bty-open-failures-'));
    const database = await openDatabase({ sqlitePath: join(dir, 'state.db') });
    try {
      await migrate(database);
      const plan = await sql<{
        detail: string;
      }>`explain query plan select count(*) from events where ${OPEN_FAILURE}`.execute(database.db);
      expect(plan.rows.map((r) => r.detail).join('\n')).toMatch(
        /USING (COVERING )?INDEX events_open_failures/,
      );
    } finally {
      await database.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
