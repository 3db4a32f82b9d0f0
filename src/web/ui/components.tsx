/**
 * Pieces more than one page shows: badges, the pager, sortable headers, the flash-progress bar,
 * the copy button, times. Pure functions of their props.
 */
import type { ComponentChildren } from 'preact';
import { isFailureKind } from '../event-kinds.ts';
import { formatAgo, formatBytes, formatDuration, formatRate, formatTime } from './format.ts';
import { hrefWith, PAGE_SIZES, type Direction } from './table.ts';

/** What each boot mode does at the next PXE boot, in one line (also the form's help text). */
export const MODE_HELP: Record<string, string> = {
  'bty-inventory':
    'Boot the live environment once to report disks and hardware, then boot the local disk.',
  'bty-flash-once': 'Flash the bound image onto the target disk once, then boot the local disk.',
  'bty-flash-always': 'Flash the bound image onto the target disk at every PXE boot.',
  'bty-tui': 'Boot the live environment into the interactive wizard at the console.',
  'ipxe-exit': 'Leave PXE and let the firmware boot the next device (the local disk).',
  sanboot: 'Boot the local disk through iPXE (sanboot) from the given BIOS drive.',
};

const MODE_STYLE: Record<string, string> = {
  'bty-flash-always': 'text-bg-danger',
  'bty-flash-once': 'text-bg-warning',
  'bty-tui': 'text-bg-info',
  'bty-inventory': 'text-bg-primary',
  'ipxe-exit': 'text-bg-dark',
  sanboot: 'text-bg-secondary',
};

export function ModeBadge({ mode }: { mode: string }) {
  return (
    <span class={`badge ${MODE_STYLE[mode] ?? 'text-bg-secondary'}`} title={MODE_HELP[mode]}>
      {mode}
    </span>
  );
}

/** An audit-event kind, coloured by family; failures in the danger colour. */
export function KindBadge({ kind }: { kind: string }) {
  const family = kind.split('.')[0] ?? '';
  const style = isFailureKind(kind)
    ? 'text-bg-danger'
    : ({
        machine: 'text-bg-primary',
        netboot: 'text-bg-info',
        catalog: 'text-bg-success',
        auth: 'text-bg-secondary',
        settings: 'text-bg-warning',
      }[family] ?? 'text-bg-light border');
  return <span class={`badge ${style} kind-badge`}>{kind}</span>;
}

/** A time as UTC text with the relative age as a tooltip (and the reverse when `ago`). */
export function Time({ value, now, ago }: { value: string | null; now: Date; ago?: boolean }) {
  if (!value) return <span class="text-body-secondary">never</span>;
  const exact = formatTime(value);
  const relative = formatAgo(value, now);
  return (
    <time datetime={value} title={ago ? exact : relative}>
      {ago ? relative : exact}
    </time>
  );
}

export function CopyButton({ value, label }: { value: string; label: string }) {
  return (
    <button
      type="button"
      class="btn btn-link btn-sm p-0 ms-1 copy-button"
      data-copy={value}
      title={`Copy ${label}`}
      aria-label={`Copy ${label}`}
    >
      <i class="bi bi-clipboard" aria-hidden="true"></i>
    </button>
  );
}

/** "21–30 of 412", page links (±2 around the current one) and the page-size choice. */
export function Pager({
  path,
  params,
  page,
  last,
  perPage,
  total,
  label,
}: {
  path: string;
  params: Record<string, string | number | undefined>;
  page: number;
  last: number;
  perPage: number;
  total: number;
  label: string;
}) {
  const first = total === 0 ? 0 : (page - 1) * perPage + 1;
  const end = Math.min(total, page * perPage);
  const pages: number[] = [];
  for (let p = Math.max(1, page - 2); p <= Math.min(last, page + 2); p++) pages.push(p);
  const link = (p: number) => hrefWith(path, params, { page: p });
  return (
    <nav class="d-flex flex-wrap align-items-center gap-2" aria-label={`${label} pages`}>
      <span class="small text-body-secondary pager-summary">
        {first.toLocaleString('en-US')}–{end.toLocaleString('en-US')} of{' '}
        {total.toLocaleString('en-US')}
      </span>
      <ul class="pagination pagination-sm mb-0">
        <li class={`page-item${page <= 1 ? ' disabled' : ''}`}>
          <a class="page-link" href={link(Math.max(1, page - 1))} aria-label="Previous page">
            ‹
          </a>
        </li>
        {pages.map((p) => (
          <li class={`page-item${p === page ? ' active' : ''}`}>
            <a class="page-link" href={link(p)} aria-current={p === page ? 'page' : undefined}>
              {p}
            </a>
          </li>
        ))}
        <li class={`page-item${page >= last ? ' disabled' : ''}`}>
          <a class="page-link" href={link(Math.min(last, page + 1))} aria-label="Next page">
            ›
          </a>
        </li>
      </ul>
      <span class="small text-body-secondary">
        per page:{' '}
        {PAGE_SIZES.map((n) =>
          n === perPage ? (
            <strong class="mx-1">{n}</strong>
          ) : (
            <a class="mx-1" href={hrefWith(path, params, { per_page: n, page: 1 })}>
              {n}
            </a>
          ),
        )}
      </span>
    </nav>
  );
}

