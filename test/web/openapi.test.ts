/**
 * `GET /openapi.json`: the document @fastify/swagger generates from the route schemas, checked
 * against the routes the running app really has (from `printRoutes`) and against how each route
 * really answers without a session. Also: the schemas only document, they never validate a
 * request nor reshape a response.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/web/app.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { documentOnly, TAGS } from '../../src/web/openapi.ts';

const VERSION = '7.8.9';
const MAC = '52:54:00:0a:0b:0c';

let dir: string;
let database: BtyDatabase;
let app: FastifyInstance;
let base: string;
let doc: OpenApiDoc;

interface Operation {
  summary?: string;
  description?: string;
  tags?: string[];
  security?: Array<Record<string, string[]>>;
  parameters?: Array<{ in: string; name: string; required?: boolean }>;
  responses?: Record<string, { description?: string }>;
}

interface OpenApiDoc {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, Operation>>;
  tags: Array<{ name: string }>;
  components: {
    securitySchemes: Record<string, { type: string; in: string; name: string }>;
    schemas: Record<string, unknown>;
  };
}

interface Route {
  method: string;
  /** Fastify's spelling: `/pxe/:mac`. */
  path: string;
}

/**
 * The app's routes from `printRoutes({ commonPrefix: false })`: a tree whose lines are
 * `<indent>├── <segment> (<METHODS>)`, each indent level four characters wide.
 */
function registeredRoutes(instance: FastifyInstance): Route[] {
  const routes: Route[] = [];
  const segments: string[] = [];
  for (const line of instance.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^((?:│ {3}| {4})*)[├└]── (.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    segments.length = m[1]!.length / 4;
    segments.push(m[2]!);
    for (const method of m[3]?.split(', ') ?? []) {
      routes.push({ method, path: segments.join('') });
    }
  }
  return routes;
}

/**
 * The browser console's routes (docs/ui.md): HTML pages, their form posts and fragments, the
 * live stream and the static files. They are not part of the JSON API and are left out of its
 * document, except the login and logout posts, which scripts use too.
 */
function isBrowserUi(route: Route): boolean {
  // printRoutes shows `/static/*` as `/*` (find-my-way leaves the wildcard's prefix out).
  if (['/', '/ui', '/*'].includes(route.path) || route.path.startsWith('/static/')) return true;
  if (route.method === 'POST' && (route.path === '/ui/login' || route.path === '/ui/logout')) {
    return false;
  }
  return route.path.startsWith('/ui/');
}

/** The JSON API's routes: every registered route but the browser console's. */
/**
 * The API's wildcard routes. printRoutes cannot show a wildcard's prefix (it prints `/*`, like the
 * UI's `/static/*`), so they are named here; the document check below still fails if either is
 * missing from the document or no longer registered (`hasRoute`).
 */
const API_WILDCARDS: Route[] = [
  { method: 'GET', path: '/b/*' },
  { method: 'HEAD', path: '/b/*' },
];

function apiRoutes(instance: FastifyInstance): Route[] {
  for (const r of API_WILDCARDS) {
    if (!instance.hasRoute({ method: r.method, url: r.path })) {
      throw new Error(`${r.method} ${r.path} is not registered`);
    }
  }
  return [...registeredRoutes(instance).filter((r) => !isBrowserUi(r)), ...API_WILDCARDS];
}

/** Fastify's `:name` as `{name}`, and a trailing wildcard (`/b/*`) as @fastify/swagger writes it. */
const openApiPath = (path: string) =>
  path.replace(/:([A-Za-z_]+)/g, '{$1}').replace(/\/\*$/, '/{*}');

/** A concrete URL for a route pattern. */
function concrete(path: string): string {
  const values: Record<string, string> = {
    mac: MAC,
    ref: '0'.repeat(64),
    name: 'no-such-artifact',
    id: '1',
  };
  return path.replace(/:([A-Za-z_]+)/g, (_m, name: string) => encodeURIComponent(values[name]!));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-web-openapi-'));
  database = await openDatabase({ sqlitePath: join(dir, 'state.db') });
  await migrate(database);
  app = await buildApp({
    database,
    version: VERSION,
    artifactVersion: '1.2.3',
    bootDir: join(dir, 'boot'),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  const res = await fetch(`${base}/openapi.json`);
  doc = (await res.json()) as OpenApiDoc;
});

afterAll(async () => {
  await app?.close();
  await database?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('GET /openapi.json', () => {
  it('is served without a session, as JSON', async () => {
    const res = await fetch(`${base}/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.headers.get('set-cookie')).toBeNull();
  });

  it('has the shape of an OpenAPI 3 document', () => {
    expect(doc.openapi).toMatch(/^3\.\d+\.\d+$/);
    expect(doc.info).toMatchObject({ title: 'bty-web', version: VERSION });
    expect(typeof doc.paths).toBe('object');
    expect(doc.components.securitySchemes.cookieAuth).toEqual(
      expect.objectContaining({ type: 'apiKey', in: 'cookie', name: 'bty-token' }),
    );
    expect(doc.components.schemas.Detail).toEqual(
      expect.objectContaining({
        type: 'object',
        required: ['detail'],
        properties: { detail: { type: 'string' } },
      }),
    );
    expect(doc.tags.map((t) => t.name)).toEqual(TAGS.map((t) => t.name));
  });

  it('lists every registered route, and nothing else', () => {
    const routes = apiRoutes(app);
    // The parse found the tree (a broken parse would make the checks below vacuous).
    expect(registeredRoutes(app)).toContainEqual({ method: 'GET', path: '/ui/machines/:mac' });
    expect(routes).toContainEqual({ method: 'GET', path: '/pxe/:mac/plan' });
    expect(routes).toContainEqual({ method: 'HEAD', path: '/boot/:name' });
    expect(routes).toContainEqual({ method: 'GET', path: '/catalog.toml' });
    expect(routes.length).toBeGreaterThan(30);

    const documented = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`),
    );
    const registered = routes.map((r) => `${r.method} ${openApiPath(r.path)}`);
    expect([...documented].sort()).toEqual([...registered].sort());
  });

  it('gives every operation a summary, a description, known tags and described responses', () => {
    const tags = new Set(TAGS.map((t) => t.name) as string[]);
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const where = `${method.toUpperCase()} ${path}`;
        expect(op.summary, where).toMatch(/\S/);
        expect(op.description, where).toMatch(/\S/);
        expect(op.tags?.length, where).toBeGreaterThan(0);
        for (const tag of op.tags ?? []) expect(tags.has(tag), `${where}: tag ${tag}`).toBe(true);
        const responses = Object.entries(op.responses ?? {});
        expect(responses.length, where).toBeGreaterThan(0);
        for (const [status, response] of responses) {
          expect(status, where).toMatch(/^[1-5]\d\d$/);
          expect(response.description, `${where} ${status}`).toMatch(/\S/);
          // The generator's placeholder means a route without a response schema.
          expect(response.description, `${where} ${status}`).not.toBe('Default Response');
        }
        // Every `{param}` of the path is declared as a required path parameter.
        for (const [, name] of path.matchAll(/\{([^}]+)\}/g)) {
          const param = op.parameters?.find((p) => p.in === 'path' && p.name === name);
          expect(param?.required, `${where}: path parameter ${name}`).toBe(true);
        }
      }
    }
  });

  it('resolves every $ref to a component', () => {
    const refs: string[] = [];
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (typeof node === 'object' && node !== null) {
        for (const [key, value] of Object.entries(node)) {
          if (key === '$ref' && typeof value === 'string') refs.push(value);
          else walk(value);
        }
      }
    };
    walk(doc);
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of refs) {
      const m = /^#\/components\/schemas\/(.+)$/.exec(ref);
      expect(m, ref).not.toBeNull();
      expect(doc.components.schemas[m![1]!], ref).toBeDefined();
    }
  });

  it('marks exactly the routes that answer 401 without a session as needing one', async () => {
    let protectedCount = 0;
    for (const route of apiRoutes(app)) {
      const where = `${route.method} ${route.path}`;
      const res = await fetch(`${base}${concrete(route.path)}`, {
        method: route.method,
        redirect: 'manual',
      });
      const text = await res.text();
      const guarded = res.status === 401 && text === JSON.stringify({ detail: 'login required' });
      const op = doc.paths[openApiPath(route.path)]![route.method.toLowerCase()]!;
      if (guarded) {
        protectedCount++;
        expect(op.security, where).toEqual([{ cookieAuth: [] }]);
        expect(op.responses?.['401'], where).toBeDefined();
      } else {
        expect(op.security, where).toBeUndefined();
      }
    }
    // The operator API: machines (6), catalog (6), events (2), streams (2), config, upload,
    // release fetches (3), the artifact cache (4).
    expect(protectedCount).toBe(25);
  });
});

