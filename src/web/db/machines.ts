/**
 * Machine records. The PXE hot path (`touchMachine`) does one indexed upsert and, for a new
 * MAC, one discovery event, in a single transaction: concurrent first contacts of one MAC make
 * exactly one row and one event, whatever the engine.
 */
import type { Kysely, Selectable, Transaction } from 'kysely';
import { BtyError } from '../../core/errors.ts';
import { appendEvent, type NewEvent } from './events.ts';
import type { Database, MachinesTable } from './schema.ts';

export type MachineRow = Selectable<MachinesTable>;

export interface Touched {
  machine: MachineRow;
  /** This contact created the record. */
  discovered: boolean;
}

/** What a first contact stores beyond the MAC and times, and the event it logs. */
export interface Discovery {
  bootMode: string;
  event: NewEvent;
}

const DEFAULT_DISCOVERY: Discovery = {
  bootMode: 'ipxe-exit',
  event: { kind: 'machine.discovered', summary: 'discovered', actor: 'pxe-client' },
};

/**
 * Records a live contact (`/pxe/{mac}`, `/pxe/{mac}/plan`), creating the record on first sight
 * with `discovery` (the boot-offer module's first-contact row and event).
 */
export async function touchMachine(
  db: Kysely<Database>,
  mac: string,
  ip: string | null,
  now: Date,
  discovery: Discovery = DEFAULT_DISCOVERY,
): Promise<Touched> {
  return touchMachineThen(db, mac, ip, now, discovery, () => Promise.resolve(null));
}

/**
 * `touchMachine`, then `then` in the same transaction with the touched row and the time of its
 * last inventory: the PXE hot path decides and stores its offer in one short write transaction.
 * A new row comes back from the INSERT itself and an existing one from its UPDATE (RETURNING),
 * so the common paths cost three or four statements.
 */
export async function touchMachineThen<T>(
  db: Kysely<Database>,
  mac: string,
  ip: string | null,
  now: Date,
  discovery: Discovery,
  then: (tx: Transaction<Database>, touched: Touched & { disksAt: string | null }) => Promise<T>,
): Promise<Touched & { result: T }> {
  const at = now.toISOString();
  return db.transaction().execute(async (tx) => {
    const inserted = await tx
      .insertInto('machines')
      .values({
        mac,
        boot_mode: discovery.bootMode,
        discovered_at: at,
        last_seen_at: at,
        last_seen_ip: ip,
        created_at: at,
        updated_at: at,
      })
      .onConflict((oc) => oc.column('mac').doNothing())
      .returningAll()
      .executeTakeFirst();
    let machine: MachineRow;
    let disksAt: string | null = null;
    if (inserted) {
      machine = inserted;
      await appendEvent(
        tx,
        { subjectKind: 'machine', subjectId: mac, sourceIp: ip, ...discovery.event },
        now,
      );
    } else {
      machine = await tx
        .updateTable('machines')
        .set({ last_seen_at: at, last_seen_ip: ip })
        .where('mac', '=', mac)
        .returningAll()
        .executeTakeFirstOrThrow();
      const inventory = await tx
        .selectFrom('inventory')
        .select('disks_at')
        .where('mac', '=', mac)
        .executeTakeFirst();
      disksAt = inventory?.disks_at ?? null;
    }
    const touched = { machine, discovered: inserted !== undefined };
    const result = await then(tx, { ...touched, disksAt });
    return { ...touched, result };
  });
}

export function getMachine(db: Kysely<Database>, mac: string): Promise<MachineRow | undefined> {
  return db.selectFrom('machines').selectAll().where('mac', '=', mac).executeTakeFirst();
}

export function listMachines(
  db: Kysely<Database>,
  { limit = 1000, offset = 0 }: { limit?: number; offset?: number } = {},
): Promise<MachineRow[]> {
  return db.selectFrom('machines').selectAll().orderBy('mac').limit(limit).offset(offset).execute();
}

