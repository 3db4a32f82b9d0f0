/**
 * Netboot release fetches over JSON (upstream-web §9.14), session required (401 first, before
 * any validation): `GET /boot/releases` lists the jobs, `POST /boot/releases` `{"tag"}` starts
 * one (202; an existing queued, running or completed job of the tag is returned instead),
 * `DELETE /boot/releases/{tag}` cancels one. The work is done by the fetch manager
 * (`../netboot-fetch.ts`), which this file also stops when the server closes.
 *
 * `/boot/releases` is a fixed path, so it wins over `GET /boot/{name}`: a boot-folder file
 * called `releases` is not reachable (upstream has the same shadowing).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { clientIp, detail, type WebContext } from '../context.ts';
import {
  MAX_TAG_LENGTH,
  netbootFetchesOf,
  RELEASE_TAG,
  releaseTagProblem,
  stopNetbootFetches,
} from '../netboot-fetch.ts';
import { errors, NULLABLE_STRING, protectedRoute, type JsonSchema } from '../openapi.ts';
import { requireSession } from './auth.ts';

/** A JSON body is a few dozen bytes; this leaves room and no more. */
const BODY_LIMIT = 4096;

const STATUS: JsonSchema = {
  type: 'string',
  enum: ['queued', 'running', 'completed', 'failed', 'cancelled'],
};
const NULLABLE_COUNT: JsonSchema = { type: ['integer', 'null'] };

const ARTIFACT_STATE: JsonSchema = {
  type: 'object',
  required: ['name', 'status', 'bytes_done', 'bytes_total', 'error', 'started_at', 'finished_at'],
  properties: {
    name: { type: 'string' },
    status: STATUS,
    bytes_done: { type: 'integer' },
    bytes_total: { ...NULLABLE_COUNT, description: 'Null until the server has said.' },
    error: NULLABLE_STRING,
    started_at: NULLABLE_STRING,
    finished_at: NULLABLE_STRING,
  },
};

const RELEASE_STATE: JsonSchema = {
  type: 'object',
  required: [
    'tag',
    'status',
    'bytes_done',
    'bytes_total',
    'artifact',
    'requested_at',
    'started_at',
    'finished_at',
    'error',
    'base_url',
    'artifacts',
  ],
  properties: {
    tag: { type: 'string', description: '`latest` is stored as `v<version>`.' },
    status: STATUS,
    bytes_done: { type: 'integer', description: 'Across every file so far.' },
    bytes_total: {
      ...NULLABLE_COUNT,
      description: 'The sum of the file sizes known so far (each is known once it starts).',
    },
    artifact: { ...NULLABLE_STRING, description: 'The file being fetched (or that failed).' },
    requested_at: { type: 'string' },
    started_at: NULLABLE_STRING,
    finished_at: NULLABLE_STRING,
    error: NULLABLE_STRING,
    base_url: { ...NULLABLE_STRING, description: 'Where the files come from, once started.' },
    artifacts: {
      type: 'array',
      items: ARTIFACT_STATE,
      description: 'The manifest, then kernel, initrd and squashfs.',
    },
  },
};

const TAG_PARAM: JsonSchema = {
  type: 'object',
  required: ['tag'],
  properties: {
    tag: { type: 'string', maxLength: MAX_TAG_LENGTH, pattern: RELEASE_TAG.source },
  },
};

const LIST_DOC = protectedRoute({
  summary: 'Netboot release fetches',
  description:
    'Every fetch since the server started, newest first, plus the newest outcome per tag read back from the audit log.',
  tags: ['boot'],
  response: {
    200: {
      description: 'The fetches.',
      type: 'object',
      required: ['boot_root', 'max_parallel', 'fetches'],
      properties: {
        boot_root: { type: 'string', description: 'The boot folder files are installed into.' },
        max_parallel: { const: 1 },
        fetches: { type: 'array', items: RELEASE_STATE },
      },
    },
  },
});

const START_DOC = protectedRoute({
  summary: 'Fetch a netboot release',
  description:
    "Queues a fetch of this version's live-environment artifacts and manifest from the release `tag`: streamed with resume, verified against the manifest, installed atomically. A queued, running, or completed fetch of the tag (its files still in place) is returned instead of a new one. Always logs `netboot.artifacts.fetch.requested`.",
  tags: ['boot'],
  body: {
    content: {
      'application/json': {
        schema: {
          type: 'object',
          additionalProperties: false,
          properties: {
            tag: {
              type: 'string',
              minLength: 1,
              maxLength: MAX_TAG_LENGTH,
              pattern: RELEASE_TAG.source,
              default: 'latest',
              description: '`latest` means `v<version>` (the files carry the version).',
            },
          },
        },
      },
    },
  },
  response: {
    202: { ...RELEASE_STATE, description: 'The fetch (new, or the one already there).' },
    ...errors({
      400: 'The body is not JSON.',
      413: `The body is larger than ${BODY_LIMIT} bytes.`,
      415: 'The Content-Type is not application/json.',
      422: 'The body does not validate: an unknown field, or a malformed tag.',
      503: 'The server is shutting down.',
    }),
  },
});

