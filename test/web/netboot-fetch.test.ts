/**
 * The netboot release fetch manager against a local stand-in for GitHub's release downloads
 * (redirects, cuts, stalls, ignored ranges, wrong manifests): real HTTP on loopback, real files
 * in a real boot folder, a real SQLite audit log. Also the manifest rules (upstream-web §13.1).
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LiveBus, type LiveMessage } from '../../src/web/bus.ts';
import { migrate, openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { listEvents } from '../../src/web/db/events.ts';
import {
  expectedDigests,
  FETCH_TEMP_PREFIX,
  NetbootFetchManager,
  parseManifest,
  releaseBaseUrl,
  releaseFileNames,
  releaseTagProblem,
  resolveReleaseTag,
  type FetchTuning,
  type ReleaseState,
} from '../../src/web/netboot-fetch.ts';
import {
  makeRelease,
  RELEASE_REPO,
  sha256Hex,
  startReleaseServer,
  type ReleaseFiles,
  type ReleaseServer,
} from '../helpers/release-server.ts';

const VERSION = '1.2.3';
const TAG = `v${VERSION}`;
const HEX = 'ab'.repeat(32);

describe('manifest rules', () => {
  it('reads sha256sum lines: binary marks and ./ stripped, manifests skipped, case folded', () => {
    const text = [
      `${HEX.toUpperCase()}  *kernel`,
      '',
      `${'cd'.repeat(32)}  ./initrd`,
      `${'ef'.repeat(32)} other.sha256`,
      `${'01'.repeat(32)}\troot.squashfs   `,
      '   ',
    ].join('\r\n');
    expect([...parseManifest(text, 'm')]).toEqual([
      ['kernel', HEX],
      ['initrd', 'cd'.repeat(32)],
      ['root.squashfs', '01'.repeat(32)],
    ]);
  });

  it('refuses a line that is not "<sha256> <name>", naming its number', () => {
    expect(() => parseManifest(`${HEX} a\nnot a digest line\n`, 'M')).toThrow(
      /M line 2 is not "<sha256> <name>"/,
    );
    expect(() => parseManifest(`${HEX.slice(2)} short`, 'M')).toThrow(/line 1/);
    expect(() => parseManifest(`${HEX}`, 'M')).toThrow(/line 1/);
    expect(() => parseManifest(`${HEX} a\n${'cd'.repeat(32)} a`, 'M')).toThrow(
      /two different digests/,
    );
  });

  it('every artifact must be named, and nothing else', () => {
    const ours = ['k', 'i', 's'];
    const all = new Map(ours.map((n) => [n, HEX]));
    expect([...expectedDigests(all, ours, 'M').keys()]).toEqual(ours);
    expect(() => expectedDigests(new Map([['x', HEX]]), ours, 'M')).toThrow(
      /M names none of k, i, s \(it names x\)/,
    );
    expect(() => expectedDigests(new Map(), ours, 'M')).toThrow(/names no file/);
    expect(() =>
      expectedDigests(
        new Map([
          ['k', HEX],
          ['i', HEX],
        ]),
        ours,
        'M',
      ),
    ).toThrow(/M has no digest for s/);
    expect(() => expectedDigests(new Map([...all, ['y', HEX]]), ours, 'M')).toThrow(
      /M names y, which this fetch does not download/,
    );
  });

  it('tags: latest and empty mean this version; the base URL follows release_url or GitHub', () => {
    expect(resolveReleaseTag('latest', VERSION)).toBe(TAG);
    expect(resolveReleaseTag('', VERSION)).toBe(TAG);
    expect(resolveReleaseTag(' v2.0.0 ', VERSION)).toBe('v2.0.0');
    expect(releaseTagProblem('v1.2.3-rc_1')).toBeNull();
    for (const bad of ['', 'a/b', '..%2f', 'x y', 'ä', 'v'.repeat(129)]) {
      expect(releaseTagProblem(bad)).not.toBeNull();
    }
    expect(releaseBaseUrl({ releaseUrl: '', repo: 'me/fork' }, TAG)).toBe(
      `https://github.com/me/fork/releases/download/${TAG}`,
    );
    expect(releaseBaseUrl({ releaseUrl: 'http://mirror/r//', repo: 'x/y' }, TAG)).toBe(
      `http://mirror/r/${TAG}`,
    );
    expect(releaseFileNames(VERSION)).toEqual([
      `bty-netboot-pc-x86_64-v${VERSION}.sha256`,
      `bty-netboot-pc-x86_64-v${VERSION}.vmlinuz`,
      `bty-netboot-pc-x86_64-v${VERSION}.initrd`,
      `bty-netboot-pc-x86_64-v${VERSION}.squashfs`,
    ]);
  });
});

let dir: string;
let github: ReleaseServer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-netboot-fetch-'));
  github = await startReleaseServer();
});

afterAll(async () => {
  await github?.close();
  // The database's checkpoint worker may still be closing its files.
  await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
});

/** One manager over its own database and boot folder. */
interface Rig {
  manager: NetbootFetchManager;
  database: BtyDatabase;
  bootDir: string;
  messages: LiveMessage[];
}

