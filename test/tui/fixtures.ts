/** Rows, disks and plans for the wizard's tests, shaped like the engine's own. */
import type { PickerRow } from '../../src/catalog/merge.ts';
import type { Disk } from '../../src/flash/disks.ts';
import type { FlashPlan } from '../../src/flash/plan.ts';

export function imageRow(name: string, extra: Partial<PickerRow> = {}): PickerRow {
  return {
    name,
    format: 'img.zst',
    size_bytes: 50 << 20,
    arch: 'x86_64',
    sha256: null,
    source: 'local',
    path: `/images/${name}`,
    ref: `ref-${name}`,
    ...extra,
  };
}

export function disk(name: string, extra: Partial<Disk> = {}): Disk {
  return {
    name,
    path: `/dev/${name}`,
    type: 'disk',
    size_bytes: 64 * 1024 ** 3,
    vendor: null,
    model: 'Samsung SSD 870',
    serial: `S${name.toUpperCase()}123`,
    wwn: null,
    tran: 'sata',
    removable: false,
    readonly: false,
    mountpoints: [],
    logical_block_size: 512,
    write_zeroes: false,
    discard: false,
    eligible: true,
    reasons: [],
    ...extra,
  };
}

export function systemDisk(name: string): Disk {
  return disk(name, {
    eligible: false,
    mountpoints: ['/'],
    reasons: [
      { code: 'BTY_ERR_TARGET_SYSTEM_DISK', message: `/dev/${name} holds the running system (/)` },
    ],
  });
}

export function plan(
  image: PickerRow,
  target: Disk,
  refusals: FlashPlan['refusals'] = [],
): FlashPlan {
  return {
    image: {
      source: image.path ?? image.url ?? image.name,
      kind: 'file',
      name: image.name,
      format: 'img.zst',
      format_from: 'name',
      content: 'zstd',
      size_bytes: image.size_bytes,
      virtual_size_bytes: 2 * 1024 ** 3,
      arch: image.arch,
      sha256: image.sha256,
      sha256_from: image.sha256 ? 'sidecar' : null,
      resolved: null,
    },
    target: {
      path: target.path,
      kind: 'block',
      size_bytes: target.size_bytes,
      model: target.model,
      serial: target.serial,
      wwn: null,
      transport: target.tran,
      zero_strategy: 'write',
    },
    verify: false,
    staging_dir: null,
    notes: [],
    refusals,
  };
}
