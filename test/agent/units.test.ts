/**
 * The agent's small parts on fixed input: the disk selection (loop opt-in off and on), the
 * status POST retries and reason limit, the wizard's outcome reports, progress against a server
 * without the route, the lock file, and the reboot fall-through.
 */
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { agentDisks, inventoryRecord } from '../../src/agent/disks.ts';
import { acquireAgentLock } from '../../src/agent/lock.ts';
import { ProgressReporter } from '../../src/agent/progress-reporter.ts';
import { rebootMachine } from '../../src/agent/reboot.ts';
import { ServerApi } from '../../src/agent/server-api.ts';
import { sendStatus } from '../../src/agent/status.ts';
import { outcomeReporter } from '../../src/agent/wizard-fallback.ts';
import type { FlashProgress } from '../../src/core/progress.ts';
import type { Disk } from '../../src/flash/disks.ts';

const MAC = '52:54:00:0f:30:31';
let dir: string;
let server: http.Server;
let api: ServerApi;
/** Statuses /status answers, in order; 204 once they run out. */
let answers: number[] = [];
const bodies: unknown[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-agent-units-'));
  server = http.createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (text += d));
    req.on('end', () => {
      bodies.push(JSON.parse(text) as unknown);
      const status = answers.shift() ?? 204;
      if (status === 0) return req.socket.destroy();
      res.writeHead(status);
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  api = new ServerApi(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, MAC);
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  answers = [];
  bodies.length = 0;
});

