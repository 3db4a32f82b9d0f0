/**
 * The image catalog bty-web serves and manages.
 *
 * Open (a booting machine and `bty --catalog` have no session): `GET /images` (the JSON listing,
 * upstream-web §9.6) and `GET /catalog.toml` (catalog TOML v1, §9.7).
 *
 * Protected (operator session): `GET /catalog`, `GET|DELETE /catalog/entries/{ref}`,
 * `POST /catalog/entries` (one entry as JSON) and `POST /catalog/import` (a catalog TOML as the
 * body, or `{"url": …}` naming one). Entries are keyed by ref = sha256 of the canonical src, so
 * a binding survives re-imports; names are unique too (see db/catalog.ts).
 */
import { isAbsolute } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import '../../oras/index.ts'; // plugs oras:// into the catalog loader
import { parseCatalog, type Catalog, type CatalogEntry } from '../../catalog/schema.ts';
import { fetchCatalogBytes, REMOTE_CATALOG_MAX_BYTES, urlScheme } from '../../catalog/load.ts';
import { isBtyError } from '../../core/errors.ts';
import {
  IMAGE_FORMATS,
  basenameOf,
  detectArch,
  detectFormat,
  isImageFormat,
} from '../../core/formats.ts';
import { parseOrasRef } from '../../core/oras-ref.ts';
import { reprString } from '../../core/python-repr.ts';
import { canonicalSrc, firstIndexOf, imageRefForSrc } from '../../core/refs.ts';
import { clientIp, detail, type WebContext } from '../context.ts';
import { withcacheBase, withcacheCatalogToml } from '../withcache.ts';
import { serveUrl } from '../../cache/url.ts';
import { artifactsOf, cacheStateOf } from '../artifacts.ts';
import {
  addCatalogEntry,
  getCatalogEntry,
  listCatalogEntries,
  mergeCatalogEntries,
  removeCatalogEntry,
  type CatalogEntryFields,
  type MergePlan,
  type RemoveResult,
  type StoredCatalogEntry,
} from '../db/catalog.ts';
import { appendEvent, type NewEvent } from '../db/events.ts';
import {
  NULLABLE_STRING,
  errors,
  noContent,
  protectedRoute,
  textResponse,
  type JsonSchema,
  type RouteDoc,
} from '../openapi.ts';
import { requireSession } from './auth.ts';

export const TOML_TYPE = 'application/toml';
export const MAX_SRC_LENGTH = 2048;
export const MAX_NAME_LENGTH = 255;
export const MAX_DESCRIPTION_LENGTH = 2000;
/** What `POST /catalog/entries` accepts; anything else is a 422 naming the key. */
const ENTRY_KEYS = ['src', 'name', 'sha256', 'format', 'size_bytes', 'description', 'arch'];

/** True when `text` has a C0 control character or DEL (`layout`: tab, LF and CR allowed). */
function hasControl(text: string, layout = false): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x7f || (c < 0x20 && !(layout && (c === 0x09 || c === 0x0a || c === 0x0d)))) {
      return true;
    }
  }
  return false;
}
const ARCH = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
/** A catalog's declared format is not limited to what bty can write, but it is a plain token. */
const FORMAT_TOKEN = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$/;
const REF = /^[0-9a-f]{64}$/;

// ---------------------------------------------------------------------------------------------
// Validation of one entry (a JSON body, or an entry of an imported catalog)
// ---------------------------------------------------------------------------------------------

/** Thrown by the validators; the route answers 422 with the message. */
class FieldError extends Error {}

export interface EntryInput {
  src: unknown;
  name?: unknown;
  sha256?: unknown;
  format?: unknown;
  size_bytes?: unknown;
  description?: unknown;
  arch?: unknown;
}

/** Optional fields count as absent when null or empty, like a catalog's falsy values. */
function absent(value: unknown): value is undefined | null | '' {
  return value === undefined || value === null || value === '';
}

/**
 * The src rules: an http(s):// or oras:// URL without blanks or control characters, that has a
 * canonical form (so a ref). `file://` is refused: a path on this server means nothing to the
 * machine that flashes. Returns the ref.
 */