export async function countMachines(db: Kysely<Database>): Promise<number> {
  const row = await db
    .selectFrom('machines')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Deletes a machine with its labels and inventory; false when there was none. */
export async function deleteMachine(db: Kysely<Database>, mac: string): Promise<boolean> {
  const r = await db.deleteFrom('machines').where('mac', '=', mac).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

const LABEL = /^[A-Za-z0-9][A-Za-z0-9 ._-]*$/;
export const MAX_LABELS = 16;
export const MAX_LABEL_LENGTH = 64;

/** Validates labels as upstream does; returns them de-duplicated and sorted (byte order). */
export function validateLabels(labels: readonly string[]): string[] {
  const unique = [...new Set(labels)];
  if (unique.length > MAX_LABELS) {
    throw new BtyError(
      'BTY_ERR_BAD_INPUT',
      `labels: at most ${MAX_LABELS} per machine, got ${unique.length}`,
      { details: { field: 'labels' } },
    );
  }
  for (const label of unique) {
    if (label.length < 1 || label.length > MAX_LABEL_LENGTH || !LABEL.test(label)) {
      throw new BtyError(
        'BTY_ERR_BAD_INPUT',
        `labels: ${JSON.stringify(label)} must be 1-${MAX_LABEL_LENGTH} characters: letters, digits, ` +
          'space, dot, underscore or hyphen, starting with a letter or digit',
        { details: { field: 'labels' } },
      );
    }
  }
  return unique.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Replaces a machine's labels (set semantics) in one transaction. */
export async function setLabels(
  db: Kysely<Database>,
  mac: string,
  labels: readonly string[],
): Promise<string[]> {
  const valid = validateLabels(labels);
  await db.transaction().execute(async (tx) => {
    await tx.deleteFrom('machine_labels').where('mac', '=', mac).execute();
    if (valid.length > 0) {
      await tx
        .insertInto('machine_labels')
        .values(valid.map((label) => ({ mac, label })))
        .execute();
    }
  });
  return valid;
}

export async function getLabels(
  db: Kysely<Database> | Transaction<Database>,
  mac: string,
): Promise<string[]> {
  const rows = await db
    .selectFrom('machine_labels')
    .select('label')
    .where('mac', '=', mac)
    .execute();
  return rows.map((r) => r.label).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** A state change from the boot-offer module (Dates, booleans) as column values. */
export interface StateChange {
  saw_flasher_boot?: boolean;
  armed_at?: Date | null;
  last_flashed_at?: Date | null;
  last_seen_at?: Date;
  last_seen_ip?: string | null;
  updated_at?: Date;
  progress?: string | null;
  progress_at?: Date | null;
}

type ChangeColumns = Partial<
  Pick<
    MachinesTable,
    | 'armed_at'
    | 'last_flashed_at'
    | 'last_seen_at'
    | 'last_seen_ip'
    | 'updated_at'
    | 'progress'
    | 'progress_at'
  > & { saw_flasher_boot: number }
>;

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString());

export function changeColumns(c: StateChange): ChangeColumns {
  const out: ChangeColumns = {};
  if (c.saw_flasher_boot !== undefined) out.saw_flasher_boot = c.saw_flasher_boot ? 1 : 0;
  if (c.armed_at !== undefined) out.armed_at = iso(c.armed_at);
  if (c.last_flashed_at !== undefined) out.last_flashed_at = iso(c.last_flashed_at);
  if (c.last_seen_at !== undefined) out.last_seen_at = c.last_seen_at.toISOString();
  if (c.last_seen_ip !== undefined) out.last_seen_ip = c.last_seen_ip;
  if (c.updated_at !== undefined) out.updated_at = c.updated_at.toISOString();
  if (c.progress !== undefined) out.progress = c.progress;
  if (c.progress_at !== undefined) out.progress_at = iso(c.progress_at);
  return out;
}

export async function updateMachineState(
  db: Kysely<Database> | Transaction<Database>,
  mac: string,
  change: StateChange,
): Promise<void> {
  const set = changeColumns(change);
  if (Object.keys(set).length === 0) return;
  await db.updateTable('machines').set(set).where('mac', '=', mac).execute();
}

// ---------------------------------------------------------------------------------------------
// The operator API (GET/PUT/DELETE /machines): records with labels and inventory, the binding
// write with its policy reset, all inside the caller's transaction where it matters.
// ---------------------------------------------------------------------------------------------

type Db = Kysely<Database> | Transaction<Database>;

const byteOrder = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** A machine row with what the API shows beside it: labels and the stored disk inventory. */
export interface MachineRecord {
  row: MachineRow;
  /** Sorted in byte order. */
  labels: string[];
  /** The stored disk list as JSON text, verbatim (null before the first inventory). */
  disks: string | null;
  disks_at: string | null;
}

/** One machine with its labels and inventory, or undefined. */
export async function getMachineRecord(db: Db, mac: string): Promise<MachineRecord | undefined> {
  const row = await db.selectFrom('machines').selectAll().where('mac', '=', mac).executeTakeFirst();
  if (!row) return undefined;
  const inventory = await db
    .selectFrom('inventory')
    .select(['disks', 'disks_at'])
    .where('mac', '=', mac)
    .executeTakeFirst();
  const labels = await db
    .selectFrom('machine_labels')
    .select('label')
    .where('mac', '=', mac)
    .execute();
  return {
    row,
    labels: labels.map((l) => l.label).sort(byteOrder),
    disks: inventory?.disks ?? null,
    disks_at: inventory?.disks_at ?? null,
  };
}

/**
 * Every machine with its labels and inventory, ordered by MAC (byte order, whatever the
 * database's collation). Three queries whatever the fleet size: no per-machine round trip.
 */
export async function listMachineRecords(db: Db): Promise<MachineRecord[]> {
  const rows = await db
    .selectFrom('machines')
    .leftJoin('inventory', 'inventory.mac', 'machines.mac')
    .selectAll('machines')
    .select(['inventory.disks as inv_disks', 'inventory.disks_at as inv_disks_at'])
    .orderBy('machines.mac')
    .execute();
  const labelRows = await db.selectFrom('machine_labels').select(['mac', 'label']).execute();
  const labels = new Map<string, string[]>();
  for (const { mac, label } of labelRows) {
    const list = labels.get(mac);
    if (list) list.push(label);
    else labels.set(mac, [label]);
  }
  return rows
    .map(({ inv_disks, inv_disks_at, ...row }) => ({
      row,
      labels: (labels.get(row.mac) ?? []).sort(byteOrder),
      disks: inv_disks ?? null,
      disks_at: inv_disks_at ?? null,
    }))
    .sort((a, b) => byteOrder(a.row.mac, b.row.mac));
}

/** What an operator sets on a machine (PUT /machines/{mac}): everything, as a replace. */
export interface MachineBinding {
  bty_image_ref: string | null;
  boot_mode: string;
  sanboot_drive: string | null;
  target_disk_serial: string | null;
  /** Already validated (validateLabels): unique and sorted. */
  labels: readonly string[];
}

/** The boot cycle's reset on a policy change (boot-offer's `PolicyResetChange`). */
export interface CycleReset {
  saw_flasher_boot: false;
  last_flashed_at: null;
  known_disks_at: null;
}

/**
 * Creates the machine with `binding` when it has no record yet; true when this call created it
 * (a concurrent create of the same MAC makes exactly one row: the other call gets false).
 * A new record starts a clean cycle: bit clear, no completion signals.
 */
export async function createMachineWithBinding(
  tx: Transaction<Database>,
  mac: string,
  binding: MachineBinding,
  now: Date,
): Promise<boolean> {
  const at = now.toISOString();
  const inserted = await tx
    .insertInto('machines')
    .values({
      mac,
      bty_image_ref: binding.bty_image_ref,
      boot_mode: binding.boot_mode,
      sanboot_drive: binding.sanboot_drive,
      target_disk_serial: binding.target_disk_serial,
      saw_flasher_boot: 0,
      created_at: at,
      updated_at: at,
    })
    .onConflict((oc) => oc.column('mac').doNothing())
    .returning('mac')
    .executeTakeFirst();
  return inserted !== undefined;
}

/**
 * Reads a machine for an update in the same transaction: a no-op write first takes the row's
 * lock (PostgreSQL) or the database's write lock (SQLite), so nothing changes the row between
 * this read and the caller's write. Undefined when there is no such machine.
 */
export async function lockMachine(
  tx: Transaction<Database>,
  mac: string,
): Promise<MachineRow | undefined> {
  const r = await tx
    .updateTable('machines')
    .set((eb) => ({ updated_at: eb.ref('updated_at') }))
    .where('mac', '=', mac)
    .executeTakeFirst();
  if (Number(r.numUpdatedRows) === 0) return undefined;
  return tx.selectFrom('machines').selectAll().where('mac', '=', mac).executeTakeFirst();
}

/**
 * Replaces an existing machine's binding (everything but labels, inventory, last-seen and
 * `created_at`) and, with `reset`, starts a fresh boot cycle: bit cleared, `last_flashed_at`
 * and the inventory's time dropped (the disk list itself is kept).
 */
export async function updateMachineBinding(
  tx: Transaction<Database>,
  mac: string,
  binding: MachineBinding,
  reset: CycleReset | null,
  now: Date,
): Promise<void> {
  await tx
    .updateTable('machines')
    .set({
      bty_image_ref: binding.bty_image_ref,
      boot_mode: binding.boot_mode,
      sanboot_drive: binding.sanboot_drive,
      target_disk_serial: binding.target_disk_serial,
      updated_at: now.toISOString(),
      ...(reset ? { saw_flasher_boot: 0, last_flashed_at: null } : {}),
    })
    .where('mac', '=', mac)
    .execute();
  if (reset) {
    await tx.updateTable('inventory').set({ disks_at: null }).where('mac', '=', mac).execute();
  }
}

/** Replaces a machine's labels inside the caller's transaction (already validated). */
export async function replaceLabels(
  tx: Transaction<Database>,
  mac: string,
  labels: readonly string[],
): Promise<void> {
  await tx.deleteFrom('machine_labels').where('mac', '=', mac).execute();
  const unique = [...new Set(labels)];
  if (unique.length > 0) {
    await tx
      .insertInto('machine_labels')
      .values(unique.map((label) => ({ mac, label })))
      .execute();
  }
}

/** The stored `lshw -json` blob and its time, verbatim; undefined when the machine has none. */
export async function getLshw(
  db: Db,
  mac: string,
): Promise<{ lshw: string; lshw_at: string | null } | undefined> {
  const row = await db
    .selectFrom('inventory')
    .select(['lshw', 'lshw_at'])
    .where('mac', '=', mac)
    .executeTakeFirst();
  return row?.lshw == null ? undefined : { lshw: row.lshw, lshw_at: row.lshw_at };
}
