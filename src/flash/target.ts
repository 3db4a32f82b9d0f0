/**
 * What a flash target path is, and why bty must not write there.
 *
 * Whole disks (loop devices included) and regular files are valid targets — a file is how people
 * build a raw image. Everything else is refused with a reason; a bad path never throws.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Stats } from 'node:fs';
import { describeBlockDevice, parseSwaps, type Disk, type DiskRefusal } from './disks.ts';

export interface TargetInfo {
  /** As given. */
  path: string;
  kind: 'block' | 'file' | 'missing' | 'other';
  exists: boolean;
  /** Block: device size; file: current size; null when missing. */
  size_bytes: number | null;
  /** Block devices only (null for a partition, which bty never writes). */
  disk: Disk | null;
  /** Why bty must not write here; empty means go. */
  refusals: DiskRefusal[];
}

/** Examines a target path. Throws only when the system tools (lsblk) are missing or fail. */
export async function probeTarget(path: string): Promise<TargetInfo> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (err) {
    return probeMissing(path, err);
  }

  if (st.isBlockDevice()) {
    const record = await describeBlockDevice(path);
    if (record === null) {
      const stillThere = await stat(path).then(
        (s) => s.isBlockDevice(),
        () => false,
      );
      return stillThere
        ? {
            ...base(path, 'block', true),
            size_bytes: 0,
            refusals: [
              {
                code: 'BTY_ERR_TARGET_TOO_SMALL',
                message: `${path} has no medium (an unattached loop device, or an empty card reader)`,
              },
            ],
          }
        : {
            // Removed between the two looks (a USB stick pulled).
            ...base(path, 'missing', false),
            refusals: [{ code: 'BTY_ERR_TARGET_NOT_FOUND', message: `${path} disappeared` }],
          };
    }
    const isPartition = record.type === 'part';
    return {
      ...base(path, 'block', true),
      size_bytes: record.size_bytes,
      disk: isPartition ? null : record,
      refusals: record.reasons,
    };
  }

  if (st.isFile() && isUnderDev(path)) {
    return {
      ...base(path, 'other', true),
      refusals: [
        { code: 'BTY_ERR_TARGET_NOT_FOUND', message: devTypoMessage(path, 'is a regular file') },
      ],
    };
  }

  if (st.isFile()) {
    return {
      ...base(path, 'file', true),
      size_bytes: st.size,
      refusals: await fileRefusals(path, st),
    };
  }

  return {
    ...base(path, 'other', true),
    refusals: [
      {
        code: 'BTY_ERR_TARGET_UNSUPPORTED',
        message: `${path} is ${describeKind(st)}, not a disk or a regular file`,
      },
    ],
  };
}

function isUnderDev(path: string): boolean {
  return resolve(path).startsWith('/dev/');
}

function devTypoMessage(path: string, what: string): string {
  return `${path} ${what}: there is no such disk (a mistyped device name?); bty writes regular files only outside /dev`;
}

function base(path: string, kind: TargetInfo['kind'], exists: boolean): TargetInfo {
  return { path, kind, exists, size_bytes: null, disk: null, refusals: [] };
}

async function probeMissing(path: string, err: unknown): Promise<TargetInfo> {
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== 'ENOENT' && code !== 'ENOTDIR') {
    return {
      ...base(path, 'other', true),
      refusals: [
        {
          code: 'BTY_ERR_TARGET_UNSUPPORTED',
          message: `${path} cannot be examined: ${(err as Error).message}`,
        },
      ],
    };
  }
  // A mistyped device name must not quietly become a file on /dev (a RAM-backed devtmpfs).
  if (isUnderDev(path)) {
    return {
      ...base(path, 'missing', false),
      refusals: [
        { code: 'BTY_ERR_TARGET_NOT_FOUND', message: devTypoMessage(path, 'does not exist') },
      ],
    };
  }
  const parent = dirname(resolve(path));
  const parentIsDir = await stat(parent).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (parentIsDir) return base(path, 'missing', false);
  return {
    ...base(path, 'missing', false),
    refusals: [
      {
        code: 'BTY_ERR_TARGET_NOT_FOUND',
        message: `${path} does not exist and its folder ${parent} does not exist either`,
      },
    ],
  };
}

/**
 * A regular file is fine unless the kernel is using it: the backing file of an attached loop
 * device (possibly mounted through it) or an active swap file.
 */
async function fileRefusals(path: string, st: Stats): Promise<DiskRefusal[]> {
  const refusals: DiskRefusal[] = [];
  const sameFile = async (other: string) =>
    stat(other).then(
      (o) => o.dev === st.dev && o.ino === st.ino,
      () => false,
    );

  const loops = (await readdir('/sys/block').catch(() => [] as string[])).filter((n) =>
    n.startsWith('loop'),
  );
  for (const loop of loops) {
    const backing = await readFile(`/sys/block/${loop}/loop/backing_file`, 'utf8').catch(
      () => null,
    );
    // A backing file deleted while attached is shown with a " (deleted)" suffix: it cannot match.
    if (backing !== null && (await sameFile(backing.trim()))) {
      refusals.push({
        code: 'BTY_ERR_TARGET_IN_USE',
        message: `${path} is the backing file of /dev/${loop}; detach it first (losetup -d /dev/${loop})`,
      });
    }
  }

  const swaps = parseSwaps(await readFile('/proc/swaps', 'utf8').catch(() => ''));
  for (const swap of swaps) {
    if (await sameFile(swap)) {
      refusals.push({ code: 'BTY_ERR_TARGET_IN_USE', message: `${path} is an active swap file` });
    }
  }
  return refusals;
}

function describeKind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isFIFO()) return 'a named pipe';
  if (st.isSocket()) return 'a socket';
  return 'a special file';
}
