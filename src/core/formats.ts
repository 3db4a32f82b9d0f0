/**
 * Image formats: detection by name (exactly as upstream bty: most specific suffix first,
 * case-insensitive), tarball recognition, the architecture hint, and — our improvement — a
 * magic-byte sniff so a mis-named file is never written raw.
 */

export const IMAGE_FORMATS = ['img.zst', 'img.xz', 'img.gz', 'img.bz2', 'qcow2', 'img'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

/** Suffix → format, in the order they must be tested (a `.img.gz` must never route as `img`). */
const SUFFIXES: ReadonlyArray<readonly [string, ImageFormat]> = [
  ['.img.zst', 'img.zst'],
  ['.img.xz', 'img.xz'],
  ['.img.gz', 'img.gz'],
  ['.img.bz2', 'img.bz2'],
  ['.qcow2', 'qcow2'],
  ['.img', 'img'],
];

export const SUPPORTED_SUFFIXES_TEXT = '.qcow2, .img, .img.zst, .img.xz, .img.gz, .img.bz2';

const TARBALL_SUFFIXES = [
  '.tar.gz',
  '.tar.xz',
  '.tar.bz2',
  '.tar.zst',
  '.tgz',
  '.txz',
  '.tbz2',
  '.tzst',
];

export function isImageFormat(value: string): value is ImageFormat {
  return (IMAGE_FORMATS as readonly string[]).includes(value);
}

/** The format a file name implies, or null. Only the basename counts. */
export function detectFormat(name: string): ImageFormat | null {
  const base = basenameOf(name).toLowerCase();
  for (const [suffix, format] of SUFFIXES) if (base.endsWith(suffix)) return format;
  return null;
}

/** True for tar containers (`.tar.gz`, `.tgz`, …), which bty refuses with "extract first". */
export function isTarballName(name: string): boolean {
  const lower = name.toLowerCase();
  return TARBALL_SUFFIXES.some((s) => lower.endsWith(s));
}

export function basenameOf(pathOrUrlPath: string): string {
  const i = pathOrUrlPath.lastIndexOf('/');
  return i < 0 ? pathOrUrlPath : pathOrUrlPath.slice(i + 1);
}

const ARCH_HINTS: ReadonlyArray<readonly [string, string]> = [
  ['x86_64', 'x86_64'],
  ['x86-64', 'x86_64'],
  ['aarch64', 'arm64'],
  ['amd64', 'x86_64'],
  ['arm64', 'arm64'],
  ['armhf', 'arm'],
  ['armv7l', 'arm'],
  ['armv6l', 'armv6'],
  ['riscv64', 'riscv64'],
  ['ppc64le', 'ppc64le'],
  ['s390x', 's390x'],
  ['i686', 'i386'],
  ['i386', 'i386'],
];

/** Display-only architecture guess from a name; never used to filter or refuse. */
export function detectArch(name: string): string | null {
  const lower = name.toLowerCase();
  for (const [needle, arch] of ARCH_HINTS) if (lower.includes(needle)) return arch;
  return null;
}

/** What the first bytes of a file say it is. `raw` = none of the known containers. */
export type SniffedKind = 'gzip' | 'zstd' | 'xz' | 'bzip2' | 'qcow2' | 'raw';

/** How many leading bytes `sniffMagic` wants to see. */
export const SNIFF_BYTES = 16;

export function sniffMagic(head: Uint8Array): SniffedKind {
  const b = head;
  if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
  if (b.length >= 4 && b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd)
    return 'zstd';
  // zstd skippable frames (0x184D2A50..5F, little-endian) may precede the first real frame.
  if (b.length >= 4 && (b[0]! & 0xf0) === 0x50 && b[1] === 0x2a && b[2] === 0x4d && b[3] === 0x18)
    return 'zstd';
  if (
    b.length >= 6 &&
    b[0] === 0xfd &&
    b[1] === 0x37 &&
    b[2] === 0x7a &&
    b[3] === 0x58 &&
    b[4] === 0x5a &&
    b[5] === 0x00
  )
    return 'xz';
  if (
    b.length >= 4 &&
    b[0] === 0x42 &&
    b[1] === 0x5a &&
    b[2] === 0x68 &&
    b[3]! >= 0x31 &&
    b[3]! <= 0x39
  )
    return 'bzip2';
  if (b.length >= 4 && b[0] === 0x51 && b[1] === 0x46 && b[2] === 0x49 && b[3] === 0xfb)
    return 'qcow2';
  return 'raw';
}

const EXPECTED_KIND: Record<ImageFormat, SniffedKind> = {
  'img.zst': 'zstd',
  'img.xz': 'xz',
  'img.gz': 'gzip',
  'img.bz2': 'bzip2',
  qcow2: 'qcow2',
  img: 'raw',
};

const KIND_FORMAT: Record<SniffedKind, ImageFormat> = {
  zstd: 'img.zst',
  xz: 'img.xz',
  gzip: 'img.gz',
  bzip2: 'img.bz2',
  qcow2: 'qcow2',
  raw: 'img',
};

/**
 * Null when the content agrees with the format, else a sentence for the operator. Empty input
 * is not judged (an empty file fails later with a clearer message).
 */
export function magicMismatch(format: ImageFormat, head: Uint8Array): string | null {
  if (head.length === 0) return null;
  const kind = sniffMagic(head);
  if (kind === EXPECTED_KIND[format]) return null;
  const contentDesc = kind === 'raw' ? 'no known compression header' : `${kind} data`;
  return (
    `the name says ${format} but the content is ${contentDesc}` +
    ` (it looks like ${KIND_FORMAT[kind]}); refusing to write it`
  );
}

/** A tar archive's header has "ustar" at offset 257 (POSIX and GNU tar). */
export function looksLikeTar(firstBlock: Uint8Array): boolean {
  if (firstBlock.length < 262) return false;
  const magic = String.fromCharCode(...firstBlock.subarray(257, 262));
  return magic === 'ustar';
}

export function tarballMessage(display: string): string {
  return (
    `image is a tarball, not a single-file image: ${display}. ` +
    `Extract first (\`tar -xf ${display}\`) and drop the resulting .img / .qcow2 / .img.zst / ` +
    `.img.xz / .img.gz / .img.bz2 onto BTY_IMAGES.`
  );
}

export function unknownFormatMessage(display: string): string {
  return `image format not recognised: ${display} (supported: ${SUPPORTED_SUFFIXES_TEXT})`;
}
