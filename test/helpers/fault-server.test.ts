import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFaultServer, type FaultServer, type ServedObject } from './fault-server.ts';

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** False when the connection broke before the response ended. */
  complete: boolean;
}

/** A GET/HEAD through node:http, which reports a broken body instead of hiding it. */
function request(
  url: string,
  options: { method?: string; headers?: Record<string, string> } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: options.method ?? 'GET', headers: options.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        let settled = false;
        const finish = (complete: boolean) => {
          if (settled) return;
          settled = true;
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
            complete,
          });
        };
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => finish(res.complete));
        res.on('error', () => finish(false));
        res.on('close', () => finish(res.complete));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const BODY = randomBytes(300_000);
const SIZE = BODY.length;

let server: FaultServer;
let dir: string;
let bodyFile: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-fault-server-'));
  bodyFile = join(dir, 'body.bin');
  await writeFile(bodyFile, BODY);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  server = await startFaultServer();
});
afterEach(async () => {
  await server.close();
});

describe.each([
  ['a Buffer', (): ServedObject => ({ body: BODY })],
  ['a file', (): ServedObject => ({ body: { file: bodyFile } })],
])('serving %s', (_name, object) => {
  beforeEach(() => {
    server.serve('/img', object());
  });

  it('answers GET with the whole body, its length, validators and Accept-Ranges', async () => {
    const res = await request(server.urlFor('/img'));
    expect(res.status).toBe(200);
    expect(res.complete).toBe(true);
    expect(res.body.equals(BODY)).toBe(true);
    expect(res.headers['content-length']).toBe(String(SIZE));
    expect(res.headers['accept-ranges']).toBe('bytes');
    expect(res.headers['content-type']).toBe('application/octet-stream');
    expect(res.headers.etag).toMatch(/^"[^"]+"$/);
    expect(res.headers['last-modified']).toBe(
      new Date(res.headers['last-modified'] ?? '').toUTCString(),
    );
    expect(server.requests).toEqual([
      {
        method: 'GET',
        path: '/img',
        range: null,
        ifRange: null,
        status: 200,
        bytesSent: SIZE,
        cut: false,
      },
    ]);
  });

  it('answers HEAD with the headers of GET and no body', async () => {
    const res = await request(server.urlFor('/img'), { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(0);
    expect(res.headers['content-length']).toBe(String(SIZE));
    expect(res.headers.etag).toMatch(/^"/);
    expect(server.requests[0]).toMatchObject({ method: 'HEAD', status: 200, bytesSent: 0 });
  });

  it.each([
    ['bytes=1000-', 1000, SIZE - 1],
    ['bytes=1000-1999', 1000, 1999],
    ['bytes=0-0', 0, 0],
    ['bytes=-500', SIZE - 500, SIZE - 1],
    ['bytes=-999999999', 0, SIZE - 1],
    ['bytes=299000-999999999', 299_000, SIZE - 1],
  ])('answers Range %s with 206 and the right slice', async (range, first, last) => {
    const res = await request(server.urlFor('/img'), { headers: { Range: range } });
    expect(res.status).toBe(206);
    expect(res.headers['content-range']).toBe(`bytes ${first}-${last}/${SIZE}`);
    expect(res.headers['content-length']).toBe(String(last - first + 1));
    expect(res.body.equals(BODY.subarray(first, last + 1))).toBe(true);
    expect(server.requests[0]).toMatchObject({ range, status: 206, bytesSent: last - first + 1 });
  });

  it.each(['bytes=300000-', `bytes=${SIZE + 5}-${SIZE + 10}`, 'bytes=-0'])(
    'answers the unsatisfiable Range %s with 416 and bytes */total',
    async (range) => {
      const res = await request(server.urlFor('/img'), { headers: { Range: range } });
      expect(res.status).toBe(416);
      expect(res.headers['content-range']).toBe(`bytes */${SIZE}`);
    },
  );

  it.each(['bytes=500-100', 'bytes=0-10,20-30', 'items=0-10', 'bytes=abc'])(
    'ignores the Range %s it does not support and sends everything',
    async (range) => {
      const res = await request(server.urlFor('/img'), { headers: { Range: range } });
      expect(res.status).toBe(200);
      expect(res.body.equals(BODY)).toBe(true);
    },
  );

  it('ignores Range on HEAD (range handling is defined for GET only)', async () => {
    const res = await request(server.urlFor('/img'), {
      method: 'HEAD',
      headers: { Range: 'bytes=10-' },
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe(String(SIZE));
  });
});

describe('If-Range', () => {
  const lastModified = new Date('2023-05-06T07:08:09Z');

  beforeEach(() => {
    server.serve('/img', { body: BODY, etag: '"v1"', lastModified });
  });

  const ranged = (ifRange: string) =>
    request(server.urlFor('/img'), { headers: { Range: 'bytes=100-', 'If-Range': ifRange } });

  it('serves 206 when the ETag matches strongly', async () => {
    const res = await ranged('"v1"');
    expect(res.status).toBe(206);
    expect(res.body.equals(BODY.subarray(100))).toBe(true);
    expect(server.requests[0]).toMatchObject({ ifRange: '"v1"', status: 206 });
  });

  it.each(['"v2"', 'W/"v1"'])('serves the full 200 for the non-matching ETag %s', async (tag) => {
    const res = await ranged(tag);
    expect(res.status).toBe(200);
    expect(res.headers['content-range']).toBeUndefined();
    expect(res.body.equals(BODY)).toBe(true);
  });

  it('never matches when the object itself has a weak ETag', async () => {
    server.serve('/img', { body: BODY, etag: 'W/"v1"' });
    expect((await ranged('W/"v1"')).status).toBe(200);
  });

  it('serves 206 when the date equals Last-Modified exactly, 200 otherwise', async () => {
    expect((await ranged(lastModified.toUTCString())).status).toBe(206);
    expect((await ranged(new Date(lastModified.getTime() + 1000).toUTCString())).status).toBe(200);
    expect((await ranged(new Date(lastModified.getTime() - 1000).toUTCString())).status).toBe(200);
    expect((await ranged('not a date')).status).toBe(200);
  });

  it('never matches a date when the object has no Last-Modified, nor a tag without ETag', async () => {
    server.serve('/img', { body: BODY, etag: null, lastModified: null });
    const head = await request(server.urlFor('/img'), { method: 'HEAD' });
    expect(head.headers.etag).toBeUndefined();
    expect(head.headers['last-modified']).toBeUndefined();
    expect((await ranged(lastModified.toUTCString())).status).toBe(200);
    expect((await ranged('"v1"')).status).toBe(200);
  });

  it('serves 206 regardless with ignoreIfRange', async () => {
    server.setFaults('/img', { ignoreIfRange: true });
    const res = await ranged('"something-else"');
    expect(res.status).toBe(206);
    expect(res.body.equals(BODY.subarray(100))).toBe(true);
  });
});

describe('faults', () => {
  it('answers 404 for a path it does not serve', async () => {
    const res = await fetch(server.urlFor('/nothing'));
    expect(res.status).toBe(404);
    expect(server.requests[0]).toMatchObject({ path: '/nothing', status: 404 });
  });

  it('cuts the connection mid-body: the client errors with fewer bytes than promised', async () => {
    server.serve('/img', { body: { file: bodyFile } }, { cutEveryBytes: 100_000 });
    const res = await request(server.urlFor('/img'));
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe(String(SIZE));
    expect(res.complete).toBe(false);
    expect(res.body.length).toBe(100_000);
    expect(res.body.equals(BODY.subarray(0, 100_000))).toBe(true);
    expect(server.requests[0]).toMatchObject({ status: 200, bytesSent: 100_000, cut: true });

    const viaFetch = await fetch(server.urlFor('/img'));
    expect(viaFetch.status).toBe(200);
    await expect(viaFetch.arrayBuffer()).rejects.toThrow();
  });

  it('cuts every response until maxCuts, so a resuming client gets there piece by piece', async () => {
    server.serve('/img', { body: BODY }, { cutEveryBytes: 120_000, maxCuts: 2 });
    const pieces: Buffer[] = [];
    let received = 0;
    for (let attempt = 0; attempt < 3; attempt++) {
      const res = await request(server.urlFor('/img'), {
        headers: received === 0 ? {} : { Range: `bytes=${received}-` },
      });
      expect(res.complete).toBe(attempt === 2);
      pieces.push(res.body);
      received += res.body.length;
    }
    expect(Buffer.concat(pieces).equals(BODY)).toBe(true);
    expect(server.requests.map((r) => [r.status, r.bytesSent, r.cut])).toEqual([
      [200, 120_000, true],
      [206, 120_000, true],
      [206, SIZE - 240_000, false],
    ]);
  });

  it('does not cut a response shorter than cutEveryBytes', async () => {
    server.serve('/img', { body: BODY }, { cutEveryBytes: 1000 });
    const res = await request(server.urlFor('/img'), { headers: { Range: 'bytes=-1000' } });
    expect(res.complete).toBe(true);
    expect(res.body.length).toBe(1000);
  });

  it('can cut right after the headers', async () => {
    server.serve('/img', { body: BODY }, { cutEveryBytes: 0 });
    const res = await request(server.urlFor('/img'));
    expect(res.status).toBe(200);
    expect(res.complete).toBe(false);
    expect(res.body.length).toBe(0);
  });

  it('replaces the object after changeAfterBytes, with new content and validators', async () => {
    const next = Buffer.alloc(SIZE, 7);
    server.serve(
      '/img',
      { body: BODY },
      {
        cutEveryBytes: 50_000,
        maxCuts: 1,
        changeAfterBytes: 50_000,
        changeTo: { body: next },
      },
    );
    const first = await request(server.urlFor('/img'));
    expect(first.complete).toBe(false);
    const oldEtag = first.headers.etag ?? '';
    const oldDate = first.headers['last-modified'] ?? '';

    for (const validator of [oldEtag, oldDate]) {
      const resumed = await request(server.urlFor('/img'), {
        headers: { Range: 'bytes=50000-', 'If-Range': validator },
      });
      expect(resumed.status).toBe(200);
      expect(resumed.complete).toBe(true);
      expect(resumed.body.equals(next)).toBe(true);
      expect(resumed.headers.etag).not.toBe(oldEtag);
      expect(resumed.headers['last-modified']).not.toBe(oldDate);
    }
  });

  it('gives a changed object new validators even when its content is the same', async () => {
    server.serve('/img', { body: BODY }, { changeAfterBytes: 1, changeTo: { body: BODY } });
    const first = await request(server.urlFor('/img'));
    const second = await request(server.urlFor('/img'), { method: 'HEAD' });
    expect(second.headers.etag).not.toBe(first.headers.etag);
    expect(second.headers['last-modified']).not.toBe(first.headers['last-modified']);
  });

  it('answers ranged requests with a full 200 under ignoreRange', async () => {
    server.serve('/img', { body: BODY }, { ignoreRange: true });
    const res = await request(server.urlFor('/img'), { headers: { Range: 'bytes=100-' } });
    expect(res.status).toBe(200);
    expect(res.headers['content-range']).toBeUndefined();
    expect(res.body.equals(BODY)).toBe(true);
    expect(
      (await request(server.urlFor('/img'), { headers: { Range: 'bytes=999999-' } })).status,
    ).toBe(200);
  });

  it('sends no Content-Length when chunked', async () => {
    server.serve('/img', { body: { file: bodyFile } }, { chunked: true });
    const res = await request(server.urlFor('/img'), { headers: { Range: 'bytes=10-' } });
    expect(res.status).toBe(206);
    expect(res.headers['content-length']).toBeUndefined();
    expect(res.headers['transfer-encoding']).toBe('chunked');
    expect(res.body.equals(BODY.subarray(10))).toBe(true);
    const head = await request(server.urlFor('/img'), { method: 'HEAD' });
    expect(head.headers['content-length']).toBeUndefined();
  });

  it('breaks a chunked body too when cut', async () => {
    server.serve('/img', { body: BODY }, { chunked: true, cutEveryBytes: 1234 });
    const res = await request(server.urlFor('/img'));
    expect(res.complete).toBe(false);
    expect(res.body.length).toBe(1234);
  });

  it('answers every request with a fixed status and a short text body', async () => {
    server.serve('/img', { body: BODY }, { status: 503 });
    const res = await fetch(server.urlFor('/img'));
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await res.text()).toContain('503');
    expect((await fetch(server.urlFor('/img'), { method: 'HEAD' })).status).toBe(503);
    server.setFaults('/missing', { status: 500 });
    expect((await fetch(server.urlFor('/missing'))).status).toBe(500);
  });

  it('redirects with 302 to another served path', async () => {
    server.serve('/real', { body: BODY });
    server.setFaults('/alias', { redirectTo: '/real' });
    const followed = await fetch(server.urlFor('/alias'));
    expect(followed.status).toBe(200);
    expect(followed.url).toBe(server.urlFor('/real'));
    expect(Buffer.from(await followed.arrayBuffer()).equals(BODY)).toBe(true);
    const manual = await fetch(server.urlFor('/alias'), { redirect: 'manual' });
    expect(manual.status).toBe(302);
    expect(manual.headers.get('location')).toBe(server.urlFor('/real'));
    expect(server.requests.map((r) => [r.path, r.status])).toEqual([
      ['/alias', 302],
      ['/real', 200],
      ['/alias', 302],
    ]);
  });

  it('rejects HEAD with 405 under noHead while GET works', async () => {
    server.serve('/img', { body: BODY }, { noHead: true });
    expect((await fetch(server.urlFor('/img'), { method: 'HEAD' })).status).toBe(405);
    expect((await fetch(server.urlFor('/img'))).status).toBe(200);
  });

  it('answers other methods with 405', async () => {
    server.serve('/img', { body: BODY });
    const res = await fetch(server.urlFor('/img'), { method: 'DELETE' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('GET, HEAD');
  });

  it('stalls after stallAfterBytes, keeping the connection open, until close()', async () => {
    server.serve('/img', { body: BODY }, { stallAfterBytes: 70_000 });
    let received = 0;
    const response = new Promise<RawResponse>((resolve) => {
      const req = http.get(server.urlFor('/img'), { agent: false }, (res) => {
        res.on('data', (chunk: Buffer) => (received += chunk.length));
        res.on('close', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.alloc(0),
            complete: res.complete,
          }),
        );
      });
      req.on('error', () => undefined);
    });
    while (received < 70_000) await new Promise((resolve) => setTimeout(resolve, 10));
    // Nothing more arrives: a correct server sent its last byte already.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(received).toBe(70_000);
    expect(server.requests[0]).toMatchObject({ bytesSent: 70_000, cut: false });
    await server.close();
    expect((await response).complete).toBe(false);
    server = await startFaultServer(); // afterEach closes it
  });

  it('delays and throttles without changing what is sent', async () => {
    server.serve('/img', { body: { file: bodyFile } }, { delayMs: 50, bytesPerSecond: 1_000_000 });
    const res = await request(server.urlFor('/img'), { headers: { Range: 'bytes=-100000' } });
    expect(res.status).toBe(206);
    expect(res.complete).toBe(true);
    expect(res.body.equals(BODY.subarray(SIZE - 100_000))).toBe(true);
  });

  it('streams a large file with backpressure to a slow reader', async () => {
    const large = join(dir, 'large.bin');
    const content = randomBytes(32 * 1024 * 1024);
    await writeFile(large, content);
    server.serve('/large', { body: { file: large } });
    // The reader pauses now and then, so the server meets a full socket and must wait for drain.
    const chunks: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      http
        .get(server.urlFor('/large'), { agent: false }, (res) => {
          res.on('data', (chunk: Buffer) => {
            chunks.push(chunk);
            if (chunks.length % 32 === 0) {
              res.pause();
              setTimeout(() => res.resume(), 2);
            }
          });
          res.on('end', resolve);
          res.on('error', reject);
        })
        .on('error', reject);
    });
    expect(Buffer.concat(chunks).equals(content)).toBe(true);
  });

  it('replaces objects and faults at runtime, with fresh counters', async () => {
    server.serve('/img', { body: BODY }, { cutEveryBytes: 10, maxCuts: 1 });
    expect((await request(server.urlFor('/img'))).complete).toBe(false);
    expect((await request(server.urlFor('/img'))).complete).toBe(true);
    server.setFaults('/img', { cutEveryBytes: 10, maxCuts: 1 });
    expect((await request(server.urlFor('/img'))).complete).toBe(false);
    server.serve('img', { body: Buffer.from('hello') });
    const res = await request(server.urlFor('img'));
    expect(res.body.toString()).toBe('hello');
  });

  it('destroys open sockets on close()', async () => {
    server.serve('/img', { body: BODY }, { bytesPerSecond: 1000 });
    const pending = request(server.urlFor('/img'));
    while ((server.requests[0]?.bytesSent ?? 0) === 0) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await server.close();
    expect((await pending).complete).toBe(false);
    server = await startFaultServer();
  });
});
