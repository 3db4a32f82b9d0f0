/**
 * The Catalog page over real HTTP: the entries table with the machines bound to each entry, the
 * add form (success, validation errors that keep the typed values, a duplicate name), the import
 * form (an uploaded TOML file, an http:// URL served here, a TOML that does not parse), delete,
 * CSRF refusals for every form (the multipart one included), and data rendered as text.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listCatalogEntries } from '../../src/web/db/catalog.ts';
import { operator, startUiServer, type UiClient, type UiServer } from '../helpers/ui.ts';
import { hiddenFields, textOfId } from '../helpers/html.ts';

let server: UiServer;
let op: UiClient;
let catalogHost: Server;
let catalogBase: string;

const REMOTE_TOML = `version = 1

[[images]]
name = "remote-one"
src = "https://images.example.org/remote-one.img.zst"
sha256 = "${'b'.repeat(64)}"

[[images]]
name = "remote-two"
src = "https://images.example.org/remote-two.img"
`;

beforeAll(async () => {
  server = await startUiServer();
  op = await operator(server);
  // A catalog published over plain HTTP, as a lab file server would.
  catalogHost = createServer((req, res) => {
    if (req.url === '/catalog.toml') {
      res.writeHead(200, { 'content-type': 'application/toml' }).end(REMOTE_TOML);
    } else {
      res.writeHead(404).end('not here');
    }
  });
  await new Promise<void>((resolve) => catalogHost.listen(0, '127.0.0.1', resolve));
  catalogBase = `http://127.0.0.1:${(catalogHost.address() as { port: number }).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => catalogHost?.close(resolve));
  await server?.close();
});

/** The `<tr data-ref="…">` row of the entry called `name`, or '' when the table has none. */
function rowOf(html: string, name: string): string {
  const rows = html.match(/<tr data-ref="[0-9a-f]{64}">[\s\S]*?<\/tr>/g) ?? [];
  return rows.find((r) => r.includes(`>${name}</span>`)) ?? '';
}

function refOf(row: string): string {
  return /data-ref="([0-9a-f]{64})"/.exec(row)?.[1] ?? '';
}

async function entryNames(): Promise<string[]> {
  return (await listCatalogEntries(server.database.db)).map((e) => e.name);
}

async function eventKinds(): Promise<string[]> {
  const rows = await server.database.db.selectFrom('events').select('kind').orderBy('id').execute();
  return rows.map((r) => r.kind);
}

/** Adds an entry through the JSON API; returns its ref. */
async function addByJson(fields: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${server.base}/catalog/entries`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', cookie: op.cookieHeader },
    body: JSON.stringify(fields),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { ref: string }).ref;
}

async function bind(mac: string, ref: string): Promise<void> {
  const res = await fetch(`${server.base}/machines/${mac}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', cookie: op.cookieHeader },
    body: JSON.stringify({ bty_image_ref: ref }),
  });
  expect(res.status).toBeLessThan(300);
}

/** A multipart form post as a browser sends it: `_csrf` first, then the fields in order. */
async function postMultipart(
  path: string,
  fields: Array<[string, string | Blob, string?]>,
  { csrf = true }: { csrf?: boolean } = {},
): Promise<Response> {
  const form = new FormData();
  if (csrf) form.append('_csrf', op.csrf);
  for (const [name, value, filename] of fields) {
    if (typeof value === 'string') form.append(name, value);
    else form.append(name, value, filename);
  }
  return fetch(server.base + path, {
    method: 'POST',
    redirect: 'manual',
    headers: { accept: 'text/html', cookie: op.cookieHeader },
    body: form,
  });
}

