/**
 * The auto-flash in process, against a stand-in server whose every route a test chooses: the
 * disks come from an injected list naming a regular file as the "disk" (so no root and no loop
 * device), and the image is served by the same server. Covers what the review found missing:
 * duplicate serials, the write-time identity check, the format hint, progress that fails or
 * has no route, a signal while `done` is posted, plan retries, the lock and the kmsg markers.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runAgent, type AgentOptions } from '../../src/agent/agent.ts';
import { markerEntered, markerExiting } from '../../src/agent/console.ts';
import type { WizardFallbackRequest } from '../../src/agent/wizard-fallback.ts';
import type { Disk } from '../../src/flash/disks.ts';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';
import { makeRawImage, sha256File, type MadeImage } from '../helpers/images.ts';

const MAC = '52:54:00:0f:20:21';
const MiB = 1 << 20;

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;

let dir: string;
let image: MadeImage;
let server: http.Server;
let images: FaultServer;
let base: string;
/** Routes by `METHOD /path`; unknown routes answer 204 to POSTs and 404 otherwise. */
let routes: Record<string, Handler> = {};
const requests: Array<{ route: string; body: string }> = [];

const json =
  (status: number, body: unknown): Handler =>
  (_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-agent-flash-'));
  image = await makeRawImage(join(dir, 'disk.img'), {
    sizeBytes: 8 * MiB,
    partitionTable: false,
    randomFraction: 0.5,
    seed: 7,
  });
  images = await startFaultServer();
  images.serve('/images/disk.img', { body: { file: image.path } });
  server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      const route = `${req.method} ${req.url}`;
      requests.push({ route, body });
      const handler = routes[route];
      if (handler) return handler(req, res, body);
      res.writeHead(req.method === 'POST' ? 204 : 404);
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await images.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  routes = {};
  requests.length = 0;
});

let targets = 0;

/** A regular file standing in for a disk, sized like the image, with a stand-in identity. */
async function fileDisk(serial: string | null): Promise<Disk> {
  const path = join(dir, `target-${++targets}.img`);
  await writeFile(path, Buffer.alloc(image.sizeBytes, 0xee));
  return {
    name: `target-${targets}`,
    path,
    type: 'disk',
    size_bytes: image.sizeBytes,
    vendor: null,
    model: 'Stand-in',
    serial,
    wwn: null,
    tran: null,
    removable: false,
    readonly: false,
    mountpoints: [],
    logical_block_size: 512,
    write_zeroes: false,
    discard: false,
    eligible: true,
    reasons: [],
  };
}

const flashPlan = (serial: string, extra: Record<string, unknown> = {}) =>
  json(200, {
    mode: 'flash',
    image: images.urlFor('/images/disk.img'),
    target_disk_serial: serial,
    disk_image_sha: image.sha256,
    ...extra,
  });

interface Run {
  code: number;
  out: string;
  handedOver: WizardFallbackRequest[];
  reboots: number;
}

async function agent(overrides: Partial<AgentOptions>): Promise<Run> {
  let out = '';
  const handedOver: WizardFallbackRequest[] = [];
  let reboots = 0;
  const code = await runAgent({
    server: base,
    mac: MAC,
    reboot: () => {
      reboots++;
      return Promise.resolve();
    },
    out: (t) => (out += t),
    err: (t) => (out += t),
    consolePath: null,
    loopIdentity: false,
    lshwProgram: '/nonexistent/lshw',
    progressIntervalMs: 0,
    planRetryDelaysMs: [],
    statusRetryDelayMs: 10,
    wizard: (request) => {
      handedOver.push(request);
      return Promise.resolve(1);
    },
    ...overrides,
  });
  return { code, out, handedOver, reboots };
}

const statusBodies = () =>
  requests
    .filter((r) => r.route === `POST /pxe/${MAC}/status`)
    .map((r) => JSON.parse(r.body) as { status: string; reason?: string });

