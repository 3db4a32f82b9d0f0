/**
 * The machine page's hardware summary from `lshw -json`: a realistic nested report (written by
 * hand after what lshw prints for a small server), the shapes lshw has used over the years,
 * and input that is not lshw at all, which must give an emptier summary and never throw.
 */
import { describe, expect, it } from 'vitest';
import { summariseLshw, summariseLshwText } from '../../src/web/ui/hardware.ts';

const GIB = 2 ** 30;

/** system > core > firmware/cpu/memory(bank*)/cache and pci > network/storage > disk > volume. */
function serverReport(): Record<string, unknown> {
  return {
    id: 'lab-node-7',
    class: 'system',
    claimed: true,
    description: 'Rack Mount Chassis',
    product: 'PowerEdge R640',
    vendor: 'Dell Inc.',
    serial: 'CN7475',
    width: 64,
    configuration: { boot: 'normal', chassis: 'rackmount' },
    children: [
      {
        id: 'core',
        class: 'bus',
        claimed: true,
        description: 'Motherboard',
        children: [
          {
            id: 'firmware',
            class: 'memory',
            description: 'BIOS',
            vendor: 'Dell Inc.',
            size: 65536,
            units: 'bytes',
          },
          {
            id: 'cpu:0',
            class: 'processor',
            claimed: true,
            product: 'Intel(R) Xeon(R) Silver 4110 CPU @ 2.10GHz',
            vendor: 'Intel Corp.',
            size: 2100000000,
            units: 'Hz',
            configuration: { cores: '8', enabledcores: '8', threads: '16' },
            children: [
              {
                id: 'cache:0',
                class: 'memory',
                description: 'L1 cache',
                size: 524288,
                units: 'bytes',
              },
            ],
          },
          {
            id: 'cpu:1',
            class: 'processor',
            claimed: true,
            disabled: true,
            description: 'CPU [empty]',
            product: 'Empty socket',
          },
          {
            id: 'memory',
            class: 'memory',
            claimed: true,
            description: 'System Memory',
            size: 34359738368,
            units: 'bytes',
            children: [
              {
                id: 'bank:0',
                class: 'memory',
                description: 'DIMM DDR4 Synchronous Registered 2666 MHz',
                product: 'M393A2K43BB1-CTD',
                size: 17179869184,
                units: 'bytes',
              },
              {
                id: 'bank:1',
                class: 'memory',
                description: 'DIMM DDR4 Synchronous Registered 2666 MHz',
                size: 17179869184,
                units: 'bytes',
              },
              { id: 'bank:2', class: 'memory', description: '[empty]' },
            ],
          },
          {
            id: 'pci',
            class: 'bridge',
            claimed: true,
            children: [
              {
                id: 'network',
                class: 'network',
                claimed: true,
                description: 'Ethernet interface',
                product: 'I350 Gigabit Network Connection',
                vendor: 'Intel Corporation',
                logicalname: 'eno1',
                serial: '52:54:00:12:34:56',
                configuration: { driver: 'igb', link: 'yes' },
              },
              {
                id: 'network:1',
                class: 'network',
                claimed: true,
                description: 'Ethernet interface',
                product: 'I350 Gigabit Network Connection',
                vendor: 'Intel Corporation',
                logicalname: ['eno2', 'eno2.10'],
                serial: '52:54:00:12:34:57',
              },
              {
                id: 'storage',
                class: 'storage',
                claimed: true,
                product: 'NVMe SSD Controller 980',
                children: [
                  {
                    id: 'disk',
                    class: 'disk',
                    claimed: true,
                    description: 'NVMe disk',
                    product: 'Samsung SSD 980 1TB',
                    logicalname: '/dev/nvme0n1',
                    serial: 'S3Z9NB0K123',
                    size: 1000204886016,
                    units: 'bytes',
                    children: [
                      {
                        id: 'volume:0',
                        class: 'volume',
                        logicalname: ['/dev/nvme0n1p1', '/boot/efi'],
                        size: 536870912,
                      },
                    ],
                  },
                ],
              },
              {
                id: 'sata',
                class: 'storage',
                children: [
                  {
                    id: 'disk',
                    class: 'disk',
                    description: 'ATA Disk',
                    product: 'ST4000NM0035',
                    vendor: 'Seagate',
                    logicalname: ['/dev/sda'],
                    serial: 'ZC1AB2CD',
                    size: '4000787030016',
                    units: 'bytes',
                  },
                ],
              },
            ],
          },
        ],
      },
    ],
  };
}

