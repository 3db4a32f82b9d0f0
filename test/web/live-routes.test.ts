/**
 * The live environment's routes over real HTTP (bty-web listening on loopback, SQLite in a temp
 * folder): the plan, the inventory post and the progress post, driven as the agent drives them,
 * and refused as a broken or hostile client would be.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { blobPath } from '../../src/cache/url.ts';
import { imageRefForSrc } from '../../src/core/refs.ts';
import { buildApp } from '../../src/web/app.ts';
import { LiveBus, type LiveMessage } from '../../src/web/bus.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { listEvents } from '../../src/web/db/events.ts';
import { getMachine, touchMachine } from '../../src/web/db/machines.ts';
import { LSHW_MAX_BYTES } from '../../src/web/routes/live.ts';

let dir: string;
let database: BtyDatabase;
let app: FastifyInstance;
let base: string;
let clock = new Date('2026-12-01T10:00:00.000Z');
const bus = new LiveBus();
const messages: LiveMessage[] = [];
bus.subscribe((m) => messages.push(m));

const SRC = 'https://images.example/os/debian-13-amd64.img.zst';
/** Pull-through is the default: plans send machines to bty-web's cache, on the Host they used. */
const SRC_VIA_CACHE = `http://pxe.lab:8080${blobPath(SRC)}`;
const REF = imageRefForSrc(SRC);
const SHA = 'c0ffee'.padEnd(64, '0');

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-web-live-'));
  await mkdir(join(dir, 'boot'));
  await writeFile(join(dir, 'boot', 'vmlinuz'), 'kernel');
  database = await openDatabase({ sqlitePath: join(dir, 'state.db') });
  await migrate(database);
  app = await buildApp({
    database,
    version: '9.9.9',
    artifactVersion: '1.2.3',
    bootDir: join(dir, 'boot'),
    now: () => clock,
    bus,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  const at = clock.toISOString();
  await database.db
    .insertInto('catalog_entries')
    .values({
      ref: REF,
      name: 'debian-13',
      src: SRC,
      sha256: SHA,
      format: 'img.zst',
      created_at: at,
      updated_at: at,
    })
    .execute();
});

afterAll(async () => {
  await app?.close();
  await database?.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  messages.length = 0;
});

const tick = (ms: number) => {
  clock = new Date(clock.getTime() + ms);
};

