/**
 * Netboot release fetches (upstream-web §13.1, §9.14): the live-environment trio of this
 * version (`bty-netboot-pc-x86_64-v<ver>.{vmlinuz,initrd,squashfs}`) and its `.sha256` manifest,
 * downloaded from a release base URL into the boot folder.
 *
 * - Streamed into a dot-named temp folder inside the boot folder (same file system, so the
 *   final rename never copies), with resume: a cut stream continues with `Range: bytes=N-`
 *   (a 200 to that restarts the file), a bounded number of times in a row without progress.
 * - Verified against the manifest before anything is installed; installed by renames, with
 *   the previous files kept aside until every rename succeeded, so a failure at any point
 *   leaves the boot folder as it was. The temp folder is always removed.
 * - One job at a time, keyed by tag; progress per file and in total; cancel; an idle timeout.
 * - Lifecycle events in the audit log and messages on the live bus; the newest outcome per
 *   tag is read back from the audit log when the manager starts, so history survives restarts.
 *
 * Differences from upstream, on purpose:
 * - Upstream also fetches the ramboot pair (`bty-ramboot-init-x86_64-v<ver>.{vmlinuz,initrd}`)
 *   and its manifest. bty has no ramboot yet, so those three files are not ours to fetch.
 * - The manifest comes first: a missing release or a malformed manifest fails in one small
 *   request, before gigabytes of squashfs.
 * - A tag of `latest` (or empty) is resolved to `v<ver>` before it becomes the job's key, so
 *   `latest` and `v<ver>` are one job.
 * - A completed fetch stops a new one for its tag only while its files are still in the boot
 *   folder (upstream: forever, even after the files were deleted).
 */
import { createHash, type Hash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import {
  link,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
} from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpTransportError, openHttp } from '../net/http-client.ts';
import { auditMessage, type LiveBus } from './bus.ts';
import type { WebContext } from './context.ts';
import type { BtyDatabase } from './db/database.ts';
import { appendEvent, queryEvents, type NewEvent } from './db/events.ts';
import type { EventKind } from './event-kinds.ts';
import { liveArtifactNames } from './netboot-files.ts';

// ---------------------------------------------------------------------------------------------
// Names, tags and URLs
// ---------------------------------------------------------------------------------------------

/** Upstream's tag rule (§9.14). */
export const RELEASE_TAG = /^[A-Za-z0-9._-]+$/;
export const MAX_TAG_LENGTH = 128;
export const DEFAULT_RELEASE_REPO = 'safl/bty';

/** Why `tag` cannot name a release, or null when it can. */
export function releaseTagProblem(tag: string): string | null {
  if (tag.length === 0) return 'tag: must not be empty';
  if (tag.length > MAX_TAG_LENGTH) return `tag: at most ${MAX_TAG_LENGTH} characters`;
  if (!RELEASE_TAG.test(tag)) {
    return `tag: ${JSON.stringify(tag.slice(0, 200))} may hold only letters, digits, '.', '_' and '-'`;
  }
  return null;
}

/**
 * The tag a fetch really uses: `latest` or empty is `v<version>`. The assets carry the version
 * in their names, and GitHub's `latest` redirect would lead to another version's names.
 */
export function resolveReleaseTag(tag: string | undefined, version: string): string {
  const trimmed = (tag ?? '').trim();
  return trimmed === '' || trimmed === 'latest' ? `v${version}` : trimmed;
}

/** The manifest of the live-environment artifacts of `version`. */
export function manifestName(version: string): string {
  return `bty-netboot-pc-x86_64-v${version}.sha256`;
}

/** What a fetch downloads, in order: the manifest, then the three artifacts. */
export function releaseFileNames(version: string): string[] {
  return [manifestName(version), ...liveArtifactNames(version)];
}

export interface ReleaseSource {
  /** `[boot] release_url`; empty: GitHub's release downloads of `repo`. */
  releaseUrl: string;
  /** `[boot] release_repo`. */
  repo: string;
}

/** `release_url`, or `https://github.com/<repo>/releases/download`; no trailing `/`. */
export function releaseRootUrl(source: ReleaseSource): string {
  const root =
    source.releaseUrl.trim() !== ''
      ? source.releaseUrl.trim()
      : `https://github.com/${source.repo || DEFAULT_RELEASE_REPO}/releases/download`;
  return root.replace(/\/+$/, '');
}

/** `<release root>/<tag>`: the folder the release's files are in. */
export function releaseBaseUrl(source: ReleaseSource, tag: string): string {
  return `${releaseRootUrl(source)}/${encodeURIComponent(tag)}`;
}

