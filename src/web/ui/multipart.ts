/**
 * Multipart form posts (file uploads: the catalog import, the Netboot upload). Their CSRF token
 * arrives inside the multipart body, which the handler parses, so uiGuard's check (which reads a
 * parsed form) cannot run first: these routes check the session in preHandler and the token in
 * `multipartForm`, before any file byte is read.
 */
import type { MultipartFile } from '@fastify/multipart';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { WebContext } from '../context.ts';
import type { Sessions } from '../session.ts';
import { CSRF_FIELD, CSRF_HEADER, csrfMatches, csrfValid } from './csrf.ts';
import { seeOther } from './html.ts';

/**
 * preHandler for multipart posts: the session only. uiGuard's CSRF check reads a parsed body,
 * and a multipart body is parsed by the handler; the handler checks the token (multipartForm).
 */
export function sessionOnlyGuard(ctx: WebContext) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!ctx.sessions.authenticate(req, reply)) {
      await seeOther(reply, '/ui/login');
      return;
    }
    signers.set(req, ctx.sessions);
  };
}

/** The session keeper of each request sessionOnlyGuard let through (it checks the tokens). */
const signers = new WeakMap<FastifyRequest, Sessions>();

export type MultipartOutcome<T> =
  /** No valid token came before the file (or at all): nothing was read to disk. */
  | { kind: 'forged' }
  /** The body is not a multipart form, or broke off: `message` says what. */
  | { kind: 'broken'; message: string }
  /** `file`: what `onFile` returned, or null when the form had no file (or an empty one). */
  | { kind: 'ok'; fields: Map<string, string>; file: T | null };

/**
 * Reads a multipart form whose CSRF token (the `_csrf` field, or the htmx header) must be valid
 * before its file: `onFile` sees the file only then, with the fields that came before it. Reading
 * stops after the file (forms put it last), so `onFile` may leave the stream unread to refuse it
 * (then answer with closeAfter). A file input left empty (no file name) is skipped.
 */
export async function multipartForm<T>(
  req: FastifyRequest,
  onFile: (file: MultipartFile, fields: Map<string, string>) => Promise<T>,
): Promise<MultipartOutcome<T>> {
  const sessions = signers.get(req);
  if (sessions === undefined) throw new Error('multipartForm needs sessionOnlyGuard in front');
  const header = req.headers[CSRF_HEADER];
  let trusted = typeof header === 'string' && csrfMatches(sessions, req, header);
  const fields = new Map<string, string>();
  let file: T | null = null;
  if (!req.isMultipart()) {
    // Not a file upload (a hand-made post): the token is then in the parsed form body.
    if (!csrfValid(sessions, req)) return { kind: 'forged' };
    return { kind: 'broken', message: 'it was not sent as a file upload (multipart/form-data)' };
  }
  try {
    for await (const part of req.parts()) {
      if (part.type === 'field') {
        const value = typeof part.value === 'string' ? part.value : '';
        if (part.fieldname === CSRF_FIELD) trusted ||= csrfMatches(sessions, req, value);
        else fields.set(part.fieldname, value);
        continue;
      }
      if (!trusted) return { kind: 'forged' };
      if (!part.filename) {
        part.file.resume();
        continue;
      }
      file = await onFile(part, fields);
      // One file per form; what follows it is not read (onFile may have left the stream).
      break;
    }
  } catch (err) {
    return { kind: 'broken', message: err instanceof Error ? err.message : String(err) };
  }
  return trusted ? { kind: 'ok', fields, file } : { kind: 'forged' };
}

/**
 * The answer when a multipart post is refused before its file was read: the rest of the body is
 * left unread, so the connection closes after the answer instead of draining it.
 */
export function closeAfter(reply: FastifyReply): FastifyReply {
  return reply.header('connection', 'close');
}
