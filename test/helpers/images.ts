/**
 * Realistic disk images for tests and benchmarks, deterministic from a seed.
 *
 * A raw image made here looks like a freshly built OS image: a GPT (written by the real `sfdisk`)
 * with an EFI system partition and a Linux partition, incompressible data runs scattered between
 * long zero runs that are left as holes (the file is sparse), a non-zero last MiB, and one zero run
 * that ends at an odd byte offset — the kind of boundary that catches sparse-writer bugs.
 *
 * Layout, from the start of the image:
 *   [0, 1 MiB)             protective MBR + primary GPT (sfdisk), zeros after it
 *   [1 MiB, size - 1 MiB)  data runs and zero runs, `randomFraction` of it random
 *   [size - 1 MiB, size)   random, with sfdisk's backup GPT in its last 33 sectors
 *
 * Usage:
 *   const raw = await makeRawImage(join(dir, 'disk.img'), { sizeBytes: 64 * MiB, seed: 7 });
 *   const xz = await convertImage(raw.path, 'img.xz', join(dir, 'disk.img.xz'));
 *   expect(await sha256File('/dev/loop9', { length: raw.sizeBytes })).toBe(raw.sha256);
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, stat, truncate, writeFile } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';

export interface RawImageOptions {
  /** Multiple of 1 MiB; at least 4 MiB with a partition table, 1 MiB without. */
  sizeBytes: number;
  /** Share of random (incompressible) data, default 0.25; rest zeros. */
  randomFraction?: number;
  /** Default 1. */
  seed?: number;
  /** Default true: GPT with an EFI system partition and a Linux partition, via sfdisk. */
  partitionTable?: boolean;
  /**
   * Typical data/zero run lengths: data runs are drawn between this and 32 times this (default
   * 256 KiB .. 8 MiB, log-uniform so short runs are common and long ones present); zero runs get
   * the space left, split unevenly between them.
   */
  minRunBytes?: number;
}

/** `sha256` is of the file bytes. */
export interface MadeImage {
  path: string;
  sizeBytes: number;
  sha256: string;
}

export type CompressedFormat = 'img.gz' | 'img.zst' | 'img.xz' | 'img.bz2' | 'qcow2';

export interface ConvertOptions {
  /**
   * 'fast' (default) uses the quick levels (`gzip -1`, `xz -0`) so tests stay quick; 'default'
   * uses each tool's default level, as published images usually are (for benchmarks).
   */
  level?: 'fast' | 'default';
}

const KiB = 1024;
const MiB = 1024 * KiB;
const SECTOR = 512;
/** Backup GPT at the end of the disk: 32 sectors of entries and the header in the last one. */
const GPT_BACKUP_BYTES = 33 * SECTOR;
const PAGE = 4 * KiB;
const BUFFER_BYTES = 4 * MiB;
/** Odd and not a multiple of 64 KiB (nor of a sector): where the odd zero run ends, past a page. */
const ODD_BOUNDARY_SHIFT = 10 * PAGE + 1;

const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
const LINUX_TYPE = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

const DEPS_HINT =
  'install the image tools with: scripts/deps-debian.sh qemu-utils zstd xz-utils bzip2 gzip fdisk';

