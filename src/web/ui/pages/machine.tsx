/**
 * The machine page (`/ui/machines/{mac}`): who the machine is, what its next PXE boot will do,
 * the gates that stop a flash, the binding form, its hardware and its recent events.
 *
 * - `GET /ui/machines/:mac` the page (400 for a malformed MAC, 404 for an unknown one);
 * - `POST /ui/machines/:mac` the form: the JSON `PUT /machines/{mac}` validation and write
 *   (writeMachineBinding, so event, policy reset and live update are the same), plus upstream's
 *   UI gate: a flash mode needs a target disk. A refusal re-renders the page (422) with what
 *   the operator entered; success is 303 back here with `?saved=1`;
 * - `POST /ui/machines/:mac/delete`: with `confirm=1` (set by the browser dialog, or posted by
 *   the confirmation page) deletes (303 to the list, `?deleted=` or `?error=`); without it, so
 *   without JavaScript, answers a page saying what would be deleted, whose form posts `confirm=1`;
 * - `GET /ui/machines/:mac/panel` and `/events`: the live parts, refetched when the live stream
 *   says this machine changed.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { parseMac } from '../../../core/mac.ts';
import { isImageFormat } from '../../../core/formats.ts';
import {
  decideBootOffer,
  isFlashMode,
  SUPPORTED_BOOT_MODES,
  type BootCatalogEntry,
} from '../../boot-offer.ts';
import { clientIp, toBootMachine, type WebContext } from '../../context.ts';
import { getCatalogEntry, listCatalogEntries, type StoredCatalogEntry } from '../../db/catalog.ts';
import { queryEvents, type EventRow } from '../../db/events.ts';
import { getLshw, getMachineRecord, type MachineRecord } from '../../db/machines.ts';
import {
  deleteMachineRecord,
  parseMachineUpsert,
  writeMachineBinding,
} from '../../routes/machines.ts';
import { CopyButton, KindBadge, liveTrigger, MODE_HELP, ModeBadge, Time } from '../components.tsx';
import { formatBytes, formatTime } from '../format.ts';
import { frameOf, uiGuard, type Frame } from '../guard.ts';
import { summariseLshwText, type HardwareSummary } from '../hardware.ts';
import { seeOther, sendFragment, sendPage } from '../html.ts';
import { Csrf, ErrorPage, Layout, type PageAlert } from '../layout.tsx';
import { describeNextBoot, type NextBoot } from '../next-boot.ts';
import { queryText } from '../table.ts';

/** An inventory older than this is flagged: disks get swapped, and the list would mislead. */
export const STALE_INVENTORY_DAYS = 30;
const DAY_MS = 86_400_000;
const EVENTS_SHOWN = 10;

// ---------------------------------------------------------------------------------------------
// What the page shows, loaded in one place
// ---------------------------------------------------------------------------------------------

/** A disk of the last inventory, read defensively from the stored JSON. */
interface InventoryDiskView {
  path: string;
  size: string | null;
  model: string | null;
  serial: string | null;
  tran: string | null;
  removable: boolean;
  readonly: boolean;
}

interface InventoryView {
  disks: InventoryDiskView[];
  /** When the disks were reported (null when not known). */
  at: string | null;
  stale: boolean;
}

interface MachineView {
  mac: string;
  record: MachineRecord;
  inventory: InventoryView | null;
  hardware: { summary: HardwareSummary; at: string | null } | null;
  entries: StoredCatalogEntry[];
  boundEntry: StoredCatalogEntry | null;
  nextBoot: NextBoot;
  events: EventRow[];
}

function textField(value: unknown): string | null {
  return typeof value === 'string' && value !== '' ? value : null;
}

function parseInventoryDisks(text: string | null): InventoryDiskView[] | null {
  if (text === null) return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (!Array.isArray(value)) return null;
  return value
    .filter((d): d is Record<string, unknown> => typeof d === 'object' && d !== null)
    .map((d) => ({
      path: textField(d.path) ?? '(no path)',
      size: typeof d.size === 'number' ? String(d.size) : textField(d.size),
      model: textField(d.model),
      serial: textField(d.serial),
      tran: textField(d.tran),
      removable: d.removable === true,
      readonly: d.readonly === true,
    }));
}

/**
 * When the disks were reported. A policy change clears the inventory's time (it is also the
 * inventory mode's completion signal) but keeps the list, so the latest `machine.inventory`
 * event is the fallback.
 */
async function inventoryTime(ctx: WebContext, record: MachineRecord): Promise<string | null> {
  if (record.disks_at) return record.disks_at;
  const [last] = await queryEvents(ctx.database.db, {
    kind: 'machine.inventory',
    subjectId: record.row.mac,
    limit: 1,
  });
  return last?.ts ?? null;
}