function checkSrc(src: unknown, where: string): { src: string; ref: string } {
  const field = `${where}src`;
  if (typeof src !== 'string' || src === '') throw new FieldError(`${field}: required, a URL`);
  if (src.length > MAX_SRC_LENGTH) {
    throw new FieldError(`${field}: at most ${MAX_SRC_LENGTH} characters`);
  }
  if (/\s/.test(src) || hasControl(src)) {
    throw new FieldError(`${field}: must not contain blanks or control characters`);
  }
  if (!/^(https?|oras):\/\//i.test(src)) {
    throw new FieldError(
      `${field}: must be an http://, https:// or oras:// URL, got ${reprString(src.slice(0, 80))}` +
        ' (a file:// path means nothing to the machine that flashes)',
    );
  }
  try {
    return { src, ref: imageRefForSrc(src) };
  } catch (err) {
    if (isBtyError(err)) throw new FieldError(`${field}: ${err.message}`);
    throw err;
  }
}

/**
 * The file name a src points at: the last path segment of an http(s) URL (percent-decoded when
 * that is valid), or `<repo>:<tag>` / `<repo>@<digest>` for an oras:// reference.
 */
export function srcFileName(src: string): string {
  if (src.toLowerCase().startsWith('oras://')) {
    const ref = parseOrasRef(canonicalSrc(src));
    const repo = basenameOf(ref.repository);
    return ref.digest !== null ? `${repo}@${ref.digest}` : `${repo}:${ref.tag ?? ''}`;
  }
  const afterScheme = src.slice(src.indexOf('://') + 3);
  const rest = afterScheme.slice(firstIndexOf(afterScheme, ['/', '?', '#']));
  const path = rest.slice(0, firstIndexOf(rest, ['?', '#']));
  const last =
    path
      .split('/')
      .filter((s) => s !== '')
      .pop() ?? '';
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}

function checkName(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new FieldError(`${field}: must be a string`);
  const name = value.trim();
  if (name === '' || name.length > MAX_NAME_LENGTH || hasControl(name)) {
    throw new FieldError(
      `${field}: must be 1-${MAX_NAME_LENGTH} characters without control characters`,
    );
  }
  return name;
}

/**
 * One entry as stored. `strictFormat`: a format given in a JSON entry must be one bty can write
 * (a typo there is the usual mistake); an imported catalog keeps the catalog rule (any format,
 * warned about by the tools that read it).
 */
export function validateEntry(
  input: EntryInput,
  where: string,
  strictFormat: boolean,
): CatalogEntryFields {
  const { src, ref } = checkSrc(input.src, where);
  const file = srcFileName(src);

  let name: string;
  if (absent(input.name)) {
    if (file.trim() === '') {
      throw new FieldError(
        `${where}name: cannot be derived from src (its path has no file name); give one`,
      );
    }
    name = checkName(file, `${where}name (derived from src)`);
  } else {
    name = checkName(input.name, `${where}name`);
  }

  let sha256: string | null = null;
  if (!absent(input.sha256)) {
    const raw = input.sha256;
    const text =
      typeof raw === 'string'
        ? raw
            .trim()
            .toLowerCase()
            .replace(/^sha256:/, '')
        : '';
    if (!/^[0-9a-f]{64}$/.test(text)) {
      throw new FieldError(`${where}sha256: must be 64 hexadecimal characters`);
    }
    sha256 = text;
  }

  let format: string | null;
  if (absent(input.format)) {
    format = detectFormat(name) ?? detectFormat(file);
  } else if (strictFormat) {
    if (typeof input.format !== 'string' || !isImageFormat(input.format)) {
      throw new FieldError(`${where}format: must be one of ${IMAGE_FORMATS.join(', ')}`);
    }
    format = input.format;
  } else {
    if (typeof input.format !== 'string' || !FORMAT_TOKEN.test(input.format)) {
      throw new FieldError(
        `${where}format: must be a short token (letters, digits, . _ + -), got ` +
          (typeof input.format === 'string'
            ? reprString(input.format.slice(0, 40))
            : typeof input.format),
      );
    }
    format = input.format;
  }

  let size: number | null = null;
  if (input.size_bytes !== undefined && input.size_bytes !== null) {
    const v = input.size_bytes;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      throw new FieldError(`${where}size_bytes: must be a non-negative integer`);
    }
    size = v;
  }

  let description: string | null = null;
  if (!absent(input.description)) {
    const v = input.description;
    if (typeof v !== 'string' || v.length > MAX_DESCRIPTION_LENGTH || hasControl(v, true)) {
      throw new FieldError(
        `${where}description: must be text of at most ${MAX_DESCRIPTION_LENGTH} characters ` +
          '(no control characters but tab and newline)',
      );
    }
    description = v;
  }

  let arch: string | null;
  if (absent(input.arch)) {
    arch = detectArch(name) ?? detectArch(file);
  } else {
    if (typeof input.arch !== 'string' || !ARCH.test(input.arch)) {
      throw new FieldError(
        `${where}arch: must be 1-32 letters, digits, '.', '_' or '-' (e.g. x86_64, arm64)`,
      );
    }
    arch = input.arch;
  }

  return { ref, name, src, sha256, format, size_bytes: size, description, arch };
}

