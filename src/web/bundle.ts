/**
 * Export and import bundles: `bty-web export DIR` and `bty-web import DIR`.
 *
 * A bundle is a folder. Its core is upstream's format v3 (upstream-web §13.4), kept exactly so
 * bundles move both ways between upstream bty-web and this one:
 *
 *   inventory.json   {"bty_export_version": 3, "exported_at", "exported_by_bty_version",
 *                     "machines": [{"mac", "known_disks", "known_disks_at", "hw_lshw",
 *                                   "hw_lshw_at"}, …]}
 *
 * Upstream's bundle carries nothing else, so an upstream-style import turns every machine into a
 * fresh `bty-inventory` record (§13.5). To make a bundle a full backup of this server, three
 * optional files ride beside it, each marked `"bty_extension_version": 1` and stamped with the
 * same `exported_at` as inventory.json (so files of two exports are never mixed):
 *
 *   machines.json    the rest of each machine record: binding, labels, boot-cycle state, times
 *   catalog.json     the image catalog entries
 *   settings.json    the settings table
 *
 * Upstream ignores these files; a bundle without them imports as upstream does. The audit log
 * (events) and transient flash progress never travel.
 *
 * Export reads everything in one read transaction (one snapshot), writes the files into a temp
 * folder beside DIR and renames it into place: DIR is complete or untouched. Import validates
 * every file before it writes anything, then applies the bundle in one transaction.
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rename,
  rm,
} from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { sql, type Kysely, type Transaction } from 'kysely';
import { BtyError } from '../core/errors.ts';
import { parseMac } from '../core/mac.ts';
import { VERSION } from '../core/version.ts';
import { DISCOVERY_BOOT_MODE } from './boot-offer.ts';
import {
  listCatalogEntries,
  planCatalogMerge,
  upsertCatalogRows,
  type CatalogEntryFields,
  type StoredCatalogEntry,
} from './db/catalog.ts';
import { appendEvent } from './db/events.ts';
import type { Database } from './db/schema.ts';
import { validateEntry } from './routes/catalog.ts';
import { LSHW_MAX_BYTES, normaliseDisks, sortedJson } from './routes/live.ts';
import { isoUtc, parseMachineUpsert } from './routes/machines.ts';

/** Upstream's bundle version: the only one written and the only one read. */
export const BUNDLE_VERSION = 3;
/** The version of the optional files this server adds beside inventory.json. */
export const EXTENSION_VERSION = 1;

export const BUNDLE_FILES = {
  inventory: 'inventory.json',
  machines: 'machines.json',
  catalog: 'catalog.json',
  settings: 'settings.json',
} as const;
type BundleFile = (typeof BUNDLE_FILES)[keyof typeof BUNDLE_FILES];

// ---------------------------------------------------------------------------------------------
// The JSON shapes
// ---------------------------------------------------------------------------------------------

/** One machine in inventory.json (upstream's shape and key order). */
export interface InventoryMachineJson {
  mac: string;
  known_disks: unknown[] | null;
  known_disks_at: string | null;
  hw_lshw: unknown;
  hw_lshw_at: string | null;
}

/** One machine in machines.json: everything of the record inventory.json leaves out. */
export interface MachineJson {
  mac: string;
  bty_image_ref: string | null;
  boot_mode: string;
  sanboot_drive: string | null;
  target_disk_serial: string | null;
  labels: string[];
  saw_flasher_boot: boolean;
  armed_at: string | null;
  discovered_at: string | null;
  last_seen_at: string | null;
  last_seen_ip: string | null;
  last_flashed_at: string | null;
  created_at: string;
  updated_at: string;
}

/** One entry in catalog.json: the stored entry with its ref. */
export interface CatalogEntryJson {
  ref: string;
  name: string;
  src: string;
  sha256: string | null;
  format: string | null;
  size_bytes: number | null;
  description: string | null;
  arch: string | null;
  created_at: string;
  updated_at: string;
}

export interface SettingJson {
  key: string;
  value: string;
  updated_at: string;
}

const MACHINE_KEYS = [
  'mac',
  'bty_image_ref',
  'boot_mode',
  'sanboot_drive',
  'target_disk_serial',
  'labels',
  'saw_flasher_boot',
  'armed_at',
  'discovered_at',
  'last_seen_at',
  'last_seen_ip',
  'last_flashed_at',
  'created_at',
  'updated_at',
] as const satisfies ReadonlyArray<keyof MachineJson>;

const CATALOG_KEYS = [
  'ref',
  'name',
  'src',
  'sha256',
  'format',
  'size_bytes',
  'description',
  'arch',
  'created_at',
  'updated_at',
] as const satisfies ReadonlyArray<keyof CatalogEntryJson>;

const SETTING_KEYS = ['key', 'value', 'updated_at'] as const satisfies ReadonlyArray<
  keyof SettingJson
>;

export const MAX_SETTING_KEY_LENGTH = 128;

// ---------------------------------------------------------------------------------------------
// Validation helpers: every failure names the file and the field
// ---------------------------------------------------------------------------------------------