describe('the catalog table', () => {
  it('is empty at first and says how to add an image', async () => {
    const html = await op.page('/ui/catalog');
    expect(html).toContain('id="catalog-table"');
    expect(html).toContain('The catalog is empty');
    expect(html).toContain('id="add-entry"');
    expect(html).toMatch(/<form[^>]*enctype="multipart\/form-data"[^>]*id="import-catalog"/);
  });

  it('lists entries by name with their fields and the machines bound to each', async () => {
    const sha = 'a'.repeat(64);
    const zeta = await addByJson({
      src: 'https://images.example.org/zeta.img.zst',
      name: 'zeta',
      sha256: sha,
      size_bytes: 3 * 1024 ** 3,
      arch: 'x86_64',
    });
    const alpha = await addByJson({ src: 'https://images.example.org/alpha-arm64.img' });
    const macs = Array.from({ length: 7 }, (_, i) => `52:54:00:00:10:0${i}`);
    for (const mac of macs) await bind(mac, zeta);
    await bind('52:54:00:00:20:01', alpha);

    const html = await op.page('/ui/catalog');
    expect(html.indexOf('>alpha-arm64.img</span>')).toBeLessThan(html.indexOf('>zeta</span>'));
    const row = rowOf(html, 'zeta');
    expect(refOf(row)).toBe(zeta);
    expect(row).toContain('>img.zst<'); // format derived from the name
    expect(row).toContain('3.00 GiB');
    expect(row).toContain('x86_64');
    expect(row).toContain(`<code title="${sha}">${sha.slice(0, 12)}</code>`);
    expect(row).toContain(`data-copy="${sha}"`);
    expect(row).toContain('title="https://images.example.org/zeta.img.zst"');
    expect(row).toContain(`>${zeta.slice(0, 12)}</code>`);
    // Seven bound: a count, the first five linked, and a link to the rest.
    expect(row).toMatch(/<span class="badge[^"]*"[^>]*>7<\/span>/);
    for (const mac of macs.slice(0, 5)) expect(row).toContain(`href="/ui/machines/${mac}"`);
    expect(row).not.toContain(`href="/ui/machines/${macs[5]}"`);
    expect(row).toContain(`href="/ui/machines?q=${zeta}"`);
    expect(row).toContain('+2 more');

    const arm = rowOf(html, 'alpha-arm64.img');
    expect(arm).toContain('arm64');
    expect(arm).toContain('href="/ui/machines/52:54:00:00:20:01"');
    expect(arm).not.toContain('more');
  });
});

