import { execFile } from 'node:child_process';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeTarget } from '../../src/flash/target.ts';
import { createLoopDevice, describeIfRoot, type LoopDevice } from '../helpers/loop.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;

describe('probeTarget on paths that are not block devices', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bty-target-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a regular file is an allowed target with its current size', async () => {
    const file = join(dir, 'disk.img');
    await writeFile(file, Buffer.alloc(4096, 1));
    expect(await probeTarget(file)).toEqual({
      path: file,
      kind: 'file',
      exists: true,
      size_bytes: 4096,
      disk: null,
      refusals: [],
    });
  });

  it('a missing file in an existing folder will be created', async () => {
    const file = join(dir, 'new.img');
    expect(await probeTarget(file)).toEqual({
      path: file,
      kind: 'missing',
      exists: false,
      size_bytes: null,
      disk: null,
      refusals: [],
    });
  });

  it('a missing folder is refused as NOT_FOUND', async () => {
    const info = await probeTarget(join(dir, 'no-such-dir', 'new.img'));
    expect(info.kind).toBe('missing');
    expect(info.exists).toBe(false);
    expect(info.refusals.map((r) => r.code)).toEqual(['BTY_ERR_TARGET_NOT_FOUND']);
    expect(info.refusals[0]?.message).toContain('no-such-dir');
  });

  it('a folder is refused as UNSUPPORTED', async () => {
    const info = await probeTarget(dir);
    expect(info).toMatchObject({ kind: 'other', exists: true, size_bytes: null, disk: null });
    expect(info.refusals.map((r) => r.code)).toEqual(['BTY_ERR_TARGET_UNSUPPORTED']);
    expect(info.refusals[0]?.message).toContain('directory');
  });

  it('a character device (/dev/null) is refused as UNSUPPORTED', async () => {
    const info = await probeTarget('/dev/null');
    expect(info.kind).toBe('other');
    expect(info.refusals.map((r) => r.code)).toEqual(['BTY_ERR_TARGET_UNSUPPORTED']);
    expect(info.refusals[0]?.message).toContain('character device');
  });
});

describeIfRoot('probeTarget on real loop devices', () => {
  let device: LoopDevice;
  beforeAll(async () => {
    device = await createLoopDevice({ sizeBytes: 32 * MiB, partitions: true });
  });
  afterAll(async () => {
    await device?.detach();
  });

  it('a whole loop disk is an allowed block target with its disk record', async () => {
    const info = await probeTarget(device.path);
    expect(info).toMatchObject({
      path: device.path,
      kind: 'block',
      exists: true,
      size_bytes: 32 * MiB,
      refusals: [],
    });
    expect(info.disk).toMatchObject({ path: device.path, type: 'loop', eligible: true });
  });

  it('a partition of it is refused as PARTITION', async () => {
    const partition = device.partitions[0] ?? '';
    const info = await probeTarget(partition);
    expect(info.kind).toBe('block');
    expect(info.disk).toBeNull();
    expect(info.size_bytes).toBeGreaterThan(0);
    expect(info.refusals.map((r) => r.code)).toEqual(['BTY_ERR_TARGET_PARTITION']);
  });

  it('an unattached loop device has no medium and is refused', async () => {
    const free = (await run('losetup', ['--find'])).stdout.trim();
    const info = await probeTarget(free);
    // Another test may attach this very device in between; then there is nothing to assert.
    const attached = await access(`/sys/block/${basename(free)}/loop/backing_file`).then(
      () => true,
      () => false,
    );
    if (attached) return;
    expect(info).toMatchObject({ kind: 'block', exists: true, size_bytes: 0, disk: null });
    expect(info.refusals.map((r) => r.code)).toEqual(['BTY_ERR_TARGET_TOO_SMALL']);
  });

  it('the file backing an attached loop device is refused as IN_USE', async () => {
    const info = await probeTarget(device.backingFile);
    expect(info.kind).toBe('file');
    expect(info.size_bytes).toBe(32 * MiB);
    expect(info.refusals.map((r) => r.code)).toEqual(['BTY_ERR_TARGET_IN_USE']);
    expect(info.refusals[0]?.message).toContain(device.path);
  });
});
