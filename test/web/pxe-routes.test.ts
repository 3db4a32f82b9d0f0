/**
 * The open PXE plane over real HTTP: bty-web's app listening on loopback, backed by SQLite,
 * driven the way iPXE and the live environment drive it.
 */
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/web/app.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { listEvents } from '../../src/web/db/events.ts';
import { getMachine } from '../../src/web/db/machines.ts';

let dir: string;
let database: BtyDatabase;
let app: FastifyInstance;
let base: string;
const REF = 'ab'.repeat(32);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-web-pxe-'));
  await mkdir(join(dir, 'boot'));
  await writeFile(join(dir, 'boot', 'vmlinuz'), Buffer.from('0123456789abcdef'));
  database = await openDatabase({ sqlitePath: join(dir, 'state.db') });
  await migrate(database);
  app = await buildApp({
    database,
    version: '9.9.9',
    artifactVersion: '1.2.3',
    bootDir: join(dir, 'boot'),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address() as { port: number };
  base = `http://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  await app?.close();
  await database?.close();
  await rm(dir, { recursive: true, force: true });
});

const get = (path: string, init?: RequestInit) => fetch(`${base}${path}`, init);

/** A GET with a Host header of our choosing (fetch does not let one set Host). */
function getWithHost(path: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, { headers: { host } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject).end();
  });
}
/** A GET whose request target goes out exactly as written (fetch would resolve `%2e%2e`). */
function rawGet(path: string): Promise<number> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, path }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject).end();
  });
}
const post = (path: string, body: unknown) =>
  fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

describe('bty-web open plane', () => {
  it('/healthz and /version', async () => {
    expect(await (await get('/healthz')).json()).toEqual({ status: 'ok' });
    expect(await (await get('/version')).json()).toEqual({ version: '9.9.9' });
  });

  it('/pxe-bootstrap.ipxe chains to /pxe/${mac:hexhyp} on the Host the client used', async () => {
    const res = await get('/pxe-bootstrap.ipxe');
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(await res.text()).toContain(`chain ${base}/pxe/\${mac:hexhyp}\n`);
    const text = (await getWithHost('/pxe-bootstrap.ipxe', 'pxe.lab:8080')).body;
    expect(text.startsWith('#!ipxe\n')).toBe(true);
    expect(text).toContain('chain http://pxe.lab:8080/pxe/${mac:hexhyp}\n');
  });

  it('HEAD /pxe-bootstrap.ipxe (UEFI HTTP boot sizes its buffer) gives the GET length', async () => {
    const head = await get('/pxe-bootstrap.ipxe', { method: 'HEAD' });
    expect(head.status).toBe(200);
    const body = await (await get('/pxe-bootstrap.ipxe')).text();
    expect(head.headers.get('content-length')).toBe(String(Buffer.byteLength(body)));
    expect(head.headers.get('content-type')).toBe('text/plain; charset=utf-8');
  });

  it('a first contact discovers the machine (one event) and offers inventory', async () => {
    const res = await get('/pxe/52-54-00-00-aa-01');
    expect(res.status).toBe(200);
    const script = await res.text();
    expect(script).toContain('bty.mac=52:54:00:00:aa:01');
    expect(script).toContain('/boot/bty-netboot-pc-x86_64-v1.2.3.vmlinuz?mac=52:54:00:00:aa:01');
    const row = await getMachine(database.db, '52:54:00:00:aa:01');
    expect(row?.boot_mode).toBe('bty-inventory');
    const events = await listEvents(database.db, { subjectId: '52:54:00:00:aa:01' });
    expect(events.map((e) => e.kind).sort()).toEqual(['machine.discovered', 'netboot.pxe.offered']);
    expect(events.find((e) => e.kind === 'netboot.pxe.offered')?.source_ip).toBe('127.0.0.1');
  });

  it('40 concurrent first contacts of one MAC: one row, one discovery, every answer a script', async () => {
    const answers = await Promise.all(
      Array.from({ length: 40 }, () => get('/pxe/52:54:00:00:aa:02')),
    );
    expect(answers.map((r) => r.status)).toEqual(Array.from({ length: 40 }, () => 200));
    const discovered = await listEvents(database.db, {
      kind: 'machine.discovered',
      subjectId: '52:54:00:00:aa:02',
    });
    expect(discovered).toHaveLength(1);
  });

  it('a flash-once cycle: flash offer, arming by the kernel fetch, status done, then disk boot', async () => {
    const mac = '52:54:00:00:aa:03';
    await get(`/pxe/${mac}`);
    const now = new Date().toISOString();
    await database.db
      .insertInto('catalog_entries')
      .values({
        ref: REF,
        name: 'debian-13',
        src: 'https://h/d.img.zst',
        created_at: now,
        updated_at: now,
      })
      .execute();
    await database.db
      .updateTable('machines')
      .set({ boot_mode: 'bty-flash-once', bty_image_ref: REF, target_disk_serial: 'S3Z9NB0K123' })
      .where('mac', '=', mac)
      .execute();
    const offer = await (await get(`/pxe/${mac}`)).text();
    expect(offer).toContain('S3Z9NB0K123');
    expect(offer).toContain('debian-13');
    // iPXE fetches the kernel with ?mac=: that arms the cycle (once).
    const head = await get(`/boot/vmlinuz?mac=${mac}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe('16');
    await get(`/boot/vmlinuz?mac=${mac}`);
    const armed = await listEvents(database.db, { kind: 'netboot.flasher.armed', subjectId: mac });
    expect(armed).toHaveLength(1);
    expect((await getMachine(database.db, mac))?.saw_flasher_boot).toBe(1);
    expect((await post(`/pxe/${mac}/status`, { status: 'done' })).status).toBe(204);
    const after = await (await get(`/pxe/${mac}`)).text();
    expect(after).toMatch(/sanboot --no-describe --drive 0x80/);
    expect(after).not.toContain('kernel ');
  });

  it('a stored value the renderer refuses: 400, and no offer is logged for it', async () => {
    const mac = '52:54:00:00:aa:04';
    await get(`/pxe/${mac}`);
    // Written behind the API's back (the API normalises drives): not a BIOS drive number.
    await database.db
      .updateTable('machines')
      .set({ boot_mode: 'ipxe-exit', sanboot_drive: '0x80\nchain http://evil/' })
      .where('mac', '=', mac)
      .execute();
    const before = await listEvents(database.db, { kind: 'netboot.pxe.offered', subjectId: mac });
    const res = await get(`/pxe/${mac}`);
    expect(res.status).toBe(400);
    expect(await res.text()).not.toMatch(/^#!ipxe/);
    const after = await listEvents(database.db, { kind: 'netboot.pxe.offered', subjectId: mac });
    expect(after).toHaveLength(before.length);
  });

  it('/boot serves ranges and refuses traversal and unknown files', async () => {
    const part = await get('/boot/vmlinuz', { headers: { range: 'bytes=10-' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe('bytes 10-15/16');
    expect(await part.text()).toBe('abcdef');
    expect((await get('/boot/vmlinuz', { headers: { range: 'bytes=99-' } })).status).toBe(416);
    expect((await get('/boot/missing.efi')).status).toBe(404);
    for (const name of ['..%2fstate.db', '%2e%2e', '.hidden', 'a%00b']) {
      const status = await rawGet(`/boot/${name}`);
      expect(status, name).toBeGreaterThanOrEqual(400);
      expect(status, name).toBeLessThan(500);
    }
  });

  it("/boot serves Debian's iPXE boot files for UEFI HTTP boot; one in the boot folder wins", async () => {
    const packaged = await readFile('/usr/lib/ipxe/ipxe.efi');
    const res = await get('/boot/ipxe.efi');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(packaged.length));
    expect(Buffer.from(await res.arrayBuffer()).equals(packaged)).toBe(true);
    const head = await get('/boot/snponly.efi', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get('content-length'))).toBeGreaterThan(0);
    // Only those names fall back: another file of that folder is not served.
    expect((await get('/boot/ipxe.lkrn')).status).toBe(404);
    await writeFile(join(dir, 'boot', 'undionly.kpxe'), 'pinned build');
    expect(await (await get('/boot/undionly.kpxe')).text()).toBe('pinned build');
  });

  it.each([
    ['not JSON', '{', 400],
    ['an array', '[]', 422],
    ['an unknown status', { status: 'maybe' }, 422],
    ['an unknown field', { status: 'done', extra: 1 }, 422],
    ['a long reason', { status: 'failed', reason: 'x'.repeat(501) }, 422],
  ])('status with %s is refused (4xx), nothing stored', async (_what, body, code) => {
    const res = await post('/pxe/52:54:00:00:aa:01/status', body);
    expect(res.status).toBe(code);
    expect(((await res.json()) as { detail: unknown }).detail).toBeTruthy();
  });

  it('status for an unknown MAC is 404 and logged as an orphan signal', async () => {
    const res = await post('/pxe/52:54:00:00:ff:ff/done', {
      status: 'failed',
      reason: 'disk gone',
    });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: 'no machine record for 52:54:00:00:ff:ff' });
    const orphan = await listEvents(database.db, { kind: 'pxe.client.orphan' });
    expect(orphan.length).toBeGreaterThan(0);
    expect(await getMachine(database.db, '52:54:00:00:ff:ff')).toBeUndefined();
  });

  it.each(['nope', 'aabbccddeeff', '52:54:00:00:aa', '52.54.00.00.aa.01'])(
    'a malformed MAC %s is 400 with upstream message',
    async (mac) => {
      const res = await get(`/pxe/${mac}`);
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({ detail: `invalid MAC: '${mac}'` });
    },
  );

  it('a Host header that could inject into the script is refused, not rendered', async () => {
    for (const host of ['evil${x}', 'a b', 'host:99999', 'x/../y']) {
      const res = await getWithHost('/pxe/52:54:00:00:aa:01', host);
      expect(res.status, host).toBe(400);
      expect(res.body).not.toContain('#!ipxe');
    }
  });
});
