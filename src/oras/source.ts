/**
 * An `oras://` reference as an image source: resolved once to a layer digest, then downloaded
 * by the engine's HTTP source (resume with Range, redirects to a CDN with the Authorization
 * header dropped, a new token when the old one expires). The layer digest is the expected
 * sha256 of the bytes, checked on the wire.
 */
import type { ImageFormat } from '../core/formats.ts';
import { HttpSource, type HttpSourceOptions } from '../flash/sources/http.ts';
import type { ImageSource } from '../flash/sources/source.ts';
import { resolveOras, type ResolvedArtifact, type ResolveOptions } from './resolve.ts';

export class OrasSource implements ImageSource {
  readonly kind = 'oras';
  readonly localPath = null;
  readonly display: string;
  /** The layer title: its suffix names the format. Empty when the layer has none. */
  readonly name: string;
  readonly digest: string;
  /** Upstream's convention for an untitled layer: gzip. A titled one says what it is. */
  readonly fallbackFormat: ImageFormat | null;
  readonly details: Record<string, string | number | null>;
  readonly resolved: ResolvedArtifact;
  private readonly blob: HttpSource;

  private constructor(resolved: ResolvedArtifact, blob: HttpSource) {
    this.resolved = resolved;
    this.blob = blob;
    this.display = resolved.ref;
    this.name = resolved.title ?? '';
    this.fallbackFormat = resolved.title === null ? 'img.gz' : null;
    this.digest = resolved.digest.slice('sha256:'.length);
    this.details = {
      digest: resolved.digest,
      size: resolved.size,
      title: resolved.title,
      media_type: resolved.mediaType,
      manifest_digest: resolved.manifestDigest,
      platform: resolved.platform,
      blob_url: resolved.blobUrl,
    };
  }

  static async open(
    src: string,
    options: { http?: HttpSourceOptions; platform?: string; resolve?: ResolveOptions } = {},
  ): Promise<OrasSource> {
    const resolved = await resolveOras(src, {
      ...options.resolve,
      ...(options.platform ? { platform: options.platform } : {}),
      ...(options.http?.signal ? { signal: options.http.signal } : {}),
    });
    const client = resolved.client;
    const blob = await HttpSource.probe(resolved.blobUrl, {
      ...options.http,
      headers: await client.credentials(),
      refreshHeaders: () => client.refreshCredentials(),
      digestKnown: true,
      contentAddressed: true,
      expectedSize: resolved.size,
      refuseDowngrade: client.base.startsWith('https:'),
    });
    return new OrasSource(resolved, blob);
  }

  get size(): number | null {
    return this.blob.size ?? this.resolved.size;
  }

  get resumes(): number {
    return this.blob.resumes;
  }

  readHead(n: number): Promise<Buffer> {
    return this.blob.readHead(n);
  }

  stream(signal: AbortSignal): AsyncIterable<Buffer> {
    return this.blob.stream(signal);
  }
}
