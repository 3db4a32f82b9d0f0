/**
 * The catalog TOML schema, version 1, validated exactly as upstream bty validates it so a
 * catalog accepted (or refused) by one is accepted (or refused) by the other. Messages say
 * "catalog", never "manifest" (that word belongs to sha256 sidecar files).
 *
 * One deliberate fix: a `size_bytes` that is not an integer is a catalog error here, where
 * upstream crashes with a bare ValueError.
 */
import { parse as parseToml, TomlError } from 'smol-toml';
import { BtyError } from '../core/errors.ts';
import { detectArch, detectFormat } from '../core/formats.ts';
import { pyRepr, pyStr, pyTypeName, reprString } from '../core/python-repr.ts';
import { imageRefForSrc, tryImageRefForSrc } from '../core/refs.ts';

export const CATALOG_SCHEMA_VERSION = 1;

export interface CatalogEntry {
  name: string;
  /** Where the bytes come from: `oras://`, `http://` or `https://` (never `file://`). */
  src: string;
  /** Expected content digest (64 lower-hex), when the publisher pinned one. */
  sha256: string | null;
  /** As given, else detected from `name`; may be a format bty cannot write (warned, not refused). */
  format: string | null;
  size_bytes: number | null;
  description: string | null;
  /** As given, else a display-only guess from `name`. */
  arch: string | null;
  /** sha256 of the canonical src; null only when the src cannot be canonicalised. */
  ref: string | null;
}

export interface Catalog {
  version: 1;
  /** The label the catalog was loaded from (path or URL), used in messages. */
  source: string;
  entries: CatalogEntry[];
}

type RawTable = Record<string, unknown>;

/** Parses and validates catalog TOML; throws BTY_ERR_CATALOG_INVALID naming `source`. */
export function parseCatalog(text: string | Uint8Array, source: string): Catalog {
  const document = parseDocument(text, source);

  // Python equality: a float 1.0 and even `true` compare equal to 1, and upstream accepts them.
  const version = Object.hasOwn(document, 'version') ? document.version : null;
  if (!equalsOne(version)) {
    throw invalid(
      `catalog at ${source}: version=${pyRepr(version)}, ` +
        `this bty understands version=${CATALOG_SCHEMA_VERSION}`,
    );
  }

  const images = Object.hasOwn(document, 'images') ? document.images : [];
  if (!Array.isArray(images)) {
    throw invalid(
      `catalog at ${source}: \`\`images\`\` must be an array of tables, got ${pyTypeName(images)}`,
    );
  }

  const entries: CatalogEntry[] = [];
  const seen = new Set<string>();
  for (const raw of images as unknown[]) {
    if (!isTable(raw)) {
      throw invalid(
        `catalog at ${source}: \`\`images\`\` entry must be a table, got ${pyTypeName(raw)}`,
      );
    }
    const entry = parseEntry(raw);
    if (seen.has(entry.name)) {
      throw invalid(`catalog at ${source}: duplicate image name ${reprString(entry.name)}`);
    }
    // A catalog is published and read elsewhere: a file:// path means nothing on the reader's
    // machine. Local images are found in the image root instead.
    if (entry.src.startsWith('file://')) {
      throw invalid(
        `catalog at ${source}: entry ${reprString(entry.name)} has \`\`file://\`\` src ` +
          `(${reprString(entry.src)}); a catalog carries only remote sources ` +
          `(oras:// / http:// / https://) so every entry means the same to whoever reads it. ` +
          `Local files belong in the image root, not in a catalog.`,
        { hint: 'Publish the image (oras push, or an http(s) server) and use that URL as src.' },
      );
    }
    seen.add(entry.name);
    entries.push(entry);
  }
  return { version: 1, source, entries };
}

function parseDocument(text: string | Uint8Array, source: string): RawTable {
  let decoded: string;
  try {
    decoded =
      typeof text === 'string' ? text : new TextDecoder('utf-8', { fatal: true }).decode(text);
  } catch (err) {
    throw invalid(`catalog at ${source} is not valid TOML: ${describe(err)}`, { cause: err });
  }
  try {
    // Integers as bigint so `1` and `1.0` stay distinguishable, as in Python's tomllib.
    return parseToml(decoded, { integersAsBigInt: true });
  } catch (err) {
    throw invalid(`catalog at ${source} is not valid TOML: ${describeTomlError(err)}`, {
      cause: err,
    });
  }
}

