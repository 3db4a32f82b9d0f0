/**
 * The Netboot page (`GET /ui/netboot`): what a PXE fleet needs from this server and whether it
 * is here — the live-environment artifacts the iPXE scripts chain plus any other file in the
 * boot folder, and the iPXE boot files from Debian's `ipxe` package — the upload form
 * (`POST /ui/netboot/upload`, multipart), which writes through the same atomic store as
 * `PUT /boot/{name}`, and release fetches: a form that queues one (`POST
 * /ui/netboot/fetch-release`), and a panel with each fetch's state, per-file progress and a
 * Cancel button (`POST /ui/netboot/fetches/{tag}/cancel`). The panel and the artifact table
 * refetch themselves (`/ui/netboot/fetches`, `/ui/netboot/artifacts`) on the live `netboot`
 * event; without JavaScript a reload shows the same.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { clientIp, type WebContext } from '../../context.ts';
import {
  manifestName,
  netbootFetchesOf,
  parseManifest,
  releaseRootUrl,
  releaseSourceOf,
  releaseTagProblem,
  type ArtifactFetchState,
  type FetchStatus,
  type ReleaseState,
} from '../../netboot-fetch.ts';
import {
  IPXE_DIR,
  ipxeBootFiles,
  liveArtifactNames,
  liveArtifacts,
  type FileState,
} from '../../netboot-files.ts';
import {
  artifactNameProblem,
  artifactPathProblem,
  logArtifactUploadFailure,
  storeArtifact,
  type StoreArtifactResult,
} from '../../routes/machines.ts';
import { EmptyRow, liveTrigger, Time } from '../components.tsx';
import { formatBytes, formatCount, shortHash } from '../format.ts';
import { frameOf, refuseForgery, uiGuard, type Frame } from '../guard.ts';
import { sendFragment, seeOther, sendPage } from '../html.ts';
import { Csrf, Layout, type PageAlert } from '../layout.tsx';
import { queryText } from '../table.ts';
import { closeAfter, multipartForm, sessionOnlyGuard } from '../multipart.ts';

const ROLES = ['kernel', 'initrd', 'root filesystem'];

const ARTIFACTS_PATH = '/ui/netboot/artifacts';
const FETCHES_PATH = '/ui/netboot/fetches';
const FETCH_PATH = '/ui/netboot/fetch-release';
/** Refetch on the live connection's `netboot` event (a release fetch moved). */
const ON_NETBOOT = liveTrigger('netboot');

/** What each artifact row shows: the file's state and what it is for. */
interface ArtifactRow extends FileState {
  role: string;
  /** The digest the release manifest in the boot folder gives it, when it gives one. */
  sha256: string | null;
}

/** name → digest from the manifest in the boot folder; lenient (a bad line is skipped). */
async function installedDigests(ctx: WebContext): Promise<Map<string, string>> {
  const name = manifestName(ctx.artifactVersion);
  const text = await readFile(join(ctx.bootDir, name), 'utf8').catch(() => '');
  const digests = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    try {
      for (const [file, digest] of parseManifest(line, name)) digests.set(file, digest);
    } catch {
      // Shown as unknown: the fetch that installed it checked it, an upload may not have.
    }
  }
  return digests;
}

/**
 * The live trio (present or not), the release manifest when present, then every other plain
 * file in the boot folder, by name.
 */
async function artifactRows(ctx: WebContext): Promise<ArtifactRow[]> {
  const live = await liveArtifacts(ctx.bootDir, ctx.artifactVersion);
  const digests = await installedDigests(ctx);
  const manifest = manifestName(ctx.artifactVersion);
  const liveNames = new Set(liveArtifactNames(ctx.artifactVersion));
  const rows: ArtifactRow[] = live.map((f, i) => ({
    ...f,
    role: ROLES[i] ?? '',
    sha256: digests.get(f.name) ?? null,
  }));
  const names = await readdir(ctx.bootDir).catch(() => [] as string[]);
  // Dot names are uploads and fetches in progress (and never served).
  const others = names
    .filter((n) => !n.startsWith('.') && !liveNames.has(n))
    .sort((a, b) => (a === manifest ? -1 : b === manifest ? 1 : a.localeCompare(b)));
  for (const name of others) {
    const path = join(ctx.bootDir, name);
    const st = await stat(path).catch(() => null);
    if (!st?.isFile()) continue;
    rows.push({
      name,
      path,
      present: true,
      size: st.size,
      modified: st.mtime.toISOString(),
      role: name === manifest ? 'sha256 manifest' : 'other',
      sha256: null,
    });
  }
  return rows;
}

