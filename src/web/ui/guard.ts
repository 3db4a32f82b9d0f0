/**
 * The browser UI's gate: every `/ui/*` page needs a session (without one: 303 to the login
 * page, as upstream), and every form post needs the CSRF token (without it: 403, nothing done).
 * `frameOf` gathers what the shared layout shows around each page.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { WebContext } from '../context.ts';
import { csrfToken, csrfValid } from './csrf.ts';
import { seeOther, sendPage } from './html.ts';
import { ErrorPage } from './layout.tsx';

/** The navigation sections; each page names the one it belongs to. */
export type Section =
  'dashboard' | 'machines' | 'catalog' | 'netboot' | 'events' | 'settings' | 'account';

/** What the layout needs on every page. */
export interface Frame {
  section: Section;
  csrf: string;
  version: string;
  /** The admin password is still the well-known default: every page warns. */
  defaultPassword: boolean;
  now: Date;
}

export function frameOf(
  ctx: WebContext,
  req: FastifyRequest,
  reply: FastifyReply,
  section: Section,
): Frame {
  return {
    section,
    csrf: csrfToken(ctx.sessions, req, reply),
    version: ctx.version,
    defaultPassword: ctx.sessions.usingDefaultPassword,
    now: ctx.now(),
  };
}

/** preHandler for UI pages and their form posts. */
export function uiGuard(ctx: WebContext) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!ctx.sessions.authenticate(req, reply)) {
      // An htmx fragment request would swap the login page into a table cell: tell htmx to
      // go to the login page instead.
      if (req.headers['hx-request'] === 'true') {
        await reply.code(401).header('hx-redirect', '/ui/login').send();
        return;
      }
      await seeOther(reply, '/ui/login');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD' && !csrfValid(ctx.sessions, req)) {
      await refuseForgery(ctx, req, reply);
    }
  };
}

/** 403 for a post without a valid token: the page says what to do, nothing was changed. */
export function refuseForgery(
  ctx: WebContext,
  req: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  return sendPage(
    reply,
    ErrorPage({
      frame: frameOf(ctx, req, reply, 'dashboard'),
      title: 'Form refused',
      message:
        'This form did not carry a valid security token, so nothing was changed. It may come ' +
        'from another site, or from a page opened before your browser cleared its cookies. ' +
        'Reload the page and submit it again.',
    }),
    403,
  );
}
