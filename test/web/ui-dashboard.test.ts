/**
 * The dashboard over real HTTP: the five counts after seeding through the real PXE routes and
 * the JSON API (and the time windows that keep old progress and old failures out), the
 * readiness checklist against real files, acknowledging a failure from the dashboard (and the
 * CSRF refusal), the recent-activity card, and the fragments that refresh each card live.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addCatalogEntry } from '../../src/web/db/catalog.ts';
import { appendEvent } from '../../src/web/db/events.ts';
import { ipxeBootFiles, liveArtifactNames } from '../../src/web/netboot-files.ts';
import { createSessions } from '../../src/web/session.ts';
import { operator, startUiServer, UiClient, type UiServer } from '../helpers/ui.ts';

const REF = 'ab'.repeat(32);
const [MAC1, MAC2, MAC3, MAC4] = [1, 2, 3, 4].map((n) => `52:54:00:d0:00:0${n}`) as [
  string,
  string,
  string,
  string,
];

/** The number inside a count card. */
function count(html: string, id: string): number {
  const m = new RegExp(
    `id="${id}"[^>]*>[\\s\\S]*?<span class="count-value[^"]*">([\\d,]+)</span>`,
  ).exec(html);
  if (!m) throw new Error(`no count ${id}`);
  return Number(m[1]!.replaceAll(',', ''));
}

function counts(html: string) {
  return {
    machines: count(html, 'count-machines'),
    unassigned: count(html, 'count-unassigned'),
    flashing: count(html, 'count-flashing'),
    failed: count(html, 'count-failed'),
    catalog: count(html, 'count-catalog'),
  };
}

/** One readiness row: its data-ok and its text. */
function check(html: string, name: string): { ok: string; text: string; href: string } {
  const m = new RegExp(
    `<li [^>]*data-check="${name}" data-ok="([^"]+)"[^>]*>([\\s\\S]*?)</li>`,
  ).exec(html);
  if (!m) throw new Error(`no readiness row ${name}`);
  const href = /<a [^>]*href="([^"]+)"/.exec(m[2]!)![1]!;
  return { ok: m[1]!, text: m[2]!, href };
}

/** The markup of a card by id. */
function card(html: string, id: string): string {
  const m = new RegExp(`<section id="${id}"[\\s\\S]*?</section>`).exec(html);
  if (!m) throw new Error(`no card ${id}`);
  return m[0];
}

async function json(server: UiServer, method: string, path: string, body: unknown, cookie = '') {
  return fetch(server.base + path, {
    method,
    headers: { 'content-type': 'application/json', ...(cookie ? { cookie } : {}) },
    body: JSON.stringify(body),
  });
}

