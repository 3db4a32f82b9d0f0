/**
 * The server-driven agent end to end: the built `bin/bty --server URL --mac MAC --no-reboot`
 * against a running bty-web (loopback, real SQLite), with a catalog entry whose image a local
 * HTTP server publishes, and a real loop device as the target disk (serial from the
 * BTY_AGENT_LOOP_IDENTITY opt-in). Needs root for the loop devices and `make build` for dist/.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  MARKER_AUTO_FLASH_STARTING,
  MARKER_FLASH_COMPLETE,
  markerEntered,
  markerExiting,
} from '../../src/agent/console.ts';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';
import { convertImage, makeRawImage, sha256File, type MadeImage } from '../helpers/images.ts';
import { createLoopDevice, describeIfRoot, type LoopDevice } from '../helpers/loop.ts';
import { startUiServer, UI_PASSWORD, type UiServer } from '../helpers/ui.ts';

const BTY = new URL('../../bin/bty', import.meta.url).pathname;
const MiB = 1 << 20;
const AGENT_TIMEOUT_MS = 60_000;
const IMAGE_PATH = '/images/agent-disk.img.zst';
/** The same bytes under another name, for the catalog entry with a wrong sha256. */
const BAD_SHA_PATH = '/images/agent-bad-sha.img.zst';
/** The same bytes again, served slowly enough to stop the agent mid-flash. */
const SLOW_PATH = '/images/agent-slow.img.zst';

let dir: string;
let raw: MadeImage;
let zst: MadeImage;
let images: FaultServer;
let web: UiServer;
let cookie: string;
let goodRef: string;
let badShaRef: string;
let slowRef: string;
const loops: LoopDevice[] = [];

interface AgentRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** What the agent echoed to its console (a file standing in for /dev/console). */
  console: string;
}

