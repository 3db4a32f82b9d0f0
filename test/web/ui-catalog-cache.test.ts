/**
 * The Catalog page's artifact-cache column and forms (issue 7): each entry's cache state, the
 * Download / Cancel / Remove forms, "Download all bound images", the live table fragment that
 * `sse:cache` refetches, withcache's import button, and forms without the CSRF token refused.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/web/config.ts';
import { listEvents } from '../../src/web/db/events.ts';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';
import { operator, startUiServer, type UiClient, type UiServer } from '../helpers/ui.ts';

const IMAGE = randomBytes(2 * 1024 * 1024);
const SHA = createHash('sha256').update(IMAGE).digest('hex');

let origin: FaultServer;
let withcache: http.Server;
let server: UiServer;
let op: UiClient;
let fast = { ref: '', name: 'fast-image' };
let slow = { ref: '', name: 'slow-image' };

beforeAll(async () => {
  origin = await startFaultServer();
  origin.serve('/fast.img', { body: IMAGE });
  origin.serve('/slow.img', { body: IMAGE }, { bytesPerSecond: 128 * 1024 });
  withcache = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        entries: [{ name: 'wc-image', src: 'https://wc.example/wc.img', sha256: SHA }],
      }),
    );
  });
  await new Promise<void>((r) => withcache.listen(0, '127.0.0.1', r));
  const port = (withcache.address() as { port: number }).port;
  server = await startUiServer({
    config: await loadConfig({
      configPaths: [],
      env: { BTY_CACHE_MODE: 'curated', BTY_WITHCACHE_URL: `http://127.0.0.1:${port}` },
    }),
  });
  op = await operator(server);
  for (const e of [fast, slow]) {
    const res = await fetch(`${server.base}/catalog/entries`, {
      method: 'POST',
      headers: { cookie: op.cookieHeader, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: e.name,
        src: origin.urlFor(e === fast ? '/fast.img' : '/slow.img'),
        sha256: SHA,
        size_bytes: IMAGE.length,
      }),
    });
    expect(res.status).toBe(201);
    e.ref = ((await res.json()) as { ref: string }).ref;
  }
  fast = { ...fast };
  slow = { ...slow };
});

afterAll(async () => {
  await server?.close();
  await origin?.close();
  await new Promise((r) => withcache?.close(r));
});

/** The cache cell of an entry's row, and its state. */
function cacheCell(html: string, ref: string): { state: string; html: string } {
  const row = new RegExp(`<tr data-ref="${ref}">[\\s\\S]*?</tr>`).exec(html)?.[0] ?? '';
  const state = /class="cache-state[^"]*" data-state="([a-z]+)"/.exec(row)?.[1] ?? '';
  return { state, html: row };
}

/** The banner text a form's 303 carries (`cache` or `error`). */
function notice(res: Response): string {
  const q = new URL(res.headers.get('location') ?? '/', 'http://x').searchParams;
  return q.get('cache') ?? q.get('error') ?? '';
}

async function waitForState(ref: string, wanted: string): Promise<string> {
  const end = Date.now() + 20_000;
  for (;;) {
    const html = await op.page('/ui/catalog/table');
    if (cacheCell(html, ref).state === wanted) return html;
    if (Date.now() > end) throw new Error(`${ref} never became ${wanted}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('the cache column', () => {
  it('shows the mode and usage, every entry not cached, and refreshes on sse:cache', async () => {
    const html = await op.page('/ui/catalog');
    expect(html).toContain('<strong>Artifact cache</strong> (curated)');
    expect(html).toMatch(/id="catalog-rows"[^>]*hx-get="\/ui\/catalog\/table"/);
    expect(html).toMatch(/hx-trigger="sse:cache throttle:1s/);
    expect(cacheCell(html, fast.ref).state).toBe('absent');
    expect(cacheCell(html, fast.ref).html).toContain(
      `action="/ui/catalog/${fast.ref}/cache/download"`,
    );
    expect(html).toContain('Plans send machines to the withcache');
  });

  it('Download fills the cache (verified), shows it cached; Remove drops it', async () => {
    const res = await op.post(`/ui/catalog/${fast.ref}/cache/download`);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toMatch(/^\/ui\/catalog\?cache=Downloading/);
    const html = await waitForState(fast.ref, 'cached');
    expect(cacheCell(html, fast.ref).html).toContain('2.00 MiB');
    // The card's usage line is a live fragment of its own.
    const card = await op.page('/ui/catalog/cache-card');
    expect(card).toMatch(/id="cache-card"[^>]*hx-get="\/ui\/catalog\/cache-card"/);
    expect(card).toContain('1 cached, 2.00 MiB');
    const requested = await listEvents(server.database.db, { kind: 'cache.download.requested' });
    expect(requested.some((e) => e.subject_id === fast.ref)).toBe(true);

    const again = await op.post(`/ui/catalog/${fast.ref}/cache/download`);
    expect(notice(again)).toContain('cached already');

    const removed = await op.post(`/ui/catalog/${fast.ref}/cache/remove`);
    expect(notice(removed)).toContain('Removed the cached copy of fast-image');
    expect(cacheCell(await op.page('/ui/catalog/table'), fast.ref).state).toBe('absent');
  });

  it('a running download shows a progress bar and can be cancelled from the page', async () => {
    await op.post(`/ui/catalog/${slow.ref}/cache/download`);
    const html = await waitForState(slow.ref, 'running');
    const cell = cacheCell(html, slow.ref).html;
    expect(cell).toContain('role="progressbar"');
    expect(cell).toContain(`action="/ui/catalog/${slow.ref}/cache/cancel"`);
    const res = await op.post(`/ui/catalog/${slow.ref}/cache/cancel`);
    expect(notice(res)).toContain('Cancelled');
    const after = await waitForState(slow.ref, 'cancelled');
    expect(cacheCell(after, slow.ref).html).toContain('/cache/download"');
  });

  it('"Download all bound images" downloads only what machines are bound to', async () => {
    const bind = await fetch(`${server.base}/machines/52:54:00:c1:00:01`, {
      method: 'PUT',
      headers: { cookie: op.cookieHeader, 'content-type': 'application/json' },
      body: JSON.stringify({ boot_mode: 'bty-flash-once', bty_image_ref: fast.ref }),
    });
    expect(bind.status).toBe(200);
    const res = await op.post('/ui/catalog/cache/download-bound');
    expect(notice(res)).toContain('Bound images: 1 download started, 0 already cached');
    await waitForState(fast.ref, 'cached');
    expect(cacheCell(await op.page('/ui/catalog/table'), slow.ref).state).toBe('cancelled');
  });

  it('imports the withcache listing from its button', async () => {
    const res = await op.post('/ui/catalog/import-withcache');
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toContain('imported=1');
    expect(await op.page('/ui/catalog')).toContain('wc-image');
  });

  it('refuses the forms without the CSRF token, changing nothing', async () => {
    const before = await op.page('/ui/catalog/table');
    for (const path of [
      `/ui/catalog/${fast.ref}/cache/remove`,
      `/ui/catalog/${slow.ref}/cache/download`,
      '/ui/catalog/cache/download-bound',
      '/ui/catalog/import-withcache',
    ]) {
      expect((await op.post(path, {}, { csrf: false })).status, path).toBe(403);
    }
    expect(cacheCell(await op.page('/ui/catalog/table'), fast.ref).state).toBe(
      cacheCell(before, fast.ref).state,
    );
    const bad = await op.post(`/ui/catalog/${'0'.repeat(64)}/cache/download`);
    expect(notice(bad)).toContain('No catalog entry');
  });
});