describe('GET /ui/dashboard', () => {
  let server: UiServer;
  let ui: UiClient;

  beforeAll(async () => {
    server = await startUiServer();
    ui = await operator(server);
  });
  afterAll(() => server.close());

  it('needs a session, for the page and for each fragment', async () => {
    for (const path of [
      '/ui/dashboard',
      '/ui/dashboard/summary',
      '/ui/dashboard/failures',
      '/ui/dashboard/activity',
    ]) {
      const res = await fetch(server.base + path, { redirect: 'manual' });
      expect(res.status, path).toBe(303);
      expect(res.headers.get('location')).toBe('/ui/login');
    }
  });

  it('starts at zero, with the unassigned card not in the warning colour', async () => {
    const html = await ui.page('/ui/dashboard');
    expect(counts(html)).toEqual({
      machines: 0,
      unassigned: 0,
      flashing: 0,
      failed: 0,
      catalog: 0,
    });
    expect(html).toMatch(/id="count-unassigned"[^>]*data-tone="plain"/);
    expect(card(html, 'unacked-failures')).toContain('No open failures.');
  });

  it('counts machines, unassigned, flashing, failed in 24 h and catalog entries', async () => {
    const db = server.database.db;
    for (const mac of [MAC1, MAC2, MAC3, MAC4]) {
      expect((await fetch(`${server.base}/pxe/${mac}`)).status).toBe(200);
    }
    // Bound to an image through the operator JSON API: no longer unassigned.
    const put = await json(
      server,
      'PUT',
      `/machines/${MAC1}`,
      { bty_image_ref: REF },
      ui.cookieHeader,
    );
    expect(put.status).toBe(200);
    // Flashing: a progress report now.
    const progress = await json(server, 'POST', `/pxe/${MAC2}/progress`, {
      phase: 'write',
      bytes_done: 1 << 20,
      bytes_total: 8 << 20,
      rate_bps: 1e6,
    });
    expect(progress.status).toBe(204);
    // Not flashing: a report left from 11 minutes ago.
    await db
      .updateTable('machines')
      .set({
        progress: '{"phase":"write"}',
        progress_at: new Date(Date.now() - 11 * 60_000).toISOString(),
      })
      .where('mac', '=', MAC4)
      .execute();
    // Failed now (counted), and a failure from 25 hours ago (not counted).
    const failed = await json(server, 'POST', `/pxe/${MAC3}/status`, {
      status: 'failed',
      reason: 'disk vanished',
    });
    expect(failed.status).toBe(204);
    await appendEvent(
      db,
      {
        kind: 'machine.flash_failed',
        summary: 'an old failure',
        subjectKind: 'machine',
        subjectId: MAC4,
      },
      new Date(Date.now() - 25 * 3600_000),
    );
    const added = await addCatalogEntry(
      db,
      {
        ref: REF,
        name: 'debian-13',
        src: 'https://example.invalid/debian-13.img.zst',
        sha256: null,
        format: 'img.zst',
        size_bytes: 1000,
        description: null,
        arch: 'x86_64',
      },
      new Date(),
    );
    expect(added.outcome).toBe('added');

    const html = await ui.page('/ui/dashboard');
    expect(counts(html)).toEqual({
      machines: 4,
      unassigned: 3,
      flashing: 1,
      failed: 1,
      catalog: 1,
    });
    const hrefOf = (id: string) => new RegExp(`id="${id}" href="([^"]+)"`).exec(html)?.[1];
    expect(hrefOf('count-machines')).toBe('/ui/machines');
    expect(hrefOf('count-unassigned')).toBe('/ui/machines?filter=discovered');
    expect(hrefOf('count-flashing')).toBe('/ui/machines?filter=flashing');
    expect(hrefOf('count-failed')).toBe('/ui/events?q=machine.flash_failed');
    expect(hrefOf('count-catalog')).toBe('/ui/catalog');
    expect(html).toMatch(/id="count-unassigned"[^>]*data-tone="warning"/);
    expect(html).toMatch(/id="count-failed"[^>]*data-tone="danger"/);

    // A final status clears the stored progress: no longer flashing.
    await json(server, 'POST', `/pxe/${MAC2}/status`, { status: 'done' });
    expect(counts(await ui.page('/ui/dashboard')).flashing).toBe(0);
  });

  it('serves the counts card as a fragment that refreshes itself on machines and events', async () => {
    const fragment = await ui.page('/ui/dashboard/summary');
    expect(fragment).toMatch(
      /^<section id="dashboard-summary"[^>]* hx-get="\/ui\/dashboard\/summary" hx-trigger="sse:machines throttle:1s, sse:machines delay:1500ms, sse:events throttle:1s, sse:events delay:1500ms" hx-swap="outerHTML">/,
    );
    expect(fragment).not.toContain('<html');
    expect(counts(fragment).machines).toBe(4);
    const page = await ui.page('/ui/dashboard');
    expect(card(page, 'dashboard-summary')).toBe(fragment);
  });

  it('lists unacknowledged failures with an Acknowledge form that returns to the dashboard', async () => {
    const html = await ui.page('/ui/dashboard');
    const failures = card(html, 'unacked-failures');
    expect(failures).toContain('disk vanished');
    expect(failures).toContain('an old failure');
    expect(failures).toContain('href="/ui/events?q=failed"');
    // Newest first (by id: the backdated old failure was written last).
    const listed = [...failures.matchAll(/<li [^>]*data-event-id="(\d+)" data-kind="([^"]+)"/g)];
    expect(listed.map((m) => m[2])).toEqual(['machine.flash_failed', 'machine.flash_failed']);
    const listedIds = listed.map((m) => Number(m[1]));
    expect(listedIds).toEqual([...listedIds].sort((a, b) => b - a));
    const { id: rawId } = await server.database.db
      .selectFrom('events')
      .select('id')
      .where('summary', 'like', '%disk vanished')
      .executeTakeFirstOrThrow();
    const id = Number(rawId);
    expect(listedIds).toContain(id);
    expect(failures).toContain(`action="/ui/events/${id}/ack"`);
    expect(failures).toContain('name="return_to" value="/ui/dashboard"');

    const forged = await ui.post(
      `/ui/events/${id}/ack`,
      { return_to: '/ui/dashboard' },
      { csrf: false },
    );
    expect(forged.status).toBe(403);
    expect(card(await ui.page('/ui/dashboard'), 'unacked-failures')).toContain('disk vanished');

    const res = await ui.post(`/ui/events/${id}/ack`, { return_to: '/ui/dashboard' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/dashboard');
    const row = await server.database.db
      .selectFrom('events')
      .select('acknowledged')
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
    expect(Number(row.acknowledged)).toBe(1);
    const after = card(await ui.page('/ui/dashboard'), 'unacked-failures');
    expect(after).not.toContain('disk vanished');
    expect(after).toContain('an old failure');
    // Acknowledging does not rewrite history: the 24-hour count still has the failure.
    expect(counts(await ui.page('/ui/dashboard')).failed).toBe(1);

    const fragment = await ui.page('/ui/dashboard/failures');
    expect(fragment).toMatch(
      /^<section id="unacked-failures"[^>]* hx-get="\/ui\/dashboard\/failures" hx-trigger="sse:events throttle:1s, sse:events delay:1500ms"/,
    );
  });

  it('shows the last 10 events with machine subjects linking to the machine page', async () => {
    const db = server.database.db;
    await appendEvent(
      db,
      {
        kind: 'catalog.entry.added',
        summary: 'added <b>bold</b> image',
        subjectKind: 'catalog',
        subjectId: 'debian-13',
      },
      new Date(),
    );
    const html = await ui.page('/ui/dashboard');
    const activity = card(html, 'recent-activity');
    expect([...activity.matchAll(/<tr data-event-id=/g)]).toHaveLength(10);
    const newest = (
      await db.selectFrom('events').select('id').orderBy('id', 'desc').limit(10).execute()
    ).map((r) => Number(r.id));
    expect([...activity.matchAll(/<tr data-event-id="(\d+)"/g)].map((m) => Number(m[1]))).toEqual(
      newest,
    );
    expect(activity).toContain('added &lt;b>bold&lt;/b> image');
    expect(activity).toContain('href="/ui/events?q=debian-13"');
    expect(activity).toContain(`href="/ui/machines/${encodeURIComponent(MAC3)}"`);
    expect(activity).toContain('href="/ui/events"');
    expect(activity).toContain('kind-badge');

    const fragment = await ui.page('/ui/dashboard/activity');
    expect(fragment).toMatch(
      /^<section id="recent-activity"[^>]* hx-get="\/ui\/dashboard\/activity" hx-trigger="sse:events throttle:1s, sse:events delay:1500ms"/,
    );
  });

  it('checks readiness: artifacts, iPXE files, catalog, TFTP (info), password', async () => {
    let html = await ui.page('/ui/dashboard');
    expect(html).toMatch(/<ul id="readiness"/);
    const names = liveArtifactNames('1.2.3');
    const artifacts = check(html, 'artifacts');
    expect(artifacts.ok).toBe('false');
    for (const name of names) expect(artifacts.text).toContain(name);
    expect(artifacts.href).toBe('/ui/netboot');

    const ipxeReady = (await ipxeBootFiles()).every((f) => f.present);
    const ipxe = check(html, 'ipxe');
    expect(ipxe.ok).toBe(String(ipxeReady));
    if (!ipxeReady) expect(ipxe.text).toContain("Debian's ipxe package");
    expect(ipxe.href).toBe('/ui/netboot');

    expect(check(html, 'catalog')).toMatchObject({ ok: 'true', href: '/ui/catalog' });
    const tftp = check(html, 'tftp');
    expect(tftp.ok).toBe('info');
    expect(tftp.text).toContain(
      'TFTP is not enabled here ([tftp] enabled): legacy PXE firmware needs a TFTP server',
    );
    expect(tftp.href).toBe('/ui/settings#cheatsheet');
    expect(check(html, 'password')).toMatchObject({ ok: 'true', href: '/ui/account' });
    const ready = (n: number) => new RegExp(`id="readiness-score"[^>]*>${n} / 4 ready<`);
    expect(html).toMatch(ready(2 + Number(ipxeReady)));

    // With the three artifacts in the boot folder, the row turns green.
    await mkdir(join(server.dir, 'boot'), { recursive: true });
    for (const name of names) await writeFile(join(server.dir, 'boot', name), 'x');
    html = await ui.page('/ui/dashboard');
    expect(check(html, 'artifacts').ok).toBe('true');
    expect(html).toMatch(ready(3 + Number(ipxeReady)));
  });
});

describe('GET /ui/dashboard with the default password and an empty catalog', () => {
  let server: UiServer;

  beforeAll(async () => {
    server = await startUiServer({ sessions: createSessions('ui-test-secret', '') });
  });
  afterAll(() => server.close());

  it('marks the password and catalog rows not ready, each with its fix link', async () => {
    const ui = new UiClient(server.base);
    expect((await ui.login('bty-lab')).status).toBe(303);
    const html = await ui.page('/ui/dashboard');
    const password = check(html, 'password');
    expect(password.ok).toBe('false');
    expect(password.text).toContain('still the default');
    expect(password.href).toBe('/ui/account');
    const catalog = check(html, 'catalog');
    expect(catalog.ok).toBe('false');
    expect(catalog.text).toContain('The catalog is empty');
  });
});
