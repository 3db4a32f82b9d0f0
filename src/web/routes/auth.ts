/**
 * Operator login and the session guard the protected routes use. `POST /ui/login` takes a form
 * (`password`) as the browser UI posts it, or JSON; `POST /ui/logout` ends the session.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { detail, type WebContext } from '../context.ts';

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

export function registerAuthRoutes(app: FastifyInstance, ctx: WebContext): void {
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string' },
    (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    },
  );

  app.post<{ Body: unknown }>('/ui/login', async (req, reply) => {
    const body = req.body as { password?: unknown } | null;
    const password = typeof body?.password === 'string' ? body.password : null;
    if (password === null) return detail(reply, 422, 'password: required');
    if (!ctx.sessions.checkPassword(password)) return detail(reply, 401, 'wrong password');
    ctx.sessions.login(reply);
    const wantsJson = (req.headers.accept ?? '').includes('application/json');
    if (wantsJson || req.headers['content-type']?.includes('json')) return reply.code(204).send();
    return reply.code(303).header('location', '/ui/dashboard').send();
  });

  app.post('/ui/logout', async (_req, reply) => {
    ctx.sessions.logout(reply);
    return reply.code(303).header('location', '/ui/login').send();
  });
}
