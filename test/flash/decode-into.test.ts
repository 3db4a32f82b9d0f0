/**
 * The in-place gzip/zstd decoder against data made by the real `gzip` and `zstd` programs,
 * compared byte for byte with what Node's zlib streams produce from the same input.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BtyError } from '../../src/core/errors.ts';
import {
  DecodeInto,
  decodeIntoSupported,
  type DecodeFormat,
} from '../../src/flash/transforms/decode-into.ts';
import { explainDecompressError } from '../../src/flash/transforms/decompress.ts';

const execFileP = promisify(execFile);
const MiB = 1 << 20;

let dir: string;
/** 6 MiB: random runs and zero runs, so both stored and run-length blocks occur. */
let plain: Buffer;

async function compress(
  program: 'gzip' | 'zstd',
  args: string[],
  data: Buffer,
  { fromPipe = false } = {},
): Promise<Buffer> {
  const inPath = join(dir, `in-${Math.random().toString(36).slice(2)}`);
  await writeFile(inPath, data);
  const out = `${inPath}.out`;
  const input = fromPipe ? `< '${inPath}'` : `'${inPath}'`;
  const cmd = `${program === 'gzip' ? 'gzip' : 'zstd -q'} ${args.join(' ')} -c ${input} > '${out}'`;
  await execFileP('sh', ['-c', cmd]);
  return readFile(out);
}

/** Splits `data` into chunks of the given sizes, cycling, like a network would. */
function* chunked(data: Buffer, sizes: number[]): Generator<Buffer> {
  let i = 0;
  for (let off = 0; off < data.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield data.subarray(off, off + n);
    off += n;
  }
}

/** A turn of the event loop between chunks, as a socket or file read would give. */
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function* asAsync(chunks: Iterable<Buffer>): AsyncGenerator<Buffer> {
  for (const c of chunks) {
    await tick();
    yield Buffer.from(c);
  }
}

/** Decodes everything, asking for `readSize` bytes at a time into one reused buffer. */
async function decodeAll(
  format: DecodeFormat,
  input: AsyncIterable<Buffer>,
  readSize: number,
): Promise<Buffer> {
  const decoder = new DecodeInto(format, input);
  const out: Buffer[] = [];
  const buf = Buffer.alloc(readSize + 7);
  try {
    for (;;) {
      const n = await decoder.read(buf, 7, readSize);
      if (n === 0) break;
      out.push(Buffer.from(buf.subarray(7, 7 + n)));
      // Every read but the last fills what was asked.
      if (n < readSize) expect(await decoder.read(buf, 7, readSize)).toBe(0);
    }
  } finally {
    await decoder.close();
  }
  return Buffer.concat(out);
}

