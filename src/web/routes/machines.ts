/**
 * The operator's JSON API (session required; 401 `{"detail":"login required"}` first, before
 * any validation): machines (`GET /machines`, `GET|PUT|DELETE /machines/{mac}`, the
 * `lshw.json` / `disks.json` downloads), `PUT /boot/{name}` (artifact upload) and `GET /config`.
 * The audit-log routes live in `./events.ts`, registered from here.
 *
 * All of them run in one encapsulated scope with its own JSON parser (an empty body is "no
 * body", invalid JSON is a 400 naming the body) and error handler (oversize bodies and unknown
 * content types answered with the field named). The upload route sits in a nested scope: the
 * only place an `application/octet-stream` body is accepted, streamed to disk, never buffered.
 *
 * Error statuses follow upstream (upstream-web §9): 400 for a bad MAC or artifact name, 422
 * for a body that does not validate, 404 for a missing record. Messages start with the field.
 */
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isBtyError } from '../../core/errors.ts';
import { policyResetChange, SUPPORTED_BOOT_MODES, isSupportedBootMode } from '../boot-offer.ts';
import { CONFIG_SCHEMA, renderConfigJson } from '../config.ts';
import { clientIp, detail, macParam, type WebContext } from '../context.ts';
import { appendEvent, type NewEvent } from '../db/events.ts';
import type { EventKind } from '../event-kinds.ts';
import {
  createMachineWithBinding,
  deleteMachine,
  getLshw,
  getMachineRecord,
  listMachineRecords,
  lockMachine,
  MAX_LABEL_LENGTH,
  MAX_LABELS,
  replaceLabels,
  updateMachineBinding,
  validateLabels,
  type MachineBinding,
  type MachineRecord,
} from '../db/machines.ts';
import {
  BAD_MAC,
  BAD_MAC_OR_JSON,
  MAC_PARAM,
  NULLABLE_STRING,
  errors,
  noContent,
  protectedRoute,
  type JsonSchema,
  type RouteDoc,
} from '../openapi.ts';
import { requireSession } from './auth.ts';
import { ARTIFACT_NAME } from './boot.ts';
import { registerEventRoutes } from './events.ts';

// ---------------------------------------------------------------------------------------------
// The wire type (§9.1) and the upsert body (§9.5): pure functions
// ---------------------------------------------------------------------------------------------

/** The machine as the API shows it. `saw_flasher_boot`, `armed_at` and lshw stay inside. */
export interface MachineWire {
  mac: string;
  bty_image_ref: string | null;
  labels: string[];
  discovered_at: string | null;
  last_seen_at: string | null;
  last_seen_ip: string | null;
  boot_mode: string;
  sanboot_drive: string | null;
  last_flashed_at: string | null;
  known_disks: unknown[] | null;
  known_disks_at: string | null;
  target_disk_serial: string | null;
  created_at: string;
  updated_at: string;
}

/**
 * A stored time as ISO-8601 UTC with a trailing `Z` (§5): milliseconds kept, the fraction left
 * out when it is zero. A value that does not parse is returned as stored.
 */
export function isoUtc(stored: string): string;
export function isoUtc(stored: string | null): string | null;
export function isoUtc(stored: string | null): string | null {
  if (stored === null) return null;
  const t = Date.parse(stored);
  if (Number.isNaN(t)) return stored;
  return new Date(t).toISOString().replace('.000Z', 'Z');
}

