/**
 * The machines list (`GET /ui/machines`): a table that stays quick at 10,000 machines because
 * the database searches, filters, sorts and pages it (db/machine-list.ts), with each flashing
 * machine's live progress bar. Its rows refresh themselves (`GET /ui/machines/rows`, the same
 * query) whenever the live connection says a machine changed, so a machine that PXE boots for
 * the first time appears without a reload, in whatever view the operator has open.
 *
 * `POST /ui/machines` adds a machine by MAC, as discovered (no image, boot mode `ipxe-exit`),
 * and never touches an existing record: an operator who typed a known MAC is sent to it.
 * The machine's own page (`/ui/machines/<mac>`) lives in ./machine.tsx.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isBtyError } from '../../../core/errors.ts';
import { parseMac } from '../../../core/mac.ts';
import { clientIp, type WebContext } from '../../context.ts';
import { appendEvent, type NewEvent } from '../../db/events.ts';
import {
  countMachineList,
  listMachineRows,
  MACHINE_FILTERS,
  MACHINE_SORTS,
  MAX_SEARCH_LENGTH,
  type MachineCriteria,
  type MachineFilter,
  type MachineListRow,
  type MachineSort,
} from '../../db/machine-list.ts';
import { createMachineWithBinding, replaceLabels } from '../../db/machines.ts';
import { FLASHING_WINDOW_MS } from '../../db/stats.ts';
import { parseMachineUpsert, publishEvent } from '../../routes/machines.ts';
import {
  CopyButton,
  EmptyRow,
  FlashProgress,
  ModeBadge,
  Pager,
  SortHeader,
  Time,
  type FlashOutcome,
  type ProgressView,
  liveTrigger,
} from '../components.tsx';
import { formatAgo, shortHash } from '../format.ts';
import { frameOf, uiGuard, type Frame } from '../guard.ts';
import { seeOther, sendFragment, sendPage } from '../html.ts';
import { Csrf, Layout } from '../layout.tsx';
import {
  clampPage,
  DEFAULT_PAGE_SIZE,
  hrefWith,
  parsePaging,
  parseSort,
  queryText,
  type Direction,
} from '../table.ts';

const LIST_PATH = '/ui/machines';
const ROWS_PATH = '/ui/machines/rows';
const COLUMNS = 7;
const DEFAULT_SORT = { column: 'mac', dir: 'asc' } as const;

const FILTER_LABELS: Record<MachineFilter, string> = {
  discovered: 'Discovered (no image)',
  assigned: 'Assigned an image',
  flashing: 'Flashing now',
  failed: 'Last flash failed',
};

/** What one view of the table shows: the query, the page of rows, and where it sits. */
interface ListView {
  criteria: MachineCriteria;
  /** The query string of this view without the page (what links and the refresh carry). */
  params: Record<string, string | number | undefined>;
  page: number;
  last: number;
  perPage: number;
  total: number;
  rows: MachineListRow[];
}

async function loadView(ctx: WebContext, query: unknown): Promise<ListView> {
  const filterText = queryText(query, 'filter');
  const filter = (MACHINE_FILTERS as readonly string[]).includes(filterText)
    ? (filterText as MachineFilter)
    : null;
  const sort = parseSort<MachineSort>(query, MACHINE_SORTS, DEFAULT_SORT);
  const criteria: MachineCriteria = {
    search: queryText(query, 'q').slice(0, MAX_SEARCH_LENGTH),
    filter,
    sort: sort.column,
    dir: sort.dir,
    now: ctx.now(),
  };
  const paging = parsePaging(query);
  const { db } = ctx.database;
  const total = await countMachineList(db, criteria);
  const { page, last, perPage, offset } = clampPage(paging, total);
  const rows = await listMachineRows(db, criteria, { limit: perPage, offset });
  const defaultSort = sort.column === DEFAULT_SORT.column && sort.dir === DEFAULT_SORT.dir;
  return {
    criteria,
    params: {
      q: criteria.search,
      filter: filter ?? undefined,
      sort: defaultSort ? undefined : sort.column,
      dir: defaultSort ? undefined : sort.dir,
      per_page: perPage === DEFAULT_PAGE_SIZE ? undefined : perPage,
    },
    page,
    last,
    perPage,
    total,
    rows,
  };
}

