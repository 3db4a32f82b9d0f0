/**
 * The image the cache benchmark serves: random bytes (nothing on the path can compress them),
 * made once per size in the work folder and reused by later runs. A small JSON manifest beside
 * it, written last, says the image is complete and holds its sha256.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const CHUNK = 4 * 1024 * 1024;

export interface BenchImage {
  path: string;
  /** The file name, also the last segment of its URL. */
  name: string;
  sizeBytes: number;
  sha256: string;
}

interface Manifest {
  sizeBytes: number;
  sha256: string;
}

export function imageName(sizeBytes: number): string {
  const MiB = 1024 * 1024;
  return sizeBytes % MiB === 0 ? `random-${sizeBytes / MiB}MiB.img` : `random-${sizeBytes}B.img`;
}

async function readManifest(path: string, sizeBytes: number): Promise<Manifest | null> {
  try {
    const manifest = JSON.parse(await readFile(path, 'utf8')) as Manifest;
    return manifest.sizeBytes === sizeBytes && /^[0-9a-f]{64}$/.test(manifest.sha256)
      ? manifest
      : null;
  } catch {
    return null;
  }
}

/** The image of `sizeBytes` in `dir`: reused when complete, else written (random bytes). */
export async function prepareImage(
  dir: string,
  sizeBytes: number,
  log: (message: string) => void = () => {},
): Promise<BenchImage> {
  await mkdir(dir, { recursive: true });
  const name = imageName(sizeBytes);
  const path = join(dir, name);
  const manifestPath = `${path}.json`;
  const cached = await readManifest(manifestPath, sizeBytes);
  if (cached && existsSync(path) && (await stat(path)).size === sizeBytes) {
    log(`reusing the image ${path}`);
    return { path, name, sizeBytes, sha256: cached.sha256 };
  }
  log(`writing ${sizeBytes.toLocaleString('en-US')} random bytes to ${path} (kept for later runs)`);
  const partial = `${path}.part`;
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(CHUNK);
  const file = await open(partial, 'w', 0o644);
  try {
    for (let done = 0; done < sizeBytes;) {
      const n = Math.min(CHUNK, sizeBytes - done);
      const chunk = buffer.subarray(0, n);
      randomFillSync(chunk);
      hash.update(chunk);
      await file.write(chunk, 0, n);
      done += n;
    }
  } finally {
    await file.close();
  }
  await rename(partial, path);
  const sha256 = hash.digest('hex');
  await writeFile(manifestPath, JSON.stringify({ sizeBytes, sha256 } satisfies Manifest) + '\n');
  return { path, name, sizeBytes, sha256 };
}
