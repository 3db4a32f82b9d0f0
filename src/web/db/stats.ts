/**
 * The dashboard's counts: one small aggregate query each, all served by indexes or a scan of
 * the machines table (thousands of rows, not millions), so the summary can refresh on every
 * live change without weighing on a boot storm.
 */
import type { Kysely } from 'kysely';
import type { Database } from './schema.ts';

/**
 * A machine whose last progress report is older than this is not counted as flashing: the
 * dashboard's count and the machines list's `filter=flashing` both judge by it.
 */
export const FLASHING_WINDOW_MS = 10 * 60 * 1000;
/** How far back the failed-flash count looks. */
export const FAILED_WINDOW_MS = 24 * 60 * 60 * 1000;

export interface DashboardCounts {
  machines: number;
  /** Discovered (or created) but bound to no image: `bty_image_ref` is null. */
  unassigned: number;
  /** A stored progress report from the last ten minutes (a final status clears it). */
  flashing: number;
  /** `machine.flash_failed` events in the last 24 hours. */
  failed: number;
  catalog: number;
}

export async function dashboardCounts(db: Kysely<Database>, now: Date): Promise<DashboardCounts> {
  // Times are ISO-8601 UTC text in both engines, so they compare correctly as text.
  const since = (ms: number) => new Date(now.getTime() - ms).toISOString();
  const [machines, unassigned, flashing, failed, catalog] = await Promise.all([
    db
      .selectFrom('machines')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow(),
    db
      .selectFrom('machines')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('bty_image_ref', 'is', null)
      .executeTakeFirstOrThrow(),
    db
      .selectFrom('machines')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('progress', 'is not', null)
      .where('progress_at', '>=', since(FLASHING_WINDOW_MS))
      .executeTakeFirstOrThrow(),
    db
      .selectFrom('events')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('kind', '=', 'machine.flash_failed')
      .where('ts', '>=', since(FAILED_WINDOW_MS))
      .executeTakeFirstOrThrow(),
    db
      .selectFrom('catalog_entries')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow(),
  ]);
  return {
    machines: Number(machines.n),
    unassigned: Number(unassigned.n),
    flashing: Number(flashing.n),
    failed: Number(failed.n),
    catalog: Number(catalog.n),
  };
}