const BAD_BUNDLE_HINT =
  'Nothing was imported. Correct the file and field named, or export the bundle again with ' +
  '`bty-web export`.';

/** `file`: a bundle file's name, or the bundle folder itself. */
function bad(file: string, field: string, problem: string): BtyError {
  return new BtyError('BTY_ERR_BAD_INPUT', `${file}: ${field}: ${problem}`, {
    hint: BAD_BUNDLE_HINT,
    details: { file, field },
  });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The error text of a validator that throws (field first), or the thrown value as text. */
function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Splits `field: problem` (the validators' message shape) so the field can be qualified. */
function splitFieldMessage(message: string): { field: string; problem: string } {
  const at = message.indexOf(': ');
  if (at <= 0) return { field: '', problem: message };
  return { field: message.slice(0, at), problem: message.slice(at + 2) };
}

const TIMESTAMP =
  /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,9}))?(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

/**
 * An ISO-8601 time as stored (`2026-11-29T12:00:00.000Z`). Upstream writes
 * `…T12:00:00.123456+00:00`; both forms, any offset, and a naive time (taken as UTC, as
 * upstream does) are accepted; the fraction is cut to milliseconds.
 */
export function normaliseTimestamp(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const m = TIMESTAMP.exec(value.trim());
  if (!m) return null;
  const [, date, time, fraction = '', zoneRaw] = m;
  let zone = zoneRaw === undefined || zoneRaw.toUpperCase() === 'Z' ? 'Z' : zoneRaw;
  if (zone !== 'Z') {
    const digits = zone.slice(1).replace(':', '');
    zone = `${zone[0]}${digits.slice(0, 2)}:${digits.slice(2, 4) || '00'}`;
  }
  const millis = fraction.padEnd(3, '0').slice(0, 3);
  const t = Date.parse(`${date}T${time}.${millis}${zone}`);
  if (Number.isNaN(t)) return null;
  // Date.parse rolls 2026-02-30 over to March: refuse dates that do not exist.
  if (zone === 'Z' && new Date(t).toISOString().slice(0, 10) !== date) return null;
  return new Date(t).toISOString();
}

function timestampField(
  file: BundleFile,
  field: string,
  value: unknown,
  required: boolean,
): string | null {
  if (value === null || value === undefined) {
    if (required) throw bad(file, field, 'required, an ISO-8601 time');
    return null;
  }
  const t = normaliseTimestamp(value);
  if (t === null) {
    throw bad(
      file,
      field,
      `must be an ISO-8601 time like 2026-11-29T12:00:00Z${required ? '' : ' or null'}, got ` +
        JSON.stringify(value),
    );
  }
  return t;
}

function requireKeys(
  file: BundleFile,
  field: string,
  value: Record<string, unknown>,
  keys: readonly string[],
): void {
  const missing = keys.filter((k) => !(k in value));
  if (missing.length > 0) throw bad(file, field, `missing key(s): ${missing.join(', ')}`);
  const extra = Object.keys(value).filter((k) => !keys.includes(k));
  if (extra.length > 0) {
    throw bad(file, field, `unknown key(s): ${extra.join(', ')} (known: ${keys.join(', ')})`);
  }
}

function parseJson(file: BundleFile, text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw bad(file, '(file)', `not valid JSON: ${messageOf(err)}`);
  }
}

/** A list of rows under `key` of a JSON object; refuses anything else. */
function rowsOf(file: BundleFile, doc: Record<string, unknown>, key: string): unknown[] {
  if (!(key in doc)) throw bad(file, key, 'missing: the list of rows');
  const rows = doc[key];
  if (!Array.isArray(rows)) throw bad(file, key, 'must be a list');
  return rows;
}

/** A MAC of a row, canonical; refuses bad and repeated ones. */
function macField(
  file: BundleFile,
  field: string,
  value: unknown,
  seen: Map<string, string>,
): string {
  const mac = typeof value === 'string' ? parseMac(value) : null;
  if (mac === null) {
    throw bad(
      file,
      `${field}.mac`,
      `invalid MAC ${JSON.stringify(value)} (want aa:bb:cc:dd:ee:ff)`,
    );
  }
  const earlier = seen.get(mac);
  if (earlier !== undefined) {
    throw bad(file, `${field}.mac`, `${mac} appears twice (also ${earlier})`);
  }
  seen.set(mac, field);
  return mac;
}

// ---------------------------------------------------------------------------------------------
// Parsing a bundle (pure: file texts in, validated rows out)
// ---------------------------------------------------------------------------------------------

/** The texts of a bundle's files; an absent optional file is undefined. */
export interface BundleTexts {
  inventory?: string;
  machines?: string;
  catalog?: string;
  settings?: string;
}

export interface InventoryRow {
  mac: string;
  disks: string | null;
  disks_at: string | null;
  lshw: string | null;
  lshw_at: string | null;
}

export interface MachineRowFull {
  mac: string;
  bty_image_ref: string | null;
  boot_mode: string;
  sanboot_drive: string | null;
  target_disk_serial: string | null;
  labels: string[];
  saw_flasher_boot: number;
  armed_at: string | null;
  discovered_at: string | null;
  last_seen_at: string | null;
  last_seen_ip: string | null;
  last_flashed_at: string | null;
  created_at: string;
  updated_at: string;
}

