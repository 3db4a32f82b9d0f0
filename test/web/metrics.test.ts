/**
 * GET /metrics: the text format checked with a small parser written here (HELP/TYPE before the
 * samples, label escaping, histogram buckets cumulative and ending at +Inf = _count), and the
 * counters moved by real requests to a listening bty-web.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/web/app.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import {
  Counter,
  Gauge,
  Histogram,
  METRICS_CONTENT_TYPE,
  Registry,
} from '../../src/web/metrics.ts';

// ---------------------------------------------------------------------------------------------
// A tiny parser for the Prometheus text format (what a scraper would accept)
// ---------------------------------------------------------------------------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Family {
  help: string;
  type: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  if (!/^-?\d+(\.\d+)?(e[+-]?\d+)?$/i.test(text)) throw new Error(`bad value: ${text}`);
  return Number(text);
}

/** `{a="x",b="y\"z"}` from `i` (at the `{`): the labels and where parsing stopped. */
function parseLabels(line: string, i: number): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  i++; // {
  while (line[i] !== '}') {
    const name = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i))?.[0];
    if (!name) throw new Error(`bad label name at ${i}: ${line}`);
    i += name.length;
    if (line.slice(i, i + 2) !== '="') throw new Error(`expected =" at ${i}: ${line}`);
    i += 2;
    let value = '';
    for (;;) {
      const c = line[i++];
      if (c === undefined) throw new Error(`unterminated label value: ${line}`);
      if (c === '"') break;
      if (c === '\\') {
        const e = line[i++];
        if (e === 'n') value += '\n';
        else if (e === '\\' || e === '"') value += e;
        else throw new Error(`bad escape \\${e}: ${line}`);
      } else {
        value += c;
      }
    }
    if (name in labels) throw new Error(`label ${name} twice: ${line}`);
    labels[name] = value;
    if (line[i] === ',') i++;
    else if (line[i] !== '}') throw new Error(`expected , or } at ${i}: ${line}`);
  }
  return [labels, i + 1];
}

function familyOf(sample: string, families: Map<string, Family>): string | undefined {
  if (families.has(sample)) return sample;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    const base = sample.slice(0, -suffix.length);
    if (sample.endsWith(suffix) && families.get(base)?.type === 'histogram') return base;
  }
  return undefined;
}

function parseExposition(text: string): Map<string, Family> {
  expect(text.endsWith('\n')).toBe(true);
  const families = new Map<string, Family>();
  for (const line of text.slice(0, -1).split('\n')) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      const f = families.get(name) ?? { help: '', type: '', samples: [] };
      if (f.samples.length > 0) throw new Error(`${kind} after samples of ${name}`);
      if (kind === 'HELP') f.help = rest.replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
      else if (['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest))
        f.type = rest;
      else throw new Error(`bad TYPE: ${line}`);
      families.set(name, f);
      continue;
    }
    if (line.startsWith('#')) continue;
    const name = NAME.exec(line)?.[0];
    if (!name) throw new Error(`bad sample line: ${JSON.stringify(line)}`);
    let i = name.length;
    let labels: Record<string, string> = {};
    if (line[i] === '{') [labels, i] = parseLabels(line, i);
    if (line[i] !== ' ') throw new Error(`expected a space at ${i}: ${line}`);
    const value = parseValue(line.slice(i + 1));
    const family = familyOf(name, families);
    if (!family) throw new Error(`sample without HELP/TYPE: ${line}`);
    const f = families.get(family)!;
    if (!f.help || !f.type) throw new Error(`family ${family} lacks HELP or TYPE`);
    f.samples.push({ name, labels, value });
  }
  for (const [name, f] of families) checkFamily(name, f);
  return families;
}

