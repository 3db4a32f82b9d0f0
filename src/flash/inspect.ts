/**
 * What an image is before anything is written: its format (from the name, checked against the
 * content), how many bytes will land on the target (virtual size), its architecture hint and
 * the digest a sidecar `.sha256` file publishes.
 */
import { execFile } from 'node:child_process';
import { open } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { BtyError } from '../core/errors.ts';
import {
  detectArch,
  detectFormat,
  isImageFormat,
  isTarballName,
  magicMismatch,
  sniffMagic,
  tarballMessage,
  unknownFormatMessage,
  type ImageFormat,
  type SniffedKind,
} from '../core/formats.ts';
import { readSidecarSha256 } from './images.ts';
import {
  assertPlatformApplies,
  openImageSource,
  type ImageSource,
  type OpenSourceOptions,
} from './sources/index.ts';

const run = promisify(execFile);
const PROBE_TIMEOUT_MS = 60_000;

/** Enough leading bytes for every magic, a zstd frame header and the qcow2 v3 header. */
export const HEAD_BYTES = 128;

/** Where the format came from: --format, the name's suffix, a catalog hint, or the source's default. */
export type FormatOrigin = 'option' | 'name' | 'hint' | 'default';

export interface ResolvedFormat {
  format: ImageFormat;
  from: FormatOrigin;
}

/**
 * Picks the format: an explicit option, else the name's suffix, else a catalog/plan hint.
 * Throws the upstream-worded refusal for tarballs and unknown names.
 */
export function resolveFormat(
  name: string,
  display: string,
  explicit?: string | null,
  hint?: string | null,
  fallback?: ImageFormat | null,
): ResolvedFormat {
  if (explicit) {
    if (!isImageFormat(explicit)) {
      throw new BtyError(
        'BTY_ERR_BAD_INPUT',
        `--format must be one of img, img.gz, img.zst, img.xz, img.bz2, qcow2; got '${explicit}'`,
      );
    }
    return { format: explicit, from: 'option' };
  }
  const byName = detectFormat(name);
  if (byName) return { format: byName, from: 'name' };
  if (isTarballName(name) || isTarballName(display)) {
    throw new BtyError('BTY_ERR_TARBALL', tarballMessage(display));
  }
  if (hint && isImageFormat(hint)) return { format: hint, from: 'hint' };
  if (fallback) return { format: fallback, from: 'default' };
  throw new BtyError('BTY_ERR_FORMAT_UNKNOWN', unknownFormatMessage(display));
}

/**
 * A qcow2 may name other data: a backing file (read wherever it points, a host disk included)
 * or an external data file. `qemu-img convert` would follow either and copy bytes from outside
 * the image onto the target, so an image must be self-contained.
 */
export function qcow2ExternalReference(head: Buffer): string | null {
  if (head.length < 16) return null;
  if (head.readBigUInt64BE(8) !== 0n) return 'it names a backing file';
  const version = head.readUInt32BE(4);
  // Version 3 header: incompatible_features at byte 72; bit 2 = external data file.
  if (version >= 3 && head.length >= 80 && (head.readBigUInt64BE(72) & 4n) !== 0n) {
    return 'it stores its data in an external data file';
  }
  return null;
}

/** Refuses content that contradicts the format: a mis-named file must never be written raw. */
export function assertContentMatches(format: ImageFormat, head: Buffer, display: string): void {
  const external = format === 'qcow2' ? qcow2ExternalReference(head) : null;
  if (external) {
    throw new BtyError(
      'BTY_ERR_BAD_INPUT',
      `${display} is not a self-contained qcow2 image: ${external}, which could copy data from outside the image onto the disk`,
      { hint: 'Flatten it first: qemu-img convert -O qcow2 image.qcow2 flat.qcow2' },
    );
  }
  const why = magicMismatch(format, head);
  if (why) {
    throw new BtyError('BTY_ERR_FORMAT_MISMATCH', `${display}: ${why}`, {
      details: { format, content: sniffMagic(head) },
    });
  }
}

function be64(buf: Buffer, offset: number): number | null {
  if (buf.length < offset + 8) return null;
  const v = buf.readBigUInt64BE(offset);
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : null;
}

/** Frame_Content_Size of the first zstd frame, or null when the header omits it. */
export function zstdFrameContentSize(head: Buffer): number | null {
  if (head.length < 6 || head.readUInt32LE(0) !== 0xfd2fb528) return null;
  const fhd = head[4]!;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const dictFlag = fhd & 3;
  if (fcsFlag === 0 && !singleSegment) return null;
  const pos = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictFlag]!;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
  if (head.length < pos + fcsBytes) return null;
  switch (fcsBytes) {
    case 1:
      return head[pos]!;
    case 2:
      return head.readUInt16LE(pos) + 256;
    case 4:
      return head.readUInt32LE(pos);
    default: {
      const v = head.readBigUInt64LE(pos);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : null;
    }
  }
}

/**
 * gzip stores the uncompressed size modulo 2^32. Deflate expands at most ~1032:1, so ISIZE is
 * exact only when no larger candidate (ISIZE + k·2^32) fits under that bound; otherwise the size
 * is unknown (upstream's "smaller than compressed" test let wrapped sizes through).
 */
export function gzipSizeIfUnambiguous(isize: number, compressedSize: number): number | null {
  const maxUncompressed = compressedSize * 1032 + 1024;
  if (isize + 2 ** 32 <= maxUncompressed) return null;
  if (isize > maxUncompressed) return null;
  return isize;
}