async function loadMachine(ctx: WebContext, mac: string): Promise<MachineView | null> {
  const { db } = ctx.database;
  const record = await getMachineRecord(db, mac);
  if (!record) return null;
  const now = ctx.now();
  const [entries, lshw, events, disksAt] = await Promise.all([
    listCatalogEntries(db),
    getLshw(db, mac),
    queryEvents(db, { subjectId: mac, limit: EVENTS_SHOWN }),
    inventoryTime(ctx, record),
  ]);
  const disks = parseInventoryDisks(record.disks);
  const inventory: InventoryView | null =
    disks === null
      ? null
      : {
          disks,
          at: disksAt,
          stale:
            disksAt !== null && now.getTime() - Date.parse(disksAt) > STALE_INVENTORY_DAYS * DAY_MS,
        };
  const summary = summariseLshwText(lshw?.lshw ?? null);
  const ref = record.row.bty_image_ref;
  const boundEntry = ref ? (entries.find((e) => e.ref === ref) ?? null) : null;
  // The same decision /pxe/<mac> makes now, from the same stored state.
  const entry: BootCatalogEntry | null = boundEntry
    ? { name: boundEntry.name, ref: boundEntry.ref }
    : null;
  const decision = decideBootOffer(toBootMachine(record.row, record.disks_at), entry, now);
  return {
    mac,
    record,
    inventory,
    hardware: summary ? { summary, at: lshw?.lshw_at ?? null } : null,
    entries,
    boundEntry,
    nextBoot: describeNextBoot(decision.offer, record.row.boot_mode, disks ?? []),
    events,
  };
}

// ---------------------------------------------------------------------------------------------
// The form's values: from the record, or as the operator typed them
// ---------------------------------------------------------------------------------------------

interface FormValues {
  boot_mode: string;
  bty_image_ref: string;
  target_disk_serial: string;
  sanboot_drive: string;
  labels: string;
}

function storedValues(record: MachineRecord): FormValues {
  const r = record.row;
  return {
    boot_mode: r.boot_mode,
    bty_image_ref: r.bty_image_ref ?? '',
    target_disk_serial: r.target_disk_serial ?? '',
    sanboot_drive: r.sanboot_drive ?? '',
    labels: record.labels.join(', '),
  };
}

function postedValues(body: unknown): FormValues {
  const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  const field = (name: keyof FormValues): string => {
    const v = fields[name];
    return typeof v === 'string' ? v : '';
  };
  return {
    boot_mode: field('boot_mode'),
    bty_image_ref: field('bty_image_ref'),
    target_disk_serial: field('target_disk_serial'),
    sanboot_drive: field('sanboot_drive'),
    labels: field('labels'),
  };
}

/** The form as the JSON upsert body it stands for: empty means "none", labels split on commas. */
function upsertBodyOf(values: FormValues): Record<string, unknown> {
  const orNull = (v: string) => (v.trim() === '' ? null : v.trim());
  return {
    boot_mode: values.boot_mode.trim() === '' ? 'ipxe-exit' : values.boot_mode.trim(),
    bty_image_ref: orNull(values.bty_image_ref),
    target_disk_serial: orNull(values.target_disk_serial),
    sanboot_drive: orNull(values.sanboot_drive),
    labels: values.labels
      .split(',')
      .map((l) => l.trim())
      .filter((l) => l !== ''),
  };
}

const POWER_CYCLE_ADVICE =
  'No disk inventory exists yet: save with boot mode bty-inventory and power-cycle the machine ' +
  'once, so the live environment reports its disks.';

/** Upstream's UI gate (the JSON API does not apply it): never a flash mode without a disk. */
function flashGateRefusal(mode: string, hasInventory: boolean): string {
  return (
    `boot_mode=${mode} requires a target disk; pick one from the Target disk dropdown` +
    (hasInventory ? '.' : `. ${POWER_CYCLE_ADVICE}`)
  );
}

// ---------------------------------------------------------------------------------------------
// Gates: what stops the bound flash, as banners
// ---------------------------------------------------------------------------------------------

interface Gate {
  key: string;
  severity: 'danger' | 'warning';
  text: string;
}

