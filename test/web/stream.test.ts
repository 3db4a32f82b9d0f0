/**
 * Live events over real HTTP: bty-web listening on loopback, SSE clients reading the stream
 * with node:http (and one raw socket that never reads), PXE requests driving the messages.
 */
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/web/app.ts';
import { LiveBus, type LiveMessage, type StreamLimits } from '../../src/web/bus.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';

interface Server {
  app: FastifyInstance;
  bus: LiveBus;
  database: BtyDatabase;
  base: string;
  port: number;
  cookie: string;
  closed: boolean;
}

const dirs: string[] = [];
const servers: Server[] = [];

async function startServer(limits: Partial<StreamLimits>): Promise<Server> {
  const dir = await mkdtemp(join(tmpdir(), 'bty-web-stream-'));
  dirs.push(dir);
  await mkdir(join(dir, 'boot'));
  await writeFile(join(dir, 'boot', 'vmlinuz'), Buffer.from('kernel'));
  const database = await openDatabase({ sqlitePath: join(dir, 'state.db') });
  await migrate(database);
  const bus = new LiveBus(limits);
  const app = await buildApp({
    database,
    version: '9.9.9',
    artifactVersion: '1.2.3',
    bootDir: join(dir, 'boot'),
    bus,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  const base = `http://127.0.0.1:${port}`;
  const login = await fetch(`${base}/ui/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ password: 'bty-lab' }),
  });
  expect(login.status).toBe(204);
  const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;
  const server = { app, bus, database, base, port, cookie, closed: false };
  servers.push(server);
  return server;
}

async function stopServer(s: Server): Promise<void> {
  if (!s.closed) {
    s.closed = true;
    await s.app.close();
  }
  await s.database.close();
}

afterAll(async () => {
  for (const s of servers) await stopServer(s);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

interface Frame {
  event: string;
  data: LiveMessage;
}

/** An SSE client over node:http that reads everything and parses frames as they arrive. */
interface StreamClient {
  status: number;
  headers: http.IncomingHttpHeaders;
  frames: Frame[];
  comments: string[];
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  waitFor(what: string, pred: () => boolean, ms?: number): Promise<void>;
  close(): void;
}

function openStream(s: Server, path: string): Promise<StreamClient> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${s.base}${path}`, { headers: { cookie: s.cookie } }, (res) => {
      const frames: Frame[] = [];
      const comments: string[] = [];
      let buffer = '';
      let endedResolve: () => void = () => {};
      const ended = new Promise<void>((r) => (endedResolve = r));
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = '';
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments.push(line.slice(1).trim());
            else if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data.push(line.slice(6));
          }
          if (event) frames.push({ event, data: JSON.parse(data.join('\n')) as LiveMessage });
        }
      });
      res.on('end', endedResolve);
      res.on('error', () => {});
      const waitFor = async (what: string, pred: () => boolean, ms = 5000) => {
        const until = Date.now() + ms;
        while (!pred()) {
          if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
          await new Promise((r) => setTimeout(r, 10));
        }
      };
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        frames,
        comments,
        ended,
        waitFor,
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
  });
}

