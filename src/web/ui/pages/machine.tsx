/** Placeholder: the machine page is being written. */
import type { FastifyInstance } from 'fastify';
import type { WebContext } from '../../context.ts';
import { frameOf, uiGuard } from '../guard.ts';
import { sendPage } from '../html.ts';
import { Layout } from '../layout.tsx';

export function registerMachinePage(app: FastifyInstance, ctx: WebContext): void {
  app.get('/ui/machines/:mac', { preHandler: uiGuard(ctx), schema: { hide: true } }, (req, reply) =>
    sendPage(reply, <Layout frame={frameOf(ctx, req, reply, 'machines')} title="Machine" />),
  );
}
