import { execFile, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  convertImage,
  flipByte,
  makeRawImage,
  sha256File,
  truncateCopy,
  type CompressedFormat,
  type MadeImage,
} from './images.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;

let dir: string;
let image: MadeImage;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-images-'));
  image = await makeRawImage(join(dir, 'disk.img'), { sizeBytes: 32 * MiB, seed: 7 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Lengths and end offsets of the zero runs of at least `minimum` bytes. */
async function zeroRuns(path: string, minimum: number): Promise<{ start: number; end: number }[]> {
  const bytes = await readFile(path);
  const runs: { start: number; end: number }[] = [];
  let start = -1;
  for (let i = 0; i <= bytes.length; i++) {
    const zero = i < bytes.length && bytes[i] === 0;
    if (zero && start === -1) start = i;
    if (!zero && start !== -1) {
      if (i - start >= minimum) runs.push({ start, end: i });
      start = -1;
    }
  }
  return runs;
}

describe('makeRawImage', () => {
  it('is deterministic for a seed and reports the sha256 and size of the file', async () => {
    const again = await makeRawImage(join(dir, 'again.img'), { sizeBytes: 32 * MiB, seed: 7 });
    const other = await makeRawImage(join(dir, 'other.img'), { sizeBytes: 32 * MiB, seed: 8 });
    expect(again.sha256).toBe(image.sha256);
    expect(other.sha256).not.toBe(image.sha256);
    expect(image.sha256).toBe(await sha256File(image.path));
    expect(image.sizeBytes).toBe(32 * MiB);
    expect((await stat(image.path)).size).toBe(32 * MiB);
  });

  it('leaves the zero runs as holes: blocks on disk are about the random share', async () => {
    const { blocks, size } = await stat(image.path);
    const allocated = blocks * 512;
    expect(allocated).toBeLessThan(size * 0.3);
    expect(allocated).toBeGreaterThan(size * 0.24);
  });

  it('honours randomFraction', async () => {
    const dense = await makeRawImage(join(dir, 'dense.img'), {
      sizeBytes: 32 * MiB,
      randomFraction: 0.75,
    });
    const { blocks } = await stat(dense.path);
    expect(blocks * 512).toBeGreaterThan(32 * MiB * 0.72);
    const empty = await makeRawImage(join(dir, 'empty.img'), {
      sizeBytes: 8 * MiB,
      randomFraction: 0,
    });
    // Only the last MiB and the partition table carry data.
    expect((await stat(empty.path)).blocks * 512).toBeLessThanOrEqual(MiB + 64 * 1024);
  });

  it('writes a GPT that sfdisk reads back, with an EFI system and a Linux partition', async () => {
    const { stdout } = await run('sfdisk', ['-J', image.path]);
    const table = (
      JSON.parse(stdout) as {
        partitiontable: {
          label: string;
          partitions: { start: number; size: number; type: string }[];
        };
      }
    ).partitiontable;
    expect(table.label).toBe('gpt');
    expect(table.partitions.map((p) => p.type)).toEqual([
      'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
      '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
    ]);
    expect(table.partitions[0]?.start).toBe(2048);
    await run('sfdisk', ['--verify', image.path]);
  });

  it('fills the last MiB with non-zero data', async () => {
    const file = await open(image.path, 'r');
    try {
      const tail = Buffer.alloc(MiB);
      await file.read(tail, 0, MiB, image.sizeBytes - MiB);
      expect(tail.filter((b) => b !== 0).length).toBeGreaterThan(MiB * 0.9);
      expect(tail.subarray(-512).some((b) => b !== 0)).toBe(true);
    } finally {
      await file.close();
    }
  });

  it('ends a long zero run at an offset that is not 64 KiB aligned', async () => {
    const runs = await zeroRuns(image.path, 64 * 1024);
    expect(runs.length).toBeGreaterThan(3);
    expect(runs.some((r) => r.end % (64 * 1024) !== 0 && r.end % 512 !== 0)).toBe(true);
  });

  it('makes an image without a partition table on request', async () => {
    const bare = await makeRawImage(join(dir, 'bare.img'), {
      sizeBytes: 4 * MiB,
      partitionTable: false,
      minRunBytes: 64 * 1024,
    });
    const head = Buffer.alloc(MiB);
    const file = await open(bare.path, 'r');
    await file.read(head, 0, MiB, 0).finally(() => file.close());
    expect(head.every((b) => b === 0)).toBe(true);
    await expect(run('sfdisk', ['-J', bare.path])).rejects.toThrow();
  });

  it('rejects sizes that are not whole MiB or too small for a GPT', async () => {
    await expect(makeRawImage(join(dir, 'x.img'), { sizeBytes: MiB + 512 })).rejects.toThrow(
      /1 MiB/,
    );
    await expect(makeRawImage(join(dir, 'x.img'), { sizeBytes: 2 * MiB })).rejects.toThrow(
      /at least/,
    );
  });
});

/** Decompresses with the real tool into a file and returns its sha256. */
async function restoredSha(format: CompressedFormat, path: string): Promise<string> {
  const restored = join(dir, `restored-${format}.img`);
  if (format === 'qcow2') {
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path, restored]);
  } else {
    const tool = { 'img.gz': 'gzip', 'img.zst': 'zstd', 'img.xz': 'xz', 'img.bz2': 'bzip2' }[
      format
    ];
    const child = spawn(tool, ['-dc', path], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
    await pipeline(child.stdout, createWriteStream(restored));
    expect(await exited).toBe(0);
  }
  return sha256File(restored);
}

describe('convertImage', () => {
  it.each<CompressedFormat>(['img.gz', 'img.zst', 'img.xz', 'img.bz2', 'qcow2'])(
    'converts to %s and the real tool restores the same raw bytes',
    async (format) => {
      const out = join(dir, `disk.${format}`);
      const made = await convertImage(image.path, format, out);
      expect(made.path).toBe(out);
      expect(made.sizeBytes).toBe((await stat(out)).size);
      expect(made.sha256).toBe(await sha256File(out));
      expect(made.sizeBytes).toBeLessThan(image.sizeBytes * 0.5);
      expect(await restoredSha(format, out)).toBe(image.sha256);
    },
  );

  it('writes a real qcow2', async () => {
    const out = join(dir, 'info.qcow2');
    await convertImage(image.path, 'qcow2', out);
    const { stdout } = await run('qemu-img', ['info', '--output=json', out]);
    expect(JSON.parse(stdout)).toMatchObject({ format: 'qcow2', 'virtual-size': image.sizeBytes });
  });

  it('uses the default levels on request', async () => {
    const out = join(dir, 'default.img.gz');
    await convertImage(image.path, 'img.gz', out, { level: 'default' });
    expect(await restoredSha('img.gz', out)).toBe(image.sha256);
  });

  it('fails with the tool error when the input is missing', async () => {
    await expect(
      convertImage(join(dir, 'nope.img'), 'img.xz', join(dir, 'nope.xz')),
    ).rejects.toThrow(/xz .*exited with 1/);
  });
});

describe('file helpers', () => {
  it('hashes only the first bytes with sha256File length, and refuses more than there is', async () => {
    const prefix = join(dir, 'prefix.img');
    await truncateCopy(image.path, prefix, 5 * MiB + 3);
    expect((await stat(prefix)).size).toBe(5 * MiB + 3);
    expect(await sha256File(image.path, { length: 5 * MiB + 3 })).toBe(await sha256File(prefix));
    expect(await sha256File(image.path, { length: image.sizeBytes })).toBe(image.sha256);
    await expect(sha256File(prefix, { length: 6 * MiB })).rejects.toThrow(/fewer/);
  });

  it('truncateCopy keeps exactly the first bytes, down to none', async () => {
    const gz = await convertImage(image.path, 'img.gz', join(dir, 'cut-source.img.gz'));
    const cut = join(dir, 'cut.img.gz');
    await truncateCopy(gz.path, cut, Math.floor(gz.sizeBytes / 2));
    const whole = await readFile(gz.path);
    expect((await readFile(cut)).equals(whole.subarray(0, Math.floor(gz.sizeBytes / 2)))).toBe(
      true,
    );
    await expect(run('gzip', ['-t', cut])).rejects.toThrow();
    await truncateCopy(gz.path, cut, 0);
    expect((await stat(cut)).size).toBe(0);
    await expect(truncateCopy(gz.path, cut, gz.sizeBytes + 1)).rejects.toThrow(/keepBytes/);
  });

  it('flipByte inverts one byte, and flipping again restores the file', async () => {
    const copy = join(dir, 'flip.img');
    await truncateCopy(image.path, copy, image.sizeBytes);
    const offset = 3 * MiB + 17;
    const before = (await readFile(copy))[offset] ?? -1;
    await flipByte(copy, offset);
    expect((await readFile(copy))[offset]).toBe(before ^ 0xff);
    expect(await sha256File(copy)).not.toBe(image.sha256);
    await flipByte(copy, offset);
    expect(await sha256File(copy)).toBe(image.sha256);
    await expect(flipByte(copy, image.sizeBytes)).rejects.toThrow(/past the end/);
  });
});
