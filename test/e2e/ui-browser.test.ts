/**
 * The operator console in a real browser: Debian's Chromium (headless, playwright-core) against
 * bin/bty-web with its SQLite database, driven the way an operator uses it — logging in, binding
 * an image and a disk with the keyboard only, watching a machine appear and flash live as
 * PXE-side requests arrive from outside the browser. Screenshots of every page land in
 * docs/screenshots/ (the README shows two of them).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeChromium, launchChromium, startBtyWeb, type WebProcess } from '../helpers/browser.ts';
import { startFaultServer } from '../helpers/fault-server.ts';

const PASSWORD = 'browser-test-password';
const SHOTS = new URL('../../docs/screenshots/', import.meta.url).pathname;
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
const WAIT = { timeout: 15_000 };

const MAC = '52:54:00:12:34:56';
const HEX = MAC.replaceAll(':', '');
const SERIAL = 'S3Z9NB0K123';
const IMAGE = 'debian-13-generic-amd64';

let web: WebProcess;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let catalogDir: string;

const CATALOG = `version = 1

[[images]]
name = "${IMAGE}"
src = "https://cloud.debian.org/images/cloud/trixie/latest/debian-13-generic-amd64.qcow2"
format = "qcow2"
arch = "x86_64"
size_bytes = 3221225472
sha256 = "${'ab'.repeat(32)}"
description = "Debian 13 (trixie) generic cloud image"

[[images]]
name = "ubuntu-24.04-server"
src = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
format = "qcow2"
arch = "x86_64"
sha256 = "${'cd'.repeat(32)}"
`;

/** What the PXE side sends: plain HTTP from outside the browser. */
async function pxe(path: string, body?: unknown): Promise<Response> {
  const res = await fetch(`${web.base}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status >= 300) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res;
}

async function shot(name: string, target: Page = page): Promise<void> {
  await target.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function login(target: Page): Promise<void> {
  await target.goto(`${web.base}/ui/login`);
  await target.fill('#password', PASSWORD);
  await target.press('#password', 'Enter');
  await target.waitForURL('**/ui/dashboard', WAIT);
}

beforeAll(async () => {
  catalogDir = await mkdtemp(join(tmpdir(), 'bty-ui-catalog-'));
  const catalog = join(catalogDir, 'catalog.toml');
  await writeFile(catalog, CATALOG);
  web = await startBtyWeb({ BTY_ADMIN_PASSWORD: PASSWORD, BTY_PATHS_CATALOG_FILE: catalog });
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  page = await context.newPage();
}, 60_000);

afterAll(async () => {
  await closeChromium(browser);
  await web?.stop(); // already stopped by the last test when it ran
  await rm(catalogDir, { recursive: true, force: true });
});

describe('signing in', () => {
  it('every page sends a stranger to the login page', async () => {
    for (const path of ['/ui/dashboard', '/ui/machines', '/ui/events', '/ui/settings']) {
      await page.goto(`${web.base}${path}`);
      expect(new URL(page.url()).pathname).toBe('/ui/login');
    }
  });

  it('a wrong password says so; the right one opens the dashboard; logout ends it', async () => {
    await page.goto(`${web.base}/ui/login`);
    await shot('login');
    await page.fill('#password', 'not-the-password');
    await page.press('#password', 'Enter');
    await page.waitForSelector('#login-error', WAIT);
    expect(await page.textContent('#login-error')).toContain('Invalid password.');
    await login(page);
    await page.click('form[action="/ui/logout"] button');
    await page.waitForURL('**/ui/login', WAIT);
    await page.goto(`${web.base}/ui/machines`);
    expect(new URL(page.url()).pathname).toBe('/ui/login');
    await login(page);
    // The connection indicator turns live once the SSE stream is open.
    await page.waitForSelector('#live-indicator[data-state="live"]', WAIT);
  });
});

describe('a fleet, live', () => {
  it('a machine that PXE-boots appears in the list without a reload', async () => {
    await page.goto(`${web.base}/ui/machines`);
    await page.waitForSelector('#live-indicator[data-state="live"]', WAIT);
    expect(await page.$(`tr[data-mac="${MAC}"]`)).toBeNull();
    await pxe(`/pxe/${MAC}`);
    await page.waitForSelector(`tr[data-mac="${MAC}"]`, WAIT);
  });

  it('binds an image and a target disk with the keyboard alone, through the gate', async () => {
    await pxe(`/pxe/${MAC}/inventory`, {
      disks: [
        {
          path: '/dev/nvme0n1',
          size: '500107862016',
          model: 'Samsung SSD 980',
          serial: SERIAL,
          tran: 'nvme',
        },
        {
          path: '/dev/sda',
          size: '32017047552',
          model: 'USB Stick',
          serial: null,
          tran: 'usb',
          removable: true,
        },
      ],
    });
    await page.goto(`${web.base}/ui/machines/${MAC}`);
    const before = await page.textContent('#next-boot');

    /** Tabs until the focused control is `name` (bounded), as a keyboard user would. */
    const tabTo = async (name: string) => {
      for (let i = 0; i < 80; i++) {
        await page.keyboard.press('Tab');
        const focused = await page.evaluate(() => {
          const el = document.activeElement as HTMLInputElement | null;
          return el?.getAttribute('name') ?? el?.id ?? '';
        });
        if (focused === name) return;
      }
      throw new Error(`could not tab to ${name}`);
    };
    const selectedText = (name: string) =>
      page.$eval(`[name="${name}"]`, (el) => {
        const s = el as HTMLSelectElement;
        return s.options[s.selectedIndex]?.text ?? '';
      });

    // Flash mode without a disk: refused with the gate banner, nothing stored.
    await page.focus('body');
    await tabTo('boot_mode');
    await page.keyboard.type('bty-flash-once');
    expect(await page.$eval('[name="boot_mode"]', (el) => (el as HTMLSelectElement).value)).toBe(
      'bty-flash-once',
    );
    await tabTo('bty_image_ref');
    await page.keyboard.type(IMAGE.slice(0, 8));
    expect(await selectedText('bty_image_ref')).toContain(IMAGE);
    await tabTo('labels');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#gate-banner', WAIT);
    expect(await page.textContent('#gate-banner')).toContain('requires a target disk');
    await shot('machine-gate');

    // Pick the disk (the serial-less USB stick cannot be picked) and save.
    await page.focus('body');
    await tabTo('target_disk_serial');
    await page.keyboard.type('/dev/nvme');
    expect(await selectedText('target_disk_serial')).toContain(SERIAL);
    await tabTo('labels');
    await page.keyboard.type('rack-7');
    await page.keyboard.press('Enter');
    await page.waitForLoadState('load');
    await page.waitForSelector('#next-boot', WAIT);
    const after = (await page.textContent('#next-boot')) ?? '';
    expect(after).not.toBe(before);
    expect(after).toContain(`flash ${IMAGE} onto ${SERIAL}`);
    expect(after).toContain('Samsung SSD 980');
    expect(await page.$('#gate-banner')).toBeNull();
    await shot('machine');
  });

  it('progress moves the bar live; a failure turns it red and counts on the dashboard', async () => {
    const dashboard = await context.newPage();
    await dashboard.goto(`${web.base}/ui/dashboard`);
    await dashboard.waitForSelector('#live-indicator[data-state="live"]', WAIT);
    const failedBefore = Number(await dashboard.textContent('#count-failed .count-value'));

    await page.goto(`${web.base}/ui/machines`);
    await page.waitForSelector('#live-indicator[data-state="live"]', WAIT);
    const GiB = 1024 ** 3;
    const bar = `#progress-${HEX}`;
    await pxe(`/pxe/${MAC}/progress`, {
      phase: 'write',
      bytes_done: GiB / 4,
      bytes_total: GiB,
      rate_bps: 120 * 1024 * 1024,
      eta_seconds: 7,
    });
    await page.waitForSelector(`${bar} [aria-valuenow="25"]`, WAIT);
    await pxe(`/pxe/${MAC}/progress`, {
      phase: 'write',
      bytes_done: (3 * GiB) / 4,
      bytes_total: GiB,
      rate_bps: 130 * 1024 * 1024,
    });
    await page.waitForSelector(`${bar} [aria-valuenow="75"]`, WAIT);
    expect(await page.textContent(bar)).toContain('130 MiB/s');
    await shot('machines');

    await pxe(`/pxe/${MAC}/status`, { status: 'failed', reason: 'sha256 mismatch at 768 MiB' });
    await page.waitForSelector(`${bar}[data-state="failed"]`, WAIT);
    expect(await page.textContent(bar)).toContain('sha256 mismatch');
    await dashboard.waitForFunction(
      (n) => Number(document.querySelector('#count-failed .count-value')?.textContent) === n,
      failedBefore + 1,
      WAIT,
    );
    await shot('dashboard', dashboard);
    await dashboard.close();
  });
});