/** The server's `[boot]` settings (defaults when it runs without a loaded configuration). */
export function releaseSourceOf(ctx: Pick<WebContext, 'config'>): ReleaseSource {
  return {
    releaseUrl: ctx.config?.config.boot.release_url ?? '',
    repo: ctx.config?.config.boot.release_repo ?? DEFAULT_RELEASE_REPO,
  };
}

// ---------------------------------------------------------------------------------------------
// The manifest
// ---------------------------------------------------------------------------------------------

/** A fetch that cannot succeed as asked: the message is what the operator reads. */
export class ReleaseFetchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReleaseFetchError';
  }
}

/**
 * `sha256sum` output: `<hex> <name>` per non-blank line (upstream's rules, §13.1): leading
 * `*`, `.` and `/` are stripped from the name (binary-mode marks, `./` prefixes), and lines
 * naming a manifest are skipped. Anything else on a line is an error naming it. Returns
 * name → lower-case digest.
 */
export function parseManifest(text: string, source: string): Map<string, string> {
  const digests = new Map<string, string>();
  const lines = text.split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '') continue;
    const m = /^([0-9A-Fa-f]{64})\s+(.+)$/.exec(line);
    if (!m) {
      throw new ReleaseFetchError(
        `${source} line ${i + 1} is not "<sha256> <name>": ${JSON.stringify(line.slice(0, 120))}`,
      );
    }
    const name = m[2]!.trim().replace(/^[*./]+/, '');
    if (name === '' || name.endsWith('.sha256')) continue;
    const digest = m[1]!.toLowerCase();
    const earlier = digests.get(name);
    if (earlier !== undefined && earlier !== digest) {
      throw new ReleaseFetchError(`${source} gives ${name} two different digests`);
    }
    digests.set(name, digest);
  }
  return digests;
}

/**
 * The digest the manifest gives each of `artifacts`. A manifest that names none of them, leaves
 * one out, or names a file this fetch does not download is an error (upstream: the named file
 * must exist).
 */
export function expectedDigests(
  manifest: Map<string, string>,
  artifacts: readonly string[],
  source: string,
): Map<string, string> {
  const ours = new Set(artifacts);
  const named = [...manifest.keys()];
  if (!named.some((n) => ours.has(n))) {
    throw new ReleaseFetchError(
      `${source} names none of ${artifacts.join(', ')}` +
        (named.length > 0 ? ` (it names ${named.slice(0, 5).join(', ')})` : ' (it names no file)'),
    );
  }
  const foreign = named.filter((n) => !ours.has(n));
  if (foreign.length > 0) {
    throw new ReleaseFetchError(
      `${source} names ${foreign.slice(0, 5).join(', ')}, which this fetch does not download`,
    );
  }
  const missing = artifacts.filter((a) => !manifest.has(a));
  if (missing.length > 0) {
    throw new ReleaseFetchError(`${source} has no digest for ${missing.join(', ')}`);
  }
  return new Map(artifacts.map((a) => [a, manifest.get(a)!]));
}

// ---------------------------------------------------------------------------------------------
// Downloading one file, with resume
// ---------------------------------------------------------------------------------------------

export interface FetchTuning {
  /** Fail a request that sends nothing for this long (headers or body). */
  idleTimeoutMs: number;
  /** Failed attempts in a row without a byte of progress before a file is given up. */
  maxAttemptsPerFile: number;
  /** Wait before the first retry; doubled each time, at most `maxRetryDelayMs`. */
  retryDelayMs: number;
  maxRetryDelayMs: number;
  /** Bus messages for progress at most this often (state changes always go out). */
  progressIntervalMs: number;
}

export const DEFAULT_FETCH_TUNING: FetchTuning = {
  idleTimeoutMs: 300_000,
  maxAttemptsPerFile: 5,
  retryDelayMs: 500,
  maxRetryDelayMs: 10_000,
  progressIntervalMs: 1_000,
};

const MAX_REDIRECTS = 10;
const USER_AGENT = 'bty-web release-fetcher';

/** A break worth another attempt (network, timeout, a cut, a 5xx). */
class RetryableFetchError extends Error {}

function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

function parseContentRange(
  value: string | undefined,
): { start: number; total: number | null } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value?.trim() ?? '');
  if (!m) return null;
  return { start: Number(m[1]), total: m[3] === '*' ? null : Number(m[3]) };
}

function strongEtag(value: string | string[] | undefined): string | null {
  return typeof value === 'string' && value.startsWith('"') ? value : null;
}

export interface DownloadedFile {
  name: string;
  size: number;
  sha256: string;
}

