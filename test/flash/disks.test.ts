import { afterAll, describe, expect, it } from 'vitest';
import {
  findDisk,
  listDisks,
  matchDiskBySerial,
  parseLsblk,
  parseMountinfo,
  parseSwaps,
  type Disk,
  type SystemContext,
} from '../../src/flash/disks.ts';
import { isBtyError } from '../../src/core/errors.ts';
import {
  createLoopDevice,
  describeIfRoot,
  mountPartition,
  type LoopDevice,
} from '../helpers/loop.ts';

const MiB = 1024 * 1024;

/** One lsblk -J -b node with the columns bty asks for; tests override what matters. */
function node(fields: Record<string, unknown>): Record<string, unknown> {
  return {
    name: 'sda',
    path: '/dev/sda',
    size: 500107862016,
    type: 'disk',
    vendor: null,
    model: null,
    serial: null,
    wwn: null,
    rm: false,
    ro: false,
    mountpoints: [null],
    tran: null,
    pkname: null,
    fstype: null,
    'maj:min': '8:0',
    ...fields,
  };
}

function lsblk(...devices: Array<Record<string, unknown>>): string {
  return JSON.stringify({ blockdevices: devices });
}

const rootOnVda: SystemContext = {
  protectedMounts: [{ mountpoint: '/', devnos: ['254:0'] }],
  swapDevnos: [],
  sysfs: {},
};

function codes(disk: Disk | undefined): string[] {
  return (disk?.reasons ?? []).map((r) => r.code);
}