/** xoshiro128** seeded through splitmix32: small, fast, and good enough to defeat compressors. */
class SeededRandom {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = next();
    this.#b = next();
    this.#c = next();
    this.#d = next();
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#b, 5), 7), 9) >>> 0;
    const t = this.#b << 9;
    this.#c ^= this.#a;
    this.#d ^= this.#b;
    this.#b ^= this.#c;
    this.#a ^= this.#d;
    this.#c ^= t;
    this.#d = rotl(this.#d, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  nextFloat(): number {
    return this.nextUint32() / 0x1_0000_0000;
  }

  /** Fills the first `bytes` bytes of `buffer` (whole 32-bit words; the buffer is word-sized). */
  fill(buffer: Buffer, bytes: number): void {
    const words = new Uint32Array(buffer.buffer, buffer.byteOffset, Math.ceil(bytes / 4));
    // Inlined generator: this loop produces every random byte of a multi-GiB image.
    let a = this.#a;
    let b = this.#b;
    let c = this.#c;
    let d = this.#d;
    for (let i = 0; i < words.length; i++) {
      const x = Math.imul(b, 5);
      words[i] = Math.imul((x << 7) | (x >>> 25), 9);
      const t = b << 9;
      c ^= a;
      d ^= b;
      b ^= c;
      a ^= d;
      c ^= t;
      d = (d << 11) | (d >>> 21);
    }
    this.#a = a;
    this.#b = b;
    this.#c = c;
    this.#d = d;
  }

  uuid(): string {
    const hex = Array.from({ length: 4 }, () => this.nextUint32().toString(16).padStart(8, '0'))
      .join('')
      .split('');
    hex[12] = '4'; // version 4
    hex[16] = '89ab'[Number.parseInt(hex[16] ?? '0', 16) & 3] ?? '8'; // RFC 4122 variant
    const s = hex.join('').toUpperCase();
    return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

interface Run {
  start: number;
  length: number;
}

/**
 * Places data runs over [regionStart, regionEnd) so that `fraction` of it is data. Runs and gaps
 * are page-aligned, except one data run moved forward by an odd amount after the longest gap.
 */
function planDataRuns(
  regionStart: number,
  regionEnd: number,
  fraction: number,
  minRunBytes: number,
  random: SeededRandom,
): Run[] {
  const regionBytes = regionEnd - regionStart;
  const dataBytes = Math.floor((fraction * regionBytes) / PAGE) * PAGE;
  if (dataBytes === 0) return [];
  const minRun = Math.max(PAGE, Math.floor(minRunBytes / PAGE) * PAGE);
  const lengths: number[] = [];
  for (let placed = 0; placed < dataBytes;) {
    const logUniform = minRun * Math.exp(random.nextFloat() * Math.log(32));
    const length = Math.min(
      dataBytes - placed,
      Math.max(PAGE, Math.floor(logUniform / PAGE) * PAGE),
    );
    lengths.push(length);
    placed += length;
  }
  // Exponential weights: many modest gaps and a few long ones, like free space on a real disk.
  const weights = Array.from(
    { length: lengths.length + 1 },
    () => -Math.log(1 - random.nextFloat()),
  );
  const weightSum = weights.reduce((sum, w) => sum + w, 0);
  const zeroBytes = regionBytes - dataBytes;
  const gaps = weights.map((w) => Math.floor((zeroBytes * w) / weightSum / PAGE) * PAGE);

  const runs: Run[] = [];
  let position = regionStart;
  lengths.forEach((length, i) => {
    position += gaps[i] ?? 0;
    runs.push({ start: position, length });
    position += length;
  });

  // The longest gap that precedes a run long enough to give up the shift gets the odd end.
  let oddIndex = -1;
  runs.forEach((run, i) => {
    if (run.length <= ODD_BOUNDARY_SHIFT + PAGE) return;
    if (oddIndex === -1 || (gaps[i] ?? 0) > (gaps[oddIndex] ?? 0)) oddIndex = i;
  });
  const oddRun = runs[oddIndex];
  if (oddRun !== undefined) {
    oddRun.start += ODD_BOUNDARY_SHIFT;
    oddRun.length -= ODD_BOUNDARY_SHIFT;
  }
  return runs;
}

/** Writes `length` random bytes at `start`, first and last bytes non-zero so run edges are exact. */
async function writeRandomRun(
  file: Awaited<ReturnType<typeof open>>,
  run: Run,
  random: SeededRandom,
  buffer: Buffer,
): Promise<void> {
  const end = run.start + run.length;
  for (let position = run.start; position < end;) {
    const bytes = Math.min(buffer.length, end - position);
    random.fill(buffer, bytes);
    if (position === run.start) buffer[0] = (buffer[0] ?? 0) | 1;
    if (position + bytes === end) buffer[bytes - 1] = (buffer[bytes - 1] ?? 0) | 1;
    let written = 0;
    while (written < bytes) {
      const { bytesWritten } = await file.write(
        buffer,
        written,
        bytes - written,
        position + written,
      );
      written += bytesWritten;
    }
    position += bytes;
  }
}

function gptScript(sizeBytes: number, random: SeededRandom): string {
  const totalSectors = sizeBytes / SECTOR;
  const firstStart = MiB / SECTOR;
  const espSectors =
    Math.min(256 * MiB, Math.max(MiB, Math.floor(sizeBytes / 8 / MiB) * MiB)) / SECTOR;
  const rootStart = firstStart + espSectors;
  // The last MiB stays outside the partitions: the backup GPT lives at its very end.
  const rootSectors = totalSectors - MiB / SECTOR - rootStart;
  // Explicit GUIDs: sfdisk would otherwise pick random ones and the image would not be reproducible.
  return [
    'label: gpt',
    `label-id: ${random.uuid()}`,
    'unit: sectors',
    '',
    `start=${firstStart}, size=${espSectors}, type=${ESP_TYPE}, uuid=${random.uuid()}, name="EFI System"`,
    `start=${rootStart}, size=${rootSectors}, type=${LINUX_TYPE}, uuid=${random.uuid()}, name="root"`,
    '',
  ].join('\n');
}

/** Creates a sparse raw disk image at `path` (replacing any file there). */
export async function makeRawImage(path: string, options: RawImageOptions): Promise<MadeImage> {
  const { sizeBytes } = options;
  const fraction = options.randomFraction ?? 0.25;
  const seed = options.seed ?? 1;
  const partitionTable = options.partitionTable ?? true;
  const minRunBytes = options.minRunBytes ?? 256 * KiB;
  const minimum = partitionTable ? 4 * MiB : MiB;
  if (!Number.isInteger(sizeBytes) || sizeBytes % MiB !== 0 || sizeBytes < minimum) {
    throw new Error(
      `makeRawImage: sizeBytes must be a multiple of 1 MiB, at least ${minimum}; got ${sizeBytes}`,
    );
  }
  if (!(fraction >= 0 && fraction <= 1)) {
    throw new Error(`makeRawImage: randomFraction must be within 0..1; got ${fraction}`);
  }

  // Separate streams: the layout does not shift when the amount of data drawn changes.
  const layoutRandom = new SeededRandom(seed);
  const dataRandom = new SeededRandom(seed ^ 0x5eed_da7a);
  const lastMiB = sizeBytes - MiB;
  const runs = planDataRuns(Math.min(MiB, lastMiB), lastMiB, fraction, minRunBytes, layoutRandom);
  // The backup GPT (entries, then header in the last sector) is sfdisk's; the rest is ours.
  runs.push({ start: lastMiB, length: MiB - (partitionTable ? GPT_BACKUP_BYTES : 0) });

  // Everything not written stays a hole. sfdisk runs first, while the file is still empty, so
  // its fsync does not have to flush the data.
  await writeFile(path, '');
  await truncate(path, sizeBytes);
  if (partitionTable) {
    await runTool(
      'sfdisk',
      [
        '--quiet',
        '--no-reread',
        '--no-tell-kernel',
        '--wipe',
        'never',
        '--wipe-partitions',
        'never',
        path,
      ],
      { stdin: gptScript(sizeBytes, layoutRandom) },
    );
  }
  const file = await open(path, 'r+');
  try {
    const buffer = Buffer.alloc(BUFFER_BYTES);
    for (const run of runs) await writeRandomRun(file, run, dataRandom, buffer);
  } finally {
    await file.close();
  }
  return { path, sizeBytes, sha256: await sha256File(path) };
}

/** Compresses/converts with the real tools (gzip, zstd, xz, bzip2, qemu-img) into `outPath`. */
export async function convertImage(
  rawPath: string,
  format: CompressedFormat,
  outPath: string,
  options: ConvertOptions = {},
): Promise<MadeImage> {
  const fast = (options.level ?? 'fast') === 'fast';
  if (format === 'qcow2') {
    await runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawPath, outPath]);
  } else {
    const [command, args] = compressorFor(format, fast);
    await runTool(command, [...args, rawPath], { stdoutPath: outPath });
  }
  const { size } = await stat(outPath);
  return { path: outPath, sizeBytes: size, sha256: await sha256File(outPath) };
}