async function qemuImgInfo(path: string): Promise<Record<string, unknown>> {
  try {
    const { stdout } = await run('qemu-img', ['info', '--output=json', resolve(path)], {
      timeout: PROBE_TIMEOUT_MS,
      maxBuffer: 4 << 20,
    });
    return JSON.parse(stdout) as Record<string, unknown>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new BtyError(
        'BTY_ERR_TOOL_MISSING',
        'qemu-img is not installed (Debian package qemu-utils)',
      );
    }
    throw new BtyError('BTY_ERR_TOOL_FAILED', `qemu-img info ${path} failed: ${String(err)}`);
  }
}

/** Exact decompressed size from `zstd -lv` ("Decompressed Size: … (N B)"), summing all frames. */
async function zstdListedSize(path: string): Promise<number | null> {
  try {
    const { stdout } = await run('zstd', ['-lv', '--no-progress', resolve(path)], {
      timeout: PROBE_TIMEOUT_MS,
    });
    const m = /Decompressed Size:.*\((\d+) B\)/.exec(stdout);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Exact uncompressed size from the xz index (`xz --robot --list`, the `totals` line). */
async function xzListedSize(path: string): Promise<number | null> {
  try {
    const { stdout } = await run('xz', ['--robot', '--list', resolve(path)], {
      timeout: PROBE_TIMEOUT_MS,
    });
    const totals = stdout.split('\n').find((l) => l.startsWith('totals\t'));
    const cell = totals?.split('\t')[4];
    return cell && /^\d+$/.test(cell) ? Number(cell) : null;
  } catch {
    return null;
  }
}

async function gzipTrailerSize(path: string, size: number): Promise<number | null> {
  if (size < 18) return null;
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(4);
    await fh.read(buf, 0, 4, size - 4);
    return gzipSizeIfUnambiguous(buf.readUInt32LE(0), size);
  } finally {
    await fh.close();
  }
}

/** Bytes that will land on the target, or null when the format does not say. */
export async function virtualSize(
  source: ImageSource,
  format: ImageFormat,
  head: Buffer,
): Promise<number | null> {
  const local = source.localPath;
  switch (format) {
    case 'img':
      return source.size;
    case 'qcow2':
      return be64(head, 24); // qcow2 header: virtual size, big-endian, at byte 24
    case 'img.zst':
      // The frame header, not `zstd -l`: listing walks the whole file, which costs a full read
      // of the image before the flash even starts. A multi-frame file (pzstd) under-reports
      // here; the write then simply continues past the estimate.
      return zstdFrameContentSize(head);
    case 'img.xz':
      return local ? xzListedSize(local) : null;
    case 'img.gz':
      return local && source.size !== null ? gzipTrailerSize(local, source.size) : null;
    case 'img.bz2':
      return null;
  }
}

const SHA256_RE = /^[0-9a-f]{64}$/;

/** Normalises `sha256:HEX` / `HEX` (any case) to lower hex, or throws BTY_ERR_SHA256_INVALID. */
export function normaliseSha256(value: string, what = '--sha256'): string {
  const v = value
    .trim()
    .toLowerCase()
    .replace(/^sha256:/, '');
  if (!SHA256_RE.test(v)) {
    throw new BtyError(
      'BTY_ERR_SHA256_INVALID',
      `${what} must be 64 hexadecimal characters; got '${value}'`,
    );
  }
  return v;
}

export interface ImageInspection {
  source: string;
  kind: 'file' | 'http' | 'oras';
  name: string;
  format: ImageFormat | null;
  format_from: FormatOrigin | null;
  /** What the leading bytes are, whatever the name says. */
  content: SniffedKind;
  size_bytes: number | null;
  virtual_size_bytes: number | null;
  arch: string | null;
  sha256: string | null;
  /** Why this image would be refused (empty when it can be flashed). */
  problems: Array<{ code: string; message: string }>;
  /** `qemu-img info` for local qcow2 images. */
  qemu_img_info?: Record<string, unknown>;
  /** What an oras:// reference resolved to: layer digest, title, platform, manifest digest. */
  resolved?: Record<string, string | number | null>;
}

export async function inspectImage(
  src: string,
  options: { format?: string; http?: OpenSourceOptions['http']; platform?: string } = {},
): Promise<ImageInspection> {
  assertPlatformApplies(src, options.platform);
  const source = await openImageSource(src, {
    ...(options.http ? { http: options.http } : {}),
    ...(options.platform ? { platform: options.platform } : {}),
  });
  const head = await source.readHead(HEAD_BYTES);
  const result: ImageInspection = {
    source: source.display,
    kind: source.kind,
    name: source.name,
    format: null,
    format_from: null,
    content: sniffMagic(head),
    size_bytes: source.size,
    virtual_size_bytes: null,
    arch: detectArch(source.name),
    sha256: source.digest ?? (source.localPath ? await readSidecarSha256(source.localPath) : null),
    problems: [],
    ...(source.details ? { resolved: source.details } : {}),
  };
  try {
    const { format, from } = resolveFormat(
      source.name,
      source.display,
      options.format,
      null,
      source.fallbackFormat,
    );
    result.format = format;
    result.format_from = from;
    assertContentMatches(format, head, source.display);
    result.virtual_size_bytes = await virtualSize(source, format, head);
    if (format === 'img.zst' && source.localPath) {
      // Inspecting may take its time: the listing sums every frame.
      result.virtual_size_bytes =
        (await zstdListedSize(source.localPath)) ?? result.virtual_size_bytes;
    }
    if (format === 'qcow2' && source.localPath) {
      result.qemu_img_info = await qemuImgInfo(source.localPath);
      const vs = result.qemu_img_info['virtual-size'];
      if (typeof vs === 'number' && Number.isInteger(vs)) result.virtual_size_bytes = vs;
    }
  } catch (err) {
    if (!(err instanceof BtyError)) throw err;
    result.problems.push({ code: err.code, message: err.message });
  }
  return result;
}
