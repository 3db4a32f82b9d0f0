/**
 * The catalog over real HTTP: the open listings (`/images`, `/catalog.toml`) and the operator's
 * management routes (entries, import from a body, a local HTTP server or a file, delete), with
 * bty-web on loopback and SQLite in a temp folder.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseCatalog } from '../../src/catalog/schema.ts';
import { imageRefForSrc } from '../../src/core/refs.ts';
import { buildApp } from '../../src/web/app.ts';
import { LiveBus, type LiveMessage } from '../../src/web/bus.ts';
import { listCatalogEntries } from '../../src/web/db/catalog.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { listEvents } from '../../src/web/db/events.ts';
import { touchMachine } from '../../src/web/db/machines.ts';

let dir: string;
let database: BtyDatabase;
let app: FastifyInstance;
let base: string;
let cookie: string;
let clock = new Date('2026-12-02T09:00:00.000Z');
const bus = new LiveBus();
const messages: LiveMessage[] = [];
bus.subscribe((m) => messages.push(m));

/** A catalog publisher on loopback: path → [status, body]. */
let publisher: http.Server;
let publisherBase: string;
const published = new Map<string, [number, string]>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-web-catalog-'));
  database = await openDatabase({ sqlitePath: join(dir, 'state.db') });
  await migrate(database);
  app = await buildApp({
    database,
    version: '9.9.9',
    artifactVersion: '1.2.3',
    bootDir: dir,
    now: () => clock,
    bus,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const login = await fetch(`${base}/ui/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ password: 'bty-lab' }),
  });
  expect(login.status).toBe(204);
  cookie = login.headers.get('set-cookie')!.split(';')[0]!;

  publisher = http.createServer((req, res) => {
    const [status, body] = published.get(req.url ?? '') ?? [404, 'not here'];
    res.writeHead(status, { 'content-type': 'application/toml' }).end(body);
  });
  await new Promise<void>((resolve) => publisher.listen(0, '127.0.0.1', resolve));
  publisherBase = `http://127.0.0.1:${(publisher.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await app?.close();
  await new Promise((resolve) => publisher?.close(resolve));
  await database?.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  messages.length = 0;
  clock = new Date(clock.getTime() + 60_000);
});

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: () => unknown;
}

async function call(
  method: string,
  path: string,
  body?: unknown,
  options: { type?: string; auth?: boolean } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (options.auth !== false) headers.cookie = cookie;
  let payload: string | undefined;
  if (body !== undefined) {
    payload = typeof body === 'string' ? body : JSON.stringify(body);
    headers['content-type'] = options.type ?? 'application/json';
  }
  const res = await fetch(`${base}${path}`, { method, headers, body: payload });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: (): unknown => JSON.parse(text) };
}

const detailOf = (a: Answer) => (a.json() as { detail: string }).detail;

/** What a refused request must leave alone. */
async function snapshot() {
  return {
    entries: await listCatalogEntries(database.db),
    events: (await listEvents(database.db, { limit: 1000 })).length,
  };
}

const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);

describe('the session guard', () => {
  it.each([
    ['GET', '/catalog', undefined],
    ['GET', `/catalog/entries/${SHA_A}`, undefined],
    ['POST', '/catalog/entries', { src: 'https://h/x.img' }],
    ['POST', '/catalog/entries', '{not json'],
    ['POST', '/catalog/import', { url: 'https://h/c.toml' }],
    ['DELETE', `/catalog/entries/${SHA_A}`, undefined],
  ])('%s %s without a session is 401 before the body is read', async (method, path, body) => {
    const before = await snapshot();
    const res = await call(method, path, body, { auth: false });
    expect(res.status).toBe(401);
    expect(res.json()).toEqual({ detail: 'login required' });
    expect(await snapshot()).toEqual(before);
  });

  it('a forged cookie is 401', async () => {
    const res = await fetch(`${base}/catalog`, {
      headers: { cookie: `bty-token=1.${'A'.repeat(43)}` },
    });
    expect(res.status).toBe(401);
  });
});