describe('the audit log', () => {
  it('searches, pivots on a cell, and acknowledges a failure', async () => {
    await page.goto(`${web.base}/ui/events`);
    await page.fill('#event-search [name="q"]', MAC);
    await page.press('#event-search [name="q"]', 'Enter');
    await page.waitForURL(/q=/, WAIT);
    const kinds = await page.$$eval('#events-table tr[data-event-id]', (rows) =>
      rows.map((r) => r.getAttribute('data-kind')),
    );
    expect(kinds).toContain('machine.flash_failed');
    expect(kinds).toContain('machine.discovered');
    await shot('events');

    // Pivot: click the failure's kind cell; the search becomes that kind.
    await page.click('#events-table tr[data-kind="machine.flash_failed"] a.pivot');
    await page.waitForURL(/q=machine\.flash_failed/, WAIT);
    const pivoted = await page.$$eval('#events-table tr[data-event-id]', (rows) =>
      rows.map((r) => r.getAttribute('data-kind')),
    );
    expect(new Set(pivoted)).toEqual(new Set(['machine.flash_failed']));

    await page.click('#events-table tr[data-kind="machine.flash_failed"] button.ack');
    await page.waitForLoadState('load');
    await page.waitForSelector('#events-table tr[data-kind="machine.flash_failed"]', WAIT);
    expect(
      await page.$('#events-table tr[data-kind="machine.flash_failed"] button.ack'),
    ).toBeNull();
  });
});

