/**
 * The frame around every page: the navigation bar, the default-password warning, page alerts,
 * and the one live-update connection (`/ui/live`, htmx's SSE extension) each tab opens. Pages
 * render inside it; nothing here reads the database.
 */
import type { ComponentChildren } from 'preact';
import type { Frame, Section } from './guard.ts';
import { CSRF_FIELD } from './csrf.ts';

const NAV: Array<{ section: Section; href: string; label: string; icon: string }> = [
  { section: 'dashboard', href: '/ui/dashboard', label: 'Dashboard', icon: 'speedometer2' },
  { section: 'machines', href: '/ui/machines', label: 'Machines', icon: 'pc-display' },
  { section: 'catalog', href: '/ui/catalog', label: 'Catalog', icon: 'journal-album' },
  { section: 'netboot', href: '/ui/netboot', label: 'Netboot', icon: 'hdd-network' },
  { section: 'events', href: '/ui/events', label: 'Events', icon: 'list-ul' },
  { section: 'settings', href: '/ui/settings', label: 'Settings', icon: 'gear' },
];

export type AlertKind = 'success' | 'danger' | 'warning' | 'info';
export interface PageAlert {
  kind: AlertKind;
  text: string;
}

/** The stylesheets and scripts, all served by bty-web itself (no CDN: the UI works offline). */
function Head({ title }: { title: string }) {
  return (
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <meta name="color-scheme" content="light dark" />
      {/* htmx would otherwise add an inline <style>, which the CSP refuses. */}
      <meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowEval":false}' />
      <title>{`${title} · bty`}</title>
      <link rel="icon" href="/static/favicon.svg" type="image/svg+xml" />
      <link rel="stylesheet" href="/static/bootstrap.min.css" />
      <link rel="stylesheet" href="/static/bootstrap-icons.min.css" />
      <link rel="stylesheet" href="/static/bty.css" />
      {/* Sets the colour mode before the first paint, so a dark browser never flashes white. */}
      <script src="/static/bty-theme.js"></script>
      <script src="/static/htmx.min.js" defer></script>
      <script src="/static/htmx-sse.js" defer></script>
      <script src="/static/bty.js" defer></script>
    </head>
  );
}

/** A hidden CSRF field: every mutating form carries one. */
export function Csrf({ token }: { token: string }) {
  return <input type="hidden" name={CSRF_FIELD} value={token} />;
}

export function Alerts({ alerts }: { alerts: readonly PageAlert[] }) {
  return (
    <>
      {alerts.map((a) => (
        <div class={`alert alert-${a.kind}`} role={a.kind === 'danger' ? 'alert' : 'status'}>
          {a.text}
        </div>
      ))}
    </>
  );
}

function NavBar({ frame }: { frame: Frame }) {
  return (
    <nav
      class="navbar navbar-expand-md bg-body-tertiary border-bottom sticky-top"
      aria-label="Main"
    >
      <div class="container-fluid">
        <a class="navbar-brand fw-bold" href="/ui/dashboard">
          <i class="bi bi-device-hdd me-1" aria-hidden="true"></i>bty
        </a>
        <span class="navbar-text small text-body-secondary me-3">v{frame.version}</span>
        <ul class="navbar-nav me-auto flex-row flex-wrap">
          {NAV.map((item) => (
            <li class="nav-item">
              <a
                class={`nav-link px-2${frame.section === item.section ? ' active fw-semibold' : ''}`}
                href={item.href}
                aria-current={frame.section === item.section ? 'page' : undefined}
              >
                <i class={`bi bi-${item.icon} me-1`} aria-hidden="true"></i>
                {item.label}
              </a>
            </li>
          ))}
        </ul>
        <span
          id="live-indicator"
          class="badge text-bg-secondary me-3"
          title="Live updates from bty-web"
          role="status"
        >
          connecting…
        </span>
        <a
          class={`btn btn-sm btn-outline-secondary me-2${frame.section === 'account' ? ' active' : ''}`}
          href="/ui/account"
        >
          <i class="bi bi-person-circle me-1" aria-hidden="true"></i>operator
        </a>
        <form method="post" action="/ui/logout" class="d-inline">
          <Csrf token={frame.csrf} />
          <button type="submit" class="btn btn-sm btn-outline-secondary">
            <i class="bi bi-box-arrow-right me-1" aria-hidden="true"></i>Log out
          </button>
        </form>
      </div>
    </nav>
  );
}

export function DefaultPasswordBanner() {
  return (
    <div
      class="alert alert-warning d-flex align-items-center gap-2"
      role="alert"
      id="default-password"
    >
      <i class="bi bi-exclamation-triangle-fill" aria-hidden="true"></i>
      <div>
        The admin password is still the default (<code>bty-lab</code>): anyone on this network can
        log in. Set <code>BTY_ADMIN_PASSWORD</code> or <code>[admin] password</code> in bty.toml and
        restart bty-web. <a href="/ui/account">How to rotate it</a>
      </div>
    </div>
  );
}

export interface LayoutProps {
  frame: Frame;
  title: string;
  alerts?: readonly PageAlert[];
  /** Buttons or links at the right of the page heading. */
  actions?: ComponentChildren;
  children?: ComponentChildren;
}

/**
 * A page. The body is the live-update connection's root: any element inside may swap an
 * `sse-swap` frame or refresh on `hx-trigger="sse:<name>"`.
 */
export function Layout({ frame, title, alerts = [], actions, children }: LayoutProps) {
  return (
    <html lang="en">
      <Head title={title} />
      <body
        hx-ext="sse"
        sse-connect="/ui/live"
        hx-headers={JSON.stringify({ 'X-CSRF-Token': frame.csrf })}
        data-section={frame.section}
      >
        <a class="visually-hidden-focusable" href="#main">
          Skip to content
        </a>
        {/* Receives the live `progress` frames; bty.js moves each bar into its cell. */}
        <div id="live-progress" sse-swap="progress" hx-swap="none" hidden></div>
        <NavBar frame={frame} />
        <main id="main" class="container-fluid py-3">
          {frame.defaultPassword ? <DefaultPasswordBanner /> : null}
          <div class="d-flex flex-wrap align-items-center gap-2 mb-3">
            <h1 class="h3 mb-0 me-auto">{title}</h1>
            {actions}
          </div>
          <Alerts alerts={alerts} />
          {children}
        </main>
      </body>
    </html>
  );
}

/** A page outside the session (login): no navigation, no live connection. */
export function BareLayout({ title, children }: { title: string; children?: ComponentChildren }) {
  return (
    <html lang="en">
      <Head title={title} />
      <body>
        <main id="main" class="container py-5">
          {children}
        </main>
      </body>
    </html>
  );
}

/** An error as a page: what happened and what to do, never a stack trace. */
export function ErrorPage({
  frame,
  title,
  message,
}: {
  frame: Frame | null;
  title: string;
  message: string;
}) {
  const body = (
    <div class="alert alert-danger" role="alert">
      <p class="mb-2">{message}</p>
      <a class="alert-link" href="/ui/dashboard">
        Back to the dashboard
      </a>
    </div>
  );
  return frame ? (
    <Layout frame={frame} title={title}>
      {body}
    </Layout>
  ) : (
    <BareLayout title={title}>
      <h1 class="h3">{title}</h1>
      {body}
    </BareLayout>
  );
}