export type CatalogRow = StoredCatalogEntry;

export interface SettingRow {
  key: string;
  value: string;
  updated_at: string;
}

export interface ParsedBundle {
  exportedAt: string | null;
  exportedBy: string | null;
  /** Every machine of inventory.json, in file order. */
  inventory: InventoryRow[];
  /** machines.json's records (same MACs as `inventory`), or null for an upstream bundle. */
  machines: MachineRowFull[] | null;
  catalog: CatalogRow[] | null;
  settings: SettingRow[] | null;
  /** What was left out, one line each (upstream's "skipped:" lines). */
  skipped: string[];
}

const INVENTORY = BUNDLE_FILES.inventory;

/**
 * A stored JSON column from the bundle: upstream writes decoded values, and (older writers)
 * sometimes the JSON text itself; both are accepted.
 */
function decodedJson(file: BundleFile, field: string, value: unknown): unknown {
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value) as unknown;
  } catch {
    throw bad(file, field, 'a string here must hold JSON text');
  }
}

function parseInventoryMachine(
  raw: unknown,
  field: string,
  seen: Map<string, string>,
  skipped: string[],
): InventoryRow {
  if (!isObject(raw)) throw bad(INVENTORY, field, 'must be an object');
  const mac = macField(INVENTORY, field, raw.mac, seen);
  const where = `${field} (${mac})`;

  const disksValue = decodedJson(INVENTORY, `${field}.known_disks`, raw.known_disks ?? null);
  let disks: string | null = null;
  if (disksValue !== null) {
    if (!Array.isArray(disksValue)) {
      throw bad(INVENTORY, `${field}.known_disks`, 'must be a list of disks or null');
    }
    try {
      disks = sortedJson(normaliseDisks(disksValue));
    } catch (err) {
      const { field: sub, problem } = splitFieldMessage(messageOf(err));
      throw bad(INVENTORY, `${field}.known_${sub || 'disks'}`, problem);
    }
  }
  const disksAt = timestampField(INVENTORY, `${field}.known_disks_at`, raw.known_disks_at, false);

  const lshwValue = decodedJson(INVENTORY, `${field}.hw_lshw`, raw.hw_lshw ?? null);
  let lshw: string | null = null;
  let lshwAt = timestampField(INVENTORY, `${field}.hw_lshw_at`, raw.hw_lshw_at, false);
  if (lshwValue !== null) {
    if (typeof lshwValue !== 'object') {
      throw bad(INVENTORY, `${field}.hw_lshw`, 'must be a JSON object, a list or null');
    }
    try {
      lshw = sortedJson(lshwValue);
    } catch (err) {
      throw bad(INVENTORY, `${field}.hw_lshw`, `cannot be stored: ${messageOf(err)}`);
    }
    const size = Buffer.byteLength(lshw, 'utf8');
    if (size > LSHW_MAX_BYTES) {
      skipped.push(
        `${where}: hw_lshw is ${size} bytes, over the ${LSHW_MAX_BYTES}-byte limit; not imported`,
      );
      lshw = null;
      lshwAt = null;
    }
  }
  return { mac, disks, disks_at: disksAt, lshw, lshw_at: lshwAt };
}

function parseInventoryFile(text: string | undefined): {
  exportedAt: string | null;
  exportedBy: string | null;
  rows: InventoryRow[];
  skipped: string[];
} {
  if (text === undefined) {
    throw bad(INVENTORY, '(file)', 'missing: every bundle has an inventory.json');
  }
  const doc = parseJson(INVENTORY, text);
  if (!isObject(doc)) throw bad(INVENTORY, '(file)', 'must be a JSON object');
  const version = doc.bty_export_version;
  if (version !== BUNDLE_VERSION) {
    throw bad(
      INVENTORY,
      'bty_export_version',
      `this bundle is version ${JSON.stringify(version ?? null)}; bty-web reads version ` +
        `${BUNDLE_VERSION} only: export the bundle again with a current bty-web`,
    );
  }
  const exportedAt = timestampField(INVENTORY, 'exported_at', doc.exported_at, false);
  const by = doc.exported_by_bty_version;
  if (by !== undefined && by !== null && typeof by !== 'string') {
    throw bad(INVENTORY, 'exported_by_bty_version', 'must be a string');
  }
  const seen = new Map<string, string>();
  const skipped: string[] = [];
  const rows = rowsOf(INVENTORY, doc, 'machines').map((raw, i) =>
    parseInventoryMachine(raw, `machines[${i}]`, seen, skipped),
  );
  return { exportedAt, exportedBy: typeof by === 'string' ? by : null, rows, skipped };
}