describe('adding an entry', () => {
  it('adds it, logs the event the JSON route logs, and says so', async () => {
    const res = await op.post('/ui/catalog/entries', {
      src: 'https://images.example.org/debian-13.img.zst',
      name: 'debian-13',
      format: 'img.zst',
      sha256: `sha256:${'C'.repeat(64)}`,
      size_bytes: '1048576',
      arch: 'x86_64',
      description: 'Debian 13 for the lab',
    });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/catalog?added=debian-13');
    const stored = (await listCatalogEntries(server.database.db)).find(
      (e) => e.name === 'debian-13',
    );
    expect(stored).toMatchObject({
      sha256: 'c'.repeat(64),
      size_bytes: 1048576,
      format: 'img.zst',
      arch: 'x86_64',
      description: 'Debian 13 for the lab',
    });
    expect((await eventKinds()).at(-1)).toBe('catalog.entry.added');
    const html = await op.page('/ui/catalog?added=debian-13');
    expect(html).toContain('Added catalog entry debian-13.');
    expect(rowOf(html, 'debian-13')).toContain('1.00 MiB');
  });

  it('a bad field re-renders the form with the message and every typed value kept', async () => {
    const before = await entryNames();
    const res = await op.post('/ui/catalog/entries', {
      src: 'https://images.example.org/kept.img',
      name: 'kept-name',
      sha256: 'not-a-digest',
      size_bytes: '12',
      arch: 'arm64',
      description: 'kept description',
    });
    expect(res.status).toBe(422);
    const html = await res.text();
    expect(html).toContain('Entry not added: sha256: must be 64 hexadecimal characters');
    expect(html).toMatch(
      /id="add-sha256" name="sha256" value="not-a-digest" class="[^"]*is-invalid/,
    );
    expect(html).toContain('value="https://images.example.org/kept.img"');
    expect(html).toContain('value="kept-name"');
    expect(html).toContain('value="arm64"');
    expect(html).toMatch(/<textarea[^>]*name="description"[^>]*>kept description<\/textarea>/);
    expect(await entryNames()).toEqual(before);
  });

  it('refuses a size that is not a number, and a file:// source', async () => {
    const size = await op.post('/ui/catalog/entries', {
      src: 'https://images.example.org/size.img',
      size_bytes: 'lots',
    });
    expect(size.status).toBe(422);
    expect(await size.text()).toContain('size_bytes: must be a non-negative integer');
    const file = await op.post('/ui/catalog/entries', { src: 'file:///srv/x.img' });
    expect(file.status).toBe(422);
    expect(await file.text()).toContain('src: must be an http://, https:// or oras:// URL');
  });

  it('refuses a name already in the catalog (and logs the refusal)', async () => {
    const res = await op.post('/ui/catalog/entries', {
      src: 'https://images.example.org/another-debian.img.zst',
      name: 'debian-13',
    });
    expect(res.status).toBe(409);
    const html = await res.text();
    expect(html).toContain("name: 'debian-13' is already used by the entry with ref");
    expect(html).toContain('value="https://images.example.org/another-debian.img.zst"');
    expect((await eventKinds()).at(-1)).toBe('catalog.entry.add.failed');
    expect((await entryNames()).filter((n) => n === 'debian-13')).toHaveLength(1);
  });

  it('without the CSRF token: 403 and nothing added', async () => {
    const before = await entryNames();
    const res = await op.post(
      '/ui/catalog/entries',
      { src: 'https://images.example.org/forged.img' },
      { csrf: false },
    );
    expect(res.status).toBe(403);
    expect(await entryNames()).toEqual(before);
  });

  it('renders a <script> name and description as text', async () => {
    const res = await op.post('/ui/catalog/entries', {
      src: 'https://images.example.org/xss.img',
      name: '<script>alert(1)</script>',
      description: '<script>alert("d")</script>',
    });
    expect(res.status).toBe(303);
    const html = await op.page('/ui/catalog');
    expect(html).not.toContain('<script>alert');
    expect(html).toContain('&lt;script>alert(1)&lt;/script>');
    expect(html).toContain('&lt;script>alert(&quot;d&quot;)&lt;/script>');
  });
});

