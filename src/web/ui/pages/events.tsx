/**
 * The audit log in the browser (`GET /ui/events`): one search box over kind, subject, actor,
 * source IP and summary, every value a link that searches for it (click to pivot), failures in
 * the danger colour, acknowledge / clear per row, paging that stays quick at 100,000 events
 * (LIMIT/OFFSET and one count). Page 1 of the unfiltered log refreshes itself when the log grows;
 * a searched or later page stays still, so rows do not move under the reader.
 *
 * The acknowledge posts also serve the dashboard's failure card: they end in 303 back to the
 * page the form came from (`return_to`, only ever a `/ui/` path).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ComponentChildren } from 'preact';
import type { WebContext } from '../../context.ts';
import {
  acknowledgeEvent,
  acknowledgeEvents,
  countEvents,
  searchEvents,
  unacknowledgeEvent,
  type EventRow,
} from '../../db/events.ts';
import { isFailureKind } from '../../event-kinds.ts';
import { EmptyRow, KindBadge, liveTrigger, Pager, Time } from '../components.tsx';
import { frameOf, uiGuard, type Frame } from '../guard.ts';
import { seeOther, sendFragment, sendPage } from '../html.ts';
import { Csrf, Layout, type PageAlert } from '../layout.tsx';
import { clampPage, DEFAULT_PAGE_SIZE, hrefWith, parsePaging, queryText } from '../table.ts';

export const EVENTS_PATH = '/ui/events';
const TABLE_FRAGMENT_PATH = '/ui/events/table';
const COLUMNS = 7;
/** Longer search text is cut: nothing useful is that long, and it bounds the LIKE work. */
const MAX_QUERY_LENGTH = 200;

/** The events page searching for `value` (the target of every pivot link). */
export function eventsSearchHref(value: string): string {
  return hrefWith(EVENTS_PATH, { q: value });
}

/** The machine page of a MAC subject. */
export function machineHref(mac: string): string {
  return `/ui/machines/${encodeURIComponent(mac)}`;
}

function isMachineSubject(event: EventRow): event is EventRow & { subject_id: string } {
  return event.subject_kind === 'machine' && !!event.subject_id;
}

const MAC_TOKEN = /\b([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})\b/g;

/** A summary with each MAC in it linked to that machine's page (text stays escaped). */
export function Summary({ text }: { text: string }) {
  const parts: Array<string | { mac: string }> = [];
  let at = 0;
  for (const m of text.matchAll(MAC_TOKEN)) {
    if (m.index > at) parts.push(text.slice(at, m.index));
    parts.push({ mac: m[1]!.toLowerCase() });
    at = m.index + m[0].length;
  }
  if (at < text.length) parts.push(text.slice(at));
  return (
    <span class="event-summary">
      {parts.map((p) => (typeof p === 'string' ? p : <a href={machineHref(p.mac)}>{p.mac}</a>))}
    </span>
  );
}

/**
 * Where a form post may send the browser back to: a path under `/ui/` (never another origin, a
 * scheme-relative `//host`, a backslash some browsers read as a slash, or control characters).
 */
export function safeReturnTo(value: unknown, fallback: string = EVENTS_PATH): string {
  if (typeof value !== 'string' || value.length > 2048 || !value.startsWith('/ui/')) {
    return fallback;
  }
  for (const ch of value) {
    const code = ch.charCodeAt(0);
    if (code <= 0x20 || code === 0x7f || ch === '\\') return fallback;
  }
  return value;
}

/** `url` with `?error=` set (or removed when `error` is null), keeping its other parameters. */
export function withError(url: string, error: string | null): string {
  const parsed = new URL(url, 'http://ui.invalid');
  if (error === null) parsed.searchParams.delete('error');
  else parsed.searchParams.set('error', error);
  return parsed.pathname + parsed.search;
}

/** An `?error=` from a post that came back (shown escaped, as a banner). */
export function errorAlerts(query: unknown): PageAlert[] {
  const error = queryText(query, 'error').slice(0, 300);
  return error ? [{ kind: 'danger', text: error }] : [];
}

/** The Acknowledge button for one failure, as a plain form (303 back to `returnTo`). */
export function AckForm({
  event,
  csrf,
  returnTo,
}: {
  event: EventRow;
  csrf: string;
  returnTo: string;
}) {
  return (
    <form method="post" action={`${EVENTS_PATH}/${event.id}/ack`} class="d-inline">
      <Csrf token={csrf} />
      <input type="hidden" name="return_to" value={returnTo} />
      <button
        type="submit"
        class="btn btn-sm btn-outline-danger ack"
        title="Acknowledge: the failure stays in the log but no longer counts as open"
      >
        <i class="bi bi-check2 me-1" aria-hidden="true"></i>Acknowledge
      </button>
    </form>
  );
}

function UnackForm({ event, csrf, returnTo }: { event: EventRow; csrf: string; returnTo: string }) {
  return (
    <form method="post" action={`${EVENTS_PATH}/${event.id}/unack`} class="d-inline">
      <Csrf token={csrf} />
      <input type="hidden" name="return_to" value={returnTo} />
      <button
        type="submit"
        class="btn btn-sm btn-link p-0 unack"
        title="Clear the acknowledgement: the failure counts as open again"
      >
        clear
      </button>
    </form>
  );
}

