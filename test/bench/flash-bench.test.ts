/**
 * Keeps the flash benchmark from rotting: runs it at a tiny size and checks that every contender
 * ran, bty's result was verified and the tables were printed. Timings are never asserted.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, statfs } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../../bench/flash/report.ts';
import { isRoot } from '../helpers/loop.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const TMPFS_MAGIC = 0x01021994;

function runBench(
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [join(REPO, 'bench/flash/run.ts'), ...args], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    child.once('error', fail);
    child.once('close', (code) => done({ code, stdout, stderr }));
  });
}

describe('flash benchmark (bench/flash/run.ts)', () => {
  let work = '';

  beforeAll(async () => {
    // The benchmark's own Debian packages (quick when present); `make bench` installs them too.
    if (isRoot()) await run(join(REPO, 'scripts/deps-debian.sh'), ['bmap-tools', 'time']);
    // In the repository's git-ignored .bench/: the harness refuses a tmpfs work folder.
    await run('mkdir', ['-p', join(REPO, '.bench')]);
    work = await mkdtemp(join(REPO, '.bench', 'smoke-'));
  }, 300_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('runs at 64 MiB, verifies every result and prints a table per configuration', async () => {
    const json = join(work, 'report.json');
    const { code, stdout, stderr } = await runBench([
      '--size',
      '64MiB',
      '--runs',
      '1',
      '--work',
      work,
      '--json',
      json,
    ]);
    expect(code, stderr).toBe(0);

    const targets = isRoot() ? ['regular file', 'loop device'] : ['regular file'];
    for (const source of ['.img', '.img.gz', '.img.zst']) {
      for (const target of targets) expect(stdout).toContain(`== ${source} -> ${target}`);
    }
    expect(stdout).toMatch(/contender\s+median s\s+runs s\s+peer\/ours\s+peak RSS\s+check/);
    expect(stdout).toMatch(/(PASS|MISS) peak RSS < 200 MB/);
    expect(stdout).toMatch(/all targets met|MISS: \d+ target\(s\) missed/);

    const report = JSON.parse(await readFile(json, 'utf8')) as BenchReport;
    expect(report.configs).toHaveLength(3 * targets.length);
    for (const config of report.configs) {
      expect(config.contenders.map((c) => c.name)).toEqual(['ours', 'dd', 'bmaptool']);
      for (const c of config.contenders) {
        expect(c.failure, `${config.format} -> ${config.target}: ${c.name}`).toBeNull();
        expect(c.check).toMatch(/^ok /);
        expect(c.seconds).toHaveLength(1);
        expect(c.peakRssKiB).toBeGreaterThan(0);
      }
      const ours = config.contenders[0];
      if (config.target === 'loop') expect(ours?.zeroesStaleData).toBe(true);
      expect(config.verdicts.length).toBeGreaterThan(0);
    }
    // The cached image is reused by the next run; the target file is not kept without --keep.
    const files = (await run('ls', [work])).stdout.split('\n');
    expect(files).toContain('image-64MiB-seed1.img.bmap');
    expect(files).not.toContain('target.img');
  }, 600_000);

  it('rejects a size that is not whole MiB, before doing anything', async () => {
    const { code, stderr } = await runBench(['--size', '3000000', '--work', work]);
    expect(code).toBe(2);
    expect(stderr).toContain('--size must be a multiple of 1 MiB');
  });

  it('refuses a work folder on tmpfs', async ({ skip }) => {
    const shm = await statfs('/dev/shm').catch(() => null);
    if (shm?.type !== TMPFS_MAGIC) skip('/dev/shm is not a tmpfs here');
    const { code, stderr } = await runBench(['--size', '64MiB', '--work', '/dev/shm']);
    expect(code).toBe(1);
    expect(stderr).toContain('is on tmpfs/ramfs');
  });
});