function gatesOf(view: MachineView, now: Date): Gate[] {
  const r = view.record.row;
  const mode = r.boot_mode;
  const gates: Gate[] = [];
  const flash = isFlashMode(mode);
  if (flash && !r.target_disk_serial) {
    gates.push({
      key: 'flash-without-disk',
      severity: 'danger',
      text:
        `${mode} has no target disk: nothing is flashed, the machine exits to its local disk. ` +
        'Pick the disk to overwrite in the Target disk field.' +
        (view.inventory ? '' : ` ${POWER_CYCLE_ADVICE}`),
    });
  }
  if (flash && !r.bty_image_ref) {
    gates.push({
      key: 'flash-without-image',
      severity: 'danger',
      text: `${mode} has no image: nothing is flashed. Pick one in the Image field.`,
    });
  }
  if (r.bty_image_ref && view.boundEntry === null) {
    gates.push({
      key: 'orphan-image',
      severity: flash ? 'danger' : 'warning',
      text:
        `The bound image ${r.bty_image_ref.slice(0, 12)}… is not in the catalog (deleted, or ` +
        'never added): it cannot be flashed. Pick another image, or add it to the catalog again.',
    });
  }
  const serial = r.target_disk_serial;
  if (serial && view.inventory && !view.inventory.disks.some((d) => d.serial === serial)) {
    gates.push({
      key: 'target-not-in-inventory',
      severity: 'warning',
      text:
        `The target disk ${serial} is not in the last inventory: the live environment will ` +
        'refuse to flash if it does not find it. Check the serial, or refresh the inventory.',
    });
  }
  if (view.inventory?.stale && view.inventory.at) {
    const days = Math.floor((now.getTime() - Date.parse(view.inventory.at)) / DAY_MS);
    gates.push({
      key: 'stale-inventory',
      severity: 'warning',
      text:
        `The disk inventory is ${days} days old (reported ${formatTime(view.inventory.at)}): ` +
        'disks may have changed since. Boot the machine once in bty-inventory mode to refresh it.',
    });
  }
  return gates;
}

function GateBanner({ gates }: { gates: readonly Gate[] }) {
  if (gates.length === 0) return null;
  const danger = gates.some((g) => g.severity === 'danger');
  return (
    <div id="gate-banner" class={`alert ${danger ? 'alert-danger' : 'alert-warning'}`} role="alert">
      {gates.map((g, i) => (
        <p class={i === gates.length - 1 ? 'mb-0' : 'mb-2'} data-gate={g.key}>
          <i
            class={`bi ${g.severity === 'danger' ? 'bi-x-octagon-fill' : 'bi-exclamation-triangle-fill'} me-2`}
            aria-hidden="true"
          ></i>
          {g.text}
        </p>
      ))}
    </div>
  );
}

// ---------------------------------------------------------------------------------------------
// The parts of the page
// ---------------------------------------------------------------------------------------------

const hexOf = (mac: string): string => mac.replaceAll(':', '');
const pagePath = (mac: string): string => `/ui/machines/${mac}`;

const TONE_CLASS: Record<NextBoot['tone'], string> = {
  flash: 'border-warning text-warning-emphasis bg-warning-subtle',
  live: 'border-info text-info-emphasis bg-info-subtle',
  disk: 'border-secondary-subtle bg-body-tertiary',
  blocked: 'border-danger text-danger-emphasis bg-danger-subtle',
};

function imageLabel(entry: StoredCatalogEntry): string {
  const parts = [
    entry.format ?? 'format unknown',
    entry.size_bytes ? formatBytes(entry.size_bytes) : 'size unknown',
    entry.arch ?? 'any arch',
  ];
  return `${entry.name} (${parts.join(', ')})`;
}

/** The header and the next-boot line: refetched whenever the live stream names this machine. */
function MachinePanel({ view, now }: { view: MachineView; now: Date }) {
  const r = view.record.row;
  const ref = r.bty_image_ref;
  return (
    <section
      id="machine-panel"
      class="card mb-3"
      hx-get={`${pagePath(view.mac)}/panel`}
      hx-trigger={liveTrigger(`machine-${hexOf(view.mac)}`)}
      hx-swap="outerHTML"
      aria-label="Machine summary"
    >
      <div class="card-body">
        <div class="d-flex flex-wrap align-items-center gap-2 mb-3">
          <span class="font-monospace fs-5" id="machine-mac">
            {view.mac}
          </span>
          <CopyButton value={view.mac} label="MAC" />
          <ModeBadge mode={r.boot_mode} />
          {view.record.labels.map((label) => (
            <a
              class="badge rounded-pill text-bg-light border text-decoration-none machine-label"
              href={`/ui/machines?q=${encodeURIComponent(label)}`}
            >
              {label}
            </a>
          ))}
        </div>
        <dl class="row mb-3 small">
          <dt class="col-sm-3">Image</dt>
          <dd class="col-sm-9">
            {view.boundEntry ? (
              imageLabel(view.boundEntry)
            ) : ref ? (
              <>
                <code>{ref.slice(0, 12)}</code> (no catalog entry)
              </>
            ) : (
              <span class="text-body-secondary">none</span>
            )}
          </dd>
          <dt class="col-sm-3">Last seen</dt>
          <dd class="col-sm-9">
            <Time value={r.last_seen_at} now={now} />
            {r.last_seen_ip ? (
              <>
                {' from '}
                <a href={`/ui/events?q=${encodeURIComponent(r.last_seen_ip)}`}>{r.last_seen_ip}</a>
              </>
            ) : null}
          </dd>
          <dt class="col-sm-3">Discovered</dt>
          <dd class="col-sm-9">
            {r.discovered_at ? (
              <Time value={r.discovered_at} now={now} />
            ) : (
              <span class="text-body-secondary">added by an operator</span>
            )}
          </dd>
          <dt class="col-sm-3">Last flashed</dt>
          <dd class="col-sm-9">
            <Time value={r.last_flashed_at} now={now} />
          </dd>
        </dl>
        <p
          id="next-boot"
          class={`border rounded px-3 py-2 mb-0 fw-semibold ${TONE_CLASS[view.nextBoot.tone]}`}
          data-tone={view.nextBoot.tone}
        >
          <i class="bi bi-arrow-repeat me-2" aria-hidden="true"></i>
          {view.nextBoot.text}
        </p>
      </div>
    </section>
  );
}

