/**
 * Canonical image sources and their refs.
 *
 * `ref = lower-hex sha256(UTF-8(canonicalSrc(src)))` identifies where an image comes from (not
 * its content). Refs are stored in bindings and export bundles shared with upstream bty, so the
 * canonical form must match upstream's byte for byte, including its quirks (noted inline). That
 * is why the http(s) form is split by hand: WHATWG `URL` rewrites paths, percent-encoding and
 * IPv6 hosts, which would change refs.
 */
import { createHash } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { BtyError } from './errors.ts';
import { formatOrasRef, parseOrasRef, ORAS_SCHEME } from './oras-ref.ts';
import { reprString } from './python-repr.ts';

const FILE_SCHEME = 'file://';
const DEFAULT_PORTS: Readonly<Record<string, number>> = { http: 80, https: 443 };

/** The canonical form of an image source; throws BTY_ERR_SRC_INVALID when it has none. */
export function canonicalSrc(src: string): string {
  if (src === '') throw invalid('empty src');
  const lowered = src.toLowerCase();
  if (lowered.startsWith(FILE_SCHEME)) return canonicalFileSrc(src);
  if (lowered.startsWith('http://') || lowered.startsWith('https://')) return canonicalHttpSrc(src);
  if (lowered.startsWith(ORAS_SCHEME)) return canonicalOrasSrc(src);
  throw invalid(
    `unsupported src scheme: ${reprString(src)} (expected file://, http(s)://, or oras://)`,
  );
}

/** The image ref of a source: lower-hex sha256 of its canonical form. */
export function imageRefForSrc(src: string): string {
  return createHash('sha256').update(canonicalSrc(src), 'utf8').digest('hex');
}

/** Like `imageRefForSrc`, but null for a source that cannot be canonicalised. */
export function tryImageRefForSrc(src: string): string | null {
  try {
    return imageRefForSrc(src);
  } catch (err) {
    if (err instanceof BtyError) return null;
    throw err;
  }
}

/** `file://` paths are image-root relative: `.` and empty segments collapse, `..` is refused. */
function canonicalFileSrc(src: string): string {
  const path = src.slice(FILE_SCHEME.length);
  if (path.includes('\0')) throw invalid(`file:// src contains NUL byte: ${reprString(src)}`);
  const segments = path.split('/');
  if (segments.includes('..')) {
    throw invalid(`file:// src contains '..' segment: ${reprString(src)}`);
  }
  const kept = segments.filter((s) => s !== '' && s !== '.');
  if (kept.length === 0) throw invalid(`file:// src normalises to empty path: ${reprString(src)}`);
  return FILE_SCHEME + kept.join('/');
}

/**
 * Scheme and host lower-cased, default port and userinfo dropped, everything after the authority
 * kept as written. Follows the split rules of Python's `urlsplit`, which upstream uses.
 */
function canonicalHttpSrc(src: string): string {
  // urlsplit silently deletes tabs and line breaks anywhere in the URL.
  const url = src.replace(/[\t\r\n]/g, '');
  const colon = url.indexOf(':');
  const scheme = url.slice(0, colon).toLowerCase();
  const afterScheme = url.slice(colon + 3); // past "://"
  const authorityEnd = firstIndexOf(afterScheme, ['/', '?', '#']);
  const netloc = afterScheme.slice(0, authorityEnd);
  let rest = afterScheme.slice(authorityEnd);
  let fragment = '';
  let query = '';
  const hash = rest.indexOf('#');
  if (hash >= 0) {
    fragment = rest.slice(hash + 1);
    rest = rest.slice(0, hash);
  }
  const question = rest.indexOf('?');
  if (question >= 0) {
    query = rest.slice(question + 1);
    rest = rest.slice(0, question);
  }
  const path = rest;

  checkNetloc(netloc, src);
  const { hostname, port: portText } = splitHostinfo(netloc.slice(netloc.lastIndexOf('@') + 1));
  if (hostname === '') throw invalid(`http(s) src missing host: ${reprString(src)}`);
  const port = parsePort(portText, src);

  // Quirk kept for ref parity: an IPv6 host loses its brackets (`http://::1:8080/x`).
  let authority = hostname.toLowerCase(); // zone ids too: upstream lower-cases the whole host
  if (port !== null && port !== DEFAULT_PORTS[scheme]) authority += `:${port}`;
  // An empty `?` or `#` is dropped, as urlunsplit does.
  return (
    `${scheme}://${authority}${path}` +
    (query === '' ? '' : `?${query}`) +
    (fragment === '' ? '' : `#${fragment}`)
  );
}