/** A request with full control of the headers (fetch cannot set Host) and the raw body. */
function request(
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, { method, headers: options.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

const postJson = (path: string, body: unknown) =>
  request('POST', path, {
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

async function plan(mac: string, host = 'pxe.lab:8080') {
  const res = await request('GET', `/pxe/${mac}/plan`, { headers: { host } });
  const json = JSON.parse(res.body) as Record<string, unknown>;
  return { status: res.status, type: res.headers['content-type'], json };
}

async function machineWith(mac: string, fields: Record<string, string | null>) {
  await touchMachine(database.db, mac, '10.0.0.9', clock);
  await database.db.updateTable('machines').set(fields).where('mac', '=', mac).execute();
}

/** Everything a refused request must leave alone. */
async function snapshot() {
  const machines = await database.db.selectFrom('machines').selectAll().orderBy('mac').execute();
  const inventory = await database.db.selectFrom('inventory').selectAll().orderBy('mac').execute();
  const events = await listEvents(database.db, { limit: 1000 });
  return { machines, inventory, events: events.length };
}

describe('GET /pxe/{mac}/plan', () => {
  it('a first contact discovers the machine as bty-inventory and plans an inventory', async () => {
    const res = await plan('52-54-00-00-B0-01');
    expect(res).toEqual({
      status: 200,
      type: 'application/json; charset=utf-8',
      json: { mode: 'inventory' },
    });
    const mac = '52:54:00:00:b0:01';
    expect((await getMachine(database.db, mac))?.boot_mode).toBe('bty-inventory');
    const events = await listEvents(database.db, { subjectId: mac });
    expect(events.map((e) => e.kind).sort()).toEqual(['machine.discovered', 'netboot.pxe.plan']);
    const discovered = events.find((e) => e.kind === 'machine.discovered')!;
    expect(discovered.summary).toBe(`${mac} first contacted /pxe/${mac}/plan from 127.0.0.1`);
    expect(discovered.details).toEqual({
      bty_image_ref: null,
      boot_mode: 'bty-inventory',
      sanboot_drive: null,
      labels: [],
      target_disk_serial: null,
    });
    const logged = events.find((e) => e.kind === 'netboot.pxe.plan')!;
    expect(logged.actor).toBe('pxe-client');
    expect(logged.source_ip).toBe('127.0.0.1');
    expect(logged.details).toEqual({
      plan: { mode: 'inventory' },
      boot_mode: 'bty-inventory',
      offer_kind: 'plan:inventory',
    });
    expect(messages).toContainEqual({ type: 'machine', mac, change: 'discovered' });
    expect(messages).toContainEqual({ type: 'offer', mac, offer_kind: 'plan:inventory' });
    expect(messages.some((m) => m.type === 'event' && m.kind === 'netboot.pxe.plan')).toBe(true);
  });

  it('twenty concurrent first contacts make one record and one discovery event', async () => {
    const mac = '52:54:00:00:b0:02';
    const answers = await Promise.all(Array.from({ length: 20 }, () => plan(mac)));
    expect(answers.every((a) => a.status === 200 && a.json.mode === 'inventory')).toBe(true);
    expect(
      await listEvents(database.db, { kind: 'machine.discovered', subjectId: mac }),
    ).toHaveLength(1);
    expect(
      await listEvents(database.db, { kind: 'netboot.pxe.plan', subjectId: mac }),
    ).toHaveLength(20);
  });

  const ORPHAN = 'ee'.repeat(32);
  let row = 0x10;
  it.each([
    [
      'flash-once, entry found, serial set',
      { boot_mode: 'bty-flash-once', bty_image_ref: REF, target_disk_serial: 'S3Z9' },
      {
        mode: 'flash',
        image: SRC_VIA_CACHE,
        target_disk_serial: 'S3Z9',
        name: 'debian-13',
        disk_image_sha: SHA,
        format: 'img.zst',
      },
      'plan:flash:bty-flash-once',
    ],
    [
      'flash-always, entry found, serial set',
      { boot_mode: 'bty-flash-always', bty_image_ref: REF, target_disk_serial: 'S3Z9' },
      {
        mode: 'flash',
        image: SRC_VIA_CACHE,
        target_disk_serial: 'S3Z9',
        name: 'debian-13',
        disk_image_sha: SHA,
        format: 'img.zst',
      },
      'plan:flash:bty-flash-always',
    ],
    [
      'flash mode without a target serial',
      { boot_mode: 'bty-flash-always', bty_image_ref: REF, target_disk_serial: null },
      { mode: 'interactive', catalog: 'http://pxe.lab:8080/catalog.toml' },
      'plan:interactive:flash-unresolved',
    ],
    [
      'flash mode bound to a ref not in the catalog',
      { boot_mode: 'bty-flash-once', bty_image_ref: ORPHAN, target_disk_serial: 'S3Z9' },
      { mode: 'interactive', catalog: 'http://pxe.lab:8080/catalog.toml' },
      'plan:interactive:flash-unresolved',
    ],
    [
      'bty-tui',
      { boot_mode: 'bty-tui', bty_image_ref: null, target_disk_serial: null },
      { mode: 'interactive', catalog: 'http://pxe.lab:8080/catalog.toml' },
      'plan:interactive:tui',
    ],
    [
      'ipxe-exit, even when bound',
      { boot_mode: 'ipxe-exit', bty_image_ref: REF, target_disk_serial: 'S3Z9' },
      { mode: 'exit' },
      'plan:exit:ipxe-exit',
    ],
    [
      'flash mode without a ref',
      { boot_mode: 'bty-flash-once', bty_image_ref: null, target_disk_serial: 'S3Z9' },
      { mode: 'exit' },
      'plan:exit:bty-flash-once',
    ],
    [
      'ramboot (not handled here)',
      { boot_mode: 'ramboot', bty_image_ref: REF, target_disk_serial: null },
      { mode: 'exit' },
      'plan:exit:ramboot',
    ],
  ])('%s', async (_what, fields, expected, offerKind) => {
    const mac = `52:54:00:00:b1:${(row++).toString(16)}`;
    await machineWith(mac, fields);
    const before = await getMachine(database.db, mac);
    const res = await plan(mac);
    expect(res.status).toBe(200);
    expect(res.json).toEqual(expected);
    // Key order too: upstream's order, as the event log shows it.
    expect(Object.keys(res.json)).toEqual(Object.keys(expected));
    const [logged] = await listEvents(database.db, { kind: 'netboot.pxe.plan', subjectId: mac });
    expect(logged?.details).toMatchObject({
      plan: expected,
      boot_mode: fields.boot_mode,
      offer_kind: offerKind,
    });
    if (expected.mode === 'flash') {
      expect(logged?.details?.withcache).toEqual({
        configured: false,
        hit: false,
        served_from: 'cache',
      });
    }
    // The plan reads the binding, never changes it (nor the one-shot bit).
    const after = await getMachine(database.db, mac);
    expect({ ...after, last_seen_at: null, last_seen_ip: null }).toEqual({
      ...before,
      last_seen_at: null,
      last_seen_ip: null,
    });
  });

  it('an entry without sha256 or format gives a flash plan without those keys', async () => {
    const src = 'oras://ghcr.io/acme/images:debian-13';
    const ref = imageRefForSrc(src);
    const at = clock.toISOString();
    await database.db
      .insertInto('catalog_entries')
      .values({ ref, name: 'debian oras', src, created_at: at, updated_at: at })
      .execute();
    const mac = '52:54:00:00:b0:03';
    await machineWith(mac, {
      boot_mode: 'bty-flash-always',
      bty_image_ref: ref,
      target_disk_serial: 'WD-1',
    });
    expect((await plan(mac)).json).toEqual({
      mode: 'flash',
      image: `http://pxe.lab:8080${blobPath(src)}`,
      target_disk_serial: 'WD-1',
      name: 'debian oras',
    });
  });

  it.each([
    ['a malformed MAC', '/pxe/aabbccddeeff/plan', 'pxe.lab', 400, "invalid MAC: 'aabbccddeeff'"],
    ['a Host that could inject', '/pxe/52:54:00:00:b0:99/plan', 'evil${x}', 400, 'invalid host'],
    ['a Host with a bad port', '/pxe/52:54:00:00:b0:99/plan', 'h:99999', 400, 'invalid host'],
  ])('%s is %i and stores nothing', async (_what, path, host, code, message) => {
    const before = await snapshot();
    const res = await request('GET', path, { headers: { host } });
    expect(res.status).toBe(code);
    expect((JSON.parse(res.body) as { detail: string }).detail).toContain(message);
    expect(await snapshot()).toEqual(before);
  });
});

describe('POST /pxe/{mac}/inventory', () => {
  const mac = '52:54:00:00:c0:01';
  beforeAll(async () => {
    await machineWith(mac, { boot_mode: 'bty-inventory' });
  });

  it('stores the disks normalised (sorted keys, defaults, unknown keys dropped) and the lshw', async () => {
    tick(1000);
    const res = await postJson(`/pxe/${mac}/inventory`, {
      disks: [
        {
          path: '/dev/sda',
          size: '500G',
          model: 'Samsung SSD',
          serial: 'S3Z9',
          tran: 'sata',
          rota: false,
          removable: false,
        },
        { path: '/dev/sdb', size: 4000787030016, serial: '', readonly: '1', removable: 1 },
      ],
      lshw: { id: 'box', children: [{ z: 1, a: 2 }], class: 'system' },
    });
    expect(res.status).toBe(204);
    const row = await database.db
      .selectFrom('inventory')
      .selectAll()
      .where('mac', '=', mac)
      .executeTakeFirstOrThrow();
    expect(row.disks).toBe(
      '[{"model":"Samsung SSD","path":"/dev/sda","readonly":false,"removable":false,' +
        '"serial":"S3Z9","size":"500G","tran":"sata","vendor":null},' +
        '{"model":null,"path":"/dev/sdb","readonly":true,"removable":true,"serial":"",' +
        '"size":"4000787030016","tran":null,"vendor":null}]',
    );
    expect(row.disks_at).toBe(clock.toISOString());
    expect(row.lshw).toBe('{"children":[{"a":2,"z":1}],"class":"system","id":"box"}');
    expect(row.lshw_at).toBe(clock.toISOString());
    const machine = await getMachine(database.db, mac);
    expect(machine?.last_seen_at).toBe(clock.toISOString());
    expect(machine?.updated_at).toBe(clock.toISOString());
    const [event] = await listEvents(database.db, { kind: 'machine.inventory', subjectId: mac });
    expect(event?.summary).toBe(`${mac} reported 2 disk(s) + lshw`);
    expect(event?.details).toEqual({ count: 2, serials: ['S3Z9'], lshw: true });
    expect(event?.source_ip).toBe('127.0.0.1');
    expect(messages).toContainEqual({ type: 'inventory', mac, disks: 2 });
  });

  it('a post without lshw replaces the disks and keeps the stored lshw', async () => {
    tick(1000);
    expect((await postJson(`/pxe/${mac}/inventory`, { disks: [] })).status).toBe(204);
    const row = await database.db
      .selectFrom('inventory')
      .selectAll()
      .where('mac', '=', mac)
      .executeTakeFirstOrThrow();
    expect(row.disks).toBe('[]');
    expect(row.disks_at).toBe(clock.toISOString());
    expect(row.lshw).toBe('{"children":[{"a":2,"z":1}],"class":"system","id":"box"}');
    expect(row.lshw_at).not.toBe(clock.toISOString());
    const [event] = await listEvents(database.db, { kind: 'machine.inventory', subjectId: mac });
    expect(event?.summary).toBe(`${mac} reported 0 disk(s)`);
  });

  it('an lshw over 4 MiB is skipped (never cut) and the previous blob kept', async () => {
    tick(1000);
    const lshw = { blob: 'x'.repeat(LSHW_MAX_BYTES) };
    const res = await postJson(`/pxe/${mac}/inventory`, {
      disks: [{ path: '/dev/nvme0n1' }],
      lshw,
    });
    expect(res.status).toBe(204);
    const row = await database.db
      .selectFrom('inventory')
      .selectAll()
      .where('mac', '=', mac)
      .executeTakeFirstOrThrow();
    expect(row.lshw).toBe('{"children":[{"a":2,"z":1}],"class":"system","id":"box"}');
    expect(JSON.parse(row.disks!)).toHaveLength(1);
    const [event] = await listEvents(database.db, { kind: 'machine.inventory', subjectId: mac });
    expect(event?.summary).toBe(`${mac} reported 1 disk(s) (lshw too large, skipped)`);
    expect(event?.details).toEqual({ count: 1, serials: [], lshw: false });
  });

  it('an lshw of exactly 4 MiB serialised is stored', async () => {
    tick(1000);
    const overhead = JSON.stringify({ b: '' }).length;
    const lshw = { b: 'y'.repeat(LSHW_MAX_BYTES - overhead) };
    expect((await postJson(`/pxe/${mac}/inventory`, { lshw })).status).toBe(204);
    const row = await database.db
      .selectFrom('inventory')
      .select(['lshw'])
      .where('mac', '=', mac)
      .executeTakeFirstOrThrow();
    expect(row.lshw?.length).toBe(LSHW_MAX_BYTES);
  });

  it('an unknown MAC is 404, logged as an orphan, and creates nothing', async () => {
    const res = await postJson('/pxe/52:54:00:00:c0:ff/inventory', { disks: [{ path: '/dev/a' }] });
    expect(res.status).toBe(404);
    expect(JSON.parse(res.body)).toEqual({ detail: 'no machine record for 52:54:00:00:c0:ff' });
    const [orphan] = await listEvents(database.db, {
      kind: 'pxe.client.orphan',
      subjectId: '52:54:00:00:c0:ff',
    });
    expect(orphan?.details).toEqual({ signal: 'inventory', disk_count: 1 });
    expect(await getMachine(database.db, '52:54:00:00:c0:ff')).toBeUndefined();
    expect(messages.some((m) => m.type === 'inventory')).toBe(false);
  });

  it('completes the inventory cycle: armed by the kernel fetch, posted, then a disk boot', async () => {
    const m = '52:54:00:00:c0:02';
    await machineWith(m, { boot_mode: 'bty-inventory' });
    tick(1000);
    expect((await request('GET', `/boot/vmlinuz?mac=${m}`)).status).toBe(200);
    const retry = await request('GET', `/pxe/${m}`);
    expect(retry.body).toContain('kernel ');
    tick(1000);
    expect((await postJson(`/pxe/${m}/inventory`, { disks: [] })).status).toBe(204);
    const next = await request('GET', `/pxe/${m}`);
    expect(next.body).toContain('sanboot');
    expect(next.body).not.toContain('kernel ');
  });

  const disk = { path: '/dev/sda' };
  it.each([
    ['invalid JSON', '{"disks": [', 400],
    ['an array body', '[]', 422],
    ['a string body', '"disks"', 422],
    ['an unknown top-level key', { disks: [], extra: 1 }, 422],
    ['disks not an array', { disks: { path: '/dev/sda' } }, 422],
    ['65 disks', { disks: Array.from({ length: 65 }, () => disk) }, 422],
    ['a disk that is not an object', { disks: ['/dev/sda'] }, 422],
    ['a disk without a path', { disks: [{ size: '1G' }] }, 422],
    ['an empty path', { disks: [{ path: '' }] }, 422],
    ['a 256-character path', { disks: [{ path: 'p'.repeat(256) }] }, 422],
    ['a 33-character size', { disks: [{ ...disk, size: 's'.repeat(33) }] }, 422],
    ['a 65-character vendor', { disks: [{ ...disk, vendor: 'v'.repeat(65) }] }, 422],
    ['a 129-character model', { disks: [{ ...disk, model: 'm'.repeat(129) }] }, 422],
    ['a 129-character serial', { disks: [{ ...disk, serial: 's'.repeat(129) }] }, 422],
    ['a 33-character tran', { disks: [{ ...disk, tran: 't'.repeat(33) }] }, 422],
    ['a numeric serial', { disks: [{ ...disk, serial: 1234 }] }, 422],
    ['a fractional size', { disks: [{ ...disk, size: 1.5 }] }, 422],
    ['removable "maybe"', { disks: [{ ...disk, removable: 'maybe' }] }, 422],
    ['readonly 2', { disks: [{ ...disk, readonly: 2 }] }, 422],
    ['lshw a string', { lshw: 'lshw output' }, 422],
    ['lshw a number', { lshw: 42 }, 422],
    ['lshw nested 100 deep', `{"lshw": ${'['.repeat(100)}${']'.repeat(100)}}`, 422],
    ['lshw nested 200000 deep', `{"lshw": ${'['.repeat(200000)}${']'.repeat(200000)}}`, 422],
    ['a __proto__ key', '{"__proto__": {"x": 1}}', 400],
  ])('%s is refused (%i) and changes nothing', async (_what, body, code) => {
    const before = await snapshot();
    const res = await postJson(`/pxe/${mac}/inventory`, body);
    expect(res.status).toBe(code);
    const message = (JSON.parse(res.body) as { detail: string }).detail;
    expect(typeof message).toBe('string');
    expect(await snapshot()).toEqual(before);
  });

  it.each([
    [
      'a malformed MAC',
      '/pxe/52:54:00:00:c0/inventory',
      { 'content-type': 'application/json' },
      400,
    ],
    ['no content type', `/pxe/${mac}/inventory`, {}, 415],
    ['a form body', `/pxe/${mac}/inventory`, { 'content-type': 'text/html' }, 415],
  ])('%s is refused (%i) and changes nothing', async (_what, path, headers, code) => {
    const before = await snapshot();
    const res = await request('POST', path, { headers, body: '{"disks": []}' });
    expect(res.status).toBe(code);
    expect(await snapshot()).toEqual(before);
  });

  it('names the field in the message', async () => {
    const res = await postJson(`/pxe/${mac}/inventory`, {
      disks: [disk, { ...disk, vendor: 'v'.repeat(65) }],
    });
    expect(JSON.parse(res.body)).toEqual({
      detail: 'disks[1].vendor: must be a string or null of at most 64 characters',
    });
  });

  it('a body over the route limit is 413 and changes nothing', async () => {
    const before = await snapshot();
    const huge = JSON.stringify({ lshw: { blob: 'z'.repeat(17 * 1024 * 1024) } });
    const res = await postJson(`/pxe/${mac}/inventory`, huge);
    expect(res.status).toBe(413);
    expect(await snapshot()).toEqual(before);
  });
});

describe('POST /pxe/{mac}/progress', () => {
  const mac = '52:54:00:00:d0:01';
  const report = { phase: 'write', bytes_done: 1024, bytes_total: 4096, rate_bps: 512 };
  const stored = async () =>
    database.db
      .selectFrom('machines')
      .select(['progress', 'progress_at'])
      .where('mac', '=', mac)
      .executeTakeFirstOrThrow();

  beforeAll(async () => {
    await machineWith(mac, { boot_mode: 'bty-flash-always' });
  });

  it('stores the report as JSON and publishes it', async () => {
    tick(5000);
    const res = await postJson(`/pxe/${mac}/progress`, { ...report, resumes: 1, message: 'hi' });
    expect(res.status).toBe(204);
    const row = await stored();
    expect(JSON.parse(row.progress!)).toEqual({ ...report, resumes: 1, message: 'hi' });
    expect(row.progress_at).toBe(clock.toISOString());
    expect(messages).toEqual([{ type: 'progress', mac, ...report, resumes: 1, message: 'hi' }]);
    // Progress is not an audit event: a flash posts hundreds of them.
    expect(await listEvents(database.db, { subjectId: mac, kind: 'machine.progress' })).toEqual([]);
  });

  it('stores at most one report per second per MAC, but publishes every one', async () => {
    tick(1000);
    await postJson(`/pxe/${mac}/progress`, { ...report, bytes_done: 2000 });
    const first = await stored();
    tick(300);
    expect((await postJson(`/pxe/${mac}/progress`, { ...report, bytes_done: 2500 })).status).toBe(
      204,
    );
    tick(300);
    await postJson(`/pxe/${mac}/progress`, { ...report, bytes_done: 3000 });
    expect(await stored()).toEqual(first);
    expect(messages.map((m) => (m.type === 'progress' ? m.bytes_done : null))).toEqual([
      2000, 2500, 3000,
    ]);
    tick(400);
    await postJson(`/pxe/${mac}/progress`, { ...report, bytes_done: 3500 });
    expect(JSON.parse((await stored()).progress!)).toMatchObject({ bytes_done: 3500 });
  });

  it('a new phase is stored at once, even inside the second', async () => {
    tick(100);
    const verify = { phase: 'verify', bytes_done: 10, bytes_total: null, rate_bps: 0.5 };
    await postJson(`/pxe/${mac}/progress`, verify);
    expect(JSON.parse((await stored()).progress!)).toEqual(verify);
  });

  it('accepts the agent FlashProgress event as it is', async () => {
    tick(1000);
    const event = {
      phase: 'write',
      bytes_done: 1,
      bytes_total: null,
      rate_bps: 10,
      eta_seconds: null,
      source_bytes_done: 5,
      source_bytes_total: 50,
      resumes: 0,
    };
    expect((await postJson(`/pxe/${mac}/progress`, event)).status).toBe(204);
    expect(JSON.parse((await stored()).progress!)).toEqual(event);
  });

  it('the final status clears it', async () => {
    tick(1000);
    await postJson(`/pxe/${mac}/progress`, { ...report, phase: 'sync' });
    expect((await stored()).progress).not.toBeNull();
    expect((await postJson(`/pxe/${mac}/status`, { status: 'done' })).status).toBe(204);
    expect(await stored()).toEqual({ progress: null, progress_at: null });
  });

  it('an unknown MAC is 404 and nothing is published or created', async () => {
    tick(1000);
    const other = '52:54:00:00:d0:ff';
    for (let i = 0; i < 2; i++) {
      const res = await postJson(`/pxe/${other}/progress`, report);
      expect(res.status).toBe(404);
      expect(JSON.parse(res.body)).toEqual({ detail: `no machine record for ${other}` });
    }
    expect(messages).toEqual([]);
    expect(await getMachine(database.db, other)).toBeUndefined();
  });

  it.each([
    ['invalid JSON', '{', 400],
    ['an array', '[]', 422],
    ['an unknown field', { ...report, percent: 50 }, 422],
    ['no phase', { bytes_done: 1, bytes_total: 2, rate_bps: 0 }, 422],
    ['an unknown phase', { ...report, phase: 'flashing' }, 422],
    ['a missing bytes_done', { phase: 'write', bytes_total: 1, rate_bps: 0 }, 422],
    ['a missing bytes_total', { phase: 'write', bytes_done: 1, rate_bps: 0 }, 422],
    ['a missing rate_bps', { phase: 'write', bytes_done: 1, bytes_total: 1 }, 422],
    ['negative bytes_done', { ...report, bytes_done: -1 }, 422],
    ['fractional bytes_done', { ...report, bytes_done: 1.5 }, 422],
    ['string bytes_total', { ...report, bytes_total: '4096' }, 422],
    ['negative rate_bps', { ...report, rate_bps: -3 }, 422],
    ['null rate_bps', { ...report, rate_bps: null }, 422],
    ['negative resumes', { ...report, resumes: -1 }, 422],
    ['a numeric message', { ...report, message: 7 }, 422],
    ['a 501-character message', { ...report, message: 'm'.repeat(501) }, 422],
    [
      'bytes_done past 2^53',
      `{"phase":"write","bytes_done":1e300,"bytes_total":1,"rate_bps":0}`,
      422,
    ],
  ])('%s is refused (%i): nothing stored or published', async (_what, body, code) => {
    tick(5000);
    const before = await snapshot();
    const res = await postJson(`/pxe/${mac}/progress`, body);
    expect(res.status).toBe(code);
    expect(typeof (JSON.parse(res.body) as { detail: unknown }).detail).toBe('string');
    expect(await snapshot()).toEqual(before);
    expect(messages).toEqual([]);
  });

  it('names the field in the message', async () => {
    const res = await postJson(`/pxe/${mac}/progress`, { ...report, rate_bps: 'fast' });
    expect(JSON.parse(res.body)).toEqual({ detail: 'rate_bps: must be a non-negative number' });
  });
});
