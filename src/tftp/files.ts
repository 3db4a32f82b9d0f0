/**
 * What the server reads: request names resolved inside the root (the jail), and the bytes of a
 * file as a BlockSource. Boot storms fetch the same few files, so small and medium files are kept
 * in memory (keyed by real path, size and mtime, within a byte budget) and every transfer of them
 * sends subarrays of one shared buffer; larger files are read in chunks per transfer.
 */
import { realpath, readFile, stat, type FileHandle } from 'node:fs/promises';
import { sep } from 'node:path';
import { ERR, TftpProtocolError, toNetascii, type TransferMode } from './packet.ts';

/**
 * Maps a requested name to a real path inside `rootReal` (itself a realpath). A leading '/' is
 * relative to the root (PXE firmware asks for "/undionly.kpxe"); '..' segments, NUL, symlinks
 * that resolve outside the root, and anything but a regular file are refused.
 */
export async function resolveInRoot(
  rootReal: string,
  requested: string,
): Promise<{ path: string; size: number; mtimeMs: number }> {
  if (requested.includes('\0')) throw accessViolation('file name contains NUL');
  const segments = requested.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) throw accessViolation('".." is not allowed in file names');
  if (segments.length === 0) throw accessViolation('the root folder is not a file');
  const joined = rootReal + sep + segments.join(sep);
  let real: string;
  try {
    real = await realpath(joined);
  } catch (err) {
    throw fsError(err, requested);
  }
  const prefix = rootReal.endsWith(sep) ? rootReal : rootReal + sep;
  if (!real.startsWith(prefix)) throw accessViolation(`${requested} resolves outside the root`);
  let info;
  try {
    info = await stat(real);
  } catch (err) {
    throw fsError(err, requested);
  }
  if (!info.isFile()) {
    throw accessViolation(
      `${requested} is ${info.isDirectory() ? 'a directory' : 'not a regular file'}`,
    );
  }
  return { path: real, size: info.size, mtimeMs: info.mtimeMs };
}

function accessViolation(message: string): TftpProtocolError {
  return new TftpProtocolError(ERR.accessViolation, `access violation: ${message}`);
}

function fsError(err: unknown, requested: string): TftpProtocolError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new TftpProtocolError(ERR.fileNotFound, `file not found: ${requested}`);
  }
  if (code === 'EACCES' || code === 'EPERM' || code === 'ELOOP') {
    return accessViolation(`${requested} cannot be read (${code})`);
  }
  return new TftpProtocolError(ERR.notDefined, `${requested}: ${(err as Error).message}`);
}

/**
 * The bytes one transfer sends. `ensure` makes [offset, offset+length) available (a promise only
 * when it must read); `view` then returns them, shorter at the end of the data. Offsets never go
 * back before the last `ensure`d offset: a transfer only rewinds inside its unacknowledged window.
 */
export interface BlockSource {
  /** Bytes the transfer sends, when known before sending (netascii of a large file is not). */
  readonly size: number | undefined;
  ensure(offset: number, length: number): Promise<void> | undefined;
  view(offset: number, length: number): Buffer;
  close(): void;
}

export class MemorySource implements BlockSource {
  readonly size: number;
  private readonly bytes: Buffer;
  /** `bytes` may live on a SharedArrayBuffer (a cache entry another thread loaded). */
  constructor(bytes: Uint8Array) {
    this.bytes = Buffer.isBuffer(bytes)
      ? bytes
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.size = bytes.length;
  }
  ensure(): undefined {
    return undefined;
  }
  view(offset: number, length: number): Buffer {
    return this.bytes.subarray(offset, offset + length);
  }
  close(): void {}
}

const CHUNK_BYTES = 1 << 20;

/** A large file read in chunks, converted to netascii on the way when asked. */
export class ChunkedSource implements BlockSource {
  readonly size: number | undefined;
  private readonly handle: FileHandle;
  private readonly netascii: boolean;
  private buffered: Buffer = Buffer.alloc(0);
  private bufferedStart = 0;
  private filePosition = 0;
  private eof = false;
  private closed = false;

  constructor(handle: FileHandle, fileSize: number, mode: TransferMode) {
    this.handle = handle;
    this.netascii = mode === 'netascii';
    this.size = this.netascii ? undefined : fileSize;
  }

  ensure(offset: number, length: number): Promise<void> | undefined {
    if (offset < this.bufferedStart) {
      throw new Error(`internal: chunked source rewound to ${offset} < ${this.bufferedStart}`);
    }
    if (this.eof || offset + length <= this.bufferedStart + this.buffered.length) return undefined;
    return this.fill(offset, length);
  }

