/**
 * The browser UI's frame over real HTTP: the session gate on every page, login and logout as a
 * browser does them, the CSRF token, the vendored static files, the security headers, and the
 * live HTML stream (`/ui/live`) htmx's SSE extension consumes.
 */
import { rm } from 'node:fs/promises';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSessions } from '../../src/web/session.ts';
import { STATIC_NAMES } from '../../src/web/ui/assets.ts';
import { htmlFrame, PROGRESS_PER_FLUSH } from '../../src/web/ui/live.ts';
import { operator, startUiServer, UiClient, UI_PASSWORD, type UiServer } from '../helpers/ui.ts';

let server: UiServer;

beforeAll(async () => {
  server = await startUiServer();
});

afterAll(async () => {
  await server?.close();
});

const PAGES = [
  '/ui/dashboard',
  '/ui/machines',
  '/ui/machines/aa:bb:cc:dd:ee:ff',
  '/ui/catalog',
  '/ui/netboot',
  '/ui/events',
  '/ui/settings',
  '/ui/account',
];

describe('the session gate', () => {
  it.each(PAGES)('GET %s without a session: 303 to the login page', async (path) => {
    const res = await new UiClient(server.base).get(path);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/login');
  });

  it('htmx fragment requests are told to go to the login page; the live stream is 401', async () => {
    const res = await new UiClient(server.base).get('/ui/machines/rows', { 'hx-request': 'true' });
    expect(res.status).toBe(401);
    expect(res.headers.get('hx-redirect')).toBe('/ui/login');
    const live = await new UiClient(server.base).get('/ui/live');
    expect(live.status).toBe(401);
  });

  it('a form post without a session goes to the login page and changes nothing', async () => {
    const res = await new UiClient(server.base).post('/ui/machines', { mac: 'aa:bb:cc:00:00:01' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/login');
  });

  it('/ and /ui lead to the login page, or to the dashboard with a session', async () => {
    const anon = new UiClient(server.base);
    expect((await anon.get('/')).headers.get('location')).toBe('/ui/login');
    const op = await operator(server);
    expect((await op.get('/')).headers.get('location')).toBe('/ui/dashboard');
    expect((await op.get('/ui')).headers.get('location')).toBe('/ui/dashboard');
    expect((await op.get('/ui/login')).headers.get('location')).toBe('/ui/dashboard');
  });
});

describe('login and logout in a browser', () => {
  it('the login page: a password form and the default-password warning', async () => {
    const client = new UiClient(server.base);
    const html = await client.page('/ui/login');
    expect(html).toMatch(/<form method="post" action="\/ui\/login"/);
    expect(html).toMatch(/<input type="password" id="password" name="password"/);
    expect(html).toContain('<label for="password"');
    // No form token for a stranger: it is signed for logged-in browsers only.
    expect(client.csrf).toBe('');
    // This server has a real password: no warning.
    expect(html).not.toContain('id="default-password"');

    const weak = await startUiServer({
      sessions: (await import('../../src/web/session.ts')).createSessions('s', ''),
    });
    try {
      const page = await new UiClient(weak.base).page('/ui/login');
      expect(page).toContain('id="default-password"');
      const op = new UiClient(weak.base);
      expect((await op.login('bty-lab')).status).toBe(303);
      // Every page warns while the default is in use.
      expect(await op.page('/ui/account')).toContain('id="default-password"');
    } finally {
      await weak.close();
    }
  });

  it('a wrong password shows the form again with the error, and no session', async () => {
    const client = new UiClient(server.base);
    const res = await client.login('not-it');
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await res.text();
    expect(html).toContain('Invalid password.');
    expect(html).toContain('is-invalid');
    expect(client.cookieHeader).not.toContain('bty-token');
    expect((await client.get('/ui/dashboard')).status).toBe(303);
  });

  it('the right password: 303 to the dashboard with the session; logout needs the token', async () => {
    const client = new UiClient(server.base);
    const res = await client.login(UI_PASSWORD);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/dashboard');
    expect(client.cookieHeader).toContain('bty-token=');
    expect((await client.get('/ui/dashboard')).status).toBe(200);

    // A logout forged by another site (no token) is refused; the session stays.
    const forged = await client.post('/ui/logout', {}, { csrf: false });
    expect(forged.status).toBe(403);
    expect(await forged.text()).toContain('nothing was changed');
    expect((await client.get('/ui/dashboard')).status).toBe(200);

    const out = await client.post('/ui/logout');
    expect(out.status).toBe(303);
    expect(out.headers.get('location')).toBe('/ui/login');
    expect(client.cookieHeader).not.toContain('bty-token');
    expect((await client.get('/ui/dashboard')).status).toBe(303);
  });

  it('the account page says where the password comes from and how sessions end', async () => {
    const html = await (await operator(server)).page('/ui/account');
    expect(html).toContain('BTY_ADMIN_PASSWORD');
    expect(html).toContain('session-secret');
    expect(html).toContain('7 days');
  });
});

describe('CSRF', () => {
  it('each login hands out a new signed token', async () => {
    const client = new UiClient(server.base);
    await client.login();
    const first = client.csrf;
    expect(first).toMatch(/^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/);
    // Pages keep the browser's token...
    await client.page('/ui/account');
    expect(client.csrf).toBe(first);
    // ...and the next login replaces it.
    await client.login();
    expect(client.csrf).not.toBe(first);
  });

  it('a token planted in the cookie (unsigned, or signed by another server) is refused', async () => {
    const alice = await operator(server);
    const session = alice.cookieHeader.split('; ').find((c) => c.startsWith('bty-token='))!;
    const other = createSessions('some-other-secret', 'x');
    const nonce = 'A'.repeat(22);
    const planted = [
      'B'.repeat(43),
      `${nonce}.${'C'.repeat(43)}`,
      `${nonce}.${other.sign('csrf', nonce)}`,
    ];
    for (const token of planted) {
      const res = await fetch(`${server.base}/ui/logout`, {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie: `${session}; bty-csrf=${token}`, 'x-csrf-token': token },
      });
      expect(res.status, token).toBe(403);
    }
    // The same recipe with this server's signature is a token (so the refusals above are real).
    const ours = `${nonce}.${createSessions('ui-test-secret', 'x').sign('csrf', nonce)}`;
    const res = await fetch(`${server.base}/ui/logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: `${session}; bty-csrf=${ours}`, 'x-csrf-token': ours },
    });
    expect(res.status).toBe(303);
  });

  it('a token from another browser, or none, is refused with 403', async () => {
    const alice = await operator(server);
    const mallory = await operator(server);
    expect(alice.csrf).not.toBe(mallory.csrf);
    const res = await fetch(`${server.base}/ui/logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        cookie: alice.cookieHeader,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: `_csrf=${mallory.csrf}`,
    });
    expect(res.status).toBe(403);
    // The htmx header form of the token is accepted.
    const viaHeader = await fetch(`${server.base}/ui/logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: alice.cookieHeader, 'x-csrf-token': alice.csrf },
    });
    expect(viaHeader.status).toBe(303);
  });

  it('every form on a page carries the token, and htmx sends it as a header', async () => {
    const client = await operator(server);
    const html = await client.page('/ui/account');
    const forms = html.match(/<form method="post"[\s\S]*?<\/form>/g) ?? [];
    expect(forms.length).toBeGreaterThan(0);
    for (const form of forms) expect(form).toContain(`name="_csrf" value="${client.csrf}"`);
    expect(html).toContain(`hx-headers="{&quot;X-CSRF-Token&quot;:&quot;${client.csrf}&quot;}"`);
  });
});

describe('security headers', () => {
  it('pages are not cached, not framed, and run only our own scripts', async () => {
    const res = await (await operator(server)).get('/ui/account');
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    const html = await res.text();
    // No inline script anywhere: every <script> has a src under /static.
    for (const tag of html.match(/<script[^>]*>/g) ?? []) {
      expect(tag).toMatch(/ src="\/static\/[a-z.-]+\.js"/);
    }
  });
});

describe('static files', () => {
  it.each(STATIC_NAMES)('/static/%s: 200 with a type and an ETag, then 304', async (name) => {
    const res = await fetch(`${server.base}/static/${name}`);
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    expect(body.length).toBeGreaterThan(100);
    expect(res.headers.get('content-type')).toMatch(/^(text\/(css|javascript)|font\/|image\/)/);
    const etag = res.headers.get('etag')!;
    const again = await fetch(`${server.base}/static/${name}`, {
      headers: { 'if-none-match': etag },
    });
    expect(again.status).toBe(304);
  });

  it('the pages reference only files /static serves, and the icon font is reachable', async () => {
    const html = await (await operator(server)).page('/ui/account');
    const refs = [...html.matchAll(/(?:href|src)="\/static\/([^"]+)"/g)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThan(5);
    for (const ref of refs) expect(STATIC_NAMES).toContain(ref);
    const css = await (await fetch(`${server.base}/static/bootstrap-icons.min.css`)).text();
    const font = /url\("(fonts\/bootstrap-icons\.woff2)\?/.exec(css)![1]!;
    expect((await fetch(`${server.base}/static/${font}`)).status).toBe(200);
  });

  it('nothing else on disk is reachable', async () => {
    for (const path of [
      '/static/../package.json',
      '/static/%2e%2e/package.json',
      '/static/bootstrap.css',
      '/static/',
      '/static/fonts/../../package.json',
    ]) {
      const res = await fetch(`${server.base}${path}`);
      expect(res.status, path).toBe(404);
    }
  });
});

/** Reads `/ui/live` until `want` frames named in `names` arrived (bounded by `ms`). */
function readLive(
  client: UiClient,
  until: string[] | ((frames: Array<{ event: string; data: string }>) => boolean),
  ms: number,
  onOpen: () => Promise<void>,
): Promise<Array<{ event: string; data: string }>> {
  return new Promise((resolve, reject) => {
    const frames: Array<{ event: string; data: string }> = [];
    const req = request(`${server.base}/ui/live`, {
      headers: { cookie: client.cookieHeader },
      agent: false,
    });
    const timer = setTimeout(() => {
      req.destroy();
      resolve(frames);
    }, ms);
    req.on('response', (res) => {
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          if (!event) continue;
          const data = [...block.matchAll(/^data: (.*)$/gm)].map((m) => m[1]).join('\n');
          frames.push({ event, data });
          const done = Array.isArray(until)
            ? until.every((n) => frames.some((f) => f.event === n))
            : until(frames);
          if (done) {
            clearTimeout(timer);
            req.destroy();
            resolve(frames);
          }
        }
      });
      onOpen().catch(reject);
    });
    req.on('error', () => {});
    req.end();
  });
}

describe('/ui/live', () => {
  type Frame = { event: string; data: string };
  const GiB = 1024 ** 3;
  const bars = (frames: Frame[]) =>
    frames
      .filter((f) => f.event === 'progress')
      .flatMap((f) => f.data.match(/<div id="progress-[^"]+"[^>]*>/g) ?? []);

  it('every kind of line break starts a new data line', () => {
    expect(htmlFrame('x', 'a\nb')).toBe('event: x\ndata: a\ndata: b\n\n');
    expect(htmlFrame('x', 'a\r\nb\rc')).toBe('event: x\ndata: a\ndata: b\ndata: c\n\n');
  });

  it('progress arrives as the rendered bar; a burst of changes is one refresh trigger', async () => {
    const client = await operator(server);
    const mac = '52:54:00:aa:bb:01';
    const frames = await readLive(client, ['progress', 'machines'], 5000, () => {
      for (let i = 0; i < 50; i++) server.bus.publish({ type: 'machine', mac, change: 'seen' });
      for (let done = 1; done <= 4; done++) {
        server.bus.publish({
          type: 'progress',
          mac,
          phase: 'write',
          bytes_done: (done * GiB) / 4,
          bytes_total: GiB,
          rate_bps: 100 * 1024 * 1024,
          eta_seconds: 65,
        });
      }
      return Promise.resolve();
    });
    const progress = frames.filter((f) => f.event === 'progress');
    // Coalesced: the newest state only (100 %), rendered as the component.
    expect(progress).toHaveLength(1);
    expect(bars(frames)).toHaveLength(1);
    expect(progress[0]!.data).toContain('id="progress-525400aabb01"');
    expect(progress[0]!.data).toContain('aria-valuenow="100"');
    expect(progress[0]!.data).toContain('100 MiB/s');
    expect(progress[0]!.data).toContain('ETA 1:05');
    expect(frames.filter((f) => f.event === 'machines')).toHaveLength(1);
    expect(frames.some((f) => f.event === 'machine-525400aabb01')).toBe(true);
  });

  it('a flash starting is a `machines` trigger; its later reports move only the bar', async () => {
    const client = await operator(server);
    const mac = '52:54:00:aa:bb:03';
    const report = (done: number) =>
      server.bus.publish({
        type: 'progress',
        mac,
        phase: 'write',
        bytes_done: done,
        bytes_total: 100,
        rate_bps: 1,
      });
    let step = 0;
    const frames = await readLive(
      client,
      (seen) => seen.filter((f) => f.event === 'progress').length >= 2,
      5000,
      async () => {
        report(10);
        await new Promise((r) => setTimeout(r, 600));
        step = 1;
        report(50);
      },
    );
    expect(step).toBe(1);
    const first = frames.findIndex((f) => f.event === 'progress');
    expect(frames.slice(0, first + 1).some((f) => f.event === 'machines')).toBe(true);
    expect(frames.slice(first + 1).some((f) => f.event === 'machines')).toBe(false);
  });

  it('a fleet reporting at once is sent in bounded frames, oldest first, none lost', async () => {
    const client = await operator(server);
    const n = PROGRESS_PER_FLUSH + 60;
    const macOf = (i: number) =>
      `52:54:01:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
    const frames = await readLive(
      client,
      (seen) => bars(seen).length >= n,
      8000,
      () => {
        for (let i = 0; i < n; i++) {
          server.bus.publish({
            type: 'progress',
            mac: macOf(i),
            phase: 'write',
            bytes_done: i,
            bytes_total: n,
            rate_bps: 1,
          });
        }
        return Promise.resolve();
      },
    );
    const progress = frames.filter((f) => f.event === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(2);
    for (const f of progress) expect(bars([f]).length).toBeLessThanOrEqual(PROGRESS_PER_FLUSH);
    const ids = bars(frames).map((b) => /id="progress-([0-9a-f]+)"/.exec(b)![1]);
    expect(ids).toHaveLength(n);
    expect(ids[0]).toBe(macOf(0).replaceAll(':', ''));
    expect(new Set(ids).size).toBe(n);
  });

  it('a failed status turns the bar red with the reason, escaped, in its own frame', async () => {
    const client = await operator(server);
    const mac = '52:54:00:aa:bb:02';
    const reason = 'sha256 <mismatch>\revent: progress-aabbccddeeff\rdata: x';
    const frames = await readLive(client, ['progress'], 5000, () => {
      server.bus.publish({ type: 'status', mac, status: 'failed', reason });
      return Promise.resolve();
    });
    const bar = frames.find((f) => f.event === 'progress')!.data;
    expect(bar).toContain('data-state="failed"');
    expect(bar).toContain('bg-danger');
    // Escaped by the renderer (`>` needs no escaping in text).
    expect(bar).toContain('sha256 &lt;mismatch>');
    expect(bar).not.toContain('<mismatch');
    // The carriage returns in the machine's text did not start a frame of their own.
    expect(frames.map((f) => f.event)).not.toContain('progress-aabbccddeeff');
  });

  it('a new audit event is an `events` trigger', async () => {
    const client = await operator(server);
    const frames = await readLive(client, ['events'], 5000, () => {
      server.bus.publish({
        type: 'event',
        id: 42,
        kind: 'machine.discovered',
        summary: 's',
        subject_id: null,
      });
      return Promise.resolve();
    });
    expect(frames.find((f) => f.event === 'events')!.data).toBe('42');
  });

  it('an acknowledgement is an `events` trigger too (other tabs drop the failure)', async () => {
    const client = await operator(server);
    const frames = await readLive(client, ['events'], 5000, () => {
      server.bus.publish({ type: 'ack', ids: [7], acknowledged: true });
      return Promise.resolve();
    });
    expect(frames.find((f) => f.event === 'events')!.data).toBe('ack');
  });
});

describe('errors are pages, never stack traces', () => {
  it('an unknown console address is a 404 page; scripts still get JSON', async () => {
    const client = await operator(server);
    const res = await client.get('/ui/no-such-page');
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await res.text()).toContain('There is no page at /ui/no-such-page.');
    const json = await fetch(`${server.base}/ui/no-such-page`);
    expect(json.status).toBe(404);
    expect(await json.json()).toEqual({ detail: 'no route for GET /ui/no-such-page' });
  });

  it('a failure inside a page says so without internals; a refused request says why', async () => {
    const broken = await startUiServer();
    try {
      const client = await operator(broken);
      const lines: string[] = [];
      const write = process.stderr.write.bind(process.stderr);
      process.stderr.write = (chunk: string | Uint8Array): boolean => {
        lines.push(String(chunk));
        return true;
      };
      let res: Response;
      try {
        // The database goes away under the running server.
        await broken.database.close();
        res = await client.get('/ui/dashboard');
      } finally {
        process.stderr.write = write;
      }
      expect(res.status).toBe(500);
      const html = await res.text();
      expect(html).toContain('the details are in its log');
      expect(html).not.toMatch(/ at .*\.(ts|js):\d+/);
      expect(html).not.toMatch(/Error:|sqlite|kysely/i);
      // The operator's log has the detail.
      expect(lines.join('')).toMatch(/GET \/ui\/dashboard failed: /);

      const tooBig = await broken.app.inject({
        method: 'POST',
        url: '/ui/machines',
        headers: {
          cookie: client.cookieHeader,
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'text/html',
        },
        payload: `mac=${'a'.repeat(2 << 20)}`,
      });
      expect(tooBig.statusCode).toBe(413);
      expect(tooBig.headers['content-type']).toMatch(/^text\/html/);
      expect(tooBig.body).toContain('The request was refused');
    } finally {
      await broken.app.close();
      await rm(broken.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    }
  });
});

describe('result banners', () => {
  it('come only from the console itself, never from a link elsewhere', async () => {
    const client = await operator(server);
    const url = '/ui/machines?error=Your+session+expired%2C+log+in+at+evil.example';
    const text = 'Your session expired, log in at evil.example';
    for (const [site, shown] of [
      ['same-origin', true],
      [undefined, true],
      ['cross-site', false],
      ['same-site', false],
      ['none', false],
    ] as const) {
      const res = await client.get(url, site ? { 'sec-fetch-site': site } : {});
      expect(res.status).toBe(200);
      expect((await res.text()).includes(text), String(site)).toBe(shown);
    }
  });
});
