/**
 * The dashboard (`GET /ui/dashboard`): what an operator checks first. Five counts that link to
 * the list behind them, a readiness checklist that says what is missing for a PXE fleet to boot
 * and where to fix it, the failures nobody has acknowledged, and the latest activity. The
 * counts, failures and activity are fragments of their own that refetch themselves when the
 * live connection says machines or the audit log changed; the checklist is read per load (it
 * looks at files on disk).
 */
import type { FastifyInstance } from 'fastify';
import type { WebContext } from '../../context.ts';
import { probeTftp } from '../../tftp-probe.ts';
import {
  countUnacknowledgedFailures,
  listUnacknowledgedFailures,
  queryEvents,
  type EventRow,
} from '../../db/events.ts';
import { dashboardCounts, type DashboardCounts } from '../../db/stats.ts';
import { ipxeBootFiles, IPXE_DIR, liveArtifacts } from '../../netboot-files.ts';
import { EmptyRow, KindBadge, liveTrigger, Time } from '../components.tsx';
import { formatCount } from '../format.ts';
import { frameOf, uiGuard, type Frame } from '../guard.ts';
import { sendFragment, sendPage } from '../html.ts';
import { Layout } from '../layout.tsx';
import {
  AckForm,
  errorAlerts,
  eventsSearchHref,
  EVENTS_PATH,
  machineHref,
  Summary,
} from './events.tsx';

const DASHBOARD_PATH = '/ui/dashboard';
const SUMMARY_PATH = '/ui/dashboard/summary';
const FAILURES_PATH = '/ui/dashboard/failures';
const ACTIVITY_PATH = '/ui/dashboard/activity';
/** How many rows the failure and activity cards show. */
const CARD_ROWS = 10;

/** Refetch on the live connection's events; throttled so a boot storm costs one fetch a second. */
const ON_EVENTS = liveTrigger('events');

type Tone = 'plain' | 'warning' | 'danger' | 'active';

const TONE_CLASS: Record<Tone, string> = {
  plain: '',
  warning: ' border-warning bg-warning-subtle text-warning-emphasis',
  danger: ' border-danger bg-danger-subtle text-danger-emphasis',
  active: ' border-primary bg-primary-subtle text-primary-emphasis',
};

function CountCard({
  id,
  href,
  label,
  value,
  tone,
  hint,
}: {
  id: string;
  href: string;
  label: string;
  value: number;
  tone: Tone;
  hint: string;
}) {
  return (
    <div class="col-6 col-md-4 col-xl">
      <a
        id={id}
        href={href}
        class={`card h-100 text-decoration-none count-card${TONE_CLASS[tone]}`}
        data-tone={tone}
        title={hint}
      >
        <div class="card-body">
          <span class="count-value d-block fs-2 fw-semibold">{formatCount(value)}</span>
          <span class="count-label small">{label}</span>
        </div>
      </a>
    </div>
  );
}

/** The counts card; also the `/ui/dashboard/summary` fragment it refreshes itself with. */
export function DashboardSummary({ counts }: { counts: DashboardCounts }) {
  return (
    <section
      id="dashboard-summary"
      class="row g-3 mb-3"
      aria-label="Fleet summary"
      hx-get={SUMMARY_PATH}
      hx-trigger={liveTrigger('machines', 'events')}
      hx-swap="outerHTML"
    >
      <CountCard
        id="count-machines"
        href="/ui/machines"
        label="machines"
        value={counts.machines}
        tone="plain"
        hint="Every machine bty-web knows"
      />
      <CountCard
        id="count-unassigned"
        href="/ui/machines?filter=discovered"
        label="discovered, no image yet"
        value={counts.unassigned}
        tone={counts.unassigned > 0 ? 'warning' : 'plain'}
        hint="Machines bound to no image: pick one on the machine page"
      />
      <CountCard
        id="count-flashing"
        href="/ui/machines?filter=flashing"
        label="flashing now"
        value={counts.flashing}
        tone={counts.flashing > 0 ? 'active' : 'plain'}
        hint="Machines that reported flash progress in the last 10 minutes"
      />
      <CountCard
        id="count-failed"
        href={eventsSearchHref('machine.flash_failed')}
        label="failed flashes, last 24 h"
        value={counts.failed}
        tone={counts.failed > 0 ? 'danger' : 'plain'}
        hint="machine.flash_failed events in the last 24 hours"
      />
      <CountCard
        id="count-catalog"
        href="/ui/catalog"
        label="catalog entries"
        value={counts.catalog}
        tone="plain"
        hint="Images machines can be bound to"
      />
    </section>
  );
}

