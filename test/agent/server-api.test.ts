/**
 * The agent's pieces that need no server: plan validation, the progress body (checked with the
 * server's own parser), the progress throttle, the lshw reader (with stand-in programs), and
 * the limits it shares with the server.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FlashProgress } from '../../src/core/progress.ts';
import {
  LSHW_MAX_BYTES as SERVER_LSHW_MAX_BYTES,
  MAX_DISKS,
  parseProgress,
} from '../../src/web/routes/live.ts';
import { INVENTORY_MAX_DISKS, LSHW_MAX_BYTES, readLshw } from '../../src/agent/disks.ts';
import { ProgressReporter } from '../../src/agent/progress-reporter.ts';
import { PlanError, parsePlan, progressBody } from '../../src/agent/server-api.ts';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-agent-api-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const event = (phase: FlashProgress['phase'], bytes: number, extra: Partial<FlashProgress> = {}) =>
  ({
    phase,
    bytes_done: bytes,
    bytes_total: 1000,
    rate_bps: 12.7,
    eta_seconds: 3.4,
    resumes: 0,
    ...extra,
  }) satisfies FlashProgress;

describe('limits shared with the server', () => {
  it('match routes/live.ts', () => {
    expect(LSHW_MAX_BYTES).toBe(SERVER_LSHW_MAX_BYTES);
    expect(INVENTORY_MAX_DISKS).toBe(MAX_DISKS);
  });
});

describe('parsePlan', () => {
  it('reads the four modes', () => {
    expect(
      parsePlan({
        mode: 'flash',
        image: 'http://h/x.img.zst',
        target_disk_serial: 'S1',
        name: 'x.img.zst',
        disk_image_sha: 'ab'.repeat(32),
        format: 'img.zst',
      }),
    ).toEqual({
      mode: 'flash',
      image: 'http://h/x.img.zst',
      target_disk_serial: 'S1',
      name: 'x.img.zst',
      format: 'img.zst',
      disk_image_sha: 'ab'.repeat(32),
    });
    expect(parsePlan({ mode: 'flash', image: 'u', target_disk_serial: 's' })).toMatchObject({
      name: null,
      format: null,
      disk_image_sha: null,
    });
    expect(parsePlan({ mode: 'interactive', catalog: 'http://h/catalog.toml' })).toEqual({
      mode: 'interactive',
      catalog: 'http://h/catalog.toml',
    });
    expect(parsePlan({ mode: 'interactive' })).toEqual({ mode: 'interactive', catalog: null });
    expect(parsePlan({ mode: 'inventory' })).toEqual({ mode: 'inventory' });
    expect(parsePlan({ mode: 'exit' })).toEqual({ mode: 'exit' });
  });

  it('calls any other mode unknown (the agent then hands over to the wizard)', () => {
    expect(parsePlan({ mode: 'auto' })).toEqual({ mode: 'unknown', value: 'auto' });
    expect(parsePlan({})).toEqual({ mode: 'unknown', value: 'undefined' });
  });

  it('refuses a flash plan without image or serial, and a non-object', () => {
    expect(() => parsePlan({ mode: 'flash', image: 'u', target_disk_serial: ' ' })).toThrow(
      /^server returned mode=flash but missing image\/target_disk_serial: /,
    );
    expect(() => parsePlan({ mode: 'flash', target_disk_serial: 's' })).toThrow(PlanError);
    expect(() => parsePlan(['flash'])).toThrow(/^plan fetch failed: the plan is not a JSON object/);
    expect(() => parsePlan(null)).toThrow(PlanError);
  });
});

describe('progressBody', () => {
  it('is accepted by the server for every engine phase and shape', () => {
    const shapes: FlashProgress[] = [
      event('resolve', 0, { bytes_total: null, eta_seconds: null }),
      event('write', 512.9, { source_bytes_done: 100, source_bytes_total: null }),
      event('sync', 1000),
      event('done', 1000, { rate_bps: 0, eta_seconds: 0 }),
      event('failed', 0, { message: 'x'.repeat(900), bytes_total: null }),
    ];
    for (const shape of shapes) {
      const body = progressBody(shape);
      expect(() => parseProgress(body)).not.toThrow();
    }
    expect(progressBody(shapes[1]!)).toEqual({
      phase: 'write',
      bytes_done: 512,
      bytes_total: 1000,
      rate_bps: 12,
      eta_seconds: 3,
      resumes: 0,
      source_bytes_done: 100,
      source_bytes_total: null,
    });
    expect((progressBody(shapes[4]!).message as string).length).toBe(500);
  });
});

describe('ProgressReporter', () => {
  it('sends about once an interval, every phase change, in order, never failing the caller', async () => {
    let clock = 0;
    const sent: string[] = [];
    const failures: string[] = [];
    let calls = 0;
    const reporter = new ProgressReporter(
      (e) => {
        calls++;
        sent.push(`${e.phase}:${e.bytes_done}`);
        if (calls === 3) return Promise.reject(new Error('connection refused'));
        if (calls === 4) return Promise.resolve(500);
        return Promise.resolve(204);
      },
      { intervalMs: 1000, now: () => clock, onFirstFailure: (why) => failures.push(why) },
    );
    reporter.report(event('resolve', 0)); // phase change: sent
    await reporter.flush();
    clock = 10;
    reporter.report(event('write', 1)); // phase change: sent
    await reporter.flush();
    for (let t = 100; t < 1000; t += 250) {
      clock = t;
      reporter.report(event('write', t)); // within the interval: dropped
    }
    clock = 1010;
    reporter.report(event('write', 1010)); // a second later: sent (fails)
    await reporter.flush();
    clock = 1020;
    reporter.report(event('sync', 1020)); // phase change: sent (HTTP 500)
    clock = 1030;
    reporter.report(event('done', 1030));
    await reporter.flush();
    expect(sent).toEqual(['resolve:0', 'write:1', 'write:1010', 'sync:1020', 'done:1030']);
    expect(failures).toEqual(['connection refused']);
    expect(reporter.delivered).toBe(3);
  });

  it('replaces a waiting report of the same phase instead of queueing it', async () => {
    let clock = 0;
    const sent: number[] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const reporter = new ProgressReporter(
      async (e) => {
        sent.push(e.bytes_done);
        if (sent.length === 1) await gate; // the server is slow with the first report
        return 204;
      },
      { intervalMs: 1000, now: () => clock },
    );
    reporter.report(event('write', 0));
    for (let i = 1; i <= 5; i++) {
      clock = i * 1000;
      reporter.report(event('write', i));
    }
    release();
    await reporter.flush();
    expect(sent).toEqual([0, 5]);
  });
});

describe('readLshw', () => {
  async function program(name: string, script: string): Promise<string> {
    const path = join(dir, name);
    await writeFile(path, `#!/bin/sh\n${script}\n`);
    await chmod(path, 0o755);
    return path;
  }

  it('parses the JSON lshw prints', async () => {
    const lshw = await program('lshw-ok', `echo '{"id": "host", "children": [{"id": "cpu"}]}'`);
    expect(await readLshw(lshw)).toEqual({ id: 'host', children: [{ id: 'cpu' }] });
  });

  it('omits it on any failure: missing, non-zero, empty, not JSON, too large, too slow', async () => {
    const cases = [
      join(dir, 'no-such-lshw'),
      await program('lshw-fails', `echo '{}'; exit 1`),
      await program('lshw-empty', 'true'),
      await program('lshw-garbage', 'echo not json'),
      await program('lshw-scalar', 'echo 42'),
    ];
    for (const lshw of cases) expect(await readLshw(lshw)).toBeNull();
    const big = await program('lshw-big', `printf '{"x":"%02000d"}' 0`);
    expect(await readLshw(big, { maxBytes: 1000 })).toBeNull();
    expect(await readLshw(big, { maxBytes: 4000 })).not.toBeNull();
    const slow = await program('lshw-slow', `sleep 5; echo '{}'`);
    const started = Date.now();
    expect(await readLshw(slow, { timeoutMs: 200 })).toBeNull();
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
