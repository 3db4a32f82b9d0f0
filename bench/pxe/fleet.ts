/**
 * The machines of the PXE benchmark: distinct random MACs, a state database pre-populated with
 * machines already present (written through bty-web's own storage code, as the server would
 * have written them), and the check that a storm left exactly one row and one discovery event
 * per MAC.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { DatabaseSync } from 'node:sqlite';
import { parseMac } from '../../src/core/mac.ts';
import { discoveredMachine } from '../../src/web/boot-offer.ts';
import { eventOf } from '../../src/web/context.ts';
import { migrate, openDatabase } from '../../src/web/db/database.ts';

/** Rows per INSERT: 15 machine columns stay far under SQLite's bound-parameter limit. */
const BATCH = 500;

/**
 * `count` distinct random MACs (canonical `aa:bb:cc:dd:ee:ff`) that are not in `taken`, which
 * receives them. Unicast and locally administered, as a virtual NIC's: valid for any client and
 * no real vendor's.
 */
export function randomMacs(count: number, taken: Set<string>): string[] {
  const out: string[] = [];
  while (out.length < count) {
    const bytes = randomBytes(6);
    bytes[0] = ((bytes[0] ?? 0) & 0xfc) | 0x02;
    const mac = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(':');
    if (parseMac(mac) !== mac) throw new Error(`generated an invalid MAC: ${mac}`);
    if (taken.has(mac)) continue;
    taken.add(mac);
    out.push(mac);
  }
  return out;
}

/** The path iPXE requests after the bootstrap chain: `/pxe/${mac:hexhyp}`. */
export function pxePath(mac: string): string {
  return `/pxe/${mac.replaceAll(':', '-')}`;
}

/** One request path per line, in the order given: what storm.lua reads. */
export async function writePaths(file: string, macs: readonly string[]): Promise<void> {
  await writeFile(file, macs.map((m) => `${pxePath(m)}\n`).join(''));
}

/**
 * Creates the database at `sqlitePath` (migrations applied) holding `macs` as machines that
 * discovered themselves through `/pxe` a day ago, each with its `machine.discovered` event.
 */
export async function prepopulate(sqlitePath: string, macs: readonly string[]): Promise<void> {
  const database = await openDatabase({ sqlitePath });
  try {
    await migrate(database);
    const when = new Date(Date.now() - 24 * 3600 * 1000);
    const at = when.toISOString();
    const ip = '127.0.0.1';
    await database.db.transaction().execute(async (tx) => {
      for (let i = 0; i < macs.length; i += BATCH) {
        const firsts = macs.slice(i, i + BATCH).map((mac) => discoveredMachine(mac, ip, 'pxe'));
        await tx
          .insertInto('machines')
          .values(
            firsts.map(({ machine }) => ({
              mac: machine.mac,
              boot_mode: machine.boot_mode,
              discovered_at: at,
              last_seen_at: at,
              last_seen_ip: ip,
              created_at: at,
              updated_at: at,
            })),
          )
          .execute();
        await tx
          .insertInto('events')
          .values(
            firsts.map(({ event }) => {
              const e = eventOf(event);
              return {
                ts: at,
                kind: e.kind,
                subject_kind: e.subjectKind ?? null,
                subject_id: e.subjectId ?? null,
                actor: e.actor ?? null,
                source_ip: e.sourceIp ?? null,
                summary: e.summary,
                details: e.details ? JSON.stringify(e.details) : null,
              };
            }),
          )
          .execute();
      }
    });
  } finally {
    await database.close();
  }
}

/** What the state database holds after a server run, against the MACs that should be there. */
export interface FleetCheck {
  /** Every MAC the server was sent or was given beforehand. */
  expectedMachines: number;
  machineRows: number;
  /** Expected MACs without a row. */
  missing: number;
  /** Rows for MACs nobody sent. */
  unexpected: number;
  discoveryEvents: number;
  /** MACs whose discovery was logged more than once. */
  duplicateDiscoveries: number;
  /** Expected MACs with no discovery event. */
  undiscovered: number;
  /** `netboot.pxe.offered` events: one per `/pxe/{mac}` answer. */
  offerEvents: number;
  /** `/pxe/{mac}` requests the server was sent (warm-up and timed loads). */
  pxeRequests: number;
  ok: boolean;
  problems: string[];
}

/** Reads the SQLite file of a stopped server and compares it with what was sent. */
export function checkFleet(
  sqlitePath: string,
  expected: ReadonlySet<string>,
  pxeRequests: number,
): FleetCheck {
  const db = new DatabaseSync(sqlitePath, { readOnly: true });
  try {
    const rows = new Set(
      db
        .prepare('SELECT mac FROM machines')
        .all()
        .map((r) => String(r.mac)),
    );
    const discovered = new Map<string, number>();
    for (const r of db
      .prepare(
        "SELECT subject_id AS mac, COUNT(*) AS n FROM events WHERE kind = 'machine.discovered' " +
          'GROUP BY subject_id',
      )
      .all()) {
      discovered.set(String(r.mac), Number(r.n));
    }
    const offers = db
      .prepare("SELECT COUNT(*) AS n FROM events WHERE kind = 'netboot.pxe.offered'")
      .get();
    let missing = 0;
    let undiscovered = 0;
    for (const mac of expected) {
      if (!rows.has(mac)) missing++;
      if (!discovered.has(mac)) undiscovered++;
    }
    let unexpected = 0;
    for (const mac of rows) if (!expected.has(mac)) unexpected++;
    let duplicateDiscoveries = 0;
    let discoveryEvents = 0;
    for (const [mac, n] of discovered) {
      discoveryEvents += n;
      if (n > 1) duplicateDiscoveries++;
      if (!expected.has(mac)) unexpected++;
    }
    const problems: string[] = [];
    if (rows.size !== expected.size) {
      problems.push(`${rows.size} machine rows for ${expected.size} distinct MACs`);
    }
    if (missing > 0) problems.push(`${missing} MAC(s) without a row`);
    if (unexpected > 0) problems.push(`${unexpected} row(s) or event(s) for MACs never sent`);
    if (duplicateDiscoveries > 0) {
      problems.push(`${duplicateDiscoveries} MAC(s) with more than one discovery event`);
    }
    if (undiscovered > 0) problems.push(`${undiscovered} MAC(s) without a discovery event`);
    return {
      expectedMachines: expected.size,
      machineRows: rows.size,
      missing,
      unexpected,
      discoveryEvents,
      duplicateDiscoveries,
      undiscovered,
      offerEvents: Number(offers?.n ?? 0),
      pxeRequests,
      ok: problems.length === 0,
      problems,
    };
  } finally {
    db.close();
  }
}
