/**
 * Export and import bundles (src/web/bundle.ts) on both engines bty-web supports: SQLite in a
 * temp folder and a real PostgreSQL started for the test. A round trip export → import into an
 * empty database → export gives the same files; an upstream-only bundle imports as upstream
 * does; every kind of bad bundle is refused naming the file and field, with nothing changed.
 */
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BtyError } from '../../src/core/errors.ts';
import {
  exportBundle,
  importBundle,
  normaliseTimestamp,
  parseBundle,
  type BundleTexts,
} from '../../src/web/bundle.ts';
import { addCatalogEntry } from '../../src/web/db/catalog.ts';
import type { BtyDatabase } from '../../src/web/db/database.ts';
import { listEvents } from '../../src/web/db/events.ts';
import {
  createMachineWithBinding,
  getLabels,
  getMachine,
  setLabels,
  touchMachine,
  updateMachineState,
} from '../../src/web/db/machines.ts';
import { validateEntry } from '../../src/web/routes/catalog.ts';
import { useDatabases } from '../helpers/databases.ts';

const databases = useDatabases('bundle');

const fresh = (engine: 'sqlite' | 'postgres'): Promise<BtyDatabase> => databases.fresh(engine);

let folders = 0;
const folder = (name: string) => join(databases.dir(), `${name}-${++folders}`);

const T0 = new Date('2026-11-29T08:00:00.000Z');
const T1 = new Date('2026-11-29T09:15:30.250Z');
const EXPORTED = new Date('2026-11-30T12:00:00.000Z');
const EXPORT_OPTIONS = { now: EXPORTED, version: '9.9.9-test' };

const FILES = ['catalog.json', 'inventory.json', 'machines.json', 'settings.json'];

async function readFiles(bundle: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(bundle)).sort()) {
    out[name] = await readFile(join(bundle, name), 'utf8');
  }
  return out;
}

/** Writes a bundle's files (`inventory` → inventory.json …); undefined ones are left out. */
async function writeBundle(bundle: string, texts: Record<string, string | undefined>) {
  await mkdir(bundle, { recursive: true });
  for (const [name, text] of Object.entries(texts)) {
    if (text !== undefined) await writeFile(join(bundle, `${name}.json`), text);
  }
}

const DISK = {
  path: '/dev/nvme0n1',
  size: '512110190592',
  vendor: null,
  model: 'Samsung SSD 980',
  serial: 'S64DNX0R',
  tran: 'nvme',
  removable: false,
  readonly: false,
};

/** Fills a database with one of everything a bundle carries (and an event, which it does not). */
async function populate(database: BtyDatabase): Promise<void> {
  const { db } = database;
  const ubuntu = validateEntry(
    { src: 'https://images.example/ubuntu-24.04.img.zst', sha256: 'ab'.repeat(32) },
    '',
    false,
  );
  const debian = validateEntry(
    { src: 'oras://registry.example/lab/debian:13', name: 'debian 13', description: 'two\nlines' },
    '',
    false,
  );
  await addCatalogEntry(db, ubuntu, T0);
  await addCatalogEntry(db, debian, T1);

  // Discovered by PXE, inventoried, flashed once: every column set.
  await touchMachine(db, '52:54:00:00:00:0b', '10.0.0.11', T0);
  await db.transaction().execute(async (tx) => {
    await createMachineWithBinding(
      tx,
      '52:54:00:00:00:0a',
      {
        bty_image_ref: ubuntu.ref,
        boot_mode: 'bty-flash-once',
        sanboot_drive: '0x81',
        target_disk_serial: 'S64DNX0R',
        labels: [],
      },
      T0,
    );
  });
  await updateMachineState(db, '52:54:00:00:00:0a', {
    saw_flasher_boot: true,
    armed_at: T1,
    last_flashed_at: T1,
    last_seen_at: T1,
    last_seen_ip: 'fd00::a',
    updated_at: T1,
  });
  await setLabels(db, '52:54:00:00:00:0a', ['rack 2', 'GPU', 'a.b_c-d']);
  await db
    .insertInto('inventory')
    .values({
      mac: '52:54:00:00:00:0a',
      disks: JSON.stringify([
        Object.fromEntries(Object.entries(DISK).sort(([a], [b]) => (a < b ? -1 : 1))),
      ]),
      disks_at: T1.toISOString(),
      // Stored as the inventory route stores it: keys sorted.
      lshw: JSON.stringify({ children: [{ id: 'core' }], class: 'system', id: 'lab-0a' }),
      lshw_at: T1.toISOString(),
    })
    .execute();
  // Inventory without lshw.
  await db
    .insertInto('inventory')
    .values({ mac: '52:54:00:00:00:0b', disks: '[]', disks_at: T0.toISOString() })
    .execute();
  // PUT-created, never seen.
  await db.transaction().execute(async (tx) => {
    await createMachineWithBinding(
      tx,
      '52:54:00:00:00:01',
      {
        bty_image_ref: null,
        boot_mode: 'ipxe-exit',
        sanboot_drive: null,
        target_disk_serial: null,
        labels: [],
      },
      T1,
    );
  });
  await db
    .insertInto('settings')
    .values([
      { key: 'upstream.netboot_tag', value: 'v0.70.1', updated_at: T0.toISOString() },
      { key: 'display.timezone', value: 'Europe/Copenhagen', updated_at: T1.toISOString() },
    ])
    .execute();
}