export function fromCatalogEntry(entry: CatalogEntry): CatalogEntryFields {
  return validateEntry(entry, `catalog entry ${reprString(entry.name)}: `, false);
}

// ---------------------------------------------------------------------------------------------
// Rendering (the open listings)
// ---------------------------------------------------------------------------------------------

/** `/images` row (upstream-web §9.6). */
export interface ImageListing {
  name: string;
  format: string;
  size_bytes: number;
  url: string;
  ref: string;
  sha_short: string | null;
  arch: string | null;
}

function archOf(entry: StoredCatalogEntry): string | null {
  return entry.arch || detectArch(entry.name) || detectArch(srcFileNameOrEmpty(entry.src));
}

function srcFileNameOrEmpty(src: string): string {
  try {
    return srcFileName(src);
  } catch {
    return '';
  }
}

export function imageListing(entry: StoredCatalogEntry): ImageListing {
  return {
    name: entry.name,
    format: entry.format ?? '',
    size_bytes: entry.size_bytes ?? 0,
    url: entry.src,
    ref: entry.ref,
    sha_short: entry.sha256 ? entry.sha256.slice(0, 12) : null,
    arch: archOf(entry),
  };
}

const TOML_ESCAPES: Readonly<Record<string, string>> = {
  '"': '\\"',
  '\\': '\\\\',
  '\b': '\\b',
  '\t': '\\t',
  '\n': '\\n',
  '\f': '\\f',
  '\r': '\\r',
};

/**
 * A TOML basic string. Upstream escapes only `\` and `"`, so a control character in a name made
 * its catalog unreadable; every control character is escaped here.
 */
export function tomlString(text: string): string {
  let body = '';
  for (const c of text) {
    const code = c.charCodeAt(0);
    if (TOML_ESCAPES[c] !== undefined) body += TOML_ESCAPES[c];
    else if (code < 0x20 || code === 0x7f) body += `\\u${code.toString(16).padStart(4, '0')}`;
    else body += c;
  }
  return `"${body}"`;
}

/**
 * `/catalog.toml` (upstream-web §9.7): the entries with a sha256 (the live env verifies what it
 * writes), each with its origin src, or its withcache serve URL when one is configured. `description` is added to upstream's keys: the schema
 * defines it and the wizard shows it.
 */
export function renderCatalogToml(entries: readonly StoredCatalogEntry[], withcache = ''): string {
  const lines = ['version = 1', ''];
  for (const entry of entries) {
    if (!entry.sha256 || entry.src.toLowerCase().startsWith('file://')) continue;
    // With a withcache, every source is its serve URL (upstream-web §9.7), so the wizard
    // fetches through it too.
    const src = withcache ? serveUrl(withcache, entry.src) : entry.src;
    lines.push(
      '[[images]]',
      `name = ${tomlString(entry.name)}`,
      `src = ${tomlString(src)}`,
      `sha256 = ${tomlString(entry.sha256)}`,
    );
    if (entry.format) lines.push(`format = ${tomlString(entry.format)}`);
    if (entry.size_bytes !== null) lines.push(`size_bytes = ${entry.size_bytes}`);
    const arch = archOf(entry);
    if (arch) lines.push(`arch = ${tomlString(arch)}`);
    if (entry.description) lines.push(`description = ${tomlString(entry.description)}`);
    lines.push('');
  }
  return `${lines.join('\n').trimEnd()}\n`;
}

// ---------------------------------------------------------------------------------------------
// The routes' documentation (GET /openapi.json); the validators above are what they apply
// ---------------------------------------------------------------------------------------------

const REF_SCHEMA: JsonSchema = {
  type: 'string',
  pattern: REF.source,
  description: 'sha256 (hex) of the canonical src: the key a machine binding names.',
};

const STORED_ENTRY: JsonSchema = {
  type: 'object',
  description: 'A stored catalog entry.',
  required: ['ref', 'name', 'src', 'sha256', 'format', 'size_bytes', 'description', 'arch'],
  properties: {
    ref: REF_SCHEMA,
    name: { type: 'string' },
    src: { type: 'string', description: 'The image URL (http, https or oras).' },
    sha256: NULLABLE_STRING,
    format: NULLABLE_STRING,
    size_bytes: { type: ['integer', 'null'] },
    description: NULLABLE_STRING,
    arch: NULLABLE_STRING,
    created_at: { type: 'string' },
    updated_at: { type: 'string' },
  },
};

