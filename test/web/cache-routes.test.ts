/**
 * bty-web's artifact cache end to end over HTTP (issue 7): flash plans pointing at `/b/…` on the
 * Host the machine used, pull-through fills from a real origin on loopback (one upstream download
 * for concurrent machines), curated mode (404 until an operator downloads), the operator API
 * (`/cache`, downloads, cancel, removal), eviction that keeps bound images, a corrupted upstream
 * never served, `/images` cache state, and an external withcache (plans use its serve URL, its
 * catalog imports).
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { blobPath, blobToken } from '../../src/cache/url.ts';
import { imageRefForSrc } from '../../src/core/refs.ts';
import { loadConfig } from '../../src/web/config.ts';
import { listEvents } from '../../src/web/db/events.ts';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';
import { startUiServer, UiClient, type UiServer } from '../helpers/ui.ts';

const IMAGE = randomBytes(3 * 1024 * 1024 + 123);
const SHA = createHash('sha256').update(IMAGE).digest('hex');

interface Job {
  key: string;
  origin: string;
  state: string;
  bytes_done: number;
  error: string | null;
}
interface CacheDoc {
  mode: string;
  used_bytes: number;
  entries: Array<{ ref: string } & Record<string, unknown>>;
  downloads: Job[];
}
interface Plan {
  mode: string;
  image: string;
  disk_image_sha?: string;
}
/** A JSON answer; each test states the fields it expects. */
type Json = Record<string, unknown> & { detail?: string };

/** GET /cache as the operator. */
async function cacheDoc(op: UiClient): Promise<CacheDoc> {
  return (await api(op, 'GET', '/cache')).json as unknown as CacheDoc;
}

let origin: FaultServer | null = null;
let server: UiServer | null = null;

afterEach(async () => {
  await server?.close();
  await origin?.close();
  server = null;
  origin = null;
});

async function start(env: Record<string, string> = {}): Promise<{
  server: UiServer;
  origin: FaultServer;
  op: UiClient;
}> {
  origin = await startFaultServer();
  origin.serve('/images/disk.img.zst', { body: IMAGE });
  const loaded = await loadConfig({ configPaths: [], env });
  server = await startUiServer({ config: loaded });
  const op = new UiClient(server.base);
  expect((await op.login()).status).toBe(303);
  return { server, origin, op };
}

/** JSON with the operator's session cookie. */
async function api(
  op: UiClient,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Json }> {
  const res = await fetch(op.base + path, {
    method,
    headers: {
      cookie: op.cookieHeader,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : null) as Json };
}

async function addEntry(op: UiClient, src: string, extra: Record<string, unknown> = {}) {
  const res = await api(op, 'POST', '/catalog/entries', {
    src,
    name: `disk-${Object.keys(extra).length}-${src.length}`,
    sha256: SHA,
    size_bytes: IMAGE.length,
    ...extra,
  });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return res.json as unknown as { ref: string; name: string };
}

async function bind(op: UiClient, mac: string, ref: string) {
  const res = await api(op, 'PUT', `/machines/${mac}`, {
    boot_mode: 'bty-flash-once',
    bty_image_ref: ref,
    target_disk_serial: 'S1',
  });
  expect(res.status, JSON.stringify(res.json)).toBe(200);
}

/** The plan as a machine asks for it, reaching bty-web under `host`. */
function planVia(base: string, mac: string, host: string): Promise<Plan> {
  return new Promise((resolve, reject) => {
    http
      .get(`${base}/pxe/${mac}/plan`, { headers: { host } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d));
        res.on('end', () => resolve(JSON.parse(body) as Plan));
      })
      .on('error', reject);
  });
}

async function download(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  return { res, body: Buffer.from(await res.arrayBuffer()) };
}

