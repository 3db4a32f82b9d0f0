/**
 * Cross-site request forgery protection for the browser UI's forms.
 *
 * Two layers: the session cookie is `SameSite=Strict` (another site's form post arrives without
 * it), and every mutating form carries a token that must equal the browser's `bty-csrf` cookie.
 * htmx requests send the same token as `X-CSRF-Token` (the layout puts it in `hx-headers`).
 *
 * The token is `<nonce>.<HMAC(server secret, nonce)>`, handed out only to a logged-in browser
 * (and renewed at each login). Cookies are not isolated by port or by sibling host, so another
 * service on the same machine could plant a `bty-csrf` cookie of its choosing; an unsigned
 * double-submit token would then be forgeable. A planted token now has to be one this server
 * signed, and the server signs only for someone who knows the admin password.
 *
 * The login form is exempt: it is what creates a session, and with one operator account a
 * forged login gains the attacker nothing.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { parseCookies, type Sessions } from '../session.ts';

export const CSRF_COOKIE = 'bty-csrf';
export const CSRF_FIELD = '_csrf';
export const CSRF_HEADER = 'x-csrf-token';

const TOKEN = /^([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;
const issued = new WeakMap<FastifyRequest, string>();

/** The cookie's token when it carries this server's signature, else null. */
function signedCookie(sessions: Sessions, req: FastifyRequest): string | null {
  const cookie = parseCookies(req.headers.cookie).get(CSRF_COOKIE);
  const m = cookie ? TOKEN.exec(cookie) : null;
  if (!m) return null;
  const expected = Buffer.from(sessions.sign('csrf', m[1]!));
  const given = Buffer.from(m[2]!);
  return given.length === expected.length && timingSafeEqual(given, expected) ? cookie! : null;
}

/** A new signed token, set on the reply (once per request). Call only for a logged-in browser. */
export function issueCsrfToken(
  sessions: Sessions,
  req: FastifyRequest,
  reply: FastifyReply,
): string {
  const nonce = randomBytes(16).toString('base64url');
  const token = `${nonce}.${sessions.sign('csrf', nonce)}`;
  issued.set(req, token);
  reply.header('set-cookie', `${CSRF_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Strict`);
  return token;
}

/**
 * This browser's token: the signed one in its cookie, else a new one. Only for requests that
 * already passed the session check.
 */
export function csrfToken(sessions: Sessions, req: FastifyRequest, reply: FastifyReply): string {
  return issued.get(req) ?? signedCookie(sessions, req) ?? issueCsrfToken(sessions, req, reply);
}

/** True when the post carries the browser's token, in the form body or the htmx header. */
export function csrfValid(sessions: Sessions, req: FastifyRequest): boolean {
  const header = req.headers[CSRF_HEADER];
  const body = req.body as Record<string, unknown> | null | undefined;
  const field = typeof body === 'object' && body !== null ? body[CSRF_FIELD] : undefined;
  const given = typeof header === 'string' ? header : typeof field === 'string' ? field : '';
  return csrfMatches(sessions, req, given);
}

/** True when `given` equals this browser's cookie and the cookie carries our signature. */
export function csrfMatches(sessions: Sessions, req: FastifyRequest, given: string): boolean {
  const cookie = signedCookie(sessions, req);
  if (cookie === null) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(cookie);
  return a.length === b.length && timingSafeEqual(a, b);
}