// ---------------------------------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------------------------------

interface Check {
  id: string;
  title: string;
  /** `info`: advice that is neither met nor failed (not counted in the score). */
  ok: boolean | 'info';
  detail: string;
  href: string;
  linkText: string;
}

/**
 * TFTP: with `[tftp] enabled`, a probe of the configured address must be answered (DATA or an
 * error for the boot file both prove a server listens); without it, advice only.
 */
async function tftpCheck(ctx: WebContext): Promise<Check> {
  const tftp = ctx.config?.config.tftp;
  if (!tftp?.enabled) {
    return {
      id: 'tftp',
      title: 'TFTP',
      ok: 'info',
      detail:
        'TFTP is not enabled here ([tftp] enabled): legacy PXE firmware needs a TFTP server ' +
        'for the iPXE boot file; see the cheatsheet.',
      href: '/ui/settings#cheatsheet',
      linkText: 'Cheatsheet',
    };
  }
  const host = !tftp.host || tftp.host === '0.0.0.0' ? '127.0.0.1' : tftp.host;
  const probe = await probeTftp(host, tftp.port, 'undionly.kpxe');
  return {
    id: 'tftp',
    title: 'TFTP listening',
    ok: probe.state !== 'silent',
    detail:
      probe.state === 'silent'
        ? `[tftp] is enabled but nothing answers: ${probe.detail}.`
        : `${probe.detail}.`,
    href: '/ui/settings#cheatsheet',
    linkText: 'Cheatsheet',
  };
}

async function readinessChecks(ctx: WebContext, catalogCount: number): Promise<Check[]> {
  const [artifacts, ipxe] = await Promise.all([
    liveArtifacts(ctx.bootDir, ctx.artifactVersion),
    ipxeBootFiles(),
  ]);
  const missingArtifacts = artifacts.filter((f) => !f.present).map((f) => f.name);
  const missingIpxe = ipxe.filter((f) => !f.present).map((f) => f.name);
  const tftp = await tftpCheck(ctx);
  const defaultPassword = ctx.sessions.usingDefaultPassword;
  return [
    {
      id: 'artifacts',
      title: 'Live-environment artifacts present',
      ok: missingArtifacts.length === 0,
      detail:
        missingArtifacts.length === 0
          ? `Kernel, initrd and squashfs of v${ctx.artifactVersion} are in ${ctx.bootDir}.`
          : `Missing from ${ctx.bootDir}: ${missingArtifacts.join(', ')}.`,
      href: '/ui/netboot',
      linkText: missingArtifacts.length === 0 ? 'Netboot' : 'Upload them',
    },
    {
      id: 'ipxe',
      title: 'iPXE boot files available',
      ok: missingIpxe.length === 0,
      detail:
        missingIpxe.length === 0
          ? `${ipxe.map((f) => f.name).join(', ')} are in ${IPXE_DIR}.`
          : `Missing from ${IPXE_DIR}: ${missingIpxe.join(', ')}. Install Debian's ipxe package ` +
            '(apt install ipxe).',
      href: '/ui/netboot',
      linkText: 'Netboot',
    },
    {
      id: 'catalog',
      title: 'Catalog has images',
      ok: catalogCount > 0,
      detail:
        catalogCount > 0
          ? `${formatCount(catalogCount)} catalog ${catalogCount === 1 ? 'entry' : 'entries'}.`
          : 'The catalog is empty: add an image so machines have something to flash.',
      href: '/ui/catalog',
      linkText: catalogCount > 0 ? 'Catalog' : 'Add an image',
    },
    tftp,
    {
      id: 'password',
      title: 'Admin password changed',
      ok: !defaultPassword,
      detail: defaultPassword
        ? 'The admin password is still the default bty-lab: anyone on the network can log in.'
        : 'The admin password is not the default.',
      href: '/ui/account',
      linkText: defaultPassword ? 'How to change it' : 'Account',
    },
  ];
}