/** An extension file's envelope: its version, its export time (matching inventory.json's). */
function extensionRows(
  file: BundleFile,
  text: string,
  key: string,
  exportedAt: string | null,
): unknown[] {
  const doc = parseJson(file, text);
  if (!isObject(doc)) throw bad(file, '(file)', 'must be a JSON object');
  if (doc.bty_extension_version !== EXTENSION_VERSION) {
    throw bad(
      file,
      'bty_extension_version',
      `this file is version ${JSON.stringify(doc.bty_extension_version ?? null)}; this ` +
        `bty-web reads version ${EXTENSION_VERSION}`,
    );
  }
  const at = timestampField(file, 'exported_at', doc.exported_at, true);
  if (at !== exportedAt) {
    throw bad(
      file,
      'exported_at',
      `${isoUtc(at)} does not match inventory.json's ${isoUtc(exportedAt) ?? '(none)'}: ` +
        'the files come from different exports',
    );
  }
  const extra = Object.keys(doc).filter(
    (k) => !['bty_extension_version', 'exported_at', key].includes(k),
  );
  if (extra.length > 0) throw bad(file, '(file)', `unknown key(s): ${extra.join(', ')}`);
  return rowsOf(file, doc, key);
}

function parseMachinesFile(
  text: string,
  exportedAt: string | null,
  inventory: readonly InventoryRow[],
): MachineRowFull[] {
  const file = BUNDLE_FILES.machines;
  const seen = new Map<string, string>();
  const rows = extensionRows(file, text, 'machines', exportedAt).map((raw, i): MachineRowFull => {
    const field = `machines[${i}]`;
    if (!isObject(raw)) throw bad(file, field, 'must be an object');
    const mac = macField(file, field, raw.mac, seen);
    requireKeys(file, `${field} (${mac})`, raw, MACHINE_KEYS);
    const labels = raw.labels;
    if (Array.isArray(labels)) {
      const list = labels as unknown[];
      const repeated = list.find((l, j) => list.indexOf(l) !== j);
      if (repeated !== undefined) {
        throw bad(file, `${field}.labels`, `${JSON.stringify(repeated)} appears twice`);
      }
    }
    const upsert = parseMachineUpsert({
      bty_image_ref: raw.bty_image_ref,
      boot_mode: raw.boot_mode,
      sanboot_drive: raw.sanboot_drive,
      target_disk_serial: raw.target_disk_serial,
      labels,
    });
    if (!upsert.ok) {
      const { field: sub, problem } = splitFieldMessage(upsert.message);
      throw bad(file, sub ? `${field}.${sub}` : field, problem);
    }
    if (typeof raw.saw_flasher_boot !== 'boolean') {
      throw bad(file, `${field}.saw_flasher_boot`, 'must be true or false');
    }
    const ip = raw.last_seen_ip as string | null;
    if (ip !== null && (typeof ip !== 'string' || isIP(ip) === 0)) {
      throw bad(
        file,
        `${field}.last_seen_ip`,
        `must be an IP address or null, got ${JSON.stringify(ip)}`,
      );
    }
    const time = (key: 'armed_at' | 'discovered_at' | 'last_seen_at' | 'last_flashed_at') =>
      timestampField(file, `${field}.${key}`, raw[key], false);
    const b = upsert.binding;
    return {
      mac,
      bty_image_ref: b.bty_image_ref,
      boot_mode: b.boot_mode,
      sanboot_drive: b.sanboot_drive,
      target_disk_serial: b.target_disk_serial,
      labels: [...b.labels],
      saw_flasher_boot: raw.saw_flasher_boot ? 1 : 0,
      armed_at: time('armed_at'),
      discovered_at: time('discovered_at'),
      last_seen_at: time('last_seen_at'),
      last_seen_ip: ip,
      last_flashed_at: time('last_flashed_at'),
      created_at: timestampField(file, `${field}.created_at`, raw.created_at, true)!,
      updated_at: timestampField(file, `${field}.updated_at`, raw.updated_at, true)!,
    };
  });
  // The two files describe one set of machines.
  const inInventory = new Set(inventory.map((r) => r.mac));
  for (const row of rows) {
    if (!inInventory.has(row.mac)) {
      throw bad(file, `${seen.get(row.mac)}.mac`, `${row.mac} is not in inventory.json`);
    }
  }
  for (const row of inventory) {
    if (!seen.has(row.mac)) {
      throw bad(file, 'machines', `${row.mac} of inventory.json is missing here`);
    }
  }
  return rows;
}

function parseCatalogFile(text: string, exportedAt: string | null): CatalogRow[] {
  const file = BUNDLE_FILES.catalog;
  const refs = new Map<string, string>();
  const names = new Map<string, string>();
  return extensionRows(file, text, 'entries', exportedAt).map((raw, i): CatalogRow => {
    const field = `entries[${i}]`;
    if (!isObject(raw)) throw bad(file, field, 'must be an object');
    requireKeys(file, field, raw, CATALOG_KEYS);
    let fields: CatalogEntryFields;
    try {
      fields = validateEntry(raw as { src: unknown }, '', false);
    } catch (err) {
      const { field: sub, problem } = splitFieldMessage(messageOf(err));
      throw bad(file, sub ? `${field}.${sub}` : field, problem);
    }
    if (raw.ref !== fields.ref) {
      throw bad(
        file,
        `${field}.ref`,
        `${JSON.stringify(raw.ref)} is not the ref of its src (sha256 of the canonical src: ` +
          `${fields.ref})`,
      );
    }
    const sameRef = refs.get(fields.ref);
    if (sameRef !== undefined) throw bad(file, `${field}.ref`, `appears twice (also ${sameRef})`);
    refs.set(fields.ref, field);
    const sameName = names.get(fields.name);
    if (sameName !== undefined) {
      throw bad(
        file,
        `${field}.name`,
        `${JSON.stringify(fields.name)} appears twice (also ${sameName})`,
      );
    }
    names.set(fields.name, field);
    return {
      ...fields,
      created_at: timestampField(file, `${field}.created_at`, raw.created_at, true)!,
      updated_at: timestampField(file, `${field}.updated_at`, raw.updated_at, true)!,
    };
  });
}

