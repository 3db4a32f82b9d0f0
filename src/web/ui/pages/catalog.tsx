/**
 * The Catalog page (`GET /ui/catalog`): every image entry with the machines bound to it, and the
 * forms that change the catalog — add one entry by URL (`POST /ui/catalog/entries`), import a
 * catalog TOML uploaded or fetched from a URL (`POST /ui/catalog/import`, multipart), delete an
 * entry (`POST /ui/catalog/{ref}/delete`: only with `confirm=1`, set by the browser dialog or
 * posted by the confirmation page that answers a delete without it). Each applies the JSON API's own operations
 * (routes/catalog.ts), so validation, refusals and audit events are the same either way.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { IMAGE_FORMATS } from '../../../core/formats.ts';
import { REMOTE_CATALOG_MAX_BYTES } from '../../../catalog/load.ts';
import { clientIp, type WebContext } from '../../context.ts';
import { getCatalogEntry, listCatalogEntries, type StoredCatalogEntry } from '../../db/catalog.ts';
import {
  addEntry,
  importCatalog,
  importFromWithcache,
  importUrlProblem,
  MAX_SRC_LENGTH,
  removeEntry,
  type EntryInput,
  type ImportOrigin,
} from '../../routes/catalog.ts';
import { artifactsOf, cacheStateOf, type ArtifactCache, type CacheState } from '../../artifacts.ts';
import { cacheable } from '../../plan-image.ts';
import { downloadBound, downloadEntries, removeCached } from '../../routes/cache.ts';
import { CopyButton, EmptyRow, liveTrigger } from '../components.tsx';
import { formatBytes, formatCount, formatRate, shortHash } from '../format.ts';
import { frameOf, refuseForgery, uiGuard, type Frame } from '../guard.ts';
import { seeOther, sendFragment, sendPage } from '../html.ts';
import { Csrf, Layout, type PageAlert } from '../layout.tsx';
import { closeAfter, multipartForm, sessionOnlyGuard } from '../multipart.ts';
import { queryText } from '../table.ts';

// ---------------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------------

/** The add form's fields as typed (kept when the entry is refused). */
export interface AddEntryValues {
  name: string;
  src: string;
  format: string;
  sha256: string;
  size_bytes: string;
  arch: string;
  description: string;
}

const NO_VALUES: AddEntryValues = {
  name: '',
  src: '',
  format: '',
  sha256: '',
  size_bytes: '',
  arch: '',
  description: '',
};

/** A refused form: the message and, when it names one, the field it is about. */
interface FormError {
  message: string;
  field: string | null;
}

/** Messages from routes/catalog.ts start with the field (`sha256: must be …`). */
function formError(message: string): FormError {
  const field = /^([a-z_0-9]+)[ :]/.exec(message)?.[1] ?? null;
  return { message, field };
}

const BOUND_SHOWN = 5;

/** Every binding, grouped by ref, MACs in order. */
async function boundMachines(ctx: WebContext): Promise<Map<string, string[]>> {
  const rows = await ctx.database.db
    .selectFrom('machines')
    .select(['mac', 'bty_image_ref'])
    .where('bty_image_ref', 'is not', null)
    .orderBy('mac')
    .execute();
  const byRef = new Map<string, string[]>();
  for (const row of rows) {
    const ref = row.bty_image_ref!;
    const macs = byRef.get(ref) ?? [];
    macs.push(row.mac);
    byRef.set(ref, macs);
  }
  return byRef;
}

function machineCount(n: number): string {
  return `${formatCount(n)} machine${n === 1 ? '' : 's'}`;
}

function BoundCell({ entryRef, macs }: { entryRef: string; macs: readonly string[] }) {
  if (macs.length === 0) return <span class="text-body-secondary">none</span>;
  return (
    <div class="bound-machines">
      <span class="badge text-bg-primary me-1" title={`${machineCount(macs.length)} bound`}>
        {macs.length}
      </span>
      {macs.slice(0, BOUND_SHOWN).map((mac) => (
        <a class="me-1 font-monospace small" href={`/ui/machines/${mac}`}>
          {mac}
        </a>
      ))}
      {macs.length > BOUND_SHOWN ? (
        <a class="small" href={`/ui/machines?q=${entryRef}`}>
          +{macs.length - BOUND_SHOWN} more
        </a>
      ) : null}
    </div>
  );
}

