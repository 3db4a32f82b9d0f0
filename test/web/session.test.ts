/**
 * The operator session (src/web/session.ts) and the login/logout routes over real HTTP: the
 * password check, the signed `bty-token` cookie (attributes, tampering, expiry, the sliding
 * refresh, the clock skew allowance), logout's deletion cookie, the session secret's
 * resolution, and the guard answering 401 before any validation.
 */
import { createHmac } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/web/app.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import {
  createSessions,
  DEFAULT_ADMIN_PASSWORD,
  resolveSessionSecret,
  SESSION_COOKIE,
  SESSION_MAX_AGE_S,
} from '../../src/web/session.ts';

const SECRET = 'session-test-secret';
const T0 = new Date('2026-11-29T12:00:00.000Z');
const DAY_MS = 24 * 3600 * 1000;

let dir: string;
let database: BtyDatabase;
let app: FastifyInstance;
let base: string;
let clock = T0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-web-session-'));
  database = await openDatabase({ sqlitePath: join(dir, 'state.db') });
  await migrate(database);
  app = await buildApp({
    database,
    version: '9.9.9',
    artifactVersion: '1.2.3',
    bootDir: join(dir, 'boot'),
    sessions: createSessions(SECRET, '  s3cret-Pässword  ', () => clock),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});

afterAll(async () => {
  await app?.close();
  await database?.close();
  await rm(dir, { recursive: true, force: true });
});

const PASSWORD = 's3cret-Pässword';

function login(password: unknown, form = false): Promise<Response> {
  return fetch(`${base}/ui/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json' },
    body: form
      ? new URLSearchParams({ password: String(password) }).toString()
      : JSON.stringify({ password }),
  });
}

/** `bty-token=<value>` from a Set-Cookie header. */
function cookieOf(res: Response): string {
  const header = res.headers.get('set-cookie');
  expect(header).not.toBeNull();
  return header!.split(';')[0]!;
}

const issuedAt = (cookie: string): number => Number(cookie.split('=')[1]!.split('.')[0]);

/** A cookie value signed as the server signs, with any secret and issue time. */
function forge(secret: string, issued: number): string {
  const sig = createHmac('sha256', secret).update(`bty-session:${issued}`).digest('base64url');
  return `${SESSION_COOKIE}=${issued}.${sig}`;
}

const probe = (cookie: string | null, path = '/machines') =>
  fetch(`${base}${path}`, { headers: cookie ? { cookie } : {} });

describe('the password check', () => {
  const sessions = createSessions(SECRET, '  s3cret-Pässword  ');
  it.each([
    [PASSWORD, true],
    ['s3cret-Pässword ', false],
    ['s3cret-Password', false],
    ['s3cret-Pässwor', false],
    ['s3cret-Pässwordd', false],
    ['', false],
    ['S3CRET-PÄSSWORD', false],
  ])('%j -> %s (trimmed configured password, exact bytes)', (given, ok) => {
    expect(sessions.checkPassword(given)).toBe(ok);
  });

  it('an empty or blank password means the default bty-lab, flagged as such', () => {
    for (const configured of ['', '   ']) {
      const s = createSessions(SECRET, configured);
      expect(s.usingDefaultPassword).toBe(true);
      expect(s.checkPassword(DEFAULT_ADMIN_PASSWORD)).toBe(true);
      expect(s.checkPassword('')).toBe(false);
    }
    expect(createSessions(SECRET, 'other').usingDefaultPassword).toBe(false);
  });
});

describe('POST /ui/login', () => {
  it('a wrong password: 401, no cookie; a missing one: 422 naming the field', async () => {
    for (const form of [false, true]) {
      const res = await login('bty-lab', form);
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ detail: 'wrong password' });
      expect(res.headers.get('set-cookie')).toBeNull();
    }
    const missing = await fetch(`${base}/ui/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect(missing.status).toBe(422);
    expect(((await missing.json()) as { detail: string }).detail).toMatch(/^password: /);
    const notString = await login(12345);
    expect(notString.status).toBe(422);
  });

  it('JSON login: 204 and the cookie with HttpOnly, SameSite=Strict, Max-Age 7 days, no Secure', async () => {
    clock = T0;
    const res = await login(PASSWORD);
    expect(res.status).toBe(204);
    // The session cookie; the form token (bty-csrf) follows it.
    const [header = '', csrf] = res.headers.getSetCookie();
    expect(csrf).toMatch(/^bty-csrf=[\w-]{22}\.[\w-]{43}; Path=\/; HttpOnly; SameSite=Strict$/);
    const parts = header.split(';').map((p) => p.trim());
    expect(parts[0]).toMatch(
      new RegExp(`^${SESSION_COOKIE}=${T0.getTime() / 1000}\\.[A-Za-z0-9_-]{43}$`),
    );
    expect(parts.slice(1).sort()).toEqual(
      ['HttpOnly', `Max-Age=${SESSION_MAX_AGE_S}`, 'Path=/', 'SameSite=Strict'].sort(),
    );
    expect(SESSION_MAX_AGE_S).toBe(604800);
    expect(header).not.toMatch(/secure/i);
  });

  it('form login: 303 to the dashboard with the same cookie', async () => {
    const res = await login(PASSWORD, true);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/dashboard');
    expect(cookieOf(res)).toMatch(new RegExp(`^${SESSION_COOKIE}=\\d+\\.`));
  });
});