interface DownloadHooks {
  /** The file's size once a response told it (null: chunked, unknown). */
  onSize(total: number | null): void;
  onBytes(done: number): void;
  /** A retry is about to start at `offset` (0: from the start again). */
  onRetry?(offset: number, why: string): void;
}

/**
 * `GET url` into `path` with resume. The SHA-256 is taken while writing (kept across resumes,
 * restarted with the file), so nothing is read back.
 */
async function downloadFile(
  url: string,
  path: string,
  name: string,
  signal: AbortSignal,
  tuning: FetchTuning,
  hooks: DownloadHooks,
): Promise<DownloadedFile> {
  const file = await open(path, 'w', 0o644);
  let have = 0;
  let hash: Hash = createHash('sha256');
  let total: number | null = null;
  let etag: string | null = null;
  let failures = 0;
  const restart = async () => {
    await file.truncate(0);
    have = 0;
    hash = createHash('sha256');
    hooks.onBytes(0);
  };
  try {
    for (;;) {
      const before = have;
      try {
        const done = await attempt();
        if (done) return { name, size: have, sha256: hash.digest('hex') };
      } catch (err) {
        if (signal.aborted) throw err;
        if (!(err instanceof RetryableFetchError)) throw err;
        failures = have > before ? 1 : failures + 1;
        if (failures >= tuning.maxAttemptsPerFile) {
          throw new ReleaseFetchError(
            `download of ${url} failed ${failures} times in a row at byte ${have}: ${err.message}`,
          );
        }
        const delay = Math.min(tuning.retryDelayMs * 2 ** (failures - 1), tuning.maxRetryDelayMs);
        hooks.onRetry?.(have, err.message);
        await sleep(delay, undefined, { signal });
      }
    }
  } finally {
    await file.close();
  }

  /** One request from `have`; true when the file is complete. */
  async function attempt(): Promise<boolean> {
    const headers: Record<string, string> = { 'user-agent': USER_AGENT };
    if (have > 0) {
      headers.range = `bytes=${have}-`;
      if (etag !== null) headers['if-range'] = etag;
    }
    // One watchdog for the headers and the body: it restarts with every chunk.
    const idle = new AbortController();
    const watchdog = setTimeout(() => idle.abort(), tuning.idleTimeoutMs);
    const quiet = () => new RetryableFetchError(`no data for ${tuning.idleTimeoutMs / 1000} s`);
    try {
      let opened;
      try {
        opened = await openHttp(url, {
          headers,
          signal: AbortSignal.any([signal, idle.signal]),
          maxRedirects: MAX_REDIRECTS,
        });
      } catch (err) {
        if (signal.aborted) throw err;
        if (idle.signal.aborted) throw quiet();
        if (err instanceof HttpTransportError && err.kind === 'network') {
          throw new RetryableFetchError(err.message);
        }
        if (err instanceof HttpTransportError) {
          throw new ReleaseFetchError(`${url}: ${err.message}`);
        }
        throw err;
      }
      const { res } = opened;
      try {
        watchdog.refresh();
        if (await acceptResponse(res)) return true;
        for await (const chunk of res as AsyncIterable<Buffer>) {
          watchdog.refresh();
          if (total !== null && have + chunk.length > total) {
            throw new ReleaseFetchError(`${url} sent more than its ${total} bytes`);
          }
          await file.write(chunk, 0, chunk.length, have);
          hash.update(chunk);
          have += chunk.length;
          hooks.onBytes(have);
        }
        if (total !== null && have < total) {
          throw new RetryableFetchError(`the connection closed at byte ${have} of ${total}`);
        }
        return true;
      } catch (err) {
        if (signal.aborted) throw err;
        if (err instanceof ReleaseFetchError || err instanceof RetryableFetchError) throw err;
        if (idle.signal.aborted) throw quiet();
        // A socket error mid-body (a reset): the bytes so far are kept.
        const code = (err as NodeJS.ErrnoException).code;
        throw new RetryableFetchError(code ?? (err as Error).message);
      } finally {
        res.destroy();
      }
    } finally {
      clearTimeout(watchdog);
    }
  }

  /**
   * Checks the status and headers against what was asked: true when the file turns out to be
   * complete already; throws when the answer is not (the rest of) the file.
   */
  async function acceptResponse(res: IncomingMessage): Promise<boolean> {
    const status = res.statusCode ?? 0;
    if (have > 0 && status === 416 && total !== null && have >= total) return true;
    if (status >= 400) {
      if (isRetryableStatus(status)) throw new RetryableFetchError(`HTTP ${status}`);
      throw new ReleaseFetchError(`${url} answered HTTP ${status}`);
    }
    if (status === 200) {
      // A fresh start, or a server that ignored (or, by If-Range, refused) the range.
      if (have > 0) await restart();
      const length = Number(res.headers['content-length']);
      total = Number.isSafeInteger(length) && length >= 0 ? length : null;
      etag = strongEtag(res.headers.etag);
      hooks.onSize(total);
      return false;
    }
    if (status === 206 && have > 0) {
      const range = parseContentRange(res.headers['content-range']);
      if (range === null || range.start !== have) {
        throw new ReleaseFetchError(
          `${url} resumed at the wrong place (asked byte ${have}, got ` +
            `${JSON.stringify(res.headers['content-range'] ?? 'no Content-Range')})`,
        );
      }
      if (range.total !== null && total !== null && range.total !== total) {
        // The file changed on the server: start it over (the digests decide in the end).
        await restart();
        throw new RetryableFetchError(`the file changed size (${total} → ${range.total})`);
      }
      total = range.total ?? total;
      return false;
    }
    throw new ReleaseFetchError(`${url} answered HTTP ${status}, not the file`);
  }
}

