/**
 * Runs a flash: source → sha256 tap → decompressor → sparse sink, composed with
 * `node:stream/promises.pipeline`, then sync, device housekeeping and optional read-back.
 *
 * Phases (see src/core/progress.ts): resolve (prepareFlash), download (only for a qcow2 URL,
 * which must land in a temp file), write, sync, verify, then done or failed.
 */
import { createHash } from 'node:crypto';
import { constants as fsc, createWriteStream, rmSync } from 'node:fs';
import { mkdtemp, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BtyError, asBtyError } from '../core/errors.ts';
import { looksLikeTar } from '../core/formats.ts';
import {
  PhaseMeter,
  type FlashPhase,
  type FlashProgress,
  type ProgressListener,
} from '../core/progress.ts';
import { compareQcow2, convertQcow2 } from './qcow2.ts';
import {
  assertPlanAllowed,
  prepareFlash,
  type FlashPlan,
  type PlanRequest,
  type PreparedFlash,
} from './plan.ts';
import { SparseSink, type SinkResult } from './sinks/sparse-sink.ts';
import { explainDecompressError, createDecompressor } from './transforms/decompress.ts';
import { DecodeInto, decodeIntoSupported } from './transforms/decode-into.ts';
import { probeTarget, type TargetInfo } from './target.ts';
import { registerUefiBootEntry, settleBlockDevice } from './housekeeping.ts';
import { dropCache, verifyWritten } from './verify.ts';
import type { ImageSource } from './sources/index.ts';
import { FileSource } from './sources/index.ts';

export interface FlashRequest extends PlanRequest {
  /** Resolve and validate only; write nothing. */
  dryRun?: boolean;
  /** Asked with the validated plan before writing; false = the operator declined. */
  confirm?: (plan: FlashPlan) => Promise<boolean>;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  /** Tuning for tests and benchmarks. */
  blockSize?: number;
  /** false: decode gzip/zstd through a zlib stream instead of into the sink (tests). */
  decodeInPlace?: boolean;
  /** false: write through the page cache only, never O_DIRECT (tests). */
  directIo?: boolean;
}

export interface FlashResult {
  ok: true;
  dry_run: boolean;
  plan: FlashPlan;
  /** Image bytes that landed on the target (the virtual size, once known). */
  image_bytes: number;
  bytes_written: number;
  bytes_skipped: number;
  source_bytes: number;
  sha256: string | null;
  sha256_verified: boolean;
  verified: boolean;
  resumes: number;
  seconds: number;
  notes: string[];
}

function cancelled(writing: boolean, onDisk: boolean): BtyError {
  return new BtyError(
    'BTY_ERR_CANCELLED',
    !writing
      ? 'flash cancelled by operator before anything was written'
      : onDisk
        ? 'flash cancelled by operator; the target holds partial data and must be flashed again before use'
        : 'flash cancelled by operator; the partial file was removed and the target left as it was',
  );
}

/** Emits a one-off event for phases that have no byte counter of their own. */
function mark(
  onProgress: ProgressListener | undefined,
  phase: FlashPhase,
  extra: Partial<FlashProgress> = {},
): void {
  onProgress?.({
    phase,
    bytes_done: 0,
    bytes_total: null,
    rate_bps: 0,
    eta_seconds: null,
    resumes: 0,
    ...extra,
  });
}

