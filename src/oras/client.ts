/**
 * A pull-only client for one repository of an OCI distribution registry.
 *
 * Authentication follows the distribution spec: `GET /v2/` tells what the registry wants.
 * - 200: nothing (an open registry: upstream bty could not use these).
 * - 401 with `Bearer realm=…,service=…`: a token from the realm for `repository:<repo>:pull`,
 *   anonymous, or with the login for this host when there is one.
 * - 401 with `Basic`: the login for this host, sent with every request.
 * Tokens are short-lived; a 401 on a later request fetches a new one once.
 *
 * Metadata requests are retried like upstream's (3 attempts, 0.5 s then 1 s) on 429, 5xx and
 * network errors. Blob bytes are not fetched here: the flash engine's HTTP source does that.
 */
import type { IncomingMessage } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { BtyError } from '../core/errors.ts';
import { HttpTransportError, openHttp } from '../net/http-client.ts';
import { isPlainHttpHost, loginFor, type Login } from './credentials.ts';

export interface RegistryClientOptions {
  /** Per request; default 30 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** Delays between attempts of a metadata request (default 500 and 1000 ms). */
  retryDelaysMs?: number[];
}

export interface RegistryResponse {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
  /** Where a redirect chain ended. */
  url: string;
}

const MAX_METADATA_BYTES = 10 << 20;

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses `WWW-Authenticate` into its challenges. Node joins repeated headers with ", ", so
 * `Bearer realm="a",service="b", Basic realm="c"` is two challenges: a new one starts wherever
 * a bare token is followed by whitespace and a parameter (not by `=`).
 */
export function parseChallenges(header: string | undefined): Challenge[] {
  if (!header) return [];
  const challenges: Challenge[] = [];
  const re =
    /\s*,?\s*(?:([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))|([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*))/gy;
  let m: RegExpExecArray | null;
  while ((m = re.exec(header)) !== null && m[0] !== '') {
    if (m[4] !== undefined) {
      challenges.push({ scheme: m[4].toLowerCase(), params: {} });
    } else if (challenges.length > 0) {
      const value = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '');
      challenges[challenges.length - 1]!.params[m[1]!.toLowerCase()] = value;
    }
  }
  return challenges;
}

/** The first challenge of `header` (see parseChallenges). */
export function parseChallenge(header: string | undefined): Challenge | null {
  return parseChallenges(header)[0] ?? null;
}

function basic(login: Login): string {
  return `Basic ${Buffer.from(`${login.username}:${login.password}`).toString('base64')}`;
}

export class RegistryClient {
  readonly host: string;
  readonly repository: string;
  /** `https://host` or, for loopback and BTY_ORAS_INSECURE hosts, `http://host`. */
  readonly base: string;
  private readonly timeoutMs: number;
  private readonly signal: AbortSignal | undefined;
  private readonly env: NodeJS.ProcessEnv;
  private readonly retryDelaysMs: number[];
  /** undefined until `GET /v2/` was asked; null when the registry wants nothing. */
  private authorization: string | null | undefined;
  private login: Login | null | undefined;

  constructor(host: string, repository: string, options: RegistryClientOptions = {}) {
    this.host = host;
    this.repository = repository;
    this.env = options.env ?? process.env;
    this.base = `${isPlainHttpHost(host, this.env) ? 'http' : 'https'}://${host}`;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.signal = options.signal;
    this.retryDelaysMs = options.retryDelaysMs ?? [500, 1000];
  }

  /** `…/v2/<repo>/<kind>/<reference>` */
  url(kind: 'manifests' | 'blobs', reference: string): string {
    return `${this.base}/v2/${this.repository}/${kind}/${reference}`;
  }

  /** The headers a blob download needs (empty for an open registry). */
  async credentials(): Promise<Record<string, string>> {
    if (this.authorization === undefined) await this.authorize();
    return this.authorization ? { authorization: this.authorization } : {};
  }

  /** Fresh credentials (a new token): for a download whose token expired. */
  async refreshCredentials(): Promise<Record<string, string>> {
    this.authorization = undefined;
    return this.credentials();
  }