/** A column header that sorts by `column` (toggling the direction when already sorted by it). */
export function SortHeader({
  path,
  params,
  column,
  current,
  dir,
  children,
}: {
  path: string;
  params: Record<string, string | number | undefined>;
  column: string;
  current: string;
  dir: Direction;
  children: ComponentChildren;
}) {
  const active = column === current;
  const next: Direction = active && dir === 'asc' ? 'desc' : 'asc';
  return (
    <th scope="col" aria-sort={active ? (dir === 'asc' ? 'ascending' : 'descending') : undefined}>
      <a
        class="link-body-emphasis text-decoration-none"
        href={hrefWith(path, params, { sort: column, dir: next, page: 1 })}
      >
        {children}
        {active ? (
          <i
            class={`bi bi-caret-${dir === 'asc' ? 'up' : 'down'}-fill ms-1`}
            aria-hidden="true"
          ></i>
        ) : null}
      </a>
    </th>
  );
}

/** A flash in progress as the agent reports it (a stored row's `progress`, or a live message). */
export interface ProgressView {
  phase: string;
  bytes_done: number;
  bytes_total: number | null;
  rate_bps: number;
  eta_seconds?: number | null;
  resumes?: number;
  message?: string;
}

/** The final word on a flash, from `POST /pxe/{mac}/status`. */
export interface FlashOutcome {
  status: 'done' | 'failed';
  reason?: string;
}

/** The element id of a machine's progress cell (the live `progress` frame replaces it by id). */
export function progressId(mac: string): string {
  return `progress-${mac.replaceAll(':', '')}`;
}

/**
 * A machine's flash: a bar with phase, percent, rate and ETA while it runs; green when done;
 * red with the reason when it failed; empty when nothing is happening. The live connection's
 * `progress` frames carry newer ones, which bty.js puts in place by id (one listener for the
 * page, not one per cell: rows are re-rendered often, and a listener per cell would pile up).
 */
export function FlashProgress({
  mac,
  progress,
  outcome,
  lastReport,
}: {
  mac: string;
  progress: ProgressView | null;
  outcome?: FlashOutcome | null;
  /** Set when the agent has gone quiet (`3 h ago`): the bar is greyed out and says so. */
  lastReport?: string | null;
}) {
  const id = progressId(mac);
  const live = { id };
  if (outcome?.status === 'failed') {
    return (
      <div {...live} class="flash-progress" data-state="failed">
        <div
          class="progress"
          role="progressbar"
          aria-label={`Flash of ${mac} failed`}
          aria-valuenow={100}
          aria-valuemin={0}
          aria-valuemax={100}
        >
          <div class="progress-bar bg-danger" style="width: 100%">
            failed
          </div>
        </div>
        <div class="small text-danger-emphasis text-truncate" title={outcome.reason}>
          {outcome.reason ? `failed: ${outcome.reason}` : 'failed'}
        </div>
      </div>
    );
  }
  if (outcome?.status === 'done') {
    return (
      <div {...live} class="flash-progress" data-state="done">
        <span class="badge text-bg-success">
          <i class="bi bi-check-circle me-1" aria-hidden="true"></i>flashed
        </span>
      </div>
    );
  }
  if (!progress) return <div {...live} class="flash-progress" data-state="idle"></div>;
  const percent =
    progress.bytes_total && progress.bytes_total > 0
      ? Math.min(100, Math.floor((progress.bytes_done / progress.bytes_total) * 100))
      : null;
  const failed = progress.phase === 'failed';
  const stale = !failed && Boolean(lastReport);
  const bar = failed
    ? 'bg-danger'
    : stale
      ? 'bg-secondary'
      : progress.phase === 'verify'
        ? 'bg-info'
        : '';
  const details = [
    progress.phase,
    percent !== null ? `${percent}%` : formatBytes(progress.bytes_done),
    progress.rate_bps > 0 ? formatRate(progress.rate_bps) : '',
    progress.eta_seconds ? `ETA ${formatDuration(progress.eta_seconds)}` : '',
    progress.resumes ? `${progress.resumes} resume${progress.resumes === 1 ? '' : 's'}` : '',
  ].filter(Boolean);
  return (
    <div
      {...live}
      class="flash-progress"
      data-state={failed ? 'failed' : stale ? 'stale' : 'running'}
    >
      <div
        class="progress"
        role="progressbar"
        aria-label={`Flash of ${mac}`}
        aria-valuenow={percent ?? undefined}
        aria-valuemin={0}
        aria-valuemax={100}
      >
        <div
          class={`progress-bar ${bar}${percent === null ? ' progress-bar-striped progress-bar-animated' : ''}`}
          style={`width: ${percent ?? 100}%`}
        ></div>
      </div>
      <div class="small text-body-secondary text-nowrap">{details.join(' · ')}</div>
      {progress.message ? <div class="small text-truncate">{progress.message}</div> : null}
      {stale ? <div class="small text-warning-emphasis">no report since {lastReport}</div> : null}
    </div>
  );
}

/** An empty-table row that says why it is empty and what to do. */
export function EmptyRow({ columns, children }: { columns: number; children: ComponentChildren }) {
  return (
    <tr>
      <td colSpan={columns} class="text-center text-body-secondary py-4">
        {children}
      </td>
    </tr>
  );
}

/**
 * `hx-trigger` for refetching on live events: at once (then at most once a second while they
 * keep coming), and once more after they stop, so the last change is never left out.
 */
export function liveTrigger(...events: string[]): string {
  return events.map((e) => `sse:${e} throttle:1s, sse:${e} delay:1500ms`).join(', ');
}
