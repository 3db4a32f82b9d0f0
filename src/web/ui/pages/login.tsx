/**
 * The login page (`GET /ui/login`) and the account page (`GET /ui/account`). The posts
 * (`POST /ui/login`, `POST /ui/logout`) live with the session guard in routes/auth.ts, which
 * renders `LoginPage` again for a browser that typed the wrong password.
 */
import type { FastifyInstance } from 'fastify';
import type { WebContext } from '../../context.ts';
import { SESSION_MAX_AGE_S } from '../../session.ts';
import { frameOf, uiGuard } from '../guard.ts';
import { seeOther, sendPage } from '../html.ts';
import { BareLayout, DefaultPasswordBanner, Layout } from '../layout.tsx';

export function LoginPage({
  error,
  defaultPassword,
}: {
  error?: string;
  defaultPassword: boolean;
}) {
  return (
    <BareLayout title="Log in">
      <div class="row justify-content-center">
        <div class="col-sm-10 col-md-6 col-lg-4">
          <h1 class="h3 mb-3">
            <i class="bi bi-device-hdd me-2" aria-hidden="true"></i>bty
          </h1>
          {defaultPassword ? <DefaultPasswordBanner /> : null}
          {error ? (
            <div class="alert alert-danger" role="alert" id="login-error">
              {error}
            </div>
          ) : null}
          <form method="post" action="/ui/login" class="card card-body">
            <label for="password" class="form-label">
              Admin password
            </label>
            <input
              type="password"
              id="password"
              name="password"
              class={`form-control${error ? ' is-invalid' : ''}`}
              autocomplete="current-password"
              required
              autofocus
            />
            <div class="form-text mb-3">
              Set with <code>BTY_ADMIN_PASSWORD</code> or <code>[admin] password</code> in bty.toml.
            </div>
            <button type="submit" class="btn btn-primary">
              Log in
            </button>
          </form>
        </div>
      </div>
    </BareLayout>
  );
}

export function registerLoginPages(app: FastifyInstance, ctx: WebContext): void {
  app.get('/', { schema: { hide: true } }, (req, reply) =>
    seeOther(reply, ctx.sessions.authenticate(req, reply) ? '/ui/dashboard' : '/ui/login'),
  );
  app.get('/ui', { schema: { hide: true } }, (_req, reply) => seeOther(reply, '/ui/dashboard'));
  app.get('/ui/login', { schema: { hide: true } }, (req, reply) => {
    if (ctx.sessions.authenticate(req, reply)) return seeOther(reply, '/ui/dashboard');
    return sendPage(reply, LoginPage({ defaultPassword: ctx.sessions.usingDefaultPassword }));
  });

  app.get('/ui/account', { preHandler: uiGuard(ctx), schema: { hide: true } }, (req, reply) => {
    const frame = frameOf(ctx, req, reply, 'account');
    const source = ctx.config?.sources['admin.password'] ?? 'default';
    const days = SESSION_MAX_AGE_S / 86_400;
    return sendPage(
      reply,
      <Layout frame={frame} title="Account">
        <div class="card mb-3" id="account">
          <div class="card-body">
            <p>
              Signed in as the operator of <strong>bty-web v{ctx.version}</strong>. bty-web has one
              operator account, protected by the admin password.
            </p>
            <dl class="row mb-0">
              <dt class="col-sm-3">Password source</dt>
              <dd class="col-sm-9" id="password-source">
                {frame.defaultPassword ? (
                  <span>
                    the built-in default <code>bty-lab</code>{' '}
                    <span class="badge text-bg-warning">change it</span>
                  </span>
                ) : (
                  <code>{source}</code>
                )}
              </dd>
              <dt class="col-sm-3">How to rotate it</dt>
              <dd class="col-sm-9">
                Set <code>BTY_ADMIN_PASSWORD</code> in the service's environment, or{' '}
                <code>[admin] password</code> in bty.toml, then restart bty-web. The old password
                stops working at once; open sessions stay valid until they expire.
              </dd>
              <dt class="col-sm-3">Sessions</dt>
              <dd class="col-sm-9">
                A signed cookie that lasts {days} days and is renewed by every visit. To end every
                session now, delete <code>session-secret</code> in the state folder (or change{' '}
                <code>[admin] session_secret</code>) and restart bty-web.
              </dd>
            </dl>
          </div>
        </div>
      </Layout>,
    );
  });
}
