/**
 * A real OCI registry for tests: Debian's `docker-registry` (CNCF distribution 2.8) run as a child
 * process on 127.0.0.1, with its storage in a fresh temp folder, and optionally the Docker token
 * authentication flow served by a small in-process token server.
 *
 * Token auth (`auth: 'token'`): a throwaway P-256 key and self-signed certificate are made with the
 * `openssl` CLI; the certificate is the registry's `rootcertbundle`. Tokens are ES256 JWTs whose
 * `kid` header is the libtrust key ID of that key (base32 of the first 240 bits of the SHA-256 of
 * the DER SubjectPublicKeyInfo, in colon-separated groups of four): distribution 2.8 looks the
 * `kid` up among the public keys of the bundle's certificates, so no `x5c` chain is needed.
 *
 * The token server follows the Docker token spec: `GET /token?service=…&scope=…` (scope may
 * repeat, and one value may hold several scopes separated by spaces), optional Basic auth checked
 * against `basicUsers` (a wrong password is a 401; no header is anonymous). Granted actions come
 * from `tokenPolicy`, limited to the ones requested; a refused scope is still issued, with empty
 * actions, so the registry answers 401 as a real one does.
 *
 * The push helpers speak the push side of the distribution spec over plain HTTP and work on both
 * kinds of registry: on a token registry they fetch a token for themselves as a built-in admin
 * user (whose requests are not recorded in `tokenRequests`).
 *
 * Usage:
 *   const reg = await startRegistry({ auth: 'token' });
 *   const { digest } = await pushArtifact(reg, 'os/debian', 'v1', {
 *     artifactType: 'application/vnd.example.disk',
 *     layers: [{ file: imagePath, mediaType: 'application/octet-stream', title: 'disk.img' }],
 *   });
 *   await pull(`${reg.host}/os/debian:v1`);
 *   expect(reg.tokenRequests[0]).toMatchObject({ scope: ['repository:os/debian:pull'], user: null });
 *   await reg.stop();
 */
import { execFile, spawn } from 'node:child_process';
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  randomBytes,
  randomUUID,
  sign,
  type KeyObject,
} from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Where Debian's `docker-registry` package installs the registry. */
export const REGISTRY_BIN = '/usr/bin/docker-registry';

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** Every manifest media type the registry serves, for an Accept header. */
export const ALL_MANIFEST_TYPES = [
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.dockerManifest,
  MEDIA_TYPES.dockerManifestList,
].join(', ');

/** The empty JSON object `{}`: the OCI empty descriptor's content. */
const EMPTY_JSON = Buffer.from('{}');

export interface TokenScope {
  /** e.g. `repository`. */
  type: string;
  /** e.g. `os/debian`. */
  name: string;
  /** e.g. `['pull', 'push']`. */
  actions: string[];
}

/** Actions to grant for a requested scope; `basicUser` is null for an anonymous request. */
export type TokenPolicy = (scope: TokenScope, basicUser: string | null) => string[];

export interface RegistryOptions {
  /**
   * Default 'none'. 'htpasswd': the registry itself asks for Basic auth (its htpasswd access
   * controller) and accepts `basicUsers`.
   */
  auth?: 'none' | 'token' | 'htpasswd';
  /**
   * Default: anonymous requests get `pull`, requests with valid Basic credentials get every action
   * they ask for. Whatever it returns is limited to the requested actions.
   */
  tokenPolicy?: TokenPolicy;
  /** Users the token server accepts with Basic auth: name → password. */
  basicUsers?: Record<string, string>;
  /** How long to wait for the registry to answer, default 15 s. */
  startTimeoutMs?: number;
}

export interface TokenRequest {
  /** The `scope` values asked for, split on spaces, in order. */
  scope: string[];
  /** The Basic auth user name sent (valid or not), or null for an anonymous request. */
  user: string | null;
  /** The `service` parameter, or null when missing. */
  service: string | null;
  /** What the token server answered: 200, 400 (wrong service), 401 (wrong password). */
  status: number;
}

