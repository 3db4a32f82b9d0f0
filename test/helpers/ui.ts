/**
 * A running bty-web for browser-UI tests over real HTTP: a fresh migrated SQLite database, the
 * app on a loopback port, and an operator client that keeps cookies (session and CSRF) like a
 * browser and posts forms with the page's token.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp, type AppOptions } from '../../src/web/app.ts';
import { LiveBus } from '../../src/web/bus.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { createSessions } from '../../src/web/session.ts';

export const UI_PASSWORD = 'ui-test-password';

export interface UiServer {
  app: FastifyInstance;
  database: BtyDatabase;
  bus: LiveBus;
  base: string;
  dir: string;
  close(): Promise<void>;
}

/** Starts bty-web on 127.0.0.1 with a fresh database in a temp folder. */
export async function startUiServer(options: Partial<AppOptions> = {}): Promise<UiServer> {
  const dir = await mkdtemp(join(tmpdir(), 'bty-ui-'));
  const database = await openDatabase({ sqlitePath: join(dir, 'state.db') });
  await migrate(database);
  const bus = options.bus ?? new LiveBus();
  const app = await buildApp({
    database,
    version: '9.9.9',
    artifactVersion: '1.2.3',
    bootDir: join(dir, 'boot'),
    sessions: createSessions('ui-test-secret', UI_PASSWORD),
    bus,
    ...options,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  return {
    app,
    database,
    bus,
    base,
    dir,
    async close() {
      // Keep-alive sockets of the tests' own fetch clients would hold close() until their
      // timeout (72 s); the server's shutdown with a browser attached is tested end to end.
      app.server.closeAllConnections();
      await app.close();
      await database.close();
      await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    },
  };
}

/** A browser-like client: a cookie jar, HTML accepted, redirects not followed. */
export class UiClient {
  readonly base: string;
  private readonly cookies = new Map<string, string>();

  constructor(base: string) {
    this.base = base;
  }

  get cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  /** The CSRF token the server gave this browser (after any page was fetched). */
  get csrf(): string {
    return this.cookies.get('bty-csrf') ?? '';
  }

  private keep(res: Response): Response {
    for (const line of res.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      if (/Max-Age=0/i.test(line)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return res;
  }

  async get(path: string, headers: Record<string, string> = {}): Promise<Response> {
    return this.keep(
      await fetch(this.base + path, {
        redirect: 'manual',
        headers: { accept: 'text/html', cookie: this.cookieHeader, ...headers },
      }),
    );
  }

  /** The page's HTML, failing unless the status is `status`. */
  async page(path: string, status = 200): Promise<string> {
    const res = await this.get(path);
    const text = await res.text();
    if (res.status !== status) {
      throw new Error(`GET ${path}: ${res.status} (wanted ${status}): ${text.slice(0, 300)}`);
    }
    return text;
  }

  /** A form post as a browser sends it, with the CSRF token unless `csrf: false`. */
  async post(
    path: string,
    fields: Record<string, string | string[]> = {},
    { csrf = true }: { csrf?: boolean } = {},
  ): Promise<Response> {
    const body = new URLSearchParams();
    for (const [k, v] of Object.entries(fields)) {
      for (const one of Array.isArray(v) ? v : [v]) body.append(k, one);
    }
    if (csrf) body.set('_csrf', this.csrf);
    return this.keep(
      await fetch(this.base + path, {
        method: 'POST',
        redirect: 'manual',
        headers: {
          accept: 'text/html',
          'content-type': 'application/x-www-form-urlencoded',
          cookie: this.cookieHeader,
        },
        body,
      }),
    );
  }

  /** Logs in through the form (fetching the login page first, as a browser would). */
  async login(password = UI_PASSWORD): Promise<Response> {
    await this.get('/ui/login');
    return this.post('/ui/login', { password }, { csrf: false });
  }
}

/** A logged-in client. */
export async function operator(server: UiServer): Promise<UiClient> {
  const client = new UiClient(server.base);
  const res = await client.login();
  if (res.status !== 303) throw new Error(`login failed: ${res.status}`);
  return client;
}