describe('importing a catalog', () => {
  const UPLOADED = `version = 1

[[images]]
name = "uploaded-one"
src = "https://images.example.org/uploaded-one.img.zst"
sha256 = "${'d'.repeat(64)}"
size_bytes = 2048

[[images]]
name = "debian-13"
src = "https://images.example.org/debian-13.img.zst"
description = "updated by the import"
`;

  it('from an uploaded file: added and updated counted, the entries stored', async () => {
    await op.page('/ui/catalog');
    const res = await postMultipart('/ui/catalog/import', [
      ['url', ''],
      ['file', new Blob([UPLOADED], { type: 'application/toml' }), 'lab.toml'],
    ]);
    expect(res.status).toBe(303);
    const location = res.headers.get('location')!;
    expect(location).toBe('/ui/catalog?imported=2&added_count=1&updated_count=1');
    expect(await op.page(location)).toContain('Imported 2 entries (added 1, updated 1).');
    const stored = await listCatalogEntries(server.database.db);
    expect(stored.find((e) => e.name === 'uploaded-one')?.size_bytes).toBe(2048);
    expect(stored.find((e) => e.name === 'debian-13')?.description).toBe('updated by the import');
    expect((await eventKinds()).at(-1)).toBe('catalog.imported');
  });

  it('from an http:// URL, fetched by the server', async () => {
    const res = await postMultipart('/ui/catalog/import', [
      ['url', `${catalogBase}/catalog.toml`],
      ['file', new Blob([]), ''],
    ]);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe(
      '/ui/catalog?imported=2&added_count=2&updated_count=0',
    );
    expect(await entryNames()).toEqual(expect.arrayContaining(['remote-one', 'remote-two']));
  });

  it('a URL that answers 404: the error, the URL kept', async () => {
    const url = `${catalogBase}/missing.toml`;
    const res = await postMultipart('/ui/catalog/import', [['url', url]]);
    // The JSON API's status for a catalog that could not be fetched.
    expect(res.status).toBe(502);
    const html = await res.text();
    expect(html).toContain('Nothing was imported: url:');
    expect(html).toContain(`value="${url}"`);
  });

  it('a TOML that does not parse: the parser message with its line, nothing imported', async () => {
    const before = await listCatalogEntries(server.database.db);
    const broken = 'version = 1\n\n[[images]]\nname = "x"\nsrc = = "oops"\n';
    const res = await postMultipart('/ui/catalog/import', [
      ['file', new Blob([broken]), 'broken.toml'],
    ]);
    expect(res.status).toBe(422);
    const html = await res.text();
    expect(html).toContain('Nothing was imported:');
    expect(html).toMatch(/Nothing was imported:[^<]*line 5/);
    expect(await listCatalogEntries(server.database.db)).toEqual(before);
    expect((await eventKinds()).at(-1)).toBe('catalog.import.failed');
  });

  it('neither a file nor a URL, or both: said so', async () => {
    const none = await postMultipart('/ui/catalog/import', [['url', '']]);
    expect(none.status).toBe(422);
    expect(await none.text()).toContain('Choose a catalog file or give its URL.');
    const both = await postMultipart('/ui/catalog/import', [
      ['url', `${catalogBase}/catalog.toml`],
      ['file', new Blob([UPLOADED]), 'lab.toml'],
    ]);
    expect(both.status).toBe(422);
    expect(await both.text()).toContain('either a file or a URL, not both');
    const local = await postMultipart('/ui/catalog/import', [['url', '/etc/bty/catalog.toml']]);
    expect(local.status).toBe(422);
    expect(await local.text()).toContain('url: must be an http://, https:// or oras:// URL');
  });

  it('without the CSRF token: 403 and nothing imported (file or URL)', async () => {
    const before = await listCatalogEntries(server.database.db);
    const events = (await eventKinds()).length;
    const file = await postMultipart(
      '/ui/catalog/import',
      [['file', new Blob([REMOTE_TOML.replaceAll('remote', 'forged')]), 'x.toml']],
      { csrf: false },
    );
    expect(file.status).toBe(403);
    const url = await postMultipart(
      '/ui/catalog/import',
      [['url', `${catalogBase}/catalog.toml`]],
      {
        csrf: false,
      },
    );
    expect(url.status).toBe(403);
    // A wrong token counts as none.
    const form = new FormData();
    form.append('_csrf', 'x'.repeat(43));
    form.append('file', new Blob([REMOTE_TOML]), 'x.toml');
    const wrong = await fetch(`${server.base}/ui/catalog/import`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: op.cookieHeader },
      body: form,
    });
    expect(wrong.status).toBe(403);
    expect(await listCatalogEntries(server.database.db)).toEqual(before);
    expect(await eventKinds()).toHaveLength(events);
  });
});