export interface Registry {
  /** e.g. `127.0.0.1:41234` (what goes before the repository in an image reference). */
  host: string;
  /** e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** e.g. `http://127.0.0.1:41235/token` (the Bearer realm), or null without token auth. */
  tokenUrl: string | null;
  /** The Bearer `service` (the token audience), or null without token auth. */
  service: string | null;
  /** Every token request from a client (not the harness's own), in order of arrival. */
  tokenRequests: TokenRequest[];
  /** The registry's storage root (the filesystem driver's `rootdirectory`). */
  storageDir: string;
  /** The last part of the registry's log (its stderr), for diagnosing a failure. */
  logs(): string;
  /** Kills the registry by PID, closes the token server, removes the temp folder. Idempotent. */
  stop(): Promise<void>;
}

/** What the push helpers need that tests should not see. */
interface Internals {
  admin: { user: string; password: string } | null;
  /** With htpasswd auth: the harness's own Basic login for pushes. */
  basic: string | null;
  tokens: Map<string, { token: string; expiresAt: number }>;
}

const internals = new WeakMap<Registry, Internals>();

const LOG_TAIL_BYTES = 64 * 1024;

export async function startRegistry(options: RegistryOptions = {}): Promise<Registry> {
  const dir = await mkdtemp(join(tmpdir(), 'bty-registry-'));
  const storageDir = join(dir, 'storage');
  let tokenServer: TokenServer | null = null;
  let child: ReturnType<typeof spawn> | null = null;
  let log = '';
  let stopping: Promise<void> | null = null;

  const stop = () => {
    stopping ??= (async () => {
      if (child) await killProcess(child);
      if (tokenServer) await tokenServer.close();
      await rm(dir, { recursive: true, force: true });
    })();
    return stopping;
  };

  try {
    await mkdir(storageDir);
    const admin =
      options.auth === 'token' || options.auth === 'htpasswd'
        ? { user: `bty-harness-admin-${randomUUID()}`, password: randomBytes(16).toString('hex') }
        : null;
    const config: Record<string, unknown> = {
      version: '0.1',
      log: { level: 'info', formatter: 'text', accesslog: { disabled: true } },
      storage: {
        filesystem: { rootdirectory: storageDir },
        delete: { enabled: true },
        cache: { blobdescriptor: 'inmemory' },
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: {
        // Port 0: the registry picks a free port and logs it, so there is no race for one.
        addr: '127.0.0.1:0',
        secret: randomBytes(16).toString('hex'),
        headers: { 'X-Content-Type-Options': ['nosniff'] },
      },
    };
    if (admin && options.auth === 'htpasswd') {
      // bcrypt entries, the only kind distribution accepts, made by Apache's htpasswd.
      const users = { ...options.basicUsers, [admin.user]: admin.password };
      const lines: string[] = [];
      for (const [user, password] of Object.entries(users)) {
        const { stdout } = await run('htpasswd', ['-nbB', user, password]);
        lines.push(stdout.trim());
      }
      const htpasswdFile = join(dir, 'htpasswd');
      await writeFile(htpasswdFile, lines.join('\n') + '\n');
      config.auth = { htpasswd: { realm: 'bty-test-registry', path: htpasswdFile } };
    } else if (admin) {
      const key = await makeSigningKey(dir);
      tokenServer = await startTokenServer({
        key,
        service: 'bty-test-registry',
        issuer: 'bty-test-token-issuer',
        policy: options.tokenPolicy ?? defaultPolicy,
        users: { ...options.basicUsers, [admin.user]: admin.password },
        adminUser: admin.user,
      });
      config.auth = {
        token: {
          realm: tokenServer.url,
          service: tokenServer.service,
          issuer: tokenServer.issuer,
          rootcertbundle: key.certFile,
        },
      };
    }
    const configFile = join(dir, 'config.yml');
    await writeFile(configFile, toYaml(config));

    // REGISTRY_* variables override the configuration file: keep the caller's out.
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([name]) => !name.startsWith('REGISTRY_')),
    );
    const proc = spawn(REGISTRY_BIN, ['serve', configFile], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    const append = (chunk: Buffer) => {
      log += chunk.toString('utf8');
      if (log.length > 2 * LOG_TAIL_BYTES) log = log.slice(-LOG_TAIL_BYTES);
    };
    proc.stdout.on('data', append);
    proc.stderr.on('data', append);

    const port = await waitForListening(proc, () => log, options.startTimeoutMs ?? 15_000);
    const url = `http://127.0.0.1:${port}`;
    await waitForV2(url, () => log, options.startTimeoutMs ?? 15_000);

    const registry: Registry = {
      host: `127.0.0.1:${port}`,
      url,
      tokenUrl: tokenServer?.url ?? null,
      service: tokenServer?.service ?? null,
      tokenRequests: tokenServer?.requests ?? [],
      storageDir,
      logs: () => log.slice(-LOG_TAIL_BYTES),
      stop,
    };
    const basic =
      admin && options.auth === 'htpasswd'
        ? `Basic ${Buffer.from(`${admin.user}:${admin.password}`).toString('base64')}`
        : null;
    internals.set(registry, { admin, basic, tokens: new Map() });
    return registry;
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Anonymous: pull only. With valid Basic credentials: everything asked for. */
function defaultPolicy(scope: TokenScope, basicUser: string | null): string[] {
  return basicUser === null ? scope.actions.filter((a) => a === 'pull') : scope.actions;
}

/** Resolves with the port from the registry's "listening on 127.0.0.1:N" log line. */
function waitForListening(
  proc: ReturnType<typeof spawn>,
  log: () => string,
  timeoutMs: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, port?: number) => {
      clearTimeout(timer);
      proc.stdout?.off('data', check);
      proc.stderr?.off('data', check);
      proc.off('exit', onExit);
      proc.off('error', onError);
      if (err) reject(err);
      else resolve(port ?? 0);
    };
    const check = () => {
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(log());
      if (match) done(null, Number(match[1]));
    };
    const onExit = (code: number | null, signal: string | null) =>
      done(
        new Error(
          `docker-registry exited during startup (code ${code}, signal ${signal}):\n${log()}`,
        ),
      );
    const onError = (err: NodeJS.ErrnoException) =>
      done(
        err.code === 'ENOENT'
          ? new Error(
              `${REGISTRY_BIN} not found: install Debian's docker-registry package ` +
                '(make deps-test, or apt-get install docker-registry)',
            )
          : err,
      );
    const timer = setTimeout(
      () =>
        done(new Error(`docker-registry did not start listening in ${timeoutMs} ms:\n${log()}`)),
      timeoutMs,
    );
    proc.stdout?.on('data', check);
    proc.stderr?.on('data', check);
    proc.on('exit', onExit);
    proc.on('error', onError);
    check();
  });
}