const CHECK_ICON: Record<string, string> = {
  true: 'bi-check-circle-fill text-success',
  false: 'bi-x-circle-fill text-danger',
  info: 'bi-info-circle-fill text-info',
};

function Readiness({ checks }: { checks: Check[] }) {
  const scored = checks.filter((c) => c.ok !== 'info');
  const ready = scored.filter((c) => c.ok === true).length;
  return (
    <section class="card h-100" aria-labelledby="readiness-title">
      <div class="card-header d-flex align-items-center">
        <h2 class="h6 mb-0 me-auto" id="readiness-title">
          Readiness
        </h2>
        <span
          id="readiness-score"
          class={`badge ${ready === scored.length ? 'text-bg-success' : 'text-bg-warning'}`}
        >
          {ready} / {scored.length} ready
        </span>
      </div>
      <ul id="readiness" class="list-group list-group-flush">
        {checks.map((c) => (
          <li
            class="list-group-item d-flex align-items-start gap-2"
            data-check={c.id}
            data-ok={String(c.ok)}
          >
            <i
              class={`bi ${CHECK_ICON[String(c.ok)]} mt-1`}
              role="img"
              aria-label={c.ok === 'info' ? 'note' : c.ok ? 'ready' : 'not ready'}
            ></i>
            <div class="flex-grow-1">
              <div class="fw-semibold">{c.title}</div>
              <div class="small text-body-secondary check-detail">{c.detail}</div>
            </div>
            <a class="btn btn-sm btn-outline-secondary text-nowrap" href={c.href}>
              {c.linkText}
            </a>
          </li>
        ))}
      </ul>
    </section>
  );
}

// ---------------------------------------------------------------------------------------------
// Failures and activity
// ---------------------------------------------------------------------------------------------

/** Where an event's subject leads: a machine's page, else the events about that subject. */
function SubjectLink({ event }: { event: EventRow }) {
  if (!event.subject_id) return <span class="text-body-secondary">—</span>;
  const href =
    event.subject_kind === 'machine'
      ? machineHref(event.subject_id)
      : eventsSearchHref(event.subject_id);
  return <a href={href}>{event.subject_id}</a>;
}

export function UnackedFailures({
  failures,
  total,
  frame,
}: {
  failures: EventRow[];
  total: number;
  frame: Frame;
}) {
  return (
    <section
      id="unacked-failures"
      class={`card h-100${total > 0 ? ' border-danger' : ''}`}
      aria-labelledby="unacked-title"
      hx-get={FAILURES_PATH}
      hx-trigger={ON_EVENTS}
      hx-swap="outerHTML"
    >
      <div class="card-header d-flex align-items-center gap-2">
        <h2 class="h6 mb-0 me-auto" id="unacked-title">
          Unacknowledged failures
        </h2>
        <span
          class={`badge ${total > 0 ? 'text-bg-danger' : 'text-bg-success'}`}
          id="unacked-count"
        >
          {formatCount(total)}
        </span>
        <a class="small" href={eventsSearchHref('failed')}>
          All failures
        </a>
      </div>
      {failures.length === 0 ? (
        <div class="card-body text-body-secondary">
          <i class="bi bi-check-circle me-1" aria-hidden="true"></i>No open failures.
        </div>
      ) : (
        <ul class="list-group list-group-flush">
          {failures.map((e) => (
            <li
              class="list-group-item d-flex align-items-start gap-2"
              data-event-id={String(e.id)}
              data-kind={e.kind}
            >
              <div class="flex-grow-1">
                <div class="d-flex flex-wrap gap-2 align-items-center small">
                  <KindBadge kind={e.kind} />
                  <Time value={e.ts} now={frame.now} ago />
                  <SubjectLink event={e} />
                </div>
                <div class="text-break">
                  <Summary text={e.summary} />
                </div>
              </div>
              <AckForm event={e} csrf={frame.csrf} returnTo={DASHBOARD_PATH} />
            </li>
          ))}
        </ul>
      )}
      {total > failures.length ? (
        <div class="card-footer small">
          {formatCount(total - failures.length)} more:{' '}
          <a href={eventsSearchHref('failed')}>see them all</a>
        </div>
      ) : null}
    </section>
  );
}

