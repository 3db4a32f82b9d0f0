/**
 * The machines list page over real HTTP: server-side search, filters, sorting and paging (also
 * at 10,000 machines), the cells (labels escaped, image names, progress bars and failures from
 * stored state), the self-refreshing rows fragment, and adding a machine by MAC without ever
 * overwriting one. The list queries also run on PostgreSQL, to show both engines agree.
 */
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveMessage } from '../../src/web/bus.ts';
import type { BtyDatabase } from '../../src/web/db/database.ts';
import { listEvents } from '../../src/web/db/events.ts';
import {
  containsPattern,
  countMachineList,
  listMachineRows,
  type MachineCriteria,
} from '../../src/web/db/machine-list.ts';
import { getMachineRecord } from '../../src/web/db/machines.ts';
import type { Database } from '../../src/web/db/schema.ts';
import { dashboardCounts, FLASHING_WINDOW_MS } from '../../src/web/db/stats.ts';
import { ENGINES, useDatabases } from '../helpers/databases.ts';
import { operator, startUiServer, type UiClient, type UiServer } from '../helpers/ui.ts';

const REF_DEBIAN = 'a'.repeat(64);
const REF_ORPHAN = 'b'.repeat(64);

interface Seed {
  mac: string;
  labels?: string[];
  boot_mode?: string;
  ref?: string | null;
  ip?: string | null;
  seen?: string | null;
  flashed?: string | null;
}

const M1 = 'aa:00:00:00:00:01';
const M2 = 'aa:00:00:00:00:02';
const M3 = 'aa:00:00:00:00:03';
const M4 = 'aa:00:00:00:00:04';
const M5 = 'aa:00:00:00:00:05';
const M6 = 'aa:00:00:00:00:06';
const M7 = 'aa:00:00:00:00:07';

const FLEET: Seed[] = [
  {
    mac: M1,
    labels: ['rack-1', 'web', 'x_y'],
    ip: '10.0.0.11',
    seen: '2020-01-01T00:00:01.000Z',
  },
  {
    mac: M2,
    labels: ['rack-2', 'xzy'],
    boot_mode: 'bty-flash-once',
    ref: REF_DEBIAN,
    ip: '10.0.0.12',
    seen: '2020-01-01T00:00:02.000Z',
    flashed: '2020-01-02T00:00:00.000Z',
  },
  {
    mac: M3,
    boot_mode: 'bty-inventory',
    ref: REF_ORPHAN,
    ip: '127.0.0.1',
    seen: '2020-01-01T00:00:03.000Z',
  },
  {
    mac: M4,
    boot_mode: 'bty-flash-always',
    ref: REF_DEBIAN,
    ip: '10.0.0.14',
    seen: '2020-01-01T00:00:04.000Z',
    flashed: '2019-01-01T00:00:00.000Z',
  },
  { mac: M5, labels: ['<script>alert(1)</script>'], seen: null },
  { mac: M6, ip: '192.168.5.3', seen: '2020-01-01T00:00:06.000Z' },
  { mac: M7, ref: REF_DEBIAN, ip: '10.0.0.17', seen: '2020-01-01T00:00:07.000Z' },
];

async function seed(db: Kysely<Database>, machines: readonly Seed[]): Promise<void> {
  const at = '2026-01-01T00:00:00.000Z';
  await db
    .insertInto('catalog_entries')
    .values({
      ref: REF_DEBIAN,
      name: 'debian-13',
      src: 'https://example.test/debian-13.img',
      sha256: null,
      format: 'raw',
      size_bytes: 1024,
      description: null,
      arch: 'amd64',
      created_at: at,
      updated_at: at,
    })
    .execute();
  for (const m of machines) {
    await db
      .insertInto('machines')
      .values({
        mac: m.mac,
        boot_mode: m.boot_mode ?? 'ipxe-exit',
        bty_image_ref: m.ref ?? null,
        last_seen_ip: m.ip ?? null,
        last_seen_at: m.seen ?? null,
        last_flashed_at: m.flashed ?? null,
        created_at: at,
        updated_at: at,
      })
      .execute();
    // Straight into the table: a label the API would refuse (markup) must still render safely.
    for (const label of m.labels ?? []) {
      await db.insertInto('machine_labels').values({ mac: m.mac, label }).execute();
    }
  }
}

