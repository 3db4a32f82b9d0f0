/**
 * What every image source can do. The engine asks a source for its size, its first bytes (to
 * sniff the real format) and one forward stream of the whole object; resumption after a broken
 * connection happens inside the stream, invisible to the decompressor and the hash after it.
 */
import type { ImageFormat } from '../../core/formats.ts';

export interface ImageSource {
  /** The path or URL as the operator gave it (used in messages). */
  readonly display: string;
  readonly kind: 'file' | 'http' | 'oras';
  /** The name whose suffix implies the format (basename of the path or URL path). */
  readonly name: string;
  /** Size of the object in bytes (compressed size for compressed images), null when unknown. */
  readonly size: number | null;
  /** A local file path when the bytes are on this machine (qemu-img can read it in place). */
  readonly localPath: string | null;
  /** Up to `n` leading bytes, without consuming the stream. */
  readHead(n: number): Promise<Buffer>;
  /** The whole object from byte 0, resumed transparently where the source can. */
  stream(signal: AbortSignal): AsyncIterable<Buffer>;
  /** How many times the stream was resumed after an interruption. */
  readonly resumes: number;
  /**
   * The sha256 (lower hex) of the whole object when the source itself vouches for it (an OCI
   * layer digest); the engine then checks it on the wire like a --sha256.
   */
  readonly digest?: string | null;
  /** The format to assume when neither the name, --format nor a catalog hint says. */
  readonly fallbackFormat?: ImageFormat | null;
  /** What the source resolved to, for `inspect` and the plan (registry digest, platform, ...). */
  readonly details?: Record<string, string | number | null>;
}