/** The stored disk list when it is a JSON array; anything else (corrupt, an object) is null. */
function knownDisks(text: string | null): unknown[] | null {
  if (!text) return null;
  try {
    const value: unknown = JSON.parse(text);
    return Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

export function machineWire(record: MachineRecord): MachineWire {
  const r = record.row;
  return {
    mac: r.mac,
    bty_image_ref: r.bty_image_ref,
    labels: [...record.labels],
    discovered_at: isoUtc(r.discovered_at),
    last_seen_at: isoUtc(r.last_seen_at),
    last_seen_ip: r.last_seen_ip,
    boot_mode: r.boot_mode,
    sanboot_drive: r.sanboot_drive,
    last_flashed_at: isoUtc(r.last_flashed_at),
    known_disks: knownDisks(record.disks),
    known_disks_at: isoUtc(record.disks_at),
    target_disk_serial: r.target_disk_serial,
    created_at: isoUtc(r.created_at),
    updated_at: isoUtc(r.updated_at),
  };
}

const UPSERT_FIELDS = [
  'bty_image_ref',
  'labels',
  'boot_mode',
  'sanboot_drive',
  'target_disk_serial',
] as const;
const REF = /^[0-9a-f]{64}$/;
const DRIVE = /^0x([0-9a-fA-F]{1,2})$/;
export const MAX_SERIAL_LENGTH = 128;
/** The mode upstream has and this server does not implement yet (a later issue). */
const UNSUPPORTED_MODES = new Set(['ramboot']);

export type UpsertResult =
  { ok: true; binding: MachineBinding } | { ok: false; status: number; message: string };

const refuse = (message: string): UpsertResult => ({ ok: false, status: 422, message });

/**
 * Validates a `PUT /machines/{mac}` body (upstream's MachineUpsert): a JSON object with only
 * the five binding fields, each omitted one reset to its default (a replace, not a patch).
 * `sanboot_drive` is normalised to `0x` + two lower-case hex digits (`0x80`, `0x1` → `0x01`).
 */
export function parseMachineUpsert(body: unknown): UpsertResult {
  if (body === undefined) return refuse('body: a JSON object is required');
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return refuse('body: must be a JSON object');
  }
  const fields = body as Record<string, unknown>;
  const unknown = Object.keys(fields).filter(
    (k) => !(UPSERT_FIELDS as readonly string[]).includes(k),
  );
  if (unknown.length > 0) {
    return refuse(
      `${unknown.map((k) => JSON.stringify(k)).join(', ')}: unknown field(s); ` +
        `known: ${UPSERT_FIELDS.join(', ')}`,
    );
  }

  const ref = fields.bty_image_ref ?? null;
  if (ref !== null && (typeof ref !== 'string' || !REF.test(ref))) {
    return refuse('bty_image_ref: must be null or 64 lower-case hex digits');
  }

  const mode = fields.boot_mode ?? 'ipxe-exit';
  if (typeof mode !== 'string') return refuse('boot_mode: must be a string');
  if (UNSUPPORTED_MODES.has(mode)) {
    return refuse(
      `boot_mode: ${JSON.stringify(mode)} is not supported by this server yet; ` +
        `use one of ${SUPPORTED_BOOT_MODES.join(', ')}`,
    );
  }
  if (!isSupportedBootMode(mode)) {
    return refuse(
      `boot_mode: unknown mode ${JSON.stringify(mode.slice(0, 64))}; ` +
        `use one of ${SUPPORTED_BOOT_MODES.join(', ')}`,
    );
  }

  const driveRaw = fields.sanboot_drive ?? null;
  let drive: string | null = null;
  if (driveRaw !== null) {
    const m = typeof driveRaw === 'string' ? DRIVE.exec(driveRaw) : null;
    if (!m) {
      return refuse('sanboot_drive: must be null or a BIOS drive number like 0x80 (0x + 1-2 hex)');
    }
    drive = `0x${m[1]!.toLowerCase().padStart(2, '0')}`;
  }

  const serialRaw = fields.target_disk_serial ?? null;
  let serial: string | null = null;
  if (serialRaw !== null) {
    if (typeof serialRaw !== 'string')
      return refuse('target_disk_serial: must be null or a string');
    if (serialRaw.length > MAX_SERIAL_LENGTH) {
      return refuse(`target_disk_serial: at most ${MAX_SERIAL_LENGTH} characters`);
    }
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(serialRaw)) {
      return refuse('target_disk_serial: must not contain control characters');
    }
    serial = serialRaw === '' ? null : serialRaw;
  }

  const labelsRaw = fields.labels ?? [];
  if (!Array.isArray(labelsRaw)) return refuse('labels: must be a list of strings');
  if (labelsRaw.length > MAX_LABELS) {
    return refuse(`labels: at most ${MAX_LABELS} per machine, got ${labelsRaw.length}`);
  }
  if (!labelsRaw.every((l): l is string => typeof l === 'string')) {
    return refuse('labels: every label must be a string');
  }
  let labels: string[];
  try {
    labels = validateLabels(labelsRaw);
  } catch (err) {
    if (isBtyError(err)) return refuse(err.message);
    throw err;
  }

  return {
    ok: true,
    binding: {
      bty_image_ref: ref,
      boot_mode: mode,
      sanboot_drive: drive,
      target_disk_serial: serial,
      labels,
    },
  };
}

/** The event details of a machine write: upstream's five binding fields. */
function bindingDetails(b: MachineBinding): Record<string, unknown> {
  return {
    bty_image_ref: b.bty_image_ref,
    boot_mode: b.boot_mode,
    sanboot_drive: b.sanboot_drive,
    labels: [...b.labels],
    target_disk_serial: b.target_disk_serial,
  };
}

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