describe('POST /catalog/entries', () => {
  it('derives name, format and arch from the URL and answers 201 with the ref', async () => {
    const src = 'https://Images.Example:443/os/debian-13-generic-amd64.img.zst?x=1';
    const res = await call('POST', '/catalog/entries', { src, sha256: `sha256:${SHA_A}` });
    expect(res.status).toBe(201);
    const ref = imageRefForSrc(src);
    expect(res.headers.get('location')).toBe(`/catalog/entries/${ref}`);
    expect(res.json()).toEqual({
      ref,
      name: 'debian-13-generic-amd64.img.zst',
      src,
      sha256: SHA_A,
      format: 'img.zst',
      size_bytes: null,
      description: null,
      arch: 'x86_64',
      created_at: clock.toISOString(),
      updated_at: clock.toISOString(),
    });
    const get = await call('GET', `/catalog/entries/${ref.toUpperCase()}`);
    expect(get.status).toBe(200);
    expect(get.json()).toEqual(res.json());
    const [event] = await listEvents(database.db, { kind: 'catalog.entry.added', subjectId: ref });
    expect(event).toMatchObject({
      subject_kind: 'catalog',
      actor: 'operator',
      source_ip: '127.0.0.1',
      summary: `catalog entry debian-13-generic-amd64.img.zst added (${ref.slice(0, 12)})`,
    });
    expect(messages).toContainEqual(
      expect.objectContaining({ type: 'event', kind: 'catalog.entry.added', subject_id: ref }),
    );
  });

  it('keeps the given fields, and names an oras:// entry after its repository and tag', async () => {
    const src = 'oras://ghcr.io/Acme/Disk-Images:ubuntu-24.04';
    const res = await call('POST', '/catalog/entries', {
      src,
      format: 'img.xz',
      size_bytes: 0,
      description: 'Ubuntu\nserver',
      arch: 'arm64',
    });
    expect(res.status).toBe(201);
    expect(res.json()).toMatchObject({
      ref: imageRefForSrc(src),
      name: 'disk-images:ubuntu-24.04',
      format: 'img.xz',
      size_bytes: 0,
      description: 'Ubuntu\nserver',
      arch: 'arm64',
    });
  });

  it('percent-decodes a derived name, and an explicit name wins', async () => {
    const a = await call('POST', '/catalog/entries', { src: 'http://h/a/My%20Image.qcow2' });
    expect(a.json()).toMatchObject({ name: 'My Image.qcow2', format: 'qcow2' });
    const b = await call('POST', '/catalog/entries', {
      src: 'http://h/b/download',
      name: '  Fedora 41.img.gz ',
    });
    expect(b.json()).toMatchObject({ name: 'Fedora 41.img.gz', format: 'img.gz' });
  });

  it('the same source again (canonically) is 409, logged, and changes nothing', async () => {
    await call('POST', '/catalog/entries', { src: 'https://dup.example/one.img' });
    const before = await snapshot();
    const res = await call('POST', '/catalog/entries', {
      src: 'HTTPS://DUP.example:443/one.img',
      name: 'other name',
    });
    expect(res.status).toBe(409);
    expect(detailOf(res)).toContain("src: the catalog already has this source as 'one.img'");
    const after = await snapshot();
    expect(after.entries).toEqual(before.entries);
    expect(after.events).toBe(before.events + 1);
    const [failed] = await listEvents(database.db, { kind: 'catalog.entry.add.failed' });
    expect(failed?.details).toMatchObject({ name: 'other name', error: detailOf(res) });
  });

  it('a name another entry has is 409 and changes nothing', async () => {
    const before = await snapshot();
    const res = await call('POST', '/catalog/entries', {
      src: 'https://elsewhere.example/x/one.img',
    });
    expect(res.status).toBe(409);
    expect(detailOf(res)).toMatch(/^name: 'one.img' is already used by the entry with ref /);
    expect((await snapshot()).entries).toEqual(before.entries);
  });

  it.each([
    ['no src', {}, 'src: required'],
    ['an empty src', { src: '' }, 'src: required'],
    ['a numeric src', { src: 42 }, 'src: required'],
    ['a file:// src', { src: 'file:///srv/x.img' }, 'src: must be an http://, https:// or oras://'],
    ['a relative src', { src: 'x.img' }, 'src: must be an http://'],
    ['an ftp src', { src: 'ftp://h/x.img' }, 'src: must be an http://'],
    ['a src with a space', { src: 'https://h/a b.img' }, 'src: must not contain blanks'],
    ['a src with a newline', { src: 'https://h/a\n.img' }, 'src: must not contain blanks'],
    ['a src with NUL', { src: 'https://h/a\u0000.img' }, 'src: must not contain'],
    ['a src without a host', { src: 'https:///x.img' }, 'src: http(s) src missing host'],
    ['a src with a bad port', { src: 'https://h:99999/x.img' }, 'src: Port out of range'],
    ['a malformed oras src', { src: 'oras://ghcr.io/repo' }, 'src: malformed oras src'],
    ['a src of 2049 characters', { src: `https://h/${'a'.repeat(2039)}` }, 'src: at most 2048'],
    ['a src without a file name', { src: 'https://h/' }, 'name: cannot be derived from src'],
    ['a numeric name', { src: 'https://h/n1.img', name: 5 }, 'name: must be a string'],
    ['a blank name', { src: 'https://h/n2.img', name: '   ' }, 'name: must be 1-255'],
    ['a name with a newline', { src: 'https://h/n3.img', name: 'a\nb' }, 'name: must be 1-255'],
    ['a 256-character name', { src: 'https://h/n4.img', name: 'n'.repeat(256) }, 'name: must'],
    ['a short sha256', { src: 'https://h/s1.img', sha256: 'abc' }, 'sha256: must be 64'],
    ['a non-hex sha256', { src: 'https://h/s2.img', sha256: 'g'.repeat(64) }, 'sha256: must'],
    ['a numeric sha256', { src: 'https://h/s3.img', sha256: 1 }, 'sha256: must be 64'],
    ['an unknown format', { src: 'https://h/f1.img', format: 'iso' }, 'format: must be one of'],
    ['a numeric format', { src: 'https://h/f2.img', format: 3 }, 'format: must be one of'],
    ['a negative size', { src: 'https://h/z1.img', size_bytes: -1 }, 'size_bytes: must be'],
    ['a fractional size', { src: 'https://h/z2.img', size_bytes: 1.5 }, 'size_bytes: must be'],
    ['a string size', { src: 'https://h/z3.img', size_bytes: '10' }, 'size_bytes: must be'],
    ['a huge size', { src: 'https://h/z4.img', size_bytes: 2 ** 60 }, 'size_bytes: must be'],
    ['a NUL in description', { src: 'https://h/d1.img', description: 'a\u0000' }, 'description'],
    ['a long description', { src: 'https://h/d2.img', description: 'd'.repeat(2001) }, 'descr'],
    ['a numeric description', { src: 'https://h/d3.img', description: 1 }, 'description'],
    ['an arch with a space', { src: 'https://h/r1.img', arch: 'x86 64' }, 'arch: must be'],
    ['a numeric arch', { src: 'https://h/r2.img', arch: 64 }, 'arch: must be'],
    ['an unknown field', { src: 'https://h/u1.img', ref: SHA_A }, 'unknown field(s): ref'],
    ['an array body', [], 'body: must be a JSON object'],
    ['a null body', null, 'body: must be a JSON object'],
  ])('%s is 422 naming the field, and changes nothing', async (_what, body, message) => {
    const before = await snapshot();
    const res = await call('POST', '/catalog/entries', body);
    expect(res.status).toBe(422);
    expect(detailOf(res)).toContain(message);
    expect(await snapshot()).toEqual(before);
  });

  it.each([
    ['invalid JSON', '{"src": ', 'application/json', 400],
    ['a TOML body', 'src = "https://h/x.img"', 'application/toml', 415],
    ['a text body', 'https://h/x.img', 'text/plain', 415],
    ['an unknown content type', 'x', 'application/octet-stream', 415],
  ])('%s is %i and changes nothing', async (_what, body, type, code) => {
    const before = await snapshot();
    const res = await call('POST', '/catalog/entries', body, { type });
    expect(res.status).toBe(code);
    expect(await snapshot()).toEqual(before);
  });
});