/** The MACs of the table's rows, in order. */
function macsOf(html: string): string[] {
  return [...html.matchAll(/<tr data-mac="([^"]+)"/g)].map((m) => m[1]!);
}

/** One row's markup. */
function rowOf(html: string, mac: string): string {
  const start = html.indexOf(`<tr data-mac="${mac}"`);
  expect(start, `row ${mac}`).toBeGreaterThanOrEqual(0);
  return html.slice(start, html.indexOf('</tr>', start));
}

/** The pager's "21–30 of 412" text. */
function summaryOf(html: string): string {
  const m = /class="small text-body-secondary pager-summary">(.*?)<\/span>/.exec(html);
  return (m?.[1] ?? '').replaceAll('<!-- -->', '');
}

function sortedMacs(...macs: string[]): string[] {
  return [...macs].sort();
}

describe('the machines list', () => {
  let server: UiServer;
  let op: UiClient;
  const published: LiveMessage[] = [];

  beforeAll(async () => {
    server = await startUiServer();
    await seed(server.database.db, FLEET);
    op = await operator(server);
    server.bus.subscribe((message) => published.push(message));
    // M3 is flashing: its progress arrives as the agent posts it.
    const progress = await fetch(`${server.base}/pxe/${M3}/progress`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        phase: 'write',
        bytes_done: 512 * 1024 * 1024,
        bytes_total: 1024 * 1024 * 1024,
        rate_bps: 100 * 1024 * 1024,
        eta_seconds: 5,
      }),
    });
    expect(progress.status).toBe(204);
    // M4's last flash failed (after its last completed one, in 2019).
    await new Promise((r) => setTimeout(r, 5));
    const failed = await fetch(`${server.base}/pxe/${M4}/status`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ status: 'failed', reason: 'disk vanished' }),
    });
    expect(failed.status).toBe(204);
    // M7 failed once, then flashed fine: the failure is history, not its state.
    for (const body of [{ status: 'failed', reason: 'old trouble' }, { status: 'done' }]) {
      await new Promise((r) => setTimeout(r, 5));
      const res = await fetch(`${server.base}/pxe/${M7}/status`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(res.status).toBe(204);
    }
  });

  afterAll(async () => {
    await server?.close();
  });

  it('lists every machine by MAC with the search form, the table hooks and the add form', async () => {
    const html = await op.page('/ui/machines');
    expect(macsOf(html)).toEqual(FLEET.map((m) => m.mac));
    expect(html).toMatch(/<form id="machine-search" method="get" action="\/ui\/machines"/);
    expect(html).toMatch(/<input type="search" id="machine-q" name="q"/);
    expect(html).toMatch(/<select id="machine-filter" name="filter"/);
    expect(html).toMatch(/<a class="btn btn-sm btn-outline-secondary" href="\/ui\/machines"/);
    expect(html).toContain('<table id="machines-table"');
    expect(html).toMatch(/<tbody id="machine-rows" hx-get="\/ui\/machines\/rows"/);
    expect(html).toContain('hx-trigger="sse:machines throttle:1s, sse:machines delay:1500ms"');
    expect(html).toMatch(/<form id="add-machine" method="post" action="\/ui\/machines"/);
    expect(html).toMatch(/<input type="hidden" name="_csrf" value="[^"]+"/);
    expect(summaryOf(html)).toBe('1–7 of 7');
  });

  it('shows each cell: MAC link and copy, label links, image, mode, last seen and IP', async () => {
    const html = await op.page('/ui/machines');
    const m1 = rowOf(html, M1);
    expect(m1).toContain(`href="/ui/machines/${M1}"`);
    expect(m1).toContain(`data-copy="${M1}"`);
    expect(m1).toContain('href="/ui/machines?q=rack-1"');
    expect(m1).toContain('href="/ui/machines?q=web"');
    expect(m1).toMatch(/<span class="badge text-bg-warning"[^>]*>discovered<\/span>/);
    expect(m1).toMatch(/<span class="badge text-bg-dark"[^>]*>ipxe-exit<\/span>/);
    expect(m1).toContain('datetime="2020-01-01T00:00:01.000Z"');
    expect(m1).toContain('>10.0.0.11</a>');
    const m2 = rowOf(html, M2);
    expect(m2).toContain(`<span title="${REF_DEBIAN}">debian-13</span>`);
    expect(m2).toContain('datetime="2020-01-02T00:00:00.000Z"');
    expect(m2).toMatch(/>bty-flash-once<\/span>/);
    const m3 = rowOf(html, M3);
    expect(m3).toContain(`<code>${REF_ORPHAN.slice(0, 12)}</code>`);
    expect(m3).toContain('(no catalog entry)');
    expect(rowOf(html, M5)).toMatch(/<span class="text-body-secondary">never<\/span>/);
  });

  it('renders a label holding markup as text', async () => {
    const html = await op.page('/ui/machines');
    expect(html).not.toContain('<script>alert(1)');
    expect(rowOf(html, M5)).toMatch(/>&lt;script(>|&gt;)alert\(1\)&lt;\/script(>|&gt;)<\/a>/);
  });

  it('draws the progress bar of a flashing machine from its stored progress', async () => {
    const m3 = rowOf(await op.page('/ui/machines'), M3);
    expect(m3).toContain('id="progress-aa0000000003"');
    expect(m3).toContain('data-state="running"');
    expect(m3).toContain('style="width: 50%"');
    expect(m3).toMatch(/>write · 50% · 100(\.0)? MiB\/s · ETA 0:05</);
  });

  it('shows a failed last flash with its reason, and not a failure a later flash superseded', async () => {
    const html = await op.page('/ui/machines');
    const m4 = rowOf(html, M4);
    expect(m4).toContain('data-state="failed"');
    expect(m4).toContain('failed: disk vanished');
    const m7 = rowOf(html, M7);
    expect(m7).toContain('data-state="idle"');
    expect(m7).not.toContain('old trouble');
    expect(rowOf(html, M1)).toContain('data-state="idle"');
  });

  it.each([
    ['MAC, any case', 'AA:00:00:00:00:01', [M1]],
    ['MAC fragment', '00:0', FLEET.map((m) => m.mac)],
    ['label', 'rack-2', [M2]],
    ['label fragment', 'RACK', [M1, M2]],
    ['boot mode', 'flash-', [M2, M4]],
    ['IP', '192.168.5', [M6]],
    ['IP fragment', '10.0.0.1', [M1, M2]],
    ['catalog entry name', 'Debian', [M2, M4, M7]],
    ['image ref', 'bbbbbb', [M3]],
    ['an underscore taken literally', 'x_y', [M1]],
    ['a percent sign taken literally', '%', []],
    ['the escape character itself', '!', []],
  ])('searches by %s', async (_what, q, expected) => {
    const html = await op.page(`/ui/machines?q=${encodeURIComponent(q)}`);
    expect(macsOf(html)).toEqual(sortedMacs(...expected));
    expect(html).toContain(`value="${q}"`);
  });

  it('says when nothing matches, with a way back', async () => {
    const html = await op.page('/ui/machines?q=nothing-like-this');
    expect(macsOf(html)).toEqual([]);
    expect(html).toContain('No machine matches this search.');
    expect(summaryOf(html)).toBe('0–0 of 0');
  });

  it.each([
    ['discovered', [M1, M5, M6]],
    ['assigned', [M2, M3, M4, M7]],
    ['flashing', [M3]],
    ['failed', [M4]],
    ['bogus', FLEET.map((m) => m.mac)],
  ])('filters %s machines', async (filter, expected) => {
    const html = await op.page(`/ui/machines?filter=${filter}`);
    expect(macsOf(html)).toEqual(sortedMacs(...expected));
    if (filter !== 'bogus') expect(html).toContain(`<option value="${filter}" selected`);
  });

  it('combines a search with a filter', async () => {
    const html = await op.page('/ui/machines?q=debian&filter=failed');
    expect(macsOf(html)).toEqual([M4]);
  });

  it.each([
    ['mac', 'desc', [M7, M6, M5, M4, M3, M2, M1]],
    // NULL first ascending (M5 was never seen), last descending. M3, M4 and M7 posted to the
    // PXE routes in that order just now, which made them seen (from 127.0.0.1).
    ['last_seen_at', 'asc', [M5, M1, M2, M6, M3, M4, M7]],
    ['last_seen_at', 'desc', [M7, M4, M3, M6, M2, M1, M5]],
    // Text order of the addresses; equal ones keep MAC order in both directions.
    ['last_seen_ip', 'asc', [M5, M1, M2, M3, M4, M7, M6]],
    ['last_seen_ip', 'desc', [M6, M3, M4, M7, M2, M1, M5]],
    ['boot_mode', 'asc', [M4, M2, M3, M1, M5, M6, M7]],
    ['boot_mode', 'desc', [M1, M5, M6, M7, M3, M2, M4]],
    ['last_flashed_at', 'desc', [M7, M2, M4, M1, M3, M5, M6]],
    // By what the cell shows: discovered (none) first, then 'bbbb…' (no entry), then 'debian-13'.
    ['image', 'asc', [M1, M5, M6, M3, M2, M4, M7]],
    ['image', 'desc', [M2, M4, M7, M3, M1, M5, M6]],
  ])('sorts by %s %s', async (sort, dir, expected) => {
    const html = await op.page(`/ui/machines?sort=${sort}&dir=${dir}`);
    expect(macsOf(html)).toEqual(expected);
    // The header shows the sort, and its link reverses it.
    const reverse = dir === 'asc' ? 'desc' : 'asc';
    expect(html).toContain(`sort=${sort}&amp;dir=${reverse}`);
  });

  it('pages, keeping the query in every link, and clamps a page past the end', async () => {
    const html = await op.page('/ui/machines?q=aa&per_page=10&page=99');
    expect(macsOf(html)).toHaveLength(7);
    expect(summaryOf(html)).toBe('1–7 of 7');
    expect(html).toContain('href="/ui/machines?q=aa&amp;per_page=25&amp;page=1"');
  });

  it('serves the rows alone for the live refresh, in the view it was asked for', async () => {
    const res = await op.get('/ui/machines/rows?filter=discovered&sort=mac&dir=desc');
    expect(res.status).toBe(200);
    const html = await res.text();
    expect(html.startsWith('<tbody id="machine-rows"')).toBe(true);
    expect(html).toContain(
      'hx-get="/ui/machines/rows?filter=discovered&amp;sort=mac&amp;dir=desc"',
    );
    expect(macsOf(html)).toEqual([M6, M5, M1]);
    expect(html).not.toContain('<html');
  });

  it('a machine that PXE boots for the first time is in the next refresh of the rows', async () => {
    const mac = 'aa:00:00:00:00:99';
    const before = await (await op.get('/ui/machines/rows?filter=discovered')).text();
    expect(macsOf(before)).not.toContain(mac);
    const pxe = await fetch(`${server.base}/pxe/${mac}`);
    expect(pxe.status).toBe(200);
    const after = await (await op.get('/ui/machines/rows?filter=discovered')).text();
    expect(macsOf(after)).toContain(mac);
    expect(published).toContainEqual(expect.objectContaining({ type: 'machine', mac }));
    await server.database.db.deleteFrom('machines').where('mac', '=', mac).execute();
  });

  it('shows the banners a redirect asks for', async () => {
    const html = await op.page(
      '/ui/machines?deleted=aa:bb:cc:dd:ee:ff&created=aa:bb:cc:dd:ee:01&error=' +
        encodeURIComponent('Something <b>bad</b>'),
    );
    expect(html).toContain('Deleted machine aa:bb:cc:dd:ee:ff.');
    expect(html).toContain('href="/ui/machines/aa:bb:cc:dd:ee:01"');
    expect(html).toMatch(/id="machines-error">Something &lt;b(>|&gt;)bad&lt;\/b(>|&gt;)</);
  });
});

