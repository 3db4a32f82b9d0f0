/** Filling the cache from an oras:// reference on a real registry (distribution, token auth). */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheManager } from '../../src/cache/manager.ts';
import { CacheStore } from '../../src/cache/store.ts';
import { blobName } from '../../src/cache/url.ts';
import { pushArtifact, startRegistry, type Registry } from '../helpers/registry.ts';

let reg: Registry;
let dir: string;
const disk = randomBytes(2 * 1024 * 1024 + 7);
let layerDigest: string;

beforeAll(async () => {
  reg = await startRegistry({ auth: 'token' });
  const pushed = await pushArtifact(reg, 'os/disk', '1', {
    layers: [
      { data: disk, mediaType: 'application/vnd.oci.image.layer.v1.tar', title: 'disk.img' },
    ],
  });
  layerDigest = pushed.layers[0]!.digest;
  dir = mkdtempSync(join(tmpdir(), 'bty-cache-oras-'));
});
afterAll(async () => {
  await reg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('oras:// origins', () => {
  it('download the layer with a registry token and record its digest', async () => {
    const store = CacheStore.open(dir);
    const manager = new CacheManager(store);
    try {
      const origin = `oras://${reg.host}/os/disk:1`;
      const entry = await manager.fetch(origin).done;
      expect(entry.digest).toBe(layerDigest);
      expect(entry.size).toBe(disk.length);
      expect(readFileSync(store.blobFile(entry)).equals(disk)).toBe(true);
      expect(reg.tokenRequests.some((t) => t.scope.some((s) => s.includes('os/disk:pull')))).toBe(
        true,
      );
      expect(blobName(origin)).toBe('disk%3A1');
    } finally {
      await manager.close();
      store.close();
    }
  });

  it('refuse a catalog sha256 that is not the layer digest', async () => {
    const store = CacheStore.open(dir);
    const manager = new CacheManager(store);
    try {
      const origin = `oras://${reg.host}/os/disk:1`;
      store.remove(origin);
      const handle = manager.fetch(origin, { expectedSha256: 'ab'.repeat(32) });
      await expect(handle.done).rejects.toMatchObject({ code: 'BTY_ERR_INTEGRITY' });
      expect(store.lookup(origin)).toBeUndefined();
    } finally {
      await manager.close();
      store.close();
    }
  });
});
