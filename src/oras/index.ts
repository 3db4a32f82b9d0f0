/**
 * `oras://` support: OCI registries as image and catalog sources. Importing this module plugs
 * the scheme into the flash engine and the catalog loader (neither depends on it).
 */
import { createHash } from 'node:crypto';
import { fetchHttpBody, registerCatalogScheme } from '../catalog/load.ts';
import { BtyError } from '../core/errors.ts';
import { registerSourceScheme } from '../flash/sources/index.ts';
import { OrasSource } from './source.ts';
import { resolveOras } from './resolve.ts';

export { OrasSource } from './source.ts';
export {
  resolveOras,
  machinePlatform,
  type ResolvedArtifact,
  type ResolveOptions,
} from './resolve.ts';
export { RegistryClient, parseChallenge, type RegistryClientOptions } from './client.ts';
export { loginFor, isPlainHttpHost, type Login } from './credentials.ts';
export { parseOrasRef, formatOrasRef, type OrasRef } from '../core/oras-ref.ts';

registerSourceScheme('oras', (src, options) =>
  OrasSource.open(src, {
    ...(options.http ? { http: options.http } : {}),
    ...(options.platform ? { platform: options.platform } : {}),
  }),
);

/** A catalog published as an ORAS artifact: its blob, fetched like an http(s) catalog. */
registerCatalogScheme('oras', async (source, remote) => {
  const resolved = await resolveOras(source, { timeoutMs: remote.timeoutMs });
  const body = await fetchHttpBody(resolved.blobUrl, {
    ...remote,
    label: resolved.ref,
    headers: await resolved.client.credentials(),
  });
  const actual = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  if (actual !== resolved.digest) {
    throw new BtyError(
      'BTY_ERR_INTEGRITY',
      `the catalog blob of ${resolved.ref} hashes to ${actual}, not to its digest ${resolved.digest}`,
    );
  }
  return body;
});