export async function flash(request: FlashRequest): Promise<FlashResult> {
  const started = performance.now();
  const signal = request.signal ?? new AbortController().signal;
  const onProgress = request.onProgress;
  let writing = false;
  let onDisk = true;
  let source: ImageSource | null = null;
  try {
    mark(onProgress, 'resolve');
    const prepared = await prepareFlash({ ...request, signal });
    const { plan } = prepared;
    source = prepared.source;
    onDisk = plan.target.kind === 'block';
    assertPlanAllowed(plan);
    const base: Omit<FlashResult, 'seconds'> = {
      ok: true,
      dry_run: Boolean(request.dryRun),
      plan,
      image_bytes: plan.image.virtual_size_bytes ?? 0,
      bytes_written: 0,
      bytes_skipped: 0,
      source_bytes: 0,
      sha256: plan.image.sha256,
      sha256_verified: false,
      verified: false,
      resumes: 0,
      notes: [...plan.notes],
    };
    if (request.dryRun) {
      return { ...base, seconds: (performance.now() - started) / 1000 };
    }
    if (request.confirm && !(await request.confirm(plan))) {
      signal.throwIfAborted();
      throw new BtyError(
        'BTY_ERR_NOT_CONFIRMED',
        'flash declined at the confirmation prompt; nothing was written',
        { hint: 'Nothing was written. Run the command again and answer y to flash.' },
      );
    }
    signal.throwIfAborted();
    const outcome = await execute(prepared, request, signal, () => {
      writing = true;
    });
    return {
      ...base,
      ...outcome,
      resumes: source.resumes,
      seconds: (performance.now() - started) / 1000,
      notes: [...base.notes, ...outcome.notes],
    };
  } catch (err) {
    const failure = signal.aborted
      ? cancelled(writing, onDisk)
      : asFlashError(err, writing && onDisk);
    mark(onProgress, 'failed', { message: failure.message, resumes: source?.resumes ?? 0 });
    throw failure;
  }
}

/**
 * Gives a stray system error (EIO from a pulled USB stick, ENOSPC in a staging folder) the
 * operator's words instead of "internal error".
 */
function asFlashError(err: unknown, writing: boolean): BtyError {
  if (err instanceof BtyError) return err;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
    const partial = writing ? '; the target holds partial data and must be flashed again' : '';
    return new BtyError(
      code === 'ENOSPC' ? 'BTY_ERR_NO_SPACE' : 'BTY_ERR_WRITE',
      `${(err as Error).message}${partial}`,
      { cause: err },
    );
  }
  return asBtyError(err);
}

interface Outcome {
  image_bytes: number;
  bytes_written: number;
  bytes_skipped: number;
  source_bytes: number;
  sha256_verified: boolean;
  verified: boolean;
  notes: string[];
}

/** The last look before writing: the target must still be what the plan validated. */
async function recheckTarget(plan: FlashPlan, before: TargetInfo): Promise<TargetInfo> {
  const now = await probeTarget(plan.target.path);
  const first = now.refusals[0];
  if (first) {
    throw new BtyError(first.code, `${first.message} (found in the last check before writing)`);
  }
  const sameDevice =
    now.kind === before.kind &&
    now.disk?.serial === before.disk?.serial &&
    (now.kind !== 'block' || now.size_bytes === before.size_bytes);
  if (!sameDevice) {
    throw new BtyError(
      'BTY_ERR_TARGET_CHANGED',
      `${plan.target.path} is no longer the device that was checked (kind, size or serial changed)`,
    );
  }
  return now;
}

/** Partial files and staging folders of flashes in progress, for removal on a forced exit. */
const temporaryPaths = new Set<string>();

/**
 * Removes what flashes in progress left on disk, synchronously: for a process that must exit
 * now (a second Ctrl-C) and cannot wait for the normal cleanup.
 */
export function removeTemporaryFilesSync(): void {
  for (const path of temporaryPaths) rmSync(path, { recursive: true, force: true });
  temporaryPaths.clear();
}

/**
 * Where the bytes go. A disk is written in place; a regular file is built beside the target
 * as `.NAME.bty-partial` and renamed over it only once complete and checked, so a failed or
 * cancelled flash never leaves a complete-looking image behind (nor destroys the old file).
 */
export function writePath(plan: FlashPlan): string {
  if (plan.target.kind === 'block') return plan.target.path;
  const target = resolve(plan.target.path);
  return join(dirname(target), `.${basename(target)}.bty-partial`);
}

/** Puts a finished partial file in place of the target (rename, then fsync the folder). */
async function commitFile(plan: FlashPlan): Promise<void> {
  if (plan.target.kind === 'block') return;
  const target = resolve(plan.target.path);
  await rename(writePath(plan), target);
  temporaryPaths.delete(writePath(plan));
  const folder = await open(dirname(target), 'r');
  try {
    await folder.sync();
  } finally {
    await folder.close();
  }
}

async function abandonFile(plan: FlashPlan): Promise<void> {
  if (plan.target.kind === 'block') return;
  await rm(writePath(plan), { force: true });
  temporaryPaths.delete(writePath(plan));
}

