/** The standalone command: fetch, list, serve (curated) and remove, on a real folder and real HTTP. */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheMain, type CacheCliIO } from '../../src/cache/cli.ts';
import { blobPath } from '../../src/cache/url.ts';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';
import { get } from './http.ts';

let upstream: FaultServer;
let dir: string;
const body = randomBytes(300 * 1024);
const sha = createHash('sha256').update(body).digest('hex');

beforeAll(async () => {
  upstream = await startFaultServer();
  upstream.serve('/cli.img', { body });
  dir = mkdtempSync(join(tmpdir(), 'bty-cache-cli-'));
});
afterAll(async () => {
  await upstream.close();
  rmSync(dir, { recursive: true, force: true });
});

function io(
  extra: Partial<CacheCliIO> = {},
): CacheCliIO & { stdout: () => string; stderr: () => string } {
  let out = '';
  let err = '';
  return {
    out: (t) => (out += t),
    err: (t) => (err += t),
    isTTY: false,
    stdout: () => out,
    stderr: () => err,
    ...extra,
  };
}

describe('bty-web cache', () => {
  it('fetch refuses a wrong sha256 and then caches with the right one', async () => {
    const origin = upstream.urlFor('/cli.img');
    const wrong = io();
    expect(
      await cacheMain(['fetch', origin, '--sha256', '0'.repeat(64), '--dir', dir], wrong),
    ).toBe(4);
    expect(wrong.stderr()).toContain('not the expected sha256:' + '0'.repeat(64));
    const right = io();
    expect(
      await cacheMain(['fetch', origin, '--sha256', `sha256:${sha}`, '--dir', dir], right),
    ).toBe(0);
    expect(right.stdout()).toContain(`digest sha256:${sha}`);
    expect(right.stdout()).toContain(blobPath(origin));
  });

  it('list shows the entry, as text and JSON', async () => {
    const text = io();
    expect(await cacheMain(['list', '--dir', dir], text)).toBe(0);
    expect(text.stdout()).toContain(upstream.urlFor('/cli.img'));
    const json = io();
    expect(await cacheMain(['list', '--json', '--dir', dir], json)).toBe(0);
    const listed = JSON.parse(json.stdout()) as {
      used_bytes: number;
      entries: Array<{ digest: string }>;
    };
    expect(listed.used_bytes).toBe(body.length);
    expect(listed.entries.map((e) => e.digest)).toEqual([`sha256:${sha}`]);
  });

  it('serve answers cached entries, 404 with a hint for the rest, and /healthz', async () => {
    const stop = new AbortController();
    let base = '';
    let served: number | null = null;
    const listening = new Promise<void>((resolve) => {
      void cacheMain(
        ['serve', '--dir', dir, '--port', '0'],
        io({
          signal: stop.signal,
          onListening: (url) => {
            base = url;
            resolve();
          },
        }),
      ).then((code) => (served = code));
    });
    await listening;
    try {
      const hit = await get(base + blobPath(upstream.urlFor('/cli.img')));
      expect(hit.status).toBe(200);
      expect(hit.body.equals(body)).toBe(true);
      const gets = upstream.requests.length;
      const miss = await get(base + blobPath(upstream.urlFor('/other.img')));
      expect(miss.status).toBe(404);
      expect(miss.body.toString()).toContain('bty-web cache fetch');
      expect(upstream.requests.length).toBe(gets); // curated: a miss never goes upstream
      expect((await get(`${base}/b/%%%/x`)).status).toBe(400);
      const health = await get(`${base}/healthz`);
      expect(JSON.parse(health.body.toString())).toMatchObject({ status: 'ok' });
    } finally {
      stop.abort();
    }
    for (let i = 0; i < 100 && served === null; i++) await new Promise((r) => setTimeout(r, 10));
    expect(served).toBe(0);
  });

  it('remove drops the entry', async () => {
    const origin = upstream.urlFor('/cli.img');
    expect(await cacheMain(['remove', origin, '--dir', dir], io())).toBe(0);
    const again = io();
    expect(await cacheMain(['remove', origin, '--dir', dir], again)).toBe(1);
    expect(again.stderr()).toContain('not cached');
    const list = io();
    await cacheMain(['list', '--dir', dir], list);
    expect(list.stdout()).toContain('no entries');
  });

  it('reports usage errors with exit code 2', async () => {
    expect(await cacheMain(['fetch', 'https://x/a.img'], io())).toBe(2);
    expect(await cacheMain(['frobnicate'], io())).toBe(2);
    expect(await cacheMain(['list', '--dir', dir, '--bogus'], io())).toBe(2);
  });
});
