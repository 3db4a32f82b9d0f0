/**
 * A flash plan: everything known before a byte is written — the image (format checked against
 * its content, sizes, expected digest) and the target (kind, size, identity, refusals). The same
 * plan drives the confirmation prompt, `--dry-run`, `--json` and the safety re-check.
 */
import { readFile, stat, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, resolve } from 'node:path';
import { BtyError, type ErrorCode } from '../core/errors.ts';
import { detectArch, sniffMagic, type ImageFormat, type SniffedKind } from '../core/formats.ts';
import {
  assertContentMatches,
  HEAD_BYTES,
  normaliseSha256,
  resolveFormat,
  virtualSize,
  type FormatOrigin,
} from './inspect.ts';
import {
  assertPlatformApplies,
  FileSource,
  openImageSource,
  type ImageSource,
  type OpenSourceOptions,
} from './sources/index.ts';
import { readSidecarSha256 } from './images.ts';
import { probeTarget, type TargetInfo } from './target.ts';
import type { ZeroStrategy } from './sinks/sparse-sink.ts';

export interface PlanRequest {
  /** Local path, file://, http(s):// (or a registered scheme). */
  source: string;
  target: string;
  /** Overrides the name's format (`--format`). */
  format?: string | null;
  /** Format to use when the name says nothing (catalog or plan hint). */
  formatHint?: string | null;
  /** Expected sha256 of the source bytes (`--sha256`, a catalog entry, a server plan). */
  sha256?: string | null;
  verify?: boolean;
  http?: OpenSourceOptions['http'];
  /** For an OCI index: the platform to pick (`os/arch[/variant]`); default this machine's. */
  platform?: string | null;
  /**
   * Where a qcow2 fetched from a URL is staged (default: BTY_TMPDIR, else the target file's
   * folder, else the system temp folder).
   */
  tmpDir?: string;
  /** Cancels the resolve step (probing a slow server). */
  signal?: AbortSignal;
}

export interface Refusal {
  code: ErrorCode;
  message: string;
}

export interface FlashPlan {
  image: {
    source: string;
    kind: 'file' | 'http' | 'oras';
    name: string;
    format: ImageFormat;
    format_from: FormatOrigin;
    content: SniffedKind;
    size_bytes: number | null;
    virtual_size_bytes: number | null;
    arch: string | null;
    sha256: string | null;
    /** option: --sha256 or a plan; sidecar: a .sha256 file; source: the registry's digest. */
    sha256_from: 'option' | 'sidecar' | 'source' | null;
    /** What the source resolved to (an oras:// reference: digest, title, platform). */
    resolved: Record<string, string | number | null> | null;
  };
  target: {
    path: string;
    kind: TargetInfo['kind'];
    size_bytes: number | null;
    model: string | null;
    serial: string | null;
    wwn: string | null;
    transport: string | null;
    zero_strategy: ZeroStrategy;
  };
  verify: boolean;
  /** Where a qcow2 URL is downloaded before conversion, when that applies. */
  staging_dir: string | null;
  notes: string[];
  /** Why this flash must not run; empty when it may. */
  refusals: Refusal[];
}

/** Margin kept free beyond the staged file itself. */
const STAGING_MARGIN = 64 << 20;

export interface PreparedFlash {
  plan: FlashPlan;
  source: ImageSource;
  targetInfo: TargetInfo;
}

/**
 * Resolves and validates everything without writing. Problems with the image (unreachable,
 * unknown or mismatched format) throw; problems with the target are collected as refusals so a
 * dry run can show them all.
 */
