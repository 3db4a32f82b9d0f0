import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { capture } from '../helpers/cli.ts';

const SHA = 'ab'.repeat(32);

describe('bty catalog check', () => {
  let dir: string;
  let server: Server;
  let base: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bty-cli-catalog-'));
    await writeFile(
      join(dir, 'good.toml'),
      `version = 1
[[images]]
name = "debian-x86_64.img.zst"
src = "https://example.com/debian-x86_64.img.zst"
sha256 = "${SHA}"
size_bytes = 1048576
[[images]]
name = "mystery.bin"
src = "https://example.com/mystery.bin"
[[images]]
name = "from-a-registry"
src = "oras://ghcr.io/o/disk:1"
`,
    );
    await writeFile(join(dir, 'empty.toml'), 'version = 1\n');
    await writeFile(join(dir, 'bad.toml'), 'version = 2\n');
    server = createServer((_req, res) => res.writeHead(503).end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it('prints a table, warnings and the OK line', async () => {
    const io = capture();
    const path = join(dir, 'good.toml');
    expect(await main(['catalog', 'check', path], io)).toBe(0);
    const lines = io.stdout().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+FORMAT\s+SIZE\s+ARCH\s+SHA256\s+REF\s+SRC$/);
    expect(lines[1]).toMatch(
      /^debian-x86_64\.img\.zst\s+img\.zst\s+1\.0 MiB\s+x86_64\s+abababababab\s+[0-9a-f]{12}\s+https:\/\/example\.com\/debian-x86_64\.img\.zst$/,
    );
    expect(lines[2]).toMatch(/^mystery\.bin\s+-\s+-\s+-\s+-\s+[0-9a-f]{12}\s+https:\/\//);
    // An oras:// entry learns its format from the layer title: no warning for it.
    expect(lines[3]).toMatch(/^from-a-registry\s+-/);
    expect(io.stderr()).not.toContain('from-a-registry');
    expect(io.stdout()).toContain(`catalog OK: 3 image(s) from ${path}\n`);
    expect(io.stderr()).toContain("bty: warning: catalog entry 'mystery.bin': format unknown");
  });

  it('prints one JSON document with --json', async () => {
    const io = capture();
    const path = join(dir, 'good.toml');
    expect(await main(['catalog', 'check', path, '--json'], io)).toBe(0);
    const doc = JSON.parse(io.stdout()) as {
      ok: boolean;
      source: string;
      version: number;
      entries: Array<{ name: string; ref: string | null; sha256: string | null }>;
      warnings: Array<{ name: string; message: string }>;
    };
    expect(doc.ok).toBe(true);
    expect(doc.source).toBe(path);
    expect(doc.version).toBe(1);
    expect(doc.entries.map((e) => e.name)).toEqual([
      'debian-x86_64.img.zst',
      'mystery.bin',
      'from-a-registry',
    ]);
    expect(doc.entries[0]?.sha256).toBe(SHA);
    expect(doc.entries[0]?.ref).toMatch(/^[0-9a-f]{64}$/);
    expect(doc.warnings.map((w) => w.name)).toEqual(['mystery.bin']);
    expect(doc.warnings[0]?.message).toContain('format unknown');
    expect(io.stderr()).toBe('');
  });

  it('handles an empty catalog', async () => {
    const io = capture();
    expect(await main(['catalog', 'check', join(dir, 'empty.toml')], io)).toBe(0);
    expect(io.stdout()).toBe(`catalog OK: 0 image(s) from ${join(dir, 'empty.toml')}\n`);
  });

  it('exits 2 for an invalid catalog, with code and hint on stderr', async () => {
    const io = capture();
    expect(await main(['catalog', 'check', join(dir, 'bad.toml')], io)).toBe(2);
    expect(io.stderr()).toContain('version=2, this bty understands version=1');
    expect(io.stderr()).toContain('[BTY_ERR_CATALOG_INVALID]');
    expect(io.stderr()).toContain('bty: hint:');
  });

  it('exits 2 for a missing catalog', async () => {
    const io = capture();
    expect(await main(['catalog', 'check', join(dir, 'nope.toml')], io)).toBe(2);
    expect(io.stderr()).toContain('catalog not found');
  });

  it('exits 1 for an unreachable catalog, as JSON with --json', async () => {
    const io = capture();
    expect(await main(['catalog', 'check', `${base}/catalog.toml`, '--json'], io)).toBe(1);
    const doc = JSON.parse(io.stdout()) as {
      ok: boolean;
      error: { code: string; message: string };
    };
    expect(doc.ok).toBe(false);
    expect(doc.error.code).toBe('BTY_ERR_CATALOG_UNREACHABLE');
    expect(doc.error.message).toContain('HTTP 503');
  });

  it('exits 2 without a source', async () => {
    const io = capture();
    expect(await main(['catalog', 'check'], io)).toBe(2);
  });
});
