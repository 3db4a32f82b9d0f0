/**
 * The machine page over real HTTP: a machine discovered through `/pxe`, its inventory posted as
 * the live environment posts it, catalog entries added through the JSON API with the operator's
 * session, then the page read and its forms posted as a browser does. Also the next-boot words
 * for each offer `decideBootOffer` makes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decideBootOffer, type BootMachine } from '../../src/web/boot-offer.ts';
import { queryEvents } from '../../src/web/db/events.ts';
import { describeNextBoot } from '../../src/web/ui/next-boot.ts';
import { operator, startUiServer, UiClient, type UiServer } from '../helpers/ui.ts';
import { decodeEntities, hiddenFields, textOfId } from '../helpers/html.ts';

const DAY_MS = 86_400_000;
const T0 = Date.parse('2026-11-29T12:00:00.000Z');

let server: UiServer;
let op: UiClient;
/** The server's clock: tests move it to age an inventory. */
let clock = T0;
let macSeq = 0;

beforeAll(async () => {
  server = await startUiServer({ now: () => new Date(clock) });
  op = await operator(server);
});

afterAll(async () => {
  await server?.close();
});

/** A fresh MAC per test, so tests never see each other's machines. */
function nextMac(): string {
  macSeq += 1;
  return `52:54:00:aa:00:${macSeq.toString(16).padStart(2, '0')}`;
}

async function discover(mac: string): Promise<void> {
  const res = await fetch(`${server.base}/pxe/${mac}`);
  expect(res.status).toBe(200);
  await res.text();
}

const NVME = {
  path: '/dev/nvme0n1',
  size: '1000204886016',
  model: 'Samsung 980',
  serial: 'S3Z9NB0K123',
  tran: 'nvme',
  vendor: null,
  removable: false,
  readonly: false,
};
const STICK = {
  path: '/dev/sda',
  size: '16008609792',
  model: 'USB DISK',
  serial: null,
  tran: 'usb',
  removable: true,
};

function lshwFor(mac: string): unknown {
  return [
    {
      id: 'node',
      class: 'system',
      product: 'Standard PC (Q35 + ICH9, 2009)',
      vendor: 'QEMU',
      children: [
        {
          id: 'core',
          class: 'bus',
          children: [
            {
              id: 'cpu',
              class: 'processor',
              product: 'AMD EPYC 7302P 16-Core Processor',
              configuration: { cores: '16', threads: '32' },
            },
            {
              id: 'memory',
              class: 'memory',
              description: 'System Memory',
              size: 34359738368,
              units: 'bytes',
              children: [
                { id: 'bank:0', class: 'memory', size: 17179869184, units: 'bytes' },
                { id: 'bank:1', class: 'memory', size: 17179869184, units: 'bytes' },
              ],
            },
            {
              id: 'pci',
              class: 'bridge',
              children: [
                {
                  id: 'network',
                  class: 'network',
                  product: '82574L Gigabit Network Connection',
                  logicalname: 'enp1s0',
                  serial: mac,
                },
                {
                  id: 'network:1',
                  class: 'network',
                  product: 'Virtio network device',
                  logicalname: 'enp2s0',
                  serial: '02:00:00:00:00:99',
                },
                {
                  id: 'nvme',
                  class: 'storage',
                  children: [
                    {
                      id: 'disk',
                      class: 'disk',
                      product: 'Samsung SSD 980 1TB',
                      logicalname: '/dev/nvme0n1',
                      serial: 'S3Z9NB0K123',
                      size: 1000204886016,
                      units: 'bytes',
                    },
                  ],
                },
              ],
            },
          ],
        },
      ],
    },
  ];
}

