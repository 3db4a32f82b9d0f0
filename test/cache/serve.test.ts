/**
 * Serving and filling over real HTTP on loopback: Range and HEAD semantics, pull-through fills
 * shared by concurrent clients, resume after a cut, a corrupted upstream refused, cancel.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createCacheServer } from '../../src/cache/cli.ts';
import { CacheManager, type CacheJobEvent, type FillOptions } from '../../src/cache/manager.ts';
import { CacheStore } from '../../src/cache/store.ts';
import { blobPath } from '../../src/cache/url.ts';
import { BtyError } from '../../src/core/errors.ts';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';
import { get } from './http.ts';

const MiB = 1024 * 1024;
const image = randomBytes(3 * MiB + 12345);
const imageSha = createHash('sha256').update(image).digest('hex');

let upstream: FaultServer;
let dir: string;
let store: CacheStore;
let manager: CacheManager;
let server: Server;
let base: string;
let expectations: Map<string, FillOptions>;
let events: CacheJobEvent[];

beforeAll(async () => {
  upstream = await startFaultServer();
});
afterAll(async () => {
  await upstream.close();
});

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bty-cache-serve-'));
  store = CacheStore.open(dir);
  manager = new CacheManager(store, {
    progressIntervalMs: 50,
    transfer: { retryDelayMs: 20, idleTimeoutMs: 5000 },
  });
  events = [];
  manager.on('job', (e) => events.push(e));
  expectations = new Map();
  server = createCacheServer(manager, { allowFill: true, expect: (o) => expectations.get(o) });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterEach(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await manager.close();
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function upstreamGets(path: string): number {
  return upstream.requests.filter((r) => r.path === path && r.method === 'GET').length;
}

function partFiles(): string[] {
  const tmp = join(dir, 'tmp');
  return readdirSync(tmp, { recursive: true, encoding: 'utf8' }).filter((n) => n.endsWith('.part'));
}

describe('a cached entry', () => {
  let url: string;
  let etag: string;
  beforeEach(async () => {
    upstream.serve('/entry.img', { body: image, contentType: 'application/x-raw-disk-image' });
    const origin = upstream.urlFor('/entry.img');
    const entry = await manager.fetch(origin).done;
    url = base + blobPath(origin);
    etag = `"${entry.digest}"`;
  });

  it('answers GET with the whole body, Content-Length, ETag and the stored type', async () => {
    const r = await get(url);
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe(String(image.length));
    expect(r.headers.etag).toBe(`"sha256:${imageSha}"`);
    expect(r.headers['accept-ranges']).toBe('bytes');
    expect(r.headers['content-type']).toBe('application/x-raw-disk-image');
    expect(r.body.equals(image)).toBe(true);
  });

  it('answers HEAD with the same headers and no body', async () => {
    const r = await get(url, {}, 'HEAD');
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe(String(image.length));
    expect(r.headers.etag).toBe(etag);
    expect(r.body.length).toBe(0);
  });

  it('serves single ranges byte-exact', async () => {
    const mid = await get(url, { range: 'bytes=1000-2000000' });
    expect(mid.status).toBe(206);
    expect(mid.headers['content-range']).toBe(`bytes 1000-2000000/${image.length}`);
    expect(mid.headers['content-length']).toBe(String(2000000 - 1000 + 1));
    expect(mid.body.equals(image.subarray(1000, 2000001))).toBe(true);

    const open = await get(url, { range: `bytes=${image.length - 10}-` });
    expect(open.status).toBe(206);
    expect(open.body.equals(image.subarray(image.length - 10))).toBe(true);

    const suffix = await get(url, { range: 'bytes=-4096' });
    expect(suffix.status).toBe(206);
    expect(suffix.headers['content-range']).toBe(
      `bytes ${image.length - 4096}-${image.length - 1}/${image.length}`,
    );
    expect(suffix.body.equals(image.subarray(image.length - 4096))).toBe(true);

    const pastEnd = await get(url, { range: `bytes=10-${image.length + 100}` });
    expect(pastEnd.status).toBe(206);
    expect(pastEnd.body.equals(image.subarray(10))).toBe(true);
  });

  it('answers an unsatisfiable range with 416 and the size', async () => {
    const r = await get(url, { range: `bytes=${image.length}-` });
    expect(r.status).toBe(416);
    expect(r.headers['content-range']).toBe(`bytes */${image.length}`);
    expect(r.body.length).toBe(0);
  });

  it('honours If-Range: the ETag gives the range, anything else the whole body', async () => {
    const match = await get(url, { range: 'bytes=0-9', 'if-range': etag });
    expect(match.status).toBe(206);
    expect(match.body.equals(image.subarray(0, 10))).toBe(true);
    const stale = await get(url, { range: 'bytes=0-9', 'if-range': '"sha256:0000"' });
    expect(stale.status).toBe(200);
    expect(stale.body.equals(image)).toBe(true);
  });

  it('ignores Range on HEAD', async () => {
    const r = await get(url, { range: 'bytes=0-9' }, 'HEAD');
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe(String(image.length));
  });

  it('survives clients that hang up mid-body', async () => {
    const fdsBefore = readdirSync('/proc/self/fd').length;
    const http = await import('node:http');
    await Promise.all(
      Array.from({ length: 8 }, () => {
        return new Promise<void>((resolve) => {
          const req = http.get(url, { agent: false }, (res) => {
            res.once('data', () => {
              req.destroy();
              resolve();
            });
          });
          req.on('error', () => resolve());
        });
      }),
    );
    // The server notices each hang-up on its own schedule: wait (bounded) for the files to close.
    let fdsAfter = Infinity;
    for (let i = 0; i < 100 && fdsAfter > fdsBefore; i++) {
      await new Promise((r) => setTimeout(r, 20));
      fdsAfter = readdirSync('/proc/self/fd').length;
    }
    expect(fdsAfter).toBeLessThanOrEqual(fdsBefore);
    expect((await get(url)).body.equals(image)).toBe(true);
  });
});

describe('pull-through fills', () => {
  it('share one upstream download between concurrent clients', async () => {
    upstream.serve('/shared.img', { body: image }, { bytesPerSecond: 2 * MiB });
    const origin = upstream.urlFor('/shared.img');
    const url = base + blobPath(origin);
    const first = get(url);
    // The second client arrives while the first one's fill is running.
    await waitFor(() => events.some((e) => e.type === 'progress'));
    const second = get(url);
    const [a, b] = await Promise.all([first, second]);
    expect(upstreamGets('/shared.img')).toBe(1);
    for (const r of [a, b]) {
      expect(r.status).toBe(200);
      expect(r.headers['content-length']).toBe(String(image.length));
      expect(r.complete).toBe(true);
      expect(r.body.equals(image)).toBe(true);
    }
    expect(store.lookup(origin)?.digest).toBe(`sha256:${imageSha}`);
    // And now from the cache: no more upstream traffic.
    expect((await get(url)).body.equals(image)).toBe(true);
    expect(upstreamGets('/shared.img')).toBe(1);
  });

  it('resume a cut upstream with Range and store the right bytes', async () => {
    upstream.serve('/cut.img', { body: image }, { cutEveryBytes: MiB, maxCuts: 2 });
    const origin = upstream.urlFor('/cut.img');
    const r = await get(base + blobPath(origin));
    expect(r.body.equals(image)).toBe(true);
    const gets = upstream.requests.filter((q) => q.path === '/cut.img');
    expect(gets.filter((q) => q.cut)).toHaveLength(2);
    expect(gets.slice(1).every((q) => q.range !== null && q.status === 206)).toBe(true);
    const entry = store.lookup(origin)!;
    expect(entry.digest).toBe(`sha256:${imageSha}`);
    expect(readFileSync(store.blobFile(entry)).equals(image)).toBe(true);
  });

  it('refuse a corrupted upstream: job failed, nothing stored, the reader gets no complete body', async () => {
    const corrupt = Buffer.from(image);
    corrupt[corrupt.length - 5]! ^= 0xff;
    upstream.serve('/corrupt.img', { body: corrupt }, { bytesPerSecond: 4 * MiB });
    const origin = upstream.urlFor('/corrupt.img');
    expectations.set(origin, { expectedSha256: `sha256:${imageSha}`, expectedSize: image.length });
    const r = await get(base + blobPath(origin));
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(r.body.length).toBeLessThan(image.length);
    const failed = events.find((e) => e.type === 'failed');
    expect(failed?.job.error_code).toBe('BTY_ERR_INTEGRITY');
    expect(manager.job(origin)?.state).toBe('failed');
    expect(store.lookup(origin)).toBeUndefined();
    expect(store.entries()).toHaveLength(0);
    expect(readdirSync(join(dir, 'blobs', 'sha256'))).toHaveLength(0);
    expect(partFiles()).toHaveLength(0);
  });

  it('stop on cancel and keep nothing', async () => {
    upstream.serve('/slow.img', { body: image }, { bytesPerSecond: 512 * 1024 });
    const origin = upstream.urlFor('/slow.img');
    const handle = manager.fetch(origin);
    await waitFor(() => events.some((e) => e.type === 'progress'));
    expect(manager.cancel(origin)).toBe(true);
    const err = await handle.done.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BtyError);
    expect((err as BtyError).code).toBe('BTY_ERR_CANCELLED');
    expect(manager.job(origin)?.state).toBe('cancelled');
    expect(events.map((e) => e.type)).toContain('cancelled');
    expect(store.lookup(origin)).toBeUndefined();
    expect(partFiles()).toHaveLength(0);
    expect(manager.cancel(origin)).toBe(false);
  });

  it('refuse file:// origins', async () => {
    const handle = manager.fetch('file://images/disk.img');
    await expect(handle.done).rejects.toMatchObject({ code: 'BTY_ERR_SOURCE_SCHEME' });
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