describe('the schemas only document', () => {
  it('leaves input checks to the routes (their own status and message)', async () => {
    // The body breaks the documented schema (`status` must be done|failed, no extra keys).
    const res = await fetch(`${base}/pxe/${MAC}/status`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ status: 'maybe' }),
    });
    expect(res.status).toBe(422);
    expect(await res.json()).toEqual({ detail: 'status: must be "done" or "failed"' });
  });

  it('neither validates nor reshapes with a schema (documentOnly)', async () => {
    const probe = Fastify({ logger: false });
    documentOnly(probe);
    probe.post(
      '/probe',
      {
        schema: {
          body: {
            type: 'object',
            required: ['n'],
            additionalProperties: false,
            properties: { n: { type: 'integer' } },
          },
          querystring: { type: 'object', properties: { q: { type: 'integer' } } },
          response: {
            200: {
              type: 'object',
              additionalProperties: false,
              properties: { n: { type: 'integer' } },
            },
          },
        },
      },
      (req) => ({ n: 'not a number', extra: true, got: req.body, q: req.query }),
    );
    try {
      const res = await probe.inject({
        method: 'POST',
        url: '/probe?q=7',
        payload: { other: 'x' },
      });
      expect(res.statusCode).toBe(200);
      // No 400 from the body schema, no coercion of `q`, nothing dropped from the answer.
      expect(res.json()).toEqual({
        n: 'not a number',
        extra: true,
        got: { other: 'x' },
        q: { q: '7' },
      });
    } finally {
      await probe.close();
    }
  });
});
