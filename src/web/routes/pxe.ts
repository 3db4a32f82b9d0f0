/**
 * The PXE plane iPXE talks to: `/pxe-bootstrap.ipxe`, `/pxe/{mac}` (discover or touch, decide,
 * render, store the offer) and the live environment's terminal signal `/pxe/{mac}/status`
 * (`/done` is an alias). Open: no session.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  applyFlashStatus,
  decideBootOffer,
  discoveredMachine,
  type BootCatalogEntry,
  type BootOffer,
} from '../boot-offer.ts';
import { auditMessage } from '../bus.ts';
import {
  clientIp,
  detail,
  eventOf,
  hostOf,
  macParam,
  toBootMachine,
  type WebContext,
} from '../context.ts';
import { appendEvent } from '../db/events.ts';
import {
  getLabels,
  getMachine,
  touchMachineThen,
  updateMachineState,
  type MachineRow,
} from '../db/machines.ts';
import { renderBootstrapScript, renderIpxeScript } from '../ipxe.ts';
import { metricsOf } from '../metrics.ts';
import {
  BAD_MAC_OR_JSON,
  MAC_PARAM,
  errors,
  noContent,
  textResponse,
  type RouteDoc,
} from '../openapi.ts';

export const IPXE_TYPE = 'text/plain; charset=utf-8';

const BOOTSTRAP_DOC: RouteDoc = {
  summary: 'iPXE bootstrap script',
  description:
    "The script a PXE client's DHCP boot file names: it chains to `/pxe/${mac:hexhyp}` on the " +
    'Host it was fetched from.',
  tags: ['pxe'],
  response: {
    200: textResponse(IPXE_TYPE, 'An iPXE script (`#!ipxe`).'),
    ...errors({ 400: 'The Host header is not a host name or address with an optional port.' }),
  },
};

const OFFER_DOC: RouteDoc = {
  summary: 'Boot offer',
  description:
    'Discovers or touches the machine, decides its boot from its mode and cycle state, stores the offer and answers the iPXE script (live env, flash, disk boot, exit).',
  tags: ['pxe'],
  params: MAC_PARAM,
  response: {
    200: textResponse(IPXE_TYPE, 'An iPXE script (`#!ipxe`) for this machine.'),
    ...errors({ 400: 'The MAC is malformed (`invalid MAC: …`), or the Host header is unusable.' }),
  },
};

const STATUS_BODY = {
  type: 'object',
  required: ['status'],
  additionalProperties: false,
  properties: {
    status: { enum: ['done', 'failed'] },
    reason: { type: 'string', maxLength: 500, description: 'Why it failed, for the audit log.' },
  },
};

function statusDoc(alias: boolean): RouteDoc {
  return {
    summary: alias ? 'Flash finished (alias of /status)' : 'Flash finished',
    description: alias
      ? "Upstream's older name for `POST /pxe/{mac}/status`: same body, same answers."
      : "The live environment's terminal signal: records the flash as done or failed, which ends the boot cycle.",
    tags: ['live-env'],
    params: MAC_PARAM,
    body: STATUS_BODY,
    response: {
      204: noContent('Recorded.'),
      ...errors({
        ...BAD_MAC_OR_JSON,
        404: 'No machine record for this MAC (logged as an orphan signal).',
        422: 'The body is not `{"status": "done"|"failed", "reason"?: string}`.',
      }),
    },
  };
}

export function registerPxeRoutes(app: FastifyInstance, ctx: WebContext): void {
  const metrics = metricsOf(ctx);
  const db = ctx.database.db.withPlugin(metrics.dbTiming);
  const now = ctx.now;
  const trustedProxy = ctx.trustedProxy;

  app.get('/pxe-bootstrap.ipxe', { schema: BOOTSTRAP_DOC }, (req, reply) =>
    reply.type(IPXE_TYPE).send(renderBootstrapScript(hostOf(req))),
  );
  // UEFI HTTP boot asks with HEAD first, to size its buffer: same headers, no body.
  app.head(
    '/pxe-bootstrap.ipxe',
    {
      schema: { ...BOOTSTRAP_DOC, summary: 'iPXE bootstrap script (headers only)' },
      config: { swagger: { exposeHeadRoute: true } },
    },
    (req, reply) => {
      const script = renderBootstrapScript(hostOf(req));
      reply.hijack();
      reply.raw.writeHead(200, {
        'content-type': IPXE_TYPE,
        'content-length': String(Buffer.byteLength(script)),
      });
      reply.raw.end();
    },
  );

  app.get<{ Params: { mac: string } }>('/pxe/:mac', { schema: OFFER_DOC }, async (req, reply) => {
    const mac = macParam(req.params.mac, reply);
    if (mac === null) return reply;
    const host = hostOf(req);
    const ip = clientIp(req, trustedProxy);
    const at = now();
    const first = discoveredMachine(mac, ip, 'pxe');
    // One write transaction: touch (or discover), decide, render, store the offer and its
    // event. The script is rendered before the offer is stored: a stored value the renderer
    // refuses rolls everything back instead of logging an offer that was never sent.
    const {
      discovered,
      result: { decision, eventId, script },
    } = await touchMachineThen(
      db,
      mac,
      ip,
      at,
      { bootMode: first.machine.boot_mode, event: eventOf(first.event) },
      async (tx, touched) => {
        const ref = touched.machine.bty_image_ref;
        const entry: BootCatalogEntry | null = ref
          ? ((await tx
              .selectFrom('catalog_entries')
              .select(['name', 'ref'])
              .where('ref', '=', ref)
              .executeTakeFirst()) ?? null)
          : null;
        const decision = decideBootOffer(
          toBootMachine(touched.machine, touched.disksAt),
          entry,
          at,
        );
        const script = await renderOffer(
          decision.offer,
          touched.machine,
          host,
          ctx.artifactVersion,
          () => getLabels(tx, mac),
        );
        if (decision.change) await updateMachineState(tx, mac, decision.change);
        const eventId = await appendEvent(tx, { ...eventOf(decision.event), sourceIp: ip }, at);
        return { decision, eventId, script };
      },
    );
    const offerKind = decision.offer.offerKind;
    metrics.pxeOffers.inc({ offer_kind: offerKind });
    if (discovered) ctx.bus.publish({ type: 'machine', mac, change: 'discovered' });
    ctx.bus.publish({ type: 'offer', mac, offer_kind: offerKind });
    ctx.bus.publish(auditMessage(eventId, decision.event));
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
    const eventId = await db.transaction().execute(async (tx) => {
      if (result.change) {
        await updateMachineState(tx, mac, { ...result.change, progress: null, progress_at: null });
      }
      return appendEvent(tx, eventOf(result.event), at);
    });
    if (result.outcome === 'recorded') {
      metrics.flashes.inc({ outcome: status });
      const why = typeof reason === 'string' ? { reason } : {};
      ctx.bus.publish({ type: 'status', mac, status, ...why });
    }
    ctx.bus.publish(auditMessage(eventId, result.event));
    if (result.outcome === 'orphan') return detail(reply, 404, `no machine record for ${mac}`);
    return reply.code(204).send();
  };
  app.post('/pxe/:mac/status', { schema: statusDoc(false) }, statusRoute);
  app.post('/pxe/:mac/done', { schema: statusDoc(true) }, statusRoute);
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