/** Counters never negative; histogram buckets cumulative, +Inf last and equal to _count. */
function checkFamily(name: string, f: Family): void {
  if (f.type === 'counter') {
    for (const s of f.samples) expect(s.value, name).toBeGreaterThanOrEqual(0);
  }
  if (f.type !== 'histogram') return;
  const groups = new Map<string, Sample[]>();
  for (const s of f.samples) {
    const { le: _le, ...rest } = s.labels;
    const key = JSON.stringify(rest);
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  for (const [key, samples] of groups) {
    const buckets = samples.filter((s) => s.name === `${name}_bucket`);
    const les = buckets.map((b) => parseValue(b.labels.le!));
    expect(les, `${name}${key}`).toEqual([...les].sort((a, b) => a - b));
    expect(les.at(-1), `${name}${key}`).toBe(Infinity);
    const counts = buckets.map((b) => b.value);
    expect(counts, `${name}${key}`).toEqual([...counts].sort((a, b) => a - b));
    const count = samples.find((s) => s.name === `${name}_count`)?.value;
    expect(counts.at(-1), `${name}${key}`).toBe(count);
    expect(samples.some((s) => s.name === `${name}_sum`)).toBe(true);
  }
}

function value(
  families: Map<string, Family>,
  sample: string,
  labels: Record<string, string> = {},
): number {
  const family = familyOf(sample, families);
  const found = family
    ? families
        .get(family)!
        .samples.find(
          (s) =>
            s.name === sample &&
            Object.keys(labels).length === Object.keys(s.labels).length &&
            Object.entries(labels).every(([k, v]) => s.labels[k] === v),
        )
    : undefined;
  return found?.value ?? 0;
}

// ---------------------------------------------------------------------------------------------
// The format, on its own
// ---------------------------------------------------------------------------------------------

describe('the text format', () => {
  it('escapes label values and HELP text so they parse back to what was given', () => {
    const registry = new Registry();
    const c = registry.add(new Counter('t_things_total', 'Things.\nWith a \\ backslash.', ['k']));
    const tricky = ['plain', 'a"quote', 'back\\slash', 'two\nlines', '', '{},= "\\n"'];
    tricky.forEach((k, i) => c.inc({ k }, i + 1));
    const families = parseExposition(registry.render());
    const f = families.get('t_things_total')!;
    expect(f.help).toBe('Things.\nWith a \\ backslash.');
    expect(f.type).toBe('counter');
    expect(f.samples.map((s) => [s.labels.k, s.value])).toEqual(tricky.map((k, i) => [k, i + 1]));
    expect(registry.render()).toContain('t_things_total{k="a\\"quote"} 2\n');
    expect(registry.render()).toContain('t_things_total{k="two\\nlines"} 4\n');
  });

  it('renders gauges and histograms (cumulative buckets, +Inf, _sum, _count)', () => {
    const registry = new Registry();
    const g = registry.add(new Gauge('t_open', 'Open things.', []));
    const h = registry.add(new Histogram('t_seconds', 'Durations.', ['op'], [0.1, 1]));
    g.set({}, 3);
    for (const v of [0.05, 0.1, 0.5, 2]) h.observe({ op: 'read' }, v);
    const text = registry.render();
    expect(text).toBe(
      [
        '# HELP t_open Open things.',
        '# TYPE t_open gauge',
        't_open 3',
        '# HELP t_seconds Durations.',
        '# TYPE t_seconds histogram',
        't_seconds_bucket{op="read",le="0.1"} 2',
        't_seconds_bucket{op="read",le="1"} 3',
        't_seconds_bucket{op="read",le="+Inf"} 4',
        't_seconds_sum{op="read"} 2.65',
        't_seconds_count{op="read"} 4',
        '',
      ].join('\n'),
    );
    parseExposition(text);
  });

  it('a metric without labels shows 0 before anything happened; bad names are refused', () => {
    const registry = new Registry();
    registry.add(new Counter('t_none_total', 'Nothing yet.', []));
    expect(registry.render()).toContain('\nt_none_total 0\n');
    expect(() => new Counter('bad-name', 'x', [])).toThrow(/metric name/);
    expect(() => new Counter('t_x', 'x', ['le'])).toThrow(/label name/);
    expect(() => new Counter('t_y', 'x', ['__reserved'])).toThrow(/label name/);
    expect(() => registry.add(new Counter('t_none_total', 'again', []))).toThrow(/twice/);
    expect(() => new Counter('t_z', 'x', []).inc({}, -1)).toThrow(/only goes up/);
  });
});

// ---------------------------------------------------------------------------------------------
// GET /metrics on a running server
// ---------------------------------------------------------------------------------------------

describe('GET /metrics', () => {
  let dir: string;
  let database: BtyDatabase;
  let app: FastifyInstance;
  let base: string;
  let cookie: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bty-web-metrics-'));
    database = await openDatabase({ sqlitePath: join(dir, 'state.db') });
    await migrate(database);
    app = await buildApp({
      database,
      version: '9.9.9',
      artifactVersion: '1.2.3',
      bootDir: join(dir, 'boot'),
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const login = await fetch(`${base}/ui/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ password: 'bty-lab' }),
    });
    cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;
  });

  afterAll(async () => {
    await app?.close();
    await database?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const scrape = async () => {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(METRICS_CONTENT_TYPE);
    return parseExposition(await res.text());
  };
  const post = (path: string, body: unknown) =>
    fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const requests = (f: Map<string, Family>, method: string, route: string, status: string) =>
    value(f, 'bty_web_http_requests_total', { method, route, status });

  it('is open (no session) and lists every family with HELP and TYPE', async () => {
    const f = await scrape();
    expect([...f.keys()]).toEqual([
      'bty_web_http_requests_total',
      'bty_web_http_request_duration_seconds',
      'bty_web_pxe_offers_total',
      'bty_web_flashes_total',
      'bty_web_sse_subscribers',
      'bty_web_sse_dropped_total',
      'bty_web_db_query_duration_seconds',
    ]);
  });

  it('requests are counted by route pattern and status, never by raw URL', async () => {
    const before = await scrape();
    expect((await fetch(`${base}/pxe/52-54-00-00-cc-01`)).status).toBe(200);
    expect((await fetch(`${base}/pxe/52:54:00:00:cc:02`)).status).toBe(200);
    expect((await fetch(`${base}/pxe/not-a-mac`)).status).toBe(400);
    expect((await fetch(`${base}/no/such/page`)).status).toBe(404);
    const after = await scrape();
    const delta = (method: string, route: string, status: string) =>
      requests(after, method, route, status) - requests(before, method, route, status);
    expect(delta('GET', '/pxe/:mac', '200')).toBe(2);
    expect(delta('GET', '/pxe/:mac', '400')).toBe(1);
    expect(delta('GET', 'unmatched', '404')).toBe(1);
    // The scrape before this one was counted too.
    expect(delta('GET', '/metrics', '200')).toBe(1);
    const routes = after
      .get('bty_web_http_requests_total')!
      .samples.map((s) => s.labels.route ?? '');
    expect(routes.filter((r) => /cc|not-a-mac|such/.test(r))).toEqual([]);
    const durations = value(after, 'bty_web_http_request_duration_seconds_count', {
      route: '/pxe/:mac',
    });
    expect(durations).toBeGreaterThanOrEqual(3);
  });

  it('PXE offers by kind, flashes by outcome, and database query time', async () => {
    const before = await scrape();
    const mac = '52:54:00:00:cc:10';
    await fetch(`${base}/pxe/${mac}`);
    await fetch(`${base}/pxe/${mac}`);
    expect((await post(`/pxe/${mac}/status`, { status: 'done' })).status).toBe(204);
    expect((await post(`/pxe/${mac}/done`, { status: 'failed', reason: 'x' })).status).toBe(204);
    expect((await post(`/pxe/${mac}/status`, { status: 'failed' })).status).toBe(204);
    // An orphan signal is not a flash.
    expect((await post('/pxe/52:54:00:00:cc:99/status', { status: 'done' })).status).toBe(404);
    const after = await scrape();
    const delta = (sample: string, labels: Record<string, string>) =>
      value(after, sample, labels) - value(before, sample, labels);
    expect(delta('bty_web_pxe_offers_total', { offer_kind: 'bty-inventory' })).toBe(2);
    expect(delta('bty_web_flashes_total', { outcome: 'done' })).toBe(1);
    expect(delta('bty_web_flashes_total', { outcome: 'failed' })).toBe(2);
    for (const operation of ['select', 'insert', 'update']) {
      expect(
        delta('bty_web_db_query_duration_seconds_count', { operation }),
        operation,
      ).toBeGreaterThan(0);
    }
    expect(
      value(after, 'bty_web_db_query_duration_seconds_sum', { operation: 'select' }),
    ).toBeGreaterThan(0);
  });

  it('the SSE subscriber gauge follows open streams', async () => {
    const gauge = async () => value(await scrape(), 'bty_web_sse_subscribers');
    expect(await gauge()).toBe(0);
    const open = () =>
      new Promise<http.ClientRequest>((resolve, reject) => {
        const req = http.get(`${base}/events/stream`, { headers: { cookie } }, (res) => {
          expect(res.statusCode).toBe(200);
          res.resume();
          resolve(req);
        });
        req.on('error', reject);
      });
    const streams = [await open(), await open()];
    expect(await gauge()).toBe(2);
    for (const s of streams) s.destroy();
    const deadline = Date.now() + 5000;
    while ((await gauge()) !== 0) {
      if (Date.now() > deadline) throw new Error('the gauge did not return to 0');
      await new Promise((r) => setTimeout(r, 10));
    }
  });
});