describe('adding a machine by MAC', () => {
  let server: UiServer;
  let op: UiClient;
  const published: LiveMessage[] = [];

  beforeAll(async () => {
    server = await startUiServer();
    await seed(server.database.db, FLEET);
    op = await operator(server);
    await op.page('/ui/machines');
    server.bus.subscribe((message) => published.push(message));
  });

  afterAll(async () => {
    await server?.close();
  });

  it('creates it as discovered with its labels, logs it, tells live pages, opens it', async () => {
    const res = await op.post('/ui/machines', {
      mac: ' AA-BB-CC-00-00-10 ',
      labels: 'rack-9, lab,,',
    });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/machines/aa:bb:cc:00:00:10');
    const record = await getMachineRecord(server.database.db, 'aa:bb:cc:00:00:10');
    expect(record?.row.boot_mode).toBe('ipxe-exit');
    expect(record?.row.bty_image_ref).toBeNull();
    expect(record?.labels).toEqual(['lab', 'rack-9']);
    const events = await listEvents(server.database.db, { subjectId: 'aa:bb:cc:00:00:10' });
    expect(events.map((e) => e.kind)).toEqual(['machine.created']);
    expect(events[0]!.actor).toBe('operator');
    expect(published).toContainEqual({
      type: 'machine',
      mac: 'aa:bb:cc:00:00:10',
      change: 'created',
    });
    expect(published).toContainEqual(
      expect.objectContaining({ type: 'event', kind: 'machine.created' }),
    );
    const list = await op.page('/ui/machines?q=rack-9');
    expect(macsOf(list)).toEqual(['aa:bb:cc:00:00:10']);
  });

  it('never overwrites an existing machine: back with an error linking to it', async () => {
    const before = await getMachineRecord(server.database.db, M2);
    const res = await op.post('/ui/machines', { mac: M2.toUpperCase(), labels: 'other' });
    expect(res.status).toBe(303);
    const location = res.headers.get('location')!;
    expect(location).toMatch(/^\/ui\/machines\?error=/);
    expect(await getMachineRecord(server.database.db, M2)).toEqual(before);
    const events = await listEvents(server.database.db, { subjectId: M2 });
    expect(events).toEqual([]);
    const page = await op.page(location);
    expect(page).toContain(`Machine ${M2} already exists: nothing was changed.`);
    expect(page).toMatch(new RegExp(`<a class="alert-link" href="/ui/machines/${M2}">`));
  });

  it('refuses a malformed MAC, keeping what was typed', async () => {
    const res = await op.post('/ui/machines', { mac: 'aa:bb:cc', labels: 'keep-me' });
    expect(res.status).toBe(303);
    const location = res.headers.get('location')!;
    const page = await op.page(location);
    expect(page).toContain('id="machines-error"');
    expect(page).toContain('&quot;aa:bb:cc&quot; is not a MAC');
    expect(page).toMatch(/id="add-mac" name="mac"[^>]*value="aa:bb:cc"/);
    expect(page).toMatch(/id="add-labels" name="labels"[^>]*value="keep-me"/);
    expect(page).toMatch(/<details class="card mb-3" open/);
    const empty = await op.post('/ui/machines', { mac: '' });
    expect(await op.page(empty.headers.get('location')!)).toContain('MAC address: required');
  });

  it('refuses a bad label and creates nothing', async () => {
    const res = await op.post('/ui/machines', { mac: 'aa:bb:cc:00:00:11', labels: '<b>' });
    expect(res.status).toBe(303);
    expect(await op.page(res.headers.get('location')!)).toContain('labels: ');
    expect(await getMachineRecord(server.database.db, 'aa:bb:cc:00:00:11')).toBeUndefined();
  });

  it('refuses a post without the CSRF token (403) and creates nothing', async () => {
    const res = await op.post('/ui/machines', { mac: 'aa:bb:cc:00:00:12' }, { csrf: false });
    expect(res.status).toBe(403);
    expect(await getMachineRecord(server.database.db, 'aa:bb:cc:00:00:12')).toBeUndefined();
  });
});

