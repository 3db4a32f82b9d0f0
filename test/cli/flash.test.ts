/**
 * `bty flash` and `bty inspect` as a script sees them: exit codes, JSON lines, messages, and the
 * guarantee that refused flashes leave the target exactly as it was.
 */
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBty as bty } from '../helpers/cli.ts';
import {
  convertImage,
  flipByte,
  makeRawImage,
  sha256File,
  truncateCopy,
  type MadeImage,
} from '../helpers/images.ts';
import {
  createLoopDevice,
  describeIfRoot,
  mountPartition,
  type LoopDevice,
} from '../helpers/loop.ts';

const MiB = 1 << 20;

function jsonLines(text: string): Array<Record<string, unknown>> {
  return text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

let dir: string;
let raw: MadeImage;
const images: Record<string, MadeImage> = {};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-cli-flash-'));
  raw = await makeRawImage(join(dir, 'disk.img'), { sizeBytes: 16 * MiB, seed: 3 });
  for (const f of ['img.gz', 'img.zst', 'img.xz', 'img.bz2'] as const) {
    images[f] = await convertImage(raw.path, f, join(dir, `disk.${f}`));
  }
}, 120_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('bty flash to a file', () => {
  it('--json prints progress lines then one result object, exit 0', async () => {
    const target = join(dir, 'out-json.img');
    const r = await bty('flash', images['img.zst']!.path, target, '--yes', '--json', '--verify');
    expect(r.code).toBe(0);
    const lines = jsonLines(r.stdout);
    const result = lines.at(-1)!;
    expect(result.type).toBe('result');
    expect(result.ok).toBe(true);
    expect(result.verified).toBe(true);
    const phases = new Set(lines.filter((l) => l.type === 'progress').map((l) => l.phase));
    for (const p of ['resolve', 'write', 'sync', 'verify', 'done']) expect(phases).toContain(p);
    expect(await sha256File(target)).toBe(raw.sha256);
  });

  it('human output says what was written and whether it was verified', async () => {
    const target = join(dir, 'out-human.img');
    const r = await bty(
      'flash',
      images['img.gz']!.path,
      target,
      '--yes',
      '--sha256',
      images['img.gz']!.sha256,
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/sha256: verified/);
    expect(r.stderr).toMatch(/write/);
  });

  it('without a terminal and without --yes it refuses (exit 3) and writes nothing', async () => {
    const target = join(dir, 'out-noconfirm.img');
    await writeFile(target, 'keep me');
    const r = await bty('flash', raw.path, target);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/BTY_ERR_NOT_CONFIRMED/);
    expect(r.stderr).toMatch(/--yes/);
    expect(await readFile(target, 'utf8')).toBe('keep me');
  });

  it('a flipped byte with a known sha256 is an integrity failure (exit 4); the file is kept', async () => {
    const copy = join(dir, 'flipped.img');
    await copyFile(raw.path, copy);
    await flipByte(copy, 5 * MiB + 123);
    const r = await bty(
      'flash',
      copy,
      join(dir, 'out-flipped.img'),
      '--yes',
      '--sha256',
      raw.sha256,
    );
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/BTY_ERR_INTEGRITY/);
    expect(r.stderr).toMatch(/left as it was/);
  });

  it.each(['img.gz', 'img.zst', 'img.xz', 'img.bz2'])(
    'a truncated %s is a clear corrupt-data error (exit 4)',
    async (format) => {
      const cut = join(dir, `cut.${format}`);
      const made = images[format]!;
      await truncateCopy(made.path, cut, Math.floor(made.sizeBytes / 2));
      const r = await bty('flash', cut, join(dir, `out-cut-${format}.img`), '--yes', '--json');
      expect(r.code).toBe(4);
      const last = jsonLines(r.stdout).at(-1)!;
      expect(last.type).toBe('error');
      const error = last.error as { code: string; message: string };
      expect(error.code).toBe('BTY_ERR_DECOMPRESS');
      expect(error.message).toMatch(/corrupt or truncated/);
    },
  );

  it('a suffix that contradicts the content is refused (exit 2)', async () => {
    const misnamed = join(dir, 'misnamed.img.xz');
    await copyFile(images['img.gz']!.path, misnamed);
    const r = await bty('flash', misnamed, join(dir, 'out-misnamed.img'), '--yes');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/BTY_ERR_FORMAT_MISMATCH/);
    expect(r.stderr).toMatch(/gzip/);
  });

  it('a raw .img that is really compressed is never written raw', async () => {
    const misnamed = join(dir, 'compressed-but-named.img');
    await copyFile(images['img.zst']!.path, misnamed);
    const r = await bty('flash', misnamed, join(dir, 'out-raw-misnamed.img'), '--yes');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/BTY_ERR_FORMAT_MISMATCH/);
  });

  it('a tarball is refused with "Extract first"', async () => {
    const tarball = join(dir, 'os.tar.xz');
    await copyFile(images['img.xz']!.path, tarball);
    const r = await bty('flash', tarball, join(dir, 'out-tar.img'), '--yes');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/tarball/);
    expect(r.stderr).toMatch(/Extract first/);
  });

  it('a missing image and a bad --format are usage errors (exit 2)', async () => {
    expect((await bty('flash', join(dir, 'nope.img'), join(dir, 'o.img'), '--yes')).code).toBe(2);
    expect((await bty('flash', raw.path, join(dir, 'o.img'), '--format', 'iso')).code).toBe(2);
    expect((await bty('flash', raw.path)).code).toBe(2);
    expect((await bty('flash', 'ftp://host/x.img', join(dir, 'o.img'), '--yes')).code).toBe(2);
  });
});

