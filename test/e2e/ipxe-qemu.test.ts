/**
 * Real iPXE against bin/bty-web (issue 4): QEMU (TCG, no KVM) network-boots from a bty-web
 * child process through QEMU's user-mode network, whose DHCP hands iPXE the URL of
 * `/pxe-bootstrap.ipxe`. Three boots of one machine (one fixed MAC), in order:
 *
 * 1. SeaBIOS + iPXE, unknown machine: bty-web discovers it under the NIC's MAC and offers
 *    `bty-inventory` (the live environment). Detected by the live environment's kernel fetch
 *    (`/boot/...vmlinuz?mac=`, logged as `netboot.flasher.armed`); the kernel does not exist
 *    here, so QEMU is stopped there.
 * 2. Mode set to `ipxe-exit`, SeaBIOS again: the script `sanboot`s BIOS drive 0x80, whose boot
 *    sector prints a marker on COM1. SeaBIOS's own disk boot would print "Booting from Hard
 *    Disk" first; iPXE prints "Booting from SAN device".
 * 3. Same mode under OVMF (UEFI): the script `exit`s to the firmware, which goes on down its
 *    boot order to the GPT disk and starts `\EFI\BOOT\BOOTX64.EFI` from its EFI system
 *    partition, which prints a marker.
 *
 * The boots share one machine record, so they run in this order (Vitest runs a file's tests in
 * sequence); a failure in boot 1 makes the later ones fail too.
 *
 * Machine and event reads go through the JSON API (after `POST /ui/login`) where the route is
 * registered, and straight to bty-web's SQLite file (src/web/db) where the server answers
 * "no route for …" (the machine and event routes are being written): both read the same rows.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { listEvents } from '../../src/web/db/events.ts';
import { getMachine } from '../../src/web/db/machines.ts';
import { buildBiosDisk, buildUefiDisk } from '../helpers/bootdisk.ts';
import {
  checkQemu,
  findOvmf,
  startQemu,
  stripEscapes,
  type QemuMachine,
  type QemuOptions,
} from '../helpers/qemu.ts';
import { freeTcpPort } from '../helpers/ports.ts';

const BIN = new URL('../../bin/bty-web', import.meta.url).pathname;
/** QEMU's own OUI; fixed so the records and URLs are predictable. */
const MAC = '52:54:00:b7:e4:01';
const MAC_HEXHYP = MAC.replaceAll(':', '-');
/** One TCG boot takes seconds to a few tens of seconds; this bounds each wait. */
const BOOT_TIMEOUT_MS = 90_000;
const TEST_TIMEOUT_MS = BOOT_TIMEOUT_MS + 30_000;

let dir = '';
let web: { child: ChildProcess; port: number; stderr: () => string } | null = null;
let database: BtyDatabase | null = null;
let cookie = '';
let biosDisk: string;
let uefiDisk: string;
const nonce = randomBytes(4).toString('hex');
const BIOS_MARKER = `BTY-BIOS-DISK-${nonce}`;
const EFI_MARKER = `BTY-EFI-DISK-${nonce}`;
/** Every QEMU started, so afterAll can stop any that a failed test left behind. */
const machines = new Set<QemuMachine>();
const timings: string[] = [];
/** Which source each read or write used: `api` or `db`. */
const used = new Set<string>();