function compressorFor(
  format: Exclude<CompressedFormat, 'qcow2'>,
  fast: boolean,
): [string, string[]] {
  switch (format) {
    case 'img.gz':
      return ['gzip', fast ? ['-c', '-1'] : ['-c']];
    case 'img.zst':
      return ['zstd', ['-q', '-T0', '-c']];
    case 'img.xz':
      return ['xz', fast ? ['-T0', '-c', '-0'] : ['-T0', '-c']];
    case 'img.bz2':
      return ['bzip2', ['-c']];
  }
}

/**
 * SHA-256 of a file or block device; with `length`, of its first `length` bytes only (to compare a
 * disk that is larger than the image written to it). Throws when there are fewer bytes than that.
 */
export async function sha256File(path: string, options: { length?: number } = {}): Promise<string> {
  const hash = createHash('sha256');
  const file = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(BUFFER_BYTES);
    const limit = options.length ?? Infinity;
    let total = 0;
    while (total < limit) {
      const want = Math.min(buffer.length, limit - total);
      const { bytesRead } = await file.read(buffer, 0, want, total);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      total += bytesRead;
    }
    if (options.length !== undefined && total < options.length) {
      throw new Error(
        `sha256File: ${path} has ${total} bytes, fewer than the ${options.length} asked for`,
      );
    }
  } finally {
    await file.close();
  }
  return hash.digest('hex');
}