// ---------------------------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------------------------

/** The stored progress JSON as the bar reads it; anything malformed shows no bar. */
function progressOf(text: string | null): ProgressView | null {
  if (!text) return null;
  try {
    const value = JSON.parse(text) as Partial<ProgressView> | null;
    if (
      typeof value !== 'object' ||
      value === null ||
      typeof value.phase !== 'string' ||
      typeof value.bytes_done !== 'number'
    ) {
      return null;
    }
    return {
      ...value,
      phase: value.phase,
      bytes_done: value.bytes_done,
      bytes_total: typeof value.bytes_total === 'number' ? value.bytes_total : null,
      rate_bps: typeof value.rate_bps === 'number' ? value.rate_bps : 0,
    };
  } catch {
    return null;
  }
}

function ImageCell({ row }: { row: MachineListRow }) {
  if (row.bty_image_ref === null) {
    return (
      <span class="badge text-bg-warning" title="No image bound: this machine only boots locally">
        discovered
      </span>
    );
  }
  if (row.image_name !== null) {
    return <span title={row.bty_image_ref}>{row.image_name}</span>;
  }
  return (
    <span title={row.bty_image_ref}>
      <code>{shortHash(row.bty_image_ref)}</code>{' '}
      <span class="small text-body-secondary">(no catalog entry)</span>
    </span>
  );
}

function MachineRow({ row, now }: { row: MachineListRow; now: Date }) {
  const progress = progressOf(row.progress);
  const outcome: FlashOutcome | null =
    progress === null && row.failure !== null
      ? { status: 'failed', reason: row.failure.reason }
      : null;
  return (
    <tr data-mac={row.mac}>
      <td class="text-nowrap">
        <a class="font-monospace" href={`/ui/machines/${row.mac}`}>
          {row.mac}
        </a>
        <CopyButton value={row.mac} label={`MAC ${row.mac}`} />
      </td>
      <td>
        {row.labels.length === 0 ? (
          <span class="text-body-secondary">–</span>
        ) : (
          row.labels.map((label) => (
            <a
              class="badge rounded-pill text-bg-light border text-decoration-none me-1 machine-label"
              href={hrefWith(LIST_PATH, { q: label })}
              title={`Machines matching “${label}”`}
            >
              {label}
            </a>
          ))
        )}
      </td>
      <td>
        <ImageCell row={row} />
      </td>
      <td>
        <ModeBadge mode={row.boot_mode} />
      </td>
      <td class="text-nowrap">
        <Time value={row.last_seen_at} now={now} ago />
        {row.last_seen_ip ? (
          <div class="small">
            <a
              class="link-secondary"
              href={hrefWith('/ui/events', { q: row.last_seen_ip })}
              title="Events from this address"
            >
              {row.last_seen_ip}
            </a>
          </div>
        ) : null}
      </td>
      <td class="text-nowrap">
        <Time value={row.last_flashed_at} now={now} ago />
      </td>
      <td class="flash-cell">
        <FlashProgress
          mac={row.mac}
          progress={progress}
          outcome={outcome}
          lastReport={
            progress &&
            row.progress_at &&
            now.getTime() - Date.parse(row.progress_at) > FLASHING_WINDOW_MS
              ? formatAgo(row.progress_at, now)
              : null
          }
        />
      </td>
    </tr>
  );
}

/** Why the table is empty, and what to do about it. */
function EmptyState({ view }: { view: ListView }) {
  if (view.criteria.search !== '' || view.criteria.filter !== null) {
    return (
      <EmptyRow columns={COLUMNS}>
        No machine matches this search.{' '}
        <a href={LIST_PATH} class="link-secondary">
          Show all machines
        </a>
      </EmptyRow>
    );
  }
  return (
    <EmptyRow columns={COLUMNS}>
      <p class="mb-1 fw-semibold">No machines yet.</p>
      <p class="mb-0">
        A machine appears here by itself the first time it PXE boots from this server (the{' '}
        <a href="/ui/settings">DHCP settings</a> show how to point your network at bty), or add one
        by its MAC address with the form above.
      </p>
    </EmptyRow>
  );
}

/**
 * The rows, which refetch themselves (this view's query) when the live connection says some
 * machine changed; the progress cells inside also swap themselves on their own events.
 */