/** The largest JSON body the machine routes read (a full upsert is about 1.5 KiB). */
export const MACHINE_BODY_LIMIT = 64 * 1024;

/** The media type of a Content-Type header, lower-cased, parameters dropped. */
export function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0]!.trim().toLowerCase();
}

// ---------------------------------------------------------------------------------------------
// The machine routes' documentation (GET /openapi.json); parseMachineUpsert and the handlers
// are what apply
// ---------------------------------------------------------------------------------------------

const TIME = (description: string): JsonSchema => ({ ...NULLABLE_STRING, description });

const MACHINE_SCHEMA: JsonSchema = {
  type: 'object',
  description: 'A machine record. Times are ISO-8601 UTC with a trailing Z.',
  required: [
    'mac',
    'bty_image_ref',
    'labels',
    'discovered_at',
    'last_seen_at',
    'last_seen_ip',
    'boot_mode',
    'sanboot_drive',
    'last_flashed_at',
    'known_disks',
    'known_disks_at',
    'target_disk_serial',
    'created_at',
    'updated_at',
  ],
  properties: {
    mac: { type: 'string', examples: ['52:54:00:12:34:56'] },
    bty_image_ref: { ...NULLABLE_STRING, description: 'The bound catalog entry ref.' },
    labels: { type: 'array', items: { type: 'string' } },
    discovered_at: TIME('First seen by the PXE plane (null when created by an operator).'),
    last_seen_at: TIME('Last request from the machine.'),
    last_seen_ip: NULLABLE_STRING,
    boot_mode: { type: 'string' },
    sanboot_drive: { ...NULLABLE_STRING, description: 'BIOS drive for a disk boot, `0x80`.' },
    last_flashed_at: TIME('Last flash reported done.'),
    known_disks: {
      type: ['array', 'null'],
      items: { type: 'object' },
      description: 'The disks of the last inventory.',
    },
    known_disks_at: TIME('When they were reported.'),
    target_disk_serial: { ...NULLABLE_STRING, description: 'The disk a flash writes to.' },
    created_at: { type: 'string' },
    updated_at: { type: 'string' },
  },
};

const UPSERT_BODY: JsonSchema = {
  type: 'object',
  description: 'The whole binding: an omitted field is reset to its default (a replace).',
  additionalProperties: false,
  properties: {
    bty_image_ref: {
      type: ['string', 'null'],
      pattern: REF.source,
      default: null,
      description: 'A catalog entry ref (64 lower-case hex digits).',
    },
    labels: {
      type: 'array',
      maxItems: MAX_LABELS,
      default: [],
      items: {
        type: 'string',
        minLength: 1,
        maxLength: MAX_LABEL_LENGTH,
        pattern: '^[A-Za-z0-9][A-Za-z0-9 ._-]*$',
      },
    },
    boot_mode: { enum: [...SUPPORTED_BOOT_MODES], default: 'ipxe-exit' },
    sanboot_drive: {
      type: ['string', 'null'],
      pattern: DRIVE.source,
      default: null,
      description: 'A BIOS drive number, `0x80`; stored as 0x + two lower-case digits.',
    },
    target_disk_serial: {
      type: ['string', 'null'],
      maxLength: MAX_SERIAL_LENGTH,
      default: null,
      description: 'The serial of the disk to flash; empty means none.',
    },
  },
};

const MACHINES_DOC = protectedRoute({
  summary: 'Machines',
  description: 'Every machine record.',
  tags: ['machines'],
  response: { 200: { description: 'The machines.', type: 'array', items: MACHINE_SCHEMA } },
});

const MACHINE_DOC = protectedRoute({
  summary: 'One machine',
  description: 'The machine record for this MAC.',
  tags: ['machines'],
  params: MAC_PARAM,
  response: {
    200: { ...MACHINE_SCHEMA, description: 'The machine.' },
    ...errors({ ...BAD_MAC, 404: 'No machine record for this MAC.' }),
  },
});

const PUT_DOC = protectedRoute({
  summary: 'Create or replace a machine binding',
  description:
    'Creates the machine or replaces its binding; a change that affects the boot policy resets its boot cycle.',
  tags: ['machines'],
  params: MAC_PARAM,
  body: { content: { 'application/json': { schema: UPSERT_BODY } } },
  response: {
    200: { ...MACHINE_SCHEMA, description: 'The machine as stored.' },
    ...errors({
      ...BAD_MAC_OR_JSON,
      413: `The body is larger than ${MACHINE_BODY_LIMIT} bytes.`,
      415: 'The Content-Type is not application/json.',
      422: 'The body does not validate; the message names the field.',
    }),
  },
});

