/**
 * What the live environment (the `bty` agent booted over PXE) talks to, besides the terminal
 * status: `GET /pxe/{mac}/plan` (what to do), `POST /pxe/{mac}/inventory` (the disks and the
 * `lshw` blob it found) and `POST /pxe/{mac}/progress` (how far a flash is). Open: no session,
 * and none of them can change a binding.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { isFlashMode, decidePlanDispatch, discoveredMachine } from '../boot-offer.ts';
import {
  clientIp,
  detail,
  eventOf,
  hostOf,
  macParam,
  toBootMachine,
  type WebContext,
} from '../context.ts';
import { getCatalogEntry, type StoredCatalogEntry } from '../db/catalog.ts';
import { appendEvent, type NewEvent } from '../db/events.ts';
import { touchMachine } from '../db/machines.ts';
import { artifactsOf } from '../artifacts.ts';
import { cacheable, digestHex, planImage, type PlanImage } from '../plan-image.ts';
import {
  BAD_MAC_OR_JSON,
  MAC_PARAM,
  NULLABLE_STRING,
  errors,
  noContent,
  type JsonSchema,
  type RouteDoc,
} from '../openapi.ts';

const JSON_TYPE = 'application/json; charset=utf-8';

// ---------------------------------------------------------------------------------------------
// GET /pxe/{mac}/plan (upstream-web §8)
// ---------------------------------------------------------------------------------------------

/** The live env's dispatch document, with upstream's keys in upstream's order. */
export type Plan =
  | {
      mode: 'flash';
      image: string;
      target_disk_serial: string;
      name: string;
      disk_image_sha?: string;
      format?: string;
    }
  | { mode: 'interactive'; catalog: string }
  | { mode: 'inventory' }
  | { mode: 'exit' };

// ---------------------------------------------------------------------------------------------
// POST /pxe/{mac}/inventory (upstream-web §6.3, §3.3)
// ---------------------------------------------------------------------------------------------

/** Stored `lshw` blobs are capped; a larger one is skipped (the previous one kept), never cut. */
export const LSHW_MAX_BYTES = 4 * 1024 * 1024;
export const MAX_DISKS = 64;
/**
 * Room for the largest storable lshw even pretty-printed, plus 64 disks: a blob somewhat over
 * the cap still arrives and is answered "skipped"; only a body past this is 413.
 */
export const INVENTORY_BODY_LIMIT = 16 * 1024 * 1024;
/** lshw nests a dozen levels; deeper input is refused before it is serialised. */
const LSHW_MAX_DEPTH = 64;

/** One disk as stored: exactly these keys, in sorted order (§3.3). */
export interface InventoryDisk {
  model: string | null;
  path: string;
  readonly: boolean;
  removable: boolean;
  serial: string | null;
  size: string | null;
  tran: string | null;
  vendor: string | null;
}

const DISK_TEXT_LIMITS = {
  model: 128,
  path: 255,
  serial: 128,
  size: 32,
  tran: 32,
  vendor: 64,
} as const;

/** Thrown by the validators below; the route answers 422 with the message. */
class FieldError extends Error {}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function refuseUnknownKeys(body: Record<string, unknown>, allowed: readonly string[]): void {
  const extra = Object.keys(body).filter((k) => !allowed.includes(k));
  if (extra.length > 0) throw new FieldError(`unknown field(s): ${extra.join(', ')}`);
}

/**
 * Upstream's (pydantic) booleans, as lsblk has printed them over the years: JSON booleans, 0/1,
 * and the strings "0"/"1"/"true"/"false". Absent or null is false.
 */
function diskFlag(value: unknown, field: string): boolean {
  if (value === undefined || value === null) return false;
  if (typeof value === 'boolean') return value;
  if (value === 0 || value === 1) return value === 1;
  if (typeof value === 'string') {
    const lower = value.toLowerCase();
    if (lower === '1' || lower === 'true') return true;
    if (lower === '0' || lower === 'false') return false;
  }
  throw new FieldError(`${field}: must be a boolean`);
}