/** A value that searches for itself when clicked; a dash when there is none. */
function Pivot({ value, children }: { value: string | null; children?: ComponentChildren }) {
  if (!value) return <span class="text-body-secondary">—</span>;
  return (
    <a class="pivot" href={eventsSearchHref(value)} title={`Show events matching ${value}`}>
      {children ?? value}
    </a>
  );
}

function EventRowView({
  event,
  frame,
  returnTo,
}: {
  event: EventRow;
  frame: Frame;
  returnTo: string;
}) {
  const failure = isFailureKind(event.kind);
  const rowClass = event.acknowledged
    ? 'event-acked'
    : failure
      ? 'event-failure table-danger'
      : undefined;
  return (
    <tr
      data-event-id={String(event.id)}
      data-kind={event.kind}
      data-acknowledged={event.acknowledged ? 'true' : 'false'}
      class={rowClass}
    >
      <td class="text-nowrap small">
        <Time value={event.ts} now={frame.now} />
      </td>
      <td>
        <Pivot value={event.kind}>
          <KindBadge kind={event.kind} />
        </Pivot>
      </td>
      <td class="text-break">
        <Summary text={event.summary} />
      </td>
      <td class="text-nowrap">
        <Pivot value={event.subject_id} />
        {isMachineSubject(event) ? (
          <a
            class="ms-1 machine-link"
            href={machineHref(event.subject_id)}
            title="Open the machine page"
            aria-label={`Open machine ${event.subject_id}`}
          >
            <i class="bi bi-pc-display" aria-hidden="true"></i>
          </a>
        ) : null}
      </td>
      <td class="text-nowrap">
        <Pivot value={event.actor} />
      </td>
      <td class="text-nowrap">
        <Pivot value={event.source_ip} />
      </td>
      <td class="text-nowrap">
        {event.acknowledged ? (
          <span class="small">
            <i class="bi bi-check2-all me-1" aria-hidden="true"></i>acknowledged{' '}
            <UnackForm event={event} csrf={frame.csrf} returnTo={returnTo} />
          </span>
        ) : failure ? (
          <AckForm event={event} csrf={frame.csrf} returnTo={returnTo} />
        ) : null}
      </td>
    </tr>
  );
}

interface EventsView {
  q: string;
  perPage: number;
  page: number;
  last: number;
  total: number;
  events: EventRow[];
}

async function loadView(ctx: WebContext, query: unknown): Promise<EventsView> {
  const q = queryText(query, 'q').slice(0, MAX_QUERY_LENGTH);
  const { db } = ctx.database;
  const total = await countEvents(db, { q });
  const paging = clampPage(parsePaging(query), total);
  const events = await searchEvents(db, { q, limit: paging.perPage, offset: paging.offset });
  return { q, perPage: paging.perPage, page: paging.page, last: paging.last, total, events };
}

/** The query a view's links carry (defaults left out, so URLs stay short). */
function paramsOf(view: EventsView): Record<string, string | number | undefined> {
  return {
    q: view.q || undefined,
    per_page: view.perPage === DEFAULT_PAGE_SIZE ? undefined : view.perPage,
  };
}

/**
 * The pager and the table. On page 1 without a search it refetches itself when the audit log
 * grows; elsewhere it stays as loaded.
 */
function EventsTable({ view, frame }: { view: EventsView; frame: Frame }) {
  const params = paramsOf(view);
  const returnTo = hrefWith(EVENTS_PATH, params, { page: view.page > 1 ? view.page : undefined });
  const live =
    view.page === 1 && view.q === ''
      ? {
          'hx-get': hrefWith(TABLE_FRAGMENT_PATH, params),
          'hx-trigger': liveTrigger('events'),
          'hx-swap': 'outerHTML',
        }
      : {};
  const openFailures = view.events.filter((e) => isFailureKind(e.kind) && !e.acknowledged);
  return (
    <div id="events-live" {...live}>
      <div class="d-flex flex-wrap align-items-center gap-2 mb-2">
        <Pager
          path={EVENTS_PATH}
          params={params}
          page={view.page}
          last={view.last}
          perPage={view.perPage}
          total={view.total}
          label="Events"
        />
        {openFailures.length > 1 ? (
          <form method="post" action={`${EVENTS_PATH}/ack`} class="ms-auto" id="ack-shown">
            <Csrf token={frame.csrf} />
            <input type="hidden" name="ids" value={openFailures.map((e) => e.id).join(',')} />
            <input type="hidden" name="return_to" value={returnTo} />
            <button type="submit" class="btn btn-sm btn-outline-danger">
              <i class="bi bi-check2-all me-1" aria-hidden="true"></i>Acknowledge all{' '}
              {openFailures.length} failures shown
            </button>
          </form>
        ) : null}
      </div>
      <div class="table-responsive">
        <table id="events-table" class="table table-sm table-hover align-middle">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Kind</th>
              <th scope="col">Summary</th>
              <th scope="col">Subject</th>
              <th scope="col">Actor</th>
              <th scope="col">Source IP</th>
              <th scope="col">Ack</th>
            </tr>
          </thead>
          <tbody>
            {view.events.length === 0 ? (
              <EmptyRow columns={COLUMNS}>
                {view.q ? (
                  <span id="events-empty">
                    Nothing matches “{view.q}”. The search looks for that text in the kind, subject,
                    actor, source IP and summary. <a href={EVENTS_PATH}>Show all events</a>
                  </span>
                ) : (
                  <span id="events-empty">
                    No events yet. Machines booting, reporting and flashing, and changes made here
                    or through the API, are all logged on this page.
                  </span>
                )}
              </EmptyRow>
            ) : (
              view.events.map((event) => (
                <EventRowView event={event} frame={frame} returnTo={returnTo} />
              ))
            )}
          </tbody>
        </table>
      </div>
    </div>
  );
}

