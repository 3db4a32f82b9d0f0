/**
 * The operator JSON API over real HTTP: bty-web listening on loopback with a real session,
 * backed by SQLite and by a real PostgreSQL. Machines (GET/PUT/DELETE, the inventory
 * downloads), the audit log (GET /events, ack), GET /config and PUT /boot/{name}, each with a
 * table of bad input that must get a 4xx naming the field and change nothing.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/web/app.ts';
import { LiveBus, type LiveMessage } from '../../src/web/bus.ts';
import { loadConfig } from '../../src/web/config.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { appendEvent } from '../../src/web/db/events.ts';
import type { EventKind } from '../../src/web/event-kinds.ts';
import { startPostgres, type PgServer } from '../helpers/postgres.ts';

const REF = 'ab'.repeat(32);
const REF2 = 'cd'.repeat(32);
const T0 = new Date('2026-11-29T12:00:00.000Z');
const UPLOAD_CAP = 4096;

let dir: string;
let pg: PgServer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-web-operator-'));
  pg = await startPostgres();
}, 60_000);

afterAll(async () => {
  await pg?.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: unknown;
}

/** One HTTP request with full control over headers and body chunks (node:http, no fetch). */
function request(
  base: string,
  method: string,
  path: string,
  options: {
    headers?: Record<string, string | number>;
    body?: string | Buffer;
    chunks?: Buffer[];
    /** Write this many bytes, then drop the connection. */
    abortAfter?: Buffer;
  } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const req = http.request(`${base}${path}`, { method, headers: options.headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        settled = true;
        const text = Buffer.concat(parts).toString('utf8');
        let json: unknown;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          // Not JSON: leave it undefined.
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('error', (err) => {
      if (!settled) reject(err);
    });
    if (options.abortAfter) {
      req.write(options.abortAfter);
      setTimeout(() => {
        settled = true;
        req.destroy();
        resolve({ status: 0, headers: {}, text: '', json: undefined });
      }, 100);
      return;
    }
    for (const chunk of options.chunks ?? []) req.write(chunk);
    req.end(options.body);
  });
}

interface Server {
  app: FastifyInstance;
  database: BtyDatabase;
  base: string;
  bootDir: string;
  messages: LiveMessage[];
  setClock(at: Date): void;
  cookie: string;
}