function parseSettingsFile(text: string, exportedAt: string | null): SettingRow[] {
  const file = BUNDLE_FILES.settings;
  const keys = new Map<string, string>();
  return extensionRows(file, text, 'settings', exportedAt).map((raw, i): SettingRow => {
    const field = `settings[${i}]`;
    if (!isObject(raw)) throw bad(file, field, 'must be an object');
    requireKeys(file, field, raw, SETTING_KEYS);
    const { key, value } = raw;
    // eslint-disable-next-line no-control-regex
    const control = /[\u0000-\u001f\u007f]/;
    if (
      typeof key !== 'string' ||
      key.trim() === '' ||
      key.length > MAX_SETTING_KEY_LENGTH ||
      control.test(key)
    ) {
      throw bad(
        file,
        `${field}.key`,
        `must be 1-${MAX_SETTING_KEY_LENGTH} characters without control characters`,
      );
    }
    if (typeof value !== 'string') throw bad(file, `${field}.value`, 'must be a string');
    const earlier = keys.get(key);
    if (earlier !== undefined) {
      throw bad(file, `${field}.key`, `${JSON.stringify(key)} appears twice (also ${earlier})`);
    }
    keys.set(key, field);
    return {
      key,
      value,
      updated_at: timestampField(file, `${field}.updated_at`, raw.updated_at, true)!,
    };
  });
}

/** Validates a whole bundle without touching anything; throws BTY_ERR_BAD_INPUT naming the file. */
export function parseBundle(texts: BundleTexts): ParsedBundle {
  const inventory = parseInventoryFile(texts.inventory);
  const at = inventory.exportedAt;
  return {
    exportedAt: at,
    exportedBy: inventory.exportedBy,
    inventory: inventory.rows,
    machines:
      texts.machines === undefined ? null : parseMachinesFile(texts.machines, at, inventory.rows),
    catalog: texts.catalog === undefined ? null : parseCatalogFile(texts.catalog, at),
    settings: texts.settings === undefined ? null : parseSettingsFile(texts.settings, at),
    skipped: inventory.skipped,
  };
}