function MachineRows({ view, now }: { view: ListView; now: Date }) {
  return (
    <tbody
      id="machine-rows"
      hx-get={hrefWith(ROWS_PATH, view.params, { page: view.page === 1 ? undefined : view.page })}
      hx-trigger={liveTrigger('machines')}
      hx-swap="outerHTML"
      data-total={view.total}
    >
      {view.rows.length === 0 ? (
        <EmptyState view={view} />
      ) : (
        view.rows.map((row) => <MachineRow row={row} now={now} />)
      )}
    </tbody>
  );
}

// ---------------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------------

/** A header link that sorts by `column` (the second sort of the "Last seen" column). */
function SortLink({
  view,
  column,
  children,
}: {
  view: ListView;
  column: MachineSort;
  children: string;
}) {
  const active = view.criteria.sort === column;
  const next: Direction = active && view.criteria.dir === 'asc' ? 'desc' : 'asc';
  return (
    <a
      class="link-body-emphasis text-decoration-none"
      href={hrefWith(LIST_PATH, view.params, { sort: column, dir: next, page: 1 })}
    >
      {children}
      {active ? (
        <i
          class={`bi bi-caret-${view.criteria.dir === 'asc' ? 'up' : 'down'}-fill ms-1`}
          aria-hidden="true"
        ></i>
      ) : null}
    </a>
  );
}

function SearchForm({ view }: { view: ListView }) {
  const { params } = view;
  return (
    <form
      id="machine-search"
      method="get"
      action={LIST_PATH}
      class="d-flex flex-wrap gap-2 align-items-center"
      role="search"
    >
      <label class="visually-hidden" for="machine-q">
        Search machines
      </label>
      <input
        type="search"
        id="machine-q"
        name="q"
        class="form-control form-control-sm"
        style="max-width: 22rem"
        value={view.criteria.search}
        maxLength={MAX_SEARCH_LENGTH}
        placeholder="MAC, label, image, mode or IP"
      />
      <label class="visually-hidden" for="machine-filter">
        Show
      </label>
      <select id="machine-filter" name="filter" class="form-select form-select-sm w-auto">
        <option value="" selected={view.criteria.filter === null}>
          All machines
        </option>
        {MACHINE_FILTERS.map((f) => (
          <option value={f} selected={view.criteria.filter === f}>
            {FILTER_LABELS[f]}
          </option>
        ))}
      </select>
      {/* The sort and page size survive a new search; the page starts again at 1. */}
      {params.sort !== undefined ? <input type="hidden" name="sort" value={params.sort} /> : null}
      {params.dir !== undefined ? <input type="hidden" name="dir" value={params.dir} /> : null}
      {params.per_page !== undefined ? (
        <input type="hidden" name="per_page" value={params.per_page} />
      ) : null}
      <button type="submit" class="btn btn-sm btn-primary">
        <i class="bi bi-search me-1" aria-hidden="true"></i>Search
      </button>
      <a class="btn btn-sm btn-outline-secondary" href={LIST_PATH} id="machine-search-clear">
        Clear
      </a>
    </form>
  );
}

/** What the add form had when it was refused, so nothing typed is lost. */
interface AddValues {
  mac: string;
  labels: string;
}

function AddMachineForm({ frame, values }: { frame: Frame; values: AddValues }) {
  return (
    <details class="card mb-3" open={values.mac !== '' || values.labels !== ''}>
      <summary class="card-header">
        <i class="bi bi-plus-circle me-1" aria-hidden="true"></i>Add a machine by MAC
      </summary>
      <div class="card-body">
        <form id="add-machine" method="post" action={LIST_PATH} class="row g-2 align-items-end">
          <Csrf token={frame.csrf} />
          <div class="col-sm-4 col-lg-3">
            <label class="form-label" for="add-mac">
              MAC address
            </label>
            <input
              type="text"
              id="add-mac"
              name="mac"
              class="form-control font-monospace"
              required
              value={values.mac}
              placeholder="52:54:00:12:34:56"
              pattern="[0-9A-Fa-f]{2}((:|-)[0-9A-Fa-f]{2}){5}"
              title="Six pairs of hex digits separated by colons or hyphens"
              autocomplete="off"
              spellcheck={false}
            />
          </div>
          <div class="col-sm-5 col-lg-4">
            <label class="form-label" for="add-labels">
              Labels <span class="text-body-secondary small">(optional, comma-separated)</span>
            </label>
            <input
              type="text"
              id="add-labels"
              name="labels"
              class="form-control"
              value={values.labels}
              placeholder="rack-3, lab"
            />
          </div>
          <div class="col-auto">
            <button type="submit" class="btn btn-success">
              Add machine
            </button>
          </div>
          <div class="col-12 form-text">
            The machine is added as discovered: no image, and at its next PXE boot it is sent on to
            its local disk. Bind an image on its page. An existing machine is never changed from
            here.
          </div>
        </form>
      </div>
    </details>
  );
}