const ENTRY_BODY: JsonSchema = {
  type: 'object',
  required: ['src'],
  additionalProperties: false,
  properties: {
    src: {
      type: 'string',
      maxLength: MAX_SRC_LENGTH,
      description: 'An http://, https:// or oras:// URL (file:// is refused).',
    },
    name: {
      type: ['string', 'null'],
      maxLength: MAX_NAME_LENGTH,
      description: "Unique; derived from the src's file name when absent.",
    },
    sha256: { type: ['string', 'null'], description: '64 hex digits, `sha256:` prefix allowed.' },
    format: {
      type: ['string', 'null'],
      enum: [...IMAGE_FORMATS, null],
      description: 'Derived from the name when absent.',
    },
    size_bytes: { type: ['integer', 'null'], minimum: 0 },
    description: { type: ['string', 'null'], maxLength: MAX_DESCRIPTION_LENGTH },
    arch: {
      type: ['string', 'null'],
      pattern: ARCH.source,
      description: 'Derived from the name when absent (x86_64, arm64, …).',
    },
  },
};

const REF_PARAM: JsonSchema = {
  type: 'object',
  required: ['ref'],
  properties: { ref: { ...REF_SCHEMA, description: 'The entry ref (any case).' } },
};

const BAD_REF = { 400: 'The ref is not 64 hexadecimal characters: `invalid ref: …`.' };

const IMAGES_DOC: RouteDoc = {
  summary: 'Image listing',
  description: 'Every catalog entry in the short form the live environment and tools list.',
  tags: ['catalog'],
  response: {
    200: {
      description: 'The entries, by name.',
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'format', 'size_bytes', 'url', 'ref', 'sha_short', 'arch'],
        properties: {
          name: { type: 'string' },
          format: { type: 'string', description: 'Empty when unknown.' },
          size_bytes: { type: 'integer', description: '0 when unknown.' },
          url: { type: 'string' },
          ref: REF_SCHEMA,
          sha_short: { ...NULLABLE_STRING, description: 'The first 12 digits of sha256.' },
          arch: NULLABLE_STRING,
          cache: {
            type: 'object',
            description:
              "The artifact cache's copy (ours: upstream has no such key): `cached`, `queued`, `running` (with bytes so far), `failed`, `cancelled` or `absent`.",
            properties: {
              state: { enum: ['cached', 'queued', 'running', 'failed', 'cancelled', 'absent'] },
              size: { type: ['integer', 'null'] },
              digest: NULLABLE_STRING,
              bytes_done: { type: 'integer' },
              bytes_total: { type: ['integer', 'null'] },
            },
          },
        },
      },
    },
  },
};

const CATALOG_TOML_DOC: RouteDoc = {
  summary: 'Catalog as TOML',
  description:
    'The catalog in catalog TOML v1 (the entries with a sha256), as `bty --catalog` and the wizard read it.',
  tags: ['catalog'],
  response: { 200: textResponse(TOML_TYPE, 'A catalog TOML v1 document.') },
};

const CATALOG_DOC = protectedRoute({
  summary: 'Catalog entries',
  description: 'Every stored entry, with its timestamps.',
  tags: ['catalog'],
  response: {
    200: {
      description: 'The entries, by name.',
      type: 'object',
      required: ['entries'],
      properties: { entries: { type: 'array', items: STORED_ENTRY } },
    },
  },
});

const ENTRY_DOC = protectedRoute({
  summary: 'One catalog entry',
  description: 'The stored entry with this ref.',
  tags: ['catalog'],
  params: REF_PARAM,
  response: {
    200: { ...STORED_ENTRY, description: 'The entry.' },
    ...errors({ ...BAD_REF, 404: 'No entry with this ref.' }),
  },
});

const ADD_ENTRY_DOC = protectedRoute({
  summary: 'Add a catalog entry',
  description:
    'Adds one entry from JSON; name, format and arch are derived from the src when absent.',
  tags: ['catalog'],
  body: { content: { 'application/json': { schema: ENTRY_BODY } } },
  response: {
    201: { ...STORED_ENTRY, description: 'Added; `Location: /catalog/entries/{ref}`.' },
    ...errors({
      400: 'The body is not valid JSON.',
      409: 'The src (same ref) or the name is already in the catalog.',
      415: 'The Content-Type is not application/json.',
      422: 'The body does not validate; the message names the field.',
    }),
  },
});