describe('the session cookie', () => {
  it('a valid cookie opens the API and comes back refreshed (sliding lifetime)', async () => {
    clock = T0;
    const first = cookieOf(await login(PASSWORD));
    clock = new Date(T0.getTime() + 6 * DAY_MS);
    const res = await probe(first);
    expect(res.status).toBe(200);
    const refreshed = cookieOf(res);
    expect(issuedAt(refreshed)).toBe(issuedAt(first) + 6 * 24 * 3600);
    expect(res.headers.get('set-cookie')).toContain(`Max-Age=${SESSION_MAX_AGE_S}`);
    // Two days later the login cookie has expired; the refreshed one has not.
    clock = new Date(T0.getTime() + 8 * DAY_MS);
    expect((await probe(first)).status).toBe(401);
    expect((await probe(refreshed)).status).toBe(200);
  });

  it('expiry: valid for exactly Max-Age seconds, not one more', async () => {
    clock = T0;
    const cookie = cookieOf(await login(PASSWORD));
    clock = new Date(T0.getTime() + SESSION_MAX_AGE_S * 1000);
    expect((await probe(cookie)).status).toBe(200);
    clock = new Date(T0.getTime() + (SESSION_MAX_AGE_S + 1) * 1000);
    const res = await probe(cookie);
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ detail: 'login required' });
    expect(res.headers.get('set-cookie')).toBeNull();
  });

  it('a cookie from the future: 5 minutes of clock skew tolerated, more is no session', async () => {
    clock = new Date(T0.getTime() + 3600 * 1000);
    const cookie = cookieOf(await login(PASSWORD));
    clock = new Date(T0.getTime() + 3600 * 1000 - 300 * 1000);
    expect((await probe(cookie)).status).toBe(200);
    clock = T0;
    expect((await probe(cookie)).status).toBe(401);
  });

  it('tampered, forged or malformed cookies are no session', async () => {
    clock = T0;
    const good = cookieOf(await login(PASSWORD));
    const [, value] = good.split('=') as [string, string];
    const [issued, sig] = value.split('.') as [string, string];
    const flipped = sig.slice(0, -1) + (sig.endsWith('A') ? 'B' : 'A');
    const issuedNow = T0.getTime() / 1000;
    const bad = [
      `${SESSION_COOKIE}=${issued}.${flipped}`,
      `${SESSION_COOKIE}=${Number(issued) - 1}.${sig}`,
      `${SESSION_COOKIE}=${Number(issued) + 60}.${sig}`,
      forge('another-secret', issuedNow),
      `${SESSION_COOKIE}=${issued}.${sig}x`,
      `${SESSION_COOKIE}=${issued}`,
      `${SESSION_COOKIE}=.${sig}`,
      `${SESSION_COOKIE}=-${issued}.${sig}`,
      `${SESSION_COOKIE}=null`,
      `${SESSION_COOKIE}=`,
      `other-cookie=${value}`,
    ];
    for (const cookie of bad) {
      const res = await probe(cookie);
      expect(res.status, cookie).toBe(401);
      expect(res.headers.get('set-cookie'), cookie).toBeNull();
    }
    // The forging helper is right: with the real secret the same recipe is a session.
    expect((await probe(forge(SECRET, issuedNow))).status).toBe(200);
    // Among other cookies, and with spaces around it, it is found.
    expect((await probe(`theme=dark; ${good} ; lang=en`)).status).toBe(200);
  });

  it('logout: 303 to the login page with a deletion cookie', async () => {
    const res = await fetch(`${base}/ui/logout`, { method: 'POST', redirect: 'manual' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/login');
    const parts = res.headers
      .get('set-cookie')!
      .split(';')
      .map((p) => p.trim());
    expect(parts[0]).toBe(`${SESSION_COOKIE}=null`);
    expect(parts).toContain('Max-Age=0');
    expect(parts).toContain('Expires=Thu, 01 Jan 1970 00:00:00 GMT');
    expect(parts).toContain('HttpOnly');
    expect(parts).toContain('SameSite=Strict');
    expect(parts).toContain('Path=/');
  });
});

