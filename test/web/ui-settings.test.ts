/**
 * The Settings page over real HTTP: the effective configuration (values, sources, redaction)
 * from a real loadConfig(), the defaults without one, and the DHCP / PXE cheatsheet filled in
 * with this host's addresses, the configured port and the browser's Host header.
 */
import { request } from 'node:http';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG_SCHEMA, loadConfig, type LoadedConfig } from '../../src/web/config.ts';
import { ipxeBootFiles } from '../../src/web/netboot-files.ts';
import { dnsmasqSnippet } from '../../src/web/ui/cheatsheet.ts';
import { operator, startUiServer, type UiClient, type UiServer } from '../helpers/ui.ts';
import { decodeEntities } from '../helpers/html.ts';

const ADMIN_PASSWORD = 's3cret-admin-pw';
const DB_PASSWORD = 'db-pa55word';
const SESSION_SECRET = 'sess-secret-xyz-123';

interface Row {
  source: string;
  /** The value cell's text, decoded (`(empty)` for an empty value). */
  value: string;
  html: string;
}

/** Rows of the config table by `section.key`. */
function configRows(html: string): Map<string, Row> {
  const table = /<table[^>]*id="config-table"[\s\S]*?<\/table>/.exec(html)?.[0] ?? '';
  const rows = new Map<string, Row>();
  for (const m of table.matchAll(
    /<tr data-key="([^"]+)" data-source="([^"]+)">([\s\S]*?)<\/tr>/g,
  )) {
    const cell = /<td>([\s\S]*?)<\/td>/.exec(m[3]!)?.[1] ?? '';
    rows.set(m[1]!, {
      source: m[2]!,
      value: decodeEntities(cell.replace(/<[^>]+>/g, '')),
      html: m[3]!,
    });
  }
  return rows;
}

/** The text of a snippet block as the page shows it (entities decoded). */
function snippetText(html: string, server: string): string {
  const block = new RegExp(
    `id="cheatsheet-${server}"[\\s\\S]*?<pre class="cheatsheet[^"]*"><code>([\\s\\S]*?)</code></pre>`,
  ).exec(html);
  return decodeEntities(block?.[1] ?? '');
}