describe('auto-flash target identity', () => {
  it('refuses two disks with the plan serial: exit 3, failed names both, neither written', async () => {
    const a = await fileDisk('DUP-1');
    const b = await fileDisk('DUP-1');
    routes[`GET /pxe/${MAC}/plan`] = flashPlan('DUP-1');
    const r = await agent({ listDisks: () => Promise.resolve([a, b]) });
    expect(r.code, r.out).toBe(3);
    const [failed] = statusBodies();
    expect(failed?.status).toBe('failed');
    expect(failed?.reason).toContain('matches 2 disks');
    expect(failed?.reason).toContain(`${a.path} (serial 'DUP-1')`);
    expect(failed?.reason).toContain(`${b.path} (serial 'DUP-1')`);
    expect(images.requests).toHaveLength(0);
    expect(r.reboots).toBe(0);
  });

  it('re-checks the disk right before writing: a changed serial is refused, nothing written', async () => {
    const disk = await fileDisk('ID-1');
    const swapped = { ...disk, serial: 'SOMEONE-ELSE' };
    let calls = 0;
    routes[`GET /pxe/${MAC}/plan`] = flashPlan('ID-1');
    // The inventory and the match see ID-1; the check before writing sees another disk there.
    const r = await agent({
      listDisks: () => Promise.resolve([++calls <= 2 ? disk : swapped]),
    });
    expect(r.code, r.out).toBe(3);
    expect(calls).toBe(3);
    const [failed] = statusBodies();
    expect(failed?.status).toBe('failed');
    expect(failed?.reason).toMatch(/^target disk serial 'ID-1' changed before writing: /);
    expect(failed?.reason).toContain("now has serial 'SOMEONE-ELSE'");
    expect(await readFile(disk.path)).toEqual(Buffer.alloc(image.sizeBytes, 0xee));
  });

  it('a changed size is refused too', async () => {
    const disk = await fileDisk('ID-2');
    let calls = 0;
    routes[`GET /pxe/${MAC}/plan`] = flashPlan('ID-2');
    const r = await agent({
      listDisks: () =>
        Promise.resolve([++calls <= 2 ? disk : { ...disk, size_bytes: disk.size_bytes * 2 }]),
    });
    expect(r.code, r.out).toBe(3);
    expect(statusBodies()[0]?.reason).toContain(`is now ${disk.size_bytes * 2} bytes`);
  });
});

describe('auto-flash success paths', () => {
  it('an unknown plan format is a hint the image name overrides; the inventory size is a string', async () => {
    const disk = await fileDisk('OK-1');
    routes[`GET /pxe/${MAC}/plan`] = flashPlan('OK-1', { format: 'some-future-format' });
    const r = await agent({ listDisks: () => Promise.resolve([disk]) });
    expect(r.code, r.out).toBe(0);
    expect(await sha256File(disk.path)).toBe(image.sha256);
    expect(statusBodies()).toEqual([{ status: 'done' }]);
    const inventory = requests.find((q) => q.route === `POST /pxe/${MAC}/inventory`);
    const sent = JSON.parse(inventory!.body) as { disks: Array<{ size: unknown }> };
    expect(sent.disks[0]!.size).toBe(String(image.sizeBytes));
    expect(r.reboots).toBe(1);
  });

  it('progress answering 500, then the connection dropping, never stops the flash; done is posted', async () => {
    const disk = await fileDisk('OK-2');
    routes[`GET /pxe/${MAC}/plan`] = flashPlan('OK-2');
    let progress = 0;
    routes[`POST /pxe/${MAC}/progress`] = (req, res) => {
      if (++progress === 1) {
        res.writeHead(500);
        return res.end();
      }
      req.socket.destroy();
    };
    const r = await agent({ listDisks: () => Promise.resolve([disk]) });
    expect(r.code, r.out).toBe(0);
    expect(progress).toBeGreaterThan(1);
    expect(r.out).toContain('failed (the server answered HTTP 500); flashing on');
    expect(await sha256File(disk.path)).toBe(image.sha256);
    expect(statusBodies()).toEqual([{ status: 'done' }]);
  });

  it('stops posting progress after a 404 (a server without the route)', async () => {
    const disk = await fileDisk('OK-3');
    routes[`GET /pxe/${MAC}/plan`] = flashPlan('OK-3');
    routes[`POST /pxe/${MAC}/progress`] = json(404, { error: 'not found' });
    const r = await agent({ listDisks: () => Promise.resolve([disk]) });
    expect(r.code, r.out).toBe(0);
    expect(requests.filter((q) => q.route === `POST /pxe/${MAC}/progress`)).toHaveLength(1);
    expect(statusBodies()).toEqual([{ status: 'done' }]);
  });

  it('a signal while done is being posted waits for the POST, then exits 130 without rebooting', async () => {
    const disk = await fileDisk('OK-4');
    routes[`GET /pxe/${MAC}/plan`] = flashPlan('OK-4');
    const controller = new AbortController();
    const states: Array<string | null> = [];
    let statusAnswered = false;
    routes[`POST /pxe/${MAC}/status`] = (_req, res) => {
      // The signal lands while the server is still answering the `done`.
      controller.abort();
      setTimeout(() => {
        statusAnswered = true;
        res.writeHead(204);
        res.end();
      }, 200);
    };
    const r = await agent({
      listDisks: () => Promise.resolve([disk]),
      signal: controller.signal,
      onBusy: (state) => {
        // The CLI exits on a signal only while idle: idle must come after the answer.
        if (state === null) expect(statusAnswered).toBe(true);
        states.push(state);
      },
    });
    expect(states).toEqual(['flashing', 'reporting', null]);
    expect(r.code, r.out).toBe(130);
    expect(statusBodies()).toEqual([{ status: 'done' }]);
    expect(r.out).toContain('bty: reported status=done');
    expect(r.reboots).toBe(0);
  });

  it('writes the entered/exiting markers to kmsg with the <6> prefix', async () => {
    const kmsg = join(dir, 'kmsg');
    routes[`GET /pxe/${MAC}/plan`] = json(200, { mode: 'exit' });
    const r = await agent({ kmsgPath: kmsg, listDisks: () => Promise.resolve([]) });
    expect(r.code).toBe(0);
    expect(await readFile(kmsg, 'utf8')).toBe(`<6>${markerEntered()}\n<6>${markerExiting()}\n`);
    expect(r.out.startsWith(`${markerEntered()}\n`)).toBe(true);
    expect(r.out.endsWith(`${markerExiting()}\n`)).toBe(true);
  });
});