const FAST: Partial<FetchTuning> = {
  retryDelayMs: 10,
  maxRetryDelayMs: 50,
  idleTimeoutMs: 5_000,
  progressIntervalMs: 0,
};

let rigs: Rig[] = [];
let counter = 0;

async function openRig(
  tuning: Partial<FetchTuning> = FAST,
  reuse?: { database: BtyDatabase; bootDir: string },
): Promise<Rig> {
  let database = reuse?.database;
  let bootDir = reuse?.bootDir;
  if (!database || !bootDir) {
    const root = join(dir, `rig-${++counter}`);
    bootDir = join(root, 'boot');
    await mkdir(bootDir, { recursive: true });
    database = await openDatabase({ sqlitePath: join(root, 'state.db') });
    await migrate(database);
  }
  const bus = new LiveBus();
  const messages: LiveMessage[] = [];
  bus.subscribe((m) => messages.push(m));
  const manager = new NetbootFetchManager(
    {
      database,
      bus,
      bootDir,
      artifactVersion: VERSION,
      now: () => new Date(),
      source: () => ({ releaseUrl: github.releaseUrl, repo: RELEASE_REPO }),
    },
    tuning,
  );
  const rig = { manager, database, bootDir, messages };
  rigs.push(rig);
  return rig;
}

afterEach(async () => {
  for (const rig of rigs) {
    await rig.manager.stop();
    await rig.database.close().catch(() => undefined);
  }
  rigs = [];
});

let release: ReleaseFiles;
beforeEach(() => {
  release = makeRelease(VERSION);
  github.publish(TAG, release);
});

