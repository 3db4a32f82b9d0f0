import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isBtyError, type BtyError, type ErrorCode } from '../../src/core/errors.ts';
import {
  fetchHttpBody,
  loadCatalog,
  registerCatalogScheme,
  REMOTE_CATALOG_MAX_BYTES,
} from '../../src/catalog/load.ts';

const CATALOG = `version = 1
[[images]]
name = "debian.img.zst"
src = "https://example.com/debian.img.zst"
`;

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A real HTTP server on 127.0.0.1 whose routes the tests fill in. */
async function startServer(
  routes: Record<string, Handler>,
): Promise<{ server: Server; base: string }> {
  const server = createServer((req, res) => {
    const handler = routes[req.url ?? ''];
    if (handler) handler(req, res);
    else res.writeHead(404, { 'content-type': 'text/plain' }).end('no such thing');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, base: `http://127.0.0.1:${port}` };
}

async function stopServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

async function refusal(promise: Promise<unknown>, code: ErrorCode): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    expect(isBtyError(err, code), String(err)).toBe(true);
    return err as Error;
  }
  throw new Error(`expected ${code}`);
}

/** Valid TOML of exactly `size` bytes: the catalog, then a comment as padding. */
function paddedCatalog(size: number): Buffer {
  const head = 'version = 1\n#';
  return Buffer.from(head + 'x'.repeat(size - head.length - 1) + '\n');
}

