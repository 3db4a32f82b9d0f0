/**
 * `GET|POST /boot/releases` and `DELETE /boot/releases/{tag}` over real HTTP: bty-web on
 * loopback with `[boot] release_url` pointing at a local stand-in for GitHub's release
 * downloads. A fetch end to end (files installed, events with the operator's IP), validation,
 * dedup, cancel, the session gate, and the history a restarted server reads back.
 */
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/web/app.ts';
import { LiveBus, type LiveMessage } from '../../src/web/bus.ts';
import { loadConfig, type LoadedConfig } from '../../src/web/config.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { listEvents } from '../../src/web/db/events.ts';
import { releaseFileNames, type ReleaseState } from '../../src/web/netboot-fetch.ts';
import {
  makeRelease,
  sha256Hex,
  startReleaseServer,
  type ReleaseFiles,
  type ReleaseServer,
} from '../helpers/release-server.ts';

const VERSION = '1.2.3';
const TAG = `v${VERSION}`;

let dir: string;
let bootDir: string;
let github: ReleaseServer;
let release: ReleaseFiles;
let config: LoadedConfig;
let database: BtyDatabase;

interface Running {
  app: FastifyInstance;
  base: string;
  cookie: string;
  messages: LiveMessage[];
}

let server: Running;

async function startServer(): Promise<Running> {
  const bus = new LiveBus();
  const messages: LiveMessage[] = [];
  bus.subscribe((m) => messages.push(m));
  const app = await buildApp({
    database,
    version: '9.9.9',
    artifactVersion: VERSION,
    bootDir,
    config,
    bus,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  const login = await fetch(`${base}/ui/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ password: 'bty-lab' }),
  });
  expect(login.status).toBe(204);
  const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
  return { app, base, cookie, messages };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-releases-'));
  bootDir = join(dir, 'boot');
  await mkdir(bootDir);
  github = await startReleaseServer();
  release = makeRelease(VERSION);
  github.publish(TAG, release);
  config = await loadConfig({
    configPaths: [join(dir, 'no-such.d')],
    env: { BTY_BOOT_RELEASE_URL: github.releaseUrl },
  });
  database = await openDatabase({ sqlitePath: join(dir, 'state.db') });
  await migrate(database);
  server = await startServer();
});

afterAll(async () => {
  await server?.app.close();
  await database?.close();
  await github?.close();
  await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
});

/** Any of the answers: a state, the listing, or an error. */
type Answer = Partial<ReleaseState> & {
  detail?: string;
  fetches?: ReleaseState[];
  boot_root?: string;
  max_parallel?: number;
};

async function api(
  method: string,
  path: string,
  options: { body?: string; type?: string; cookie?: string | null } = {},
): Promise<{ status: number; json: Answer }> {
  const headers: Record<string, string> = {};
  const cookie = options.cookie === undefined ? server.cookie : options.cookie;
  if (cookie) headers.cookie = cookie;
  if (options.body !== undefined) headers['content-type'] = options.type ?? 'application/json';
  const res = await fetch(`${server.base}${path}`, { method, headers, body: options.body });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : {}) as Answer };
}

/** The audit log's netboot events, newest first (logins are logged too). */
async function netbootEvents() {
  return listEvents(database.db, { subjectKind: 'netboot', limit: 100 });
}

async function fetchState(tag: string): Promise<ReleaseState | undefined> {
  const { json } = await api('GET', '/boot/releases');
  return json.fetches!.find((f) => f.tag === tag);
}

async function until(tag: string, status: string): Promise<ReleaseState> {
  for (let i = 0; i < 400; i++) {
    const state = await fetchState(tag);
    if (state?.status === status) return state;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`fetch ${tag} never became ${status}: ${JSON.stringify(await fetchState(tag))}`);
}

describe('the session gate', () => {
  it('401 before anything else, for each route', async () => {
    for (const [method, path, body] of [
      ['GET', '/boot/releases', undefined],
      ['POST', '/boot/releases', '{"tag": "not/valid"}'],
      ['DELETE', '/boot/releases/v1', undefined],
    ] as const) {
      const res = await api(method, path, { body, cookie: null });
      expect([method, res.status, res.json]).toEqual([method, 401, { detail: 'login required' }]);
    }
    expect(await netbootEvents()).toEqual([]);
  });
});

describe('validation', () => {
  it('a malformed body or tag is refused with the field named, and nothing is logged', async () => {
    const cases: Array<[string, number, RegExp]> = [
      ['{"tag": "a/b"}', 422, /^tag: "a\/b" may hold only letters/],
      ['{"tag": ""}', 422, /^tag: must not be empty/],
      ['{"tag": 5}', 422, /^tag: must be a string/],
      [`{"tag": "${'v'.repeat(129)}"}`, 422, /^tag: at most 128/],
      ['{"tag": "v1", "repo": "x/y"}', 422, /^body: unknown field "repo"/],
      ['["v1"]', 422, /^body: must be a JSON object/],
      ['{"tag": ', 400, /^body: invalid JSON/],
    ];
    for (const [body, status, detail] of cases) {
      const res = await api('POST', '/boot/releases', { body });
      expect([body, res.status]).toEqual([body, status]);
      expect(res.json.detail).toMatch(detail);
    }
    const wrongType = await api('POST', '/boot/releases', {
      body: '<tag/>',
      type: 'application/xml',
    });
    expect(wrongType.status).toBe(415);
    expect((await api('DELETE', '/boot/releases/bad%20tag')).status).toBe(422);
    expect(await api('DELETE', '/boot/releases/v7.7.7')).toEqual({
      status: 404,
      json: { detail: "no active release fetch for tag 'v7.7.7'" },
    });
    const { json } = await api('GET', '/boot/releases');
    expect(json).toEqual({ boot_root: bootDir, max_parallel: 1, fetches: [] });
    expect(await netbootEvents()).toEqual([]);
  });
});

describe('a fetch through the API', () => {
  it('202 with the queued state, then completed: files installed, events logged with the IP', async () => {
    // An empty body means `latest`, which is this version.
    const res = await api('POST', '/boot/releases', { body: '' });
    expect(res.status).toBe(202);
    expect(res.json).toMatchObject({ tag: TAG, status: 'queued', error: null });
    expect(res.json.artifacts!.map((a) => a.name)).toEqual(releaseFileNames(VERSION));

    const done = await until(TAG, 'completed');
    expect(done.base_url).toBe(`${github.releaseUrl}/${TAG}`);
    expect(done.artifacts.every((a) => a.status === 'completed')).toBe(true);
    expect(done.artifacts.map((a) => a.bytes_done)).toEqual(
      releaseFileNames(VERSION).map((n) => release.files.get(n)!.length),
    );
    expect((await readdir(bootDir)).sort()).toEqual([...release.files.keys()].sort());
    for (const [name, content] of release.files) {
      expect(sha256Hex(await readFile(join(bootDir, name)))).toBe(sha256Hex(content));
    }
    // GET /boot/{name} serves what was installed.
    const kernel = release.artifacts[0]!;
    const served = await fetch(`${server.base}/boot/${kernel}`);
    expect(Buffer.from(await served.arrayBuffer())).toEqual(release.files.get(kernel));

    const events = (await netbootEvents()).reverse();
    expect(events.map((e) => [e.kind, e.actor, e.source_ip])).toEqual([
      ['netboot.artifacts.fetch.requested', 'operator', '127.0.0.1'],
      ['netboot.artifacts.fetch.started', 'system', null],
      ['netboot.artifacts.fetched', 'system', null],
    ]);
    expect(server.messages).toContainEqual({
      type: 'netboot-fetch',
      tag: TAG,
      status: 'completed',
    });
  });

  it('dedup: asking again for a completed tag returns it and fetches nothing; the request is logged', async () => {
    const before = github.server.requests.length;
    const res = await api('POST', '/boot/releases', { body: `{"tag": "${TAG}"}` });
    expect(res.status).toBe(202);
    expect(res.json.status).toBe('completed');
    const latest = await api('POST', '/boot/releases', { body: '{"tag": "latest"}' });
    expect(latest.json.status).toBe('completed');
    await new Promise((r) => setTimeout(r, 100));
    expect(github.server.requests.length).toBe(before);
    const kinds = (await netbootEvents()).slice(0, 2).map((e) => e.kind);
    expect(kinds).toEqual([
      'netboot.artifacts.fetch.requested',
      'netboot.artifacts.fetch.requested',
    ]);
    // Cancelling a finished fetch returns it unchanged.
    const cancel = await api('DELETE', `/boot/releases/${TAG}`);
    expect([cancel.status, cancel.json.status]).toEqual([200, 'completed']);
  });

  it('a failed fetch reports the error; DELETE cancels a running one and nothing is installed', async () => {
    const failed = await api('POST', '/boot/releases', { body: '{"tag": "v0.0.1-gone"}' });
    expect(failed.status).toBe(202);
    const state = await until('v0.0.1-gone', 'failed');
    expect(state.error).toContain('HTTP 404');

    const slow = makeRelease(VERSION);
    github.publish('v1.2.3-slow', slow, {
      [slow.artifacts[2]!]: { stallAfterBytes: 200_000 },
    });
    const started = await api('POST', '/boot/releases', { body: '{"tag": "v1.2.3-slow"}' });
    expect(started.status).toBe(202);
    // A second request while it waits or runs is the same job.
    const again = await api('POST', '/boot/releases', { body: '{"tag": "v1.2.3-slow"}' });
    expect(['queued', 'running']).toContain(again.json.status);
    for (let i = 0; i < 400; i++) {
      const s = await fetchState('v1.2.3-slow');
      if (s?.artifacts[3]?.bytes_done === 200_000) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const cancel = await api('DELETE', '/boot/releases/v1.2.3-slow');
    expect(cancel.status).toBe(200);
    expect(cancel.json.tag).toBe('v1.2.3-slow');
    const cancelled = await until('v1.2.3-slow', 'cancelled');
    expect(cancelled.artifacts.map((a) => a.status)).toEqual([
      'completed',
      'completed',
      'completed',
      'cancelled',
    ]);
    // The boot folder still holds exactly the first release, no temp folder.
    expect((await readdir(bootDir)).sort()).toEqual([...release.files.keys()].sort());
    for (const [name, content] of release.files) {
      expect((await readFile(join(bootDir, name))).equals(content)).toBe(true);
    }
    const cancels = (await netbootEvents()).slice(0, 2).map((e) => [e.kind, e.actor]);
    expect(cancels).toEqual([
      ['netboot.artifacts.fetch.cancelled', 'system'],
      ['netboot.artifacts.fetch.cancelled', 'operator'],
    ]);
  });
});

describe('after a restart', () => {
  it('a new server on the same database shows the completed and failed fetches', async () => {
    await server.app.close();
    server = await startServer();
    const { json } = await api('GET', '/boot/releases');
    const byTag = new Map(json.fetches!.map((f) => [f.tag, f]));
    expect(byTag.get(TAG)).toMatchObject({
      status: 'completed',
      base_url: `${github.releaseUrl}/${TAG}`,
      error: null,
    });
    expect(byTag.get(TAG)!.artifacts.every((a) => a.status === 'completed')).toBe(true);
    expect(byTag.get('v0.0.1-gone')).toMatchObject({ status: 'failed' });
    expect(byTag.get('v0.0.1-gone')!.error).toContain('HTTP 404');
    // Upstream's rule: only fetched and failed outcomes come back.
    expect(byTag.has('v1.2.3-slow')).toBe(false);
    // Still deduplicated after the restart.
    const again = await api('POST', '/boot/releases', { body: `{"tag": "${TAG}"}` });
    expect(again.json.status).toBe('completed');
  });
});