const DELETE_DOC = protectedRoute({
  summary: 'Delete a machine',
  description: 'Deletes the machine record with its labels and inventory.',
  tags: ['machines'],
  params: MAC_PARAM,
  response: {
    204: noContent('Deleted.'),
    ...errors({ ...BAD_MAC, 404: 'No machine record for this MAC.' }),
  },
});

function downloadDoc(what: 'lshw' | 'disks'): RouteDoc {
  const lshw = what === 'lshw';
  return protectedRoute({
    summary: lshw ? 'lshw hardware report' : 'Disk inventory',
    description: lshw
      ? 'The stored `lshw -json` blob of the machine, as a download.'
      : 'The disks of the last inventory, as a download.',
    tags: ['machines'],
    params: MAC_PARAM,
    response: {
      200: {
        description: `JSON, with \`Content-Disposition: attachment; filename="<mac>-${what}.json"\`.`,
        type: lshw ? ['object', 'array'] : 'array',
      },
      ...errors({
        ...BAD_MAC,
        404: `No machine record for this MAC, or no ${lshw ? 'lshw report' : 'disk inventory'} yet.`,
      }),
    },
  });
}

// ---------------------------------------------------------------------------------------------
// The routes
// ---------------------------------------------------------------------------------------------

export function registerMachineRoutes(app: FastifyInstance, ctx: WebContext): void {
  void app.register(async (scope) => {
    operatorScope(scope);
    machineRoutes(scope, ctx);
    configRoute(scope, ctx);
    registerEventRoutes(scope, ctx);
    await scope.register(async (upload) => {
      uploadRoute(upload, ctx);
      return Promise.resolve();
    });
  });
}

/** The scope's JSON parser and error handler (see the top of this file). */
function operatorScope(scope: FastifyInstance): void {
  scope.removeContentTypeParser('application/json');
  scope.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string;
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      done(Object.assign(new Error(`body: invalid JSON (${why})`), { statusCode: 400 }));
    }
  });
  scope.setErrorHandler((err, req, reply) => {
    const e = err as { code?: string; statusCode?: number; message?: string };
    switch (e.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return detail(
          reply,
          413,
          `body: larger than the ${req.routeOptions.bodyLimit ?? MACHINE_BODY_LIMIT}-byte limit`,
        );
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return detail(
          reply,
          415,
          `content-type: ${JSON.stringify(req.headers['content-type'] ?? '')} is not accepted here`,
        );
      case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
        return detail(reply, 400, 'content-length: does not match the body received');
    }
    if (isBtyError(err)) return detail(reply, err.httpStatus, err.message);
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
      return detail(reply, e.statusCode, e.message ?? 'bad request');
    }
    return detail(reply, 500, 'internal error');
  });
}

type MacRequest = FastifyRequest<{ Params: { mac: string } }>;