const DELETE_ENTRY_DOC = protectedRoute({
  summary: 'Remove a catalog entry',
  description: 'Removes the entry; machines bound to its ref keep the binding (and are counted).',
  tags: ['catalog'],
  params: REF_PARAM,
  response: {
    204: noContent('Removed.'),
    ...errors({ ...BAD_REF, 404: 'No entry with this ref.' }),
  },
});

const IMPORT_DOC = protectedRoute({
  summary: 'Import a catalog',
  description:
    'Merges a catalog TOML (the body, or fetched from `{"url": …}`) into the catalog: new refs added, known refs updated.',
  tags: ['catalog'],
  body: {
    content: {
      'application/toml': { schema: { type: 'string', description: 'A catalog TOML v1.' } },
      'text/plain': { schema: { type: 'string', description: 'A catalog TOML v1.' } },
      'application/json': {
        schema: {
          type: 'object',
          required: ['url'],
          additionalProperties: false,
          properties: {
            url: {
              type: 'string',
              maxLength: MAX_SRC_LENGTH,
              description:
                'Where the catalog is: http(s)://, oras://, file:// or an absolute path on the server.',
            },
          },
        },
      },
    },
  },
  response: {
    200: {
      description: 'Imported.',
      type: 'object',
      required: ['source', 'added', 'updated', 'unchanged', 'entries'],
      properties: {
        source: { type: 'string', description: 'The URL, or `request body`.' },
        added: { type: 'integer' },
        updated: { type: 'integer' },
        unchanged: { type: 'integer' },
        entries: { type: 'array', items: STORED_ENTRY, description: 'The imported entries.' },
      },
    },
    ...errors({
      400: 'The JSON body does not parse.',
      409: 'An imported name would name two entries.',
      413: 'The body is larger than the catalog limit.',
      415: 'The Content-Type is none of application/toml, text/plain, application/json.',
      422: 'The catalog or the url does not validate; the message names the entry and field.',
      502: 'The catalog could not be fetched.',
    }),
  },
});

const WITHCACHE_IMPORT_DOC = protectedRoute({
  summary: "Import withcache's catalog",
  description:
    'Merges the entries the configured withcache (`[withcache] url`) holds bytes for (its `GET /catalog`) into the catalog, with their origin src.',
  tags: ['catalog'],
  response: {
    200: (IMPORT_DOC.response as Record<number, JsonSchema>)[200]!,
    ...errors({
      409: 'No withcache is configured, or an imported name would name two entries.',
      422: 'The listing is not a withcache catalog, or an entry does not validate.',
      502: "withcache's catalog could not be fetched.",
    }),
  },
});
// ---------------------------------------------------------------------------------------------
// The operations (the JSON routes below and the browser UI's forms apply the same rules)
// ---------------------------------------------------------------------------------------------

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function mediaType(req: FastifyRequest): string {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
}

const short = (ref: string) => ref.slice(0, 12);

/** A status for a catalog that could not be fetched: the operator's mistakes are 422. */
function fetchFailureStatus(err: unknown): number {
  if (!isBtyError(err)) return 502;
  const status = err.httpStatus;
  return status === 400 || status === 404 ? 422 : status;
}

function clip(text: string, max = 300): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** A refusal: the HTTP status the JSON API answers and the message (it names the field). */
export interface CatalogRefusal {
  ok: false;
  status: number;
  message: string;
}

/** Tells live subscribers about an audit event written inside a catalog transaction. */
function publish(ctx: WebContext, id: number | null, event: NewEvent): void {
  if (id === null) return;
  ctx.bus.publish({
    type: 'event',
    id,
    kind: event.kind,
    summary: event.summary,
    subject_id: event.subjectId ?? null,
  });
}

/** Appends an audit event outside any other write and tells live subscribers. */
async function log(ctx: WebContext, event: NewEvent): Promise<void> {
  publish(ctx, await appendEvent(ctx.database.db, event, ctx.now()), event);
}

const operator = (sourceIp: string | null) =>
  ({ subjectKind: 'catalog', actor: 'operator', sourceIp }) as const;

/**
 * Validates and adds one entry (`strictFormat` as for a JSON entry). A validation failure is a
 * 422, unlogged; a ref or name already in the catalog is a 409, logged as
 * `catalog.entry.add.failed`; an added entry is logged as `catalog.entry.added`.
 */
