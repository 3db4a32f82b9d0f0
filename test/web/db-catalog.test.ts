/**
 * The catalog store on both engines bty-web supports (SQLite in a temp folder, a real
 * PostgreSQL started for the test), and its merge rule as a table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addCatalogEntry,
  getCatalogEntry,
  listCatalogEntries,
  mergeCatalogEntries,
  planCatalogMerge,
  removeCatalogEntry,
  type CatalogEntryFields,
} from '../../src/web/db/catalog.ts';
import type { BtyDatabase } from '../../src/web/db/database.ts';
import { listEvents, type NewEvent } from '../../src/web/db/events.ts';
import type { EventKind } from '../../src/web/event-kinds.ts';
import { touchMachine } from '../../src/web/db/machines.ts';
import { useDatabases } from '../helpers/databases.ts';

const NOW = new Date('2026-12-03T08:00:00.000Z');
const LATER = new Date('2026-12-03T09:30:00.000Z');

/** A ref made from a letter, for readable tables. */
const ref = (c: string) => c.repeat(64);

function entry(c: string, name: string, extra: Partial<CatalogEntryFields> = {}) {
  return {
    ref: ref(c),
    name,
    src: `https://h/${name}.img`,
    sha256: null,
    format: 'img',
    size_bytes: null,
    description: null,
    arch: null,
    ...extra,
  } satisfies CatalogEntryFields;
}

describe('planCatalogMerge', () => {
  const a = entry('a', 'alpha');
  const b = entry('b', 'beta');
  it.each([
    ['into nothing', [], [a, b], { added: ['alpha', 'beta'], updated: [], unchanged: [] }],
    ['the same again', [a, b], [a, b], { added: [], updated: [], unchanged: ['alpha', 'beta'] }],
    [
      'a changed field',
      [a, b],
      [{ ...a, sha256: ref('f') }],
      { added: [], updated: ['alpha'], unchanged: [] },
    ],
    [
      'a renamed entry',
      [a],
      [{ ...a, name: 'alpha 2' }],
      { added: [], updated: ['alpha 2'], unchanged: [] },
    ],
    [
      'two entries swapping names',
      [a, b],
      [
        { ...a, name: 'beta' },
        { ...b, name: 'alpha' },
      ],
      { added: [], updated: ['beta', 'alpha'], unchanged: [] },
    ],
    [
      'an entry taking the name a renamed one gave up',
      [a],
      [{ ...a, name: 'alpha-old' }, entry('c', 'alpha')],
      { added: ['alpha'], updated: ['alpha-old'], unchanged: [] },
    ],
  ])('%s', (_what, existing, incoming, expected) => {
    const plan = planCatalogMerge(existing, incoming);
    expect(plan.ok).toBe(true);
    if (!plan.ok) return;
    expect({
      added: plan.added.map((e) => e.name),
      updated: plan.updated.map((e) => e.name),
      unchanged: plan.unchanged.map((e) => e.name),
    }).toEqual(expected);
  });

  it.each([
    [
      'an incoming name a stored entry of another ref has',
      [a],
      [entry('c', 'alpha')],
      { ok: false, reason: 'name_taken', name: 'alpha', refs: [ref('c'), ref('a')] },
    ],
    [
      'two incoming entries of one name',
      [],
      [a, entry('c', 'alpha')],
      { ok: false, reason: 'name_taken', name: 'alpha', refs: [ref('a'), ref('c')] },
    ],
    [
      'two incoming entries of one ref',
      [],
      [a, { ...a, name: 'other' }],
      { ok: false, reason: 'duplicate_ref', ref: ref('a'), names: ['alpha', 'other'] },
    ],
  ])('refuses %s', (_what, existing, incoming, expected) => {
    expect(planCatalogMerge(existing, incoming)).toEqual(expected);
  });
});

const databases = useDatabases('db-catalog');

const fresh = (engine: 'sqlite' | 'postgres'): Promise<BtyDatabase> => databases.fresh(engine);

const audit =
  (kind: EventKind) =>
  (subject: { ref?: string } | object): NewEvent => ({
    kind,
    summary: kind,
    subjectKind: 'catalog',
    subjectId: 'ref' in subject ? (subject.ref ?? null) : null,
    actor: 'operator',
  });