/** A small POST button for one entry's cache (every form carries the CSRF token). */
function CacheAction({
  entry,
  action,
  csrf,
  label,
  icon,
  tone,
}: {
  entry: StoredCatalogEntry;
  action: 'download' | 'cancel' | 'remove';
  csrf: string;
  label: string;
  icon: string;
  tone: string;
}) {
  return (
    <form method="post" action={`/ui/catalog/${entry.ref}/cache/${action}`} class="d-inline">
      <Csrf token={csrf} />
      <button
        type="submit"
        class={`btn btn-sm btn-outline-${tone} cache-${action}`}
        aria-label={`${label} ${entry.name}`}
        title={label}
      >
        <i class={`bi ${icon}`} aria-hidden="true"></i>
      </button>
    </form>
  );
}

/** The cache column: state, progress while downloading, and what the operator can do. */
function CacheCell({
  entry,
  state,
  csrf,
}: {
  entry: StoredCatalogEntry;
  state: CacheState | null;
  csrf: string;
}) {
  if (state === null) {
    return (
      <span class="text-body-secondary" title="The live environment reads file:// sources itself">
        n/a
      </span>
    );
  }
  const download = (
    <CacheAction
      entry={entry}
      action="download"
      csrf={csrf}
      label="Download into the cache"
      icon="bi-cloud-download"
      tone="primary"
    />
  );
  switch (state.state) {
    case 'cached':
      return (
        <div class="cache-state text-nowrap" data-state="cached">
          <span class="badge text-bg-success me-1">cached</span>
          <span class="small me-1" title={state.digest ?? undefined}>
            {formatBytes(state.size ?? 0)}
          </span>
          <CacheAction
            entry={entry}
            action="remove"
            csrf={csrf}
            label="Remove the cached copy"
            icon="bi-x-lg"
            tone="secondary"
          />
        </div>
      );
    case 'queued':
    case 'running': {
      const total = state.bytes_total;
      const percent = total ? Math.min(100, Math.floor((state.bytes_done * 100) / total)) : null;
      const text =
        state.state === 'queued'
          ? 'queued'
          : `${formatBytes(state.bytes_done)}${total ? ` of ${formatBytes(total)}` : ''}` +
            (state.rate > 0 ? `, ${formatRate(state.rate)}` : '');
      return (
        <div class="cache-state" data-state={state.state} style="min-width: 12rem">
          <div
            class="progress mb-1"
            role="progressbar"
            aria-label={`Cache download of ${entry.name}`}
            aria-valuenow={percent ?? undefined}
            aria-valuemin={0}
            aria-valuemax={100}
          >
            <div
              class={`progress-bar${percent === null ? ' progress-bar-striped progress-bar-animated' : ''}`}
              style={`width: ${percent ?? 100}%`}
            >
              {percent !== null ? `${percent}%` : ''}
            </div>
          </div>
          <span class="small text-body-secondary me-1">
            {state.pull_through ? 'filling for a machine: ' : ''}
            {text}
          </span>
          <CacheAction
            entry={entry}
            action="cancel"
            csrf={csrf}
            label="Cancel the download"
            icon="bi-stop-circle"
            tone="danger"
          />
        </div>
      );
    }
    case 'failed':
    case 'cancelled':
      return (
        <div class="cache-state text-nowrap" data-state={state.state}>
          <span
            class={`badge ${state.state === 'failed' ? 'text-bg-danger' : 'text-bg-secondary'} me-1`}
            title={state.error ?? undefined}
          >
            {state.state}
          </span>
          {download}
          {state.error ? (
            <div class="small text-danger-emphasis cache-error">{state.error}</div>
          ) : null}
        </div>
      );
    case 'absent':
      return (
        <div class="cache-state text-nowrap" data-state="absent">
          <span class="text-body-secondary small me-1">not cached</span>
          {download}
        </div>
      );
  }
}

