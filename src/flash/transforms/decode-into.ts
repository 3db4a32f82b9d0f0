/**
 * gzip and zstd decoded straight into a caller's buffer.
 *
 * A zlib stream allocates a fresh output buffer for every chunk it emits: for a 2 GiB image
 * that is 2 GiB of new memory, page-faulted in and garbage-collected again, and it costs more
 * than the decompression itself (zstd: about 0.2 s of decoding and 0.3-0.4 s of allocation for
 * the benchmark image). The sparse sink already owns two staging buffers, so the decoder writes
 * into those instead and nothing is allocated per chunk.
 *
 * Node has no public "decompress into this buffer" call. Its own synchronous zlib functions do
 * it through the stream's native handle (`_handle.writeSync` with `_writeState`), and that is
 * what this module uses — behind a shape check: when a Node release changes those internals,
 * `decodeIntoSupported()` is false and the engine falls back to the stream pipeline (slower,
 * same result). A test pins the fast path on the project's Node so a change there is noticed.
 * See docs/decisions.md (decision 14).
 */
import zlib from 'node:zlib';

/** The native zlib handle as Node's own sync functions drive it (not a public API). */
interface ZlibHandle {
  writeSync(
    flush: number,
    input: Buffer,
    inOff: number,
    inLen: number,
    out: Buffer,
    outOff: number,
    outLen: number,
  ): void;
  onerror: (message: string, errno: number, code?: string) => void;
}

interface ZlibInternals {
  _handle?: unknown;
  /** [avail_out, avail_in] after the last writeSync. */
  _writeState?: unknown;
}

export type DecodeFormat = 'img.gz' | 'img.zst';

/** Accept `zstd --long` images (128 MiB window); larger ones are refused, not allocated. */
export const ZSTD_WINDOW_LOG_MAX = 27;

interface Flags {
  run: number;
  finish: number;
}

function makeStream(format: DecodeFormat): zlib.Gunzip | zlib.ZstdDecompress {
  return format === 'img.gz'
    ? zlib.createGunzip()
    : zlib.createZstdDecompress({
        params: { [zlib.constants.ZSTD_d_windowLogMax]: ZSTD_WINDOW_LOG_MAX },
      });
}

function flagsFor(format: DecodeFormat): Flags {
  return format === 'img.gz'
    ? { run: zlib.constants.Z_NO_FLUSH, finish: zlib.constants.Z_FINISH }
    : { run: zlib.constants.ZSTD_e_continue, finish: zlib.constants.ZSTD_e_end };
}

function internalsOf(stream: object): { handle: ZlibHandle; state: Uint32Array } | null {
  const { _handle: handle, _writeState: state } = stream as ZlibInternals;
  if (
    typeof handle !== 'object' ||
    handle === null ||
    typeof (handle as Partial<ZlibHandle>).writeSync !== 'function' ||
    !(state instanceof Uint32Array) ||
    state.length < 2
  ) {
    return null;
  }
  return { handle: handle as ZlibHandle, state };
}

let supported: boolean | null = null;

/** Whether this Node exposes the zlib internals the in-place decoder needs. */
export function decodeIntoSupported(): boolean {
  if (supported === null) {
    const probe = zlib.createGunzip();
    supported = internalsOf(probe) !== null && typeof zlib.createZstdDecompress === 'function';
    probe.close();
  }
  return supported;
}

/** A zlib-shaped error (code, errno) so explainDecompressError treats both paths alike. */
function zlibError(message: string, errno: number, code: string | undefined): Error {
  return Object.assign(new Error(message), { errno, code: code ?? `Z_ERRNO_${errno}` });
}

/**
 * Decodes `input` (compressed chunks in order) on demand into caller buffers. `read` fills
 * `[offset, offset + length)` completely unless the compressed data ends first, and returns
 * the number of bytes produced (0 once everything has been returned). Corrupt or truncated
 * data throws an error shaped like a zlib stream's. `close()` ends the input iterator and frees
 * the native decoder; call it whether or not decoding finished.
 */
export class DecodeInto {
  private readonly stream: zlib.Gunzip | zlib.ZstdDecompress;
  private readonly handle: ZlibHandle;
  private readonly state: Uint32Array;
  private readonly flags: Flags;
  private readonly input: AsyncIterator<Buffer>;
  private chunk: Buffer = Buffer.alloc(0);
  private inOff = 0;
  private inLen = 0;
  private inputDone = false;
  private finished = false;
  private failure: Error | null = null;

  constructor(format: DecodeFormat, input: AsyncIterable<Buffer>) {
    this.stream = makeStream(format);
    const internals = internalsOf(this.stream);
    if (!internals) {
      this.stream.close();
      throw new Error('this Node does not expose the zlib internals DecodeInto needs');
    }
    this.handle = internals.handle;
    this.state = internals.state;
    this.handle.onerror = (message, errno, code) => {
      this.failure = zlibError(message, errno, code);
    };
    this.flags = flagsFor(format);
    this.input = input[Symbol.asyncIterator]();
  }

  read = async (buf: Buffer, offset: number, length: number): Promise<number> => {
    let produced = 0;
    while (produced < length && !this.finished) {
      if (this.inLen === 0 && !this.inputDone) {
        const next = await this.input.next();
        if (next.done) this.inputDone = true;
        else {
          this.chunk = next.value;
          this.inOff = 0;
          this.inLen = next.value.length;
          continue;
        }
      }
      const room = length - produced;
      this.handle.writeSync(
        this.inputDone ? this.flags.finish : this.flags.run,
        this.chunk,
        this.inOff,
        this.inLen,
        buf,
        offset + produced,
        room,
      );
      if (this.failure) throw this.failure;
      const [availOut = 0, availIn = 0] = this.state;
      const consumed = this.inLen - availIn;
      produced += room - availOut;
      this.inOff += consumed;
      this.inLen = availIn;
      if (availOut > 0 && availIn === 0 && this.inputDone) this.finished = true;
      else if (availOut === room && availIn > 0 && consumed === 0) {
        // Room and input, yet nothing moved: the compressed stream has ended and what follows
        // is not another member (a zlib stream ignores such trailing bytes too). The rest is
        // still read, so a digest over the source covers every byte.
        this.finished = true;
        await this.drain();
      }
    }
    return produced;
  };

  private async drain(): Promise<void> {
    this.inLen = 0;
    while (!this.inputDone) {
      const next = await this.input.next();
      if (next.done) this.inputDone = true;
    }
  }

  async close(): Promise<void> {
    this.stream.close();
    if (!this.inputDone) await this.input.return?.();
  }
}