// ---------------------------------------------------------------------------------------------
// One whole fetch: download, verify, install
// ---------------------------------------------------------------------------------------------

export interface FetchReleaseOptions {
  baseUrl: string;
  /** The version whose files are fetched (the names carry it). */
  version: string;
  bootDir: string;
  signal: AbortSignal;
  tuning?: Partial<FetchTuning>;
  onFileStart?(name: string): void;
  onFileSize?(name: string, total: number | null): void;
  onFileBytes?(name: string, done: number): void;
  onFileDone?(name: string, file: DownloadedFile): void;
}

export interface FetchedRelease {
  baseUrl: string;
  files: DownloadedFile[];
  totalBytes: number;
}

/** The prefix of the temp folders (dot names are never served nor listed). */
export const FETCH_TEMP_PREFIX = '.release-fetch-';

/**
 * Downloads the manifest and the three artifacts into a temp folder inside `bootDir`, checks
 * every artifact against the manifest, then renames the four into `bootDir`. On any failure
 * (cancel included) nothing in `bootDir` has changed and the temp folder is gone.
 */
export async function fetchRelease(options: FetchReleaseOptions): Promise<FetchedRelease> {
  const tuning = { ...DEFAULT_FETCH_TUNING, ...options.tuning };
  const manifest = manifestName(options.version);
  const artifacts = liveArtifactNames(options.version);
  await mkdir(options.bootDir, { recursive: true });
  const temp = await mkdtemp(join(options.bootDir, FETCH_TEMP_PREFIX));
  try {
    const files: DownloadedFile[] = [];
    const get = async (name: string): Promise<DownloadedFile> => {
      options.signal.throwIfAborted();
      options.onFileStart?.(name);
      const done = await downloadFile(
        `${options.baseUrl}/${encodeURIComponent(name)}`,
        join(temp, name),
        name,
        options.signal,
        tuning,
        {
          onSize: (total) => options.onFileSize?.(name, total),
          onBytes: (n) => options.onFileBytes?.(name, n),
        },
      );
      files.push(done);
      return done;
    };

    const manifestFile = await get(manifest);
    const manifestUrl = `${options.baseUrl}/${manifest}`;
    const manifestText = await readSmallFile(join(temp, manifest), manifestUrl);
    const expected = expectedDigests(
      parseManifest(manifestText, manifestUrl),
      artifacts,
      manifestUrl,
    );
    options.onFileDone?.(manifest, manifestFile);
    for (const name of artifacts) {
      const file = await get(name);
      const want = expected.get(name)!;
      if (file.sha256 !== want) {
        throw new ReleaseFetchError(
          `${name} does not match ${manifest}: its sha256 is ${file.sha256}, the manifest says ${want}`,
        );
      }
      options.onFileDone?.(name, file);
    }
    options.signal.throwIfAborted();
    await installAll(temp, options.bootDir, [...artifacts, manifest]);
    return {
      baseUrl: options.baseUrl,
      files,
      totalBytes: files.reduce((sum, f) => sum + f.size, 0),
    };
  } finally {
    await rm(temp, { recursive: true, force: true });
  }
}

/** A manifest is a few hundred bytes: anything over 1 MiB is not one. */
async function readSmallFile(path: string, source: string): Promise<string> {
  const info = await stat(path);
  if (info.size > 1 << 20) {
    throw new ReleaseFetchError(`${source} is ${info.size} bytes: not a sha256 manifest`);
  }
  return readFile(path, 'utf8');
}