async function viaStream(format: DecodeFormat, data: Buffer): Promise<Buffer> {
  const stream = format === 'img.gz' ? zlib.createGunzip() : zlib.createZstdDecompress();
  const out: Buffer[] = [];
  for await (const c of Readable.from([data]).pipe(stream)) out.push(c as Buffer);
  return Buffer.concat(out);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-decode-'));
  const parts: Buffer[] = [];
  let seed = 1;
  for (let i = 0; i < 12; i++) {
    const random = Buffer.alloc(256 * 1024 + i * 4099);
    for (let j = 0; j < random.length; j++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      random[j] = seed >>> 24;
    }
    parts.push(random, Buffer.alloc(200 * 1024 + i * 511));
  }
  plain = Buffer.concat(parts);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('DecodeInto', () => {
  it('is available on the Node this project runs (else flashing falls back to streams)', () => {
    expect(decodeIntoSupported()).toBe(true);
  });

  it.each([
    ['img.gz', 'gzip', [] as string[]],
    ['img.zst', 'zstd', [] as string[]],
    ['img.zst', 'zstd', ['--long=27', '-19']],
  ] as const)('%s from `%s %s` decodes to the original bytes', async (format, program, args) => {
    const packed = await compress(program, [...args], plain);
    for (const readSize of [4 * MiB, 65_537, 1000]) {
      const sizes = [1, 4096, 65_536, 3, MiB];
      const decoded = await decodeAll(format, asAsync(chunked(packed, sizes)), readSize);
      expect(decoded.equals(plain)).toBe(true);
    }
  });

  it('concatenated gzip members and zstd frames decode as one image, as gzip -d and zstd -d do', async () => {
    const half = Math.floor(plain.length / 2);
    const gz = Buffer.concat([
      await compress('gzip', [], plain.subarray(0, half)),
      await compress('gzip', [], plain.subarray(half)),
    ]);
    const zst = Buffer.concat([
      await compress('zstd', [], plain.subarray(0, half)),
      await compress('zstd', [], plain.subarray(half)),
    ]);
    for (const [format, packed] of [
      ['img.gz', gz],
      ['img.zst', zst],
    ] as const) {
      const decoded = await decodeAll(format, asAsync(chunked(packed, [65_536])), MiB);
      // (Node's zstd stream stops after the first frame, which is why the engine's stream
      // fallback uses the zstd program instead.)
      expect(decoded.equals(plain)).toBe(true);
    }
  });

  it('bytes after the end of a gzip stream are ignored as zlib does, yet still read', async () => {
    const packed = Buffer.concat([await compress('gzip', [], plain), Buffer.alloc(3000, 0)]);
    let pulled = 0;
    async function* counted(): AsyncGenerator<Buffer> {
      for (const c of chunked(packed, [1000])) {
        await tick();
        pulled += c.length;
        yield c;
      }
    }
    const decoded = await decodeAll('img.gz', counted(), MiB);
    expect(decoded.equals(plain)).toBe(true);
    expect(decoded.equals(await viaStream('img.gz', packed))).toBe(true);
    // A digest over the source must see every byte, trailing ones included.
    expect(pulled).toBe(packed.length);
  });

  it.each([
    ['img.gz', 'gzip'],
    ['img.zst', 'zstd'],
  ] as const)(
    'a truncated %s fails like a zlib stream, as BTY_ERR_DECOMPRESS',
    async (format, program) => {
      const packed = await compress(program, [], plain);
      const cut = packed.subarray(0, Math.floor(packed.length / 2));
      const err = await decodeAll(format, asAsync(chunked(cut, [65_536])), MiB).catch(
        (e: unknown) => e,
      );
      const streamErr = await viaStream(format, cut).catch((e: unknown) => e);
      expect((err as NodeJS.ErrnoException).code).toBe((streamErr as NodeJS.ErrnoException).code);
      const explained = explainDecompressError(err, format, 'cut.img');
      expect(explained).toBeInstanceOf(BtyError);
      expect((explained as BtyError).code).toBe('BTY_ERR_DECOMPRESS');
      expect((explained as BtyError).message).toMatch(/corrupt or truncated/);
    },
  );

  it('corrupt zstd data fails with the zstd error code', async () => {
    const packed = Buffer.from(await compress('zstd', [], plain));
    packed.fill(0x5a, Math.floor(packed.length / 2), Math.floor(packed.length / 2) + 64);
    const err = await decodeAll('img.zst', asAsync([packed]), MiB).catch((e: unknown) => e);
    expect((err as NodeJS.ErrnoException).code).toMatch(/^ZSTD_error_/);
    expect((explainDecompressError(err, 'img.zst', 'x.zst') as BtyError).code).toBe(
      'BTY_ERR_DECOMPRESS',
    );
  });

  it('a zstd window beyond 128 MiB (--long=28) is refused with the recompress hint', async () => {
    // From a pipe the size is unknown, so zstd keeps the full 256 MiB window in the header.
    const packed = await compress('zstd', ['--long=28'], plain, { fromPipe: true });
    const err = await decodeAll('img.zst', asAsync([packed]), MiB).catch((e: unknown) => e);
    expect((err as NodeJS.ErrnoException).code).toBe('ZSTD_error_frameParameter_windowTooLarge');
    const explained = explainDecompressError(err, 'img.zst', 'big.img.zst') as BtyError;
    expect(explained.message).toMatch(/window larger than 128 MiB/);
    expect(explained.hint).toMatch(/--long=27/);
  });

  it('a source error reaches the reader, and close() ends an unfinished source', async () => {
    const packed = await compress('zstd', [], plain);
    let finished = false;
    async function* failing(): AsyncGenerator<Buffer> {
      try {
        yield packed.subarray(0, 1000);
        await tick();
        throw new Error('connection reset');
      } finally {
        finished = true;
      }
    }
    const decoder = new DecodeInto('img.zst', failing());
    await expect(decoder.read(Buffer.alloc(MiB), 0, MiB)).rejects.toThrow(/connection reset/);
    await decoder.close();
    expect(finished).toBe(true);

    finished = false;
    async function* longer(): AsyncGenerator<Buffer> {
      try {
        yield* asAsync(chunked(packed, [1000]));
      } finally {
        finished = true;
      }
    }
    const early = new DecodeInto('img.zst', longer());
    expect(await early.read(Buffer.alloc(100), 0, 100)).toBe(100);
    await early.close();
    expect(finished).toBe(true);
  });
});