  private async fill(offset: number, length: number): Promise<void> {
    while (!this.eof && offset + length > this.bufferedStart + this.buffered.length) {
      const chunk = Buffer.allocUnsafe(Math.max(CHUNK_BYTES, length));
      const { bytesRead } = await this.handle.read(chunk, 0, chunk.length, this.filePosition);
      if (this.closed) return;
      this.filePosition += bytesRead;
      if (bytesRead < chunk.length) this.eof = true;
      let fresh: Buffer = chunk.subarray(0, bytesRead);
      if (this.netascii) fresh = toNetascii(fresh);
      const keepFrom = Math.min(offset - this.bufferedStart, this.buffered.length);
      this.buffered = Buffer.concat([this.buffered.subarray(keepFrom), fresh]);
      this.bufferedStart += keepFrom;
    }
  }

  view(offset: number, length: number): Buffer {
    const start = offset - this.bufferedStart;
    return this.buffered.subarray(start, start + length);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handle.close().catch(() => {});
  }
}

interface CacheEntry {
  bytes: Uint8Array;
  key: string;
}

/**
 * Where a transfer's bytes come from: a cached file's contents (on a SharedArrayBuffer when the
 * cache is shared with worker threads, so every thread sends from the same memory), or a file too
 * large to cache, read in chunks by the thread that sends it. Plain data: it crosses to workers.
 */
export type CachedSource =
  | { kind: 'memory'; bytes: Uint8Array }
  | { kind: 'file'; path: string; size: number; mode: TransferMode };

/**
 * File contents in memory, least recently used dropped first once `budgetBytes` is exceeded.
 * Files above `maxFileBytes` are never cached: each transfer reads them in chunks.
 */
export class FileCache {
  private readonly entries = new Map<string, CacheEntry>();
  private readonly loading = new Map<string, Promise<Uint8Array>>();
  private usedBytes = 0;
  readonly budgetBytes: number;
  readonly maxFileBytes: number;
  /** Keep contents on SharedArrayBuffers, which worker threads read without a copy. */
  private readonly shared: boolean;

  constructor(budgetBytes: number, options: { shared?: boolean } = {}) {
    this.budgetBytes = budgetBytes;
    this.maxFileBytes = Math.floor(budgetBytes / 4);
    this.shared = options.shared ?? false;
  }

  get bytes(): number {
    return this.usedBytes;
  }

  /**
   * What a transfer of `file` in `mode` sends: the cached contents, or (a file too large to
   * cache) the file to read in chunks.
   */
  async source(
    file: { path: string; size: number; mtimeMs: number },
    mode: TransferMode,
  ): Promise<CachedSource> {
    const netasciiMax = Math.floor(this.maxFileBytes / 2);
    if (file.size > (mode === 'octet' ? this.maxFileBytes : netasciiMax)) {
      return { kind: 'file', path: file.path, size: file.size, mode };
    }
    const key = `${mode}\0${file.size}\0${file.mtimeMs}\0${file.path}`;
    const hit = this.entries.get(key);
    if (hit) {
      // Re-insert: Map order is the recency order.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return { kind: 'memory', bytes: hit.bytes };
    }
    let pending = this.loading.get(key);
    if (!pending) {
      pending = this.load(file, mode, key).finally(() => this.loading.delete(key));
      this.loading.set(key, pending);
    }
    return { kind: 'memory', bytes: await pending };
  }

  private async load(
    file: { path: string; size: number },
    mode: TransferMode,
    key: string,
  ): Promise<Uint8Array> {
    let raw: Buffer;
    try {
      raw = await readFile(file.path);
    } catch (err) {
      throw new TftpProtocolError(ERR.accessViolation, `access violation: ${String(err)}`);
    }
    const converted = mode === 'netascii' ? toNetascii(raw) : raw;
    let bytes: Uint8Array = converted;
    if (this.shared) {
      bytes = new Uint8Array(new SharedArrayBuffer(converted.length));
      bytes.set(converted);
    }
    // A file that changed while read is served as read but not remembered under the old key.
    if (raw.length === file.size) this.remember(key, bytes);
    return bytes;
  }

  private remember(key: string, bytes: Uint8Array): void {
    const path = key.slice(key.lastIndexOf('\0') + 1);
    // Older versions of the same file (other size or mtime) are dead weight.
    for (const [k, entry] of this.entries) {
      if (k.endsWith(`\0${path}`) && k.startsWith(key.slice(0, key.indexOf('\0')))) {
        this.drop(k, entry);
      }
    }
    this.entries.set(key, { bytes, key });
    this.usedBytes += bytes.length;
    for (const [k, entry] of this.entries) {
      if (this.usedBytes <= this.budgetBytes) break;
      this.drop(k, entry);
    }
  }

  private drop(key: string, entry: CacheEntry): void {
    this.entries.delete(key);
    this.usedBytes -= entry.bytes.length;
  }

  clear(): void {
    this.entries.clear();
    this.usedBytes = 0;
  }
}