function machineRoutes(scope: FastifyInstance, ctx: WebContext): void {
  const { db } = ctx.database;
  const onRequest = requireSession(ctx);

  scope.get('/machines', { onRequest, schema: MACHINES_DOC }, async () => {
    const records = await listMachineRecords(db);
    return records.map(machineWire);
  });

  scope.get<{ Params: { mac: string } }>(
    '/machines/:mac',
    { onRequest, schema: MACHINE_DOC },
    async (req, reply) => {
      const mac = macParam(req.params.mac, reply);
      if (mac === null) return reply;
      const record = await getMachineRecord(db, mac);
      if (!record) return detail(reply, 404, `no machine record for ${mac}`);
      return machineWire(record);
    },
  );

  const download = (what: 'lshw' | 'disks') => async (req: MacRequest, reply: FastifyReply) => {
    const mac = macParam(req.params.mac, reply);
    if (mac === null) return reply;
    const record = await getMachineRecord(db, mac);
    if (!record) return detail(reply, 404, `no machine record for ${mac}`);
    let text: string | null;
    if (what === 'lshw') {
      text = (await getLshw(db, mac))?.lshw ?? null;
      if (text === null) return detail(reply, 404, `no lshw hardware inventory for ${mac}`);
    } else {
      text = record.disks;
      if (text === null) return detail(reply, 404, `no disk inventory for ${mac}`);
    }
    return reply
      .type('application/json')
      .header(
        'content-disposition',
        `attachment; filename="${mac.replaceAll(':', '-')}-${what}.json"`,
      )
      .send(text);
  };
  scope.get<{ Params: { mac: string } }>(
    '/machines/:mac/lshw.json',
    { onRequest, schema: downloadDoc('lshw') },
    download('lshw'),
  );
  scope.get<{ Params: { mac: string } }>(
    '/machines/:mac/disks.json',
    { onRequest, schema: downloadDoc('disks') },
    download('disks'),
  );

  scope.put<{ Params: { mac: string }; Body: unknown }>(
    '/machines/:mac',
    { onRequest, bodyLimit: MACHINE_BODY_LIMIT, schema: PUT_DOC },
    async (req, reply) => {
      const mac = macParam(req.params.mac, reply);
      if (mac === null) return reply;
      const type = mediaType(req.headers['content-type']);
      if (type !== 'application/json') {
        return detail(
          reply,
          415,
          `content-type: expected application/json, got ${JSON.stringify(type || '(none)')}`,
        );
      }
      const parsed = parseMachineUpsert(req.body);
      if (!parsed.ok) return detail(reply, parsed.status, parsed.message);
      const written = await writeMachineBinding(
        ctx,
        mac,
        parsed.binding,
        clientIp(req, ctx.trustedProxy),
      );
      return machineWire(written.record);
    },
  );

  scope.delete<{ Params: { mac: string } }>(
    '/machines/:mac',
    { onRequest, schema: DELETE_DOC },
    async (req, reply) => {
      const mac = macParam(req.params.mac, reply);
      if (mac === null) return reply;
      const deleted = await deleteMachineRecord(ctx, mac, clientIp(req, ctx.trustedProxy));
      if (!deleted) return detail(reply, 404, `no machine record for ${mac}`);
      return reply.code(204).send();
    },
  );
}

/** What an operator's binding write did. */
export interface BindingWrite {
  /** The write created the record (it had none). */
  created: boolean;
  /** The record as stored afterwards. */
  record: MachineRecord;
}

/**
 * Stores an operator's binding for `mac` (already validated by parseMachineUpsert): creates the
 * record or replaces its binding with the §7.3 policy reset, replaces the labels and logs
 * `machine.created` / `machine.upserted` in one transaction, then tells live subscribers. Both
 * `PUT /machines/{mac}` and the UI's machine form write through here, so they cannot drift
 * apart. A failing write logs `machine.upsert.failed` and rethrows.
 */
export async function writeMachineBinding(
  ctx: WebContext,
  mac: string,
  binding: MachineBinding,
  ip: string | null,
): Promise<BindingWrite> {
  const { db } = ctx.database;
  const at = ctx.now();
  const written = await withFailureEvent(ctx, mac, 'machine.upsert.failed', ip, () =>
    db.transaction().execute(async (tx) => {
      let created = await createMachineWithBinding(tx, mac, binding, at);
      let reset = true;
      if (!created) {
        const before = await lockMachine(tx, mac);
        if (before) {
          const change = policyResetChange(before, binding);
          reset = change !== null;
          await updateMachineBinding(tx, mac, binding, change, at);
        } else {
          // Deleted between the two statements: create it after all.
          created = await createMachineWithBinding(tx, mac, binding, at);
        }
      }
      await replaceLabels(tx, mac, binding.labels);
      const event: NewEvent = {
        kind: created ? 'machine.created' : 'machine.upserted',
        summary: created
          ? `operator created machine ${mac} (${binding.boot_mode})`
          : `operator updated machine ${mac} (${binding.boot_mode})` +
            (reset ? ', boot cycle reset' : ''),
        subjectKind: 'machine',
        subjectId: mac,
        actor: 'operator',
        sourceIp: ip,
        details: created
          ? bindingDetails(binding)
          : { ...bindingDetails(binding), policy_reset: reset },
      };
      const id = await appendEvent(tx, event, at);
      const record = await getMachineRecord(tx, mac);
      return { created, event, id, record: record! };
    }),
  );
  ctx.bus.publish({ type: 'machine', mac, change: written.created ? 'created' : 'updated' });
  publishEvent(ctx, written.id, written.event);
  return { created: written.created, record: written.record };
}

/**
 * Deletes `mac`'s record with its labels and inventory, logs `machine.deleted` and tells live
 * subscribers (`DELETE /machines/{mac}` and the UI's delete form). False when there was no
 * record: nothing is logged then. A failing delete logs `machine.delete.failed` and rethrows.
 */