describe('summariseLshw on a real-looking report', () => {
  const hw = summariseLshw(serverReport());

  it('names the system', () => {
    expect(hw.system).toEqual({ product: 'PowerEdge R640', vendor: 'Dell Inc.', serial: 'CN7475' });
  });

  it('lists the populated CPU sockets with cores and threads, not the empty one', () => {
    expect(hw.cpus).toEqual([
      {
        product: 'Intel(R) Xeon(R) Silver 4110 CPU @ 2.10GHz',
        vendor: 'Intel Corp.',
        cores: 8,
        threads: 16,
      },
    ]);
  });

  it('adds up the memory banks (not the caches, the firmware or the empty slot)', () => {
    expect(hw.memory).toEqual({ totalBytes: 32 * GIB, modules: 2 });
  });

  it('lists the NICs with their names (string or list), MAC and product', () => {
    expect(hw.nics).toEqual([
      {
        logicalNames: ['eno1'],
        mac: '52:54:00:12:34:56',
        product: 'I350 Gigabit Network Connection',
        vendor: 'Intel Corporation',
      },
      {
        logicalNames: ['eno2', 'eno2.10'],
        mac: '52:54:00:12:34:57',
        product: 'I350 Gigabit Network Connection',
        vendor: 'Intel Corporation',
      },
    ]);
  });

  it('lists the disks (not their partitions), a numeric-string size included', () => {
    expect(hw.disks).toEqual([
      {
        logicalName: '/dev/nvme0n1',
        product: 'Samsung SSD 980 1TB',
        vendor: null,
        serial: 'S3Z9NB0K123',
        sizeBytes: 1000204886016,
      },
      {
        logicalName: '/dev/sda',
        product: 'ST4000NM0035',
        vendor: 'Seagate',
        serial: 'ZC1AB2CD',
        sizeBytes: 4000787030016,
      },
    ]);
  });

  it('reads the array-of-roots shape newer lshw prints the same way', () => {
    expect(summariseLshw([serverReport()])).toEqual(hw);
  });

  it('reads the stored JSON text, and gives null for text that is not JSON', () => {
    expect(summariseLshwText(JSON.stringify(serverReport()))).toEqual(hw);
    expect(summariseLshwText('{"class": "system", ')).toBeNull();
    expect(summariseLshwText(null)).toBeNull();
  });
});

describe('summariseLshw on odd input never throws', () => {
  const EMPTY = {
    system: null,
    cpus: [],
    memory: { totalBytes: null, modules: 0 },
    nics: [],
    disks: [],
  };

  it.each([
    ['null', null],
    ['a number', 42],
    ['a string', 'lshw'],
    ['an empty array', []],
    ['an empty object', {}],
    ['nodes without a class', { children: [{ id: 'x' }, { children: null }] }],
  ])('%s: an empty summary', (_name, value) => {
    expect(summariseLshw(value)).toEqual(EMPTY);
  });

  it('wrong types in every field are skipped, not trusted', () => {
    const hw = summariseLshw({
      class: 'system',
      product: { nested: true },
      children: {
        class: 'bus',
        children: [
          { class: 'processor', product: 7, configuration: 'cores=4' },
          { class: 'processor', description: 'CPU', configuration: { cores: '-2', threads: 'x' } },
          { id: 'bank:0', class: 'memory', size: '8 GiB' },
          { id: 'bank:1', class: 'memory', size: 1024, units: 'KiB' },
          { id: 'memory', class: 'memory', size: 4 * GIB, units: 'bytes' },
          { class: 'network', logicalname: [1, null, 'eth0'], serial: 'not-a-mac' },
          { class: 'disk', logicalname: 5, size: -1 },
          'a string child',
          null,
        ],
      },
    });
    expect(hw.system).toEqual({ product: null, vendor: null, serial: null });
    expect(hw.cpus).toEqual([
      { product: '7', vendor: null, cores: null, threads: null },
      { product: 'CPU', vendor: null, cores: null, threads: null },
    ]);
    // No bank has a usable size: the System Memory container's size is the total.
    expect(hw.memory).toEqual({ totalBytes: 4 * GIB, modules: 0 });
    expect(hw.nics).toEqual([{ logicalNames: ['eth0'], mac: null, product: null, vendor: null }]);
    expect(hw.disks).toEqual([
      { logicalName: null, product: null, vendor: null, serial: null, sizeBytes: null },
    ]);
  });

  it('a MAC written with hyphens or in capitals is normalised', () => {
    const hw = summariseLshw({ class: 'network', serial: 'AA-BB-CC-DD-EE-0F' });
    expect(hw.nics[0]!.mac).toBe('aa:bb:cc:dd:ee:0f');
  });

  it('a tree far deeper than any call stack is walked without recursion', () => {
    let node: Record<string, unknown> = { class: 'disk', logicalname: '/dev/deep', size: 512 };
    for (let i = 0; i < 100_000; i++) node = { class: 'bus', children: [node] };
    const hw = summariseLshw(node);
    // The walk stops at its node budget: the summary is partial, and nothing threw.
    expect(hw.disks).toEqual([]);
    const shallow = summariseLshw({ class: 'bus', children: [{ children: [{ class: 'disk' }] }] });
    expect(shallow.disks).toHaveLength(1);
  });
});
