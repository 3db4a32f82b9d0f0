/**
 * Read-back verification must fail when the medium does not hold what was written: a changed
 * byte inside a written range, or a non-zero byte where the image has zeros.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BtyError } from '../../src/core/errors.ts';
import { SAMPLE_STRIDE, verifyWritten } from '../../src/flash/verify.ts';

const MiB = 1 << 20;
let dir: string;

/** A 24 MiB file: data in [1 MiB, 2 MiB) and [20 MiB, 21 MiB), zeros elsewhere. */
async function makeTarget(
  name: string,
): Promise<{ path: string; sha: string; ranges: Array<[number, number]> }> {
  const path = join(dir, name);
  const fh = await open(path, 'w');
  const data = Buffer.alloc(MiB, 0x5a);
  const ranges: Array<[number, number]> = [
    [1 * MiB, 2 * MiB],
    [20 * MiB, 21 * MiB],
  ];
  const hash = createHash('sha256');
  for (const [start] of ranges) {
    await fh.write(data, 0, MiB, start);
    hash.update(data);
  }
  await fh.truncate(24 * MiB);
  await fh.close();
  return { path, sha: hash.digest('hex'), ranges };
}

function check(t: { path: string; sha: string; ranges: Array<[number, number]> }) {
  return verifyWritten({
    path: t.path,
    isBlockDevice: false,
    length: 24 * MiB,
    ranges: t.ranges,
    expectedSha256: t.sha,
  });
}

async function poke(path: string, offset: number, value: number): Promise<void> {
  const fh = await open(path, 'r+');
  await fh.write(Buffer.from([value]), 0, 1, offset);
  await fh.close();
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-verify-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('verifyWritten', () => {
  it('passes when the target holds exactly what was written', async () => {
    const t = await makeTarget('good.img');
    const r = await check(t);
    expect(r.bytesRead).toBe(2 * MiB);
    expect(r.zeroSamples).toBeGreaterThan(3);
  });

  it('fails on a changed byte inside a written range', async () => {
    const t = await makeTarget('flipped.img');
    await poke(t.path, 20 * MiB + 777, 0x00);
    const err = await check(t).catch((e: unknown) => e);
    expect((err as BtyError).code).toBe('BTY_ERR_VERIFY_MISMATCH');
    expect((err as BtyError).message).toMatch(/unverified data/);
  });

  it('fails on data left in a range the image has as zeros', async () => {
    const t = await makeTarget('stale.img');
    // A sampled offset inside the zero gap [2 MiB, 20 MiB).
    await poke(t.path, 2 * MiB + SAMPLE_STRIDE + 10, 0xff);
    const err = await check(t).catch((e: unknown) => e);
    expect((err as BtyError).code).toBe('BTY_ERR_VERIFY_MISMATCH');
    expect((err as BtyError).message).toMatch(/does not read back as zeros/);
  });
});
