/**
 * The download manager: fills cache entries, a bounded number at a time, one job per cache key.
 *
 * A job is also a pull-through fill: while it runs, `open()` hands it to any number of readers,
 * who tail its partial file (see serve.ts), so concurrent requests for one image share one
 * upstream download. Jobs report their lifecycle as `job` events (queued, started, progress at
 * most every `progressIntervalMs`, completed, failed, cancelled) carrying a JSON-ready snapshot.
 */
import { EventEmitter } from 'node:events';
import { rmSync } from 'node:fs';
import { BtyError } from '../core/errors.ts';
import { normaliseSha256, transfer, type TransferOptions } from './fetch.ts';
import type { CacheEntry, CacheStore, Reservation } from './store.ts';
import { cacheKey } from './url.ts';

export type CacheJobState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
export type CacheJobEventType =
  'queued' | 'started' | 'progress' | 'completed' | 'failed' | 'cancelled';

/** A job as the API and the UI show it. */
export interface CacheJob {
  id: string;
  origin: string;
  key: string;
  state: CacheJobState;
  /** Started by a client request (pull-through) rather than an operator. */
  pull_through: boolean;
  bytes_done: number;
  bytes_total: number | null;
  /** Bytes per second over the last progress interval. */
  rate: number;
  queued_at: string;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
  error_code: string | null;
  /** `sha256:<hex>`: the expected digest while running, the verified one once completed. */
  digest: string | null;
}

export interface CacheJobEvent {
  type: CacheJobEventType;
  job: CacheJob;
}

export interface FillOptions {
  /** A catalog entry's `sha256` (`<hex>` or `sha256:<hex>`): bytes that hash otherwise are refused. */
  expectedSha256?: string | null;
  /** A catalog entry's `size_bytes`: announced to readers before the upstream answers. */
  expectedSize?: number | null;
}

export interface CacheManagerOptions {
  /** Downloads running at once (default 2). */
  concurrency?: number;
  /** Minimum time between two progress events of a job, ms (default 1000). */
  progressIntervalMs?: number;
  /** Finished jobs kept for `jobs()` (default 100). */
  historyLimit?: number;
  /** Passed to each transfer: retries, backoff, idle timeout. */
  transfer?: Pick<TransferOptions, 'maxAttempts' | 'retryDelayMs' | 'idleTimeoutMs'>;
}

/** What `open` found: a stored entry, or a fill in progress to read while it grows. */
export type ServeTarget =
  { kind: 'entry'; entry: CacheEntry; file: string } | { kind: 'fill'; fill: Fill };

/** Result of `fetch`: the job filling the entry (null when it was cached already). */
export interface FetchHandle {
  job: CacheJob | null;
  /** Settles with the entry, or rejects with the job's error (a BtyError). */
  done: Promise<CacheEntry>;
}

/**
 * A fill in progress as its readers see it. `written` bytes of `tempFile` are on disk; `size`
 * is the total once known; `generation` changes when the file restarts from zero.
 */
export class Fill {
  readonly origin: string;
  readonly key: string;
  readonly tempFile: string;
  size: number | null = null;
  contentType: string | null = null;
  written = 0;
  generation = 0;
  /** Set once verified and installed: the rest may be read from `entryFile`. */
  entry: CacheEntry | null = null;
  entryFile: string | null = null;
  error: Error | null = null;
  private waiters: Array<() => void> = [];

  constructor(origin: string, key: string, tempFile: string) {
    this.origin = origin;
    this.key = key;
    this.tempFile = tempFile;
  }

  get finished(): boolean {
    return this.entry !== null || this.error !== null;
  }

  /** Resolves on the next change (bytes written, size known, restart, completion, failure). */
  changed(): Promise<void> {
    if (this.finished) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Waits until the total size is known (upstream headers, expected size, or the end). */
  async sized(): Promise<number> {
    while (this.size === null) {
      if (this.error) throw this.error;
      if (this.entry) return this.entry.size;
      await this.changed();
    }
    return this.size;
  }

  notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}

interface Job {
  snapshot: CacheJob;
  fill: Fill;
  options: FillOptions;
  controller: AbortController;
  done: Promise<CacheEntry>;
  settle: { resolve: (e: CacheEntry) => void; reject: (err: Error) => void };
  lastProgressAt: number;
  lastProgressBytes: number;
}

let jobCounter = 0;

export class CacheManager extends EventEmitter<{ job: [CacheJobEvent] }> {
  readonly store: CacheStore;
  private readonly concurrency: number;
  private readonly progressIntervalMs: number;
  private readonly historyLimit: number;
  private readonly transferOptions: CacheManagerOptions['transfer'];
  private readonly active = new Map<string, Job>();
  private readonly queue: Job[] = [];
  private readonly finished: CacheJob[] = [];
  private readonly running = new Set<Promise<void>>();

