/**
 * Read-back verification after a streamed flash. Only the written ranges are read in full and
 * hashed (against the hash taken while writing); the skipped zero ranges are spot-checked — the
 * first and last block of each and one block every SAMPLE_STRIDE — which catches a device that
 * ignored a zeroing request without paying to re-read gigabytes of zeros.
 *
 * Reads must come from the medium, not the page cache that the write just filled: block devices
 * get `blockdev --flushbufs`, files `dd iflag=nocache count=0`, before anything is read.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import { BtyError } from '../core/errors.ts';

const run = promisify(execFile);
const READ_CHUNK = 4 << 20;
const SAMPLE_BYTES = 4096;
export const SAMPLE_STRIDE = 8 << 20;

export interface VerifyRequest {
  path: string;
  isBlockDevice: boolean;
  /** Image length; zero ranges are the gaps between `ranges` inside [0, length). */
  length: number;
  ranges: Array<[number, number]>;
  expectedSha256: string;
  signal?: AbortSignal;
  onBytes?: (bytesRead: number) => void;
}

export interface VerifyResult {
  bytesRead: number;
  zeroSamples: number;
}

/** Drops cached pages so the read-back reaches the medium. Best effort. */
export async function dropCache(path: string, isBlockDevice: boolean): Promise<void> {
  try {
    if (isBlockDevice) await run('blockdev', ['--flushbufs', path], { timeout: 60_000 });
    else
      await run('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none'], {
        timeout: 60_000,
      });
  } catch {
    // Without it the check still compares bytes, just possibly from memory.
  }
}

function zeroGaps(length: number, ranges: Array<[number, number]>): Array<[number, number]> {
  const gaps: Array<[number, number]> = [];
  let pos = 0;
  for (const [s, e] of ranges) {
    if (s > pos) gaps.push([pos, s]);
    pos = e;
  }
  if (pos < length) gaps.push([pos, length]);
  return gaps;
}

function samplesOf([start, end]: [number, number]): number[] {
  const offsets = new Set<number>([start]);
  for (let o = start + SAMPLE_STRIDE; o < end; o += SAMPLE_STRIDE) offsets.add(o);
  offsets.add(Math.max(start, end - SAMPLE_BYTES));
  return [...offsets];
}

export async function verifyWritten(req: VerifyRequest): Promise<VerifyResult> {
  await dropCache(req.path, req.isBlockDevice);
  const fh = await open(req.path, 'r');
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafeSlow(READ_CHUNK);
  let bytesRead = 0;
  let zeroSamples = 0;
  try {
    for (const [start, end] of req.ranges) {
      let pos = start;
      while (pos < end) {
        req.signal?.throwIfAborted();
        const n = Math.min(READ_CHUNK, end - pos);
        const { bytesRead: got } = await fh.read(buf, 0, n, pos);
        if (got === 0) {
          throw new BtyError(
            'BTY_ERR_VERIFY_MISMATCH',
            `${req.path} ends at byte ${pos}, before the written data (${end})`,
          );
        }
        hash.update(buf.subarray(0, got));
        pos += got;
        bytesRead += got;
        req.onBytes?.(bytesRead);
      }
    }
    const actual = hash.digest('hex');
    if (actual !== req.expectedSha256) {
      throw new BtyError(
        'BTY_ERR_VERIFY_MISMATCH',
        `read-back of ${req.path} does not match what was written ` +
          `(sha256 of written ranges ${actual}, expected ${req.expectedSha256}); ` +
          'the target holds unverified data',
      );
    }
    for (const gap of zeroGaps(req.length, req.ranges)) {
      for (const offset of samplesOf(gap)) {
        const n = Math.min(SAMPLE_BYTES, gap[1] - offset);
        const { bytesRead: got } = await fh.read(buf, 0, n, offset);
        zeroSamples++;
        if (got !== n || buf.subarray(0, n).some((b) => b !== 0)) {
          throw new BtyError(
            'BTY_ERR_VERIFY_MISMATCH',
            `${req.path} does not read back as zeros at byte ${offset}, inside a range the image ` +
              'has as zeros; the target holds unverified data',
          );
        }
      }
    }
  } finally {
    await fh.close();
  }
  return { bytesRead, zeroSamples };
}