/** A valid full bundle as texts, for the bad-bundle table to break one thing at a time. */
function goodTexts(): Required<BundleTexts> {
  const at = '2026-11-30T12:00:00Z';
  const ref = validateEntry({ src: 'https://h.example/a.img' }, '', false).ref;
  return {
    inventory: JSON.stringify({
      bty_export_version: 3,
      exported_at: at,
      exported_by_bty_version: '0.1.0',
      machines: [
        {
          mac: '52:54:00:00:00:01',
          known_disks: [DISK],
          known_disks_at: at,
          hw_lshw: { id: 'x' },
          hw_lshw_at: at,
        },
      ],
    }),
    machines: JSON.stringify({
      bty_extension_version: 1,
      exported_at: at,
      machines: [
        {
          mac: '52:54:00:00:00:01',
          bty_image_ref: ref,
          boot_mode: 'bty-flash-always',
          sanboot_drive: null,
          target_disk_serial: 'S64DNX0R',
          labels: ['lab'],
          saw_flasher_boot: false,
          armed_at: null,
          discovered_at: at,
          last_seen_at: at,
          last_seen_ip: '10.0.0.1',
          last_flashed_at: null,
          created_at: at,
          updated_at: at,
        },
      ],
    }),
    catalog: JSON.stringify({
      bty_extension_version: 1,
      exported_at: at,
      entries: [
        {
          ref,
          name: 'a.img',
          src: 'https://h.example/a.img',
          sha256: null,
          format: 'img',
          size_bytes: 1024,
          description: null,
          arch: null,
          created_at: at,
          updated_at: at,
        },
      ],
    }),
    settings: JSON.stringify({
      bty_extension_version: 1,
      exported_at: at,
      settings: [{ key: 'backup.cadence', value: 'daily', updated_at: at }],
    }),
  };
}

type Doc = Record<string, unknown> & { [k: string]: unknown };
type Edit = (doc: Doc) => void;
const row = (doc: Doc, key = 'machines', i = 0) => (doc[key] as Doc[])[i]!;

/** Changes one file of the good bundle: `undefined` drops it, a string replaces it. */
function variant(
  file: keyof BundleTexts,
  change: Edit | string | undefined,
): Record<string, string | undefined> {
  const texts: Record<string, string | undefined> = goodTexts();
  if (typeof change === 'function') {
    const doc = JSON.parse(texts[file]!) as Doc;
    change(doc);
    texts[file] = JSON.stringify(doc);
  } else {
    texts[file] = change;
  }
  return texts;
}

