/**
 * The `oras://` reference grammar (OCI artifacts addressed as `oras://<host>/<owner>/<repo>:<tag>`
 * or `…@sha256:<hex>`), exactly as upstream bty accepts it. Pure: no I/O, so both the catalog's
 * canonicaliser and the registry client build on it.
 */
import { BtyError } from './errors.ts';
import { reprString } from './python-repr.ts';

export const ORAS_SCHEME = 'oras://';

export interface OrasRef {
  /** `ghcr.io` or `registry.example.com:5000` (the port belongs to the host). */
  host: string;
  /** `owner/repo[/more]`: lower-case, at least one `/`. */
  repository: string;
  /** Exactly one of `tag` and `digest` is set. */
  tag: string | null;
  /** `sha256:<64 lower-hex>`. */
  digest: string | null;
}

// The trailing `\n?` mirrors Python's `$`, which also matches just before a final newline: upstream
// accepts `…:tag\n` and drops the newline, so canonical forms (and refs) must do the same.
const REF_PATTERN =
  /^(?<host>[a-zA-Z0-9][a-zA-Z0-9.-]*(?::[0-9]+)?)\/(?<repo>[a-z0-9][a-z0-9/_.-]*)(?:@(?<digest>sha256:[0-9a-f]{64})|:(?<tag>[A-Za-z0-9._-]+))\n?$/;

const EXPECTED =
  'expected oras://<host>/<owner>/<repo>:<tag> or oras://<host>/<owner>/<repo>@sha256:<hex>';

/** Parses an `oras://` reference; throws BTY_ERR_SRC_INVALID with upstream's wording. */
export function parseOrasRef(ref: string): OrasRef {
  if (!ref.startsWith(ORAS_SCHEME)) {
    throw invalid(`not an oras:// reference: ${reprString(ref)}`);
  }
  const body = ref.slice(ORAS_SCHEME.length);
  if (body === '') throw invalid(`empty oras:// reference: ${reprString(ref)}`);
  const groups = REF_PATTERN.exec(body)?.groups;
  if (!groups) throw invalid(`malformed oras:// reference ${reprString(ref)}: ${EXPECTED}`);
  const repository = groups.repo ?? '';
  if (!repository.includes('/')) {
    throw invalid(
      `oras:// reference must include <host>/<owner>/<repo>: ${reprString(ref)} ` +
        `(got bare repo ${reprString(repository)} after host)`,
    );
  }
  return {
    host: groups.host ?? '',
    repository,
    tag: groups.tag ?? null,
    digest: groups.digest ?? null,
  };
}

/** `oras://<host>/<repo>@<digest>` when pinned, else `oras://<host>/<repo>:<tag>`. */
export function formatOrasRef(r: OrasRef): string {
  const locator = r.digest !== null ? `@${r.digest}` : `:${r.tag ?? ''}`;
  return `${ORAS_SCHEME}${r.host}/${r.repository}${locator}`;
}

export function isOrasUrl(url: string): boolean {
  return url.startsWith(ORAS_SCHEME);
}

function invalid(message: string): BtyError {
  return new BtyError('BTY_ERR_SRC_INVALID', message, {
    hint: 'Write it as oras://<host>/<owner>/<repo>:<tag> or oras://<host>/<owner>/<repo>@sha256:<64 hex>.',
  });
}