const CANCEL_DOC = protectedRoute({
  summary: 'Cancel a netboot release fetch',
  description:
    'A queued fetch is cancelled at once, a running one as soon as its download notices (nothing is installed); a finished one is returned unchanged. Logs `netboot.artifacts.fetch.cancelled`.',
  tags: ['boot'],
  params: TAG_PARAM,
  response: {
    200: { ...RELEASE_STATE, description: 'The fetch after the request.' },
    ...errors({
      404: "No fetch for this tag: `no active release fetch for tag '<tag>'`.",
      422: 'The tag is malformed.',
    }),
  },
});

/** The tag of a `POST /boot/releases` body, or the reason it cannot be one (a 422). */
export function parseStartBody(body: unknown): { tag: string } | { problem: string } {
  if (body === undefined || body === null) return { tag: 'latest' };
  if (typeof body !== 'object' || Array.isArray(body)) {
    return { problem: 'body: must be a JSON object like {"tag": "v1.2.3"}' };
  }
  const extra = Object.keys(body).filter((k) => k !== 'tag');
  if (extra.length > 0) return { problem: `body: unknown field ${JSON.stringify(extra[0])}` };
  const tag = (body as { tag?: unknown }).tag;
  if (tag === undefined) return { tag: 'latest' };
  if (typeof tag !== 'string') return { problem: 'tag: must be a string' };
  const problem = releaseTagProblem(tag);
  return problem === null ? { tag } : { problem };
}

export function registerReleaseRoutes(app: FastifyInstance, ctx: WebContext): void {
  // A running download is aborted and cleaned up before the database closes.
  app.addHook('onClose', async () => {
    await stopNetbootFetches(ctx);
  });
  // An encapsulated scope: the lenient JSON parser below applies to these routes only.
  void app.register((scope, _options, done) => {
    releaseRoutes(scope, ctx);
    done();
  });
}

function releaseRoutes(scope: FastifyInstance, ctx: WebContext): void {
  const onRequest = requireSession(ctx);
  const ipOf = (req: FastifyRequest) => clientIp(req, ctx.trustedProxy);

  // An empty body is "no body" (the default tag); invalid JSON is a 400 naming the body.
  scope.removeContentTypeParser('application/json');
  scope.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string;
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      done(Object.assign(new Error(`body: invalid JSON (${why})`), { statusCode: 400 }));
    }
  });
  scope.setErrorHandler((err, req, reply) => {
    const e = err as { code?: string; statusCode?: number; message?: string };
    if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return detail(reply, 413, `body: larger than the ${BODY_LIMIT}-byte limit`);
    }
    if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return detail(
        reply,
        415,
        `content-type: ${JSON.stringify(req.headers['content-type'] ?? '')} is not accepted here`,
      );
    }
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
      return detail(reply, e.statusCode, e.message ?? 'bad request');
    }
    return detail(reply, 500, 'internal error');
  });

  scope.get('/boot/releases', { onRequest, schema: LIST_DOC }, async () => ({
    boot_root: ctx.bootDir,
    max_parallel: 1,
    fetches: await netbootFetchesOf(ctx).list(),
  }));

  scope.post<{ Body: unknown }>(
    '/boot/releases',
    { onRequest, bodyLimit: BODY_LIMIT, schema: START_DOC },
    async (req, reply) => {
      const parsed = parseStartBody(req.body);
      if ('problem' in parsed) return detail(reply, 422, parsed.problem);
      try {
        const { state } = await netbootFetchesOf(ctx).request(parsed.tag, ipOf(req));
        return reply.code(202).send(state);
      } catch (err) {
        return detail(reply, 503, err instanceof Error ? err.message : String(err));
      }
    },
  );

  scope.delete<{ Params: { tag: string } }>(
    '/boot/releases/:tag',
    { onRequest, schema: CANCEL_DOC },
    async (req, reply: FastifyReply) => {
      const tag = req.params.tag;
      const problem = releaseTagProblem(tag);
      if (problem !== null) return detail(reply, 422, problem);
      const state = await netbootFetchesOf(ctx).cancel(tag, ipOf(req));
      if (state === null) return detail(reply, 404, `no active release fetch for tag '${tag}'`);
      return state;
    },
  );
}