/** A client that sends the request and then never reads a byte of the answer. */
function openSilentStream(s: Server, path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(s.port, '127.0.0.1', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ${s.cookie}\r\n\r\n`);
      socket.pause();
      resolve(socket);
    });
    socket.on('error', reject);
  });
}

/** The value of one sample in GET /metrics (0 when the series does not exist yet). */
async function metric(s: Server, series: string): Promise<number> {
  const text = await (await fetch(`${s.base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

async function until(what: string, pred: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const big = 'x'.repeat(16 * 1024);
const progress = (n: number): LiveMessage => ({
  type: 'progress',
  mac: '52:54:00:00:bb:01',
  phase: 'writing',
  bytes_done: n,
  bytes_total: null,
  rate_bps: 0,
  message: big,
});

describe('GET /events/stream and /events/machines', () => {
  let s: Server;
  beforeAll(async () => {
    s = await startServer({ heartbeatMs: 60_000, maxQueued: 16 });
  });

  it('needs a session: 401 without one, or with a forged cookie', async () => {
    for (const path of ['/events/stream', '/events/machines']) {
      const bare = await fetch(`${s.base}${path}`);
      expect(bare.status, path).toBe(401);
      expect(await bare.json()).toEqual({ detail: 'login required' });
      const forged = await fetch(`${s.base}${path}`, {
        headers: { cookie: 'bty-token=1700000000.forged' },
      });
      expect(forged.status, path).toBe(401);
    }
  });

  it('a /pxe/{mac} request reaches the stream: discovery, offer and its audit event', async () => {
    const all = await openStream(s, '/events/stream');
    const machines = await openStream(s, '/events/machines');
    try {
      expect(all.status).toBe(200);
      expect(all.headers['content-type']).toBe('text/event-stream; charset=utf-8');
      expect(all.headers['cache-control']).toBe('no-cache');
      // The session guard's refreshed cookie rides on the stream's headers.
      expect(all.headers['set-cookie']?.[0]).toMatch(/^bty-token=/);
      expect(machines.status).toBe(200);

      const mac = '52:54:00:00:bb:10';
      expect((await fetch(`${s.base}/pxe/${mac}`)).status).toBe(200);
      await all.waitFor('the audit event', () => all.frames.some((f) => f.event === 'event'));
      expect(all.frames.map((f) => f.event)).toEqual(['machine', 'offer', 'event']);
      expect(all.frames[0]!.data).toEqual({ type: 'machine', mac, change: 'discovered' });
      expect(all.frames[1]!.data).toEqual({ type: 'offer', mac, offer_kind: 'bty-inventory' });
      const audit = all.frames[2]!.data;
      expect(audit).toMatchObject({ type: 'event', kind: 'netboot.pxe.offered', subject_id: mac });
      expect(audit.type === 'event' && Number.isInteger(audit.id)).toBe(true);

      // The kernel fetch arms the live-env cycle; the final status is pushed too.
      expect((await fetch(`${s.base}/boot/vmlinuz?mac=${mac}`)).status).toBe(200);
      const done = await fetch(`${s.base}/pxe/${mac}/status`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ status: 'failed', reason: 'disk gone' }),
      });
      expect(done.status).toBe(204);
      await all.waitFor('the status', () => all.frames.length >= 7);
      expect(all.frames.slice(3).map((f) => [f.event, f.data])).toEqual([
        ['machine', { type: 'machine', mac, change: 'armed' }],
        ['event', expect.objectContaining({ kind: 'netboot.flasher.armed', subject_id: mac })],
        ['status', { type: 'status', mac, status: 'failed', reason: 'disk gone' }],
        ['event', expect.objectContaining({ kind: 'machine.flash_failed', subject_id: mac })],
      ]);

      // The machine stream had the same, minus the audit events (frames arrive in order).
      await machines.waitFor('the status', () => machines.frames.some((f) => f.event === 'status'));
      expect(machines.frames.map((f) => f.event)).toEqual([
        'machine',
        'offer',
        'machine',
        'status',
      ]);
    } finally {
      all.close();
      machines.close();
    }
  });

  it('a client that never reads is dropped; a reading one gets every message', async () => {
    const fast = await openStream(s, '/events/stream');
    const slow = await openSilentStream(s, '/events/stream');
    try {
      const subscribers = async () => metric(s, 'bty_web_sse_subscribers');
      await until(
        'both subscribed (and the earlier streams gone)',
        async () => (await subscribers()) === 2,
      );
      const droppedBefore = await metric(s, 'bty_web_sse_dropped_total{reason="queue_full"}');

      // Publish 16 KiB messages until the silent client's socket, then its queue, is full.
      let sent = 0;
      let dropped = false;
      while (!dropped && sent < 8192) {
        s.bus.publish(progress(sent++));
        await new Promise((r) => setImmediate(r));
        if (sent % 64 === 0) {
          dropped =
            (await metric(s, 'bty_web_sse_dropped_total{reason="queue_full"}')) > droppedBefore;
        }
      }
      expect(dropped).toBe(true);
      expect(await subscribers()).toBe(1);

      // The reader kept up: every message, in order, and it is still connected.
      const first = fast.frames.length;
      s.bus.publish(progress(-1));
      await fast.waitFor('every message', () => fast.frames.length === first + 1, 10_000);
      const seen = fast.frames.map((f) => (f.data.type === 'progress' ? f.data.bytes_done : null));
      expect(seen).toEqual([...Array.from({ length: sent }, (_, i) => i), -1]);
    } finally {
      fast.close();
      slow.destroy();
    }
  });
});

describe('heartbeat, stalled clients and shutdown', () => {
  let s: Server;
  beforeAll(async () => {
    s = await startServer({ heartbeatMs: 50, maxQueued: 1_000_000 });
  });

  it('sends a heartbeat comment every interval', async () => {
    const c = await openStream(s, '/events/machines');
    try {
      await c.waitFor(
        'three heartbeats',
        () => c.comments.filter((t) => t === 'heartbeat').length >= 3,
        2000,
      );
      expect(c.comments[0]).toBe('connected');
      expect(c.frames).toEqual([]);
    } finally {
      c.close();
    }
  });

  it('a client whose socket stays full for a heartbeat interval is dropped as stalled', async () => {
    const slow = await openSilentStream(s, '/events/stream');
    try {
      const series = 'bty_web_sse_dropped_total{reason="stalled"}';
      const before = await metric(s, series);
      let sent = 0;
      let dropped = false;
      while (!dropped && sent < 8192) {
        s.bus.publish(progress(sent++));
        await new Promise((r) => setImmediate(r));
        if (sent % 64 === 0) dropped = (await metric(s, series)) > before;
      }
      // Once its socket is full the queue only grows (the limit is huge here); the heartbeat
      // notices no drain and cuts it off.
      const until = Date.now() + 2000;
      while (!dropped && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 25));
        dropped = (await metric(s, series)) > before;
      }
      expect(dropped).toBe(true);
      expect(await metric(s, 'bty_web_sse_subscribers')).toBe(0);
    } finally {
      slow.destroy();
    }
  });

  it('closing the app ends open streams promptly', async () => {
    const a = await openStream(s, '/events/stream');
    const b = await openStream(s, '/events/machines');
    await a.waitFor('the opening comment', () => a.comments.length > 0 && b.comments.length > 0);
    const t0 = Date.now();
    s.closed = true;
    await s.app.close();
    const took = Date.now() - t0;
    expect(took).toBeLessThan(1000);
    const ends = Promise.all([a.ended, b.ended]).then(() => 'ended');
    const timeout = new Promise((r) => setTimeout(() => r('timeout'), 1000));
    expect(await Promise.race([ends, timeout])).toBe('ended');
    expect(s.bus.isClosed).toBe(true);
  });
});

describe('LiveBus', () => {
  it('close() tells every subscriber; a later subscription is told at once', () => {
    const bus = new LiveBus();
    const seen: string[] = [];
    bus.subscribe(
      (m) => seen.push(m.type),
      () => seen.push('closed-1'),
    );
    bus.subscribe(
      () => {
        throw new Error('broken listener');
      },
      () => seen.push('closed-2'),
    );
    bus.publish({ type: 'offer', mac: '52:54:00:00:bb:01', offer_kind: 'ipxe-exit' });
    expect(bus.size).toBe(1); // the throwing listener is gone
    bus.close();
    expect(seen).toEqual(['offer', 'closed-1']);
    bus.subscribe(
      () => seen.push('never'),
      () => seen.push('closed-late'),
    );
    bus.publish({ type: 'offer', mac: '52:54:00:00:bb:01', offer_kind: 'ipxe-exit' });
    expect(seen).toEqual(['offer', 'closed-1', 'closed-late']);
    expect(bus.size).toBe(0);
  });
});
