/**
 * Keeps the image-serving benchmark from rotting: a tiny run (an 8 MiB image, 3 clients, 2
 * rounds) must start nginx and bty-web, fill bty-web's artifact cache from nginx through the
 * operator API, check one download's sha256 per server, time every round with curl, print the
 * table and the verdicts, write a well-formed JSON report and rewrite only the image-serving
 * section of a copy of docs/performance.md. Timings are never asserted.
 */
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadRound, hashDownload } from '../../bench/cache/clients.ts';
import { prepareImage } from '../../bench/cache/image.ts';
import { roundResult, type BenchReport } from '../../bench/cache/report.ts';
import { startNginxFiles } from '../../bench/cache/servers.ts';
import { isRoot } from '../helpers/loop.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const DOCS = join(REPO, 'docs', 'performance.md');
const MiB = 1024 * 1024;

function runBench(
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [join(REPO, 'bench/cache/run.ts'), ...args], {
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

/** The text between two markers (exclusive), or null. */
function between(text: string, begin: string, end: string): string | null {
  const a = text.indexOf(begin);
  const b = text.indexOf(end);
  return a === -1 || b < a ? null : text.slice(a + begin.length, b);
}

describe('image-serving benchmark (bench/cache/run.ts)', () => {
  let work = '';

  beforeAll(async () => {
    // The benchmark's own Debian packages (quick when present); `make bench-cache` installs them.
    if (isRoot()) await run(join(REPO, 'scripts/deps-debian.sh'), ['nginx', 'curl', 'time']);
    work = await mkdtemp(join(tmpdir(), 'bty-cache-bench-smoke-'));
  }, 300_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('serves a small image from nginx and from the cache, checks it and writes the report', async () => {
    const json = join(work, 'report.json');
    const docs = join(work, 'performance.md');
    await copyFile(DOCS, docs);
    const size = 8 * MiB;
    const clients = 3;
    const { code, stdout, stderr } = await runBench([
      ...['--size', '8MiB', '--clients', String(clients), '--runs', '2', '--limit', '60'],
      ...['--work', join(work, 'bench'), '--json', json, '--update-docs', '--docs', docs],
    ]);
    expect(code, stderr).toBe(0);

    expect(stdout).toMatch(/server\s+serves\s+median GiB\/s\s+runs GiB\/s\s+vs nginx/);
    expect(stdout).toMatch(/PASS every download a 200 with the whole image \(12 downloads\)/);
    expect(stdout).toMatch(/PASS bty-web: sha256 of a download/);
    expect(stdout).toMatch(/(PASS|MISS) bty-web >= 80 % of nginx's throughput/);

    const report = JSON.parse(await readFile(json, 'utf8')) as BenchReport;
    const image = await prepareImage(join(work, 'bench'), size);
    expect(report.imageBytes).toBe(size);
    expect(report.contenders.map((c) => c.id)).toEqual(['nginx', 'bty-web']);
    for (const c of report.contenders) {
      expect(c.checkOk, c.id).toBe(true);
      expect(c.check).toContain(image.sha256.slice(0, 12));
      expect(c.rounds, c.id).toHaveLength(2);
      for (const r of c.rounds) {
        // Every client received the whole image, once.
        expect(r.bytes, c.id).toBe(clients * size);
        expect(r.failures, c.id).toEqual([]);
        expect(r.gibPerSecond, c.id).toBeGreaterThan(0);
      }
    }
    expect(report.cache?.mode).toMatch(/^(curated|pull-through)$/);
    expect(report.verdicts).toHaveLength(4);

    // --update-docs filled the image-serving section of the copy and left the others alone.
    const original = await readFile(DOCS, 'utf8');
    const updated = await readFile(docs, 'utf8');
    const section = between(updated, '<!-- bench:cache:begin -->', '<!-- bench:cache:end -->');
    expect(section).toContain(`Run of ${report.date}`);
    expect(section).toContain('| bty-web');
    for (const name of ['flash', 'pxe', 'tftp']) {
      const of = (text: string) =>
        between(text, `<!-- bench:${name}:begin`, `<!-- bench:${name}:end`);
      expect(of(updated), name).toBe(of(original));
    }
  }, 300_000);

  it('counts a download that is not the whole image as failed, and hashes what it gets', async () => {
    const dir = join(work, 'files');
    const image = await prepareImage(dir, 1 * MiB);
    const nginx = await startNginxFiles({ root: dir });
    try {
      const whole = await hashDownload(nginx.fileUrl(image.name), 30);
      expect(whole).toEqual({
        status: 200,
        contentLength: image.sizeBytes,
        bytes: image.sizeBytes,
        sha256: image.sha256,
      });
      const good = roundResult(
        await downloadRound(nginx.fileUrl(image.name), 2, 30),
        image.sizeBytes,
        0,
      );
      expect(good.failures).toEqual([]);
      expect(good.bytes).toBe(2 * image.sizeBytes);
      const missing = roundResult(
        await downloadRound(nginx.fileUrl('missing.img'), 2, 30),
        image.sizeBytes,
        0,
      );
      expect(missing.failures).toHaveLength(2);
      expect(missing.failures[0]).toMatch(/^HTTP 404/);
      // The right status with the wrong length is a failure too.
      const short = roundResult(
        await downloadRound(nginx.fileUrl(image.name), 1, 30),
        image.sizeBytes + 1,
        0,
      );
      expect(short.failures).toEqual([
        `HTTP 200, ${image.sizeBytes} of ${image.sizeBytes + 1} bytes`,
      ]);
    } finally {
      await nginx.stop();
    }
  }, 60_000);

  it('rejects a bad option before starting anything', async () => {
    const { code, stderr } = await runBench(['--clients', '0']);
    expect(code).toBe(2);
    expect(stderr).toContain('--clients must be a whole number >= 1');
  });
});