describe('parseLsblk', () => {
  it('an idle SATA disk is eligible and keeps sizes in bytes and trimmed identity', () => {
    const [disk] = parseLsblk(
      lsblk(
        node({
          vendor: 'ATA     ',
          model: 'Samsung SSD 870  ',
          serial: ' S5Y1NX0R123456 ',
          wwn: '0x5002538f4212abcd',
          tran: 'sata',
        }),
      ),
      {
        ...rootOnVda,
        sysfs: { sda: { logical_block_size: 512, write_zeroes: true, discard: true } },
      },
    );
    expect(disk).toEqual({
      name: 'sda',
      path: '/dev/sda',
      type: 'disk',
      size_bytes: 500107862016,
      vendor: 'ATA',
      model: 'Samsung SSD 870',
      serial: 'S5Y1NX0R123456',
      wwn: '0x5002538f4212abcd',
      tran: 'sata',
      removable: false,
      readonly: false,
      mountpoints: [],
      logical_block_size: 512,
      write_zeroes: true,
      discard: true,
      eligible: true,
      reasons: [],
    });
  });

  it('an NVMe disk with mounted partitions is refused and lists every mountpoint', () => {
    const [disk] = parseLsblk(
      lsblk(
        node({
          name: 'nvme0n1',
          path: '/dev/nvme0n1',
          tran: 'nvme',
          'maj:min': '259:0',
          children: [
            node({
              name: 'nvme0n1p1',
              path: '/dev/nvme0n1p1',
              type: 'part',
              pkname: 'nvme0n1',
              mountpoints: ['/mnt/esp'],
              'maj:min': '259:1',
            }),
            node({
              name: 'nvme0n1p2',
              path: '/dev/nvme0n1p2',
              type: 'part',
              pkname: 'nvme0n1',
              mountpoints: ['/srv/data', '/srv/data-bind'],
              'maj:min': '259:2',
            }),
          ],
        }),
      ),
      rootOnVda,
    );
    expect(disk?.mountpoints).toEqual(['/mnt/esp', '/srv/data', '/srv/data-bind']);
    expect(disk?.eligible).toBe(false);
    expect(codes(disk)).toEqual(['BTY_ERR_TARGET_MOUNTED']);
    expect(disk?.reasons[0]?.message).toContain('/mnt/esp, /srv/data, /srv/data-bind');
    expect(disk?.reasons[0]?.message).toContain('Unmount it first');
  });

  it('a disk under an active LVM volume is in use, and its nested mountpoints count', () => {
    const [disk] = parseLsblk(
      lsblk(
        node({
          name: 'sdb',
          path: '/dev/sdb',
          'maj:min': '8:16',
          children: [
            node({
              name: 'sdb1',
              path: '/dev/sdb1',
              type: 'part',
              fstype: 'LVM2_member',
              'maj:min': '8:17',
              children: [
                node({
                  name: 'data-vol',
                  path: '/dev/mapper/data-vol',
                  type: 'lvm',
                  mountpoints: ['/var/lib/data'],
                  'maj:min': '254:3',
                }),
              ],
            }),
          ],
        }),
      ),
      rootOnVda,
    );
    expect(disk?.mountpoints).toEqual(['/var/lib/data']);
    expect(codes(disk)).toEqual(['BTY_ERR_TARGET_MOUNTED', 'BTY_ERR_TARGET_IN_USE']);
    expect(disk?.reasons[1]?.message).toContain('data-vol (lvm)');
  });

  it('an unmounted dm-crypt mapping still holds the disk', () => {
    const [disk] = parseLsblk(
      lsblk(
        node({
          children: [
            node({
              name: 'sda1',
              type: 'part',
              children: [node({ name: 'secret', type: 'crypt', 'maj:min': '254:5' })],
            }),
          ],
        }),
      ),
      rootOnVda,
    );
    expect(codes(disk)).toEqual(['BTY_ERR_TARGET_IN_USE']);
  });

  it('a read-only disk is refused (old lsblk "1" strings parse too)', () => {
    const disks = parseLsblk(
      lsblk(node({ ro: true }), node({ name: 'sdc', path: '/dev/sdc', ro: '1', rm: '0' })),
      rootOnVda,
    );
    for (const disk of disks) {
      expect(disk.readonly).toBe(true);
      expect(disk.removable).toBe(false);
      expect(codes(disk)).toEqual(['BTY_ERR_TARGET_READONLY']);
    }
  });

  it('a removable USB stick without mounts is eligible', () => {
    const [disk] = parseLsblk(
      lsblk(
        node({
          name: 'sdd',
          path: '/dev/sdd',
          size: 31042043904,
          vendor: 'SanDisk ',
          model: 'Ultra',
          serial: '4C530001230812345678',
          rm: true,
          tran: 'usb',
          children: [node({ name: 'sdd1', path: '/dev/sdd1', type: 'part', fstype: 'vfat' })],
        }),
      ),
      rootOnVda,
    );
    expect(disk).toMatchObject({
      removable: true,
      tran: 'usb',
      vendor: 'SanDisk',
      size_bytes: 31042043904,
      eligible: true,
    });
  });

  it('the disk holding / is the system disk, found through partition and LVM parents', () => {
    const [disk] = parseLsblk(
      lsblk(
        node({
          name: 'vda',
          path: '/dev/vda',
          'maj:min': '253:0',
          children: [
            node({
              name: 'vda2',
              type: 'part',
              'maj:min': '253:2',
              children: [
                // lsblk may not see the mount (another mount namespace): the device number does.
                node({ name: 'vg-root', type: 'lvm', 'maj:min': '254:0', mountpoints: [null] }),
              ],
            }),
          ],
        }),
      ),
      rootOnVda,
    );
    expect(codes(disk)).toContain('BTY_ERR_TARGET_SYSTEM_DISK');
    expect(disk?.reasons.find((r) => r.code === 'BTY_ERR_TARGET_SYSTEM_DISK')?.message).toContain(
      'running system',
    );
  });

  it('the live medium disk is protected even when its mount has an anonymous device', () => {
    const context: SystemContext = {
      protectedMounts: [
        { mountpoint: '/', devnos: [] }, // overlay root of a live system
        { mountpoint: '/run/live/medium', devnos: [] },
      ],
      swapDevnos: [],
      sysfs: {},
    };
    const [disk] = parseLsblk(
      lsblk(
        node({
          rm: true,
          tran: 'usb',
          children: [node({ name: 'sda1', type: 'part', mountpoints: ['/run/live/medium'] })],
        }),
      ),
      context,
    );
    expect(codes(disk)).toEqual(['BTY_ERR_TARGET_SYSTEM_DISK', 'BTY_ERR_TARGET_MOUNTED']);
    expect(disk?.reasons[0]?.message).toContain('live medium');
  });

  it('active swap makes a disk in use, and [SWAP] is not reported as a mountpoint', () => {
    const [byLsblk, byProcSwaps] = parseLsblk(
      lsblk(
        node({ children: [node({ name: 'sda2', type: 'part', mountpoints: ['[SWAP]'] })] }),
        node({
          name: 'sdb',
          path: '/dev/sdb',
          'maj:min': '8:16',
          children: [node({ name: 'sdb2', type: 'part', 'maj:min': '8:18' })],
        }),
      ),
      { ...rootOnVda, swapDevnos: ['8:18'] },
    );
    expect(byLsblk?.mountpoints).toEqual([]);
    expect(codes(byLsblk)).toEqual(['BTY_ERR_TARGET_IN_USE']);
    expect(codes(byProcSwaps)).toEqual(['BTY_ERR_TARGET_IN_USE']);
  });

  it('zram and empty card readers are refused with clear reasons', () => {
    const [zram, reader] = parseLsblk(
      lsblk(
        node({ name: 'zram0', path: '/dev/zram0', size: 8589934592, mountpoints: ['[SWAP]'] }),
        node({ name: 'sde', path: '/dev/sde', size: 0, rm: true, tran: 'usb' }),
      ),
      rootOnVda,
    );
    expect(codes(zram)).toContain('BTY_ERR_TARGET_UNSUPPORTED');
    expect(zram?.reasons[0]?.message).toContain('zram');
    expect(codes(reader)).toEqual(['BTY_ERR_TARGET_TOO_SMALL']);
    expect(reader?.reasons[0]?.message).toContain('0 bytes');
  });

  it('a partition asked for by path is refused as a partition', () => {
    const [part] = parseLsblk(
      lsblk(node({ name: 'sda1', path: '/dev/sda1', type: 'part', pkname: 'sda' })),
      rootOnVda,
    );
    expect(part?.type).toBe('part');
    expect(codes(part)).toEqual(['BTY_ERR_TARGET_PARTITION']);
  });

  it('sysfs facts default sensibly when a device is missing from sysfs', () => {
    const [disk] = parseLsblk(lsblk(node({ path: undefined })), rootOnVda);
    expect(disk).toMatchObject({
      path: '/dev/sda',
      logical_block_size: 512,
      write_zeroes: false,
      discard: false,
    });
  });

  it('bad lsblk output is BTY_ERR_DISKS_UNAVAILABLE', () => {
    for (const bad of ['not json', '{"devices": []}', '[]']) {
      try {
        parseLsblk(bad, rootOnVda);
        expect.unreachable();
      } catch (err) {
        expect(isBtyError(err, 'BTY_ERR_DISKS_UNAVAILABLE')).toBe(true);
      }
    }
  });
});