async function until<T>(what: string, probe: () => Promise<T | null>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const originGets = (o: FaultServer) =>
  o.requests.filter((r) => r.method === 'GET' && r.path === '/images/disk.img.zst');

describe('pull-through (the default)', () => {
  it('plans point at /b/… on the Host used; the first requests share one upstream download', async () => {
    const { server, origin, op } = await start();
    const src = origin.urlFor('/images/disk.img.zst');
    const entry = await addEntry(op, src);
    await bind(op, '52:54:00:c0:00:01', entry.ref);

    const plan = await planVia(server.base, '52:54:00:c0:00:01', 'pxe.lab:8080');
    expect(plan).toMatchObject({
      mode: 'flash',
      image: `http://pxe.lab:8080/b/${blobToken(src)}/disk.img.zst`,
      disk_image_sha: SHA,
    });

    // Three machines at once, before anything is cached: one upstream GET.
    const url = server.base + blobPath(src);
    const results = await Promise.all([download(url), download(url), download(url)]);
    for (const { res, body } of results) {
      expect(res.status).toBe(200);
      expect(res.headers.get('content-length')).toBe(String(IMAGE.length));
      expect(body.equals(IMAGE)).toBe(true);
    }
    expect(originGets(origin)).toHaveLength(1);

    // Cached now: ETag is the digest, ranges work, HEAD has the length, the origin is not asked.
    await until('the entry', async () => ((await cacheDoc(op)).entries.length === 1 ? true : null));
    const part = await download(url, { range: 'bytes=100-199' });
    expect(part.res.status).toBe(206);
    expect(part.res.headers.get('etag')).toBe(`"sha256:${SHA}"`);
    expect(part.body.equals(IMAGE.subarray(100, 200))).toBe(true);
    const head = await fetch(url, { method: 'HEAD' });
    expect(head.headers.get('content-length')).toBe(String(IMAGE.length));
    expect(originGets(origin)).toHaveLength(1);

    const cache = await cacheDoc(op);
    expect(cache.mode).toBe('pull-through');
    expect(cache.used_bytes).toBe(IMAGE.length);
    expect(cache.entries[0]).toMatchObject({
      ref: entry.ref,
      origin: src,
      digest: `sha256:${SHA}`,
      size: IMAGE.length,
      serve_path: blobPath(src),
      pinned: true,
      catalog_name: entry.name,
    });
    const images = (await api(op, 'GET', '/images')).json as unknown as Array<{
      ref: string;
      cache: unknown;
    }>;
    expect(images.find((i) => i.ref === entry.ref)?.cache).toMatchObject({
      state: 'cached',
      size: IMAGE.length,
    });
    // The plan now says it is a hit; the fill is in the audit log.
    await planVia(server.base, '52:54:00:c0:00:01', 'pxe.lab:8080');
    const [planned] = await listEvents(server.database.db, {
      kind: 'netboot.pxe.plan',
      subjectId: '52:54:00:c0:00:01',
    });
    expect(planned?.details?.withcache).toEqual({
      configured: false,
      hit: true,
      served_from: 'cache',
    });
    const done = await until('the cache.downloaded event', async () => {
      const rows = await listEvents(server.database.db, { kind: 'cache.downloaded' });
      return rows.length > 0 ? rows : null;
    });
    expect(done[0]).toMatchObject({ subject_id: entry.ref, actor: 'system' });
    expect(done[0]?.details).toMatchObject({ pull_through: true, digest: `sha256:${SHA}` });
  });

  it('fetches only catalog images (not an open proxy) and refuses undecodable tokens', async () => {
    const { server, origin } = await start();
    const src = origin.urlFor('/images/disk.img.zst');
    const res = await fetch(server.base + blobPath(src));
    expect(res.status).toBe(404);
    expect(((await res.json()) as { detail: string }).detail).toMatch(/not in the catalog/);
    expect(originGets(origin)).toHaveLength(0);
    const bad = await fetch(`${server.base}/b/a/x`);
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ detail: 'missing url' });
  });

  it('a corrupted upstream is never served whole and never cached', async () => {
    const { server, origin, op } = await start();
    const src = origin.urlFor('/images/disk.img.zst');
    const entry = await addEntry(op, src, { sha256: 'ee'.repeat(32) });
    const url = server.base + blobPath(src);
    let complete = false;
    try {
      const { res, body } = await download(url);
      complete = res.status === 200 && body.length === IMAGE.length;
    } catch {
      // The connection is cut before the held-back tail: the client sees an error.
    }
    expect(complete).toBe(false);
    const failed = await until('the failure event', async () => {
      const rows = await listEvents(server.database.db, { kind: 'cache.download.failed' });
      return rows.length > 0 ? rows : null;
    });
    expect(failed[0]?.subject_id).toBe(entry.ref);
    expect((await cacheDoc(op)).entries).toEqual([]);
    // A machine retrying is told why, in words and as a code the agent turns into exit 4; the
    // origin is not asked again for bytes known to be wrong.
    const upstreamGets = originGets(origin).length;
    const again = await fetch(url, { headers: { range: 'bytes=1000-' } });
    expect(again.status).toBe(502);
    expect(again.headers.get('x-bty-error')).toBe('BTY_ERR_INTEGRITY');
    expect(((await again.json()) as { detail: string }).detail).toMatch(/sha256/);
    expect(originGets(origin)).toHaveLength(upstreamGets);
  });
});

