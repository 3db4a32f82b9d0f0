/**
 * Resolves an `oras://` reference to the one blob that holds the disk image.
 *
 * - A tag is looked up as a manifest: an OCI image manifest or a Docker v2 manifest. An OCI
 *   image index or Docker manifest list is followed to the entry for this machine's platform
 *   (or `platform`); upstream refused indexes.
 * - A digest may name a manifest or a blob: the registry is asked for a manifest first, then
 *   for a blob.
 * - The layer is chosen as upstream chooses it: signature, SBOM, attestation, Helm and empty
 *   media types are dropped; titles that look like sidecars (`.sha256`, `.sig`, …) lose to
 *   others; the largest remaining layer wins (the first on a tie).
 * The blob digest is frozen here, so a tag moved during the download cannot change the bytes.
 */
import { createHash } from 'node:crypto';
import { BtyError } from '../core/errors.ts';
import { formatOrasRef, parseOrasRef, type OrasRef } from '../core/oras-ref.ts';
import { RegistryClient, type RegistryClientOptions } from './client.ts';

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

const ACCEPT = [MEDIA.ociManifest, MEDIA.dockerManifest, MEDIA.ociIndex, MEDIA.dockerList].join(
  ', ',
);

/** Layer media types that are never a disk image (upstream's list). */
const NON_IMAGE_MEDIA_TYPES = new Set([
  'application/vnd.cncf.helm.chart.v1.tar+gzip',
  'application/vnd.cncf.helm.chart.provenance.v1.prov',
  'application/vnd.dev.cosign.simplesigning.v1+json',
  'application/vnd.dev.cosign.artifact.sig.v1+json',
  'application/vnd.in-toto+json',
  'application/vnd.dev.cosign.artifact.bundle.v1+json',
  'application/vnd.dsse.envelope.v1+json',
  'application/spdx+json',
  'application/vnd.cyclonedx+json',
  'application/vnd.oci.empty.v1+json',
]);

const SIDECAR_SUFFIXES = [
  '.sha256',
  '.sha512',
  '.sig',
  '.asc',
  '.pem',
  '.cert',
  '.sbom',
  '.att',
  '.json',
];
const TITLE = 'org.opencontainers.image.title';
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export interface ResolveOptions extends RegistryClientOptions {
  /** `os/arch[/variant]` to pick from an index; default this machine (linux/<arch>). */
  platform?: string | null;
}

export interface ResolvedArtifact {
  /** The reference as given, in canonical form. */
  ref: string;
  host: string;
  repository: string;
  /** The layer (blob) digest, `sha256:<hex>`. */
  digest: string;
  size: number | null;
  /** The layer's `org.opencontainers.image.title`, when it has one. */
  title: string | null;
  mediaType: string | null;
  /** The manifest the layer was picked from (null when the digest named the blob itself). */
  manifestDigest: string | null;
  /** `os/arch[/variant]` when the reference led to an index. */
  platform: string | null;
  blobUrl: string;
  /** The client that resolved it: its credentials fetch the blob. */
  client: RegistryClient;
}

interface Descriptor {
  mediaType?: unknown;
  digest?: unknown;
  size?: unknown;
  annotations?: unknown;
  platform?: unknown;
}

/** Go's GOARCH names for Node's `process.arch`. */
const GOARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
};

export function machinePlatform(): string {
  return `linux/${GOARCH[process.arch] ?? process.arch}`;
}

function parsePlatform(text: string): { os: string; architecture: string; variant: string | null } {
  const parts = text.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw new BtyError(
      'BTY_ERR_BAD_INPUT',
      `--platform must be os/arch or os/arch/variant (like linux/arm64); got '${text}'`,
    );
  }
  return { os: parts[0]!, architecture: parts[1]!, variant: parts[2] ?? null };
}

function platformText(p: Record<string, unknown>): string {
  const base = `${String(p.os)}/${String(p.architecture)}`;
  return typeof p.variant === 'string' && p.variant ? `${base}/${p.variant}` : base;
}

