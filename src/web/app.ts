/**
 * bty-web's HTTP application: Fastify with thin routes over the pure core. A route validates,
 * loads, calls the decision or renderer, stores, and answers; it decides nothing itself.
 * Each group of routes lives in its own file under `routes/`.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { isBtyError } from '../core/errors.ts';
import { LiveBus } from './bus.ts';
import { detail, type WebContext } from './context.ts';
import { metricsOf } from './metrics.ts';
import { documentOnly, registerOpenApi, registerOpenApiRoute } from './openapi.ts';
import { registerAuthRoutes } from './routes/auth.ts';
import { registerBootRoutes } from './routes/boot.ts';
import { registerCatalogRoutes } from './routes/catalog.ts';
import { registerCacheRoutes } from './routes/cache.ts';
import { closeArtifacts } from './artifacts.ts';
import { registerLiveRoutes } from './routes/live.ts';
import { registerMachineRoutes } from './routes/machines.ts';
import { registerPxeRoutes } from './routes/pxe.ts';
import { registerReleaseRoutes } from './routes/releases.ts';
import { registerStreamRoutes } from './routes/stream.ts';
import { createSessions } from './session.ts';
import { registerUi, uiNotFound } from './ui/index.ts';

type Defaulted = 'now' | 'sessions' | 'trustedProxy' | 'config' | 'bus';
export type AppOptions = Omit<WebContext, Defaulted> & Partial<Pick<WebContext, Defaulted>>;

/** Route groups, in registration order. Each adds its routes and nothing else. */
const ROUTES: Array<(app: FastifyInstance, ctx: WebContext) => void> = [
  registerAuthRoutes,
  registerPxeRoutes,
  registerBootRoutes,
  registerReleaseRoutes,
  registerLiveRoutes,
  registerCatalogRoutes,
  registerCacheRoutes,
  registerMachineRoutes,
  registerStreamRoutes,
];

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const ctx: WebContext = {
    ...options,
    now: options.now ?? (() => new Date()),
    trustedProxy: options.trustedProxy ?? '',
    sessions: options.sessions ?? createSessions('bty-test-secret', ''),
    config: options.config ?? null,
    bus: options.bus ?? new LiveBus(),
  };
  const app = Fastify({
    logger: false,
    bodyLimit: 1 << 20,
    exposeHeadRoutes: false,
    // Long artifact names reach the route (and its own 400) instead of the router's 414.
    routerOptions: { maxParamLength: 300 },
  });

  // Route schemas document the API (GET /openapi.json) and nothing else: the routes validate
  // their input by hand with messages naming the field, and answer with JSON.stringify. Set
  // before any route so every scope inherits it.
  documentOnly(app);
  await registerOpenApi(app, ctx.version);

  app.setErrorHandler((err, _req, reply) => {
    if (isBtyError(err)) return detail(reply, err.httpStatus, err.message);
    const e = err as { statusCode?: number; message?: string; validation?: unknown };
    if (e.validation !== undefined) return detail(reply, 422, e.message ?? 'invalid request');
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
      return detail(reply, e.statusCode, e.message ?? 'bad request');
    }
    return detail(reply, 500, 'internal error');
  });
  app.setNotFoundHandler((req, reply) =>
    // A browser that mistyped a console address gets a page, scripts get JSON.
    req.url.startsWith('/ui/') && (req.headers.accept ?? '').includes('text/html')
      ? uiNotFound(ctx, req, reply)
      : detail(reply, 404, `no route for ${req.method} ${req.url.split('?')[0]}`),
  );

  // Request counts by route pattern and status for GET /metrics.
  app.addHook('onResponse', metricsOf(ctx).onResponse);
  // Closing the bus ends every open SSE stream, which would otherwise hold app.close() open.
  app.addHook('preClose', (done) => {
    ctx.bus.close();
    done();
  });
  // Before the server waits for its connections: running fills are cancelled (their partial
  // files removed) and image downloads cut, which would otherwise hold close() for as long as a
  // download takes.
  app.addHook('preClose', async () => {
    await closeArtifacts(ctx);
  });

  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness',
        description: 'Answers as long as the server runs; it does not touch the database.',
        tags: ['meta'],
        response: {
          200: {
            description: 'Running.',
            type: 'object',
            required: ['status'],
            properties: { status: { const: 'ok' } },
          },
        },
      },
    },
    () => ({ status: 'ok' }),
  );
  app.get(
    '/version',
    {
      schema: {
        summary: 'Server version',
        description: "bty-web's own version.",
        tags: ['meta'],
        response: {
          200: {
            description: 'The version.',
            type: 'object',
            required: ['version'],
            properties: { version: { type: 'string' } },
          },
        },
      },
    },
    () => ({ version: ctx.version }),
  );
  registerOpenApiRoute(app);
  for (const register of ROUTES) register(app, ctx);
  await registerUi(app, ctx);
  await app.ready();
  return app;
}
