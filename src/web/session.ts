/**
 * The operator session: one shared admin password, a signed cookie `bty-token`.
 *
 * The cookie value is `<issued-at seconds>.<base64url HMAC-SHA256(secret, issued-at)>`: it
 * proves a login happened with this server's secret and when. Sliding lifetime: every
 * authenticated request re-issues it (7 days). `SameSite=Strict` keeps other sites from riding
 * it; there is no `Secure` flag because bty-web serves plain HTTP on a LAN.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';

export const SESSION_COOKIE = 'bty-token';
export const SESSION_MAX_AGE_S = 7 * 24 * 3600;
export const DEFAULT_ADMIN_PASSWORD = 'bty-lab';

export interface Sessions {
  /** True when `password` is the admin password (constant-time, byte-wise). */
  checkPassword(password: string): boolean;
  usingDefaultPassword: boolean;
  /** The request's session is valid (and then the reply carries a refreshed cookie). */
  authenticate(req: FastifyRequest, reply: FastifyReply): boolean;
  login(reply: FastifyReply): void;
  logout(reply: FastifyReply): void;
  /** HMAC-SHA256 of `value` under this server's secret, for `purpose` (base64url, 43 chars). */
  sign(purpose: string, value: string): string;
}

export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  return out;
}

export function createSessions(
  secret: string,
  adminPassword: string,
  now: () => Date = () => new Date(),
): Sessions {
  const password = Buffer.from(adminPassword.trim() || DEFAULT_ADMIN_PASSWORD, 'utf8');
  const sign = (issued: number) =>
    createHmac('sha256', secret).update(`bty-session:${issued}`).digest('base64url');
  const cookie = (value: string, maxAge: number) =>
    `${SESSION_COOKIE}=${value}; Path=/; Max-Age=${maxAge}; HttpOnly; SameSite=Strict`;
  const issue = (reply: FastifyReply) => {
    const issued = Math.floor(now().getTime() / 1000);
    reply.header('set-cookie', cookie(`${issued}.${sign(issued)}`, SESSION_MAX_AGE_S));
  };
  return {
    usingDefaultPassword: password.toString('utf8') === DEFAULT_ADMIN_PASSWORD,
    checkPassword(given: string): boolean {
      const g = Buffer.from(given, 'utf8');
      // Equal lengths for timingSafeEqual; a length mismatch still costs one comparison.
      const padded = Buffer.alloc(password.length);
      g.copy(padded, 0, 0, Math.min(g.length, padded.length));
      return timingSafeEqual(padded, password) && g.length === password.length;
    },
    authenticate(req, reply): boolean {
      const value = parseCookies(req.headers.cookie).get(SESSION_COOKIE);
      const m = value ? /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(value) : null;
      if (!m) return false;
      const issued = Number(m[1]);
      const expected = Buffer.from(sign(issued));
      const given = Buffer.from(m[2]!);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return false;
      const age = now().getTime() / 1000 - issued;
      if (age < -300 || age > SESSION_MAX_AGE_S) return false;
      issue(reply);
      return true;
    },
    login: issue,
    sign(purpose, value): string {
      return createHmac('sha256', secret).update(`bty-${purpose}:${value}`).digest('base64url');
    },
    logout(reply): void {
      reply.header('set-cookie', cookie('null', 0) + '; Expires=Thu, 01 Jan 1970 00:00:00 GMT');
    },
  };
}

/**
 * The session secret (upstream-web §4.3): the configured one, else `<state>/session-secret`,
 * else a new random one written there atomically (mode 0640). Rotating the file and
 * restarting ends every session.
 */
export async function resolveSessionSecret(configured: string, stateDir: string): Promise<string> {
  if (configured.trim()) return configured.trim();
  const file = join(stateDir, 'session-secret');
  const existing = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (existing) return existing;
  const secret = randomBytes(32).toString('base64url');
  await mkdir(dirname(file), { recursive: true });
  const tmp = join(stateDir, `.session-secret.${randomBytes(4).toString('hex')}.tmp`);
  await writeFile(tmp, `${secret}\n`, { mode: 0o640 });
  await chmod(tmp, 0o640);
  await rename(tmp, file);
  return secret;
}