function diskText(value: unknown, at: string, key: keyof typeof DISK_TEXT_LIMITS): string | null {
  const required = key === 'path';
  const max = DISK_TEXT_LIMITS[key];
  const field = `${at}.${key}`;
  if (!required && (value === undefined || value === null)) return null;
  // `lsblk --bytes` prints sizes as numbers: keep them, as the text they would be.
  if (key === 'size' && typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) {
    value = String(value);
  }
  if (typeof value !== 'string' || value.length > max || (required && value === '')) {
    throw new FieldError(
      `${field}: must be ${required ? 'a non-empty string' : 'a string or null'} of at most ${max} characters`,
    );
  }
  return value;
}

/** §3.3: the known keys, defaults for the missing ones, unknown per-disk keys dropped. */
export function normaliseDisks(value: unknown): InventoryDisk[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new FieldError('disks: must be an array of disk objects');
  if (value.length > MAX_DISKS) {
    throw new FieldError(`disks: at most ${MAX_DISKS} disks per inventory, got ${value.length}`);
  }
  return value.map((raw: unknown, i): InventoryDisk => {
    const at = `disks[${i}]`;
    if (!isObject(raw)) throw new FieldError(`${at}: must be an object`);
    const text = (key: keyof typeof DISK_TEXT_LIMITS) => diskText(raw[key], at, key);
    return {
      model: text('model'),
      path: text('path')!,
      readonly: diskFlag(raw.readonly, `${at}.readonly`),
      removable: diskFlag(raw.removable, `${at}.removable`),
      serial: text('serial'),
      size: text('size'),
      tran: text('tran'),
      vendor: text('vendor'),
    };
  });
}

/** Nesting depth of parsed JSON, measured without recursion (so any depth is safe to ask). */
function depthOf(value: unknown, limit: number): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (typeof node !== 'object' || node === null) continue;
    if (depth > deepest) deepest = depth;
    if (deepest > limit) return deepest;
    for (const child of Array.isArray(node) ? node : Object.values(node)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
    }
  }
  return deepest;
}

/** Compact JSON with every object's keys sorted (code-unit order), at any depth. */
export function sortedJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (!isObject(v)) return v;
    const sorted: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) sorted[k] = v[k];
    return sorted;
  });
}

interface InventoryReport {
  disks: InventoryDisk[];
  /** Serialised lshw, or null when the body had none (the stored blob is then kept). */
  lshw: string | null;
}

export function parseInventory(body: unknown): InventoryReport {
  if (!isObject(body)) {
    throw new FieldError('body: must be a JSON object {"disks": [...], "lshw"?: object}');
  }
  refuseUnknownKeys(body, ['disks', 'lshw']);
  const disks = normaliseDisks(body.disks);
  const lshw = body.lshw;
  if (lshw === undefined || lshw === null) return { disks, lshw: null };
  if (typeof lshw !== 'object') throw new FieldError('lshw: must be a JSON object, array or null');
  if (depthOf(lshw, LSHW_MAX_DEPTH) > LSHW_MAX_DEPTH) {
    throw new FieldError(`lshw: nested deeper than ${LSHW_MAX_DEPTH} levels`);
  }
  return { disks, lshw: sortedJson(lshw) };
}

// ---------------------------------------------------------------------------------------------
// POST /pxe/{mac}/progress (additive: the agent's FlashProgress, src/core/progress.ts)
// ---------------------------------------------------------------------------------------------

/**
 * The agent's phases (`FLASH_PHASES`) plus `reboot`, which the contract lists as the step after
 * verify.
 */
export const PROGRESS_PHASES = [
  'resolve',
  'download',
  'write',
  'sync',
  'verify',
  'reboot',
  'done',
  'failed',
] as const;
export const PROGRESS_MESSAGE_MAX = 500;
const PROGRESS_BODY_LIMIT = 16 * 1024;
/** At most one stored progress write per MAC per this many ms (a phase change always writes). */
export const PROGRESS_WRITE_INTERVAL_MS = 1000;