/** Polls `GET /v2/` until it gets an HTTP answer (200, or 401 with token auth). */
async function waitForV2(url: string, log: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await send('GET', `${url}/v2/`, {});
      if (res.status === 200 || res.status === 401) return;
      last = `status ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `docker-registry did not answer GET /v2/ in ${timeoutMs} ms (${last}):\n${log()}`,
  );
}

/** SIGTERM, then SIGKILL if it has not exited after 5 s. */
async function killProcess(proc: ReturnType<typeof spawn>): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null || proc.pid === undefined) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  process.kill(proc.pid, 'SIGTERM');
  const timer = setTimeout(() => {
    if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) {
      process.kill(proc.pid, 'SIGKILL');
    }
  }, 5_000);
  await exited;
  clearTimeout(timer);
}

/** A tiny YAML writer: nested mappings, with scalars and lists written as JSON (valid YAML). */
function toYaml(value: Record<string, unknown>, indent = ''): string {
  let out = '';
  for (const [key, item] of Object.entries(value)) {
    if (item !== null && typeof item === 'object' && !Array.isArray(item)) {
      out += `${indent}${key}:\n${toYaml(item as Record<string, unknown>, `${indent}  `)}`;
    } else {
      out += `${indent}${key}: ${JSON.stringify(item)}\n`;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Token server

interface SigningKey {
  privateKey: KeyObject;
  certFile: string;
  /** libtrust key ID, what distribution 2.8 matches the JWT `kid` header against. */
  kid: string;
}

/** A P-256 key and a self-signed certificate for it, made by `openssl` in `dir`. */
async function makeSigningKey(dir: string): Promise<SigningKey> {
  const keyFile = join(dir, 'token-key.pem');
  const certFile = join(dir, 'token-cert.pem');
  try {
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '2',
      '-subj',
      '/CN=bty test token issuer',
    ]);
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    throw new Error(
      e.code === 'ENOENT'
        ? 'openssl not found: install it (make deps-test, or apt-get install openssl)'
        : `openssl could not make the token signing certificate: ${e.stderr ?? e.message}`,
      { cause: err },
    );
  }
  const privateKey = createPrivateKey(await readFile(keyFile));
  return { privateKey, certFile, kid: libtrustKeyId(privateKey) };
}

/**
 * The key ID libtrust (used by distribution 2.x) gives a public key: SHA-256 of the DER
 * SubjectPublicKeyInfo, first 30 bytes, base32 (no padding, 48 characters), groups of 4 joined
 * with ':'.
 */
export function libtrustKeyId(key: KeyObject): string {
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const hash = createHash('sha256').update(spki).digest().subarray(0, 30);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let encoded = '';
  for (const byte of hash) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      encoded += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return encoded.match(/.{4}/g)!.join(':');
}

interface TokenServer {
  url: string;
  service: string;
  issuer: string;
  requests: TokenRequest[];
  close(): Promise<void>;
}

interface TokenServerOptions {
  key: SigningKey;
  service: string;
  issuer: string;
  policy: TokenPolicy;
  users: Record<string, string>;
  adminUser: string;
}

const TOKEN_LIFETIME_S = 300;

async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const requests: TokenRequest[] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://token.invalid');
    if (req.method !== 'GET' || url.pathname !== '/token') {
      // Clients that try the OAuth2 POST first fall back to GET on 404.
      answer(res, 404, { errors: [{ code: 'NOT_FOUND', message: 'token server: GET /token' }] });
      return;
    }
    const scope = url.searchParams.getAll('scope').flatMap((s) => s.split(' ').filter(Boolean));
    const service = url.searchParams.get('service');
    const credentials = parseBasic(req.headers.authorization);
    const user = credentials?.user ?? null;
    const record = (status: number) => {
      if (user !== options.adminUser) requests.push({ scope, user, service, status });
    };

    if (credentials && options.users[credentials.user] !== credentials.password) {
      record(401);
      res.setHeader('WWW-Authenticate', 'Basic realm="bty test token server"');
      answer(res, 401, {
        errors: [{ code: 'UNAUTHORIZED', message: 'bad user name or password' }],
      });
      return;
    }
    if (service !== null && service !== options.service) {
      record(400);
      answer(res, 400, {
        errors: [{ code: 'DENIED', message: `unknown service ${JSON.stringify(service)}` }],
      });
      return;
    }

    const access: TokenScope[] = [];
    for (const s of scope) {
      const parsed = parseScope(s);
      if (!parsed) continue; // malformed: nothing to grant
      const granted =
        user === options.adminUser ? parsed.actions : options.policy({ ...parsed }, user);
      access.push({
        type: parsed.type,
        name: parsed.name,
        actions: parsed.actions.filter((a) => granted.includes(a)),
      });
    }
    const now = Math.floor(Date.now() / 1000);
    const token = signJwt(options.key, {
      iss: options.issuer,
      sub: user ?? '',
      aud: options.service,
      exp: now + TOKEN_LIFETIME_S,
      nbf: now - 1,
      iat: now,
      jti: randomUUID(),
      access,
    });
    record(200);
    answer(res, 200, {
      token,
      access_token: token,
      expires_in: TOKEN_LIFETIME_S,
      issued_at: new Date(now * 1000).toISOString(),
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/token`,
    service: options.service,
    issuer: options.issuer,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function answer(res: http.ServerResponse, status: number, body: unknown): void {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': data.length });
  res.end(data);
}

function parseBasic(header: string | undefined): { user: string; password: string } | null {
  const match = /^Basic\s+(\S+)$/i.exec(header ?? '');
  if (!match?.[1]) return null;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** `repository:os/debian:pull,push` → type, name, actions (the name may not be empty). */
export function parseScope(scope: string): TokenScope | null {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last <= first + 1) return null;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope
      .slice(last + 1)
      .split(',')
      .filter(Boolean),
  };
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/** ES256 JWT with the libtrust `kid`; the signature is JOSE's raw r‖s, not DER. */
function signJwt(key: SigningKey, claims: Record<string, unknown>): string {
  const header = { typ: 'JWT', alg: 'ES256', kid: key.kid };
  const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  const signature = sign('sha256', Buffer.from(input), {
    key: key.privateKey,
    dsaEncoding: 'ieee-p1363',
  });
  return `${input}.${base64url(signature)}`;
}

// ---------------------------------------------------------------------------------------------
// HTTP client and push helpers

interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

type Body = Buffer | { file: string; size: number };

const agent = new http.Agent({ keepAlive: false });

function send(
  method: string,
  url: string,
  headers: Record<string, string>,
  body?: Body,
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', reject);
    });
    req.setTimeout(120_000, () => req.destroy(new Error(`${method} ${url}: timed out`)));
    // After an early answer (say a 4xx before the whole body is sent) the write side may fail
    // with EPIPE; the response has won by then and the rejection is ignored.
    req.on('error', reject);
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else pipeline(createReadStream(body.file), req).catch((err: Error) => req.destroy(err));
  });
}