describe('what a client cannot make the cache do', () => {
  it('fetch from a host of its choosing by spelling the URL another way', async () => {
    const { server, origin, op } = await start();
    const src = origin.urlFor('/images/disk.img.zst');
    await addEntry(op, src, { sha256: undefined });
    const elsewhere = await startFaultServer();
    try {
      elsewhere.serve('/images/disk.img.zst', { body: Buffer.alloc(IMAGE.length, 0x45) });
      // Same canonical form (so the same catalog ref), but URL parsers read `\` as `/`.
      const port = new URL(elsewhere.url).port;
      const trick = src.replace('http://', `http://127.0.0.1:${port}\\@`);
      const res = await download(server.base + blobPath(trick));
      expect(res.res.status).toBe(200);
      expect(res.body.equals(IMAGE)).toBe(true);
      expect(elsewhere.requests).toHaveLength(0);
      const machine = await download(server.base + blobPath(src));
      expect(machine.body.equals(IMAGE)).toBe(true);
    } finally {
      await elsewhere.close();
    }
  });

  it('serve a page: whatever type the origin claims, a browser gets bytes it will not render', async () => {
    const { server, origin, op } = await start();
    origin.serve('/images/page.img', {
      body: Buffer.from('<script>alert(1)</script>'),
      contentType: 'text/html',
    });
    const src = origin.urlFor('/images/page.img');
    await addEntry(op, src, { sha256: undefined, size_bytes: undefined, name: 'page' });
    const res = await fetch(server.base + blobPath(src));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('content-security-policy')).toBe('sandbox');
    await res.arrayBuffer();
  });

  it('hold a shutdown open: running downloads are cut and fills cancelled', async () => {
    const { server, origin, op } = await start();
    origin.serve('/images/stall.img', { body: IMAGE }, { stallAfterBytes: 1536 * 1024 });
    const src = origin.urlFor('/images/stall.img');
    await addEntry(op, src, { name: 'stall' });
    let outcome = 'open';
    const got = { bytes: 0 };
    http
      .get(server.base + blobPath(src), (res) => {
        res.on('data', (d: Buffer) => (got.bytes += d.length));
        res.on('end', () => (outcome = 'end'));
        res.on('error', () => (outcome = 'cut'));
        res.on('close', () => (outcome = outcome === 'open' ? 'cut' : outcome));
      })
      .on('error', () => (outcome = 'cut'));
    await until('bytes flowing', () => Promise.resolve(got.bytes > 0 ? true : null));
    const closing = server.app.close().then(() => 'closed');
    const result = await Promise.race([
      closing,
      new Promise((resolve) => setTimeout(() => resolve('still open'), 8000)),
    ]);
    expect(result).toBe('closed');
    await until('the client to see the cut', () =>
      Promise.resolve(outcome === 'cut' ? true : null),
    );
    expect(got.bytes).toBeLessThan(IMAGE.length);
  });
});