describe('loadCatalog over http', () => {
  let main: { server: Server; base: string };
  let other: { server: Server; base: string };
  let streamClosed: Promise<void>;
  let markStreamClosed: () => void = () => {};
  const seenAuthorization: Array<string | undefined> = [];

  beforeAll(async () => {
    streamClosed = new Promise((resolve) => (markStreamClosed = resolve));
    other = await startServer({
      '/catalog.toml': (req, res) => {
        seenAuthorization.push(req.headers.authorization);
        res.writeHead(200).end(CATALOG);
      },
    });
    const routes: Record<string, Handler> = {
      '/catalog.toml': (_req, res) =>
        res.writeHead(200, { 'content-type': 'application/toml' }).end(CATALOG),
      '/broken.toml': (_req, res) => res.writeHead(200).end('version = \n'),
      '/boom': (_req, res) => res.writeHead(500).end('oops'),
      '/exact': (_req, res) => res.writeHead(200).end(paddedCatalog(REMOTE_CATALOG_MAX_BYTES)),
      '/one-too-many': (_req, res) =>
        res.writeHead(200).end(paddedCatalog(REMOTE_CATALOG_MAX_BYTES + 1)),
      '/one-too-many-chunked': (_req, res) => {
        const body = paddedCatalog(REMOTE_CATALOG_MAX_BYTES + 1);
        res.writeHead(200); // no Content-Length: the cap is enforced while reading
        res.write(body.subarray(0, 1024));
        res.end(body.subarray(1024));
      },
      // No Content-Length and no end: only the client's cap stops it.
      '/endless': (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/toml' });
        const chunk = Buffer.alloc(64 * 1024, 0x23);
        const pump = () => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', pump);
        };
        res.on('close', () => markStreamClosed());
        pump();
      },
      '/hang-headers': () => {},
      '/hang-body': (_req, res) => {
        res.writeHead(200, { 'content-length': '1000' });
        res.write('version = 1\n');
      },
      '/relative-redirect': (_req, res) => res.writeHead(302, { location: '/catalog.toml' }).end(),
      '/cross-origin': (_req, res) =>
        res.writeHead(307, { location: `${other.base}/catalog.toml` }).end(),
      '/same-origin': (_req, res) => res.writeHead(301, { location: '/echo-auth' }).end(),
      '/echo-auth': (req, res) => {
        seenAuthorization.push(req.headers.authorization);
        res.writeHead(200).end(CATALOG);
      },
    };
    // /r/N redirects N times before landing on the catalog.
    for (let n = 1; n <= 6; n++) {
      routes[`/r/${n}`] = (_req, res) =>
        res.writeHead(302, { location: n === 1 ? '/catalog.toml' : `/r/${n - 1}` }).end();
    }
    main = await startServer(routes);
  });

  afterAll(async () => {
    await stopServer(main.server);
    await stopServer(other.server);
  });

  it('loads and parses a catalog, labelled with its URL', async () => {
    const url = `${main.base}/catalog.toml`;
    const catalog = await loadCatalog(url);
    expect(catalog.source).toBe(url);
    expect(catalog.entries.map((e) => e.name)).toEqual(['debian.img.zst']);
  });

  it('names the URL when the served catalog is invalid', async () => {
    const url = `${main.base}/broken.toml`;
    const err = await refusal(loadCatalog(url), 'BTY_ERR_CATALOG_INVALID');
    expect(err.message).toContain(`catalog at ${url} is not valid TOML`);
  });

  it('reports an HTTP 404 as unreachable, with the status', async () => {
    const err = await refusal(loadCatalog(`${main.base}/nope.toml`), 'BTY_ERR_CATALOG_UNREACHABLE');
    expect(err.message).toContain('HTTP 404');
    expect((err as { details?: unknown }).details).toMatchObject({ status: 404 });
  });

  it('reports an HTTP 500 as unreachable', async () => {
    const err = await refusal(loadCatalog(`${main.base}/boom`), 'BTY_ERR_CATALOG_UNREACHABLE');
    expect(err.message).toContain('HTTP 500');
  });

  it('reports a refused connection as unreachable', async () => {
    const { server, base } = await startServer({});
    await stopServer(server);
    await refusal(loadCatalog(`${base}/catalog.toml`), 'BTY_ERR_CATALOG_UNREACHABLE');
  });

  it('accepts a body of exactly 4 MiB', async () => {
    const catalog = await loadCatalog(`${main.base}/exact`);
    expect(catalog.entries).toEqual([]);
  });

  it('refuses a body of 4 MiB + 1 byte', async () => {
    const url = `${main.base}/one-too-many`;
    const err = await refusal(loadCatalog(url), 'BTY_ERR_CATALOG_TOO_LARGE');
    expect(err.message).toBe(
      `catalog response from ${url} exceeded 4194304 bytes; refusing to parse`,
    );
  });

  it('refuses 4 MiB + 1 byte sent without a Content-Length', async () => {
    const err = await refusal(
      loadCatalog(`${main.base}/one-too-many-chunked`),
      'BTY_ERR_CATALOG_TOO_LARGE',
    );
    expect(err.message).toContain('exceeded 4194304 bytes');
  });

  it('stops reading an endless body at the cap and closes the connection', async () => {
    const err = await refusal(loadCatalog(`${main.base}/endless`), 'BTY_ERR_CATALOG_TOO_LARGE');
    expect(err.message).toContain('exceeded 4194304 bytes');
    await streamClosed; // the server sees the socket go away instead of streaming forever
  });

  it('gives up after one overall timeout when the server never answers', async () => {
    const err = await refusal(
      loadCatalog(`${main.base}/hang-headers`, { timeoutMs: 300 }),
      'BTY_ERR_CATALOG_UNREACHABLE',
    );
    expect(err.message).toBe(`catalog fetch from ${main.base}/hang-headers timed out after 0.3 s`);
  });

  it('gives up when the body never finishes', async () => {
    const err = await refusal(
      loadCatalog(`${main.base}/hang-body`, { timeoutMs: 300 }),
      'BTY_ERR_CATALOG_UNREACHABLE',
    );
    expect(err.message).toContain('timed out after 0.3 s');
  });

  it('follows a relative redirect', async () => {
    const catalog = await loadCatalog(`${main.base}/relative-redirect`);
    expect(catalog.entries).toHaveLength(1);
  });

  it('follows up to 5 redirects and refuses a sixth', async () => {
    expect((await loadCatalog(`${main.base}/r/5`)).entries).toHaveLength(1);
    const err = await refusal(loadCatalog(`${main.base}/r/6`), 'BTY_ERR_CATALOG_UNREACHABLE');
    expect(err.message).toContain('more than 5 redirects');
  });

  it('keeps Authorization on same-origin redirects and drops it across origins', async () => {
    seenAuthorization.length = 0;
    const options = { label: 'x', timeoutMs: 5000, maxBytes: 1024 };
    const headers = { Authorization: 'Bearer secret' };
    await fetchHttpBody(`${main.base}/same-origin`, { ...options, headers });
    await fetchHttpBody(`${main.base}/cross-origin`, { ...options, headers });
    expect(seenAuthorization).toEqual(['Bearer secret', undefined]);
  });

  it('refuses an http URL without a host', async () => {
    const err = await refusal(loadCatalog('http:///catalog.toml'), 'BTY_ERR_BAD_INPUT');
    expect(err.message).toContain('catalog URL missing a host');
  });
});