describe('GET /catalog, /images and /catalog.toml', () => {
  beforeAll(async () => {
    await database.db.deleteFrom('catalog_entries').execute();
    const add = async (body: Record<string, unknown>) =>
      expect((await call('POST', '/catalog/entries', body)).status).toBe(201);
    await add({ src: 'https://h/zeta-arm64.img', sha256: SHA_A, size_bytes: 1024 });
    await add({ src: 'https://h/alpha.img.gz', name: 'Alpha "quoted" \\ name', sha256: SHA_B });
    await add({ src: 'https://h/no-sha.qcow2' });
    await add({
      src: 'oras://ghcr.io/acme/imgs:v1',
      name: 'beta',
      sha256: SHA_A,
      description: 'line 1\nline 2\ttab',
    });
  });

  it('GET /catalog lists every entry by name, for the operator', async () => {
    const res = await call('GET', '/catalog');
    expect(res.status).toBe(200);
    const { entries } = res.json() as { entries: Array<{ name: string }> };
    expect(entries.map((e) => e.name)).toEqual([
      'Alpha "quoted" \\ name',
      'beta',
      'no-sha.qcow2',
      'zeta-arm64.img',
    ]);
  });

  it('GET /images is open and lists every entry in upstream shape', async () => {
    const res = await call('GET', '/images', undefined, { auth: false });
    expect(res.status).toBe(200);
    // Upstream's keys, plus the cache's state of each (nothing is cached here).
    const NOT_CACHED = {
      state: 'absent',
      size: null,
      digest: null,
      bytes_done: 0,
      bytes_total: null,
    };
    expect(res.json()).toEqual([
      {
        name: 'Alpha "quoted" \\ name',
        format: 'img.gz',
        size_bytes: 0,
        url: 'https://h/alpha.img.gz',
        ref: imageRefForSrc('https://h/alpha.img.gz'),
        sha_short: 'bbbbbbbbbbbb',
        arch: null,
        cache: NOT_CACHED,
      },
      {
        name: 'beta',
        format: '',
        size_bytes: 0,
        url: 'oras://ghcr.io/acme/imgs:v1',
        ref: imageRefForSrc('oras://ghcr.io/acme/imgs:v1'),
        sha_short: 'aaaaaaaaaaaa',
        arch: null,
        cache: NOT_CACHED,
      },
      {
        name: 'no-sha.qcow2',
        format: 'qcow2',
        size_bytes: 0,
        url: 'https://h/no-sha.qcow2',
        ref: imageRefForSrc('https://h/no-sha.qcow2'),
        sha_short: null,
        arch: null,
        cache: NOT_CACHED,
      },
      {
        name: 'zeta-arm64.img',
        format: 'img',
        size_bytes: 1024,
        url: 'https://h/zeta-arm64.img',
        ref: imageRefForSrc('https://h/zeta-arm64.img'),
        sha_short: 'aaaaaaaaaaaa',
        arch: 'arm64',
        cache: NOT_CACHED,
      },
    ]);
  });

  it('GET /catalog.toml is open: entries with a sha256, escaped, readable by bty', async () => {
    const res = await call('GET', '/catalog.toml', undefined, { auth: false });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/toml');
    expect(res.text).toBe(
      [
        'version = 1',
        '',
        '[[images]]',
        'name = "Alpha \\"quoted\\" \\\\ name"',
        'src = "https://h/alpha.img.gz"',
        `sha256 = "${SHA_B}"`,
        'format = "img.gz"',
        '',
        '[[images]]',
        'name = "beta"',
        'src = "oras://ghcr.io/acme/imgs:v1"',
        `sha256 = "${SHA_A}"`,
        'description = "line 1\\nline 2\\ttab"',
        '',
        '[[images]]',
        'name = "zeta-arm64.img"',
        'src = "https://h/zeta-arm64.img"',
        `sha256 = "${SHA_A}"`,
        'format = "img"',
        'size_bytes = 1024',
        'arch = "arm64"',
        '',
      ].join('\n'),
    );
    const parsed = parseCatalog(res.text, 'test');
    expect(parsed.entries.map((e) => [e.name, e.description])).toEqual([
      ['Alpha "quoted" \\ name', null],
      ['beta', 'line 1\nline 2\ttab'],
      ['zeta-arm64.img', null],
    ]);
  });

  it('an empty catalog is just the version', async () => {
    const saved = await listCatalogEntries(database.db);
    await database.db.deleteFrom('catalog_entries').execute();
    expect((await call('GET', '/catalog.toml')).text).toBe('version = 1\n');
    expect((await call('GET', '/images')).json()).toEqual([]);
    await database.db.insertInto('catalog_entries').values(saved).execute();
  });
});

