/**
 * The Events page over real HTTP: the one search box over every field (escaped wildcards,
 * case-insensitive, on both engines), click-to-pivot links, paging, escaping of stored text,
 * acknowledge / clear / bulk acknowledge with their CSRF refusals, and the live-refresh fragment.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BtyDatabase } from '../../src/web/db/database.ts';
import { appendEvent, countEvents, searchEvents, type NewEvent } from '../../src/web/db/events.ts';
import { ENGINES, useDatabases } from '../helpers/databases.ts';
import { operator, startUiServer, type UiClient, type UiServer } from '../helpers/ui.ts';

const T0 = new Date('2026-11-29T12:00:00.000Z');
const at = (minutes: number) => new Date(T0.getTime() + minutes * 60_000);

/** The ids of the table's rows, in page order. */
function rowIds(html: string): number[] {
  return [...html.matchAll(/<tr data-event-id="(\d+)"/g)].map((m) => Number(m[1]));
}

/** One row's markup. */
function rowOf(html: string, id: number): string {
  const m = new RegExp(`<tr data-event-id="${id}"[\\s\\S]*?</tr>`).exec(html);
  if (!m) throw new Error(`no row for event ${id}`);
  return m[0];
}

async function acknowledged(database: BtyDatabase, id: number): Promise<boolean> {
  const row = await database.db
    .selectFrom('events')
    .select('acknowledged')
    .where('id', '=', id)
    .executeTakeFirstOrThrow();
  return Number(row.acknowledged) !== 0;
}

const FIXTURES: NewEvent[] = [
  {
    kind: 'machine.flash_failed',
    summary: '52:54:00:aa:bb:01 reported a failed flash: disk vanished',
    subjectKind: 'machine',
    subjectId: '52:54:00:aa:bb:01',
    actor: 'pxe-client',
    sourceIp: '10.1.2.3',
  },
  {
    kind: 'catalog.entry.added',
    summary: 'Added Debian-13 Generic (100% tested)',
    subjectKind: 'catalog',
    subjectId: 'debian-13',
    actor: 'operator',
    sourceIp: '192.0.2.44',
  },
  {
    kind: 'auth.login.failed',
    summary: 'wrong password from a browser',
    actor: 'browser_user',
    sourceIp: '198.51.100.7',
  },
  {
    kind: 'machine.inventory',
    summary: 'reported 2 disk(s) <script>alert("x")</script>',
    subjectKind: 'machine',
    subjectId: '52:54:00:aa:bb:02',
    actor: 'pxe-client',
    sourceIp: '10.1.2.4',
  },
];

describe('searchEvents / countEvents on both engines', () => {
  const dbs = useDatabases('ui-events');
  for (const engine of ENGINES) {
    it(`${engine}: substring of any field, case-insensitive, wildcards literal`, async () => {
      const database = await dbs.fresh(engine);
      try {
        const ids: number[] = [];
        for (const [i, e] of FIXTURES.entries()) ids.push(await appendEvent(database.db, e, at(i)));
        const [flash, catalog, login, inventory] = ids as [number, number, number, number];
        const find = async (q: string) => {
          const rows = await searchEvents(database.db, { q, limit: 100 });
          expect(await countEvents(database.db, { q })).toBe(rows.length);
          return rows.map((r) => r.id);
        };
        expect(await find('')).toEqual([inventory, login, catalog, flash]);
        expect(await find('FLASH_FAILED')).toEqual([flash]); // kind
        expect(await find('AA:BB:02')).toEqual([inventory]); // subject
        expect(await find('Debian-13')).toEqual([catalog]); // subject and summary
        expect(await find('browser_')).toEqual([login]); // actor
        expect(await find('198.51.100')).toEqual([login]); // source IP
        expect(await find('disk vanished')).toEqual([flash]); // summary
        expect(await find('failed')).toEqual([login, flash]); // every failure kind
        expect(await find('%')).toEqual([catalog]); // a literal percent sign
        expect(await find('_')).toEqual([login, flash]); // a literal underscore
        expect(await find('!')).toEqual([]); // the escape character itself
        expect(await find('x")</script')).toEqual([inventory]);
        expect(await find('nothing-like-this')).toEqual([]);
        // Paging: newest first, offset into the matches.
        const page = await searchEvents(database.db, { q: 'a', limit: 2, offset: 1 });
        expect(page.map((r) => r.id)).toEqual([login, catalog]);
      } finally {
        await database.close();
      }
    });
  }
});

