/**
 * The Netboot page over real HTTP: the boot artifacts (the live trio present or missing, other
 * files in the boot folder), the iPXE boot files, the upload form — a multipart post whose
 * CSRF token is checked before a byte of the file is written, stored atomically under the same
 * name rules as `PUT /boot/{name}` — and release fetches: the form (a plain post with the
 * token), the panel with per-file progress, Cancel, and errors, against a local stand-in for
 * GitHub's release downloads.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/web/config.ts';
import { IPXE_BOOT_FILES, liveArtifactNames } from '../../src/web/netboot-files.ts';
import {
  makeRelease,
  sha256Hex,
  startReleaseServer,
  type ReleaseFiles,
  type ReleaseServer,
} from '../helpers/release-server.ts';
import { operator, startUiServer, type UiClient, type UiServer } from '../helpers/ui.ts';

let server: UiServer;
let op: UiClient;
let bootDir: string;
const [kernel, initrd, squashfs] = liveArtifactNames('1.2.3') as [string, string, string];

beforeAll(async () => {
  server = await startUiServer();
  op = await operator(server);
  bootDir = join(server.dir, 'boot');
});

afterAll(async () => {
  await server?.close();
});

/** The `<tr data-artifact="name">` row, or '' when the table has none. */
function artifactRow(html: string, name: string): string {
  const start = html.indexOf(`<tr data-artifact="${name}">`);
  return start < 0 ? '' : html.slice(start, html.indexOf('</tr>', start));
}

async function bootFiles(): Promise<string[]> {
  return (await readdir(bootDir).catch(() => [] as string[])).sort();
}

async function lastEventKind(): Promise<string | undefined> {
  const row = await server.database.db
    .selectFrom('events')
    .select('kind')
    .orderBy('id', 'desc')
    .executeTakeFirst();
  return row?.kind;
}

/** The upload form as a browser posts it: the token first (unless left out), then the fields. */
async function upload(
  parts: Array<[string, string | Blob, string?]>,
  { csrf = true }: { csrf?: boolean } = {},
): Promise<Response> {
  const form = new FormData();
  if (csrf) form.append('_csrf', op.csrf);
  for (const [name, value, filename] of parts) {
    if (typeof value === 'string') form.append(name, value);
    else form.append(name, value, filename);
  }
  return fetch(`${server.base}/ui/netboot/upload`, {
    method: 'POST',
    redirect: 'manual',
    headers: { accept: 'text/html', cookie: op.cookieHeader },
    body: form,
  });
}