describe('POST /catalog/import', () => {
  const toml = (entries: string[]) => ['version = 1', '', ...entries].join('\n');
  const image = (name: string, src: string, extra = '') =>
    `[[images]]\nname = "${name}"\nsrc = "${src}"\n${extra}\n`;

  beforeAll(async () => {
    await database.db.deleteFrom('catalog_entries').execute();
  });

  it('imports a TOML body: every entry added, catalog.imported logged', async () => {
    const body = toml([
      image('debian', 'https://mirror.example/debian-13-amd64.img.xz', `sha256 = "${SHA_A}"`),
      image('fedora', 'oras://ghcr.io/acme/fedora:41', 'format = "img.zst"\nsize_bytes = 99'),
    ]);
    const res = await call('POST', '/catalog/import', body, { type: 'application/toml' });
    expect(res.status).toBe(200);
    const answer = res.json() as Record<string, unknown>;
    expect(answer).toMatchObject({ source: 'request body', added: 2, updated: 0, unchanged: 0 });
    expect(answer.entries).toEqual([
      expect.objectContaining({
        name: 'debian',
        format: 'img.xz',
        arch: 'x86_64',
        sha256: SHA_A,
        ref: imageRefForSrc('https://mirror.example/debian-13-amd64.img.xz'),
      }),
      expect.objectContaining({ name: 'fedora', format: 'img.zst', size_bytes: 99 }),
    ]);
    const [event] = await listEvents(database.db, { kind: 'catalog.imported' });
    expect(event?.details).toEqual({
      source: 'request body',
      entries: 2,
      added: 2,
      updated: 0,
      unchanged: 0,
    });
    expect(messages).toContainEqual(
      expect.objectContaining({ type: 'event', kind: 'catalog.imported' }),
    );
  });

  it('a re-import updates what changed, keeps created_at, and never removes', async () => {
    const before = await listCatalogEntries(database.db);
    await call('POST', '/catalog/entries', { src: 'https://h/kept.img' });
    const body = toml([
      image('debian 13', 'https://mirror.example/debian-13-amd64.img.xz', `sha256 = "${SHA_B}"`),
      image('fedora', 'oras://ghcr.io/acme/fedora:41', 'format = "img.zst"\nsize_bytes = 99'),
    ]);
    const res = await call('POST', '/catalog/import', body, { type: 'text/plain' });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ added: 0, updated: 1, unchanged: 1 });
    const after = await listCatalogEntries(database.db);
    expect(after.map((e) => e.name)).toEqual(['debian 13', 'fedora', 'kept.img']);
    const debian = after.find((e) => e.name === 'debian 13')!;
    const old = before.find((e) => e.name === 'debian')!;
    expect(debian.created_at).toBe(old.created_at);
    expect(debian.updated_at).toBe(clock.toISOString());
    expect(debian.sha256).toBe(SHA_B);
  });

  it('imports from an http URL', async () => {
    published.set('/cat.toml', [
      200,
      toml([image('from-http', 'https://h/from-http.img', `sha256 = "${SHA_A}"`)]),
    ]);
    const url = `${publisherBase}/cat.toml`;
    const res = await call('POST', '/catalog/import', { url });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ source: url, added: 1 });
  });

  it('imports from an absolute file path and a file:// URL', async () => {
    const file = join(dir, 'local.toml');
    await writeFile(file, toml([image('from-file', 'https://h/from-file.img')]));
    const res = await call('POST', '/catalog/import', { url: file });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ added: 1 });
    const again = await call('POST', '/catalog/import', { url: `file://${file}` });
    expect(again.json()).toMatchObject({ added: 0, unchanged: 1 });
  });

  it('oras:// catalog URLs are understood (the registry here is unreachable: 5xx, not 4xx)', async () => {
    const port = await closedPort();
    const res = await call('POST', '/catalog/import', {
      url: `oras://127.0.0.1:${port}/acme/catalog:latest`,
    });
    expect(detailOf(res)).not.toContain('not loaded');
    expect(res.status).toBeGreaterThanOrEqual(500);
  });

  it.each([
    ['an unknown key', { url: 'https://h/c.toml', force: true }, 'unknown field(s): force'],
    ['no url', {}, 'url: required'],
    ['a numeric url', { url: 5 }, 'url: required'],
    ['a relative path', { url: 'catalogs/c.toml' }, 'url: a local catalog must be an absolute'],
    ['a url with a newline', { url: 'https://h/c\n.toml' }, 'url: at most'],
    ['an array body', [], 'body: must be a JSON object'],
  ])('%s is 422 and changes nothing (not even the log)', async (_what, body, message) => {
    const before = await snapshot();
    const res = await call('POST', '/catalog/import', body);
    expect(res.status).toBe(422);
    expect(detailOf(res)).toContain(message);
    expect(await snapshot()).toEqual(before);
  });

  it.each([
    ['invalid TOML', () => 'version = 1\n[[images]\n', 422, 'is not valid TOML'],
    ['an empty body', () => '', 422, 'version=None'],
    ['version 2', () => 'version = 2\n', 422, 'this bty understands version=1'],
    ['an entry without src', () => toml(['[[images]]\nname = "x"\n']), 422, "'src'"],
    ['a file:// entry', () => toml([image('x', 'file:///srv/x.img')]), 422, 'has ``file://`` src'],
    [
      'an ftp entry',
      () => toml([image('x', 'ftp://h/x.img')]),
      422,
      "catalog entry 'x': src: must be an http://",
    ],
    [
      'a negative size',
      () => toml([image('x', 'https://h/neg.img', 'size_bytes = -5')]),
      422,
      "catalog entry 'x': size_bytes",
    ],
    [
      'a name with a control character',
      () => toml([image('x\\u0001y', 'https://h/ctl.img')]),
      422,
      'name: must be 1-255',
    ],
    [
      'a description with NUL',
      () => toml([image('x', 'https://h/nul.img', 'description = "a\\u0000b"')]),
      422,
      "catalog entry 'x': description",
    ],
    [
      'two entries of one source',
      () => toml([image('one', 'https://h/same.img'), image('two', 'HTTPS://H/same.img')]),
      422,
      "catalog entries 'one' and 'two' have the same src",
    ],
    [
      'a name a stored entry of another source has',
      () => toml([image('new', 'https://h/new.img'), image('fedora', 'https://h/other.img')]),
      409,
      "name: 'fedora' would name two entries",
    ],
  ])(
    '%s is refused (%i), logged as catalog.import.failed, nothing imported',
    async (_what, body, code, message) => {
      const before = await snapshot();
      const res = await call('POST', '/catalog/import', body(), { type: 'application/toml' });
      expect(res.status).toBe(code);
      expect(detailOf(res)).toContain(message);
      const after = await snapshot();
      expect(after.entries).toEqual(before.entries);
      expect(after.events).toBe(before.events + 1);
      const [failed] = await listEvents(database.db, { kind: 'catalog.import.failed' });
      expect(failed?.details).toEqual({ source: 'request body', error: detailOf(res) });
    },
  );

  it.each([
    ['a missing file', () => ({ url: join(dir, 'missing.toml') }), 422, 'url: catalog not found'],
    ['an HTTP 404', () => ({ url: `${publisherBase}/nope.toml` }), 502, 'HTTP 404'],
    [
      'a closed port',
      async () => ({ url: `http://127.0.0.1:${await closedPort()}/c.toml` }),
      502,
      'url: catalog fetch from',
    ],
    ['an unknown scheme', () => ({ url: 'gopher://h/c.toml' }), 422, 'url: catalog source must'],
    ['a file URL with a host', () => ({ url: 'file://elsewhere/c.toml' }), 422, 'names a host'],
    ['an http URL without host', () => ({ url: 'http:///c.toml' }), 422, 'missing a host'],
  ])(
    '%s is refused (%i), logged as catalog.import.failed, nothing imported',
    async (_what, body, code, message) => {
      const before = await snapshot();
      const res = await call('POST', '/catalog/import', await body());
      expect(res.status).toBe(code);
      expect(detailOf(res)).toContain(message);
      const after = await snapshot();
      expect(after.entries).toEqual(before.entries);
      expect(after.events).toBe(before.events + 1);
    },
  );

  it('a catalog over 4 MiB from a URL is 413', async () => {
    published.set('/big.toml', [200, `version = 1\n# ${'x'.repeat(4 * 1024 * 1024)}\n`]);
    const before = await snapshot();
    const res = await call('POST', '/catalog/import', { url: `${publisherBase}/big.toml` });
    expect(res.status).toBe(413);
    expect((await snapshot()).entries).toEqual(before.entries);
  });

  it('a body over the limit is 413, and an unknown content type 415', async () => {
    const before = await snapshot();
    const big = `version = 1\n# ${'x'.repeat(5 * 1024 * 1024)}\n`;
    expect((await call('POST', '/catalog/import', big, { type: 'application/toml' })).status).toBe(
      413,
    );
    const form = await call('POST', '/catalog/import', 'url=x', {
      type: 'application/x-www-form-urlencoded',
    });
    expect(form.status).toBe(415);
    expect(detailOf(form)).toContain('content-type: must be application/toml');
    expect(await snapshot()).toEqual(before);
  });
});