export async function addEntry(
  ctx: WebContext,
  input: EntryInput,
  sourceIp: string | null,
): Promise<{ ok: true; entry: StoredCatalogEntry } | CatalogRefusal> {
  let fields: CatalogEntryFields;
  try {
    fields = validateEntry(input, '', true);
  } catch (err) {
    if (err instanceof FieldError) return { ok: false, status: 422, message: err.message };
    throw err;
  }
  const who = operator(sourceIp);
  const addedEvent = (entry: StoredCatalogEntry): NewEvent => ({
    ...who,
    kind: 'catalog.entry.added',
    subjectId: entry.ref,
    summary: `catalog entry ${entry.name} added (${short(entry.ref)})`,
    details: {
      ref: entry.ref,
      name: entry.name,
      src: entry.src,
      sha256: entry.sha256,
      format: entry.format,
      size_bytes: entry.size_bytes,
      arch: entry.arch,
    },
  });
  const result = await addCatalogEntry(ctx.database.db, fields, ctx.now(), addedEvent);
  if (result.outcome === 'added') {
    publish(ctx, result.eventId, addedEvent(result.entry));
    return { ok: true, entry: result.entry };
  }
  const existing = result.existing;
  const message =
    result.outcome === 'ref_exists'
      ? `src: the catalog already has this source as ${reprString(existing.name)} ` +
        `(ref ${existing.ref}); delete it first to replace it`
      : `name: ${reprString(fields.name)} is already used by the entry with ref ${existing.ref}`;
  await log(ctx, {
    ...who,
    kind: 'catalog.entry.add.failed',
    subjectId: fields.ref,
    summary: clip(`catalog entry ${fields.name} not added: ${message}`),
    details: { ref: fields.ref, name: fields.name, src: fields.src, error: message },
  });
  return { ok: false, status: 409, message };
}

/** Removes one entry (logged as `catalog.entry.removed`); null when there is none. */
export async function removeEntry(
  ctx: WebContext,
  ref: string,
  sourceIp: string | null,
): Promise<RemoveResult | null> {
  const who = operator(sourceIp);
  const removedEvent = ({ entry, boundMachines }: RemoveResult): NewEvent => ({
    ...who,
    kind: 'catalog.entry.removed',
    subjectId: ref,
    summary:
      `catalog entry ${entry.name} removed (${short(ref)})` +
      (boundMachines > 0 ? `; ${boundMachines} machine(s) still bound to it` : ''),
    details: { ref, name: entry.name, src: entry.src, bound_machines: boundMachines },
  });
  const result = await removeCatalogEntry(ctx.database.db, ref, ctx.now(), removedEvent);
  if (result) publish(ctx, result.eventId, removedEvent(result));
  return result;
}

/**
 * Why `url` cannot name a catalog to import, or null when it can: these are refused before
 * anything is fetched (and not logged).
 */
export function importUrlProblem(url: unknown): string | null {
  if (typeof url !== 'string' || url.trim() === '') {
    return 'url: required, the catalog URL or an absolute path';
  }
  if (url.length > MAX_SRC_LENGTH || hasControl(url)) {
    return `url: at most ${MAX_SRC_LENGTH} characters without control characters`;
  }
  if (urlScheme(url) === '' && !isAbsolute(url)) {
    return `url: a local catalog must be an absolute path (the server has no useful working folder), got ${reprString(url.slice(0, 80))}`;
  }
  return null;
}

/**
 * Where an imported catalog comes from: a URL (fetched; `convert` turns another listing, such as
 * withcache's JSON, into catalog text) or its text (`source` names it).
 */
export type ImportOrigin =
  | { url: string; convert?: (body: string, source: string) => string }
  | { text: string | Uint8Array; source: string };

export interface ImportSummary {
  source: string;
  added: number;
  updated: number;
  unchanged: number;
  entries: Array<StoredCatalogEntry | CatalogEntryFields>;
}

/**
 * Fetches (for a URL that passed `importUrlProblem`), parses and merges a catalog, all entries
 * or none. Every refusal is logged as `catalog.import.failed`; a merge as `catalog.imported`.
 */