  constructor(store: CacheStore, options: CacheManagerOptions = {}) {
    super();
    this.store = store;
    this.concurrency = Math.max(1, options.concurrency ?? 2);
    this.progressIntervalMs = options.progressIntervalMs ?? 1000;
    this.historyLimit = options.historyLimit ?? 100;
    this.transferOptions = options.transfer;
  }

  /**
   * Queues a download of `origin` (an operator's "Download"); joins the job already filling it.
   * With `force`, a cached entry is downloaded again (and replaced once verified).
   */
  fetch(origin: string, options: FillOptions & { force?: boolean } = {}): FetchHandle {
    const key = cacheKey(origin);
    const running = this.active.get(key);
    if (running) return { job: { ...running.snapshot }, done: running.done };
    const entry = this.store.lookupKey(key);
    if (entry && !options.force && digestAgrees(entry, options.expectedSha256)) {
      return { job: null, done: Promise.resolve(entry) };
    }
    const job = this.enqueue(origin, key, options, false);
    return { job: { ...job.snapshot }, done: job.done };
  }

  /**
   * What serves `origin` now: its entry (use recorded), the fill in progress, or, with
   * `allowFill` (pull-through), a new fill that jumps the queue. Null: not cached, no fill.
   * An entry whose digest differs from `expectedSha256` is stale and not served.
   */
  open(origin: string, options: FillOptions & { allowFill: boolean }): ServeTarget | null {
    const key = cacheKey(origin);
    const running = this.active.get(key);
    if (running) return { kind: 'fill', fill: running.fill };
    const entry = this.store.lookupKey(key);
    if (entry && digestAgrees(entry, options.expectedSha256)) {
      this.store.touch(entry);
      return { kind: 'entry', entry, file: this.store.blobFile(entry) };
    }
    if (!options.allowFill) return null;
    const job = this.enqueue(origin, key, options, true);
    return { kind: 'fill', fill: job.fill };
  }

  /** Stops the job of `origin` (queued or running); false when there is none. */
  cancel(origin: string): boolean {
    const job = this.active.get(cacheKey(origin));
    if (!job) return false;
    const queued = this.queue.indexOf(job);
    if (queued >= 0) {
      this.queue.splice(queued, 1);
      this.finish(job, 'cancelled', cancelledError(origin));
    } else {
      job.controller.abort();
    }
    return true;
  }

  /** Jobs queued or running, then finished ones, newest first. */
  jobs(): CacheJob[] {
    const live = [...this.active.values()].map((j) => ({ ...j.snapshot }));
    return [...live.reverse(), ...this.finished.map((j) => ({ ...j }))];
  }

  /** The current or latest job for `origin`. */
  job(origin: string): CacheJob | undefined {
    const key = cacheKey(origin);
    const live = this.active.get(key);
    if (live) return { ...live.snapshot };
    const done = this.finished.find((j) => j.key === key);
    return done ? { ...done } : undefined;
  }

  /** Cancels every job and waits for the running ones to stop. */
  async close(): Promise<void> {
    for (const job of [...this.active.values()]) this.cancel(job.snapshot.origin);
    await Promise.allSettled([...this.running]);
  }

  private enqueue(origin: string, key: string, options: FillOptions, pullThrough: boolean): Job {
    const expected = options.expectedSha256 ? normaliseSha256(options.expectedSha256) : null;
    let settle!: Job['settle'];
    const done = new Promise<CacheEntry>((resolve, reject) => {
      settle = { resolve, reject };
    });
    // Callers that only watch events never await `done`: keep its rejection from going unhandled.
    done.catch(() => {});
    const fill = new Fill(origin, key, this.store.tempPath(key));
    if (options.expectedSize != null) fill.size = options.expectedSize;
    const job: Job = {
      snapshot: {
        id: `cache-${++jobCounter}-${Date.now().toString(36)}`,
        origin,
        key,
        state: 'queued',
        pull_through: pullThrough,
        bytes_done: 0,
        bytes_total: options.expectedSize ?? null,
        rate: 0,
        queued_at: new Date().toISOString(),
        started_at: null,
        finished_at: null,
        error: null,
        error_code: null,
        digest: expected ? `sha256:${expected}` : null,
      },
      fill,
      options: { ...options, expectedSha256: expected },
      controller: new AbortController(),
      done,
      settle,
      lastProgressAt: 0,
      lastProgressBytes: 0,
    };
    this.active.set(key, job);
    this.emitJob('queued', job);
    // A machine is waiting on a pull-through fill, with its headers already sent: it starts at
    // once, whatever operator pre-fetches hold the slots (it would time out behind them).
    if (pullThrough) this.start(job);
    else this.queue.push(job);
    this.pump();
    return job;
  }