export interface ProgressReport {
  phase: (typeof PROGRESS_PHASES)[number];
  bytes_done: number;
  bytes_total: number | null;
  rate_bps: number;
  eta_seconds?: number | null;
  source_bytes_done?: number;
  source_bytes_total?: number | null;
  resumes?: number;
  message?: string;
}

const PROGRESS_FIELDS = [
  'phase',
  'bytes_done',
  'bytes_total',
  'rate_bps',
  'eta_seconds',
  'source_bytes_done',
  'source_bytes_total',
  'resumes',
  'message',
] as const;

function count(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new FieldError(`${field}: must be a non-negative integer`);
  }
  return value;
}

function countOrNull(value: unknown, field: string): number | null {
  if (value === null) return null;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new FieldError(`${field}: must be a non-negative integer or null`);
  }
  return value;
}

function rate(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new FieldError(`${field}: must be a non-negative number`);
  }
  return value;
}

/**
 * `{phase, bytes_done, bytes_total, rate_bps, resumes?, message?}`, and the other optional
 * fields of the agent's FlashProgress event (`eta_seconds`, `source_bytes_*`), so the agent can
 * post its events as they are. Returned with the keys in one fixed order.
 */
export function parseProgress(body: unknown): ProgressReport {
  if (!isObject(body)) {
    throw new FieldError(
      'body: must be a JSON object {"phase", "bytes_done", "bytes_total", "rate_bps", ' +
        '"resumes"?, "message"?}',
    );
  }
  refuseUnknownKeys(body, PROGRESS_FIELDS);
  const phase = body.phase;
  if (typeof phase !== 'string' || !(PROGRESS_PHASES as readonly string[]).includes(phase)) {
    throw new FieldError(`phase: must be one of ${PROGRESS_PHASES.join(', ')}`);
  }
  for (const required of ['bytes_done', 'bytes_total', 'rate_bps'] as const) {
    if (!Object.hasOwn(body, required)) throw new FieldError(`${required}: required`);
  }
  const report: ProgressReport = {
    phase: phase as ProgressReport['phase'],
    bytes_done: count(body.bytes_done, 'bytes_done'),
    bytes_total: countOrNull(body.bytes_total, 'bytes_total'),
    rate_bps: rate(body.rate_bps, 'rate_bps'),
  };
  if (body.eta_seconds !== undefined) {
    report.eta_seconds = body.eta_seconds === null ? null : rate(body.eta_seconds, 'eta_seconds');
  }
  if (body.source_bytes_done !== undefined) {
    report.source_bytes_done = count(body.source_bytes_done, 'source_bytes_done');
  }
  if (body.source_bytes_total !== undefined) {
    report.source_bytes_total = countOrNull(body.source_bytes_total, 'source_bytes_total');
  }
  if (body.resumes !== undefined) report.resumes = count(body.resumes, 'resumes');
  if (body.message !== undefined) {
    if (typeof body.message !== 'string' || body.message.length > PROGRESS_MESSAGE_MAX) {
      throw new FieldError(
        `message: must be a string of at most ${PROGRESS_MESSAGE_MAX} characters`,
      );
    }
    report.message = body.message;
  }
  return report;
}

/**
 * Which progress posts are stored. Every post is published live; the database gets at most one
 * write per MAC per interval, except that a new phase is always written (a dropped phase change
 * would leave a stale phase on the record until the next write).
 */
export class ProgressThrottle {
  private readonly last = new Map<string, { at: number; phase: string }>();
  private readonly intervalMs: number;

  constructor(intervalMs = PROGRESS_WRITE_INTERVAL_MS) {
    this.intervalMs = intervalMs;
  }

