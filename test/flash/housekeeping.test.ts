import { execFile } from 'node:child_process';
import { access, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import {
  findEspPartitionNumber,
  parseBootEntries,
  registerUefiBootEntry,
  settleBlockDevice,
  uefiRegistrationEnabled,
} from '../../src/flash/housekeeping.ts';
import { createLoopDevice, describeIfRoot, type LoopDevice } from '../helpers/loop.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const ESP = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';

function writePartitionTable(device: string, script: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile('sfdisk', ['-q', '--no-reread', device], (err) =>
      err ? reject(new Error(err.message, { cause: err })) : resolve(),
    );
    child.stdin?.end(script);
  });
}

const partitionVisible = (device: string, n: number) =>
  access(`/sys/block/${basename(device)}/${basename(device)}p${n}`).then(
    () => true,
    () => false,
  );

describeIfRoot('settleBlockDevice on a freshly written loop device', () => {
  const devices: LoopDevice[] = [];
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of devices) await d.detach();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('makes the kernel see the new partition table', async () => {
    const device = await createLoopDevice({ sizeBytes: 32 * MiB });
    devices.push(device);
    await writePartitionTable(device.path, 'label: gpt\n,8MiB\n,\n');
    expect(await settleBlockDevice(device.path)).toEqual([]);
    expect(await partitionVisible(device.path, 2)).toBe(true);
  });

  it('falls back to partx when partprobe is not installed', async () => {
    const device = await createLoopDevice({ sizeBytes: 32 * MiB });
    devices.push(device);
    await writePartitionTable(device.path, 'label: gpt\n,8MiB\n');
    // A PATH holding only partx and udevadm: partprobe is "not installed".
    const bin = await mkdtemp(join(tmpdir(), 'bty-path-'));
    dirs.push(bin);
    for (const tool of ['partx', 'udevadm']) {
      const { stdout } = await run('sh', ['-c', `command -v ${tool}`]);
      await symlink(stdout.trim(), join(bin, tool));
    }
    const savedPath = process.env.PATH;
    process.env.PATH = bin;
    try {
      expect(await settleBlockDevice(device.path)).toEqual([]);
    } finally {
      process.env.PATH = savedPath;
    }
    expect(await partitionVisible(device.path, 1)).toBe(true);
  });

  it('notes, rather than throws, when the tools are missing or fail', async () => {
    const savedPath = process.env.PATH;
    process.env.PATH = '/nonexistent';
    let notes: string[];
    try {
      notes = await settleBlockDevice('/dev/null');
    } finally {
      process.env.PATH = savedPath;
    }
    expect(notes).toHaveLength(2);
    expect(notes[0]).toContain('parted');
    expect(notes[1]).toContain('udevadm');

    const failed = await settleBlockDevice('/nonexistent-disk');
    expect(failed[0]).toMatch(/^partprobe \/nonexistent-disk exited with status \d+/);
  });
});

describe('registerUefiBootEntry', () => {
  it('is off unless BTY_REGISTER_UEFI_BOOT opts in', async () => {
    for (const value of [undefined, '', '0', 'false', 'no', 'off', 'enabled']) {
      expect(uefiRegistrationEnabled({ BTY_REGISTER_UEFI_BOOT: value })).toBe(false);
    }
    for (const value of ['1', 'true', 'YES', ' On ']) {
      expect(uefiRegistrationEnabled({ BTY_REGISTER_UEFI_BOOT: value })).toBe(true);
    }
    expect(await registerUefiBootEntry('/dev/sda', {})).toBeNull();
  });

  it('returns a status line instead of failing when it cannot register', async () => {
    const status = await registerUefiBootEntry('/dev/null', {
      BTY_REGISTER_UEFI_BOOT: 'yes',
      PATH: '/nonexistent',
    });
    // Without UEFI (as in most CI machines) or without efibootmgr, the entry is skipped.
    expect(status).toMatch(/^skipped UEFI boot entry: /);
  });
});

describe('findEspPartitionNumber', () => {
  it('finds the ESP by type, using PARTN or else the trailing digits of the path', () => {
    const doc = (children: unknown[]) =>
      JSON.stringify({ blockdevices: [{ path: '/dev/nvme0n1', parttype: null, children }] });
    expect(
      findEspPartitionNumber(
        doc([
          { path: '/dev/nvme0n1p1', parttype: '0fc63daf-8483-4772-8e79-3d69d8477de4', partn: 1 },
          { path: '/dev/nvme0n1p2', parttype: ESP, partn: 2 },
        ]),
      ),
    ).toBe(2);
    expect(findEspPartitionNumber(doc([{ path: '/dev/nvme0n1p3', parttype: ESP }]))).toBe(3);
    expect(findEspPartitionNumber(doc([]))).toBeNull();
    // lsblk prints a flat list when the NAME column is not asked for; MBR types read "0xef".
    const flat = JSON.stringify({
      blockdevices: [
        { path: '/dev/sda', parttype: null },
        { path: '/dev/sda1', parttype: '0x83' },
        { path: '/dev/sda2', parttype: '0xef' },
      ],
    });
    expect(findEspPartitionNumber(flat)).toBe(2);
    expect(findEspPartitionNumber('not json')).toBeNull();
  });
});

describe('findEspPartitionNumber on real tool output', () => {
  let dir: string | undefined;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reads the ESP number from sfdisk -J, for GPT and for MBR type ef', async () => {
    dir = await mkdtemp(join(tmpdir(), 'bty-esp-'));
    const image = join(dir, 'disk.img');
    await run('truncate', ['-s', '32M', image]);
    await writePartitionTable(image, `label: gpt\n,8MiB\n,8MiB,${ESP}\n`);
    expect(findEspPartitionNumber((await run('sfdisk', ['-J', image])).stdout)).toBe(2);
    await writePartitionTable(image, 'label: dos\n,8MiB\n,8MiB,ef\n');
    expect(findEspPartitionNumber((await run('sfdisk', ['-J', image])).stdout)).toBe(2);
  });
});

describe('parseBootEntries', () => {
  it('reads entry numbers and labels from efibootmgr output', () => {
    const output = [
      'BootCurrent: 0001',
      'Timeout: 1 seconds',
      'BootOrder: 0001,0000,0003',
      'Boot0000* UEFI PXEv4 (MAC:525400123456)\tPciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)',
      'Boot0001* debian\tHD(1,GPT,…)/File(\\EFI\\debian\\shimx64.efi)',
      'Boot0003  bty flashed\tHD(2,GPT,…)/File(\\EFI\\BOOT\\BOOTX64.EFI)',
      'Boot00A4* bty flashed',
    ].join('\n');
    expect(parseBootEntries(output)).toEqual([
      { bootnum: '0000', label: 'UEFI PXEv4 (MAC:525400123456)' },
      { bootnum: '0001', label: 'debian' },
      { bootnum: '0003', label: 'bty flashed' },
      { bootnum: '00A4', label: 'bty flashed' },
    ]);
  });
});
