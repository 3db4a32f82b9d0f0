/**
 * The artifact cache's files: a folder with
 *
 *   blobs/sha256/<hex>     content, named by its digest (entries with equal content share it)
 *   entries/<key>.json     one record per origin, keyed by cacheKey(origin)
 *   tmp/<pid>.<n>/         partial downloads of one open store
 *
 * A record is written (temp file + rename) only after its blob is in place, so a crash at any
 * point leaves either a complete entry or none. Partial downloads live under a folder named after
 * the process that writes them; opening a store removes the folders of processes that are gone
 * (a `kill -9` mid-fill), so nothing half-written is ever served or kept.
 *
 * The size limit evicts least-recently-used entries, never one the `isPinned` callback protects
 * (images a machine is bound to). Last use is kept in memory and written back lazily.
 */
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { BtyError } from '../core/errors.ts';
import { canonicalSrc } from '../core/refs.ts';
import { cacheKey } from './url.ts';

export interface CacheEntry {
  /** cacheKey(origin): the image ref. */
  key: string;
  origin: string;
  canonical: string;
  /** `sha256:<hex>` of the stored bytes. */
  digest: string;
  size: number;
  content_type: string;
  /** ISO 8601 times. */
  fetched_at: string;
  last_used_at: string;
}

export interface CacheStoreOptions {
  /** Size limit in bytes; 0 (the default) is unlimited. */
  maxBytes?: number;
  /** Told about each entry evicted to make room (after it is gone). */
  onEvict?: (entry: CacheEntry) => void;
  /** True for entries eviction must keep (an image some machine is bound to). */
  isPinned?: (origin: string, key: string) => boolean;
  /** How often touched entries' last use is written back, ms (default 60 s). */
  touchFlushMs?: number;
}

/** Space set aside for a fill in progress; give it back with `release`. */
export interface Reservation {
  readonly bytes: number;
  release(): void;
}

export const DEFAULT_CONTENT_TYPE = 'application/octet-stream';
const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;
const KEY_RE = /^[0-9a-f]{64}$/;
const TEMP_DIR_RE = /^(\d+)\.(\d+)$/;

let storeInstances = 0;
/** Temp folders the stores of this process made (and have not closed). */
const liveTempDirs = new Set<string>();

export class CacheStore {
  readonly dir: string;
  maxBytes: number;
  isPinned: (origin: string, key: string) => boolean;
  onEvict: ((entry: CacheEntry) => void) | undefined;
  private readonly entriesByKey = new Map<string, CacheEntry>();
  private readonly dirtyKeys = new Set<string>();
  private readonly reservations = new Set<Reservation>();
  private readonly tempDir: string;
  private tempCounter = 0;
  private flushTimer: NodeJS.Timeout | null = null;
  private closed = false;

  private constructor(dir: string, options: CacheStoreOptions) {
    this.dir = dir;
    this.maxBytes = options.maxBytes ?? 0;
    this.isPinned = options.isPinned ?? (() => false);
    this.onEvict = options.onEvict;
    this.tempDir = join(dir, 'tmp', `${process.pid}.${++storeInstances}`);
    const flushMs = options.touchFlushMs ?? 60_000;
    if (flushMs > 0) {
      this.flushTimer = setInterval(() => this.flush(), flushMs);
      this.flushTimer.unref();
    }
  }

  /** Opens (creating) the store at `dir`: drops dead processes' partials and broken records. */
  static open(dir: string, options: CacheStoreOptions = {}): CacheStore {
    if (options.maxBytes !== undefined && !(options.maxBytes >= 0)) {
      throw new BtyError(
        'BTY_ERR_BAD_INPUT',
        `cache size limit must be >= 0, got ${options.maxBytes}`,
      );
    }
    for (const sub of ['blobs/sha256', 'entries', 'tmp'])
      mkdirSync(join(dir, sub), { recursive: true });
    const store = new CacheStore(dir, options);
    store.removeDeadTemps();
    store.loadEntries();
    store.removeOrphanBlobs();
    mkdirSync(store.tempDir, { recursive: true });
    liveTempDirs.add(store.tempDir);
    return store;
  }

  lookup(origin: string): CacheEntry | undefined {
    return this.lookupKey(cacheKey(origin));
  }

  /**
   * The entry under `key`. A miss re-reads its record from disk, so an entry another process
   * (the standalone command) added is found without a restart.
   */
  lookupKey(key: string): CacheEntry | undefined {
    const known = this.entriesByKey.get(key);
    if (known) return known;
    if (!KEY_RE.test(key)) return undefined;
    const entry = this.readRecord(key);
    if (entry) this.entriesByKey.set(key, entry);
    return entry ?? undefined;
  }

