/**
 * A fault-injecting front for a real registry, as a CDN in front of ghcr.io behaves: requests
 * are passed through to the registry, except blob downloads, which can be
 * - answered with a 307 to a "CDN" on another origin, whose signed URLs work once (the next
 *   request with the same signature gets 403, like an expired pre-signed URL);
 * - cut after every N bytes of each response;
 * - corrupted (one byte flipped at a fixed offset of the blob, in every response).
 * The CDN records whether an Authorization header ever reached it (it must not).
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface FrontFaults {
  /** Send blob GETs to the CDN with a 307. */
  redirect?: boolean;
  /** Each CDN URL serves one request; later ones get 403 (an expired signature). */
  oneTimeUrls?: boolean;
  /** Destroy the connection after this many body bytes of each blob response. */
  cutEveryBytes?: number;
  /** Flip the byte at this offset of every blob served. */
  corruptAt?: number;
  /** Answer the next ranged blob GET (a resume) with 401 once, as for an expired token. */
  expireTokenOnResume?: boolean;
  /** The status an expired CDN URL gets (default 403; object stores also send 400). */
  expiredStatus?: number;
  /** The CDN sends its own ETag and Last-Modified, as S3 or CloudFront do. */
  cdnOwnValidators?: boolean;
  /** Rewrite the host of the Bearer realm in WWW-Authenticate answers to this one. */
  realmHost?: string;
}

export interface FrontRequest {
  origin: 'registry' | 'cdn';
  method: string;
  path: string;
  range: string | null;
  status: number;
  authorization: boolean;
}

export interface RegistryFront {
  /** `127.0.0.1:PORT`: the host to put in oras:// references. */
  host: string;
  url: string;
  cdnUrl: string;
  faults: FrontFaults;
  requests: FrontRequest[];
  stop: () => Promise<void>;
}

const BLOB_PATH = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/;

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Forwards one request to the registry and streams the answer back, with the faults applied. */
function forward(
  upstream: string,
  path: string,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  faults: FrontFaults,
  isBlob: boolean,
  record: FrontRequest,
  fromCdn = false,
): void {
  const headers = { ...req.headers, host: new URL(upstream).host };
  const out = http.request(`${upstream}${path}`, { method: req.method ?? 'GET', headers }, (up) => {
    record.status = up.statusCode ?? 0;
    const headers = { ...up.headers };
    if (fromCdn && faults.cdnOwnValidators) {
      headers.etag = '"cdn-object-7f3a"';
      headers['last-modified'] = 'Tue, 01 Sep 2026 10:00:00 GMT';
    }
    const challenge = headers['www-authenticate'];
    if (faults.realmHost && typeof challenge === 'string') {
      headers['www-authenticate'] = challenge.replace(
        /realm="([a-z]+):\/\/[^/"]+/,
        (_m, scheme: string) => `realm="${scheme}://${faults.realmHost}`,
      );
    }
    res.writeHead(up.statusCode ?? 502, headers);
    if (!isBlob || req.method === 'HEAD') {
      up.pipe(res);
      return;
    }
    // Where this response starts in the blob (for the corruption offset).
    const range = /^bytes (\d+)-/.exec(String(up.headers['content-range'] ?? ''));
    let position = range ? Number(range[1]) : 0;
    let sent = 0;
    up.on('data', (chunk: Buffer) => {
      let data = chunk;
      const flip = faults.corruptAt;
      if (flip !== undefined && flip >= position && flip < position + data.length) {
        data = Buffer.from(data);
        data[flip - position] = data[flip - position]! ^ 0xff;
      }
      position += data.length;
      const limit = faults.cutEveryBytes;
      if (limit !== undefined && sent + data.length >= limit) {
        res.write(data.subarray(0, limit - sent));
        up.destroy();
        res.socket?.destroy();
        return;
      }
      sent += data.length;
      res.write(data);
    });
    up.on('end', () => res.end());
    up.on('error', () => res.destroy());
  });
  out.on('error', () => res.destroy());
  req.pipe(out);
}

export async function startRegistryFront(
  upstream: string,
  faults: FrontFaults = {},
): Promise<RegistryFront> {
  const requests: FrontRequest[] = [];
  const sockets = new Set<Socket>();
  let signatures = 0;
  const used = new Set<string>();
  /** A signed URL carries the right to the blob: the credentials of the request it answered. */
  const grants = new Map<string, string | undefined>();
  const state = { faults };

  const cdn = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://cdn');
    const record: FrontRequest = {
      origin: 'cdn',
      method: req.method ?? '',
      path: url.pathname,
      range: req.headers.range ?? null,
      status: 0,
      authorization: req.headers.authorization !== undefined,
    };
    requests.push(record);
    const sig = url.searchParams.get('X-Sig') ?? '';
    const m = /^\/cdn(\/v2\/.+\/blobs\/sha256:[0-9a-f]{64})$/.exec(url.pathname);
    if (!m || (state.faults.oneTimeUrls && used.has(sig))) {
      record.status = state.faults.expiredStatus ?? 403;
      res.writeHead(record.status, { 'content-type': 'text/plain' }).end('signature expired\n');
      return;
    }
    used.add(sig);
    // The CDN fetches from the registry with the grant behind the signature, never with
    // whatever the client sent (which must be nothing).
    delete req.headers.authorization;
    const grant = grants.get(sig);
    if (grant !== undefined) req.headers.authorization = grant;
    forward(upstream, m[1]!, req, res, state.faults, true, record, true);
  });
  const cdnHost = await listen(cdn);

  const front = http.createServer((req, res) => {
    const path = req.url ?? '/';
    const blob = BLOB_PATH.exec(path.split('?')[0]!);
    const record: FrontRequest = {
      origin: 'registry',
      method: req.method ?? '',
      path,
      range: req.headers.range ?? null,
      status: 0,
      authorization: req.headers.authorization !== undefined,
    };
    requests.push(record);
    if (blob && req.method === 'GET' && req.headers.range && state.faults.expireTokenOnResume) {
      state.faults = { ...state.faults, expireTokenOnResume: false };
      record.status = 401;
      res
        .writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': 'Bearer error="invalid_token"',
        })
        .end('{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}');
      return;
    }
    if (blob && req.method === 'GET' && state.faults.redirect) {
      signatures++;
      const sig = `s${signatures}`;
      grants.set(sig, req.headers.authorization);
      record.status = 307;
      res.writeHead(307, { location: `http://${cdnHost}/cdn${path}?X-Sig=${sig}` }).end();
      return;
    }
    forward(upstream, path, req, res, state.faults, blob !== null, record);
  });
  const host = await listen(front);
  for (const server of [cdn, front]) {
    server.on('connection', (s: Socket) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
  }

  let stopped = false;
  return {
    host,
    url: `http://${host}`,
    cdnUrl: `http://${cdnHost}`,
    get faults() {
      return state.faults;
    },
    set faults(f: FrontFaults) {
      state.faults = f;
    },
    requests,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      for (const s of sockets) s.destroy();
      await Promise.all(
        [cdn, front].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
      );
    },
  };
}