const BAD_BUNDLES: Array<[string, Record<string, string | undefined>, RegExp]> = [
  ['no inventory.json', variant('inventory', undefined), /^inventory\.json: \(file\): missing/],
  [
    'inventory.json not JSON',
    variant('inventory', '{"bty_export_version": 3,'),
    /^inventory\.json: \(file\): not valid JSON/,
  ],
  [
    'inventory.json a list',
    variant('inventory', '[]'),
    /^inventory\.json: \(file\): must be a JSON object/,
  ],
  [
    'version 2',
    variant('inventory', (d) => (d.bty_export_version = 2)),
    /^inventory\.json: bty_export_version: this bundle is version 2; .*version 3 only/,
  ],
  [
    'version "3" as text',
    variant('inventory', (d) => (d.bty_export_version = '3')),
    /^inventory\.json: bty_export_version: this bundle is version "3"/,
  ],
  [
    'no version',
    variant('inventory', (d) => delete d.bty_export_version),
    /^inventory\.json: bty_export_version: this bundle is version null/,
  ],
  [
    'machines not a list',
    variant('inventory', (d) => (d.machines = {})),
    /^inventory\.json: machines: must be a list/,
  ],
  [
    'no machines key',
    variant('inventory', (d) => delete d.machines),
    /^inventory\.json: machines: missing/,
  ],
  [
    'a bad MAC',
    variant('inventory', (d) => (row(d).mac = '52:54:00:00:00')),
    /^inventory\.json: machines\[0\]\.mac: invalid MAC "52:54:00:00:00"/,
  ],
  [
    'a MAC that is not text',
    variant('inventory', (d) => (row(d).mac = 42)),
    /^inventory\.json: machines\[0\]\.mac: invalid MAC 42/,
  ],
  [
    'the same MAC twice, spelt differently',
    variant('inventory', (d) => (d.machines as Doc[]).push({ mac: '52-54-00-00-00-01' })),
    /^inventory\.json: machines\[1\]\.mac: 52:54:00:00:00:01 appears twice \(also machines\[0\]\)/,
  ],
  [
    'a bad exported_at',
    variant('inventory', (d) => (d.exported_at = 'yesterday')),
    /^inventory\.json: exported_at: must be an ISO-8601 time/,
  ],
  [
    'known_disks an object',
    variant('inventory', (d) => (row(d).known_disks = { path: '/dev/sda' })),
    /^inventory\.json: machines\[0\]\.known_disks: must be a list/,
  ],
  [
    'a disk without a path',
    variant('inventory', (d) => (row(d).known_disks = [{ size: '1' }])),
    /^inventory\.json: machines\[0\]\.known_disks\[0\]\.path: must be a non-empty string/,
  ],
  [
    '65 disks',
    variant('inventory', (d) => (row(d).known_disks = Array.from({ length: 65 }, () => DISK))),
    /^inventory\.json: machines\[0\]\.known_disks: at most 64 disks/,
  ],
  [
    'a disk flag that is not a boolean',
    variant('inventory', (d) => (row(d).known_disks = [{ ...DISK, readonly: 'maybe' }])),
    /^inventory\.json: machines\[0\]\.known_disks\[0\]\.readonly: must be a boolean/,
  ],
  [
    'a bad known_disks_at',
    variant('inventory', (d) => (row(d).known_disks_at = '2026-02-30T00:00:00Z')),
    /^inventory\.json: machines\[0\]\.known_disks_at: must be an ISO-8601 time/,
  ],
  [
    'hw_lshw a number',
    variant('inventory', (d) => (row(d).hw_lshw = 7)),
    /^inventory\.json: machines\[0\]\.hw_lshw: must be a JSON object/,
  ],
  [
    'hw_lshw text that is not JSON',
    variant('inventory', (d) => (row(d).hw_lshw = '{oops')),
    /^inventory\.json: machines\[0\]\.hw_lshw: a string here must hold JSON/,
  ],
  [
    'machines.json not JSON',
    variant('machines', 'nope'),
    /^machines\.json: \(file\): not valid JSON/,
  ],
  [
    'machines.json of another version',
    variant('machines', (d) => (d.bty_extension_version = 2)),
    /^machines\.json: bty_extension_version: this file is version 2/,
  ],
  [
    'machines.json from another export',
    variant('machines', (d) => (d.exported_at = '2026-12-01T00:00:00Z')),
    /^machines\.json: exported_at: 2026-12-01T00:00:00Z does not match inventory\.json's 2026-11-30T12:00:00Z/,
  ],
  [
    'machines.json with an unknown top-level key',
    variant('machines', (d) => (d.extra = 1)),
    /^machines\.json: \(file\): unknown key\(s\): extra/,
  ],
  [
    'a label with a bad character',
    variant('machines', (d) => (row(d).labels = ['ok', 'rack;2'])),
    /^machines\.json: machines\[0\]\.labels: "rack;2" must be 1-64 characters/,
  ],
  [
    'a label starting with a hyphen',
    variant('machines', (d) => (row(d).labels = ['-x'])),
    /^machines\.json: machines\[0\]\.labels: "-x"/,
  ],
  [
    'a 65-character label',
    variant('machines', (d) => (row(d).labels = ['x'.repeat(65)])),
    /^machines\.json: machines\[0\]\.labels: "x{65}" must be 1-64/,
  ],
  [
    '17 labels',
    variant('machines', (d) => (row(d).labels = Array.from({ length: 17 }, (_, i) => `l${i}`))),
    /^machines\.json: machines\[0\]\.labels: at most 16 per machine, got 17/,
  ],
  [
    'a label twice',
    variant('machines', (d) => (row(d).labels = ['a', 'b', 'a'])),
    /^machines\.json: machines\[0\]\.labels: "a" appears twice/,
  ],
  [
    'labels not a list',
    variant('machines', (d) => (row(d).labels = 'a,b')),
    /^machines\.json: machines\[0\]\.labels: must be a list of strings/,
  ],
  [
    'an unknown boot mode',
    variant('machines', (d) => (row(d).boot_mode = 'pxe-forever')),
    /^machines\.json: machines\[0\]\.boot_mode: unknown mode "pxe-forever"/,
  ],
  [
    'a bad image ref',
    variant('machines', (d) => (row(d).bty_image_ref = 'ABC')),
    /^machines\.json: machines\[0\]\.bty_image_ref: must be null or 64 lower-case hex/,
  ],
  [
    'a bad sanboot drive',
    variant('machines', (d) => (row(d).sanboot_drive = 'C:')),
    /^machines\.json: machines\[0\]\.sanboot_drive: /,
  ],
  [
    'saw_flasher_boot as text',
    variant('machines', (d) => (row(d).saw_flasher_boot = 'yes')),
    /^machines\.json: machines\[0\]\.saw_flasher_boot: must be true or false/,
  ],
  [
    'a bad IP',
    variant('machines', (d) => (row(d).last_seen_ip = '10.0.0.300')),
    /^machines\.json: machines\[0\]\.last_seen_ip: must be an IP address/,
  ],
  [
    'no created_at',
    variant('machines', (d) => delete row(d).created_at),
    /^machines\.json: machines\[0\] \(52:54:00:00:00:01\): missing key\(s\): created_at/,
  ],
  [
    'a null created_at',
    variant('machines', (d) => (row(d).created_at = null)),
    /^machines\.json: machines\[0\]\.created_at: required/,
  ],
  [
    'an unknown machine key',
    variant('machines', (d) => (row(d).colour = 'red')),
    /^machines\.json: machines\[0\] \(52:54:00:00:00:01\): unknown key\(s\): colour/,
  ],
  [
    'a machine not in inventory.json',
    variant('machines', (d) => (row(d).mac = '52:54:00:00:00:02')),
    /^machines\.json: machines\[0\]\.mac: 52:54:00:00:00:02 is not in inventory\.json/,
  ],
  [
    'a machine missing from machines.json',
    variant('machines', (d) => (d.machines = [])),
    /^machines\.json: machines: 52:54:00:00:00:01 of inventory\.json is missing here/,
  ],
  [
    'a machine twice in machines.json',
    variant('machines', (d) => (d.machines as Doc[]).push({ ...row(d), mac: '52:54:00:00:00:01' })),
    /^machines\.json: machines\[1\]\.mac: 52:54:00:00:00:01 appears twice/,
  ],
  [
    'a catalog ref that is not its src',
    variant('catalog', (d) => (row(d, 'entries').ref = 'f'.repeat(64))),
    /^catalog\.json: entries\[0\]\.ref: "f{64}" is not the ref of its src/,
  ],
  [
    'a catalog name twice',
    variant('catalog', (d) =>
      (d.entries as Doc[]).push({
        ...row(d, 'entries'),
        src: 'https://h.example/b.img',
        ref: validateEntry({ src: 'https://h.example/b.img' }, '', false).ref,
      }),
    ),
    /^catalog\.json: entries\[1\]\.name: "a\.img" appears twice \(also entries\[0\]\)/,
  ],
  [
    'a catalog entry twice',
    variant('catalog', (d) => (d.entries as Doc[]).push({ ...row(d, 'entries'), name: 'other' })),
    /^catalog\.json: entries\[1\]\.ref: appears twice/,
  ],
  [
    'a file:// catalog src',
    variant('catalog', (d) => (row(d, 'entries').src = 'file:///srv/a.img')),
    /^catalog\.json: entries\[0\]\.src: must be an http/,
  ],
  [
    'a negative catalog size',
    variant('catalog', (d) => (row(d, 'entries').size_bytes = -1)),
    /^catalog\.json: entries\[0\]\.size_bytes: must be a non-negative integer/,
  ],
  [
    'a setting twice',
    variant('settings', (d) => (d.settings as Doc[]).push(row(d, 'settings'))),
    /^settings\.json: settings\[1\]\.key: "backup\.cadence" appears twice/,
  ],
  [
    'a setting value that is not text',
    variant('settings', (d) => (row(d, 'settings').value = 1)),
    /^settings\.json: settings\[0\]\.value: must be a string/,
  ],
  [
    'an empty setting key',
    variant('settings', (d) => (row(d, 'settings').key = ' ')),
    /^settings\.json: settings\[0\]\.key: must be 1-128 characters/,
  ],
];