function fail(method: string, url: string, res: HttpResult): Error {
  const text = res.body.toString('utf8');
  const shown = text.length > 2000 ? `${text.slice(0, 2000)}…` : text;
  return new Error(
    `registry: ${method} ${url} answered ${res.status} ${http.STATUS_CODES[res.status] ?? ''}: ${shown}`,
  );
}

/** Sends a request to the registry, with a token for `repo` on a token registry. */
async function call(
  reg: Registry,
  repo: string,
  method: string,
  pathOrUrl: string,
  headers: Record<string, string>,
  expected: number[],
  body?: Body,
): Promise<HttpResult> {
  const url = new URL(pathOrUrl, reg.url).toString();
  const auth = await authorization(reg, repo);
  const res = await send(method, url, { ...headers, ...auth }, body);
  if (!expected.includes(res.status)) throw fail(method, url, res);
  return res;
}

/** A Bearer header for everything on `repo`, fetched as the admin user and cached. */
async function authorization(reg: Registry, repo: string): Promise<Record<string, string>> {
  const state = internals.get(reg);
  if (!state) throw new Error('registry: not a Registry made by startRegistry');
  if (state.basic) return { Authorization: state.basic };
  if (!state.admin || !reg.tokenUrl || !reg.service) return {};
  const cached = state.tokens.get(repo);
  if (cached && cached.expiresAt > Date.now()) return { Authorization: `Bearer ${cached.token}` };
  const url = new URL(reg.tokenUrl);
  url.searchParams.set('service', reg.service);
  url.searchParams.set('scope', `repository:${repo}:pull,push,delete`);
  const basic = Buffer.from(`${state.admin.user}:${state.admin.password}`).toString('base64');
  const res = await send('GET', url.toString(), { Authorization: `Basic ${basic}` });
  if (res.status !== 200) throw fail('GET', url.toString(), res);
  const { token, expires_in } = JSON.parse(res.body.toString('utf8')) as {
    token: string;
    expires_in: number;
  };
  state.tokens.set(repo, { token, expiresAt: Date.now() + (expires_in - 30) * 1000 });
  return { Authorization: `Bearer ${token}` };
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return `sha256:${hash.digest('hex')}`;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: Platform;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/**
 * Uploads a blob (POST, then a monolithic PUT with the digest). A file is hashed and then sent as
 * streams, never held in memory. A blob the repository already has is not sent again.
 */
export async function pushBlob(
  reg: Registry,
  repo: string,
  data: Buffer | { file: string },
): Promise<{ digest: string; size: number }> {
  let digest: string;
  let body: Body;
  if (Buffer.isBuffer(data)) {
    digest = sha256(data);
    body = data;
  } else {
    const { size } = await stat(data.file);
    digest = await sha256File(data.file);
    body = { file: data.file, size };
  }
  const size = Buffer.isBuffer(body) ? body.length : body.size;
  const head = await call(reg, repo, 'HEAD', `/v2/${repo}/blobs/${digest}`, {}, [200, 404]);
  if (head.status === 200) return { digest, size };

  const start = await call(reg, repo, 'POST', `/v2/${repo}/blobs/uploads/`, {}, [202]);
  const location = start.headers.location;
  if (!location) throw fail('POST', `${reg.url}/v2/${repo}/blobs/uploads/`, start);
  const target = new URL(location, reg.url);
  target.searchParams.set('digest', digest);
  await call(
    reg,
    repo,
    'PUT',
    target.toString(),
    { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) },
    [201],
    body,
  );
  return { digest, size };
}

