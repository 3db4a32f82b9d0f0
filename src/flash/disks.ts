/**
 * Disk discovery and wrong-disk protection.
 *
 * `lsblk -J -b` gives the device tree; the facts lsblk does not know (what holds `/` and the live
 * medium, active swap, queue limits from sysfs) are read once per call into a `SystemContext`, so
 * deciding whether a disk may be written is the pure, table-tested `parseLsblk`.
 *
 * Better than upstream: sizes are bytes, a disk's mountpoints include its partitions' (and
 * anything stacked on them), and read-only, in-use and system disks carry the reasons they are
 * refused instead of being offered.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { BtyError, type ErrorCode } from '../core/errors.ts';

export interface DiskRefusal {
  code: ErrorCode;
  message: string;
}

export interface Disk {
  name: string;
  path: string;
  /** lsblk TYPE: 'disk', 'loop', 'rom', 'part' (only when a partition is asked for by path). */
  type: string;
  size_bytes: number;
  vendor: string | null;
  model: string | null;
  serial: string | null;
  wwn: string | null;
  tran: string | null;
  removable: boolean;
  readonly: boolean;
  /** The disk's own and every descendant's (partitions, LVM, dm-crypt), without swap. */
  mountpoints: string[];
  logical_block_size: number;
  /** The kernel offloads BLKZEROOUT (queue/write_zeroes_max_bytes > 0). */
  write_zeroes: boolean;
  /** queue/discard_max_bytes > 0. */
  discard: boolean;
  eligible: boolean;
  reasons: DiskRefusal[];
}

/** Queue limits of one whole block device, from /sys/block/<name>/queue. */
export interface SysfsFacts {
  logical_block_size: number;
  write_zeroes: boolean;
  discard: boolean;
}

/** A mount whose disk bty must never overwrite: `/` or the live medium. */
export interface ProtectedMount {
  mountpoint: string;
  /** `maj:min` of the block devices behind it (from mountinfo and from its source's node). */
  devnos: string[];
}

/** Facts about the running system gathered once per call, so `parseLsblk` stays pure. */
export interface SystemContext {
  protectedMounts: ProtectedMount[];
  /** `maj:min` of the block devices with active swap. */
  swapDevnos: string[];
  /** Keyed by kernel name (`sda`, `nvme0n1`, `loop3`). */
  sysfs: Record<string, SysfsFacts>;
}

/** `/` and every place a Debian/Ubuntu/dracut live system mounts its own medium. */
export const PROTECTED_MOUNTPOINTS = [
  '/',
  '/run/live/medium',
  '/lib/live/mount/medium',
  '/cdrom',
  '/run/initramfs/live',
  '/var/lib/bty/images',
] as const;

const LSBLK_COLUMNS =
  'NAME,PATH,SIZE,TYPE,VENDOR,MODEL,SERIAL,WWN,RM,RO,MOUNTPOINTS,TRAN,PKNAME,FSTYPE,MAJ:MIN';
const LSBLK_TIMEOUT_MS = 10_000;
const DEFAULT_SYSFS: SysfsFacts = { logical_block_size: 512, write_zeroes: false, discard: false };
/** lsblk lists active swap as this pseudo mountpoint; it is reported as "in use", not mounted. */
const SWAP_MOUNTPOINT = '[SWAP]';

/**
 * Whole disks bty may write to. By default only eligible disks of type `disk`; with `all`, every
 * top-level device lsblk knows (loop devices included) with the reasons it is refused.
 */
export async function listDisks(
  options: { all?: boolean; timeoutMs?: number } = {},
): Promise<Disk[]> {
  const [json, context] = await Promise.all([
    runLsblk([], options.timeoutMs ?? LSBLK_TIMEOUT_MS),
    gatherSystemContext(),
  ]);
  const disks = parseLsblk(json, context);
  return options.all ? disks : disks.filter((d) => d.type === 'disk' && d.eligible);
}

/**
 * The whole-disk record for a path (symlinks such as /dev/disk/by-id/… are followed), loop
 * devices included. Null when the path is not a block device or is a partition.
 */
export async function findDisk(path: string): Promise<Disk | null> {
  const record = await describeBlockDevice(path);
  return record && record.type !== 'part' ? record : null;
}