export async function deleteMachineRecord(
  ctx: WebContext,
  mac: string,
  ip: string | null,
): Promise<boolean> {
  const { db } = ctx.database;
  const at = ctx.now();
  const deleted = await withFailureEvent(ctx, mac, 'machine.delete.failed', ip, () =>
    db.transaction().execute(async (tx) => {
      const record = await getMachineRecord(tx, mac);
      if (!record || !(await deleteMachine(tx, mac))) return null;
      const r = record.row;
      const event: NewEvent = {
        kind: 'machine.deleted',
        summary: `operator deleted machine ${mac}`,
        subjectKind: 'machine',
        subjectId: mac,
        actor: 'operator',
        sourceIp: ip,
        details: bindingDetails({
          bty_image_ref: r.bty_image_ref,
          boot_mode: r.boot_mode,
          sanboot_drive: r.sanboot_drive,
          target_disk_serial: r.target_disk_serial,
          labels: record.labels,
        }),
      };
      return { event, id: await appendEvent(tx, event, at) };
    }),
  );
  if (deleted === null) return false;
  ctx.bus.publish({ type: 'machine', mac, change: 'deleted' });
  publishEvent(ctx, deleted.id, deleted.event);
  return true;
}

/** Tells live subscribers about a new audit event. */
export function publishEvent(ctx: WebContext, id: number, event: NewEvent): void {
  ctx.bus.publish({
    type: 'event',
    id,
    kind: event.kind,
    summary: event.summary,
    subject_id: event.subjectId ?? null,
  });
}

/**
 * Runs a write; when it throws, logs `<noun>.<verb>.failed` for the subject (best effort: the
 * database may be what failed) and rethrows, which the error handler answers with a 500.
 */