async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>) {
  for (let i = 0; i < 400; i++) {
    const value = await probe();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function settled(rig: Rig, tag = TAG): Promise<ReleaseState> {
  await rig.manager.idle();
  return (await rig.manager.get(tag))!;
}

async function bootFolder(rig: Rig): Promise<string[]> {
  return (await readdir(rig.bootDir)).sort();
}

async function eventsOf(rig: Rig) {
  return (await listEvents(rig.database.db, { limit: 100 })).reverse();
}

describe('a fetch', () => {
  it('downloads through the redirect, verifies, installs the four files, and logs it', async () => {
    const rig = await openRig();
    const { state, created } = await rig.manager.request('latest', '192.0.2.7');
    expect(created).toBe(true);
    expect(state.tag).toBe(TAG);
    expect(state.status).toBe('queued');
    expect(state.artifacts.map((a) => [a.name, a.status])).toEqual(
      releaseFileNames(VERSION).map((n) => [n, 'queued']),
    );

    const done = await settled(rig);
    expect(done.status).toBe('completed');
    expect(done.error).toBeNull();
    expect(done.base_url).toBe(`${github.releaseUrl}/${TAG}`);
    const total = [...release.files.values()].reduce((s, b) => s + b.length, 0);
    expect(done.bytes_done).toBe(total);
    expect(done.bytes_total).toBe(total);
    for (const a of done.artifacts) {
      const size = release.files.get(a.name)!.length;
      expect(a).toMatchObject({ status: 'completed', bytes_done: size, bytes_total: size });
      expect(a.finished_at).not.toBeNull();
    }
    // Installed whole, no temp folder left.
    expect(await bootFolder(rig)).toEqual([...release.files.keys()].sort());
    for (const [name, content] of release.files) {
      expect(sha256Hex(await readFile(join(rig.bootDir, name)))).toBe(sha256Hex(content));
    }
    // GitHub's redirect was followed to where the bytes are.
    const cdn = github.server.requests.filter((r) => r.path.startsWith(`/cdn/${TAG}/`));
    expect(cdn.map((r) => r.path.split('/').pop()).slice(-4)).toEqual(releaseFileNames(VERSION));

    const events = await eventsOf(rig);
    expect(events.map((e) => [e.kind, e.actor])).toEqual([
      ['netboot.artifacts.fetch.requested', 'operator'],
      ['netboot.artifacts.fetch.started', 'system'],
      ['netboot.artifacts.fetched', 'system'],
    ]);
    expect(events[0]).toMatchObject({
      subject_kind: 'netboot',
      subject_id: TAG,
      source_ip: '192.0.2.7',
      details: { tag: TAG },
    });
    expect(events[1]!.details).toMatchObject({ tag: TAG, base_url: done.base_url });
    expect(events[2]!.details).toMatchObject({
      tag: TAG,
      base_url: done.base_url,
      total_bytes: total,
    });
    expect(events[2]!.details!.artifacts).toEqual(
      releaseFileNames(VERSION).map((name) => ({
        name,
        size_bytes: release.files.get(name)!.length,
        sha256: sha256Hex(release.files.get(name)!),
      })),
    );
    // The live bus heard each state change and the audit events.
    const statuses = rig.messages.flatMap((m) => (m.type === 'netboot-fetch' ? [m.status] : []));
    expect(statuses[0]).toBe('queued');
    expect(statuses).toContain('running');
    expect(statuses.at(-1)).toBe('completed');
    expect(rig.messages.filter((m) => m.type === 'event')).toHaveLength(3);
  });

  it('resumes a cut download with a Range request and installs the right bytes', async () => {
    const rig = await openRig();
    const seen = github.server.requests.length;
    const squashfs = release.artifacts[2]!;
    github.replace(TAG, squashfs, release.files.get(squashfs)!, {
      cutEveryBytes: 400_000,
      maxCuts: 2,
    });
    await rig.manager.request(TAG, null);
    const done = await settled(rig);
    expect(done.status).toBe('completed');
    const ranged = github.server.requests
      .slice(seen)
      .filter((r) => r.path === github.cdnPath(TAG, squashfs) && r.range !== null);
    // The server cut twice; each retry asked for the rest (a cut may lose bytes in flight, so
    // the offsets are what the client had, at most where the server cut).
    expect(ranged).toHaveLength(2);
    const offsets = ranged.map((r) => Number(/^bytes=(\d+)-$/.exec(r.range!)![1]));
    expect(ranged.every((r) => r.status === 206)).toBe(true);
    expect(offsets[0]).toBeGreaterThan(0);
    expect(offsets[0]).toBeLessThanOrEqual(400_000);
    expect(offsets[1]).toBeGreaterThan(offsets[0]!);
    expect(sha256Hex(await readFile(join(rig.bootDir, squashfs)))).toBe(
      sha256Hex(release.files.get(squashfs)!),
    );
  });

  it('starts a file over when the server answers a Range request with the whole file', async () => {
    const rig = await openRig();
    const seen = github.server.requests.length;
    const initrd = release.artifacts[1]!;
    github.replace(TAG, initrd, release.files.get(initrd)!, {
      cutEveryBytes: 100_000,
      maxCuts: 1,
      ignoreRange: true,
    });
    await rig.manager.request(TAG, null);
    const done = await settled(rig);
    expect(done.status).toBe('completed');
    const tries = github.server.requests
      .slice(seen)
      .filter((r) => r.path === github.cdnPath(TAG, initrd));
    expect(tries).toHaveLength(2);
    expect([tries[0]!.range, tries[0]!.status, tries[0]!.cut]).toEqual([null, 200, true]);
    // Asked for the rest, got the whole file again: taken from the start.
    expect(tries[1]!.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect([tries[1]!.status, tries[1]!.cut]).toEqual([200, false]);
    expect(await readFile(join(rig.bootDir, initrd))).toEqual(release.files.get(initrd));
  });

  it('a file that fails its manifest digest installs nothing and leaves the old files as they were', async () => {
    const rig = await openRig();
    // An earlier install of two of the files, and an unrelated file.
    const old = new Map([
      [release.artifacts[0]!, Buffer.from('old kernel')],
      [release.artifacts[2]!, Buffer.from('old squashfs')],
      ['memtest86.bin', Buffer.from('keep me')],
    ]);
    for (const [name, content] of old) await writeFile(join(rig.bootDir, name), content);
    const wrong = Buffer.from(
      release.files
        .get(release.manifest)!
        .toString()
        .replace(sha256Hex(release.files.get(release.artifacts[2]!)!), 'ee'.repeat(32)),
    );
    github.replace(TAG, release.manifest, wrong);

    await rig.manager.request(TAG, null);
    const done = await settled(rig);
    expect(done.status).toBe('failed');
    expect(done.error).toContain(`${release.artifacts[2]} does not match ${release.manifest}`);
    expect(done.error).toContain('ee'.repeat(32));
    expect(done.artifact).toBe(release.artifacts[2]);
    expect(done.artifacts.map((a) => a.status)).toEqual([
      'completed',
      'completed',
      'completed',
      'failed',
    ]);
    // Nothing new, nothing changed, no temp folder.
    expect(await bootFolder(rig)).toEqual([...old.keys()].sort());
    for (const [name, content] of old) {
      expect((await readFile(join(rig.bootDir, name))).equals(content)).toBe(true);
    }
    const failed = (await eventsOf(rig)).at(-1)!;
    expect(failed.kind).toBe('netboot.artifacts.fetch.failed');
    expect(failed.details).toMatchObject({ tag: TAG, error: done.error });
  });

  it('a manifest naming none of our files fails before any artifact is downloaded', async () => {
    const rig = await openRig();
    github.replace(TAG, release.manifest, Buffer.from(`${HEX}  something-else.iso\n`));
    const before = github.server.requests.length;
    await rig.manager.request(TAG, null);
    const done = await settled(rig);
    expect(done.status).toBe('failed');
    expect(done.error).toMatch(/names none of .*\.vmlinuz.*\(it names something-else\.iso\)/);
    const asked = github.server.requests.slice(before).map((r) => r.path.split('/').pop());
    expect(asked.every((n) => n === release.manifest)).toBe(true);
    expect(await bootFolder(rig)).toEqual([]);
  });

  it('a release that does not exist fails with the HTTP status and the URL', async () => {
    const rig = await openRig();
    await rig.manager.request('v0.0.0-missing', null);
    const done = await settled(rig, 'v0.0.0-missing');
    expect(done.status).toBe('failed');
    expect(done.error).toContain(`${github.releaseUrl}/v0.0.0-missing/${release.manifest}`);
    expect(done.error).toContain('HTTP 404');
    expect(await bootFolder(rig)).toEqual([]);
  });

  it('a server that goes quiet hits the idle timeout, retries, then gives up', async () => {
    const rig = await openRig({ ...FAST, idleTimeoutMs: 300, maxAttemptsPerFile: 2 });
    const seen = github.server.requests.length;
    const kernel = release.artifacts[0]!;
    github.replace(TAG, kernel, release.files.get(kernel)!, { stallAfterBytes: 0 });
    await rig.manager.request(TAG, null);
    const done = await settled(rig);
    expect(done.status).toBe('failed');
    expect(done.error).toMatch(/failed 2 times in a row at byte 0: no data for 0\.3 s/);
    expect(
      github.server.requests.slice(seen).filter((r) => r.path === github.cdnPath(TAG, kernel)),
    ).toHaveLength(2);
    expect(await bootFolder(rig)).toEqual([]);
  });
});

describe('jobs', () => {
  it('cancel while running: cancelled, nothing installed, temp folder gone', async () => {
    const rig = await openRig();
    const squashfs = release.artifacts[2]!;
    github.replace(TAG, squashfs, release.files.get(squashfs)!, { stallAfterBytes: 300_000 });
    await rig.manager.request(TAG, null);
    await until('the squashfs to be under way', async () => {
      const s = await rig.manager.get(TAG);
      const file = s?.artifacts.find((a) => a.name === squashfs);
      return file?.status === 'running' && file.bytes_done === 300_000;
    });
    expect(
      (await readdir(rig.bootDir)).filter((n) => n.startsWith(FETCH_TEMP_PREFIX)),
    ).toHaveLength(1);

    const answer = await rig.manager.cancel(TAG, '192.0.2.9');
    expect(answer?.status).toBe('running'); // the flag is set; the download notices
    const done = await settled(rig);
    expect(done.status).toBe('cancelled');
    expect(done.error).toBeNull();
    expect(done.artifacts.map((a) => a.status)).toEqual([
      'completed',
      'completed',
      'completed',
      'cancelled',
    ]);
    expect(await bootFolder(rig)).toEqual([]);
    const kinds = (await eventsOf(rig)).map((e) => [e.kind, e.actor, e.details?.source]);
    expect(kinds.slice(-2)).toEqual([
      ['netboot.artifacts.fetch.cancelled', 'operator', 'operator'],
      ['netboot.artifacts.fetch.cancelled', 'system', 'operator'],
    ]);
    // A cancelled tag may be fetched again.
    github.replace(TAG, squashfs, release.files.get(squashfs)!);
    const again = await rig.manager.request(TAG, null);
    expect(again.created).toBe(true);
    expect((await settled(rig)).status).toBe('completed');
  });

  it('one at a time: a second tag waits; a queued job cancels at once; duplicates are the same job', async () => {
    const rig = await openRig();
    const other = makeRelease(VERSION);
    github.publish('v1.2.3-b', other);
    const squashfs = release.artifacts[2]!;
    github.replace(TAG, squashfs, release.files.get(squashfs)!, { stallAfterBytes: 100_000 });
    await rig.manager.request(TAG, null);
    await rig.manager.request('v1.2.3-b', null);
    await until('the first fetch to be running', async () => {
      const s = await rig.manager.get(TAG);
      return s?.artifacts[3]?.bytes_done === 100_000;
    });
    expect((await rig.manager.get('v1.2.3-b'))?.status).toBe('queued');
    // Asking again for either is the same job.
    expect((await rig.manager.request(TAG, null)).created).toBe(false);
    expect((await rig.manager.request('v1.2.3-b', null)).created).toBe(false);

    const cancelled = await rig.manager.cancel('v1.2.3-b', null);
    expect(cancelled?.status).toBe('cancelled');
    expect(cancelled?.artifacts.every((a) => a.status === 'cancelled')).toBe(true);
    expect(await rig.manager.cancel('v9.9.9', null)).toBeNull();

    github.replace(TAG, squashfs, release.files.get(squashfs)!);
    await rig.manager.cancel(TAG, null);
    await rig.manager.idle();
    // v1.2.3-b never ran: nothing of it was requested.
    expect(github.server.requests.some((r) => r.path.includes('/v1.2.3-b/'))).toBe(false);
    const list = await rig.manager.list();
    expect(list.map((s) => [s.tag, s.status])).toEqual([
      ['v1.2.3-b', 'cancelled'],
      [TAG, 'cancelled'],
    ]);
    const requested = (await eventsOf(rig)).filter(
      (e) => e.kind === 'netboot.artifacts.fetch.requested',
    );
    expect(requested).toHaveLength(4);
  });

  it('a completed tag is not fetched again while its files are in place', async () => {
    const rig = await openRig();
    await rig.manager.request(TAG, null);
    expect((await settled(rig)).status).toBe('completed');
    const served = github.server.requests.length;
    const again = await rig.manager.request('latest', null);
    expect(again.created).toBe(false);
    expect(again.state.status).toBe('completed');
    await rig.manager.idle();
    expect(github.server.requests.length).toBe(served);
    // Once a file is gone, asking again fetches again.
    await rm(join(rig.bootDir, release.artifacts[0]!));
    expect((await rig.manager.request(TAG, null)).created).toBe(true);
    expect((await settled(rig)).status).toBe('completed');
  });

  it('stop() aborts a running fetch and cleans up', async () => {
    const rig = await openRig();
    const squashfs = release.artifacts[2]!;
    github.replace(TAG, squashfs, release.files.get(squashfs)!, { stallAfterBytes: 50_000 });
    await rig.manager.request(TAG, null);
    await until('the squashfs to be under way', async () => {
      const s = await rig.manager.get(TAG);
      return s?.artifacts[3]?.bytes_done === 50_000;
    });
    await rig.manager.stop();
    expect((await rig.manager.get(TAG))?.status).toBe('cancelled');
    expect(await bootFolder(rig)).toEqual([]);
    const last = (await eventsOf(rig)).at(-1)!;
    expect([last.kind, last.details?.source]).toEqual([
      'netboot.artifacts.fetch.cancelled',
      'shutdown',
    ]);
  });

  it('a temp folder a killed fetch left in the boot folder is removed when the manager starts', async () => {
    const first = await openRig();
    const stale = join(first.bootDir, `${FETCH_TEMP_PREFIX}killed`);
    await mkdir(stale, { recursive: true });
    await writeFile(join(stale, 'partial.squashfs'), Buffer.alloc(4096, 1));
    await first.manager.stop();
    rigs = rigs.filter((r) => r !== first);
    const second = await openRig(FAST, { database: first.database, bootDir: first.bootDir });
    await second.manager.list();
    expect((await bootFolder(second)).some((n) => n.startsWith(FETCH_TEMP_PREFIX))).toBe(false);
  });

  it('history: a new manager on the same database shows the newest outcome per tag', async () => {
    const first = await openRig();
    await first.manager.request(TAG, null);
    expect((await settled(first)).status).toBe('completed');
    await first.manager.request('v0.0.0-gone', null);
    expect((await settled(first, 'v0.0.0-gone')).status).toBe('failed');
    await first.manager.stop();

    const second = await openRig(FAST, { database: first.database, bootDir: first.bootDir });
    rigs = rigs.filter((r) => r !== first);
    const list = await second.manager.list();
    const completed = list.find((s) => s.tag === TAG)!;
    expect(completed.status).toBe('completed');
    expect(completed.base_url).toBe(`${github.releaseUrl}/${TAG}`);
    expect(completed.bytes_done).toBe(
      [...release.files.values()].reduce((s, b) => s + b.length, 0),
    );
    expect(completed.artifacts.map((a) => [a.status, a.bytes_done])).toEqual(
      releaseFileNames(VERSION).map((n) => ['completed', release.files.get(n)!.length]),
    );
    const failed = list.find((s) => s.tag === 'v0.0.0-gone')!;
    expect(failed.status).toBe('failed');
    expect(failed.error).toContain('HTTP 404');
    expect(failed.artifacts[0]!.status).toBe('failed');
    // Completed with its files in place: no new fetch.
    expect((await second.manager.request(TAG, null)).created).toBe(false);
  });
});