/** The banners a redirect asked for (`?error=`, `?created=`, `?deleted=`, `?missing=`). */
function Banners({ query }: { query: unknown }) {
  const error = queryText(query, 'error');
  const existing = parseMac(queryText(query, 'machine'));
  const created = parseMac(queryText(query, 'created'));
  const deleted = parseMac(queryText(query, 'deleted'));
  const missing = parseMac(queryText(query, 'missing'));
  return (
    <div id="machines-banners">
      {error ? (
        <div class="alert alert-danger" role="alert" id="machines-error">
          {error}
          {existing ? (
            <>
              {' '}
              <a class="alert-link" href={`/ui/machines/${existing}`}>
                Open {existing}
              </a>
            </>
          ) : null}
        </div>
      ) : null}
      {created ? (
        <div class="alert alert-success" role="status">
          Added machine{' '}
          <a class="alert-link" href={`/ui/machines/${created}`}>
            {created}
          </a>
          .
        </div>
      ) : null}
      {deleted ? (
        <div class="alert alert-success" role="status" id="machines-deleted">
          Deleted machine {deleted}.
        </div>
      ) : null}
      {missing ? (
        <div class="alert alert-warning" role="status">
          Machine {missing} was not found: it may have been deleted already.
        </div>
      ) : null}
    </div>
  );
}

function MachinesPage({ frame, view, query }: { frame: Frame; view: ListView; query: unknown }) {
  const { params, criteria } = view;
  const sortProps = { path: LIST_PATH, params, current: criteria.sort, dir: criteria.dir };
  const pager = (
    <Pager
      path={LIST_PATH}
      params={params}
      page={view.page}
      last={view.last}
      perPage={view.perPage}
      total={view.total}
      label="Machines"
    />
  );
  const values: AddValues = {
    mac: queryText(query, 'add_mac'),
    labels: queryText(query, 'add_labels'),
  };
  return (
    <Layout frame={frame} title="Machines">
      <Banners query={query} />
      <AddMachineForm frame={frame} values={values} />
      <div class="card">
        <div class="card-header d-flex flex-wrap gap-2 align-items-center justify-content-between">
          <SearchForm view={view} />
          {pager}
        </div>
        <div class="table-responsive">
          <table id="machines-table" class="table table-sm table-hover align-middle mb-0">
            <thead>
              <tr>
                <SortHeader {...sortProps} column="mac">
                  MAC
                </SortHeader>
                <th scope="col">Labels</th>
                <SortHeader {...sortProps} column="image">
                  Image
                </SortHeader>
                <SortHeader {...sortProps} column="boot_mode">
                  Boot mode
                </SortHeader>
                <th
                  scope="col"
                  aria-sort={
                    criteria.sort === 'last_seen_at' || criteria.sort === 'last_seen_ip'
                      ? criteria.dir === 'asc'
                        ? 'ascending'
                        : 'descending'
                      : undefined
                  }
                >
                  <SortLink view={view} column="last_seen_at">
                    Last seen
                  </SortLink>
                  <span class="text-body-secondary"> / </span>
                  <SortLink view={view} column="last_seen_ip">
                    IP
                  </SortLink>
                </th>
                <SortHeader {...sortProps} column="last_flashed_at">
                  Last flashed
                </SortHeader>
                <th scope="col" style="min-width: 12rem">
                  Flash
                </th>
              </tr>
            </thead>
            <MachineRows view={view} now={frame.now} />
          </table>
        </div>
        {view.total > 0 ? <div class="card-footer">{pager}</div> : null}
      </div>
    </Layout>
  );
}

