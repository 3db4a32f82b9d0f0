/**
 * The write end of a flash: takes the decompressed image bytes in order and writes them to a
 * target file descriptor in large positioned writes, skipping runs of all-zero blocks.
 *
 * Skipped ranges must still read back as zeros, and how that is guaranteed depends on the
 * target (the `ZeroStrategy`):
 * - `holes`: a regular file truncated to zero length before writing; skipped ranges are holes.
 * - `zeroout`: a block device whose queue offloads WRITE ZEROES: the range about to be written
 *   is zeroed ahead of the data in one large `blkdiscard --zeroout` (BLKZEROOUT) call, then only
 *   data blocks are written. One call per GiB rather than one per zero run: every call costs a
 *   process and, on many devices, a flush (about 40 ms on a loop device over ext4).
 * - `write`: anything else; the zeros are written like data.
 *
 * Two staging buffers alternate so the next buffer fills (decompression) while the previous
 * one is being written.
 *
 * Given a second handle opened with `O_DIRECT`, data in the staging buffers goes to the target
 * through it: no page-cache copy, and no fresh page-cache memory to fault in, which on a VM
 * that hands freed memory back to its host costs more than the copy (docs/performance.md).
 * The staging buffers are then page-aligned (they live in a `WebAssembly.Memory`, the one
 * page-aligned allocation Node offers). Unaligned pieces — an image's odd tail, chunks handed
 * over in place, explicit zeros — go through the ordinary handle.
 */
import { spawn } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { BtyError } from '../../core/errors.ts';

export type ZeroStrategy = 'holes' | 'zeroout' | 'write';

export interface SparseSinkOptions {
  fh: FileHandle;
  /**
   * The same target opened with O_DIRECT, or null. Aligned data from the staging buffers is
   * written through it; the sink falls back to `fh` for good if the kernel refuses a write.
   */
  direct?: FileHandle | null;
  /** Offset, length and memory alignment that `direct` needs (a power of two, at most 64 KiB). */
  directAlignment?: number;
  /** Device or file path (for blkdiscard and messages). */
  path: string;
  strategy: ZeroStrategy;
  /** Bytes the target can hold; writing beyond fails before any byte lands there. */
  capacity: number | null;
  /** Zero-detection granularity; also the alignment of every skipped range. */
  blockSize?: number;
  stagingSize?: number;
  /** Image length when known: the `zeroout` strategy zeroes exactly [0, length) up front. */
  expectedLength?: number | null;
  /** How far ahead of the data one `zeroout` call reaches (bounded so a cancel is prompt). */
  zeroAheadBytes?: number;
  /** Cancels a running zeroing call. */
  signal?: AbortSignal;
  /**
   * Start a background `fdatasync` after this many bytes written since the last one. The
   * kernel would otherwise hold gigabytes of dirty pages until the final fsync; flushing as we
   * go overlaps the disk writes with decompression. 0 = never.
   */
  flushEveryBytes?: number;
  logicalBlockSize?: number;
  /** Hash the written data ranges in order, for read-back verification. */
  hashWrittenData?: boolean;
  /** Called with the image bytes consumed so far, after each staging buffer is handled. */
  onBytes?: (bytes: number) => void;
  /** Sees the first staging buffer before anything is written; may throw to refuse. */
  inspectFirst?: (head: Buffer) => void;
}

export interface SinkResult {
  /** Image length: every byte received. */
  bytes: number;
  /** Bytes written as data. */
  written: number;
  /** Bytes guaranteed zero without writing them (holes or zeroout). */
  skipped: number;
  /** Bytes of zeros written out explicitly. */
  zerosWritten: number;
  /** Data ranges [start, end) in order, merged when adjacent. */
  ranges: Array<[number, number]>;
  /** Hex sha256 of the data ranges' bytes in order (when hashWrittenData). */
  writtenSha256: string | null;
  /** Data bytes that went through the O_DIRECT handle. */
  writtenDirect: number;
}

const ZERO_CHUNK = Buffer.alloc(4 << 20);
const WASM_PAGE = 64 << 10;

/** The one piece of the WebAssembly API used here (the project's `lib` has no wasm types). */
declare const WebAssembly: {
  Memory: new (descriptor: { initial: number; maximum?: number }) => {
    readonly buffer: ArrayBuffer;
  };
};

/**
 * Two buffers of `size` bytes whose memory starts on a 64 KiB boundary. A WebAssembly memory
 * is mapped by the engine on its own pages; Node's Buffer allocations carry no such promise.
 */