describe('DELETE /catalog/entries/{ref}', () => {
  it('removes the entry (204), logs how many machines are still bound, then 404', async () => {
    const src = 'https://h/to-delete.img';
    const ref = imageRefForSrc(src);
    expect((await call('POST', '/catalog/entries', { src })).status).toBe(201);
    await touchMachine(database.db, '52:54:00:00:e0:01', null, clock);
    await database.db
      .updateTable('machines')
      .set({ bty_image_ref: ref })
      .where('mac', '=', '52:54:00:00:e0:01')
      .execute();
    const res = await call('DELETE', `/catalog/entries/${ref}`);
    expect(res.status).toBe(204);
    expect(res.text).toBe('');
    const [event] = await listEvents(database.db, { kind: 'catalog.entry.removed' });
    expect(event).toMatchObject({
      subject_id: ref,
      summary: `catalog entry to-delete.img removed (${ref.slice(0, 12)}); 1 machine(s) still bound to it`,
      details: { ref, name: 'to-delete.img', src, bound_machines: 1 },
    });
    expect(messages).toContainEqual(
      expect.objectContaining({ type: 'event', kind: 'catalog.entry.removed' }),
    );
    // The binding is the operator's: it stays, and the machine now meets the orphan-ref rules.
    const machine = await database.db
      .selectFrom('machines')
      .select('bty_image_ref')
      .where('mac', '=', '52:54:00:00:e0:01')
      .executeTakeFirstOrThrow();
    expect(machine.bty_image_ref).toBe(ref);
    const again = await call('DELETE', `/catalog/entries/${ref}`);
    expect(again.status).toBe(404);
    expect(detailOf(again)).toBe(`no catalog entry with ref ${ref}`);
    expect((await call('GET', `/catalog/entries/${ref}`)).status).toBe(404);
  });

  it.each(['abc', 'g'.repeat(64), 'a'.repeat(65), '..%2f..'])(
    'a malformed ref %s is 400 naming the ref, nothing changes',
    async (raw) => {
      const before = await snapshot();
      const res = await call('DELETE', `/catalog/entries/${raw}`);
      expect(res.status).toBe(400);
      expect(detailOf(res)).toMatch(/^invalid ref: /);
      expect(await snapshot()).toEqual(before);
    },
  );
});

/** A loopback port nothing listens on (bound, read, released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