function ImageSelect({ view, value }: { view: MachineView; value: string }) {
  const known = value === '' || view.entries.some((e) => e.ref === value);
  return (
    <select id="bty_image_ref" name="bty_image_ref" class="form-select">
      <option value="" selected={value === ''}>
        none (nothing to flash)
      </option>
      {known ? null : (
        <option value={value} selected>
          {`${value.slice(0, 12)}… (not in the catalog)`}
        </option>
      )}
      {view.entries.map((e) => {
        const bindable = e.format === null || isImageFormat(e.format);
        return (
          <option value={e.ref} selected={e.ref === value} disabled={!bindable && e.ref !== value}>
            {imageLabel(e) + (bindable ? '' : ' — not a disk image')}
          </option>
        );
      })}
    </select>
  );
}

function diskLabel(d: InventoryDiskView): string {
  const size = d.size && /^\d+$/.test(d.size) ? formatBytes(Number(d.size)) : d.size;
  const parts = [d.path, size ?? 'size unknown', d.model ?? 'model unknown'];
  parts.push(d.serial ? `serial ${d.serial}` : 'no serial: cannot be a target');
  const flags = [d.tran, d.removable ? 'removable' : null, d.readonly ? 'read-only' : null];
  const extra = flags.filter((f): f is string => f !== null).join(', ');
  return parts.join(' | ') + (extra ? ` (${extra})` : '');
}

function TargetDiskField({ view, value, now }: { view: MachineView; value: string; now: Date }) {
  const inventory = view.inventory;
  if (inventory === null) {
    return (
      <>
        <input
          type="text"
          id="target_disk_serial"
          name="target_disk_serial"
          class="form-control font-monospace"
          value={value}
          maxLength={128}
          autocomplete="off"
          aria-describedby="target-disk-help"
        />
        <div id="target-disk-help" class="form-text text-warning-emphasis" data-inventory="none">
          <i class="bi bi-exclamation-triangle me-1" aria-hidden="true"></i>
          No disk inventory exists yet, so there is no list to pick from: type the disk's serial, or
          boot the machine once in bty-inventory mode so it reports its disks.
        </div>
      </>
    );
  }
  const known = value === '' || inventory.disks.some((d) => d.serial === value);
  return (
    <>
      <select
        id="target_disk_serial"
        name="target_disk_serial"
        class="form-select"
        aria-describedby="target-disk-help"
      >
        <option value="" selected={value === ''}>
          none (a flash will be refused)
        </option>
        {known ? null : (
          <option value={value} selected>
            {`${value} (not in the last inventory)`}
          </option>
        )}
        {inventory.disks.map((d) => (
          <option
            value={d.serial ?? ''}
            selected={d.serial !== null && d.serial === value}
            disabled={d.serial === null}
          >
            {diskLabel(d)}
          </option>
        ))}
      </select>
      <div
        id="target-disk-help"
        class={`form-text${inventory.stale ? ' text-warning-emphasis' : ''}`}
        data-inventory={inventory.stale ? 'stale' : 'fresh'}
      >
        {inventory.disks.length} disk(s) from the last inventory
        {inventory.at ? (
          <>
            {', reported '}
            <Time value={inventory.at} now={now} ago />
          </>
        ) : null}
        {inventory.stale ? ' — stale: disks may have changed since' : ''}.{' '}
        <a href={`/machines/${view.mac}/disks.json`} download>
          disks.json
        </a>
      </div>
    </>
  );
}

