/** Placeholder: the settings page is being written. */
import type { FastifyInstance } from 'fastify';
import type { WebContext } from '../../context.ts';
import { frameOf, uiGuard } from '../guard.ts';
import { sendPage } from '../html.ts';
import { Layout } from '../layout.tsx';

export function registerSettingsPage(app: FastifyInstance, ctx: WebContext): void {
  app.get('/ui/settings', { preHandler: uiGuard(ctx), schema: { hide: true } }, (req, reply) =>
    sendPage(reply, <Layout frame={frameOf(ctx, req, reply, 'settings')} title="Settings" />),
  );
}