describe('curated', () => {
  it('serves only what the operator downloaded; plans use the origin until then', async () => {
    const { server, origin, op } = await start({ BTY_CACHE_MODE: 'curated' });
    const src = origin.urlFor('/images/disk.img.zst');
    const entry = await addEntry(op, src);
    await bind(op, '52:54:00:c0:00:02', entry.ref);

    expect((await planVia(server.base, '52:54:00:c0:00:02', '10.0.0.9')).image).toBe(src);
    const miss = await fetch(server.base + blobPath(src));
    expect(miss.status).toBe(404);
    expect(((await miss.json()) as { detail: string }).detail).toMatch(/download it/);
    expect(originGets(origin)).toHaveLength(0);

    // Bad requests lose nothing and say what is wrong.
    expect((await api(op, 'POST', '/cache/downloads', { ref: 'zz' })).status).toBe(422);
    expect((await api(op, 'POST', '/cache/downloads', { ref: 'ab'.repeat(32) })).status).toBe(404);
    expect((await api(op, 'POST', '/cache/downloads', { ref: entry.ref, x: 1 })).status).toBe(422);
    expect((await fetch(`${server.base}/cache`)).status).toBe(401);

    const queued = await api(op, 'POST', '/cache/downloads', { ref: entry.ref });
    expect(queued.status).toBe(202);
    expect((queued.json.downloads as Job[])[0]).toMatchObject({ origin: src, key: entry.ref });
    await until('the download', async () => {
      const jobs = (await cacheDoc(op)).downloads as Array<{ state: string }>;
      return jobs[0]?.state === 'completed' ? true : null;
    });
    const requested = await listEvents(server.database.db, { kind: 'cache.download.requested' });
    expect(requested[0]).toMatchObject({ actor: 'operator', subject_id: entry.ref });

    const plan = await planVia(server.base, '52:54:00:c0:00:02', '10.0.0.9');
    expect(plan.image).toBe(`http://10.0.0.9${blobPath(src)}`);
    const { body } = await download(server.base + blobPath(src));
    expect(body.equals(IMAGE)).toBe(true);
    // Asked again: already cached, nothing queued.
    expect((await api(op, 'POST', '/cache/downloads', { ref: entry.ref })).json).toMatchObject({
      downloads: [],
      cached: [entry.ref],
    });

    // Removing the copy sends plans back to the origin.
    expect((await api(op, 'DELETE', `/cache/entries/${entry.ref}`)).status).toBe(204);
    expect((await api(op, 'DELETE', `/cache/entries/${entry.ref}`)).status).toBe(404);
    expect((await planVia(server.base, '52:54:00:c0:00:02', '10.0.0.9')).image).toBe(src);
    expect((await fetch(server.base + blobPath(src))).status).toBe(404);
  });

  it('"download all bound images" fetches each bound entry once and can be cancelled', async () => {
    const { server, origin, op } = await start({ BTY_CACHE_MODE: 'curated' });
    origin.serve('/images/slow.img', { body: IMAGE }, { bytesPerSecond: 256 * 1024 });
    const slow = await addEntry(op, origin.urlFor('/images/slow.img'), { name: 'slow' });
    const unbound = await addEntry(op, origin.urlFor('/images/disk.img.zst'), { name: 'unbound' });
    await bind(op, '52:54:00:c0:00:03', slow.ref);
    await bind(op, '52:54:00:c0:00:04', slow.ref);

    const res = await api(op, 'POST', '/cache/downloads', { bound: true });
    expect(res.status).toBe(202);
    expect((res.json.downloads as Job[]).map((j) => j.key)).toEqual([slow.ref]);
    expect(JSON.stringify(res.json)).not.toContain(unbound.ref);

    await until('bytes flowing', async () => {
      const jobs = (await cacheDoc(op)).downloads as Array<{ bytes_done: number }>;
      return (jobs[0]?.bytes_done ?? 0) > 0 ? true : null;
    });
    const cancel = await api(op, 'DELETE', `/cache/downloads/${slow.ref}`);
    expect(cancel.status).toBe(200);
    await until('the cancellation', async () => {
      const jobs = (await cacheDoc(op)).downloads as Array<{ state: string }>;
      return jobs[0]?.state === 'cancelled' ? true : null;
    });
    expect((await api(op, 'DELETE', `/cache/downloads/${slow.ref}`)).status).toBe(404);
    expect((await cacheDoc(op)).entries).toEqual([]);
    expect(server.base).toBeTruthy();
  });

  it('eviction makes room from unbound images (logged), never from a bound one', async () => {
    const { op, origin, server } = await start({
      BTY_CACHE_MODE: 'curated',
      BTY_CACHE_MAX_BYTES: String(IMAGE.length + 1024),
    });
    origin.serve('/images/other.img', { body: IMAGE });
    origin.serve('/images/loose.img', { body: IMAGE });
    const loose = await addEntry(op, origin.urlFor('/images/loose.img'), { name: 'loose' });
    const bound = await addEntry(op, origin.urlFor('/images/disk.img.zst'), { name: 'bound' });
    const other = await addEntry(op, origin.urlFor('/images/other.img'), { name: 'other' });
    await bind(op, '52:54:00:c0:00:05', bound.ref);
    const cachedRefs = async () => (await cacheDoc(op)).entries.map((e) => e.ref);

    await api(op, 'POST', '/cache/downloads', { ref: loose.ref });
    await until('the loose image cached', async () =>
      (await cachedRefs()).includes(loose.ref) ? true : null,
    );
    // The bound image needs the room: the unbound one goes, and the log says so.
    await api(op, 'POST', '/cache/downloads', { ref: bound.ref });
    await until('the bound image cached', async () =>
      (await cachedRefs()).includes(bound.ref) ? true : null,
    );
    expect(await cachedRefs()).toEqual([bound.ref]);
    const evicted = await until('the eviction event', async () => {
      const rows = await listEvents(server.database.db, { kind: 'cache.entry.evicted' });
      return rows.length > 0 ? rows : null;
    });
    expect(evicted[0]).toMatchObject({ subject_id: loose.ref, actor: 'system' });

    // Now only a bound image could make room: the next download fails instead.
    await api(op, 'POST', '/cache/downloads', { ref: other.ref });
    const failed = await until('the second download to fail', async () => {
      const job = (await cacheDoc(op)).downloads.find((j) => j.key === other.ref);
      return job && job.state !== 'queued' && job.state !== 'running' ? job : null;
    });
    expect(failed.state).toBe('failed');
    expect(failed.error).toMatch(/cache full/);
    expect(await cachedRefs()).toEqual([bound.ref]);
  });
});