/** A GET with a chosen Host header (fetch does not let a caller set Host). */
function getWithHost(
  server: UiServer,
  client: UiClient,
  path: string,
  host: string,
): Promise<string> {
  const url = new URL(server.base + path);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path,
        headers: { host, cookie: client.cookieHeader, accept: 'text/html' },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () =>
          res.statusCode === 200
            ? resolve(body)
            : reject(new Error(`${res.statusCode}: ${body.slice(0, 200)}`)),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** This host's first IPv4 address outside loopback, as the page should pick it. */
function firstHostIpv4(): string | undefined {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

describe('settings page with a loaded configuration', () => {
  let dir: string;
  let tomlFile: string;
  let loaded: LoadedConfig;
  let server: UiServer;
  let client: UiClient;
  let html: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bty-ui-settings-'));
    tomlFile = join(dir, 'bty.toml');
    await writeFile(
      tomlFile,
      [
        '[server]',
        'port = 9090',
        `session_secret = "${SESSION_SECRET}"`,
        '[admin]',
        `password = "${ADMIN_PASSWORD}"`,
        '[database]',
        `url = "postgres://bty:${DB_PASSWORD}@db.example/bty"`,
        '[paths]',
        'boot_dir = "/srv/bty/boot"',
        '[nonsense]',
        'x = 1',
        '',
      ].join('\n'),
    );
    loaded = await loadConfig({
      configPaths: [tomlFile, join(dir, 'missing.d')],
      env: { BTY_SERVER_PORT: '18080', BTY_TUNING_BACKUP_MAX_PARALLEL: '3' },
      overrides: { server: { host: '127.0.0.1' } },
    });
    server = await startUiServer({ config: loaded });
    client = await operator(server);
    html = await client.page('/ui/settings');
  });

  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('has one row per schema key', () => {
    const expected = Object.entries(CONFIG_SCHEMA).flatMap(([section, fields]) =>
      Object.keys(fields).map((key) => `${section}.${key}`),
    );
    expect([...configRows(html).keys()]).toEqual(expected);
  });

  it('gives each value its source: the file, the variable, the command line or the default', () => {
    const rows = configRows(html);
    expect(rows.get('server.port')?.source).toBe('env:BTY_SERVER_PORT');
    expect(rows.get('server.port')?.value).toBe('18080');
    expect(rows.get('tuning.backup_max_parallel')?.source).toBe(
      'env:BTY_TUNING_BACKUP_MAX_PARALLEL',
    );
    expect(rows.get('paths.boot_dir')?.source).toBe(`toml:${tomlFile}`);
    expect(rows.get('paths.boot_dir')?.value).toBe('/srv/bty/boot');
    expect(rows.get('admin.password')?.source).toBe(`toml:${tomlFile}`);
    expect(rows.get('server.host')?.source).toBe('cli');
    expect(rows.get('tftp.port')?.source).toBe('default');
    expect(rows.get('tftp.port')?.value).toBe('69');
    expect(rows.get('withcache.url')?.value).toBe('(empty)');
    // The variable that overrides each setting is named on its row.
    expect(rows.get('tftp.port')?.html).toContain('<code>BTY_TFTP_PORT</code>');
    expect(rows.get('server.port')?.html).toMatch(/<span class="badge[^>]*>env:BTY_SERVER_PORT</);
  });

  it('never shows the admin password, the session secret or the database password', () => {
    expect(html).not.toContain(ADMIN_PASSWORD);
    expect(html).not.toContain(SESSION_SECRET);
    expect(html).not.toContain(DB_PASSWORD);
    const rows = configRows(html);
    expect(rows.get('admin.password')?.value).toBe('<redacted>');
    expect(rows.get('server.session_secret')?.value).toBe('<redacted>');
    expect(rows.get('database.url')?.value).toBe('postgres://bty:<redacted>@db.example/bty');
  });

  it('lists the files searched and read, the warnings, and how to change a value', () => {
    const searched = /<ol[^>]*id="config-searched">([\s\S]*?)<\/ol>/.exec(html)?.[1] ?? '';
    expect(searched).toContain(tomlFile);
    expect(searched).toContain(join(dir, 'missing.d'));
    const read = /<ol[^>]*id="config-files">([\s\S]*?)<\/ol>/.exec(html)?.[1] ?? '';
    expect(read).toContain(tomlFile);
    expect(read).not.toContain('missing.d');
    expect(html).toMatch(/id="config-warnings"[\s\S]*unknown section \[nonsense\] ignored/);
    expect(html).toContain('restart bty-web');
    // Read-only in this version: no form posts anywhere but the logout button.
    expect(html.match(/<form /g)?.length).toBe(1);
    expect(html).not.toContain('id="config-defaults-notice"');
  });

  it('fills the snippets with the configured port', () => {
    const host = firstHostIpv4() ?? '127.0.0.1';
    expect(snippetText(html, 'dnsmasq')).toBe(
      dnsmasqSnippet({ host, port: 18080, tftpHost: host }),
    );
  });
});

describe('settings page on the defaults', () => {
  let server: UiServer;
  let client: UiClient;

  beforeAll(async () => {
    server = await startUiServer();
    client = await operator(server);
  });

  afterAll(async () => {
    await server.close();
  });

  it('needs a session', async () => {
    const res = await fetch(`${server.base}/ui/settings`, { redirect: 'manual' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/login');
  });

  it('says the server runs on the defaults and shows every row as default', async () => {
    const html = await client.page('/ui/settings');
    expect(html).toContain('id="config-defaults-notice"');
    const rows = configRows(html);
    expect(rows.size).toBe(Object.values(CONFIG_SCHEMA).flatMap((f) => Object.keys(f)).length);
    for (const [key, row] of rows) expect(row.source, key).toBe('default');
    expect(rows.get('server.port')?.value).toBe('8080');
    // The public default password is still a secret on this page.
    expect(rows.get('admin.password')?.value).toBe('<redacted>');
    expect(rows.get('admin.password')?.html).not.toContain('bty-lab');
  });

  it('lists this host’s IPv4 addresses and the Host header the browser used', async () => {
    const html = await client.page('/ui/settings');
    const table = /<table[^>]*id="host-addresses"[\s\S]*?<\/table>/.exec(html)?.[0] ?? '';
    expect(table).not.toBe('');
    for (const [iface, addresses] of Object.entries(networkInterfaces())) {
      for (const a of addresses ?? []) {
        if (a.family !== 'IPv4') continue;
        if (a.internal) expect(table).not.toContain(`<code>${a.address}</code>`);
        else {
          expect(table).toContain(`data-address="${a.address}"`);
          expect(table).toContain(`<code>${iface}</code>`);
        }
      }
    }
    const port = new URL(server.base).port;
    expect(table).toContain(`<code>127.0.0.1:${port}</code>`);
  });

  it('uses the first address outside loopback when the browser came over loopback', async () => {
    const html = await client.page('/ui/settings');
    const host = firstHostIpv4();
    const port = Number(new URL(server.base).port);
    const expected = host ?? '127.0.0.1';
    expect(snippetText(html, 'dnsmasq')).toBe(
      dnsmasqSnippet({ host: expected, port, tftpHost: expected }),
    );
    if (host === undefined) expect(html).toContain('id="no-host-address"');
    else expect(html).not.toContain('id="no-host-address"');
  });

  it('uses the Host header’s address and port when the browser used an IPv4 address', async () => {
    const html = await getWithHost(server, client, '/ui/settings', '192.0.2.7:9999');
    expect(snippetText(html, 'dnsmasq')).toBe(
      dnsmasqSnippet({ host: '192.0.2.7', port: 9999, tftpHost: '192.0.2.7' }),
    );
    expect(html).toContain('<code>192.0.2.7:9999</code>');
  });

  it('shows each server’s snippet in its own block with a copy button carrying the text', async () => {
    const html = await client.page('/ui/settings');
    expect(html).toContain('id="cheatsheet"');
    for (const server of ['dnsmasq', 'dnsmasq-proxy', 'isc-dhcpd', 'kea', 'openwrt']) {
      const block = new RegExp(`id="cheatsheet-${server}"[\\s\\S]*?</pre>`).exec(html)?.[0] ?? '';
      expect(block, server).toContain('<pre class="cheatsheet');
      const copied = /data-copy="([^"]*)"/.exec(block)?.[1];
      expect(decodeEntities(copied ?? ''), server).toBe(snippetText(html, server));
    }
    expect(snippetText(html, 'kea')).toContain('"client-classes"');
    expect(html).toMatch(/pxe-bootstrap\.ipxe/);
  });

  it('warns about missing iPXE boot files and links to the Netboot page', async () => {
    const system = await ipxeBootFiles();
    let html = await client.page('/ui/settings');
    if (system.some((f) => !f.present)) {
      expect(html).toMatch(/id="ipxe-files-missing"[\s\S]*?href="\/ui\/netboot"/);
    } else {
      expect(html).toContain('id="ipxe-files-present"');
    }
    // UEFI HTTP boot reads ipxe.efi from the boot folder: missing, then present.
    expect(html).toMatch(/id="http-boot-file-missing"[\s\S]*?href="\/ui\/netboot"/);
    const bootDir = join(server.dir, 'boot');
    await mkdir(bootDir, { recursive: true });
    await writeFile(join(bootDir, 'ipxe.efi'), 'not really an EFI binary');
    html = await client.page('/ui/settings');
    expect(html).not.toContain('id="http-boot-file-missing"');
  });
});