describe('bty inspect', () => {
  it('reports format, content, sizes (xz index) and the sidecar digest', async () => {
    await writeFile(
      `${images['img.xz']!.path}.sha256`,
      `${images['img.xz']!.sha256}  disk.img.xz\n`,
    );
    const r = await bty('inspect', images['img.xz']!.path, '--json');
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(info.format).toBe('img.xz');
    expect(info.content).toBe('xz');
    expect(info.virtual_size_bytes).toBe(16 * MiB);
    expect(info.sha256).toBe(images['img.xz']!.sha256);
  });

  it('zstd frame content size; bz2 unknown', async () => {
    const zst = JSON.parse((await bty('inspect', images['img.zst']!.path, '--json')).stdout) as {
      virtual_size_bytes: number | null;
    };
    expect(zst.virtual_size_bytes).toBe(16 * MiB);
    const bz2 = JSON.parse((await bty('inspect', images['img.bz2']!.path, '--json')).stdout) as {
      virtual_size_bytes: number | null;
    };
    expect(bz2.virtual_size_bytes).toBeNull();
  });

  it('a mis-named image is reported as a problem with exit 2', async () => {
    const misnamed = join(dir, 'inspect-misnamed.img.bz2');
    await copyFile(images['img.zst']!.path, misnamed);
    const r = await bty('inspect', misnamed);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/problem/);
  });
});

describeIfRoot('bty flash to loop devices', () => {
  let small: LoopDevice;
  let parted: LoopDevice;
  let readonly: LoopDevice;
  let unmount: (() => Promise<void>) | null = null;

  beforeAll(async () => {
    small = await createLoopDevice({ sizeBytes: 8 * MiB });
    parted = await createLoopDevice({ sizeBytes: 32 * MiB, partitions: true });
    readonly = await createLoopDevice({ sizeBytes: 32 * MiB, readOnly: true });
  });

  afterAll(async () => {
    await unmount?.();
    await small?.detach();
    await parted?.detach();
    await readonly?.detach();
  });

  it('an image larger than the target is refused before writing (exit 3)', async () => {
    const before = await sha256File(small.path);
    const r = await bty('flash', images['img.xz']!.path, small.path, '--yes');
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/BTY_ERR_TARGET_TOO_SMALL/);
    expect(await sha256File(small.path)).toBe(before);
  });

  it('with an unknown image size the write stops at the end of the device (exit 3)', async () => {
    const r = await bty('flash', images['img.bz2']!.path, small.path, '--yes');
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/BTY_ERR_TARGET_TOO_SMALL/);
    expect(r.stderr).toMatch(/nothing past the end/);
  });

  it('a dry run validates the device and leaves it untouched', async () => {
    const before = await sha256File(parted.path);
    const r = await bty('flash', images['img.zst']!.path, parted.path, '--dry-run', '--json');
    expect(r.code).toBe(0);
    const result = jsonLines(r.stdout).at(-1)!;
    expect(result.dry_run).toBe(true);
    expect(await sha256File(parted.path)).toBe(before);
  });

  it('a flipped byte with a known sha256 fails on a disk and says it holds unverified data', async () => {
    const copy = join(dir, 'flipped-for-disk.img');
    await copyFile(raw.path, copy);
    await flipByte(copy, 3 * MiB + 5);
    const r = await bty('flash', copy, parted.path, '--yes', '--sha256', raw.sha256);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/BTY_ERR_INTEGRITY/);
    expect(r.stderr).toMatch(/holds unverified data/);
  });

  it('a read-only device is refused (exit 3)', async () => {
    const r = await bty('flash', raw.path, readonly.path, '--yes');
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/BTY_ERR_TARGET_READONLY/);
  });

  it('a device with a mounted partition is refused (exit 3) and keeps its data', async () => {
    const m = await mountPartition(parted.partitions[0]!);
    unmount = m.unmount;
    await writeFile(join(m.mountpoint, 'precious.txt'), 'still here');
    const r = await bty('flash', raw.path, parted.path, '--yes');
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/BTY_ERR_TARGET_MOUNTED/);
    expect(r.stderr).toContain(m.mountpoint);
    expect(await readFile(join(m.mountpoint, 'precious.txt'), 'utf8')).toBe('still here');
  });

  it('a partition is not a target', async () => {
    await unmount?.();
    unmount = null;
    const r = await bty('flash', raw.path, parted.partitions[1]!, '--yes');
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/BTY_ERR_TARGET_PARTITION/);
  });
});

describe('bty --help and --version', () => {
  it('documents the exit codes', async () => {
    const r = await bty('--help');
    expect(r.code).toBe(0);
    for (const code of ['0 ', '1 ', '2 ', '3 ', '4 ', '130'])
      expect(r.stdout).toContain(`  ${code}`);
  });

  it('prints the version', async () => {
    const r = await bty('--version');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^bty \d+\.\d+\.\d+/);
  });
});