/**
 * Uploads a manifest (an object is sent as `JSON.stringify` gives it, a Buffer byte for byte) under
 * a tag or a digest; returns its digest, checked against the registry's `Docker-Content-Digest`.
 */
export async function putManifest(
  reg: Registry,
  repo: string,
  ref: string,
  body: object | Buffer,
  mediaType: string,
): Promise<string> {
  const data = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
  const digest = sha256(data);
  const path = `/v2/${repo}/manifests/${ref}`;
  const res = await call(
    reg,
    repo,
    'PUT',
    path,
    { 'Content-Type': mediaType, 'Content-Length': String(data.length) },
    [201],
    data,
  );
  const answered = res.headers['docker-content-digest'];
  if (answered !== undefined && answered !== digest) {
    throw new Error(`registry: PUT ${path} stored digest ${String(answered)}, expected ${digest}`);
  }
  return digest;
}

export interface FetchedManifest {
  /** From `Docker-Content-Digest`. */
  digest: string;
  /** From `Content-Type`. */
  mediaType: string;
  /** The exact bytes served. */
  body: Buffer;
  manifest: Record<string, unknown>;
}

/** GET a manifest by tag or digest; `accept` defaults to every manifest type. */
export async function getManifest(
  reg: Registry,
  repo: string,
  ref: string,
  accept: string = ALL_MANIFEST_TYPES,
): Promise<FetchedManifest> {
  const res = await call(
    reg,
    repo,
    'GET',
    `/v2/${repo}/manifests/${ref}`,
    { Accept: accept },
    [200],
  );
  return {
    digest: String(res.headers['docker-content-digest'] ?? sha256(res.body)),
    mediaType: String(res.headers['content-type'] ?? ''),
    body: res.body,
    manifest: JSON.parse(res.body.toString('utf8')) as Record<string, unknown>,
  };
}