/**
 * The record of any block device by path — a partition comes back with type `part` and a
 * BTY_ERR_TARGET_PARTITION refusal. Null when the path is not (or no longer) a block device, or
 * lsblk does not list it (an unattached loop device).
 */
export async function describeBlockDevice(path: string): Promise<Disk | null> {
  const device = await blockDevicePath(path);
  if (device === null) return null;
  let json: string;
  try {
    json = await runLsblk([device], LSBLK_TIMEOUT_MS);
  } catch (err) {
    // The device vanished between stat and lsblk (a USB stick pulled): not a block device now.
    if ((await blockDevicePath(path)) === null) return null;
    throw err;
  }
  return parseLsblk(json, await gatherSystemContext())[0] ?? null;
}

/**
 * The disk a server plan names by serial: the first disk whose serial (trimmed) is non-empty and
 * exactly equal, case-sensitively, to the requested one. A disk without a serial never matches.
 */
export function matchDiskBySerial(disks: Disk[], serial: string): Disk | null {
  return (
    disks.find((d) => d.serial !== null && d.serial.trim() !== '' && d.serial.trim() === serial) ??
    null
  );
}

// ---------------------------------------------------------------------------------------------
// Parsing and eligibility (pure)

interface LsblkNode {
  name?: unknown;
  path?: unknown;
  size?: unknown;
  type?: unknown;
  vendor?: unknown;
  model?: unknown;
  serial?: unknown;
  wwn?: unknown;
  rm?: unknown;
  ro?: unknown;
  mountpoints?: unknown;
  /** lsblk before 2.37 only had the singular column. */
  mountpoint?: unknown;
  tran?: unknown;
  'maj:min'?: unknown;
  children?: unknown;
}

/** Every top-level device of an `lsblk -J -b` document, with its eligibility decided. */
export function parseLsblk(json: string, context: SystemContext): Disk[] {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    throw new BtyError('BTY_ERR_DISKS_UNAVAILABLE', 'lsblk printed something that is not JSON', {
      details: { output: json.slice(0, 200) },
    });
  }
  const devices = isObject(doc) ? doc.blockdevices : undefined;
  if (!Array.isArray(devices)) {
    throw new BtyError('BTY_ERR_DISKS_UNAVAILABLE', 'lsblk output has no "blockdevices" list');
  }
  return devices.filter(isObject).map((node) => toDisk(node as LsblkNode, context));
}

function toDisk(node: LsblkNode, context: SystemContext): Disk {
  const name = text(node.name) ?? '';
  const path = text(node.path) ?? `/dev/${name}`;
  const type = text(node.type) ?? 'unknown';
  const subtree = [node, ...descendants(node)];
  const allMounts = unique(subtree.flatMap(mountpointsOf));
  const sysfs = context.sysfs[name] ?? DEFAULT_SYSFS;
  const disk: Disk = {
    name,
    path,
    type,
    size_bytes: toNumber(node.size),
    vendor: text(node.vendor),
    model: text(node.model),
    serial: text(node.serial),
    wwn: text(node.wwn),
    tran: text(node.tran),
    removable: toBool(node.rm),
    readonly: toBool(node.ro),
    mountpoints: allMounts.filter((m) => m !== SWAP_MOUNTPOINT),
    logical_block_size: sysfs.logical_block_size,
    write_zeroes: sysfs.write_zeroes,
    discard: sysfs.discard,
    eligible: true,
    reasons: [],
  };
  disk.reasons = refusalsFor(disk, subtree, allMounts, context);
  disk.eligible = disk.reasons.length === 0;
  return disk;
}