function EntryRow({
  entry,
  macs,
  csrf,
  cache,
}: {
  entry: StoredCatalogEntry;
  macs: readonly string[];
  csrf: string;
  cache: CacheState | null;
}) {
  const question =
    `Delete the catalog entry ${entry.name}?` +
    (macs.length > 0
      ? ` ${machineCount(macs.length)} bound to it will have no image to flash until rebound.`
      : '');
  return (
    <tr data-ref={entry.ref}>
      <td>
        <span class="fw-semibold entry-name">{entry.name}</span>
        {entry.description ? (
          <div class="small text-body-secondary entry-description">{entry.description}</div>
        ) : null}
      </td>
      <td>{entry.format ?? <span class="text-body-secondary">unknown</span>}</td>
      <td
        class="text-nowrap"
        title={entry.size_bytes !== null ? `${formatCount(entry.size_bytes)} bytes` : undefined}
      >
        {entry.size_bytes !== null ? (
          formatBytes(entry.size_bytes)
        ) : (
          <span class="text-body-secondary">unknown</span>
        )}
      </td>
      <td>{entry.arch ?? <span class="text-body-secondary">any</span>}</td>
      <td class="text-nowrap">
        {entry.sha256 ? (
          <>
            <code title={entry.sha256}>{shortHash(entry.sha256)}</code>
            <CopyButton value={entry.sha256} label="sha256" />
          </>
        ) : (
          <span
            class="text-warning-emphasis"
            title="Not in /catalog.toml: the live environment cannot verify it"
          >
            none
          </span>
        )}
      </td>
      <td class="text-truncate" style="max-width: 22rem" title={entry.src}>
        <span class="small">{entry.src}</span>
      </td>
      <td class="text-nowrap">
        <code title={entry.ref}>{shortHash(entry.ref)}</code>
        <CopyButton value={entry.ref} label="ref" />
      </td>
      <td>
        <BoundCell entryRef={entry.ref} macs={macs} />
      </td>
      <td>
        <CacheCell entry={entry} state={cache} csrf={csrf} />
      </td>
      <td class="text-end">
        <form method="post" action={`/ui/catalog/${entry.ref}/delete`} data-confirm={question}>
          <Csrf token={csrf} />
          {/* bty.js sets it to 1 when the operator accepts the dialog; left empty (no
              JavaScript), the server answers the confirmation page instead of deleting. */}
          <input type="hidden" name="confirm" value="" />
          <button
            type="submit"
            class="btn btn-sm btn-outline-danger"
            aria-label={`Delete ${entry.name}`}
          >
            <i class="bi bi-trash" aria-hidden="true"></i>
          </button>
        </form>
      </td>
    </tr>
  );
}

/** Each entry's cache state (null for sources the cache does not take). */
function cacheStates(
  cache: ArtifactCache,
  entries: readonly StoredCatalogEntry[],
): Map<string, CacheState | null> {
  return new Map(entries.map((e) => [e.ref, cacheable(e.src) ? cacheStateOf(cache, e.src) : null]));
}

const TABLE_FRAGMENT = '/ui/catalog/table';
const CARD_FRAGMENT = '/ui/catalog/cache-card';