async function startServer(
  engine: 'sqlite' | 'postgres',
  name: string,
  withConfig: boolean,
): Promise<Server> {
  const root = join(dir, name);
  await mkdir(join(root, 'boot'), { recursive: true });
  const url = engine === 'postgres' ? await pg.createDatabase(name) : null;
  const database = await openDatabase({ url, sqlitePath: join(root, 'state.db') });
  await migrate(database);
  let config = null;
  if (withConfig) {
    const toml = join(root, 'bty.toml');
    await writeFile(toml, `[tuning]\nmax_upload_bytes = ${UPLOAD_CAP}\n`);
    config = await loadConfig({
      configPaths: [toml],
      env: {
        BTY_SERVER_SESSION_SECRET: 'very-secret-session-key',
        BTY_ADMIN_PASSWORD: 'admin-pass-word',
        BTY_DATABASE_URL: 'postgres://bty:db-pass-word@db.lab:5432/bty',
      },
    });
  }
  const bus = new LiveBus();
  const messages: LiveMessage[] = [];
  bus.subscribe((m) => messages.push(m));
  let clock = T0;
  const app = await buildApp({
    database,
    version: '9.9.9',
    artifactVersion: '1.2.3',
    bootDir: join(root, 'boot'),
    now: () => clock,
    config,
    bus,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  const login = await fetch(`${base}/ui/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ password: 'bty-lab' }),
  });
  expect(login.status).toBe(204);
  const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
  return {
    app,
    database,
    base,
    bootDir: join(root, 'boot'),
    messages,
    setClock: (at) => (clock = at),
    cookie,
  };
}

async function stopServer(s: Server | undefined): Promise<void> {
  await s?.app.close();
  await s?.database.close();
}

describe.each(['sqlite', 'postgres'] as const)('operator API on %s', (engine) => {
  let s: Server;
  beforeAll(async () => {
    s = await startServer(engine, `operator_${engine}`, true);
  });
  afterAll(() => stopServer(s));

  const api = (
    method: string,
    path: string,
    options: { body?: unknown; type?: string; raw?: string | Buffer; cookie?: string | null } = {},
  ): Promise<Res> => {
    const headers: Record<string, string> = {};
    const cookie = options.cookie === undefined ? s.cookie : options.cookie;
    if (cookie) headers.cookie = cookie;
    let body: string | Buffer | undefined = options.raw;
    if (options.body !== undefined) body = JSON.stringify(options.body);
    if (body !== undefined) headers['content-type'] = options.type ?? 'application/json';
    else if (options.type) headers['content-type'] = options.type;
    return request(s.base, method, path, { headers, body });
  };

  /** Everything the API can show: machines, events, the boot folder. */
  const snapshot = async () => ({
    machines: (await api('GET', '/machines')).json,
    events: (await api('GET', '/events?limit=500')).json,
    lshw: await s.database.db.selectFrom('inventory').selectAll().orderBy('mac').execute(),
    boot: (await readdir(s.bootDir)).sort(),
  });

  describe('the session comes first', () => {
    const protectedRoutes: Array<[string, string, { raw?: string; type?: string }?]> = [
      ['GET', '/machines'],
      ['GET', '/machines/52:54:00:00:00:01'],
      ['GET', '/machines/not-a-mac'],
      ['PUT', '/machines/not-a-mac', { raw: '{not json', type: 'application/json' }],
      ['PUT', '/machines/52:54:00:00:00:01', { raw: '{"boot_mode":"ramboot"}' }],
      ['PUT', '/machines/52:54:00:00:00:01', { raw: 'x', type: 'text/plain' }],
      ['DELETE', '/machines/52:54:00:00:00:01'],
      ['GET', '/machines/zz/lshw.json'],
      ['GET', '/machines/52:54:00:00:00:01/disks.json'],
      ['GET', '/events?limit=abc'],
      ['POST', '/events/abc/ack'],
      ['POST', '/events/1/ack'],
      ['GET', '/config'],
      ['PUT', '/boot/vmlinuz', { raw: 'bytes', type: 'application/octet-stream' }],
      ['PUT', '/boot/.hidden', { raw: 'bytes', type: 'text/plain' }],
      ['PUT', '/boot/a%00b', { raw: 'bytes', type: 'application/octet-stream' }],
    ];
    it.each(protectedRoutes)('%s %s without a session: 401 login required', async (m, p, o) => {
      const before = await snapshot();
      for (const cookie of [
        null,
        'bty-token=1700000000.forgedforgedforgedforgedforgedforgedforg1',
      ]) {
        const res = await api(m, p, { cookie, raw: o?.raw, type: o?.type ?? 'application/json' });
        expect(res.status).toBe(401);
        expect(res.json).toEqual({ detail: 'login required' });
        expect(res.headers['set-cookie']).toBeUndefined();
      }
      expect(await snapshot()).toEqual(before);
    });
  });

  describe('machines', () => {
    it('PUT creates a machine: 200 with the wire type, event, live messages', async () => {
      s.messages.length = 0;
      const res = await api('PUT', '/machines/52-54-00-AA-00-01', {
        body: {
          bty_image_ref: REF,
          labels: ['rack-2', 'Lab A', 'rack-2'],
          boot_mode: 'bty-flash-once',
          sanboot_drive: '0x8A',
          target_disk_serial: 'S3Z9NB0K123456',
        },
      });
      expect(res.status).toBe(200);
      expect(res.json).toEqual({
        mac: '52:54:00:aa:00:01',
        bty_image_ref: REF,
        labels: ['Lab A', 'rack-2'],
        discovered_at: null,
        last_seen_at: null,
        last_seen_ip: null,
        boot_mode: 'bty-flash-once',
        sanboot_drive: '0x8a',
        last_flashed_at: null,
        known_disks: null,
        known_disks_at: null,
        target_disk_serial: 'S3Z9NB0K123456',
        created_at: '2026-11-29T12:00:00Z',
        updated_at: '2026-11-29T12:00:00Z',
      });
      const events = (await api('GET', '/events?subject_id=52:54:00:aa:00:01')).json as {
        events: Array<Record<string, unknown>>;
      };
      expect(events.events).toHaveLength(1);
      expect(events.events[0]).toMatchObject({
        kind: 'machine.created',
        subject_kind: 'machine',
        subject_id: '52:54:00:aa:00:01',
        actor: 'operator',
        source_ip: '127.0.0.1',
        acknowledged: false,
        details: {
          bty_image_ref: REF,
          boot_mode: 'bty-flash-once',
          sanboot_drive: '0x8a',
          labels: ['Lab A', 'rack-2'],
          target_disk_serial: 'S3Z9NB0K123456',
        },
      });
      expect(s.messages).toContainEqual({
        type: 'machine',
        mac: '52:54:00:aa:00:01',
        change: 'created',
      });
      expect(s.messages).toContainEqual(
        expect.objectContaining({ type: 'event', kind: 'machine.created' }),
      );
    });

    it('20 concurrent PUTs of a new MAC: one record, one machine.created, the rest upserted', async () => {
      const mac = '52:54:00:aa:00:20';
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          api('PUT', `/machines/${mac}`, { body: { labels: [`l${i}`], boot_mode: 'bty-tui' } }),
        ),
      );
      expect(answers.map((r) => r.status)).toEqual(Array.from({ length: 20 }, () => 200));
      const kinds = (
        (await api('GET', `/events?subject_id=${mac}`)).json as { events: Array<{ kind: string }> }
      ).events.map((e) => e.kind);
      expect(kinds.filter((k) => k === 'machine.created')).toHaveLength(1);
      expect(kinds.filter((k) => k === 'machine.upserted')).toHaveLength(19);
      const labels = ((await api('GET', `/machines/${mac}`)).json as { labels: string[] }).labels;
      expect(labels).toHaveLength(1);
    });

    it('sanboot_drive: 1-2 hex digits of any case, stored as 0x + two lower-case digits', async () => {
      for (const [given, stored] of [
        ['0x1', '0x01'],
        ['0xF', '0x0f'],
        ['0x80', '0x80'],
        ['0xaB', '0xab'],
      ]) {
        const res = await api('PUT', '/machines/52:54:00:aa:00:02', {
          body: { sanboot_drive: given },
        });
        expect(res.status).toBe(200);
        expect((res.json as { sanboot_drive: string }).sanboot_drive).toBe(stored);
      }
    });

    it('PUT replaces everything: omitted fields go back to their defaults, created_at kept', async () => {
      const mac = '52:54:00:aa:00:03';
      await api('PUT', `/machines/${mac}`, {
        body: { bty_image_ref: REF, labels: ['x'], boot_mode: 'bty-tui', sanboot_drive: '0x81' },
      });
      s.setClock(new Date('2026-11-29T12:00:01.250Z'));
      const res = await api('PUT', `/machines/${mac}`, { body: {} });
      s.setClock(T0);
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({
        bty_image_ref: null,
        labels: [],
        boot_mode: 'ipxe-exit',
        sanboot_drive: null,
        target_disk_serial: null,
        created_at: '2026-11-29T12:00:00Z',
        updated_at: '2026-11-29T12:00:01.250Z',
      });
      const kinds = (
        (await api('GET', `/events?subject_id=${mac}`)).json as { events: Array<{ kind: string }> }
      ).events.map((e) => e.kind);
      expect(kinds).toEqual(['machine.upserted', 'machine.created']);
    });

    it('the boot cycle resets on a mode, ref or serial change only (labels and drive keep it)', async () => {
      const mac = '52:54:00:aa:00:04';
      const db = s.database.db;
      const base = {
        bty_image_ref: REF,
        boot_mode: 'bty-flash-always',
        target_disk_serial: 'SER1',
      };
      await api('PUT', `/machines/${mac}`, { body: base });
      const arm = async () => {
        await db
          .updateTable('machines')
          .set({ saw_flasher_boot: 1, last_flashed_at: '2026-11-29T11:00:00.000Z' })
          .where('mac', '=', mac)
          .execute();
        await db
          .insertInto('inventory')
          .values({
            mac,
            disks: '[{"path":"/dev/sda","serial":"SER1"}]',
            disks_at: '2026-11-29T10:00:00.000Z',
          })
          .onConflict((oc) =>
            oc.column('mac').doUpdateSet({ disks_at: '2026-11-29T10:00:00.000Z' }),
          )
          .execute();
      };
      const state = async () => {
        const row = await db
          .selectFrom('machines')
          .select(['saw_flasher_boot', 'last_flashed_at'])
          .where('mac', '=', mac)
          .executeTakeFirstOrThrow();
        const m = (await api('GET', `/machines/${mac}`)).json as {
          known_disks: unknown;
          known_disks_at: string | null;
        };
        return {
          bit: Number(row.saw_flasher_boot),
          flashed: row.last_flashed_at,
          disksAt: m.known_disks_at,
          disks: m.known_disks,
        };
      };
      type CycleState = Awaited<ReturnType<typeof state>>;
      const kept: CycleState = {
        bit: 1,
        flashed: '2026-11-29T11:00:00.000Z',
        disksAt: '2026-11-29T10:00:00Z',
        disks: [{ path: '/dev/sda', serial: 'SER1' }],
      };
      const cleared: CycleState = {
        bit: 0,
        flashed: null,
        disksAt: null,
        disks: [{ path: '/dev/sda', serial: 'SER1' }],
      };
      const cases: Array<[string, Record<string, unknown>, CycleState]> = [
        ['labels only', { ...base, labels: ['new-label'] }, kept],
        ['sanboot drive only', { ...base, sanboot_drive: '0x81' }, kept],
        ['same values again', base, kept],
        ['boot mode', { ...base, boot_mode: 'bty-flash-once' }, cleared],
        ['image ref', { ...base, bty_image_ref: REF2 }, cleared],
        ['target serial', { ...base, target_disk_serial: 'SER2' }, cleared],
      ];
      for (const [what, body, expected] of cases) {
        await api('PUT', `/machines/${mac}`, { body: base });
        await arm();
        const res = await api('PUT', `/machines/${mac}`, { body });
        expect(res.status, what).toBe(200);
        expect(await state(), what).toEqual(expected);
      }
      const last = (
        (await api('GET', `/events?subject_id=${mac}&limit=1`)).json as {
          events: Array<{ details: Record<string, unknown> }>;
        }
      ).events[0]!;
      expect(last.details.policy_reset).toBe(true);
    });

    it('GET /machines lists every machine ordered by MAC; GET /machines/{mac} normalises', async () => {
      await api('PUT', '/machines/02:00:00:00:00:ff', { body: {} });
      await api('PUT', '/machines/fe:00:00:00:00:01', { body: {} });
      const list = (await api('GET', '/machines')).json as Array<{ mac: string }>;
      const macs = list.map((m) => m.mac);
      expect(macs).toEqual([...macs].sort());
      expect(macs[0]).toBe('02:00:00:00:00:ff');
      expect(macs.at(-1)).toBe('fe:00:00:00:00:01');
      const one = await api('GET', '/machines/FE-00-00-00-00-01');
      expect(one.status).toBe(200);
      expect((one.json as { mac: string }).mac).toBe('fe:00:00:00:00:01');
      const missing = await api('GET', '/machines/fe:00:00:00:00:99');
      expect(missing.status).toBe(404);
      expect(missing.json).toEqual({ detail: 'no machine record for fe:00:00:00:00:99' });
    });

    it('lshw.json and disks.json: the stored text verbatim, as an attachment; 404s named', async () => {
      const mac = '52:54:00:aa:00:05';
      await api('PUT', `/machines/${mac}`, { body: {} });
      const noDisks = await api('GET', `/machines/${mac}/disks.json`);
      expect(noDisks.status).toBe(404);
      expect(noDisks.json).toEqual({ detail: `no disk inventory for ${mac}` });
      const noLshw = await api('GET', `/machines/${mac}/lshw.json`);
      expect(noLshw.json).toEqual({ detail: `no lshw hardware inventory for ${mac}` });
      const disks = '[{"path":"/dev/nvme0n1","serial":"N1"}]';
      const lshw = '{"id" : "box",\n "children": []}';
      await s.database.db
        .insertInto('inventory')
        .values({ mac, disks, disks_at: T0.toISOString(), lshw, lshw_at: T0.toISOString() })
        .execute();
      const d = await api('GET', `/machines/${mac}/disks.json`);
      expect(d.status).toBe(200);
      expect(d.text).toBe(disks);
      expect(d.headers['content-type']).toMatch(/^application\/json/);
      expect(d.headers['content-disposition']).toBe(
        'attachment; filename="52-54-00-aa-00-05-disks.json"',
      );
      const l = await api('GET', `/machines/52-54-00-AA-00-05/lshw.json`);
      expect(l.text).toBe(lshw);
      expect(l.headers['content-disposition']).toBe(
        'attachment; filename="52-54-00-aa-00-05-lshw.json"',
      );
      const none = await api('GET', '/machines/52:54:00:aa:00:99/lshw.json');
      expect(none.status).toBe(404);
      expect(none.json).toEqual({ detail: 'no machine record for 52:54:00:aa:00:99' });
    });

    it('a corrupt stored disk list reads back as known_disks null, never a 500', async () => {
      const mac = '52:54:00:aa:00:06';
      await api('PUT', `/machines/${mac}`, { body: {} });
      await s.database.db
        .insertInto('inventory')
        .values({ mac, disks: '{not json', disks_at: T0.toISOString() })
        .execute();
      const res = await api('GET', `/machines/${mac}`);
      expect(res.status).toBe(200);
      expect((res.json as { known_disks: unknown }).known_disks).toBeNull();
      expect((await api('GET', '/machines')).status).toBe(200);
    });

    it('DELETE: 204, labels and inventory gone, event with the record, 404 the second time', async () => {
      const mac = '52:54:00:aa:00:07';
      await api('PUT', `/machines/${mac}`, { body: { labels: ['doomed'], boot_mode: 'bty-tui' } });
      await s.database.db
        .insertInto('inventory')
        .values({ mac, disks: '[]', disks_at: T0.toISOString() })
        .execute();
      s.messages.length = 0;
      const res = await api('DELETE', `/machines/${mac}`);
      expect(res.status).toBe(204);
      expect(res.text).toBe('');
      expect((await api('GET', `/machines/${mac}`)).status).toBe(404);
      const db = s.database.db;
      expect(
        await db.selectFrom('machine_labels').where('mac', '=', mac).selectAll().execute(),
      ).toEqual([]);
      expect(await db.selectFrom('inventory').where('mac', '=', mac).selectAll().execute()).toEqual(
        [],
      );
      const ev = (
        (await api('GET', `/events?kind=machine.deleted&subject_id=${mac}`)).json as {
          events: Array<Record<string, unknown>>;
        }
      ).events;
      expect(ev).toHaveLength(1);
      expect(ev[0]).toMatchObject({
        actor: 'operator',
        source_ip: '127.0.0.1',
        details: { boot_mode: 'bty-tui', labels: ['doomed'], bty_image_ref: null },
      });
      expect(s.messages).toContainEqual({ type: 'machine', mac, change: 'deleted' });
      const again = await api('DELETE', `/machines/${mac}`);
      expect(again.status).toBe(404);
      expect(again.json).toEqual({ detail: `no machine record for ${mac}` });
    });

    const BAD_MACS = [
      'zz',
      'aabbccddeeff',
      'aa:bb:cc:dd:ee',
      'aa:bb:cc:dd:ee:ff:00',
      'aa.bb.cc.dd.ee.ff',
      'aa:bb:cc:dd:ee:fg',
      'a:bb:cc:dd:ee:ff',
      '%00',
      'aa:bb:cc:dd:ee:ff%0A',
      'aa%3Abb',
    ];
    it.each(BAD_MACS)('malformed MAC %j: 400 invalid MAC on every machine route', async (raw) => {
      const before = await snapshot();
      const decoded = decodeURIComponent(raw);
      for (const [method, suffix, body] of [
        ['GET', '', undefined],
        ['PUT', '', {}],
        ['DELETE', '', undefined],
        ['GET', '/lshw.json', undefined],
        ['GET', '/disks.json', undefined],
      ] as const) {
        const res = await api(method, `/machines/${raw}${suffix}`, { body });
        expect(res.status, `${method} ${suffix}`).toBe(400);
        expect(res.json).toEqual({ detail: `invalid MAC: '${decoded}'` });
      }
      expect(await snapshot()).toEqual(before);
    });

    const BAD_BODIES: Array<[string, string, string | undefined, number, string]> = [
      ['invalid JSON', '{"boot_mode": ', 'application/json', 400, 'body'],
      ['empty body', '', 'application/json', 422, 'body'],
      ['a list', '[]', 'application/json', 422, 'body'],
      ['a string', '"bty-tui"', 'application/json', 422, 'body'],
      ['null', 'null', 'application/json', 422, 'body'],
      ['unknown field', '{"boot_mode":"bty-tui","colour":"red"}', undefined, 422, '"colour"'],
      ['saw_flasher_boot is not settable', '{"saw_flasher_boot":1}', undefined, 422, 'saw_flasher'],
      ['ramboot', '{"boot_mode":"ramboot"}', undefined, 422, 'boot_mode'],
      ['unknown mode', '{"boot_mode":"bty-flash"}', undefined, 422, 'boot_mode'],
      ['mode in upper case', '{"boot_mode":"IPXE-EXIT"}', undefined, 422, 'boot_mode'],
      ['mode not a string', '{"boot_mode":3}', undefined, 422, 'boot_mode'],
      ['mode null', '{"boot_mode":null}', undefined, 200, ''],
      [
        'ref in upper case',
        `{"bty_image_ref":"${REF.toUpperCase()}"}`,
        undefined,
        422,
        'bty_image_ref',
      ],
      ['ref too short', `{"bty_image_ref":"${REF.slice(1)}"}`, undefined, 422, 'bty_image_ref'],
      ['ref empty', '{"bty_image_ref":""}', undefined, 422, 'bty_image_ref'],
      ['ref a number', '{"bty_image_ref":12}', undefined, 422, 'bty_image_ref'],
      ['drive without 0x', '{"sanboot_drive":"80"}', undefined, 422, 'sanboot_drive'],
      ['drive three digits', '{"sanboot_drive":"0x800"}', undefined, 422, 'sanboot_drive'],
      ['drive bare 0x', '{"sanboot_drive":"0x"}', undefined, 422, 'sanboot_drive'],
      ['drive not hex', '{"sanboot_drive":"0xzz"}', undefined, 422, 'sanboot_drive'],
      ['drive a number', '{"sanboot_drive":128}', undefined, 422, 'sanboot_drive'],
      ['drive with a newline', '{"sanboot_drive":"0x80\\nshell"}', undefined, 422, 'sanboot_drive'],
      [
        'serial too long',
        `{"target_disk_serial":"${'S'.repeat(129)}"}`,
        undefined,
        422,
        'target_disk_serial',
      ],
      ['serial a number', '{"target_disk_serial":5}', undefined, 422, 'target_disk_serial'],
      [
        'serial with NUL',
        '{"target_disk_serial":"A\\u0000B"}',
        undefined,
        422,
        'target_disk_serial',
      ],
      [
        'serial with newline',
        '{"target_disk_serial":"A\\nB"}',
        undefined,
        422,
        'target_disk_serial',
      ],
      ['labels not a list', '{"labels":"a,b"}', undefined, 422, 'labels'],
      ['label not a string', '{"labels":[1]}', undefined, 422, 'labels'],
      ['label empty', '{"labels":[""]}', undefined, 422, 'labels'],
      ['label leading space', '{"labels":[" lab"]}', undefined, 422, 'labels'],
      ['label leading dot', '{"labels":[".lab"]}', undefined, 422, 'labels'],
      ['label with a slash', '{"labels":["a/b"]}', undefined, 422, 'labels'],
      ['label with a comma', '{"labels":["a,b"]}', undefined, 422, 'labels'],
      ['label with ${', '{"labels":["a${x}"]}', undefined, 422, 'labels'],
      ['label with a newline', '{"labels":["a\\nchain http://x"]}', undefined, 422, 'labels'],
      ['label of 65 chars', `{"labels":["${'L'.repeat(65)}"]}`, undefined, 422, 'labels'],
      [
        '17 labels',
        JSON.stringify({ labels: Array.from({ length: 17 }, (_, i) => `l${i}`) }),
        undefined,
        422,
        'labels',
      ],
      ['text/plain', '{"boot_mode":"bty-tui"}', 'text/plain', 415, 'content-type'],
      ['a form', 'boot_mode=bty-tui', 'application/x-www-form-urlencoded', 415, 'content-type'],
      ['octet-stream', '{}', 'application/octet-stream', 415, 'content-type'],
      ['xml', '<m/>', 'application/xml', 415, 'content-type'],
      [
        'oversize body',
        JSON.stringify({ labels: ['a'], pad: 'x'.repeat(70 * 1024) }),
        undefined,
        413,
        'body',
      ],
    ];
    it.each(BAD_BODIES)('PUT with %s: %#', async (_what, raw, type, status, field) => {
      const mac = '52:54:00:bb:00:01';
      await api('PUT', `/machines/${mac}`, {
        body: { bty_image_ref: REF, labels: ['keep'], boot_mode: 'bty-tui', sanboot_drive: '0x81' },
      });
      const before = await snapshot();
      const res = await api('PUT', `/machines/${mac}`, { raw, type: type ?? 'application/json' });
      expect(res.status).toBe(status);
      if (status === 200) return;
      expect((res.json as { detail: string }).detail).toContain(field);
      expect(await snapshot()).toEqual(before);
      // And for a MAC with no record: still nothing created.
      const fresh = await api('PUT', '/machines/52:54:00:bb:00:02', {
        raw,
        type: type ?? 'application/json',
      });
      expect(fresh.status).toBe(status);
      expect(await snapshot()).toEqual(before);
    });

    it('16 labels of 64 characters are accepted; duplicates collapse', async () => {
      const labels = Array.from({ length: 16 }, (_, i) =>
        `${String(i).padStart(2, '0')}`.padEnd(64, 'x'),
      );
      const res = await api('PUT', '/machines/52:54:00:bb:00:03', { body: { labels } });
      expect(res.status).toBe(200);
      expect((res.json as { labels: string[] }).labels).toEqual([...labels].sort());
    });
  });

  describe('events', () => {
    beforeAll(async () => {
      const db = s.database.db;
      const at = new Date('2026-11-29T13:00:00.000Z');
      await appendEvent(
        db,
        {
          // A kind this server never writes (upstream's settings editor): stored all the same.
          kind: 'settings.config.failed' as EventKind,
          summary: 'f1',
          actor: 'operator',
          sourceIp: '10.0.0.9',
          subjectKind: 'settings',
          subjectId: 'tuning.max_upload_bytes',
        },
        at,
      );
      await appendEvent(
        db,
        {
          kind: 'machine.flash_failed',
          summary: 'f2',
          actor: 'pxe-client',
          subjectKind: 'machine',
          subjectId: '52:54:00:cc:00:01',
        },
        at,
      );
      await db
        .insertInto('events')
        .values([
          { ts: at.toISOString(), kind: 'test.odd', summary: 'list details', details: '[1,2]' },
          { ts: at.toISOString(), kind: 'test.odd', summary: 'corrupt details', details: '{oops' },
        ])
        .execute();
      await db
        .insertInto('events')
        .values(
          Array.from({ length: 520 }, (_, i) => ({
            ts: at.toISOString(),
            kind: 'test.bulk',
            summary: `bulk ${i}`,
            actor: 'system',
          })),
        )
        .execute();
    });

    type Ev = {
      id: number;
      kind: string;
      summary: string;
      details: unknown;
      acknowledged: boolean;
    };
    const events = async (query: string) => {
      const res = await api('GET', `/events${query}`);
      expect(res.status).toBe(200);
      return (res.json as { events: Ev[] }).events;
    };

    it('newest first, 50 by default, limit clamped to [1, 500]', async () => {
      const page = await events('');
      expect(page).toHaveLength(50);
      const ids = page.map((e) => e.id);
      expect(ids).toEqual([...ids].sort((a, b) => b - a));
      expect(Object.keys(page[0]!).sort()).toEqual(
        [
          'acknowledged',
          'actor',
          'details',
          'id',
          'kind',
          'source_ip',
          'subject_id',
          'subject_kind',
          'summary',
          'ts',
        ].sort(),
      );
      expect(await events('?limit=0')).toHaveLength(1);
      expect(await events('?limit=-7')).toHaveLength(1);
      expect(await events('?limit=100000')).toHaveLength(500);
      expect(await events('?limit=+3')).toHaveLength(3);
    });

    it('before_id pages through without gaps or repeats', async () => {
      const all = await events('?kind=test.bulk&limit=500');
      const first = await events('?kind=test.bulk&limit=200');
      const second = await events(`?kind=test.bulk&limit=200&before_id=${first.at(-1)!.id}`);
      expect([...first, ...second].map((e) => e.id)).toEqual(all.slice(0, 400).map((e) => e.id));
    });

    it('filters are exact matches; failed= is any non-empty value', async () => {
      expect((await events('?actor=operator&source_ip=10.0.0.9')).map((e) => e.summary)).toEqual([
        'f1',
      ]);
      expect(
        (await events('?subject_kind=settings&subject_id=tuning.max_upload_bytes')).map(
          (e) => e.summary,
        ),
      ).toEqual(['f1']);
      for (const flag of ['1', '0', 'yes']) {
        const failed = await events(`?failed=${flag}&limit=500`);
        expect(failed.map((e) => e.kind).every((k) => k.endsWith('failed'))).toBe(true);
        expect(failed.map((e) => e.summary)).toEqual(expect.arrayContaining(['f1', 'f2']));
      }
      expect((await events('?failed=&kind=test.bulk')).length).toBe(50);
      expect(await events('?kind=test')).toEqual([]);
      expect(await events('?kind=%25failed')).toEqual([]);
    });

    it('details that are not a JSON object read back as null', async () => {
      const odd = await events('?kind=test.odd');
      expect(odd.map((e) => e.details)).toEqual([null, null]);
    });

    const BAD_QUERIES: Array<[string, string]> = [
      ['?limit=abc', 'limit'],
      ['?limit=1.5', 'limit'],
      ['?limit=', 'limit'],
      ['?limit=1e3', 'limit'],
      ['?limit=0x10', 'limit'],
      ['?limit=99999999999999999999', 'limit'],
      ['?limit=1&limit=2', 'limit'],
      ['?before_id=abc', 'before_id'],
      ['?before_id=0', 'before_id'],
      ['?before_id=-3', 'before_id'],
      ['?before_id=2.5', 'before_id'],
      ['?before_id=', 'before_id'],
      ['?before_id=99999999999999999999', 'before_id'],
      ['?kind=a&kind=b', 'kind'],
      ['?kind=a%00b', 'kind'],
      ['?subject_id=%00', 'subject_id'],
      ['?source_ip=1%002', 'source_ip'],
    ];
    it.each(BAD_QUERIES)('GET /events%s: 422 naming %s', async (query, param) => {
      const res = await api('GET', `/events${query}`);
      expect(res.status).toBe(422);
      expect((res.json as { detail: string }).detail.startsWith(`${param}: `)).toBe(true);
    });

    it('POST /events/{id}/ack: 200, shown acknowledged, idempotent; 404 unknown; 422 malformed', async () => {
      const [target] = await events('?kind=machine.flash_failed');
      for (let i = 0; i < 2; i++) {
        // An empty JSON body is accepted as "no body".
        const res = await api('POST', `/events/${target!.id}/ack`, {
          type: 'application/json',
          raw: '',
        });
        expect(res.status).toBe(200);
        expect(res.json).toEqual({ id: target!.id, acknowledged: true });
      }
      const [after] = await events('?kind=machine.flash_failed');
      expect(after!.acknowledged).toBe(true);
      const missing = await api('POST', '/events/987654321/ack');
      expect(missing.status).toBe(404);
      expect(missing.json).toEqual({ detail: 'no event with id 987654321' });
      const changedBefore = await snapshot();
      for (const raw of ['abc', '0', '-1', '1.5', '1e3', '99999999999999999999', '%00']) {
        const res = await api('POST', `/events/${raw}/ack`);
        expect(res.status, raw).toBe(422);
        expect((res.json as { detail: string }).detail.startsWith('id: ')).toBe(true);
      }
      expect(await snapshot()).toEqual(changedBefore);
    });
  });

  describe('GET /config', () => {
    it('the effective configuration with sources; secrets redacted', async () => {
      const res = await api('GET', '/config');
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      const view = res.json as {
        config: Record<string, Record<string, unknown>>;
        sources: Record<string, string>;
        files: string[];
      };
      expect(view.config.tuning!.max_upload_bytes).toBe(UPLOAD_CAP);
      expect(view.sources['tuning.max_upload_bytes']).toMatch(/^toml:.*bty\.toml$/);
      expect(view.config.server!.session_secret).toBe('<redacted>');
      expect(view.sources['server.session_secret']).toBe('env:BTY_SERVER_SESSION_SECRET');
      expect(view.config.admin!.password).toBe('<redacted>');
      expect(view.config.database!.url).toBe('postgres://bty:<redacted>@db.lab:5432/bty');
      expect(view.sources['server.port']).toBe('default');
      for (const secret of ['very-secret-session-key', 'admin-pass-word', 'db-pass-word']) {
        expect(res.text).not.toContain(secret);
      }
    });
  });

  describe('PUT /boot/{name}', () => {
    const upload = (
      name: string,
      body: Buffer | undefined,
      headers: Record<string, string | number> = {},
    ) =>
      request(s.base, 'PUT', `/boot/${name}`, {
        headers: {
          cookie: s.cookie,
          ...(body
            ? { 'content-type': 'application/octet-stream', 'content-length': body.length }
            : {}),
          ...headers,
        },
        body,
      });
    const uploadEvents = async (name: string) =>
      (
        (await api('GET', `/events?subject_kind=netboot&subject_id=${name}&limit=500`)).json as {
          events: Array<{ kind: string; details: Record<string, unknown> }>;
        }
      ).events;

    it('201 for a new file, 200 for a replacement; served by GET; event with sha256', async () => {
      const first = Buffer.from('kernel bytes v1');
      const res = await upload('vmlinuz-test', first);
      expect(res.status).toBe(201);
      const sha = createHash('sha256').update(first).digest('hex');
      expect(res.json).toEqual({
        name: 'vmlinuz-test',
        size_bytes: first.length,
        path: join(s.bootDir, 'vmlinuz-test'),
        sha256: sha,
        replaced: false,
      });
      expect(await readFile(join(s.bootDir, 'vmlinuz-test'))).toEqual(first);
      const second = Buffer.alloc(UPLOAD_CAP, 7); // exactly the cap is allowed
      const again = await upload('vmlinuz-test', second);
      expect(again.status).toBe(200);
      expect((again.json as { replaced: boolean }).replaced).toBe(true);
      const served = await fetch(`${s.base}/boot/vmlinuz-test`);
      expect(Buffer.from(await served.arrayBuffer())).toEqual(second);
      const ev = await uploadEvents('vmlinuz-test');
      expect(ev.map((e) => e.kind)).toEqual([
        'netboot.artifacts.uploaded',
        'netboot.artifacts.uploaded',
      ]);
      expect(ev[1]!.details).toEqual({
        name: 'vmlinuz-test',
        size_bytes: first.length,
        sha256: sha,
        replaced: false,
      });
      expect((await readdir(s.bootDir)).filter((n) => n.startsWith('.'))).toEqual([]);
    });

    it('no Content-Type (curl -T) and chunked bodies are uploads too; empty files allowed', async () => {
      const res = await request(s.base, 'PUT', '/boot/initrd-test', {
        headers: { cookie: s.cookie },
        chunks: [Buffer.from('part one, '), Buffer.from('part two')],
      });
      expect(res.status).toBe(201);
      expect(await readFile(join(s.bootDir, 'initrd-test'), 'utf8')).toBe('part one, part two');
      const empty = await request(s.base, 'PUT', '/boot/empty-test', {
        headers: { cookie: s.cookie },
      });
      expect(empty.status).toBe(201);
      expect((empty.json as { size_bytes: number }).size_bytes).toBe(0);
    });

    const BAD_NAMES: Array<[string, string]> = [
      ['.', '.'],
      ['.hidden', 'leading dot'],
      ['%2e%2e%2fescape', 'encoded ../'],
      ['%2Fetc%2Fpasswd', 'absolute'],
      ['a%2Fb', 'slash'],
      ['a%5Cb', 'backslash'],
      ['a%00b', 'NUL'],
      ['%00', 'only NUL'],
      ['a%20b', 'space'],
      ['a%0Ab', 'newline'],
      ['a%2F%2e%2e%2F%2e%2e%2Fetc', 'encoded slashes and dots'],
    ];
    it.each(BAD_NAMES)('name %s (%s): 400 naming the name, nothing written', async (name) => {
      const before = await snapshot();
      const res = await upload(name, Buffer.from('evil'));
      expect(res.status).toBe(400);
      expect((res.json as { detail: string }).detail.startsWith('name: ')).toBe(true);
      expect(await snapshot()).toEqual(before);
    });

    // Refused by the router before any route runs: dot segments are resolved first (`/boot/..`
    // is `/`) and an absolute path is another URL. A name past the route's own 255-character
    // limit reaches the route (maxParamLength is 300) and gets its 400. Nothing is written.
    it.each([
      ['..', 404],
      ['%2e%2e', 404],
      ['%2E%2e', 404],
      ['/etc/passwd-bty', 404],
      ['x'.repeat(256), 400],
    ])('name %s: refused before anything is written (%i)', async (name, status) => {
      const before = await snapshot();
      const res = await upload(name, Buffer.from('evil'));
      expect(res.status).toBe(status);
      expect(await snapshot()).toEqual(before);
    });

    it.each([
      ['application/json', '{"a":1}'],
      ['text/plain', 'bytes'],
      ['application/x-www-form-urlencoded', 'a=b'],
      ['multipart/form-data; boundary=x', '--x--'],
      ['not a media type', 'bytes'],
    ])(
      'Content-Type %s: 415 naming content-type; the existing file untouched',
      async (type, body) => {
        await upload('keep-me', Buffer.from('original'));
        const before = await snapshot();
        const res = await upload('keep-me', Buffer.from(body), { 'content-type': type });
        expect(res.status).toBe(415);
        expect((res.json as { detail: string }).detail.startsWith('content-type: ')).toBe(true);
        expect(await readFile(join(s.bootDir, 'keep-me'), 'utf8')).toBe('original');
        expect(await snapshot()).toEqual(before);
      },
    );

    it('over the cap by Content-Length: 413 before reading; failure event; file untouched', async () => {
      await upload('big-test', Buffer.from('original'));
      const res = await upload('big-test', Buffer.alloc(UPLOAD_CAP + 1, 1));
      expect(res.status).toBe(413);
      expect((res.json as { detail: string }).detail).toBe(
        `body: larger than the ${UPLOAD_CAP}-byte upload limit`,
      );
      expect(await readFile(join(s.bootDir, 'big-test'), 'utf8')).toBe('original');
      expect((await uploadEvents('big-test'))[0]!.kind).toBe('netboot.artifacts.upload.failed');
    });

    it('over the cap while streaming (chunked): 413, the partial file removed', async () => {
      await upload('stream-test', Buffer.from('original'));
      const res = await request(s.base, 'PUT', '/boot/stream-test', {
        headers: { cookie: s.cookie, 'content-type': 'application/octet-stream' },
        chunks: Array.from({ length: 8 }, () => Buffer.alloc(1024, 2)),
      });
      expect(res.status).toBe(413);
      expect((res.json as { detail: string }).detail.startsWith('body: ')).toBe(true);
      expect(await readFile(join(s.bootDir, 'stream-test'), 'utf8')).toBe('original');
      expect((await readdir(s.bootDir)).filter((n) => n.startsWith('.'))).toEqual([]);
      const [failed] = await uploadEvents('stream-test');
      expect(failed!.kind).toBe('netboot.artifacts.upload.failed');
      expect(failed!.details.bytes_received).toBeGreaterThan(UPLOAD_CAP);
    });

    it('a client that disconnects mid-upload leaves no file and no partial; failure logged', async () => {
      await request(s.base, 'PUT', '/boot/abort-test', {
        headers: {
          cookie: s.cookie,
          'content-type': 'application/octet-stream',
          'content-length': 3000,
        },
        abortAfter: Buffer.alloc(1000, 3),
      });
      for (let i = 0; i < 50 && (await uploadEvents('abort-test')).length === 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect((await uploadEvents('abort-test'))[0]!.kind).toBe('netboot.artifacts.upload.failed');
      const names = await readdir(s.bootDir);
      expect(names).not.toContain('abort-test');
      expect(names.filter((n) => n.startsWith('.'))).toEqual([]);
    });

    it('a name that is a directory in the boot folder: 409, nothing changes', async () => {
      await mkdir(join(s.bootDir, 'a-folder'));
      const res = await upload('a-folder', Buffer.from('x'));
      expect(res.status).toBe(409);
      expect((res.json as { detail: string }).detail.startsWith('name: ')).toBe(true);
    });
  });
});

describe('a server started without a loaded configuration', () => {
  let s: Server;
  beforeAll(async () => {
    s = await startServer('sqlite', 'no_config', false);
  });
  afterAll(() => stopServer(s));

  it('GET /config answers 404 saying so', async () => {
    const res = await request(s.base, 'GET', '/config', { headers: { cookie: s.cookie } });
    expect(res.status).toBe(404);
    expect(res.json).toEqual({
      detail: 'config: this server was started without a loaded configuration',
    });
  });

  it('uploads use the default cap (far above a test file): 8 MiB streamed through', async () => {
    const body = Buffer.alloc(8 * 1024 * 1024, 5);
    const res = await request(s.base, 'PUT', '/boot/big-default', {
      headers: { cookie: s.cookie, 'content-type': 'application/octet-stream' },
      body,
    });
    expect(res.status).toBe(201);
    expect((res.json as { size_bytes: number }).size_bytes).toBe(body.length);
  });
});