function refusalsFor(
  disk: Disk,
  subtree: LsblkNode[],
  allMounts: string[],
  context: SystemContext,
): DiskRefusal[] {
  const reasons: DiskRefusal[] = [];
  const refuse = (code: ErrorCode, message: string) => reasons.push({ code, message });

  if (disk.type === 'part') {
    refuse('BTY_ERR_TARGET_PARTITION', `${disk.path} is a partition, not a whole disk`);
  } else if (/^zram\d+$/.test(disk.name)) {
    refuse(
      'BTY_ERR_TARGET_UNSUPPORTED',
      `${disk.path} is a compressed RAM disk (zram), not a disk`,
    );
  } else if (disk.type !== 'disk' && disk.type !== 'loop') {
    refuse('BTY_ERR_TARGET_UNSUPPORTED', `${disk.path} is a ${disk.type} device, not a disk`);
  }
  if (disk.size_bytes <= 0) {
    refuse('BTY_ERR_TARGET_TOO_SMALL', `${disk.path} has a size of 0 bytes (no medium inserted?)`);
  }
  if (disk.readonly) refuse('BTY_ERR_TARGET_READONLY', `${disk.path} is read-only`);

  const devnos = new Set(subtree.map((n) => text(n['maj:min'])).filter((d) => d !== null));
  const held = context.protectedMounts.filter(
    (p) => p.devnos.some((d) => devnos.has(d)) || allMounts.includes(p.mountpoint),
  );
  if (held.length > 0) {
    const what = held.map((p) => p.mountpoint);
    refuse(
      'BTY_ERR_TARGET_SYSTEM_DISK',
      what.includes('/')
        ? `${disk.path} holds the running system (${what.join(', ')})`
        : `${disk.path} holds the live medium bty runs from (${what.join(', ')})`,
    );
  }
  if (disk.mountpoints.length > 0) {
    refuse(
      'BTY_ERR_TARGET_MOUNTED',
      `${disk.path} is in use: mounted at ${disk.mountpoints.join(', ')}. ` +
        'Unmount it first if you really mean to overwrite it.',
    );
  }

  // Anything stacked on the disk other than its partitions (LVM, dm-crypt, md RAID, multipath)
  // keeps it open: writing underneath would corrupt a live device.
  const stacked = subtree.slice(1).filter((n) => text(n.type) !== 'part');
  const stackedNames = unique(
    stacked.map((n) => `${text(n.name) ?? '?'} (${text(n.type) ?? '?'})`),
  );
  if (stackedNames.length > 0) {
    refuse(
      'BTY_ERR_TARGET_IN_USE',
      `${disk.path} holds active devices: ${stackedNames.join(', ')}`,
    );
  }
  const swapOn = subtree.filter((n) => {
    const devno = text(n['maj:min']);
    return (
      mountpointsOf(n).includes(SWAP_MOUNTPOINT) ||
      (devno !== null && context.swapDevnos.includes(devno))
    );
  });
  if (swapOn.length > 0) {
    const where = unique(swapOn.map((n) => text(n.path) ?? `/dev/${text(n.name) ?? '?'}`));
    refuse('BTY_ERR_TARGET_IN_USE', `${disk.path} has active swap on ${where.join(', ')}`);
  }
  return reasons;
}

function descendants(node: LsblkNode): LsblkNode[] {
  const children = Array.isArray(node.children) ? node.children.filter(isObject) : [];
  return children.flatMap((c) => [c as LsblkNode, ...descendants(c as LsblkNode)]);
}

