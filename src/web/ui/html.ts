/**
 * Pages and fragments as HTML. Components are Preact JSX rendered to a string on the server:
 * every text and attribute value is escaped by the renderer, so data from machines (labels,
 * lshw strings, summaries) can never become markup. Nothing is hydrated in the browser.
 */
import type { FastifyReply } from 'fastify';
import type { VNode } from 'preact';
import { renderToString } from 'preact-render-to-string';

export const HTML_TYPE = 'text/html; charset=utf-8';

/** What every page answer carries: no caching of operator data, no framing, scripts from us. */
const PAGE_HEADERS: Record<string, string> = {
  'cache-control': 'no-store',
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  // Scripts only from /static (no inline script anywhere, so an injected <script> cannot run);
  // inline style attributes are allowed for progress-bar widths.
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; " +
    "frame-ancestors 'none'; base-uri 'none'",
};

/** A whole page: `<!doctype html>` and the rendered tree. */
export function sendPage(reply: FastifyReply, page: VNode, status = 200): FastifyReply {
  return reply
    .code(status)
    .headers(PAGE_HEADERS)
    .type(HTML_TYPE)
    .send(`<!doctype html>${renderToString(page)}`);
}

/** A piece of a page, as htmx swaps it in. */
export function sendFragment(reply: FastifyReply, fragment: VNode, status = 200): FastifyReply {
  return reply.code(status).headers(PAGE_HEADERS).type(HTML_TYPE).send(renderToString(fragment));
}

/** The rendered markup of a fragment (for SSE frames). */
export function htmlOf(fragment: VNode): string {
  return renderToString(fragment);
}

/** 303 See Other: where every form post ends, so a reload never posts twice. */
export function seeOther(reply: FastifyReply, location: string): FastifyReply {
  return reply.code(303).header('location', location).header('cache-control', 'no-store').send();
}
