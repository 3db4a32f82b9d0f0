/**
 * bty-web's HTTP application: Fastify with thin routes over the pure core. A route validates,
 * loads, calls the decision or renderer, stores, and answers; it decides nothing itself.
 *
 * This file holds the open PXE / live-environment plane (no session): `/healthz`, `/version`,
 * `/pxe-bootstrap.ipxe`, `/pxe/{mac}`, `/pxe/{mac}/status` (and `/done`), `/boot/{name}`.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { isBtyError } from '../core/errors.ts';
import { parseMac } from '../core/mac.ts';
import {
  applyFlashStatus,
  armOnBootFetch,
  decideBootOffer,
  discoveredMachine,
  type BootCatalogEntry,
  type BootMachine,
  type BootOffer,
} from './boot-offer.ts';
import type { BtyDatabase } from './db/database.ts';
import { appendEvent, type NewEvent } from './db/events.ts';
import {
  getLabels,
  getMachine,
  touchMachine,
  updateMachineState,
  type MachineRow,
} from './db/machines.ts';
import { renderBootstrapScript, renderIpxeScript, sanitiseHost } from './ipxe.ts';

export interface AppOptions {
  database: BtyDatabase;
  /** bty-web's own version (`/version`). */
  version: string;
  /** The release of the live-environment artifacts the scripts chain. */
  artifactVersion: string;
  /** Where `/boot/{name}` files live. */
  bootDir: string;
  /** `[server] trusted_proxy`: when set, the client IP comes from X-Forwarded-For. */
  trustedProxy?: string;
  /** The clock (tests pin it). */
  now?: () => Date;
}

const IPXE_TYPE = 'text/plain; charset=utf-8';

/** `{"detail": "..."}` with a status, as upstream answers errors. */
function detail(reply: FastifyReply, status: number, text: string): FastifyReply {
  return reply.code(status).type('application/json').send({ detail: text });
}

/** The client's IP, normalised (IPv4-mapped IPv6 as plain IPv4). */
function clientIp(req: FastifyRequest, trustedProxy: string): string | null {
  let ip: string | undefined = req.socket.remoteAddress;
  const forwarded = req.headers['x-forwarded-for'];
  if (trustedProxy && typeof forwarded === 'string') {
    const first = forwarded.split(',')[0]?.trim();
    if (first) ip = first;
  }
  if (!ip) return null;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  return ip;
}

/** The Host a client used, for URLs that must lead it back here (§4.7). */
function hostOf(req: FastifyRequest): string {
  const host = req.headers.host;
  if (host) return sanitiseHost(host);
  const local = req.socket.localAddress;
  const port = req.socket.localPort ?? 8080;
  if (local && isIP(local) === 4) return `${local}:${port}`;
  return `127.0.0.1:${port}`;
}