describe('an external withcache', () => {
  it('plans use its serve URL, and its catalog listing imports', async () => {
    const listing = {
      url: 'x',
      entries: [
        {
          name: 'from-withcache',
          src: 'https://images.example/os/debian.img.zst',
          sha256: SHA,
          size_bytes: IMAGE.length,
        },
      ],
    };
    const withcache = http.createServer((req, res) => {
      if (req.url === '/catalog') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(listing));
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => withcache.listen(0, '127.0.0.1', r));
    const port = (withcache.address() as { port: number }).port;
    try {
      const { server, op } = await start({ BTY_WITHCACHE_URL: `127.0.0.1:${port}/` });
      const imported = await api(op, 'POST', '/catalog/import/withcache');
      expect(imported.status, JSON.stringify(imported.json)).toBe(200);
      expect(imported.json).toMatchObject({ source: `http://127.0.0.1:${port}/catalog`, added: 1 });
      const ref = imageRefForSrc(listing.entries[0]!.src);
      await bind(op, '52:54:00:c0:00:06', ref);
      const plan = await planVia(server.base, '52:54:00:c0:00:06', 'pxe.lab');
      expect(plan.image).toBe(
        `http://127.0.0.1:${port}/b/${blobToken(listing.entries[0]!.src)}/debian.img.zst`,
      );
      expect(plan.disk_image_sha).toBe(SHA);
      // catalog.toml sends the wizard through the withcache too (upstream-web §9.7).
      const toml = await (await fetch(`${server.base}/catalog.toml`)).text();
      expect(toml).toContain(
        `src = "http://127.0.0.1:${port}/b/${blobToken(listing.entries[0]!.src)}/debian.img.zst"`,
      );
    } finally {
      await new Promise((r) => withcache.close(r));
    }
  });

  it('importing without one configured is a 409 that says how to set it', async () => {
    const { op } = await start();
    const res = await api(op, 'POST', '/catalog/import/withcache');
    expect(res.status).toBe(409);
    expect(res.json.detail).toMatch(/BTY_WITHCACHE_URL/);
  });
});