/** DELETE a manifest by digest (the registry refuses tags). */
export async function deleteManifest(reg: Registry, repo: string, digest: string): Promise<void> {
  await call(reg, repo, 'DELETE', `/v2/${repo}/manifests/${digest}`, {}, [202]);
}

export interface ArtifactLayer {
  /** Exactly one of data and file. */
  data?: Buffer;
  file?: string;
  mediaType: string;
  /** Becomes the `org.opencontainers.image.title` annotation. */
  title?: string;
  annotations?: Record<string, string>;
}

export interface ArtifactSpec {
  layers: ArtifactLayer[];
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface OciManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface PushedManifest<M> {
  digest: string;
  /** Its size in bytes, for a descriptor (index entries). */
  size: number;
  mediaType: string;
  manifest: M;
  layers: Array<{ digest: string; size: number }>;
}

/**
 * Pushes an OCI artifact: the layers, the empty config `{}` and an image manifest with
 * `artifactType`; under `ref` (a tag), or by digest only when `ref` is null.
 */
export async function pushArtifact(
  reg: Registry,
  repo: string,
  ref: string | null,
  spec: ArtifactSpec,
): Promise<PushedManifest<OciManifest>> {
  const layers: Descriptor[] = [];
  for (const layer of spec.layers) {
    if ((layer.data === undefined) === (layer.file === undefined)) {
      throw new Error('pushArtifact: each layer needs exactly one of data and file');
    }
    const pushed = await pushBlob(reg, repo, layer.data ?? { file: layer.file! });
    const annotations = {
      ...layer.annotations,
      ...(layer.title !== undefined ? { 'org.opencontainers.image.title': layer.title } : {}),
    };
    layers.push({
      mediaType: layer.mediaType,
      digest: pushed.digest,
      size: pushed.size,
      ...(Object.keys(annotations).length > 0 ? { annotations } : {}),
    });
  }
  const config = await pushBlob(reg, repo, EMPTY_JSON);
  const manifest: OciManifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    ...(spec.artifactType !== undefined ? { artifactType: spec.artifactType } : {}),
    config: { mediaType: MEDIA_TYPES.ociEmpty, digest: config.digest, size: config.size },
    layers,
    ...(spec.annotations !== undefined ? { annotations: spec.annotations } : {}),
  };
  return putAndDescribe(reg, repo, ref, manifest, MEDIA_TYPES.ociManifest, layers);
}