function toBootMachine(row: MachineRow, disksAt: string | null): BootMachine {
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

function eventOf(draft: {
  kind: string;
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

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const now = options.now ?? (() => new Date());
  const trustedProxy = options.trustedProxy ?? '';
  const { db } = options.database;
  const app = Fastify({ logger: false, bodyLimit: 1 << 20, exposeHeadRoutes: false });

  app.setErrorHandler((err, _req, reply) => {
    if (isBtyError(err)) return detail(reply, err.httpStatus, err.message);
    const e = err as { statusCode?: number; message?: string; validation?: unknown };
    if (e.validation !== undefined) return detail(reply, 422, e.message ?? 'invalid request');
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
      return detail(reply, e.statusCode, e.message ?? 'bad request');
    }
    return detail(reply, 500, 'internal error');
  });

  app.get('/healthz', () => ({ status: 'ok' }));
  app.get('/version', () => ({ version: options.version }));

  app.get('/pxe-bootstrap.ipxe', (req, reply) =>
    reply.type(IPXE_TYPE).send(renderBootstrapScript(hostOf(req))),
  );

  const macParam = (raw: string, reply: FastifyReply): string | null => {
    const mac = parseMac(raw);
    if (mac === null) detail(reply, 400, `invalid MAC: '${raw}'`);
    return mac;
  };

  app.get<{ Params: { mac: string } }>('/pxe/:mac', async (req, reply) => {
    const mac = macParam(req.params.mac, reply);
    if (mac === null) return reply;
    const host = hostOf(req);
    const ip = clientIp(req, trustedProxy);
    const at = now();
    const first = discoveredMachine(mac, ip, 'pxe');
    const { machine: row } = await touchMachine(db, mac, ip, at, {
      bootMode: first.machine.boot_mode,
      event: eventOf(first.event),
    });
    const inventory = await db
      .selectFrom('inventory')
      .select('disks_at')
      .where('mac', '=', mac)
      .executeTakeFirst();
    const entry: BootCatalogEntry | null = row.bty_image_ref
      ? ((await db
          .selectFrom('catalog_entries')
          .select(['name', 'ref'])
          .where('ref', '=', row.bty_image_ref)
          .executeTakeFirst()) ?? null)
      : null;
    const decision = decideBootOffer(toBootMachine(row, inventory?.disks_at ?? null), entry, at);
    const script = await renderOffer(decision.offer, row, host, options.artifactVersion, () =>
      getLabels(db, mac),
    );
    await db.transaction().execute(async (tx) => {
      if (decision.change) await updateMachineState(tx, mac, decision.change);
      await appendEvent(tx, { ...eventOf(decision.event), sourceIp: ip }, at);
    });
    return reply.type(IPXE_TYPE).send(script);
  });

  const statusRoute = async (
    req: FastifyRequest<{ Params: { mac: string }; Body: unknown }>,
    reply: FastifyReply,
  ) => {
    const mac = macParam(req.params.mac, reply);
    if (mac === null) return reply;
    const body = req.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      return detail(
        reply,
        422,
        'body must be a JSON object {"status": "done"|"failed", "reason"?: string}',
      );
    }
    const extra = Object.keys(body).filter((k) => k !== 'status' && k !== 'reason');
    if (extra.length > 0) return detail(reply, 422, `unknown field(s): ${extra.join(', ')}`);
    const { status, reason } = body as { status?: unknown; reason?: unknown };
    if (status !== 'done' && status !== 'failed') {
      return detail(reply, 422, 'status: must be "done" or "failed"');
    }
    if (reason !== undefined && (typeof reason !== 'string' || reason.length > 500)) {
      return detail(reply, 422, 'reason: must be a string of at most 500 characters');
    }
    const ip = clientIp(req, trustedProxy);
    const at = now();
    const row = await getMachine(db, mac);
    const result = applyFlashStatus(
      mac,
      row ? toBootMachine(row, null) : null,
      { status, ...(typeof reason === 'string' ? { reason } : {}) },
      at,
      ip,
    );
    await db.transaction().execute(async (tx) => {
      if (result.change) {
        await updateMachineState(tx, mac, { ...result.change, progress: null, progress_at: null });
      }
      await appendEvent(tx, eventOf(result.event), at);
    });
    if (result.outcome === 'orphan') return detail(reply, 404, `no machine record for ${mac}`);
    return reply.code(204).send();
  };
  app.post('/pxe/:mac/status', statusRoute);
  app.post('/pxe/:mac/done', statusRoute);

  const bootRoute = async (
    req: FastifyRequest<{ Params: { name: string }; Querystring: { mac?: string } }>,
    reply: FastifyReply,
  ) => {
    const name = req.params.name;
    const at = now();
    // Arming comes first, whatever happens to the file request (§6.4).
    const tagged = req.query.mac ? parseMac(req.query.mac) : null;
    if (tagged !== null) {
      const row = await getMachine(db, tagged);
      const armed = armOnBootFetch(
        row ? toBootMachine(row, null) : null,
        name,
        at,
        clientIp(req, trustedProxy),
      );
      if (armed.change) {
        await db.transaction().execute(async (tx) => {
          await updateMachineState(tx, tagged, armed.change!);
          if (armed.event) await appendEvent(tx, eventOf(armed.event), at);
        });
      }
    }
    if (!/^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(name) || name.length > 255) {
      return detail(reply, 400, `invalid artifact name: ${JSON.stringify(name)}`);
    }
    const path = join(options.bootDir, name);
    const info = await stat(path).catch(() => null);
    if (!info?.isFile()) return detail(reply, 404, `no such file: ${name}`);
    return sendFile(req, reply, path, name, info.size, info.mtime);
  };
  app.get('/boot/:name', bootRoute);
  app.head('/boot/:name', bootRoute);

  return app;
}