  /** All entries, most recently used first. */
  entries(): CacheEntry[] {
    return [...this.entriesByKey.values()].sort((a, b) =>
      b.last_used_at.localeCompare(a.last_used_at),
    );
  }

  /** Bytes of stored blobs (a blob shared by several entries counts once). */
  usedBytes(): number {
    const sizes = new Map<string, number>();
    for (const e of this.entriesByKey.values()) sizes.set(e.digest, e.size);
    let total = 0;
    for (const size of sizes.values()) total += size;
    return total;
  }

  /** Bytes set aside for fills in progress. */
  reservedBytes(): number {
    let total = 0;
    for (const r of this.reservations) total += r.bytes;
    return total;
  }

  /** The file holding an entry's bytes. */
  blobFile(entry: Pick<CacheEntry, 'digest'>): string {
    const hex = DIGEST_RE.exec(entry.digest)?.[1];
    if (hex === undefined) throw new BtyError('BTY_ERR_INTERNAL', `bad digest ${entry.digest}`);
    return join(this.dir, 'blobs', 'sha256', hex);
  }

  /** Records a use (for LRU eviction); written to disk on the next flush. */
  touch(entry: CacheEntry, at: Date = new Date()): void {
    entry.last_used_at = at.toISOString();
    this.dirtyKeys.add(entry.key);
  }

  /** Deletes the entry of `origin` (and its blob when no other entry shares it). */
  remove(origin: string): boolean {
    const entry = this.lookup(origin);
    if (!entry) return false;
    this.dropEntry(entry);
    return true;
  }

  /** A fresh path for a partial download, under this store's own temp folder. */
  tempPath(key: string): string {
    return join(this.tempDir, `${key}.${++this.tempCounter}.part`);
  }

  /**
   * Sets `bytes` aside for a fill, evicting least-recently-used unpinned entries as needed.
   * Throws "cache full" when the limit cannot be met because what remains is pinned (or being
   * filled). `forOrigin`'s own current entry is not counted: a re-download replaces it.
   */
  reserve(bytes: number, forOrigin?: string): Reservation {
    const replacing = forOrigin === undefined ? undefined : this.lookup(forOrigin);
    if (this.maxBytes > 0) {
      const over = (): number =>
        this.usedBytes() -
        (replacing && this.entriesByKey.has(replacing.key) ? this.exclusiveBytes(replacing) : 0) +
        this.reservedBytes() +
        bytes -
        this.maxBytes;
      while (over() > 0) {
        const victim = this.entries()
          .reverse()
          .find((e) => e.key !== replacing?.key && !this.isPinned(e.origin, e.key));
        if (!victim) throw this.fullError(bytes);
        this.dropEntry(victim);
        this.onEvict?.(victim);
      }
    }
    const reservation: Reservation = {
      bytes,
      release: () => {
        this.reservations.delete(reservation);
      },
    };
    this.reservations.add(reservation);
    return reservation;
  }

  /**
   * Moves a verified partial download into place and records it: blob first, then the record,
   * each by rename. Content already stored (another origin, same bytes) is shared.
   */
  install(
    origin: string,
    tempFile: string,
    facts: { digest: string; size: number; contentType: string | null },
  ): CacheEntry {
    const key = cacheKey(origin);
    const previous = this.lookupKey(key);
    const blob = this.blobFile(facts);
    if (existsSync(blob) && statSync(blob).size === facts.size) unlinkSync(tempFile);
    else renameSync(tempFile, blob);
    const now = new Date().toISOString();
    const entry: CacheEntry = {
      key,
      origin,
      canonical: canonicalSrc(origin),
      digest: facts.digest,
      size: facts.size,
      content_type: facts.contentType || DEFAULT_CONTENT_TYPE,
      fetched_at: now,
      last_used_at: now,
    };
    this.writeRecord(entry);
    this.entriesByKey.set(key, entry);
    if (previous && previous.digest !== entry.digest) this.removeBlobIfUnused(previous.digest);
    return entry;
  }

  /** Writes touched entries' last use back to disk. */
  flush(): void {
    for (const key of this.dirtyKeys) {
      const entry = this.entriesByKey.get(key);
      if (entry) {
        try {
          this.writeRecord(entry);
        } catch {
          // The folder went away (removed by an operator): last use is a hint, not data.
        }
      }
    }
    this.dirtyKeys.clear();
  }