describe('the artifacts tables', () => {
  it('an empty boot folder: the three live artifacts missing, no download links', async () => {
    const html = await op.page('/ui/netboot');
    expect(html).toContain('id="artifacts-table"');
    for (const name of [kernel, initrd, squashfs]) {
      const row = artifactRow(html, name);
      expect(row).toContain('data-present="false"');
      expect(row).toContain('missing');
      expect(row).not.toContain('href="/boot/');
    }
    expect(html).toContain('id="upload-artifact"');
    expect(html).toMatch(/<form[^>]*enctype="multipart\/form-data"[^>]*id="upload-artifact"/);
    // The token before the file input, so the server sees it first.
    const form = html.slice(html.indexOf('id="upload-artifact"'));
    expect(form.indexOf('name="_csrf"')).toBeLessThan(form.indexOf('type="file"'));
    expect(html).toContain('id="fetch-release"');
    // No fetch yet: the panel says so.
    expect(html).toContain('No release fetch yet');
  });

  it('present files: size with separators and in binary units, time, download link; other files listed', async () => {
    await mkdir(bootDir, { recursive: true });
    await writeFile(join(bootDir, kernel), Buffer.alloc(1_234_567));
    await writeFile(join(bootDir, 'memtest86.bin'), 'x');
    await writeFile(join(bootDir, '.upload.partial'), 'half');
    await mkdir(join(bootDir, 'subdir'));
    const html = await op.page('/ui/netboot');
    const row = artifactRow(html, kernel);
    expect(row).toContain('data-present="true"');
    expect(row).toContain('1,234,567 bytes');
    expect(row).toContain('1.18 MiB');
    expect(row).toMatch(/<time datetime="\d{4}-\d\d-\d\dT/);
    expect(row).toContain(`href="/boot/${kernel}"`);
    expect(artifactRow(html, initrd)).toContain('data-present="false"');
    const other = artifactRow(html, 'memtest86.bin');
    expect(other).toContain('data-present="true"');
    expect(other).toContain('1 bytes');
    expect(html).not.toContain('data-artifact=".upload.partial"');
    expect(html).not.toContain('data-artifact="subdir"');
  });

  it('the iPXE boot files: one row each, present or with the package to install', async () => {
    const html = await op.page('/ui/netboot');
    expect(html).toContain('id="ipxe-files"');
    for (const name of IPXE_BOOT_FILES) {
      const start = html.indexOf(`<tr data-ipxe="${name}">`);
      expect(start).toBeGreaterThan(0);
      const row = html.slice(start, html.indexOf('</tr>', start));
      if (row.includes('data-present="false"')) {
        expect(row).toContain("install Debian's ipxe package");
      } else {
        expect(row).toContain('bytes');
      }
    }
  });
});

describe('uploading an artifact', () => {
  it('stores the file under its own name, whole, with no temporary file left', async () => {
    await op.page('/ui/netboot');
    const content = randomBytes(300_000);
    const res = await upload([
      ['name', ''],
      ['file', new Blob([content]), initrd],
    ]);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe(`/ui/netboot?uploaded=${encodeURIComponent(initrd)}`);
    expect((await readFile(join(bootDir, initrd))).equals(content)).toBe(true);
    expect(
      (await bootFiles()).filter((n) => n.endsWith('.partial') && n !== '.upload.partial'),
    ).toEqual([]);
    expect(await lastEventKind()).toBe('netboot.artifacts.uploaded');
    const html = await op.page(res.headers.get('location')!);
    expect(html).toContain(`Uploaded ${initrd}.`);
    expect(artifactRow(html, initrd)).toContain('300,000 bytes');
  });

  it('stores under the name given, replacing a file of that name', async () => {
    const res = await upload([
      ['name', squashfs],
      ['file', new Blob(['new root']), 'local-build.squashfs'],
    ]);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe(
      `/ui/netboot?uploaded=${encodeURIComponent(squashfs)}`,
    );
    expect(await readFile(join(bootDir, squashfs), 'utf8')).toBe('new root');
    expect(await bootFiles()).not.toContain('local-build.squashfs');

    const again = await upload([
      ['name', squashfs],
      ['file', new Blob(['newer root']), 'x'],
    ]);
    expect(again.status).toBe(303);
    expect(await readFile(join(bootDir, squashfs), 'utf8')).toBe('newer root');
  });

  it('refuses a name that is not a bare file name, writing nothing', async () => {
    const before = await bootFiles();
    for (const name of ['../escape.bin', '.hidden', 'a/b']) {
      const res = await upload([
        ['name', name],
        ['file', new Blob(['evil']), 'fine.bin'],
      ]);
      expect(res.status).toBe(303);
      const location = res.headers.get('location')!;
      expect(location).toMatch(/^\/ui\/netboot\?error=/);
      expect(await op.page(location)).toContain('must be a bare file name');
      expect(await lastEventKind()).toBe('netboot.artifacts.upload.failed');
    }
    expect(await bootFiles()).toEqual(before);
    expect(await readdir(join(server.dir))).not.toContain('escape.bin');
  });

  it('refuses a directory name and a form without a file', async () => {
    const dir = await upload([
      ['name', 'subdir'],
      ['file', new Blob(['x']), 'x'],
    ]);
    expect(dir.status).toBe(303);
    expect(await op.page(dir.headers.get('location')!)).toContain('is a directory');
    const none = await upload([['name', 'nothing.bin']]);
    expect(none.status).toBe(303);
    expect(await op.page(none.headers.get('location')!)).toContain('Choose a file to upload');
    const empty = await upload([
      ['name', ''],
      ['file', new Blob([]), ''],
    ]);
    expect(empty.status).toBe(303);
    expect(await op.page(empty.headers.get('location')!)).toContain('Choose a file to upload');
  });

  it('without the CSRF token (or with it after the file): 403 and nothing written', async () => {
    const before = await bootFiles();
    const missing = await upload([['file', new Blob(['forged']), 'forged.bin']], { csrf: false });
    expect(missing.status).toBe(403);
    expect(await missing.text()).toContain('Form refused');

    const late = new FormData();
    late.append('file', new Blob(['forged']), 'late.bin');
    late.append('_csrf', op.csrf);
    const after = await fetch(`${server.base}/ui/netboot/upload`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: op.cookieHeader },
      body: late,
    });
    expect(after.status).toBe(403);

    const urlencoded = await op.post('/ui/netboot/upload', { name: 'x.bin' }, { csrf: false });
    expect(urlencoded.status).toBe(403);
    expect(await bootFiles()).toEqual(before);
  });

  it('without a session: to the login page, nothing written', async () => {
    const before = await bootFiles();
    const form = new FormData();
    form.append('file', new Blob(['anon']), 'anon.bin');
    const res = await fetch(`${server.base}/ui/netboot/upload`, {
      method: 'POST',
      redirect: 'manual',
      body: form,
    });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/login');
    expect(await bootFiles()).toEqual(before);
  });
});

