/** The store: LRU eviction that never touches a pinned entry, and crash safety under kill -9. */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CacheManager } from '../../src/cache/manager.ts';
import { CacheStore } from '../../src/cache/store.ts';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';

const KiB = 1024;
let upstream: FaultServer;
let dir: string;

beforeAll(async () => {
  upstream = await startFaultServer();
});
afterAll(async () => {
  await upstream.close();
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bty-cache-store-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function serveImage(name: string, size: number): { origin: string; body: Buffer } {
  const body = randomBytes(size);
  upstream.serve(`/${name}`, { body });
  return { origin: upstream.urlFor(`/${name}`), body };
}

describe('eviction', () => {
  it('evicts the least recently used entry and never a pinned one', async () => {
    const pinned = new Set<string>();
    const store = CacheStore.open(dir, {
      maxBytes: 300 * KiB,
      isPinned: (origin) => pinned.has(origin),
    });
    const manager = new CacheManager(store);
    try {
      const [a, b, c, d, e] = ['a', 'b', 'c', 'd', 'e'].map((n) =>
        serveImage(`${n}.img`, 100 * KiB),
      );
      for (const img of [a!, b!, c!]) await manager.fetch(img.origin).done;
      expect(store.usedBytes()).toBe(300 * KiB);
      // Use order now, oldest first: b, c, a. a was used last; b is pinned (a machine is bound to it).
      const t = Date.now();
      store.touch(store.lookup(b!.origin)!, new Date(t + 1));
      store.touch(store.lookup(c!.origin)!, new Date(t + 2));
      store.touch(store.lookup(a!.origin)!, new Date(t + 3));
      pinned.add(b!.origin);

      await manager.fetch(d!.origin).done;
      // c was the least recently used unpinned entry.
      expect(store.lookup(c!.origin)).toBeUndefined();
      expect(store.lookup(b!.origin)).toBeDefined();
      expect(store.lookup(a!.origin)).toBeDefined();
      expect(store.usedBytes()).toBe(300 * KiB);

      // With everything pinned, a fill that does not fit is refused and leaves nothing behind.
      pinned.add(a!.origin);
      pinned.add(d!.origin);
      const refused = manager.fetch(e!.origin);
      await expect(refused.done).rejects.toThrow(/cache full: .*pinned/);
      expect(manager.job(e!.origin)?.state).toBe('failed');
      expect(store.lookup(e!.origin)).toBeUndefined();
      expect(
        store
          .entries()
          .map((x) => x.origin)
          .sort(),
      ).toEqual([a!.origin, b!.origin, d!.origin].sort());
      expect(readdirSync(join(dir, 'blobs', 'sha256'))).toHaveLength(3);
    } finally {
      await manager.close();
      store.close();
    }
  });

  it('shares one blob between origins with the same content', async () => {
    const body = randomBytes(50 * KiB);
    upstream.serve('/same-1.img', { body });
    upstream.serve('/same-2.img', { body });
    const store = CacheStore.open(dir);
    const manager = new CacheManager(store);
    try {
      const one = await manager.fetch(upstream.urlFor('/same-1.img')).done;
      const two = await manager.fetch(upstream.urlFor('/same-2.img')).done;
      expect(one.digest).toBe(two.digest);
      expect(store.usedBytes()).toBe(50 * KiB);
      expect(store.remove(one.origin)).toBe(true);
      expect(readFileSync(store.blobFile(two)).equals(body)).toBe(true);
      expect(store.remove(two.origin)).toBe(true);
      expect(readdirSync(join(dir, 'blobs', 'sha256'))).toHaveLength(0);
    } finally {
      await manager.close();
      store.close();
    }
  });

  it('keeps last use across a reopen', async () => {
    const img = serveImage('lru.img', 10 * KiB);
    const store = CacheStore.open(dir);
    const manager = new CacheManager(store);
    const used = new Date('2031-02-03T04:05:06.000Z');
    await manager.fetch(img.origin).done;
    store.touch(store.lookup(img.origin)!, used);
    await manager.close();
    store.close();
    const again = CacheStore.open(dir);
    expect(again.lookup(img.origin)?.last_used_at).toBe(used.toISOString());
    again.close();
  });
});

describe('kill -9 mid-fill', () => {
  it('leaves no entry and no partial file; a fresh download then works', async () => {
    const body = randomBytes(4 * 1024 * KiB);
    upstream.serve('/killed.img', { body }, { bytesPerSecond: 256 * KiB });
    const origin = upstream.urlFor('/killed.img');
    const script = fileURLToPath(new URL('./fixtures/fill-child.ts', import.meta.url));
    const child = spawn(process.execPath, [script, dir, origin], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('exit', (_code, signal) => resolve(signal)),
    );
    try {
      // Wait (bounded) until the child has written part of the image.
      const deadline = Date.now() + 30_000;
      while (partBytes(dir) === 0) {
        if (Date.now() > deadline || child.exitCode !== null) {
          throw new Error(`the child wrote nothing: ${stderr}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      child.kill('SIGKILL');
    }
    expect(await exited).toBe('SIGKILL');
    expect(partBytes(dir)).toBeGreaterThan(0);

    upstream.setFaults('/killed.img', {});
    const store = CacheStore.open(dir);
    const manager = new CacheManager(store);
    try {
      expect(store.lookup(origin)).toBeUndefined();
      expect(store.entries()).toHaveLength(0);
      expect(partBytes(dir)).toBe(0);
      expect(readdirSync(join(dir, 'tmp')).filter((n) => !n.startsWith(`${process.pid}.`))).toEqual(
        [],
      );
      const entry = await manager.fetch(origin).done;
      expect(entry.digest).toBe(`sha256:${createHash('sha256').update(body).digest('hex')}`);
      expect(readFileSync(store.blobFile(entry)).equals(body)).toBe(true);
    } finally {
      await manager.close();
      store.close();
    }
  });
});

/** Bytes in partial downloads under the store's tmp folder. */
function partBytes(cacheDir: string): number {
  const tmp = join(cacheDir, 'tmp');
  let total = 0;
  let names: string[];
  try {
    names = readdirSync(tmp, { recursive: true, encoding: 'utf8' });
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.endsWith('.part')) continue;
    try {
      total += statSync(join(tmp, name)).size;
    } catch {
      // Gone between listing and stat.
    }
  }
  return total;
}

describe('after a crash', () => {
  it("drops partials under this process's own PID that this process did not make (PID reuse)", () => {
    // A server killed with -9 and restarted can get the same PID (PID 1 in a container).
    const leftover = join(dir, 'tmp', `${process.pid}.1`);
    mkdirSync(leftover, { recursive: true });
    writeFileSync(join(leftover, 'x.part'), randomBytes(4096));
    const store = CacheStore.open(dir);
    try {
      expect(existsSync(join(leftover, 'x.part'))).toBe(false);
      // A second store of this process keeps the first one's folder.
      const mine = readdirSync(join(dir, 'tmp'));
      const second = CacheStore.open(dir);
      expect(readdirSync(join(dir, 'tmp')).filter((n) => mine.includes(n))).toEqual(mine);
      second.close();
    } finally {
      store.close();
    }
  });
});

describe('the download queue', () => {
  it('a machine waiting on a pull-through fill never waits behind operator downloads', async () => {
    upstream.serve('/slow-a', { body: randomBytes(256 * KiB) }, { bytesPerSecond: 32 * KiB });
    upstream.serve('/slow-b', { body: randomBytes(256 * KiB) }, { bytesPerSecond: 32 * KiB });
    const wanted = serveImage('wanted', 64 * KiB);
    const store = CacheStore.open(dir);
    const manager = new CacheManager(store, { concurrency: 2 });
    try {
      manager.fetch(upstream.urlFor('/slow-a'));
      manager.fetch(upstream.urlFor('/slow-b'));
      const target = manager.open(wanted.origin, { allowFill: true });
      expect(target?.kind).toBe('fill');
      expect(manager.job(wanted.origin)?.state).toBe('running');
      const states = manager.jobs().map((j) => j.state);
      expect(states.filter((s) => s === 'running')).toHaveLength(3);
      // An operator's third download still waits for a slot.
      manager.fetch(serveImage('later', 16 * KiB).origin);
      expect(manager.jobs().filter((j) => j.state === 'queued')).toHaveLength(1);
    } finally {
      await manager.close();
      store.close();
    }
  });
});
