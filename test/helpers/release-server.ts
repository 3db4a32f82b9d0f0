/**
 * A stand-in for GitHub's release downloads, on loopback: the fault-injecting HTTP server
 * (./fault-server.ts) with each file at `/<repo>/releases/download/<tag>/<name>` answering a
 * 302 to `/cdn/<tag>/<name>`, as GitHub redirects to its object store. Faults (cuts, stalls,
 * ignored ranges) go on the `/cdn/…` path, where the bytes are.
 */
import { createHash, randomBytes } from 'node:crypto';
import { manifestName } from '../../src/web/netboot-fetch.ts';
import { liveArtifactNames } from '../../src/web/netboot-files.ts';
import { startFaultServer, type FaultServer, type Faults } from './fault-server.ts';

export const RELEASE_REPO = 'safl/bty';

export interface ReleaseFiles {
  /** name → content, the manifest included. */
  files: Map<string, Buffer>;
  manifest: string;
  artifacts: string[];
}

export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Random kernel, initrd and squashfs of `version` (sizes in bytes) and their manifest. */
export function makeRelease(
  version: string,
  sizes: [number, number, number] = [150_000, 250_000, 1_500_000],
): ReleaseFiles {
  const artifacts = liveArtifactNames(version);
  const files = new Map<string, Buffer>();
  artifacts.forEach((name, i) => files.set(name, randomBytes(sizes[i]!)));
  const manifest = manifestName(version);
  // sha256sum's binary-mode mark on one line: the parser must strip it.
  const text = artifacts
    .map((name, i) => `${sha256Hex(files.get(name)!)} ${i === 1 ? '*' : ''}${name}`)
    .join('\n');
  files.set(manifest, Buffer.from(`${text}\n`));
  return { files, manifest, artifacts };
}

export interface ReleaseServer {
  server: FaultServer;
  /** What `[boot] release_url` should be. */
  releaseUrl: string;
  /** Publishes `release` under `tag`; faults per file name go on its `/cdn/…` path. */
  publish(tag: string, release: ReleaseFiles, faults?: Record<string, Faults>): void;
  /** Replaces one file (and resets its faults). */
  replace(tag: string, name: string, content: Buffer, faults?: Faults): void;
  cdnPath(tag: string, name: string): string;
  close(): Promise<void>;
}

export async function startReleaseServer(): Promise<ReleaseServer> {
  const server = await startFaultServer();
  const cdnPath = (tag: string, name: string) => `/cdn/${tag}/${name}`;
  const replace = (tag: string, name: string, content: Buffer, faults: Faults = {}) => {
    server.setFaults(`/${RELEASE_REPO}/releases/download/${tag}/${name}`, {
      redirectTo: cdnPath(tag, name),
    });
    server.serve(cdnPath(tag, name), { body: content }, faults);
  };
  return {
    server,
    releaseUrl: `${server.url}/${RELEASE_REPO}/releases/download`,
    publish(tag, release, faults = {}) {
      for (const [name, content] of release.files) replace(tag, name, content, faults[name]);
    },
    replace,
    cdnPath,
    close: () => server.close(),
  };
}