/**
 * Renames `names` from `temp` into `dir`. Each file already in `dir` is first hard-linked into
 * `temp` (same file system: no copy), so if a later rename fails every earlier one is undone
 * and `dir` is left as it was.
 */
async function installAll(temp: string, dir: string, names: readonly string[]): Promise<void> {
  const kept = new Map<string, string | null>();
  try {
    for (const name of names) {
      const target = join(dir, name);
      const aside = join(temp, `${name}.previous`);
      const previous = await link(target, aside).then(
        () => aside,
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return null;
          throw err;
        },
      );
      kept.set(name, previous);
      await rename(join(temp, name), target);
    }
  } catch (err) {
    for (const [name, previous] of [...kept].reverse()) {
      const target = join(dir, name);
      if (previous !== null) await rename(previous, target).catch(() => undefined);
      else await unlink(target).catch(() => undefined);
    }
    throw new ReleaseFetchError(
      `installing into ${dir} failed, nothing was changed: ${(err as Error).message}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// The job manager
// ---------------------------------------------------------------------------------------------

export type FetchStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

export interface ArtifactFetchState {
  name: string;
  status: FetchStatus;
  bytes_done: number;
  bytes_total: number | null;
  error: string | null;
  started_at: string | null;
  finished_at: string | null;
}

/** Upstream's ReleaseState (§9.14). */
export interface ReleaseState {
  tag: string;
  status: FetchStatus;
  /** Across every file so far. */
  bytes_done: number;
  /** The sum of the sizes known so far (a file's size is known once its download starts). */
  bytes_total: number | null;
  /** The file being fetched now. */
  artifact: string | null;
  requested_at: string;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
  base_url: string | null;
  artifacts: ArtifactFetchState[];
}

export interface NetbootFetchDeps {
  database: BtyDatabase;
  bus: LiveBus;
  bootDir: string;
  /** The version whose files are fetched. */
  artifactVersion: string;
  now: () => Date;
  /** Read when a job starts, so a changed setting applies to the next fetch. */
  source: () => ReleaseSource;
}

interface Job {
  state: ReleaseState;
  controller: AbortController | null;
}

const TERMINAL: ReadonlySet<FetchStatus> = new Set(['completed', 'failed', 'cancelled']);
/** How far back the history is read at start (upstream: 200 events). */
const HISTORY_EVENTS = 200;

/**
 * Temp folders a fetch left behind when its process died (kill -9, power loss): one manager per
 * boot folder runs at a time, so at start every one of them is stale. Without this a crash
 * mid-squashfs would keep gigabytes in the boot folder for good.
 */
async function removeStaleTemps(bootDir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(bootDir);
  } catch {
    return; // No boot folder yet: nothing left behind.
  }
  await Promise.all(
    names
      .filter((n) => n.startsWith(FETCH_TEMP_PREFIX))
      .map((n) => rm(join(bootDir, n), { recursive: true, force: true })),
  );
}

export class NetbootFetchManager {
  private readonly deps: NetbootFetchDeps;
  private readonly tuning: FetchTuning;
  private readonly jobs = new Map<string, Job>();
  private readonly queue: string[] = [];
  private running: Promise<void> | null = null;
  private stopped = false;
  private readonly loaded: Promise<void>;
  private lastProgressAt = 0;

  constructor(deps: NetbootFetchDeps, tuning: Partial<FetchTuning> = {}) {
    this.deps = deps;
    this.tuning = { ...DEFAULT_FETCH_TUNING, ...tuning };
    this.loaded = Promise.all([
      this.backfill().catch(() => undefined),
      removeStaleTemps(deps.bootDir).catch(() => undefined),
    ]).then(() => undefined);
  }

  /** Every job, newest request first. */
  async list(): Promise<ReleaseState[]> {
    await this.loaded;
    // The map is in request order (a new request moves its tag to the end).
    return [...this.jobs.values()].reverse().map((j) => structuredClone(j.state));
  }

  async get(tag: string): Promise<ReleaseState | null> {
    await this.loaded;
    const job = this.jobs.get(resolveReleaseTag(tag, this.deps.artifactVersion));
    return job ? structuredClone(job.state) : null;
  }

  /**
   * An operator asks for `tag` (`latest`/empty: this version): logs the request, then returns
   * the job that runs it — the existing one when the tag is queued, running, or completed with
   * its files still in place; a new queued one otherwise. Throws on a malformed tag.
   */
  async request(
    rawTag: string,
    sourceIp: string | null,
  ): Promise<{ state: ReleaseState; created: boolean }> {
    await this.loaded;
    const problem = releaseTagProblem(rawTag === '' ? 'latest' : rawTag);
    if (problem !== null) throw new ReleaseFetchError(problem);
    const tag = resolveReleaseTag(rawTag, this.deps.artifactVersion);
    await this.log('netboot.artifacts.fetch.requested', tag, {
      summary: `operator requested netboot artifacts '${tag}'`,
      actor: 'operator',
      sourceIp,
      details: { tag },
    });
    const existing = this.jobs.get(tag);
    if (existing && (await this.blocksNewFetch(existing.state))) {
      return { state: structuredClone(existing.state), created: false };
    }
    if (this.stopped) throw new ReleaseFetchError('the server is shutting down');
    const state = this.freshState(tag);
    this.jobs.delete(tag);
    this.jobs.set(tag, { state, controller: null });
    this.queue.push(tag);
    this.changed(state);
    const snapshot = structuredClone(state);
    this.pump();
    return { state: snapshot, created: true };
  }

  /**
   * Cancels `tag`'s job: a queued one at once, a running one as soon as its download notices;
   * a finished one is returned unchanged. Null when there is no job for the tag. Logs
   * `netboot.artifacts.fetch.cancelled` (operator) whenever a job exists, as upstream.
   */
  async cancel(rawTag: string, sourceIp: string | null): Promise<ReleaseState | null> {
    await this.loaded;
    const tag = resolveReleaseTag(rawTag, this.deps.artifactVersion);
    const job = this.jobs.get(tag);
    if (!job) return null;
    if (job.state.status === 'queued') {
      this.removeFromQueue(tag);
      this.finish(job.state, 'cancelled', null);
    } else if (job.state.status === 'running') {
      job.controller?.abort();
    }
    await this.log('netboot.artifacts.fetch.cancelled', tag, {
      summary: `operator cancelled the fetch of netboot artifacts '${tag}'`,
      actor: 'operator',
      sourceIp,
      details: { tag, source: 'operator' },
    });
    return structuredClone(job.state);
  }

  /** Resolves once nothing runs or waits (tests; shutdown). */
  async idle(): Promise<void> {
    await this.loaded;
    while (this.running !== null) await this.running;
  }

  /** Cancels what waits, aborts what runs and waits for it to clean up. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loaded;
    for (const tag of this.queue.splice(0)) {
      const job = this.jobs.get(tag);
      if (job?.state.status === 'queued') this.finish(job.state, 'cancelled', null);
    }
    for (const job of this.jobs.values()) job.controller?.abort();
    await this.idle();
  }

  // -- the worker --------------------------------------------------------------------------

  private pump(): void {
    if (this.running !== null || this.stopped) return;
    const tag = this.queue.shift();
    if (tag === undefined) return;
    const job = this.jobs.get(tag);
    if (!job || job.state.status !== 'queued') return this.pump();
    this.running = this.run(job)
      .catch(() => undefined)
      .finally(() => {
        this.running = null;
        this.pump();
      });
  }

  private async run(job: Job): Promise<void> {
    const { state } = job;
    const controller = new AbortController();
    job.controller = controller;
    const at = this.deps.now().toISOString();
    const source = this.deps.source();
    state.status = 'running';
    state.started_at = at;
    state.base_url = releaseBaseUrl(source, state.tag);
    this.changed(state);
    await this.log('netboot.artifacts.fetch.started', state.tag, {
      summary: `fetching netboot artifacts '${state.tag}' from ${state.base_url}`,
      actor: 'system',
      details: { tag: state.tag, repo: source.repo, base_url: state.base_url },
    });
    const fileOf = (name: string) => state.artifacts.find((a) => a.name === name)!;
    const recount = () => {
      state.bytes_done = state.artifacts.reduce((sum, a) => sum + a.bytes_done, 0);
      const known = state.artifacts.filter((a) => a.bytes_total !== null);
      state.bytes_total =
        known.length === 0 ? null : known.reduce((sum, a) => sum + a.bytes_total!, 0);
    };
    try {
      const result = await fetchRelease({
        baseUrl: state.base_url,
        version: this.deps.artifactVersion,
        bootDir: this.deps.bootDir,
        signal: controller.signal,
        tuning: this.tuning,
        onFileStart: (name) => {
          const file = fileOf(name);
          file.status = 'running';
          file.started_at = this.deps.now().toISOString();
          state.artifact = name;
          this.changed(state);
        },
        onFileSize: (name, total) => {
          fileOf(name).bytes_total = total;
          recount();
        },
        onFileBytes: (name, done) => {
          fileOf(name).bytes_done = done;
          recount();
          this.progressed(state);
        },
        onFileDone: (name, file) => {
          const sub = fileOf(name);
          sub.status = 'completed';
          sub.bytes_done = file.size;
          sub.bytes_total = file.size;
          sub.finished_at = this.deps.now().toISOString();
          state.artifact = null;
          recount();
          this.changed(state);
        },
      });
      this.finish(state, 'completed', null);
      await this.log('netboot.artifacts.fetched', state.tag, {
        summary: `fetched ${result.files.length} netboot files (${result.totalBytes} bytes) from ${result.baseUrl}`,
        actor: 'system',
        details: {
          tag: state.tag,
          base_url: result.baseUrl,
          total_bytes: result.totalBytes,
          started_at: state.started_at,
          artifacts: result.files.map((f) => ({
            name: f.name,
            size_bytes: f.size,
            sha256: f.sha256,
          })),
        },
      });
    } catch (err) {
      const cancelled = controller.signal.aborted;
      const message = cancelled ? null : errorText(err);
      this.finish(state, cancelled ? 'cancelled' : 'failed', message);
      await this.log(
        cancelled ? 'netboot.artifacts.fetch.cancelled' : 'netboot.artifacts.fetch.failed',
        state.tag,
        {
          summary: cancelled
            ? `fetch of netboot artifacts '${state.tag}' cancelled, nothing installed`
            : `fetch of netboot artifacts '${state.tag}' failed: ${message}`,
          actor: 'system',
          details: {
            tag: state.tag,
            base_url: state.base_url,
            total_bytes: state.bytes_done,
            started_at: state.started_at,
            ...(cancelled ? { source: this.stopped ? 'shutdown' : 'operator' } : {}),
            ...(message !== null ? { error: message } : {}),
            artifacts: state.artifacts.map((a) => ({
              name: a.name,
              status: a.status,
              bytes_done: a.bytes_done,
              bytes_total: a.bytes_total,
              error: a.error,
            })),
          },
        },
      );
    } finally {
      job.controller = null;
    }
  }

  /** Ends the job and each unfinished file: running → failed (or cancelled), queued → cancelled. */
  private finish(state: ReleaseState, status: FetchStatus, error: string | null): void {
    const at = this.deps.now().toISOString();
    state.status = status;
    state.error = error;
    state.finished_at = at;
    for (const file of state.artifacts) {
      if (TERMINAL.has(file.status)) continue;
      if (status === 'completed') {
        file.status = 'completed';
        if (file.bytes_total !== null) file.bytes_done = file.bytes_total;
      } else if (status === 'failed' && file.status === 'running') {
        file.status = 'failed';
        file.error = error;
      } else {
        file.status = 'cancelled';
      }
      file.finished_at = at;
    }
    // `artifact` stays on a failed or cancelled file: the one the error is about.
    this.changed(state);
  }

  private freshState(tag: string): ReleaseState {
    return {
      tag,
      status: 'queued',
      bytes_done: 0,
      bytes_total: null,
      artifact: null,
      requested_at: this.deps.now().toISOString(),
      started_at: null,
      finished_at: null,
      error: null,
      base_url: null,
      artifacts: releaseFileNames(this.deps.artifactVersion).map((name) => ({
        name,
        status: 'queued',
        bytes_done: 0,
        bytes_total: null,
        error: null,
        started_at: null,
        finished_at: null,
      })),
    };
  }

  /** Queued and running jobs stand; a completed one stands while its files are all in place. */
  private async blocksNewFetch(state: ReleaseState): Promise<boolean> {
    if (state.status === 'queued' || state.status === 'running') return true;
    if (state.status !== 'completed') return false;
    const present = await Promise.all(
      releaseFileNames(this.deps.artifactVersion).map((name) =>
        stat(join(this.deps.bootDir, name)).then(
          (s) => s.isFile(),
          () => false,
        ),
      ),
    );
    return present.every(Boolean);
  }

  private removeFromQueue(tag: string): void {
    const i = this.queue.indexOf(tag);
    if (i >= 0) this.queue.splice(i, 1);
  }

  private changed(state: ReleaseState): void {
    this.lastProgressAt = performance.now();
    this.deps.bus.publish({ type: 'netboot-fetch', tag: state.tag, status: state.status });
  }

  private progressed(state: ReleaseState): void {
    if (performance.now() - this.lastProgressAt < this.tuning.progressIntervalMs) return;
    this.changed(state);
  }

  private async log(
    kind: EventKind,
    tag: string,
    event: Pick<NewEvent, 'summary' | 'actor' | 'details'> & { sourceIp?: string | null },
  ): Promise<void> {
    const row: NewEvent = {
      kind,
      summary: event.summary,
      subjectKind: 'netboot',
      subjectId: tag,
      actor: event.actor ?? null,
      sourceIp: event.sourceIp ?? null,
      details: event.details ?? null,
    };
    try {
      const id = await appendEvent(this.deps.database.db, row, this.deps.now());
      this.deps.bus.publish(auditMessage(id, { kind, summary: row.summary, subject_id: tag }));
    } catch {
      // The audit log is best effort here: a fetch's outcome must not hinge on it.
    }
  }

  /**
   * Upstream's history rule: the newest `fetched` or `fetch.failed` event per tag (among the
   * newest 200 netboot events) becomes a completed or failed job.
   */
  private async backfill(): Promise<void> {
    const events = await queryEvents(this.deps.database.db, {
      subjectKind: 'netboot',
      limit: HISTORY_EVENTS,
    });
    const newest = new Map<string, ReleaseState>();
    for (const event of events) {
      const tag = event.subject_id;
      if (tag === null || newest.has(tag)) continue;
      if (
        event.kind !== 'netboot.artifacts.fetched' &&
        event.kind !== 'netboot.artifacts.fetch.failed'
      ) {
        continue;
      }
      newest.set(tag, this.stateFromEvent(tag, event));
    }
    // Oldest first, as if requested in that order.
    for (const [tag, state] of [...newest].reverse()) {
      this.jobs.set(tag, { state, controller: null });
    }
  }

  private stateFromEvent(
    tag: string,
    event: { kind: string; ts: string; details: Record<string, unknown> | null },
  ): ReleaseState {
    const d = event.details ?? {};
    const completed = event.kind === 'netboot.artifacts.fetched';
    const text = (v: unknown) => (typeof v === 'string' ? v : null);
    const count = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
    const recorded = new Map<string, Record<string, unknown>>();
    if (Array.isArray(d.artifacts)) {
      for (const a of d.artifacts as unknown[]) {
        if (
          typeof a === 'object' &&
          a !== null &&
          typeof (a as { name?: unknown }).name === 'string'
        ) {
          recorded.set((a as { name: string }).name, a as Record<string, unknown>);
        }
      }
    }
    const statuses = new Set<string>(['queued', 'running', 'completed', 'failed', 'cancelled']);
    const artifacts = releaseFileNames(this.deps.artifactVersion).map(
      (name): ArtifactFetchState => {
        const a = recorded.get(name) ?? {};
        const size = count(a.size_bytes) ?? count(a.bytes_total);
        const status = text(a.status);
        return {
          name,
          status: completed
            ? 'completed'
            : status !== null && statuses.has(status) && status !== 'queued' && status !== 'running'
              ? (status as FetchStatus)
              : 'cancelled',
          bytes_done: count(a.bytes_done) ?? size ?? 0,
          bytes_total: size,
          error: text(a.error),
          started_at: null,
          finished_at: event.ts,
        };
      },
    );
    const started = text(d.started_at) ?? event.ts;
    return {
      tag,
      status: completed ? 'completed' : 'failed',
      bytes_done: count(d.total_bytes) ?? 0,
      bytes_total: completed ? count(d.total_bytes) : null,
      artifact: null,
      requested_at: started,
      started_at: started,
      finished_at: event.ts,
      error: completed ? null : (text(d.error) ?? 'failed (no reason recorded)'),
      base_url: text(d.base_url),
      artifacts,
    };
  }
}

function errorText(err: unknown): string {
  if (err instanceof ReleaseFetchError) return err.message;
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

// ---------------------------------------------------------------------------------------------
// One manager per server
// ---------------------------------------------------------------------------------------------

const perApp = new WeakMap<WebContext, NetbootFetchManager>();

/** The server's fetch manager, made on first use (its history read from the audit log then). */
export function netbootFetchesOf(ctx: WebContext): NetbootFetchManager {
  let manager = perApp.get(ctx);
  if (manager === undefined) {
    manager = new NetbootFetchManager({
      database: ctx.database,
      bus: ctx.bus,
      bootDir: ctx.bootDir,
      artifactVersion: ctx.artifactVersion,
      now: ctx.now,
      source: () => releaseSourceOf(ctx),
    });
    perApp.set(ctx, manager);
  }
  return manager;
}

/** At shutdown: stops the manager if this server ever made one. */
export async function stopNetbootFetches(ctx: WebContext): Promise<void> {
  await perApp.get(ctx)?.stop();
}