function CatalogTable({
  entries,
  bound,
  csrf,
  cache,
}: {
  entries: readonly StoredCatalogEntry[];
  bound: ReadonlyMap<string, readonly string[]>;
  csrf: string;
  cache: ReadonlyMap<string, CacheState | null>;
}) {
  return (
    // Refetched when a cache download moves (at most once a second, and once after the last).
    <div
      class="table-responsive mb-4"
      id="catalog-rows"
      hx-get={TABLE_FRAGMENT}
      hx-trigger={liveTrigger('cache')}
      hx-swap="outerHTML"
    >
      <table class="table table-sm table-hover align-middle" id="catalog-table">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Format</th>
            <th scope="col">Size</th>
            <th scope="col">Arch</th>
            <th scope="col">sha256</th>
            <th scope="col">Source</th>
            <th scope="col">Ref</th>
            <th scope="col">Bound machines</th>
            <th scope="col">Cache</th>
            <th scope="col">
              <span class="visually-hidden">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {entries.length === 0 ? (
            <EmptyRow columns={10}>
              The catalog is empty. Add an image by its URL below, or import a catalog TOML (a file,
              or an http(s):// or oras:// URL). Machines can only be bound to images listed here.
            </EmptyRow>
          ) : (
            entries.map((entry) => (
              <EntryRow
                entry={entry}
                macs={bound.get(entry.ref) ?? []}
                csrf={csrf}
                cache={cache.get(entry.ref) ?? null}
              />
            ))
          )}
        </tbody>
      </table>
    </div>
  );
}

function TextField({
  id,
  label,
  value,
  error,
  help,
  ...rest
}: {
  id: keyof AddEntryValues;
  label: string;
  value: string;
  error: FormError | null;
  help?: string;
  placeholder?: string;
  required?: boolean;
  maxLength?: number;
  inputMode?: 'numeric';
  pattern?: string;
}) {
  const invalid = error?.field === id;
  return (
    <div class="col-md-6">
      <label for={`add-${id}`} class="form-label">
        {label}
      </label>
      <input
        type="text"
        id={`add-${id}`}
        name={id}
        value={value}
        class={`form-control form-control-sm${invalid ? ' is-invalid' : ''}`}
        aria-invalid={invalid ? 'true' : undefined}
        aria-describedby={help ? `add-${id}-help` : undefined}
        {...rest}
      />
      {help ? (
        <div class="form-text" id={`add-${id}-help`}>
          {help}
        </div>
      ) : null}
    </div>
  );
}

function AddEntryForm({
  csrf,
  values,
  error,
}: {
  csrf: string;
  values: AddEntryValues;
  error: FormError | null;
}) {
  return (
    <div class="card mb-3">
      <div class="card-header">
        <h2 class="h6 mb-0">Add an image by URL</h2>
      </div>
      <form method="post" action="/ui/catalog/entries" id="add-entry" class="card-body">
        <Csrf token={csrf} />
        <div class="row g-2 mb-3">
          <TextField
            id="src"
            label="Source URL"
            value={values.src}
            error={error}
            required
            maxLength={MAX_SRC_LENGTH}
            placeholder="https://example.org/images/debian-13-amd64.img.zst"
            help="http://, https:// or oras:// — where the machines download the image from."
          />
          <TextField
            id="name"
            label="Name"
            value={values.name}
            error={error}
            placeholder="from the URL's file name"
            help="Unique in the catalog."
          />
          <div class="col-md-3">
            <label for="add-format" class="form-label">
              Format
            </label>
            <select
              id="add-format"
              name="format"
              class={`form-select form-select-sm${error?.field === 'format' ? ' is-invalid' : ''}`}
            >
              <option value="" selected={values.format === ''}>
                from the name
              </option>
              {IMAGE_FORMATS.map((f) => (
                <option value={f} selected={values.format === f}>
                  {f}
                </option>
              ))}
            </select>
          </div>
          <div class="col-md-3">
            <label for="add-arch" class="form-label">
              Arch
            </label>
            <input
              type="text"
              id="add-arch"
              name="arch"
              value={values.arch}
              placeholder="from the name"
              class={`form-control form-control-sm${error?.field === 'arch' ? ' is-invalid' : ''}`}
            />
          </div>
          <TextField
            id="sha256"
            label="sha256"
            value={values.sha256}
            error={error}
            placeholder="64 hex digits (optional)"
            help="Without it the entry is left out of /catalog.toml: the live environment cannot verify what it writes."
          />
          <TextField
            id="size_bytes"
            label="Size in bytes"
            value={values.size_bytes}
            error={error}
            inputMode="numeric"
            placeholder="optional"
          />
          <div class="col-12">
            <label for="add-description" class="form-label">
              Description
            </label>
            <textarea
              id="add-description"
              name="description"
              rows={2}
              class={`form-control form-control-sm${error?.field === 'description' ? ' is-invalid' : ''}`}
            >
              {values.description}
            </textarea>
          </div>
        </div>
        <button type="submit" class="btn btn-primary btn-sm">
          <i class="bi bi-plus-lg me-1" aria-hidden="true"></i>Add entry
        </button>
      </form>
    </div>
  );
}

function ImportForm({ csrf, url, error }: { csrf: string; url: string; error: string | null }) {
  return (
    <div class="card mb-3">
      <div class="card-header">
        <h2 class="h6 mb-0">Import a catalog</h2>
      </div>
      {/* The token first: the server checks it before it reads the file. */}
      <form
        method="post"
        action="/ui/catalog/import"
        enctype="multipart/form-data"
        id="import-catalog"
        class="card-body"
      >
        <Csrf token={csrf} />
        <p class="small text-body-secondary">
          A catalog TOML (<code>version = 1</code> and <code>[[images]]</code> tables). New sources
          are added, known ones updated; entries not in the file stay. All entries or none.
        </p>
        <div class="mb-2">
          <label for="import-url" class="form-label">
            Catalog URL
          </label>
          <input
            type="url"
            id="import-url"
            name="url"
            value={url}
            maxLength={MAX_SRC_LENGTH}
            placeholder="https://example.org/catalog.toml or oras://registry/repo:tag"
            class={`form-control form-control-sm${error && url ? ' is-invalid' : ''}`}
          />
        </div>
        <div class="mb-3">
          <label for="import-file" class="form-label">
            or a file
          </label>
          <input
            type="file"
            id="import-file"
            name="file"
            accept=".toml,application/toml,text/plain"
            class="form-control form-control-sm"
          />
        </div>
        <button type="submit" class="btn btn-primary btn-sm">
          <i class="bi bi-box-arrow-in-down me-1" aria-hidden="true"></i>Import
        </button>
      </form>
    </div>
  );
}

/** What the cache card shows. */
interface CacheSummary {
  mode: 'pull-through' | 'curated';
  usedBytes: number;
  maxBytes: number;
  entries: number;
  withcache: string;
}

function cacheSummaryOf(cache: ArtifactCache): CacheSummary {
  return {
    mode: cache.mode,
    usedBytes: cache.store.usedBytes(),
    maxBytes: cache.store.maxBytes,
    entries: cache.store.entries().length,
    withcache: cache.withcacheBase,
  };
}

function CacheCard({ summary, csrf }: { summary: CacheSummary; csrf: string }) {
  return (
    // Its usage line follows downloads live, like the table.
    <div
      class="card mb-3"
      id="cache-card"
      hx-get={CARD_FRAGMENT}
      hx-trigger={liveTrigger('cache')}
      hx-swap="outerHTML"
    >
      <div class="card-body py-2 d-flex flex-wrap align-items-center gap-2">
        <div class="me-auto small">
          <strong>Artifact cache</strong> ({summary.mode}):{' '}
          {summary.mode === 'pull-through'
            ? 'a machine asking for an image that is not cached yet fills the cache while it downloads.'
            : 'machines get an image from the cache only once it was downloaded here.'}{' '}
          <span id="cache-usage">
            {formatCount(summary.entries)} cached, {formatBytes(summary.usedBytes)}
            {summary.maxBytes > 0 ? ` of ${formatBytes(summary.maxBytes)}` : ''}
          </span>
          .
          {summary.withcache ? (
            <div class="text-warning-emphasis">
              Plans send machines to the withcache at <code>{summary.withcache}</code>, not to this
              cache.
            </div>
          ) : null}
        </div>
        <form method="post" action="/ui/catalog/cache/download-bound" class="d-inline">
          <Csrf token={csrf} />
          <button type="submit" class="btn btn-sm btn-outline-primary" id="download-bound">
            <i class="bi bi-cloud-download me-1" aria-hidden="true"></i>Download all bound images
          </button>
        </form>
        {summary.withcache ? (
          <form method="post" action="/ui/catalog/import-withcache" class="d-inline">
            <Csrf token={csrf} />
            <button type="submit" class="btn btn-sm btn-outline-secondary" id="import-withcache">
              <i class="bi bi-box-arrow-in-down me-1" aria-hidden="true"></i>Import from withcache
            </button>
          </form>
        ) : null}
      </div>
    </div>
  );
}

interface CatalogView {
  frame: Frame;
  entries: readonly StoredCatalogEntry[];
  bound: ReadonlyMap<string, readonly string[]>;
  cache: ReadonlyMap<string, CacheState | null>;
  cacheSummary: CacheSummary;
  alerts: readonly PageAlert[];
  addValues: AddEntryValues;
  addError: FormError | null;
  importUrl: string;
  importError: string | null;
}

export function CatalogPage(view: CatalogView) {
  const { frame, entries } = view;
  return (
    <Layout
      frame={frame}
      title="Catalog"
      alerts={view.alerts}
      actions={
        <a class="btn btn-sm btn-outline-secondary" href="/catalog.toml">
          <i class="bi bi-filetype-toml me-1" aria-hidden="true"></i>catalog.toml
        </a>
      }
    >
      <p class="text-body-secondary small">
        {entries.length === 1 ? '1 image' : `${formatCount(entries.length)} images`}. Each entry is
        keyed by its ref (the sha256 of its canonical source), which is what a machine is bound to.
      </p>
      <CacheCard summary={view.cacheSummary} csrf={frame.csrf} />
      <CatalogTable entries={entries} bound={view.bound} csrf={frame.csrf} cache={view.cache} />
      <div class="row">
        <div class="col-lg-7">
          <AddEntryForm csrf={frame.csrf} values={view.addValues} error={view.addError} />
        </div>
        <div class="col-lg-5">
          <ImportForm csrf={frame.csrf} url={view.importUrl} error={view.importError} />
        </div>
      </div>
    </Layout>
  );
}

/** Bound machines named one by one on the confirmation page; the rest are a search link. */
const CONFIRM_BOUND_SHOWN = 50;

/** What deleting an entry takes away, and which machines it leaves pointing at nothing. */
function DeleteConfirmPage({
  frame,
  entry,
  macs,
}: {
  frame: Frame;
  entry: StoredCatalogEntry;
  macs: readonly string[];
}) {
  return (
    <Layout frame={frame} title={`Delete catalog entry ${entry.name}?`}>
      <div class="card border-danger mb-3" id="delete-summary">
        <div class="card-body">
          <p>Deleting removes this entry from the catalog:</p>
          <dl class="row small">
            <dt class="col-sm-2">Name</dt>
            <dd class="col-sm-10" id="delete-name">
              {entry.name}
            </dd>
            <dt class="col-sm-2">Source</dt>
            <dd class="col-sm-10 text-break" id="delete-src">
              {entry.src}
            </dd>
            <dt class="col-sm-2">Ref</dt>
            <dd class="col-sm-10 font-monospace text-break">{entry.ref}</dd>
          </dl>
          {macs.length === 0 ? (
            <p class="mb-0" id="delete-bound">
              No machine is bound to it.
            </p>
          ) : (
            <div class="alert alert-warning mb-0" id="delete-bound">
              <p class="mb-2">
                {machineCount(macs.length)} bound to it keep{macs.length === 1 ? 's' : ''} that
                binding, to an image that is no longer in the catalog: they have nothing to flash
                until you bind them to another entry.
              </p>
              <ul class="mb-0 font-monospace small">
                {macs.slice(0, CONFIRM_BOUND_SHOWN).map((mac) => (
                  <li>
                    <a href={`/ui/machines/${mac}`}>{mac}</a>
                  </li>
                ))}
              </ul>
              {macs.length > CONFIRM_BOUND_SHOWN ? (
                <a class="small" href={`/ui/machines?q=${entry.ref}`}>
                  and {formatCount(macs.length - CONFIRM_BOUND_SHOWN)} more
                </a>
              ) : null}
            </div>
          )}
        </div>
      </div>
      <form id="confirm-delete-form" method="post" action={`/ui/catalog/${entry.ref}/delete`}>
        <Csrf token={frame.csrf} />
        <input type="hidden" name="confirm" value="1" />
        <button type="submit" id="confirm-delete" class="btn btn-danger me-2">
          <i class="bi bi-trash me-1" aria-hidden="true"></i>Delete entry
        </button>
        <a id="cancel-delete" class="btn btn-outline-secondary" href="/ui/catalog">
          Cancel
        </a>
      </form>
    </Layout>
  );
}

/** Banners from the query a form's 303 left. */
async function alertsFromQuery(ctx: WebContext, query: unknown): Promise<PageAlert[]> {
  const alerts: PageAlert[] = [];
  const added = queryText(query, 'added');
  if (added) alerts.push({ kind: 'success', text: `Added catalog entry ${added}.` });
  const imported = queryText(query, 'imported');
  if (imported) {
    const n = Number(imported);
    const a = queryText(query, 'added_count') || '0';
    const u = queryText(query, 'updated_count') || '0';
    alerts.push({
      kind: 'success',
      text: `Imported ${n} ${n === 1 ? 'entry' : 'entries'} (added ${a}, updated ${u}).`,
    });
  }
  const deleted = queryText(query, 'deleted');
  if (deleted) {
    alerts.push({ kind: 'success', text: `Deleted catalog entry ${deleted}.` });
    // The entry is gone but bindings stay: name the machines that now point at nothing.
    const ref = queryText(query, 'ref').toLowerCase();
    if (/^[0-9a-f]{64}$/.test(ref)) {
      const still = (await boundMachines(ctx)).get(ref) ?? [];
      if (still.length > 0) {
        const shown = still.slice(0, 20).join(', ');
        alerts.push({
          kind: 'warning',
          text:
            `${machineCount(still.length)} still bound to ${deleted}: ${shown}` +
            (still.length > 20 ? ` and ${still.length - 20} more` : '') +
            '. They have no image to flash until you bind them to another entry.',
        });
      }
    }
  }
  const cacheNote = queryText(query, 'cache');
  if (cacheNote) alerts.push({ kind: 'success', text: cacheNote });
  const error = queryText(query, 'error');
  if (error) alerts.push({ kind: 'danger', text: error });
  return alerts;
}

// ---------------------------------------------------------------------------------------------
// The routes
// ---------------------------------------------------------------------------------------------

/** A form field as a string ('' when absent). */
function field(body: unknown, name: string): string {
  const v =
    typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[name] : '';
  return typeof v === 'string' ? v : '';
}

/** The add form's values as the JSON route's input: empty means absent, digits a number. */
function entryInput(values: AddEntryValues): EntryInput {
  const size = values.size_bytes.trim();
  return {
    src: values.src.trim(),
    name: values.name.trim() || undefined,
    format: values.format.trim() || undefined,
    sha256: values.sha256.trim() || undefined,
    // Not digits: handed on as text, so the validator names the field.
    size_bytes: size === '' ? undefined : /^\d+$/.test(size) ? Number(size) : size,
    arch: values.arch.trim() || undefined,
    description: values.description.trim() === '' ? undefined : values.description,
  };
}

const CATALOG_REF = /^[0-9a-fA-F]{64}$/;

export function registerCatalogPage(app: FastifyInstance, ctx: WebContext): void {
  const page = async (
    req: FastifyRequest,
    reply: FastifyReply,
    status: number,
    extra: Partial<CatalogView> = {},
  ) => {
    const frame = frameOf(ctx, req, reply, 'catalog');
    const entries = await listCatalogEntries(ctx.database.db);
    const cache = artifactsOf(ctx);
    const view: CatalogView = {
      frame,
      entries,
      bound: await boundMachines(ctx),
      cache: cacheStates(cache, entries),
      cacheSummary: cacheSummaryOf(cache),
      alerts: await alertsFromQuery(ctx, req.query),
      addValues: NO_VALUES,
      addError: null,
      importUrl: '',
      importError: null,
      ...extra,
    };
    return sendPage(reply, CatalogPage(view), status);
  };
  const ipOf = (req: FastifyRequest) => clientIp(req, ctx.trustedProxy);

  app.get('/ui/catalog', { preHandler: uiGuard(ctx), schema: { hide: true } }, (req, reply) =>
    page(req, reply, 200),
  );

  app.get(
    TABLE_FRAGMENT,
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const frame = frameOf(ctx, req, reply, 'catalog');
      const entries = await listCatalogEntries(ctx.database.db);
      return sendFragment(
        reply,
        <CatalogTable
          entries={entries}
          bound={await boundMachines(ctx)}
          csrf={frame.csrf}
          cache={cacheStates(artifactsOf(ctx), entries)}
        />,
      );
    },
  );

  app.get(CARD_FRAGMENT, { preHandler: uiGuard(ctx), schema: { hide: true } }, (req, reply) =>
    sendFragment(
      reply,
      <CacheCard
        summary={cacheSummaryOf(artifactsOf(ctx))}
        csrf={frameOf(ctx, req, reply, 'catalog').csrf}
      />,
    ),
  );

  const back = (reply: FastifyReply, key: 'cache' | 'error', text: string) =>
    seeOther(reply, `/ui/catalog?${new URLSearchParams({ [key]: text })}`);

  app.post<{ Params: { ref: string; action: string } }>(
    '/ui/catalog/:ref/cache/:action',
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const { action } = req.params;
      const ref = req.params.ref.toLowerCase();
      const entry = CATALOG_REF.test(ref) ? await getCatalogEntry(ctx.database.db, ref) : null;
      if (!entry) return back(reply, 'error', `No catalog entry with ref ${ref}: nothing changed.`);
      const cache = artifactsOf(ctx);
      if (action === 'download') {
        if (!cacheable(entry.src)) {
          return back(reply, 'error', `${entry.name}: a file:// source is not cached.`);
        }
        const result = await downloadEntries(ctx, [entry], ipOf(req), 'entry');
        return back(
          reply,
          'cache',
          result.cached.length > 0
            ? `${entry.name} is cached already.`
            : `Downloading ${entry.name} into the cache.`,
        );
      }
      if (action === 'cancel') {
        const state = cacheStateOf(cache, entry.src).state;
        if ((state !== 'queued' && state !== 'running') || !cache.manager.cancel(entry.src)) {
          return back(reply, 'error', `No download of ${entry.name} is under way.`);
        }
        return back(reply, 'cache', `Cancelled the download of ${entry.name}.`);
      }
      if (action === 'remove') {
        const removed = await removeCached(ctx, entry.ref, ipOf(req));
        if (removed === 'busy') {
          return back(reply, 'error', `${entry.name} is downloading: cancel it first.`);
        }
        return removed === 'removed'
          ? back(reply, 'cache', `Removed the cached copy of ${entry.name}.`)
          : back(reply, 'error', `${entry.name} was not cached.`);
      }
      return back(reply, 'error', `Unknown cache action ${JSON.stringify(action.slice(0, 40))}.`);
    },
  );

  app.post(
    '/ui/catalog/cache/download-bound',
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const result = await downloadBound(ctx, ipOf(req));
      const parts = [
        `${result.downloads.length} download${result.downloads.length === 1 ? '' : 's'} started`,
        `${result.cached.length} already cached`,
        ...(result.skipped.length > 0 ? [`${result.skipped.length} cannot be cached`] : []),
      ];
      return back(reply, 'cache', `Bound images: ${parts.join(', ')}.`);
    },
  );

  app.post(
    '/ui/catalog/import-withcache',
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const result = await importFromWithcache(ctx, ipOf(req));
      if (!result.ok) return back(reply, 'error', `Nothing was imported: ${result.message}`);
      const { summary } = result;
      const q = new URLSearchParams({
        imported: String(summary.entries.length),
        added_count: String(summary.added),
        updated_count: String(summary.updated),
      });
      return seeOther(reply, `/ui/catalog?${q}`);
    },
  );

  app.post(
    '/ui/catalog/entries',
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const values: AddEntryValues = {
        name: field(req.body, 'name'),
        src: field(req.body, 'src'),
        format: field(req.body, 'format'),
        sha256: field(req.body, 'sha256'),
        size_bytes: field(req.body, 'size_bytes'),
        arch: field(req.body, 'arch'),
        description: field(req.body, 'description'),
      };
      const result = await addEntry(ctx, entryInput(values), ipOf(req));
      if (!result.ok) {
        return page(req, reply, result.status, {
          addValues: values,
          addError: formError(result.message),
          alerts: [{ kind: 'danger', text: `Entry not added: ${result.message}` }],
        });
      }
      return seeOther(reply, `/ui/catalog?added=${encodeURIComponent(result.entry.name)}`);
    },
  );

  app.post<{ Params: { ref: string } }>(
    '/ui/catalog/:ref/delete',
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const raw = req.params.ref;
      if (!CATALOG_REF.test(raw)) {
        return seeOther(
          reply,
          `/ui/catalog?error=${encodeURIComponent('Not a catalog ref (64 hexadecimal characters): nothing deleted.')}`,
        );
      }
      const ref = raw.toLowerCase();
      if (field(req.body, 'confirm') !== '1') {
        const entry = await getCatalogEntry(ctx.database.db, ref);
        if (entry) {
          const macs = (await boundMachines(ctx)).get(ref) ?? [];
          return sendPage(
            reply,
            <DeleteConfirmPage
              frame={frameOf(ctx, req, reply, 'catalog')}
              entry={entry}
              macs={macs}
            />,
          );
        }
        // Already gone: nothing to confirm, the same answer as a confirmed delete.
      }
      const removed = await removeEntry(ctx, ref, ipOf(req));
      if (!removed) {
        return seeOther(
          reply,
          `/ui/catalog?error=${encodeURIComponent(`No catalog entry with ref ${ref}: it was already deleted.`)}`,
        );
      }
      const q = new URLSearchParams({ deleted: removed.entry.name, ref });
      return seeOther(reply, `/ui/catalog?${q}`);
    },
  );

  app.post(
    '/ui/catalog/import',
    {
      preHandler: sessionOnlyGuard(ctx),
      schema: { hide: true },
    },
    async (req, reply) => {
      const form = await multipartForm(req, async (file) => {
        // A catalog is at most 4 MiB, as when fetched from a URL.
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of file.file as AsyncIterable<Buffer>) {
          size += chunk.length;
          if (size > REMOTE_CATALOG_MAX_BYTES) {
            file.file.resume();
            return { name: file.filename, tooLarge: true, bytes: Buffer.alloc(0) };
          }
          chunks.push(chunk);
        }
        // An empty file is what some clients send for a file input left empty.
        if (size === 0) return null;
        return { name: file.filename, tooLarge: false, bytes: Buffer.concat(chunks) };
      });
      if (form.kind === 'forged') return refuseForgery(ctx, req, closeAfter(reply));
      const url = form.kind === 'ok' ? (form.fields.get('url') ?? '').trim() : '';
      const refuse = (message: string, status = 422) =>
        page(req, reply, status, {
          importUrl: url,
          importError: message,
          alerts: [{ kind: 'danger', text: `Nothing was imported: ${message}` }],
        });
      if (form.kind === 'broken') return refuse(`The form could not be read: ${form.message}`, 400);

      let origin: ImportOrigin;
      if (form.file && url) {
        return refuse('Give either a file or a URL, not both.');
      } else if (form.file) {
        if (form.file.tooLarge) {
          return refuse(
            `${form.file.name}: larger than ${formatBytes(REMOTE_CATALOG_MAX_BYTES)}`,
            413,
          );
        }
        origin = { text: form.file.bytes, source: `uploaded file ${form.file.name}` };
      } else if (url) {
        // From a browser only remote catalogs: a path would name a file on this server.
        if (!/^(https?|oras):\/\//i.test(url)) {
          return refuse(
            `url: must be an http://, https:// or oras:// URL, got ${JSON.stringify(url.slice(0, 80))}`,
          );
        }
        const problem = importUrlProblem(url);
        if (problem !== null) return refuse(problem);
        origin = { url };
      } else {
        return refuse('Choose a catalog file or give its URL.');
      }
      const result = await importCatalog(ctx, origin, ipOf(req));
      if (!result.ok) return refuse(result.message, result.status);
      const { summary } = result;
      const q = new URLSearchParams({
        imported: String(summary.entries.length),
        added_count: String(summary.added),
        updated_count: String(summary.updated),
      });
      return seeOther(reply, `/ui/catalog?${q}`);
    },
  );
}