async function openTarget(plan: FlashPlan): Promise<FileHandle> {
  try {
    if (plan.target.kind === 'block') {
      // O_EXCL on a block device asks the kernel for exclusive use: it fails with EBUSY while
      // anything has the disk mounted or claimed (device mapper, md), closing the gap between
      // our checks and the first write.
      return await open(plan.target.path, fsc.O_RDWR | fsc.O_EXCL);
    }
    temporaryPaths.add(writePath(plan));
    return await open(writePath(plan), 'w');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EBUSY') {
      throw new BtyError(
        'BTY_ERR_TARGET_IN_USE',
        `the kernel reports ${plan.target.path} busy (mounted, or held by LVM, RAID or dm-crypt)`,
      );
    }
    if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') {
      throw new BtyError(
        'BTY_ERR_TARGET_READONLY',
        `cannot open ${plan.target.path} for writing: ${code}`,
      );
    }
    throw new BtyError(
      'BTY_ERR_WRITE',
      `cannot open ${plan.target.path}: ${(err as Error).message}`,
    );
  }
}

async function execute(
  prepared: PreparedFlash,
  request: FlashRequest,
  signal: AbortSignal,
  startedWriting: () => void,
): Promise<Outcome> {
  const { plan, source } = prepared;
  await recheckTarget(plan, prepared.targetInfo);
  if (plan.image.format === 'qcow2') return executeQcow2(prepared, request, signal, startedWriting);

  const onProgress = request.onProgress;
  const meter = new PhaseMeter('write', (e) => onProgress?.(e), {
    resumes: () => source.resumes,
    bytesTotal: plan.image.virtual_size_bytes,
    sourceBytesTotal: source.size,
  });
  const isBlock = plan.target.kind === 'block';
  const fh = await openTarget(plan);
  startedWriting();
  const direct = request.directIo === false ? null : await openDirect(plan);
  const hash = plan.image.sha256 ? createHash('sha256') : null;
  let sourceBytes = 0;
  let committed = false;
  try {
    const lbs = prepared.targetInfo.disk?.logical_block_size ?? 512;
    const sink = new SparseSink({
      fh,
      direct,
      directAlignment: Math.min(Math.max(4096, lbs), 64 << 10),
      path: plan.target.path,
      strategy: plan.target.zero_strategy,
      capacity: isBlock ? plan.target.size_bytes : null,
      expectedLength: plan.image.virtual_size_bytes,
      signal,
      logicalBlockSize: lbs,
      hashWrittenData: plan.verify,
      onBytes: (bytes) => meter.update(bytes, sourceBytes),
      inspectFirst: (head) => {
        if (looksLikeTar(head)) {
          throw new BtyError(
            'BTY_ERR_TARBALL',
            `${plan.image.source} holds a tar archive, not a disk image; refusing to write it. ` +
              'Extract it first and flash the image inside.',
          );
        }
      },
      ...(request.blockSize ? { blockSize: request.blockSize } : {}),
    });
    const tap = async function* (chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
      for await (const chunk of chunks) {
        hash?.update(chunk);
        sourceBytes += chunk.length;
        yield chunk;
      }
    };
    const format = plan.image.format;
    const decodeInPlace =
      (format === 'img.gz' || format === 'img.zst') &&
      request.decodeInPlace !== false &&
      decodeIntoSupported();
    const decompressor = decodeInPlace ? null : createDecompressor(format, plan.image.source);
    try {
      if (decodeInPlace) {
        // gzip and zstd decode straight into the sink's staging buffers (see decode-into.ts).
        const chunks =
          source instanceof FileSource ? source.reusedChunks(signal) : source.stream(signal);
        const decoder = new DecodeInto(format, tap(chunks));
        try {
          await sink.fillFrom(decoder.read, () => {}, signal);
        } finally {
          await decoder.close();
        }
      } else if (decompressor) {
        await pipeline(source.stream(signal), tap, decompressor, sink, { signal });
      } else if (source instanceof FileSource) {
        // A local raw image is read straight into the sink's buffers: no per-chunk allocation.
        await source.readInto(sink, signal, (chunk) => {
          hash?.update(chunk);
          sourceBytes += chunk.length;
        });
      } else await pipeline(source.stream(signal), tap, sink, { signal });
    } catch (err) {
      throw explainDecompressError(err, plan.image.format, plan.image.source);
    }
    meter.update(sink.result.bytes, sourceBytes, true);
    const notes: string[] = [];
    const result = sink.result;
    const sha256Verified = checkDigest(plan, hash);

    mark(onProgress, 'sync', { bytes_done: result.bytes, bytes_total: result.bytes });
    await direct?.close();
    await fh.sync();
    await fh.close();
    await commitFile(plan);
    committed = true;
    if (isBlock) notes.push(...(await settleBlockDevice(plan.target.path)));

    let verified = false;
    if (plan.verify) {
      const vmeter = new PhaseMeter('verify', (e) => onProgress?.(e), {
        bytesTotal: result.written,
      });
      const check = await verifyWritten({
        path: plan.target.path,
        isBlockDevice: isBlock,
        length: result.bytes,
        ranges: result.ranges,
        expectedSha256: result.writtenSha256 ?? '',
        signal,
        onBytes: (n) => vmeter.update(n),
      });
      vmeter.update(result.written, 0, true);
      verified = true;
      notes.push(
        `read-back: ${result.written} bytes of written data re-read and hashed; ` +
          `zero ranges spot-checked (${check.zeroSamples} samples of 4 KiB)`,
      );
    }
    await finishBlockDevice(plan, notes);
    mark(onProgress, 'done', {
      bytes_done: result.bytes,
      bytes_total: result.bytes,
      resumes: source.resumes,
    });
    return outcome(result, sourceBytes, sha256Verified, verified, notes);
  } finally {
    await direct?.close().catch(() => {});
    await fh.close().catch(() => {});
    if (!committed) await abandonFile(plan);
  }
}