describe('parseBundle refuses bad bundles, naming the file and the field (exit 2)', () => {
  it('the good bundle the table breaks is valid', () => {
    const parsed = parseBundle(goodTexts());
    expect(parsed.inventory).toHaveLength(1);
    expect(parsed.machines?.[0]?.labels).toEqual(['lab']);
    expect(parsed.catalog).toHaveLength(1);
    expect(parsed.settings).toHaveLength(1);
  });

  it.each(BAD_BUNDLES)('%s', (_name, texts, message) => {
    let err: unknown;
    try {
      parseBundle(texts);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BtyError);
    expect((err as BtyError).code).toBe('BTY_ERR_BAD_INPUT');
    expect((err as BtyError).exitCode).toBe(2);
    expect((err as BtyError).message).toMatch(message);
    expect((err as BtyError).details?.file).toMatch(/\.json$/);
  });
});

describe('normaliseTimestamp', () => {
  it.each([
    ['2026-11-29T12:00:00Z', '2026-11-29T12:00:00.000Z'],
    ['2026-11-29T12:00:00.123456+00:00', '2026-11-29T12:00:00.123Z'],
    ['2026-11-29T14:00:00+02:00', '2026-11-29T12:00:00.000Z'],
    ['2026-11-29T12:00:00', '2026-11-29T12:00:00.000Z'],
    ['2026-11-29 12:00:00.5', '2026-11-29T12:00:00.500Z'],
    ['2026-11-29T12:00:00.000Z', '2026-11-29T12:00:00.000Z'],
  ])('%s → %s', (input, expected) => {
    expect(normaliseTimestamp(input)).toBe(expected);
  });
  it.each(['', 'yesterday', '2026-11-29', '2026-02-30T00:00:00Z', '2026-11-29T25:00:00Z', 5])(
    '%j is refused',
    (input) => {
      expect(normaliseTimestamp(input)).toBeNull();
    },
  );
});