async function withFailureEvent<T>(
  ctx: WebContext,
  mac: string,
  kind: EventKind,
  ip: string | null,
  write: () => Promise<T>,
): Promise<T> {
  try {
    return await write();
  } catch (err) {
    const event: NewEvent = {
      kind,
      summary: `${kind.split('.')[1]} of machine ${mac} failed`,
      subjectKind: 'machine',
      subjectId: mac,
      actor: 'operator',
      sourceIp: ip,
      details: { error: err instanceof Error ? err.message : String(err) },
    };
    await appendEvent(ctx.database.db, event, ctx.now()).then(
      (id) => publishEvent(ctx, id, event),
      () => undefined,
    );
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// GET /config
// ---------------------------------------------------------------------------------------------

const CONFIG_DOC = protectedRoute({
  summary: 'Effective configuration',
  description: "The server's configuration with each key's source; secrets are redacted.",
  tags: ['config'],
  response: {
    200: {
      description: 'The configuration.',
      type: 'object',
      required: ['config', 'sources', 'files', 'warnings'],
      properties: {
        config: { type: 'object', description: 'Sections and keys, in TOML spelling.' },
        sources: {
          type: 'object',
          additionalProperties: { type: 'string' },
          description: '`section.key` → `default`, `toml:<file>`, `env:<VARIABLE>` or `cli`.',
        },
        files: { type: 'array', items: { type: 'string' }, description: 'The files read.' },
        warnings: { type: 'array', items: { type: 'string' } },
      },
    },
    ...errors({ 404: 'The server was started without a loaded configuration (tests, embedding).' }),
  },
});

/**
 * The effective configuration with each key's source, secrets redacted. A server built
 * without a loaded configuration (tests, embedding) has nothing true to show: 404 says so.
 */
function configRoute(scope: FastifyInstance, ctx: WebContext): void {
  scope.get(
    '/config',
    { onRequest: requireSession(ctx), schema: CONFIG_DOC },
    async (_req, reply) => {
      if (ctx.config === null) {
        return detail(reply, 404, 'config: this server was started without a loaded configuration');
      }
      return reply.type('application/json; charset=utf-8').send(renderConfigJson(ctx.config));
    },
  );
}

// ---------------------------------------------------------------------------------------------
// PUT /boot/{name}: artifact upload (§9.9, §4.4, §4.5)
// ---------------------------------------------------------------------------------------------

export const MAX_ARTIFACT_NAME_LENGTH = 255;

/** Why a name cannot be an artifact name, or null when it can. */
export function artifactNameProblem(name: string): string | null {
  if (name.length > MAX_ARTIFACT_NAME_LENGTH) {
    return `name: at most ${MAX_ARTIFACT_NAME_LENGTH} characters`;
  }
  if (!ARTIFACT_NAME.test(name)) {
    return (
      `name: ${JSON.stringify(name.slice(0, 300))} must be a bare file name: letters, digits, ` +
      `'.', '_', '+' or '-', not starting with '.' (no '/', '\\', '..' or NUL)`
    );
  }
  return null;
}

const UPLOAD_DOC = protectedRoute({
  summary: 'Upload a boot artifact',
  description:
    'Writes the body to the boot folder under this name (a temporary file, then a rename), replacing any file there.',
  tags: ['boot'],
  params: {
    type: 'object',
    required: ['name'],
    properties: {
      name: {
        type: 'string',
        maxLength: MAX_ARTIFACT_NAME_LENGTH,
        pattern: ARTIFACT_NAME.source,
        description: 'A bare file name (no separators, no leading dot).',
      },
    },
  },
  body: {
    content: {
      'application/octet-stream': {
        schema: {
          type: 'string',
          format: 'binary',
          description: 'No Content-Type is taken as this.',
        },
      },
    },
  },
  response: {
    ...Object.fromEntries(
      (
        [
          [200, 'Replaced an existing file.'],
          [201, 'Created.'],
        ] as const
      ).map(([status, description]) => [
        status,
        {
          description,
          type: 'object',
          required: ['name', 'size_bytes', 'path', 'sha256', 'replaced'],
          properties: {
            name: { type: 'string' },
            size_bytes: { type: 'integer' },
            path: { type: 'string', description: 'Where it is on the server.' },
            sha256: { type: 'string' },
            replaced: { type: 'boolean' },
          },
        },
      ]),
    ),
    ...errors({
      400: 'The name is not a bare file name; the message says why.',
      409: 'A directory has this name, or the file could not be replaced.',
      413: 'The body is larger than `[tuning] max_upload_bytes`.',
      415: 'The Content-Type is not application/octet-stream.',
      507: 'The disk is full.',
    }),
  },
});

class UploadTooLarge extends Error {}

/** The upload cap: `[tuning] max_upload_bytes`. */
export function artifactUploadLimit(ctx: WebContext): number {
  return (
    ctx.config?.config.tuning.max_upload_bytes ?? CONFIG_SCHEMA.tuning.max_upload_bytes.default
  );
}

/** Logs `netboot.artifacts.upload.failed` (best effort: the database may be what failed). */
export async function logArtifactUploadFailure(
  ctx: WebContext,
  sourceIp: string | null,
  name: string,
  error: string,
  received: number,
): Promise<void> {
  const event: NewEvent = {
    kind: 'netboot.artifacts.upload.failed',
    summary: `upload of ${name} failed: ${error}`,
    subjectKind: 'netboot',
    subjectId: name,
    actor: 'operator',
    sourceIp,
    details: { name, error, bytes_received: received },
  };
  const id = await appendEvent(ctx.database.db, event, ctx.now()).catch(() => null);
  if (id !== null) publishEvent(ctx, id, event);
}

/** Why the boot folder cannot take a file called `name` (a directory is there), or null. */
export async function artifactPathProblem(ctx: WebContext, name: string): Promise<string | null> {
  const existing = await lstat(join(ctx.bootDir, name)).catch(() => null);
  return existing?.isDirectory()
    ? `name: ${name} exists in the boot folder and is a directory`
    : null;
}

export interface StoredArtifact {
  name: string;
  size_bytes: number;
  path: string;
  sha256: string;
  replaced: boolean;
}

export type StoreArtifactResult =
  | { ok: true; artifact: StoredArtifact }
  /** Nothing was written; `too_large`: more than `limit` bytes came. */
  | { ok: false; reason: 'too_large'; limit: number }
  | { ok: false; reason: 'failed'; status: 409 | 500 | 507; message: string };

/**
 * Writes an upload to the boot folder atomically: the bytes go to a dot-named temporary file
 * next to it, which is renamed over `name` once complete (a machine never chains a half-written
 * kernel). `name` must have passed `artifactNameProblem`. Logs `netboot.artifacts.uploaded`, or
 * `….upload.failed` with the reason. The source is not destroyed on a refusal, so the caller can
 * still answer on its connection.
 */
export async function storeArtifact(
  ctx: WebContext,
  name: string,
  source: Readable,
  sourceIp: string | null,
): Promise<StoreArtifactResult> {
  const limit = artifactUploadLimit(ctx);
  await mkdir(ctx.bootDir, { recursive: true });
  const final = join(ctx.bootDir, name);
  // A dot name: never served by GET /boot/{name}, never mistaken for an artifact.
  const partial = join(ctx.bootDir, `.${name}.${randomBytes(6).toString('hex')}.partial`);
  const hash = createHash('sha256');
  let size = 0;
  // Opened before the copy starts: a stream that opens lazily could create the file after
  // a refusal had already removed it, leaving a partial behind.
  const out = await open(partial, 'wx', 0o644);
  try {
    await pipeline(
      source.iterator({ destroyOnReturn: false }),
      async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          size += chunk.length;
          if (size > limit) throw new UploadTooLarge();
          hash.update(chunk);
          yield chunk;
        }
      },
      out.createWriteStream(),
    );
  } catch (err) {
    await out.close().catch(() => {});
    await rm(partial, { force: true });
    if (err instanceof UploadTooLarge) {
      await logArtifactUploadFailure(
        ctx,
        sourceIp,
        name,
        `more than the ${limit}-byte upload limit`,
        size,
      );
      return { ok: false, reason: 'too_large', limit };
    }
    const why = err instanceof Error ? err.message : String(err);
    await logArtifactUploadFailure(ctx, sourceIp, name, why, size);
    const full = (err as { code?: string }).code === 'ENOSPC';
    return {
      ok: false,
      reason: 'failed',
      status: full ? 507 : 500,
      message: `upload of ${name} failed: ${why}`,
    };
  }
  const replaced = (await lstat(final).catch(() => null)) !== null;
  try {
    await rename(partial, final);
  } catch (err) {
    await rm(partial, { force: true });
    const why = err instanceof Error ? err.message : String(err);
    await logArtifactUploadFailure(ctx, sourceIp, name, why, size);
    return {
      ok: false,
      reason: 'failed',
      status: 409,
      message: `name: cannot replace ${name}: ${why}`,
    };
  }
  const sha256 = hash.digest('hex');
  const event: NewEvent = {
    kind: 'netboot.artifacts.uploaded',
    summary: `operator uploaded ${name} (${size} bytes)`,
    subjectKind: 'netboot',
    subjectId: name,
    actor: 'operator',
    sourceIp,
    details: { name, size_bytes: size, sha256, replaced },
  };
  const id = await appendEvent(ctx.database.db, event, ctx.now());
  publishEvent(ctx, id, event);
  return { ok: true, artifact: { name, size_bytes: size, path: final, sha256, replaced } };
}

