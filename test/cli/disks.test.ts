import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import type { Disk } from '../../src/flash/disks.ts';
import { createLoopDevice, describeIfRoot, type LoopDevice } from '../helpers/loop.ts';
import { capture } from '../helpers/cli.ts';

const MiB = 1024 * 1024;

describeIfRoot('bty disks', () => {
  let device: LoopDevice;
  beforeAll(async () => {
    device = await createLoopDevice({ sizeBytes: 24 * MiB, readOnly: true });
  });
  afterAll(async () => {
    await device?.detach();
  });

  it('--all --json prints every device as a Disk record, loop devices included', async () => {
    const io = capture();
    expect(await main(['disks', '--all', '--json'], io)).toBe(0);
    expect(io.stderr()).toBe('');
    const disks = JSON.parse(io.stdout()) as Disk[];
    expect(Array.isArray(disks)).toBe(true);
    const loop = disks.find((d) => d.path === device.path);
    expect(loop).toMatchObject({
      type: 'loop',
      size_bytes: 24 * MiB,
      readonly: true,
      eligible: false,
      reasons: [{ code: 'BTY_ERR_TARGET_READONLY', message: `${device.path} is read-only` }],
    });
    for (const disk of disks) {
      expect(Object.keys(disk).sort()).toEqual(
        [
          'name',
          'path',
          'type',
          'size_bytes',
          'vendor',
          'model',
          'serial',
          'wwn',
          'tran',
          'removable',
          'readonly',
          'mountpoints',
          'logical_block_size',
          'write_zeroes',
          'discard',
          'eligible',
          'reasons',
        ].sort(),
      );
    }
  });

  it('--json without --all lists only eligible whole disks', async () => {
    const io = capture();
    expect(await main(['disks', '--json'], io)).toBe(0);
    const disks = JSON.parse(io.stdout()) as Disk[];
    expect(disks.every((d) => d.eligible && d.type === 'disk')).toBe(true);
  });

  it('--all prints a table with the reasons of refused devices', async () => {
    const io = capture();
    expect(await main(['disks', '--all'], io)).toBe(0);
    const lines = io.stdout().split('\n');
    expect(lines[0]).toMatch(/^PATH\s+SIZE\s+MODEL\s+SERIAL\s+TRAN\s+RO\s+RM\s+ELIGIBLE\/REASON$/);
    const row = lines.find((l) => l.startsWith(`${device.path} `));
    expect(row).toMatch(/24\.0 MiB/);
    expect(row).toMatch(/no: is read-only$/);
  });
});

describe('bty disks without eligible disks', () => {
  it('says so and suggests --all when the default list is empty', async () => {
    const io = capture();
    expect(await main(['disks'], io)).toBe(0);
    const text = io.stdout();
    // This machine may or may not have a spare disk; the hint appears exactly when it has none.
    if (!/^PATH/.test(text)) expect(text).toContain('bty disks --all');
  });
});