describe.each(['sqlite', 'postgres'] as const)('on %s', (engine) => {
  let source: BtyDatabase;
  let exported: string;
  beforeAll(async () => {
    source = await fresh(engine);
    await populate(source);
    exported = folder(`${engine}-export`);
    await exportBundle(source.db, exported, EXPORT_OPTIONS);
  });
  afterAll(async () => {
    await source?.close();
  });

  it('export writes the four files: inventory.json in upstream v3 form, all 2-space JSON', async () => {
    const files = await readFiles(exported);
    expect(Object.keys(files)).toEqual(FILES);
    for (const text of Object.values(files)) {
      expect(text).toBe(JSON.stringify(JSON.parse(text), null, 2) + '\n');
    }
    const inventory = JSON.parse(files['inventory.json']!) as Doc;
    expect(Object.keys(inventory)).toEqual([
      'bty_export_version',
      'exported_at',
      'exported_by_bty_version',
      'machines',
    ]);
    expect(inventory.bty_export_version).toBe(3);
    expect(inventory.exported_at).toBe('2026-11-30T12:00:00Z');
    expect(inventory.exported_by_bty_version).toBe('9.9.9-test');
    const machines = inventory.machines as Doc[];
    expect(machines.map((m) => m.mac)).toEqual([
      '52:54:00:00:00:01',
      '52:54:00:00:00:0a',
      '52:54:00:00:00:0b',
    ]);
    for (const m of machines) {
      expect(Object.keys(m)).toEqual([
        'mac',
        'known_disks',
        'known_disks_at',
        'hw_lshw',
        'hw_lshw_at',
      ]);
    }
    expect(machines[0]).toEqual({
      mac: '52:54:00:00:00:01',
      known_disks: null,
      known_disks_at: null,
      hw_lshw: null,
      hw_lshw_at: null,
    });
    expect(machines[1]).toEqual({
      mac: '52:54:00:00:00:0a',
      known_disks: [DISK],
      known_disks_at: '2026-11-29T09:15:30.250Z',
      hw_lshw: { children: [{ id: 'core' }], class: 'system', id: 'lab-0a' },
      hw_lshw_at: '2026-11-29T09:15:30.250Z',
    });
    expect(machines[2]).toMatchObject({ known_disks: [], hw_lshw: null });

    const records = JSON.parse(files['machines.json']!) as Doc;
    expect(records.bty_extension_version).toBe(1);
    expect(row(records, 'machines', 1)).toEqual({
      mac: '52:54:00:00:00:0a',
      bty_image_ref: expect.stringMatching(/^[0-9a-f]{64}$/) as unknown,
      boot_mode: 'bty-flash-once',
      sanboot_drive: '0x81',
      target_disk_serial: 'S64DNX0R',
      labels: ['GPU', 'a.b_c-d', 'rack 2'],
      saw_flasher_boot: true,
      armed_at: '2026-11-29T09:15:30.250Z',
      discovered_at: null,
      last_seen_at: '2026-11-29T09:15:30.250Z',
      last_seen_ip: 'fd00::a',
      last_flashed_at: '2026-11-29T09:15:30.250Z',
      created_at: '2026-11-29T08:00:00Z',
      updated_at: '2026-11-29T09:15:30.250Z',
    });
    const catalog = JSON.parse(files['catalog.json']!) as Doc;
    expect((catalog.entries as Doc[]).map((e) => e.name)).toEqual([
      'debian 13',
      'ubuntu-24.04.img.zst',
    ]);
    const settings = JSON.parse(files['settings.json']!) as Doc;
    expect((settings.settings as Doc[]).map((s) => s.key)).toEqual([
      'display.timezone',
      'upstream.netboot_tag',
    ]);
    // No temp folders left beside the bundle.
    expect((await readdir(databases.dir())).filter((n) => n.includes('.export-'))).toEqual([]);
  });

  it('round trip: import into an empty database, export again: the same files', async () => {
    const target = await fresh(engine);
    try {
      const result = await importBundle(target.db, exported, { now: T1 });
      expect(result).toMatchObject({
        machines: 3,
        withRecords: true,
        catalog: { added: 2, updated: 0, unchanged: 0 },
        settings: 2,
        skipped: [],
      });
      const again = folder(`${engine}-again`);
      await exportBundle(target.db, again, EXPORT_OPTIONS);
      expect(await readFiles(again)).toEqual(await readFiles(exported));
      // The rows themselves, not only their exported form.
      expect(await getMachine(target.db, '52:54:00:00:00:0a')).toEqual(
        await getMachine(source.db, '52:54:00:00:00:0a'),
      );
      expect(await getLabels(target.db, '52:54:00:00:00:0a')).toEqual(['GPU', 'a.b_c-d', 'rack 2']);
      // The import is in the audit log; the log itself never travels.
      const events = await listEvents(target.db, { kind: 'bundle.imported' });
      expect(events).toHaveLength(1);
      expect(events[0]!.details).toMatchObject({ machines: 3, with_records: true });
      // Importing the same bundle again changes nothing but the log.
      const second = await importBundle(target.db, exported, { now: T1 });
      expect(second.catalog).toEqual({ added: 0, updated: 0, unchanged: 2 });
      const third = folder(`${engine}-third`);
      await exportBundle(target.db, third, EXPORT_OPTIONS);
      expect(await readFiles(third)).toEqual(await readFiles(exported));
    } finally {
      await target.close();
    }
  });

  it('an upstream bundle (inventory.json only) imports as upstream does', async () => {
    const target = await fresh(engine);
    try {
      // A machine the bundle replaces (its binding and labels go) and one it leaves alone.
      await populate(target);
      const upstream = folder(`${engine}-upstream`);
      const big = { blob: 'x'.repeat(4 * 1024 * 1024) };
      await writeBundle(upstream, {
        // Python's json.dumps(indent=2) and upstream's timestamp form.
        inventory:
          JSON.stringify(
            {
              bty_export_version: 3,
              exported_at: '2026-11-28T10:00:00.123456+00:00',
              exported_by_bty_version: '0.70.1',
              machines: [
                {
                  mac: '52-54-00-00-00-0A',
                  known_disks: [{ path: '/dev/sda', size: 1000, removable: 1 }],
                  known_disks_at: '2026-11-28T09:00:00.654321+00:00',
                  hw_lshw: JSON.stringify({ id: 'from-text' }),
                  hw_lshw_at: '2026-11-28T09:00:00+00:00',
                },
                {
                  mac: 'aa:bb:cc:dd:ee:ff',
                  known_disks: null,
                  known_disks_at: null,
                  hw_lshw: big,
                  hw_lshw_at: '2026-11-28T09:00:00+00:00',
                },
              ],
            },
            null,
            2,
          ) + '\n',
      });
      const result = await importBundle(target.db, upstream, { now: T1 });
      expect(result).toMatchObject({
        machines: 2,
        withRecords: false,
        catalog: null,
        settings: null,
      });
      expect(result.skipped).toEqual([
        expect.stringMatching(/^machines\[1\] \(aa:bb:cc:dd:ee:ff\): hw_lshw is \d+ bytes, over/),
      ]);
      const replaced = await getMachine(target.db, '52:54:00:00:00:0a');
      expect(replaced).toMatchObject({
        boot_mode: 'bty-inventory',
        bty_image_ref: null,
        sanboot_drive: null,
        target_disk_serial: null,
        saw_flasher_boot: 0,
        armed_at: null,
        last_flashed_at: null,
        discovered_at: null,
        last_seen_at: null,
        created_at: T1.toISOString(),
        updated_at: T1.toISOString(),
      });
      expect(await getLabels(target.db, '52:54:00:00:00:0a')).toEqual([]);
      const inventory = await target.db
        .selectFrom('inventory')
        .selectAll()
        .orderBy('mac')
        .execute();
      expect(inventory).toEqual([
        {
          mac: '52:54:00:00:00:0a',
          disks:
            '[{"model":null,"path":"/dev/sda","readonly":false,"removable":true,"serial":null,' +
            '"size":"1000","tran":null,"vendor":null}]',
          disks_at: '2026-11-28T09:00:00.654Z',
          lshw: '{"id":"from-text"}',
          lshw_at: '2026-11-28T09:00:00.000Z',
        },
        // Untouched: not in the bundle.
        expect.objectContaining({ mac: '52:54:00:00:00:0b', disks: '[]' }),
      ]);
      // The oversize lshw was skipped, so that machine has no inventory row at all.
      expect(await getMachine(target.db, 'aa:bb:cc:dd:ee:ff')).toMatchObject({
        boot_mode: 'bty-inventory',
      });
      // Not in the bundle: kept as it was.
      expect(await getMachine(target.db, '52:54:00:00:00:01')).toMatchObject({
        boot_mode: 'ipxe-exit',
        created_at: T1.toISOString(),
      });
    } finally {
      await target.close();
    }
  });

  it('a bad bundle changes nothing, whatever is wrong with it', async () => {
    const target = await fresh(engine);
    try {
      await populate(target);
      const before = folder(`${engine}-before`);
      await exportBundle(target.db, before, EXPORT_OPTIONS);
      const eventsBefore = (await listEvents(target.db, { limit: 1000 })).length;
      for (const [name, texts, message] of BAD_BUNDLES) {
        const bundle = folder(`${engine}-bad`);
        await writeBundle(bundle, texts);
        const err = await importBundle(target.db, bundle).catch((e: unknown) => e);
        expect(err, name).toBeInstanceOf(BtyError);
        expect((err as BtyError).message, name).toMatch(message);
      }
      // Valid on its own, but its catalog entry takes a name the database already gives to
      // another source: found inside the transaction, after the machines were written.
      const clash = folder(`${engine}-clash`);
      const texts = goodTexts();
      const catalog = JSON.parse(texts.catalog) as Doc;
      const src = 'https://elsewhere.example/ubuntu-24.04.img.zst';
      Object.assign(row(catalog, 'entries'), {
        src,
        name: 'ubuntu-24.04.img.zst',
        ref: validateEntry({ src }, '', false).ref,
      });
      await writeBundle(clash, { ...texts, catalog: JSON.stringify(catalog) });
      const err = await importBundle(target.db, clash).catch((e: unknown) => e);
      expect((err as BtyError).message).toMatch(
        /^catalog\.json: entries: name "ubuntu-24\.04\.img\.zst" .* is already used by the catalog entry/,
      );
      // Missing or unreadable folders.
      for (const missing of [
        join(databases.dir(), 'no-such-bundle'),
        join(before, 'inventory.json'),
      ]) {
        const e = await importBundle(target.db, missing).catch((x: unknown) => x);
        expect((e as BtyError).code).toBe('BTY_ERR_BAD_INPUT');
      }
      const after = folder(`${engine}-after`);
      await exportBundle(target.db, after, EXPORT_OPTIONS);
      expect(await readFiles(after)).toEqual(await readFiles(before));
      expect((await listEvents(target.db, { limit: 1000 })).length).toBe(eventsBefore);
      expect(await getMachine(target.db, '52:54:00:00:00:01')).toMatchObject({
        boot_mode: 'ipxe-exit',
      });
    } finally {
      await target.close();
    }
  });

  it('export refuses a non-empty folder unless forced, and fills an empty one', async () => {
    const busy = folder(`${engine}-busy`);
    await mkdir(busy);
    await writeFile(join(busy, 'notes.txt'), 'keep me');
    const err = await exportBundle(source.db, busy, EXPORT_OPTIONS).catch((e: unknown) => e);
    expect((err as BtyError).code).toBe('BTY_ERR_BAD_INPUT');
    expect((err as BtyError).message).toMatch(/the folder is not empty/);
    expect((err as BtyError).hint).toMatch(/--force/);
    expect(await readdir(busy)).toEqual(['notes.txt']);

    await exportBundle(source.db, busy, { ...EXPORT_OPTIONS, force: true });
    expect((await readdir(busy)).sort()).toEqual(FILES);
    expect(await readFiles(busy)).toEqual(await readFiles(exported));

    const empty = folder(`${engine}-empty`);
    await mkdir(empty);
    await exportBundle(source.db, empty, EXPORT_OPTIONS);
    expect((await readdir(empty)).sort()).toEqual(FILES);
    expect((await stat(empty)).mode & 0o777).toBe(0o755);

    const file = folder(`${engine}-file`);
    await writeFile(file, 'not a folder');
    const notDir = await exportBundle(source.db, file, { ...EXPORT_OPTIONS, force: true }).catch(
      (e: unknown) => e,
    );
    expect((notDir as BtyError).message).toMatch(/exists and is not a folder/);

    const nested = join(folder(`${engine}-parent`), 'a', 'b');
    await exportBundle(source.db, nested, EXPORT_OPTIONS);
    expect((await readdir(nested)).sort()).toEqual(FILES);
    expect(
      (await readdir(databases.dir())).filter(
        (n) => n.includes('.export-') || n.includes('.replaced-'),
      ),
    ).toEqual([]);
  });

  it('an empty database exports empty lists, and imports back to nothing', async () => {
    const empty = await fresh(engine);
    try {
      const bundle = folder(`${engine}-nothing`);
      expect(await exportBundle(empty.db, bundle, EXPORT_OPTIONS)).toMatchObject({
        machines: 0,
        catalogEntries: 0,
        settings: 0,
      });
      const inventory = await readFile(join(bundle, 'inventory.json'), 'utf8');
      expect(inventory).toBe(
        '{\n  "bty_export_version": 3,\n  "exported_at": "2026-11-30T12:00:00Z",\n' +
          '  "exported_by_bty_version": "9.9.9-test",\n  "machines": []\n}\n',
      );
      expect((await importBundle(empty.db, bundle)).machines).toBe(0);
    } finally {
      await empty.close();
    }
  });
});

it('export into a folder it cannot write is an operator error naming the folder', async () => {
  const database = await fresh('sqlite');
  try {
    const blocker = join(databases.dir(), 'blocker');
    await writeFile(blocker, 'a file where a parent folder should be');
    const err = await exportBundle(database.db, join(blocker, 'bundle')).catch((e: unknown) => e);
    expect((err as BtyError).code).toBe('BTY_ERR_BAD_INPUT');
    expect((err as BtyError).message).toMatch(/blocker\/bundle: cannot write the bundle: /);
  } finally {
    await database.close();
  }
});
