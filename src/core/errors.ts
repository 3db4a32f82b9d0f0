/**
 * The one error vocabulary of bty, shared by the CLI, the agent and the server.
 *
 * Every failure an operator can meet has a stable `BTY_ERR_*` code with a short title, the CLI
 * exit code, the HTTP status the server answers with, and a hint saying what to do next.
 * Codes are never renamed or reused once released; retire one by leaving it here, unused.
 */

/** CLI exit codes, documented in `bty --help`. */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  refused: 3,
  integrity: 4,
  cancelled: 130,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

interface ErrorSpec {
  readonly title: string;
  readonly exit: ExitCode;
  readonly http: number;
  readonly hint: string;
}

export const ERRORS = {
  BTY_ERR_USAGE: {
    title: 'bad command line',
    exit: EXIT.usage,
    http: 400,
    hint: 'Run `bty --help` for the commands and their options.',
  },
  BTY_ERR_BAD_INPUT: {
    title: 'invalid input',
    exit: EXIT.usage,
    http: 400,
    hint: 'Correct the value named in the message and try again.',
  },
  BTY_ERR_IMAGE_NOT_FOUND: {
    title: 'image not found',
    exit: EXIT.usage,
    http: 404,
    hint: 'Check the path or URL; `bty inspect` shows what bty sees.',
  },
  BTY_ERR_FORMAT_UNKNOWN: {
    title: 'image format not recognised',
    exit: EXIT.usage,
    http: 400,
    hint: 'Name the file with a supported suffix (.img, .img.gz, .img.zst, .img.xz, .img.bz2, .qcow2) or pass --format.',
  },
  BTY_ERR_TARBALL: {
    title: 'image is a tarball',
    exit: EXIT.usage,
    http: 400,
    hint: 'Extract the archive first and flash the disk image inside it.',
  },
  BTY_ERR_FORMAT_MISMATCH: {
    title: "image content does not match its name's format",
    exit: EXIT.usage,
    http: 400,
    hint: 'Rename the file to match its content, or pass --format with the real format.',
  },
  BTY_ERR_SOURCE_SCHEME: {
    title: 'unsupported image source',
    exit: EXIT.usage,
    http: 400,
    hint: 'Use a local path, file://, http://, https:// or oras://.',
  },
  BTY_ERR_SRC_INVALID: {
    title: 'source URL cannot be canonicalised',
    exit: EXIT.usage,
    http: 400,
    hint: 'Use an oras://, http:// or https:// URL with a host.',
  },
  BTY_ERR_SHA256_INVALID: {
    title: 'malformed sha256',
    exit: EXIT.usage,
    http: 400,
    hint: 'A sha256 is 64 hexadecimal characters (optionally prefixed with "sha256:").',
  },
  BTY_ERR_TARGET_NOT_FOUND: {
    title: 'target not found',
    exit: EXIT.usage,
    http: 404,
    hint: 'Run `bty disks` to list the disks bty can write to.',
  },
  BTY_ERR_TARGET_UNSUPPORTED: {
    title: 'target is neither a block device nor a regular file',
    exit: EXIT.usage,
    http: 400,
    hint: 'Point bty at a whole disk (see `bty disks`) or at a regular file to create a raw image.',
  },
  BTY_ERR_TARGET_READONLY: {
    title: 'target is read-only',
    exit: EXIT.refused,
    http: 409,
    hint: 'Check the write-protect switch, or the read-only flag (`blockdev --getro`).',
  },
  BTY_ERR_TARGET_MOUNTED: {
    title: 'target is mounted',
    exit: EXIT.refused,
    http: 409,
    hint: 'The disk is in use. Unmount every partition first if you really mean to overwrite it.',
  },
  BTY_ERR_TARGET_SYSTEM_DISK: {
    title: 'target holds the running system',
    exit: EXIT.refused,
    http: 409,
    hint: 'bty never overwrites the disk it runs from. Pick another disk (`bty disks`).',
  },
  BTY_ERR_TARGET_IN_USE: {
    title: 'target is in use',
    exit: EXIT.refused,
    http: 409,
    hint: 'Stop whatever holds the device (LVM, RAID, dm-crypt, swap, a loop device) first.',
  },
  BTY_ERR_TARGET_PARTITION: {
    title: 'target is a partition',
    exit: EXIT.refused,
    http: 409,
    hint: 'bty writes whole disks: name the disk (e.g. /dev/sdb), not a partition (/dev/sdb1).',
  },
  BTY_ERR_TARGET_TOO_SMALL: {
    title: 'image is larger than the target',
    exit: EXIT.refused,
    http: 409,
    hint: 'Pick a larger disk (`bty disks`).',
  },
  BTY_ERR_TARGET_CHANGED: {
    title: 'target changed before writing',
    exit: EXIT.refused,
    http: 409,
    hint: 'Something mounted or removed the disk while bty was preparing; check it and retry.',
  },
  BTY_ERR_NOT_CONFIRMED: {
    title: 'flash not confirmed',
    exit: EXIT.refused,
    http: 409,
    hint: 'Run from a terminal to confirm, or pass --yes when scripting.',
  },
  BTY_ERR_SOURCE_UNREACHABLE: {
    title: 'image source not reachable',
    exit: EXIT.failure,
    http: 502,
    hint: 'Check the URL and the network; bty resumes interrupted downloads on its own.',
  },
  BTY_ERR_HTTP_STATUS: {
    title: 'image server answered with an error',
    exit: EXIT.failure,
    http: 502,
    hint: 'Check the URL; the server refused it.',
  },
  BTY_ERR_ORAS_NOT_FOUND: {
    title: 'no such artifact in the registry',
    exit: EXIT.usage,
    http: 404,
    hint: 'Check the host, repository and tag (or digest) of the oras:// reference.',
  },
  BTY_ERR_ORAS_AUTH: {
    title: 'the registry refused access',
    exit: EXIT.failure,
    http: 502,
    hint:
      'Log in for this registry (`~/.docker/config.json` auths, or BTY_ORAS_USERNAME and ' +
      'BTY_ORAS_PASSWORD), or check that the repository allows anonymous pulls.',
  },
  BTY_ERR_ORAS_ARTIFACT: {
    title: 'the artifact holds no disk image bty can use',
    exit: EXIT.usage,
    http: 400,
    hint: 'Reference the disk-image artifact itself (or pass --platform for a multi-platform index).',
  },
  BTY_ERR_ORAS_REGISTRY: {
    title: 'the registry answered something bty cannot use',
    exit: EXIT.failure,
    http: 502,
    hint: 'The message carries what the registry sent; try again, or report it to the registry operator.',
  },
  BTY_ERR_SOURCE_CHANGED: {
    title: 'image changed on the server during the download',
    exit: EXIT.failure,
    http: 502,
    hint: 'The target holds partial data: flash again once the published image is stable.',
  },
  BTY_ERR_RESUME_UNSAFE: {
    title: 'interrupted download cannot be resumed safely',
    exit: EXIT.failure,
    http: 502,
    hint: 'The server gives no ETag or Last-Modified; pass --sha256 so a resumed download can be verified.',
  },
  BTY_ERR_RESUME_EXHAUSTED: {
    title: 'download kept failing',
    exit: EXIT.failure,
    http: 502,
    hint: 'The target holds partial data. Check the network or the server and flash again.',
  },
  BTY_ERR_DECOMPRESS: {
    title: 'image data is corrupt or truncated',
    exit: EXIT.integrity,
    http: 422,
    hint: 'The target holds partial data. Fetch the image again from a trusted source and re-flash.',
  },
  BTY_ERR_INTEGRITY: {
    title: 'sha256 mismatch',
    exit: EXIT.integrity,
    http: 422,
    hint: 'The target holds unverified data: do not boot it. Re-flash from a trusted source.',
  },
  BTY_ERR_VERIFY_MISMATCH: {
    title: 'read-back verification failed',
    exit: EXIT.integrity,
    http: 422,
    hint: 'The disk did not keep what was written: it may be failing. Re-flash, or replace the disk.',
  },
  BTY_ERR_TOOL_MISSING: {
    title: 'a required program is not installed',
    exit: EXIT.failure,
    http: 500,
    hint: 'Install the Debian package named in the message (apt-get install …).',
  },
  BTY_ERR_TOOL_FAILED: {
    title: 'a helper program failed',
    exit: EXIT.failure,
    http: 500,
    hint: 'The message carries the program and its own error output.',
  },
  BTY_ERR_WRITE: {
    title: 'writing the target failed',
    exit: EXIT.failure,
    http: 500,
    hint: 'The target holds partial data. Check the disk (dmesg) and flash again.',
  },
  BTY_ERR_NO_SPACE: {
    title: 'not enough space for a temporary file',
    exit: EXIT.failure,
    http: 507,
    hint: 'Point BTY_TMPDIR at a folder on a filesystem with enough free space.',
  },
  BTY_ERR_CANCELLED: {
    title: 'cancelled',
    exit: EXIT.cancelled,
    http: 499,
    hint: 'If writing had started, the target holds partial data: flash it again before booting it.',
  },
  BTY_ERR_CATALOG_INVALID: {
    title: 'catalog is invalid',
    exit: EXIT.usage,
    http: 400,
    hint: 'Fix the catalog TOML as the message says (schema: version = 1, [[images]] name/src).',
  },
  BTY_ERR_CATALOG_NOT_FOUND: {
    title: 'catalog not found',
    exit: EXIT.usage,
    http: 404,
    hint: 'Check the path or URL of the catalog.',
  },
  BTY_ERR_CATALOG_TOO_LARGE: {
    title: 'catalog too large',
    exit: EXIT.usage,
    http: 413,
    hint: 'A catalog is at most 4 MiB; check that the URL points at a catalog.toml.',
  },
  BTY_ERR_CATALOG_UNREACHABLE: {
    title: 'catalog not reachable',
    exit: EXIT.failure,
    http: 502,
    hint: 'Check the URL and the network (bty waits 30 s for a catalog).',
  },
  BTY_ERR_CONFIG_INVALID: {
    title: 'configuration is invalid',
    exit: EXIT.usage,
    http: 500,
    hint:
      'Correct the setting the message names, in that bty.toml file or that BTY_* environment ' +
      'variable, then start bty-web again.',
  },
  BTY_ERR_DISKS_UNAVAILABLE: {
    title: 'disks cannot be listed',
    exit: EXIT.failure,
    http: 500,
    hint: 'bty needs `lsblk` (Debian package util-linux) and a readable /sys.',
  },
  BTY_ERR_INTERNAL: {
    title: 'internal error',
    exit: EXIT.failure,
    http: 500,
    hint: 'This is a bug in bty; please report it with the message above.',
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export interface BtyErrorOptions {
  /** Overrides the catalog hint when the situation allows a more precise one. */
  hint?: string;
  cause?: unknown;
  /** Structured facts for `--json` output and the server's error body. */
  details?: Record<string, unknown>;
}

/** An operator-facing failure. `message` says what happened; `hint` what to do next. */
export class BtyError extends Error {
  readonly code: ErrorCode;
  readonly hint: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: BtyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BtyError';
    this.code = code;
    this.hint = options.hint ?? ERRORS[code].hint;
    this.details = options.details;
  }

  get exitCode(): ExitCode {
    return ERRORS[this.code].exit;
  }

  get httpStatus(): number {
    return ERRORS[this.code].http;
  }

  toJSON(): { code: ErrorCode; message: string; hint: string; details?: Record<string, unknown> } {
    return {
      code: this.code,
      message: this.message,
      hint: this.hint,
      ...(this.details ? { details: this.details } : {}),
    };
  }
}

/** Wraps anything thrown into a BtyError, keeping BtyErrors as they are. */
export function asBtyError(err: unknown): BtyError {
  if (err instanceof BtyError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new BtyError('BTY_ERR_INTERNAL', message, { cause: err });
}

export function isBtyError(err: unknown, code?: ErrorCode): err is BtyError {
  return err instanceof BtyError && (code === undefined || err.code === code);
}