/** Reads a bundle folder's files (absent optional ones stay undefined). */
export async function readBundle(dir: string): Promise<BundleTexts> {
  const info = await lstat(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw bad(dir, '(folder)', `cannot be read: ${err.message}`);
  });
  if (info === null) throw bad(dir, '(folder)', 'no such folder');
  if (!info.isDirectory()) throw bad(dir, '(folder)', 'not a folder');
  const read = async (name: BundleFile): Promise<string | undefined> => {
    try {
      return await readFile(join(dir, name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw bad(name, '(file)', `cannot be read: ${messageOf(err)}`);
    }
  };
  const texts: BundleTexts = {};
  const inventory = await read(BUNDLE_FILES.inventory);
  if (inventory === undefined) {
    throw bad(BUNDLE_FILES.inventory, '(file)', `missing: ${dir} holds no inventory.json`);
  }
  texts.inventory = inventory;
  const machines = await read(BUNDLE_FILES.machines);
  if (machines !== undefined) texts.machines = machines;
  const catalog = await read(BUNDLE_FILES.catalog);
  if (catalog !== undefined) texts.catalog = catalog;
  const settings = await read(BUNDLE_FILES.settings);
  if (settings !== undefined) texts.settings = settings;
  return texts;
}

// ---------------------------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------------------------

export interface ImportOptions {
  now?: Date;
  /** Recorded in the audit event (default: the folder's absolute path). */
  source?: string;
}

export interface ImportResult {
  machines: number;
  /** machines.json was there: bindings, labels and times restored (else upstream's rule). */
  withRecords: boolean;
  catalog: { added: number; updated: number; unchanged: number } | null;
  settings: number | null;
  skipped: string[];
  eventId: number;
}

/** Rows per multi-row statement: far below either engine's parameter limit. */
const CHUNK = 200;

function chunks<T>(items: readonly T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Applies a validated bundle in one transaction.
 *
 * - Machines: each bundle machine replaces the record of that MAC (labels and inventory
 *   included); machines not in the bundle stay. With machines.json the record is restored as
 *   exported; without it (an upstream bundle) it becomes upstream's fresh `bty-inventory`
 *   record: no binding, no labels, bit clear, created and updated now.
 * - Catalog: merged by ref (added / updated / unchanged; entries not in the bundle stay). A name
 *   that another entry already holds refuses the whole import.
 * - Settings: each key in the bundle is set; others stay.
 */
export async function applyBundle(
  db: Kysely<Database>,
  bundle: ParsedBundle,
  options: ImportOptions = {},
): Promise<ImportResult> {
  const now = options.now ?? new Date();
  const at = now.toISOString();
  const records = new Map((bundle.machines ?? []).map((m) => [m.mac, m]));
  return db.transaction().execute(async (tx): Promise<ImportResult> => {
    // A write first: SQLite then holds the write lock for the whole transaction, so a server
    // writing meanwhile waits (busy timeout) instead of invalidating this one's reads.
    await sql`UPDATE settings SET value = value WHERE 1 = 0`.execute(tx);

    for (const part of chunks(bundle.inventory.map((r) => r.mac))) {
      await tx.deleteFrom('machine_labels').where('mac', 'in', part).execute();
      await tx.deleteFrom('inventory').where('mac', 'in', part).execute();
      await tx.deleteFrom('machines').where('mac', 'in', part).execute();
    }
    const machineRows = bundle.inventory.map((inv) => {
      const r = records.get(inv.mac);
      if (r === undefined) {
        return {
          mac: inv.mac,
          bty_image_ref: null,
          discovered_at: null,
          last_seen_at: null,
          last_seen_ip: null,
          boot_mode: DISCOVERY_BOOT_MODE,
          sanboot_drive: null,
          last_flashed_at: null,
          saw_flasher_boot: 0,
          armed_at: null,
          target_disk_serial: null,
          progress: null,
          progress_at: null,
          created_at: at,
          updated_at: at,
        };
      }
      const { labels: _labels, ...row } = r;
      return { ...row, progress: null, progress_at: null };
    });
    for (const part of chunks(machineRows)) await tx.insertInto('machines').values(part).execute();

    const inventoryRows = bundle.inventory.filter(
      (r) => r.disks !== null || r.disks_at !== null || r.lshw !== null || r.lshw_at !== null,
    );
    // lshw blobs are large: a few rows per statement.
    for (const part of chunks(inventoryRows, 20)) {
      await tx.insertInto('inventory').values(part).execute();
    }
    const labelRows = [...records.values()].flatMap((m) =>
      m.labels.map((label) => ({ mac: m.mac, label })),
    );
    for (const part of chunks(labelRows)) {
      await tx.insertInto('machine_labels').values(part).execute();
    }

    if (bundle.settings !== null) {
      for (const part of chunks(bundle.settings)) {
        await tx
          .insertInto('settings')
          .values(part)
          .onConflict((oc) =>
            oc.column('key').doUpdateSet((eb) => ({
              value: eb.ref('excluded.value'),
              updated_at: eb.ref('excluded.updated_at'),
            })),
          )
          .execute();
      }
    }

    // Last: a catalog name clash with the database is found only here, and undoes all of the
    // above with the transaction.
    const catalog = bundle.catalog === null ? null : await applyCatalog(tx, bundle.catalog);

    const machines = bundle.inventory.length;
    const eventId = await appendEvent(
      tx,
      {
        kind: 'bundle.imported',
        subjectKind: 'bundle',
        subjectId: options.source ?? null,
        actor: 'operator',
        summary:
          `imported ${machines} machine(s)` +
          (bundle.machines === null ? ' as bty-inventory' : ' with their records') +
          (options.source ? ` from ${options.source}` : ''),
        details: {
          machines,
          with_records: bundle.machines !== null,
          catalog,
          settings: bundle.settings?.length ?? null,
          skipped: bundle.skipped.length,
          bundle_exported_at: bundle.exportedAt,
          bundle_exported_by: bundle.exportedBy,
        },
      },
      now,
    );
    return {
      machines,
      withRecords: bundle.machines !== null,
      catalog,
      settings: bundle.settings?.length ?? null,
      skipped: [...bundle.skipped],
      eventId,
    };
  });
}

async function applyCatalog(
  tx: Transaction<Database>,
  rows: readonly CatalogRow[],
): Promise<NonNullable<ImportResult['catalog']>> {
  const file = BUNDLE_FILES.catalog;
  const existing = await listCatalogEntries(tx);
  const plan = planCatalogMerge(existing, rows);
  if (!plan.ok) {
    // Duplicate refs were refused while parsing; what is left is a clash with the database.
    const message =
      plan.reason === 'name_taken'
        ? `name ${JSON.stringify(plan.name)} (ref ${plan.refs[0]}) is already used by the ` +
          `catalog entry ${plan.refs[1]} in the database`
        : `ref ${plan.ref} appears twice`;
    throw bad(file, 'entries', message);
  }
  const changed = new Set([...plan.added, ...plan.updated].map((e) => e.ref));
  const writes = rows.filter((r) => changed.has(r.ref));
  await upsertCatalogRows(tx, writes, { keepCreatedAt: false });
  return {
    added: plan.added.length,
    updated: plan.updated.length,
    unchanged: plan.unchanged.length,
  };
}

/** Reads, validates and applies the bundle in `dir`: all of it, or nothing. */
export async function importBundle(
  db: Kysely<Database>,
  dir: string,
  options: ImportOptions = {},
): Promise<ImportResult> {
  const bundle = parseBundle(await readBundle(dir));
  return applyBundle(db, bundle, { source: resolve(dir), ...options });
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

export interface ExportOptions {
  /** Replace a non-empty DIR (its old content is removed once the new bundle is in place). */
  force?: boolean;
  now?: Date;
  /** `exported_by_bty_version` (default: this package's version). */
  version?: string;
}

export interface ExportResult {
  dir: string;
  machines: number;
  catalogEntries: number;
  settings: number;
}

const byteOrder = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** A stored JSON column decoded; anything that does not parse is null (upstream's rule). */
function decoded(text: string | null): unknown {
  if (text === null) return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}

/**
 * Writes `{ …head, [key]: [rows…] }` exactly as `JSON.stringify(doc, null, 2)` plus a newline
 * would, one row at a time, so a large fleet's lshw blobs never sit in memory together.
 */
class JsonDocumentWriter {
  private readonly path: string;
  private buffered: string[] = [];
  private size = 0;
  private rows = 0;
  private handle: Awaited<ReturnType<typeof open>> | null = null;

  constructor(path: string) {
    this.path = path;
  }

  async begin(head: Record<string, unknown>, key: string): Promise<void> {
    this.handle = await open(this.path, 'wx', 0o644);
    const lines = Object.entries(head).map(
      ([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v, null, 2).replaceAll('\n', '\n  ')}`,
    );
    lines.push(`  ${JSON.stringify(key)}: [`);
    await this.write(`{\n${lines.join(',\n')}`);
  }

  async add(row: unknown): Promise<void> {
    const text = JSON.stringify(row, null, 2).replaceAll('\n', '\n    ');
    await this.write(`${this.rows === 0 ? '\n' : ',\n'}    ${text}`);
    this.rows++;
  }

  async end(): Promise<void> {
    await this.write(this.rows === 0 ? ']\n}\n' : '\n  ]\n}\n');
    await this.flush();
    await this.handle!.sync();
    await this.handle!.close();
    this.handle = null;
  }

  async abort(): Promise<void> {
    await this.handle?.close().catch(() => {});
    this.handle = null;
  }

  private async write(text: string): Promise<void> {
    this.buffered.push(text);
    this.size += text.length;
    if (this.size >= 1 << 20) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.buffered.length === 0) return;
    await this.handle!.write(this.buffered.join(''));
    this.buffered = [];
    this.size = 0;
  }
}

type TargetState = 'absent' | 'empty' | 'non-empty';

async function targetState(dir: string): Promise<TargetState> {
  const info = await lstat(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw cannotWrite(dir, err);
  });
  if (info === null) return 'absent';
  if (!info.isDirectory()) {
    throw new BtyError('BTY_ERR_BAD_INPUT', `${dir}: exists and is not a folder`, {
      hint: 'Name a new or empty folder for the bundle.',
      details: { field: 'DIR' },
    });
  }
  return (await readdir(dir)).length === 0 ? 'empty' : 'non-empty';
}

function notEmpty(dir: string): BtyError {
  return new BtyError('BTY_ERR_BAD_INPUT', `${dir}: the folder is not empty`, {
    hint: 'Name a new or empty folder, or pass --force to replace this one with the bundle.',
    details: { field: 'DIR' },
  });
}

/**
 * Writes a bundle of the whole database into `dir` (created; it must be absent or empty unless
 * `force`). Everything is read in one read-only transaction (PostgreSQL: repeatable read, one
 * snapshot; SQLite: a deferred transaction, which in WAL mode reads one snapshot), written into a
 * temp folder beside `dir`, and renamed into place.
 */
export async function exportBundle(
  db: Kysely<Database>,
  dir: string,
  options: ExportOptions = {},
): Promise<ExportResult> {
  const target = resolve(dir);
  const force = options.force ?? false;
  if ((await targetState(target)) === 'non-empty' && !force) throw notEmpty(dir);
  const parent = dirname(target);
  let temp: string;
  try {
    await mkdir(parent, { recursive: true });
    temp = await mkdtemp(join(parent, `.${basename(target)}.export-`));
  } catch (err) {
    throw cannotWrite(dir, err);
  }
  const exportedAt = isoUtc((options.now ?? new Date()).toISOString());
  const version = options.version ?? VERSION;
  const writers: JsonDocumentWriter[] = [];
  const writer = (name: BundleFile) => {
    const w = new JsonDocumentWriter(join(temp, name));
    writers.push(w);
    return w;
  };
  try {
    // mkdtemp makes the folder private; the bundle gets a plain folder's mode.
    await chmod(temp, 0o755);
    const counts = await db
      .transaction()
      .setIsolationLevel('repeatable read')
      .setAccessMode('read only')
      .execute(async (tx) => {
        const machines = (await tx.selectFrom('machines').selectAll().execute()).sort((a, b) =>
          byteOrder(a.mac, b.mac),
        );
        const labels = new Map<string, string[]>();
        for (const { mac, label } of await tx
          .selectFrom('machine_labels')
          .select(['mac', 'label'])
          .execute()) {
          const list = labels.get(mac);
          if (list) list.push(label);
          else labels.set(mac, [label]);
        }

        const inventory = writer(BUNDLE_FILES.inventory);
        await inventory.begin(
          {
            bty_export_version: BUNDLE_VERSION,
            exported_at: exportedAt,
            exported_by_bty_version: version,
          },
          'machines',
        );
        const records = writer(BUNDLE_FILES.machines);
        await records.begin(
          { bty_extension_version: EXTENSION_VERSION, exported_at: exportedAt },
          'machines',
        );
        for (const part of chunks(machines, 100)) {
          const inv = new Map(
            (
              await tx
                .selectFrom('inventory')
                .selectAll()
                .where(
                  'mac',
                  'in',
                  part.map((m) => m.mac),
                )
                .execute()
            ).map((r) => [r.mac, r]),
          );
          for (const m of part) {
            const i = inv.get(m.mac);
            const disks = decoded(i?.disks ?? null);
            const row: InventoryMachineJson = {
              mac: m.mac,
              known_disks: Array.isArray(disks) ? disks : null,
              known_disks_at: isoUtc(i?.disks_at ?? null),
              hw_lshw: decoded(i?.lshw ?? null),
              hw_lshw_at: isoUtc(i?.lshw_at ?? null),
            };
            await inventory.add(row);
            const record: MachineJson = {
              mac: m.mac,
              bty_image_ref: m.bty_image_ref,
              boot_mode: m.boot_mode,
              sanboot_drive: m.sanboot_drive,
              target_disk_serial: m.target_disk_serial,
              labels: (labels.get(m.mac) ?? []).sort(byteOrder),
              saw_flasher_boot: Number(m.saw_flasher_boot) !== 0,
              armed_at: isoUtc(m.armed_at),
              discovered_at: isoUtc(m.discovered_at),
              last_seen_at: isoUtc(m.last_seen_at),
              last_seen_ip: m.last_seen_ip,
              last_flashed_at: isoUtc(m.last_flashed_at),
              created_at: isoUtc(m.created_at),
              updated_at: isoUtc(m.updated_at),
            };
            await records.add(record);
          }
        }
        await inventory.end();
        await records.end();

        const entries = await listCatalogEntries(tx);
        const catalog = writer(BUNDLE_FILES.catalog);
        await catalog.begin(
          { bty_extension_version: EXTENSION_VERSION, exported_at: exportedAt },
          'entries',
        );
        for (const e of entries) {
          const row: CatalogEntryJson = {
            ref: e.ref,
            name: e.name,
            src: e.src,
            sha256: e.sha256,
            format: e.format,
            size_bytes: e.size_bytes,
            description: e.description,
            arch: e.arch,
            created_at: isoUtc(e.created_at),
            updated_at: isoUtc(e.updated_at),
          };
          await catalog.add(row);
        }
        await catalog.end();

        const settingRows = (await tx.selectFrom('settings').selectAll().execute()).sort((a, b) =>
          byteOrder(a.key, b.key),
        );
        const settings = writer(BUNDLE_FILES.settings);
        await settings.begin(
          { bty_extension_version: EXTENSION_VERSION, exported_at: exportedAt },
          'settings',
        );
        for (const s of settingRows) {
          const row: SettingJson = { key: s.key, value: s.value, updated_at: isoUtc(s.updated_at) };
          await settings.add(row);
        }
        await settings.end();
        return {
          machines: machines.length,
          catalogEntries: entries.length,
          settings: settingRows.length,
        };
      });
    await install(temp, target, dir, force);
    return { dir: target, ...counts };
  } catch (err) {
    await Promise.all(writers.map((w) => w.abort()));
    await rm(temp, { recursive: true, force: true });
    throw cannotWrite(dir, err);
  }
}

/** A file system failure while writing the bundle, as an operator-facing error. */
function cannotWrite(dir: string, err: unknown): unknown {
  if (err instanceof BtyError) return err;
  // System call failures only (they name one); a database error stays what it is.
  const { code, syscall } = (err ?? {}) as NodeJS.ErrnoException;
  if (typeof syscall !== 'string' || typeof code !== 'string') return err;
  return new BtyError('BTY_ERR_BAD_INPUT', `${dir}: cannot write the bundle: ${messageOf(err)}`, {
    hint: 'Name a folder on a writable file system with room for the bundle.',
    details: { field: 'DIR', errno: code },
  });
}

/** Moves the finished temp folder to `target`: a rename, so the bundle appears whole. */
async function install(temp: string, target: string, shown: string, force: boolean): Promise<void> {
  const state = await targetState(target);
  if (state === 'absent' || state === 'empty') {
    // rename(2) replaces an empty folder in one step.
    await rename(temp, target);
    return;
  }
  if (!force) throw notEmpty(shown);
  const old = join(
    dirname(target),
    `.${basename(target)}.replaced-${randomBytes(4).toString('hex')}`,
  );
  await rename(target, old);
  try {
    await rename(temp, target);
  } catch (err) {
    await rename(old, target).catch(() => {});
    throw err;
  }
  await rm(old, { recursive: true, force: true });
}