function disk(name: string, type: string, serial: string | null): Disk {
  return {
    name,
    path: `/dev/${name}`,
    type,
    size_bytes: 1000 * 1000 * 1000,
    vendor: null,
    model: null,
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

describe('agentDisks', () => {
  const listed = [
    disk('sda', 'disk', 'S-A'),
    disk('sr0', 'rom', 'CD'),
    disk('loop0', 'loop', null),
    disk('loop1', 'loop', null),
    disk('nvme0n1', 'disk', null),
  ];
  const list = () => Promise.resolve(listed);
  const loopSerial = (name: string) => Promise.resolve(name === 'loop0' ? 'loop-a.img' : null);

  it('without the opt-in: whole disks only, in lsblk order', async () => {
    const disks = await agentDisks({ loopIdentity: false, list, loopSerial });
    expect(disks.map((d) => [d.name, d.serial])).toEqual([
      ['sda', 'S-A'],
      ['nvme0n1', null],
    ]);
  });

  it('with the opt-in: loop devices too, carrying their made-up serial', async () => {
    const disks = await agentDisks({ loopIdentity: true, list, loopSerial });
    expect(disks.map((d) => [d.name, d.serial])).toEqual([
      ['sda', 'S-A'],
      ['loop0', 'loop-a.img'],
      ['loop1', null],
      ['nvme0n1', null],
    ]);
  });

  it('the inventory size is a string of bytes', () => {
    expect(inventoryRecord(disk('sda', 'disk', 'S')).size).toBe('1000000000');
  });
});

describe('sendStatus', () => {
  const quiet = { out: () => undefined, retryDelayMs: 5 };

  it('retries a 5xx and a dropped connection, then succeeds', async () => {
    answers = [503, 0, 204];
    expect(await sendStatus(api, 'done', undefined, quiet)).toBe(true);
    expect(bodies).toEqual([{ status: 'done' }, { status: 'done' }, { status: 'done' }]);
  });

  it('gives up after three attempts, and at once on a 4xx', async () => {
    answers = [500, 500, 500, 500];
    expect(await sendStatus(api, 'done', undefined, quiet)).toBe(false);
    expect(bodies).toHaveLength(3);
    bodies.length = 0;
    answers = [409];
    expect(await sendStatus(api, 'done', undefined, quiet)).toBe(false);
    expect(bodies).toHaveLength(1);
  });

  it('cuts a reason longer than 500 characters to 500', async () => {
    const reason = `${'x'.repeat(499)}yz and more`;
    expect(await sendStatus(api, 'failed', reason, quiet)).toBe(true);
    expect(bodies).toEqual([{ status: 'failed', reason: `${'x'.repeat(499)}y` }]);
  });
});

describe('the wizard outcome reporter', () => {
  it('posts done, and failed with the reason cut to 500 characters', async () => {
    const report = outcomeReporter({ api, retryDelayMs: 5 });
    await report({ ok: true });
    await report({ ok: false, reason: 'r'.repeat(800) });
    expect(bodies).toEqual([{ status: 'done' }, { status: 'failed', reason: 'r'.repeat(500) }]);
  });

  it('never throws when the server is gone', async () => {
    const gone = new ServerApi('http://127.0.0.1:1', MAC);
    await expect(outcomeReporter({ api: gone, retryDelayMs: 1 })({ ok: true })).resolves.toBe(
      undefined,
    );
  });
});

describe('ProgressReporter against a server without the route', () => {
  const event = (bytes: number): FlashProgress => ({
    phase: 'write',
    bytes_done: bytes,
    bytes_total: 100,
    rate_bps: 1,
    eta_seconds: null,
    resumes: 0,
  });

  it.each([404, 405])('stops after HTTP %i; other errors keep trying', async (status) => {
    const sent: number[] = [];
    const gone = new ProgressReporter(
      (e) => {
        sent.push(e.bytes_done);
        return Promise.resolve(status);
      },
      { intervalMs: 0 },
    );
    for (let i = 1; i <= 5; i++) {
      gone.report(event(i));
      await gone.flush();
    }
    expect(sent).toEqual([1]);
    expect(gone.stopped).toBe(true);

    const failing: number[] = [];
    const flaky = new ProgressReporter(
      (e) => {
        failing.push(e.bytes_done);
        return Promise.resolve(500);
      },
      { intervalMs: 0 },
    );
    for (let i = 1; i <= 3; i++) {
      flaky.report(event(i));
      await flaky.flush();
    }
    expect(failing).toEqual([1, 2, 3]);
  });
});

describe('acquireAgentLock', () => {
  it('writes the PID, refuses a second live holder, releases only its own lock', async () => {
    const path = join(dir, 'a.lock');
    const first = acquireAgentLock(path, process.pid);
    expect(first.ok).toBe(true);
    expect(await readFile(path, 'utf8')).toBe(`${process.pid}\n`);
    // Another process (the runner's parent, alive) asking: refused, told who holds it.
    expect(acquireAgentLock(path, process.ppid)).toEqual({ ok: false, holder: process.pid });
    if (first.ok) first.release();
    await expect(readFile(path, 'utf8')).rejects.toThrow(/ENOENT/);
  });

  it('replaces a lock whose PID is gone or unreadable', async () => {
    const path = join(dir, 'b.lock');
    for (const stale of ['2147483646\n', 'garbage\n']) {
      await writeFile(path, stale);
      const lock = acquireAgentLock(path, process.pid);
      expect(lock.ok).toBe(true);
      expect(await readFile(path, 'utf8')).toBe(`${process.pid}\n`);
      if (lock.ok) lock.release();
    }
  });
});

describe('rebootMachine', () => {
  async function script(name: string, code: number): Promise<string> {
    const path = join(dir, name);
    await writeFile(path, `#!/bin/sh\necho "$@" >> ${dir}/${name}.ran\nexit ${code}\n`);
    await chmod(path, 0o755);
    return path;
  }

  it('falls through failing programs to the first that works', async () => {
    const bad = await script('bad-reboot', 1);
    const good = await script('good-reboot', 0);
    const log: string[] = [];
    await rebootMachine((l) => log.push(l), {
      programs: [
        [bad, ['now']],
        [good, ['-f']],
      ],
      sysrqPath: null,
    });
    expect(await readFile(`${good}.ran`, 'utf8')).toBe('-f\n');
    expect(log).toEqual([`bty: ${bad} now failed; trying the next way to reboot`]);
  });

  it('writes b to the SysRq trigger last, and rejects naming every failure', async () => {
    const sysrq = join(dir, 'sysrq-trigger');
    await rebootMachine(() => undefined, {
      programs: [['/nonexistent/systemctl', ['reboot']]],
      sysrqPath: sysrq,
    });
    expect(await readFile(sysrq, 'utf8')).toBe('b');
    await expect(
      rebootMachine(() => undefined, {
        programs: [['/nonexistent/reboot', ['-f']]],
        sysrqPath: join(dir, 'no-such-dir', 'sysrq-trigger'),
      }),
    ).rejects.toThrow(/could not reboot: \/nonexistent\/reboot -f: .*; .*sysrq-trigger/);
  });
});