function sha256Hex(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

export async function resolveOras(
  src: string,
  options: ResolveOptions = {},
): Promise<ResolvedArtifact> {
  const parsed = parseOrasRef(src);
  // Canonical form: the host is case-insensitive (upstream lower-cases it too).
  const ref: OrasRef = { ...parsed, host: parsed.host.toLowerCase() };
  // A bad --platform is bad input even when the reference turns out not to be an index.
  if (options.platform) parsePlatform(options.platform);
  const client = new RegistryClient(ref.host, ref.repository, options);
  const canonical = formatOrasRef(ref);
  const base = { ref: canonical, host: ref.host, repository: ref.repository, client };
  const reference = ref.digest ?? ref.tag ?? '';

  // A digest may name a blob: registries then answer the manifest request with 404, 400 or
  // even 500 (distribution tries to parse the blob), so that one is not retried.
  const first = await client.request(
    'GET',
    client.url('manifests', reference),
    { accept: ACCEPT },
    { retry: ref.digest === null },
  );
  const notManifest = first.status === 404 || first.status === 400 || first.status >= 500;
  if (notManifest && ref.digest) {
    const blob = await client.request('HEAD', client.url('blobs', ref.digest));
    if (blob.status >= 200 && blob.status < 300) {
      const length = Number(blob.headers['content-length']);
      return {
        ...base,
        digest: ref.digest,
        size: Number.isSafeInteger(length) && length > 0 ? length : null,
        title: null,
        mediaType: null,
        manifestDigest: null,
        platform: null,
        blobUrl: client.url('blobs', ref.digest),
      };
    }
    if (blob.status !== 404) throw statusError(client, ref, blob.status, blob.body, 'blob');
    if (first.status !== 404) throw statusError(client, ref, first.status, first.body, 'manifest');
    throw statusError(client, ref, 404, blob.body, 'blob');
  }
  let manifest = parseManifest(client, ref, first.status, first.body, ref.digest);
  let manifestDigest = ref.digest ?? `sha256:${sha256Hex(first.body)}`;
  let platform: string | null = null;

  if (Array.isArray(manifest.manifests) && !Array.isArray(manifest.layers)) {
    const wanted = options.platform ?? machinePlatform();
    const entry = pickPlatform(ref, manifest.manifests as unknown[], wanted);
    platform = platformText(entry.platform as Record<string, unknown>);
    const digest = String(entry.digest);
    const next = await client.request('GET', client.url('manifests', digest), { accept: ACCEPT });
    manifest = parseManifest(client, ref, next.status, next.body, digest);
    manifestDigest = digest;
    if (Array.isArray(manifest.manifests) && !Array.isArray(manifest.layers)) {
      throw new BtyError(
        'BTY_ERR_ORAS_ARTIFACT',
        `${canonical}: the ${platform} entry of the index is itself an index; bty follows one level`,
      );
    }
  }

  const layer = pickLayer(canonical, manifest);
  const digest = layer.digest as string;
  const size =
    typeof layer.size === 'number' && Number.isSafeInteger(layer.size) && layer.size >= 0
      ? layer.size
      : null;
  const annotations = (layer.annotations ?? {}) as Record<string, unknown>;
  const title = typeof annotations[TITLE] === 'string' ? annotations[TITLE] : null;
  return {
    ...base,
    digest,
    size,
    title,
    mediaType: typeof layer.mediaType === 'string' ? layer.mediaType : null,
    manifestDigest,
    platform,
    blobUrl: client.url('blobs', digest),
  };
}

function registryErrorCodes(body: Buffer): string[] {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: unknown }> };
    return (parsed.errors ?? []).map((e) => String(e.code));
  } catch {
    return [];
  }
}

function statusError(
  client: RegistryClient,
  ref: OrasRef,
  status: number,
  body: Buffer,
  what: 'manifest' | 'blob',
): BtyError {
  const canonical = formatOrasRef(ref);
  const codes = registryErrorCodes(body);
  if (status === 401 || status === 403) {
    return client.denied(`HTTP ${status}${codes.length ? ` (${codes.join(', ')})` : ''}`);
  }
  if (status === 404) {
    if (codes.includes('NAME_UNKNOWN')) {
      return new BtyError(
        'BTY_ERR_ORAS_NOT_FOUND',
        `${canonical}: the registry ${ref.host} has no repository ${ref.repository}`,
      );
    }
    const locator = ref.digest ? `digest ${ref.digest}` : `tag ${ref.tag ?? ''}`;
    return new BtyError(
      'BTY_ERR_ORAS_NOT_FOUND',
      `${canonical}: ${ref.host}/${ref.repository} has no ${what === 'blob' ? 'manifest or blob' : 'manifest'} for ${locator}`,
    );
  }
  return new BtyError(
    'BTY_ERR_ORAS_REGISTRY',
    `oras ${what} fetch failed for ${canonical}: HTTP ${status}${codes.length ? ` (${codes.join(', ')})` : ''}`,
    { details: { status } },
  );
}

