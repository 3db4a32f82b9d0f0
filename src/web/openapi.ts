/**
 * bty-web's machine-readable API description: `GET /openapi.json`, an OpenAPI 3.1 document that
 * @fastify/swagger builds from the `schema` each route declares, plus the small building blocks
 * the route files share to declare it (the `{"detail": …}` error shape, the session
 * requirement, MAC parameters, non-JSON bodies).
 *
 * The schemas are documentation only. Every route checks its own input by hand and answers a
 * 4xx whose message names the field; Fastify must neither validate with these schemas (its
 * messages and statuses would replace ours) nor serialise with them (fast-json-stringify drops
 * the fields a schema does not list). `documentOnly` turns both off; buildApp calls it before
 * any route is added.
 */
import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifySchema } from 'fastify';
import { SESSION_COOKIE } from './session.ts';

/** A plain JSON Schema object (route schemas are written by hand, no schema builder). */
export type JsonSchema = Record<string, unknown>;

/** The name of the shared error schema, in `components.schemas`. */
export const DETAIL_ID = 'Detail';

export const DETAIL_SCHEMA: JsonSchema = {
  $id: DETAIL_ID,
  type: 'object',
  description: 'An error, as upstream bty-web answers them: a message that names the field.',
  required: ['detail'],
  properties: { detail: { type: 'string' } },
};

/** The security scheme's name: the signed session cookie `POST /ui/login` sets. */
export const COOKIE_AUTH = 'cookieAuth';

export const TAGS = [
  { name: 'pxe', description: 'What iPXE fetches: the bootstrap chain and the boot offer.' },
  { name: 'live-env', description: 'What the booted live environment (the bty agent) reports.' },
  { name: 'boot', description: 'Boot artifacts (kernels, initrds, iPXE binaries).' },
  { name: 'catalog', description: 'The image catalog: open listings and its management.' },
  {
    name: 'cache',
    description: 'The artifact cache: image bytes served to machines, downloads, eviction.',
  },
  { name: 'machines', description: 'Machine records and their bindings.' },
  { name: 'events', description: 'The audit log.' },
  { name: 'stream', description: 'Live updates over Server-Sent Events.' },
  { name: 'auth', description: 'The operator session.' },
  { name: 'config', description: 'The effective configuration.' },
  { name: 'metrics', description: 'Prometheus metrics.' },
  { name: 'meta', description: 'Health, version and this description.' },
] as const;

export type Tag = (typeof TAGS)[number]['name'];

/**
 * Turns Fastify's schema-driven validation and serialisation off for this app and every scope
 * under it (see the top of this file). Responses are then written with JSON.stringify, exactly
 * as for a route without a schema.
 */
export function documentOnly(app: FastifyInstance): void {
  app.setValidatorCompiler(() => () => true);
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
}

/** Registers the document generator; routes added after this are described. */
export async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  app.addSchema(DETAIL_SCHEMA);
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'bty-web',
        version,
        description:
          'The PXE control plane of bty: the open plane iPXE and the live environment use, ' +
          'and the operator API behind the `bty-token` session cookie. A guide: docs/http-api.md.',
      },
      tags: TAGS.map((t) => ({ ...t })),
      components: {
        securitySchemes: {
          [COOKIE_AUTH]: {
            type: 'apiKey',
            in: 'cookie',
            name: SESSION_COOKIE,
            description: 'Set by `POST /ui/login`; a week long, renewed as it is used.',
          },
        },
      },
    },
    // The shared schemas keep their own name in `components.schemas` (`Detail`).
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
  });
}

/** `GET /openapi.json`: the document itself, open. */
export function registerOpenApiRoute(app: FastifyInstance): void {
  app.get(
    '/openapi.json',
    {
      schema: {
        summary: 'This API description',
        description: 'The OpenAPI 3.1 document generated from the route schemas.',
        tags: ['meta'],
        response: { 200: { description: 'The OpenAPI document.', type: 'object' } },
      },
    },
    () => app.swagger(),
  );
}

// ---------------------------------------------------------------------------------------------
// Building blocks for the route schemas
// ---------------------------------------------------------------------------------------------

/** A route's documentation: what Fastify and @fastify/swagger read from `schema`. */
export type RouteDoc = FastifySchema & { summary: string; description: string; tags: Tag[] };

/** The requirement a protected route declares. */
export const SESSION_REQUIRED = [{ [COOKIE_AUTH]: [] }];

/** A response with the `{"detail": …}` body. */
export function detailResponse(description: string): JsonSchema {
  return { description, $ref: `${DETAIL_ID}#` };
}

/** Error responses by status code, each with the `{"detail": …}` body. */
export function errors(byStatus: Record<number, string>): Record<number, JsonSchema> {
  const out: Record<number, JsonSchema> = {};
  for (const [status, description] of Object.entries(byStatus)) {
    out[Number(status)] = detailResponse(description);
  }
  return out;
}

/**
 * A protected route's documentation: the session requirement and its 401, added to what the
 * route declares.
 */
export function protectedRoute(doc: RouteDoc): RouteDoc {
  return {
    ...doc,
    security: SESSION_REQUIRED,
    response: {
      ...(doc.response as Record<number, JsonSchema>),
      401: detailResponse('No valid session: `{"detail": "login required"}`.'),
    },
  };
}

/** A response without a body. */
export function noContent(description: string): JsonSchema {
  return { description, type: 'null' };
}

/** A response whose body is not JSON (a script, TOML, a file, a stream). */
export function textResponse(mediaType: string, description: string, format?: string): JsonSchema {
  return {
    description,
    content: { [mediaType]: { schema: { type: 'string', ...(format ? { format } : {}) } } },
  };
}

export const NULLABLE_STRING: JsonSchema = { type: ['string', 'null'] };

export const MAC_PARAM: JsonSchema = {
  type: 'object',
  required: ['mac'],
  properties: {
    mac: {
      type: 'string',
      description:
        'A MAC address: six two-digit hex parts separated by `:` or `-`, any case ' +
        '(stored lower-case with `:`). Anything else is a 400 `invalid MAC: …`.',
      examples: ['52:54:00:12:34:56', '52-54-00-12-34-56'],
    },
  },
};

/** The 400 every `{mac}` route answers for a malformed MAC. */
export const BAD_MAC = { 400: 'The MAC is malformed: `invalid MAC: …`.' };

/** The same, for a route that also reads a JSON body. */
export const BAD_MAC_OR_JSON = {
  400: 'The MAC is malformed (`invalid MAC: …`), or the body is not valid JSON.',
};
