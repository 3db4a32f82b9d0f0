/**
 * The image root: the folder of ready-to-flash images (on the USB stick, its BTY_IMAGES
 * partition mounted at /var/lib/bty/images). Listed exactly as upstream bty lists it.
 */
import { constants } from 'node:fs';
import { lstat, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { detectArch, detectFormat, type ImageFormat } from '../core/formats.ts';

export const DEFAULT_IMAGE_ROOT = '/var/lib/bty/images';

export interface LocalImage {
  name: string;
  path: string;
  format: ImageFormat;
  size_bytes: number;
  /** From a `<name>.sha256` sidecar when it holds a valid digest; never computed. */
  sha256: string | null;
  /** Display-only guess from the name. */
  arch: string | null;
}

/** `BTY_IMAGE_ROOT` when set and non-empty, else /var/lib/bty/images. */
export function imageRoot(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.BTY_IMAGE_ROOT;
  return fromEnv ? fromEnv : DEFAULT_IMAGE_ROOT;
}

/**
 * The images directly in `root`, sorted by name in code-point order. A missing root (or one that
 * is not a directory) is an empty list. Skipped: symlinks (even ones pointing inside the root, so
 * nothing outside it is ever exposed), anything but regular files, `.sha256` sidecars, names of
 * no known format, and files that vanish mid-scan. Hidden files are listed like any other.
 */
export async function listLocalImages(root: string = imageRoot()): Promise<LocalImage[]> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return [];
  }
  names.sort(compareCodePoints);
  const images: LocalImage[] = [];
  for (const name of names) {
    const path = join(root, name);
    let stats;
    try {
      stats = await lstat(path);
    } catch {
      continue; // vanished mid-scan (or unreadable): it is not an image we can offer
    }
    if (stats.isSymbolicLink() || !stats.isFile()) continue;
    if (name.endsWith('.sha256')) continue;
    const format = detectFormat(name);
    if (format === null) continue;
    images.push({
      name,
      path,
      format,
      size_bytes: stats.size,
      sha256: await readSidecarSha256(path),
      arch: detectArch(name),
    });
  }
  return images;
}

/** Sidecars are one `sha256sum` line; anything beyond this is not a sidecar. */
const SIDECAR_READ_LIMIT = 64 * 1024;

/**
 * The digest in `<imagePath>.sha256`: its first whitespace-separated token, lower-cased, if that
 * is 64 hex characters. Missing, unreadable, not UTF-8 or malformed ⇒ null.
 */
export async function readSidecarSha256(imagePath: string): Promise<string | null> {
  let text: string;
  try {
    // Non-blocking, so a FIFO named like a sidecar cannot hang the scan.
    const handle = await open(`${imagePath}.sha256`, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      if (!(await handle.stat()).isFile()) return null;
      const buffer = Buffer.alloc(SIDECAR_READ_LIMIT);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
      text = new TextDecoder('utf-8', { fatal: true }).decode(buffer.subarray(0, bytesRead));
    } finally {
      await handle.close();
    }
  } catch {
    return null;
  }
  const token = (text.trim().split(/\s+/, 1)[0] ?? '').toLowerCase();
  return /^[0-9a-f]{64}$/.test(token) ? token : null;
}

/** Python's string order (by code point); JS's default sort compares UTF-16 units instead. */
function compareCodePoints(a: string, b: string): number {
  const left = [...a];
  const right = [...b];
  const n = Math.min(left.length, right.length);
  for (let i = 0; i < n; i++) {
    const x = left[i]!.codePointAt(0)!;
    const y = right[i]!.codePointAt(0)!;
    if (x !== y) return x - y;
  }
  return left.length - right.length;
}
