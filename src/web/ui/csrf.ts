/**
 * Cross-site request forgery protection for the browser UI's forms.
 *
 * Two layers: the session cookie is `SameSite=Strict` (another site's form post arrives without
 * it), and every mutating form carries a token that must equal the browser's `bty-csrf` cookie
 * (a random value set the first time a page is rendered). A page on another origin can neither
 * read that cookie nor the token inside our pages, so it cannot forge the pair. htmx requests
 * send the same token as `X-CSRF-Token` (the layout puts it in `hx-headers`).
 *
 * The login form is exempt: it is what creates a session, and with one operator account a forged
 * login gains the attacker nothing.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { parseCookies } from '../session.ts';

export const CSRF_COOKIE = 'bty-csrf';
export const CSRF_FIELD = '_csrf';
export const CSRF_HEADER = 'x-csrf-token';

const TOKEN = /^[A-Za-z0-9_-]{43}$/;
const issued = new WeakMap<FastifyRequest, string>();

/**
 * This browser's token: the one in its cookie, else a new one set on the reply (once per
 * request, however many forms the page holds).
 */
export function csrfToken(req: FastifyRequest, reply: FastifyReply): string {
  const existing = parseCookies(req.headers.cookie).get(CSRF_COOKIE);
  if (existing && TOKEN.test(existing)) return existing;
  let token = issued.get(req);
  if (token === undefined) {
    token = randomBytes(32).toString('base64url');
    issued.set(req, token);
    reply.header('set-cookie', `${CSRF_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Strict`);
  }
  return token;
}

/** True when the post carries the browser's token, in the form body or the htmx header. */
export function csrfValid(req: FastifyRequest): boolean {
  const header = req.headers[CSRF_HEADER];
  const body = req.body as Record<string, unknown> | null | undefined;
  const field = typeof body === 'object' && body !== null ? body[CSRF_FIELD] : undefined;
  const given = typeof header === 'string' ? header : typeof field === 'string' ? field : '';
  return csrfMatches(req, given);
}

/** True when `given` is this browser's token (equal to its `bty-csrf` cookie). */
export function csrfMatches(req: FastifyRequest, given: string): boolean {
  const cookie = parseCookies(req.headers.cookie).get(CSRF_COOKIE);
  if (!cookie || !TOKEN.test(cookie)) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(cookie);
  return a.length === b.length && timingSafeEqual(a, b);
}
