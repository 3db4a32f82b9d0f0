/**
 * The Netboot page (`GET /ui/netboot`): what a PXE fleet needs from this server and whether it
 * is here — the live-environment artifacts the iPXE scripts chain plus any other file in the
 * boot folder, and the iPXE boot files from Debian's `ipxe` package — and the upload form
 * (`POST /ui/netboot/upload`, multipart), which writes through the same atomic store as
 * `PUT /boot/{name}`.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { clientIp, type WebContext } from '../../context.ts';
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
import { Time } from '../components.tsx';
import { formatBytes, formatCount } from '../format.ts';
import { frameOf, refuseForgery, uiGuard, type Frame } from '../guard.ts';
import { seeOther, sendPage } from '../html.ts';
import { Csrf, Layout, type PageAlert } from '../layout.tsx';
import { queryText } from '../table.ts';
import { closeAfter, multipartForm, sessionOnlyGuard } from '../multipart.ts';

const ROLES = ['kernel', 'initrd', 'root filesystem'];

/** What each artifact row shows: the file's state and what it is for. */
interface ArtifactRow extends FileState {
  role: string;
}

/** The live trio (present or not), then every other plain file in the boot folder, by name. */
async function artifactRows(ctx: WebContext): Promise<ArtifactRow[]> {
  const live = await liveArtifacts(ctx.bootDir, ctx.artifactVersion);
  const liveNames = new Set(liveArtifactNames(ctx.artifactVersion));
  const rows: ArtifactRow[] = live.map((f, i) => ({ ...f, role: ROLES[i] ?? '' }));
  const names = await readdir(ctx.bootDir).catch(() => [] as string[]);
  // Dot names are uploads in progress (and never served).
  const others = names.filter((n) => !n.startsWith('.') && !liveNames.has(n)).sort();
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
      role: 'other',
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
              <td class="font-monospace small">{f.name}</td>
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

export function NetbootPage({
  frame,
  artifacts,
  ipxe,
  bootDir,
  artifactVersion,
  alerts,
}: {
  frame: Frame;
  artifacts: readonly ArtifactRow[];
  ipxe: readonly FileState[];
  bootDir: string;
  artifactVersion: string;
  alerts: readonly PageAlert[];
}) {
  const missing = artifacts.filter((a) => !a.present).length;
  return (
    <Layout frame={frame} title="Netboot" alerts={alerts}>
      <div class="card mb-3">
        <div class="card-header d-flex align-items-center">
          <h2 class="h6 mb-0 me-auto">Boot artifacts</h2>
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
          <ArtifactsTable rows={artifacts} now={frame.now} />
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
      <div class="row">
        <div class="col-lg-7">
          <UploadForm csrf={frame.csrf} />
        </div>
        <div class="col-lg-5">
          <div class="card mb-3" id="fetch-release">
            <div class="card-header">
              <h2 class="h6 mb-0">Fetch from release</h2>
            </div>
            <div class="card-body small">
              Fetching the artifacts of a bty release straight into the boot folder (with live
              progress) arrives with the artifact-cache issue. Until then, download them and upload
              them here, or copy them into <code>{bootDir}</code>.
            </div>
          </div>
        </div>
      </div>
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
          alerts={alertsFromQuery(req.query)}
        />,
      );
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
