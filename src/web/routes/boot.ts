/**
 * `GET|HEAD /boot/{name}`: boot artifacts for iPXE and UEFI HTTP boot, with `?mac=` arming a
 * live-environment cycle (upstream-web §6.4). Open: no session.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { parseMac } from '../../core/mac.ts';
import { armOnBootFetch } from '../boot-offer.ts';
import { auditMessage } from '../bus.ts';
import { clientIp, detail, eventOf, toBootMachine, type WebContext } from '../context.ts';
import { appendEvent } from '../db/events.ts';
import { getMachine, updateMachineState } from '../db/machines.ts';
import { metricsOf } from '../metrics.ts';
import { IPXE_BOOT_FILES, IPXE_DIR } from '../netboot-files.ts';
import { errors, noContent, textResponse, type JsonSchema, type RouteDoc } from '../openapi.ts';

/** A bare file name: no separators, no leading dot, no NUL (traversal cannot be spelled). */
export const ARTIFACT_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

const NAME_PARAM: JsonSchema = {
  type: 'object',
  required: ['name'],
  properties: {
    name: {
      type: 'string',
      maxLength: 255,
      pattern: ARTIFACT_NAME.source,
      description: 'A bare file name in the boot folder (no separators, no leading dot).',
    },
  },
};

function fileDoc(head: boolean): RouteDoc {
  const file = textResponse('application/octet-stream', 'The whole file.', 'binary');
  return {
    summary: head ? 'Boot artifact headers' : 'Boot artifact',
    description: head
      ? 'The headers of `GET /boot/{name}` without the body (UEFI HTTP boot sizes its buffer from Content-Length).'
      : 'A boot artifact with Content-Length, ETag and one byte range; `?mac=` arms a live-environment cycle first.',
    tags: ['boot'],
    params: NAME_PARAM,
    querystring: {
      type: 'object',
      properties: {
        mac: {
          type: 'string',
          description:
            'The MAC of the machine fetching it: fetching a live-environment artifact arms its cycle. A malformed one is ignored.',
        },
      },
    },
    response: {
      200: head ? noContent('The file exists: its headers.') : file,
      206: head
        ? noContent('The headers of the range asked for.')
        : textResponse('application/octet-stream', 'The byte range asked for (`Range`).', 'binary'),
      416: noContent('The range is malformed or outside the file (`Content-Range: bytes */size`).'),
      ...errors({
        400: 'The name is not a bare file name: `invalid artifact name: …`.',
        404: 'No such file: `no such file: …`.',
      }),
    },
  };
}

export function registerBootRoutes(app: FastifyInstance, ctx: WebContext): void {
  const db = ctx.database.db.withPlugin(metricsOf(ctx).dbTiming);
  const now = ctx.now;
  const trustedProxy = ctx.trustedProxy;

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
        const eventId = await db.transaction().execute(async (tx) => {
          await updateMachineState(tx, tagged, armed.change!);
          return armed.event ? appendEvent(tx, eventOf(armed.event), at) : null;
        });
        if (armed.event && eventId !== null) {
          ctx.bus.publish({ type: 'machine', mac: tagged, change: 'armed' });
          ctx.bus.publish(auditMessage(eventId, armed.event));
        }
      }
    }
    if (!ARTIFACT_NAME.test(name) || name.length > 255) {
      return detail(reply, 400, `invalid artifact name: ${JSON.stringify(name)}`);
    }
    const found = await bootFile(ctx.bootDir, name);
    if (found === null) return detail(reply, 404, `no such file: ${name}`);
    return sendFile(req, reply, found.path, name, found.size, found.mtime);
  };
  app.get('/boot/:name', { schema: fileDoc(false) }, bootRoute);
  app.head(
    '/boot/:name',
    { schema: fileDoc(true), config: { swagger: { exposeHeadRoute: true } } },
    bootRoute,
  );
}

/**
 * A file of the boot folder, else (for the iPXE boot files only) the one Debian's `ipxe` package
 * installed: UEFI HTTP boot can then load `http://<host>/boot/ipxe.efi` with nothing copied. A
 * file of that name in the boot folder wins, so an operator can pin another iPXE build.
 */
async function bootFile(
  bootDir: string,
  name: string,
): Promise<{ path: string; size: number; mtime: Date } | null> {
  const candidates = [join(bootDir, name)];
  if ((IPXE_BOOT_FILES as readonly string[]).includes(name)) candidates.push(join(IPXE_DIR, name));
  for (const path of candidates) {
    const info = await stat(path).catch(() => null);
    if (info?.isFile()) return { path, size: info.size, mtime: info.mtime };
  }
  return null;
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