describe('plan retries', () => {
  it('retries a 5xx and a dropped connection, then acts on the plan', async () => {
    let gets = 0;
    routes[`GET /pxe/${MAC}/plan`] = (req, res, body) => {
      gets++;
      if (gets === 1) return json(503, { error: 'starting' })(req, res, body);
      if (gets === 2) return req.socket.destroy();
      json(200, { mode: 'exit' })(req, res, body);
    };
    const r = await agent({ planRetryDelaysMs: [5, 5, 5], listDisks: () => Promise.resolve([]) });
    expect(r.code, r.out).toBe(0);
    expect(gets).toBe(3);
    expect(r.handedOver).toEqual([]);
  });

  it('gives up after the last attempt and hands over', async () => {
    routes[`GET /pxe/${MAC}/plan`] = json(500, 'boom');
    const r = await agent({ planRetryDelaysMs: [5, 5, 5], listDisks: () => Promise.resolve([]) });
    expect(requests.filter((q) => q.route === `GET /pxe/${MAC}/plan`)).toHaveLength(4);
    expect(r.handedOver).toHaveLength(1);
    expect(r.handedOver[0]!.banner).toMatch(/^plan fetch failed: HTTP 500/);
  });

  it('a 4xx or a malformed plan hands over at once', async () => {
    routes[`GET /pxe/${MAC}/plan`] = json(403, { error: 'no' });
    await agent({ planRetryDelaysMs: [5, 5, 5], listDisks: () => Promise.resolve([]) });
    expect(requests.filter((q) => q.route === `GET /pxe/${MAC}/plan`)).toHaveLength(1);
    requests.length = 0;
    routes[`GET /pxe/${MAC}/plan`] = (_req, res) => res.end('<html>');
    const r = await agent({ planRetryDelaysMs: [5, 5, 5], listDisks: () => Promise.resolve([]) });
    expect(requests.filter((q) => q.route === `GET /pxe/${MAC}/plan`)).toHaveLength(1);
    expect(r.handedOver).toHaveLength(1);
  });

  it('hands the wizard the server and MAC, so its outcomes can be reported', async () => {
    routes[`GET /pxe/${MAC}/plan`] = json(200, { mode: 'interactive' });
    const r = await agent({ listDisks: () => Promise.resolve([]) });
    expect(r.handedOver[0]!.server?.api.url('/status')).toBe(`${base}/pxe/${MAC}/status`);
  });
});

describe('single instance', () => {
  it('another live agent holds the lock: no agent run, the wizard with the server catalog', async () => {
    const lock = join(dir, 'held.lock');
    // The test runner's parent is alive and is not this process.
    await writeFile(lock, `${process.ppid}\n`);
    routes[`GET /pxe/${MAC}/plan`] = json(200, { mode: 'exit' });
    const r = await agent({ lockPath: lock, listDisks: () => Promise.resolve([]) });
    expect(r.handedOver).toHaveLength(1);
    expect(r.handedOver[0]!.banner).toBe(
      `another bty agent is running (pid ${process.ppid}); starting the wizard`,
    );
    expect(r.handedOver[0]!.catalog).toBe(`${base}/catalog.toml`);
    // Neither the inventory nor the plan: the running agent owns this machine.
    expect(requests).toEqual([]);
    expect(await readFile(lock, 'utf8')).toBe(`${process.ppid}\n`);
  });

  it('a stale lock (its PID is gone) is replaced, held for the run and released after', async () => {
    const lock = join(dir, 'stale.lock');
    await writeFile(lock, '2147483646\n');
    let during = '';
    routes[`GET /pxe/${MAC}/plan`] = (req, res, body) => {
      void readFile(lock, 'utf8').then((text) => {
        during = text;
        json(200, { mode: 'exit' })(req, res, body);
      });
    };
    const r = await agent({ lockPath: lock, listDisks: () => Promise.resolve([]) });
    expect(r.code, r.out).toBe(0);
    expect(during).toBe(`${process.pid}\n`);
    expect(existsSync(lock)).toBe(false);
  });
});