/**
 * A second handle on the target with O_DIRECT, for the sink's aligned writes; null where the
 * filesystem or device does not offer it (tmpfs, some FUSE and network filesystems). On a
 * block device it is opened after the O_EXCL handle, which keeps holding the claim.
 */
async function openDirect(plan: FlashPlan): Promise<FileHandle | null> {
  const flags = (plan.target.kind === 'block' ? fsc.O_RDWR : fsc.O_WRONLY) | fsc.O_DIRECT;
  return open(writePath(plan), flags).catch(() => null);
}

function outcome(
  r: SinkResult,
  sourceBytes: number,
  sha256Verified: boolean,
  verified: boolean,
  notes: string[],
): Outcome {
  return {
    image_bytes: r.bytes,
    bytes_written: r.written + r.zerosWritten,
    bytes_skipped: r.skipped,
    source_bytes: sourceBytes,
    sha256_verified: sha256Verified,
    verified,
    notes,
  };
}

/** True when a digest was expected and matched; throws BTY_ERR_INTEGRITY when it did not. */
function checkDigest(plan: FlashPlan, hash: ReturnType<typeof createHash> | null): boolean {
  if (!hash || !plan.image.sha256) return false;
  const actual = hash.digest('hex');
  if (actual !== plan.image.sha256) {
    throw new BtyError(
      'BTY_ERR_INTEGRITY',
      `integrity check failed for ${plan.image.source}: expected sha256:${plan.image.sha256}, ` +
        `computed sha256:${actual}. ` +
        (plan.target.kind === 'block'
          ? 'The target now holds unverified data; re-flash from a trusted source.'
          : `Nothing was put in place: ${plan.target.path} was left as it was.`),
      {
        details: { expected: plan.image.sha256, actual },
        ...(plan.target.kind === 'block'
          ? {}
          : { hint: 'Fetch the image again from a trusted source, or check the --sha256 value.' }),
      },
    );
  }
  return true;
}

async function finishBlockDevice(plan: FlashPlan, notes: string[]): Promise<void> {
  if (plan.target.kind !== 'block') return;
  const line = await registerUefiBootEntry(plan.target.path);
  if (line) notes.push(line);
}