export interface DockerManifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

/**
 * Pushes a Docker v2 schema 2 image: the layers (sent as given, typed as gzipped tars), a small
 * image config naming linux/amd64 whose `diff_ids` are the layer digests (the registry does not
 * check them), and the manifest; under `tag`, or by digest only when `tag` is null.
 */
export async function pushDockerV2(
  reg: Registry,
  repo: string,
  tag: string | null,
  ...layerData: Array<Buffer | { file: string }>
): Promise<PushedManifest<DockerManifest> & { config: { digest: string; size: number } }> {
  const layers: Descriptor[] = [];
  for (const data of layerData) {
    const pushed = await pushBlob(reg, repo, data);
    layers.push({ mediaType: MEDIA_TYPES.dockerLayer, digest: pushed.digest, size: pushed.size });
  }
  const imageConfig = {
    architecture: 'amd64',
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
  };
  const config = await pushBlob(reg, repo, Buffer.from(JSON.stringify(imageConfig)));
  const manifest: DockerManifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.dockerManifest,
    config: { mediaType: MEDIA_TYPES.dockerConfig, digest: config.digest, size: config.size },
    layers,
  };
  const pushed = await putAndDescribe(reg, repo, tag, manifest, MEDIA_TYPES.dockerManifest, layers);
  return { ...pushed, config };
}

export interface IndexEntry {
  digest: string;
  size: number;
  mediaType: string;
  platform: Platform;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
}

/**
 * Pushes an OCI image index ('oci') or a Docker manifest list ('docker') of manifests already in
 * the repository (the registry checks that they are); under `tag`, or by digest when null.
 */
export async function pushIndex(
  reg: Registry,
  repo: string,
  tag: string | null,
  entries: IndexEntry[],
  kind: 'oci' | 'docker',
): Promise<PushedManifest<ImageIndex>> {
  const mediaType = kind === 'oci' ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.dockerManifestList;
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType,
    manifests: entries.map((e) => ({
      mediaType: e.mediaType,
      digest: e.digest,
      size: e.size,
      platform: { ...e.platform },
    })),
  };
  return putAndDescribe(reg, repo, tag, index, mediaType, []);
}

async function putAndDescribe<M extends object>(
  reg: Registry,
  repo: string,
  ref: string | null,
  manifest: M,
  mediaType: string,
  layers: Descriptor[],
): Promise<PushedManifest<M>> {
  const data = Buffer.from(JSON.stringify(manifest));
  const digest = await putManifest(reg, repo, ref ?? sha256(data), data, mediaType);
  return {
    digest,
    size: data.length,
    mediaType,
    manifest,
    layers: layers.map((l) => ({ digest: l.digest, size: l.size })),
  };
}