export async function prepareFlash(request: PlanRequest): Promise<PreparedFlash> {
  const expected = request.sha256 ? normaliseSha256(request.sha256) : null;
  assertPlatformApplies(request.source, request.platform);
  const source = await openImageSource(request.source, {
    http: {
      ...request.http,
      digestKnown: expected !== null || request.http?.digestKnown === true,
      ...(request.signal ? { signal: request.signal } : {}),
    },
    ...(request.platform ? { platform: request.platform } : {}),
  });
  const { format, from } = resolveFormat(
    source.name,
    source.display,
    request.format,
    request.formatHint,
    source.fallbackFormat,
  );
  const head = await source.readHead(HEAD_BYTES);
  if (source.size === 0 || head.length === 0) {
    throw new BtyError('BTY_ERR_BAD_INPUT', `image is empty: ${source.display}`);
  }
  assertContentMatches(format, head, source.display);
  const virtual = await virtualSize(source, format, head);

  let sha256 = expected;
  let shaFrom: FlashPlan['image']['sha256_from'] = expected ? 'option' : null;
  if (source.digest) {
    if (sha256 && sha256 !== source.digest) {
      throw new BtyError(
        'BTY_ERR_INTEGRITY',
        `the expected sha256 ${sha256} is not the digest the source publishes for ` +
          `${source.display} (sha256:${source.digest}); nothing was written`,
        {
          details: { expected: sha256, published: source.digest },
          hint: 'Check the --sha256 value, or the reference: it names other bytes.',
        },
      );
    }
    if (!sha256) {
      sha256 = source.digest;
      shaFrom = 'source';
    }
  }
  if (!sha256 && source.localPath) {
    sha256 = await readSidecarSha256(source.localPath);
    if (sha256) shaFrom = 'sidecar';
  }

  const targetInfo = await probeTarget(request.target);
  const refusals: Refusal[] = [...targetInfo.refusals];
  const notes: string[] = [];
  const disk = targetInfo.disk;

  if (targetInfo.kind === 'block' && targetInfo.size_bytes !== null && virtual !== null) {
    if (virtual > targetInfo.size_bytes) {
      refusals.push({
        code: 'BTY_ERR_TARGET_TOO_SMALL',
        message: `image (${virtual} bytes) is larger than target (${targetInfo.size_bytes} bytes)`,
      });
    }
  }
  if (virtual === null) {
    notes.push(
      'image virtual size could not be determined; size-fits-target check skipped ' +
        '(the write stops at the end of the target if the image does not fit)',
    );
  }
  if (source instanceof FileSource && (await targetHoldsFile(request.target, targetInfo, source))) {
    refusals.push({
      code: 'BTY_ERR_BAD_INPUT',
      message:
        targetInfo.kind === 'block'
          ? `the image file ${source.display} is the backing file of ${request.target}: writing would destroy the image while reading it`
          : `the target ${request.target} is the image file itself`,
    });
  }

  let stagingDir: string | null = null;
  if (format === 'qcow2' && !source.localPath) {
    stagingDir = resolve(
      request.tmpDir ??
        (process.env.BTY_TMPDIR ||
          (targetInfo.kind === 'block' ? tmpdir() : dirname(request.target))),
    );
    const refusal = await checkStagingSpace(stagingDir, source.size);
    if (refusal) refusals.push(refusal);
    if (source.size === null) {
      notes.push(
        `the qcow2 download has no declared size, so the free space in ${stagingDir} could not be checked`,
      );
    }
  }

  const zeroStrategy: ZeroStrategy =
    targetInfo.kind === 'block' ? (disk?.write_zeroes ? 'zeroout' : 'write') : 'holes';

  const plan: FlashPlan = {
    image: {
      source: source.display,
      kind: source.kind,
      name: source.name,
      format,
      format_from: from,
      content: sniffMagic(head),
      size_bytes: source.size,
      virtual_size_bytes: virtual,
      arch: detectArch(source.name),
      sha256,
      sha256_from: shaFrom,
      resolved: (source as ImageSource).details ?? null,
    },
    target: {
      path: request.target,
      kind: targetInfo.kind,
      size_bytes: targetInfo.size_bytes,
      model: disk?.model ?? null,
      serial: disk?.serial ?? null,
      wwn: disk?.wwn ?? null,
      transport: disk?.tran ?? null,
      zero_strategy: zeroStrategy,
    },
    verify: request.verify === true,
    staging_dir: stagingDir,
    notes,
    refusals,
  };
  return { plan, source, targetInfo };
}

/** True when writing the target would overwrite the image file (directly or via a loop device). */
async function targetHoldsFile(
  target: string,
  info: TargetInfo,
  source: FileSource,
): Promise<boolean> {
  const same = (st: { dev: number; ino: number } | null) =>
    st !== null && st.dev === source.identity.dev && st.ino === source.identity.ino;
  if (info.kind === 'file') return same(await stat(target).catch(() => null));
  if (info.kind !== 'block' || info.disk?.type !== 'loop') return false;
  const backing = await readFile(`/sys/block/${info.disk.name}/loop/backing_file`, 'utf8').catch(
    () => null,
  );
  return backing !== null && same(await stat(backing.trim()).catch(() => null));
}

async function checkStagingSpace(dir: string, size: number | null): Promise<Refusal | null> {
  let free: number;
  try {
    const fs = await statfs(dir);
    free = fs.bavail * fs.bsize;
  } catch (err) {
    return {
      code: 'BTY_ERR_NO_SPACE',
      message: `cannot use ${dir} to stage the qcow2 download: ${(err as Error).message}`,
    };
  }
  if (size === null) return null;
  if (free < size + STAGING_MARGIN) {
    return {
      code: 'BTY_ERR_NO_SPACE',
      message:
        `the qcow2 image (${size} bytes) must be downloaded before it is converted, but ${dir} ` +
        `has only ${free} bytes free`,
    };
  }
  return null;
}

/** Throws the first refusal (its code sets the exit status), listing all of them. */
export function assertPlanAllowed(plan: FlashPlan): void {
  const first = plan.refusals[0];
  if (!first) return;
  const message =
    plan.refusals.length === 1 ? first.message : plan.refusals.map((r) => r.message).join('; ');
  throw new BtyError(first.code, message, { details: { refusals: plan.refusals } });
}