/** Downloads a qcow2 URL into the staging folder (resumable, hashed), returning its path. */
async function stageDownload(
  source: ImageSource,
  plan: FlashPlan,
  signal: AbortSignal,
  onProgress: ProgressListener | undefined,
): Promise<{ dir: string; file: string; bytes: number; sha256Verified: boolean }> {
  const dir = await mkdtemp(join(plan.staging_dir ?? '.', '.bty-stage-'));
  temporaryPaths.add(dir);
  const file = join(dir, 'image.qcow2');
  const hash = plan.image.sha256 ? createHash('sha256') : null;
  const meter = new PhaseMeter('download', (e) => onProgress?.(e), {
    resumes: () => source.resumes,
    bytesTotal: source.size,
    sourceBytesTotal: source.size,
  });
  let bytes = 0;
  try {
    const tap = async function* (chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
      for await (const chunk of chunks) {
        hash?.update(chunk);
        bytes += chunk.length;
        meter.update(bytes, bytes);
        yield chunk;
      }
    };
    await pipeline(source.stream(signal), tap, createWriteStream(file), { signal });
    meter.update(bytes, bytes, true);
    // Verified before the target is touched: a bad download never reaches the disk.
    const sha256Verified = checkDigest(plan, hash);
    return { dir, file, bytes, sha256Verified };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    temporaryPaths.delete(dir);
    throw err;
  }
}

async function executeQcow2(
  prepared: PreparedFlash,
  request: FlashRequest,
  signal: AbortSignal,
  startedWriting: () => void,
): Promise<Outcome> {
  const { plan, source } = prepared;
  const onProgress = request.onProgress;
  let staged: Awaited<ReturnType<typeof stageDownload>> | null = null;
  let imagePath = source.localPath;
  let sha256Verified = false;
  let sourceBytes = source.size ?? 0;
  let committed = false;
  const notes: string[] = [];
  try {
    if (!imagePath) {
      staged = await stageDownload(source, plan, signal, onProgress);
      imagePath = staged.file;
      sha256Verified = staged.sha256Verified;
      sourceBytes = staged.bytes;
    } else if (plan.image.sha256 && source instanceof FileSource) {
      sha256Verified = await hashLocalFile(source, plan, signal);
    }
    const isBlock = plan.target.kind === 'block';
    const virtual = plan.image.virtual_size_bytes ?? 0;
    await recheckTarget(plan, prepared.targetInfo);
    // Hold the device exclusively while qemu-img writes: nothing can mount it meanwhile.
    const guard = isBlock ? await openTarget(plan) : null;
    startedWriting();
    const meter = new PhaseMeter('write', (e) => onProgress?.(e), {
      bytesTotal: virtual,
      resumes: () => source.resumes,
    });
    try {
      await convertQcow2(imagePath, writePath(plan), isBlock, {
        signal,
        onFraction: (f) => meter.update(Math.round(f * virtual)),
      });
      meter.update(virtual, 0, true);
      mark(onProgress, 'sync', { bytes_done: virtual, bytes_total: virtual });
      const fh = guard ?? (await open(writePath(plan), 'r+'));
      try {
        await fh.sync();
      } finally {
        if (!guard) await fh.close();
      }
      await commitFile(plan);
      committed = true;
    } finally {
      await guard?.close();
      if (!committed) await abandonFile(plan);
    }
    if (isBlock) notes.push(...(await settleBlockDevice(plan.target.path)));
    let verified = false;
    if (plan.verify) {
      const vmeter = new PhaseMeter('verify', (e) => onProgress?.(e), { bytesTotal: virtual });
      await dropCache(plan.target.path, isBlock);
      await compareQcow2(imagePath, plan.target.path, isBlock, virtual, {
        signal,
        onFraction: (f) => vmeter.update(Math.round(f * virtual)),
      });
      vmeter.update(virtual, 0, true);
      verified = true;
    }
    await finishBlockDevice(plan, notes);
    mark(onProgress, 'done', {
      bytes_done: virtual,
      bytes_total: virtual,
      resumes: source.resumes,
    });
    return {
      image_bytes: virtual,
      bytes_written: virtual,
      bytes_skipped: 0,
      source_bytes: sourceBytes,
      sha256_verified: sha256Verified,
      verified,
      notes,
    };
  } finally {
    if (staged) {
      await rm(staged.dir, { recursive: true, force: true });
      temporaryPaths.delete(staged.dir);
    }
  }
}

/** A local qcow2 with an expected digest is hashed before the target is touched. */
async function hashLocalFile(
  source: FileSource,
  plan: FlashPlan,
  signal: AbortSignal,
): Promise<boolean> {
  const hash = createHash('sha256');
  for await (const chunk of source.stream(signal)) hash.update(chunk);
  return checkDigest(plan, hash);
}