  private pump(): void {
    while (this.operatorSlotsUsed() < this.concurrency && this.queue.length > 0) {
      this.start(this.queue.shift()!);
    }
  }

  private operatorSlotsUsed(): number {
    let used = 0;
    for (const job of this.active.values()) {
      if (job.snapshot.state === 'running' && !job.snapshot.pull_through) used++;
    }
    return used;
  }

  private start(job: Job): void {
    const run = this.run(job)
      // A listener that throws must not become an unhandled rejection (it would end the process).
      .catch(() => {})
      .finally(() => {
        this.running.delete(run);
        this.pump();
      });
    this.running.add(run);
  }

  private async run(job: Job): Promise<void> {
    const { snapshot, fill } = job;
    snapshot.state = 'running';
    snapshot.started_at = new Date().toISOString();
    job.lastProgressAt = Date.now();
    this.emitJob('started', job);
    // Space held for this fill; a holder object because the hooks below set it.
    const held: { reservation: Reservation | null } = { reservation: null };
    try {
      const result = await transfer(
        snapshot.origin,
        fill.tempFile,
        {
          ...this.transferOptions,
          expectedSha256: job.options.expectedSha256 ?? null,
          expectedSize: job.options.expectedSize ?? null,
          signal: job.controller.signal,
        },
        {
          onSize: (total, contentType) => {
            held.reservation ??= this.store.reserve(total, snapshot.origin);
            fill.size = total;
            fill.contentType = contentType;
            snapshot.bytes_total = total;
            fill.notify();
          },
          onData: (bytes) => {
            fill.written = bytes;
            snapshot.bytes_done = bytes;
            fill.notify();
            this.maybeProgress(job);
          },
          onRestart: () => {
            fill.written = 0;
            fill.generation++;
            fill.size = null;
            snapshot.bytes_done = 0;
            fill.notify();
          },
        },
      );
      // Size unknown until the end (no Content-Length): make room now.
      held.reservation ??= this.store.reserve(result.size, snapshot.origin);
      const entry = this.store.install(snapshot.origin, fill.tempFile, result);
      fill.entryFile = this.store.blobFile(entry);
      fill.entry = entry;
      snapshot.digest = entry.digest;
      snapshot.bytes_done = entry.size;
      snapshot.bytes_total = entry.size;
      this.finish(job, 'completed', null);
    } catch (err) {
      rmSync(fill.tempFile, { force: true });
      const error = toError(err);
      this.finish(job, job.controller.signal.aborted ? 'cancelled' : 'failed', error);
    } finally {
      held.reservation?.release();
    }
  }

  private maybeProgress(job: Job): void {
    const now = Date.now();
    const elapsed = now - job.lastProgressAt;
    if (elapsed < this.progressIntervalMs) return;
    job.snapshot.rate = Math.round(
      ((job.snapshot.bytes_done - job.lastProgressBytes) * 1000) / Math.max(1, elapsed),
    );
    job.lastProgressAt = now;
    job.lastProgressBytes = job.snapshot.bytes_done;
    this.emitJob('progress', job);
  }

  private finish(job: Job, state: 'completed' | 'failed' | 'cancelled', error: Error | null): void {
    const { snapshot, fill } = job;
    snapshot.state = state;
    snapshot.finished_at = new Date().toISOString();
    if (error) {
      snapshot.error = error.message;
      snapshot.error_code = error instanceof BtyError ? error.code : null;
      fill.error = error;
      job.settle.reject(error);
    } else if (fill.entry) {
      job.settle.resolve(fill.entry);
    }
    fill.notify();
    this.active.delete(snapshot.key);
    this.finished.unshift({ ...snapshot });
    this.finished.length = Math.min(this.finished.length, this.historyLimit);
    this.emitJob(state, job);
  }

  private emitJob(type: CacheJobEventType, job: Job): void {
    this.emit('job', { type, job: { ...job.snapshot } });
  }
}

function digestAgrees(entry: CacheEntry, expectedSha256: string | null | undefined): boolean {
  if (!expectedSha256) return true;
  return entry.digest === `sha256:${normaliseSha256(expectedSha256)}`;
}

function cancelledError(origin: string): BtyError {
  return new BtyError('BTY_ERR_CANCELLED', `download of ${origin} cancelled`, {
    hint: 'Nothing was cached; start the download again when needed.',
  });
}

function toError(err: unknown): Error {
  if (err instanceof Error) return err;
  return new BtyError('BTY_ERR_INTERNAL', String(err));
}
