/**
 * The browser UI (`/ui/*`): server-rendered pages over the same database and pure core as the
 * JSON API, htmx for partial updates and live refresh, plain HTML forms that work without
 * JavaScript. Each page registers its own routes; this file lists them.
 */
import multipart from '@fastify/multipart';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { WebContext } from '../context.ts';
import { registerStaticAssets } from './assets.ts';
import { frameOf } from './guard.ts';
import { sendPage } from './html.ts';
import { ErrorPage } from './layout.tsx';
import { registerUiLive } from './live.ts';
import { registerCatalogPage } from './pages/catalog.tsx';
import { registerDashboardPage } from './pages/dashboard.tsx';
import { registerEventsPage } from './pages/events.tsx';
import { registerLoginPages } from './pages/login.tsx';
import { registerMachinePage } from './pages/machine.tsx';
import { registerMachinesPage } from './pages/machines.tsx';
import { registerNetbootPage } from './pages/netboot.tsx';
import { registerSettingsPage } from './pages/settings.tsx';

/** The largest file a UI form may upload (boot artifacts: a live-environment squashfs). */
export const UI_UPLOAD_LIMIT = 4 * 1024 * 1024 * 1024;

export async function registerUi(app: FastifyInstance, ctx: WebContext): Promise<void> {
  registerStaticAssets(app);
  registerLoginPages(app, ctx);
  await app.register(async (scope) => {
    // multipart/form-data for the upload and import forms, only under /ui.
    await scope.register(multipart, { limits: { fileSize: UI_UPLOAD_LIMIT, files: 1 } });
    scope.setErrorHandler((err: FastifyError, req, reply) => uiError(ctx, err, req, reply));
    scope.addHook('onRequest', (req, _reply, done) => {
      dropForeignNotices(req);
      done();
    });
    registerUiLive(scope, ctx);
    registerDashboardPage(scope, ctx);
    registerMachinesPage(scope, ctx);
    registerMachinePage(scope, ctx);
    registerCatalogPage(scope, ctx);
    registerNetbootPage(scope, ctx);
    registerEventsPage(scope, ctx);
    registerSettingsPage(scope, ctx);
  });
}

/** The frame for an error page: the full layout with a session, the bare one without. */
function errorFrame(ctx: WebContext, req: FastifyRequest, reply: FastifyReply) {
  return ctx.sessions.authenticate(req, reply) ? frameOf(ctx, req, reply, 'dashboard') : null;
}

/**
 * A failure inside a UI route, as a page: a client error says what was wrong with the request;
 * anything else says it failed and was logged. Never a stack trace in the browser.
 */
export function uiError(
  ctx: WebContext,
  err: FastifyError,
  req: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  const status = typeof err.statusCode === 'number' && err.statusCode >= 400 ? err.statusCode : 500;
  if (status >= 500) {
    process.stderr.write(
      `bty-web: ${req.method} ${req.url.split('?')[0]} failed: ${err.stack ?? err.message}\n`,
    );
  }
  const message =
    status >= 500
      ? 'bty-web could not complete this request; the details are in its log. Try again, and ' +
        'if it keeps failing, check the server log.'
      : `The request was refused: ${err.message}`;
  return sendPage(
    reply,
    ErrorPage({
      frame: errorFrame(ctx, req, reply),
      title: status >= 500 ? 'Something failed' : 'Request refused',
      message,
    }),
    status,
  );
}

/** An unknown `/ui/...` path, as a page. */
export function uiNotFound(
  ctx: WebContext,
  req: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  return sendPage(
    reply,
    ErrorPage({
      frame: errorFrame(ctx, req, reply),
      title: 'Page not found',
      message: `There is no page at ${req.url.split('?')[0]!.slice(0, 200)}.`,
    }),
    404,
  );
}

/**
 * The query parameters that carry a result banner after a form post (`?error=…`, `?deleted=…`).
 * Their text is escaped, but a link from elsewhere could still make a console page show a
 * message of someone else's choosing ("session expired, log in at …").
 */
export const NOTICE_PARAMS = [
  'error',
  'saved',
  'deleted',
  'missing',
  'created',
  'added',
  'imported',
  'added_count',
  'updated_count',
  'uploaded',
  'machine',
  'ref',
  'cache',
] as const;

/**
 * Banners are shown only when the page was reached from the console itself: browsers label
 * every navigation with `Sec-Fetch-Site`, which is `same-origin` after our own redirect and
 * `cross-site`, `same-site` or `none` (typed, bookmarked, opened from a mail) otherwise. A client
 * that sends no such header (a script, an old browser) keeps them.
 */
export function dropForeignNotices(req: FastifyRequest): void {
  const site = req.headers['sec-fetch-site'];
  if (req.method !== 'GET' || site === undefined || site === 'same-origin') return;
  const query = req.query as Record<string, unknown> | null;
  if (typeof query !== 'object' || query === null) return;
  for (const name of NOTICE_PARAMS) delete query[name];
}