type UploadRequest = FastifyRequest<{ Params: { name: string } }>;

function uploadRoute(scope: FastifyInstance, ctx: WebContext): void {
  // The body reaches the handler as the request stream itself.
  scope.addContentTypeParser('application/octet-stream', (_req, payload, done) => {
    done(null, payload);
  });
  const ipOf = (req: FastifyRequest) => clientIp(req, ctx.trustedProxy);
  const tooLarge = (reply: FastifyReply, limit: number) =>
    detail(
      reply.header('connection', 'close'),
      413,
      `body: larger than the ${limit}-byte upload limit`,
    );

  /** Refusals that need no body: checked before a byte of it is read. */
  const gate = async (req: UploadRequest, reply: FastifyReply): Promise<void> => {
    const name = req.params.name;
    const problem = artifactNameProblem(name);
    if (problem !== null) {
      await detail(reply, 400, problem);
      return;
    }
    const type = req.headers['content-type'];
    if (type === undefined) {
      // `curl -T file` sends no Content-Type: the bytes are the artifact all the same.
      req.headers['content-type'] = 'application/octet-stream';
    } else if (mediaType(type) !== 'application/octet-stream') {
      await detail(
        reply,
        415,
        `content-type: expected application/octet-stream, got ${JSON.stringify(mediaType(type))}`,
      );
      return;
    }
    const cap = artifactUploadLimit(ctx);
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > cap) {
      await logArtifactUploadFailure(
        ctx,
        ipOf(req),
        name,
        `${declared} bytes exceed the ${cap}-byte upload limit`,
        0,
      );
      await tooLarge(reply, cap);
      return;
    }
    const pathProblem = await artifactPathProblem(ctx, name);
    if (pathProblem !== null) await detail(reply, 409, pathProblem);
  };

  scope.put<{ Params: { name: string }; Body: unknown }>(
    '/boot/:name',
    { onRequest: [requireSession(ctx), gate], schema: UPLOAD_DOC },
    async (req, reply) => {
      // Not destroyed on a refusal: the 413 still has to go out on this connection.
      const source = req.body instanceof Readable ? req.body : Readable.from([]);
      const result = await storeArtifact(ctx, req.params.name, source, ipOf(req));
      if (result.ok) {
        return reply.code(result.artifact.replaced ? 200 : 201).send(result.artifact);
      }
      // A client that went away gets no answer; Fastify drops it on the closed socket.
      if (result.reason === 'too_large') return tooLarge(reply, result.limit);
      return detail(reply, result.status, result.message);
    },
  );
}