function SearchForm({ view }: { view: EventsView }) {
  return (
    <form
      id="event-search"
      method="get"
      action={EVENTS_PATH}
      role="search"
      class="d-flex flex-wrap gap-2 mb-3"
    >
      <label for="event-q" class="visually-hidden">
        Search events
      </label>
      <input
        type="search"
        id="event-q"
        name="q"
        value={view.q}
        class="form-control"
        style="max-width: 32rem"
        placeholder="kind, MAC, actor, IP or words from the summary (try: failed)"
        maxLength={MAX_QUERY_LENGTH}
      />
      {view.perPage !== DEFAULT_PAGE_SIZE ? (
        <input type="hidden" name="per_page" value={String(view.perPage)} />
      ) : null}
      <button type="submit" class="btn btn-primary">
        <i class="bi bi-search me-1" aria-hidden="true"></i>Search
      </button>
      {view.q ? (
        <a class="btn btn-outline-secondary" href={EVENTS_PATH}>
          Clear
        </a>
      ) : null}
    </form>
  );
}

/** The event id of an ack/unack path, or null for anything that is not a positive integer. */
function eventIdOf(raw: string): number | null {
  if (!/^\d{1,15}$/.test(raw)) return null;
  const id = Number(raw);
  return id >= 1 ? id : null;
}

function formField(req: FastifyRequest, name: string): string | undefined {
  const body = req.body;
  if (typeof body !== 'object' || body === null) return undefined;
  const value = (body as Record<string, unknown>)[name];
  return typeof value === 'string' ? value : undefined;
}

export function registerEventsPage(app: FastifyInstance, ctx: WebContext): void {
  const guard = { preHandler: uiGuard(ctx), schema: { hide: true } };
  const { db } = ctx.database;

  app.get(EVENTS_PATH, guard, async (req, reply) => {
    const frame = frameOf(ctx, req, reply, 'events');
    const view = await loadView(ctx, req.query);
    return sendPage(
      reply,
      <Layout frame={frame} title="Events" alerts={errorAlerts(req.query)}>
        <SearchForm view={view} />
        <EventsTable view={view} frame={frame} />
      </Layout>,
    );
  });

  app.get(TABLE_FRAGMENT_PATH, guard, async (req, reply) => {
    const frame = frameOf(ctx, req, reply, 'events');
    return sendFragment(reply, <EventsTable view={await loadView(ctx, req.query)} frame={frame} />);
  });

  /** Sets or clears one event's acknowledgement, then 303 back to where the form was. */
  const toggle =
    (acknowledged: boolean, set: (id: number) => Promise<boolean>) =>
    async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
      const back = safeReturnTo(formField(req, 'return_to'));
      const id = eventIdOf(req.params.id);
      if (id === null || !(await set(id))) {
        const shown = req.params.id.slice(0, 32);
        return seeOther(reply, withError(back, `There is no event with id ${shown}.`));
      }
      ctx.bus.publish({ type: 'ack', ids: [id], acknowledged });
      return seeOther(reply, withError(back, null));
    };
  app.post<{ Params: { id: string } }>(
    `${EVENTS_PATH}/:id/ack`,
    guard,
    toggle(true, (id) => acknowledgeEvent(db, id)),
  );
  app.post<{ Params: { id: string } }>(
    `${EVENTS_PATH}/:id/unack`,
    guard,
    toggle(false, (id) => unacknowledgeEvent(db, id)),
  );

  // "Acknowledge all failures shown": the ids travel as one comma-separated field, because a
  // repeated form field keeps only its last value here.
  app.post(`${EVENTS_PATH}/ack`, guard, async (req, reply) => {
    const back = safeReturnTo(formField(req, 'return_to'));
    const ids = (formField(req, 'ids') ?? '')
      .split(',')
      .map((s) => eventIdOf(s.trim()))
      .filter((id): id is number => id !== null)
      .slice(0, 500);
    if (ids.length === 0) return seeOther(reply, withError(back, 'No events were selected.'));
    await acknowledgeEvents(db, ids);
    ctx.bus.publish({ type: 'ack', ids, acknowledged: true });
    return seeOther(reply, withError(back, null));
  });
}
