/**
 * The disks the agent reports and may flash: the whole disks lsblk lists (eligible or not, so
 * the server sees the machine as it is and a refused target is refused with its reason), and,
 * only with the test opt-in, loop devices with a made-up serial.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { listDisks, type Disk } from '../flash/disks.ts';

/**
 * Opt-in (`1`) that makes loop devices eligible agent targets with the serial
 * `loop-<basename of the backing file>`. Loop devices have no serial, and tests need a disk the
 * server can name; a real machine never sets it, so a loop device is never flashed by accident.
 */
export const LOOP_IDENTITY_ENV = 'BTY_AGENT_LOOP_IDENTITY';

/** The server stores at most this many disks per inventory (MAX_DISKS in routes/live.ts). */
export const INVENTORY_MAX_DISKS = 64;

/**
 * The largest `lshw` blob the server stores (LSHW_MAX_BYTES in routes/live.ts, kept equal by a
 * test). Copied, not imported: the server module would drag the web stack into the agent.
 */
export const LSHW_MAX_BYTES = 4 * 1024 * 1024;
const LSHW_TIMEOUT_MS = 30_000;
/** Room for lshw's indentation: its pretty output is about three times its compact form. */
const RAW_OUTPUT_FACTOR = 4;

export function loopIdentityEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[LOOP_IDENTITY_ENV] === '1';
}

/** The serial a loop device is given under the opt-in, or null when it has no backing file. */
export async function loopIdentity(name: string, sysBlock = '/sys/block'): Promise<string | null> {
  let backing: string;
  try {
    backing = (await readFile(`${sysBlock}/${name}/loop/backing_file`, 'utf8')).trim();
  } catch {
    return null;
  }
  // The kernel appends this when the backing file was unlinked while attached.
  backing = backing.replace(/ \(deleted\)$/, '');
  return backing === '' ? null : `loop-${basename(backing)}`;
}

export interface AgentDisksOptions {
  loopIdentity: boolean;
  /** Every block device lsblk shows (tests give a fixed list). */
  list?: () => Promise<Disk[]>;
  /** The made-up serial of a loop device (tests give a fixed one). */
  loopSerial?: (name: string) => Promise<string | null>;
}

/** Whole disks (and, with the opt-in, loop devices carrying their identity), in lsblk order. */
export async function agentDisks(options: AgentDisksOptions): Promise<Disk[]> {
  const all = await (options.list ?? (() => listDisks({ all: true })))();
  const serialOf = options.loopSerial ?? ((name: string) => loopIdentity(name));
  const disks: Disk[] = [];
  for (const disk of all) {
    if (disk.type === 'disk') disks.push(disk);
    else if (disk.type === 'loop' && options.loopIdentity) {
      disks.push({ ...disk, serial: disk.serial ?? (await serialOf(disk.name)) });
    }
  }
  return disks;
}

/**
 * One disk as the inventory carries it: upstream's keys (the server drops any others). `size`
 * is a string of bytes, as upstream's agent sends it (a nullable string in its schema), so an
 * upstream bty-web stores it too; ours accepts a number or a string.
 */
export function inventoryRecord(disk: Disk): Record<string, unknown> {
  return {
    path: disk.path,
    size: String(disk.size_bytes),
    type: disk.type,
    vendor: disk.vendor,
    model: disk.model,
    serial: disk.serial,
    tran: disk.tran,
    removable: disk.removable,
    readonly: disk.readonly,
    mountpoints: disk.mountpoints,
  };
}

/**
 * Every disk whose serial (trimmed, non-empty) equals `serial` exactly: the agent refuses when
 * there is more than one, since it could not tell which one the server meant.
 */
export function disksWithSerial(disks: Disk[], serial: string): Disk[] {
  return disks.filter(
    (d) => d.serial !== null && d.serial.trim() !== '' && d.serial.trim() === serial,
  );
}

/** `<path> (serial '<s>')` for each disk, or `(none)`: what a serial refusal lists. */
export function describeDisks(disks: Disk[]): string {
  if (disks.length === 0) return '(none)';
  return disks.map((d) => `${d.path} (serial '${d.serial ?? ''}')`).join(', ');
}

/**
 * `lshw -json`, parsed, or null on any failure: not installed, non-zero exit, a timeout, output
 * larger than the server stores, or output that is not JSON. The inventory goes without it.
 */
export function readLshw(
  program = 'lshw',
  options: { timeoutMs?: number; maxBytes?: number } = {},
): Promise<unknown> {
  const maxBytes = options.maxBytes ?? LSHW_MAX_BYTES;
  return new Promise((resolve) => {
    execFile(
      program,
      ['-json'],
      {
        timeout: options.timeoutMs ?? LSHW_TIMEOUT_MS,
        killSignal: 'SIGKILL',
        // lshw pretty-prints; the cap applies to the compact form sent, checked below. Past
        // this execFile kills lshw and reports an error: the blob is then omitted.
        maxBuffer: maxBytes * RAW_OUTPUT_FACTOR,
        encoding: 'utf8',
      },
      (err, stdout) => {
        if (err || stdout.trim() === '') return resolve(null);
        try {
          const parsed: unknown = JSON.parse(stdout);
          const usable =
            typeof parsed === 'object' &&
            parsed !== null &&
            Buffer.byteLength(JSON.stringify(parsed), 'utf8') <= maxBytes;
          resolve(usable ? parsed : null);
        } catch {
          resolve(null);
        }
      },
    );
  });
}