async function postInventory(mac: string, withLshw = true): Promise<void> {
  const body: Record<string, unknown> = { disks: [NVME, STICK] };
  if (withLshw) body.lshw = lshwFor(mac);
  const res = await fetch(`${server.base}/pxe/${mac}/inventory`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(204);
}

/** The operator JSON API with the browser's session cookie. */
async function api(method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(server.base + path, {
    method,
    headers: {
      cookie: op.cookieHeader,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

let entrySeq = 0;
async function addEntry(name: string): Promise<string> {
  entrySeq += 1;
  const res = await api('POST', '/catalog/entries', {
    src: `https://images.example/${name}-${entrySeq}-amd64.img.zst`,
    name,
    size_bytes: 1_234_567_890,
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { ref: string }).ref;
}

async function machineJson(mac: string): Promise<Record<string, unknown> | null> {
  const res = await api('GET', `/machines/${mac}`);
  if (res.status === 404) return null;
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

async function eventKinds(mac: string): Promise<string[]> {
  const events = await queryEvents(server.database.db, { subjectId: mac, limit: 100 });
  return events.map((e) => e.kind);
}

/** The selected option's value of `<select name=…>`. */
function selected(html: string, name: string): string | null {
  const select = new RegExp(`<select[^>]*name="${name}"[^>]*>([\\s\\S]*?)</select>`).exec(html);
  if (!select) return null;
  const option = /<option([^>]*)\bselected\b[^>]*>/.exec(select[1]!);
  if (!option) return null;
  return /value="([^"]*)"/.exec(option[0])?.[1] ?? null;
}

function inputValue(html: string, name: string): string | null {
  const input = new RegExp(`<input[^>]*name="${name}"[^>]*>`).exec(html);
  if (!input) return null;
  return decodeEntities(/value="([^"]*)"/.exec(input[0])?.[1] ?? '');
}

describe('GET /ui/machines/:mac', () => {
  it('a malformed MAC is a 400 page that says what a MAC looks like', async () => {
    const html = await op.page('/ui/machines/not-a-mac', 400);
    expect(html).toContain('Invalid MAC address');
    expect(html).toContain('is not a MAC address');
    expect(html).not.toMatch(/at .*\.ts:\d+/);
  });

  it('an unknown MAC is a 404 page naming it, with a way back to the list', async () => {
    const html = await op.page('/ui/machines/52-54-00-FF-FF-01', 404);
    expect(html).toContain('no machine record for 52:54:00:ff:ff:01');
    expect(html).toMatch(/<a[^>]*href="\/ui\/machines"/);
  });

  it('without a session: 303 to the login page', async () => {
    const res = await new UiClient(server.base).get(`/ui/machines/${nextMac()}`);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/login');
  });

  it('a discovered machine: header, next boot, hardware, events, a labelled form', async () => {
    const mac = nextMac();
    await discover(mac);
    await postInventory(mac);
    const html = await op.page(`/ui/machines/${mac}`);
    expect(html).toContain(`data-copy="${mac}"`);
    expect(html).toContain('bty-inventory</span>');
    expect(textOfId(html, 'next-boot')).toBe(
      'next boot: live environment to report disks (bty-inventory)',
    );
    // Live refresh of the header when the stream names this machine.
    const hex = mac.replaceAll(':', '');
    expect(html).toContain(
      `hx-trigger="sse:machine-${hex} throttle:1s, sse:machine-${hex} delay:1500ms"`,
    );

    const hardware = textOfId(html, 'hardware');
    expect(hardware).toContain('AMD EPYC 7302P 16-Core Processor, 16 cores, 32 threads');
    expect(hardware).toContain('32.0 GiB in 2 modules');
    expect(hardware).toContain('enp1s0');
    expect(hardware).toContain('Samsung SSD 980 1TB');
    // Only the NIC whose MAC is the machine's gets the badge.
    expect(hardware.match(/this machine/g)).toHaveLength(1);
    expect(hardware.indexOf('this machine')).toBeGreaterThan(hardware.indexOf(mac));
    expect(hardware.indexOf('this machine')).toBeLessThan(hardware.indexOf('02:00:00:00:00:99'));
    expect(html).toContain(`href="/machines/${mac}/lshw.json"`);
    expect(html).toContain(`href="/machines/${mac}/disks.json"`);
    expect((await api('GET', `/machines/${mac}/lshw.json`)).status).toBe(200);

    const events = textOfId(html, 'machine-events');
    expect(events).toContain('machine.discovered');
    expect(events).toContain('machine.inventory');
    expect(html).toContain(`href="/ui/events?q=${encodeURIComponent(mac)}"`);

    // The disk picker: the inventory's disks, the serial-less one disabled.
    const picker = /<select[^>]*name="target_disk_serial"[\s\S]*?<\/select>/.exec(html)![0];
    expect(picker).toContain('value="S3Z9NB0K123"');
    expect(picker).toContain('/dev/nvme0n1 | 932 GiB | Samsung 980 | serial S3Z9NB0K123');
    expect(picker).toMatch(/<option value(="")? disabled>\/dev\/sda/);

    // Every control of the form has a <label for>.
    const form = /<form[^>]*id="machine-form"[\s\S]*?<\/form>/.exec(html)![0];
    expect(form).toMatch(/method="post"/);
    const ids = [...form.matchAll(/<(?:select|input)(?![^>]*type="hidden")[^>]*id="([^"]+)"/g)].map(
      (m) => m[1],
    );
    expect(ids.sort()).toEqual(
      ['boot_mode', 'bty_image_ref', 'labels', 'sanboot_drive', 'target_disk_serial'].sort(),
    );
    for (const id of ids) expect(form).toContain(`<label for="${id}"`);
    expect(form).toContain('pattern="^0x[0-9a-fA-F]{1,2}$"');
    expect(form).toContain('placeholder="0x80"');
    // Every mode with its one-line help.
    for (const mode of [
      'ipxe-exit',
      'bty-flash-always',
      'bty-flash-once',
      'bty-tui',
      'bty-inventory',
    ]) {
      expect(form).toContain(`<option value="${mode}"`);
    }
    expect(form).toContain('bty-flash-once — Flash the bound image onto the target disk once');
  });

  it('without lshw there is no hardware card; without inventory a serial text box and a warning', async () => {
    const mac = nextMac();
    await discover(mac);
    const html = await op.page(`/ui/machines/${mac}`);
    expect(html).not.toContain('id="hardware"');
    expect(html).toMatch(/<input[^>]*type="text"[^>]*id="target_disk_serial"/);
    expect(textOfId(html, 'target-disk-help')).toContain('No disk inventory exists yet');
  });

  it('the panel fragment is the header with the next-boot line', async () => {
    const mac = nextMac();
    await discover(mac);
    const res = await op.get(`/ui/machines/${mac}/panel`);
    expect(res.status).toBe(200);
    const html = await res.text();
    expect(html.startsWith('<section id="machine-panel"')).toBe(true);
    expect(textOfId(html, 'next-boot')).toContain('bty-inventory');
    const events = await (await op.get(`/ui/machines/${mac}/events`)).text();
    expect(events).toContain('id="machine-events"');
    expect(events).toContain('machine.discovered');
  });
});

describe('POST /ui/machines/:mac (the form)', () => {
  it('binding an image and a disk stores it, logs it, and the next-boot words follow', async () => {
    const mac = nextMac();
    await discover(mac);
    await postInventory(mac);
    const ref = await addEntry('debian-13');
    const before = await op.page(`/ui/machines/${mac}`);
    expect(textOfId(before, 'next-boot')).toBe(
      'next boot: live environment to report disks (bty-inventory)',
    );
    expect(before).toMatch(
      new RegExp(`<option value="${ref}"[^>]*>debian-13 \\(img.zst, 1.15 GiB, x86_64\\)`),
    );

    const res = await op.post(`/ui/machines/${mac}`, {
      boot_mode: 'bty-flash-once',
      bty_image_ref: ref,
      target_disk_serial: 'S3Z9NB0K123',
      sanboot_drive: '0x81',
      labels: 'rack-1, lab , rack-1',
    });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe(`/ui/machines/${mac}?saved=1`);

    const stored = await machineJson(mac);
    expect(stored).toMatchObject({
      boot_mode: 'bty-flash-once',
      bty_image_ref: ref,
      target_disk_serial: 'S3Z9NB0K123',
      sanboot_drive: '0x81',
      labels: ['lab', 'rack-1'],
    });
    const [latest] = await queryEvents(server.database.db, { subjectId: mac, limit: 1 });
    expect(latest).toMatchObject({ kind: 'machine.upserted', actor: 'operator' });
    expect(latest!.details).toMatchObject({
      policy_reset: true,
      target_disk_serial: 'S3Z9NB0K123',
    });

    const after = await op.page(`/ui/machines/${mac}?saved=1`);
    expect(after).toMatch(/class="alert alert-success"[^>]*>Saved\.</);
    expect(textOfId(after, 'next-boot')).toBe(
      'next boot: flash debian-13 onto S3Z9NB0K123 (Samsung 980)',
    );
    expect(after).not.toContain('id="gate-banner"');
    expect(selected(after, 'boot_mode')).toBe('bty-flash-once');
    expect(selected(after, 'bty_image_ref')).toBe(ref);
    expect(selected(after, 'target_disk_serial')).toBe('S3Z9NB0K123');
    expect(inputValue(after, 'labels')).toBe('lab, rack-1');
    expect(textOfId(after, 'machine-events')).toContain('machine.upserted');

    // The page's words are the offer /pxe/<mac> now makes.
    const script = await (await fetch(`${server.base}/pxe/${mac}`)).text();
    expect(script).toContain('S3Z9NB0K123');
  });

  it('a flash mode without a target disk is refused with the gate banner; nothing is written', async () => {
    const mac = nextMac();
    await discover(mac);
    await postInventory(mac);
    const ref = await addEntry('ubuntu-24.04');
    const kindsBefore = await eventKinds(mac);
    const res = await op.post(`/ui/machines/${mac}`, {
      boot_mode: 'bty-flash-always',
      bty_image_ref: ref,
      target_disk_serial: '',
      sanboot_drive: '',
      labels: 'web',
    });
    expect(res.status).toBe(422);
    const html = await res.text();
    const banner = /<div id="gate-banner" class="alert alert-danger"/.test(html);
    expect(banner).toBe(true);
    expect(textOfId(html, 'gate-banner')).toContain(
      'boot_mode=bty-flash-always requires a target disk; pick one from the Target disk dropdown',
    );
    // An inventory exists: no power-cycle advice needed.
    expect(textOfId(html, 'gate-banner')).not.toContain('power-cycle');
    // What the operator chose is still there.
    expect(selected(html, 'boot_mode')).toBe('bty-flash-always');
    expect(selected(html, 'bty_image_ref')).toBe(ref);
    expect(inputValue(html, 'labels')).toBe('web');
    // Nothing stored, nothing logged.
    expect(await machineJson(mac)).toMatchObject({
      boot_mode: 'bty-inventory',
      bty_image_ref: null,
      labels: [],
    });
    expect(await eventKinds(mac)).toEqual(kindsBefore);
  });

  it('without an inventory the refusal advises one power-cycle in bty-inventory mode', async () => {
    const mac = nextMac();
    await discover(mac);
    const res = await op.post(`/ui/machines/${mac}`, {
      boot_mode: 'bty-flash-once',
      bty_image_ref: '',
      target_disk_serial: '  ',
      sanboot_drive: '',
      labels: '',
    });
    expect(res.status).toBe(422);
    const banner = textOfId(await res.text(), 'gate-banner');
    expect(banner).toContain('boot_mode=bty-flash-once requires a target disk');
    expect(banner).toContain('power-cycle the machine once');
    expect(banner).toContain('bty-inventory');
  });

  it('a validation error re-renders with the error and every entered value kept', async () => {
    const mac = nextMac();
    await discover(mac);
    const res = await op.post(`/ui/machines/${mac}`, {
      boot_mode: 'ipxe-exit',
      bty_image_ref: '',
      target_disk_serial: 'TYPED-SERIAL',
      sanboot_drive: '0xzz',
      labels: 'keep-me, also',
    });
    expect(res.status).toBe(422);
    const html = await res.text();
    expect(textOfId(html, 'form-error')).toContain('Not saved: sanboot_drive:');
    expect(inputValue(html, 'sanboot_drive')).toBe('0xzz');
    expect(inputValue(html, 'labels')).toBe('keep-me, also');
    expect(inputValue(html, 'target_disk_serial')).toBe('TYPED-SERIAL');
    expect(selected(html, 'boot_mode')).toBe('ipxe-exit');
    expect(await machineJson(mac)).toMatchObject({
      boot_mode: 'bty-inventory',
      sanboot_drive: null,
    });
  });

  it('a label with <script> is refused and shown back as text, never as markup', async () => {
    const mac = nextMac();
    await discover(mac);
    const res = await op.post(`/ui/machines/${mac}`, {
      boot_mode: 'ipxe-exit',
      labels: '<script>alert(1)</script>',
    });
    expect(res.status).toBe(422);
    const html = await res.text();
    expect(html).not.toContain('<script>alert(1)');
    expect(html).toContain('value="&lt;script>alert(1)&lt;/script>"');
    expect(textOfId(html, 'form-error')).toContain('labels: "<script>alert(1)</script>"');
    expect((await machineJson(mac))!.labels).toEqual([]);
  });

  it('without the CSRF token: 403 and nothing changes', async () => {
    const mac = nextMac();
    await discover(mac);
    const res = await op.post(`/ui/machines/${mac}`, { boot_mode: 'ipxe-exit' }, { csrf: false });
    expect(res.status).toBe(403);
    expect((await machineJson(mac))!.boot_mode).toBe('bty-inventory');
  });

  it('a posted form for a machine with no record is a 404 page, nothing created', async () => {
    const mac = nextMac();
    const res = await op.post(`/ui/machines/${mac}`, { boot_mode: 'ipxe-exit' });
    expect(res.status).toBe(404);
    expect(await machineJson(mac)).toBeNull();
  });
});

describe('gate banners from the stored state', () => {
  it('flash mode without a target disk: banner, and the next boot exits to the local disk', async () => {
    const mac = nextMac();
    await discover(mac);
    const ref = await addEntry('fedora-41');
    // The JSON API does not apply the UI's gate, so this state can exist.
    const put = await api('PUT', `/machines/${mac}`, {
      boot_mode: 'bty-flash-once',
      bty_image_ref: ref,
    });
    expect(put.status).toBe(200);
    const html = await op.page(`/ui/machines/${mac}`);
    expect(html).toMatch(/<p[^>]*data-gate="flash-without-disk"/);
    expect(textOfId(html, 'gate-banner')).toContain('bty-flash-once has no target disk');
    expect(textOfId(html, 'next-boot')).toBe(
      'next boot: nothing to flash — flash mode without a target disk; the machine exits to its local disk',
    );
  });

  it('an orphan image: banner, a kept option, and the next boot says why nothing is flashed', async () => {
    const mac = nextMac();
    await discover(mac);
    await postInventory(mac, false);
    const ref = await addEntry('alpine-3.21');
    const put = await api('PUT', `/machines/${mac}`, {
      boot_mode: 'bty-flash-once',
      bty_image_ref: ref,
      target_disk_serial: 'S3Z9NB0K123',
    });
    expect(put.status).toBe(200);
    expect((await api('DELETE', `/catalog/entries/${ref}`)).status).toBe(204);
    const html = await op.page(`/ui/machines/${mac}`);
    expect(html).toMatch(/<p[^>]*data-gate="orphan-image"/);
    expect(textOfId(html, 'gate-banner')).toContain(
      `The bound image ${ref.slice(0, 12)}… is not in the catalog`,
    );
    expect(textOfId(html, 'next-boot')).toBe(
      `next boot: nothing to flash — the bound image ${ref.slice(0, 12)} is not in the catalog; ` +
        'the machine exits to its local disk',
    );
    // Saving the form unchanged keeps the binding rather than silently dropping it.
    expect(selected(html, 'bty_image_ref')).toBe(ref);
  });

  it('a target serial missing from the inventory, and an inventory older than 30 days', async () => {
    const mac = nextMac();
    await discover(mac);
    await postInventory(mac, false);
    const put = await api('PUT', `/machines/${mac}`, {
      boot_mode: 'ipxe-exit',
      target_disk_serial: 'GONE-123',
    });
    expect(put.status).toBe(200);
    let html = await op.page(`/ui/machines/${mac}`);
    expect(html).toMatch(/<div id="gate-banner" class="alert alert-warning"/);
    expect(html).toMatch(/<p[^>]*data-gate="target-not-in-inventory"/);
    expect(html).not.toContain('data-gate="stale-inventory"');
    expect(selected(html, 'target_disk_serial')).toBe('GONE-123');
    expect(textOfId(html, 'next-boot')).toBe('next boot: boot the local disk (ipxe-exit)');

    clock += 45 * DAY_MS;
    try {
      html = await op.page(`/ui/machines/${mac}`);
    } finally {
      clock = T0;
    }
    // The policy change cleared the inventory's time; its age comes from the inventory event.
    expect(html).toMatch(/<p[^>]*data-gate="stale-inventory"/);
    expect(textOfId(html, 'gate-banner')).toContain('The disk inventory is 45 days old');
    expect(html).toContain('data-inventory="stale"');
  });
});

describe('POST /ui/machines/:mac/delete', () => {
  it('with the token: deleted, logged, 303 to the list', async () => {
    const mac = nextMac();
    await discover(mac);
    const html = await op.page(`/ui/machines/${mac}`);
    expect(html).toMatch(
      new RegExp(`<form id="delete-machine" method="post" action="/ui/machines/${mac}/delete"`),
    );
    expect(html).toContain(`data-confirm="Delete the record of ${mac}?`);
    // Empty until the JavaScript dialog is accepted: without JavaScript the server asks.
    expect(hiddenFields(html, 'delete-machine').confirm).toBe('');
    const res = await op.post(`/ui/machines/${mac}/delete`, { confirm: '1' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe(`/ui/machines?deleted=${mac}`);
    expect(await machineJson(mac)).toBeNull();
    expect(await eventKinds(mac)).toContain('machine.deleted');
  });

  it('without confirm=1: a page saying what would go, nothing deleted', async () => {
    const mac = nextMac();
    await discover(mac);
    const ref = await addEntry('confirm-me');
    const bound = await api('PUT', `/machines/${mac}`, {
      bty_image_ref: ref,
      labels: ['rack-9', 'db'],
    });
    expect(bound.status).toBeLessThan(300);

    for (const fields of [{}, { confirm: '' }, { confirm: 'yes' }] as Record<string, string>[]) {
      const res = await op.post(`/ui/machines/${mac}/delete`, fields);
      expect(res.status).toBe(200);
      const html = await res.text();
      expect(html).toContain(`<title>Delete machine ${mac}? · bty</title>`);
      const summary = textOfId(html, 'delete-summary');
      expect(textOfId(html, 'delete-mac')).toBe(mac);
      expect(textOfId(html, 'delete-labels')).toBe('db, rack-9');
      expect(textOfId(html, 'delete-image')).toBe(`confirm-me (${ref})`);
      expect(summary).toContain('Its events stay in the audit log.');
      expect(html).toMatch(
        new RegExp(
          `<form id="confirm-delete-form" method="post" action="/ui/machines/${mac}/delete"`,
        ),
      );
      const form = hiddenFields(html, 'confirm-delete-form');
      expect(form.confirm).toBe('1');
      expect(form._csrf).toBeTruthy();
      expect(html).toMatch(/<button type="submit" id="confirm-delete" class="btn btn-danger/);
      expect(html).toMatch(
        new RegExp(`<a id="cancel-delete" class="[^"]*" href="/ui/machines/${mac}">Cancel</a>`),
      );
      expect(await machineJson(mac)).not.toBeNull();
      expect(await eventKinds(mac)).not.toContain('machine.deleted');
    }

    // The confirmation page's own form, posted as is, deletes.
    const page = await op.post(`/ui/machines/${mac}/delete`);
    const confirmed = await op.post(
      `/ui/machines/${mac}/delete`,
      hiddenFields(await page.text(), 'confirm-delete-form'),
      { csrf: false },
    );
    expect(confirmed.status).toBe(303);
    expect(confirmed.headers.get('location')).toBe(`/ui/machines?deleted=${mac}`);
    expect(await machineJson(mac)).toBeNull();
    expect(await eventKinds(mac)).toContain('machine.deleted');
  });

  it('the confirmation page of an unbound machine without labels says so', async () => {
    const mac = nextMac();
    await discover(mac);
    const res = await op.post(`/ui/machines/${mac}/delete`);
    expect(res.status).toBe(200);
    const html = await res.text();
    expect(textOfId(html, 'delete-labels')).toBe('none');
    expect(textOfId(html, 'delete-image')).toBe('none');
    expect(await machineJson(mac)).not.toBeNull();
  });

  it('without the token: 403 and the record stays', async () => {
    const mac = nextMac();
    await discover(mac);
    const res = await op.post(`/ui/machines/${mac}/delete`, { confirm: '1' }, { csrf: false });
    expect(res.status).toBe(403);
    expect(await machineJson(mac)).not.toBeNull();
    expect(await eventKinds(mac)).not.toContain('machine.deleted');
  });

  it.each([
    ['confirmed', { confirm: '1' }],
    ['unconfirmed (nothing to confirm)', {}],
  ])('an unknown machine, %s: 303 to the list with the error', async (_what, fields) => {
    const mac = nextMac();
    const res = await op.post(`/ui/machines/${mac}/delete`, fields);
    expect(res.status).toBe(303);
    const location = res.headers.get('location')!;
    expect(location.startsWith('/ui/machines?error=')).toBe(true);
    expect(new URL(location, server.base).searchParams.get('error')).toContain(
      `no machine record for ${mac}`,
    );
    expect(await eventKinds(mac)).toEqual([]);
  });
});

describe('describeNextBoot: the words for each offer', () => {
  const machine = (over: Partial<BootMachine>): BootMachine => ({
    mac: '52:54:00:00:00:01',
    boot_mode: 'ipxe-exit',
    bty_image_ref: null,
    target_disk_serial: null,
    sanboot_drive: null,
    saw_flasher_boot: false,
    armed_at: null,
    last_flashed_at: null,
    known_disks_at: null,
    ...over,
  });
  const REF = 'ab'.repeat(32);
  const entry = { name: 'debian-13', ref: REF };
  const disks = [{ serial: 'S3Z9NB0K123', model: 'Samsung 980' }];
  const words = (m: BootMachine, e: typeof entry | null = null) =>
    describeNextBoot(decideBootOffer(m, e, new Date(T0)).offer, m.boot_mode, disks).text;

  it.each([
    [{ boot_mode: 'ipxe-exit' }, null, 'next boot: boot the local disk (ipxe-exit)'],
    [
      { boot_mode: 'ipxe-exit', sanboot_drive: '0x81' },
      null,
      'next boot: boot the local disk, drive 0x81 (ipxe-exit)',
    ],
    [
      { boot_mode: 'bty-inventory' },
      null,
      'next boot: live environment to report disks (bty-inventory)',
    ],
    [
      { boot_mode: 'bty-tui' },
      null,
      'next boot: live environment with the interactive wizard (bty-tui)',
    ],
    [
      { boot_mode: 'bty-flash-once', bty_image_ref: REF, target_disk_serial: 'S3Z9NB0K123' },
      entry,
      'next boot: flash debian-13 onto S3Z9NB0K123 (Samsung 980)',
    ],
    [
      { boot_mode: 'bty-flash-always', bty_image_ref: REF, target_disk_serial: 'OTHER' },
      entry,
      'next boot: flash debian-13 onto OTHER (not in the last inventory)',
    ],
    [
      { boot_mode: 'bty-flash-once', bty_image_ref: REF },
      entry,
      'next boot: nothing to flash — flash mode without a target disk; the machine exits to its local disk',
    ],
    [
      { boot_mode: 'bty-flash-once', bty_image_ref: REF, target_disk_serial: 'S3Z9NB0K123' },
      null,
      `next boot: nothing to flash — the bound image ${REF.slice(0, 12)} is not in the catalog; the machine exits to its local disk`,
    ],
    [
      { boot_mode: 'bty-flash-once' },
      null,
      'next boot: nothing to flash — bty-flash-once without an image; the machine boots its local disk (drive 0x80)',
    ],
    [
      { boot_mode: 'ramboot' },
      null,
      'next boot: boot the local disk (drive 0x80) — mode "ramboot" is not handled by this server',
    ],
  ] as Array<[Partial<BootMachine>, typeof entry | null, string]>)('%o', (over, e, text) => {
    expect(words(machine(over), e)).toBe(text);
  });

  it('the cycle: a finished flash boots the disk; a crashed one flashes again', () => {
    const armed = new Date(T0 - 60_000);
    const bound = {
      bty_image_ref: REF,
      target_disk_serial: 'S3Z9NB0K123',
      saw_flasher_boot: true,
      armed_at: armed,
    };
    expect(
      words(
        machine({ ...bound, boot_mode: 'bty-flash-once', last_flashed_at: new Date(T0) }),
        entry,
      ),
    ).toBe('next boot: boot the freshly flashed local disk (bty-flash-once is done)');
    expect(
      words(
        machine({ ...bound, boot_mode: 'bty-flash-always', last_flashed_at: new Date(T0) }),
        entry,
      ),
    ).toContain('the boot after it flashes again (bty-flash-always)');
    expect(words(machine({ ...bound, boot_mode: 'bty-flash-once' }), entry)).toBe(
      'next boot: flash debian-13 onto S3Z9NB0K123 (Samsung 980) — again: the last flash never reported done',
    );
    expect(
      words(
        machine({
          boot_mode: 'bty-inventory',
          saw_flasher_boot: true,
          armed_at: armed,
          known_disks_at: new Date(T0),
        }),
      ),
    ).toContain('next boot: boot the local disk — the inventory is done');
  });
});