function parseManifest(
  client: RegistryClient,
  ref: OrasRef,
  status: number,
  body: Buffer,
  expectedDigest: string | null,
): Record<string, unknown> {
  const canonical = formatOrasRef(ref);
  if (status < 200 || status >= 300) throw statusError(client, ref, status, body, 'manifest');
  if (expectedDigest && `sha256:${sha256Hex(body)}` !== expectedDigest) {
    throw new BtyError(
      'BTY_ERR_INTEGRITY',
      `${canonical}: the manifest the registry sent does not hash to ${expectedDigest}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new BtyError('BTY_ERR_ORAS_REGISTRY', `oras manifest for ${canonical} is not JSON`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new BtyError(
      'BTY_ERR_ORAS_REGISTRY',
      `oras manifest for ${canonical} is not a JSON object`,
    );
  }
  return parsed as Record<string, unknown>;
}

function pickPlatform(ref: OrasRef, entries: unknown[], wanted: string): Descriptor {
  const want = parsePlatform(wanted);
  const usable = entries.filter(
    (e): e is Descriptor & { platform: Record<string, unknown> } =>
      typeof e === 'object' &&
      e !== null &&
      typeof (e as Descriptor).platform === 'object' &&
      (e as Descriptor).platform !== null &&
      typeof (e as Descriptor).digest === 'string' &&
      DIGEST_RE.test((e as Descriptor).digest as string),
  );
  const matching = usable.filter(
    (e) =>
      e.platform.os === want.os &&
      e.platform.architecture === want.architecture &&
      (want.variant === null || e.platform.variant === want.variant),
  );
  const chosen = matching[0];
  if (!chosen) {
    const offered = [...new Set(usable.map((e) => platformText(e.platform)))].sort();
    throw new BtyError(
      'BTY_ERR_ORAS_ARTIFACT',
      `${formatOrasRef(ref)} is a multi-platform index with no entry for ${wanted} ` +
        `(it has: ${offered.length ? offered.join(', ') : 'no platform entries'})`,
      { hint: 'Pass --platform os/arch to pick one of them, or reference a manifest by digest.' },
    );
  }
  return chosen;
}

function pickLayer(canonical: string, manifest: Record<string, unknown>): Descriptor {
  const raw = manifest.layers;
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new BtyError('BTY_ERR_ORAS_ARTIFACT', `${canonical}: the manifest has no layers`);
  }
  const layers = raw.filter(
    (l): l is Descriptor => typeof l === 'object' && l !== null && !Array.isArray(l),
  );
  const kept = layers.filter(
    (l) => !(typeof l.mediaType === 'string' && NON_IMAGE_MEDIA_TYPES.has(l.mediaType)),
  );
  if (kept.length === 0) {
    const types = [...new Set(layers.map((l) => String(l.mediaType)))].sort();
    throw new BtyError(
      'BTY_ERR_ORAS_ARTIFACT',
      layers.length
        ? `${canonical} is not a disk-image artifact (layer mediaTypes: ${types.join(', ')}); refusing to flash it`
        : `${canonical}: the manifest has no usable layers`,
    );
  }
  const titleOf = (l: Descriptor) => {
    const a = l.annotations as Record<string, unknown> | undefined;
    return typeof a?.[TITLE] === 'string' ? a[TITLE] : null;
  };
  const notSidecar = kept.filter((l) => {
    const t = titleOf(l);
    return t === null || !SIDECAR_SUFFIXES.some((s) => t.endsWith(s));
  });
  const candidates = notSidecar.length ? notSidecar : kept;
  let best = candidates[0]!;
  for (const l of candidates) {
    const size = typeof l.size === 'number' ? l.size : 0;
    const bestSize = typeof best.size === 'number' ? best.size : 0;
    if (size > bestSize) best = l;
  }
  if (typeof best.digest !== 'string' || !DIGEST_RE.test(best.digest)) {
    throw new BtyError(
      'BTY_ERR_ORAS_REGISTRY',
      `${canonical}: picked layer has unusable digest ${JSON.stringify(best.digest)}`,
    );
  }
  return best;
}