describe('GET /ui/events', () => {
  let server: UiServer;
  let ui: UiClient;
  const ids: number[] = [];

  beforeAll(async () => {
    server = await startUiServer();
    ui = await operator(server);
    for (const [i, e] of FIXTURES.entries())
      ids.push(await appendEvent(server.database.db, e, at(i)));
  });
  afterAll(() => server.close());

  const flashId = () => ids[0]!;
  const loginId = () => ids[2]!;
  const inventoryId = () => ids[3]!;

  it('needs a session', async () => {
    const res = await fetch(`${server.base}/ui/events`, { redirect: 'manual' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/login');
  });

  it('lists events newest first with the search form, table hooks and failure colours', async () => {
    const html = await ui.page('/ui/events');
    expect(html).toMatch(/<form id="event-search" method="get" action="\/ui\/events"/);
    expect(html).toMatch(/<input type="search" id="event-q" name="q"/);
    expect(html).toContain('id="events-table"');
    // The login events of the test client itself come first (they are newer).
    const shown = rowIds(html).filter((id) => ids.includes(id));
    expect(shown).toEqual([...ids].reverse());
    const flash = rowOf(html, flashId());
    expect(flash).toContain('data-kind="machine.flash_failed"');
    expect(flash).toContain('text-bg-danger');
    expect(rowOf(html, inventoryId())).not.toContain('text-bg-danger');
    for (const h of ['When', 'Kind', 'Summary', 'Subject', 'Actor', 'Source IP', 'Ack']) {
      expect(html).toContain(`<th scope="col">${h}</th>`);
    }
  });

  it('renders stored text escaped', async () => {
    const html = await ui.page('/ui/events');
    expect(html).not.toContain('<script>alert');
    expect(rowOf(html, inventoryId())).toContain(
      'reported 2 disk(s) &lt;script>alert(&quot;x&quot;)&lt;/script>',
    );
  });

  it('makes kind, subject, actor and source IP pivot links; machines link to their page', async () => {
    const row = rowOf(await ui.page('/ui/events'), flashId());
    for (const value of ['machine.flash_failed', '52:54:00:aa:bb:01', 'pxe-client', '10.1.2.3']) {
      const href = `/ui/events?q=${encodeURIComponent(value)}`;
      expect(row).toContain(`<a class="pivot" href="${href}"`);
    }
    expect(row).toContain('href="/ui/machines/52%3A54%3A00%3Aaa%3Abb%3A01"');
    // The MAC in the summary links to the machine too.
    expect(row).toContain(
      '<a href="/ui/machines/52%3A54%3A00%3Aaa%3Abb%3A01">52:54:00:aa:bb:01</a>',
    );
    // Following a pivot narrows the list to that value.
    const pivoted = await ui.page(`/ui/events?q=${encodeURIComponent('10.1.2.3')}`);
    expect(rowIds(pivoted)).toEqual([flashId()]);
  });

  it('searches every field from the box, keeps the text in the box, explains an empty result', async () => {
    const cases: Array<[string, number[]]> = [
      ['AUTH.LOGIN.FAILED', [loginId()]],
      ['aa:bb:02', [inventoryId()]],
      ['browser_user', [loginId()]],
      ['198.51.100.7', [loginId()]],
      ['disk vanished', [flashId()]],
      ['100%', [ids[1]!]],
    ];
    for (const [q, expected] of cases) {
      const html = await ui.page(`/ui/events?q=${encodeURIComponent(q)}`);
      expect(rowIds(html), q).toEqual(expected);
    }
    const failed = await ui.page('/ui/events?q=failed');
    expect(rowIds(failed)).toEqual(expect.arrayContaining([loginId(), flashId()]));
    expect(rowIds(failed).every((id) => id !== inventoryId() && id !== ids[1])).toBe(true);

    const none = await ui.page('/ui/events?q=%3Cb%3Ezzz');
    expect(rowIds(none)).toEqual([]);
    expect(none).toContain('value="&lt;b>zzz"');
    expect(none).toMatch(/id="events-empty">Nothing matches “&lt;b>zzz”/);
  });

  it('acknowledges a failure: 303 back to return_to, stored, row muted with a clear button', async () => {
    const id = flashId();
    const before = rowOf(await ui.page('/ui/events'), id);
    expect(before).toContain(`action="/ui/events/${id}/ack"`);
    expect(before).toContain('class="btn btn-sm btn-outline-danger ack"');
    expect(before).toContain('name="return_to" value="/ui/events"');
    expect(before).toContain('name="_csrf"');

    // Other tabs hear of it: the live bus carries the acknowledgement.
    const heard: unknown[] = [];
    const stop = server.bus.subscribe((m) => {
      if (m.type === 'ack') heard.push(m);
    });
    const res = await ui.post(`/ui/events/${id}/ack`, { return_to: '/ui/events?q=failed' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/events?q=failed');
    expect(await acknowledged(server.database, id)).toBe(true);
    expect(heard).toEqual([{ type: 'ack', ids: [id], acknowledged: true }]);

    const after = rowOf(await ui.page('/ui/events?q=failed'), id);
    expect(after).toContain('data-acknowledged="true"');
    expect(after).toContain('event-acked');
    expect(after).not.toContain('btn-outline-danger ack');
    expect(after).toContain(`action="/ui/events/${id}/unack"`);
    // The form on a searched page returns to that search.
    expect(after).toContain('name="return_to" value="/ui/events?q=failed"');

    const clear = await ui.post(`/ui/events/${id}/unack`, { return_to: '/ui/events' });
    expect(clear.status).toBe(303);
    expect(await acknowledged(server.database, id)).toBe(false);
    expect(heard.at(-1)).toEqual({ type: 'ack', ids: [id], acknowledged: false });
    stop();
  });

  it('refuses an acknowledgement without the CSRF token and changes nothing', async () => {
    const id = flashId();
    const res = await ui.post(`/ui/events/${id}/ack`, { return_to: '/ui/events' }, { csrf: false });
    expect(res.status).toBe(403);
    expect(await res.text()).toContain('nothing was changed');
    expect(await acknowledged(server.database, id)).toBe(false);
    const unack = await ui.post(`/ui/events/${id}/unack`, {}, { csrf: false });
    expect(unack.status).toBe(403);
  });

  it('sends an unknown id back with an error banner; unsafe return_to falls back to /ui/events', async () => {
    const res = await ui.post('/ui/events/999999/ack', { return_to: '/ui/events?q=failed' });
    expect(res.status).toBe(303);
    const location = res.headers.get('location')!;
    expect(location).toMatch(/^\/ui\/events\?q=failed&error=/);
    const html = await ui.page(location);
    expect(html).toMatch(/class="alert alert-danger"[^>]*>There is no event with id 999999\./);

    const bad = await ui.post('/ui/events/abc/ack', { return_to: '/ui/events' });
    expect(new URL(bad.headers.get('location')!, server.base).searchParams.get('error')).toBe(
      'There is no event with id abc.',
    );

    for (const evil of ['https://evil.example/ui/', '//evil.example/ui/', '/ui/\\evil', 'ui/x']) {
      const r = await ui.post(`/ui/events/${flashId()}/unack`, { return_to: evil });
      expect(r.status).toBe(303);
      expect(r.headers.get('location'), evil).toBe('/ui/events');
    }
    // A successful post drops a stale error from where it returns to.
    const ok = await ui.post(`/ui/events/${flashId()}/unack`, {
      return_to: '/ui/events?q=x&error=old',
    });
    expect(ok.headers.get('location')).toBe('/ui/events?q=x');
  });

  it('acknowledges all failures shown at once', async () => {
    const html = await ui.page('/ui/events?q=failed');
    const form = /<form method="post" action="\/ui\/events\/ack"[^]*?<\/form>/.exec(html)?.[0];
    expect(form).toBeDefined();
    const shownIds = /name="ids" value="([\d,]+)"/.exec(form!)![1]!;
    expect(shownIds.split(',').map(Number)).toEqual(expect.arrayContaining([flashId(), loginId()]));
    const res = await ui.post('/ui/events/ack', {
      ids: shownIds,
      return_to: '/ui/events?q=failed',
    });
    expect(res.status).toBe(303);
    expect(await acknowledged(server.database, flashId())).toBe(true);
    expect(await acknowledged(server.database, loginId())).toBe(true);
    expect(await acknowledged(server.database, inventoryId())).toBe(false);
    // Nothing open is left on that page, so the bulk button is gone.
    expect(await ui.page('/ui/events?q=failed')).not.toContain('action="/ui/events/ack"');
    await ui.post(`/ui/events/${flashId()}/unack`, {});
    await ui.post(`/ui/events/${loginId()}/unack`, {});
  });

  it('shows events from the real PXE routes with the machine link', async () => {
    const mac = '52:54:00:cc:00:01';
    expect((await fetch(`${server.base}/pxe/${mac}`)).status).toBe(200);
    const html = await ui.page(`/ui/events?q=${encodeURIComponent(mac)}`);
    expect(html).toContain('data-kind="machine.discovered"');
    expect(html).toContain(`href="/ui/machines/${encodeURIComponent(mac)}"`);
  });

  it('refreshes live only on page 1 without a search, through the table fragment', async () => {
    const first = await ui.page('/ui/events');
    expect(first).toMatch(
      /<div id="events-live" hx-get="\/ui\/events\/table" hx-trigger="sse:events throttle:1s, sse:events delay:1500ms" hx-swap="outerHTML">/,
    );
    expect(await ui.page('/ui/events?q=failed')).toContain('<div id="events-live">');
    const fragment = await ui.page('/ui/events/table');
    expect(fragment.startsWith('<div id="events-live"')).toBe(true);
    expect(fragment).not.toContain('<html');
    expect(rowIds(fragment)).toEqual(rowIds(first));
  });
});

describe('GET /ui/events paging', () => {
  let server: UiServer;
  let ui: UiClient;
  const ids: number[] = [];

  beforeAll(async () => {
    server = await startUiServer();
    ui = await operator(server);
    // Only these 60 rows: the login event is removed so the counts are exact.
    await server.database.db.deleteFrom('events').execute();
    for (let i = 0; i < 60; i++) {
      ids.push(
        await appendEvent(
          server.database.db,
          { kind: 'machine.inventory', summary: `event number ${i}`, subjectId: `s${i}` },
          at(i),
        ),
      );
    }
  });
  afterAll(() => server.close());

  const newestFirst = () => [...ids].reverse();

  it('pages 25 at a time, newest first, with the pager keeping the search', async () => {
    const p1 = await ui.page('/ui/events');
    expect(rowIds(p1)).toEqual(newestFirst().slice(0, 25));
    expect(p1).toContain('1–25 of 60');
    const p3 = await ui.page('/ui/events?page=3');
    expect(rowIds(p3)).toEqual(newestFirst().slice(50, 60));
    expect(p3).toContain('51–60 of 60');
    // Beyond the end: the last page, not an empty one.
    expect(rowIds(await ui.page('/ui/events?page=99'))).toEqual(newestFirst().slice(50, 60));
    const p50 = await ui.page('/ui/events?per_page=50&page=2');
    expect(rowIds(p50)).toEqual(newestFirst().slice(50, 60));
    // Later pages do not refresh themselves.
    expect(p3).toContain('<div id="events-live">');

    const searched = await ui.page('/ui/events?q=number%201');
    // "number 1" and "number 10".."number 19".
    expect(rowIds(searched)).toHaveLength(11);
    expect(searched).toContain('href="/ui/events?q=number+1&amp;page=1"');
  });

  it('says so when there are no events at all', async () => {
    const empty = await startUiServer();
    try {
      const client = await operator(empty);
      await empty.database.db.deleteFrom('events').execute();
      const html = await client.page('/ui/events');
      expect(rowIds(html)).toEqual([]);
      expect(html).toMatch(/id="events-empty">No events yet\./);
    } finally {
      await empty.close();
    }
  });
});
