/**
 * The sparse sink on its own, fed awkward inputs: odd chunk sizes, zero runs that straddle the
 * staging buffers, an image length that is not a multiple of a block, and targets that start
 * full of garbage — for each zero strategy.
 */
import { createHash } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BtyError } from '../../src/core/errors.ts';
import { SparseSink, type ZeroStrategy } from '../../src/flash/sinks/sparse-sink.ts';
import { createLoopDevice, isRoot, type LoopDevice } from '../helpers/loop.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Data, short zero gaps, a 3 MiB zero run across staging buffers, and an odd tail. */
function awkwardImage(): Buffer {
  const img = Buffer.alloc(9 * MiB + 12345);
  let x = 12345;
  const fill = (start: number, len: number) => {
    for (let i = start; i < start + len; i++) {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      img[i] = (x >> 16) & 0xff || 1;
    }
  };
  fill(0, 100 * KiB); // data not aligned to the 64 KiB block
  fill(200 * KiB, 10); // a tiny island inside a block
  fill(3 * MiB + 5, 300 * KiB); // data spanning the first staging boundary region
  fill(7 * MiB + 64 * KiB, 64 * KiB); // exactly one block
  fill(9 * MiB + 12000, 345); // last bytes of an odd-length image
  return img;
}

/** Feeds the buffer in deliberately uneven chunks. */
function chunked(buf: Buffer): Readable {
  const sizes = [1, 4095, 65537, 333333, 1 << 20, 7];
  let pos = 0;
  let i = 0;
  return new Readable({
    read() {
      if (pos >= buf.length) return this.push(null);
      const n = Math.min(sizes[i++ % sizes.length]!, buf.length - pos);
      this.push(buf.subarray(pos, pos + n));
      pos += n;
    },
  });
}

async function fillGarbage(path: string, bytes: number): Promise<void> {
  const fh = await open(path, path.startsWith('/dev/') ? 'r+' : 'w');
  await fh.write(Buffer.alloc(bytes, 0xee), 0, bytes, 0);
  await fh.sync();
  await fh.close();
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** sha256 of a device's first `length` bytes. */
async function deviceSha(path: string, length: number): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const back = Buffer.alloc(length);
    await fh.read(back, 0, length, 0);
    return sha(back);
  } finally {
    await fh.close();
  }
}

let dir: string;
let loop: LoopDevice | null = null;
const image = awkwardImage();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-sink-'));
  if (isRoot()) loop = await createLoopDevice({ sizeBytes: 12 * MiB });
});

afterAll(async () => {
  await loop?.detach();
  await rm(dir, { recursive: true, force: true });
});

async function runSink(
  path: string,
  strategy: ZeroStrategy,
  opts: {
    capacity?: number | null;
    expectedLength?: number | null;
    zeroAheadBytes?: number;
    /** Open a second handle with O_DIRECT for the sink, with this alignment. */
    directAlignment?: number;
    blockSize?: number;
  } = {},
) {
  const fh = await open(path, strategy === 'holes' ? 'w' : 'r+');
  const direct = opts.directAlignment ? await open(path, fsc.O_WRONLY | fsc.O_DIRECT) : null;
  try {
    const sink = new SparseSink({
      fh,
      direct,
      ...(opts.directAlignment ? { directAlignment: opts.directAlignment } : {}),
      ...(opts.blockSize ? { blockSize: opts.blockSize } : {}),
      path,
      strategy,
      capacity: opts.capacity ?? null,
      expectedLength: opts.expectedLength ?? null,
      ...(opts.zeroAheadBytes ? { zeroAheadBytes: opts.zeroAheadBytes } : {}),
      stagingSize: 1 * MiB,
      hashWrittenData: true,
    });
    await pipeline(chunked(image), sink);
    await fh.sync();
    return sink.result;
  } finally {
    await direct?.close();
    await fh.close();
  }
}