describe.each(['sqlite', 'postgres'] as const)('on %s', (engine) => {
  let database: BtyDatabase;
  beforeAll(async () => {
    database = await fresh(engine);
  });
  afterAll(async () => {
    await database?.close();
  });

  it('adds an entry with its event in one go, and reads it back exactly', async () => {
    const big = entry('1', 'zulu', {
      sha256: ref('e'),
      size_bytes: 2 ** 52 + 1,
      description: 'ünïcode ✓\nsecond line',
      arch: 'x86_64',
      format: 'img.zst',
    });
    const result = await addCatalogEntry(database.db, big, NOW, audit('catalog.entry.added'));
    expect(result.outcome).toBe('added');
    if (result.outcome !== 'added') return;
    expect(result.eventId).toBeGreaterThan(0);
    const stored = { ...big, created_at: NOW.toISOString(), updated_at: NOW.toISOString() };
    expect(result.entry).toEqual(stored);
    expect(await getCatalogEntry(database.db, big.ref)).toEqual(stored);
    const [event] = await listEvents(database.db, { kind: 'catalog.entry.added' });
    expect(event?.subject_id).toBe(big.ref);
  });

  it('refuses an existing ref or name without changing anything or logging', async () => {
    const events = (await listEvents(database.db)).length;
    const before = await listCatalogEntries(database.db);
    const sameRef = await addCatalogEntry(
      database.db,
      entry('1', 'another name'),
      LATER,
      audit('catalog.entry.added'),
    );
    expect(sameRef).toMatchObject({ outcome: 'ref_exists', existing: { name: 'zulu' } });
    const sameName = await addCatalogEntry(
      database.db,
      entry('2', 'zulu'),
      LATER,
      audit('catalog.entry.added'),
    );
    expect(sameName).toMatchObject({ outcome: 'name_taken', existing: { ref: ref('1') } });
    expect(await listCatalogEntries(database.db)).toEqual(before);
    expect(await listEvents(database.db)).toHaveLength(events);
  });

  it('ten concurrent adds of one ref: one entry, one event, no error', async () => {
    const e = entry('3', 'raced');
    const results = await Promise.all(
      Array.from({ length: 10 }, () =>
        addCatalogEntry(database.db, e, NOW, audit('catalog.entry.added')),
      ),
    );
    expect(results.filter((r) => r.outcome === 'added')).toHaveLength(1);
    expect(
      await listEvents(database.db, { kind: 'catalog.entry.added', subjectId: e.ref }),
    ).toHaveLength(1);
  });

  it('lists by name in code-unit order whatever the collation', async () => {
    for (const [c, name] of [
      ['4', 'Beta'],
      ['5', 'alpha'],
      ['6', 'Ärger'],
      ['7', '_under'],
    ] as const) {
      await addCatalogEntry(database.db, entry(c, name), NOW);
    }
    expect((await listCatalogEntries(database.db)).map((e) => e.name)).toEqual([
      'Beta',
      '_under',
      'alpha',
      'raced',
      'zulu',
      'Ärger',
    ]);
  });

  it('merges all or nothing, keeping created_at of updated entries', async () => {
    const refused = await mergeCatalogEntries(
      database.db,
      [entry('8', 'new one'), entry('9', 'alpha')],
      LATER,
      audit('catalog.imported'),
    );
    expect(refused).toMatchObject({ ok: false, reason: 'name_taken', name: 'alpha' });
    expect(await getCatalogEntry(database.db, ref('8'))).toBeNull();
    expect(await listEvents(database.db, { kind: 'catalog.imported' })).toEqual([]);

    const merged = await mergeCatalogEntries(
      database.db,
      [entry('8', 'new one'), entry('5', 'alpha', { sha256: ref('d') }), entry('4', 'Beta')],
      LATER,
      audit('catalog.imported'),
    );
    expect(merged.ok).toBe(true);
    if (!merged.ok) return;
    expect(merged.plan.added.map((e) => e.name)).toEqual(['new one']);
    expect(merged.plan.updated.map((e) => e.name)).toEqual(['alpha']);
    expect(merged.plan.unchanged.map((e) => e.name)).toEqual(['Beta']);
    expect(merged.eventId).toBeGreaterThan(0);
    expect(await getCatalogEntry(database.db, ref('5'))).toMatchObject({
      sha256: ref('d'),
      created_at: NOW.toISOString(),
      updated_at: LATER.toISOString(),
    });
    expect(await getCatalogEntry(database.db, ref('4'))).toMatchObject({
      updated_at: NOW.toISOString(),
    });
    expect(await getCatalogEntry(database.db, ref('8'))).toMatchObject({
      created_at: LATER.toISOString(),
    });
  });

  it('merges a catalog of 1,000 entries (several insert batches)', async () => {
    const many = Array.from({ length: 1000 }, (_, i) =>
      entry('x', `bulk-${String(i).padStart(4, '0')}`, {
        ref: (0x10000 + i).toString(16).padStart(64, '0'),
      }),
    );
    const merged = await mergeCatalogEntries(database.db, many, LATER);
    expect(merged.ok && merged.plan.added.length).toBe(1000);
    const again = await mergeCatalogEntries(database.db, many, LATER);
    expect(again.ok && again.plan.unchanged.length).toBe(1000);
    expect((await listCatalogEntries(database.db)).length).toBeGreaterThanOrEqual(1000);
  });

  it('removes an entry, counting the machines still bound to it; null when absent', async () => {
    await touchMachine(database.db, '52:54:00:00:f0:01', null, NOW);
    await touchMachine(database.db, '52:54:00:00:f0:02', null, NOW);
    await database.db
      .updateTable('machines')
      .set({ bty_image_ref: ref('4') })
      .execute();
    const removed = await removeCatalogEntry(
      database.db,
      ref('4'),
      LATER,
      audit('catalog.entry.removed'),
    );
    expect(removed).toMatchObject({ entry: { name: 'Beta' }, boundMachines: 2 });
    expect(removed?.eventId).toBeGreaterThan(0);
    expect(await getCatalogEntry(database.db, ref('4'))).toBeNull();
    expect(await removeCatalogEntry(database.db, ref('4'), LATER)).toBeNull();
    // Bindings are the operator's: removing the entry leaves them (they become orphan refs).
    const bound = await database.db
      .selectFrom('machines')
      .select('bty_image_ref')
      .where('mac', '=', '52:54:00:00:f0:01')
      .executeTakeFirstOrThrow();
    expect(bound.bty_image_ref).toBe(ref('4'));
  });
});