describe('safety', () => {
  it('markup typed into a label, or reported by a machine, is shown as text and never runs', async () => {
    const evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
    await page.goto(`${web.base}/ui/machines/${MAC}`);
    await page.fill('[name="labels"]', evil);
    await page.press('[name="labels"]', 'Enter');
    // Labels allow letters, digits, space, dot, underscore and hyphen: the form comes back
    // with the error and the typed text, both as text.
    await page.waitForSelector('#form-error', WAIT);
    expect(await page.textContent('#form-error')).toContain('<script>');
    expect(await page.inputValue('[name="labels"]')).toBe(evil);

    // A disk model straight from the machine's inventory (no validation can help there).
    await pxe(`/pxe/${MAC}/inventory`, {
      disks: [
        { path: '/dev/nvme0n1', size: '500107862016', model: evil, serial: SERIAL, tran: 'nvme' },
      ],
    });
    await page.goto(`${web.base}/ui/machines/${MAC}`);
    expect(await page.textContent('body')).toContain('<script>window.__pwned=2</script>');
    expect(await page.$('img[src="x"]')).toBeNull();
    expect(await page.evaluate(() => (window as { __pwned?: number }).__pwned)).toBeUndefined();
  });

  it('a result banner cannot be put on a page by a link', async () => {
    await page.goto(`${web.base}/ui/machines?error=Session+expired%2C+log+in+at+evil.example`);
    expect(await page.textContent('main')).not.toContain('evil.example');
  });

  it('a form post without the CSRF token is refused and changes nothing', async () => {
    await page.goto(`${web.base}/ui/machines/${MAC}`);
    const status = await page.evaluate(async (mac) => {
      const res = await fetch(`/ui/machines/${mac}/delete`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: '',
      });
      return res.status;
    }, MAC);
    expect(status).toBe(403);
    await page.goto(`${web.base}/ui/machines/${MAC}`);
    expect(await page.textContent('h1')).toContain(MAC);
  });
});

