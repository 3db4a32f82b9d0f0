/**
 * What every route file shares: the server's context (database, clock, paths) and the small
 * request helpers (client IP, Host, errors in upstream's `{"detail": …}` shape).
 */
import { isIP } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { parseMac } from '../core/mac.ts';
import type { BootMachine } from './boot-offer.ts';
import type { LoadedConfig } from './config.ts';
import type { BtyDatabase } from './db/database.ts';
import type { NewEvent } from './db/events.ts';
import type { EventKind } from './event-kinds.ts';
import type { MachineRow } from './db/machines.ts';
import { sanitiseHost } from './ipxe.ts';
import type { LiveBus } from './bus.ts';
import type { Sessions } from './session.ts';

export interface WebContext {
  database: BtyDatabase;
  /** bty-web's own version (`/version`). */
  version: string;
  /** The release of the live-environment artifacts the scripts chain. */
  artifactVersion: string;
  /** Where `/boot/{name}` files live. */
  bootDir: string;
  /** The artifact cache's folder; unset: `[cache] dir`, else `cache` next to the boot folder. */
  cacheDir?: string;
  /** `[server] trusted_proxy`: when set, the client IP comes from X-Forwarded-For. */
  trustedProxy: string;
  now: () => Date;
  sessions: Sessions;
  /** The loaded configuration, when the server was started from one (`GET /config`). */
  config: LoadedConfig | null;
  /** Live updates for SSE subscribers. */
  bus: LiveBus;
}

/** `{"detail": "..."}` with a status, as upstream answers errors. */
export function detail(reply: FastifyReply, status: number, text: string): FastifyReply {
  return reply.code(status).type('application/json').send({ detail: text });
}

/** The client's IP, normalised (IPv4-mapped IPv6 as plain IPv4). */
export function clientIp(req: FastifyRequest, trustedProxy: string): string | null {
  let ip: string | undefined = req.socket.remoteAddress;
  const forwarded = req.headers['x-forwarded-for'];
  if (trustedProxy && typeof forwarded === 'string') {
    const first = forwarded.split(',')[0]?.trim();
    if (first) ip = first;
  }
  if (!ip) return null;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return mapped ? mapped[1]! : ip;
}

/** The Host a client used, for URLs that must lead it back here (upstream-web §4.7). */
export function hostOf(req: FastifyRequest): string {
  const host = req.headers.host;
  if (host) return sanitiseHost(host);
  const local = req.socket.localAddress;
  const port = req.socket.localPort ?? 8080;
  if (local && isIP(local) === 4) return `${local}:${port}`;
  return `127.0.0.1:${port}`;
}

/** The canonical MAC of a path parameter, or null after answering 400 `invalid MAC: '<raw>'`. */
export function macParam(raw: string, reply: FastifyReply): string | null {
  const mac = parseMac(raw);
  if (mac === null) detail(reply, 400, `invalid MAC: '${raw}'`);
  return mac;
}

export function toBootMachine(row: MachineRow, disksAt: string | null): BootMachine {
  const date = (v: string | null) => (v ? new Date(v) : null);
  return {
    mac: row.mac,
    boot_mode: row.boot_mode,
    bty_image_ref: row.bty_image_ref,
    target_disk_serial: row.target_disk_serial,
    sanboot_drive: row.sanboot_drive,
    saw_flasher_boot: Number(row.saw_flasher_boot) !== 0,
    armed_at: date(row.armed_at),
    last_flashed_at: date(row.last_flashed_at),
    known_disks_at: date(disksAt),
  };
}

/** A boot-offer event draft as a row for the audit log. */
export function eventOf(draft: {
  kind: EventKind;
  summary: string;
  subject_kind: string;
  subject_id: string;
  actor: string;
  details: unknown;
  source_ip?: string | null;
}): NewEvent {
  return {
    kind: draft.kind,
    summary: draft.summary,
    subjectKind: draft.subject_kind,
    subjectId: draft.subject_id,
    actor: draft.actor,
    sourceIp: draft.source_ip ?? null,
    details: (draft.details as Record<string, unknown> | null) ?? null,
  };
}