function alignedPair(size: number): [Buffer, Buffer, ArrayBuffer] {
  const pages = Math.ceil(size / WASM_PAGE);
  const memory = new WebAssembly.Memory({ initial: 2 * pages, maximum: 2 * pages });
  const stride = pages * WASM_PAGE;
  return [
    Buffer.from(memory.buffer, 0, size),
    Buffer.from(memory.buffer, stride, size),
    memory.buffer,
  ];
}

export class SparseSink extends Writable {
  private readonly o: Required<Omit<SparseSinkOptions, 'onBytes' | 'inspectFirst' | 'direct'>> &
    Pick<SparseSinkOptions, 'onBytes' | 'inspectFirst'>;
  /** The O_DIRECT handle while it works; null once refused (or never given). */
  private direct: FileHandle | null;
  /** The memory behind both staging buffers when they are aligned for `direct`. */
  private readonly alignedMemory: ArrayBuffer | null = null;
  private staging: Buffer;
  private spare: Buffer;
  private fill = 0;
  /** Image offset of staging[0]. */
  private base = 0;
  private pending: Promise<void> = Promise.resolve();
  /** With `zeroout`: [0, zeroedUpTo) is known to read as zeros (before data lands there). */
  private zeroedUpTo = 0;
  private unflushed = 0;
  private flushing: Promise<void> | null = null;
  private failure: Error | null = null;
  private zeroStart = -1;
  private zeroEnd = -1;
  private readonly hash: Hash | null;
  readonly result: SinkResult = {
    bytes: 0,
    written: 0,
    skipped: 0,
    zerosWritten: 0,
    ranges: [],
    writtenSha256: null,
    writtenDirect: 0,
  };

  constructor(options: SparseSinkOptions) {
    const stagingSize = options.stagingSize ?? 4 << 20;
    super({ highWaterMark: stagingSize });
    this.o = {
      signal: new AbortController().signal,
      blockSize: 64 << 10,
      stagingSize,
      expectedLength: null,
      zeroAheadBytes: 1 << 30,
      flushEveryBytes: 64 << 20,
      logicalBlockSize: 512,
      hashWrittenData: false,
      directAlignment: 4096,
      ...options,
    };
    if (this.o.stagingSize % this.o.blockSize !== 0) {
      throw new Error('stagingSize must be a multiple of blockSize');
    }
    const align = this.o.directAlignment;
    if (align & (align - 1) || align > WASM_PAGE) {
      throw new Error('directAlignment must be a power of two up to 64 KiB');
    }
    this.direct = options.direct ?? null;
    if (this.direct) {
      [this.staging, this.spare, this.alignedMemory] = alignedPair(this.o.stagingSize);
    } else {
      this.staging = Buffer.allocUnsafeSlow(this.o.stagingSize);
      this.spare = Buffer.allocUnsafeSlow(this.o.stagingSize);
    }
    this.hash = this.o.hashWrittenData ? createHash('sha256') : null;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.ingest(chunk).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.finish().then(() => cb(), cb);
  }

  /**
   * Takes a chunk from the stream. Block-aligned runs of a chunk are handed to the writer in
   * place (stream chunks are freshly allocated and never reused by their producer, so holding
   * them is safe); only the unaligned remainder is copied into the staging buffer.
   */
  private async ingest(chunk: Buffer): Promise<void> {
    const bs = this.o.blockSize;
    let off = 0;
    while (off < chunk.length) {
      const rest = chunk.length - off;
      if (this.fill === 0 && rest >= bs) {
        const n = Math.min(rest - (rest % bs), this.o.stagingSize);
        await this.dispatch(chunk.subarray(off, off + n));
        off += n;
        continue;
      }
      const n = Math.min(rest, this.staging.length - this.fill);
      chunk.copy(this.staging, this.fill, off, off + n);
      this.fill += n;
      off += n;
      if (this.fill === this.staging.length) await this.dispatchStaging();
    }
  }

  /**
   * The fast path for a source that can read at positions (a local raw image): reads straight
   * into the sink's own two staging buffers, so no buffer is allocated per chunk.
   * `onChunk` sees every chunk before it is written (hashing, progress).
   */
  async fillFrom(
    read: (buf: Buffer, offset: number, length: number) => Promise<number>,
    onChunk: (chunk: Buffer) => void,
    signal?: AbortSignal,
  ): Promise<SinkResult> {
    for (;;) {
      signal?.throwIfAborted();
      const n = await read(this.staging, this.fill, this.staging.length - this.fill);
      if (n === 0) break;
      onChunk(this.staging.subarray(this.fill, this.fill + n));
      this.fill += n;
      if (this.fill === this.staging.length) await this.dispatchStaging();
    }
    await this.finish();
    return this.result;
  }

