/**
 * The browser UI (`/ui/*`): server-rendered pages over the same database and pure core as the
 * JSON API, htmx for partial updates and live refresh, plain HTML forms that work without
 * JavaScript. Each page registers its own routes; this file lists them.
 */
import multipart from '@fastify/multipart';
import type { FastifyInstance } from 'fastify';
import type { WebContext } from '../context.ts';
import { registerStaticAssets } from './assets.ts';
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