describe('without JavaScript', () => {
  it('every page reads, and the machine form saves as a plain POST', async () => {
    const plain = await browser.newContext({
      javaScriptEnabled: false,
      viewport: { width: 1280, height: 860 },
    });
    const p = await plain.newPage();
    try {
      await login(p);
      for (const path of [
        '/ui/dashboard',
        '/ui/machines',
        '/ui/catalog',
        '/ui/events',
        '/ui/settings',
      ]) {
        await p.goto(`${web.base}${path}`);
        expect(await p.textContent('h1'), path).toBeTruthy();
      }
      await p.goto(`${web.base}/ui/machines`);
      expect(await p.$(`tr[data-mac="${MAC}"]`)).not.toBeNull();
      await p.goto(`${web.base}/ui/machines/${MAC}`);
      await p.fill('[name="labels"]', 'rack-7, no-js');
      await p.click('#machine-form button[type="submit"]');
      await p.waitForLoadState('load');
      expect(new URL(p.url()).pathname).toBe(`/ui/machines/${MAC}`);
      expect(await p.textContent('body')).toContain('Saved.');
      expect(await p.inputValue('[name="labels"]')).toBe('no-js, rack-7');
    } finally {
      await plain.close();
    }
  });
});

describe('the artifact cache', () => {
  it('Download on the Catalog page shows the progress live and ends cached', async () => {
    const image = randomBytes(1536 * 1024);
    const sha = createHash('sha256').update(image).digest('hex');
    const origin = await startFaultServer();
    // About four seconds: long enough to see the bar move.
    origin.serve('/rocky-9.img', { body: image }, { bytesPerSecond: 384 * 1024 });
    try {
      await page.goto(`${web.base}/ui/catalog`);
      await page.fill('#add-src', origin.urlFor('/rocky-9.img'));
      await page.fill('#add-name', 'rocky-9');
      await page.fill('#add-sha256', sha);
      await page.click('#add-entry button[type="submit"]');
      await page.waitForSelector('text=Added catalog entry rocky-9', WAIT);
      const row = 'tr:has(.entry-name:text-is("rocky-9"))';
      await page.waitForSelector(`${row} .cache-state[data-state="absent"]`, WAIT);
      await page.waitForSelector('#live-indicator[data-state="live"]', WAIT);
      await page.click(`${row} button.cache-download`);
      await page.waitForSelector(`${row} .cache-state[data-state="running"]`, WAIT);
      // From here on the page is not reloaded: the live 'cache' event refetches the table.
      await page.evaluate(() => ((window as unknown as { btyMarker: number }).btyMarker = 1));
      await page.waitForSelector(`${row} .cache-state[data-state="running"] [aria-valuenow]`, WAIT);
      await page.waitForSelector(`${row} .cache-state[data-state="cached"]`, { timeout: 30_000 });
      expect(
        await page.evaluate(() => (window as unknown as { btyMarker?: number }).btyMarker),
      ).toBe(1);
      expect(await page.textContent(`${row} .cache-state`)).toContain('1.50 MiB');
      expect(await page.textContent('#cache-usage')).toContain('1 cached');
    } finally {
      await origin.close();
    }
  });
});