  /** Hands the staging buffer to the writer and swaps in the spare. */
  private async dispatchStaging(): Promise<void> {
    const buf = this.staging.subarray(0, this.fill);
    // The spare is the buffer handed over last time: wait until it is written before reuse.
    await this.pending;
    this.throwIfFailed();
    const full = this.staging;
    this.staging = this.spare;
    this.spare = full;
    this.fill = 0;
    await this.dispatch(buf);
  }

  /** Queues `buf` (the next bytes of the image) for writing once the previous one is done. */
  private async dispatch(buf: Buffer): Promise<void> {
    await this.pending;
    this.throwIfFailed();
    const len = buf.length;
    const base = this.base;
    if (len === 0) return;
    if (this.o.capacity !== null && base + len > this.o.capacity) {
      throw new BtyError(
        'BTY_ERR_TARGET_TOO_SMALL',
        `the image is larger than the target ${this.o.path} (${this.o.capacity} bytes): ` +
          `it was still going at byte ${base + len}; nothing past the end was written`,
      );
    }
    if (base === 0) this.o.inspectFirst?.(buf);
    if (this.o.strategy === 'zeroout') await this.zeroAhead(base + len);
    this.base += len;
    this.pending = this.process(buf, len, base).then(
      () => this.o.onBytes?.(base + len),
      (err: unknown) => {
        this.failure = err instanceof Error ? err : new Error(String(err));
      },
    );
  }

  private throwIfFailed(): void {
    if (this.failure !== null) throw this.failure;
  }

  private async finish(): Promise<void> {
    await this.dispatchStaging();
    await this.pending;
    this.throwIfFailed();
    await this.flushZeroRun();
    await this.flushing;
    this.throwIfFailed();
    this.result.bytes = this.base;
    if (this.o.strategy === 'holes') {
      // A trailing zero run is a hole too: set the length without writing it.
      await this.o.fh.truncate(this.base);
    }
    this.result.writtenSha256 = this.hash ? this.hash.digest('hex') : null;
  }

  private isZero(buf: Buffer, start: number, n: number): boolean {
    return buf.subarray(start, start + n).equals(ZERO_CHUNK.subarray(0, n));
  }

  private async process(buf: Buffer, len: number, base: number): Promise<void> {
    const bs = this.o.blockSize;
    let i = 0;
    while (i < len) {
      const n = Math.min(bs, len - i);
      if (this.isZero(buf, i, n)) {
        this.extendZeroRun(base + i, base + i + n);
        i += n;
        continue;
      }
      let j = i + n;
      while (j < len) {
        const m = Math.min(bs, len - j);
        if (this.isZero(buf, j, m)) break;
        j += m;
      }
      await this.flushZeroRun();
      const direct = await this.writeDirect(buf, i, j - i, base + i);
      if (direct < j - i) await this.writeAt(buf, i + direct, j - i - direct, base + i + direct);
      this.hash?.update(buf.subarray(i, j));
      this.addRange(base + i, base + j);
      this.result.written += j - i;
      this.flushInBackground(j - i - direct);
      i = j;
    }
  }

  private extendZeroRun(start: number, end: number): void {
    if (this.zeroEnd === start) this.zeroEnd = end;
    else {
      this.zeroStart = start;
      this.zeroEnd = end;
    }
  }

  private addRange(start: number, end: number): void {
    const last = this.result.ranges[this.result.ranges.length - 1];
    if (last && last[1] === start) last[1] = end;
    else this.result.ranges.push([start, end]);
  }

  /**
   * Writes the aligned head of [offset, offset + length) of `buf` through the O_DIRECT handle
   * when it can, returning how many bytes it wrote (the caller writes the rest buffered).
   */
  private async writeDirect(
    buf: Buffer,
    offset: number,
    length: number,
    position: number,
  ): Promise<number> {
    const direct = this.direct;
    const align = this.o.directAlignment;
    const n = length - (length % align);
    if (
      direct === null ||
      n === 0 ||
      buf.buffer !== this.alignedMemory ||
      (buf.byteOffset + offset) % align !== 0 ||
      position % align !== 0
    ) {
      return 0;
    }
    let done = 0;
    try {
      while (done < n) {
        const { bytesWritten } = await direct.write(buf, offset + done, n - done, position + done);
        // A short direct write ends on a block boundary or not at all; either way the
        // buffered handle takes over from `done`.
        if (bytesWritten === 0 || bytesWritten % align !== 0) {
          done += bytesWritten;
          break;
        }
        done += bytesWritten;
      }
    } catch (err) {
      // Some filesystems open with O_DIRECT yet refuse the writes: use the page cache from
      // here on. Real I/O errors show up again on the buffered write and are reported there.
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL')
        throw asWriteError(err, this.o.path, position + done);
      this.direct = null;
    }
    this.result.writtenDirect += done;
    return done;
  }