function parseEntry(raw: RawTable): CatalogEntry {
  for (const field of ['name', 'src']) {
    if (!Object.hasOwn(raw, field)) {
      throw invalid(
        `catalog entry missing required field: ${reprString(field)} (entry: ${pyRepr(raw)})`,
      );
    }
  }
  const name = pyStr(raw.name);
  const quotedName = pyRepr(raw.name);
  const src = pyStr(raw.src);

  let sha256: string | null = null;
  if (raw.sha256 !== undefined) {
    sha256 = pyStr(raw.sha256).trim().toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(sha256)) {
      throw invalid(
        `catalog entry ${quotedName}: sha256 must be a 64-char lower-case hex string, ` +
          `got ${reprString(sha256)}`,
      );
    }
  }

  // A supplied ref is trusted only if it is what we compute: a mismatch means the producer
  // canonicalises differently or the entry was edited, and bindings would silently diverge.
  if (raw.ref !== undefined) {
    const supplied = pyStr(raw.ref).trim().toLowerCase();
    let expected: string;
    try {
      expected = imageRefForSrc(src);
    } catch (err) {
      throw invalid(
        `catalog entry ${quotedName}: cannot verify \`\`ref\`\` because \`\`src\`\` is malformed: ` +
          describe(err),
        { cause: err },
      );
    }
    if (supplied !== expected) {
      throw invalid(
        `catalog entry ${quotedName}: \`\`ref\`\` mismatch: supplied ${reprString(supplied)} ` +
          `but image_ref_for_src(src) = ${reprString(expected)}. The ref must equal ` +
          `sha256(canonicalise_src(src)); either the producer's canonicalisation differs from ` +
          `ours or the entry was tampered with.`,
      );
    }
  }

  return {
    name,
    src,
    sha256,
    format: truthy(raw.format) ? pyStr(raw.format) : detectFormat(name),
    size_bytes: raw.size_bytes === undefined ? null : coerceSize(raw.size_bytes, quotedName),
    description: raw.description === undefined ? null : pyStr(raw.description),
    arch: truthy(raw.arch) ? pyStr(raw.arch) : detectArch(name),
    ref: tryImageRefForSrc(src),
  };
}

/**
 * Python's `int(x)` over TOML values: integers as they are, floats truncated, booleans 0/1,
 * decimal strings (with surrounding blanks, a sign and `_` between digits) parsed. Anything else
 * is a catalog error rather than upstream's crash.
 */
function coerceSize(value: unknown, quotedName: string): number {
  let result: number | null = null;
  if (typeof value === 'bigint') result = Number(value);
  else if (typeof value === 'boolean') result = value ? 1 : 0;
  else if (typeof value === 'number' && Number.isFinite(value)) result = Math.trunc(value);
  else if (typeof value === 'string') {
    const text = value.trim();
    if (/^[+-]?[0-9](?:_?[0-9])*$/.test(text)) result = Number(text.replace(/_/g, ''));
  }
  if (result === null || !Number.isSafeInteger(result)) {
    throw invalid(
      `catalog entry ${quotedName}: size_bytes must be an integer, got ${pyRepr(value)}`,
    );
  }
  return result === 0 ? 0 : result; // no -0 from truncating -0.5
}

/** Python truthiness of a TOML value (`x or default`). */
function truthy(value: unknown): boolean {
  if (value === undefined || value === null || value === false || value === '') return false;
  if (value === 0 || value === 0n) return false;
  if (Array.isArray(value)) return value.length > 0;
  if (isTable(value)) return Object.keys(value).length > 0;
  return true;
}

function equalsOne(value: unknown): boolean {
  return value === 1n || value === 1 || value === true;
}

function isTable(value: unknown): value is RawTable {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
  );
}

/** smol-toml appends a code frame; keep its first line and the position, like tomllib. */
function describeTomlError(err: unknown): string {
  if (!(err instanceof TomlError)) return describe(err);
  const first = err.message.split('\n', 1)[0] ?? '';
  return `${first.replace(/^Invalid TOML document: /, '')} (at line ${err.line}, column ${err.column})`;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function invalid(message: string, options: { hint?: string; cause?: unknown } = {}): BtyError {
  return new BtyError('BTY_ERR_CATALOG_INVALID', message, options);
}