  /**
   * One metadata request (manifest, blob HEAD) with credentials, retried on transient
   * failures; a 401 re-authorizes once. The body is read (at most 10 MiB).
   */
  async request(
    method: 'GET' | 'HEAD',
    url: string,
    headers: Record<string, string> = {},
    { retry = true }: { retry?: boolean } = {},
  ): Promise<RegistryResponse> {
    const once = () => this.send(method, url, headers);
    const attempt = retry ? () => this.withRetries(once) : once;
    let res = await attempt();
    if (res.status === 401) {
      // An expired token, or a registry whose /v2/ is open but whose repositories are not:
      // answer the challenge this response carries (or ask /v2/ again), once.
      const challenge = authenticateHeader(res);
      const answerable = parseChallenges(challenge).some(
        (c) => (c.scheme === 'bearer' && c.params.realm) || c.scheme === 'basic',
      );
      if (answerable) {
        await this.authorizeFrom(challenge);
      } else if (this.authorization !== null) {
        await this.refreshCredentials();
      } else {
        return res;
      }
      res = await attempt();
    }
    return res;
  }

  private async send(
    method: 'GET' | 'HEAD',
    url: string,
    headers: Record<string, string>,
  ): Promise<RegistryResponse> {
    const credentials = await this.credentials();
    return this.fetch(method, url, headers, credentials);
  }

  private async withRetries(work: () => Promise<RegistryResponse>): Promise<RegistryResponse> {
    for (let attempt = 0; ; attempt++) {
      const delay = this.retryDelaysMs[attempt];
      try {
        const res = await work();
        const transient = res.status === 429 || (res.status >= 500 && res.status <= 504);
        if (!transient || delay === undefined) return res;
      } catch (err) {
        if (!(err instanceof BtyError) || err.code !== 'BTY_ERR_SOURCE_UNREACHABLE') throw err;
        if (delay === undefined) throw err;
      }
      await sleep(delay, undefined, this.signal ? { signal: this.signal } : {});
    }
  }