export async function importCatalog(
  ctx: WebContext,
  origin: ImportOrigin,
  sourceIp: string | null,
): Promise<{ ok: true; summary: ImportSummary } | CatalogRefusal> {
  const who = operator(sourceIp);
  const source = 'url' in origin ? origin.url : origin.source;
  const failed = async (status: number, message: string): Promise<CatalogRefusal> => {
    await log(ctx, {
      ...who,
      kind: 'catalog.import.failed',
      subjectId: null,
      summary: clip(`catalog import from ${source} failed: ${message}`),
      details: { source, error: message },
    });
    return { ok: false, status, message };
  };

  let text: string | Uint8Array;
  if ('url' in origin) {
    try {
      text = await fetchCatalogBytes(origin.url);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      return failed(fetchFailureStatus(err), `url: ${message}`);
    }
    if (origin.convert) {
      try {
        text = origin.convert(Buffer.from(text).toString('utf8'), origin.url);
      } catch (err) {
        return failed(422, err instanceof Error ? err.message : String(err));
      }
    }
  } else {
    text = origin.text;
  }
  let catalog: Catalog;
  try {
    catalog = parseCatalog(text, source);
  } catch (err) {
    return failed(422, err instanceof Error ? err.message : String(err));
  }

  let incoming: CatalogEntryFields[];
  try {
    incoming = catalog.entries.map(fromCatalogEntry);
  } catch (err) {
    if (err instanceof FieldError) return failed(422, err.message);
    throw err;
  }
  const importedEvent = (plan: Extract<MergePlan, { ok: true }>): NewEvent => {
    const counts = {
      added: plan.added.length,
      updated: plan.updated.length,
      unchanged: plan.unchanged.length,
    };
    return {
      ...who,
      kind: 'catalog.imported',
      subjectId: null,
      summary: clip(
        `catalog imported from ${source}: ${counts.added} added, ${counts.updated} updated, ` +
          `${counts.unchanged} unchanged`,
      ),
      details: { source, entries: incoming.length, ...counts },
    };
  };
  const db = ctx.database.db;
  const result = await mergeCatalogEntries(db, incoming, ctx.now(), importedEvent);
  if (!result.ok) {
    if (result.reason === 'duplicate_ref') {
      const [a, b] = result.names;
      return failed(
        422,
        `catalog entries ${reprString(a)} and ${reprString(b)} have the same src ` +
          `(ref ${result.ref}): keep one`,
      );
    }
    const [mine, theirs] = result.refs;
    return failed(
      409,
      `name: ${reprString(result.name)} would name two entries (refs ${short(mine)} and ` +
        `${short(theirs)}); rename one, or delete the stored one first`,
    );
  }
  publish(ctx, result.eventId, importedEvent(result.plan));
  const stored = new Map((await listCatalogEntries(db)).map((e) => [e.ref, e]));
  return {
    ok: true,
    summary: {
      source,
      added: result.plan.added.length,
      updated: result.plan.updated.length,
      unchanged: result.plan.unchanged.length,
      entries: incoming.map((e) => stored.get(e.ref) ?? { ...e }),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The routes
// ---------------------------------------------------------------------------------------------

export function registerCatalogRoutes(app: FastifyInstance, ctx: WebContext): void {
  // An encapsulated scope: the TOML body parser below applies to these routes only.
  void app.register((scope, _options, done) => {
    registerInScope(scope, ctx);
    done();
  });
}

function registerInScope(app: FastifyInstance, ctx: WebContext): void {
  const { db } = ctx.database;
  const guard = requireSession(ctx);

  app.addContentTypeParser(TOML_TYPE, { parseAs: 'string' }, (_req, body, done) => {
    done(null, body);
  });

  const ipOf = (req: FastifyRequest) => clientIp(req, ctx.trustedProxy);

  /** The `{ref}` path parameter, lower-cased, or null after answering 400. */
  const refParam = (raw: string, reply: FastifyReply): string | null => {
    const ref = raw.toLowerCase();
    if (REF.test(ref)) return ref;
    void detail(
      reply,
      400,
      `invalid ref: ${reprString(raw.slice(0, 80))} (expected 64 hexadecimal characters)`,
    );
    return null;
  };

  // -- open ---------------------------------------------------------------------------------

  app.get('/images', { schema: IMAGES_DOC }, async () => {
    const cache = artifactsOf(ctx);
    return (await listCatalogEntries(db)).map((entry) => {
      const state = cacheStateOf(cache, entry.src);
      return {
        ...imageListing(entry),
        cache: {
          state: state.state,
          size: state.size,
          digest: state.digest,
          bytes_done: state.bytes_done,
          bytes_total: state.bytes_total,
        },
      };
    });
  });

  app.get('/catalog.toml', { schema: CATALOG_TOML_DOC }, async (_req, reply) =>
    reply
      .type(TOML_TYPE)
      .send(renderCatalogToml(await listCatalogEntries(db), artifactsOf(ctx).withcacheBase)),
  );

  // -- protected ----------------------------------------------------------------------------

  app.get('/catalog', { onRequest: guard, schema: CATALOG_DOC }, async () => ({
    entries: await listCatalogEntries(db),
  }));

  app.get<{ Params: { ref: string } }>(
    '/catalog/entries/:ref',
    { onRequest: guard, schema: ENTRY_DOC },
    async (req, reply) => {
      const ref = refParam(req.params.ref, reply);
      if (ref === null) return reply;
      const entry = await getCatalogEntry(db, ref);
      if (!entry) return detail(reply, 404, `no catalog entry with ref ${ref}`);
      return entry;
    },
  );

  app.post<{ Body: unknown }>(
    '/catalog/entries',
    { onRequest: guard, schema: ADD_ENTRY_DOC },
    async (req, reply) => {
      if (mediaType(req) !== 'application/json') {
        return detail(reply, 415, 'content-type: must be application/json');
      }
      const body = req.body;
      if (!isObject(body)) {
        return detail(reply, 422, 'body: must be a JSON object {"src": …, "name"?: …, …}');
      }
      const extra = Object.keys(body).filter((k) => !ENTRY_KEYS.includes(k));
      if (extra.length > 0) return detail(reply, 422, `unknown field(s): ${extra.join(', ')}`);
      const result = await addEntry(ctx, body as unknown as EntryInput, ipOf(req));
      if (!result.ok) return detail(reply, result.status, result.message);
      return reply
        .code(201)
        .header('location', `/catalog/entries/${result.entry.ref}`)
        .send(result.entry);
    },
  );

  app.delete<{ Params: { ref: string } }>(
    '/catalog/entries/:ref',
    { onRequest: guard, schema: DELETE_ENTRY_DOC },
    async (req, reply) => {
      const ref = refParam(req.params.ref, reply);
      if (ref === null) return reply;
      const result = await removeEntry(ctx, ref, ipOf(req));
      if (!result) return detail(reply, 404, `no catalog entry with ref ${ref}`);
      return reply.code(204).send();
    },
  );

  app.post<{ Body: unknown }>(
    '/catalog/import',
    // A catalog is at most 4 MiB wherever it comes from; JSON and TOML framing fit in the slack.
    { onRequest: guard, bodyLimit: REMOTE_CATALOG_MAX_BYTES + 64 * 1024, schema: IMPORT_DOC },
    async (req, reply) => {
      const type = mediaType(req);
      let origin: ImportOrigin;
      if (type === 'application/json') {
        const body = req.body;
        if (!isObject(body)) return detail(reply, 422, 'body: must be a JSON object {"url": …}');
        const extra = Object.keys(body).filter((k) => k !== 'url');
        if (extra.length > 0) return detail(reply, 422, `unknown field(s): ${extra.join(', ')}`);
        const problem = importUrlProblem(body.url);
        if (problem !== null) return detail(reply, 422, problem);
        origin = { url: body.url as string };
      } else if (type === TOML_TYPE || type === 'text/plain') {
        origin = { text: typeof req.body === 'string' ? req.body : '', source: 'request body' };
      } else {
        return detail(
          reply,
          415,
          'content-type: must be application/toml or text/plain (a catalog), ' +
            'or application/json ({"url": …})',
        );
      }
      const result = await importCatalog(ctx, origin, ipOf(req));
      if (!result.ok) return detail(reply, result.status, result.message);
      return reply.code(200).send(result.summary);
    },
  );

  app.post(
    '/catalog/import/withcache',
    { onRequest: guard, schema: WITHCACHE_IMPORT_DOC },
    async (req, reply) => {
      const result = await importFromWithcache(ctx, ipOf(req));
      if (!result.ok) return detail(reply, result.status, result.message);
      return reply.code(200).send(result.summary);
    },
  );
}

/**
 * Imports the entries an external withcache holds bytes for (its `GET /catalog`), as any
 * catalog import: all or none, logged. 409 when no withcache is configured.
 */
export async function importFromWithcache(
  ctx: WebContext,
  sourceIp: string | null,
): Promise<{ ok: true; summary: ImportSummary } | CatalogRefusal> {
  const base = withcacheBase(ctx.config?.config.withcache.url ?? '');
  if (base === '') {
    return {
      ok: false,
      status: 409,
      message: 'no withcache is configured: set [withcache] url or BTY_WITHCACHE_URL',
    };
  }
  return importCatalog(ctx, { url: `${base}/catalog`, convert: withcacheCatalogToml }, sourceIp);
}