describe('an empty fleet', () => {
  let server: UiServer;

  beforeAll(async () => {
    server = await startUiServer();
  });

  afterAll(async () => {
    await server?.close();
  });

  it('explains how machines appear', async () => {
    const html = await (await operator(server)).page('/ui/machines');
    expect(macsOf(html)).toEqual([]);
    expect(html).toContain('No machines yet.');
    expect(html).toContain('PXE boots from this server');
    expect(html).toContain('add one by its MAC address');
  });
});

describe('10,000 machines', () => {
  let server: UiServer;
  let op: UiClient;
  const COUNT = 10_000;
  const hex = (n: number) => n.toString(16).padStart(2, '0');
  const macOf = (i: number) => `02:00:00:${hex(i >> 16)}:${hex((i >> 8) & 255)}:${hex(i & 255)}`;
  const seen = (i: number) => new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString();

  beforeAll(async () => {
    server = await startUiServer();
    const at = '2026-01-01T00:00:00.000Z';
    await server.database.db.transaction().execute(async (tx) => {
      for (let start = 0; start < COUNT; start += 500) {
        const batch = Array.from({ length: 500 }, (_, k) => start + k);
        await tx
          .insertInto('machines')
          .values(
            batch.map((i) => ({
              mac: macOf(i),
              boot_mode: i % 2 === 0 ? 'ipxe-exit' : 'bty-inventory',
              last_seen_at: seen(i),
              last_seen_ip: `10.1.${i >> 8}.${i & 255}`,
              created_at: at,
              updated_at: at,
            })),
          )
          .execute();
        await tx
          .insertInto('machine_labels')
          .values(batch.map((i) => ({ mac: macOf(i), label: `rack-${i % 100}` })))
          .execute();
      }
    });
    op = await operator(server);
  });

  afterAll(async () => {
    await server?.close();
  });

  it('pages the whole fleet', async () => {
    const html = await op.page('/ui/machines');
    expect(summaryOf(html)).toBe('1–25 of 10,000');
    expect(macsOf(html)).toEqual(Array.from({ length: 25 }, (_, i) => macOf(i)));
    const last = await op.page('/ui/machines?page=400');
    expect(macsOf(last)).toEqual(Array.from({ length: 25 }, (_, i) => macOf(9975 + i)));
    expect(summaryOf(last)).toBe('9,976–10,000 of 10,000');
    // A page past the end shows the last one.
    const past = await op.page('/ui/machines?page=9999&per_page=100');
    expect(macsOf(past)).toEqual(Array.from({ length: 100 }, (_, i) => macOf(9900 + i)));
    expect(past).toContain('aria-current="page">100<');
  });

  it('answers a search, sort and page together', async () => {
    // rack-42 holds i = 42, 142, …, 9942: 100 machines; newest first, page 2 of 50 each.
    const html = await op.page(
      '/ui/machines?q=rack-42&sort=last_seen_at&dir=desc&per_page=50&page=2',
    );
    expect(summaryOf(html)).toBe('51–100 of 100');
    expect(macsOf(html)).toEqual(Array.from({ length: 50 }, (_, k) => macOf(4942 - k * 100)));
    const rows = await (
      await op.get('/ui/machines/rows?q=rack-42&sort=last_seen_at&dir=desc&per_page=50&page=2')
    ).text();
    expect(macsOf(rows)).toEqual(macsOf(html));
  });

  it('finds one machine by MAC or IP among them all', async () => {
    expect(macsOf(await op.page('/ui/machines?q=02:00:00:00:27:0F'))).toEqual([macOf(9999)]);
    expect(macsOf(await op.page('/ui/machines?q=10.1.39.15&filter=discovered'))).toEqual([
      macOf(9999),
    ]);
    const inventory = await op.page('/ui/machines?q=bty-inventory&per_page=100');
    expect(summaryOf(inventory)).toBe('1–100 of 5,000');
  });
});