describe('SparseSink', () => {
  it('holes: a file target equals the image and only data is allocated', async () => {
    const path = join(dir, 'holes.img');
    await fillGarbage(path, 12 * MiB);
    const r = await runSink(path, 'holes');
    expect(r.bytes).toBe(image.length);
    expect(sha(await readFile(path))).toBe(sha(image));
    expect(r.written + r.skipped).toBe(image.length);
    expect((await stat(path)).blocks * 512).toBeLessThan(2 * MiB);
    // The written ranges are exactly the blocks holding data, and their hash is recorded.
    const written = Buffer.concat(r.ranges.map(([s, e]) => image.subarray(s, e)));
    expect(r.writtenSha256).toBe(sha(written));
  });

  it('write: zeros are written over garbage, not assumed', async () => {
    const path = join(dir, 'write.img');
    await fillGarbage(path, image.length);
    const r = await runSink(path, 'write');
    expect(sha(await readFile(path))).toBe(sha(image));
    expect(r.zerosWritten).toBeGreaterThan(4 * MiB);
    expect(r.skipped).toBe(0);
  });

  it.runIf(isRoot())('zeroout: a loop device full of garbage reads back as the image', async () => {
    await fillGarbage(loop!.path, 12 * MiB);
    const r = await runSink(loop!.path, 'zeroout', { capacity: 12 * MiB });
    // The range was zeroed ahead of the data (BLKZEROOUT), so no zero byte was written.
    expect(r.zerosWritten).toBe(0);
    expect(r.skipped + r.written).toBe(image.length);
    expect(await deviceSha(loop!.path, image.length)).toBe(sha(image));
  });

  it.runIf(isRoot())(
    'zeroout: an image longer than its header said never has data zeroed over',
    async () => {
      await fillGarbage(loop!.path, 12 * MiB);
      // An unaligned, too-small declared length: zeroing ahead must stop short of written data.
      const r = await runSink(loop!.path, 'zeroout', {
        capacity: 12 * MiB,
        expectedLength: 3 * MiB + 100,
      });
      expect(r.bytes).toBe(image.length);
      expect(await deviceSha(loop!.path, image.length)).toBe(sha(image));
    },
  );

  it.runIf(isRoot())(
    'zeroout: zeroing ahead in small steps still reads back as the image',
    async () => {
      await fillGarbage(loop!.path, 12 * MiB);
      const r = await runSink(loop!.path, 'zeroout', {
        capacity: 12 * MiB,
        zeroAheadBytes: 1 * MiB,
      });
      expect(r.zerosWritten).toBe(0);
      expect(await deviceSha(loop!.path, image.length)).toBe(sha(image));
    },
  );

  it('O_DIRECT: staged data goes around the page cache, the odd tail through it', async () => {
    const path = join(dir, 'direct.img');
    await fillGarbage(path, 12 * MiB);
    const r = await runSink(path, 'holes', { directAlignment: 4096 });
    expect(sha(await readFile(path))).toBe(sha(image));
    expect(r.writtenDirect).toBeGreaterThan(0);
    // Chunks handed over in place and the unaligned tail are not staged: page cache.
    expect(r.writtenDirect).toBeLessThan(r.written);
    expect(r.writtenDirect % 4096).toBe(0);
  });

  it.runIf(isRoot())('O_DIRECT onto a loop device full of garbage (zeroout)', async () => {
    await fillGarbage(loop!.path, 12 * MiB);
    const r = await runSink(loop!.path, 'zeroout', { capacity: 12 * MiB, directAlignment: 4096 });
    expect(r.writtenDirect).toBeGreaterThan(0);
    expect(r.zerosWritten).toBe(0);
    expect(await deviceSha(loop!.path, image.length)).toBe(sha(image));
  });

  it.runIf(isRoot())(
    'a 4Kn disk refuses a direct write that is only 512-byte aligned: the sink carries on buffered',
    async () => {
      const disk = await createLoopDevice({ sizeBytes: 12 * MiB, sectorSize: 4096 });
      try {
        await fillGarbage(disk.path, 12 * MiB);
        // 512-byte blocks put the last data range at 9 MiB + 11776, which is not 4 KiB
        // aligned: the kernel answers EINVAL and the sink must not lose those bytes.
        const r = await runSink(disk.path, 'write', { directAlignment: 512, blockSize: 512 });
        expect(r.writtenDirect).toBeGreaterThan(0);
        expect(r.writtenDirect).toBeLessThan(r.written);
        expect(await deviceSha(disk.path, image.length)).toBe(sha(image));
      } finally {
        await disk.detach();
      }
    },
  );

  it('stops before writing past the capacity', async () => {
    const path = join(dir, 'small.img');
    const err = await runSink(path, 'holes', { capacity: 2 * MiB }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BtyError);
    expect((err as BtyError).code).toBe('BTY_ERR_TARGET_TOO_SMALL');
    expect((await stat(path)).size).toBeLessThanOrEqual(2 * MiB);
  });
});
