/**
 * Every kind of audit event bty-web writes: one list, so a misspelt kind does not compile.
 * The names are upstream's (dotted, lower-case; a failure ends in `failed`), with our additions
 * marked. Reading is lenient: rows imported from elsewhere may carry kinds not listed here.
 */
export const EVENT_KINDS = [
  // Machines.
  'machine.discovered',
  'machine.created',
  'machine.upserted',
  'machine.deleted',
  'machine.flashed',
  'machine.flash_failed',
  'machine.inventory',
  'machine.upsert.failed', // ours: the database write of a PUT failed
  'machine.delete.failed', // ours
  // The PXE plane.
  'netboot.pxe.offered',
  'netboot.pxe.plan',
  'netboot.flasher.armed',
  'pxe.client.orphan',
  'netboot.artifacts.uploaded', // ours: PUT /boot/{name}
  'netboot.artifacts.upload.failed', // ours
  // Netboot release fetches (upstream-web §13.1).
  'netboot.artifacts.fetch.requested',
  'netboot.artifacts.fetch.started',
  'netboot.artifacts.fetched',
  'netboot.artifacts.fetch.failed',
  'netboot.artifacts.fetch.cancelled',
  // The artifact cache (ours).
  'cache.download.requested',
  'cache.download.started',
  'cache.downloaded',
  'cache.download.failed',
  'cache.download.cancelled',
  'cache.entry.removed',
  'cache.entry.evicted',
  // The catalog (ours: upstream's catalog was a file).
  'catalog.entry.added',
  'catalog.entry.add.failed',
  'catalog.entry.removed',
  'catalog.imported',
  'catalog.import.failed',
  // Operator sessions.
  'auth.login.succeeded',
  'auth.login.failed',
  'auth.logout',
  // Bundles (ours: upstream's import logged nothing).
  'bundle.imported',
] as const;

export type EventKind = (typeof EVENT_KINDS)[number];

/** Upstream's failure predicate: the kind ends in `failed` (which matches `flash_failed`). */
export function isFailureKind(kind: string): boolean {
  return kind.endsWith('failed');
}