function PresenceBadge({ present }: { present: boolean }) {
  return present ? (
    <span class="badge text-bg-success presence" data-present="true">
      <i class="bi bi-check-circle me-1" aria-hidden="true"></i>present
    </span>
  ) : (
    <span class="badge text-bg-danger presence" data-present="false">
      <i class="bi bi-x-circle me-1" aria-hidden="true"></i>missing
    </span>
  );
}

function SizeCell({ size }: { size: number | null }) {
  if (size === null) return <td class="text-body-secondary">—</td>;
  return (
    <td class="text-nowrap">
      {formatCount(size)} bytes <span class="text-body-secondary">({formatBytes(size)})</span>
    </td>
  );
}

function ArtifactsTable({ rows, now }: { rows: readonly ArtifactRow[]; now: Date }) {
  return (
    <div class="table-responsive">
      <table class="table table-sm align-middle" id="artifacts-table">
        <thead>
          <tr>
            <th scope="col">File</th>
            <th scope="col">Role</th>
            <th scope="col">State</th>
            <th scope="col">Size</th>
            <th scope="col">Modified</th>
            <th scope="col">
              <span class="visually-hidden">Download</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {rows.map((f) => (
            <tr data-artifact={f.name}>
              <td class="font-monospace small">
                {f.name}
                {f.sha256 !== null ? (
                  <div class="text-body-secondary artifact-sha" title={`sha256 ${f.sha256}`}>
                    sha256 {shortHash(f.sha256)}…
                  </div>
                ) : null}
              </td>
              <td>{f.role}</td>
              <td>
                <PresenceBadge present={f.present} />
              </td>
              <SizeCell size={f.size} />
              <td>
                <Time value={f.modified} now={now} />
              </td>
              <td class="text-end">
                {f.present ? (
                  <a
                    class="btn btn-sm btn-outline-secondary"
                    href={`/boot/${encodeURIComponent(f.name)}`}
                    download
                  >
                    <i class="bi bi-download me-1" aria-hidden="true"></i>Download
                  </a>
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

const IPXE_USE: Record<string, string> = {
  'undionly.kpxe': 'BIOS over TFTP',
  'ipxe.efi': 'UEFI (iPXE drivers)',
  'snponly.efi': "UEFI (the firmware's network driver)",
};

function IpxeTable({ files, now }: { files: readonly FileState[]; now: Date }) {
  return (
    <div class="table-responsive">
      <table class="table table-sm align-middle" id="ipxe-files">
        <thead>
          <tr>
            <th scope="col">File</th>
            <th scope="col">For</th>
            <th scope="col">State</th>
            <th scope="col">Size</th>
            <th scope="col">Modified</th>
          </tr>
        </thead>
        <tbody>
          {files.map((f) => (
            <tr data-ipxe={f.name}>
              <td class="font-monospace small" title={f.path}>
                {f.name}
              </td>
              <td>{IPXE_USE[f.name] ?? ''}</td>
              <td>
                <PresenceBadge present={f.present} />
                {f.present ? null : (
                  <div class="small text-body-secondary">
                    install Debian's ipxe package (<code>apt install ipxe</code>)
                  </div>
                )}
              </td>
              <SizeCell size={f.size} />
              <td>
                <Time value={f.modified} now={now} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function UploadForm({ csrf }: { csrf: string }) {
  return (
    <div class="card mb-3">
      <div class="card-header">
        <h2 class="h6 mb-0">Upload an artifact</h2>
      </div>
      {/* The token comes first: the server checks it before a byte of the file is written. */}
      <form
        method="post"
        action="/ui/netboot/upload"
        enctype="multipart/form-data"
        id="upload-artifact"
        class="card-body"
      >
        <Csrf token={csrf} />
        <div class="mb-2">
          <label for="upload-name" class="form-label">
            Name in the boot folder
          </label>
          <input
            type="text"
            id="upload-name"
            name="name"
            maxLength={255}
            placeholder="the file's own name"
            class="form-control form-control-sm"
            aria-describedby="upload-name-help"
          />
          <div class="form-text" id="upload-name-help">
            Letters, digits, '.', '_', '+' or '-', not starting with '.'. A file of that name is
            replaced once the upload is complete.
          </div>
        </div>
        <div class="mb-3">
          <label for="upload-file" class="form-label">
            File
          </label>
          <input
            type="file"
            id="upload-file"
            name="file"
            required
            class="form-control form-control-sm"
          />
        </div>
        <button type="submit" class="btn btn-primary btn-sm">
          <i class="bi bi-upload me-1" aria-hidden="true"></i>Upload
        </button>
      </form>
    </div>
  );
}

function BootArtifacts({
  artifacts,
  bootDir,
  artifactVersion,
  now,
}: {
  artifacts: readonly ArtifactRow[];
  bootDir: string;
  artifactVersion: string;
  now: Date;
}) {
  const missing = artifacts.filter((a) => !a.present).length;
  // Refetched when a release fetch moves: the files it installs show up without a reload.
  return (
    <section
      class="card mb-3"
      id="boot-artifacts"
      aria-labelledby="boot-artifacts-title"
      hx-get={ARTIFACTS_PATH}
      hx-trigger={ON_NETBOOT}
      hx-swap="outerHTML"
    >
      <div class="card-header d-flex align-items-center">
        <h2 class="h6 mb-0 me-auto" id="boot-artifacts-title">
          Boot artifacts
        </h2>
        {missing > 0 ? (
          <span class="badge text-bg-danger">{missing} missing</span>
        ) : (
          <span class="badge text-bg-success">all present</span>
        )}
      </div>
      <div class="card-body">
        <p class="small text-body-secondary">
          The live environment v{artifactVersion} that inventory, flashing and the wizard boot,
          served from <code>{bootDir}</code> as <code>/boot/&lt;name&gt;</code>.
        </p>
        <ArtifactsTable rows={artifacts} now={now} />
      </div>
    </section>
  );
}

const STATUS_STYLE: Record<FetchStatus, string> = {
  queued: 'text-bg-secondary',
  running: 'text-bg-primary',
  completed: 'text-bg-success',
  failed: 'text-bg-danger',
  cancelled: 'text-bg-warning',
};

function FetchStatusBadge({ status }: { status: FetchStatus }) {
  return <span class={`badge ${STATUS_STYLE[status]} fetch-status`}>{status}</span>;
}

/** `12,345 / 67,890 bytes (18%)`; the percent only when the size is known. */
function bytesText(done: number, total: number | null): string {
  if (total === null) return `${formatCount(done)} bytes`;
  const percent = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 100;
  return `${formatCount(done)} / ${formatCount(total)} bytes (${percent}%)`;
}

function FileProgress({ file }: { file: ArtifactFetchState }) {
  const total = file.bytes_total;
  const percent =
    file.status === 'completed'
      ? 100
      : total !== null && total > 0
        ? Math.min(100, Math.floor((file.bytes_done / total) * 100))
        : null;
  const bar =
    file.status === 'failed'
      ? ' bg-danger'
      : file.status === 'cancelled'
        ? ' bg-warning'
        : file.status === 'completed'
          ? ' bg-success'
          : '';
  const unknown = percent === null && file.status === 'running';
  return (
    <div
      class="progress"
      role="progressbar"
      aria-label={`${file.name}: ${file.status}`}
      aria-valuenow={percent ?? undefined}
      aria-valuemin={0}
      aria-valuemax={100}
    >
      <div
        class={`progress-bar${bar}${unknown ? ' progress-bar-striped progress-bar-animated' : ''}`}
        style={`width: ${unknown ? 100 : (percent ?? 0)}%`}
      ></div>
    </div>
  );
}

function CancelForm({ tag, csrf }: { tag: string; csrf: string }) {
  return (
    <form method="post" action={`/ui/netboot/fetches/${encodeURIComponent(tag)}/cancel`}>
      <Csrf token={csrf} />
      <button type="submit" class="btn btn-sm btn-outline-danger">
        <i class="bi bi-x-circle me-1" aria-hidden="true"></i>Cancel
      </button>
    </form>
  );
}

function FetchCard({ fetch, frame }: { fetch: ReleaseState; frame: Frame }) {
  const active = fetch.status === 'queued' || fetch.status === 'running';
  return (
    <div class="border rounded p-2 mb-2" data-fetch-tag={fetch.tag} data-status={fetch.status}>
      <div class="d-flex flex-wrap align-items-center gap-2 mb-1">
        <strong class="font-monospace">{fetch.tag}</strong>
        <FetchStatusBadge status={fetch.status} />
        <span class="small text-body-secondary fetch-total">
          {bytesText(fetch.bytes_done, fetch.bytes_total)}
        </span>
        <span class="small text-body-secondary me-auto">
          {fetch.finished_at ? (
            <>
              finished <Time value={fetch.finished_at} now={frame.now} ago />
            </>
          ) : fetch.started_at ? (
            <>
              started <Time value={fetch.started_at} now={frame.now} ago />
            </>
          ) : (
            <>
              requested <Time value={fetch.requested_at} now={frame.now} ago />
            </>
          )}
        </span>
        {active ? <CancelForm tag={fetch.tag} csrf={frame.csrf} /> : null}
      </div>
      {fetch.base_url ? (
        <div class="small text-body-secondary text-break mb-1">
          from <code>{fetch.base_url}</code>
        </div>
      ) : null}
      {fetch.error ? (
        <div class="small text-danger-emphasis text-break mb-1 fetch-error">{fetch.error}</div>
      ) : null}
      <table class="table table-sm mb-0 align-middle small">
        <tbody>
          {fetch.artifacts.map((file) => (
            <tr data-fetch-file={file.name} data-status={file.status}>
              <td class="font-monospace text-break">{file.name}</td>
              <td>
                <FetchStatusBadge status={file.status} />
              </td>
              <td class="w-25">
                <FileProgress file={file} />
              </td>
              <td class="text-nowrap text-body-secondary file-bytes">
                {bytesText(file.bytes_done, file.bytes_total)}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** The release fetches, newest first; refetches itself on the live `netboot` event. */
export function ReleaseFetches({
  fetches,
  frame,
}: {
  fetches: readonly ReleaseState[];
  frame: Frame;
}) {
  return (
    <section
      class="card mb-3"
      id="release-fetches"
      aria-labelledby="release-fetches-title"
      hx-get={FETCHES_PATH}
      hx-trigger={ON_NETBOOT}
      hx-swap="outerHTML"
    >
      <div class="card-header">
        <h2 class="h6 mb-0" id="release-fetches-title">
          Release fetches
        </h2>
      </div>
      <div class="card-body">
        {fetches.length === 0 ? (
          <table class="table table-sm mb-0">
            <tbody>
              <EmptyRow columns={1}>
                No release fetch yet. Fetch one above: the files land in the boot folder only once
                all of them match the release manifest.
              </EmptyRow>
            </tbody>
          </table>
        ) : (
          fetches.map((f) => <FetchCard fetch={f} frame={frame} />)
        )}
      </div>
    </section>
  );
}

function FetchForm({
  csrf,
  artifactVersion,
  releaseRoot,
}: {
  csrf: string;
  artifactVersion: string;
  releaseRoot: string;
}) {
  return (
    <div class="card mb-3" id="fetch-release">
      <div class="card-header">
        <h2 class="h6 mb-0">Fetch from release</h2>
      </div>
      <form method="post" action={FETCH_PATH} id="fetch-release-form" class="card-body">
        <Csrf token={csrf} />
        <div class="mb-2">
          <label for="fetch-tag" class="form-label">
            Release tag
          </label>
          <input
            type="text"
            id="fetch-tag"
            name="tag"
            value={`v${artifactVersion}`}
            required
            maxLength={128}
            pattern="[A-Za-z0-9._\-]+"
            class="form-control form-control-sm font-monospace"
            aria-describedby="fetch-tag-help"
          />
          <div class="form-text" id="fetch-tag-help">
            Downloads the kernel, initrd and squashfs of v{artifactVersion} and their sha256
            manifest from <code>{releaseRoot}/&lt;tag&gt;</code>, checks them, then installs them
            into the boot folder. <code>latest</code> means v{artifactVersion}.
          </div>
        </div>
        <button type="submit" class="btn btn-primary btn-sm">
          <i class="bi bi-cloud-download me-1" aria-hidden="true"></i>Fetch release
        </button>
      </form>
    </div>
  );
}

export function NetbootPage({
  frame,
  artifacts,
  ipxe,
  bootDir,
  artifactVersion,
  fetches,
  releaseRoot,
  alerts,
}: {
  frame: Frame;
  artifacts: readonly ArtifactRow[];
  ipxe: readonly FileState[];
  bootDir: string;
  artifactVersion: string;
  fetches: readonly ReleaseState[];
  /** Where releases come from, without the tag. */
  releaseRoot: string;
  alerts: readonly PageAlert[];
}) {
  return (
    <Layout frame={frame} title="Netboot" alerts={alerts}>
      <BootArtifacts
        artifacts={artifacts}
        bootDir={bootDir}
        artifactVersion={artifactVersion}
        now={frame.now}
      />
      <div class="row">
        <div class="col-lg-5">
          <FetchForm
            csrf={frame.csrf}
            artifactVersion={artifactVersion}
            releaseRoot={releaseRoot}
          />
        </div>
        <div class="col-lg-7">
          <ReleaseFetches fetches={fetches} frame={frame} />
        </div>
      </div>
      <div class="card mb-3">
        <div class="card-header">
          <h2 class="h6 mb-0">iPXE boot files</h2>
        </div>
        <div class="card-body">
          <p class="small text-body-secondary">
            What the firmware loads first (over TFTP or HTTP), from <code>{IPXE_DIR}</code>.
          </p>
          <IpxeTable files={ipxe} now={frame.now} />
        </div>
      </div>
      <UploadForm csrf={frame.csrf} />
    </Layout>
  );
}

function alertsFromQuery(query: unknown): PageAlert[] {
  const alerts: PageAlert[] = [];
  const uploaded = queryText(query, 'uploaded');
  if (uploaded) alerts.push({ kind: 'success', text: `Uploaded ${uploaded}.` });
  const error = queryText(query, 'error');
  if (error) alerts.push({ kind: 'danger', text: error });
  return alerts;
}

/** A text field of a urlencoded form body; '' when absent. */
function formField(body: unknown, name: string): string {
  if (typeof body !== 'object' || body === null) return '';
  const value = (body as Record<string, unknown>)[name];
  return typeof value === 'string' ? value : '';
}

const back = (key: 'uploaded' | 'error', value: string) =>
  `/ui/netboot?${new URLSearchParams({ [key]: value })}`;

/** Why a store failed, in the operator's words. */
function storeFailure(result: Exclude<StoreArtifactResult, { ok: true }>): string {
  return result.reason === 'too_large'
    ? `Upload refused: larger than the ${formatBytes(result.limit)} upload limit ([tuning] max_upload_bytes).`
    : `Upload failed: ${result.message}`;
}

export function registerNetbootPage(app: FastifyInstance, ctx: WebContext): void {
  app.get(
    '/ui/netboot',
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const frame = frameOf(ctx, req, reply, 'netboot');
      return sendPage(
        reply,
        <NetbootPage
          frame={frame}
          artifacts={await artifactRows(ctx)}
          ipxe={await ipxeBootFiles()}
          bootDir={ctx.bootDir}
          artifactVersion={ctx.artifactVersion}
          fetches={await netbootFetchesOf(ctx).list()}
          releaseRoot={releaseRootUrl(releaseSourceOf(ctx))}
          alerts={alertsFromQuery(req.query)}
        />,
      );
    },
  );

  app.get(
    ARTIFACTS_PATH,
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const frame = frameOf(ctx, req, reply, 'netboot');
      return sendFragment(
        reply,
        <BootArtifacts
          artifacts={await artifactRows(ctx)}
          bootDir={ctx.bootDir}
          artifactVersion={ctx.artifactVersion}
          now={frame.now}
        />,
      );
    },
  );

  app.get(
    FETCHES_PATH,
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const frame = frameOf(ctx, req, reply, 'netboot');
      return sendFragment(
        reply,
        <ReleaseFetches fetches={await netbootFetchesOf(ctx).list()} frame={frame} />,
      );
    },
  );

  // A plain form post: the fetch runs in the background, the page shows it in the panel.
  app.post(FETCH_PATH, { preHandler: uiGuard(ctx), schema: { hide: true } }, async (req, reply) => {
    const tag = formField(req.body, 'tag').trim() || 'latest';
    const problem = releaseTagProblem(tag);
    if (problem !== null) return seeOther(reply, back('error', `Fetch refused: ${problem}`));
    try {
      await netbootFetchesOf(ctx).request(tag, clientIp(req, ctx.trustedProxy));
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      return seeOther(reply, back('error', `Fetch refused: ${why}`));
    }
    return seeOther(reply, '/ui/netboot#release-fetches');
  });

  app.post<{ Params: { tag: string } }>(
    '/ui/netboot/fetches/:tag/cancel',
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const tag = req.params.tag;
      const problem = releaseTagProblem(tag);
      const state =
        problem === null
          ? await netbootFetchesOf(ctx).cancel(tag, clientIp(req, ctx.trustedProxy))
          : null;
      if (state === null) {
        return seeOther(reply, back('error', `No release fetch for tag '${tag.slice(0, 128)}'.`));
      }
      return seeOther(reply, '/ui/netboot#release-fetches');
    },
  );

  app.post(
    '/ui/netboot/upload',
    { preHandler: sessionOnlyGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const sourceIp = clientIp(req, ctx.trustedProxy);
      /** Set when the file was refused unread: the connection cannot carry another request. */
      let unread = false;
      const form = await multipartForm(req, async (file, fields) => {
        const name = (fields.get('name') ?? '').trim() || file.filename;
        const problem = artifactNameProblem(name) ?? (await artifactPathProblem(ctx, name));
        if (problem !== null) {
          unread = true;
          await logArtifactUploadFailure(ctx, sourceIp, name, problem, 0);
          return { name, error: `Upload refused: ${problem}` };
        }
        const result = await storeArtifact(ctx, name, file.file, sourceIp);
        if (result.ok) return { name, error: null };
        unread = !file.file.readableEnded;
        return { name, error: storeFailure(result) };
      });
      if (form.kind === 'forged') return refuseForgery(ctx, req, closeAfter(reply));
      if (unread) closeAfter(reply);
      if (form.kind === 'broken') {
        return seeOther(reply, back('error', `Upload failed: ${form.message}`));
      }
      if (form.file === null) {
        return seeOther(reply, back('error', 'Choose a file to upload: nothing was written.'));
      }
      if (form.file.error !== null) return seeOther(reply, back('error', form.file.error));
      return seeOther(reply, back('uploaded', form.file.name));
    },
  );
}