export function RecentActivity({ events, frame }: { events: EventRow[]; frame: Frame }) {
  return (
    <section
      id="recent-activity"
      class="card"
      aria-labelledby="activity-title"
      hx-get={ACTIVITY_PATH}
      hx-trigger={ON_EVENTS}
      hx-swap="outerHTML"
    >
      <div class="card-header d-flex align-items-center">
        <h2 class="h6 mb-0 me-auto" id="activity-title">
          Recent activity
        </h2>
        <a class="small" href={EVENTS_PATH}>
          Full timeline
        </a>
      </div>
      <div class="table-responsive">
        <table class="table table-sm mb-0 align-middle">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Kind</th>
              <th scope="col">Summary</th>
              <th scope="col">Subject</th>
            </tr>
          </thead>
          <tbody>
            {events.length === 0 ? (
              <EmptyRow columns={4}>
                Nothing has happened yet. Point a machine's PXE boot at this server and it shows up
                here.
              </EmptyRow>
            ) : (
              events.map((e) => (
                <tr data-event-id={String(e.id)} data-kind={e.kind}>
                  <td class="text-nowrap small">
                    <Time value={e.ts} now={frame.now} ago />
                  </td>
                  <td>
                    <KindBadge kind={e.kind} />
                  </td>
                  <td class="text-break">
                    <Summary text={e.summary} />
                  </td>
                  <td class="text-nowrap">
                    <SubjectLink event={e} />
                  </td>
                </tr>
              ))
            )}
          </tbody>
        </table>
      </div>
    </section>
  );
}

export function registerDashboardPage(app: FastifyInstance, ctx: WebContext): void {
  const guard = { preHandler: uiGuard(ctx), schema: { hide: true } };
  const { db } = ctx.database;
  const failuresOf = async () =>
    [
      await listUnacknowledgedFailures(db, CARD_ROWS),
      await countUnacknowledgedFailures(db),
    ] as const;

  app.get(DASHBOARD_PATH, guard, async (req, reply) => {
    const frame = frameOf(ctx, req, reply, 'dashboard');
    const counts = await dashboardCounts(db, frame.now);
    const checks = await readinessChecks(ctx, counts.catalog);
    const [failures, failureTotal] = await failuresOf();
    const events = await queryEvents(db, { limit: CARD_ROWS });
    return sendPage(
      reply,
      <Layout frame={frame} title="Dashboard" alerts={errorAlerts(req.query)}>
        <DashboardSummary counts={counts} />
        <div class="row g-3 mb-3">
          <div class="col-lg-6">
            <Readiness checks={checks} />
          </div>
          <div class="col-lg-6">
            <UnackedFailures failures={failures} total={failureTotal} frame={frame} />
          </div>
        </div>
        <RecentActivity events={events} frame={frame} />
      </Layout>,
    );
  });

  app.get(SUMMARY_PATH, guard, async (_req, reply) =>
    sendFragment(reply, <DashboardSummary counts={await dashboardCounts(db, ctx.now())} />),
  );

  app.get(FAILURES_PATH, guard, async (req, reply) => {
    const frame = frameOf(ctx, req, reply, 'dashboard');
    const [failures, total] = await failuresOf();
    return sendFragment(reply, <UnackedFailures failures={failures} total={total} frame={frame} />);
  });

  app.get(ACTIVITY_PATH, guard, async (req, reply) => {
    const frame = frameOf(ctx, req, reply, 'dashboard');
    const events = await queryEvents(db, { limit: CARD_ROWS });
    return sendFragment(reply, <RecentActivity events={events} frame={frame} />);
  });
}