function MachineForm({
  view,
  values,
  error,
  frame,
}: {
  view: MachineView;
  values: FormValues;
  error: string | null;
  frame: Frame;
}) {
  const modes: string[] = [...SUPPORTED_BOOT_MODES];
  if (!modes.includes(values.boot_mode) && values.boot_mode !== '') modes.push(values.boot_mode);
  return (
    <form
      id="machine-form"
      method="post"
      action={pagePath(view.mac)}
      class="card mb-3"
      aria-labelledby="machine-form-title"
    >
      <div class="card-header fw-semibold" id="machine-form-title">
        Binding
      </div>
      <div class="card-body">
        <Csrf token={frame.csrf} />
        {error ? (
          <div id="form-error" class="alert alert-danger" role="alert">
            {error}
          </div>
        ) : null}
        <div class="mb-3">
          <label for="boot_mode" class="form-label">
            Boot mode
          </label>
          <select
            id="boot_mode"
            name="boot_mode"
            class="form-select"
            aria-describedby="boot-mode-help"
          >
            {modes.map((m) => (
              <option value={m} selected={m === values.boot_mode}>
                {MODE_HELP[m] ? `${m} — ${MODE_HELP[m]}` : `${m} — not handled by this server`}
              </option>
            ))}
          </select>
          <div id="boot-mode-help" class="form-text">
            {MODE_HELP[values.boot_mode] ?? 'This mode is not handled by this server.'}
          </div>
        </div>
        <div class="mb-3">
          <label for="bty_image_ref" class="form-label">
            Image
          </label>
          <ImageSelect view={view} value={values.bty_image_ref} />
          {view.entries.length === 0 ? (
            <div class="form-text">
              The catalog is empty: <a href="/ui/catalog">add an image</a> first.
            </div>
          ) : null}
        </div>
        <div class="mb-3">
          <label for="target_disk_serial" class="form-label">
            Target disk
          </label>
          <TargetDiskField view={view} value={values.target_disk_serial} now={frame.now} />
        </div>
        <div class="row g-3 mb-3">
          <div class="col-sm-4">
            <label for="sanboot_drive" class="form-label">
              Sanboot drive
            </label>
            <input
              type="text"
              id="sanboot_drive"
              name="sanboot_drive"
              class="form-control font-monospace"
              value={values.sanboot_drive}
              pattern="^0x[0-9a-fA-F]{1,2}$"
              placeholder="0x80"
              autocomplete="off"
              aria-describedby="sanboot-help"
            />
            <div id="sanboot-help" class="form-text">
              BIOS drive for a local-disk boot; empty means 0x80.
            </div>
          </div>
          <div class="col-sm-8">
            <label for="labels" class="form-label">
              Labels
            </label>
            <input
              type="text"
              id="labels"
              name="labels"
              class="form-control"
              value={values.labels}
              autocomplete="off"
              aria-describedby="labels-help"
            />
            <div id="labels-help" class="form-text">
              Comma-separated: letters, digits, space, dot, underscore, hyphen.
            </div>
          </div>
        </div>
        <button type="submit" class="btn btn-primary">
          <i class="bi bi-save me-1" aria-hidden="true"></i>Save
        </button>
      </div>
    </form>
  );
}