describe('every page', () => {
  const PAGES: Array<[string, string]> = [
    ['dashboard', '/ui/dashboard'],
    ['machines-list', '/ui/machines'],
    ['machine-detail', `/ui/machines/${MAC}`],
    ['catalog', '/ui/catalog'],
    ['netboot', '/ui/netboot'],
    ['events-all', '/ui/events'],
    ['settings', '/ui/settings'],
    ['account', '/ui/account'],
  ];

  it('renders with no console error, has labelled controls and enough contrast (axe)', async () => {
    // axe is injected as a script: this context lets it past the page's CSP.
    const audit = await browser.newContext({
      bypassCSP: true,
      viewport: { width: 1280, height: 860 },
    });
    const p = await audit.newPage();
    const errors: string[] = [];
    p.on('console', (m) => {
      if (m.type() === 'error') errors.push(`${p.url()}: ${m.text()}`);
    });
    p.on('pageerror', (e) => errors.push(`${p.url()}: ${e.message}`));
    try {
      await login(p);
      for (const [, path] of PAGES) {
        await p.goto(`${web.base}${path}`);
        await p.addScriptTag({ path: AXE });
        const violations = await p.evaluate(async () => {
          const axe = (
            window as unknown as {
              axe: {
                run: (
                  ctx: Document,
                  opts: unknown,
                ) => Promise<{
                  violations: Array<{
                    id: string;
                    impact: string;
                    nodes: Array<{ target: string[] }>;
                  }>;
                }>;
              };
            }
          ).axe;
          const result = await axe.run(document, {
            runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa'] },
          });
          return result.violations.map(
            (v) =>
              `${v.id} (${v.impact}): ${v.nodes
                .map((n) => n.target.join(' '))
                .slice(0, 3)
                .join(', ')}`,
          );
        });
        expect(violations, path).toEqual([]);
      }
      expect(errors).toEqual([]);
    } finally {
      await audit.close();
    }
  });

  it('screenshots, light and dark', async () => {
    for (const [name, path] of PAGES) {
      await page.goto(`${web.base}${path}`);
      await shot(name);
    }
    const dark = await browser.newContext({
      colorScheme: 'dark',
      viewport: { width: 1280, height: 860 },
    });
    const p = await dark.newPage();
    await login(p);
    await p.goto(`${web.base}/ui/dashboard`);
    expect(await p.getAttribute('html', 'data-bs-theme')).toBe('dark');
    await shot('dashboard-dark', p);
    await dark.close();
  });
});

describe('deleting', () => {
  it('asks first: a dialog with JavaScript, a confirmation page without', async () => {
    const withJs = '52:54:00:00:de:01';
    const withoutJs = '52:54:00:00:de:02';
    await pxe(`/pxe/${withJs}`);
    await pxe(`/pxe/${withoutJs}`);

    await page.goto(`${web.base}/ui/machines/${withJs}`);
    page.once('dialog', (dialog) => void dialog.dismiss());
    await page.click('#delete-machine button[type="submit"]');
    expect(new URL(page.url()).pathname).toBe(`/ui/machines/${withJs}`);
    page.once('dialog', (dialog) => void dialog.accept());
    await page.click('#delete-machine button[type="submit"]');
    await page.waitForURL(/\/ui\/machines\?deleted=/, WAIT);
    expect(await page.$(`tr[data-mac="${withJs}"]`)).toBeNull();

    const plain = await browser.newContext({ javaScriptEnabled: false });
    const p = await plain.newPage();
    try {
      await login(p);
      await p.goto(`${web.base}/ui/machines/${withoutJs}`);
      await p.click('#delete-machine button[type="submit"]');
      await p.waitForSelector('#confirm-delete', WAIT);
      expect(await p.textContent('h1')).toContain(withoutJs);
      await p.click('#confirm-delete');
      await p.waitForURL(/\/ui\/machines\?deleted=/, WAIT);
      expect(await p.$(`tr[data-mac="${withoutJs}"]`)).toBeNull();
    } finally {
      await plain.close();
    }
  });
});

describe('shutdown', () => {
  it('bty-web stops cleanly on SIGTERM while tabs hold live connections', async () => {
    const tabs = [page, await context.newPage()];
    await tabs[1]!.goto(`${web.base}/ui/dashboard`);
    for (const tab of tabs) {
      await tab.goto(`${web.base}/ui/machines`);
      await tab.waitForSelector('#live-indicator[data-state="live"]', WAIT);
    }
    const { code, hung } = await web.stop();
    expect(hung).toBe(false);
    expect(code).toBe(0);
    // The tabs notice: their indicator leaves "live".
    await page.waitForSelector('#live-indicator:not([data-state="live"])', WAIT);
  });
});