/** Runs bin/bty with the test opt-in and a file as the console; killed by PID if it hangs. */
async function runAgent(
  args: string[],
  onOutput?: (stdout: string, pid: number) => void,
): Promise<AgentRun> {
  const consoleFile = join(dir, `console-${randomUUID()}`);
  const result = await new Promise<Omit<AgentRun, 'console'>>((resolve, reject) => {
    const child = spawn(BTY, args, {
      env: {
        ...process.env,
        BTY_AGENT_LOOP_IDENTITY: '1',
        BTY_AGENT_CONSOLE: consoleFile,
        // Never the host's kernel log.
        BTY_AGENT_KMSG: '',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (child.pid !== undefined) onOutput?.(stdout, child.pid);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, AGENT_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  const console = await readFile(consoleFile, 'utf8').catch(() => '');
  return { ...result, console };
}

async function api(method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(web.base + path, {
    method,
    headers: {
      cookie,
      accept: 'application/json',
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

async function putMachine(mac: string, fields: Record<string, unknown>): Promise<void> {
  const res = await api('PUT', `/machines/${mac}`, fields);
  expect(res.status, await res.clone().text()).toBe(200);
}

interface AuditEvent {
  kind: string;
  summary: string;
  details: Record<string, unknown> | null;
}

async function eventsOf(mac: string, kind: string): Promise<AuditEvent[]> {
  const res = await api('GET', `/events?subject_id=${mac}&kind=${kind}&limit=100`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { events: AuditEvent[] }).events;
}

/** A fresh loop device whose identity (its serial for the agent) is unique to this run. */
async function loopDisk(): Promise<{ loop: LoopDevice; serial: string }> {
  const fileName = `agent-${randomUUID().slice(0, 8)}.img`;
  const loop = await createLoopDevice({ sizeBytes: 48 * MiB, fileName });
  loops.push(loop);
  return { loop, serial: `loop-${fileName}` };
}

/** Random bytes at the start of a device, so "untouched" means something. */
async function scribble(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(randomBytes(MiB), 0, MiB, 0);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A unique locally administered MAC. */
function newMac(): string {
  const bytes = randomBytes(5);
  return ['52', ...[...bytes].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** Collects `/events/stream` frames (with the session cookie) until stopped. */
function watchStream(): {
  frames: Array<{ type: string; data: Record<string, unknown> }>;
  stop: () => void;
} {
  const frames: Array<{ type: string; data: Record<string, unknown> }> = [];
  let buffer = '';
  const req = http.get(`${web.base}/events/stream`, { headers: { cookie } }, (res) => {
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buffer += chunk;
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const type = /^event: (.*)$/m.exec(frame)?.[1];
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (type && data) frames.push({ type, data: JSON.parse(data) as Record<string, unknown> });
      }
    });
  });
  req.on('error', () => undefined);
  return { frames, stop: () => req.destroy() };
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describeIfRoot('bty agent against a running bty-web', () => {
  beforeAll(async () => {
    if (!existsSync(new URL('../../dist/src/cli/bin.js', import.meta.url))) {
      throw new Error('dist/ is missing: run `make build` before these tests');
    }
    dir = await mkdtemp(join(tmpdir(), 'bty-agent-'));
    raw = await makeRawImage(join(dir, 'disk.img'), { sizeBytes: 32 * MiB, seed: 61 });
    zst = await convertImage(raw.path, 'img.zst', join(dir, 'disk.img.zst'));
    images = await startFaultServer();
    // Slow enough that the write phase spans a few progress reports.
    images.serve(IMAGE_PATH, { body: { file: zst.path } }, { bytesPerSecond: 3 * MiB });
    images.serve(BAD_SHA_PATH, { body: { file: zst.path } });
    images.serve(SLOW_PATH, { body: { file: zst.path } }, { bytesPerSecond: 256 * 1024 });
    web = await startUiServer();
    const login = await fetch(`${web.base}/ui/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ password: UI_PASSWORD }),
    });
    expect(login.status).toBe(204);
    cookie = login.headers.get('set-cookie')!.split(';')[0]!;

    const good = await api('POST', '/catalog/entries', {
      src: images.urlFor(IMAGE_PATH),
      sha256: zst.sha256,
    });
    expect(good.status, await good.clone().text()).toBe(201);
    goodRef = ((await good.json()) as { ref: string }).ref;
    const bad = await api('POST', '/catalog/entries', {
      src: images.urlFor(BAD_SHA_PATH),
      sha256: 'ab'.repeat(32),
    });
    expect(bad.status).toBe(201);
    badShaRef = ((await bad.json()) as { ref: string }).ref;
    const slow = await api('POST', '/catalog/entries', {
      src: images.urlFor(SLOW_PATH),
      sha256: zst.sha256,
    });
    expect(slow.status).toBe(201);
    slowRef = ((await slow.json()) as { ref: string }).ref;
  }, 120_000);

  afterAll(async () => {
    for (const loop of loops) await loop.detach();
    await web?.close();
    await images?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('flashes the bound image onto the disk with the bound serial, reports it, and the next offer boots the disk', async () => {
    const mac = newMac();
    const { loop, serial } = await loopDisk();
    await putMachine(mac, {
      boot_mode: 'bty-flash-once',
      bty_image_ref: goodRef,
      target_disk_serial: serial,
    });
    // What a PXE boot does first: the offer (flash), then the live env's kernel fetch arms it.
    expect(await (await fetch(`${web.base}/pxe/${mac}`)).text()).toContain('flash');
    await fetch(`${web.base}/boot/vmlinuz?mac=${mac}`);

    const stream = watchStream();
    let run: AgentRun;
    try {
      run = await runAgent(['--server', web.base, '--mac', mac, '--no-reboot']);
    } finally {
      stream.stop();
    }
    expect(run.code, run.stdout + run.stderr).toBe(0);

    // The bytes, the markers (stdout and console, in order) and the reports.
    expect(await sha256File(loop.path, { length: raw.sizeBytes })).toBe(raw.sha256);
    const starting = run.stdout.indexOf(`${MARKER_AUTO_FLASH_STARTING}\n`);
    const complete = run.stdout.indexOf(`${MARKER_FLASH_COMPLETE}\n`);
    expect(starting).toBeGreaterThanOrEqual(0);
    expect(complete).toBeGreaterThan(starting);
    expect(run.console).toBe(
      [
        markerEntered(),
        MARKER_AUTO_FLASH_STARTING,
        MARKER_FLASH_COMPLETE,
        markerExiting(),
        '',
      ].join('\n'),
    );
    expect(run.stdout).toContain(`sha256 verified (${zst.sha256})`);
    expect(run.stdout).toContain('bty: reported status=done');
    expect(run.stdout).toContain('--no-reboot given; not rebooting');

    expect(await eventsOf(mac, 'machine.flashed')).toHaveLength(1);
    expect(await eventsOf(mac, 'machine.flash_failed')).toHaveLength(0);
    const [inventory] = await eventsOf(mac, 'machine.inventory');
    expect((inventory?.details?.serials as string[]) ?? []).toContain(serial);

    // Progress went through the server to the live stream while the agent ran.
    const progress = stream.frames.filter((f) => f.type === 'progress' && f.data.mac === mac);
    const phases = progress.map((f) => f.data.phase);
    expect(phases).toContain('write');
    expect(phases.filter((p) => p === 'write').length).toBeGreaterThanOrEqual(2);
    expect(phases.indexOf('resolve')).toBeLessThan(phases.indexOf('write'));
    const statuses = stream.frames.filter((f) => f.type === 'status' && f.data.mac === mac);
    expect(statuses.map((f) => f.data.status)).toEqual(['done']);

    // flash-once, armed and done: the next PXE contact boots the fresh disk.
    const offer = await (await fetch(`${web.base}/pxe/${mac}`)).text();
    expect(offer).toContain('booting local disk');
    const offered = await eventsOf(mac, 'netboot.pxe.offered');
    expect(offered[0]?.details?.offer_kind).toBe('bty-flash-once-ipxe-exit');
  });

  it('refuses a target serial this host does not have: exit 3, failed reported, disk untouched', async () => {
    const mac = newMac();
    const { loop, serial } = await loopDisk();
    await scribble(loop.path);
    const before = await sha256File(loop.path);
    await putMachine(mac, {
      boot_mode: 'bty-flash-always',
      bty_image_ref: goodRef,
      target_disk_serial: 'NO-SUCH-SERIAL',
    });

    const run = await runAgent(['--server', web.base, '--mac', mac, '--no-reboot']);
    expect(run.code, run.stdout + run.stderr).toBe(3);
    expect(run.stderr).toContain("no disk on this host has serial 'NO-SUCH-SERIAL'");
    expect(run.stderr).toContain(`${loop.path} (serial '${serial}')`);
    expect(run.stdout).toContain(MARKER_AUTO_FLASH_STARTING);
    expect(run.stdout).not.toContain(MARKER_FLASH_COMPLETE);
    expect(run.stdout).not.toContain('wizard');

    const [failed] = await eventsOf(mac, 'machine.flash_failed');
    const reason = failed?.details?.reason as string;
    expect(reason).toMatch(
      /^target disk serial 'NO-SUCH-SERIAL' not present on this host; current disks: /,
    );
    expect(reason).toContain(`${loop.path} (serial '${serial}')`);
    expect(reason.length).toBeLessThanOrEqual(500);
    expect(await eventsOf(mac, 'machine.flashed')).toHaveLength(0);
    expect(await sha256File(loop.path)).toBe(before);
  });

  it('reports an integrity failure (the catalog sha256 is wrong) and exits 4', async () => {
    const mac = newMac();
    const { serial } = await loopDisk();
    await putMachine(mac, {
      boot_mode: 'bty-flash-always',
      bty_image_ref: badShaRef,
      target_disk_serial: serial,
    });

    const run = await runAgent(['--server', web.base, '--mac', mac, '--no-reboot']);
    expect(run.code, run.stdout + run.stderr).toBe(4);
    expect(run.stderr).toContain('[BTY_ERR_INTEGRITY]');
    expect(run.stdout).not.toContain(MARKER_FLASH_COMPLETE);
    expect(run.console).toBe(
      `${markerEntered()}\n${MARKER_AUTO_FLASH_STARTING}\n${markerExiting()}\n`,
    );
    const [failed] = await eventsOf(mac, 'machine.flash_failed');
    expect(failed?.details?.reason).toMatch(/sha256/);
    expect(await eventsOf(mac, 'machine.flashed')).toHaveLength(0);
  });

  it('SIGTERM mid-flash stops the writers, reports failed, and exits 130', async () => {
    const mac = newMac();
    const { serial } = await loopDisk();
    await putMachine(mac, {
      boot_mode: 'bty-flash-always',
      bty_image_ref: slowRef,
      target_disk_serial: serial,
    });
    let signalled = false;
    const run = await runAgent(['--server', web.base, '--mac', mac, '--no-reboot'], (out, pid) => {
      if (!signalled && out.includes('bty: target ')) {
        signalled = true;
        // Give the write phase a moment to start before stopping it.
        setTimeout(() => process.kill(pid, 'SIGTERM'), 500);
      }
    });
    expect(signalled).toBe(true);
    expect(run.code, run.stdout + run.stderr).toBe(130);
    expect(run.stderr).toContain('[BTY_ERR_CANCELLED]');
    const [failed] = await eventsOf(mac, 'machine.flash_failed');
    expect(failed?.details?.reason).toMatch(/cancelled/);
  });

  it('hands over to the wizard with <server>/catalog.toml when the server cannot be reached', async () => {
    const server = `http://127.0.0.1:${await closedPort()}`;
    const run = await runAgent(['--server', server, '--mac', newMac(), '--no-reboot']);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('bty: plan fetch failed: ');
    // Refused connections are retried (4 attempts) before the hand-over.
    expect(run.stdout).toContain('(attempt 4 of 4)');
    expect(run.stdout).toContain(
      `bty: handing over to the interactive wizard with the catalog ${server}/catalog.toml\n`,
    );
    expect(run.stdout).toContain('inventory POST to');
    expect(run.stdout).not.toContain(MARKER_AUTO_FLASH_STARTING);
  });

  it('hands over to the wizard with the catalog the plan names (bty-tui)', async () => {
    const mac = newMac();
    await putMachine(mac, { boot_mode: 'bty-tui' });
    const run = await runAgent(['--server', web.base, '--mac', mac, '--no-reboot']);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain(
      `bty: handing over to the interactive wizard with the catalog ${web.base}/catalog.toml\n`,
    );
    expect(run.stdout).not.toContain('plan fetch failed');
  });

  it('plan exit: says there is nothing to do and exits 0; a bare host works as --server', async () => {
    const mac = newMac();
    await putMachine(mac, { boot_mode: 'ipxe-exit' });
    const bareHost = `${web.base.replace(/^http:\/\//, '')}/`;
    const run = await runAgent(['--server', bareHost, '--mac', mac, '--no-reboot']);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain(`server-driven mode: server=${web.base} mac=${mac}\n`);
    expect(run.stdout).toContain('nothing to do');
    expect(run.console).toBe(`${markerEntered()}\n${markerExiting()}\n`);
    expect(await eventsOf(mac, 'netboot.pxe.plan')).toHaveLength(1);
  });

  it('plan inventory: the disks reach the server, then (with --no-reboot) exit 0', async () => {
    const mac = newMac();
    const { loop, serial } = await loopDisk();
    await putMachine(mac, { boot_mode: 'bty-inventory' });
    const run = await runAgent(['--server', web.base, '--mac', mac.toUpperCase(), '--no-reboot']);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('bty: plan: inventory + reboot');
    expect(run.stdout).toContain('--no-reboot given; not rebooting');
    const machine = (await (await api('GET', `/machines/${mac}`)).json()) as {
      known_disks: Array<{ path: string; serial: string | null }> | null;
    };
    expect(machine.known_disks).toContainEqual(
      expect.objectContaining({ path: loop.path, serial }),
    );
  });
});