/** The moment the engine-agreement queries judge "flashing now" at (nothing there flashes). */
const LIST_NOW = new Date('2026-03-01T00:00:00.000Z');

describe('the list queries on both engines', () => {
  const databases = useDatabases('ui_machines');
  const CASES: MachineCriteria[] = [
    { search: '', filter: null, sort: 'mac', dir: 'asc', now: LIST_NOW },
    { search: 'RACK', filter: null, sort: 'mac', dir: 'desc', now: LIST_NOW },
    { search: 'x_y', filter: null, sort: 'mac', dir: 'asc', now: LIST_NOW },
    { search: '%', filter: null, sort: 'mac', dir: 'asc', now: LIST_NOW },
    { search: 'debian', filter: 'assigned', sort: 'mac', dir: 'asc', now: LIST_NOW },
    { search: '', filter: 'discovered', sort: 'last_seen_at', dir: 'asc', now: LIST_NOW },
    { search: '', filter: null, sort: 'last_seen_at', dir: 'desc', now: LIST_NOW },
    { search: '', filter: null, sort: 'image', dir: 'asc', now: LIST_NOW },
    { search: '', filter: null, sort: 'image', dir: 'desc', now: LIST_NOW },
    { search: '', filter: null, sort: 'last_flashed_at', dir: 'asc', now: LIST_NOW },
    { search: '', filter: 'flashing', sort: 'mac', dir: 'asc', now: LIST_NOW },
  ];

  it('agree on every search, filter and sort', async () => {
    const results: Record<string, unknown> = {};
    for (const engine of ENGINES) {
      const database: BtyDatabase = await databases.fresh(engine);
      try {
        await seed(database.db, FLEET);
        await database.db
          .insertInto('events')
          .values({
            ts: '2026-02-01T00:00:00.000Z',
            kind: 'machine.flash_failed',
            subject_kind: 'machine',
            subject_id: M4,
            summary: `${M4} reported a failed flash: boom`,
            details: JSON.stringify({ reason: 'boom' }),
          })
          .execute();
        // M3 reported a minute ago, M2 last reported beyond the window: only M3 flashes now.
        const progressAt = (ms: number) => new Date(LIST_NOW.getTime() - ms).toISOString();
        for (const [mac, at] of [
          [M3, progressAt(60_000)],
          [M2, progressAt(FLASHING_WINDOW_MS + 1)],
        ] as const) {
          await database.db
            .updateTable('machines')
            .set({ progress: '{"phase":"write","bytes_done":1}', progress_at: at })
            .where('mac', '=', mac)
            .execute();
        }
        const out = [];
        for (const criteria of CASES) {
          const total = await countMachineList(database.db, criteria);
          const rows = await listMachineRows(database.db, criteria, { limit: 5, offset: 0 });
          out.push({ total, rows: rows.map((r) => [r.mac, r.labels, r.image_name, r.failure]) });
        }
        const failed = await listMachineRows(
          database.db,
          { search: '', filter: 'failed', sort: 'mac', dir: 'asc', now: LIST_NOW },
          { limit: 5, offset: 0 },
        );
        out.push(failed.map((r) => [r.mac, r.failure?.reason]));
        results[engine] = out;
      } finally {
        await database.close();
      }
    }
    expect(results.postgres).toEqual(results.sqlite);
    const sqlite = results.sqlite as Array<{ total: number; rows: unknown[][] }>;
    expect(sqlite[1]!.total).toBe(2);
    expect(sqlite[2]!.rows.map((r) => r[0])).toEqual([M1]);
    expect(sqlite[3]!.total).toBe(0);
    expect(sqlite[CASES.length - 1]!.rows.map((r) => r[0])).toEqual([M3]);
    expect(sqlite.at(-1)).toEqual([[M4, 'boom']]);
  });

  it('escapes LIKE wildcards', () => {
    expect(containsPattern('A_b%c!d')).toBe('%a!_b!%c!!d%');
  });
});