// ---------------------------------------------------------------------------------------------
// Adding a machine
// ---------------------------------------------------------------------------------------------

/** Back to the list with an error and what was typed, so it can be corrected. */
function refuseAdd(
  reply: FastifyReply,
  error: string,
  values: AddValues,
  machine?: string,
): FastifyReply {
  return seeOther(
    reply,
    hrefWith(LIST_PATH, {
      error,
      machine,
      add_mac: machine === undefined ? values.mac : undefined,
      add_labels: machine === undefined ? values.labels : undefined,
    }),
  );
}

function field(body: unknown, name: string): string {
  if (typeof body !== 'object' || body === null) return '';
  const value = (body as Record<string, unknown>)[name];
  return typeof value === 'string' ? value : '';
}

async function addMachine(
  ctx: WebContext,
  req: FastifyRequest,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const values: AddValues = {
    mac: field(req.body, 'mac').trim().slice(0, 64),
    labels: field(req.body, 'labels').slice(0, 2048),
  };
  if (values.mac === '') {
    return refuseAdd(reply, 'MAC address: required, like 52:54:00:12:34:56.', values);
  }
  const mac = parseMac(values.mac);
  if (mac === null) {
    return refuseAdd(
      reply,
      `MAC address: ${JSON.stringify(values.mac)} is not a MAC; write six pairs of hex ` +
        'digits separated by colons or hyphens, like 52:54:00:12:34:56.',
      values,
    );
  }
  const labels = values.labels
    .split(',')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  // The JSON API's own validation and defaults: a new machine is what PUT would make of it.
  const parsed = parseMachineUpsert({ labels });
  if (!parsed.ok) return refuseAdd(reply, `${parsed.message}.`, values);
  const binding = parsed.binding;

  const at = ctx.now();
  const event: NewEvent = {
    kind: 'machine.created',
    summary: `operator created machine ${mac} (${binding.boot_mode})`,
    subjectKind: 'machine',
    subjectId: mac,
    actor: 'operator',
    sourceIp: clientIp(req, ctx.trustedProxy),
    details: {
      bty_image_ref: binding.bty_image_ref,
      boot_mode: binding.boot_mode,
      sanboot_drive: binding.sanboot_drive,
      labels: [...binding.labels],
      target_disk_serial: binding.target_disk_serial,
    },
  };
  let id: number | null;
  try {
    id = await ctx.database.db.transaction().execute(async (tx) => {
      // Insert-if-absent: a known MAC (or one created a moment ago by a PXE boot) stays as is.
      if (!(await createMachineWithBinding(tx, mac, binding, at))) return null;
      await replaceLabels(tx, mac, binding.labels);
      return appendEvent(tx, event, at);
    });
  } catch (err) {
    if (isBtyError(err)) return refuseAdd(reply, err.message, values);
    throw err;
  }
  if (id === null) {
    return refuseAdd(
      reply,
      `Machine ${mac} already exists: nothing was changed. Edit it on its own page.`,
      values,
      mac,
    );
  }
  ctx.bus.publish({ type: 'machine', mac, change: 'created' });
  publishEvent(ctx, id, event);
  return seeOther(reply, `/ui/machines/${mac}`);
}

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

export function registerMachinesPage(app: FastifyInstance, ctx: WebContext): void {
  const preHandler = uiGuard(ctx);
  app.get(LIST_PATH, { preHandler, schema: { hide: true } }, async (req, reply) => {
    const frame = frameOf(ctx, req, reply, 'machines');
    const view = await loadView(ctx, req.query);
    return sendPage(reply, <MachinesPage frame={frame} view={view} query={req.query} />);
  });

  // A static path: Fastify prefers it over the machine page's `/ui/machines/:mac`.
  app.get(ROWS_PATH, { preHandler, schema: { hide: true } }, async (req, reply) => {
    const view = await loadView(ctx, req.query);
    return sendFragment(reply, <MachineRows view={view} now={ctx.now()} />);
  });

  app.post(LIST_PATH, { preHandler, schema: { hide: true } }, (req, reply) =>
    addMachine(ctx, req, reply),
  );
}