async function renderOffer(
  offer: BootOffer,
  row: MachineRow,
  host: string,
  version: string,
  labels: () => Promise<string[]>,
): Promise<string> {
  const mac = row.mac;
  switch (offer.scriptKind) {
    case 'live-env':
      return renderIpxeScript('live-env', { mac, host, version });
    case 'flash':
      return renderIpxeScript('flash', {
        mac,
        host,
        version,
        ref: offer.details.bty_image_ref,
        targetDiskSerial: offer.details.target_disk_serial,
        imageName: offer.details.image_name,
      });
    case 'disk-boot':
      return renderIpxeScript('disk-boot', {
        mac,
        bootMode: row.boot_mode,
        ref: row.bty_image_ref,
        labels: await labels(),
        drive: offer.details.sanboot_drive,
      });
    case 'exit-fallback':
      return renderIpxeScript('exit-fallback', {
        mac,
        bootMode: row.boot_mode,
        ref: row.bty_image_ref,
        labels: await labels(),
        drive: row.sanboot_drive,
        reason: offer.details.reason,
      });
    case 'unknown':
      return renderIpxeScript('unknown', { mac, bootMode: row.boot_mode });
  }
}

/**
 * A file with `Content-Length` always, ETag / Last-Modified, and one byte range (iPXE and curl
 * resume with `Range: bytes=N-`). HEAD gets the headers only: UEFI HTTP boot sizes its buffer
 * from them.
 */
function sendFile(
  req: FastifyRequest,
  reply: FastifyReply,
  path: string,
  name: string,
  size: number,
  mtime: Date,
): FastifyReply {
  const etag = `"${size.toString(16)}-${Math.floor(mtime.getTime()).toString(16)}"`;
  reply
    .header('accept-ranges', 'bytes')
    .header('etag', etag)
    .header('last-modified', mtime.toUTCString())
    .header('content-type', 'application/octet-stream')
    .header('content-disposition', `attachment; filename="${name}"`);
  let start = 0;
  let end = size - 1;
  const range = req.headers.range;
  const ifRange = req.headers['if-range'];
  const rangeApplies = range !== undefined && (ifRange === undefined || ifRange === etag);
  if (rangeApplies) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    if (!m || (m[1] === '' && m[2] === '')) {
      return reply.code(416).header('content-range', `bytes */${size}`).send();
    }
    if (m[1] === '') {
      start = Math.max(0, size - Number(m[2]));
    } else {
      start = Number(m[1]);
      if (m[2] !== '') end = Math.min(end, Number(m[2]));
    }
    if (start >= size || start > end) {
      return reply.code(416).header('content-range', `bytes */${size}`).send();
    }
    reply.code(206).header('content-range', `bytes ${start}-${end}/${size}`);
  }
  reply.header('content-length', String(end - start + 1));
  if (req.method === 'HEAD') {
    // Fastify would send `Content-Length: 0` for an empty reply: write the real headers.
    reply.hijack();
    reply.raw.writeHead(reply.statusCode, reply.getHeaders() as Record<string, string>);
    reply.raw.end();
    return reply;
  }
  if (size === 0) return reply.send('');
  return reply.send(createReadStream(path, { start, end }));
}