  private flushInBackground(bytes: number): void {
    this.unflushed += bytes;
    if (!this.o.flushEveryBytes || this.unflushed < this.o.flushEveryBytes || this.flushing) return;
    this.unflushed = 0;
    this.flushing = this.o.fh.datasync().then(
      () => {
        this.flushing = null;
      },
      (err: unknown) => {
        this.flushing = null;
        this.failure ??= new BtyError(
          'BTY_ERR_WRITE',
          `flushing ${this.o.path} failed: ${(err as Error).message}`,
        );
      },
    );
  }

  private async writeAt(
    buf: Buffer,
    offset: number,
    length: number,
    position: number,
  ): Promise<void> {
    let done = 0;
    try {
      while (done < length) {
        const { bytesWritten } = await this.o.fh.write(
          buf,
          offset + done,
          length - done,
          position + done,
        );
        if (bytesWritten === 0) throw new Error('the device accepted no bytes');
        done += bytesWritten;
      }
    } catch (err) {
      throw asWriteError(err, this.o.path, position + done);
    }
  }

  private async flushZeroRun(): Promise<void> {
    if (this.zeroStart < 0) return;
    const start = this.zeroStart;
    const end = this.zeroEnd;
    this.zeroStart = this.zeroEnd = -1;
    // Holes in a fresh file, or a range zeroed ahead: nothing to write.
    const covered =
      this.o.strategy === 'holes' ? end : Math.max(start, Math.min(end, this.zeroedUpTo));
    this.result.skipped += covered - start;
    for (let pos = covered; pos < end;) {
      const n = Math.min(end - pos, ZERO_CHUNK.length);
      await this.writeAt(ZERO_CHUNK, 0, n, pos);
      this.result.zerosWritten += n;
      pos += n;
    }
  }

  /**
   * Makes sure [0, end) reads as zeros before data is written there: the whole image at once
   * when its length is known, else a GiB at a time. Never beyond the device; only whole logical
   * blocks (an unaligned tail is written as zeros by flushZeroRun).
   */
  private async zeroAhead(end: number): Promise<void> {
    if (end <= this.zeroedUpTo) return;
    // An unaligned image end was zeroed short and data went past it (the image was longer than
    // its header said): from here on zeros are written, never zeroed over written data.
    if (this.zeroedUpTo < this.base) return;
    const lbs = this.o.logicalBlockSize;
    const known = this.o.expectedLength;
    let limit = Math.max(end, this.zeroedUpTo + this.o.zeroAheadBytes);
    if (known !== null && known >= end) limit = Math.min(limit, known);
    if (this.o.capacity !== null) limit = Math.min(limit, this.o.capacity);
    limit -= limit % lbs;
    if (limit <= this.zeroedUpTo) return;
    await this.zeroout(this.zeroedUpTo, limit - this.zeroedUpTo);
    this.zeroedUpTo = limit;
  }

  /** BLKZEROOUT through util-linux: the kernel offloads it (or writes zeros itself). */
  private zeroout(offset: number, length: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const args = ['--zeroout', '--force', '--offset', String(offset), '--length', String(length)];
      const child = spawn('blkdiscard', [...args, this.o.path], {
        stdio: ['ignore', 'ignore', 'pipe'],
        signal: this.o.signal,
      });
      let stderr = '';
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (d: string) => (stderr += d));
      child.on('error', (err: NodeJS.ErrnoException) =>
        reject(
          err.code === 'ENOENT'
            ? new BtyError(
                'BTY_ERR_TOOL_MISSING',
                'blkdiscard is not installed (Debian package util-linux)',
              )
            : new BtyError('BTY_ERR_WRITE', `zeroing ${this.o.path} failed: ${err.message}`),
        ),
      );
      child.on('close', (code) => {
        if (code === 0) resolve();
        else
          reject(
            new BtyError(
              'BTY_ERR_WRITE',
              `zeroing ${length} bytes at ${offset} on ${this.o.path} failed: ${stderr.trim() || `blkdiscard exited ${code}`}`,
            ),
          );
      });
    });
  }
}

/** A failed write in the operator's words (ENOSPC gets its own code and hint). */
function asWriteError(err: unknown, path: string, position: number): BtyError {
  if (err instanceof BtyError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  return new BtyError(
    code === 'ENOSPC' ? 'BTY_ERR_NO_SPACE' : 'BTY_ERR_WRITE',
    `writing ${path} at byte ${position} failed: ${(err as Error).message}`,
    code === 'ENOSPC'
      ? { hint: 'The filesystem holding the target file is full; free space and flash again.' }
      : {},
  );
}
