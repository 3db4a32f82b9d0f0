/**
 * Keeps the TFTP benchmark from rotting: a tiny run (two fetches per case, four clients at once)
 * must start bin/bty-tftp and tftpd-hpa, fetch through both with atftp on loopback (and over the
 * veth link when root), find every fetched file intact, print the tables and the verdicts, write a
 * well-formed JSON report, rewrite only the TFTP section of a copy of docs/performance.md, and
 * leave no server or namespace behind. Timings are never asserted.
 */
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../../bench/tftp/report.ts';
import { isRoot } from '../helpers/loop.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const DOCS = join(REPO, 'docs', 'performance.md');

function runBench(
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string; pid: number }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [join(REPO, 'bench/tftp/run.ts'), ...args], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    child.once('error', fail);
    child.once('close', (code) => done({ code, stdout, stderr, pid: child.pid ?? 0 }));
  });
}

function between(text: string, begin: string, end: string): string | null {
  const a = text.indexOf(begin);
  const b = text.indexOf(end);
  return a === -1 || b < a ? null : text.slice(a + begin.length, b);
}

async function alive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie is not a running server.
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return !/^\d+ \(.*\) Z /.test(stat);
}

describe('TFTP benchmark (bench/tftp/run.ts)', () => {
  let work = '';

  beforeAll(async () => {
    // The benchmark's Debian packages (quick when present); `make bench-tftp` installs them too.
    if (isRoot()) await run(join(REPO, 'scripts/deps-debian.sh'), ['tftpd-hpa', 'atftp', 'ipxe']);
    work = await mkdtemp(join(tmpdir(), 'bty-tftp-bench-smoke-'));
  }, 300_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('fetches through both servers on every link, checks every file and writes the report', async () => {
    const json = join(work, 'report.json');
    const docs = join(work, 'performance.md');
    await copyFile(DOCS, docs);
    const links = isRoot() ? ['loopback', 'veth'] : ['loopback'];
    const { code, stdout, stderr, pid } = await runBench([
      ...['--fetches', '2', '--clients', '4', '--runs', '1', '--warmup', '1'],
      ...['--links', links.join(','), '--limit', '30'],
      ...['--json', json, '--update-docs', '--docs', docs],
    ]);
    expect(code, stderr).toBe(0);

    expect(stdout).toMatch(/case\s+server\s+OACK\s+median ms\s+runs ms\s+MB\/s\s+vs tftpd-hpa/);
    expect(stdout).toMatch(/(PASS|MISS) loopback, blksize 1468: no slower than tftpd-hpa/);
    expect(stdout).toMatch(
      /(PASS|MISS) loopback, blksize 1468 \+ windowsize 16: >= 3x faster than tftpd-hpa/,
    );
    expect(stdout).toContain('PASS every fetched file intact (sha256)');
    expect(stdout).toMatch(/all targets met|MISS: \d+ target\(s\) missed/);

    const report = JSON.parse(await readFile(json, 'utf8')) as BenchReport;
    expect(report.links.map((l) => l.id)).toEqual(links);
    expect(report.file.bytes).toBeGreaterThan(0);
    const ids = ['default', 'blksize', 'window', 'storm', 'storm-window'];
    expect(report.cases.map((c) => `${c.link} ${c.id}`)).toEqual(
      links.flatMap((l) => ids.map((id) => `${l} ${id}`)),
    );
    for (const c of report.cases) {
      const perRun = c.clients === 1 ? 2 : 4;
      for (const k of [c.ours, c.theirs]) {
        const what = `${c.link} ${c.id} ${k.server}`;
        expect(k.failures, what).toEqual([]);
        expect(k.fetches, what).toBe(perRun);
        expect(k.intact, what).toBe(perRun);
        expect(k.runsMs, what).toHaveLength(1);
        // One time per sequential fetch, one per burst of concurrent clients.
        expect(k.runsMs[0], what).toHaveLength(c.clients === 1 ? 2 : 1);
      }
      expect(c.ours.server).toBe('bty-tftp');
      expect(c.theirs.server).toBe('tftpd-hpa');
      // Each server's OACK, from atftp's trace: ours grants windowsize, tftpd-hpa never does.
      if (c.options.blksize === null) {
        expect(c.ours.granted).toBeNull();
      } else {
        expect(c.ours.granted).toContain(`blksize: ${c.options.blksize}`);
        expect(c.theirs.granted).toContain(`blksize: ${c.options.blksize}`);
      }
      if (c.options.windowsize !== null) {
        expect(c.ours.granted).toContain(`windowsize: ${c.options.windowsize}`);
      }
      expect(c.theirs.granted ?? '').not.toContain('windowsize');
    }
    expect(report.verdicts.map((v) => typeof v.pass)).not.toContain('undefined');
    // Per link: three equal-options targets and one windowsize target; then the integrity check.
    expect(report.verdicts).toHaveLength(4 * links.length + 1);

    // --update-docs filled the TFTP section of the copy and left the other sections alone.
    const original = await readFile(DOCS, 'utf8');
    const updated = await readFile(docs, 'utf8');
    const tftp = between(updated, '<!-- bench:tftp:begin -->', '<!-- bench:tftp:end -->');
    expect(tftp).toContain(`Run of ${report.date}`);
    expect(tftp).toContain('| blksize 1468 + windowsize 16');
    const pxe = (text: string) =>
      between(text, '<!-- bench:pxe:begin -->', '<!-- bench:pxe:end -->');
    expect(pxe(updated)).toBe(pxe(original));

    // Nothing left behind: no server still running, no namespace of this run.
    for (const m of stderr.matchAll(/pid (\d+) port/g)) {
      expect(await alive(Number(m[1])), `server pid ${m[1]}`).toBe(false);
    }
    if (isRoot()) {
      const { stdout: namespaces } = await run('ip', ['netns', 'list']);
      expect(namespaces).not.toContain(`bty-tftp-bench-${pid}-`);
    }
  }, 300_000);

  it('rejects a bad option before starting anything', async () => {
    const { code, stderr } = await runBench(['--links', 'wifi']);
    expect(code).toBe(2);
    expect(stderr).toContain('--links takes loopback and/or veth');
  });
});