describe('parseMountinfo and parseSwaps', () => {
  it('reads device numbers, mountpoints (with escapes) and sources', () => {
    const entries = parseMountinfo(
      [
        '26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw',
        '40 26 8:1 / /run/live/my\\040medium ro,noatime - vfat /dev/sda1 ro',
        '41 26 0:35 / /home rw master:2 - btrfs /dev/sdb2 rw,subvol=/home',
        'garbage',
      ].join('\n'),
    );
    expect(entries).toEqual([
      { devno: '254:0', mountpoint: '/', fstype: 'ext4', source: '/dev/mapper/vg-root' },
      { devno: '8:1', mountpoint: '/run/live/my medium', fstype: 'vfat', source: '/dev/sda1' },
      { devno: '0:35', mountpoint: '/home', fstype: 'btrfs', source: '/dev/sdb2' },
    ]);
  });

  it('lists swap areas', () => {
    expect(
      parseSwaps(
        'Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n' +
          '/dev/dm-1                               partition\t8388604\t\t0\t\t-2\n' +
          '/swap\\040file                          file\t\t1048572\t\t0\t\t-3\n',
      ),
    ).toEqual(['/dev/dm-1', '/swap file']);
  });
});

describe('matchDiskBySerial', () => {
  const disks = parseLsblk(
    lsblk(
      node({ name: 'sda', path: '/dev/sda', serial: null }),
      node({ name: 'sdb', path: '/dev/sdb', serial: '  ' }),
      node({ name: 'sdc', path: '/dev/sdc', serial: ' WD-ABC123 ' }),
      node({ name: 'sdd', path: '/dev/sdd', serial: 'WD-ABC123' }),
    ),
    rootOnVda,
  );

  it('picks the first disk whose trimmed serial equals the requested one exactly', () => {
    expect(matchDiskBySerial(disks, 'WD-ABC123')?.path).toBe('/dev/sdc');
  });

  it('is case-sensitive, does not trim the request, and never matches a missing serial', () => {
    expect(matchDiskBySerial(disks, 'wd-abc123')).toBeNull();
    expect(matchDiskBySerial(disks, ' WD-ABC123')).toBeNull();
    expect(matchDiskBySerial(disks, '')).toBeNull();
    expect(matchDiskBySerial(disks, '  ')).toBeNull();
  });
});

