/** A local image file. */
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { BtyError } from '../../core/errors.ts';
import type { ImageSource } from './source.ts';

const READ_CHUNK = 4 << 20;
const REUSED_CHUNK = 1 << 20;

export type PositionalRead = (buf: Buffer, offset: number, length: number) => Promise<number>;

export class FileSource implements ImageSource {
  readonly kind = 'file';
  readonly resumes = 0;
  readonly display: string;
  readonly name: string;
  readonly size: number;
  readonly localPath: string;
  /** Device and inode, to refuse writing an image onto itself. */
  readonly identity: { dev: number; ino: number };

  private constructor(display: string, path: string, size: number, dev: number, ino: number) {
    this.display = display;
    this.localPath = path;
    this.name = basename(path);
    this.size = size;
    this.identity = { dev, ino };
  }

  static async open(path: string, display = path): Promise<FileSource> {
    let st;
    try {
      st = await stat(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        throw new BtyError('BTY_ERR_IMAGE_NOT_FOUND', `image not found: ${display}`);
      }
      throw new BtyError(
        'BTY_ERR_IMAGE_NOT_FOUND',
        `cannot read image ${display}: ${code ?? String(err)}`,
      );
    }
    if (st.isDirectory()) {
      throw new BtyError('BTY_ERR_IMAGE_NOT_FOUND', `image is a directory: ${display}`, {
        hint: 'Name an image file inside it.',
      });
    }
    if (!st.isFile()) {
      throw new BtyError('BTY_ERR_IMAGE_NOT_FOUND', `image is not a regular file: ${display}`);
    }
    return new FileSource(display, path, st.size, st.dev, st.ino);
  }

  async readHead(n: number): Promise<Buffer> {
    const fh = await open(this.localPath, 'r');
    try {
      const buf = Buffer.alloc(n);
      const { bytesRead } = await fh.read(buf, 0, n, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  /** Feeds the whole file to a sink that reads at positions into its own buffers. */
  async readInto(
    sink: {
      fillFrom: (
        read: PositionalRead,
        onChunk: (c: Buffer) => void,
        signal?: AbortSignal,
      ) => Promise<unknown>;
    },
    signal: AbortSignal,
    onChunk: (chunk: Buffer) => void,
  ): Promise<void> {
    const fh = await open(this.localPath, 'r');
    let position = 0;
    try {
      await sink.fillFrom(
        async (buf, offset, length) => {
          const { bytesRead } = await fh.read(buf, offset, length, position);
          position += bytesRead;
          return bytesRead;
        },
        onChunk,
        signal,
      );
    } finally {
      await fh.close();
    }
  }

  stream(signal: AbortSignal): AsyncIterable<Buffer> {
    return createReadStream(this.localPath, { highWaterMark: READ_CHUNK, signal });
  }

  /**
   * The whole file in chunks that all share one buffer: a chunk is valid only until the next
   * one is asked for. For a consumer that is done with each chunk before it pulls the next (the
   * in-place decoder), this reads a compressed image without allocating per chunk.
   */
  async *reusedChunks(signal: AbortSignal, chunkSize = REUSED_CHUNK): AsyncGenerator<Buffer> {
    const fh = await open(this.localPath, 'r');
    try {
      const buf = Buffer.allocUnsafeSlow(chunkSize);
      for (;;) {
        signal.throwIfAborted();
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) return;
        yield buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close();
    }
  }
}
