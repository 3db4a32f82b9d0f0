/**
 * The database as Kysely sees it. Times are ISO-8601 UTC text (`2026-11-29T17:00:00.000Z`) in
 * both engines, so they sort as text and read back identically; flags are 0/1 integers.
 */
import type { Generated } from 'kysely';

export interface MachinesTable {
  mac: string;
  bty_image_ref: string | null;
  discovered_at: string | null;
  last_seen_at: string | null;
  last_seen_ip: string | null;
  boot_mode: Generated<string>;
  sanboot_drive: string | null;
  last_flashed_at: string | null;
  saw_flasher_boot: Generated<number>;
  /** When the live environment last armed a cycle (a `/boot/<artifact>?mac=` fetch). */
  armed_at: string | null;
  target_disk_serial: string | null;
  /** The agent's latest progress report as JSON, cleared by the final status. */
  progress: string | null;
  progress_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface MachineLabelsTable {
  mac: string;
  label: string;
}

/** The last inventory a machine posted: its disks and (size-capped) `lshw -json`. */
export interface InventoryTable {
  mac: string;
  disks: string | null;
  disks_at: string | null;
  lshw: string | null;
  lshw_at: string | null;
}

export interface CatalogEntriesTable {
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

export interface EventsTable {
  id: Generated<number>;
  ts: string;
  kind: string;
  subject_kind: string | null;
  subject_id: string | null;
  actor: string | null;
  source_ip: string | null;
  summary: string;
  details: string | null;
  acknowledged: Generated<number>;
}

export interface SettingsTable {
  key: string;
  value: string;
  updated_at: string;
}

export interface Database {
  machines: MachinesTable;
  machine_labels: MachineLabelsTable;
  inventory: InventoryTable;
  catalog_entries: CatalogEntriesTable;
  events: EventsTable;
  settings: SettingsTable;
}