describe('loadCatalog from local files and other schemes', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bty-catalog-load-'));
    await writeFile(join(dir, 'catalog.toml'), CATALOG);
    await writeFile(join(dir, 'a:b.toml'), CATALOG);
    await mkdir(join(dir, 'folder.toml'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads an absolute path', async () => {
    const path = join(dir, 'catalog.toml');
    const catalog = await loadCatalog(path);
    expect(catalog.source).toBe(path);
    expect(catalog.entries).toHaveLength(1);
  });

  it('reads a path relative to cwd', async () => {
    const catalog = await loadCatalog('catalog.toml', { cwd: dir });
    expect(catalog.source).toBe('catalog.toml');
    expect(catalog.entries).toHaveLength(1);
  });

  it('reads a file:// URL', async () => {
    expect((await loadCatalog(`file://${dir}/catalog.toml`)).entries).toHaveLength(1);
  });

  it('refuses a file:// URL that names a host', async () => {
    await refusal(loadCatalog('file://./catalog.toml'), 'BTY_ERR_BAD_INPUT');
  });

  it('reports a missing file as not found', async () => {
    const path = join(dir, 'missing.toml');
    const err = await refusal(loadCatalog(path), 'BTY_ERR_CATALOG_NOT_FOUND');
    expect(err.message).toBe(`catalog not found: ${path}`);
    await refusal(loadCatalog(`file://${path}`), 'BTY_ERR_CATALOG_NOT_FOUND');
  });

  it('reports a directory as not found', async () => {
    await refusal(loadCatalog(join(dir, 'folder.toml')), 'BTY_ERR_CATALOG_NOT_FOUND');
  });

  it('refuses other schemes with upstream message', async () => {
    const err = await refusal(loadCatalog('ftp://h/catalog.toml'), 'BTY_ERR_SOURCE_SCHEME');
    expect(err.message).toBe(
      "catalog source must be a local path or http(s):// / oras:// URL; got scheme 'ftp' in 'ftp://h/catalog.toml'",
    );
  });

  it('reads a:b.toml as scheme "a" (like upstream), but ./a:b.toml as a path', async () => {
    const err = await refusal(loadCatalog('a:b.toml', { cwd: dir }), 'BTY_ERR_SOURCE_SCHEME');
    expect(err.message).toContain("got scheme 'a' in 'a:b.toml'");
    expect((await loadCatalog('./a:b.toml', { cwd: dir })).entries).toHaveLength(1);
  });

  it('without the oras module loaded, says how to load it', async () => {
    const err = await refusal(loadCatalog('oras://ghcr.io/o/c:1'), 'BTY_ERR_SOURCE_SCHEME');
    expect(err.message).toContain('oras:// support is not loaded');
    expect((err as BtyError).hint).toContain('bty-lab/oras');
  });

  it('lets another module plug in a scheme', async () => {
    const seen: Array<[string, number, number]> = [];
    registerCatalogScheme('bty-test', (source, options) => {
      seen.push([source, options.timeoutMs, options.maxBytes]);
      return Promise.resolve(new TextEncoder().encode(CATALOG));
    });
    const catalog = await loadCatalog('bty-test://x/c', { timeoutMs: 1234 });
    expect(catalog.entries).toHaveLength(1);
    expect(seen).toEqual([['bty-test://x/c', 1234, REMOTE_CATALOG_MAX_BYTES]]);
    expect(() => registerCatalogScheme('https', () => Promise.resolve(new Uint8Array()))).toThrow();
  });
});