describe('filter=flashing agrees with the dashboard', () => {
  const T0 = Date.parse('2026-05-01T08:00:00.000Z');
  const STALE = 'cc:00:00:00:00:01';
  const FRESH = 'cc:00:00:00:00:02';
  let clock = T0;
  let server: UiServer;
  let op: UiClient;

  async function report(mac: string): Promise<void> {
    const boot = await fetch(`${server.base}/pxe/${mac}`);
    expect(boot.status).toBe(200);
    await boot.text();
    const res = await fetch(`${server.base}/pxe/${mac}/progress`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ phase: 'write', bytes_done: 1024, bytes_total: 4096, rate_bps: 1 }),
    });
    expect(res.status).toBe(204);
  }

  beforeAll(async () => {
    server = await startUiServer({ now: () => new Date(clock) });
    op = await operator(server);
    // STALE reports at T0 and then falls silent (powered off mid-flash); FRESH reports later.
    await report(STALE);
    clock = T0 + 5 * 60_000;
    await report(FRESH);
  });

  afterAll(async () => {
    await server?.close();
  });

  async function flashingNow(): Promise<{ listed: string[]; counted: number }> {
    const html = await op.page('/ui/machines?filter=flashing');
    const counted = (await dashboardCounts(server.database.db, new Date(clock))).flashing;
    return { listed: macsOf(html), counted };
  }

  it('lists a machine whose last progress is exactly at the window edge, as the count does', async () => {
    clock = T0 + FLASHING_WINDOW_MS;
    expect(await flashingNow()).toEqual({ listed: [STALE, FRESH], counted: 2 });
  });

  it('leaves out a machine whose last progress is older than the window', async () => {
    clock = T0 + FLASHING_WINDOW_MS + 1;
    expect(await flashingNow()).toEqual({ listed: [FRESH], counted: 1 });
    // Still in the unfiltered list: it is only not "flashing now", and its bar says so.
    const html = await op.page('/ui/machines');
    expect(macsOf(html)).toEqual([STALE, FRESH]);
    const bar = (mac: string) =>
      new RegExp(`<div id="progress-${mac.replaceAll(':', '')}"[^>]*data-state="([a-z]+)"`).exec(
        html,
      )?.[1];
    expect(bar(STALE)).toBe('stale');
    expect(bar(FRESH)).toBe('running');
    expect(html).toContain('no report since 10 min ago');
  });
});