  /** True when this report should be written; it is then counted as written. */
  claim(mac: string, phase: string, at: number): boolean {
    const previous = this.last.get(mac);
    const due =
      previous === undefined ||
      previous.phase !== phase ||
      at - previous.at >= this.intervalMs ||
      at < previous.at; // the clock went back: do not stall for as long as it jumped
    if (!due) return false;
    if (this.last.size >= 4096) this.sweep(at);
    this.last.set(mac, { at, phase });
    return true;
  }

  /** Forgets a MAC (its write failed, or it has no record). */
  forget(mac: string): void {
    this.last.delete(mac);
  }

  /** Drops entries older than the interval: they would be due anyway. */
  private sweep(at: number): void {
    for (const [mac, seen] of this.last) {
      if (at - seen.at >= this.intervalMs) this.last.delete(mac);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The routes' documentation (GET /openapi.json); the checks above are what the routes apply
// ---------------------------------------------------------------------------------------------

const PLAN_SCHEMA: JsonSchema = {
  description: 'What the live environment does next, by `mode`.',
  oneOf: [
    {
      type: 'object',
      required: ['mode', 'image', 'target_disk_serial', 'name'],
      properties: {
        mode: { const: 'flash' },
        image: { type: 'string', description: 'The image URL (its origin, for now).' },
        target_disk_serial: { type: 'string' },
        name: { type: 'string', description: 'The catalog entry name.' },
        disk_image_sha: { type: 'string', description: 'sha256 of the image, when known.' },
        format: { type: 'string' },
      },
    },
    {
      type: 'object',
      required: ['mode', 'catalog'],
      properties: {
        mode: { const: 'interactive' },
        catalog: { type: 'string', description: 'The URL of the catalog TOML on this server.' },
      },
    },
    { type: 'object', required: ['mode'], properties: { mode: { const: 'inventory' } } },
    { type: 'object', required: ['mode'], properties: { mode: { const: 'exit' } } },
  ],
};

const PLAN_DOC: RouteDoc = {
  summary: 'Live-environment plan',
  description:
    'What the booted live environment should do: flash an image, run the interactive wizard, report an inventory, or exit.',
  tags: ['live-env'],
  params: MAC_PARAM,
  response: {
    200: PLAN_SCHEMA,
    ...errors({ 400: 'The MAC is malformed (`invalid MAC: …`), or the Host header is unusable.' }),
  },
};

const DISK_SCHEMA: JsonSchema = {
  type: 'object',
  required: ['path'],
  description:
    "One disk as lsblk shows it; other keys are dropped. Flags also accept 0/1 and '0'/'1'/'true'/'false'.",
  properties: {
    path: { type: 'string', minLength: 1, maxLength: DISK_TEXT_LIMITS.path },
    model: { ...NULLABLE_STRING, maxLength: DISK_TEXT_LIMITS.model },
    serial: { ...NULLABLE_STRING, maxLength: DISK_TEXT_LIMITS.serial },
    size: {
      type: ['string', 'integer', 'null'],
      maxLength: DISK_TEXT_LIMITS.size,
      description: 'Bytes, as text or as a number.',
    },
    tran: { ...NULLABLE_STRING, maxLength: DISK_TEXT_LIMITS.tran },
    vendor: { ...NULLABLE_STRING, maxLength: DISK_TEXT_LIMITS.vendor },
    readonly: { type: ['boolean', 'integer', 'string', 'null'] },
    removable: { type: ['boolean', 'integer', 'string', 'null'] },
  },
};

const INVENTORY_DOC: RouteDoc = {
  summary: 'Report the hardware inventory',
  description:
    'Stores the disks the live environment found (replacing the previous list) and, when given, the lshw blob.',
  tags: ['live-env'],
  params: MAC_PARAM,
  body: {
    type: 'object',
    additionalProperties: false,
    properties: {
      disks: { type: ['array', 'null'], maxItems: MAX_DISKS, items: DISK_SCHEMA },
      lshw: {
        type: ['object', 'array', 'null'],
        description: `\`lshw -json\` output; stored up to ${LSHW_MAX_BYTES} bytes (a larger one is skipped), at most ${LSHW_MAX_DEPTH} levels deep.`,
      },
    },
  },
  response: {
    204: noContent('Stored.'),
    ...errors({
      ...BAD_MAC_OR_JSON,
      404: 'No machine record for this MAC (logged as an orphan signal).',
      413: `The body is larger than ${INVENTORY_BODY_LIMIT} bytes.`,
      422: 'The body does not validate; the message names the field (`disks[2].serial: …`).',
    }),
  },
};

const PROGRESS_DOC: RouteDoc = {
  summary: 'Report flash progress',
  description:
    "Stores the machine's current flash progress (at most one write a second per machine, every phase change kept) and pushes it to live subscribers.",
  tags: ['live-env'],
  params: MAC_PARAM,
  body: {
    type: 'object',
    required: ['phase', 'bytes_done', 'bytes_total', 'rate_bps'],
    additionalProperties: false,
    properties: {
      phase: { enum: [...PROGRESS_PHASES] },
      bytes_done: { type: 'integer', minimum: 0 },
      bytes_total: { type: ['integer', 'null'], minimum: 0 },
      rate_bps: { type: 'number', minimum: 0, description: 'Bytes per second.' },
      eta_seconds: { type: ['number', 'null'], minimum: 0 },
      source_bytes_done: { type: 'integer', minimum: 0 },
      source_bytes_total: { type: ['integer', 'null'], minimum: 0 },
      resumes: { type: 'integer', minimum: 0, description: 'Download resumes so far.' },
      message: { type: 'string', maxLength: PROGRESS_MESSAGE_MAX },
    },
  },
  response: {
    204: noContent('Recorded.'),
    ...errors({
      ...BAD_MAC_OR_JSON,
      404: 'No machine record for this MAC.',
      413: `The body is larger than ${PROGRESS_BODY_LIMIT} bytes.`,
      422: 'The body does not validate; the message names the field.',
    }),
  },
};

// ---------------------------------------------------------------------------------------------
// The routes
// ---------------------------------------------------------------------------------------------

/** Where this plan's machine gets the image bytes (src/web/plan-image.ts decides). */
function planImageFor(ctx: WebContext, entry: StoredCatalogEntry, host: string): PlanImage {
  const cache = artifactsOf(ctx);
  const stored = cacheable(entry.src) ? cache.store.lookupKey(entry.ref) : undefined;
  // A copy whose digest is not the catalog's is stale: the cache will not serve it either.
  const expected = digestHex(entry.sha256);
  const cached =
    stored && (expected === null || digestHex(stored.digest) === expected) ? stored : null;
  return planImage(entry, {
    host,
    withcacheBase: cache.withcacheBase,
    mode: cache.mode,
    cached: cached ? { digest: cached.digest } : null,
  });
}

export function registerLiveRoutes(app: FastifyInstance, ctx: WebContext): void {
  const { db } = ctx.database;
  const now = ctx.now;
  const trustedProxy = ctx.trustedProxy;
  const throttle = new ProgressThrottle();
  const machineExists = async (mac: string) =>
    (await db.selectFrom('machines').select('mac').where('mac', '=', mac).executeTakeFirst()) !==
    undefined;

  /** Tells live subscribers about a new audit event. */
  const publishEvent = (id: number | null, event: NewEvent) => {
    if (id === null) return;
    ctx.bus.publish({
      type: 'event',
      id,
      kind: event.kind,
      summary: event.summary,
      subject_id: event.subjectId ?? null,
    });
  };

  const invalid = (reply: FastifyReply, err: unknown): FastifyReply => {
    if (err instanceof FieldError) return detail(reply, 422, err.message);
    throw err;
  };

  app.get<{ Params: { mac: string } }>(
    '/pxe/:mac/plan',
    { schema: PLAN_DOC },
    async (req, reply) => {
      const mac = macParam(req.params.mac, reply);
      if (mac === null) return reply;
      // Validated before anything is stored: a bad Host header is a 400 and changes nothing.
      const host = hostOf(req);
      const ip = clientIp(req, trustedProxy);
      const at = now();
      const first = discoveredMachine(mac, ip, 'plan');
      const { machine: row, discovered } = await touchMachine(db, mac, ip, at, {
        bootMode: first.machine.boot_mode,
        event: eventOf(first.event),
      });
      const entry = row.bty_image_ref ? await getCatalogEntry(db, row.bty_image_ref) : null;
      const dispatch = decidePlanDispatch(toBootMachine(row, null), entry);

      let plan: Plan;
      let summary: string;
      const extra: Record<string, unknown> = {};
      switch (dispatch.mode) {
        case 'flash': {
          const e: StoredCatalogEntry = dispatch.entry;
          const image = planImageFor(ctx, e, host);
          plan = {
            mode: 'flash',
            image: image.url,
            target_disk_serial: dispatch.target_disk_serial,
            name: e.name,
            ...(image.sha256 ? { disk_image_sha: image.sha256 } : {}),
            ...(e.format ? { format: e.format } : {}),
          };
          summary = `${mac} plan: flash ${e.name} (${e.ref.slice(0, 12)}) to disk ${dispatch.target_disk_serial}`;
          extra.withcache = {
            configured: image.served_from === 'withcache',
            hit: image.hit,
            served_from: image.served_from,
          };
          break;
        }
        case 'interactive':
          plan = { mode: 'interactive', catalog: `http://${host}/catalog.toml` };
          if (dispatch.offerKind === 'plan:interactive:flash-unresolved') {
            extra.reason = dispatch.reason;
            summary =
              `${mac} plan: interactive wizard (${row.boot_mode} cannot flash: ` +
              (dispatch.reason === 'no_target_disk'
                ? 'no target disk serial)'
                : 'image ref not in the catalog)');
          } else {
            summary = `${mac} plan: interactive wizard (bty-tui)`;
          }
          break;
        case 'inventory':
          plan = { mode: 'inventory' };
          summary = `${mac} plan: hardware inventory`;
          break;
        case 'exit':
          plan = { mode: 'exit' };
          summary = isFlashMode(row.boot_mode)
            ? `${mac} plan: exit (${row.boot_mode} without an image ref)`
            : `${mac} plan: exit (boot_mode ${JSON.stringify(row.boot_mode)})`;
          break;
      }
      const event: NewEvent = {
        kind: 'netboot.pxe.plan',
        summary,
        subjectKind: 'machine',
        subjectId: mac,
        actor: 'pxe-client',
        sourceIp: ip,
        details: { plan, boot_mode: row.boot_mode, offer_kind: dispatch.offerKind, ...extra },
      };
      const id = await appendEvent(db, event, at);
      if (discovered) ctx.bus.publish({ type: 'machine', mac, change: 'discovered' });
      ctx.bus.publish({ type: 'offer', mac, offer_kind: dispatch.offerKind });
      publishEvent(id, event);
      return reply.type(JSON_TYPE).send(plan);
    },
  );

  app.post<{ Params: { mac: string }; Body: unknown }>(
    '/pxe/:mac/inventory',
    { bodyLimit: INVENTORY_BODY_LIMIT, schema: INVENTORY_DOC },
    async (req, reply) => {
      const mac = macParam(req.params.mac, reply);
      if (mac === null) return reply;
      let report: InventoryReport;
      try {
        report = parseInventory(req.body);
      } catch (err) {
        return invalid(reply, err);
      }
      const ip = clientIp(req, trustedProxy);
      const at = now();
      const iso = at.toISOString();
      const count = report.disks.length;
      const lshwStored =
        report.lshw !== null && Buffer.byteLength(report.lshw, 'utf8') <= LSHW_MAX_BYTES;
      const subject = {
        subjectKind: 'machine',
        subjectId: mac,
        actor: 'pxe-client',
        sourceIp: ip,
      } as const;

      // The existence check and the writes share one transaction: a machine deleted meanwhile
      // is an orphan, never a half-written inventory.
      const outcome = await db.transaction().execute(async (tx) => {
        const exists = await tx
          .selectFrom('machines')
          .select('mac')
          .where('mac', '=', mac)
          .executeTakeFirst();
        if (!exists) {
          const event: NewEvent = {
            ...subject,
            kind: 'pxe.client.orphan',
            summary: `inventory from ${mac}, which has no machine record`,
            details: { signal: 'inventory', disk_count: count },
          };
          return { orphan: true, event, id: await appendEvent(tx, event, at) };
        }
        const disks = sortedJson(report.disks);
        await tx
          .insertInto('inventory')
          .values({
            mac,
            disks,
            disks_at: iso,
            lshw: lshwStored ? report.lshw : null,
            lshw_at: lshwStored ? iso : null,
          })
          .onConflict((oc) =>
            oc
              .column('mac')
              .doUpdateSet(
                lshwStored
                  ? { disks, disks_at: iso, lshw: report.lshw, lshw_at: iso }
                  : { disks, disks_at: iso },
              ),
          )
          .execute();
        await tx
          .updateTable('machines')
          .set({ last_seen_at: iso, last_seen_ip: ip, updated_at: iso })
          .where('mac', '=', mac)
          .execute();
        const lshwNote =
          report.lshw === null ? '' : lshwStored ? ' + lshw' : ' (lshw too large, skipped)';
        const event: NewEvent = {
          ...subject,
          kind: 'machine.inventory',
          summary: `${mac} reported ${count} disk(s)${lshwNote}`,
          details: {
            count,
            serials: report.disks.map((d) => d.serial).filter((s) => s !== null && s !== ''),
            lshw: lshwStored,
          },
        };
        return { orphan: false, event, id: await appendEvent(tx, event, at) };
      });
      publishEvent(outcome.id, outcome.event);
      if (outcome.orphan) return detail(reply, 404, `no machine record for ${mac}`);
      ctx.bus.publish({ type: 'inventory', mac, disks: count });
      return reply.code(204).send();
    },
  );

  app.post<{ Params: { mac: string }; Body: unknown }>(
    '/pxe/:mac/progress',
    { bodyLimit: PROGRESS_BODY_LIMIT, schema: PROGRESS_DOC },
    async (req, reply) => {
      const mac = macParam(req.params.mac, reply);
      if (mac === null) return reply;
      let report: ProgressReport;
      try {
        report = parseProgress(req.body);
      } catch (err) {
        return invalid(reply, err);
      }
      const at = now();
      if (throttle.claim(mac, report.phase, at.getTime())) {
        const iso = at.toISOString();
        // One statement stores the report and tells whether the machine exists.
        const result = await db
          .updateTable('machines')
          .set({
            progress: JSON.stringify(report),
            progress_at: iso,
            last_seen_at: iso,
            last_seen_ip: clientIp(req, trustedProxy),
          })
          .where('mac', '=', mac)
          .executeTakeFirst();
        if (Number(result.numUpdatedRows) === 0) {
          throttle.forget(mac);
          return detail(reply, 404, `no machine record for ${mac}`);
        }
      } else if (!(await machineExists(mac))) {
        throttle.forget(mac);
        return detail(reply, 404, `no machine record for ${mac}`);
      }
      ctx.bus.publish({
        type: 'progress',
        mac,
        phase: report.phase,
        bytes_done: report.bytes_done,
        bytes_total: report.bytes_total,
        rate_bps: report.rate_bps,
        ...(report.eta_seconds !== undefined ? { eta_seconds: report.eta_seconds } : {}),
        ...(report.resumes !== undefined ? { resumes: report.resumes } : {}),
        ...(report.message !== undefined ? { message: report.message } : {}),
      });
      return reply.code(204).send();
    },
  );
}