describe('the guard answers 401 before any validation', () => {
  const cases: Array<[string, string, Record<string, string>, string | undefined]> = [
    ['GET', '/machines/not-a-mac', {}, undefined],
    ['PUT', '/machines/not-a-mac', { 'content-type': 'application/json' }, '{broken'],
    [
      'PUT',
      '/machines/52:54:00:00:00:01',
      { 'content-type': 'application/json' },
      '{"boot_mode":"x"}',
    ],
    ['PUT', '/machines/52:54:00:00:00:01', { 'content-type': 'text/xml' }, '<x/>'],
    [
      'PUT',
      '/machines/52:54:00:00:00:01',
      { 'content-type': 'application/json' },
      'x'.repeat(200_000),
    ],
    ['DELETE', '/machines/zz', {}, undefined],
    ['GET', '/events?limit=abc&before_id=-1', {}, undefined],
    ['POST', '/events/not-an-id/ack', {}, undefined],
    ['GET', '/config', {}, undefined],
    ['PUT', '/boot/.hidden', { 'content-type': 'text/plain' }, 'x'],
    ['PUT', '/boot/vmlinuz', { 'content-type': 'application/octet-stream' }, 'x'],
  ];
  it.each(cases)('%s %s', async (method, path, headers, body) => {
    clock = T0;
    const before = await database.db.selectFrom('events').select('id').execute();
    const res = await fetch(`${base}${path}`, { method, headers, body });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ detail: 'login required' });
    expect(await database.db.selectFrom('events').select('id').execute()).toEqual(before);
  });
});

describe('the session secret', () => {
  let state: string;
  beforeAll(async () => {
    state = await mkdtemp(join(tmpdir(), 'bty-web-secret-'));
  });
  afterAll(() => rm(state, { recursive: true, force: true }));

  it('the configured secret wins, trimmed', async () => {
    expect(await resolveSessionSecret('  configured  ', state)).toBe('configured');
  });

  it('otherwise a new random one is written (mode 0640) and read back the next time', async () => {
    const folder = join(state, 'fresh', 'nested');
    const secret = await resolveSessionSecret('', folder);
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const file = join(folder, 'session-secret');
    expect(await readFile(file, 'utf8')).toBe(`${secret}\n`);
    expect((await stat(file)).mode & 0o777).toBe(0o640);
    expect(await resolveSessionSecret('   ', folder)).toBe(secret);
  });

  it('an empty or blank file is treated as missing and replaced', async () => {
    const folder = join(state, 'blank');
    await resolveSessionSecret('', folder);
    await writeFile(join(folder, 'session-secret'), '  \n');
    const secret = await resolveSessionSecret('', folder);
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await readFile(join(folder, 'session-secret'), 'utf8')).trim()).toBe(secret);
  });

  it('a different secret ends every session', async () => {
    clock = T0;
    const cookie = cookieOf(await login(PASSWORD));
    const other = await buildApp({
      database,
      version: '9.9.9',
      artifactVersion: '1.2.3',
      bootDir: join(dir, 'boot'),
      sessions: createSessions('rotated-secret', PASSWORD, () => clock),
    });
    try {
      const res = await other.inject({ method: 'GET', url: '/machines', headers: { cookie } });
      expect(res.statusCode).toBe(401);
    } finally {
      await other.close();
    }
  });
});

describe('the audit log of operator sessions', () => {
  it('failed and successful logins and a logout are logged with the client IP', async () => {
    const { listEvents } = await import('../../src/web/db/events.ts');
    const before = (await listEvents(database.db, { subjectKind: 'auth', limit: 1000 })).length;
    await login('wrong');
    const ok = await login(PASSWORD);
    // Login also sets the form token (bty-csrf): a logout with a session carries it
    // (test/web/ui-frame.test.ts).
    const [cookie, csrfCookie] = ok.headers.getSetCookie().map((c) => c.split(';')[0]!);
    expect(csrfCookie).toMatch(/^bty-csrf=/);
    await fetch(`${base}/ui/logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        cookie: `${cookie}; ${csrfCookie}`,
        'x-csrf-token': csrfCookie!.slice('bty-csrf='.length),
      },
    });
    // A logout without a session is not an operator action: not logged.
    await fetch(`${base}/ui/logout`, { method: 'POST', redirect: 'manual' });
    const events = (await listEvents(database.db, { subjectKind: 'auth', limit: 1000 }))
      .slice(0, -before || undefined)
      .reverse();
    expect(events.map((e) => e.kind)).toEqual([
      'auth.login.failed',
      'auth.login.succeeded',
      'auth.logout',
    ]);
    expect(events.every((e) => e.source_ip === '127.0.0.1' && e.actor === 'operator')).toBe(true);
  });
});