/** Rejects what urlsplit rejects in an authority: unbalanced or invalid brackets, NFKC tricks. */
function checkNetloc(netloc: string, src: string): void {
  const open = netloc.includes('[');
  const close = netloc.includes(']');
  if (open !== close) throw invalid(`Invalid IPv6 URL (src: ${reprString(src)})`);
  if (open) {
    const afterOpen = netloc.slice(netloc.indexOf('[') + 1);
    const bracketed = afterOpen.slice(
      0,
      afterOpen.includes(']') ? afterOpen.indexOf(']') : undefined,
    );
    if (bracketed.startsWith('v')) {
      if (!/^v[a-fA-F0-9]+\..+$/s.test(bracketed)) {
        throw invalid(`IPvFuture address is invalid (src: ${reprString(src)})`);
      }
    } else if (!isIPv6(bracketed)) {
      throw invalid(
        `${reprString(bracketed)} does not appear to be an IPv6 address (src: ${reprString(src)})`,
      );
    }
  }
  // A non-ASCII authority must not turn into URL syntax under NFKC (e.g. a full-width "／").
  if (!/^\p{ASCII}*$/u.test(netloc)) {
    const stripped = netloc.replace(/[@:#?]/g, '');
    const normalised = stripped.normalize('NFKC');
    if (normalised !== stripped && /[/?#@:]/.test(normalised)) {
      throw invalid(
        `netloc ${reprString(netloc)} contains invalid characters under NFKC normalization` +
          ` (src: ${reprString(src)})`,
      );
    }
  }
}

function splitHostinfo(hostinfo: string): { hostname: string; port: string } {
  const open = hostinfo.indexOf('[');
  if (open >= 0) {
    const bracketed = hostinfo.slice(open + 1);
    const close = bracketed.indexOf(']');
    const hostname = close >= 0 ? bracketed.slice(0, close) : bracketed;
    const after = close >= 0 ? bracketed.slice(close + 1) : '';
    const colon = after.indexOf(':');
    return { hostname, port: colon >= 0 ? after.slice(colon + 1) : '' };
  }
  const colon = hostinfo.indexOf(':');
  if (colon < 0) return { hostname: hostinfo, port: '' };
  return { hostname: hostinfo.slice(0, colon), port: hostinfo.slice(colon + 1) };
}

function parsePort(text: string, src: string): number | null {
  if (text === '') return null;
  if (!/^[0-9]+$/.test(text)) {
    throw invalid(
      `Port could not be cast to integer value as ${reprString(text)} (src: ${reprString(src)})`,
    );
  }
  const port = Number(text);
  if (port > 65535) throw invalid(`Port out of range 0-65535 (src: ${reprString(src)})`);
  return port;
}

/** Host and repository lower-cased (DNS and OCI names), tag or digest kept: OCI tags are case-sensitive. */
function canonicalOrasSrc(src: string): string {
  const body = src.slice(ORAS_SCHEME.length);
  if (body === '') throw invalid('empty oras src');
  const at = body.lastIndexOf('@');
  // With no `@`, the last `:` separates the tag, so `host:5000/repo` without a tag takes the
  // port colon as the separator and is then rejected by the grammar (as upstream).
  const separator = at >= 0 ? at : body.includes(':') ? body.lastIndexOf(':') : body.length;
  const normalised = ORAS_SCHEME + body.slice(0, separator).toLowerCase() + body.slice(separator);
  try {
    return formatOrasRef(parseOrasRef(normalised));
  } catch (err) {
    if (err instanceof BtyError) throw invalid(`malformed oras src: ${err.message}`);
    throw err;
  }
}

/** Index of the first of `needles` in `text`, or `text.length` when none occurs. */
export function firstIndexOf(text: string, needles: string[]): number {
  let first = text.length;
  for (const needle of needles) {
    const i = text.indexOf(needle);
    if (i >= 0 && i < first) first = i;
  }
  return first;
}

function invalid(message: string): BtyError {
  return new BtyError('BTY_ERR_SRC_INVALID', message);
}