function HardwareCard({ view }: { view: MachineView }) {
  const hw = view.hardware;
  if (hw === null) return null;
  const { summary } = hw;
  const mem = summary.memory;
  return (
    <section id="hardware" class="card mb-3" aria-labelledby="hardware-title">
      <div class="card-header d-flex flex-wrap align-items-center gap-2">
        <span class="fw-semibold me-auto" id="hardware-title">
          Hardware
        </span>
        <a
          class="btn btn-sm btn-outline-secondary"
          href={`/machines/${view.mac}/lshw.json`}
          download
        >
          <i class="bi bi-download me-1" aria-hidden="true"></i>lshw.json
        </a>
        {view.record.disks !== null ? (
          <a
            class="btn btn-sm btn-outline-secondary"
            href={`/machines/${view.mac}/disks.json`}
            download
          >
            <i class="bi bi-download me-1" aria-hidden="true"></i>disks.json
          </a>
        ) : null}
      </div>
      <div class="card-body small">
        <dl class="row mb-2">
          {summary.system ? (
            <>
              <dt class="col-sm-3">System</dt>
              <dd class="col-sm-9">
                {[summary.system.vendor, summary.system.product].filter(Boolean).join(' ') ||
                  'unknown'}
              </dd>
            </>
          ) : null}
          <dt class="col-sm-3">CPU</dt>
          <dd class="col-sm-9" data-hw="cpu">
            {summary.cpus.length === 0
              ? 'not reported'
              : summary.cpus.map((c) => (
                  <div>
                    {c.product}
                    {c.cores !== null ? `, ${c.cores} cores` : ''}
                    {c.threads !== null ? `, ${c.threads} threads` : ''}
                  </div>
                ))}
          </dd>
          <dt class="col-sm-3">Memory</dt>
          <dd class="col-sm-9" data-hw="memory">
            {mem.totalBytes === null
              ? 'not reported'
              : `${(mem.totalBytes / 2 ** 30).toFixed(1)} GiB` +
                (mem.modules > 0 ? ` in ${mem.modules} module${mem.modules === 1 ? '' : 's'}` : '')}
          </dd>
        </dl>
        <h3 class="h6">Network</h3>
        {summary.nics.length === 0 ? (
          <p class="text-body-secondary">No network cards reported.</p>
        ) : (
          <table class="table table-sm mb-3" data-hw="nics">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">MAC</th>
                <th scope="col">Product</th>
              </tr>
            </thead>
            <tbody>
              {summary.nics.map((n) => {
                const self = n.mac === view.mac;
                return (
                  <tr class={self ? 'fw-semibold' : undefined}>
                    <td>{n.logicalNames.join(', ') || '—'}</td>
                    <td class="font-monospace">
                      {n.mac ?? '—'}
                      {self ? (
                        <span class="badge text-bg-primary ms-2 this-machine">this machine</span>
                      ) : null}
                    </td>
                    <td>{[n.vendor, n.product].filter(Boolean).join(' ') || '—'}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
        <h3 class="h6">Disks</h3>
        {summary.disks.length === 0 ? (
          <p class="text-body-secondary mb-0">No disks reported.</p>
        ) : (
          <table class="table table-sm mb-0" data-hw="disks">
            <thead>
              <tr>
                <th scope="col">Device</th>
                <th scope="col">Size</th>
                <th scope="col">Product</th>
                <th scope="col">Serial</th>
              </tr>
            </thead>
            <tbody>
              {summary.disks.map((d) => (
                <tr>
                  <td class="font-monospace">{d.logicalName ?? '—'}</td>
                  <td>{d.sizeBytes !== null ? formatBytes(d.sizeBytes) : '—'}</td>
                  <td>{[d.vendor, d.product].filter(Boolean).join(' ') || '—'}</td>
                  <td class="font-monospace">{d.serial ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
      {hw.at ? (
        <div class="card-footer small text-body-secondary">reported {formatTime(hw.at)}</div>
      ) : null}
    </section>
  );
}

function EventsCard({ mac, events, now }: { mac: string; events: EventRow[]; now: Date }) {
  return (
    <section
      id="machine-events"
      class="card mb-3"
      hx-get={`${pagePath(mac)}/events`}
      hx-trigger={liveTrigger(`machine-${hexOf(mac)}`)}
      hx-swap="outerHTML"
      aria-labelledby="machine-events-title"
    >
      <div class="card-header d-flex align-items-center">
        <span class="fw-semibold me-auto" id="machine-events-title">
          Last {EVENTS_SHOWN} events
        </span>
        <a class="small" href={`/ui/events?q=${encodeURIComponent(mac)}`}>
          full timeline
        </a>
      </div>
      <div class="table-responsive">
        <table class="table table-sm mb-0 small">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Kind</th>
              <th scope="col">Summary</th>
            </tr>
          </thead>
          <tbody>
            {events.length === 0 ? (
              <tr>
                <td colSpan={3} class="text-center text-body-secondary py-3">
                  No events for this machine yet.
                </td>
              </tr>
            ) : (
              events.map((e) => (
                <tr>
                  <td class="text-nowrap">
                    <Time value={e.ts} now={now} ago />
                  </td>
                  <td>
                    <KindBadge kind={e.kind} />
                  </td>
                  <td>{e.summary}</td>
                </tr>
              ))
            )}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function DeleteForm({ mac, frame }: { mac: string; frame: Frame }) {
  return (
    <form id="delete-machine" method="post" action={`${pagePath(mac)}/delete`} class="mb-3">
      <Csrf token={frame.csrf} />
      {/* bty.js sets it to 1 when the operator accepts the dialog; left empty (no JavaScript),
          the server answers the confirmation page instead of deleting. */}
      <input type="hidden" name="confirm" value="" />
      <button
        type="submit"
        class="btn btn-outline-danger"
        data-confirm={
          `Delete the record of ${mac}? Its binding, labels and inventory are removed; ` +
          'at its next PXE boot the machine is discovered again as a new one.'
        }
      >
        <i class="bi bi-trash me-1" aria-hidden="true"></i>Delete record
      </button>
    </form>
  );
}

/** What the delete confirmation page names: everything that goes, and what stays. */
function DeleteConfirmPage({
  frame,
  record,
  boundEntry,
}: {
  frame: Frame;
  record: MachineRecord;
  boundEntry: StoredCatalogEntry | null;
}) {
  const mac = record.row.mac;
  const ref = record.row.bty_image_ref;
  return (
    <Layout frame={frame} title={`Delete machine ${mac}?`}>
      <div class="card border-danger mb-3" id="delete-summary">
        <div class="card-body">
          <p>Deleting removes this machine's record:</p>
          <dl class="row small">
            <dt class="col-sm-3">MAC</dt>
            <dd class="col-sm-9 font-monospace" id="delete-mac">
              {mac}
            </dd>
            <dt class="col-sm-3">Labels</dt>
            <dd class="col-sm-9" id="delete-labels">
              {record.labels.length === 0 ? (
                <span class="text-body-secondary">none</span>
              ) : (
                record.labels.join(', ')
              )}
            </dd>
            <dt class="col-sm-3">Bound image</dt>
            <dd class="col-sm-9" id="delete-image">
              {boundEntry ? (
                `${boundEntry.name} (${ref})`
              ) : ref ? (
                `${ref} (no catalog entry)`
              ) : (
                <span class="text-body-secondary">none</span>
              )}
            </dd>
            <dt class="col-sm-3">Boot mode</dt>
            <dd class="col-sm-9">{record.row.boot_mode}</dd>
            <dt class="col-sm-3">Disk inventory</dt>
            <dd class="col-sm-9">{record.disks === null ? 'none' : 'removed with the record'}</dd>
          </dl>
          <p class="mb-0">
            Its events stay in the audit log. At its next PXE boot the machine is discovered again
            as a new one, bound to no image.
          </p>
        </div>
      </div>
      <form id="confirm-delete-form" method="post" action={`${pagePath(mac)}/delete`}>
        <Csrf token={frame.csrf} />
        <input type="hidden" name="confirm" value="1" />
        <button type="submit" id="confirm-delete" class="btn btn-danger me-2">
          <i class="bi bi-trash me-1" aria-hidden="true"></i>Delete record
        </button>
        <a id="cancel-delete" class="btn btn-outline-secondary" href={pagePath(mac)}>
          Cancel
        </a>
      </form>
    </Layout>
  );
}

/** The delete form's `confirm` field: exactly `1` once the operator has confirmed. */
function deleteConfirmed(body: unknown): boolean {
  return (
    typeof body === 'object' && body !== null && (body as Record<string, unknown>).confirm === '1'
  );
}

function MachinePage({
  frame,
  view,
  values,
  alerts,
  formError,
  refusal,
}: {
  frame: Frame;
  view: MachineView;
  values: FormValues;
  alerts: PageAlert[];
  formError: string | null;
  /** A gate that refused the posted form, shown first in the gate banner. */
  refusal: string | null;
}) {
  const gates = gatesOf(view, frame.now);
  if (refusal) gates.unshift({ key: 'form-refused', severity: 'danger', text: refusal });
  return (
    <Layout
      frame={frame}
      title={`Machine ${view.mac}`}
      alerts={alerts}
      actions={
        <a class="btn btn-sm btn-outline-secondary" href="/ui/machines">
          <i class="bi bi-arrow-left me-1" aria-hidden="true"></i>All machines
        </a>
      }
    >
      <div class="row g-3">
        <div class="col-lg-7">
          <MachinePanel view={view} now={frame.now} />
          <GateBanner gates={gates} />
          <MachineForm view={view} values={values} error={formError} frame={frame} />
          <DeleteForm mac={view.mac} frame={frame} />
        </div>
        <div class="col-lg-5">
          <HardwareCard view={view} />
          <EventsCard mac={view.mac} events={view.events} now={frame.now} />
        </div>
      </div>
    </Layout>
  );
}

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

type MacRequest = FastifyRequest<{ Params: { mac: string } }>;

function badMacPage(ctx: WebContext, req: MacRequest, reply: FastifyReply): FastifyReply {
  return sendPage(
    reply,
    ErrorPage({
      frame: frameOf(ctx, req, reply, 'machines'),
      title: 'Invalid MAC address',
      message:
        `"${req.params.mac.slice(0, 64)}" is not a MAC address. Write six pairs of hex digits ` +
        'separated by ":" or "-", like 52:54:00:12:34:56.',
    }),
    400,
  );
}

function unknownMachinePage(
  ctx: WebContext,
  req: MacRequest,
  reply: FastifyReply,
  mac: string,
): FastifyReply {
  return sendPage(
    reply,
    <Layout frame={frameOf(ctx, req, reply, 'machines')} title="Machine not found">
      <div class="alert alert-danger" role="alert" id="machine-missing">
        <p class="mb-2">no machine record for {mac}</p>
        <p class="mb-2">
          A machine gets a record at its first PXE boot, or when you add it on the machines page.
        </p>
        <a class="alert-link" href="/ui/machines">
          Back to the machines
        </a>
      </div>
    </Layout>,
    404,
  );
}

export function registerMachinePage(app: FastifyInstance, ctx: WebContext): void {
  const preHandler = uiGuard(ctx);
  const route = { preHandler, schema: { hide: true } };

  app.get<{ Params: { mac: string } }>('/ui/machines/:mac', route, async (req, reply) => {
    const mac = parseMac(req.params.mac);
    if (mac === null) return badMacPage(ctx, req, reply);
    const view = await loadMachine(ctx, mac);
    if (view === null) return unknownMachinePage(ctx, req, reply, mac);
    const alerts: PageAlert[] = [];
    if (queryText(req.query, 'saved') === '1') alerts.push({ kind: 'success', text: 'Saved.' });
    const error = queryText(req.query, 'error');
    if (error) alerts.push({ kind: 'danger', text: error });
    const frame = frameOf(ctx, req, reply, 'machines');
    return sendPage(
      reply,
      <MachinePage
        frame={frame}
        view={view}
        values={storedValues(view.record)}
        alerts={alerts}
        formError={null}
        refusal={null}
      />,
    );
  });

  app.get<{ Params: { mac: string } }>('/ui/machines/:mac/panel', route, async (req, reply) => {
    const mac = parseMac(req.params.mac);
    if (mac === null) return badMacPage(ctx, req, reply);
    const view = await loadMachine(ctx, mac);
    if (view === null) return sendFragment(reply, <p>no machine record for {mac}</p>, 404);
    return sendFragment(reply, <MachinePanel view={view} now={ctx.now()} />);
  });

  app.get<{ Params: { mac: string } }>('/ui/machines/:mac/events', route, async (req, reply) => {
    const mac = parseMac(req.params.mac);
    if (mac === null) return badMacPage(ctx, req, reply);
    const events = await queryEvents(ctx.database.db, { subjectId: mac, limit: EVENTS_SHOWN });
    return sendFragment(reply, <EventsCard mac={mac} events={events} now={ctx.now()} />);
  });

  app.post<{ Params: { mac: string } }>('/ui/machines/:mac', route, async (req, reply) => {
    const mac = parseMac(req.params.mac);
    if (mac === null) return badMacPage(ctx, req, reply);
    const view = await loadMachine(ctx, mac);
    if (view === null) return unknownMachinePage(ctx, req, reply, mac);
    const values = postedValues(req.body);
    const refuse = (formError: string | null, refusal: string | null) =>
      sendPage(
        reply,
        <MachinePage
          frame={frameOf(ctx, req, reply, 'machines')}
          view={view}
          values={values}
          alerts={[]}
          formError={formError}
          refusal={refusal}
        />,
        422,
      );
    const parsed = parseMachineUpsert(upsertBodyOf(values));
    if (!parsed.ok) return refuse(`Not saved: ${parsed.message}`, null);
    const binding = parsed.binding;
    if (isFlashMode(binding.boot_mode) && binding.target_disk_serial === null) {
      return refuse(null, flashGateRefusal(binding.boot_mode, view.inventory !== null));
    }
    await writeMachineBinding(ctx, mac, binding, clientIp(req, ctx.trustedProxy));
    return seeOther(reply, `${pagePath(mac)}?saved=1`);
  });

  app.post<{ Params: { mac: string } }>('/ui/machines/:mac/delete', route, async (req, reply) => {
    const mac = parseMac(req.params.mac);
    if (mac === null) return badMacPage(ctx, req, reply);
    if (!deleteConfirmed(req.body)) {
      const { db } = ctx.database;
      const record = await getMachineRecord(db, mac);
      if (record) {
        const ref = record.row.bty_image_ref;
        const boundEntry = ref ? await getCatalogEntry(db, ref) : null;
        return sendPage(
          reply,
          <DeleteConfirmPage
            frame={frameOf(ctx, req, reply, 'machines')}
            record={record}
            boundEntry={boundEntry}
          />,
        );
      }
      // No record: nothing to confirm, the same answer as a confirmed delete.
    }
    const deleted = await deleteMachineRecord(ctx, mac, clientIp(req, ctx.trustedProxy));
    if (!deleted) {
      return seeOther(
        reply,
        `/ui/machines?error=${encodeURIComponent(`no machine record for ${mac}: nothing was deleted`)}`,
      );
    }
    return seeOther(reply, `/ui/machines?deleted=${mac}`);
  });
}
