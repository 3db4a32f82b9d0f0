/**
 * The cache on its own, without bty-web (exposed as `bty-web cache …`):
 *
 *   fetch ORIGIN [--sha256 HEX] [--max-bytes N] --dir DIR   download and verify into the cache
 *   list [--json] --dir DIR                                  what is cached
 *   serve [--host H] [--port N] --dir DIR                    serve cached entries (curated)
 *   remove ORIGIN --dir DIR                                  drop an entry
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { BtyError, EXIT } from '../core/errors.ts';
import { VERSION } from '../core/version.ts';
import type { CliIO } from '../cli/output.ts';
import { CacheManager, type CacheJobEvent, type FillOptions } from './manager.ts';
import { serveArtifact } from './serve.ts';
import { CacheStore } from './store.ts';
import { blobPath, originOfBlobPath } from './url.ts';

export interface CacheCliIO extends CliIO {
  /** Stops `serve` (default: SIGINT or SIGTERM). */
  signal?: AbortSignal;
  /** Called with the base URL once `serve` listens. */
  onListening?: (url: string) => void;
}

const USAGE = `usage: cache <command> [options]
  fetch ORIGIN [--sha256 HEX] [--max-bytes N] --dir DIR
  list [--json] --dir DIR
  serve [--host H] [--port N] --dir DIR     (default 127.0.0.1:8081)
  remove ORIGIN --dir DIR
`;

export async function cacheMain(argv: string[], io: CacheCliIO): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'fetch':
        return await fetchCommand(rest, io);
      case 'list':
        return listCommand(rest, io);
      case 'serve':
        return await serveCommand(rest, io);
      case 'remove':
        return removeCommand(rest, io);
      case undefined:
      case '-h':
      case '--help':
        io.out(USAGE);
        return command === undefined ? EXIT.usage : EXIT.ok;
      default:
        throw new BtyError('BTY_ERR_USAGE', `unknown cache command '${command}'`);
    }
  } catch (err) {
    if (err instanceof BtyError) {
      io.err(`error: ${err.message}\nhint: ${err.hint}\n`);
      if (err.code === 'BTY_ERR_USAGE') io.err(USAGE);
      return err.exitCode;
    }
    if (
      err instanceof TypeError &&
      'code' in err &&
      String(err.code).startsWith('ERR_PARSE_ARGS')
    ) {
      io.err(`error: ${err.message}\n${USAGE}`);
      return EXIT.usage;
    }
    io.err(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT.failure;
  }
}

function parse(
  args: string[],
  options: Record<string, { type: 'string' | 'boolean' }>,
  positionals: number,
): { values: Record<string, string | boolean | undefined>; positionals: string[]; dir: string } {
  const parsed = parseArgs({
    args,
    options: { dir: { type: 'string' }, ...options },
    allowPositionals: true,
    strict: true,
  });
  if (parsed.positionals.length !== positionals) {
    throw new BtyError(
      'BTY_ERR_USAGE',
      positionals === 1 ? 'give exactly one ORIGIN' : `unexpected '${parsed.positionals[0]}'`,
    );
  }
  const dir = parsed.values.dir;
  if (typeof dir !== 'string' || dir === '') {
    throw new BtyError('BTY_ERR_USAGE', '--dir DIR is required (the cache folder)');
  }
  return { values: parsed.values, positionals: parsed.positionals, dir };
}

function nonNegativeInteger(
  name: string,
  text: string | boolean | undefined,
  fallback: number,
): number {
  if (text === undefined) return fallback;
  if (typeof text !== 'string' || !/^\d+$/.test(text)) {
    throw new BtyError('BTY_ERR_USAGE', `${name} takes a whole number, got '${String(text)}'`);
  }
  return Number(text);
}

async function fetchCommand(args: string[], io: CacheCliIO): Promise<number> {
  const { values, positionals, dir } = parse(
    args,
    { sha256: { type: 'string' }, 'max-bytes': { type: 'string' } },
    1,
  );
  const origin = positionals[0]!;
  const store = CacheStore.open(dir, {
    maxBytes: nonNegativeInteger('--max-bytes', values['max-bytes'], 0),
  });
  const manager = new CacheManager(store, { concurrency: 1 });
  manager.on('job', (event: CacheJobEvent) => io.err(progressLine(event)));
  const stop = (): void => {
    manager.cancel(origin);
  };
  process.once('SIGINT', stop);
  try {
    const handle = manager.fetch(origin, {
      ...(typeof values.sha256 === 'string' ? { expectedSha256: values.sha256 } : {}),
    });
    const entry = await handle.done;
    io.out(
      `${handle.job ? 'cached' : 'already cached'} ${entry.origin}\n` +
        `  digest ${entry.digest}\n  size   ${entry.size} bytes\n  path   ${blobPath(entry.origin)}\n`,
    );
    return EXIT.ok;
  } finally {
    process.off('SIGINT', stop);
    await manager.close();
    store.close();
  }
}