describeIfRoot('listDisks and findDisk on real loop devices', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });
  async function loop(options: Parameters<typeof createLoopDevice>[0]): Promise<LoopDevice> {
    const device = await createLoopDevice(options);
    cleanups.push(device.detach);
    return device;
  }

  it('lists no loop device by default, and the loop device in bytes with all', async () => {
    const device = await loop({ sizeBytes: 48 * MiB });
    const defaults = await listDisks();
    expect(defaults.some((d) => d.type === 'loop' || d.path === device.path)).toBe(false);
    expect(defaults.every((d) => d.eligible)).toBe(true);

    const all = await listDisks({ all: true });
    const found = all.find((d) => d.path === device.path);
    expect(found).toMatchObject({
      type: 'loop',
      size_bytes: 48 * MiB,
      readonly: false,
      mountpoints: [],
      eligible: true,
      reasons: [],
    });
    expect(found?.logical_block_size).toBeGreaterThanOrEqual(512);
  });

  it('a mounted partition makes its loop disk refused as MOUNTED, naming the mountpoint', async () => {
    const device = await loop({ sizeBytes: 64 * MiB, partitions: true });
    expect(device.partitions).toHaveLength(2);
    const mount = await mountPartition(device.partitions[1] ?? '');
    cleanups.push(mount.unmount);

    const disk = await findDisk(device.path);
    expect(disk?.mountpoints).toEqual([mount.mountpoint]);
    const mounted = disk?.reasons.find((r) => r.code === 'BTY_ERR_TARGET_MOUNTED');
    expect(mounted?.message).toContain(mount.mountpoint);
    expect(disk?.eligible).toBe(false);

    const listed = (await listDisks({ all: true })).find((d) => d.path === device.path);
    expect(listed?.reasons.map((r) => r.code)).toEqual(['BTY_ERR_TARGET_MOUNTED']);
    await mount.unmount();
    expect((await findDisk(device.path))?.eligible).toBe(true);
  });

  it('a loop device attached read-only is refused as READONLY', async () => {
    const device = await loop({ sizeBytes: 8 * MiB, readOnly: true });
    const disk = await findDisk(device.path);
    expect(disk?.readonly).toBe(true);
    expect(disk?.reasons.map((r) => r.code)).toEqual(['BTY_ERR_TARGET_READONLY']);
  });

  it('findDisk returns null for a partition, a regular file and a missing path', async () => {
    const device = await loop({ sizeBytes: 16 * MiB, partitions: true });
    expect(await findDisk(device.partitions[0] ?? '')).toBeNull();
    expect(await findDisk(device.backingFile)).toBeNull();
    expect(await findDisk('/dev/does-not-exist')).toBeNull();
  });

  it('the disk holding / is never offered', async () => {
    const all = await listDisks({ all: true });
    const system = all.filter((d) =>
      d.reasons.some((r) => r.code === 'BTY_ERR_TARGET_SYSTEM_DISK'),
    );
    // Containers may root on overlay with no disk behind it; when a disk holds /, it is refused.
    for (const disk of system) expect(disk.eligible).toBe(false);
    const defaults = await listDisks();
    expect(defaults.filter((d) => system.some((s) => s.path === d.path))).toEqual([]);
  });
});