function mountpointsOf(node: LsblkNode): string[] {
  const raw = Array.isArray(node.mountpoints) ? node.mountpoints : [node.mountpoint];
  return raw.map(text).filter((m) => m !== null);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Trimmed string, or null when absent or blank (lsblk pads vendor names with spaces). */
function text(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const trimmed = value.trim();
  return trimmed === '' ? null : trimmed;
}

function toNumber(value: unknown): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : NaN;
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/** Very old lsblk prints "0"/"1" strings, newer prints booleans. */
function toBool(value: unknown): boolean {
  if (typeof value === 'string') return value.trim() === '1' || value.trim() === 'true';
  return value === true || value === 1;
}

function unique<T>(values: T[]): T[] {
  return [...new Set(values)];
}

// ---------------------------------------------------------------------------------------------
// System facts (impure, gathered once per call)

/** Reads mountinfo, swaps and sysfs queue limits; missing files give empty facts, never errors. */
export async function gatherSystemContext(): Promise<SystemContext> {
  const [mountinfo, swaps, sysfs] = await Promise.all([
    readFile('/proc/self/mountinfo', 'utf8').catch(() => ''),
    readFile('/proc/swaps', 'utf8').catch(() => ''),
    readSysfsFacts(),
  ]);
  const wanted = new Set<string>(PROTECTED_MOUNTPOINTS);
  const protectedMounts = await Promise.all(
    parseMountinfo(mountinfo)
      .filter((m) => wanted.has(m.mountpoint))
      .map(async (m) => {
        const devnos: string[] = [];
        // Major 0 is an anonymous device (btrfs subvolume, overlay, tmpfs): not a disk number.
        if (!m.devno.startsWith('0:')) devnos.push(m.devno);
        const fromSource = await blockDevno(m.source);
        if (fromSource !== null && !devnos.includes(fromSource)) devnos.push(fromSource);
        return { mountpoint: m.mountpoint, devnos };
      }),
  );
  const swapDevnos = (await Promise.all(parseSwaps(swaps).map(blockDevno))).filter(
    (d) => d !== null,
  );
  return { protectedMounts, swapDevnos, sysfs };
}

export interface MountinfoEntry {
  devno: string;
  mountpoint: string;
  fstype: string;
  source: string;
}

/** Parses /proc/self/mountinfo (see proc(5)); octal escapes such as `\040` are decoded. */
export function parseMountinfo(textContent: string): MountinfoEntry[] {
  const entries: MountinfoEntry[] = [];
  for (const line of textContent.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    const devno = fields[2];
    const mountpoint = fields[4];
    if (separator < 0 || devno === undefined || mountpoint === undefined) continue;
    entries.push({
      devno,
      mountpoint: unescapeOctal(mountpoint),
      fstype: fields[separator + 1] ?? '',
      source: unescapeOctal(fields[separator + 2] ?? ''),
    });
  }
  return entries;
}

/** The swap areas named in /proc/swaps (devices and files). */
export function parseSwaps(textContent: string): string[] {
  return textContent
    .split('\n')
    .slice(1)
    .map((line) => line.split(/\s+/)[0] ?? '')
    .filter((name) => name !== '')
    .map(unescapeOctal);
}

function unescapeOctal(value: string): string {
  return value.replace(/\\([0-7]{3})/g, (_, octal: string) =>
    String.fromCharCode(parseInt(octal, 8)),
  );
}

async function readSysfsFacts(): Promise<Record<string, SysfsFacts>> {
  const names = await readdir('/sys/block').catch(() => [] as string[]);
  const entries = await Promise.all(
    names.map(async (name): Promise<[string, SysfsFacts]> => {
      const queue = `/sys/block/${name}/queue`;
      const [blockSize, zeroes, discard] = await Promise.all(
        ['logical_block_size', 'write_zeroes_max_bytes', 'discard_max_bytes'].map((f) =>
          readFile(`${queue}/${f}`, 'utf8').then(
            (v) => Number(v.trim()),
            () => 0,
          ),
        ),
      );
      return [
        name,
        {
          logical_block_size: blockSize && blockSize > 0 ? blockSize : 512,
          write_zeroes: (zeroes ?? 0) > 0,
          discard: (discard ?? 0) > 0,
        },
      ];
    }),
  );
  return Object.fromEntries(entries);
}

/** `maj:min` of a block device node, or null when the path is not one. */
async function blockDevno(path: string): Promise<string | null> {
  if (!path.startsWith('/')) return null;
  try {
    const st = await stat(path, { bigint: true });
    if (!st.isBlockDevice()) return null;
    return devnoOf(st.rdev);
  } catch {
    return null;
  }
}

/** Linux dev_t encoding (glibc gnu_dev_major/minor). */
function devnoOf(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** The canonical node path when `path` is a block device, else null. */
async function blockDevicePath(path: string): Promise<string | null> {
  try {
    const resolved = await realpath(path);
    return (await stat(resolved)).isBlockDevice() ? resolved : null;
  } catch {
    return null;
  }
}

function runLsblk(devices: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'lsblk',
      ['-J', '-b', '-o', LSBLK_COLUMNS, ...devices],
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        // Exit 32/64: none/some of the named devices exist for lsblk (an unattached loop device
        // has no size and is skipped); the JSON of the ones it found is still valid.
        if (!err || (devices.length > 0 && (err.code === 32 || err.code === 64) && stdout.trim())) {
          return resolve(stdout);
        }
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') {
          return reject(
            new BtyError(
              'BTY_ERR_TOOL_MISSING',
              'lsblk is not installed (Debian package util-linux)',
              { hint: 'Install it: apt-get install util-linux', cause: err },
            ),
          );
        }
        const why = err.killed
          ? `did not answer within ${Math.round(timeoutMs / 1000)} s`
          : `failed: ${stderr.trim() || err.message}`;
        reject(
          new BtyError('BTY_ERR_DISKS_UNAVAILABLE', `lsblk ${why}`, {
            cause: err,
            details: { devices },
          }),
        );
      },
    );
  });
}