function progressLine({ type, job }: CacheJobEvent): string {
  const total = job.bytes_total === null ? '?' : mib(job.bytes_total);
  switch (type) {
    case 'progress':
      return `${mib(job.bytes_done)} of ${total} MiB (${mib(job.rate)} MiB/s)\n`;
    case 'failed':
    case 'cancelled':
      return `${type}: ${job.error ?? ''}\n`;
    case 'queued':
      return '';
    default:
      return `${type}: ${job.origin}\n`;
  }
}

function mib(bytes: number): string {
  return (bytes / 1048576).toFixed(1);
}

function listCommand(args: string[], io: CacheCliIO): number {
  const { values, dir } = parse(args, { json: { type: 'boolean' } }, 0);
  const store = CacheStore.open(dir, { touchFlushMs: 0 });
  try {
    const entries = store.entries();
    if (values.json) {
      const rows = entries.map((e) => ({ ...e, path: blobPath(e.origin) }));
      io.out(JSON.stringify({ used_bytes: store.usedBytes(), entries: rows }, null, 2) + '\n');
      return EXIT.ok;
    }
    if (entries.length === 0) {
      io.out(`no entries in ${dir}\n`);
      return EXIT.ok;
    }
    for (const e of entries) {
      io.out(
        `${e.digest.slice(0, 19)}  ${String(e.size).padStart(12)}  ${e.last_used_at}  ${e.origin}\n`,
      );
    }
    io.out(`${entries.length} entries, ${store.usedBytes()} bytes\n`);
    return EXIT.ok;
  } finally {
    store.close();
  }
}

function removeCommand(args: string[], io: CacheCliIO): number {
  const { positionals, dir } = parse(args, {}, 1);
  const store = CacheStore.open(dir, { touchFlushMs: 0 });
  try {
    const origin = positionals[0]!;
    if (!store.remove(origin)) {
      io.err(`not cached: ${origin}\n`);
      return EXIT.failure;
    }
    io.out(`removed ${origin}\n`);
    return EXIT.ok;
  } finally {
    store.close();
  }
}

/**
 * An HTTP server for a cache: `GET|HEAD /b/<token>/<name>` and `GET /healthz`. With
 * `allowFill` false (curated) only what is cached (or being fetched) is served; a miss is a 404
 * that says how to fetch it.
 */
export function createCacheServer(
  manager: CacheManager,
  options: {
    allowFill?: boolean;
    /** What the catalog knows of an origin (sha256, size), checked on a fill and an entry. */
    expect?: (origin: string) => FillOptions | undefined;
    fetchHint?: (origin: string) => string;
  } = {},
): Server {
  const hint =
    options.fetchHint ??
    ((origin: string) => `fetch it first: bty-web cache fetch '${origin}' --dir <cache dir>`);
  return createServer((req, res) => {
    const path = req.url ?? '/';
    if (path === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
      return text(
        res,
        200,
        JSON.stringify({ status: 'ok', service: 'bty-cache', version: VERSION }),
        'application/json',
      );
    }
    const origin = originOfBlobPath(path);
    if (origin === undefined)
      return text(res, 404, 'not found: the cache serves /b/<token>/<name>\n');
    if (origin === null) return text(res, 400, 'missing url\n');
    let target;
    try {
      target = manager.open(origin, {
        ...options.expect?.(origin),
        allowFill: options.allowFill ?? false,
      });
    } catch (err) {
      return text(res, 400, `${err instanceof Error ? err.message : String(err)}\n`);
    }
    if (!target) return text(res, 404, `not cached: ${origin}\nhint: ${hint(origin)}\n`);
    serveArtifact(req, res, target).catch(() => res.destroy());
  });
}

function text(
  res: import('node:http').ServerResponse,
  status: number,
  body: string,
  type = 'text/plain; charset=utf-8',
): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

async function serveCommand(args: string[], io: CacheCliIO): Promise<number> {
  const { values, dir } = parse(args, { host: { type: 'string' }, port: { type: 'string' } }, 0);
  const host = typeof values.host === 'string' ? values.host : '127.0.0.1';
  const port = nonNegativeInteger('--port', values.port, 8081);
  const store = CacheStore.open(dir);
  const manager = new CacheManager(store);
  const server = createCacheServer(manager, {
    fetchHint: (origin) => `fetch it first: bty-web cache fetch '${origin}' --dir ${dir}`,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const address = server.address() as AddressInfo;
    const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const url = `http://${shownHost}:${address.port}`;
    io.err(`serving ${dir} on ${url}\n`);
    io.onListening?.(url);
    await new Promise<void>((resolve) => {
      if (io.signal) {
        if (io.signal.aborted) return resolve();
        io.signal.addEventListener('abort', () => resolve(), { once: true });
      } else {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      }
    });
    return EXIT.ok;
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await manager.close();
    store.close();
  }
}