/** Copies the first `keepBytes` bytes of `src` to `dest` (a truncated download or archive). */
export async function truncateCopy(src: string, dest: string, keepBytes: number): Promise<void> {
  const { size } = await stat(src);
  if (!Number.isInteger(keepBytes) || keepBytes < 0 || keepBytes > size) {
    throw new Error(
      `truncateCopy: keepBytes must be within 0..${size} (size of ${src}); got ${keepBytes}`,
    );
  }
  if (keepBytes === 0) {
    await writeFile(dest, '');
    return;
  }
  await pipeline(createReadStream(src, { start: 0, end: keepBytes - 1 }), createWriteStream(dest));
}

/** Inverts every bit of the byte at `offset` (a corruption that no checksum can miss). */
export async function flipByte(path: string, offset: number): Promise<void> {
  const file = await open(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    const { bytesRead } = await file.read(byte, 0, 1, offset);
    if (bytesRead !== 1) throw new Error(`flipByte: offset ${offset} is past the end of ${path}`);
    byte[0] = (byte[0] ?? 0) ^ 0xff;
    await file.write(byte, 0, 1, offset);
  } finally {
    await file.close();
  }
}

/** Runs a tool to completion; rejects with its stderr when it fails or is not installed. */
function runTool(
  command: string,
  args: string[],
  io: { stdin?: string; stdoutPath?: string } = {},
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const output = io.stdoutPath === undefined ? undefined : createWriteStream(io.stdoutPath);
    const child = spawn(command, args, {
      stdio: [
        io.stdin === undefined ? 'ignore' : 'pipe',
        output === undefined ? 'ignore' : 'pipe',
        'pipe',
      ],
      env: { ...process.env, LC_ALL: 'C' },
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const piped =
      output !== undefined && child.stdout !== null
        ? pipeline(child.stdout, output)
        : Promise.resolve();
    child.stdin?.end(io.stdin);
    child.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        new Error(
          error.code === 'ENOENT'
            ? `${command} is not installed; ${DEPS_HINT}`
            : `${command}: ${error.message}`,
        ),
      );
    });
    child.once('close', (code, signal) => {
      piped.then(
        () => {
          if (code === 0) resolve();
          else {
            const why = signal === null ? `exited with ${code}` : `was killed by ${signal}`;
            reject(new Error(`${command} ${args.join(' ')} ${why}: ${stderr.trim()}`));
          }
        },
        (error: unknown) => reject(error instanceof Error ? error : new Error(String(error))),
      );
    });
  });
}