  /** Flushes last use and removes this store's temp folder. Fills must be stopped first. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.flushTimer) clearInterval(this.flushTimer);
    this.flush();
    rmSync(this.tempDir, { recursive: true, force: true });
    liveTempDirs.delete(this.tempDir);
  }

  private fullError(bytes: number): BtyError {
    const pinned = this.entries().filter((e) => this.isPinned(e.origin, e.key));
    const pinnedBytes = pinned.reduce((sum, e) => sum + e.size, 0);
    return new BtyError(
      'BTY_ERR_NO_SPACE',
      `cache full: ${bytes} bytes needed, limit ${this.maxBytes} bytes; ` +
        `${pinned.length} pinned entries (${pinnedBytes} bytes, images machines are bound to) ` +
        `and ${this.reservedBytes()} bytes of fills in progress cannot be evicted`,
      {
        hint: 'Raise the cache size limit ([cache] max_bytes), or unbind machines from images they no longer use.',
        details: { needed: bytes, max_bytes: this.maxBytes, pinned_entries: pinned.length },
      },
    );
  }

  /** Bytes that removing `entry` would free (0 when its blob is shared). */
  private exclusiveBytes(entry: CacheEntry): number {
    for (const e of this.entriesByKey.values()) {
      if (e !== entry && e.digest === entry.digest) return 0;
    }
    return entry.size;
  }

  private dropEntry(entry: CacheEntry): void {
    this.entriesByKey.delete(entry.key);
    this.dirtyKeys.delete(entry.key);
    rmSync(this.recordFile(entry.key), { force: true });
    this.removeBlobIfUnused(entry.digest);
  }

  private removeBlobIfUnused(digest: string): void {
    for (const e of this.entriesByKey.values()) if (e.digest === digest) return;
    // A reader with the file open keeps its bytes until it closes it.
    rmSync(this.blobFile({ digest }), { force: true });
  }

  private recordFile(key: string): string {
    return join(this.dir, 'entries', `${key}.json`);
  }

  private writeRecord(entry: CacheEntry): void {
    const { key, ...record } = entry;
    const temp = join(this.tempDir, `${key}.${randomBytes(4).toString('hex')}.json`);
    mkdirSync(this.tempDir, { recursive: true });
    writeFileSync(temp, JSON.stringify(record, null, 2) + '\n');
    renameSync(temp, this.recordFile(key));
  }

  /** The record under `key` if it is well-formed and its blob is there with the right size. */
  private readRecord(key: string): CacheEntry | null {
    let text: string;
    try {
      text = readFileSync(this.recordFile(key), 'utf8');
    } catch {
      return null;
    }
    try {
      const r = JSON.parse(text) as Record<string, unknown>;
      const entry: CacheEntry = {
        key,
        origin: String(r.origin),
        canonical: String(r.canonical),
        digest: String(r.digest),
        size: Number(r.size),
        content_type: typeof r.content_type === 'string' ? r.content_type : DEFAULT_CONTENT_TYPE,
        fetched_at: String(r.fetched_at),
        last_used_at: String(r.last_used_at ?? r.fetched_at),
      };
      if (!DIGEST_RE.test(entry.digest) || !Number.isSafeInteger(entry.size) || entry.size < 0) {
        return null;
      }
      if (cacheKey(entry.origin) !== key) return null;
      if (statSync(this.blobFile(entry)).size !== entry.size) return null;
      return entry;
    } catch {
      return null;
    }
  }

  private loadEntries(): void {
    for (const name of readdirSync(join(this.dir, 'entries'))) {
      const key = name.endsWith('.json') ? name.slice(0, -'.json'.length) : '';
      const entry = KEY_RE.test(key) ? this.readRecord(key) : null;
      if (entry) this.entriesByKey.set(key, entry);
      else rmSync(join(this.dir, 'entries', name), { recursive: true, force: true });
    }
  }

  /** Blobs no record names: left by a crash between moving a blob and writing its record. */
  private removeOrphanBlobs(): void {
    const used = new Set([...this.entriesByKey.values()].map((e) => e.digest.slice(7)));
    const blobs = join(this.dir, 'blobs', 'sha256');
    for (const name of readdirSync(blobs)) {
      if (!used.has(name)) rmSync(join(blobs, name), { recursive: true, force: true });
    }
  }

  private removeDeadTemps(): void {
    const tmp = join(this.dir, 'tmp');
    for (const name of readdirSync(tmp)) {
      const match = TEMP_DIR_RE.exec(name);
      const pid = match ? Number(match[1]) : -1;
      // Another live process's partials stay. Ours stay only if this process made them: after a
      // kill -9 a restarted server can get the same PID (PID 1 in a container, always).
      const live = pid === process.pid ? liveTempDirs.has(join(tmp, name)) : processAlive(pid);
      if (match && live) continue;
      rmSync(join(tmp, name), { recursive: true, force: true });
    }
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
