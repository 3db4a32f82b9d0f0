/**
 * Keeps the PXE benchmark from rotting: a tiny run (a few hundred requests over 8 connections)
 * must start bty-web and nginx, drive both with wrk, print the table and the verdicts, write a
 * well-formed JSON report, find every state database right, and rewrite only the PXE section of
 * a copy of docs/performance.md. Timings are never asserted.
 */
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkFleet, prepopulate, randomMacs } from '../../bench/pxe/fleet.ts';
import type { BenchReport } from '../../bench/pxe/report.ts';
import { isRoot } from '../helpers/loop.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const DOCS = join(REPO, 'docs', 'performance.md');

function runBench(
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [join(REPO, 'bench/pxe/run.ts'), ...args], {
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

describe('PXE benchmark (bench/pxe/run.ts)', () => {
  let work = '';

  beforeAll(async () => {
    // The benchmark's own Debian packages (quick when present); `make bench-pxe` installs them.
    if (isRoot()) await run(join(REPO, 'scripts/deps-debian.sh'), ['wrk', 'nginx']);
    work = await mkdtemp(join(tmpdir(), 'bty-pxe-bench-smoke-'));
  }, 300_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('runs every load at a tiny size, checks the databases and writes the report', async () => {
    const json = join(work, 'report.json');
    const docs = join(work, 'performance.md');
    await copyFile(DOCS, docs);
    const macs = 120;
    const present = 60;
    const few = 3;
    const repeat = 150;
    const warmup = 40;
    const { code, stdout, stderr } = await runBench([
      ...['--macs', String(macs), '--present', String(present), '--few', String(few)],
      ...['--repeat', String(repeat), '--warmup', String(warmup), '--connections', '8'],
      ...['--runs', '1', '--limit', '30', '--cpu-prof'],
      ...['--json', json, '--update-docs', '--docs', docs],
    ]);
    expect(code, stderr).toBe(0);

    expect(stdout).toMatch(/load\s+server\s+requests\s+req\/s\s+runs req\/s\s+p50 ms\s+p99 ms/);
    expect(stdout).toMatch(/(PASS|MISS) zero errors/);
    expect(stdout).toMatch(/(PASS|MISS) storm, empty database: >= 3,000 requests\/s/);
    expect(stdout).toMatch(/(PASS|MISS) throughput with 60 machines within 15 % of that with 3/);
    expect(stdout).toMatch(/all targets met|MISS: \d+ target\(s\) missed/);
    expect(stdout).toContain("where bty-web's time goes");

    const report = JSON.parse(await readFile(json, 'utf8')) as BenchReport;
    expect(report.scenarios.map((s) => [s.id, s.server])).toEqual([
      ['nginx-random', 'nginx'],
      ['fresh', 'bty-web'],
      ['few', 'bty-web'],
      ['many', 'bty-web'],
      ['nginx-repeat', 'nginx'],
      ['repeat', 'bty-web'],
    ]);
    for (const s of report.scenarios) {
      expect(s.runs, s.id).toHaveLength(1);
      const r = s.runs[0];
      expect(r?.requests, s.id).toBe(s.id.endsWith('repeat') ? repeat : macs);
      // Every request of the load was answered, with a 2xx, exactly once.
      expect(r?.received, s.id).toBe(r?.requests);
      expect(r?.non2xx, s.id).toBe(0);
      expect(Object.values(r?.statuses ?? {}).reduce((a, n) => a + n, 0)).toBe(r?.requests);
      for (const key of ['requestsPerSecond', 'p50Ms', 'p99Ms', 'wallMs'] as const) {
        expect(typeof r?.[key], `${s.id} ${key}`).toBe('number');
      }
    }

    // One row and one discovery event per MAC: present + 16 warm-up machines + the storm.
    const rows = report.checks.map((c) => [c.server, c.check.ok, c.check.machineRows]);
    expect(rows).toEqual([
      ['empty database: storm', true, macs + 16],
      [`${few} present: storm`, true, few + 16 + macs],
      [`${present} present: storm + one MAC`, true, present + 16 + macs],
      ['empty database, profiled: storm', true, macs + 16],
      [`${present} present, profiled: storm`, true, present + 16 + macs],
    ]);
    for (const c of report.checks) {
      expect(c.check.discoveryEvents).toBe(c.check.machineRows);
      expect(c.check.offerEvents).toBe(c.check.pxeRequests);
    }

    expect(report.verdicts.map((v) => typeof v.pass)).not.toContain('undefined');
    expect(report.verdicts.length).toBe(6);
    expect(report.profiles.map((p) => p.label)).toEqual(['empty database', `${present} present`]);
    for (const p of report.profiles) {
      expect(p.summary.samples).toBeGreaterThan(0);
      expect(p.summary.modules.length).toBeGreaterThan(0);
    }

    // --update-docs filled the PXE section of the copy and left the flash section alone.
    const original = await readFile(DOCS, 'utf8');
    const updated = await readFile(docs, 'utf8');
    const pxe = between(updated, '<!-- bench:pxe:begin -->', '<!-- bench:pxe:end -->');
    expect(pxe).toContain(`Run of ${report.date}`);
    expect(pxe).toContain('| storm, empty database');
    const flash = (text: string) => between(text, '<!-- bench:flash:begin', '<!-- bench:flash:end');
    expect(flash(updated)).toBe(flash(original));
  }, 300_000);

  it('has a database check that notices missing, extra and doubly discovered MACs', async () => {
    const db = join(work, 'check.db');
    const taken = new Set<string>();
    const [a, b, c, d] = randomMacs(4, taken);
    await prepopulate(db, [a!, b!, c!]);
    expect(checkFleet(db, new Set([a!, b!, c!]), 0)).toMatchObject({ ok: true, machineRows: 3 });
    const off = checkFleet(db, new Set([a!, b!, d!]), 0);
    expect(off).toMatchObject({ ok: false, missing: 1, undiscovered: 1 });
    expect(off.unexpected).toBeGreaterThan(0);
    const raw = new DatabaseSync(db);
    raw
      .prepare(
        "INSERT INTO events (ts, kind, subject_kind, subject_id, summary) VALUES ('x', " +
          "'machine.discovered', 'machine', ?, 'again')",
      )
      .run(a!);
    raw.close();
    expect(checkFleet(db, new Set([a!, b!, c!]), 0)).toMatchObject({
      ok: false,
      duplicateDiscoveries: 1,
    });
  });

  it('rejects a bad size before starting anything', async () => {
    const { code, stderr } = await runBench(['--macs', '0']);
    expect(code).toBe(2);
    expect(stderr).toContain('--macs must be a whole number >= 1');
  });
});
