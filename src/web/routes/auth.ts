/**
 * Operator login and the session guard the protected routes use. `POST /ui/login` takes a form
 * (`password`) as the browser UI posts it, or JSON; `POST /ui/logout` ends the session.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { clientIp, detail, type WebContext } from '../context.ts';
import { appendEvent } from '../db/events.ts';
import { errors, noContent, type RouteDoc } from '../openapi.ts';
import { csrfValid, issueCsrfToken } from '../ui/csrf.ts';
import { refuseForgery } from '../ui/guard.ts';
import { sendPage } from '../ui/html.ts';
import { LoginPage } from '../ui/pages/login.tsx';

const LOGIN_DOC: RouteDoc = {
  summary: 'Log in',
  description:
    'Checks the admin password and sets the `bty-token` session cookie (a form, as the browser ' +
    'posts it, or JSON).',
  tags: ['auth'],
  body: {
    content: {
      'application/json': {
        schema: {
          type: 'object',
          required: ['password'],
          properties: { password: { type: 'string' } },
        },
      },
      'application/x-www-form-urlencoded': {
        schema: {
          type: 'object',
          required: ['password'],
          properties: { password: { type: 'string' } },
        },
      },
    },
  },
  response: {
    204: noContent(
      'Logged in (a JSON body, or `Accept: application/json`); the cookie is in `Set-Cookie`.',
    ),
    303: noContent('Logged in from a form: `Location: /ui/dashboard`, cookie in `Set-Cookie`.'),
    ...errors({
      400: 'The JSON body does not parse.',
      401: 'Wrong password (a browser, whose `Accept` names `text/html`, gets the form again).',
      422: 'No `password` given: `password: required`.',
    }),
  },
};

const LOGOUT_DOC: RouteDoc = {
  summary: 'Log out',
  description:
    'Clears the session cookie and redirects to the login page. With a session, the form must ' +
    'carry its CSRF token (`_csrf`, or the `X-CSRF-Token` header).',
  tags: ['auth'],
  response: {
    303: noContent('Logged out: `Location: /ui/login`, the cookie cleared.'),
    403: { description: 'A session without the CSRF token: nothing done.' },
  },
};

/**
 * A preHandler for protected JSON routes: no valid session ⇒ 401 `{"detail":"login required"}`,
 * before any validation of the body or parameters (so probing reveals nothing).
 */
export function requireSession(ctx: WebContext) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!ctx.sessions.authenticate(req, reply)) {
      await detail(reply, 401, 'login required');
    }
  };
}

/** A browser navigation (its Accept names HTML), as opposed to a script. */
function acceptsHtml(req: FastifyRequest): boolean {
  return (req.headers.accept ?? '').includes('text/html');
}

export function registerAuthRoutes(app: FastifyInstance, ctx: WebContext): void {
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string' },
    (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    },
  );

  app.post<{ Body: unknown }>('/ui/login', { schema: LOGIN_DOC }, async (req, reply) => {
    const body = req.body as { password?: unknown } | null;
    const password = typeof body?.password === 'string' ? body.password : null;
    if (password === null) return detail(reply, 422, 'password: required');
    const ip = clientIp(req, ctx.trustedProxy);
    const audit = (kind: 'auth.login.succeeded' | 'auth.login.failed' | 'auth.logout') =>
      appendEvent(
        ctx.database.db,
        {
          kind,
          summary: `operator ${kind.slice('auth.'.length).replace('.', ' ')} from ${ip ?? 'unknown IP'}`,
          subjectKind: 'auth',
          subjectId: 'operator',
          actor: 'operator',
          sourceIp: ip,
        },
        ctx.now(),
      );
    if (!ctx.sessions.checkPassword(password)) {
      await audit('auth.login.failed');
      // A browser gets the form again with the error; scripts get upstream's JSON 401.
      if (acceptsHtml(req)) {
        return sendPage(
          reply,
          LoginPage({
            error: 'Invalid password.',
            defaultPassword: ctx.sessions.usingDefaultPassword,
          }),
          401,
        );
      }
      return detail(reply, 401, 'wrong password');
    }
    await audit('auth.login.succeeded');
    ctx.sessions.login(reply);
    // A fresh form token with every login: one planted or left from before does not carry over.
    issueCsrfToken(ctx.sessions, req, reply);
    const wantsJson = (req.headers.accept ?? '').includes('application/json');
    if (wantsJson || req.headers['content-type']?.includes('json')) return reply.code(204).send();
    return reply.code(303).header('location', '/ui/dashboard').send();
  });

  app.post('/ui/logout', { schema: LOGOUT_DOC }, async (req, reply) => {
    // Logged only when a session was open, as upstream does. With a session, the post must
    // carry the form's CSRF token: another site cannot end the operator's session.
    if (ctx.sessions.authenticate(req, reply)) {
      if (!csrfValid(ctx.sessions, req)) return refuseForgery(ctx, req, reply);
      const ip = clientIp(req, ctx.trustedProxy);
      await appendEvent(
        ctx.database.db,
        {
          kind: 'auth.logout',
          summary: `operator logout from ${ip ?? 'unknown IP'}`,
          subjectKind: 'auth',
          subjectId: 'operator',
          actor: 'operator',
          sourceIp: ip,
        },
        ctx.now(),
      );
    }
    ctx.sessions.logout(reply);
    return reply.code(303).header('location', '/ui/login').send();
  });
}