describe('fetching a release', () => {
  let github: ReleaseServer;
  let fetchServer: UiServer;
  let client: UiClient;
  let fetchBoot: string;
  let release: ReleaseFiles;

  beforeAll(async () => {
    github = await startReleaseServer();
    release = makeRelease('1.2.3');
    github.publish('v1.2.3', release);
    const config = await loadConfig({
      configPaths: ['/nonexistent/bty-ui-netboot.d'],
      env: { BTY_BOOT_RELEASE_URL: github.releaseUrl },
    });
    fetchServer = await startUiServer({ config });
    client = await operator(fetchServer);
    fetchBoot = join(fetchServer.dir, 'boot');
  });

  afterAll(async () => {
    await fetchServer?.close();
    await github?.close();
  });

  /** The `<div data-fetch-tag="tag" …>` card of the panel, or ''. */
  function fetchCard(html: string, tag: string): string {
    const start = html.indexOf(`data-fetch-tag="${tag}"`);
    if (start < 0) return '';
    const next = html.indexOf('data-fetch-tag="', start + 1);
    return html.slice(start, next < 0 ? html.indexOf('</section>', start) : next);
  }

  async function panelUntil(tag: string, status: string): Promise<string> {
    for (let i = 0; i < 400; i++) {
      const html = await client.page('/ui/netboot/fetches');
      if (fetchCard(html, tag).startsWith(`data-fetch-tag="${tag}" data-status="${status}"`)) {
        return html;
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`fetch ${tag} never became ${status}`);
  }

  async function netbootKinds(): Promise<string[]> {
    const rows = await fetchServer.database.db
      .selectFrom('events')
      .select('kind')
      .where('subject_kind', '=', 'netboot')
      .orderBy('id')
      .execute();
    return rows.map((r) => r.kind);
  }

  it('the form: tag defaulting to this version, the token, a plain post; the panel refreshes live', async () => {
    const html = await client.page('/ui/netboot');
    const form = html.slice(html.indexOf('<form method="post" action="/ui/netboot/fetch-release"'));
    expect(form).toMatch(/^<form method="post" action="\/ui\/netboot\/fetch-release"/);
    const end = form.indexOf('</form>');
    expect(form.slice(0, end)).toContain('name="_csrf"');
    expect(form.slice(0, end)).toMatch(
      /<input type="text" id="fetch-tag" name="tag" value="v1\.2\.3"/,
    );
    expect(html).toContain(`<code>${github.releaseUrl}/&lt;tag></code>`);
    // The panel and the artifact table refetch themselves on the live `netboot` event.
    expect(html).toMatch(
      /<section class="card mb-3" id="release-fetches"[^>]*hx-get="\/ui\/netboot\/fetches" hx-trigger="sse:netboot throttle:1s, sse:netboot delay:1500ms"/,
    );
    expect(html).toMatch(
      /id="boot-artifacts"[^>]*hx-get="\/ui\/netboot\/artifacts"[^>]*sse:netboot/,
    );
  });

  it('a post without the CSRF token is refused and starts nothing', async () => {
    const res = await client.post('/ui/netboot/fetch-release', { tag: 'v1.2.3' }, { csrf: false });
    expect(res.status).toBe(403);
    expect(await res.text()).toContain('Form refused');
    expect(await netbootKinds()).toEqual([]);
    expect(await client.page('/ui/netboot/fetches')).toContain('No release fetch yet');
  });

  it('a malformed tag: back to the page with the reason, nothing started', async () => {
    const res = await client.post('/ui/netboot/fetch-release', { tag: '../etc' });
    expect(res.status).toBe(303);
    const location = res.headers.get('location')!;
    expect(location).toMatch(/^\/ui\/netboot\?error=/);
    expect(await client.page(location)).toContain(
      'Fetch refused: tag: &quot;../etc&quot; may hold only',
    );
    expect(await netbootKinds()).toEqual([]);
  });

  it('posting the form fetches the release; the panel shows it completed and the table the files', async () => {
    const res = await client.post('/ui/netboot/fetch-release', { tag: 'v1.2.3' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/netboot#release-fetches');
    const panel = await panelUntil('v1.2.3', 'completed');
    const card = fetchCard(panel, 'v1.2.3');
    expect(card).toContain('>completed</span>');
    expect(card).not.toContain('/cancel"');
    for (const [name, content] of release.files) {
      const row = card.slice(card.indexOf(`data-fetch-file="${name}"`));
      const size = content.length.toLocaleString('en-US');
      expect(row).toMatch(new RegExp(`^data-fetch-file="${name}" data-status="completed"`));
      expect(row).toContain(`${size} / ${size} bytes (100%)`);
      expect(row).toContain('style="width: 100%"');
    }
    // Reload (no JavaScript): the table shows the installed files with their manifest digests.
    const html = await client.page('/ui/netboot');
    for (const name of release.artifacts) {
      const row = artifactRow(html, name);
      expect(row).toContain('data-present="true"');
      expect(row).toContain(`sha256 ${sha256Hex(release.files.get(name)!).slice(0, 12)}…`);
    }
    expect(artifactRow(html, release.manifest)).toContain('sha256 manifest');
    // The fragment the live event refetches shows the same.
    expect(await client.page('/ui/netboot/artifacts')).toContain(
      `${release.files.get(release.artifacts[2]!)!.length.toLocaleString('en-US')} bytes`,
    );
    expect(await netbootKinds()).toEqual([
      'netboot.artifacts.fetch.requested',
      'netboot.artifacts.fetch.started',
      'netboot.artifacts.fetched',
    ]);
    expect(await readFile(join(fetchBoot, release.artifacts[0]!))).toEqual(
      release.files.get(release.artifacts[0]!),
    );
  });

  it('a running fetch: per-file progress with bytes and percent, and a Cancel button that works', async () => {
    const slow = makeRelease('1.2.3');
    const squashfs = slow.artifacts[2]!;
    github.publish('v1.2.3-slow', slow, { [squashfs]: { stallAfterBytes: 375_000 } });
    const res = await client.post('/ui/netboot/fetch-release', { tag: 'v1.2.3-slow' });
    expect(res.status).toBe(303);
    let card = '';
    for (let i = 0; i < 400; i++) {
      card = fetchCard(await client.page('/ui/netboot/fetches'), 'v1.2.3-slow');
      if (card.includes('375,000 / 1,500,000 bytes (25%)')) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(card).toMatch(/^data-fetch-tag="v1.2.3-slow" data-status="running"/);
    const row = card.slice(card.indexOf(`data-fetch-file="${squashfs}"`));
    expect(row).toMatch(new RegExp(`^data-fetch-file="${squashfs}" data-status="running"`));
    expect(row).toContain('375,000 / 1,500,000 bytes (25%)');
    expect(row).toContain('aria-valuenow="25"');
    expect(row).toContain('style="width: 25%"');
    const cancelAction = '/ui/netboot/fetches/v1.2.3-slow/cancel';
    expect(card).toContain(`action="${cancelAction}"`);

    // Without the token the cancel is refused; with it the fetch ends, nothing installed.
    expect((await client.post(cancelAction, {}, { csrf: false })).status).toBe(403);
    const cancel = await client.post(cancelAction);
    expect(cancel.status).toBe(303);
    expect(cancel.headers.get('location')).toBe('/ui/netboot#release-fetches');
    const panel = await panelUntil('v1.2.3-slow', 'cancelled');
    expect(fetchCard(panel, 'v1.2.3-slow')).not.toContain('/cancel"');
    for (const [name, content] of release.files) {
      expect((await readFile(join(fetchBoot, name))).equals(content)).toBe(true);
    }
    expect((await readdir(fetchBoot)).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('a failed fetch shows its error', async () => {
    await client.post('/ui/netboot/fetch-release', { tag: 'v0.0.0-none' });
    const panel = await panelUntil('v0.0.0-none', 'failed');
    const card = fetchCard(panel, 'v0.0.0-none');
    expect(card).toContain('class="small text-danger-emphasis text-break mb-1 fetch-error"');
    expect(card).toContain('answered HTTP 404');
    // Cancelling an unknown tag says so.
    const unknown = await client.post('/ui/netboot/fetches/v5.5.5/cancel');
    expect(unknown.status).toBe(303);
    const page = await client.page(unknown.headers.get('location')!);
    expect(page).toContain('role="alert"');
    expect(page).toMatch(/No release fetch for tag (&#39;|')v5\.5\.5(&#39;|')\./);
  });
});