async function startWeb(stateDir: string): Promise<NonNullable<typeof web>> {
  const port = await freeTcpPort();
  const child = spawn(BIN, ['--host', '127.0.0.1', '--port', String(port)], {
    env: { ...process.env, BTY_PATHS_STATE_DIR: stateDir, BTY_CONFIG_FILE: '', BTY_CONFIG_DIR: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const started = { child, port, stderr: () => stderr };
  const deadline = Date.now() + 20_000;
  while (!stderr.includes('listening on')) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`bin/bty-web exited before listening:\n${stderr}`);
    }
    if (Date.now() > deadline) {
      await stopWeb(started);
      throw new Error(`bin/bty-web did not listen within 20 s:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return started;
}

async function stopWeb(server: NonNullable<typeof web>): Promise<void> {
  const { child } = server;
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, 'SIGTERM');
  const done = await Promise.race([
    exited.then(() => true),
    new Promise<false>((r) => setTimeout(() => r(false), 10_000)),
  ]);
  if (!done) {
    process.kill(child.pid, 'SIGKILL');
    await exited;
  }
}

function base(): string {
  if (!web) throw new Error('bty-web is not running');
  return `http://127.0.0.1:${web.port}`;
}

/**
 * A JSON API call with the operator session. Null when bty-web has no such route (its
 * not-found answer, `{"detail":"no route for …"}`), so the caller reads the database instead.
 */
async function api(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: unknown } | null> {
  const res = await fetch(`${base()}${path}`, {
    method,
    headers: {
      cookie,
      accept: 'application/json',
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  const json: unknown = text ? JSON.parse(text) : null;
  const detail = (json as { detail?: unknown } | null)?.detail;
  if (res.status === 404 && typeof detail === 'string' && detail.startsWith('no route for')) {
    return null;
  }
  return { status: res.status, json };
}

function db(): BtyDatabase {
  if (!database) throw new Error('the database is not open');
  return database;
}

interface MachineView {
  mac: string;
  boot_mode: string;
  last_seen_ip: string | null;
}

interface EventView {
  id: number;
  kind: string;
  subject_id: string | null;
  details: Record<string, unknown> | null;
}

async function readMachine(mac: string): Promise<MachineView | null> {
  const r = await api('GET', `/machines/${mac}`);
  if (r !== null) {
    used.add('GET /machines/{mac}: api');
    if (r.status === 404) return null;
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    return r.json as MachineView;
  }
  used.add('GET /machines/{mac}: db');
  return (await getMachine(db().db, mac)) ?? null;
}

async function setBootMode(mac: string, mode: string): Promise<void> {
  const r = await api('PUT', `/machines/${mac}`, { boot_mode: mode });
  if (r !== null) {
    used.add('PUT /machines/{mac}: api');
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    return;
  }
  used.add('PUT /machines/{mac}: db');
  await db()
    .db.updateTable('machines')
    .set({ boot_mode: mode, updated_at: new Date().toISOString() })
    .where('mac', '=', mac)
    .execute();
}

/** The machine's events, oldest first. */
async function machineEvents(mac: string): Promise<EventView[]> {
  const r = await api('GET', `/events?subject_id=${encodeURIComponent(mac)}&limit=500`);
  let events: EventView[];
  if (r !== null) {
    used.add('GET /events: api');
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    events = (r.json as { events: EventView[] }).events;
  } else {
    used.add('GET /events: db');
    events = await listEvents(db().db, { subjectId: mac, limit: 1000 });
  }
  return [...events].sort((a, b) => a.id - b.id);
}

async function offeredEvents(mac: string): Promise<EventView[]> {
  return (await machineEvents(mac)).filter((e) => e.kind === 'netboot.pxe.offered');
}

async function boot(options: Omit<QemuOptions, 'dir' | 'mac' | 'bootUrl'>): Promise<QemuMachine> {
  if (!web) throw new Error('bty-web is not running');
  // Guest-side 10.0.2.2 is the host's 127.0.0.1, where bty-web listens.
  const machine = await startQemu({
    ...options,
    dir,
    mac: MAC,
    bootUrl: `http://10.0.2.2:${web.port}/pxe-bootstrap.ipxe`,
  });
  machines.add(machine);
  return machine;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-ipxe-qemu-'));
  await checkQemu();
  biosDisk = await buildBiosDisk(dir, BIOS_MARKER);
  uefiDisk = await buildUefiDisk(dir, EFI_MARKER);
  const stateDir = join(dir, 'state');
  web = await startWeb(stateDir);
  database = await openDatabase({ sqlitePath: join(stateDir, 'state.db') });
  const login = await fetch(`${base()}/ui/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ password: 'bty-lab' }),
  });
  expect(login.status).toBe(204);
  cookie = (login.headers.getSetCookie()[0] ?? '').split(';')[0] ?? '';
  expect(cookie).toMatch(/=/);
}, 60_000);

afterAll(async () => {
  for (const machine of machines) await machine.stop();
  if (web) await stopWeb(web);
  await database?.close();
  if (timings.length > 0 || used.size > 0) {
    console.log(
      `ipxe-qemu: ${timings.join('; ')}\nipxe-qemu: reads and writes via ${[...used].join(', ')}`,
    );
  }
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

describe('iPXE in QEMU against bin/bty-web', () => {
  it(
    'first boot (SeaBIOS + iPXE): discovered under the NIC MAC and offered bty-inventory',
    async () => {
      const qemu = await boot({ name: '1-bios-discovery', firmware: 'bios', disk: biosDisk });
      try {
        const ms = await qemu.waitFor(
          'the live-environment kernel fetch (/boot/…vmlinuz?mac=)',
          async () => (await machineEvents(MAC)).some((e) => e.kind === 'netboot.flasher.armed'),
          BOOT_TIMEOUT_MS,
        );
        timings.push(`boot 1 (BIOS, discovery): kernel fetched after ${seconds(ms)}`);
      } finally {
        await qemu.stop();
      }
      let report = await qemu.report('boot 1 (BIOS, discovery)');
      const serial = stripEscapes(await qemu.serial());

      const machine = await readMachine(MAC);
      expect(machine, report).not.toBeNull();
      expect(machine?.mac, report).toBe(MAC);
      expect(machine?.boot_mode, report).toBe('bty-inventory');
      expect(machine?.last_seen_ip, report).toBe('127.0.0.1');

      const events = await machineEvents(MAC);
      report += `\n--- events ---\n${JSON.stringify(events, null, 1)}`;
      expect(events[0]?.kind, report).toBe('machine.discovered');
      const offers = events.filter((e) => e.kind === 'netboot.pxe.offered');
      expect(offers[0]?.details?.offer_kind, report).toBe('bty-inventory');
      expect(offers[0]?.details?.boot_mode, report).toBe('bty-inventory');
      const armed = events.find((e) => e.kind === 'netboot.flasher.armed');
      expect(armed?.details?.artifact, report).toMatch(/^bty-netboot-pc-x86_64-v.+\.vmlinuz$/);

      // iPXE asked with ${mac:hexhyp} and tried the live-environment kernel it was given.
      expect(serial, report).toContain(`/pxe/${MAC_HEXHYP}... ok`);
      expect(serial, report).toMatch(/\/boot\/bty-netboot-pc-x86_64-v\S+\.vmlinuz/);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'ipxe-exit under SeaBIOS: the script sanboots drive 0x80 and its boot sector runs',
    async () => {
      await setBootMode(MAC, 'ipxe-exit');
      expect((await readMachine(MAC))?.boot_mode).toBe('ipxe-exit');
      const before = (await offeredEvents(MAC)).length;

      const qemu = await boot({ name: '2-bios-sanboot', firmware: 'bios', disk: biosDisk });
      try {
        const ms = await qemu.waitFor(
          `the boot sector's marker ${BIOS_MARKER}`,
          (serial) => serial.includes(BIOS_MARKER),
          BOOT_TIMEOUT_MS,
        );
        timings.push(`boot 2 (BIOS, sanboot): marker after ${seconds(ms)}`);
      } finally {
        await qemu.stop();
      }
      let report = await qemu.report('boot 2 (BIOS, sanboot)');
      const serial = stripEscapes(await qemu.serial());

      const offers = await offeredEvents(MAC);
      report += `\n--- offers ---\n${JSON.stringify(offers, null, 1)}`;
      expect(offers.length, report).toBe(before + 1);
      expect(offers.at(-1)?.details?.offer_kind, report).toBe('ipxe-exit');
      expect(offers.at(-1)?.details?.sanboot_drive, report).toBe('0x80');

      const script = serial.indexOf(
        `${MAC} boot_mode=ipxe-exit, booting local disk (platform=pcbios)`,
      );
      const san = serial.indexOf('Booting from SAN device');
      const marker = serial.indexOf(BIOS_MARKER);
      expect(script, report).toBeGreaterThanOrEqual(0);
      expect(san, report).toBeGreaterThan(script);
      expect(marker, report).toBeGreaterThan(san);
      // SeaBIOS's own disk boot would say this; iPXE's sanboot must have got there first.
      expect(serial, report).not.toContain('Booting from Hard Disk');
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'ipxe-exit under OVMF: the script exits to the firmware, which boots the EFI loader on the GPT disk',
    async () => {
      const ovmf = await findOvmf();
      expect((await readMachine(MAC))?.boot_mode).toBe('ipxe-exit');
      const before = (await offeredEvents(MAC)).length;

      const qemu = await boot({ name: '3-uefi-exit', firmware: ovmf, disk: uefiDisk });
      try {
        const ms = await qemu.waitFor(
          `the EFI loader's marker ${EFI_MARKER}`,
          (serial) => serial.includes(EFI_MARKER),
          BOOT_TIMEOUT_MS,
        );
        timings.push(`boot 3 (UEFI, exit): marker after ${seconds(ms)}`);
      } finally {
        await qemu.stop();
      }
      let report = await qemu.report('boot 3 (UEFI, exit to firmware)');
      const serial = stripEscapes(await qemu.serial());

      const offers = await offeredEvents(MAC);
      report += `\n--- offers ---\n${JSON.stringify(offers, null, 1)}`;
      expect(offers.length, report).toBe(before + 1);
      expect(offers.at(-1)?.details?.offer_kind, report).toBe('ipxe-exit');

      const script = serial.indexOf(
        `${MAC} boot_mode=ipxe-exit, booting local disk (platform=efi)`,
      );
      const marker = serial.indexOf(EFI_MARKER);
      expect(script, report).toBeGreaterThanOrEqual(0);
      expect(marker, report).toBeGreaterThan(script);
      expect(serial, report).not.toContain('Booting from SAN device');
    },
    TEST_TIMEOUT_MS,
  );
});