  /** A request with a deadline; the body read into memory (capped). */
  private async fetch(
    method: 'GET' | 'HEAD',
    url: string,
    headers: Record<string, string>,
    credentials: Record<string, string>,
    credentialsOrigin: string = this.base,
  ): Promise<RegistryResponse> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    const onAbort = () => controller.abort();
    this.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const { res, url: final } = await openHttp(url, {
        method,
        headers,
        credentials,
        credentialsOrigin,
        signal: controller.signal,
        maxRedirects: 5,
        refuseDowngrade: true,
      });
      const chunks: Buffer[] = [];
      let total = 0;
      for await (const chunk of res as AsyncIterable<Buffer>) {
        total += chunk.length;
        if (total > MAX_METADATA_BYTES) {
          res.destroy();
          throw new BtyError(
            'BTY_ERR_ORAS_REGISTRY',
            `${url} answered more than ${MAX_METADATA_BYTES} bytes; refusing to read it as metadata`,
          );
        }
        chunks.push(chunk);
      }
      return {
        status: res.statusCode ?? 0,
        headers: res.headers,
        body: Buffer.concat(chunks),
        url: final,
      };
    } catch (err) {
      if (err instanceof BtyError) throw err;
      this.signal?.throwIfAborted();
      if (
        err instanceof HttpTransportError &&
        (err.kind === 'redirect-scheme' || err.kind === 'redirects')
      ) {
        // Not a passing network fault: asking again would get the same answer.
        throw new BtyError('BTY_ERR_ORAS_REGISTRY', `registry ${this.host}: ${err.message}`, {
          cause: err,
        });
      }
      const why = controller.signal.aborted
        ? `no answer within ${this.timeoutMs / 1000} s`
        : err instanceof HttpTransportError
          ? err.message
          : String((err as Error).message ?? err);
      throw new BtyError('BTY_ERR_SOURCE_UNREACHABLE', `registry ${this.host}: ${why}`, {
        cause: err,
        ...(err instanceof HttpTransportError && err.kind === 'tls'
          ? {
              hint:
                'The registry certificate is not trusted: install its CA (or NODE_EXTRA_CA_CERTS). ' +
                'A registry without TLS must be listed in BTY_ORAS_INSECURE as host:port.',
            }
          : this.base.startsWith('https:')
            ? {
                hint:
                  `Check the host and the network. bty spoke HTTPS to ${this.host}; a registry ` +
                  'without TLS must be listed in BTY_ORAS_INSECURE as host:port.',
              }
            : {}),
      });
    } finally {
      clearTimeout(timer);
      this.signal?.removeEventListener('abort', onAbort);
    }
  }

  private async loginForHost(): Promise<Login | null> {
    if (this.login === undefined) this.login = await loginFor(this.host, this.env);
    return this.login;
  }

  /** Asks `GET /v2/` what the registry wants, and gets it. */
  private async authorize(): Promise<void> {
    const probe = await this.withRetries(() => this.fetch('GET', `${this.base}/v2/`, {}, {}));
    if (probe.status >= 200 && probe.status < 300) {
      this.authorization = null;
      return;
    }
    if (probe.status !== 401) {
      throw new BtyError(
        'BTY_ERR_ORAS_REGISTRY',
        `${this.base}/v2/ answered HTTP ${probe.status}: is ${this.host} an OCI registry?`,
        { details: { status: probe.status } },
      );
    }
    await this.authorizeFrom(authenticateHeader(probe));
  }

  /** Meets a challenge: a Bearer token from its realm, or the Basic login. */
  private async authorizeFrom(header: string | undefined): Promise<void> {
    const challenges = parseChallenges(header);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    const login = await this.loginForHost();
    if (bearer) {
      this.authorization = `Bearer ${await this.token(bearer.params, login)}`;
      return;
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      if (!login) throw this.denied('it asks for a login (Basic) and none is configured');
      this.authorization = basic(login);
      return;
    }
    throw new BtyError(
      'BTY_ERR_ORAS_REGISTRY',
      `${this.host} asks for an authentication bty does not speak: ${header ?? '(no WWW-Authenticate)'}`,
    );
  }

  private async token(params: Record<string, string>, login: Login | null): Promise<string> {
    let realm: URL;
    try {
      realm = new URL(params.realm!);
    } catch {
      throw new BtyError(
        'BTY_ERR_ORAS_REGISTRY',
        `${this.host} names a bad token realm: ${params.realm}`,
      );
    }
    if (realm.protocol === 'http:' && !isPlainHttpHost(realm.host, this.env)) {
      throw new BtyError(
        'BTY_ERR_ORAS_REGISTRY',
        `${this.host} sends bty for a token to a plain-HTTP realm (${realm.origin}); ` +
          'refusing to ask for one, or to send a login, in clear',
        {
          hint: 'If that token service really has no TLS, list it in BTY_ORAS_INSECURE as host:port.',
        },
      );
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') {
      throw new BtyError(
        'BTY_ERR_ORAS_REGISTRY',
        `${this.host} names a bad token realm: ${params.realm}`,
      );
    }
    realm.searchParams.set('service', params.service ?? this.host);
    realm.searchParams.set('scope', `repository:${this.repository}:pull`);
    const credentials: Record<string, string> = login ? { authorization: basic(login) } : {};
    const res = await this.withRetries(() =>
      this.fetch('GET', realm.href, { accept: 'application/json' }, credentials, realm.origin),
    ).catch((err: unknown) => {
      if (err instanceof BtyError) {
        throw new BtyError(err.code, `token request to ${realm.origin} failed: ${err.message}`, {
          cause: err,
        });
      }
      throw err;
    });
    if (res.status === 401 || res.status === 403) {
      throw this.denied(
        login
          ? `the token service refused the login from ${login.from} (HTTP ${res.status})`
          : `the token service refused an anonymous pull (HTTP ${res.status})`,
      );
    }
    if (res.status < 200 || res.status >= 300) {
      throw new BtyError(
        'BTY_ERR_ORAS_REGISTRY',
        `token request to ${realm.origin}${realm.pathname} answered HTTP ${res.status}`,
      );
    }
    let body: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(res.body.toString('utf8'));
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error();
      body = parsed as Record<string, unknown>;
    } catch {
      throw new BtyError(
        'BTY_ERR_ORAS_REGISTRY',
        `the token service of ${this.host} did not answer JSON`,
      );
    }
    const token = [body.token, body.access_token].find((t) => typeof t === 'string' && t !== '');
    if (typeof token !== 'string') {
      throw new BtyError(
        'BTY_ERR_ORAS_REGISTRY',
        `the token service of ${this.host} answered no token (keys: ${Object.keys(body).sort().join(', ')})`,
      );
    }
    return token;
  }

  /** BTY_ERR_ORAS_AUTH for this repository. */
  denied(why: string): BtyError {
    return new BtyError(
      'BTY_ERR_ORAS_AUTH',
      `registry ${this.host} refused access to ${this.repository}: ${why}`,
      { details: { host: this.host, repository: this.repository } },
    );
  }
}

function authenticateHeader(res: RegistryResponse): string | undefined {
  const raw: unknown = res.headers['www-authenticate'];
  return typeof raw === 'string' ? raw : undefined;
}