describe('deleting an entry', () => {
  it('deletes it and names the machines still bound to it', async () => {
    const ref = await addByJson({ src: 'https://images.example.org/doomed.img', name: 'doomed' });
    await bind('52:54:00:00:30:01', ref);
    const row = rowOf(await op.page('/ui/catalog'), 'doomed');
    expect(row).toContain(`action="/ui/catalog/${ref}/delete"`);
    expect(row).toMatch(/data-confirm="Delete the catalog entry doomed\? 1 machine bound to it/);
    // Empty until the JavaScript dialog is accepted: without JavaScript the server asks.
    // (Preact writes an empty value as a bare `value`, which HTML reads as value="".)
    expect(row).toMatch(/<input type="hidden" name="confirm" value(="")?\/?>/);

    const res = await op.post(`/ui/catalog/${ref}/delete`, { confirm: '1' });
    expect(res.status).toBe(303);
    const location = res.headers.get('location')!;
    expect(location).toBe(`/ui/catalog?deleted=doomed&ref=${ref}`);
    expect(await entryNames()).not.toContain('doomed');
    expect((await eventKinds()).at(-1)).toBe('catalog.entry.removed');
    const html = await op.page(location);
    expect(html).toContain('Deleted catalog entry doomed.');
    expect(html).toContain('1 machine still bound to doomed: 52:54:00:00:30:01');
    expect(rowOf(html, 'doomed')).toBe('');
  });

  it('without confirm=1: a page naming the entry and the machines left bound, nothing deleted', async () => {
    const src = 'https://images.example.org/asked.img';
    const ref = await addByJson({ src, name: 'asked' });
    await bind('52:54:00:00:31:02', ref);
    await bind('52:54:00:00:31:01', ref);
    const events = (await eventKinds()).length;

    for (const fields of [{}, { confirm: '' }, { confirm: 'true' }] as Record<string, string>[]) {
      const res = await op.post(`/ui/catalog/${ref}/delete`, fields);
      expect(res.status).toBe(200);
      const html = await res.text();
      expect(html).toContain('<title>Delete catalog entry asked? · bty</title>');
      expect(textOfId(html, 'delete-name')).toBe('asked');
      expect(textOfId(html, 'delete-src')).toBe(src);
      const bound = textOfId(html, 'delete-bound');
      expect(bound).toContain('2 machines bound to it keep that binding');
      expect(bound).toContain('52:54:00:00:31:01 52:54:00:00:31:02');
      expect(html).toMatch(
        new RegExp(
          `<form id="confirm-delete-form" method="post" action="/ui/catalog/${ref}/delete"`,
        ),
      );
      const form = hiddenFields(html, 'confirm-delete-form');
      expect(form.confirm).toBe('1');
      expect(form._csrf).toBeTruthy();
      expect(html).toMatch(/<button type="submit" id="confirm-delete" class="btn btn-danger/);
      expect(html).toMatch(/<a id="cancel-delete" class="[^"]*" href="\/ui\/catalog">Cancel<\/a>/);
      expect(await entryNames()).toContain('asked');
      expect(await eventKinds()).toHaveLength(events);
    }

    // The confirmation page's own form, posted as is, deletes.
    const page = await op.post(`/ui/catalog/${ref}/delete`);
    const confirmed = await op.post(
      `/ui/catalog/${ref}/delete`,
      hiddenFields(await page.text(), 'confirm-delete-form'),
      { csrf: false },
    );
    expect(confirmed.status).toBe(303);
    expect(confirmed.headers.get('location')).toBe(`/ui/catalog?deleted=asked&ref=${ref}`);
    expect(await entryNames()).not.toContain('asked');
    expect((await eventKinds()).at(-1)).toBe('catalog.entry.removed');
  });

  it('the confirmation page of an entry nothing is bound to says so', async () => {
    const ref = await addByJson({ src: 'https://images.example.org/lonely.img', name: 'lonely' });
    const res = await op.post(`/ui/catalog/${ref}/delete`);
    expect(res.status).toBe(200);
    expect(textOfId(await res.text(), 'delete-bound')).toBe('No machine is bound to it.');
    expect(await entryNames()).toContain('lonely');
  });

  it('an entry already gone, or a bad ref: an error banner', async () => {
    const gone = await op.post(`/ui/catalog/${'e'.repeat(64)}/delete`);
    expect(gone.status).toBe(303);
    const location = gone.headers.get('location')!;
    expect(await op.page(location)).toContain(`No catalog entry with ref ${'e'.repeat(64)}`);
    const bad = await op.post('/ui/catalog/nope/delete');
    expect(bad.status).toBe(303);
    expect(await op.page(bad.headers.get('location')!)).toContain('Not a catalog ref');
  });

  it('without the CSRF token: 403 and the entry stays', async () => {
    const ref = await addByJson({ src: 'https://images.example.org/kept.raw', name: 'kept' });
    const res = await op.post(`/ui/catalog/${ref}/delete`, { confirm: '1' }, { csrf: false });
    expect(res.status).toBe(403);
    expect(await entryNames()).toContain('kept');
  });
});
